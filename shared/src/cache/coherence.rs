//! L1 coherence across environments. L1 is per process; without this, another environment
//! would serve a value changed elsewhere until its L1 entry expired.
//!
//! - Writers append every key they change (invalidations, writes, generation bumps) to a
//!   change log in L2: one sorted set, scored by a sequence that only grows
//!   ([`L2Store::publish_changes`](super::l2::L2Store::publish_changes)).
//! - Each environment polls the log from where it last read, in the background, when its
//!   last poll started more than a quarter of the bound ago and it is serving from L1, and
//!   drops those keys from its L1.
//! - An L1 entry is served only while it was read from L2 or the database, or a successful
//!   poll started, less than the bound ago. So a frozen environment (a Lambda between
//!   invocations) that missed polls does not serve its L1 after the thaw until a poll has
//!   caught up: it reads L2 meanwhile. Polls vouch only for entries read after the first
//!   poll began (the log's head is where this environment starts reading).
//! - A value read before a poll that learnt its key changed is not put in L1 (the read may
//!   predate the change): the poll runs concurrently with requests.
//! - A log trimmed past this environment's position, or lost, clears the whole L1.
//! - While Redis is unreachable (circuit open), nothing can be delivered either way: L1
//!   entries live their TTL, as without coherence.
//!
//! Cost: at most four `ZRANGE`s a second per busy environment, one script per write.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::Cache;
use super::breaker::BreakerState;
use super::l2::CHANGE_LOG_FLOOR;
use super::metrics::CacheMetrics;
use crate::model::EpochMillis;

/// Keys the log keeps: enough for every environment to catch up after a second of writes at
/// any realistic rate; one that falls further behind clears its L1.
pub(crate) const LOG_KEEP: usize = 10_000;
/// Entries read per poll round trip.
const POLL_PAGE: usize = 1_000;

/// One environment's view of the change log.
pub(crate) struct Coherence {
    /// 0: off (no L2, or `l1_coherence` 0).
    bound_ms: i64,
    /// Engine time at which the last successful poll started.
    polled_at: AtomicI64,
    /// Sequence of the last change read; `None` before the first poll.
    cursor: Mutex<Option<i64>>,
    /// A poll is under way.
    polling: AtomicBool,
    /// Start of the poll that last cleared L1: nothing read before it is put in L1.
    cleared_at: AtomicI64,
    /// Start of the first successful poll: entries read before it are vouched for by their
    /// read time only, as no poll covers what changed before it.
    baseline: AtomicI64,
    /// Keys other environments changed, with the start of the poll that learnt it; kept as
    /// long as a load may take, the oldest read that can still reach L1.
    changed: moka::sync::Cache<String, EpochMillis>,
}

impl Coherence {
    pub fn new(bound: Duration, enabled: bool, remembered_for: Duration) -> Self {
        Coherence {
            bound_ms: if enabled {
                crate::clock::millis(bound)
            } else {
                0
            },
            polled_at: AtomicI64::new(EpochMillis::MIN / 2),
            cursor: Mutex::new(None),
            polling: AtomicBool::new(false),
            cleared_at: AtomicI64::new(EpochMillis::MIN),
            baseline: AtomicI64::new(EpochMillis::MAX),
            changed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(remembered_for.max(Duration::from_millis(1)))
                .build(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.bound_ms > 0
    }

    /// Whether a value read at `read_at` predates a change another environment made.
    pub fn changed_since(&self, key: &str, read_at: EpochMillis) -> bool {
        self.enabled()
            && (read_at <= self.cleared_at.load(Ordering::Acquire)
                || self.changed.get(key).is_some_and(|at| at >= read_at))
    }
}

impl Cache {
    /// Whether an L1 entry read at `read_at` may be served at `now`; starts a poll when the
    /// last one is due.
    pub(super) fn l1_trusted(&self, read_at: EpochMillis, now: EpochMillis) -> bool {
        let coherence = &self.inner.coherence;
        if !coherence.enabled() {
            return true;
        }
        let polled_at = coherence.polled_at.load(Ordering::Acquire);
        if now - polled_at >= coherence.bound_ms / 4 {
            self.poll_changes_in_background();
        }
        now - read_at < coherence.bound_ms
            || (now - polled_at < coherence.bound_ms
                && read_at >= coherence.baseline.load(Ordering::Acquire))
            || self.inner.breaker.state(now) != BreakerState::Closed
    }

    /// Appends changed keys to the change log, for the other environments' L1s.
    pub(super) async fn publish_changes(&self, keys: &[&str]) {
        if !self.inner.coherence.enabled() || keys.is_empty() {
            return;
        }
        let log = self.inner.keys.change_log();
        let _ = self
            .with_l2("publish changes", self.batch_deadline(), |l2| {
                l2.publish_changes(&log, keys, LOG_KEEP)
            })
            .await;
    }

    fn poll_changes_in_background(&self) {
        if self.inner.coherence.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            cache.poll_changes().await;
            cache
                .inner
                .coherence
                .polling
                .store(false, Ordering::Release);
        });
    }

    /// Reads the change log from this environment's position and drops what changed from L1.
    /// Public to the crate for tests, which poll without waiting for the background.
    pub(crate) async fn poll_changes(&self) {
        let coherence = &self.inner.coherence;
        let started = self.now();
        let log = self.inner.keys.change_log();
        let cursor = *coherence
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut position = match cursor {
            Some(position) => position,
            None => {
                // First poll: start at the head.
                let Ok(head) = self
                    .with_l2("ZRANGE", self.single_deadline(), |l2| {
                        l2.change_log_head(&log)
                    })
                    .await
                else {
                    return;
                };
                coherence.baseline.store(started, Ordering::Release);
                head
            }
        };
        loop {
            let Ok(page) = self
                .with_l2("read changes", self.single_deadline(), |l2| {
                    l2.read_changes(&log, position, POLL_PAGE)
                })
                .await
            else {
                return;
            };
            let Some(page) = page else {
                if position > 0 {
                    // The log is gone (flushed, evicted) with whatever we had not read.
                    tracing::warn!("the L1 change log is gone; clearing L1");
                    self.clear_l1(started);
                    position = 0;
                }
                break;
            };
            let full = page.len() >= POLL_PAGE;
            for (key, seq) in page {
                if key == CHANGE_LOG_FLOOR {
                    tracing::warn!(
                        "changes were trimmed from the L1 change log before this environment read them; clearing L1"
                    );
                    self.clear_l1(started);
                } else {
                    self.drop_changed(&key, started);
                }
                position = position.max(seq);
            }
            if !full {
                break;
            }
        }
        *coherence
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(position);
        coherence.polled_at.fetch_max(started, Ordering::AcqRel);
    }

    /// Drops a key another environment changed from every in-process tier.
    fn drop_changed(&self, key: &str, learnt_at: EpochMillis) {
        let inner = &*self.inner;
        // Recorded first: a concurrent read that inserts after the removal below sees it.
        inner.coherence.changed.insert(key.to_owned(), learnt_at);
        inner.l1.remove(key);
        inner.negatives.remove(key);
        inner.generations.invalidate(key);
        CacheMetrics::incr(&inner.metrics.l1_remote_drops);
    }

    /// Clears every in-process tier, and keeps out what was read before `learnt_at`.
    fn clear_l1(&self, learnt_at: EpochMillis) {
        let inner = &*self.inner;
        inner
            .coherence
            .cleared_at
            .fetch_max(learnt_at, Ordering::AcqRel);
        self.inner.l1.clear();
        self.inner.negatives.clear();
        self.inner.generations.invalidate_all();
    }
}
