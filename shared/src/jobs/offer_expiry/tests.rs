//! The offer-expiry job over the in-memory adapters, with paused time and an injected `now`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::cache::l2::L2Store;
use crate::cache::l2::memory::MemoryL2;
use crate::cache::{CacheOptions, Source};
use crate::clock::ManualClock;
use crate::error::ExpectedVersion;
use crate::expiry_set::SYNCED_MARKER;
use crate::model::{Currency, Money, Product};
use crate::reads;
use crate::store::latency::LatencyShim;
use crate::store::memory::MemoryStore;
use crate::store::{OfferWriter, ProductReader, ProductWriter, StatsReader};

/// 2026-11-20 10:30 UTC.
const NOW: i64 = 1_795_602_600_000;
const MINUTE: i64 = 60_000;

fn pid(raw: &str) -> ProductId {
    ProductId::parse(raw).unwrap()
}

fn oid(raw: &str) -> OfferId {
    OfferId::parse(raw).unwrap()
}

fn product(id: &str) -> Product {
    Product {
        id: pid(id),
        name: format!("Product {id}"),
        description: String::new(),
        category: "misc".into(),
        price: Money::new(1000, Currency::parse("EUR").unwrap()),
        active: true,
        created_at: NOW - 86_400_000,
        updated_at: NOW - 86_400_000,
        version: 0,
    }
}

fn offer(product: &str, id: &str, expires_at: i64) -> Offer {
    Offer {
        id: oid(id),
        product_id: pid(product),
        status: OfferStatus::Active,
        price: Money::new(800, Currency::parse("EUR").unwrap()),
        expires_at,
        created_at: NOW - 86_400_000,
        updated_at: NOW - 86_400_000,
        version: 0,
    }
}

struct Fixture {
    store: Arc<MemoryStore>,
    l2: Arc<MemoryL2>,
    cache: Cache,
}

impl Fixture {
    /// Products `p0..p<products>`, each with the given offers (`(id suffix, expires_at)`),
    /// tracked in a synced expiry set, as the API would have left them.
    async fn new(products: usize, offers: &[(&str, i64)]) -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let l2 = Arc::new(MemoryL2::new());
        let cache = Cache::new(
            CacheOptions::default(),
            Some(l2.clone() as Arc<dyn L2Store>),
            ManualClock::at(NOW),
        );
        let set = ExpirySet::new(&cache);
        for p in 0..products {
            let product_id = format!("p{p}");
            store
                .put_product(&product(&product_id), ExpectedVersion::Absent)
                .await
                .unwrap();
            for (suffix, expires_at) in offers {
                let stored = store
                    .put_offer(
                        &offer(&product_id, &format!("o{p}-{suffix}"), *expires_at),
                        ExpectedVersion::Absent,
                    )
                    .await
                    .unwrap();
                assert!(set.follow(&stored).await);
            }
        }
        assert!(set.mark_synced(NOW - MINUTE).await);
        Fixture { store, l2, cache }
    }

    fn deps(&self) -> ExpiryDeps {
        ExpiryDeps {
            catalog: self.store.clone(),
            stats: self.store.clone(),
            cache: self.cache.clone(),
        }
    }

    fn set(&self) -> ExpirySet {
        ExpirySet::new(&self.cache)
    }

    async fn offer(&self, id: &str) -> Offer {
        self.store.offer(&oid(id)).await.unwrap().unwrap()
    }

    /// Every offer's version must be its creation version (1) plus one if it expired:
    /// an offer expired twice would show 3.
    async fn assert_each_expired_once(&self, ids: &[String]) {
        for id in ids {
            let o = self.offer(id).await;
            assert_eq!(
                (o.status, o.version),
                (OfferStatus::Expired, 2),
                "offer {id} was not expired exactly once"
            );
        }
    }
}

fn ids(products: usize, suffix: &str) -> Vec<String> {
    (0..products).map(|p| format!("o{p}-{suffix}")).collect()
}

