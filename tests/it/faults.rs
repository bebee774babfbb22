//! Network faults between the cache and Redis, under load: Redis black-holed (no RST: clients
//! hit their timeouts) and restored; every connection reset mid-load; connections dropped
//! silently; one cluster master down; a connection the server closed while the environment
//! was frozen. The outcome asked for: no error reaches a caller, no wrong data, and Redis is
//! used again once it is back. The cases live in `integration_tests::fault_load`, which the
//! benchmark also runs to report each case's errors and p99; here each prints its figures
//! (`--nocapture` shows them).

use catalog_core::config::RedisConfig;
use std::time::Duration;

use catalog_core::cache::Source;
use catalog_core::model::ProductId;
use integration_tests::fault_load::{self, CaseResult, Doc, Environments};
use integration_tests::{RedisServer, unique_name};

#[allow(clippy::print_stdout)] // the case's figures, for `--nocapture`
fn assert_no_error_and_no_wrong_data(case: &str, result: &CaseResult) {
    for (name, phase) in &result.phases {
        println!("{}", phase.summary(&format!("{case}: {name}")));
    }
    for (name, phase) in &result.phases {
        assert!(phase.reads() > 0, "{case}: {name}: the readers read");
        assert_eq!(
            phase.errors(),
            0,
            "{case}: {name}: no error reaches a caller"
        );
        assert_eq!(phase.wrong(), 0, "{case}: {name}: no wrong data");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_black_holed_and_restored_under_load() {
    let result = fault_load::black_hole_and_restore().await;
    assert_no_error_and_no_wrong_data("redis black hole", &result);
    assert!(result.phase("before").from_redis() > 0);
    assert!(
        result.phase("after").from_redis() > 0,
        "Redis is used again once it answers"
    );
    assert!(
        result.breaker_opens > 0,
        "the circuit opened during the black hole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_reset_mid_load() {
    let result = fault_load::connections_reset().await;
    assert_no_error_and_no_wrong_data("redis connections reset", &result);
    let (before, after) = result.connections;
    assert!(after > before, "the clients reconnected");
}

/// A middlebox forgets every open connection without a reset: requests on them only time
/// out, forever. The engine's health probes replace the connection, and Redis is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_silently_are_replaced() {
    let result = fault_load::connections_dropped_silently().await;
    assert_no_error_and_no_wrong_data("connections dropped silently", &result);
    let (before, after) = result.connections;
    assert!(after > before, "the engines opened new connections");
    assert!(
        result.phase("after").from_redis() > 0,
        "Redis is used again on the new connections"
    );
}

/// One master of a 3-master cluster is killed under load, then comes back: no caller sees an
/// error or a wrong value, and the cluster is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_master_down_under_load() {
    let result = fault_load::cluster_master_down().await;
    assert_no_error_and_no_wrong_data("cluster master down", &result);
    assert!(result.phase("before").from_redis() > 0);
    assert!(
        result.phase("after").from_redis() > 0,
        "the cluster is used again once the master is back"
    );
}

/// The environment is frozen and Redis closes its connection meanwhile, killed (`CLIENT KILL`)
/// or idle past the server's `timeout`: the first request after the thaw is answered from
/// Redis, on a new connection, not only answered.
#[tokio::test]
async fn the_first_request_after_the_server_closed_the_connection_is_served_from_redis() {
    for closed_by in ["client kill", "idle timeout"] {
        let server = RedisServer::start(RedisServer::free_port(), &["--timeout", "1"]);
        let envs = Environments::connect(RedisConfig::standalone(server.node())).await;
        let cache = envs.first();
        let id = unique_name("k");
        let key = cache.keys().product(&ProductId::parse(&id).unwrap());
        let doc = Doc {
            id: id.clone(),
            version: 1,
        };
        let first = doc.clone();
        cache
            .get_or_load(&key, move || async move { Ok(Some(first)) })
            .await
            .unwrap();
        if closed_by == "client kill" {
            // Every client connection but the killer's.
            let mut admin =
                integration_tests::connect(&RedisConfig::standalone(server.node())).await;
            let () = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query_async(&mut admin)
                .await
                .map(|_: u64| ())
                .unwrap();
        } else {
            // Frozen past the server's one-second idle timeout.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let after = cache
            .get_or_load(&key, || async {
                Err::<Option<Doc>, _>(catalog_core::Error::NotConnected)
            })
            .await
            .expect("the first request after the thaw succeeds");
        assert_eq!(after.value.as_deref(), Some(&doc), "{closed_by}");
        assert_eq!(after.source, Source::L2, "{closed_by}: served from Redis");
    }
}
