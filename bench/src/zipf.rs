//! The Zipf workload: 1,000,000 Zipf(1.0) reads over 100,000 keys, from 8 environments of 4
//! concurrent callers, against a Redis that holds about 10% of the keys. Variants:
//! hand-rolled cache-aside (`_plain`), the engine, the engine while a fifth of the reads ask
//! for ids that do not exist, plain and engine again on a Redis without `maxmemory` (sized as
//! ElastiCache Serverless is, `_serverless`), and a sample with no cache at all.
//!
//! Besides hit ratios and database loads, it counts what the cost model (`cost.rs`) prices:
//! Redis commands and bytes (from the server's own `INFO`), Lambda billed milliseconds per read
//! (each request's duration rounded up to Lambda's 1 ms), and the item size behind read units.
//! It also records each variant's hit ratio over the run for the plots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use catalog_core::cache::{Cache, Source};
use catalog_core::config::{CategoryTtls, RedisConfig, Ttl};
use catalog_core::redis_conn::RedisConnection;
use integration_tests::RedisServer;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use crate::cache::{DB_LATENCY, Doc, db_loader, engine, id, l2_for};
use crate::fixtures::product_detail;
use crate::report::Report;

const KEYS: usize = 100_000;
const READS: usize = 1_000_000;
const VALUE_BYTES: usize = 2048;
/// Short enough that keys expire several times during the run.
const FRESH: Duration = Duration::from_secs(5);
const STALE: Duration = Duration::from_secs(15);
const ENVIRONMENTS: usize = 8;
const CONCURRENCY_PER_ENV: usize = 4;
const WORKERS: usize = ENVIRONMENTS * CONCURRENCY_PER_ENV;
/// Reads of the no-cache sample: every read is a database load, so a sample gives the same
/// per-read counts as a million would, in a tenth of the time.
const NOCACHE_READS: usize = 20_000;
/// How often the hit ratio over the run is sampled for the plot.
const TIMELINE_EVERY: Duration = Duration::from_millis(500);

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let doc = Arc::new(Doc(product_detail("z", VALUE_BYTES)));
    let maxmemory = maxmemory(&doc).await?;
    report.set("zipf_redis_maxmemory_bytes", maxmemory as f64, "bytes");
    report.set("zipf_reads", READS as f64, "reads");
    report.set(
        "zipf_item_bytes",
        serde_json::to_vec(doc.as_ref())?.len() as f64,
        "bytes",
    );
    let args = [
        "--maxmemory",
        &maxmemory.to_string(),
        "--maxmemory-policy",
        "allkeys-lru",
    ];

    let plain = plain_run(&args, &doc).await?;
    record(report, "_plain", &plain);

    let ours = engine_run(&args, &doc, 0.0).await?;
    record(report, "", &ours.counts);
    report.set("zipf_l1_hits", ours.l1_hits as f64, "reads");
    report.set("zipf_stale_serves", ours.stale_serves as f64, "reads");
    // Reads of a key for the first time in the run: no cache serves them without warming.
    report.set(
        "zipf_first_read_pct",
        100.0 * ours.distinct_keys as f64 / ours.counts.reads as f64,
        "%",
    );

    // The same run while a fifth of the reads ask for random ids that do not exist (a caller
    // trying to flush the cache): the hit ratio of the real reads.
    let hostile = engine_run(&args, &doc, 0.2).await?;
    report.set(
        "zipf_hit_pct_with_20pct_unknown_ids",
        hostile.counts.hit_pct(),
        "%",
    );
    report.set(
        "zipf_unknown_id_reads",
        hostile.unknown_reads as f64,
        "reads",
    );

    // The same two on a Redis sized as the stack deploys it: ElastiCache Serverless has no
    // maxmemory to fill, only the template's `CacheMaxDataGB` cap (5 GB by default), far above
    // this key space, so nothing is evicted and only expiry and first reads miss.
    let plain = plain_run(&[], &doc).await?;
    record(report, "_plain_serverless", &plain);
    let ours = engine_run(&[], &doc, 0.0).await?;
    record(report, "_serverless", &ours.counts);

    let nocache = nocache_run(&doc).await?;
    report.set(
        "zipf_db_loads_per_read_nocache",
        nocache.loads as f64 / nocache.reads as f64,
        "loads",
    );
    report.set(
        "zipf_lambda_billed_ms_per_read_nocache",
        nocache.billed_ms as f64 / nocache.reads as f64,
        "ms",
    );
    Ok(())
}

