//! The Redis connection against a real standalone server and a real 3-master cluster.

use std::time::Duration;

use catalog_core::config::RedisConfig;
use catalog_core::redis_conn::RedisConnection;
use integration_tests::{cluster_config, connect, standalone_config, unique_name};
use redis::AsyncCommands;

async fn set_get_and_expire(config: RedisConfig) {
    let mut conn = connect(&config).await;
    let prefix = unique_name("it");
    // Keys spread over many hash slots, so on the cluster they land on every master.
    for i in 0..20 {
        let key = format!("{prefix}:k{i}");
        let _: () = conn.set(&key, format!("v{i}")).await.unwrap();
        let value: String = conn.get(&key).await.unwrap();
        assert_eq!(value, format!("v{i}"));
    }

    let short = format!("{prefix}:short");
    let _: () = conn.pset_ex(&short, "gone soon", 100).await.unwrap();
    let ttl: i64 = conn.pttl(&short).await.unwrap();
    assert!((1..=100).contains(&ttl), "pttl {ttl}");
    // Redis expires keys on its own clock, so this one waits for real.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let gone: Option<String> = conn.get(&short).await.unwrap();
    assert_eq!(gone, None);
}

#[tokio::test]
async fn standalone_sets_gets_and_expires_under_a_prefix() {
    set_get_and_expire(standalone_config()).await;
}

#[tokio::test]
async fn cluster_sets_gets_and_expires_across_slots() {
    let config = cluster_config();
    assert!(connect(&config).await.is_cluster());
    set_get_and_expire(config).await;
}

#[tokio::test]
async fn a_slow_command_times_out_instead_of_hanging() {
    let config = RedisConfig {
        command_timeout: Duration::from_millis(50),
        ..standalone_config()
    };
    let mut conn = connect(&config).await;
    let key = unique_name("known");
    let _: () = conn.set(&key, "right").await.unwrap();

    // BLPOP on an empty list blocks server-side for 300 ms: far past the 50 ms budget.
    let started = std::time::Instant::now();
    let result: redis::RedisResult<Option<(String, String)>> =
        conn.blpop(unique_name("empty"), 0.3).await;
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(250));

    // Once the server answers the abandoned BLPOP, its late reply must not be taken for the
    // reply to a later command: the connection stays in step.
    tokio::time::sleep(Duration::from_millis(400)).await;
    RedisConnection::ping(&conn).await.unwrap();
    let value: String = conn.get(&key).await.unwrap();
    assert_eq!(value, "right");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_a_retryable_error() {
    let config = RedisConfig {
        connect_timeout: Duration::from_millis(200),
        // Port 9 (discard) has no listener on loopback.
        ..RedisConfig::standalone("127.0.0.1:9")
    };
    let started = std::time::Instant::now();
    let err = RedisConnection::connect(&config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
