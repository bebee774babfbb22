//! Refresh benchmarks: 1,000 products with 30 days of counters, concurrent and sequential,
//! on the shimmed in-memory store and real Redis; and 100 products end to end on moto.

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::{RedisConfig, TableNames};
use catalog_core::jobs::refresh::{RefreshDeps, RefreshOptions, RefreshReport, refresh_once};
use catalog_core::model::{CounterBucket, EpochMillis, Product, ProductId};
use catalog_core::redis_conn::RedisConnection;
use catalog_core::store::dynamo::DynamoStore;
use catalog_core::store::dynamo::schema::create_tables;
use catalog_core::store::latency::LatencyShim;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{ProductWriter, ViewCounters};
use futures::{StreamExt, TryStreamExt};
use integration_tests::{RedisServer, dynamodb_client, unique_name};

use crate::fixtures::product_detail;
use crate::report::Report;
use crate::stats::millis;

const DB_LATENCY: Duration = Duration::from_millis(4);
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn product(i: usize, now: EpochMillis) -> Product {
    let mut p = product_detail(&format!("p{i}"), 800).product;
    p.created_at = now - (i as i64 % 60) * DAY;
    p
}

/// Writes `count` products with `hours` hourly and `days` daily counters each.
async fn seed<S: ProductWriter + ViewCounters>(
    store: &S,
    count: usize,
    hours: i64,
    days: i64,
    now: EpochMillis,
) -> anyhow::Result<()> {
    let products: Vec<Product> = (0..count).map(|i| product(i, now)).collect();
    futures::stream::iter(&products)
        .map(|p| store.put_product(p, ExpectedVersion::Absent))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let counters: Vec<(ProductId, CounterBucket, u64)> = products
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let views = (10_000 / (i as u64 + 1)).max(1);
            (0..hours)
                .map(move |h| {
                    (
                        p.id.clone(),
                        CounterBucket::hour_of(now - h * HOUR),
                        views / 24 + 1,
                    )
                })
                .chain(
                    (0..days)
                        .map(move |d| (p.id.clone(), CounterBucket::day_of(now - d * DAY), views)),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    futures::stream::iter(&counters)
        .map(|(id, bucket, views)| store.add_views(id, *bucket, *views))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn cache_on(server: &RedisServer, prefix: &str) -> anyhow::Result<Cache> {
    let config = RedisConfig {
        command_timeout: Duration::from_millis(200),
        ..RedisConfig::standalone(server.node())
    };
    let l2 = Arc::new(RedisL2::new(RedisConnection::connect(&config).await?));
    Ok(Cache::new(
        CacheOptions {
            key_prefix: prefix.into(),
            ..CacheOptions::default()
        },
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    ))
}

async fn timed(
    deps: &RefreshDeps,
    concurrency: usize,
    now: EpochMillis,
) -> (RefreshReport, Duration) {
    let options = RefreshOptions {
        concurrency,
        ..RefreshOptions::default()
    };
    let started = Instant::now();
    let report = refresh_once(deps, &options, now, None).await;
    (report, started.elapsed())
}

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    report.set("refresh_db_latency_shim_ms", millis(DB_LATENCY), "ms");
    let now = SystemClock.now_ms();
    let redis = RedisServer::start(RedisServer::free_port(), &[]);
    let store = Arc::new(MemoryStore::new());
    seed(store.as_ref(), 1000, 48, 30, now).await?;
    let shim = Arc::new(LatencyShim::new(store, DB_LATENCY));

    let concurrency = RefreshOptions::default().concurrency;
    report.set("refresh_concurrency", concurrency as f64, "products");
    let deps = RefreshDeps {
        catalog: shim.clone(),
        stats: shim.clone(),
        cache: cache_on(&redis, "bench-refresh-a:").await?,
    };
    let (concurrent, took) = timed(&deps, concurrency, now).await;
    anyhow::ensure!(
        concurrent.refreshed == 1000 && concurrent.errors == 0,
        "{concurrent:?}"
    );
    report.set("refresh_1000_products_s", took.as_secs_f64(), "s");
    report.set(
        "refresh_entries_per_s",
        concurrent.entries_written as f64 / took.as_secs_f64(),
        "entries/s",
    );

    let deps = RefreshDeps {
        cache: cache_on(&redis, "bench-refresh-b:").await?,
        ..deps
    };
    let (sequential, took) = timed(&deps, 1, now).await;
    anyhow::ensure!(
        sequential.refreshed == 1000 && sequential.errors == 0,
        "{sequential:?}"
    );
    report.set(
        "refresh_1000_products_s_sequential",
        took.as_secs_f64(),
        "s",
    );

    // End to end on moto (slow by nature: this checks the code path, it is not a speed figure).
    let tables = TableNames {
        catalog: unique_name("catalog"),
        views: unique_name("views"),
        stats: unique_name("stats"),
    };
    let client = dynamodb_client();
    create_tables(&client, &tables).await?;
    let moto = Arc::new(DynamoStore::new(client, tables));
    seed(moto.as_ref(), 100, 24, 7, now).await?;
    let deps = RefreshDeps {
        catalog: moto.clone(),
        stats: moto,
        cache: cache_on(&redis, "bench-refresh-moto:").await?,
    };
    let (on_moto, took) = timed(&deps, concurrency, now).await;
    anyhow::ensure!(
        on_moto.refreshed == 100 && on_moto.errors == 0,
        "{on_moto:?}"
    );
    report.set("refresh_moto_100_products_s", took.as_secs_f64(), "s");
    Ok(())
}
