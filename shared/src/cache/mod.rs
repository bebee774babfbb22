//! The two-tier cache engine: an in-process L1 (moka) over a shared L2 (Redis), with
//! stale-while-revalidate, single flight within and across processes, negative caching, TTL
//! jitter, a version guard, fail-open behaviour and counters.
//!
//! Reads: [`Cache::get_or_load`] for one key, [`Cache::get_many`] for a batch. Writes:
//! [`Cache::put`], [`Cache::put_many`], [`Cache::invalidate`] and generation counters for
//! namespaces. See `../shared/DESIGN.md` ("The cache") for the reasoning.

pub mod breaker;
mod cacheable;
pub mod codec;
mod coherence;
pub mod envelope;
mod flight;
pub mod key;
mod l1;
pub mod l2;
pub mod metrics;
pub mod observe;
mod read;
pub mod traffic;
mod undelivered;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::breaker::{BreakerState, CircuitBreaker};
use self::flight::Flights;
use self::key::{Category, KeySpace};
use self::l1::{AnyValue, L1};
use self::l2::L2Store;
use self::metrics::{CacheMetrics, MetricsSnapshot};
use crate::clock::Clock;
use crate::config::{CacheConfig, CategoryTtls, RedisConfig};
use crate::error::Error;
use crate::model::EpochMillis;

pub use self::read::{
    BatchLoader, BatchLookup, LoadFuture, LoadMany, LoadOnce, Loader, Lookup, Revalidation,
};
pub use self::write::PutOutcome;

/// A value the cache can hold: serialised in L2 (see [`codec`]), kept decoded in L1.
pub trait Cacheable: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The entity version the L2 version guard compares; 0 for data without versions.
    fn cache_version(&self) -> u64 {
        0
    }

    /// Bytes the value owns on the heap (string and vector buffers, by capacity): with its
    /// own size, what it holds in L1, which the L1 byte bound counts.
    fn heap_bytes(&self) -> usize;
}

/// Where a read was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Source {
    /// The in-process L1.
    L1,
    /// Redis, fresh.
    L2,
    /// Redis, past fresh: served at once while a revalidation refreshes it.
    Stale,
    /// Loaded from the database and written to both tiers.
    Loaded,
    /// Loaded from the database with Redis unavailable (circuit open, error or not configured).
    Bypass,
}

impl Source {
    /// Upper-case name, as in `X-Cache` headers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::L1 => "L1",
            Source::L2 => "L2",
            Source::Stale => "STALE",
            Source::Loaded => "LOADED",
            Source::Bypass => "BYPASS",
        }
    }
}

/// Lifetimes applied to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Served without revalidation for this long (before jitter).
    pub fresh: Duration,
    /// Then served while revalidating for this long (before jitter).
    pub stale: Duration,
    /// Lifetime of a cached "not found".
    pub negative: Duration,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Prefix of every key.
    pub key_prefix: String,
    /// L1 byte bound.
    pub l1_max_bytes: u64,
    /// L1 entry lifetime.
    pub l1_ttl: Duration,
    /// Longest another environment's change goes unseen by this one's L1 (0: entries live
    /// their TTL); see [`coherence`].
    pub l1_coherence: Duration,
    /// Compress payloads above this many bytes.
    pub compress_threshold: usize,
    /// Never cache or decode a payload larger than this.
    pub max_value_bytes: usize,
    /// TTLs per category.
    pub ttl: CategoryTtls,
    /// Deadline of one Redis call (batches get twice this).
    pub command_timeout: Duration,
    /// Lifetime of a single-flight lock: how long a crashed holder can delay others at most.
    pub lock_ttl: Duration,
    /// How long a reader waits for another process's load before loading itself.
    pub lock_wait: Duration,
    /// Consecutive Redis failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit skips Redis.
    pub breaker_cooldown: Duration,
    /// TTL jitter as a fraction (0.1 = ±10%).
    pub jitter: f64,
    /// Coalesce concurrent loads of a key (in process and across processes). Off gives plain
    /// cache-aside, for comparison in benchmarks.
    pub single_flight: bool,
    /// Longest a load may take; a slower one fails (and writes nothing).
    pub load_timeout: Duration,
}

