//! Offer-expiry benchmarks: 100,000 due offers expired with the store behind the DynamoDB
//! latency shim and a real Redis holding the expiry set, at the job's default concurrency and
//! one write at a time; and DynamoDB writes per expired offer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::RedisConfig;
use catalog_core::expiry_set::{ExpirySet, member};
use catalog_core::jobs::offer_expiry::{DueSource, ExpiryDeps, ExpiryOptions, expire_once};
use catalog_core::model::{EpochMillis, Offer, OfferId, OfferStatus};
use catalog_core::redis_conn::RedisConnection;
use catalog_core::store::latency::LatencyShim;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{OfferWriter, ProductWriter};
use integration_tests::RedisServer;

use crate::fixtures::product_detail;
use crate::report::Report;
use crate::stats::millis;

const DB_LATENCY: Duration = Duration::from_millis(4);
const OFFERS: usize = 100_000;
const OFFERS_PER_PRODUCT: usize = 5;

/// A store with `OFFERS` offers over `OFFERS / 5` products, all due at `now`, and a Redis
/// expiry set that lists them (as the API's writes and the hourly reconcile leave it).
async fn seeded(
    server: &RedisServer,
    prefix: &str,
    now: EpochMillis,
) -> anyhow::Result<(Arc<MemoryStore>, Cache)> {
    let store = Arc::new(MemoryStore::new());
    let config = RedisConfig {
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(server.node())
    };
    let l2 = Arc::new(RedisL2::new(RedisConnection::connect(&config).await?));
    let cache = Cache::new(
        CacheOptions {
            key_prefix: prefix.into(),
            command_timeout: Duration::from_millis(500),
            ..CacheOptions::default()
        },
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let set = ExpirySet::new(&cache);
    let mut members = Vec::with_capacity(1000);
    for p in 0..OFFERS / OFFERS_PER_PRODUCT {
        let product = product_detail(&format!("p{p}"), 400).product;
        let product = store.put_product(&product, ExpectedVersion::Absent).await?;
        for o in 0..OFFERS_PER_PRODUCT {
            let offer = Offer {
                id: OfferId::parse(&format!("o{p}-{o}"))?,
                product_id: product.id.clone(),
                status: OfferStatus::Active,
                price: product.price,
                expires_at: now - 1 - (p * OFFERS_PER_PRODUCT + o) as i64,
                created_at: now - 86_400_000,
                updated_at: now - 86_400_000,
                version: 0,
            };
            let offer = store.put_offer(&offer, ExpectedVersion::Absent).await?;
            members.push((member(&offer.product_id, &offer.id), offer.expires_at));
            if members.len() == 1000 {
                anyhow::ensure!(set.track(&members).await, "Redis refused the set");
                members.clear();
            }
        }
    }
    anyhow::ensure!(set.track(&members).await && set.mark_synced(now).await);
    Ok((store, cache))
}

async fn timed(
    server: &RedisServer,
    prefix: &str,
    concurrency: usize,
    now: EpochMillis,
) -> anyhow::Result<(Duration, u64)> {
    let (store, cache) = seeded(server, prefix, now).await?;
    let shim = Arc::new(LatencyShim::new(store.clone(), DB_LATENCY));
    let deps = ExpiryDeps {
        catalog: shim.clone(),
        stats: store,
        cache,
    };
    let options = ExpiryOptions {
        concurrency,
        ..ExpiryOptions::default()
    };
    let started = Instant::now();
    let report = expire_once(&deps, &options, now, None).await;
    let took = started.elapsed();
    anyhow::ensure!(
        report.expired == OFFERS as u64
            && report.errors == 0
            && report.source == Some(DueSource::Set),
        "{report:?}"
    );
    Ok((took, shim.writes()))
}

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    report.set("offer_expiry_db_latency_shim_ms", millis(DB_LATENCY), "ms");
    let now = SystemClock.now_ms();
    let redis = RedisServer::start(RedisServer::free_port(), &[]);
    let concurrency = ExpiryOptions::default().concurrency;
    report.set("offer_expiry_concurrency", concurrency as f64, "writes");

    let (took, writes) = timed(&redis, "bench-expiry-a:", concurrency, now).await?;
    report.set("offer_expiry_100k_s", took.as_secs_f64(), "s");
    report.set(
        "offer_expiry_writes_per_offer",
        writes as f64 / OFFERS as f64,
        "writes",
    );

    if std::env::var_os("BENCH_QUICK").is_none() {
        let (took, _) = timed(&redis, "bench-expiry-b:", 1, now).await?;
        report.set("offer_expiry_100k_s_sequential", took.as_secs_f64(), "s");
    }
    Ok(())
}
