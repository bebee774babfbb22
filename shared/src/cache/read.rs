//! The read path: L1, then L2, then a single-flight load; stale-while-revalidate; batches.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng;

use super::codec;
use super::envelope::{self, EntryMeta, Freshness};
use super::key::CacheKey;
use super::l1::{AnyValue, L1Entry, value_weight};
use super::metrics::CacheMetrics;
use super::{BoxFuture, Cache, Cacheable, L2Fail, LoadedAny, Policy, Source};
use crate::error::{Error, Result};
use crate::model::EpochMillis;

/// A boxed `'static` future of a load's result.
pub type LoadFuture<R> = Pin<Box<dyn Future<Output = Result<R>> + Send + 'static>>;

/// A single-key load, boxed once a read gets past L1, so the read path below it is not generic
/// over the caller's closure. `Ok(None)`: the entity does not exist (cached negatively).
pub type Loader<T> = Box<dyn FnOnce() -> LoadFuture<Option<T>> + Send + 'static>;

/// A batch load: the ids of the misses in, those that exist out.
pub type BatchLoader<I, T> =
    Arc<dyn Fn(Vec<I>) -> LoadFuture<HashMap<I, T>> + Send + Sync + 'static>;

/// What [`Cache::get_or_load`] takes as a loader: an `FnOnce() -> impl Future<Output =
/// Result<Option<T>>>`. It is `'static` because a stale answer hands it to a
/// [`Revalidation`] that runs after the response.
pub trait LoadOnce<T>: Send + 'static {
    /// The load, boxed.
    fn boxed(self) -> Loader<T>;
}

impl<T, F, Fut> LoadOnce<T> for F
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<T>>> + Send + 'static,
{
    fn boxed(self) -> Loader<T> {
        Box::new(move || Box::pin(self()))
    }
}

/// What [`Cache::get_many`] takes as a loader: an `Fn(Vec<I>) -> impl Future<Output =
/// Result<HashMap<I, T>>>`, called once for a batch's misses and again to revalidate its
/// stale answers.
pub trait LoadMany<I, T>: Send + Sync + 'static {
    /// The load, shared.
    fn shared(self) -> BatchLoader<I, T>;
}

impl<I, T, F, Fut> LoadMany<I, T> for F
where
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HashMap<I, T>>> + Send + 'static,
{
    fn shared(self) -> BatchLoader<I, T> {
        Arc::new(move |ids| Box::pin(self(ids)))
    }
}

/// The answer to one read.
pub struct Lookup<T> {
    /// The value; `None` when the entity does not exist (possibly a cached "not found").
    pub value: Option<Arc<T>>,
    /// Where the answer came from.
    pub source: Source,
    /// How old the answer is, in milliseconds (0 for a fresh load).
    pub age_ms: u64,
    /// Entity version of the answer (0 when unversioned or not found).
    pub version: u64,
    /// For a stale answer: the work that refreshes it. Run it after responding. Its first step
    /// queues the key durably, so once started a refresh that fails or is cut off is finished
    /// by the refresh job; one that never starts leaves the copy stale, and the next stale
    /// read revalidates it again.
    pub revalidation: Option<Revalidation>,
}

impl<T> std::fmt::Debug for Lookup<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("found", &self.value.is_some())
            .field("source", &self.source)
            .field("age_ms", &self.age_ms)
            .field("version", &self.version)
            .field("revalidation", &self.revalidation)
            .finish()
    }
}

/// The answer to a batch read, in the order of the request.
pub struct BatchLookup<T> {
    /// One answer per requested key.
    pub items: Vec<Lookup<T>>,
    /// Refreshes every stale answer of the batch, if there were any.
    pub revalidation: Option<Revalidation>,
}

/// Deferred work that refreshes stale entries.
pub struct Revalidation {
    keys: Vec<String>,
    task: BoxFuture,
}

impl std::fmt::Debug for Revalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revalidation")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Revalidation {
    /// Wraps deferred work refreshing `keys`.
    pub fn new(keys: Vec<String>, task: impl Future<Output = ()> + Send + 'static) -> Self {
        Revalidation {
            keys,
            task: Box::pin(task),
        }
    }

    /// The keys this work refreshes.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Runs the refresh. Never fails: errors are logged and counted, and the durable queue
    /// keeps what was not refreshed.
    pub async fn run(self) {
        self.task.await;
    }
}

