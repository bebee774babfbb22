//! The in-process L1: decoded values, bounded by bytes, living as long as the execution environment.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use super::envelope::EntryMeta;
use crate::model::EpochMillis;

/// A decoded value of any cacheable type.
pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// One L1 entry. The value is kept decoded so a hit costs a hash lookup and an `Arc` clone.
#[derive(Clone)]
pub(crate) struct L1Entry {
    /// `None` for a cached "not found".
    pub value: Option<AnyValue>,
    pub meta: EntryMeta,
    /// The entry is not served after this (engine clock), even if moka still holds it.
    pub until: EpochMillis,
    /// Encoded size, the entry's weight against the byte bound.
    pub weight: u32,
}

/// Weight-bounded L1 on moka.
///
/// ## Behavior
/// - Bounded by the sum of entries' encoded sizes, evicting by TinyLFU, which keeps hot keys
///   under scans.
/// - Freshness is decided with the engine's clock (`until`), so tests can move time;
///   moka's own time-to-live only reclaims memory.
pub(crate) struct L1 {
    cache: moka::sync::Cache<String, L1Entry>,
}

impl L1 {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &L1Entry| {
                u32::try_from(key.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(entry.weight)
            })
            .time_to_live(ttl.max(Duration::from_millis(1)))
            .build();
        L1 { cache }
    }

    /// The entry for `key` if it may still be served at `now`.
    pub fn get(&self, key: &str, now: EpochMillis) -> Option<L1Entry> {
        self.cache.get(key).filter(|e| now < e.until)
    }

    pub fn insert(&self, key: &str, entry: L1Entry) {
        self.cache.insert(key.to_owned(), entry);
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Entries and weighted bytes (approximate: moka applies writes lazily).
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}
