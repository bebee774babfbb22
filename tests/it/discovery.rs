//! `CACHE_NAME` instead of `REDIS_ENDPOINTS`: the endpoint comes from the control plane
//! (a recorded `DescribeServerlessCaches` answer) and the cache then works against the real
//! test cluster it names.

use catalog_core::config::{Config, RedisMode};
use catalog_core::elasticache::ControlPlane;
use catalog_core::elasticache::testing::{
    client_answering, client_answering_in_turn, describe_response,
};
use catalog_core::wiring;
use integration_tests::redis_cluster_nodes;

/// The configuration a function gets with `CACHE_NAME` alone (TLS off: the test cluster
/// speaks plain text, where ElastiCache Serverless needs the default `true`).
fn config_naming_the_cache() -> Config {
    Config::from_lookup(|name| match name {
        "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("t".repeat(3)),
        "CACHE_NAME" => Some("catalog-cache".into()),
        "REDIS_TLS" => Some("false".into()),
        "REDIS_TIMEOUT_MS" => Some("500".into()),
        _ => None,
    })
    .unwrap()
}

fn control_plane_answering(status: &str, endpoint: Option<(&str, u16)>) -> ControlPlane {
    let (client, _) = client_answering(200, describe_response("catalog-cache", status, endpoint));
    ControlPlane::new(client, "catalog-cache")
}

#[tokio::test]
async fn a_cache_given_by_name_is_found_and_used_as_a_cluster() {
    let config = config_naming_the_cache();
    assert_eq!(config.redis.as_ref().unwrap().mode, RedisMode::Cluster);
    let seed = redis_cluster_nodes().remove(0);
    let (host, port) = seed.rsplit_once(':').unwrap();
    let control_plane = control_plane_answering("available", Some((host, port.parse().unwrap())));

    let cache = wiring::cache_with(&config, Some(&control_plane)).await;
    let info = cache
        .server_info()
        .await
        .expect("Redis found through the control plane");
    // One seed endpoint, as ElastiCache gives, and the engine finds every master.
    assert_eq!(info.nodes, 3, "{info:?}");
}

#[tokio::test]
async fn a_cache_still_creating_is_looked_up_again_until_it_has_an_endpoint() {
    let config = config_naming_the_cache();
    let seed = redis_cluster_nodes().remove(0);
    let (host, port) = seed.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let refused = r#"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>slow down</Message></Error></ErrorResponse>"#;
    let (client, calls) = client_answering_in_turn(vec![
        (200, describe_response("catalog-cache", "creating", None)),
        (400, refused.into()),
        (
            200,
            describe_response("catalog-cache", "available", Some((host, port))),
        ),
    ]);
    let control_plane = ControlPlane::new(client, "catalog-cache");
    let cache = wiring::cache_with(&config, Some(&control_plane)).await;
    // Within the init wait the lookup was retried (100 ms, 200 ms backoff) and Redis reached.
    let mut info = cache.server_info().await;
    for _ in 0..50 {
        if info.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        info = cache.server_info().await;
    }
    assert_eq!(
        info.expect("found after the cache became available").nodes,
        3
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        3,
        "looked up once more after each failure, then no more"
    );
}

#[tokio::test]
async fn a_cache_without_an_endpoint_or_a_refusal_leaves_the_function_on_l1_and_dynamodb() {
    let config = config_naming_the_cache();
    let creating = control_plane_answering("creating", None);
    let cache = wiring::cache_with(&config, Some(&creating)).await;
    assert!(cache.server_info().await.is_none());

    let (client, _) = client_answering(
        403,
        r#"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>"#.into(),
    );
    let refused = ControlPlane::new(client, "catalog-cache");
    let cache = wiring::cache_with(&config, Some(&refused)).await;
    assert!(cache.server_info().await.is_none());
}
