//! The in-process L1: decoded values, bounded by bytes, living as long as the execution environment.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use super::envelope::EntryMeta;
use super::metrics::CacheMetrics;
use crate::model::EpochMillis;

/// A decoded value of any cacheable type.
pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// What an entry costs besides its key and value: the entry itself and moka's bookkeeping
/// (key `Arc`, map slot, access and write order nodes, timestamps). Measured by
/// `shared/tests/l1_memory.rs`, which holds the whole L1 to its byte bound.
const ENTRY_OVERHEAD: u32 = 384;

/// What a decoded value holds in memory: its allocation behind an `Arc` (two counters and the
/// value) and its heap buffers.
pub(crate) fn value_weight<T: super::Cacheable>(value: &T) -> u32 {
    let arc = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<T>();
    u32::try_from(arc + value.heap_bytes()).unwrap_or(u32::MAX)
}

/// One L1 entry. The value is kept decoded so a hit costs a hash lookup and an `Arc` clone.
#[derive(Clone)]
pub(crate) struct L1Entry {
    /// `None` for a cached "not found".
    pub value: Option<AnyValue>,
    pub meta: EntryMeta,
    /// The entry is not served after this (engine clock), even if moka still holds it.
    pub until: EpochMillis,
    /// When the value was read from L2 or the database: what L1 coherence measures from.
    pub read_at: EpochMillis,
    /// The value's size in memory ([`value_weight`]; 0 for "not found"), its weight against
    /// the byte bound with the key and [`ENTRY_OVERHEAD`].
    pub weight: u32,
}

/// Weight-bounded L1 on moka.
///
/// ## Behavior
/// - Bounded by the memory its entries hold (decoded value, key, per-entry overhead), evicting
///   by TinyLFU, which keeps hot keys under scans.
/// - Freshness is decided with the engine's clock (`until`), so tests can move time;
///   moka's own time-to-live only reclaims memory.
pub(crate) struct L1 {
    cache: moka::sync::Cache<String, L1Entry>,
}

impl L1 {
    /// With `metrics`, counts the entries evicted to stay within `max_bytes`
    /// (`l1_evictions`): a sign the bound is smaller than what is read.
    pub fn new(max_bytes: u64, ttl: Duration, metrics: Option<Arc<CacheMetrics>>) -> Self {
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &L1Entry| {
                u32::try_from(key.capacity())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
                    .saturating_add(entry.weight)
            })
            .time_to_live(ttl.max(Duration::from_millis(1)));
        // A bound of 0 turns L1 off (moka refuses every entry): nothing is evicted from it.
        if let Some(metrics) = metrics.filter(|_| max_bytes > 0) {
            builder = builder.eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    CacheMetrics::incr(&metrics.l1_evictions);
                }
            });
        }
        L1 {
            cache: builder.build(),
        }
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

    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Entries and weighted bytes (approximate: moka applies writes lazily).
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}
