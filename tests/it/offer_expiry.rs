//! The offer-expiry job on DynamoDB (moto) and real Redis, standalone and cluster: the index
//! across shards and pages, the conditional expiry, concurrent and crashed runs, an extension
//! racing the job, the Redis set reconciled, Redis stopped during a run, and the lease.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Source};
use catalog_core::clock::ManualClock;
use catalog_core::config::RedisConfig;
use catalog_core::expiry_set::{ExpirySet, SetState, member};
use catalog_core::jobs::offer_expiry::{DueSource, ExpiryDeps, ExpiryOptions, JOB, expire_once};
use catalog_core::model::{
    EpochMillis, ExpiringOffer, Offer, OfferId, OfferStatus, ProductId, RunOutcome,
};
use catalog_core::reads;
use catalog_core::store::dynamo::DynamoStore;
use catalog_core::store::dynamo::items::EXPIRY_SHARDS;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{
    ExpiryIndex, JobLeases, OfferExpirer, OfferReader, OfferWriter, ProductReader, ProductWriter,
    StatsReader,
};
use integration_tests::{RedisServer, connect, unique_name};

use crate::helpers::{NOW, offer, product, spawn_dynamo_env};

const MINUTE: i64 = 60_000;

/// A catalog on moto with `products` products of one offer each, `due` of which are past
/// their expiry, plus a Redis-backed cache whose expiry set follows them.
struct Env {
    store: Arc<DynamoStore>,
    cache: Cache,
    offers: Vec<Offer>,
}

impl Env {
    async fn new(config: RedisConfig, products: usize, due: usize) -> Env {
        let l2 = Arc::new(RedisL2::new(connect(&config).await)) as Arc<dyn L2Store>;
        Env::with_l2(Some(l2), products, due).await
    }

    async fn with_l2(l2: Option<Arc<dyn L2Store>>, products: usize, due: usize) -> Env {
        let env = spawn_dynamo_env().await;
        let store = Arc::new(env.store);
        let cache = Cache::new(
            CacheOptions {
                key_prefix: format!("{}:", unique_name("expiry")),
                command_timeout: Duration::from_millis(500),
                ..CacheOptions::default()
            },
            l2,
            ManualClock::at(NOW),
        );
        let set = ExpirySet::new(&cache);
        let mut offers = Vec::new();
        for i in 0..products {
            let product_id = format!("p{i}");
            store
                .put_product(&product(&product_id), ExpectedVersion::Absent)
                .await
                .unwrap();
            let mut o = offer(&product_id, &format!("o{i}"), OfferStatus::Active);
            o.expires_at = if i < due {
                NOW - MINUTE + i as i64
            } else {
                NOW + 10 * MINUTE
            };
            let stored = store.put_offer(&o, ExpectedVersion::Absent).await.unwrap();
            set.follow(&stored).await;
            offers.push(stored);
        }
        set.mark_synced(NOW - MINUTE).await;
        Env {
            store,
            cache,
            offers,
        }
    }

    fn deps(&self) -> ExpiryDeps {
        ExpiryDeps {
            catalog: self.store.clone(),
            stats: self.store.clone(),
            cache: self.cache.clone(),
        }
    }

    async fn status(&self, i: usize) -> (OfferStatus, u64) {
        let o = self.store.offer(&self.offers[i].id).await.unwrap().unwrap();
        (o.status, o.version)
    }

    /// Offers `0..due` expired exactly once (created at version 1, so expired at 2), the
    /// rest untouched.
    async fn assert_expired_once(&self, due: usize) {
        for i in 0..self.offers.len() {
            let expected = if i < due {
                (OfferStatus::Expired, 2)
            } else {
                (OfferStatus::Active, 1)
            };
            assert_eq!(self.status(i).await, expected, "offer o{i}");
        }
    }
}

fn options() -> ExpiryOptions {
    ExpiryOptions {
        concurrency: 8,
        chunk: 25,
        ..ExpiryOptions::default()
    }
}