/// The figures of one variant, named with its suffix.
fn record(report: &mut Report, suffix: &str, counts: &Counts) {
    let per_read = |n: u64| n as f64 / counts.reads as f64;
    report.set(&format!("zipf_run_s{suffix}"), counts.run_s, "s");
    report.set(&format!("zipf_hit_pct{suffix}"), counts.hit_pct(), "%");
    report.set(
        &format!("zipf_db_loads{suffix}"),
        counts.loads as f64,
        "loads",
    );
    report.set(
        &format!("zipf_redis_commands_per_read{suffix}"),
        per_read(counts.redis.commands),
        "commands",
    );
    report.set(
        &format!("zipf_redis_bytes_per_read{suffix}"),
        per_read(counts.redis.net_bytes),
        "bytes",
    );
    report.set(
        &format!("zipf_redis_used_memory_bytes{suffix}"),
        counts.redis.used_memory as f64,
        "bytes",
    );
    report.set(
        &format!("zipf_lambda_billed_ms_per_read{suffix}"),
        per_read(counts.billed_ms),
        "ms",
    );
    report.set_series(
        &format!("zipf_hit_pct_over_time{suffix}"),
        counts.timeline.clone(),
    );
}

/// What one variant's run counted.
#[derive(Debug, Default)]
struct Counts {
    /// Reads of ids that exist.
    reads: u64,
    /// Those answered from cache.
    hits: u64,
    /// Database loads.
    loads: u64,
    /// Lambda billed milliseconds, summed over the requests.
    billed_ms: u64,
    redis: RedisTotals,
    run_s: f64,
    /// `[seconds into the run, hit % over the last interval]`.
    timeline: Vec<[f64; 2]>,
}

impl Counts {
    fn hit_pct(&self) -> f64 {
        100.0 * self.hits as f64 / self.reads.max(1) as f64
    }
}

/// Lambda bills a request's duration rounded up to the millisecond.
fn billed_ms(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The live counters of a run, shared by its callers and its timeline sampler.
#[derive(Default)]
struct Live {
    reads: AtomicU64,
    hits: AtomicU64,
    loads: AtomicU64,
    billed_ms: AtomicU64,
    /// Revalidations spawned and not yet finished.
    revalidating: AtomicU64,
}

impl Live {
    fn read(&self, hit: bool, elapsed: Duration) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        self.billed_ms
            .fetch_add(billed_ms(elapsed), Ordering::Relaxed);
    }
}

/// Samples the hit ratio of each interval until `stop` is set.
fn sample_timeline(
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<[f64; 2]>> {
    tokio::spawn(async move {
        let started = Instant::now();
        let (mut reads, mut hits) = (0, 0);
        let mut points = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(TIMELINE_EVERY).await;
            let (r, h) = (
                live.reads.load(Ordering::Relaxed),
                live.hits.load(Ordering::Relaxed),
            );
            if r > reads {
                let pct = 100.0 * (h - hits) as f64 / (r - reads) as f64;
                points.push([started.elapsed().as_secs_f64(), pct]);
            }
            (reads, hits) = (r, h);
        }
        points
    })
}

/// Redis' own totals: commands processed, bytes in and out, memory in use.
#[derive(Debug, Default, Clone, Copy)]
struct RedisTotals {
    commands: u64,
    net_bytes: u64,
    used_memory: u64,
}

impl RedisTotals {
    async fn read(node: &str) -> anyhow::Result<RedisTotals> {
        let mut conn = RedisConnection::connect(&RedisConfig::standalone(node.to_owned())).await?;
        let info: String = redis::cmd("INFO").query_async(&mut conn).await?;
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(RedisTotals {
            commands: field("total_commands_processed"),
            net_bytes: field("total_net_input_bytes") + field("total_net_output_bytes"),
            used_memory: field("used_memory"),
        })
    }