#[tokio::test(start_paused = true)]
async fn due_offers_are_expired_leave_the_index_and_the_set_and_their_product_is_invalidated() {
    let f = Fixture::new(2, &[("due", NOW - 30_000), ("later", NOW + 10 * MINUTE)]).await;
    let catalog: Arc<dyn ProductReader> = f.store.clone();
    let cached = reads::product_detail(&f.cache, &catalog, &pid("p0"))
        .await
        .unwrap();
    assert_eq!(cached.source, Source::Loaded);

    let report = expire_once(&f.deps(), &ExpiryOptions::default(), NOW, None).await;

    assert_eq!(report.source, Some(DueSource::Set));
    assert_eq!((report.due, report.expired, report.errors), (2, 2, 0));
    assert_eq!(report.lag_ms, 30_000);
    assert_eq!(report.invalidated, 2);
    f.assert_each_expired_once(&ids(2, "due")).await;
    assert_eq!(f.offer("o0-later").await.status, OfferStatus::Active);
    assert!(
        f.store
            .expiring(NOW, 10)
            .await
            .unwrap()
            .iter()
            .all(|o| o.expires_at > NOW)
    );
    let members: Vec<String> = f
        .set()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.offer_id.to_string())
        .collect();
    assert_eq!(members, ["o0-later", "o1-later"]);
    let reread = reads::product_detail(&f.cache, &catalog, &pid("p0"))
        .await
        .unwrap();
    assert_eq!(
        reread.source,
        Source::Loaded,
        "the cached detail was invalidated"
    );
    let offer = reread
        .value
        .unwrap()
        .offers
        .iter()
        .find(|o| o.id.as_str() == "o0-due")
        .cloned()
        .unwrap();
    assert_eq!(offer.status, OfferStatus::Expired);

    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!(run.job, JOB);
    assert_eq!(run.outcome, RunOutcome::Succeeded);
    assert_eq!(run.counts["expired"], 2);
    assert_eq!(run.lag_ms, Some(30_000));
}

#[tokio::test(start_paused = true)]
async fn two_runs_at_once_without_the_lease_still_expire_each_offer_exactly_once() {
    let f = Fixture::new(20, &[("due", NOW - MINUTE)]).await;
    // Every store call takes a while, so both runs list the same due offers before either
    // writes: only the conditional write can keep them from expiring an offer twice.
    let slow = Arc::new(LatencyShim::new(f.store.clone(), Duration::from_millis(3)));
    let deps = ExpiryDeps {
        catalog: slow.clone(),
        stats: slow,
        cache: f.cache.clone(),
    };
    let options = ExpiryOptions {
        concurrency: 4,
        ..ExpiryOptions::default()
    };
    let (mut a, mut b) = (ExpiryReport::default(), ExpiryReport::default());
    let (ra, rb) = tokio::join!(
        run(&deps, &options, NOW, None, &mut a),
        run(&deps, &options, NOW, None, &mut b)
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!((a.due, b.due), (20, 20), "both runs saw every due offer");
    assert_eq!(a.expired + b.expired, 20);
    assert_eq!(
        a.expired + a.already_expired,
        20,
        "each loss counted: {a:?}"
    );
    assert_eq!(
        b.expired + b.already_expired,
        20,
        "each loss counted: {b:?}"
    );
    f.assert_each_expired_once(&ids(20, "due")).await;
}

#[tokio::test(start_paused = true)]
async fn an_overlapping_run_skips_on_the_lease_and_says_so() {
    let f = Fixture::new(5, &[("due", NOW - MINUTE)]).await;
    let slow = Arc::new(LatencyShim::new(f.store.clone(), Duration::from_millis(3)));
    let deps = ExpiryDeps {
        catalog: slow.clone(),
        stats: slow,
        cache: f.cache.clone(),
    };
    let options = ExpiryOptions::default();
    let (first, second) = tokio::join!(expire_once(&deps, &options, NOW, None), async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        expire_once(&deps, &options, NOW + 1_000, None).await
    });
    assert_eq!(first.expired, 5);
    assert_eq!(
        second.skipped_reason.as_deref(),
        Some(lease::HELD_ELSEWHERE)
    );
    let history = f.store.run_history(JOB, 10).await.unwrap();
    assert_eq!(history[0].outcome, RunOutcome::Skipped);
    assert_eq!(f.store.last_runs().await.unwrap()[0].started_at, NOW);
}

/// What runs just before each of the job's expiry writes.
type Hook = Arc<
    dyn Fn(Arc<MemoryStore>, OfferId, EpochMillis) -> futures::future::BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// The in-memory catalog with a hook before every expiry write: a crash or a racing
/// extension, at a known point of the run.
struct BeforeEachExpiry {
    inner: Arc<MemoryStore>,
    hook: Hook,
}

#[async_trait]
impl OfferReader for BeforeEachExpiry {
    async fn offer(&self, id: &OfferId) -> crate::Result<Option<Offer>> {
        self.inner.offer(id).await
    }
    async fn offers(&self, keys: &[(ProductId, OfferId)]) -> crate::Result<Vec<Offer>> {
        self.inner.offers(keys).await
    }
}