#[tokio::test]
async fn the_index_is_read_across_every_shard_and_page() {
    let env = spawn_dynamo_env().await;
    // Three items per page: 40 offers over 8 shards take several pages in most shards.
    let store = env.store.with_index_page(3);
    for i in 0..40 {
        let product_id = format!("p{i}");
        store
            .put_product(&product(&product_id), ExpectedVersion::Absent)
            .await
            .unwrap();
        let mut o = offer(&product_id, &format!("offer-{i}"), OfferStatus::Active);
        o.expires_at = NOW + i64::from(i) * 1000;
        store.put_offer(&o, ExpectedVersion::Absent).await.unwrap();
    }
    let due = store.expiring(NOW + 29_000, 1000).await.unwrap();
    assert_eq!(due.len(), 30);
    assert!(due.windows(2).all(|w| w[0].expires_at <= w[1].expires_at));
    assert!(
        due.iter().all(|o| o.version == Some(1)),
        "the index projects the version"
    );
    let shards: std::collections::BTreeSet<String> = due
        .iter()
        .map(|o| catalog_core::store::dynamo::items::expiry_shard(&o.offer_id))
        .collect();
    assert!(shards.len() > 1 && shards.len() <= EXPIRY_SHARDS as usize);
    assert_eq!(store.expiring(NOW + 29_000, 7).await.unwrap().len(), 7);
}

#[tokio::test]
async fn an_expiry_is_one_conditional_write_that_only_an_active_due_unchanged_offer_passes() {
    let env = spawn_dynamo_env().await;
    let store = env.store;
    store
        .put_product(&product("p"), ExpectedVersion::Absent)
        .await
        .unwrap();
    let mut due = offer("p", "due", OfferStatus::Active);
    due.expires_at = NOW - 1;
    let due = store
        .put_offer(&due, ExpectedVersion::Absent)
        .await
        .unwrap();
    let mut later = offer("p", "later", OfferStatus::Active);
    later.expires_at = NOW + MINUTE;
    let later = store
        .put_offer(&later, ExpectedVersion::Absent)
        .await
        .unwrap();
    let pid = ProductId::parse("p").unwrap();

    assert!(
        !store.expire_offer(&pid, &due.id, 7, NOW).await.unwrap(),
        "wrong version"
    );
    assert!(
        !store.expire_offer(&pid, &later.id, 1, NOW).await.unwrap(),
        "not due yet"
    );
    assert!(store.expire_offer(&pid, &due.id, 1, NOW).await.unwrap());
    assert!(
        !store.expire_offer(&pid, &due.id, 1, NOW).await.unwrap(),
        "already expired"
    );
    let unknown = OfferId::parse("ghost").unwrap();
    assert!(!store.expire_offer(&pid, &unknown, 1, NOW).await.unwrap());

    let stored = store.offer(&due.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.version, stored.updated_at),
        (OfferStatus::Expired, 2, NOW)
    );
    let listed = store.expiring(i64::MAX, 100).await.unwrap();
    assert_eq!(listed.len(), 1, "the expired offer left the sparse index");
    assert_eq!(listed[0].offer_id, later.id);
}

async fn due_offers_expire_once_and_the_cached_detail_is_invalidated(config: RedisConfig) {
    let env = Env::new(config, 12, 8).await;
    let catalog: Arc<dyn ProductReader> = env.store.clone();
    let pid = ProductId::parse("p0").unwrap();
    reads::product_detail(&env.cache, &catalog, &pid)
        .await
        .unwrap();

    let report = expire_once(&env.deps(), &options(), NOW, None).await;

    assert_eq!(report.source, Some(DueSource::Set));
    assert_eq!((report.expired, report.errors), (8, 0));
    assert_eq!(report.lag_ms, 60_000);
    env.assert_expired_once(8).await;
    let reread = reads::product_detail(&env.cache, &catalog, &pid)
        .await
        .unwrap();
    assert_eq!(reread.source, Source::Loaded, "invalidated in the same run");
    assert_eq!(ExpirySet::new(&env.cache).all().await.unwrap().len(), 4);
    let run = &env.store.last_runs().await.unwrap()[0];
    assert_eq!(
        (run.job.as_str(), run.outcome),
        (JOB, RunOutcome::Succeeded)
    );
    assert_eq!(run.counts["expired"], 8);
    assert_eq!(run.lag_ms, Some(60_000));
}

