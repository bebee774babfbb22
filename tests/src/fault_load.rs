//! Redis faults under load, shared by the fault tests (which assert the outcome) and the
//! benchmark (which reports each case's errors and p99): environments (engines with L1 off,
//! so every read meets Redis) read rotating keys while a fault is applied, and each phase
//! counts what the readers saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Cacheable, Source};
use catalog_core::clock::SystemClock;
use catalog_core::config::RedisConfig;
use catalog_core::model::ProductId;
use serde::{Deserialize, Serialize};

use crate::tcp_faults::{Mode, TcpFaults};
use crate::{RedisCluster, RedisServer, unique_name};

/// Keys the readers rotate over.
const KEYS: usize = 300;
/// The Redis command timeout of every environment.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// What the modelled database read costs.
pub const STORE_TIME: Duration = Duration::from_millis(2);
/// Environments, and readers in each.
const ENVIRONMENTS: usize = 4;
const READERS: usize = 4;

/// The cached document: its id, so a wrong answer is visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// The key's id.
    pub id: String,
    /// Its version.
    pub version: u64,
}

impl Cacheable for Doc {
    fn cache_version(&self) -> u64 {
        self.version
    }

    fn heap_bytes(&self) -> usize {
        self.id.capacity()
    }
}

/// The 99th percentile of latencies in microseconds, in milliseconds (0 for none).
fn p99_ms(micros: &[u64]) -> f64 {
    let mut sorted = micros.to_vec();
    sorted.sort_unstable();
    sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |us| *us as f64 / 1000.0)
}

/// What readers saw in one phase.
#[derive(Debug, Default)]
pub struct Phase {
    reads: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    from_redis: AtomicU64,
    micros: std::sync::Mutex<Vec<u64>>,
}

impl Phase {
    /// Reads made.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Reads that returned an error to the caller.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Reads that returned another value than the key's.
    pub fn wrong(&self) -> u64 {
        self.wrong.load(Ordering::Relaxed)
    }

    /// Reads answered from Redis.
    pub fn from_redis(&self) -> u64 {
        self.from_redis.load(Ordering::Relaxed)
    }

    /// The 99th percentile read latency.
    pub fn p99_ms(&self) -> f64 {
        p99_ms(
            &self
                .micros
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// One line with the phase's figures.
    pub fn summary(&self, case: &str) -> String {
        format!(
            "{case}: {} reads, {} errors, {} wrong values, {} from Redis, p99 {:.1} ms",
            self.reads(),
            self.errors(),
            self.wrong(),
            self.from_redis(),
            self.p99_ms()
        )
    }
}

/// Environments of one case: engines that each hold their own connection.
pub struct Environments {
    engines: Vec<Cache>,
}

impl Environments {
    /// `ENVIRONMENTS` engines connected with `config` (its timeout set to [`REDIS_TIMEOUT`]).
    pub async fn connect(config: RedisConfig) -> Environments {
        let config = RedisConfig {
            command_timeout: REDIS_TIMEOUT,
            ..config
        };
        let prefix = format!("{}:", unique_name("faults"));
        let mut engines = Vec::new();
        for _ in 0..ENVIRONMENTS {
            let l2 = RedisL2::connect(config.clone(), Duration::from_secs(2)).await;
            engines.push(Cache::new(
                CacheOptions {
                    key_prefix: prefix.clone(),
                    // L1 off: every read goes to Redis and meets the fault.
                    l1_max_bytes: 0,
                    command_timeout: REDIS_TIMEOUT,
                    breaker_cooldown: Duration::from_millis(500),
                    ..CacheOptions::default()
                },
                Some(l2 as Arc<dyn L2Store>),
                Arc::new(SystemClock),
            ));
        }
        Environments { engines }
    }

    /// The first engine.
    pub fn first(&self) -> &Cache {
        &self.engines[0]
    }

    /// Times the circuit breakers opened, over all engines.
    pub fn breaker_opens(&self) -> u64 {
        self.engines
            .iter()
            .map(|e| e.snapshot().breaker_opens)
            .sum()
    }

    /// Every reader of every environment reads rotating keys for `duration`.
    pub async fn load(&self, duration: Duration) -> Phase {
        let phase = Arc::new(Phase::default());
        let until = Instant::now() + duration;
        let mut readers = Vec::new();
        for (e, engine) in self.engines.iter().enumerate() {
            for r in 0..READERS {
                let (engine, phase) = (engine.clone(), phase.clone());
                readers.push(tokio::spawn(async move {
                    let mut n = e * 31 + r * 7;
                    while Instant::now() < until {
                        n = (n + 13) % KEYS;
                        read_one(&engine, n, &phase).await;
                    }
                }));
            }
        }
        for reader in readers {
            if let Err(e) = reader.await {
                panic!("a reader died: {e}");
            }
        }
        Arc::try_unwrap(phase).unwrap_or_else(|_| panic!("the readers are done"))
    }
}

async fn read_one(engine: &Cache, n: usize, phase: &Phase) {
    let id = format!("k{n}");
    let key = engine
        .keys()
        .product(&ProductId::parse(&id).unwrap_or_else(|e| panic!("{e}")));
    let expected = Doc {
        id: id.clone(),
        version: 1,
    };
    let answer = expected.clone();
    let started = Instant::now();
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
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// Phases of one case, in order, with their names.
pub struct CaseResult {
    /// `(phase name, what readers saw)`.
    pub phases: Vec<(&'static str, Phase)>,
    /// Circuit-breaker openings over all environments.
    pub breaker_opens: u64,
    /// Connections the proxy accepted before and after the fault (0 without a proxy).
    pub connections: (u64, u64),
}

impl CaseResult {
    /// The phase called `name`.
    pub fn phase(&self, name: &str) -> &Phase {
        self.phases
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no phase {name}"))
    }
}

/// Redis black-holed (no RST: clients hit their timeouts) for 2 s under load, then restored.
pub async fn black_hole_and_restore() -> CaseResult {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = TcpFaults::start(&server.node()).await;
    let envs = Environments::connect(RedisConfig::standalone(proxy.node())).await;
    let before = envs.load(Duration::from_secs(1)).await;
    proxy.set(Mode::BlackHole);
    let during = envs.load(Duration::from_secs(2)).await;
    proxy.set(Mode::Pass);
    // Long enough for the breaker's background probe to close the circuit.
    let after = envs.load(Duration::from_secs(2)).await;
    CaseResult {
        phases: vec![("before", before), ("during", during), ("after", after)],
        breaker_opens: envs.breaker_opens(),
        connections: (0, proxy.connections()),
    }
}

/// Every connection reset five times during 3 s of load.
pub async fn connections_reset() -> CaseResult {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = Arc::new(TcpFaults::start(&server.node()).await);
    let envs = Environments::connect(RedisConfig::standalone(proxy.node())).await;
    let before = proxy.connections();
    let resetter = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                proxy.reset_all();
            }
        })
    };
    let during = envs.load(Duration::from_secs(3)).await;
    if let Err(e) = resetter.await {
        panic!("the resetter died: {e}");
    }
    CaseResult {
        phases: vec![("during", during)],
        breaker_opens: envs.breaker_opens(),
        connections: (before, proxy.connections()),
    }
}

