//! Cache engine benchmarks: herd, per-tier latency, compression, Redis outage, and (in
//! `zipf.rs`) the Zipf workload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Cacheable, Source};
use catalog_core::cache::{codec, envelope};
use catalog_core::clock::SystemClock;
use catalog_core::config::RedisConfig;
use catalog_core::model::{ProductDetail, ProductId};
use catalog_core::redis_conn::RedisConnection;
use integration_tests::RedisServer;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::fixtures::product_detail;
use crate::report::Report;
use crate::stats::{Samples, micros, millis};

/// Modelled DynamoDB latency per call.
pub(crate) const DB_LATENCY: Duration = Duration::from_millis(4);

/// Benchmarks wrap the domain type so the cache sees a versioned value.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Doc(pub(crate) ProductDetail);

impl Cacheable for Doc {
    fn cache_version(&self) -> u64 {
        self.0.product.version
    }

    fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

pub(crate) fn id(i: usize) -> ProductId {
    ProductId::parse(&format!("p{i}")).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) async fn l2_for(
    server: &RedisServer,
    timeout: Duration,
) -> anyhow::Result<Arc<RedisL2>> {
    let config = RedisConfig {
        command_timeout: timeout,
        connect_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(server.node())
    };
    Ok(Arc::new(RedisL2::new(
        RedisConnection::connect(&config).await?,
    )))
}

pub(crate) fn engine(l2: Arc<RedisL2>, tweak: impl FnOnce(&mut CacheOptions)) -> Cache {
    let mut options = CacheOptions {
        key_prefix: "bench:".into(),
        ..CacheOptions::default()
    };
    tweak(&mut options);
    Cache::new(options, Some(l2 as Arc<dyn L2Store>), Arc::new(SystemClock))
}

/// A loader that models one DynamoDB read and counts it.
pub(crate) fn db_loader(
    loads: &Arc<AtomicUsize>,
    doc: Arc<Doc>,
) -> impl FnOnce() -> futures::future::BoxFuture<'static, catalog_core::Result<Option<Doc>>>
+ Send
+ 'static {
    let loads = loads.clone();
    move || {
        Box::pin(async move {
            loads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(DB_LATENCY).await;
            Ok(Some(doc.as_ref().clone()))
        })
    }
}

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    report.set("db_latency_shim_ms", millis(DB_LATENCY), "ms");
    herd(report).await?;
    tier_latency(report).await?;
    coherence(report).await?;
    compression(report);
    outage(report).await?;
    crate::zipf::run(report).await?;
    Ok(())
}

/// 8 environments × 64 concurrent callers reading one expired hot key.
async fn herd(report: &mut Report) -> anyhow::Result<()> {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let doc = Arc::new(Doc(product_detail("hot", 2048)));
    for (variant, (figure, single_flight)) in
        [("herd_db_loads", true), ("herd_db_loads_plain", false)]
            .into_iter()
            .enumerate()
    {
        let mut worst = 0;
        for round in 0..5 {
            let mut engines = Vec::new();
            for _ in 0..8 {
                let l2 = l2_for(&server, Duration::from_millis(50)).await?;
                engines.push(engine(l2, |o| o.single_flight = single_flight));
            }
            // A key nobody has read: expired and gone from Redis.
            let key = engines[0].keys().product(&id(100 * variant + round));
            let loads = Arc::new(AtomicUsize::new(0));
            let start = Arc::new(tokio::sync::Barrier::new(8 * 64));
            let mut callers = Vec::new();
            for engine in &engines {
                for _ in 0..64 {
                    let (engine, key, start) = (engine.clone(), key.clone(), start.clone());
                    let loader = db_loader(&loads, doc.clone());
                    callers.push(tokio::spawn(async move {
                        start.wait().await;
                        engine
                            .get_or_load(&key, loader)
                            .await
                            .map(|l| l.value.is_some())
                    }));
                }
            }
            for caller in callers {
                anyhow::ensure!(caller.await??, "a herd caller got no value");
            }
            worst = worst.max(loads.load(Ordering::Relaxed));
        }
        report.set(figure, worst as f64, "loads");
    }
    Ok(())
}

