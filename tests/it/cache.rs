//! The cache engine against real Redis: standalone and a 3-master cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use catalog_core::cache::key::hash_slot;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Cacheable, PutOutcome, Source};
use catalog_core::clock::{Clock, ManualClock, SystemClock};
use catalog_core::config::RedisConfig;
use catalog_core::model::ProductId;
use integration_tests::{RedisServer, cluster_config, connect, unique_name};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Doc {
    body: String,
    version: u64,
}

impl Cacheable for Doc {
    fn cache_version(&self) -> u64 {
        self.version
    }

    fn heap_bytes(&self) -> usize {
        self.body.capacity()
    }
}

fn doc(body: &str, version: u64) -> Doc {
    Doc {
        body: body.into(),
        version,
    }
}

fn id(raw: &str) -> ProductId {
    ProductId::parse(raw).unwrap()
}

/// Engines sharing one Redis under a fresh prefix, each standing in for a Lambda environment.
struct Env {
    l2: Arc<RedisL2>,
    prefix: String,
    clock: Arc<dyn Clock>,
}

impl Env {
    async fn new(config: RedisConfig) -> Env {
        Env::with_clock(config, Arc::new(SystemClock)).await
    }

    async fn with_clock(config: RedisConfig, clock: Arc<dyn Clock>) -> Env {
        Env {
            l2: Arc::new(RedisL2::new(connect(&config).await)),
            prefix: format!("{}:", unique_name("it")),
            clock,
        }
    }

    fn engine(&self) -> Cache {
        let options = CacheOptions {
            key_prefix: self.prefix.clone(),
            jitter: 0.0,
            // Generous for a busy CI machine; the timeout itself is tested elsewhere.
            command_timeout: Duration::from_millis(500),
            ..CacheOptions::default()
        };
        Cache::new(
            options,
            Some(self.l2.clone() as Arc<dyn L2Store>),
            self.clock.clone(),
        )
    }

    async fn raw(&self) -> catalog_core::redis_conn::RedisConnection {
        self.l2.connection().unwrap()
    }
}

fn counting_loader(
    loads: &Arc<AtomicUsize>,
    value: Doc,
) -> impl FnOnce() -> futures::future::BoxFuture<'static, catalog_core::Result<Option<Doc>>>
+ Send
+ 'static {
    let loads = loads.clone();
    move || {
        Box::pin(async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Some(value))
        })
    }
}

