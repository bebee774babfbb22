//! Network faults between the cache and Redis, under load, through the TCP fault proxy:
//! Redis black-holed (no RST: clients hit their timeouts) and restored; every connection
//! reset mid-load; a connection the server closed while the environment was frozen. The
//! outcome asked for: no error reaches a caller, no wrong data, and the cache is used again
//! once Redis is back. Each case prints its errors and p99 (`--nocapture` shows them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Cacheable, Source};
use catalog_core::clock::SystemClock;
use catalog_core::config::RedisConfig;
use catalog_core::model::ProductId;
use integration_tests::tcp_faults::{Mode, TcpFaults};
use integration_tests::{RedisServer, unique_name};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Doc {
    id: String,
    version: u64,
}

impl Cacheable for Doc {
    fn cache_version(&self) -> u64 {
        self.version
    }
}

const KEYS: usize = 300;
const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// What the modelled database read costs.
const STORE_TIME: Duration = Duration::from_millis(2);

fn engine(l2: Arc<RedisL2>, prefix: &str) -> Cache {
    Cache::new(
        CacheOptions {
            key_prefix: prefix.to_owned(),
            // L1 off: every read goes to Redis and meets the fault.
            l1_max_bytes: 0,
            command_timeout: REDIS_TIMEOUT,
            breaker_cooldown: Duration::from_millis(500),
            ..CacheOptions::default()
        },
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    )
}

/// What readers saw in one phase.
#[derive(Default)]
struct Phase {
    reads: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    from_redis: AtomicU64,
    micros: std::sync::Mutex<Vec<u64>>,
}