async fn two_runs_at_once_expire_each_offer_once_and_count_the_loser(config: RedisConfig) {
    let env = Env::new(config, 30, 30).await;
    // Both runs list the due offers before either writes: each run's first write waits for
    // the other run to reach its own. Each has its own lease store, so both run: only the
    // conditional write keeps them from expiring an offer twice.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let run_with_barrier = || {
        let (barrier, waited) = (barrier.clone(), Arc::new(AtomicUsize::new(0)));
        let hooked = env.deps_with_hook(Arc::new(move |_, _| {
            let (barrier, first) = (barrier.clone(), waited.fetch_add(1, Ordering::SeqCst) == 0);
            Box::pin(async move {
                if first {
                    barrier.wait().await;
                }
            })
        }));
        ExpiryDeps {
            stats: Arc::new(MemoryStore::new()),
            ..hooked
        }
    };
    let (a, b) = (run_with_barrier(), run_with_barrier());
    let options = options();
    let (ra, rb) = tokio::join!(
        expire_once(&a, &options, NOW, None),
        expire_once(&b, &options, NOW, None)
    );
    assert_eq!(
        (ra.skipped_reason.clone(), rb.skipped_reason.clone()),
        (None, None)
    );
    assert_eq!((ra.due, rb.due), (30, 30), "both listed every due offer");
    env.assert_expired_once(30).await;
    assert_eq!(ra.expired + rb.expired, 30);
    assert_eq!(ra.errors + rb.errors, 0);
    assert_eq!(
        ra.expired + ra.already_expired,
        30,
        "each loss counted: {ra:?}"
    );
    assert_eq!(
        rb.expired + rb.already_expired,
        30,
        "each loss counted: {rb:?}"
    );
    env.assert_expired_once(30).await;
}

async fn an_offer_the_set_missed_is_expired_on_time_through_the_index_check(config: RedisConfig) {
    // An offer created while this API instance could not reach Redis: stored, but never
    // added to the set, whose marker is recent. Redis kept everything else.
    let env = Env::new(config, 5, 5).await;
    let set = ExpirySet::new(&env.cache);
    set.untrack(&[member(&env.offers[2].product_id, &env.offers[2].id)])
        .await;
    let report = expire_once(&env.deps(), &options(), NOW, None).await;
    assert_eq!(report.set_missed, 1);
    assert_eq!(report.source, Some(DueSource::Index));
    assert_eq!(report.expired, 5);
    assert!(report.reconciled);
    env.assert_expired_once(5).await;
}

async fn the_run_after_a_crash_finishes_the_work_once(config: RedisConfig) {
    let env = Env::new(config, 40, 40).await;
    // The function dies before its 15th write: every write after that hangs, and the run
    // is dropped. Whatever it wrote stays written; its lease stays held.
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let dying = env.deps_with_hook(Arc::new(move |_, _| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n >= 14 {
                std::future::pending::<()>().await;
            }
        })
    }));
    let one_at_a_time = ExpiryOptions {
        concurrency: 1,
        ..options()
    };
    let crashed = tokio::time::timeout(
        Duration::from_secs(20),
        expire_once(&dying, &one_at_a_time, NOW, None),
    )
    .await;
    assert!(crashed.is_err(), "the first run never finished");
    let expired_by_first = futures::future::join_all((0..40).map(|i| env.status(i)))
        .await
        .iter()
        .filter(|(s, _)| *s == OfferStatus::Expired)
        .count();
    assert_eq!(expired_by_first, 14);

    // The next minute's run finds the lease held and skips.
    let skipped = expire_once(&env.deps(), &options(), NOW + MINUTE, None).await;
    assert!(skipped.skipped_reason.is_some());
    // Once the dead run's lease has lapsed, a run expires exactly the rest.
    let next = expire_once(&env.deps(), &options(), NOW + 3 * MINUTE, None).await;
    assert_eq!(next.skipped_reason, None);
    assert_eq!(next.expired, 26);
    env.assert_expired_once(40).await;
}

/// What runs just before each of the job's expiry writes.
type Hook = Arc<dyn Fn(OfferId, EpochMillis) -> BoxFuture<'static, ()> + Send + Sync>;

/// The moto catalog with a hook before every expiry write: a crash, a racing extension, a
/// Redis outage, each at a known point of the run.
struct BeforeEachExpiry {
    inner: Arc<DynamoStore>,
    hook: Hook,
}

#[async_trait]
impl OfferReader for BeforeEachExpiry {
    async fn offer(&self, id: &OfferId) -> catalog_core::Result<Option<Offer>> {
        self.inner.offer(id).await
    }
    async fn offers(&self, keys: &[(ProductId, OfferId)]) -> catalog_core::Result<Vec<Offer>> {
        self.inner.offers(keys).await
    }
}