impl CacheOptions {
    /// How long an invalidation's tombstone lives: past the slowest load that may have read
    /// the source of truth before it (bounded by `load_timeout`), plus that load's write
    /// (a batch deadline) and the skew margin, so no such load can write its old value back
    /// after the tombstone is gone.
    pub fn tombstone_ttl(&self) -> Duration {
        self.load_timeout + 2 * self.command_timeout + Duration::from_secs(1)
    }
}

impl CacheOptions {
    /// Options from the configuration, with the engine's defaults for the rest.
    pub fn from_config(cache: &CacheConfig, redis: Option<&RedisConfig>) -> Self {
        CacheOptions {
            key_prefix: cache.key_prefix.clone(),
            l1_max_bytes: cache.l1_max_bytes,
            l1_ttl: cache.l1_ttl,
            l1_coherence: cache.l1_coherence,
            compress_threshold: cache.compress_threshold,
            max_value_bytes: 1 << 20,
            ttl: cache.ttl,
            command_timeout: redis.map_or(Duration::from_millis(50), |r| r.command_timeout),
            lock_ttl: Duration::from_secs(2),
            lock_wait: Duration::from_millis(300),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            jitter: 0.1,
            single_flight: true,
            load_timeout: cache.load_timeout,
        }
    }
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions::from_config(&CacheConfig::default(), None)
    }
}

/// A type-erased load result, shared between the callers of one flight.
#[derive(Clone)]
struct LoadedAny {
    value: Option<AnyValue>,
    version: u64,
    age_ms: u64,
    source: Source,
}

type LoadResult = Result<LoadedAny, Arc<Error>>;

/// Why an L2 call produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L2Fail {
    /// Not configured, circuit open, error or timeout: carry on without Redis.
    Unavailable,
    /// The key holds another Redis type: a miss, but Redis is healthy.
    WrongType,
}

/// A handle on the cache engine; cheap to clone, shared by every request of a process.
///
/// ## Behavior
/// - Reads never fail because of the cache: Redis errors, timeouts, an open circuit, corrupt
///   or foreign values all turn into a miss (counted, logged) and the loader runs.
/// - Loader errors are returned to the caller, unless a stale copy could be served instead.
/// - Writes to Redis are guarded: an entry never replaces one with a newer entity version.
/// - L1 is per process; a change made in another process stops being served from it within
///   `l1_coherence` (one second by default; see [`coherence`]).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// Failed health probes in a row after which the L2 connection is replaced.
const PROBES_BEFORE_RECONNECT: u32 = 5;

/// Bound of the negative L1: about 10,000 cached "not found" keys per environment.
const NEGATIVE_L1_BYTES: u64 = 1 << 20;

