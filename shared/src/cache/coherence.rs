//! L1 coherence across environments. L1 is per process; without this, another environment
//! would serve a value changed elsewhere until its L1 entry expired.
//!
//! - Writers append every key they change (invalidations, writes, generation bumps) to a
//!   change log in L2: one sorted set, scored by a sequence that only grows
//!   ([`L2Store::publish_changes`](super::l2::L2Store::publish_changes)).
//! - Each environment polls the log from where it last read, in the background, when its
//!   last poll started more than a quarter of the bound ago and it is serving from L1, and
//!   drops those keys from its L1.
//! - An L1 entry is served only while it was read from L2 or the database less than the bound
//!   ago, or, if it was read after the first poll had the log's head (where this environment
//!   starts reading), while a successful poll started less than the bound ago. So a frozen
//!   environment (a Lambda between invocations) that missed polls does not serve its L1 after
//!   the thaw until a poll has caught up: it reads L2 meanwhile.
//! - A value whose read began before a log page reporting its key's change arrived is not put
//!   in L1 (the read may predate the change): polls run concurrently with requests.
//! - A log trimmed past this environment's position, or lost, clears the whole L1.
//! - While Redis is unreachable (circuit open), nothing can be delivered either way: L1
//!   entries live their TTL, as without coherence. Changes whose publication failed are
//!   kept and published after the next L2 call that succeeds (past [`LOG_KEEP`] of them, one
//!   [`CHANGE_LOG_CLEAR`] tells every environment to clear its L1 instead).
//!
//! Cost: at most four log reads per bound per busy environment (four a second at the default
//! 1 s), none while idle; one script per write.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::Cache;
use super::breaker::BreakerState;
use super::l2::{CHANGE_LOG_CLEAR, CHANGE_LOG_FLOOR};
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
    /// When a poll last cleared L1: nothing read before it is put in L1.
    cleared_at: AtomicI64,
    /// Just after the first poll learnt the log's head: entries read before it are vouched
    /// for by their read time only, as no poll covers what changed before the head.
    baseline: AtomicI64,
    /// Keys other environments changed, with when a poll learnt it; kept as
    /// long as a load may take, the oldest read that can still reach L1.
    changed: moka::sync::Cache<String, EpochMillis>,
    /// Changes this environment made whose publication failed.
    unpublished: Unpublished,
}

/// Changed keys not yet in the log, published again after the next L2 success.
#[derive(Default)]
struct Unpublished {
    keys: Mutex<HashSet<String>>,
    /// Whether `keys` may be non-empty: the check on every L2 success costs a load when not.
    any: AtomicBool,
    /// More than [`LOG_KEEP`] keys failed: publish [`CHANGE_LOG_CLEAR`] instead.
    overflowed: AtomicBool,
    /// A background publication is under way.
    publishing: AtomicBool,
}

impl Unpublished {
    fn add(&self, keys: &[&str]) {
        let mut held = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            if held.len() < LOG_KEEP || held.contains(*key) {
                held.insert((*key).to_owned());
            } else {
                self.overflowed.store(true, Ordering::Release);
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// The keys to publish, if any and if no publication is under way; the caller publishes
    /// them and calls [`Unpublished::done`].
    fn take(&self) -> Option<Vec<String>> {
        if !self.any.load(Ordering::Acquire) || self.publishing.swap(true, Ordering::AcqRel) {
            return None;
        }
        let mut held = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        self.any.store(false, Ordering::Release);
        let keys: Vec<String> = held.drain().collect();
        if self.overflowed.swap(false, Ordering::AcqRel) {
            return Some(vec![CHANGE_LOG_CLEAR.to_owned()]);
        }
        if keys.is_empty() {
            // Another publication took them between the flag and the lock.
            self.done();
            return None;
        }
        Some(keys)
    }

    fn done(&self) {
        self.publishing.store(false, Ordering::Release);
    }
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
            unpublished: Unpublished::default(),
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
        let published = self
            .with_l2("publish changes", self.batch_deadline(), |l2| {
                l2.publish_changes(&log, keys, LOG_KEEP)
            })
            .await;
        if published.is_err() {
            // Kept for the next success, or other environments would serve the old value
            // for their whole L1 TTL.
            self.inner.coherence.unpublished.add(keys);
        }
    }

    /// Publishes the changes whose publication failed, in the background; called after an
    /// L2 call succeeds. What fails again stays for the next success.
    pub(super) fn republish_changes_in_background(&self) {
        let Some(keys) = self.inner.coherence.unpublished.take() else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let log = cache.inner.keys.change_log();
            let names: Vec<&str> = keys.iter().map(String::as_str).collect();
            let published = match cache.inner.l2.as_deref() {
                Some(l2) => matches!(
                    tokio::time::timeout(
                        cache.batch_deadline(),
                        l2.publish_changes(&log, &names, LOG_KEEP)
                    )
                    .await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            if published {
                tracing::info!(keys = names.len(), "published L1 changes Redis had missed");
            } else {
                cache.inner.coherence.unpublished.add(&names);
            }
            cache.inner.coherence.unpublished.done();
        });
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
                // Reads that began once the head was known are vouched for by polls: any
                // change they could miss is after the head. (+1: the same millisecond may
                // hold a read that began before the reply.)
                coherence.baseline.store(self.now() + 1, Ordering::Release);
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
            // The changes on this page were made before it arrived, perhaps after the poll
            // started: a read that began before the arrival may hold the old value.
            let arrived = self.now();
            let Some(page) = page else {
                if position > 0 {
                    // The log is gone (flushed, evicted, rewound) with whatever we had not read.
                    tracing::warn!("the L1 change log is gone; clearing L1");
                    self.clear_l1(arrived);
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
                    self.clear_l1(arrived);
                } else if key == CHANGE_LOG_CLEAR {
                    tracing::warn!(
                        "another environment lost track of its changes while Redis was away; clearing L1"
                    );
                    self.clear_l1(arrived);
                } else {
                    self.drop_changed(&key, arrived);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_unpublished_changes_become_one_clear() {
        let unpublished = Unpublished::default();
        assert_eq!(unpublished.take(), None);
        unpublished.add(&["a", "b"]);
        let mut taken = unpublished.take().unwrap();
        taken.sort();
        assert_eq!(taken, ["a", "b"]);
        unpublished.add(&["c"]);
        assert_eq!(unpublished.take(), None, "one publication at a time");
        unpublished.done();
        assert_eq!(unpublished.take(), Some(vec!["c".to_owned()]));
        unpublished.done();

        let names: Vec<String> = (0..=LOG_KEEP).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        unpublished.add(&refs);
        assert_eq!(unpublished.take(), Some(vec![CHANGE_LOG_CLEAR.to_owned()]));
        unpublished.done();
        assert_eq!(unpublished.take(), None);
    }
}