#[async_trait]
impl ExpiryIndex for BeforeEachExpiry {
    async fn expiring(
        &self,
        until: EpochMillis,
        limit: usize,
    ) -> catalog_core::Result<Vec<ExpiringOffer>> {
        self.inner.expiring(until, limit).await
    }
    async fn oldest_due(&self, until: EpochMillis) -> catalog_core::Result<Vec<ExpiringOffer>> {
        self.inner.oldest_due(until).await
    }
}

#[async_trait]
impl OfferExpirer for BeforeEachExpiry {
    async fn expire_offer(
        &self,
        product: &ProductId,
        offer: &OfferId,
        version: u64,
        now: EpochMillis,
    ) -> catalog_core::Result<bool> {
        (self.hook)(offer.clone(), now).await;
        self.inner.expire_offer(product, offer, version, now).await
    }
}

impl Env {
    fn deps_with_hook(&self, hook: Hook) -> ExpiryDeps {
        ExpiryDeps {
            catalog: Arc::new(BeforeEachExpiry {
                inner: self.store.clone(),
                hook,
            }),
            ..self.deps()
        }
    }
}

async fn an_extension_racing_the_job_wins(config: RedisConfig) {
    let env = Env::new(config, 3, 3).await;
    let store = env.store.clone();
    let deps = env.deps_with_hook(Arc::new(move |offer, now| {
        let store = store.clone();
        Box::pin(async move {
            let current = store.offer(&offer).await.unwrap().unwrap();
            let extended = Offer {
                expires_at: now + 3_600_000,
                ..current.clone()
            };
            store
                .put_offer(&extended, ExpectedVersion::Exactly(current.version))
                .await
                .unwrap();
        })
    }));
    let report = expire_once(&deps, &options(), NOW, None).await;
    assert_eq!((report.expired, report.extended, report.errors), (0, 3, 0));
    for i in 0..3 {
        let o = env.store.offer(&env.offers[i].id).await.unwrap().unwrap();
        assert_eq!(
            (o.status, o.expires_at),
            (OfferStatus::Active, NOW + 3_600_000)
        );
    }
    let members = ExpirySet::new(&env.cache).all().await.unwrap();
    assert!(
        members.iter().all(|m| m.expires_at == NOW + 3_600_000),
        "the set follows"
    );
}

async fn orphans_and_missing_members_are_reconciled(config: RedisConfig) {
    let env = Env::new(config, 6, 0).await;
    let set = ExpirySet::new(&env.cache);
    // o0 was cancelled and o1 created while Redis missed both; the marker is two hours old.
    let o0 = &env.offers[0];
    env.store
        .put_offer(
            &Offer {
                status: OfferStatus::Cancelled,
                ..o0.clone()
            },
            ExpectedVersion::Exactly(o0.version),
        )
        .await
        .unwrap();
    set.untrack(&[member(&env.offers[1].product_id, &env.offers[1].id)])
        .await;
    set.mark_synced(NOW - 120 * MINUTE).await;

    let report = expire_once(&env.deps(), &options(), NOW, None).await;

    assert!(report.reconciled);
    assert_eq!((report.orphans_removed, report.members_added), (1, 1));
    let mut members: Vec<String> = set
        .all()
        .await
        .unwrap()
        .iter()
        .map(|m| m.offer_id.to_string())
        .collect();
    members.sort();
    assert_eq!(members, ["o1", "o2", "o3", "o4", "o5"]);
    assert_eq!(set.state().await, SetState::Synced(NOW));
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
    due_offers_expire_once_and_the_cached_detail_is_invalidated,
    an_offer_the_set_missed_is_expired_on_time_through_the_index_check,
    two_runs_at_once_expire_each_offer_once_and_count_the_loser,
    the_run_after_a_crash_finishes_the_work_once,
    an_extension_racing_the_job_wins,
    orphans_and_missing_members_are_reconciled,
);