/// A middlebox forgets every open connection without a reset: requests on them only time out.
pub async fn connections_dropped_silently() -> CaseResult {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let proxy = TcpFaults::start(&server.node()).await;
    let envs = Environments::connect(RedisConfig::standalone(proxy.node())).await;
    let before = envs.load(Duration::from_secs(1)).await;
    let connections = proxy.connections();
    proxy.drop_open_connections();
    let after = envs.load(Duration::from_secs(3)).await;
    CaseResult {
        phases: vec![("before", before), ("after", after)],
        breaker_opens: envs.breaker_opens(),
        connections: (connections, proxy.connections()),
    }
}

/// One master of a private 3-master cluster (no replicas) killed for 2 s under load, then
/// started again: its slots stop answering, the other two keep serving.
pub async fn cluster_master_down() -> CaseResult {
    let mut cluster = RedisCluster::start();
    let envs = Environments::connect(RedisConfig {
        nodes: cluster.nodes(),
        mode: catalog_core::config::RedisMode::Cluster,
        ..RedisConfig::standalone(cluster.nodes()[0].clone())
    })
    .await;
    let before = envs.load(Duration::from_secs(1)).await;
    cluster.stop(1);
    let during = envs.load(Duration::from_secs(2)).await;
    cluster.restart(1);
    let after = envs.load(Duration::from_secs(2)).await;
    CaseResult {
        phases: vec![("before", before), ("during", during), ("after", after)],
        breaker_opens: envs.breaker_opens(),
        connections: (0, 0),
    }
}

/// What clients of the API saw while its database failed.
#[derive(Debug, Default)]
pub struct HttpOutcome {
    /// 200 with the requested product, fresh.
    pub ok_fresh: u64,
    /// 200 with the requested product, from a stale copy (`X-Cache: STALE`).
    pub ok_stale: u64,
    /// 503 `unavailable` with a `Retry-After` header.
    pub unavailable_with_retry_after: u64,
    /// Anything else: another status, a 503 without `Retry-After`, or a wrong product.
    pub wrong: Vec<String>,
    micros: Vec<u64>,
}

impl HttpOutcome {
    /// Requests answered.
    pub fn requests(&self) -> u64 {
        self.micros.len() as u64
    }

    /// The 99th percentile latency.
    pub fn p99_ms(&self) -> f64 {
        p99_ms(&self.micros)
    }

    /// One line with the outcome's figures.
    pub fn summary(&self, case: &str) -> String {
        format!(
            "{case}: {} fresh, {} stale, {} 503 with Retry-After, {} wrong, p99 {:.1} ms",
            self.ok_fresh,
            self.ok_stale,
            self.unavailable_with_retry_after,
            self.wrong.len(),
            self.p99_ms()
        )
    }

    fn merge(&mut self, other: HttpOutcome) {
        self.ok_fresh += other.ok_fresh;
        self.ok_stale += other.ok_stale;
        self.unavailable_with_retry_after += other.unavailable_with_retry_after;
        self.wrong.extend(other.wrong);
        self.micros.extend(other.micros);
    }
}

/// `readers` clients GET `{base}/products/{id}` for the `ids` in turn for `duration`, and
/// classify each answer.
pub async fn http_product_reads(
    base: &str,
    ids: &[String],
    readers: usize,
    duration: Duration,
) -> HttpOutcome {
    let until = Instant::now() + duration;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(readers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"));
    let ids: Arc<[String]> = ids.into();
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (client, base, ids) = (client.clone(), base.to_owned(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcome = HttpOutcome::default();
            let mut n = r * 5;
            while Instant::now() < until {
                n = (n + 7) % ids.len();
                let id = &ids[n];
                let started = Instant::now();
                let (status, headers, body) =
                    match client.get(format!("{base}/products/{id}")).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let headers = response.headers().clone();
                            let body: serde_json::Value = response.json().await.unwrap_or_default();
                            (status, headers, body)
                        }
                        Err(e) => {
                            outcome.wrong.push(format!("{id}: {e}"));
                            continue;
                        }
                    };
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
    let mut total = HttpOutcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => total.merge(outcome),
            Err(e) => panic!("a reader died: {e}"),
        }
    }
    total
}