    /// What happened between `before` and `self`; memory is `self`'s.
    fn since(self, before: RedisTotals) -> RedisTotals {
        RedisTotals {
            commands: self.commands.saturating_sub(before.commands),
            net_bytes: self.net_bytes.saturating_sub(before.net_bytes),
            used_memory: self.used_memory,
        }
    }
}

/// Redis `maxmemory` that holds about 10% of the Zipf key space in the plain format.
async fn maxmemory(doc: &Doc) -> anyhow::Result<u64> {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let mut conn = RedisConnection::connect(&RedisConfig::standalone(server.node())).await?;
    let before = RedisTotals::read(&server.node()).await?.used_memory;
    let payload = serde_json::to_vec(doc)?;
    let sample = 5_000;
    for chunk in (0..sample).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("plain:product:p{i}"))
                .arg(&payload)
                .arg("EX")
                .arg(600)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    let after = RedisTotals::read(&server.node()).await?.used_memory;
    let per_key = (after - before) / sample as u64;
    Ok(before + per_key * (KEYS as u64 / 10))
}

fn sampler(seed: u64) -> anyhow::Result<(Zipf<f64>, SmallRng)> {
    let zipf = Zipf::new(KEYS as f64, 1.0).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((zipf, SmallRng::seed_from_u64(seed)))
}

/// A Zipf-drawn key index.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn draw(zipf: &Zipf<f64>, rng: &mut SmallRng) -> usize {
    zipf.sample(rng) as usize
}

