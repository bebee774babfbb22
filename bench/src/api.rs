//! API benchmarks: GET from L2 versus no cache through the local HTTP server, a cached batch
//! of 100, the API against an empty handler under `cargo lambda watch`, cold start, binary size.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::{Config, RedisConfig};
use catalog_core::model::{PeriodStats, ProductId};
use catalog_core::reads;
use catalog_core::redis_conn::RedisConnection;
use catalog_core::store::latency::LatencyShim;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{OfferWriter, ProductReader, ProductWriter, StatsReader, StatsWriter};
use integration_tests::lambda_emulator::Emulator;
use integration_tests::{CargoLambdaWatch, RedisServer};

use crate::fixtures::product_detail;
use crate::load::{client, get_load};
use crate::report::Report;
use crate::stats::{Samples, micros, millis};

const DB_LATENCY: Duration = Duration::from_millis(4);
const PRODUCTS: usize = 1000;
const CONCURRENCY: usize = 32;
const LOAD_FOR: Duration = Duration::from_secs(5);

pub(crate) fn id(i: usize) -> ProductId {
    ProductId::parse(&format!("p{i}")).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn config() -> Config {
    Config::from_lookup(|name| match name {
        "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("bench".into()),
        "ADMIN_TOKEN" => Some("bench-token-bench-token".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The release binaries `make bench` builds.
fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release").join(name)
}

/// 1000 products of about 2 KiB (with offers) and their stats, in memory.
pub(crate) async fn seeded_store() -> anyhow::Result<Arc<MemoryStore>> {
    let store = Arc::new(MemoryStore::new());
    for i in 0..PRODUCTS {
        let detail = product_detail(&format!("p{i}"), 2048);
        store
            .put_product(&detail.product, ExpectedVersion::Absent)
            .await?;
        for offer in &detail.offers {
            store.put_offer(offer, ExpectedVersion::Absent).await?;
        }
        let stats = PeriodStats {
            views_24h: (PRODUCTS - i) as u64,
            computed_at: SystemClock.now_ms(),
            ..PeriodStats::default()
        };
        store.put_period_stats(&detail.product.id, &stats).await?;
    }
    Ok(store)
}

async fn redis_l2(server: &RedisServer) -> anyhow::Result<Arc<RedisL2>> {
    let config = RedisConfig {
        command_timeout: Duration::from_millis(200),
        ..RedisConfig::standalone(server.node())
    };
    Ok(Arc::new(RedisL2::new(
        RedisConnection::connect(&config).await?,
    )))
}

/// Serves `state` on a loopback port; returns the base URL.
async fn serve(state: api::AppState) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(api::serve(listener, state));
    Ok(base)
}

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    report.set("api_db_latency_shim_ms", millis(DB_LATENCY), "ms");
    let redis = RedisServer::start(RedisServer::free_port(), &[]);
    let store = seeded_store().await?;
    let shim = Arc::new(LatencyShim::new(store.clone(), DB_LATENCY));
    let config = config();
    let ids: Vec<ProductId> = (0..PRODUCTS).map(id).collect();

    // The L2 path: L1 effectively off, so every read is answered by Redis.
    let cache = Cache::new(
        CacheOptions {
            key_prefix: "bench-api:".into(),
            l1_max_bytes: 1,
            ..CacheOptions::default()
        },
        Some(redis_l2(&redis).await? as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let reader: Arc<dyn ProductReader> = store.clone();
    let stats: Arc<dyn StatsReader> = store.clone();
    reads::warm(&cache, &reader, &stats, &ids).await?;
    let base = serve(api::AppState::new(
        shim.clone(),
        shim.clone(),
        shim.clone(),
        cache.clone(),
        &config,
    ))
    .await?;
    // Redis round trips of one product read answered by L2 (detail and stats together),
    // over 200 distinct products (a counter flush, at most one every 10 s, is included).
    let http = client(1);
    let before = cache.round_trips();
    for i in 0..200 {
        http.get(format!("{base}/products/p{i}"))
            .send()
            .await?
            .error_for_status()?;
    }
    report.set(
        "api_product_redis_roundtrips",
        (cache.round_trips() - before) as f64 / 200.0,
        "round trips",
    );
    let url = move |i: usize| format!("{base}/products/p{}", i % PRODUCTS);
    let mut l2 = get_load(url.clone(), CONCURRENCY, LOAD_FOR).await;
    anyhow::ensure!(l2.failures == 0, "{} failed requests", l2.failures);
    report.set("api_l2_hit_rps", l2.rps(), "req/s");
    report.set(
        "api_l2_hit_p50_ms",
        millis(l2.latencies.percentile(50.0)),
        "ms",
    );
    report.set(
        "api_l2_hit_p99_ms",
        millis(l2.latencies.percentile(99.0)),
        "ms",
    );
    report.set("api_l2_hit_share_pct", 100.0 * l2.share("HIT-L2"), "%");

    // The same route with the cache off: every request reads the shimmed store.
    let no_cache = Cache::new(
        CacheOptions {
            l1_max_bytes: 1,
            ..CacheOptions::default()
        },
        None,
        Arc::new(SystemClock),
    );
    let calls_before = shim.calls();
    let base_off = serve(api::AppState::new(
        shim.clone(),
        shim.clone(),
        shim.clone(),
        no_cache,
        &config,
    ))
    .await?;
    let mut off = get_load(
        move |i| format!("{base_off}/products/p{}", i % PRODUCTS),
        CONCURRENCY,
        LOAD_FOR,
    )
    .await;
    anyhow::ensure!(off.failures == 0, "{} failed requests", off.failures);
    report.set("api_nocache_rps", off.rps(), "req/s");
    report.set(
        "api_nocache_p50_ms",
        millis(off.latencies.percentile(50.0)),
        "ms",
    );
    report.set(
        "api_nocache_db_calls_per_request",
        (shim.calls() - calls_before) as f64 / off.requests as f64,
        "calls",
    );
    report.set(
        "api_l2_vs_nocache_p50_speedup",
        off.latencies.percentile(50.0).as_secs_f64() / l2.latencies.percentile(50.0).as_secs_f64(),
        "x",
    );

    batch(
        report,
        &cache,
        &shim,
        &config,
        BatchFigures {
            round_trips: "api_batch100_redis_roundtrips",
            p50: "api_batch100_hit_ms",
        },
    )
    .await?;
    // The same batch on a private 3-master cluster: one pipelined request per node.
    let cluster = integration_tests::RedisCluster::start();
    let cluster_cache = Cache::new(
        CacheOptions {
            key_prefix: "bench-api-cluster:".into(),
            l1_max_bytes: 1,
            ..CacheOptions::default()
        },
        Some(Arc::new(RedisL2::new(
            RedisConnection::connect(&RedisConfig {
                nodes: cluster.nodes(),
                mode: catalog_core::config::RedisMode::Cluster,
                command_timeout: Duration::from_millis(200),
                ..RedisConfig::standalone(cluster.nodes()[0].clone())
            })
            .await?,
        )) as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    reads::warm(&cluster_cache, &reader, &stats, &ids).await?;
    batch(
        report,
        &cluster_cache,
        &shim,
        &config,
        BatchFigures {
            round_trips: "api_batch100_cluster_roundtrips",
            p50: "api_batch100_cluster_hit_ms",
        },
    )
    .await?;
    lambda_watch(report, &redis, &cache).await?;
    cold_start(report, &redis, &cache).await?;
    Ok(())
}

/// POST /products/batch with 100 cached ids: Redis round trips and latency.
/// What [`batch`] reports, and under which names.
struct BatchFigures {
    round_trips: &'static str,
    p50: &'static str,
}

async fn batch(
    report: &mut Report,
    cache: &Cache,
    shim: &Arc<LatencyShim<MemoryStore>>,
    config: &Config,
    names: BatchFigures,
) -> anyhow::Result<()> {
    let base = serve(api::AppState::new(
        shim.clone(),
        shim.clone(),
        shim.clone(),
        cache.clone(),
        config,
    ))
    .await?;
    let body = serde_json::json!({"ids": (0..100).map(|i| format!("p{i}")).collect::<Vec<_>>()});
    let client = client(1);
    let post = || {
        client
            .post(format!("{base}/products/batch"))
            .json(&body)
            .send()
    };
    // The first request of a process also flushes its counters after the response.
    post().await?.bytes().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cache.round_trips();
    let response = post().await?;
    anyhow::ensure!(
        response.headers()["x-cache"] == "HIT-L2",
        "the batch was not answered by Redis"
    );
    response.bytes().await?;
    report.set(
        names.round_trips,
        (cache.round_trips() - before) as f64,
        "round trips",
    );
    let mut samples = Samples::with_capacity(300);
    for _ in 0..300 {
        let sent = Instant::now();
        post().await?.bytes().await?;
        samples.push(sent.elapsed());
    }
    report.set(names.p50, millis(samples.percentile(50.0)), "ms");
    Ok(())
}

fn lambda_env(redis: &RedisServer, cache: &Cache) -> Vec<(String, String)> {
    [
        ("CATALOG_TABLE", "bench"),
        ("VIEWS_TABLE", "bench"),
        ("STATS_TABLE", "bench"),
        // Nothing may reach DynamoDB: the product is cached. A read that did would fail.
        ("DYNAMODB_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
        ("CACHE_KEY_PREFIX", cache.keys().prefix()),
        ("RUST_LOG", "error"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("REDIS_ENDPOINTS".to_owned(), redis.node())])
    .collect()
}

fn start_function(
    binary: &str,
    runtime_api: &str,
    name: &str,
    env: &[(String, String)],
) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(release_binary(binary))
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// One function under `cargo lambda watch` in [`lambda_watch`].
struct WatchVariant {
    /// Figure name part.
    name: &'static str,
    binary: &'static str,
    /// Extra environment.
    env: &'static [(&'static str, &'static str)],
    /// Whether it reads the 1,000 products in turn (the empty handler has one route).
    products: bool,
}

const WATCH_VARIANTS: [WatchVariant; 5] = [
    WatchVariant {
        name: "empty",
        binary: "empty-lambda",
        env: &[],
        products: false,
    },
    // An empty handler answering a product-sized body (a product read answers about 2.4 KB).
    WatchVariant {
        name: "empty_2k",
        binary: "empty-lambda",
        env: &[("EMPTY_BODY_BYTES", "2400")],
        products: false,
    },
    WatchVariant {
        name: "l1_on",
        binary: "api",
        env: &[],
        products: true,
    },
    // Every read an L2 hit: detail and stats in one MGET.
    WatchVariant {
        name: "l1_off",
        binary: "api",
        env: &[("L1_MAX_BYTES", "0")],
        products: true,
    },
    // The same spawning its post-response work instead of running it in the invocation, to
    // isolate what the runtime layer costs.
    WatchVariant {
        name: "l1_off_spawned_deferred",
        binary: "api-spawned-deferred",
        env: &[("L1_MAX_BYTES", "0")],
        products: true,
    },
];

/// The API under the Lambda runtime emulator of `cargo lambda watch` (one instance, requests
/// served one at a time) against an empty `lambda_http` handler in the same run: 1,000
/// product ids in turn, at 16 connections (throughput) and at 1 (latency), with L1 on and
/// off, plus a plain Redis GET of the same keys as the floor of an L2 hit.
async fn lambda_watch(
    report: &mut Report,
    redis: &RedisServer,
    cache: &Cache,
) -> anyhow::Result<()> {
    let mut rps = std::collections::HashMap::new();
    let mut p50 = std::collections::HashMap::new();
    for variant in &WATCH_VARIANTS {
        // A fresh emulator each: it keeps per-function state (the extension a killed process
        // registered), which must not reach the next variant.
        let watch =
            CargoLambdaWatch::start(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))).await;
        let runtime_api = watch.runtime_api();
        let mut env = lambda_env(redis, cache);
        env.extend(
            variant
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut function = start_function(variant.binary, &runtime_api, "_", &env)?;
        let url = {
            let products = variant.products;
            let base = watch.function_url("/products/");
            let root = watch.function_url("/");
            move |i: usize| {
                if products {
                    format!("{base}p{}", i % PRODUCTS)
                } else {
                    root.clone()
                }
            }
        };
        // Warm up: the first invoke waits for the process; then one pass over the ids fills L1.
        let warm = get_load(url.clone(), 1, Duration::from_millis(10)).await;
        anyhow::ensure!(warm.failures == 0, "{}: warm-up failed", variant.name);
        if variant.products {
            let http = client(1);
            for i in 0..PRODUCTS {
                http.get(url(i))
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
            }
        }
        for connections in [16, 1] {
            let mut result = get_load(url.clone(), connections, LOAD_FOR).await;
            anyhow::ensure!(
                result.failures == 0,
                "{}: {} failed requests",
                variant.name,
                result.failures
            );
            if variant.products {
                let expected = if variant.name == "l1_on" {
                    "HIT-L1"
                } else {
                    "HIT-L2"
                };
                anyhow::ensure!(
                    result.share(expected) > 0.9,
                    "{} at {connections}: answered {:?}",
                    variant.name,
                    result.x_cache
                );
            }
            rps.insert((variant.name, connections), result.rps());
            p50.insert(
                (variant.name, connections),
                result.latencies.percentile(50.0),
            );
            report.set(
                &format!("lambda_watch_{}_rps_c{connections}", variant.name),
                result.rps(),
                "req/s",
            );
            report.set(
                &format!("lambda_watch_{}_p50_us_c{connections}", variant.name),
                micros(result.latencies.percentile(50.0)),
                "us",
            );
        }
        let _ = function.kill().await;
        drop(watch);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for name in ["l1_on", "l1_off"] {
        report.set(
            &format!("lambda_watch_{name}_fraction_of_empty_pct"),
            100.0 * rps[&(name, 16)] / rps[&("empty", 16)],
            "%",
        );
    }
    // One connection: what an L2 hit adds above the harness, against a plain GET.
    let keys: Vec<String> = (0..PRODUCTS)
        .map(|i| cache.keys().product(&id(i)).to_string())
        .collect();
    let raw = crate::redis_raw::get_p50(&redis.node(), &keys).await?;
    report.set("lambda_watch_redis_raw_get_p50_us", micros(raw), "us");
    let above_empty = p50[&("l1_off", 1)].saturating_sub(p50[&("empty", 1)]);
    report.set(
        "lambda_watch_l2_hit_above_empty_p50_us",
        micros(above_empty),
        "us",
    );
    report.set(
        "lambda_watch_l2_hit_above_empty_over_raw_get",
        above_empty.as_secs_f64() / raw.as_secs_f64(),
        "x",
    );
    // Per invocation, one at a time: handing the work over and running it before the next event.
    report.set(
        "lambda_watch_after_response_overhead_us",
        1e6 / rps[&("l1_off", 1)] - 1e6 / rps[&("l1_off_spawned_deferred", 1)],
        "us",
    );
    Ok(())
}

/// Process start to first response of the release binary under the runtime API emulator,
/// with the product in Redis (the first read is an L2 hit; DynamoDB is never called).
async fn cold_start(report: &mut Report, redis: &RedisServer, cache: &Cache) -> anyhow::Result<()> {
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/apigw-v2-http-get.json"))?;
    let env = lambda_env(redis, cache);
    let mut samples = Samples::default();
    for _ in 0..7 {
        let emulator = Emulator::start().await;
        let started = Instant::now();
        let mut function = start_function("api", &emulator.runtime_api(), "api", &env)?;
        let invocation = emulator
            .invoke(event.clone(), Duration::from_secs(30))
            .await;
        samples.push(started.elapsed());
        let status = invocation.response["statusCode"].as_u64();
        anyhow::ensure!(
            status == Some(200),
            "cold start answered {status:?}: {}",
            invocation.response
        );
        let _ = function.kill().await;
    }
    report.set("api_cold_start_ms", millis(samples.percentile(50.0)), "ms");
    Ok(())
}