/// `get_or_load` latency per source for a 2 KiB value on loopback Redis.
async fn tier_latency(report: &mut Report) -> anyhow::Result<()> {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let l2 = l2_for(&server, Duration::from_millis(50)).await?;
    let doc = Arc::new(Doc(product_detail("p0", 2048)));
    report.set(
        "tier_value_bytes",
        serde_json::to_vec(doc.as_ref())?.len() as f64,
        "bytes",
    );
    let loads = Arc::new(AtomicUsize::new(0));

    let warm = engine(l2.clone(), |_| {});
    let key = warm.keys().product(&id(0));
    warm.get_or_load(&key, db_loader(&loads, doc.clone()))
        .await?;
    let mut l1 = Samples::with_capacity(100_000);
    for _ in 0..100_000 {
        let started = Instant::now();
        let lookup = warm
            .get_or_load(&key, db_loader(&loads, doc.clone()))
            .await?;
        l1.push(started.elapsed());
        anyhow::ensure!(lookup.source == Source::L1, "expected an L1 hit");
    }
    report.set("l1_hit_p50_us", micros(l1.percentile(50.0)), "us");
    report.set_series("latency_cdf_l1_hit", l1.cdf_us());

    // Fill L2 with distinct keys, then read each once from a cold engine: every read is an L2 hit.
    let keys = 20_000;
    let items: Vec<_> = (0..keys)
        .map(|i| (warm.keys().product(&id(i)), doc.as_ref().clone()))
        .collect();
    for chunk in items.chunks(500) {
        warm.put_many(chunk.to_vec(), warm.now()).await;
    }
    let cold = engine(l2, |_| {});
    let mut l2_samples = Samples::with_capacity(keys);
    for i in 0..keys {
        let key = cold.keys().product(&id(i));
        let started = Instant::now();
        let lookup = cold
            .get_or_load(&key, db_loader(&loads, doc.clone()))
            .await?;
        l2_samples.push(started.elapsed());
        anyhow::ensure!(
            lookup.source == Source::L2,
            "expected an L2 hit, got {:?}",
            lookup.source
        );
    }
    report.set("l2_hit_p50_us", micros(l2_samples.percentile(50.0)), "us");
    report.set("l2_hit_p99_us", micros(l2_samples.percentile(99.0)), "us");
    // The same keys with a plain GET: what an L2 hit costs above Redis itself (the envelope,
    // decode, L1 insert, breaker and counters).
    let keys: Vec<String> = (0..keys)
        .map(|i| cold.keys().product(&id(i)).to_string())
        .collect();
    let mut raw_samples = crate::redis_raw::get_samples(&server.node(), &keys).await?;
    let raw = raw_samples.percentile(50.0);
    report.set("redis_raw_get_p50_us", micros(raw), "us");
    report.set_series("latency_cdf_l2_hit", l2_samples.cdf_us());
    // Misses: ids never cached, so each read loads (through the latency shim) and stores.
    let mut missed = Samples::with_capacity(1_000);
    for i in 0..1_000 {
        let key = cold.keys().product(&id(1_000_000 + i));
        let started = Instant::now();
        let lookup = cold
            .get_or_load(&key, db_loader(&loads, doc.clone()))
            .await?;
        missed.push(started.elapsed());
        anyhow::ensure!(lookup.source == Source::Loaded, "expected a load");
    }
    report.set_series("latency_cdf_miss_loaded", missed.cdf_us());
    report.set_series("latency_cdf_redis_raw_get", raw_samples.cdf_us());
    report.set(
        "l2_hit_over_raw_get_ratio",
        l2_samples.percentile(50.0).as_secs_f64() / raw.as_secs_f64(),
        "x",
    );
    Ok(())
}

