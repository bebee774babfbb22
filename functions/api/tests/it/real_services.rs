//! The router over DynamoDB (moto) and Redis, each test with its own tables and key prefix.

use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::Config;
use integration_tests::{connect, standalone_config};
use serde_json::{Value, json};

use crate::support::Services;

/// One API process (its own L1) over the test's services, served on a loopback port.
struct Environment {
    base: String,
    cache: Cache,
    client: reqwest::Client,
}

async fn environment(services: &Services) -> Environment {
    let env = services.env(&[]);
    let config =
        Config::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap();
    let l2 = Arc::new(RedisL2::new(connect(&standalone_config()).await));
    let cache = Cache::new(
        CacheOptions::from_config(&config.cache, config.redis.as_ref()),
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let state = AppState::new(
        services.store.clone(),
        services.store.clone(),
        services.store.clone(),
        cache.clone(),
        &config,
    );
    let base = crate::support::serve(state).await;
    Environment {
        base,
        cache,
        client: reqwest::Client::new(),
    }
}

impl Environment {
    async fn get(&self, path: &str) -> (u16, String, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let x_cache = response
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (
            status,
            x_cache,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        admin: bool,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        // A client holds one of the two tokens.
        request = request.bearer_auth(if admin {
            "test-token"
        } else {
            "test-write-token"
        });
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn a_product_is_read_from_dynamodb_once_then_from_each_tier() {
    let services = Services::new().await;
    services.seed("p1", "Kettle").await;
    let (a, b) = (environment(&services).await, environment(&services).await);

    let (status, x_cache, body) = a.get("/products/p1").await;
    assert_eq!((status, x_cache.as_str()), (200, "MISS"));
    assert_eq!(body["product"]["name"], "Kettle");
    assert_eq!(a.get("/products/p1").await.1, "HIT-L1");
    assert_eq!(
        b.get("/products/p1").await.1,
        "HIT-L2",
        "another environment finds it in Redis"
    );
    assert_eq!(a.get("/products/ghost").await.0, 404);
}

#[tokio::test]
async fn a_cached_batch_of_100_is_one_redis_round_trip() {
    let services = Services::new().await;
    let ids: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
    for id in &ids {
        services.seed(id, id).await;
    }
    let (warm, cold) = (environment(&services).await, environment(&services).await);
    let (status, first) = warm
        .send(
            reqwest::Method::POST,
            "/products/batch",
            json!({"ids": ids}),
            false,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(first["cache"]["loaded"], 100);

    // The first request of an environment also flushes its counters after the response (one
    // pipeline, then at most every 10 s); let that happen before counting the batch's trips.
    cold.get("/openapi.json").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cold.cache.round_trips();
    let (_, second) = cold
        .send(
            reqwest::Method::POST,
            "/products/batch",
            json!({"ids": ids}),
            false,
        )
        .await;
    assert_eq!(second["cache"]["l2"], 100);
    assert_eq!(second["products"].as_array().unwrap().len(), 100);
    assert_eq!(
        cold.cache.round_trips() - before,
        1,
        "one MGET for 100 cached products"
    );
}

#[tokio::test]
async fn a_write_in_one_environment_is_seen_by_the_others() {
    let services = Services::new().await;
    services.seed("p1", "Before").await;
    let (writer, reader) = (environment(&services).await, environment(&services).await);
    assert_eq!(
        reader.get("/products/p1").await.2["product"]["name"],
        "Before"
    );

    let update = json!({"name": "After", "category": "kitchen", "price": {"amount_minor": 100, "currency": "EUR"}, "active": true, "expected_version": 1});
    assert_eq!(
        writer
            .send(reqwest::Method::PUT, "/products/p1", update, false)
            .await
            .0,
        200
    );

    // The reader's L1 may keep the old copy for its short TTL; Redis no longer has it.
    tokio::time::sleep(reader.cache.options().l1_ttl + Duration::from_millis(100)).await;
    let (_, x_cache, body) = reader.get("/products/p1").await;
    assert_eq!(
        (x_cache.as_str(), body["product"]["name"].as_str()),
        ("MISS", Some("After"))
    );
}

#[tokio::test]
async fn admin_stats_show_redis_figures_and_health_a_status() {
    let services = Services::new().await;
    services.seed("p1", "Kettle").await;
    let env = environment(&services).await;
    env.get("/products/p1").await;
    let (status, stats) = env
        .send(
            reqwest::Method::GET,
            "/admin/cache/stats",
            Value::Null,
            true,
        )
        .await;
    assert_eq!(status, 200, "{stats}");
    assert!(stats["redis"]["used_memory"].as_u64().unwrap() > 0);
    assert!(stats["redis"]["keys"].as_u64().unwrap() > 0);
    let (_, health) = env
        .send(
            reqwest::Method::GET,
            "/admin/cache/health",
            Value::Null,
            true,
        )
        .await;
    assert!(["HEALTHY", "WARNING", "CRITICAL"].contains(&health["status"].as_str().unwrap()));
    assert_eq!(
        env.send(
            reqwest::Method::GET,
            "/admin/cache/stats",
            Value::Null,
            false
        )
        .await
        .0,
        401
    );
}
