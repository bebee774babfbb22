//! The write side: guarded writes to both tiers, invalidation, generation counters and the
//! durable revalidation queue.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::codec;
use super::envelope::{self, EntryMeta};
use super::key::CacheKey;
use super::l1::{AnyValue, value_weight};
use super::l2::{L2Write, WriteOutcome};
use super::metrics::CacheMetrics;
use super::{Cache, Cacheable, Policy};
use crate::clock::millis;
use crate::model::EpochMillis;

/// What happened to one cache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written to L2 (and L1).
    Written,
    /// Refused by the guard: L2 holds a newer version, or the key was invalidated after the
    /// value was read. L1 is not updated.
    Refused,
    /// Redis was unavailable; only L1 was updated.
    L2Unavailable,
    /// A cached "not found": kept in this process's negative L1 only, never in Redis.
    LocalOnly,
    /// Larger than the value size limit (or not serialisable); not cached at all.
    Skipped,
}

/// Clock skew tolerated between the process that invalidates and one that loads. A value read
/// less than this after an invalidation is not cached (the next read loads again), so a loader
/// whose clock runs ahead cannot slip an old value past the tombstone.
const SKEW_MARGIN_MS: i64 = 250;

impl Cache {
    /// Writes `value` under `key` with the key category's policy (write-through). `read_at` is
    /// when the value was read from the source of truth (take `cache.now()` before reading):
    /// if the key was invalidated after that, the write is refused.
    pub async fn put<T: Cacheable>(
        &self,
        key: &CacheKey,
        value: T,
        read_at: EpochMillis,
    ) -> PutOutcome {
        let policy = self.policy(key.category());
        let outcome = self
            .write_entries(
                &[(key.clone(), policy, Some(Arc::new(value)))],
                true,
                read_at,
            )
            .await[0]
            .1;
        if outcome == PutOutcome::Written {
            self.publish_changes(&[key.as_str()]).await;
        }
        outcome
    }