impl Phase {
    fn p99_ms(&self) -> f64 {
        let mut micros = self.micros.lock().unwrap().clone();
        micros.sort_unstable();
        micros
            .get((micros.len() * 99 / 100).min(micros.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    }

    #[allow(clippy::print_stdout)] // the case's figures, for `--nocapture`
    fn report(&self, case: &str) {
        println!(
            "{case}: {} reads, {} errors, {} wrong values, {} from Redis, p99 {:.1} ms",
            self.reads.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
            self.from_redis.load(Ordering::Relaxed),
            self.p99_ms()
        );
    }
}

/// 4 environments × 4 readers reading rotating keys for `duration`.
async fn load(engines: &[Cache], duration: Duration, phase: &Arc<Phase>) {
    let until = Instant::now() + duration;
    let mut readers = Vec::new();
    for (e, engine) in engines.iter().enumerate() {
        for r in 0..4 {
            let (engine, phase) = (engine.clone(), phase.clone());
            readers.push(tokio::spawn(async move {
                let mut n = e * 31 + r * 7;
                while Instant::now() < until {
                    n = (n + 13) % KEYS;
                    let id = format!("k{n}");
                    let key = engine.keys().product(&ProductId::parse(&id).unwrap());
                    let started = Instant::now();
                    let expected = Doc {
                        id: id.clone(),
                        version: 1,
                    };
                    let answer = expected.clone();
                    let result = engine
                        .get_or_load(&key, move || async move {
                            tokio::time::sleep(STORE_TIME).await;
                            Ok(Some(answer))
                        })
                        .await;
                    phase.reads.fetch_add(1, Ordering::Relaxed);
                    phase
                        .micros
                        .lock()
                        .unwrap()
                        .push(started.elapsed().as_micros() as u64);
                    match result {
                        Err(_) => {
                            phase.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(lookup) => {
                            if lookup.value.as_deref() != Some(&expected) {
                                phase.wrong.fetch_add(1, Ordering::Relaxed);
                            }
                            if matches!(lookup.source, Source::L2 | Source::Stale) {
                                phase.from_redis.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }));
        }
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

async fn environments(node: &str, prefix: &str) -> Vec<Cache> {
    let config = RedisConfig {
        command_timeout: REDIS_TIMEOUT,
        ..RedisConfig::standalone(node)
    };
    let mut engines = Vec::new();
    for _ in 0..4 {
        engines.push(engine(
            RedisL2::connect(config.clone(), Duration::from_secs(2)).await,
            prefix,
        ));
    }
    engines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_black_holed_and_restored_under_load() {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = TcpFaults::start(&server.node()).await;
    let prefix = format!("{}:", unique_name("faults"));
    let engines = environments(&proxy.node(), &prefix).await;

    let before = Arc::new(Phase::default());
    load(&engines, Duration::from_secs(1), &before).await;
    proxy.set(Mode::BlackHole);
    let during = Arc::new(Phase::default());
    load(&engines, Duration::from_secs(2), &during).await;
    proxy.set(Mode::Pass);
    let after = Arc::new(Phase::default());
    // Long enough for the breaker's background probe to close the circuit.
    load(&engines, Duration::from_secs(2), &after).await;

    before.report("redis black hole: before");
    during.report("redis black hole: during");
    after.report("redis black hole: after");
    for phase in [&before, &during, &after] {
        assert_eq!(
            phase.errors.load(Ordering::Relaxed),
            0,
            "no error reaches a caller"
        );
        assert_eq!(phase.wrong.load(Ordering::Relaxed), 0, "no wrong data");
    }
    assert!(before.from_redis.load(Ordering::Relaxed) > 0);
    assert!(
        after.from_redis.load(Ordering::Relaxed) > 0,
        "Redis is used again once it answers"
    );
    let opens: u64 = engines.iter().map(|e| e.snapshot().breaker_opens).sum();
    assert!(opens > 0, "the circuit opened during the black hole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_reset_mid_load() {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = TcpFaults::start(&server.node()).await;
    let prefix = format!("{}:", unique_name("faults"));
    let engines = environments(&proxy.node(), &prefix).await;
    let phase = Arc::new(Phase::default());
    let resetter = {
        let proxy_node = proxy.node();
        let phase = phase.clone();
        let engines = engines.clone();
        tokio::spawn(async move {
            load(&engines, Duration::from_secs(3), &phase).await;
            proxy_node
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.reset_all();
    }
    resetter.await.unwrap();
    phase.report("redis connections reset");
    assert_eq!(phase.errors.load(Ordering::Relaxed), 0);
    assert_eq!(phase.wrong.load(Ordering::Relaxed), 0);
    assert!(proxy.connections() > 4, "the clients reconnected");
}

/// A middlebox forgets every open connection without a reset: requests on them only time
/// out, forever. The engine's health probes replace the connection, and Redis is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_silently_are_replaced() {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = TcpFaults::start(&server.node()).await;
    let prefix = format!("{}:", unique_name("faults"));
    let engines = environments(&proxy.node(), &prefix).await;
    let before = Arc::new(Phase::default());
    load(&engines, Duration::from_secs(1), &before).await;
    let connections = proxy.connections();
    proxy.drop_open_connections();
    let after = Arc::new(Phase::default());
    load(&engines, Duration::from_secs(3), &after).await;
    before.report("connections dropped silently: before");
    after.report("connections dropped silently: after");
    assert_eq!(after.errors.load(Ordering::Relaxed), 0);
    assert_eq!(after.wrong.load(Ordering::Relaxed), 0);
    assert!(
        proxy.connections() > connections,
        "the engines opened new connections"
    );
    assert!(
        after.from_redis.load(Ordering::Relaxed) > 0,
        "Redis is used again on the new connections"
    );
}

/// The environment is frozen, Redis drops its connection (idle past `timeout`, or `CLIENT
/// KILL`); the first request after the thaw must succeed.
#[tokio::test]
async fn the_first_request_after_the_server_closed_the_connection_succeeds() {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let prefix = format!("{}:", unique_name("faults"));
    let engines = environments(&server.node(), &prefix).await;
    let cache = &engines[0];
    let key = cache.keys().product(&ProductId::parse("k1").unwrap());
    let doc = Doc {
        id: "k1".into(),
        version: 1,
    };
    let (first, second) = (doc.clone(), doc.clone());
    cache
        .get_or_load(&key, move || async move { Ok(Some(first)) })
        .await
        .unwrap();
    // Every client connection but the killer's is closed by the server.
    let mut admin = integration_tests::connect(&RedisConfig::standalone(server.node())).await;
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
    let after = cache
        .get_or_load(&key, move || async move { Ok(Some(second)) })
        .await
        .expect("the first request after the thaw succeeds");
    assert_eq!(after.value.as_deref(), Some(&doc));
    // Served from the database (BYPASS) while the connection is re-established in the
    // background: a success, not an error.
}
