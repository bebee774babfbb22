//! Integration tests against a real DynamoDB API (moto_server) and real Redis, standalone and
//! cluster. Run with `make test`, which starts the services and passes their addresses.

// Test code: a failed unwrap is a failed test with its location, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod discovery;
mod faults;
mod helpers;
mod offer_expiry;
mod redis_connection;
mod redis_iam;
mod redis_tls;
mod refresh;
mod store_dynamo;
mod store_stats;
mod template;