async fn second_environment_reads_what_the_first_loaded(config: RedisConfig) {
    let env = Env::new(config).await;
    let (a, b) = (env.engine(), env.engine());
    let key = a.keys().product(&id("p1"));
    let loads = Arc::new(AtomicUsize::new(0));

    let first = a
        .get_or_load(&key, counting_loader(&loads, doc("hello", 1)))
        .await
        .unwrap();
    let second = b
        .get_or_load(&key, counting_loader(&loads, doc("other", 1)))
        .await
        .unwrap();

    assert_eq!((first.source, second.source), (Source::Loaded, Source::L2));
    assert_eq!(second.value.unwrap().body, "hello");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// A product's detail and stats, read together by an environment that holds neither: one
/// Redis round trip, on a cluster too (the keys share the product's hash tag).
async fn a_product_and_its_stats_are_one_round_trip(config: RedisConfig) {
    let env = Env::new(config).await;
    let (a, b) = (env.engine(), env.engine());
    let (detail, stats) = (a.keys().product(&id("p1")), a.keys().stats(&id("p1")));
    let loads = Arc::new(AtomicUsize::new(0));
    let (first, _) = a
        .get_or_load_both(
            (&detail, counting_loader(&loads, doc("detail", 1))),
            (&stats, counting_loader(&loads, doc("stats", 1))),
        )
        .await;
    assert_eq!(first.unwrap().source, Source::Loaded);
    let before = b.round_trips();
    let (detail_hit, stats_hit) = b
        .get_or_load_both(
            (&detail, counting_loader(&loads, doc("other", 1))),
            (&stats, counting_loader(&loads, doc("other", 1))),
        )
        .await;
    assert_eq!(b.round_trips() - before, 1, "one MGET");
    assert_eq!(
        hash_slot(detail.as_str().as_bytes()),
        hash_slot(stats.as_str().as_bytes()),
        "one slot: one MGET on a cluster, whatever the slot map"
    );
    let (detail_hit, stats_hit) = (detail_hit.unwrap(), stats_hit.unwrap());
    assert_eq!(
        (detail_hit.source, stats_hit.source),
        (Source::L2, Source::L2)
    );
    assert_eq!(detail_hit.value.unwrap().body, "detail");
    assert_eq!(stats_hit.value.unwrap().body, "stats");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

async fn a_herd_across_eight_environments_loads_once(config: RedisConfig) {
    let env = Env::new(config).await;
    let engines: Vec<Cache> = (0..8).map(|_| env.engine()).collect();
    let key = engines[0].keys().product(&id("hot"));
    let loads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for engine in &engines {
        for _ in 0..16 {
            let (engine, key) = (engine.clone(), key.clone());
            let loader = counting_loader(&loads, doc("hot", 1));
            readers.push(tokio::spawn(async move {
                engine.get_or_load(&key, loader).await
            }));
        }
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap().value.unwrap().body, "hot");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

async fn a_batch_of_100_reads_in_one_request_per_node(config: RedisConfig) {
    let cluster = config.mode == catalog_core::config::RedisMode::Cluster;
    let env = Env::new(config).await;
    let (writer, reader) = (env.engine(), env.engine());
    let ids: Vec<ProductId> = (0..100).map(|i| id(&format!("p{i}"))).collect();
    let items: Vec<_> = ids
        .iter()
        .map(|i| (writer.keys().product(i), doc(i.as_str(), 1)))
        .collect();
    assert!(
        writer
            .put_many(items, writer.now())
            .await
            .iter()
            .all(|o| *o == PutOutcome::Written)
    );

    let entries: Vec<_> = ids
        .iter()
        .map(|i| (reader.keys().product(i), i.clone()))
        .collect();
    let before = reader.round_trips();
    let batch = reader
        .get_many(entries.clone(), |_: Vec<ProductId>| async {
            panic!("everything is cached");
            #[allow(unreachable_code)]
            Ok(HashMap::<ProductId, Doc>::new())
        })
        .await
        .unwrap();
    let trips = reader.round_trips() - before;

    assert!(batch.items.iter().all(|l| l.source == Source::L2));
    assert_eq!(batch.items[42].value.as_ref().unwrap().body, "p42");
    if cluster {
        let slots: std::collections::BTreeSet<u16> = entries
            .iter()
            .map(|(k, _)| hash_slot(k.as_str().as_bytes()))
            .collect();
        assert!(slots.len() > 3, "the ids spread over many slots");
        assert!(
            trips <= 3,
            "one pipelined request per node of the 3 masters, not one per slot ({trips})"
        );
        // Writes the same way: a batch over many slots is one pipeline per node.
        let before = writer.round_trips();
        let items: Vec<_> = ids
            .iter()
            .map(|i| (writer.keys().product(i), doc(i.as_str(), 2)))
            .collect();
        assert!(
            writer
                .put_many(items, writer.now())
                .await
                .iter()
                .all(|o| *o == PutOutcome::Written)
        );
        // ...plus one script appending the keys to the L1 change log (one key, one node).
        let trips = writer.round_trips() - before;
        assert!(trips <= 4, "{trips} round trips");
    } else {
        assert_eq!(trips, 1, "one MGET");
    }
}

async fn concurrent_writers_leave_the_newest_version(config: RedisConfig) {
    let env = Env::new(config).await;
    let key = env.engine().keys().product(&id("contended"));
    let writers: Vec<_> = (1..=40u64)
        .rev()
        .map(|v| {
            let (engine, key) = (env.engine(), key.clone());
            tokio::spawn(async move {
                let now = engine.now();
                engine.put(&key, doc(&format!("v{v}"), v), now).await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let seen = env
        .engine()
        .get_or_load(&key, || async { Ok(None::<Doc>) })
        .await
        .unwrap();
    assert_eq!(seen.version, 40);
    let engine = env.engine();
    assert_eq!(
        engine.put(&key, doc("old", 39), engine.now()).await,
        PutOutcome::Refused
    );
}

async fn foreign_or_corrupt_values_are_counted_misses_and_replaced(config: RedisConfig) {
    let env = Env::new(config).await;
    let engine = env.engine();
    let list_key = engine.keys().product(&id("is-a-list"));
    let junk_key = engine.keys().product(&id("is-junk"));
    let mut raw = env.raw().await;
    let _: () = raw.lpush(list_key.as_str(), "x").await.unwrap();
    let _: () = raw.set(junk_key.as_str(), "not an envelope").await.unwrap();

    for key in [&list_key, &junk_key] {
        let lookup = engine
            .get_or_load(key, || async { Ok(Some(doc("fixed", 1))) })
            .await
            .unwrap();
        assert_eq!(lookup.source, Source::Loaded);
    }
    let m = engine.snapshot();
    assert_eq!((m.decode_errors, m.l2_errors), (2, 0));
    let again = env
        .engine()
        .get_or_load(&list_key, || async { Ok(None::<Doc>) })
        .await
        .unwrap();
    assert_eq!(again.source, Source::L2);
}

async fn stale_entries_go_through_the_durable_queue(config: RedisConfig) {
    let clock = ManualClock::at(SystemClock.now_ms());
    let env = Env::with_clock(config, clock.clone()).await;
    let engine = env.engine();
    let key = engine.keys().stats(&id("p1"));
    engine.put(&key, doc("old", 0), engine.now()).await;
    clock.advance(Duration::from_secs(901)); // stats are fresh for 900 s

    let stale = env
        .engine()
        .get_or_load(&key, || async { Ok(Some(doc("new", 0))) })
        .await
        .unwrap();
    assert_eq!(stale.source, Source::Stale);
    assert!(
        engine.pending_revalidations(10).await.is_empty(),
        "queued by the revalidation, after the response"
    );
    // Two more stale reads whose revalidations fail to load: the key is queued once, and
    // stays queued.
    for _ in 0..2 {
        let failing = env
            .engine()
            .get_or_load(&key, || async {
                Err::<Option<Doc>, _>(catalog_core::Error::NotConnected)
            })
            .await
            .unwrap();
        failing.revalidation.unwrap().run().await;
    }
    assert_eq!(engine.pending_revalidations(10).await, [key.to_string()]);
    assert_eq!(engine.revalidation_backlog().await, Some(1));

    stale.revalidation.unwrap().run().await;
    assert_eq!(engine.revalidation_backlog().await, Some(0));
    let fresh = env
        .engine()
        .get_or_load(&key, || async { Ok(None::<Doc>) })
        .await
        .unwrap();
    assert_eq!(
        (fresh.source, fresh.value.unwrap().body.as_str()),
        (Source::L2, "new")
    );
}

async fn a_lock_is_only_released_by_its_holder(config: RedisConfig) {
    let env = Env::new(config).await;
    let lock = format!("{}lock:x", env.prefix);
    assert!(
        env.l2
            .try_lock(&lock, "mine", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !env.l2
            .try_lock(&lock, "yours", Duration::from_secs(5))
            .await
            .unwrap()
    );
    env.l2.unlock(&lock, "yours").await.unwrap();
    assert!(
        !env.l2
            .try_lock(&lock, "yours", Duration::from_secs(5))
            .await
            .unwrap()
    );
    env.l2.unlock(&lock, "mine").await.unwrap();
    assert!(
        env.l2
            .try_lock(&lock, "yours", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

async fn generations_invalidate_a_namespace(config: RedisConfig) {
    let env = Env::new(config).await;
    let (a, b) = (env.engine(), env.engine());
    assert_eq!(a.generation("feed").await, 0);
    assert_eq!(a.bump_generation("feed").await, Some(1));
    assert_eq!(b.generation("feed").await, 1);
}

async fn an_invalidation_refuses_values_read_before_it(config: RedisConfig) {
    let clock = ManualClock::at(SystemClock.now_ms());
    let env = Env::with_clock(config, clock.clone()).await;
    let (loader, writer) = (env.engine(), env.engine());
    let key = loader.keys().product(&id("p1"));
    loader.put(&key, doc("v1", 1), clock.now_ms()).await;
    let read_at = clock.now_ms(); // a load reads v1 from the database...
    clock.advance(Duration::from_secs(1));
    assert!(writer.invalidate(std::slice::from_ref(&key)).await); // ...v2 is written meanwhile

    // The guard (Lua, atomic in Redis) refuses the value read before the invalidation, even
    // though its version is not older than anything cached now.
    assert_eq!(
        loader.put(&key, doc("v1", 1), read_at).await,
        PutOutcome::Refused
    );
    let seen = env
        .engine()
        .get_or_load(&key, || async { Ok(Some(doc("v2", 2))) })
        .await
        .unwrap();
    assert_eq!(
        (seen.source, seen.value.unwrap().body.as_str()),
        (Source::Loaded, "v2")
    );
    // A value read after the invalidation (and its skew margin) is cached normally.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        loader.put(&key, doc("v3", 3), clock.now_ms()).await,
        PutOutcome::Written
    );
}

/// After a failover or a `SCRIPT FLUSH` the guard script is gone from the server: the next
/// guarded write loads it again and the guard still holds (a tombstone refuses an older read,
/// admits a newer one). On private servers: flushing the shared ones' scripts would race the
/// other tests' writes.
#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_and_the_guard_still_holds() {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let config = RedisConfig {
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(server.node())
    };
    guard_survives_script_flushes(config, vec![server.node()]).await;
}

/// The same on a 3-master cluster: every master's script cache is flushed, and a batch over
/// several slots (so several masters) reloads the script where it is missing.
#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_on_every_cluster_master() {
    let cluster = integration_tests::RedisCluster::start();
    let config = RedisConfig {
        nodes: cluster.nodes(),
        mode: catalog_core::config::RedisMode::Cluster,
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(cluster.nodes()[0].clone())
    };
    guard_survives_script_flushes(config, cluster.nodes()).await;
}

/// Guarded writes, each after `SCRIPT FLUSH` on every one of `masters`.
async fn guard_survives_script_flushes(config: RedisConfig, masters: Vec<String>) {
    let clock = ManualClock::at(SystemClock.now_ms());
    let env = Env::with_clock(config, clock.clone()).await;
    let engine = env.engine();
    let key = engine.keys().product(&id("p1"));
    engine.put(&key, doc("v1", 1), clock.now_ms()).await;
    let read_before = clock.now_ms();
    clock.advance(Duration::from_secs(1));
    assert!(engine.invalidate(std::slice::from_ref(&key)).await);
    clock.advance(Duration::from_secs(1));

    let flush = || async {
        for master in &masters {
            let mut raw =
                integration_tests::connect(&RedisConfig::standalone(master.clone())).await;
            let () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut raw)
                .await
                .unwrap();
        }
    };
    flush().await;
    assert_eq!(
        engine.put(&key, doc("v1", 1), read_before).await,
        PutOutcome::Refused,
        "the tombstone refuses a value read before it"
    );
    flush().await;
    assert_eq!(
        engine.put(&key, doc("v2", 2), clock.now_ms()).await,
        PutOutcome::Written
    );
    flush().await;
    // A batch over several slots, every key tombstoned.
    let keys: Vec<_> = (0..20)
        .map(|n| engine.keys().product(&id(&format!("b{n}"))))
        .collect();
    assert!(engine.invalidate(&keys).await);
    clock.advance(Duration::from_secs(1));
    flush().await;
    let outcomes = engine
        .put_many(
            keys.iter().map(|k| (k.clone(), doc("new", 1))).collect(),
            clock.now_ms(),
        )
        .await;
    assert!(
        outcomes.iter().all(|o| *o == PutOutcome::Written),
        "{outcomes:?}"
    );
}

/// Eight environments hold a product in L1 while one of them writes new versions. A read that
/// began more than the coherence bound after a write returned never serves an older version,
/// and each environment kept serving from L1 in between. Not a timing assertion: whatever the
/// scheduling, an entry no poll vouched for within the bound is read from Redis again.
async fn a_write_leaves_every_environments_l1_within_the_bound(config: RedisConfig) {
    let env = Env::new(config).await;
    let engines: Vec<Cache> = (0..8).map(|_| env.engine()).collect();
    let key = engines[0].keys().product(&id("p1"));
    let writer = engines[0].clone();
    writer.put(&key, doc("v1", 1), writer.now()).await;
    let bound = writer.options().l1_coherence;
    // Each write's version and when its `put` (publish included) returned.
    let writes = Arc::new(std::sync::Mutex::new(vec![(1, std::time::Instant::now())]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for engine in &engines[1..] {
        let engine = engine.clone();
        let (key, writes, stop) = (key.clone(), writes.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let loads = Arc::new(AtomicUsize::new(0));
            let mut l1_hits = 0;
            while !stop.load(Ordering::Acquire) {
                let began = std::time::Instant::now();
                let lookup = engine
                    .get_or_load(&key, counting_loader(&loads, doc("loaded", 0)))
                    .await
                    .unwrap();
                let due = writes
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, done)| began.duration_since(*done) > bound)
                    .map(|(version, _)| *version)
                    .max()
                    .unwrap_or(0);
                assert!(
                    lookup.version >= due,
                    "served version {} from {:?} after version {due} was written over {bound:?} earlier",
                    lookup.version,
                    lookup.source
                );
                l1_hits += usize::from(lookup.source == Source::L1);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(loads.load(Ordering::SeqCst), 0, "never loaded: Redis held it");
            l1_hits
        }));
    }
    for version in 2..=6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        writer
            .put(&key, doc(&format!("v{version}"), version), writer.now())
            .await;
        writes
            .lock()
            .unwrap()
            .push((version, std::time::Instant::now()));
    }
    tokio::time::sleep(bound + Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for reader in readers {
        assert!(
            reader.await.unwrap() > 100,
            "L1 kept serving between writes"
        );
    }
    assert!(engines[1].snapshot().l1_remote_drops >= 1);
}

/// The change log's script on real Redis: sequences grow, the log keeps its latest `keep`
/// keys with the floor scoring the last one forgotten, and a reader behind a trimmed, lost or
/// rewound log is told so.
async fn the_change_log_trims_behind_a_floor_and_reports_loss(config: RedisConfig) {
    let env = Env::new(config).await;
    let log = format!("{}l1:changes", env.prefix);
    let l2 = env.l2.clone();
    assert_eq!(l2.change_log_head(&log).await.unwrap(), 0);
    assert_eq!(
        l2.read_changes(&log, 0, 100).await.unwrap(),
        None,
        "no log yet"
    );

    l2.publish_changes(&log, &["a", "b"], 3).await.unwrap();
    let head = l2.change_log_head(&log).await.unwrap();
    let start = head - 2;
    let all = l2.read_changes(&log, 0, 100).await.unwrap().unwrap();
    assert_eq!(
        all,
        [
            ("~floor".to_owned(), start),
            ("a".to_owned(), start + 1),
            ("b".to_owned(), start + 2)
        ]
    );
    // A new log starts from the server's clock in microseconds: past any position a reader
    // of an older log can hold.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!((micros - start).abs() < 60_000_000, "{start} vs {micros}");

    // Two more: four keys for a log keeping three; `a` goes and the floor takes its place.
    l2.publish_changes(&log, &["c", "d"], 3).await.unwrap();
    let behind = l2.read_changes(&log, start, 100).await.unwrap().unwrap();
    assert_eq!(behind[0], ("~floor".to_owned(), start + 1), "{behind:?}");
    assert_eq!(behind.len(), 4, "{behind:?}");
    let caught_up = l2
        .read_changes(&log, start + 1, 100)
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<&str> = caught_up.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "c", "d"]);
    assert_eq!(
        l2.read_changes(&log, start + 4, 100).await.unwrap(),
        Some(vec![])
    );

    // A reader ahead of the log's head: the log was lost and begun again behind it.
    assert_eq!(l2.read_changes(&log, start + 5, 100).await.unwrap(), None);
    let _: () = env.raw().await.del(&log).await.unwrap();
    assert_eq!(l2.read_changes(&log, start + 4, 100).await.unwrap(), None);
}

/// Eight environments evaluating health at once: each change of an alert (raised, escalated,
/// cleared) is in the shared history once, whichever environment made it, and the history
/// key expires with its window.
async fn alert_changes_are_recorded_once_however_many_environments_evaluate(config: RedisConfig) {
    use catalog_core::health::book::BookUpdates;
    use catalog_core::health::{Alert, HealthReport, Status};
    let clock = ManualClock::at(SystemClock.now_ms());
    let env = Env::with_clock(config, clock.clone()).await;
    let engines: Vec<Cache> = (0..8).map(|_| env.engine()).collect();
    let keep = Duration::from_secs(600);
    for severity in [Some(Status::Warning), Some(Status::Critical), None] {
        clock.advance(Duration::from_secs(1));
        let now = clock.now_ms();
        let report = HealthReport {
            status: severity.unwrap_or(Status::Healthy),
            alerts: severity
                .map(|severity| Alert {
                    figure: "hit_ratio",
                    severity,
                    message: "hit ratio low".into(),
                    since: now,
                })
                .into_iter()
                .collect(),
            figures: Vec::new(),
        };
        futures::future::join_all(engines.iter().map(|engine| {
            let report = report.clone();
            async move {
                let updates = BookUpdates::for_alerts(&report.alerts, &["hit_ratio"], now);
                let outcome = engine.update_alert_book(&updates).await;
                assert!(outcome.shared.is_some(), "Redis answered");
                let events = outcome.events(&updates, &report, now, engine.environment());
                engine.alert_history(events, keep).await;
            }
        }))
        .await;
    }
    let history = engines[0].alert_history(Vec::new(), keep).await;
    let changes: Vec<&str> = history.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(changes, ["cleared", "escalated", "raised"], "{history:?}");
    let ttl: i64 = env
        .raw()
        .await
        .pttl(format!("{}health:alert-history", env.prefix))
        .await
        .unwrap();
    assert!((1..=600_000).contains(&ttl), "{ttl}");
}

macro_rules! on_both_topologies {
    ($($test:ident),* $(,)?) => {
        mod standalone {
            $(#[tokio::test] async fn $test() { super::$test(integration_tests::standalone_config()).await; })*
        }
        mod cluster {
            $(#[tokio::test] async fn $test() { super::$test(integration_tests::cluster_config()).await; })*
        }
    };
}

on_both_topologies!(
    second_environment_reads_what_the_first_loaded,
    a_herd_across_eight_environments_loads_once,
    a_batch_of_100_reads_in_one_request_per_node,
    concurrent_writers_leave_the_newest_version,
    foreign_or_corrupt_values_are_counted_misses_and_replaced,
    stale_entries_go_through_the_durable_queue,
    a_lock_is_only_released_by_its_holder,
    generations_invalidate_a_namespace,
    an_invalidation_refuses_values_read_before_it,
    a_product_and_its_stats_are_one_round_trip,
    a_write_leaves_every_environments_l1_within_the_bound,
    the_change_log_trims_behind_a_floor_and_reports_loss,
    alert_changes_are_recorded_once_however_many_environments_evaluate,
);

#[tokio::test]
async fn our_hash_slots_match_cluster_keyslot() {
    let mut conn = connect(&cluster_config()).await;
    for key in [
        "cc:v1:product:p1",
        "cc:v1:product:{p1}",
        "foo",
        "{user}:x",
        "a{b}c",
        "{}z",
        "cc:v1:feed:trending:g3:p1:n20",
    ] {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(hash_slot(key.as_bytes()), slot, "{key}");
    }
}

#[tokio::test]
async fn a_cold_start_with_redis_down_serves_from_the_loader_and_uses_redis_once_it_appears() {
    let port = RedisServer::free_port();
    let config = RedisConfig {
        connect_timeout: Duration::from_millis(200),
        ..RedisConfig::standalone(format!("127.0.0.1:{port}"))
    };
    let started = std::time::Instant::now();
    let l2 = RedisL2::connect(config, Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "init waits only the bound"
    );
    let options = CacheOptions {
        key_prefix: "cold:".into(),
        ..CacheOptions::default()
    };
    let engine = Cache::new(
        options,
        Some(l2.clone() as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let key = engine.keys().product(&id("p1"));

    let down = engine
        .get_or_load(&key, || async { Ok(Some(doc("db", 1))) })
        .await
        .unwrap();
    assert_eq!(down.source, Source::Bypass);

    let _server = RedisServer::start(port, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while l2.connection().is_none() {
        assert!(std::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the breaker's cool-down the engine uses Redis again.
    tokio::time::sleep(engine.options().breaker_cooldown).await;
    let up = engine
        .get_or_load(&engine.keys().product(&id("p2")), || async {
            Ok(Some(doc("db", 1)))
        })
        .await
        .unwrap();
    assert_eq!(up.source, Source::Loaded);
}

#[tokio::test]
async fn a_redis_outage_mid_run_never_fails_a_read() {
    let mut server = RedisServer::start(RedisServer::free_port(), &[]);
    let config = RedisConfig {
        command_timeout: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(100),
        ..standalone_config_for(&server)
    };
    let l2 = RedisL2::connect(config, Duration::from_secs(2)).await;
    let engine = Cache::new(
        CacheOptions {
            key_prefix: "outage:".into(),
            ..CacheOptions::default()
        },
        Some(l2 as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let read = |i: usize| {
        let engine = engine.clone();
        async move {
            let key = engine.keys().product(&id(&format!("p{i}")));
            engine
                .get_or_load(&key, || async { Ok(Some(doc("db", 1))) })
                .await
        }
    };
    for i in 0..20 {
        read(i).await.unwrap();
    }
    server.stop();
    // Keys never read before, so L1 cannot hide the outage.
    for i in 1000..1050 {
        let lookup = read(i).await.unwrap();
        assert!(lookup.value.is_some());
    }
    assert!(engine.snapshot().l2_errors > 0);
    assert!(engine.snapshot().breaker_opens >= 1);
    server.restart(&[]);
    tokio::time::sleep(engine.options().breaker_cooldown + Duration::from_millis(200)).await;
    for i in 100..120 {
        read(i).await.unwrap();
    }
    assert!(matches!(
        engine.breaker_state(),
        catalog_core::cache::breaker::BreakerState::Closed
    ));
}

fn standalone_config_for(server: &RedisServer) -> RedisConfig {
    RedisConfig::standalone(server.node())
}