    /// Writes many values read at `read_at` in one pipeline (one per hash slot on a cluster).
    pub async fn put_many<T: Cacheable>(
        &self,
        items: Vec<(CacheKey, T)>,
        read_at: EpochMillis,
    ) -> Vec<PutOutcome> {
        let writes: Vec<_> = items
            .into_iter()
            .map(|(key, value)| {
                let policy = self.policy(key.category());
                (key, policy, Some(Arc::new(value)))
            })
            .collect();
        let outcomes: Vec<PutOutcome> = self
            .write_entries(&writes, true, read_at)
            .await
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect();
        let written: Vec<&str> = writes
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == PutOutcome::Written)
            .map(|((key, _, _), _)| key.as_str())
            .collect();
        self.publish_changes(&written).await;
        outcomes
    }

    /// Removes keys from L1 and replaces them in L2 with short-lived tombstones: readers see a
    /// miss, and a load that read the source of truth before this moment cannot write its old
    /// value back (the guard refuses it). Returns false if Redis could not be reached, in which
    /// case L2 keeps the old entries until their TTL.
    pub async fn invalidate(&self, keys: &[CacheKey]) -> bool {
        let now = self.now();
        for key in keys {
            self.inner.l1.remove(key.as_str());
            self.inner.negatives.remove(key.as_str());
            self.inner.invalidated.insert(key.as_str().to_owned(), now);
        }
        let writes = self.tombstones(keys.iter().map(CacheKey::as_str));
        let delivered = self
            .with_l2("EVALSHA", self.batch_deadline(), |l2| {
                l2.set_guarded(&writes)
            })
            .await
            .is_ok();
        let names: Vec<&str> = keys.iter().map(CacheKey::as_str).collect();
        if delivered {
            self.inner.undelivered.delivered(names.iter().copied(), now);
            self.publish_changes(&names).await;
        } else if self.inner.l2.is_some() {
            // Not served from L2 by this process until a tombstone gets there (the change is
            // published with it).
            self.inner.undelivered.add(names.iter().copied(), now);
        }
        delivered
    }

    /// Tombstone writes for `keys`, stamped now. Each outlives any load that began before now
    /// (see `CacheOptions::tombstone_ttl`) and always passes the guard.
    pub(super) fn tombstones<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Vec<L2Write> {
        let ttl = self.inner.options.tombstone_ttl();
        let marker = envelope::tombstone(self.now(), millis(ttl)).bytes;
        keys.map(|key| L2Write {
            key: key.to_owned(),
            bytes: marker.clone(),
            ttl,
            version: u64::MAX,
            read_at: i64::MAX,
        })
        .collect()
    }

    /// The current generation of a namespace (0 before the first bump, or without Redis).
    /// Keys built with it change when the namespace is bumped.
    pub async fn generation(&self, namespace: &str) -> u64 {
        let key = self.inner.keys.generation(namespace);
        let now = self.now();
        if let Some((generation, read_at)) = self.inner.generations.get(&key)
            && self.l1_trusted(read_at, now)
        {
            return generation;
        }
        match self
            .with_l2("GET", self.single_deadline(), |l2| l2.counter(&key))
            .await
        {
            Ok(generation) => {
                self.remember_generation(key, generation, now);
                generation
            }
            Err(_) => 0,
        }
    }

    /// Invalidates a whole namespace at once by moving it to a new generation; old keys are
    /// never read again and expire by TTL. No `KEYS` or `SCAN`. `None` if Redis is unavailable.
    pub async fn bump_generation(&self, namespace: &str) -> Option<u64> {
        let key = self.inner.keys.generation(namespace);
        let now = self.now();
        let generation = self
            .with_l2("INCR", self.single_deadline(), |l2| l2.incr(&key))
            .await
            .ok()?;
        self.publish_changes(&[key.as_str()]).await;
        self.remember_generation(key, generation, now);
        Some(generation)
    }

    /// Keeps a generation read at `read_at`, unless another environment's bump became known
    /// after that read (as [`Cache::insert_l1`] does for values).
    fn remember_generation(&self, key: String, generation: u64, read_at: EpochMillis) {
        self.inner
            .generations
            .insert(key.clone(), (generation, read_at));
        if self.inner.coherence.changed_since(&key, read_at) {
            self.inner.generations.invalidate(&key);
        }
    }

    /// Up to `max` keys waiting on the durable revalidation queue, oldest first.
    pub async fn pending_revalidations(&self, max: usize) -> Vec<String> {
        let queue = self.inner.keys.revalidation_queue();
        self.with_l2("ZRANGE", self.single_deadline(), |l2| {
            l2.peek_queue(&queue, max)
        })
        .await
        .unwrap_or_default()
    }

    /// Removes refreshed keys from the revalidation queue.
    pub async fn complete_revalidations(&self, keys: &[String]) {
        let queue = self.inner.keys.revalidation_queue();
        let _ = self
            .with_l2("ZREM", self.single_deadline(), |l2| {
                l2.dequeue(&queue, keys)
            })
            .await;
    }

    /// Keys waiting on the revalidation queue; `None` without Redis.
    pub async fn revalidation_backlog(&self) -> Option<u64> {
        let queue = self.inner.keys.revalidation_queue();
        self.with_l2("ZCARD", self.single_deadline(), |l2| l2.queue_len(&queue))
            .await
            .ok()
    }

    /// Puts keys on the durable revalidation queue (deduplicated by Redis).
    pub(super) async fn enqueue_revalidations(&self, keys: &[&str]) {
        let queue = self.inner.keys.revalidation_queue();
        let now = self.now();
        if let Ok(added) = self
            .with_l2("ZADD", self.single_deadline(), |l2| {
                l2.enqueue(&queue, keys, now)
            })
            .await
        {
            CacheMetrics::add(&self.inner.metrics.revalidations_enqueued, added);
        }
    }

    /// Encodes every entry, writes them to L2 in one guarded batch (when `use_l2`), then
    /// updates L1 for those the guard did not refuse. `read_at` is when the values were read
    /// from the source of truth. Returns each entry's entity version and what happened to it.
    pub(super) async fn write_entries<T: Cacheable>(
        &self,
        items: &[(CacheKey, Policy, Option<Arc<T>>)],
        use_l2: bool,
        read_at: EpochMillis,
    ) -> Vec<(u64, PutOutcome)> {
        let now = self.now();
        let metrics = &self.inner.metrics;
        let mut outcomes = vec![(0, PutOutcome::Skipped); items.len()];
        let mut prepared = Vec::with_capacity(items.len());
        let mut writes = Vec::with_capacity(items.len());
        for (i, (key, policy, value)) in items.iter().enumerate() {
            let version = value.as_ref().map_or(0, |v| v.cache_version());
            outcomes[i].0 = version;
            let payload = match value {
                None => Vec::new(),
                Some(v) => match codec::encode(v.as_ref()) {
                    Ok(payload) => payload,
                    Err(e) => {
                        tracing::warn!(key = key.as_str(), error.message = %e, "value not serialisable; not cached");
                        continue;
                    }
                },
            };
            if payload.len() > self.inner.options.max_value_bytes {
                CacheMetrics::incr(&metrics.oversized_skips);
                tracing::warn!(
                    key = key.as_str(),
                    bytes = payload.len(),
                    "value exceeds the cache size limit; not cached"
                );
                continue;
            }
            let meta = self.entry_meta(version, value.is_none(), *policy, now);
            if value.is_none() {
                // Not found: remembered here only (see `Inner::negatives`), unless this
                // process invalidated the key after the read (the entity may exist now) or
                // holds a value for it (written meanwhile, by a newer read).
                let invalidated_after_read = self
                    .inner
                    .invalidated
                    .get(key.as_str())
                    .is_some_and(|at| at >= read_at.saturating_sub(SKEW_MARGIN_MS));
                let holds_value = self.inner.l1.get(key.as_str(), now).is_some();
                if invalidated_after_read || holds_value {
                    outcomes[i].1 = PutOutcome::Refused;
                } else {
                    self.insert_l1(key.as_str(), None, meta, 0, read_at);
                    outcomes[i].1 = PutOutcome::LocalOnly;
                }
                continue;
            }
            let encoded = envelope::encode(&meta, &payload, self.inner.options.compress_threshold);
            if use_l2 {
                CacheMetrics::add(&metrics.bytes_raw, encoded.raw_len as u64);
                CacheMetrics::add(&metrics.bytes_stored, encoded.bytes.len() as u64);
            }
            let weight = value.as_ref().map_or(0, |v| value_weight(v.as_ref()));
            prepared.push((i, meta, weight));
            writes.push(L2Write {
                key: key.as_str().to_owned(),
                bytes: encoded.bytes,
                ttl: Duration::from_millis(
                    u64::try_from(meta.stale_until - now).unwrap_or(1).max(1),
                ),
                version,
                read_at: read_at.saturating_sub(SKEW_MARGIN_MS),
            });
        }

        let l2_outcomes = if use_l2 && !writes.is_empty() {
            self.with_l2("EVALSHA", self.batch_deadline(), |l2| {
                l2.set_guarded(&writes)
            })
            .await
            .ok()
        } else {
            None
        };

        for (n, (i, meta, weight)) in prepared.into_iter().enumerate() {
            let (key, _, value) = &items[i];
            let outcome = match l2_outcomes.as_ref().map(|o| o[n]) {
                Some(WriteOutcome::Written) => PutOutcome::Written,
                Some(WriteOutcome::Refused) => PutOutcome::Refused,
                None => PutOutcome::L2Unavailable,
            };
            if outcome == PutOutcome::Refused {
                CacheMetrics::incr(&metrics.version_rejects);
                self.inner.l1.remove(key.as_str());
                self.inner.negatives.remove(key.as_str());
            } else {
                self.insert_l1(
                    key.as_str(),
                    value.clone().map(|v| v as AnyValue),
                    meta,
                    weight,
                    read_at,
                );
            }
            outcomes[i].1 = outcome;
        }
        outcomes
    }

    /// Metadata for a new entry, with TTL jitter so keys written together do not expire
    /// together (which would send their reloads to the database at the same moment).
    fn entry_meta(
        &self,
        version: u64,
        negative: bool,
        policy: Policy,
        now: EpochMillis,
    ) -> EntryMeta {
        let jitter = self.inner.options.jitter.clamp(0.0, 0.5);
        let factor = if jitter > 0.0 {
            1.0 + rand::rng().random_range(-jitter..=jitter)
        } else {
            1.0
        };
        let scaled = |d: Duration| millis(d.mul_f64(factor)).max(1);
        let fresh_until = now
            + scaled(if negative {
                policy.negative
            } else {
                policy.fresh
            });
        let stale_until = if negative || policy.stale.is_zero() {
            fresh_until
        } else {
            fresh_until + scaled(policy.stale)
        };
        EntryMeta {
            version,
            stored_at: now,
            fresh_until,
            stale_until,
            negative,
            tombstone: false,
        }
    }
}
