//! Engine behaviour over the in-memory L2 with a manual clock: every path without a network.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::key::{CacheKey, Category};
use super::l2::L2Store;
use super::l2::memory::MemoryL2;
use super::*;
use crate::clock::ManualClock;
use crate::error::Error;
use crate::model::ProductId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    name: String,
    version: u64,
}

impl Cacheable for Item {
    fn cache_version(&self) -> u64 {
        self.version
    }

    fn heap_bytes(&self) -> usize {
        self.name.capacity()
    }
}

fn item(name: &str, version: u64) -> Item {
    Item {
        name: name.into(),
        version,
    }
}

const T0: i64 = 1_800_000_000_000;

struct Fixture {
    clock: Arc<ManualClock>,
    l2: Arc<MemoryL2>,
    loads: Arc<AtomicUsize>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            clock: ManualClock::at(T0),
            l2: Arc::new(MemoryL2::new()),
            loads: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// An engine standing in for one Lambda environment: its own L1, the shared L2 and clock.
    fn engine(&self) -> Cache {
        self.engine_with(|_| {})
    }

    fn engine_with(&self, tweak: impl FnOnce(&mut CacheOptions)) -> Cache {
        let mut options = CacheOptions {
            jitter: 0.0,
            ..CacheOptions::default()
        };
        tweak(&mut options);
        Cache::new(
            options,
            Some(self.l2.clone() as Arc<dyn L2Store>),
            self.clock.clone(),
        )
    }