#[async_trait]
impl ExpiryIndex for BeforeEachExpiry {
    async fn expiring(
        &self,
        until: EpochMillis,
        limit: usize,
    ) -> crate::Result<Vec<ExpiringOffer>> {
        self.inner.expiring(until, limit).await
    }
    async fn oldest_due(&self, until: EpochMillis) -> crate::Result<Vec<ExpiringOffer>> {
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
    ) -> crate::Result<bool> {
        (self.hook)(self.inner.clone(), offer.clone(), now).await;
        self.inner.expire_offer(product, offer, version, now).await
    }
}

impl Fixture {
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

#[tokio::test(start_paused = true)]
async fn a_run_that_crashes_half_way_is_finished_by_the_next_once_its_lease_lapses() {
    let f = Fixture::new(30, &[("due", NOW - MINUTE)]).await;
    // Every write after the 12th hangs: the function died there.
    let writes = Arc::new(AtomicUsize::new(0));
    let crashing = f.deps_with_hook(Arc::new(move |_, _, _| {
        let n = writes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n >= 12 {
                std::future::pending::<()>().await;
            }
        })
    }));
    let options = ExpiryOptions {
        concurrency: 1,
        ..ExpiryOptions::default()
    };
    let crashed = tokio::time::timeout(
        Duration::from_secs(5),
        expire_once(&crashing, &options, NOW, None),
    )
    .await;
    assert!(crashed.is_err(), "the first run never finished");

    // Its lease is still held: the next minute's run skips.
    let next = expire_once(&f.deps(), &options, NOW + MINUTE, None).await;
    assert!(next.skipped_reason.is_some());

    // Once the lease lapsed, a run takes over and expires only what is left.
    let after = expire_once(&f.deps(), &options, NOW + 3 * MINUTE, None).await;
    assert_eq!(after.skipped_reason, None);
    assert_eq!(after.expired, 18);
    f.assert_each_expired_once(&ids(30, "due")).await;
}

