//! The L2 port: the handful of operations the engine needs from a shared cache, with a Redis
//! adapter (standalone or cluster) and an in-memory one for unit tests and the dev mode.

pub mod memory;
pub mod redis;
mod slots;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;

/// One guarded write: stored unless the cached entity version is newer than `version`, or the
/// key holds a tombstone newer than `read_at` (the value was read before the invalidation).
#[derive(Debug, Clone)]
pub struct L2Write {
    /// Full key.
    pub key: String,
    /// Encoded envelope.
    pub bytes: Vec<u8>,
    /// Time to live (Redis `PX`).
    pub ttl: Duration,
    /// Entity version of `bytes` (0 when unversioned); `u64::MAX` always passes the guard.
    pub version: u64,
    /// When the value was read from the source of truth, minus the clock-skew margin;
    /// `i64::MAX` always passes the guard.
    pub read_at: i64,
}

/// The change-log member scoring the latest change the log no longer holds (see
/// [`L2Store::publish_changes`]). Cache keys never start with `~`.
pub const CHANGE_LOG_FLOOR: &str = "~floor";
/// The change-log member an environment publishes when it lost track of which keys it
/// changed (too many failed publications): every reader clears its L1.
pub const CHANGE_LOG_CLEAR: &str = "~clear";

/// What [`L2Store::hash_update`] did. Redis answers `HSETNX` and `HDEL` with 1 to one caller
/// only, so each field set or deleted is reported by at most one of several racing updates
/// (none, if the answer is lost on its way back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashUpdate {
    /// Per field of `set_if_absent`: whether this update set it.
    pub set: Vec<bool>,
    /// Per field of `delete`: whether this update deleted it.
    pub deleted: Vec<bool>,
    /// The hash afterwards (integer fields).
    pub hash: HashMap<String, i64>,
}

impl HashUpdate {
    /// The same update on a hash held in memory (the in-memory L2, or bookkeeping a process
    /// keeps for itself).
    pub fn apply(
        fields: &mut HashMap<String, i64>,
        set_if_absent: &[(String, i64)],
        delete: &[String],
    ) -> HashUpdate {
        let set = set_if_absent
            .iter()
            .map(|(field, value)| match fields.entry(field.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(*value);
                    true
                }
            })
            .collect();
        let deleted = delete
            .iter()
            .map(|field| fields.remove(field).is_some())
            .collect();
        HashUpdate {
            set,
            deleted,
            hash: fields.clone(),
        }
    }
}