#[tokio::test]
async fn redis_stopped_during_a_run_costs_nothing_and_the_next_run_rebuilds_the_set() {
    let port = RedisServer::free_port();
    let server = Arc::new(Mutex::new(RedisServer::start(port, &[])));
    let node = server.lock().unwrap().node();
    let config = RedisConfig {
        command_timeout: Duration::from_millis(200),
        ..RedisConfig::standalone(node)
    };
    let env = Env::new(config, 10, 6).await;
    let stopper = server.clone();
    let deps = env.deps_with_hook(Arc::new(move |_, _| {
        stopper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stop();
        Box::pin(async {})
    }));

    let during = expire_once(&deps, &options(), NOW, None).await;
    assert_eq!(
        during.source,
        Some(DueSource::Set),
        "Redis was up when it listed"
    );
    assert_eq!((during.expired, during.errors), (6, 0));
    env.assert_expired_once(6).await;

    // Redis comes back empty (no persistence): the set is not trusted, the index answers,
    // and the run puts the set back in step.
    server.lock().unwrap().restart(&[]);
    let set = ExpirySet::new(&env.cache);
    for _ in 0..50 {
        if set.state().await != SetState::Unavailable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        set.state().await,
        SetState::Unsynced,
        "Redis is back, and empty"
    );
    let after = expire_once(&env.deps(), &options(), NOW + 2 * MINUTE, None).await;
    assert_eq!(after.source, Some(DueSource::Index));
    assert!(after.reconciled, "{after:?}");
    assert_eq!(after.expired, 0);
    assert_eq!(after.members_added, 4);
    assert_eq!(after.lag_ms, 0, "nothing was due");
    assert!(matches!(
        ExpirySet::new(&env.cache).state().await,
        SetState::Synced(_)
    ));
}

#[tokio::test]
async fn the_lease_on_dynamodb_admits_one_run_and_is_taken_over_once_it_lapses() {
    let env = spawn_dynamo_env().await;
    let store = env.store;
    let first = store
        .acquire_lease(JOB, "run-a", NOW, NOW + MINUTE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .acquire_lease(JOB, "run-b", NOW + 1_000, NOW + MINUTE)
            .await
            .unwrap()
            .is_none(),
        "a second run skips"
    );
    let second = store
        .acquire_lease(JOB, "run-b", NOW + MINUTE, NOW + 2 * MINUTE)
        .await
        .unwrap()
        .expect("a lapsed lease is taken over");
    assert_eq!(second.fence, first.fence + 1);
    // The lapsed holder cannot release the new holder's lease.
    store.release_lease(&first).await.unwrap();
    assert!(
        store
            .acquire_lease(JOB, "run-c", NOW + MINUTE + 1, NOW + 3 * MINUTE)
            .await
            .unwrap()
            .is_none()
    );
    store.release_lease(&second).await.unwrap();
    assert!(
        store
            .acquire_lease(JOB, "run-c", NOW + MINUTE + 1, NOW + 3 * MINUTE)
            .await
            .unwrap()
            .is_some()
    );

    // Through the job: a run that finds the lease held records a skip.
    let cache = Cache::new(CacheOptions::default(), None, ManualClock::at(NOW));
    let store = Arc::new(store);
    let deps = ExpiryDeps {
        catalog: store.clone(),
        stats: store.clone(),
        cache,
    };
    let skipped = expire_once(&deps, &options(), NOW + MINUTE + 2, None).await;
    assert!(skipped.skipped_reason.is_some());
    let history = store.run_history(JOB, 5).await.unwrap();
    assert_eq!(history[0].outcome, RunOutcome::Skipped);
    assert!(
        store.last_runs().await.unwrap().is_empty(),
        "a skip is never the last run"
    );
}

#[tokio::test]
async fn the_scheduled_fixture_runs_the_function_handler_on_dynamodb() {
    let env = Env::with_l2(None, 4, 2).await;
    let event: serde_json::Value = serde_json::from_str(include_str!(
        "../fixtures/eventbridge-scheduled-offer-expiry.json"
    ))
    .unwrap();
    let clock = ManualClock::at(NOW);
    let outcome =
        offer_expiry::handle(&event, u64::MAX, &env.deps(), &options(), clock.as_ref()).await;
    let offer_expiry::Outcome::Ran(report) = outcome else {
        panic!("the schedule did not run the job: {outcome:?}")
    };
    assert_eq!((report.expired, report.errors), (2, 0));
    assert_eq!(report.source, Some(DueSource::Index), "no Redis configured");
    env.assert_expired_once(2).await;
    let ignored = offer_expiry::handle(
        &serde_json::json!({"detail-type": "Object Created", "source": "aws.s3"}),
        u64::MAX,
        &env.deps(),
        &options(),
        clock.as_ref(),
    )
    .await;
    assert!(matches!(ignored, offer_expiry::Outcome::Ignored { .. }));
}
