//! Redis faults through the API: the router (every route clients use: product, stats, batch,
//! feed, views and a write) with its Redis behind the TCP fault proxy, black-holed (no RST:
//! the client hits its timeouts) and then resetting every connection, under load. No answer is
//! a 5xx, every product read is the right product, and Redis is used again afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::{Config, RedisConfig};
use catalog_core::store::ProductWriter;
use catalog_core::store::memory::MemoryStore;
use integration_tests::RedisServer;
use integration_tests::tcp_faults::{Mode, TcpFaults};
use serde_json::json;

use crate::support::product;

const PRODUCTS: usize = 40;
const READERS: usize = 8;

/// What clients saw: answers by status, and anything wrong.
#[derive(Debug, Default)]
struct Seen {
    answers: u64,
    server_errors: Vec<String>,
    wrong: Vec<String>,
    cache_hits: u64,
}

async fn load(base: &str, duration: Duration) -> Seen {
    let until = Instant::now() + duration;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let (client, base) = (client.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut n = r * 3;
            while Instant::now() < until {
                n += 1;
                let id = format!("r{:02}", n % PRODUCTS);
                let request = match n % 6 {
                    0 => client.get(format!("{base}/products/{id}/stats")),
                    1 => client
                        .post(format!("{base}/products/batch"))
                        .json(&json!({"ids": [id, "r00", "r01", "nope"]})),
                    2 => client.get(format!("{base}/feed?kind=new&per_page=5")),
                    3 => client
                        .post(format!("{base}/products/{id}/views"))
                        .json(&json!({"event_id": format!("e{r}-{n}")})),
                    _ => client.get(format!("{base}/products/{id}")),
                };
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let x_cache = response
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                seen.answers += 1;
                if x_cache.starts_with("HIT") || x_cache == "STALE" {
                    seen.cache_hits += 1;
                }
                if status >= 500 {
                    seen.server_errors.push(format!("{status} {body}"));
                } else if n % 6 >= 4 && body["product"]["id"] != id.as_str() {
                    seen.wrong.push(format!("{id}: {status} {body}"));
                }
            }
            seen
        }));
    }
    let mut total = Seen::default();
    for task in tasks {
        let seen = task.await.unwrap();
        total.answers += seen.answers;
        total.cache_hits += seen.cache_hits;
        total.server_errors.extend(seen.server_errors);
        total.wrong.extend(seen.wrong);
    }
    total
}

#[allow(clippy::print_stdout)] // the phases' counts, for `--nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_black_holed_and_reset_under_load_through_the_api() {
    let store = Arc::new(MemoryStore::new());
    for n in 0..PRODUCTS {
        store
            .put_product(
                &product(&format!("r{n:02}"), "Kettle"),
                ExpectedVersion::Absent,
            )
            .await
            .unwrap();
    }
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = TcpFaults::start(&server.node()).await;
    let config = Config::from_lookup(|name| match name {
        "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("faults".into()),
        "ADMIN_TOKEN" => Some("faults-admin-token".into()),
        "WRITE_TOKEN" => Some("faults-write-token".into()),
        // L1 off: every read meets Redis.
        "L1_MAX_BYTES" => Some("0".into()),
        "REDIS_TIMEOUT_MS" => Some("50".into()),
        _ => None,
    })
    .unwrap();
    let l2 = RedisL2::connect(
        RedisConfig {
            command_timeout: Duration::from_millis(50),
            ..RedisConfig::standalone(proxy.node())
        },
        Duration::from_secs(2),
    )
    .await;
    let cache = Cache::new(
        CacheOptions::from_config(&config.cache, None),
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let state = AppState::new(store.clone(), store.clone(), store, cache, &config);
    let base = crate::support::serve(state).await;
    let client = reqwest::Client::new();

    let before = load(&base, Duration::from_secs(1)).await;
    proxy.set(Mode::BlackHole);
    let black_hole = load(&base, Duration::from_secs(2)).await;
    // A write while Redis is unreachable: acknowledged, and the change is what reads see
    // (L1 is off, and Redis holds no copy the write could not invalidate until it answers).
    let write = client
        .put(format!("{base}/products/r07"))
        .bearer_auth("faults-write-token")
        .json(&json!({"name": "Renamed", "category": "kitchen", "price": {"amount_minor": 100, "currency": "EUR"}, "active": true, "expected_version": 1}))
        .send()
        .await
        .unwrap();
    assert!(write.status().is_success(), "{}", write.status());
    proxy.set(Mode::Pass);
    let restored = load(&base, Duration::from_secs(2)).await;
    let resets = {
        let proxy = &proxy;
        let resetter = async {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                proxy.reset_all();
            }
        };
        let (seen, ()) = tokio::join!(load(&base, Duration::from_secs(2)), resetter);
        seen
    };

    for (phase, seen) in [
        ("before", &before),
        ("black hole", &black_hole),
        ("restored", &restored),
        ("resets", &resets),
    ] {
        println!(
            "api, redis {phase}: {} answers, {} 5xx, {} wrong, {} from the cache",
            seen.answers,
            seen.server_errors.len(),
            seen.wrong.len(),
            seen.cache_hits
        );
        assert!(seen.answers > 0, "{phase}");
        assert!(
            seen.server_errors.is_empty(),
            "{phase}: {:?}",
            seen.server_errors
        );
        assert!(seen.wrong.is_empty(), "{phase}: {:?}", seen.wrong);
    }
    assert!(before.cache_hits > 0);
    assert!(
        restored.cache_hits > 0,
        "Redis is used again once it answers"
    );
    let renamed: serde_json::Value = client
        .get(format!("{base}/products/r07"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["product"]["name"], "Renamed");
}