/// What happened to a guarded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored.
    Written,
    /// Refused: a newer entity version is cached, or the value was read before the key's
    /// latest invalidation.
    Refused,
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

    /// `SET key token NX PX ttl`: true if this caller now holds the lock.
    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `token` still holds it (compare-and-delete).
    async fn unlock(&self, key: &str, token: &str) -> Result<()>;

    /// Gives the lock a new time to live if `token` still holds it; false if it does not.
    async fn extend_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool>;

    /// Appends changed keys to a change log: a sorted set scoring each key by a sequence that
    /// only grows, even across the log's loss (a new log starts from the server's clock in
    /// microseconds). The log keeps the `keep` latest keys; [`CHANGE_LOG_FLOOR`] scores the
    /// latest change forgotten (trimmed, or before the log began), so a reader whose position
    /// is below it knows it missed changes. Atomic (one script).
    async fn publish_changes(&self, log: &str, keys: &[&str], keep: usize) -> Result<()>;

    /// The latest sequence in a change log (0 when there is none): where a new reader starts.
    async fn change_log_head(&self, log: &str) -> Result<i64>;

    /// Up to `limit` entries of a change log after sequence `after`, oldest first (the floor
    /// among them if it is above `after`); `None` if there is no log (never written, or lost)
    /// or its head is below `after` (lost and begun again behind the reader).
    async fn read_changes(
        &self,
        log: &str,
        after: i64,
        limit: usize,
    ) -> Result<Option<Vec<(String, i64)>>>;

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

    /// Adds members to a sorted set, or moves existing ones to a new score. With `only_later`,
    /// an existing member's score only ever grows (`ZADD GT`); new members are added anyway.
    async fn zset_add(&self, key: &str, members: &[(String, i64)], only_later: bool) -> Result<()>;

    /// Removes members from a sorted set.
    async fn zset_remove(&self, key: &str, members: &[String]) -> Result<()>;

    /// Members scored from `min` to `max` (inclusive; `i64::MIN`/`i64::MAX` are unbounded),
    /// lowest score first, skipping `offset` and returning at most `limit`.
    async fn zset_range_by_score(
        &self,
        key: &str,
        min: i64,
        max: i64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(String, i64)>>;

    /// One step of `ZSCAN`: members with their scores from `cursor` (start at 0), and the
    /// cursor of the next step (0 when done). Each step costs about `count` members whatever
    /// the set's size; a member added or removed meanwhile may be missed or seen twice.
    async fn zset_scan(
        &self,
        key: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, i64)>)>;

    /// A member's score, `None` if it (or the set) is absent.
    async fn zset_score(&self, key: &str, member: &str) -> Result<Option<i64>>;

    /// Adds to integer fields of a hash and sets its time to live (`HINCRBY`s and `PEXPIRE` in
    /// one pipeline).
    async fn hash_add(&self, key: &str, increments: &[(String, i64)], ttl: Duration) -> Result<()>;

    /// Integer fields of several hashes in one pipeline (the keys must share a hash slot on a
    /// cluster, e.g. through a hash tag). Absent hashes are empty; non-integer fields are skipped.
    async fn hash_get_all(&self, keys: &[String]) -> Result<Vec<HashMap<String, i64>>>;

    /// Sets fields that are not set yet (`HSETNX`) and deletes others (`HDEL`), atomically;
    /// returns which of them this call set and deleted, and with `read_back` the hash
    /// afterwards (empty without).
    async fn hash_update(
        &self,
        key: &str,
        set_if_absent: &[(String, i64)],
        delete: &[String],
        read_back: bool,
    ) -> Result<HashUpdate>;

    /// Appends time-scored members to a sorted set used as a log, drops those scored before
    /// `keep_from`, sets the key's time to live and returns what remains, newest first (at most
    /// `limit`), in one pipeline.
    async fn log_append(
        &self,
        key: &str,
        members: &[(String, i64)],
        keep_from: i64,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<(String, i64)>>;

    /// Memory and key figures of the server (summed over primaries on a cluster).
    async fn server_info(&self) -> Result<ServerInfo>;

    /// Round-trips a `PING` (health probes).
    async fn ping(&self) -> Result<()>;

    /// Replaces the connection with a new one, in the background (after health probes kept
    /// failing: a connection a middlebox dropped without a reset never recovers by itself).
    /// Does nothing where there is nothing to replace.
    fn reconnect(&self) {}

    /// Round trips made so far (commands plus pipelines), for benchmarks and tests.
    fn round_trips(&self) -> u64;
}

/// What Redis reports about itself, for the admin endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// Primaries the figures are summed over.
    pub nodes: u64,
    /// Bytes in use.
    pub used_memory: u64,
    /// Peak bytes in use.
    pub used_memory_peak: u64,
    /// Configured limit (0: none).
    pub maxmemory: u64,
    /// Keys evicted for memory since start.
    pub evicted_keys: u64,
    /// Keys expired since start.
    pub expired_keys: u64,
    /// Keys stored now.
    pub keys: u64,
}

impl ServerInfo {
    /// Adds the figures of one node's `INFO` text (the `memory` and `stats` sections).
    pub fn add_info_text(&mut self, info: &str) {
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        self.nodes += 1;
        self.used_memory += field("used_memory");
        self.used_memory_peak += field("used_memory_peak");
        self.maxmemory += field("maxmemory");
        self.evicted_keys += field("evicted_keys");
        self.expired_keys += field("expired_keys");
    }

    /// Used memory as a share of `maxmemory`, if a limit is set.
    pub fn memory_ratio(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
        (self.maxmemory > 0).then(|| self.used_memory as f64 / self.maxmemory as f64)
    }
}