/// L1 coherence: 8 environments (each its own connection) hold a product in L1; one writes a
/// new version; the time until each of the other 7 stops serving the old one, over 30 writes
/// spaced at random so the writes fall anywhere in the readers' poll cycles.
pub async fn coherence(report: &mut Report) -> anyhow::Result<()> {
    const ENVIRONMENTS: usize = 8;
    const WRITES: u64 = 30;
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let mut engines = Vec::new();
    for _ in 0..ENVIRONMENTS {
        let l2 = l2_for(&server, Duration::from_millis(200)).await?;
        engines.push(engine(l2, |o| o.key_prefix = "bench-coherence:".into()));
    }
    let key = engines[0].keys().product(&id(0));
    let version = |v: u64| {
        let mut doc = Doc(product_detail("p0", 2048));
        doc.0.product.version = v;
        doc
    };
    let writer = engines[0].clone();
    writer.put(&key, version(1), writer.now()).await;
    // The version each reader wants to see, and when the write that made it was done.
    let target = Arc::new(AtomicU64::new(1));
    let written_at = Arc::new(std::sync::Mutex::new(Instant::now()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for engine in &engines[1..] {
        let engine = engine.clone();
        let (key, target, written_at, stop) = (
            key.clone(),
            target.clone(),
            written_at.clone(),
            stop.clone(),
        );
        readers.push(tokio::spawn(async move {
            let loads = Arc::new(AtomicUsize::new(0));
            let mut windows = Samples::default();
            // Version 1 was written before the readers started.
            let mut seen = 1;
            let started = Instant::now();
            let calls_before = engine.snapshot().l2_calls;
            while !stop.load(Ordering::Acquire) {
                let wanted = target.load(Ordering::Acquire);
                let lookup = engine
                    .get_or_load(
                        &key,
                        db_loader(&loads, Arc::new(Doc(product_detail("x", 16)))),
                    )
                    .await?;
                if lookup.version >= wanted && seen < wanted {
                    seen = wanted;
                    let at = *written_at
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    windows.push(at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let calls = engine.snapshot().l2_calls - calls_before;
            anyhow::Ok((windows, calls as f64 / started.elapsed().as_secs_f64()))
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rng = SmallRng::seed_from_u64(7);
    for v in 2..=WRITES + 1 {
        writer.put(&key, version(v), writer.now()).await;
        *written_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        target.store(v, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..1_300))).await;
    }
    stop.store(true, Ordering::Release);
    let mut windows = Samples::default();
    let mut calls_per_s = 0.0;
    for reader in readers {
        let (samples, calls) = reader.await??;
        anyhow::ensure!(
            samples.len() == WRITES as usize,
            "a reader saw {} of {WRITES} writes",
            samples.len()
        );
        windows.extend(samples);
        calls_per_s += calls;
    }
    report.set(
        "l1_stale_window_p50_ms",
        millis(windows.percentile(50.0)),
        "ms",
    );
    report.set(
        "l1_stale_window_p99_ms",
        millis(windows.percentile(99.0)),
        "ms",
    );
    report.set(
        "l1_stale_window_bound_ms",
        millis(writer.options().l1_coherence),
        "ms",
    );
    report.set(
        "l1_coherence_redis_calls_per_env_s",
        calls_per_s / (ENVIRONMENTS - 1) as f64,
        "calls/s",
    );
    Ok(())
}

/// A realistic 10 KiB product document as stored (envelope, payload, LZ4 above 1 KiB) in the
/// format written now (postcard) and in the JSON format it replaced: stored bytes (what
/// ElastiCache bills in ECPUs per KiB transferred) and the time to decode it back to the typed
/// value.
pub fn compression(report: &mut Report) {
    let doc = Doc(product_detail("big", 10 * 1024));
    let meta = envelope::EntryMeta {
        version: 3,
        stored_at: 0,
        fresh_until: 1,
        stale_until: 2,
        negative: false,
        tombstone: false,
    };
    let binary = codec::encode(&doc).unwrap_or_default();
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    let stored = envelope::encode(&meta, &binary, 1024).bytes;
    let mut stored_json = envelope::encode(&meta, &json, 1024).bytes;
    stored_json[2] = envelope::FORMAT_JSON;
    report.set("doc_json_bytes", json.len() as f64, "bytes");
    report.set("doc_binary_bytes", binary.len() as f64, "bytes");
    report.set("doc_stored_bytes", stored.len() as f64, "bytes");
    report.set("doc_json_stored_bytes", stored_json.len() as f64, "bytes");
    report.set(
        "stored_savings_pct",
        100.0 * (1.0 - stored.len() as f64 / json.len() as f64),
        "%",
    );
    let decode_p50 = |bytes: &[u8]| {
        let mut samples = Samples::with_capacity(10_000);
        for _ in 0..10_000 {
            let started = Instant::now();
            let decoded = envelope::decode(bytes, 1 << 20)
                .ok()
                .and_then(|e| codec::decode::<Doc>(e.format, &e.payload).ok());
            samples.push(started.elapsed());
            assert!(decoded.is_some(), "decode failed");
        }
        micros(samples.percentile(50.0))
    };
    report.set("decode_10k_p50_us", decode_p50(&stored), "us");
    let uncompressed = envelope::encode(&meta, &binary, usize::MAX).bytes;
    report.set(
        "decode_10k_uncompressed_p50_us",
        decode_p50(&uncompressed),
        "us",
    );
    report.set("decode_10k_json_p50_us", decode_p50(&stored_json), "us");
}

/// Readers keep going while Redis is killed and restarted.
async fn outage(report: &mut Report) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(50);
    let mut server = RedisServer::start(RedisServer::free_port(), &[]);
    let config = RedisConfig {
        command_timeout: timeout,
        connect_timeout: Duration::from_millis(100),
        ..RedisConfig::standalone(server.node())
    };
    let l2 = RedisL2::connect(config, Duration::from_secs(2)).await;
    // L1 effectively off, so every read goes to Redis and sees the outage.
    let cache = engine(l2, |o| {
        o.l1_max_bytes = 1;
        o.command_timeout = timeout;
    });
    let doc = Arc::new(Doc(product_detail("o", 2048)));
    let loads = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicUsize::new(0)); // 0 before, 1 during, 2 after the outage
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bench_start = Instant::now();
    let mut readers = Vec::new();
    for r in 0..16u64 {
        let (cache, doc, loads, errors, phase, stop) = (
            cache.clone(),
            doc.clone(),
            loads.clone(),
            errors.clone(),
            phase.clone(),
            stop.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(r);
            let mut during = Samples::default();
            let mut timeline = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let key = cache.keys().product(&id(rng.random_range(0..2000)));
                let in_outage = phase.load(Ordering::Relaxed) == 1;
                let started = Instant::now();
                let failed = match cache
                    .get_or_load(&key, db_loader(&loads, doc.clone()))
                    .await
                {
                    Ok(lookup) if lookup.value.is_some() => false,
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                };
                if in_outage {
                    during.push(started.elapsed());
                }
                timeline.push(OutageRead {
                    at: started - bench_start,
                    latency: started.elapsed(),
                    failed,
                });
            }
            (during, timeline)
        }));
    }
    // The breaker's state every 20 ms, for the timeline plot.
    let breaker_states = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            let mut points = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let state = match cache.breaker_state() {
                    catalog_core::cache::breaker::BreakerState::Closed => 0.0,
                    catalog_core::cache::breaker::BreakerState::HalfOpen => 1.0,
                    catalog_core::cache::breaker::BreakerState::Open { .. } => 2.0,
                };
                points.push([bench_start.elapsed().as_secs_f64(), state]);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            points
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    phase.store(1, Ordering::Relaxed);
    let outage_started = bench_start.elapsed();
    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart(&[]);
    let restarted = Instant::now();
    let restarted_at = bench_start.elapsed();
    phase.store(2, Ordering::Relaxed);
    while !matches!(
        cache.breaker_state(),
        catalog_core::cache::breaker::BreakerState::Closed
    ) {
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(30),
            "the circuit did not close after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recovery = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut during = Samples::default();
    let mut reads = Vec::new();
    for reader in readers {
        let (samples, timeline) = reader.await?;
        during.extend(samples);
        reads.extend(timeline);
    }
    let outage_window = [outage_started.as_secs_f64(), restarted_at.as_secs_f64()];
    report.set_series("outage_window_s", vec![outage_window]);
    report.set_series("outage_breaker_state_over_time", breaker_states.await?);
    let (p99, failures) = outage_buckets(reads);
    report.set_series("outage_p99_ms_over_time", p99);
    report.set_series("outage_errors_over_time", failures);
    let after = cache.snapshot();
    report.set(
        "outage_errors",
        errors.load(Ordering::Relaxed) as f64,
        "errors",
    );
    report.set("outage_reads", during.len() as f64, "reads");
    report.set("outage_p99_ms", millis(during.percentile(99.0)), "ms");
    report.set("outage_redis_timeout_ms", millis(timeout), "ms");
    report.set("outage_breaker_opens", after.breaker_opens as f64, "opens");
    report.set("outage_recovery_ms", millis(recovery), "ms");
    Ok(())
}

/// One read of the outage run, for its timeline.
struct OutageRead {
    /// Since the run began.
    at: Duration,
    latency: Duration,
    failed: bool,
}

/// The outage run per 100 ms: `[seconds, p99 ms]` and `[seconds, failed reads]`.
fn outage_buckets(reads: Vec<OutageRead>) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let mut buckets: std::collections::BTreeMap<u128, (Samples, u64)> = Default::default();
    for read in reads {
        let bucket = buckets.entry(read.at.as_millis() / 100).or_default();
        bucket.0.push(read.latency);
        bucket.1 += u64::from(read.failed);
    }
    buckets
        .into_iter()
        .map(|(bucket, (mut latencies, failed))| {
            let at = bucket as f64 / 10.0;
            (
                [at, millis(latencies.percentile(99.0))],
                [at, failed as f64],
            )
        })
        .unzip()
}