#[tokio::test(start_paused = true)]
async fn an_extension_that_lands_first_wins_and_is_counted() {
    let f = Fixture::new(1, &[("due", NOW - MINUTE)]).await;
    let deps = f.deps_with_hook(Arc::new(|store, offer, now| {
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
    let report = expire_once(&deps, &ExpiryOptions::default(), NOW, None).await;
    assert_eq!((report.expired, report.extended), (0, 1));
    let o = f.offer("o0-due").await;
    assert_eq!(
        (o.status, o.expires_at),
        (OfferStatus::Active, NOW + 3_600_000)
    );
    let member = &f.set().all().await.unwrap()[0];
    assert_eq!(
        member.expires_at,
        NOW + 3_600_000,
        "the set follows the extension"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_removes_orphans_and_adds_missing_members() {
    let f = Fixture::new(3, &[("later", NOW + 10 * MINUTE)]).await;
    let set = f.set();
    // An orphan: the offer was cancelled while Redis missed it. A missing member: an offer
    // created while Redis was away. And the marker is old, so a reconcile is due.
    let cancelled = f.offer("o0-later").await;
    f.store
        .put_offer(
            &Offer {
                status: OfferStatus::Cancelled,
                ..cancelled.clone()
            },
            ExpectedVersion::Exactly(cancelled.version),
        )
        .await
        .unwrap();
    set.untrack(&[member(&pid("p1"), &oid("o1-later"))]).await;
    set.mark_synced(NOW - 2 * 3_600_000).await;

    let report = expire_once(&f.deps(), &ExpiryOptions::default(), NOW, None).await;

    assert!(report.reconciled);
    assert_eq!(
        report.source,
        Some(DueSource::Set),
        "expiring first, then the reconcile"
    );
    assert_eq!((report.orphans_removed, report.members_added), (1, 1));
    let mut members: Vec<String> = set
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.offer_id.to_string())
        .collect();
    members.sort();
    assert_eq!(members, ["o1-later", "o2-later"]);
    assert_eq!(set.state().await, SetState::Synced(NOW));
    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!(
        (run.counts["orphans_removed"], run.counts["members_added"]),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn with_redis_down_the_job_works_from_the_index() {
    let f = Fixture::new(4, &[("due", NOW - MINUTE)]).await;
    f.l2.set_failing(true);
    let report = expire_once(&f.deps(), &ExpiryOptions::default(), NOW, None).await;
    assert_eq!(report.source, Some(DueSource::Index));
    assert_eq!((report.expired, report.errors), (4, 0));
    f.assert_each_expired_once(&ids(4, "due")).await;
}

#[tokio::test(start_paused = true)]
async fn a_flushed_set_is_rebuilt_from_the_index_in_the_same_run() {
    let f = Fixture::new(3, &[("due", NOW - MINUTE), ("later", NOW + MINUTE)]).await;
    f.l2.flush_all();
    let report = expire_once(&f.deps(), &ExpiryOptions::default(), NOW, None).await;
    assert_eq!(report.source, Some(DueSource::Index));
    assert!(report.reconciled);
    assert_eq!(report.expired, 3);
    assert_eq!(
        report.members_added, 3,
        "after expiring, every active offer went back in"
    );
    let remaining = f.set().all().await.unwrap();
    assert_eq!(remaining.len(), 3);
    assert!(
        remaining
            .iter()
            .all(|o| o.offer_id.as_str().ends_with("later"))
    );
    assert!(matches!(f.set().state().await, SetState::Synced(_)));
}

#[tokio::test(start_paused = true)]
async fn a_set_member_for_an_offer_cancelled_meanwhile_is_an_orphan_removed_unwritten() {
    let f = Fixture::new(1, &[("due", NOW - MINUTE)]).await;
    let current = f.offer("o0-due").await;
    // Cancelled behind the set's back (the API's untrack never reached Redis).
    f.store
        .put_offer(
            &Offer {
                status: OfferStatus::Cancelled,
                ..current.clone()
            },
            ExpectedVersion::Exactly(current.version),
        )
        .await
        .unwrap();
    let report = expire_once(&f.deps(), &ExpiryOptions::default(), NOW, None).await;
    assert_eq!(report.source, Some(DueSource::Set));
    assert_eq!(
        (report.expired, report.cancelled, report.orphans_removed),
        (0, 1, 1)
    );
    assert_eq!(f.offer("o0-due").await.status, OfferStatus::Cancelled);
    assert!(f.set().all().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_near_its_deadline_leaves_the_rest_for_the_next_run() {
    let f = Fixture::new(50, &[("due", NOW - MINUTE)]).await;
    let slow = Arc::new(LatencyShim::new(
        f.store.clone(),
        Duration::from_millis(100),
    ));
    let deps = ExpiryDeps {
        catalog: slow.clone(),
        stats: f.store.clone(),
        cache: f.cache.clone(),
    };
    let options = ExpiryOptions {
        concurrency: 1,
        chunk: 10,
        stop_before: Duration::from_secs(1),
        ..ExpiryOptions::default()
    };
    // Each chunk of 10 takes a read (100 ms) and 10 writes (1 s). A chunk starts only with
    // more than `stop_before` (1 s) left: at 0 s and 1.1 s, not at 2.2 s.
    let deadline = Instant::now() + Duration::from_millis(2_500);
    let first = expire_once(&deps, &options, NOW, Some(deadline)).await;
    assert_eq!(first.expired, 20);
    assert_eq!(first.left_for_next_run, 30);
    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!((run.outcome, run.skipped), (RunOutcome::Partial, 30));

    let second = expire_once(&f.deps(), &options, NOW + MINUTE, None).await;
    assert_eq!(second.expired, 30);
    f.assert_each_expired_once(&ids(50, "due")).await;
}

#[tokio::test(start_paused = true)]
async fn a_due_offer_the_set_missed_is_caught_by_the_index_check_and_expired_on_time() {
    let f = Fixture::new(3, &[("due", NOW - 5 * MINUTE)]).await;
    // The API stored o1-due but its set update never arrived; the marker is recent.
    f.set().untrack(&[member(&pid("p1"), &oid("o1-due"))]).await;
    let report = expire_once(&f.deps(), &ExpiryOptions::default(), NOW, None).await;
    assert_eq!(report.set_missed, 1);
    assert_eq!(report.source, Some(DueSource::Index));
    assert_eq!(report.expired, 3);
    assert_eq!(report.lag_ms, 5 * 60_000, "the lag comes from the index");
    assert!(
        report.reconciled,
        "a set found missing is reconciled in the same run"
    );
    f.assert_each_expired_once(&ids(3, "due")).await;
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_every_write_fails_is_a_failure_for_health() {
    let f = Fixture::new(2, &[("due", NOW - MINUTE)]).await;
    let store = f.store.clone();
    let deps = f.deps_with_hook(Arc::new(move |_, _, _| {
        store.set_unavailable(true);
        Box::pin(async {})
    }));
    let report = expire_once(&deps, &ExpiryOptions::default(), NOW, None).await;
    f.store.set_unavailable(false);
    assert_eq!((report.expired, report.errors), (0, 2));
    assert_eq!(
        report.outcome,
        Some(RunOutcome::Failed),
        "not a partial success that would keep health quiet"
    );
}

#[tokio::test]
async fn the_marker_is_not_an_offer() {
    let f = Fixture::new(1, &[("due", NOW - MINUTE)]).await;
    // The marker's score (NOW - 1 min) is due too, yet never taken for an offer.
    let due = f.set().due(NOW, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(due.iter().all(|o| o.offer_id.as_str() != SYNCED_MARKER));
}
