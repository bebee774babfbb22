//! Faults under load, each case's errors and p99 (issue 13):
//! - Redis cases (black hole, resets, silent drops, one cluster master down) run the same
//!   code as the fault tests (`integration_tests::fault_load`): 4 environments × 4 readers,
//!   L1 off, Redis timeout 50 ms, a modelled 2 ms database read.
//! - DynamoDB failing: the API over the in-memory store behind the 4 ms shim, whose reads all
//!   fail (as throttled or 5xx reads do once the SDK's retries are spent; the retries
//!   themselves are not modelled here: through the SDK a failing read takes up to
//!   `DYNAMODB_TIMEOUT_MS`, which the test against moto shows). Half the products have a
//!   stale cached copy, half were never cached.

use std::sync::Arc;
use std::time::Duration;

use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::{Config, RedisConfig};
use catalog_core::redis_conn::RedisConnection;
use catalog_core::store::latency::LatencyShim;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{OfferWriter, ProductWriter};
use integration_tests::RedisServer;
use integration_tests::fault_load::{self, CaseResult};

use crate::fixtures::product_detail;
use crate::report::Report;

const PRODUCTS: usize = 200;
const READERS: usize = 32;

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    report.set(
        "faults_redis_timeout_ms",
        fault_load::REDIS_TIMEOUT.as_secs_f64() * 1e3,
        "ms",
    );
    report.set(
        "faults_store_time_ms",
        fault_load::STORE_TIME.as_secs_f64() * 1e3,
        "ms",
    );
    redis_case(
        report,
        "black_hole",
        "during",
        fault_load::black_hole_and_restore().await,
    );
    redis_case(
        report,
        "resets",
        "during",
        fault_load::connections_reset().await,
    );
    redis_case(
        report,
        "silent_drop",
        "after",
        fault_load::connections_dropped_silently().await,
    );
    redis_case(
        report,
        "cluster_master_down",
        "during",
        fault_load::cluster_master_down().await,
    );
    dynamodb_failing(report).await
}

/// Errors and wrong values over every phase; p99 of the phase that meets the fault.
fn redis_case(report: &mut Report, case: &str, fault_phase: &str, result: CaseResult) {
    for (name, phase) in &result.phases {
        eprintln!("  {}", phase.summary(&format!("{case}: {name}")));
    }
    let errors: u64 = result.phases.iter().map(|(_, p)| p.errors()).sum();
    let wrong: u64 = result.phases.iter().map(|(_, p)| p.wrong()).sum();
    let reads: u64 = result.phases.iter().map(|(_, p)| p.reads()).sum();
    report.set(&format!("faults_{case}_reads"), reads as f64, "reads");
    report.set(&format!("faults_{case}_errors"), errors as f64, "errors");
    report.set(&format!("faults_{case}_wrong"), wrong as f64, "reads");
    report.set(
        &format!("faults_{case}_p99_ms"),
        result.phase(fault_phase).p99_ms(),
        "ms",
    );
}

async fn dynamodb_failing(report: &mut Report) -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new());
    let mut ids = Vec::new();
    for i in 0..PRODUCTS {
        let id = format!("p{i}");
        let detail = product_detail(&id, 2048);
        store
            .put_product(&detail.product, ExpectedVersion::Absent)
            .await?;
        for offer in &detail.offers {
            store.put_offer(offer, ExpectedVersion::Absent).await?;
        }
        ids.push(id);
    }
    let shim = Arc::new(LatencyShim::new(store, Duration::from_millis(4)));
    let redis = RedisServer::start(RedisServer::free_port(), &[]);
    let l2 = Arc::new(RedisL2::new(
        RedisConnection::connect(&RedisConfig {
            command_timeout: Duration::from_millis(200),
            ..RedisConfig::standalone(redis.node())
        })
        .await?,
    ));
    let config = Config::from_lookup(|name| match name {
        "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("bench".into()),
        "ADMIN_TOKEN" => Some("bench-token-bench-token".into()),
        "CACHE_TTL_PRODUCT_SECS" => Some("1".into()),
        "CACHE_STALE_PRODUCT_SECS" => Some("300".into()),
        _ => None,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cache = Cache::new(
        CacheOptions::from_config(&config.cache, None),
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let state = api::AppState::new(shim.clone(), shim.clone(), shim.clone(), cache, &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(api::serve(listener, state));

    // Half the products cached, then stale (past their one-second TTL).
    let cached = &ids[..PRODUCTS / 2];
    let warm = fault_load::http_product_reads(&base, cached, 8, Duration::from_secs(1)).await;
    anyhow::ensure!(warm.wrong.is_empty(), "warming failed: {:?}", warm.wrong);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    shim.fail_reads();
    let during = fault_load::http_product_reads(&base, &ids, READERS, Duration::from_secs(3)).await;
    shim.heal();
    eprintln!("  {}", during.summary("dynamodb failing"));
    let requests = during.requests().max(1) as f64;
    report.set(
        "faults_dynamodb_requests",
        during.requests() as f64,
        "requests",
    );
    report.set(
        "faults_dynamodb_stale_pct",
        100.0 * during.ok_stale as f64 / requests,
        "%",
    );
    report.set(
        "faults_dynamodb_503_retry_after_pct",
        100.0 * during.unavailable_with_retry_after as f64 / requests,
        "%",
    );
    report.set(
        "faults_dynamodb_other_errors",
        during.wrong.len() as f64,
        "requests",
    );
    report.set("faults_dynamodb_p99_ms", during.p99_ms(), "ms");
    Ok(())
}
