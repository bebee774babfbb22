//! DynamoDB throttling and 5xx under load: the router over the real SDK, through the fault
//! proxy in front of moto, with Redis. Every answer is the right product (fresh or a stale
//! copy) or a 503 with `Retry-After`; never another 5xx, never wrong data; and everything
//! answers again once DynamoDB does. Each phase prints its counts and p99 (`--nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::{Config, DynamoConfig};
use catalog_core::store::dynamo::DynamoStore;
use integration_tests::dynamo_faults::{DynamoFaults, Fault, Rule};
use integration_tests::{connect, standalone_config};

use crate::support::Services;

const PRODUCTS: usize = 24;
/// Products cached before the fault (the rest are not).
const CACHED: usize = 12;
const READERS: usize = 8;

#[derive(Debug, Default)]
struct Outcome {
    ok_fresh: u64,
    ok_stale: u64,
    unavailable_with_retry_after: u64,
    /// Anything else: another status, a 503 without `Retry-After`, or a wrong product.
    wrong: Vec<String>,
    micros: Vec<u64>,
}

impl Outcome {
    fn p99_ms(&self) -> f64 {
        let mut micros = self.micros.clone();
        micros.sort_unstable();
        micros
            .get((micros.len() * 99 / 100).min(micros.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    }

    #[allow(clippy::print_stdout)] // the case's figures, for `--nocapture`
    fn report(&self, case: &str) {
        println!(
            "{case}: {} fresh, {} stale, {} 503 with Retry-After, {} wrong, p99 {:.0} ms",
            self.ok_fresh,
            self.ok_stale,
            self.unavailable_with_retry_after,
            self.wrong.len(),
            self.p99_ms()
        );
    }
}

fn product_id(n: usize) -> String {
    format!("f{n:02}")
}

/// `READERS` clients reading every product in turn for `duration`.
async fn load(base: &str, duration: Duration) -> Outcome {
    let until = Instant::now() + duration;
    let client = reqwest::Client::new();
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (client, base) = (client.clone(), base.to_owned());
        readers.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut n = r * 5;
            while Instant::now() < until {
                n = (n + 7) % PRODUCTS;
                let id = product_id(n);
                let started = Instant::now();
                let response = client
                    .get(format!("{base}/products/{id}"))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                outcome.micros.push(started.elapsed().as_micros() as u64);
                let x_cache = headers.get("x-cache").and_then(|v| v.to_str().ok());
                match status {
                    200 if body["product"]["id"] == id.as_str() => {
                        if x_cache == Some("STALE") {
                            outcome.ok_stale += 1;
                        } else {
                            outcome.ok_fresh += 1;
                        }
                    }
                    503 if headers.contains_key("retry-after")
                        && body["error"] == "unavailable" =>
                    {
                        outcome.unavailable_with_retry_after += 1;
                    }
                    _ => outcome.wrong.push(format!("{id}: {status} {body}")),
                }
            }
            outcome
        }));
    }
    let mut total = Outcome::default();
    for reader in readers {
        let outcome = reader.await.unwrap();
        total.ok_fresh += outcome.ok_fresh;
        total.ok_stale += outcome.ok_stale;
        total.unavailable_with_retry_after += outcome.unavailable_with_retry_after;
        total.wrong.extend(outcome.wrong);
        total.micros.extend(outcome.micros);
    }
    total
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state));
    base
}

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
        during.report(case);
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
    after.report("dynamodb healed");
    assert!(after.wrong.is_empty(), "{:?}", after.wrong);
    assert!(after.ok_fresh + after.ok_stale > 0);
    // Once DynamoDB answers, nothing is refused: a reader may have been in its last request
    // of the fault when the rule went, but none starts one after.
    assert_eq!(after.unavailable_with_retry_after, 0, "answers resume");
}