/// Hand-rolled cache-aside, as in the services we replace: GET; on a miss, load and SET PX
/// with the fresh TTL; JSON values.
async fn plain_run(args: &[&str], doc: &Arc<Doc>) -> anyhow::Result<Counts> {
    let server = RedisServer::start(RedisServer::free_port(), args);
    let conn = RedisConnection::connect(&RedisConfig::standalone(server.node())).await?;
    let payload = Arc::new(serde_json::to_vec(doc.as_ref())?);
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let before = RedisTotals::read(&server.node()).await?;
    let timeline = sample_timeline(live.clone(), stop.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (mut conn, payload, live) = (conn.clone(), payload.clone(), live.clone());
            tokio::spawn(async move {
                let (zipf, mut rng) = sampler(w as u64)?;
                for _ in 0..READS / WORKERS {
                    let key = format!("plain:product:p{}", draw(&zipf, &mut rng));
                    let read = Instant::now();
                    let cached: Option<Vec<u8>> =
                        redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                    let hit = if let Some(bytes) = cached {
                        let _: Doc = serde_json::from_slice(&bytes)?;
                        true
                    } else {
                        live.loads.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(DB_LATENCY).await;
                        let () = redis::cmd("SET")
                            .arg(&key)
                            .arg(payload.as_slice())
                            .arg("PX")
                            .arg(FRESH.as_millis() as u64)
                            .query_async(&mut conn)
                            .await?;
                        false
                    };
                    live.read(hit, read.elapsed());
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let run_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    Ok(Counts {
        reads: live.reads.load(Ordering::Relaxed),
        hits: live.hits.load(Ordering::Relaxed),
        loads: live.loads.load(Ordering::Relaxed),
        billed_ms: live.billed_ms.load(Ordering::Relaxed),
        redis: RedisTotals::read(&server.node()).await?.since(before),
        run_s,
        timeline: timeline.await?,
    })
}

/// What one run of the engine saw, beyond its [`Counts`].
struct EngineRun {
    counts: Counts,
    l1_hits: u64,
    stale_serves: u64,
    unknown_reads: u64,
    /// Distinct ids read (of those that exist).
    distinct_keys: usize,
}

/// 8 environments, each with its own L1, sharing one Redis of the given size; a share
/// `unknown` of the reads asks for random ids that do not exist. A stale serve's revalidation
/// runs after the response, as the API's deferred work does, and is billed on its own
/// (rounded up separately: at most 1 ms more than Lambda, which bills both as one duration).
async fn engine_run(args: &[&str], doc: &Arc<Doc>, unknown: f64) -> anyhow::Result<EngineRun> {
    let server = RedisServer::start(RedisServer::free_port(), args);
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut engines = Vec::new();
    for _ in 0..ENVIRONMENTS {
        let l2 = l2_for(&server, Duration::from_millis(50)).await?;
        engines.push(engine(l2, |o| {
            o.ttl = CategoryTtls {
                product: Ttl {
                    fresh: FRESH,
                    stale: STALE,
                },
                ..o.ttl
            };
        }));
    }
    let live = Arc::new(Live::default());
    let unknown_reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let before = RedisTotals::read(&server.node()).await?;
    let timeline = sample_timeline(live.clone(), stop.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (e, engine) in engines.iter().enumerate() {
        for c in 0..CONCURRENCY_PER_ENV {
            let (engine, doc, loads) = (engine.clone(), doc.clone(), loads.clone());
            let (live, unknown_reads) = (live.clone(), unknown_reads.clone());
            let seed = (e * CONCURRENCY_PER_ENV + c) as u64;
            tasks.push(tokio::spawn(async move {
                let (zipf, mut rng) = sampler(seed)?;
                let mut ids = Vec::with_capacity(READS / WORKERS);
                for _ in 0..READS / WORKERS {
                    if rng.random_bool(unknown) {
                        let key = engine
                            .keys()
                            .product(&id(KEYS + 1 + rng.random_range(0..1_000_000_000)));
                        let missing = loads.clone();
                        engine
                            .get_or_load(&key, move || async move {
                                missing.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(DB_LATENCY).await;
                                Ok(None::<Doc>)
                            })
                            .await?;
                        unknown_reads.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let i = draw(&zipf, &mut rng);
                    ids.push(i);
                    let key = engine.keys().product(&id(i));
                    let read = Instant::now();
                    let lookup = engine
                        .get_or_load(&key, db_loader(&loads, doc.clone()))
                        .await?;
                    let hit = matches!(lookup.source, Source::L1 | Source::L2 | Source::Stale);
                    live.read(hit, read.elapsed());
                    if let Some(revalidation) = lookup.revalidation {
                        let live = live.clone();
                        live.revalidating.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let work = Instant::now();
                            revalidation.run().await;
                            live.billed_ms
                                .fetch_add(billed_ms(work.elapsed()), Ordering::Relaxed);
                            live.revalidating.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                }
                anyhow::Ok(ids)
            }));
        }
    }
    let mut distinct = HashSet::new();
    for task in tasks {
        distinct.extend(task.await??);
    }
    // The revalidations still running belong to this run's loads, time and Redis commands.
    while live.revalidating.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let stats: HashMap<&str, u64> = engines
        .iter()
        .map(Cache::snapshot)
        .fold(
            catalog_core::cache::metrics::MetricsSnapshot::default(),
            |mut acc, s| {
                acc.add(&s);
                acc
            },
        )
        .fields()
        .into_iter()
        .map(|(n, v, _)| (n, v))
        .collect();
    Ok(EngineRun {
        counts: Counts {
            reads: live.reads.load(Ordering::Relaxed),
            hits: live.hits.load(Ordering::Relaxed),
            loads: loads.load(Ordering::Relaxed) as u64,
            billed_ms: live.billed_ms.load(Ordering::Relaxed),
            redis: RedisTotals::read(&server.node()).await?.since(before),
            run_s,
            timeline: timeline.await?,
        },
        l1_hits: stats["l1_hits"],
        stale_serves: stats["stale_serves"],
        unknown_reads: unknown_reads.load(Ordering::Relaxed),
        distinct_keys: distinct.len(),
    })
}

/// No cache: every read is a database load, timed as a request.
async fn nocache_run(doc: &Arc<Doc>) -> anyhow::Result<Counts> {
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let live = Arc::new(Live::default());
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (doc, loads, live) = (doc.clone(), loads.clone(), live.clone());
            tokio::spawn(async move {
                for _ in 0..NOCACHE_READS / WORKERS {
                    let read = Instant::now();
                    let loaded = db_loader(&loads, doc.clone())().await?;
                    anyhow::ensure!(loaded.is_some(), "the loader found nothing");
                    live.read(false, read.elapsed());
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(Counts {
        reads: live.reads.load(Ordering::Relaxed),
        loads: loads.load(Ordering::Relaxed) as u64,
        billed_ms: live.billed_ms.load(Ordering::Relaxed),
        ..Counts::default()
    })
}