    /// A loader that counts its calls and returns `value` after `delay`.
    fn loader(
        &self,
        value: Option<Item>,
        delay: Duration,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, crate::Result<Option<Item>>> + Send + 'static
    {
        let loads = self.loads.clone();
        move || {
            Box::pin(async move {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(value)
            })
        }
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

fn key(cache: &Cache, id: &str) -> CacheKey {
    cache.keys().product(&ProductId::parse(id).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_miss_loads_once_then_l1_answers() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "p1");

    let first = cache
        .get_or_load(&k, f.loader(Some(item("kettle", 3)), Duration::ZERO))
        .await
        .unwrap();
    let second = cache
        .get_or_load(&k, f.loader(Some(item("other", 9)), Duration::ZERO))
        .await
        .unwrap();

    assert_eq!(first.source, Source::Loaded);
    assert_eq!(first.version, 3);
    assert_eq!(second.source, Source::L1);
    assert_eq!(second.value.unwrap().name, "kettle");
    assert_eq!(f.loads(), 1);
    let m = cache.snapshot();
    assert_eq!((m.misses, m.loads, m.l1_hits), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn another_environment_is_answered_by_l2_with_its_age() {
    let f = Fixture::new();
    let (a, b) = (f.engine(), f.engine());
    let k = key(&a, "p1");
    a.get_or_load(&k, f.loader(Some(item("kettle", 1)), Duration::ZERO))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(7));

    let hit = b
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();

    assert_eq!(hit.source, Source::L2);
    assert_eq!(hit.age_ms, 7_000);
    assert_eq!(f.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_served_at_once_and_revalidated_later() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "p1");
    cache
        .get_or_load(&k, f.loader(Some(item("old", 1)), Duration::ZERO))
        .await
        .unwrap();
    // Past the product's fresh TTL (300 s) but inside its stale window (3600 s).
    f.clock.advance(Duration::from_secs(301));

    let stale = cache
        .get_or_load(&k, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();

    assert_eq!(stale.source, Source::Stale);
    assert_eq!(stale.value.as_ref().unwrap().name, "old");
    assert_eq!(f.loads(), 1, "the reader did not wait for a load");
    assert!(
        cache.pending_revalidations(10).await.is_empty(),
        "queued by the revalidation, after the response"
    );

    stale.revalidation.unwrap().run().await;

    assert_eq!(f.loads(), 2);
    assert!(cache.pending_revalidations(10).await.is_empty());
    let fresh = cache
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(fresh.value.unwrap().name, "new");
    assert_eq!(fresh.source, Source::L1);
    let m = cache.snapshot();
    assert_eq!(
        (m.stale_serves, m.revalidations, m.revalidations_enqueued),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_revalidation_keeps_the_key_queued_and_the_stale_copy_served() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "p1");
    cache
        .get_or_load(&k, f.loader(Some(item("old", 1)), Duration::ZERO))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(301));

    let failing = || async {
        Err::<Option<Item>, _>(Error::Timeout {
            op: "Query",
            after: Duration::from_secs(1),
        })
    };
    let stale = cache.get_or_load(&k, failing).await.unwrap();
    stale.revalidation.unwrap().run().await;

    assert_eq!(cache.pending_revalidations(10).await, [k.to_string()]);
    let again = cache.get_or_load(&k, failing).await.unwrap();
    assert_eq!(again.source, Source::Stale);
    assert_eq!(cache.snapshot().load_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn not_found_is_cached_for_the_negative_ttl() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "ghost");

    let first = cache
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    let second = cache
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert!(first.value.is_none() && second.value.is_none());
    assert_eq!(f.loads(), 1);
    assert_eq!(cache.snapshot().negative_hits, 1);

    // The negative TTL is 30 s; after it the loader runs again.
    f.clock.advance(Duration::from_secs(31));
    cache
        .get_or_load(&k, f.loader(Some(item("born", 1)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(f.loads(), 2);
}

#[tokio::test(start_paused = true)]
async fn corrupt_or_wrong_type_values_are_counted_misses() {
    let f = Fixture::new();
    let cache = f.engine();
    let corrupt = key(&cache, "corrupt");
    let wrong = key(&cache, "wrong");
    f.l2.put_raw(corrupt.as_str(), b"CC\x01garbage".to_vec());
    f.l2.put_wrong_type(wrong.as_str());

    let a = cache
        .get_or_load(&corrupt, f.loader(Some(item("a", 1)), Duration::ZERO))
        .await
        .unwrap();
    let b = cache
        .get_or_load(&wrong, f.loader(Some(item("b", 1)), Duration::ZERO))
        .await
        .unwrap();

    assert_eq!((a.source, b.source), (Source::Loaded, Source::Loaded));
    assert_eq!(cache.snapshot().decode_errors, 2);
    assert_eq!(
        cache.snapshot().l2_errors,
        0,
        "bad data is not a Redis fault"
    );
    // The loads overwrote both keys with good envelopes.
    let other = f.engine();
    assert_eq!(
        other
            .get_or_load(&corrupt, f.loader(None, Duration::ZERO))
            .await
            .unwrap()
            .source,
        Source::L2
    );
    assert_eq!(
        other
            .get_or_load(&wrong, f.loader(None, Duration::ZERO))
            .await
            .unwrap()
            .source,
        Source::L2
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_in_one_process_share_one_load() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "hot");
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let (cache, k) = (cache.clone(), k.clone());
            let loader = f.loader(Some(item("hot", 1)), Duration::from_millis(20));
            tokio::spawn(async move { cache.get_or_load(&k, loader).await.unwrap().value.unwrap() })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap().name, "hot");
    }
    assert_eq!(f.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_across_processes_share_one_load_through_the_lock() {
    let f = Fixture::new();
    let engines: Vec<Cache> = (0..8).map(|_| f.engine()).collect();
    let k = key(&engines[0], "hot");
    let mut readers = Vec::new();
    for engine in &engines {
        for _ in 0..16 {
            let (cache, k) = (engine.clone(), k.clone());
            let loader = f.loader(Some(item("hot", 1)), Duration::from_millis(20));
            readers.push(tokio::spawn(async move {
                cache.get_or_load(&k, loader).await.unwrap()
            }));
        }
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap().value.unwrap().name, "hot");
    }
    assert_eq!(f.loads(), 1);
    let waits: u64 = engines.iter().map(|e| e.snapshot().lock_waits).sum();
    assert_eq!(waits, 7, "every other environment waited once");
}

#[tokio::test(start_paused = true)]
async fn without_single_flight_every_caller_loads() {
    let f = Fixture::new();
    let cache = f.engine_with(|o| o.single_flight = false);
    let k = key(&cache, "hot");
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, k) = (cache.clone(), k.clone());
            let loader = f.loader(Some(item("hot", 1)), Duration::from_millis(20));
            tokio::spawn(async move { cache.get_or_load(&k, loader).await.unwrap() })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(f.loads(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_lock_holder_delays_others_by_at_most_the_wait_bound() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "orphan");
    // A holder that took the lock and died.
    f.l2.try_lock(
        &cache.keys().lock(&k),
        "dead-holder",
        Duration::from_secs(2),
    )
    .await
    .unwrap();

    let started = tokio::time::Instant::now();
    let lookup = cache
        .get_or_load(&k, f.loader(Some(item("x", 1)), Duration::ZERO))
        .await
        .unwrap();

    assert!(lookup.value.is_some());
    assert!(started.elapsed() <= cache.options().lock_wait + Duration::from_millis(50));
    let m = cache.snapshot();
    assert_eq!((m.lock_waits, m.lock_wait_timeouts, m.loads), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn redis_faults_fall_back_to_the_loader_and_open_the_circuit() {
    let f = Fixture::new();
    let cache = f.engine();
    f.l2.set_failing(true);

    for i in 0..10 {
        let k = key(&cache, &format!("p{i}"));
        let lookup = cache
            .get_or_load(&k, f.loader(Some(item("x", 1)), Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(lookup.source, Source::Bypass);
    }
    let m = cache.snapshot();
    assert_eq!(m.breaker_opens, 1);
    assert!(matches!(
        cache.breaker_state(),
        breaker::BreakerState::Open { .. }
    ));
    let trips_while_open = f.l2.round_trips();
    cache
        .get_or_load(
            &key(&cache, "p99"),
            f.loader(Some(item("x", 1)), Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(
        f.l2.round_trips(),
        trips_while_open,
        "an open circuit does not call Redis"
    );

    // Redis recovers; after the cool-down one probe closes the circuit.
    f.l2.set_failing(false);
    f.clock.advance(cache.options().breaker_cooldown);
    let lookup = cache
        .get_or_load(
            &key(&cache, "p100"),
            f.loader(Some(item("x", 1)), Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(lookup.source, Source::Loaded);
    assert_eq!(cache.breaker_state(), breaker::BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_loader_error_reaches_the_caller_and_every_waiter() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "p1");
    let err = cache
        .get_or_load(&k, || async {
            Err::<Option<Item>, _>(Error::Timeout {
                op: "Query",
                after: Duration::from_secs(1),
            })
        })
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(cache.snapshot().load_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn an_older_version_never_replaces_a_newer_one() {
    let f = Fixture::new();
    let (writer, reader) = (f.engine(), f.engine());
    let k = key(&writer, "p1");
    assert_eq!(writer.put(&k, item("v5", 5), T0).await, PutOutcome::Written);
    assert_eq!(writer.put(&k, item("v4", 4), T0).await, PutOutcome::Refused);
    assert_eq!(
        writer.put(&k, item("v5 again", 5), T0).await,
        PutOutcome::Written
    );

    let seen = reader
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(seen.value.unwrap().name, "v5 again");
    assert_eq!(writer.snapshot().version_rejects, 1);
}

#[tokio::test(start_paused = true)]
async fn get_many_reads_tiers_in_bulk_and_loads_misses_in_one_call() {
    let f = Fixture::new();
    let (warm, cache) = (f.engine(), f.engine());
    let ids: Vec<ProductId> = (0..6)
        .map(|i| ProductId::parse(&format!("p{i}")).unwrap())
        .collect();
    // p0 in this engine's L1, p1 and p2 in L2 only, p3..p5 nowhere; p5 does not exist.
    cache
        .put(&cache.keys().product(&ids[0]), item("p0", 1), T0)
        .await;
    for id in &ids[1..3] {
        warm.put(&warm.keys().product(id), item(id.as_str(), 1), T0)
            .await;
    }
    let batch_calls = Arc::new(AtomicUsize::new(0));
    let calls = batch_calls.clone();
    let loader = move |wanted: Vec<ProductId>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(wanted
                .into_iter()
                .filter(|id| id.as_str() != "p5")
                .map(|id| (id.clone(), item(id.as_str(), 1)))
                .collect::<HashMap<_, _>>())
        }
    };
    let entries: Vec<_> = ids
        .iter()
        .map(|id| (cache.keys().product(id), id.clone()))
        .collect();
    let trips_before = f.l2.round_trips();

    let batch = cache
        .get_many(entries.clone(), loader.clone())
        .await
        .unwrap();

    let sources: Vec<Source> = batch.items.iter().map(|l| l.source).collect();
    assert_eq!(
        sources,
        [
            Source::L1,
            Source::L2,
            Source::L2,
            Source::Loaded,
            Source::Loaded,
            Source::Loaded
        ]
    );
    assert!(batch.items[5].value.is_none());
    assert_eq!(batch_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.l2.round_trips() - trips_before,
        2,
        "one MGET and one write-back pipeline"
    );

    // Everything, the missing product included, is now answered by L1.
    let again = cache.get_many(entries, loader).await.unwrap();
    assert!(again.items.iter().all(|l| l.source == Source::L1));
    assert_eq!(batch_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn stale_batch_entries_are_served_and_refreshed_by_the_revalidation() {
    let f = Fixture::new();
    let cache = f.engine();
    let id = ProductId::parse("p1").unwrap();
    let k = cache.keys().product(&id);
    cache.put(&k, item("old", 1), T0).await;
    f.clock.advance(Duration::from_secs(301));
    let loader = |wanted: Vec<ProductId>| async move {
        Ok(wanted
            .into_iter()
            .map(|id| (id, item("new", 2)))
            .collect::<HashMap<_, _>>())
    };

    let batch = cache
        .get_many(vec![(k.clone(), id.clone())], loader)
        .await
        .unwrap();
    assert_eq!(batch.items[0].source, Source::Stale);
    batch.revalidation.unwrap().run().await;

    let fresh = cache.get_many(vec![(k, id)], loader).await.unwrap();
    assert_eq!(fresh.items[0].value.as_ref().unwrap().name, "new");
    assert!(cache.pending_revalidations(10).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn bumping_a_generation_moves_the_namespace() {
    let f = Fixture::new();
    let cache = f.engine();
    assert_eq!(cache.generation("feed").await, 0);
    assert_eq!(cache.bump_generation("feed").await, Some(1));
    assert_eq!(cache.generation("feed").await, 1);
    // Another environment sees the bump.
    assert_eq!(f.engine().generation("feed").await, 1);
}

#[tokio::test(start_paused = true)]
async fn ttls_come_from_the_category_and_are_jittered() {
    let f = Fixture::new();
    let cache = f.engine_with(|o| o.jitter = 0.1);
    let mut fresh_for = Vec::new();
    for i in 0..50 {
        let k = key(&cache, &format!("p{i}"));
        cache.put(&k, item("x", 1), T0).await;
        let bytes = f.l2.get(k.as_str()).await.unwrap().unwrap();
        let meta = envelope::decode_header(&bytes).unwrap();
        fresh_for.push(meta.fresh_until - meta.stored_at);
    }
    let (min, max) = (
        *fresh_for.iter().min().unwrap(),
        *fresh_for.iter().max().unwrap(),
    );
    assert!(
        min >= 270_000 && max <= 330_000,
        "300 s ± 10%: {min}..{max}"
    );
    assert!(max > min, "jitter spreads expiries");
}

#[tokio::test(start_paused = true)]
async fn oversized_values_are_not_cached() {
    let f = Fixture::new();
    let cache = f.engine_with(|o| o.max_value_bytes = 64);
    let k = key(&cache, "big");
    let outcome = cache.put(&k, item(&"x".repeat(100), 1), T0).await;
    assert_eq!(outcome, PutOutcome::Skipped);
    assert_eq!(cache.snapshot().oversized_skips, 1);
    assert!(f.l2.get(k.as_str()).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn invalidation_drops_both_tiers() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "p1");
    cache.put(&k, item("x", 1), T0).await;
    assert!(cache.invalidate(std::slice::from_ref(&k)).await);
    let lookup = cache
        .get_or_load(&k, f.loader(Some(item("y", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(lookup.source, Source::Loaded);
}

#[tokio::test(start_paused = true)]
async fn large_values_are_compressed_and_counted() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "doc");
    cache
        .put(&k, item(&"lorem ipsum ".repeat(500), 1), T0)
        .await;
    let m = cache.snapshot();
    assert!(
        m.bytes_stored * 4 < m.bytes_raw,
        "{} stored for {} raw",
        m.bytes_stored,
        m.bytes_raw
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_that_read_before_an_invalidation_cannot_write_the_old_value_back() {
    let f = Fixture::new();
    let (reader, writer) = (f.engine(), f.engine());
    let k = key(&reader, "p1");
    // The reader's load reads the database, then takes a while to reach Redis...
    let read_at = f.clock.now_ms();
    f.clock.advance(Duration::from_secs(1));
    // ...meanwhile the product is written and its keys invalidated.
    assert!(writer.invalidate(std::slice::from_ref(&k)).await);
    f.clock.advance(Duration::from_secs(1));

    let outcome = reader.put(&k, item("old", 1), read_at).await;

    assert_eq!(outcome, PutOutcome::Refused);
    // Readers see a miss (the tombstone is not a value) and load the new version.
    let fresh = f
        .engine()
        .get_or_load(&k, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(fresh.source, Source::Loaded);
    assert_eq!(fresh.value.unwrap().name, "new");
    assert_eq!(
        f.engine().snapshot().decode_errors,
        0,
        "a tombstone is not corrupt data"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_load_racing_an_invalidation_is_not_cached() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "p1");
    // The loader reads "old" at once, then takes 500 ms to come back.
    let slow = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&k, || async {
                    let value = item("old", 1);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok(Some(value))
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.clock.advance(Duration::from_secs(1));
    f.engine().invalidate(std::slice::from_ref(&k)).await;

    let answered = slow.await.unwrap().unwrap();

    assert_eq!(
        answered.value.unwrap().name,
        "old",
        "the caller still gets its answer"
    );
    let next = f
        .engine()
        .get_or_load(&k, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        next.value.unwrap().name,
        "new",
        "but the old value was not cached"
    );
}

#[tokio::test]
async fn an_l1_smaller_than_what_is_read_counts_what_it_evicts() {
    let f = Fixture::new();
    // Room for a handful of entries only, next to one with room for all.
    let small = f.engine_with(|o| o.l1_max_bytes = 4 * 1024);
    let roomy = f.engine();
    for n in 0..200 {
        for cache in [&small, &roomy] {
            cache
                .get_or_load(
                    &key(cache, &format!("p{n}")),
                    f.loader(Some(item("kettle", 1)), Duration::ZERO),
                )
                .await
                .unwrap();
        }
    }
    // Reading the usage lets moka apply its pending evictions.
    let (_, bytes) = small.l1_usage();
    assert!(bytes <= 4 * 1024, "{bytes}");
    let m = small.snapshot();
    assert_eq!(m.l1_inserts, 200);
    assert!(m.l1_evictions >= 180, "evicted {} of 200", m.l1_evictions);
    roomy.l1_usage();
    let m = roomy.snapshot();
    assert_eq!((m.l1_inserts, m.l1_evictions), (200, 0));
    // L1 turned off (a bound of 0) takes nothing, so it evicts nothing either.
    let off = f.engine_with(|o| o.l1_max_bytes = 0);
    for n in 0..20 {
        off.get_or_load(
            &key(&off, &format!("p{n}")),
            f.loader(Some(item("kettle", 1)), Duration::ZERO),
        )
        .await
        .unwrap();
    }
    off.l1_usage();
    let m = off.snapshot();
    assert_eq!((m.l1_inserts, m.l1_evictions), (0, 0));
}

#[tokio::test]
async fn a_burst_of_unknown_ids_stays_out_of_redis_and_out_of_the_hot_keys_way() {
    let f = Fixture::new();
    let cache = f.engine();
    let hot = key(&cache, "hot");
    cache
        .get_or_load(&hot, f.loader(Some(item("hot", 1)), Duration::ZERO))
        .await
        .unwrap();
    for n in 0..3_000 {
        let unknown = key(&cache, &format!("unknown-{n}"));
        let lookup = cache
            .get_or_load(&unknown, f.loader(None, Duration::ZERO))
            .await
            .unwrap();
        assert!(lookup.value.is_none());
    }
    // Nothing of the burst reached Redis.
    for n in [0, 2_999] {
        let unknown = key(&cache, &format!("unknown-{n}"));
        assert_eq!(f.l2.get(unknown.as_str()).await.unwrap(), None);
    }
    // They live in the negative L1 (bounded by its own budget), not in the product L1.
    let (entries, _) = cache.l1_usage();
    assert!(
        entries <= 1,
        "the product L1 holds only the hot key, not {entries} entries"
    );
    // A recent unknown id is still answered from memory (no second load)...
    let loads = f.loads();
    let recent = key(&cache, "unknown-2999");
    let again = cache
        .get_or_load(&recent, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!((again.source, f.loads()), (Source::L1, loads));
    // ...and the hot key is still in Redis for every other environment.
    let other = f.engine();
    let hit = other
        .get_or_load(&hot, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(hit.source, Source::L2);
}

#[tokio::test]
async fn a_not_found_read_before_an_invalidation_is_not_cached_by_the_same_process() {
    let f = Fixture::new();
    let cache = f.engine();
    let k = key(&cache, "new-product");
    // A read of an id that does not exist yet, slow...
    let slow = {
        let (cache, k, loader) = (
            cache.clone(),
            k.clone(),
            f.loader(None, Duration::from_millis(200)),
        );
        tokio::spawn(async move { cache.get_or_load(&k, loader).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while the product is created here and its keys invalidated.
    assert!(cache.invalidate(std::slice::from_ref(&k)).await);
    assert!(slow.await.unwrap().unwrap().value.is_none());
    // The stale "not found" was not kept: the next read loads the product.
    let next = cache
        .get_or_load(&k, f.loader(Some(item("created", 1)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(next.value.unwrap().name, "created");
}

/// A write made while Redis is unreachable: its invalidation cannot land, so this process
/// stops serving the Redis copy stored before it, and once Redis answers again the tombstone
/// is delivered for every other environment.
#[tokio::test]
async fn an_invalidation_redis_missed_is_honoured_here_and_delivered_later() {
    let f = Fixture::new();
    let writer = f.engine_with(|o| o.l1_max_bytes = 0);
    let other = f.engine_with(|o| o.l1_max_bytes = 0);
    let k = key(&writer, "p1");
    writer
        .get_or_load(&k, f.loader(Some(item("old", 1)), Duration::ZERO))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(1));

    f.l2.set_failing(true);
    assert!(
        !writer.invalidate(std::slice::from_ref(&k)).await,
        "Redis missed it"
    );
    f.l2.set_failing(false);
    f.clock.advance(Duration::from_secs(1));

    // The writer does not serve the copy it knows is outdated: it loads the new value (and
    // its L2 call, a success, starts delivering the tombstone).
    let seen = writer
        .get_or_load(&k, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(seen.value.unwrap().name, "new", "{:?}", seen.source);
    // Another environment finds the new value (written back) or a tombstone, never "old".
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let elsewhere = other
        .get_or_load(&k, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(elsewhere.value.unwrap().name, "new");

    // A key invalidated while Redis was down and not read since: its tombstone is delivered
    // with the next successful call, and other environments stop serving the old copy.
    let k2 = key(&writer, "p2");
    writer
        .get_or_load(&k2, f.loader(Some(item("old", 1)), Duration::ZERO))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    f.l2.set_failing(true);
    assert!(!writer.invalidate(std::slice::from_ref(&k2)).await);
    f.l2.set_failing(false);
    writer
        .get_or_load(
            &key(&writer, "unrelated"),
            f.loader(Some(item("x", 1)), Duration::ZERO),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let elsewhere = other
        .get_or_load(&k2, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        (elsewhere.source, elsewhere.value.unwrap().name.as_str()),
        (Source::Loaded, "new"),
        "the delivered tombstone made it a miss"
    );
}

/// Two keys read together cost one L2 round trip on a hit, and each is answered as alone:
/// from L1 when it is there, loaded when missing.
#[tokio::test]
async fn two_keys_read_together_are_one_round_trip_on_an_l2_hit() {
    let f = Fixture::new();
    let first = f.engine();
    let (a, b) = (
        key(&first, "p1"),
        first.keys().stats(&ProductId::parse("p1").unwrap()),
    );
    let (loaded_a, loaded_b) = first
        .get_or_load_both(
            (&a, f.loader(Some(item("detail", 1)), Duration::ZERO)),
            (&b, f.loader(Some(item("stats", 1)), Duration::ZERO)),
        )
        .await;
    assert_eq!(loaded_a.unwrap().source, Source::Loaded);
    assert_eq!(loaded_b.unwrap().source, Source::Loaded);

    let other = f.engine_with(|o| o.l1_max_bytes = 0);
    let before = f.l2.round_trips();
    let (hit_a, hit_b) = other
        .get_or_load_both::<Item, Item>(
            (&a, f.loader(None, Duration::ZERO)),
            (&b, f.loader(None, Duration::ZERO)),
        )
        .await;
    let (hit_a, hit_b) = (hit_a.unwrap(), hit_b.unwrap());
    assert_eq!(f.l2.round_trips() - before, 1, "one MGET");
    assert_eq!((hit_a.source, hit_b.source), (Source::L2, Source::L2));
    assert_eq!(hit_a.value.unwrap().name, "detail");
    assert_eq!(hit_b.value.unwrap().name, "stats");

    // In L1 both: no round trip. One in L1: the other alone.
    let before = f.l2.round_trips();
    let (a1, b1) = first
        .get_or_load_both::<Item, Item>(
            (&a, f.loader(None, Duration::ZERO)),
            (&b, f.loader(None, Duration::ZERO)),
        )
        .await;
    assert_eq!(
        (a1.unwrap().source, b1.unwrap().source),
        (Source::L1, Source::L1)
    );
    assert_eq!(f.l2.round_trips(), before);
    let c = key(&first, "p2");
    let (a2, c2) = first
        .get_or_load_both::<Item, Item>(
            (&a, f.loader(None, Duration::ZERO)),
            (&c, f.loader(Some(item("new", 1)), Duration::ZERO)),
        )
        .await;
    assert_eq!(
        (a2.unwrap().source, c2.unwrap().source),
        (Source::L1, Source::Loaded)
    );
}

/// A stale answer costs the request one Redis round trip, as a hit does; queueing, locking and
/// reloading come with its revalidation, after the response. A revalidation that finds the
/// key refreshed meanwhile (by another process) does not load it again.
#[tokio::test]
async fn a_stale_answer_costs_the_request_no_more_round_trips_than_a_hit() {
    let f = Fixture::new();
    let cache = f.engine_with(|o| o.l1_max_bytes = 0);
    let k = key(&cache, "p1");
    cache
        .get_or_load(&k, f.loader(Some(item("v1", 1)), Duration::ZERO))
        .await
        .unwrap();
    let before = f.l2.round_trips();
    let hit = cache
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(hit.source, Source::L2);
    let per_hit = f.l2.round_trips() - before;

    f.clock
        .advance(cache.policy(Category::Product).fresh + Duration::from_secs(1));
    let before = f.l2.round_trips();
    let mut stale = cache
        .get_or_load(&k, f.loader(Some(item("v2", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(stale.source, Source::Stale);
    assert_eq!(f.l2.round_trips() - before, per_hit);
    assert_eq!(
        cache.pending_revalidations(10).await.len(),
        0,
        "queued after the response"
    );

    // Another process refreshes it first; this revalidation then only confirms it.
    let other = f.engine();
    other.put(&k, item("v2", 2), f.clock.now_ms()).await;
    let loads = f.loads.load(Ordering::SeqCst);
    stale.revalidation.take().unwrap().run().await;
    assert_eq!(f.loads.load(Ordering::SeqCst), loads, "no second load");
    assert!(
        cache.pending_revalidations(10).await.is_empty(),
        "done and dequeued"
    );
}

/// Entries written before the binary payload (format 1, JSON) are still served; a format
/// no codec knows is a clean miss.
#[tokio::test]
async fn entries_in_the_json_format_are_still_read() {
    let f = Fixture::new();
    let cache = f.engine();
    let meta = envelope::EntryMeta {
        version: 1,
        stored_at: T0,
        fresh_until: T0 + 60_000,
        stale_until: T0 + 120_000,
        negative: false,
        tombstone: false,
    };
    let json = serde_json::to_vec(&item("from json", 1)).unwrap();
    let mut bytes = envelope::encode(&meta, &json, usize::MAX).bytes;
    bytes[2] = envelope::FORMAT_JSON;
    let k = key(&cache, "old");
    f.l2.put_raw(k.as_str(), bytes.clone());
    let hit = cache
        .get_or_load(&k, f.loader(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        (hit.source, hit.value.unwrap().name.as_str()),
        (Source::L2, "from json")
    );

    bytes[2] = 9;
    let unknown = key(&cache, "future");
    f.l2.put_raw(unknown.as_str(), bytes);
    let miss = cache
        .get_or_load(&unknown, f.loader(Some(item("loaded", 1)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(miss.source, Source::Loaded);
}

/// L1 coherence across environments (see `super::coherence`).
mod coherence {
    use super::*;

    /// Reads `k` in `cache`, loading `fallback` on a miss; returns the name served and where from.
    async fn read_name(f: &Fixture, cache: &Cache, k: &CacheKey) -> (String, Source) {
        let lookup = cache
            .get_or_load(
                &k.clone(),
                f.loader(Some(item("loaded", 1)), Duration::ZERO),
            )
            .await
            .unwrap();
        (lookup.value.unwrap().name.clone(), lookup.source)
    }

    /// Polls the change log, then moves the clock on: what is read in the same millisecond as a
    /// poll that learnt of a change is, conservatively, not kept in L1.
    async fn poll(f: &Fixture, cache: &Cache) {
        cache.poll_changes().await;
        f.clock.advance(Duration::from_millis(1));
    }

    /// `writer` stores `k` as `name`; `reader` polls once, then reads it from L2 into L1.
    async fn held_in_l1(f: &Fixture, writer: &Cache, reader: &Cache, k: &CacheKey, name: &str) {
        writer.put(k, item(name, 1), T0).await;
        poll(f, reader).await;
        assert_eq!(read_name(f, reader, k).await, (name.into(), Source::L2));
        assert_eq!(read_name(f, reader, k).await, (name.into(), Source::L1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_in_one_environment_leaves_the_others_l1_at_their_next_poll() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        held_in_l1(&f, &writer, &reader, &k, "old").await;

        writer.put(&k, item("new", 2), T0).await;
        // Until it polls, the reader may serve its copy (within the bound)...
        assert_eq!(read_name(&f, &reader, &k).await, ("old".into(), Source::L1));
        // ...and the poll drops it.
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
        assert_eq!(reader.snapshot().l1_remote_drops, 1);

        // An invalidation travels the same way.
        assert!(writer.invalidate(std::slice::from_ref(&k)).await);
        poll(&f, &reader).await;
        assert_eq!(
            read_name(&f, &reader, &k).await,
            ("loaded".into(), Source::Loaded)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn polls_start_by_themselves_while_l1_serves() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        writer.put(&k, item("old", 1), T0).await;
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L2);
        let quarter = reader.options().l1_coherence / 4;
        for step in 0..3 {
            f.clock.advance(quarter);
            // Served from L1, and a poll started in the background (it runs at the next await).
            assert_eq!(
                read_name(&f, &reader, &k).await.1,
                Source::L1,
                "step {step}"
            );
            tokio::task::yield_now().await;
        }
        writer.put(&k, item("new", 2), T0).await;
        f.clock.advance(quarter);
        // This read still finds the old copy, and starts the poll that drops it.
        assert_eq!(read_name(&f, &reader, &k).await.0, "old");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_freeze_l1_is_not_served_until_a_poll_has_caught_up() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        held_in_l1(&f, &writer, &reader, &k, "old").await;

        // Frozen (no poll runs) past the bound, still within the L1 TTL; meanwhile a change.
        writer.put(&k, item("new", 2), T0).await;
        f.clock
            .advance(reader.options().l1_coherence + Duration::from_millis(1));
        assert!(reader.options().l1_coherence < reader.options().l1_ttl);
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
        assert_eq!(reader.snapshot().l1_unchecked, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_read_before_a_poll_learnt_of_its_change_is_kept_out_of_l1() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        poll(&f, &reader).await;
        let read_before = f.clock.now_ms();
        f.clock.advance(Duration::from_millis(5));
        writer.put(&k, item("new", 2), T0).await;
        poll(&f, &reader).await;
        // A request that read the old value before the poll inserts it after the poll ran.
        insert_old(&reader, &k, read_before);
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
        // One read after the poll is kept.
        insert_old(&reader, &k, f.clock.now_ms() + 1);
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L1);
    }

    /// The old value of `k`, as a request that read it at `read_at` would put it in L1.
    fn insert_old(reader: &Cache, k: &CacheKey, read_at: EpochMillis) {
        let meta = envelope::EntryMeta {
            version: 1,
            stored_at: read_at,
            fresh_until: read_at + 60_000,
            stale_until: read_at + 60_000,
            negative: false,
            tombstone: false,
        };
        let old = Arc::new(item("old", 1)) as l1::AnyValue;
        reader.insert_l1(k.as_str(), Some(old), meta, 1, read_at);
    }

    /// Makes every reply to `op` arrive `delay` after the call, by the fixture's clock.
    fn slow_replies(f: &Fixture, op: &'static str, delay: Duration) {
        let clock = f.clock.clone();
        f.l2.intercept(move |called| {
            if called == op {
                clock.advance(delay);
            }
            false
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_began_while_the_poll_was_in_flight_is_kept_out_of_l1() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        // A log to start from: the reader's position is then its head, not before the floor.
        writer.put(&key(&writer, "p0"), item("other", 1), T0).await;
        poll(&f, &reader).await;
        writer.put(&k, item("new", 2), T0).await;
        // The poll starts now; its page arrives 20 ms later. A read that began 10 ms into the
        // poll may have read the value from before the change, and inserts after the poll.
        let poll_started = f.clock.now_ms();
        slow_replies(&f, "read changes", Duration::from_millis(20));
        poll(&f, &reader).await;
        insert_old(&reader, &k, poll_started + 10);
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
    }

    #[tokio::test(start_paused = true)]
    async fn polls_vouch_only_for_reads_that_began_after_the_first_head_arrived() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        writer.put(&k, item("old", 1), T0).await;
        // The first poll asks for the head; its reply takes 20 ms, during which a read of the
        // old value begins and the change lands before the head, so no poll will report it.
        let poll_started = f.clock.now_ms();
        slow_replies(&f, "change log head", Duration::from_millis(20));
        writer.put(&k, item("new", 2), T0).await;
        poll(&f, &reader).await;
        insert_old(&reader, &k, poll_started + 10);
        // Past the bound the entry is vouched for only by polls, which cannot: it is not served.
        f.l2.intercept(|_| false);
        f.clock.advance(reader.options().l1_coherence);
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_whose_publication_failed_is_published_after_the_next_success() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        held_in_l1(&f, &writer, &reader, &k, "old").await;

        let publishing_fails = Arc::new(AtomicBool::new(true));
        let fails = publishing_fails.clone();
        f.l2.intercept(move |op| op == "publish changes" && fails.load(Ordering::SeqCst));
        writer.put(&k, item("new", 2), T0).await;
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await, ("old".into(), Source::L1));

        // The writer's next successful L2 call publishes it in the background.
        publishing_fails.store(false, Ordering::SeqCst);
        writer.generation("anything").await;
        tokio::task::yield_now().await;
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await, ("new".into(), Source::L2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_behind_a_trimmed_or_lost_log_clears_its_l1() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let (k, other) = (key(&writer, "p1"), key(&writer, "p2"));
        held_in_l1(&f, &writer, &reader, &k, "k").await;

        // More changes than the log keeps, none of them `k`'s: the reader cannot know which it
        // missed, so it keeps nothing.
        let log = writer.keys().change_log();
        let names: Vec<String> = (0..=crate::cache::coherence::LOG_KEEP)
            .map(|i| format!("elsewhere:{i}"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        f.l2.publish_changes(&log, &refs, crate::cache::coherence::LOG_KEEP)
            .await
            .unwrap();
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L2);

        // The log is lost (flushed): same.
        writer.put(&other, item("o", 1), T0).await;
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L1);
        let kept = f.l2.get(k.as_str()).await.unwrap().unwrap();
        f.l2.flush_all();
        f.l2.put_raw(k.as_str(), kept);
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clear_in_the_log_clears_every_readers_l1() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        let k = key(&writer, "p1");
        held_in_l1(&f, &writer, &reader, &k, "k").await;
        // What an environment that lost track of its changes publishes.
        let log = writer.keys().change_log();
        f.l2.publish_changes(
            &log,
            &[l2::CHANGE_LOG_CLEAR],
            crate::cache::coherence::LOG_KEEP,
        )
        .await
        .unwrap();
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_bumped_elsewhere_is_seen_at_the_next_poll() {
        let f = Fixture::new();
        let (writer, reader) = (f.engine(), f.engine());
        poll(&f, &reader).await;
        assert_eq!(reader.generation("feed").await, 0);
        assert_eq!(writer.bump_generation("feed").await, Some(1));
        poll(&f, &reader).await;
        assert_eq!(reader.generation("feed").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_redis_unreachable_l1_entries_live_their_ttl() {
        let f = Fixture::new();
        let reader = f.engine();
        let k = key(&reader, "p1");
        reader.put(&k, item("kept", 1), T0).await;
        poll(&f, &reader).await;
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L1);
        f.l2.set_failing(true);
        // Open the circuit.
        for i in 0..10 {
            let _ = read_name(&f, &reader, &key(&reader, &format!("x{i}"))).await;
        }
        assert!(matches!(
            reader.breaker_state(),
            breaker::BreakerState::Open { .. }
        ));
        f.clock.advance(reader.options().l1_coherence * 2);
        assert_eq!(
            read_name(&f, &reader, &k).await,
            ("kept".into(), Source::L1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_coherence_off_l1_entries_live_their_ttl() {
        let f = Fixture::new();
        let reader = f.engine_with(|o| o.l1_coherence = Duration::ZERO);
        let k = key(&reader, "p1");
        reader.put(&k, item("kept", 1), T0).await;
        f.clock.advance(Duration::from_secs(4));
        assert_eq!(read_name(&f, &reader, &k).await.1, Source::L1);
        assert_eq!(f.l2.len(), 1, "nothing published: {:?}", f.l2);
    }
}

#[tokio::test]
async fn a_revalidation_slower_than_the_lock_ttl_keeps_its_lock() {
    let f = Fixture::new();
    let short_lock = |o: &mut CacheOptions| o.lock_ttl = Duration::from_millis(300);
    let (a, b) = (f.engine_with(short_lock), f.engine_with(short_lock));
    let k = key(&a, "p1");
    a.get_or_load(&k, f.loader(Some(item("old", 1)), Duration::ZERO))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(301));

    let slow = a
        .get_or_load(
            &k,
            f.loader(Some(item("new", 2)), Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    let running = tokio::spawn(slow.revalidation.unwrap().run());
    // Well past the lock's TTL: without renewal, B would take the lock and load too.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let other = b
        .get_or_load(&k, f.loader(Some(item("new", 2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(other.source, Source::Stale);
    other.revalidation.unwrap().run().await;
    assert_eq!(f.loads(), 2, "B found the lock held and did not load");
    running.await.unwrap();
    assert_eq!(f.loads(), 2);
    // Released when done: the next revalidation can take it at once.
    let lock = a.keys().lock(&k);
    assert_eq!(f.l2.get(&lock).await.unwrap(), None);
}

#[tokio::test]
async fn traffic_and_counters_a_failed_flush_could_not_deliver_are_sent_with_the_next() {
    use crate::cache::traffic::Answer;
    let f = Fixture::new();
    let cache = f.engine();
    for _ in 0..3 {
        cache.traffic().record(
            "/products/{id}",
            Answer::L2,
            Duration::from_micros(100),
            Some(Duration::from_secs(1)),
        );
    }
    cache
        .get_or_load(
            &key(&cache, "a"),
            f.loader(Some(item("a", 1)), Duration::ZERO),
        )
        .await
        .unwrap();
    f.l2.set_failing(true);
    assert!(cache.flush_counters(Duration::ZERO, None).await.is_some());
    f.l2.set_failing(false);
    // The breaker may have opened on the failures: let its cool-down pass.
    f.clock.advance(Duration::from_secs(60));
    assert!(cache.history().await.routes.last_5m.is_empty());
    cache.flush_counters(Duration::ZERO, None).await.unwrap();
    let history = cache.history().await;
    let routes = &history.routes.last_5m;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].requests, 3, "sent once, after the failure");
    assert_eq!(history.routes.last_24h, history.routes.last_5m);
    assert_eq!(history.last_5m.counters.loads, 1, "the counters too");
    // A further flush sends nothing twice.
    cache.flush_counters(Duration::ZERO, None).await.unwrap();
    assert_eq!(cache.history().await.routes.last_5m[0].requests, 3);
}

#[tokio::test]
async fn dated_counts_land_in_the_minute_of_their_event_however_late_they_are_sent() {
    let f = Fixture::new();
    let cache = f.engine();
    let at = cache.now();
    let minute = at - at.rem_euclid(60_000);
    cache.count_at("views_recorded", at);
    cache.count_at("views_recorded", at + 1);
    // Redis is down at the next flush, and the one after comes two hours later.
    f.l2.set_failing(true);
    cache.flush_counters(Duration::ZERO, None).await;
    f.l2.set_failing(false);
    f.clock.advance(Duration::from_secs(7200));
    assert_eq!(
        cache.first_minute_counting("views_recorded", None).await,
        None
    );
    cache.flush_counters(Duration::ZERO, None).await.unwrap();
    assert_eq!(
        cache.first_minute_counting("views_recorded", None).await,
        Some(minute)
    );
    // Only minutes wholly after `after` count.
    assert_eq!(
        cache
            .first_minute_counting("views_recorded", Some(minute))
            .await,
        None
    );
    assert_eq!(
        cache
            .first_minute_counting("views_recorded", Some(minute - 1))
            .await,
        Some(minute)
    );
}