struct Inner {
    options: CacheOptions,
    keys: KeySpace,
    l1: L1,
    /// Cached "not found" answers, in a bounded L1 of their own and never in Redis: a caller
    /// asking for random ids cannot evict hot keys from either tier.
    negatives: L1,
    /// When this process last invalidated each key (for as long as a tombstone lives): a
    /// "not found" read before that is not cached, as the guard would refuse it in Redis.
    invalidated: moka::sync::Cache<String, EpochMillis>,
    /// Invalidations whose tombstone has not reached Redis yet.
    undelivered: undelivered::Undelivered,
    /// What other environments changed, for L1.
    coherence: coherence::Coherence,
    /// Generation counters seen recently, with when they were read, so a feed read does not
    /// cost a Redis round trip for its generation; kept coherent like L1.
    generations: moka::sync::Cache<String, (u64, EpochMillis)>,
    l2: Option<Arc<dyn L2Store>>,
    breaker: CircuitBreaker,
    /// Shared with L1's eviction listener.
    metrics: Arc<CacheMetrics>,
    clock: Arc<dyn Clock>,
    flights: Flights<LoadResult>,
    /// A background task is probing Redis while the circuit is open.
    probing: AtomicBool,
    /// When the counters were last flushed to Redis, and what they were then.
    flushed: std::sync::Mutex<(EpochMillis, MetricsSnapshot)>,
    /// Requests per route, flushed with the counters (the API records them).
    traffic: traffic::Traffic,
    /// What a failed flush could not write to Redis, sent with the next one.
    unsent: std::sync::Mutex<observe::Unsent>,
    /// Counts kept under the minute their events happened, waiting for a flush.
    dated: std::sync::Mutex<observe::DatedCounts>,
    /// This process's alert bookkeeping, and alert events the history has not taken yet.
    alerts: std::sync::Mutex<observe::ProcessAlerts>,
    /// This execution environment's name (its log stream in Lambda), for its own alerts.
    environment: String,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.inner.keys.prefix())
            .field("l2", &self.inner.l2)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// An engine over `l2` (`None`: L1 only) using `clock` for freshness.
    pub fn new(options: CacheOptions, l2: Option<Arc<dyn L2Store>>, clock: Arc<dyn Clock>) -> Self {
        let generations = moka::sync::Cache::builder()
            .max_capacity(1024)
            .time_to_live(options.l1_ttl.max(Duration::from_millis(1)))
            .build();
        let invalidated = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(options.tombstone_ttl())
            .build();
        let metrics = Arc::new(CacheMetrics::default());
        Cache {
            inner: Arc::new(Inner {
                invalidated,
                undelivered: undelivered::Undelivered::default(),
                coherence: coherence::Coherence::new(
                    options.l1_coherence,
                    l2.is_some(),
                    options.tombstone_ttl(),
                ),
                keys: KeySpace::new(options.key_prefix.clone()),
                l1: L1::new(options.l1_max_bytes, options.l1_ttl, Some(metrics.clone())),
                negatives: L1::new(NEGATIVE_L1_BYTES, options.l1_ttl, None),
                generations,
                breaker: CircuitBreaker::new(options.breaker_threshold, options.breaker_cooldown),
                l2,
                metrics,
                clock,
                flights: Flights::new(),
                probing: AtomicBool::new(false),
                flushed: std::sync::Mutex::new((EpochMillis::MIN / 2, MetricsSnapshot::default())),
                traffic: traffic::Traffic::default(),
                unsent: std::sync::Mutex::default(),
                dated: std::sync::Mutex::default(),
                alerts: std::sync::Mutex::default(),
                environment: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
                    .unwrap_or_else(|_| format!("process-{}", std::process::id())),
                options,
            }),
        }
    }

    /// Builds keys under this engine's prefix.
    pub fn keys(&self) -> &KeySpace {
        &self.inner.keys
    }

    /// The engine's options.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.options
    }

    /// The L2 store, if any.
    pub fn l2(&self) -> Option<&Arc<dyn L2Store>> {
        self.inner.l2.as_ref()
    }

    /// The default policy of a category, from config.
    pub fn policy(&self, category: Category) -> Policy {
        let ttl = &self.inner.options.ttl;
        let t = match category {
            Category::Product => ttl.product,
            Category::Stats => ttl.stats,
            Category::Feed => ttl.feed,
        };
        Policy {
            fresh: t.fresh,
            stale: t.stale,
            negative: ttl.negative,
        }
    }

    /// The live counters.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Where the API counts its requests per route (flushed with the counters).
    pub fn traffic(&self) -> &traffic::Traffic {
        &self.inner.traffic
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The circuit breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state(self.now())
    }

    /// L1 entries and bytes.
    pub fn l1_usage(&self) -> (u64, u64) {
        self.inner.l1.usage()
    }

    /// Redis round trips made so far (0 without L2).
    pub fn round_trips(&self) -> u64 {
        self.inner.l2.as_ref().map_or(0, |l2| l2.round_trips())
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> EpochMillis {
        self.inner.clock.now_ms()
    }

    /// Runs one L2 call behind the circuit breaker and a deadline, recording the outcome.
    async fn with_l2<'a, R, Fut>(
        &'a self,
        op: &'static str,
        deadline: Duration,
        call: impl FnOnce(&'a dyn L2Store) -> Fut,
    ) -> Result<R, L2Fail>
    where
        Fut: Future<Output = crate::Result<R>> + 'a,
    {
        let inner = &*self.inner;
        let Some(l2) = inner.l2.as_deref() else {
            return Err(L2Fail::Unavailable);
        };
        if !inner.breaker.allow(self.now()) {
            CacheMetrics::incr(&inner.metrics.bypasses);
            return Err(L2Fail::Unavailable);
        }
        CacheMetrics::incr(&inner.metrics.l2_calls);
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(deadline, call(l2)).await;
        let operation = match op {
            "GET" | "MGET" => Some(traffic::Operation::L2Get),
            "EVALSHA" => Some(traffic::Operation::L2Set),
            _ => None,
        };
        if let Some(operation) = operation {
            inner.traffic.record_operation(operation, started.elapsed());
        }
        let error = match outcome {
            Ok(Ok(value)) => {
                inner.breaker.record_success();
                self.deliver_invalidations_in_background();
                self.republish_changes_in_background();
                return Ok(value);
            }
            Ok(Err(Error::WrongType { .. })) => {
                inner.breaker.record_success();
                return Err(L2Fail::WrongType);
            }
            Ok(Err(e)) => e,
            Err(_) => Error::Timeout {
                op,
                after: deadline,
            },
        };
        CacheMetrics::incr(&inner.metrics.l2_errors);
        CacheMetrics::incr(&inner.metrics.bypasses);
        if inner.breaker.record_failure(self.now()) {
            CacheMetrics::incr(&inner.metrics.breaker_opens);
            tracing::warn!(op, error.message = %error, "Redis circuit opened; skipping L2 until a probe succeeds");
            self.probe_in_background();
        } else {
            tracing::warn!(op, error.message = %error, "Redis call failed; continuing without L2");
        }
        Err(L2Fail::Unavailable)
    }

    /// Sends the tombstones of invalidations Redis missed (see [`undelivered`]), once it
    /// answers again; what fails stays for the next success.
    fn deliver_invalidations_in_background(&self) {
        let Some(keys) = self.inner.undelivered.start_delivery() else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let now = cache.now();
            let writes = cache.tombstones(keys.iter().map(String::as_str));
            let delivered = match cache.inner.l2.as_deref() {
                Some(l2) => matches!(
                    tokio::time::timeout(cache.batch_deadline(), l2.set_guarded(&writes)).await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            if delivered {
                let names: Vec<&str> = keys.iter().map(String::as_str).collect();
                cache.publish_changes(&names).await;
            }
            if delivered {
                tracing::info!(
                    keys = keys.len(),
                    "delivered invalidations Redis had missed"
                );
                cache
                    .inner
                    .undelivered
                    .delivered(keys.iter().map(String::as_str), now);
            }
            cache.inner.undelivered.done();
        });
    }

    /// While the circuit is open, PINGs Redis every tenth of the cool-down and closes the
    /// circuit on the first answer. A probe from a background task costs no request anything,
    /// and its failures drive the client's reconnects, so the cache is back within a probe
    /// interval of Redis recovering rather than after one or two whole cool-downs.
    fn probe_in_background(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = (self.inner.options.breaker_cooldown / 10)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut failed_probes = 0u32;
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let Some(l2) = inner.l2.clone() else { return };
                let closed = inner.breaker.state(inner.clock.now_ms()) == BreakerState::Closed;
                let healthy = closed
                    || matches!(
                        tokio::time::timeout(inner.options.command_timeout, l2.ping()).await,
                        Ok(Ok(()))
                    );
                if !healthy {
                    failed_probes += 1;
                    // A connection that only times out (dropped by a middlebox without a
                    // reset, or desynchronised) never heals: replace it.
                    if failed_probes.is_multiple_of(PROBES_BEFORE_RECONNECT) {
                        l2.reconnect();
                    }
                }
                if healthy {
                    inner.breaker.record_success();
                    inner.probing.store(false, Ordering::Release);
                    tracing::info!("Redis answers again; circuit closed");
                    return;
                }
            }
        });
    }

    /// Runs one call on L2 for code outside the engine (e.g. the offer expiry set), behind the
    /// same breaker, deadline and counters as the engine's own calls; `None` when Redis is not
    /// configured, the circuit is open, or the call failed or timed out. `batch` gives the call
    /// the longer deadline of batches.
    pub(crate) async fn l2_call<'a, R, Fut>(
        &'a self,
        op: &'static str,
        batch: bool,
        call: impl FnOnce(&'a dyn L2Store) -> Fut,
    ) -> Option<R>
    where
        Fut: Future<Output = crate::Result<R>> + 'a,
    {
        let deadline = if batch {
            self.batch_deadline()
        } else {
            self.single_deadline()
        };
        self.with_l2(op, deadline, call).await.ok()
    }

    /// Deadline of a single-key Redis call.
    fn single_deadline(&self) -> Duration {
        self.inner.options.command_timeout
    }

    /// Deadline of a batch call (MGET, pipelines), which carries more data.
    fn batch_deadline(&self) -> Duration {
        self.inner.options.command_timeout * 2
    }
}

/// A boxed `'static` future, the shape of deferred work.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

#[cfg(test)]
mod tests;
