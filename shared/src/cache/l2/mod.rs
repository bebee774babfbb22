//! The L2 port: the handful of operations the engine needs from a shared cache, with a Redis
//! adapter (standalone or cluster) and an in-memory one for unit tests and the dev mode.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// One guarded write: stored unless the cached entity version is newer than `version`.
#[derive(Debug, Clone)]
pub struct L2Write {
    /// Full key.
    pub key: String,
    /// Encoded envelope.
    pub bytes: Vec<u8>,
    /// Time to live (Redis `PX`).
    pub ttl: Duration,
    /// Entity version of `bytes` (0 when unversioned).
    pub version: u64,
}

/// What happened to a guarded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored.
    Written,
    /// Refused: a newer entity version is cached.
    OlderThanCached,
}

/// Operations on the shared cache. Every method is one round trip on a standalone server
/// (batches may take one per hash slot on a cluster).
#[async_trait]
pub trait L2Store: Send + Sync + std::fmt::Debug {
    /// The raw value of `key`. A key holding another Redis type is [`crate::Error::WrongType`].
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Raw values of `keys`, in order (MGET; grouped by hash slot on a cluster).
    async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Guarded writes, atomically per key (one pipeline; one per hash slot on a cluster).
    async fn set_guarded(&self, writes: &[L2Write]) -> Result<Vec<WriteOutcome>>;

    /// Deletes keys.
    async fn delete(&self, keys: &[&str]) -> Result<()>;

    /// `SET key token NX PX ttl`: true if this caller now holds the lock.
    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `token` still holds it (compare-and-delete).
    async fn unlock(&self, key: &str, token: &str) -> Result<()>;

    /// Increments a counter and returns the new value.
    async fn incr(&self, key: &str) -> Result<u64>;

    /// A counter's value, 0 when absent.
    async fn counter(&self, key: &str) -> Result<u64>;

    /// Adds `members` to a sorted-set queue with `score`, leaving members already queued
    /// alone (`ZADD NX`). Returns how many were added.
    async fn enqueue(&self, queue: &str, members: &[&str], score: i64) -> Result<u64>;

    /// Up to `max` members with the lowest scores, without removing them.
    async fn peek_queue(&self, queue: &str, max: usize) -> Result<Vec<String>>;

    /// Removes members from a queue.
    async fn dequeue(&self, queue: &str, members: &[String]) -> Result<()>;

    /// Number of members in a queue.
    async fn queue_len(&self, queue: &str) -> Result<u64>;

    /// Round-trips a `PING` (health probes).
    async fn ping(&self) -> Result<()>;

    /// Round trips made so far (commands plus pipelines), for benchmarks and tests.
    fn round_trips(&self) -> u64;
}
