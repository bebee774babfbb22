//! `DYNAMODB_ENDPOINT=<moto> make dev` against fresh tables: the dev binary creates them,
//! seeds the demo catalog in bulk, and serves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use integration_tests::{RedisServer, dynamodb_endpoint, unique_name};

#[tokio::test]
async fn make_dev_on_a_fresh_moto_comes_up_with_the_demo_data() {
    let port = RedisServer::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_local"))
        .env("DYNAMODB_ENDPOINT", dynamodb_endpoint())
        .env("CATALOG_TABLE", unique_name("dev-catalog"))
        .env("VIEWS_TABLE", unique_name("dev-views"))
        .env("STATS_TABLE", unique_name("dev-stats"))
        .env("DEV_ADDR", format!("127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let product = loop {
        if let Ok(response) = client.get(format!("{base}/products/p-0001")).send().await {
            break response;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "make dev exited while seeding"
        );
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "make dev on moto did not come up"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(product.status(), 200);
    let detail: serde_json::Value = product.json().await.unwrap();
    assert_eq!(detail["product"]["id"], "p-0001");
    // The documented demo data: 200 products, offers, and counters behind the stats.
    let last = client
        .get(format!("{base}/products/p-0200"))
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 200);
    let feed: serde_json::Value = client
        .get(format!("{base}/feed?kind=trending&per_page=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(feed["products"].as_array().unwrap().len(), 5, "{feed}");
    let stats: serde_json::Value = client
        .get(format!("{base}/products/p-0001/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["stats"]["views_7d"].as_u64().unwrap() > 0, "{stats}");
    child.kill().await.unwrap();
}