impl<T: Cacheable> From<Lookup<T>> for LoadedAny {
    fn from(lookup: Lookup<T>) -> Self {
        LoadedAny {
            value: lookup.value.map(|v| v as AnyValue),
            version: lookup.version,
            age_ms: lookup.age_ms,
            source: lookup.source,
        }
    }
}

impl<T: Cacheable> Lookup<T> {
    fn from_loaded(loaded: LoadedAny) -> Result<Self> {
        let value = match loaded.value {
            None => None,
            Some(any) => Some(any.downcast::<T>().map_err(|_| {
                Error::codec("cached value", "a key was read as two different types")
            })?),
        };
        Ok(Lookup {
            value,
            source: loaded.source,
            age_ms: loaded.age_ms,
            version: loaded.version,
            revalidation: None,
        })
    }
}

/// A decoded L2 entry.
struct Decoded<T> {
    meta: EntryMeta,
    value: Option<Arc<T>>,
    weight: u32,
}

/// What an L2 entry lets a read do now.
enum Judged<T> {
    /// Serve it.
    Fresh(Decoded<T>),
    /// Serve it while it is revalidated.
    Stale(Decoded<T>),
    /// Load: absent, expired, a tombstone, a stale "not found", known outdated or unusable.
    Miss,
}

/// A single-flight lock on a key, held in Redis.
///
/// ## Behavior
/// - Taken with `SET NX PX lock_ttl` and a random token.
/// - [`LoadLock::hold_while`] keeps it alive while the holder works: a load may take up to
///   `load_timeout`, longer than the lock's TTL, and an expired lock would let a second
///   process load the same key.
/// - Released by compare-and-delete ([`LoadLock::release`]), so a holder whose lock expired
///   never frees the next holder's. Dropped without release (its request cancelled), it is
///   released in the background; failing that, its TTL frees it.
struct LoadLock {
    cache: Cache,
    key: String,
    token: String,
    released: bool,
}

impl LoadLock {
    /// Runs `work` while renewing the lock every third of its TTL.
    async fn hold_while<R>(&self, work: impl Future<Output = R>) -> R {
        let ttl = self.cache.inner.options.lock_ttl;
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let _ = self
                    .cache
                    .with_l2("PEXPIRE", self.cache.single_deadline(), |l2| {
                        l2.extend_lock(&self.key, &self.token, ttl)
                    })
                    .await;
            }
        };
        tokio::select! {
            result = work => result,
            () = renew => unreachable!("the renewal loop never ends"),
        }
    }

    /// Releases the lock if it is still ours.
    async fn release(mut self) {
        self.released = true;
        let _ = self
            .cache
            .with_l2("unlock", self.cache.single_deadline(), |l2| {
                l2.unlock(&self.key, &self.token)
            })
            .await;
    }
}

impl Drop for LoadLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Not through `release`: a task the runtime drops unpolled (it is shutting down)
        // must not drop another unreleased lock.
        let (cache, key, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let _ = cache
                .with_l2("unlock", cache.single_deadline(), |l2| {
                    l2.unlock(&key, &token)
                })
                .await;
        });
    }
}

impl Cache {
    /// Reads `key`, loading it with `loader` on a miss, using the key category's policy.
    ///
    /// `loader` returns `Ok(None)` for an entity that does not exist (cached negatively).
    pub async fn get_or_load<T: Cacheable>(
        &self,
        key: &CacheKey,
        loader: impl LoadOnce<T>,
    ) -> Result<Lookup<T>> {
        self.get_or_load_with(key, self.policy(key.category()), loader)
            .await
    }

