//! Everything the catalog-cache functions share: configuration, errors, the domain model,
//! storage adapters, the Redis connection and telemetry.
//!
//! # Layout
//! - [`cache`]: the two-tier cache engine (L1 moka, L2 Redis).
//! - [`clock`]: injectable wall clock.
//! - [`config`]: typed configuration from the environment.
//! - [`error`]: the crate's error enum and its classification.
//! - [`expiry_set`]: the Redis sorted set of active offers by expiry (an accelerator).
//! - [`jobs`]: scheduled jobs (refresh, offer expiry), each one testable step, and their lease.
//! - [`health`]: cache health evaluation (status, alerts, trends).
//! - [`model`]: products, offers, view events and stats, with validation.
//! - [`store`]: storage ports and the DynamoDB and in-memory adapters (and in-memory streams).
//! - [`streams`]: DynamoDB stream events for the stream functions (view-aggregator).
//! - [`reads`]: cached reads of the catalog (keys and loaders every function shares).
//! - [`redis_conn`]: one Redis connection per process, standalone or cluster.
//! - [`telemetry`]: tracing set-up.
//! - [`wiring`]: clients built once at cold start from the configuration.

pub mod aws;
pub mod cache;
pub mod clock;
pub mod config;
pub mod elasticache;
pub mod error;
pub mod expiry_set;
pub mod health;
pub mod jobs;
pub mod model;
pub mod reads;
pub mod redis_conn;
pub mod redis_iam;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod wiring;

pub use config::Config;
pub use error::{Error, ExpectedVersion, Result};
