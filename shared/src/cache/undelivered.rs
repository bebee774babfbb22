//! Invalidations whose tombstone did not reach Redis (it was down or black-holed when the
//! write was made). Until one does, this process refuses any L2 copy of those keys stored
//! before its invalidation, so it never serves what it knows is stale; and the first L2 call
//! that succeeds afterwards delivers the tombstones in the background, for every other
//! environment. (Cache-sync delivers them durably from the table's stream; this closes the
//! window in the process that made the write, and in deployments without cache-sync.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::EpochMillis;

/// Keys kept at most; past that, the oldest knowledge is the TTL's and cache-sync's.
const MAX_KEYS: usize = 100_000;
/// Tombstones sent in one delivery: one pipeline that fits a Redis command timeout.
const DELIVERY_BATCH: usize = 500;

/// Keys invalidated at a time, their tombstones not yet in Redis.
#[derive(Debug, Default)]
pub(crate) struct Undelivered {
    keys: Mutex<HashMap<String, EpochMillis>>,
    /// Whether `keys` may be non-empty: the read path's check costs a load when it is not.
    any: AtomicBool,
    /// A background delivery is under way.
    delivering: AtomicBool,
}

impl Undelivered {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, EpochMillis>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `keys` as invalidated at `at` without a tombstone in Redis.
    pub fn add<'a>(&self, keys: impl IntoIterator<Item = &'a str>, at: EpochMillis) {
        let mut map = self.keys();
        for key in keys {
            if map.len() < MAX_KEYS || map.contains_key(key) {
                map.insert(key.to_owned(), at);
            } else {
                tracing::debug!(
                    key,
                    "too many undelivered invalidations; this one is left to TTL and cache-sync"
                );
            }
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// Forgets keys whose tombstone (or a later one) reached Redis at `at` or after their
    /// invalidation.
    pub fn delivered<'a>(&self, keys: impl IntoIterator<Item = &'a str>, at: EpochMillis) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.keys();
        for key in keys {
            if map.get(key).is_some_and(|invalidated| *invalidated <= at) {
                map.remove(key);
            }
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// Whether a copy of `key` stored at `stored_at` predates an undelivered invalidation.
    pub fn outdates(&self, key: &str, stored_at: EpochMillis) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .keys()
                .get(key)
                .is_some_and(|invalidated| stored_at <= *invalidated)
    }

    /// Up to `DELIVERY_BATCH` keys to deliver now, if there are any and no delivery is under
    /// way (the rest go with the next successful call); the caller must call
    /// [`Undelivered::done`] afterwards.
    pub fn start_delivery(&self) -> Option<Vec<String>> {
        if !self.any.load(Ordering::Acquire) || self.delivering.swap(true, Ordering::AcqRel) {
            return None;
        }
        let keys: Vec<String> = self.keys().keys().take(DELIVERY_BATCH).cloned().collect();
        if keys.is_empty() {
            self.delivering.store(false, Ordering::Release);
            return None;
        }
        Some(keys)
    }

    /// Ends a delivery started by [`Undelivered::start_delivery`].
    pub fn done(&self) {
        self.delivering.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_stored_before_an_undelivered_invalidation_is_outdated_until_delivered() {
        let undelivered = Undelivered::default();
        assert!(!undelivered.outdates("k", 5));
        undelivered.add(["k"], 10);
        assert!(undelivered.outdates("k", 9));
        assert!(undelivered.outdates("k", 10));
        assert!(
            !undelivered.outdates("k", 11),
            "stored after the invalidation"
        );
        assert!(!undelivered.outdates("other", 1));
        assert_eq!(undelivered.start_delivery(), Some(vec!["k".to_owned()]));
        assert_eq!(undelivered.start_delivery(), None, "one delivery at a time");
        // A later invalidation of the same key, made while delivering, stays.
        undelivered.add(["k"], 20);
        undelivered.delivered(["k"], 15);
        undelivered.done();
        assert!(undelivered.outdates("k", 19));
        undelivered.delivered(["k"], 25);
        assert!(!undelivered.outdates("k", 19));
        assert_eq!(undelivered.start_delivery(), None);
    }
}