    /// [`Cache::get_or_load`] with an explicit policy.
    pub async fn get_or_load_with<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: impl LoadOnce<T>,
    ) -> Result<Lookup<T>> {
        let now = self.now();
        if let Some(hit) = self.l1_hit::<T>(key, now) {
            return Ok(hit);
        }
        let fetched = self
            .with_l2("GET", self.single_deadline(), |l2| l2.get(key.as_str()))
            .await;
        self.answer_from_l2(key, policy, loader.boxed(), fetched, now)
            .await
    }

    /// Two keys read together (a product's detail and its stats) in one Redis round trip:
    /// each from L1 if it is there, the others with one MGET (the keys of one product share a
    /// hash tag, so one slot on a cluster), then each answered as [`Cache::get_or_load`] would.
    pub async fn get_or_load_both<A: Cacheable, B: Cacheable>(
        &self,
        (key_a, loader_a): (&CacheKey, impl LoadOnce<A>),
        (key_b, loader_b): (&CacheKey, impl LoadOnce<B>),
    ) -> (Result<Lookup<A>>, Result<Lookup<B>>) {
        let now = self.now();
        let (hit_a, hit_b) = (self.l1_hit::<A>(key_a, now), self.l1_hit::<B>(key_b, now));
        let single = |key: &CacheKey| {
            let key = key.as_str().to_owned();
            async move {
                self.with_l2("GET", self.single_deadline(), |l2| async move {
                    l2.get(&key).await
                })
                .await
            }
        };
        let (fetched_a, fetched_b) = match (hit_a.is_some(), hit_b.is_some()) {
            (true, true) => (Ok(None), Ok(None)),
            (true, false) => (Ok(None), single(key_b).await),
            (false, true) => (single(key_a).await, Ok(None)),
            (false, false) => match self
                .with_l2("MGET", self.single_deadline(), |l2| async move {
                    l2.mget(&[key_a.as_str(), key_b.as_str()]).await
                })
                .await
            {
                Ok(mut values) => {
                    let b = values.pop().flatten();
                    (Ok(values.pop().flatten()), Ok(b))
                }
                Err(fail) => (Err(fail), Err(fail)),
            },
        };
        tokio::join!(
            self.hit_or_answer(key_a, hit_a, loader_a, fetched_a, now),
            self.hit_or_answer(key_b, hit_b, loader_b, fetched_b, now),
        )
    }

    /// The L1 hit if there was one, else the answer from what L2 returned.
    async fn hit_or_answer<T: Cacheable>(
        &self,
        key: &CacheKey,
        hit: Option<Lookup<T>>,
        loader: impl LoadOnce<T>,
        fetched: std::result::Result<Option<Vec<u8>>, L2Fail>,
        now: EpochMillis,
    ) -> Result<Lookup<T>> {
        match hit {
            Some(hit) => Ok(hit),
            None => {
                let policy = self.policy(key.category());
                self.answer_from_l2(key, policy, loader.boxed(), fetched, now)
                    .await
            }
        }
    }

    /// Answers `key` from what L2 returned for it (read at `now`): fresh, or stale while it
    /// is revalidated; otherwise a miss, loaded.
    async fn answer_from_l2<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: Loader<T>,
        fetched: std::result::Result<Option<Vec<u8>>, L2Fail>,
        now: EpochMillis,
    ) -> Result<Lookup<T>> {
        let mut l2_usable = true;
        match fetched {
            Ok(bytes) => match self.judge::<T>(key.as_str(), bytes.as_deref(), now, true) {
                Judged::Fresh(entry) => return Ok(self.serve_fresh_from_l2(key, entry, now)),
                Judged::Stale(entry) => {
                    let revalidation = self.stale_revalidation(key, policy, loader);
                    return Ok(Self::serve_stale(entry, now, Some(revalidation)));
                }
                Judged::Miss => {}
            },
            Err(L2Fail::WrongType) => {
                CacheMetrics::incr(&self.inner.metrics.decode_errors);
                tracing::warn!(
                    key = key.as_str(),
                    "cache key holds a value of another Redis type; treated as a miss"
                );
            }
            Err(L2Fail::Unavailable) => l2_usable = false,
        }
        CacheMetrics::incr(&self.inner.metrics.misses);
        self.load_coalesced(key, policy, loader, l2_usable).await
    }

    /// Reads many keys: L1, then one MGET (one pipelined request per node on a cluster),
    /// then one loader call for every miss, written back in one pipeline.
    ///
    /// `loader` gets the ids of the misses and returns those that exist; the others are cached
    /// as "not found". Batches are not single-flighted: a herd on one key is the single-key
    /// path's problem, and a batch's misses are already one database call.
    pub async fn get_many<I, T>(
        &self,
        entries: Vec<(CacheKey, I)>,
        loader: impl LoadMany<I, T>,
    ) -> Result<BatchLookup<T>>
    where
        I: Clone + Eq + Hash + Send + Sync + 'static,
        T: Cacheable,
    {
        let loader = loader.shared();
        let now = self.now();
        let mut out: Vec<Option<Lookup<T>>> = Vec::with_capacity(entries.len());
        let mut pending = Vec::new();
        for (i, (key, _)) in entries.iter().enumerate() {
            let hit = self.l1_hit::<T>(key, now);
            if hit.is_none() {
                pending.push(i);
            }
            out.push(hit);
        }

        let mut misses = Vec::new();
        let mut stale = Vec::new();
        let mut l2_usable = true;
        if !pending.is_empty() {
            let keys: Vec<&str> = pending.iter().map(|&i| entries[i].0.as_str()).collect();
            match self
                .with_l2("MGET", self.batch_deadline(), |l2| l2.mget(&keys))
                .await
            {
                Ok(values) => {
                    for (i, bytes) in pending.into_iter().zip(values) {
                        let key = &entries[i].0;
                        match self.judge::<T>(key.as_str(), bytes.as_deref(), now, true) {
                            Judged::Fresh(entry) => {
                                out[i] = Some(self.serve_fresh_from_l2(key, entry, now));
                            }
                            Judged::Stale(entry) => {
                                out[i] = Some(Self::serve_stale(entry, now, None));
                                stale.push(i);
                            }
                            Judged::Miss => misses.push(i),
                        }
                    }
                }
                Err(_) => {
                    l2_usable = false;
                    misses = pending;
                }
            }
        }

        if !misses.is_empty() {
            CacheMetrics::add(&self.inner.metrics.misses, misses.len() as u64);
            let ids: Vec<I> = misses.iter().map(|&i| entries[i].1.clone()).collect();
            let loaded = self
                .load_batch(&entries, &misses, ids, &loader, l2_usable)
                .await?;
            for (i, lookup) in misses.into_iter().zip(loaded) {
                out[i] = Some(lookup);
            }
        }

        let revalidation =
            (!stale.is_empty()).then(|| self.stale_batch_revalidation(&entries, &stale, loader));
        Ok(BatchLookup {
            items: out.into_iter().flatten().collect(),
            revalidation,
        })
    }

    /// A fresh L1 answer, if there is one that may be served (see [`super::coherence`]).
    fn l1_hit<T: Cacheable>(&self, key: &CacheKey, now: EpochMillis) -> Option<Lookup<T>> {
        let entry = self
            .inner
            .l1
            .get(key.as_str(), now)
            .or_else(|| self.inner.negatives.get(key.as_str(), now))?;
        if entry.meta.freshness(now) != Freshness::Fresh {
            return None;
        }
        let metrics = &self.inner.metrics;
        if !self.l1_trusted(entry.read_at, now) {
            CacheMetrics::incr(&metrics.l1_unchecked);
            return None;
        }
        let value = match entry.value {
            None => None,
            Some(any) => Some(any.downcast::<T>().ok()?),
        };
        CacheMetrics::incr(if value.is_some() {
            &metrics.l1_hits
        } else {
            &metrics.negative_hits
        });
        Some(Lookup {
            value,
            source: Source::L1,
            age_ms: entry.meta.age_ms(now),
            version: entry.meta.version,
            revalidation: None,
        })
    }

    /// Serves a fresh L2 entry read at `read_at`, keeping it in L1.
    fn serve_fresh_from_l2<T: Cacheable>(
        &self,
        key: &CacheKey,
        entry: Decoded<T>,
        read_at: EpochMillis,
    ) -> Lookup<T> {
        let metrics = &self.inner.metrics;
        CacheMetrics::incr(if entry.value.is_some() {
            &metrics.l2_hits
        } else {
            &metrics.negative_hits
        });
        self.insert_l1(
            key.as_str(),
            entry.value.clone().map(|v| v as AnyValue),
            entry.meta,
            entry.weight,
            read_at,
        );
        Lookup {
            value: entry.value,
            source: Source::L2,
            age_ms: entry.meta.age_ms(read_at),
            version: entry.meta.version,
            revalidation: None,
        }
    }

    fn serve_stale<T: Cacheable>(
        entry: Decoded<T>,
        now: EpochMillis,
        revalidation: Option<Revalidation>,
    ) -> Lookup<T> {
        Lookup {
            value: entry.value,
            source: Source::Stale,
            age_ms: entry.meta.age_ms(now),
            version: entry.meta.version,
            revalidation,
        }
    }

    /// What the bytes L2 returned for `key` let a read do at `now`; the one judgement of the
    /// single, batch and lock paths. Unusable bytes are a miss, counted and logged when
    /// `report` (a second look at the same key does not count them again).
    fn judge<T: Cacheable>(
        &self,
        key: &str,
        bytes: Option<&[u8]>,
        now: EpochMillis,
        report: bool,
    ) -> Judged<T> {
        let Some(bytes) = bytes else {
            return Judged::Miss;
        };
        let entry = match self.try_decode::<T>(bytes) {
            Ok(entry) => entry,
            Err(e) => {
                if report {
                    CacheMetrics::incr(&self.inner.metrics.decode_errors);
                    tracing::warn!(key, error.message = %e, source = ?std::error::Error::source(&e), "unusable cached value; treated as a miss");
                }
                return Judged::Miss;
            }
        };
        // A tombstone is an invalidated key; an entry stored before an invalidation of ours
        // that Redis missed is known to be stale.
        if entry.meta.tombstone || self.inner.undelivered.outdates(key, entry.meta.stored_at) {
            return Judged::Miss;
        }
        match entry.meta.freshness(now) {
            Freshness::Fresh => Judged::Fresh(entry),
            // A stale "not found" is reloaded, not served.
            Freshness::Stale if !entry.meta.negative => Judged::Stale(entry),
            Freshness::Stale | Freshness::Expired => Judged::Miss,
        }
    }

    fn try_decode<T: Cacheable>(&self, bytes: &[u8]) -> Result<Decoded<T>> {
        envelope::decode(bytes, self.inner.options.max_value_bytes)
            .map_err(|e| Error::codec("cache envelope", e))
            .and_then(|env| {
                let value = if env.meta.negative || env.meta.tombstone {
                    None
                } else {
                    Some(Arc::new(
                        codec::decode::<T>(env.format, &env.payload)
                            .map_err(|e| Error::codec("cached payload", e))?,
                    ))
                };
                let weight = value.as_deref().map_or(0, value_weight);
                Ok(Decoded {
                    meta: env.meta,
                    value,
                    weight,
                })
            })
    }

    /// Keeps a value read from L2 or the database at `read_at` in L1, unless another
    /// environment's change to it became known after that read (see [`super::coherence`]).
    pub(super) fn insert_l1(
        &self,
        key: &str,
        value: Option<AnyValue>,
        meta: EntryMeta,
        weight: u32,
        read_at: EpochMillis,
    ) {
        let until =
            (self.now() + crate::clock::millis(self.inner.options.l1_ttl)).min(meta.fresh_until);
        let tier = if value.is_some() {
            // An entity that exists now: forget that it once did not.
            self.inner.negatives.remove(key);
            if self.inner.options.l1_max_bytes > 0 {
                CacheMetrics::incr(&self.inner.metrics.l1_inserts);
            }
            &self.inner.l1
        } else {
            &self.inner.negatives
        };
        tier.insert(
            key,
            L1Entry {
                value,
                meta,
                until,
                read_at,
                weight,
            },
        );
        // Checked after inserting: a poll records a change before it removes the key, so
        // either it removes this entry or this check sees its record.
        if self.inner.coherence.changed_since(key, read_at) {
            tier.remove(key);
        }
    }

    /// A miss: one load per key per process (single flight), and one across processes
    /// (Redis lock) when Redis is usable.
    async fn load_coalesced<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: Loader<T>,
        l2_usable: bool,
    ) -> Result<Lookup<T>> {
        if !self.inner.options.single_flight {
            let loaded = self.load_and_store(key, policy, loader, l2_usable).await?;
            return Lookup::from_loaded(loaded);
        }
        let (result, _) = self
            .inner
            .flights
            .run(key.as_str(), || async {
                // A flight that finished just before this one started may have filled L1.
                if let Some(hit) = self.l1_hit::<T>(key, self.now()) {
                    return Ok(LoadedAny::from(hit));
                }
                if l2_usable {
                    self.load_under_lock(key, policy, loader).await
                } else {
                    self.load_and_store(key, policy, loader, false).await
                }
                .map_err(Arc::new)
            })
            .await;
        Lookup::from_loaded(result.map_err(Error::Shared)?)
    }

    /// Tries to take the single-flight lock of `key`: `Ok(None)` if another process holds it.
    async fn take_load_lock(
        &self,
        key: &CacheKey,
    ) -> std::result::Result<Option<LoadLock>, L2Fail> {
        let lock_key = self.inner.keys.lock(key);
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let taken = self
            .with_l2("SET NX", self.single_deadline(), |l2| {
                l2.try_lock(&lock_key, &token, self.inner.options.lock_ttl)
            })
            .await?;
        Ok(taken.then(|| LoadLock {
            cache: self.clone(),
            key: lock_key,
            token,
            released: false,
        }))
    }

    /// Takes the Redis lock for `key` and loads, or waits for the holder's value with backoff;
    /// past `lock_wait` it loads itself. Never fails because of the lock.
    async fn load_under_lock<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: Loader<T>,
    ) -> Result<LoadedAny> {
        let deadline = Instant::now() + self.inner.options.lock_wait;
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        loop {
            match self.take_load_lock(key).await {
                Ok(Some(lock)) => {
                    // The previous holder may have stored the value between our miss and now.
                    let result = match self.fresh_from_l2::<T>(key).await {
                        Some(found) => Ok(found),
                        None => {
                            lock.hold_while(self.load_and_store(key, policy, loader, true))
                                .await
                        }
                    };
                    lock.release().await;
                    return result;
                }
                Ok(None) => {
                    if !waited {
                        waited = true;
                        CacheMetrics::incr(&self.inner.metrics.lock_waits);
                    }
                    if Instant::now() + backoff > deadline {
                        CacheMetrics::incr(&self.inner.metrics.lock_wait_timeouts);
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(40));
                    if let Some(found) = self.fresh_from_l2::<T>(key).await {
                        return Ok(found);
                    }
                }
                Err(_) => break,
            }
        }
        let l2_usable = self.inner.l2.is_some();
        self.load_and_store(key, policy, loader, l2_usable).await
    }

    /// The fresh value of `key` in L2, if it is there now (put in L1 as well). Unusable bytes
    /// were already counted by the read that missed, so they are not counted again here.
    async fn fresh_from_l2<T: Cacheable>(&self, key: &CacheKey) -> Option<LoadedAny> {
        let read_at = self.now();
        let bytes = self
            .with_l2("GET", self.single_deadline(), |l2| l2.get(key.as_str()))
            .await
            .ok()?;
        match self.judge::<T>(key.as_str(), bytes.as_deref(), self.now(), false) {
            Judged::Fresh(entry) => Some(LoadedAny::from(
                self.serve_fresh_from_l2(key, entry, read_at),
            )),
            Judged::Stale(_) | Judged::Miss => None,
        }
    }

    /// Runs a load within `load_timeout`: the tombstone of an invalidation made after the load
    /// began outlives it, so the load can never write its old value back unguarded. Every
    /// read whose result is written with [`Cache::put`] at the time the read began (the
    /// refresh job, the revalidation drain, an admin warm) goes through this.
    pub async fn bounded_load<R>(&self, load: impl Future<Output = Result<R>>) -> Result<R> {
        let after = self.inner.options.load_timeout;
        let started = std::time::Instant::now();
        let loaded = tokio::time::timeout(after, load).await;
        self.traffic()
            .record_operation(super::traffic::Operation::Load, started.elapsed());
        loaded.map_err(|_| crate::Error::Timeout {
            op: "cache load",
            after,
        })?
    }

    /// Runs the loader and writes its answer (or "not found") to both tiers.
    async fn load_and_store<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: Loader<T>,
        l2_usable: bool,
    ) -> Result<LoadedAny> {
        CacheMetrics::incr(&self.inner.metrics.loads);
        let read_at = self.now();
        let loaded = self.bounded_load(loader()).await.inspect_err(|e| {
            CacheMetrics::incr(&self.inner.metrics.load_errors);
            tracing::warn!(key = key.as_str(), error.message = %e, "cache loader failed");
        })?;
        let value = loaded.map(Arc::new);
        let (version, _) = self
            .write_entries(&[(key.clone(), policy, value.clone())], l2_usable, read_at)
            .await[0];
        Ok(LoadedAny {
            value: value.map(|v| v as AnyValue),
            version,
            age_ms: 0,
            source: if l2_usable {
                Source::Loaded
            } else {
                Source::Bypass
            },
        })
    }

    /// Loads a batch's misses with one loader call and writes them back in one pipeline.
    async fn load_batch<I, T>(
        &self,
        entries: &[(CacheKey, I)],
        misses: &[usize],
        ids: Vec<I>,
        loader: &BatchLoader<I, T>,
        l2_usable: bool,
    ) -> Result<Vec<Lookup<T>>>
    where
        I: Clone + Eq + Hash + Send + Sync + 'static,
        T: Cacheable,
    {
        CacheMetrics::incr(&self.inner.metrics.loads);
        let read_at = self.now();
        let found: HashMap<I, Arc<T>> = self
            .bounded_load(loader(ids))
            .await
            .inspect_err(|e| {
                CacheMetrics::incr(&self.inner.metrics.load_errors);
                tracing::warn!(keys = misses.len(), error.message = %e, "batch cache loader failed");
            })?
            .into_iter()
            .map(|(id, value)| (id, Arc::new(value)))
            .collect();
        let writes: Vec<(CacheKey, Policy, Option<Arc<T>>)> = misses
            .iter()
            .map(|&i| {
                let (key, id) = &entries[i];
                (
                    key.clone(),
                    self.policy(key.category()),
                    found.get(id).cloned(),
                )
            })
            .collect();
        let source = if l2_usable {
            Source::Loaded
        } else {
            Source::Bypass
        };
        let written = self.write_entries(&writes, l2_usable, read_at).await;
        Ok(writes
            .into_iter()
            .zip(written)
            .map(|((_, _, value), (version, _))| Lookup {
                value,
                source,
                age_ms: 0,
                version,
                revalidation: None,
            })
            .collect())
    }

    /// The work that refreshes a stale `key`, all of it after the response: a stale answer
    /// costs the request no more Redis round trips than a hit. The durable queue entry comes
    /// first, so a refresh that does not finish (the environment frozen for good) is still
    /// done by the refresh job.
    fn stale_revalidation<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: Loader<T>,
    ) -> Revalidation {
        CacheMetrics::incr(&self.inner.metrics.stale_serves);
        let engine = self.clone();
        let key = key.clone();
        Revalidation::new(vec![key.to_string()], async move {
            engine.enqueue_revalidations(&[key.as_str()]).await;
            engine.revalidate_one(&key, policy, loader).await;
        })
    }

    async fn revalidate_one<T: Cacheable>(
        &self,
        key: &CacheKey,
        policy: Policy,
        loader: Loader<T>,
    ) {
        // One process refreshes; the others keep serving the stale copy meanwhile.
        let Ok(Some(lock)) = self.take_load_lock(key).await else {
            return;
        };
        // Another process may have refreshed it between our stale read and the lock.
        let refreshed = self.fresh_from_l2::<T>(key).await.is_some()
            || lock
                .hold_while(self.load_and_store(key, policy, loader, true))
                .await
                .is_ok();
        if refreshed {
            CacheMetrics::incr(&self.inner.metrics.revalidations);
            self.complete_revalidations(&[key.to_string()]).await;
        }
        lock.release().await;
    }

    /// The work that refreshes a batch's stale answers, after the response (as for one key,
    /// see [`Cache::stale_revalidation`]).
    fn stale_batch_revalidation<I, T>(
        &self,
        entries: &[(CacheKey, I)],
        stale: &[usize],
        loader: BatchLoader<I, T>,
    ) -> Revalidation
    where
        I: Clone + Eq + Hash + Send + Sync + 'static,
        T: Cacheable,
    {
        CacheMetrics::add(&self.inner.metrics.stale_serves, stale.len() as u64);
        let stale_entries: Vec<(CacheKey, I)> = stale.iter().map(|&i| entries[i].clone()).collect();
        let engine = self.clone();
        let names: Vec<String> = stale_entries.iter().map(|(k, _)| k.to_string()).collect();
        Revalidation::new(names.clone(), async move {
            let keys: Vec<&str> = names.iter().map(String::as_str).collect();
            engine.enqueue_revalidations(&keys).await;
            let all: Vec<usize> = (0..stale_entries.len()).collect();
            let ids = stale_entries.iter().map(|(_, id)| id.clone()).collect();
            if engine
                .load_batch(&stale_entries, &all, ids, &loader, true)
                .await
                .is_ok()
            {
                CacheMetrics::add(&engine.inner.metrics.revalidations, all.len() as u64);
                engine.complete_revalidations(&names).await;
            }
        })
    }
}
