//! DynamoDB throttling and 5xx under load: the router over the real SDK, through the fault
//! proxy in front of moto, with Redis. Every answer is the right product (fresh or a stale
//! copy) or a 503 with `Retry-After`; never another 5xx, never wrong data; and everything
//! answers again once DynamoDB does. Each phase prints its counts and p99 (`--nocapture`).

use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::{Config, DynamoConfig};
use catalog_core::store::dynamo::DynamoStore;
use integration_tests::dynamo_faults::{DynamoFaults, Fault, Rule};
use integration_tests::fault_load::{HttpOutcome, http_product_reads};
use integration_tests::{connect, standalone_config};

use crate::support::Services;

const PRODUCTS: usize = 24;
/// Products cached before the fault (the rest are not).
const CACHED: usize = 12;
const READERS: usize = 8;

fn product_id(n: usize) -> String {
    format!("f{n:02}")
}

async fn load(base: &str, duration: Duration) -> HttpOutcome {
    let ids: Vec<String> = (0..PRODUCTS).map(product_id).collect();
    http_product_reads(base, &ids, READERS, duration).await
}

/// One API process whose DynamoDB client goes through `faults`.
async fn environment(services: &Services, faults: &DynamoFaults) -> String {
    let env = services.env(&[
        // Cached copies go stale a second after they were loaded and are served stale for
        // five minutes, so the fault meets both stale copies and products never cached.
        ("CACHE_TTL_PRODUCT_SECS", "1"),
        ("CACHE_STALE_PRODUCT_SECS", "300"),
        ("DYNAMODB_TIMEOUT_MS", "2000"),
    ]);
    let config =
        Config::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap();
    let client = catalog_core::store::dynamo::client(&DynamoConfig {
        endpoint: Some(faults.endpoint()),
        operation_timeout: config.dynamodb.operation_timeout,
    })
    .await;
    let store = Arc::new(DynamoStore::new(client, services.tables.clone()));
    let l2 = Arc::new(RedisL2::new(connect(&standalone_config()).await));
    let cache = Cache::new(
        CacheOptions::from_config(&config.cache, config.redis.as_ref()),
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let state = AppState::new(store.clone(), store.clone(), store, cache, &config);
    crate::support::serve(state).await
}

#[allow(clippy::print_stdout)] // the case's figures, for `--nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_throttling_and_5xx_under_load() {
    let services = Services::new().await;
    for n in 0..PRODUCTS {
        services.seed(&product_id(n), &format!("Product {n}")).await;
    }
    let faults = DynamoFaults::start(&integration_tests::dynamodb_endpoint()).await;
    let base = environment(&services, &faults).await;
    let client = reqwest::Client::new();
    for n in 0..CACHED {
        let response = client
            .get(format!("{base}/products/{}", product_id(n)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Past the fresh TTL: the cached copies are stale from here on.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    for (case, fault) in [
        ("dynamodb throttled", Fault::Throttle),
        ("dynamodb 5xx", Fault::ServerError),
    ] {
        faults.add(Rule {
            operation: None,
            body_contains: None,
            pass_first: 0,
            fail: None,
            fault,
        });
        let during = load(&base, Duration::from_secs(3)).await;
        faults.heal();
        println!("{}", during.summary(case));
        assert!(during.wrong.is_empty(), "{case}: {:?}", during.wrong);
        assert!(
            during.ok_stale > 0,
            "{case}: cached products are answered from their stale copies"
        );
        assert!(
            during.unavailable_with_retry_after > 0,
            "{case}: products never cached are a 503 with a retry hint"
        );
    }
    // The proxy injected faults, so the cases above met them.
    assert!(faults.injected() > 0);

    let after = load(&base, Duration::from_secs(2)).await;
    println!("{}", after.summary("dynamodb healed"));
    assert!(after.wrong.is_empty(), "{:?}", after.wrong);
    assert!(after.ok_fresh + after.ok_stale > 0);
    // Once DynamoDB answers, nothing is refused: a reader may have been in its last request
    // of the fault when the rule went, but none starts one after.
    assert_eq!(after.unavailable_with_retry_after, 0, "answers resume");
}
