//! The refresh job over the in-memory adapters, with paused time and an injected `now`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::cache::l2::L2Store;
use crate::cache::l2::memory::MemoryL2;
use crate::cache::{CacheOptions, Source};
use crate::clock::ManualClock;
use crate::error::{Error, ExpectedVersion};
use crate::model::{CounterBucket, Currency, Money};
use crate::store::latency::LatencyShim;
use crate::store::memory::MemoryStore;
use crate::store::{JobLeases, ProductWriter, StatsReader, StatsWriter, ViewCounters};

/// 2026-11-20 10:30 UTC.
const NOW: i64 = 1_795_602_600_000;
const HOUR: i64 = 3_600_000;

fn product(id: &str, active: bool, created_at: i64) -> Product {
    Product {
        id: ProductId::parse(id).unwrap(),
        name: format!("Product {id}"),
        description: String::new(),
        category: "misc".into(),
        price: Money::new(100, Currency::parse("EUR").unwrap()),
        active,
        created_at,
        updated_at: created_at,
        version: 0,
    }
}

fn id(raw: &str) -> ProductId {
    ProductId::parse(raw).unwrap()
}

struct Fixture {
    store: Arc<MemoryStore>,
    l2: Arc<MemoryL2>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new(products: &[(&str, bool, u64)]) -> Fixture {
        let store = Arc::new(MemoryStore::new());
        for (i, (raw, active, views_24h)) in products.iter().enumerate() {
            let created = NOW - 86_400_000 * 10 + i as i64 * HOUR;
            store
                .put_product(&product(raw, *active, created), ExpectedVersion::Absent)
                .await
                .unwrap();
            if *views_24h > 0 {
                store
                    .add_views(&id(raw), CounterBucket::hour_of(NOW - 2 * HOUR), *views_24h)
                    .await
                    .unwrap();
                store
                    .add_views(&id(raw), CounterBucket::day_of(NOW), *views_24h)
                    .await
                    .unwrap();
            }
        }
        Fixture {
            store,
            l2: Arc::new(MemoryL2::new()),
            clock: ManualClock::at(NOW),
        }
    }

    fn cache(&self) -> Cache {
        Cache::new(
            CacheOptions {
                jitter: 0.0,
                ..CacheOptions::default()
            },
            Some(self.l2.clone() as Arc<dyn L2Store>),
            self.clock.clone(),
        )
    }

    fn deps(&self) -> RefreshDeps {
        RefreshDeps {
            catalog: self.store.clone(),
            stats: self.store.clone(),
            cache: self.cache(),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_refreshes_every_active_product_ranks_the_feeds_and_records_itself() {
    let f = Fixture::new(&[
        ("a", true, 5),
        ("b", true, 50),
        ("c", false, 500),
        ("d", true, 0),
    ])
    .await;
    let deps = f.deps();

    let report = refresh_once(&deps, &RefreshOptions::default(), NOW, None).await;

    assert_eq!((report.refreshed, report.skipped, report.errors), (3, 1, 0));
    assert_eq!(report.feeds_ranked, 2);
    // stats, summary and detail per product, and the two rankings.
    assert_eq!(report.entries_written, 3 * 3 + 2);
    let stats = f.store.period_stats(&id("b")).await.unwrap().unwrap();
    assert_eq!(
        (stats.views_24h, stats.views_30d, stats.computed_at),
        (50, 50, NOW)
    );
    let trending = f.store.feed(FeedKind::Trending).await.unwrap().unwrap();
    assert_eq!(
        trending.ids,
        [id("b"), id("a"), id("d")],
        "inactive c is not ranked"
    );
    let newest = f.store.feed(FeedKind::New).await.unwrap().unwrap();
    assert_eq!(newest.ids, [id("d"), id("b"), id("a")]);

    // Everything is in the cache: a reader is answered without touching the store.
    let cache = f.deps().cache;
    let catalog: Arc<dyn ProductReader> = f.store.clone();
    let detail = reads::product_detail(&cache, &catalog, &id("a"))
        .await
        .unwrap();
    assert_eq!(detail.source, Source::L2);
    let stats_reader: Arc<dyn crate::store::StatsReader> = f.store.clone();
    let ranking = reads::ranked_feed(&cache, &stats_reader, FeedKind::Trending)
        .await
        .unwrap();
    assert_eq!(ranking.source, Source::L2);

    let last = f.store.last_runs().await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].outcome, last[0].processed, last[0].started_at),
        (RunOutcome::Succeeded, 3, NOW)
    );
    assert!(f.store.cursor(JOB).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_most_popular_products_are_refreshed_first() {
    let f = Fixture::new(&[("a", true, 1), ("b", true, 3), ("c", true, 2)]).await;
    // A previous run ranked them.
    f.store
        .put_feed(&RankedFeed {
            kind: FeedKind::Trending,
            ids: vec![id("b"), id("c"), id("a")],
            computed_at: NOW - HOUR,
        })
        .await
        .unwrap();
    let deps = f.deps();
    // A deadline that leaves room for exactly one product (each costs 0 ms here, so stop
    // after the first by making the second start past the deadline).
    let options = RefreshOptions {
        concurrency: 1,
        stop_before: Duration::ZERO,
        ..RefreshOptions::default()
    };
    let report = refresh_once(&deps, &options, NOW, Some(Instant::now())).await;
    assert_eq!(report.refreshed, 0);
    assert_eq!(
        report.next_cursor.as_deref(),
        Some("b"),
        "the most viewed product comes first"
    );
}

/// A stats store whose counters fail for one product.
struct FailingFor(Arc<MemoryStore>, ProductId);

#[async_trait]
impl ViewCounters for FailingFor {
    async fn add_views(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
    ) -> crate::Result<()> {
        self.0.add_views(product, bucket, count).await
    }

    async fn add_views_once(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
        mark: &crate::store::CounterMark<'_>,
    ) -> crate::Result<bool> {
        self.0.add_views_once(product, bucket, count, mark).await
    }

    async fn counter_mark(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        shard: &str,
    ) -> crate::Result<Option<String>> {
        self.0.counter_mark(product, bucket, shard).await
    }

    async fn view_counters(&self, product: &ProductId) -> crate::Result<Vec<(CounterBucket, u64)>> {
        if *product == self.1 {
            return Err(Error::Timeout {
                op: "Query",
                after: Duration::from_secs(1),
            });
        }
        self.0.view_counters(product).await
    }
}

#[async_trait]
impl StatsReader for FailingFor {
    async fn period_stats(&self, p: &ProductId) -> crate::Result<Option<PeriodStats>> {
        self.0.period_stats(p).await
    }
    async fn feed(&self, kind: FeedKind) -> crate::Result<Option<RankedFeed>> {
        self.0.feed(kind).await
    }
    async fn last_runs(&self) -> crate::Result<Vec<JobRun>> {
        self.0.last_runs().await
    }
    async fn run_history(&self, job: &str, limit: usize) -> crate::Result<Vec<JobRun>> {
        self.0.run_history(job, limit).await
    }
    async fn cursor(&self, job: &str) -> crate::Result<Option<String>> {
        self.0.cursor(job).await
    }
}

#[async_trait]
impl StatsWriter for FailingFor {
    async fn put_period_stats(&self, p: &ProductId, s: &PeriodStats) -> crate::Result<()> {
        self.0.put_period_stats(p, s).await
    }
    async fn put_feed(&self, feed: &RankedFeed) -> crate::Result<()> {
        self.0.put_feed(feed).await
    }
    async fn record_run(&self, run: &JobRun) -> crate::Result<()> {
        self.0.record_run(run).await
    }
    async fn set_cursor(&self, job: &str, cursor: Option<&str>) -> crate::Result<()> {
        self.0.set_cursor(job, cursor).await
    }
}

#[async_trait]
impl JobLeases for FailingFor {
    async fn acquire_lease(
        &self,
        job: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> crate::Result<Option<crate::model::Lease>> {
        self.0.acquire_lease(job, holder, now, until).await
    }
    async fn release_lease(&self, lease: &crate::model::Lease) -> crate::Result<()> {
        self.0.release_lease(lease).await
    }
}

#[tokio::test(start_paused = true)]
async fn one_failing_product_is_counted_and_the_run_goes_on() {
    let f = Fixture::new(&[("a", true, 1), ("b", true, 2), ("c", true, 3)]).await;
    let deps = RefreshDeps {
        stats: Arc::new(FailingFor(f.store.clone(), id("b"))),
        ..f.deps()
    };
    let report = refresh_once(&deps, &RefreshOptions::default(), NOW, None).await;
    assert_eq!((report.refreshed, report.errors), (2, 1));
    assert!(f.store.period_stats(&id("c")).await.unwrap().is_some());
    assert_eq!(
        f.store.last_runs().await.unwrap()[0].outcome,
        RunOutcome::Partial
    );
    assert_eq!(report.feeds_ranked, 2, "the feeds are still ranked");
}

#[tokio::test(start_paused = true)]
async fn a_run_stops_before_its_deadline_and_the_next_resumes_from_the_cursor() {
    let names: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let products: Vec<(&str, bool, u64)> = names.iter().map(|n| (n.as_str(), true, 1)).collect();
    let f = Fixture::new(&products).await;
    // Every store call takes 10 ms: a product (counters, stats write, detail) takes 30 ms.
    let slow = Arc::new(LatencyShim::new(f.store.clone(), Duration::from_millis(10)));
    let deps = RefreshDeps {
        catalog: slow.clone(),
        stats: slow.clone(),
        cache: f.cache(),
    };
    let options = RefreshOptions {
        concurrency: 1,
        stop_before: Duration::from_millis(100),
        ..RefreshOptions::default()
    };
    // Listing and ranking lookups take 30 ms; with 100 ms kept back, ~3 products fit.
    let deadline = Instant::now() + Duration::from_millis(220);

    let first = refresh_once(&deps, &options, NOW, Some(deadline)).await;

    assert!(first.refreshed >= 1 && first.refreshed < 10, "{first:?}");
    let cursor = first.next_cursor.clone().unwrap();
    assert_eq!(first.skipped, 10 - first.refreshed);
    assert_eq!(
        first.feeds_ranked, 0,
        "an interrupted run leaves the previous ranking"
    );
    assert!(Instant::now() <= deadline, "stopped before the deadline");
    assert_eq!(f.store.cursor(JOB).await.unwrap(), Some(cursor.clone()));
    assert_eq!(
        f.store.last_runs().await.unwrap()[0].outcome,
        RunOutcome::Partial
    );

    let second = refresh_once(&deps, &options, NOW + 60_000, None).await;
    assert_eq!(second.resumed_from, Some(cursor));
    assert_eq!(first.refreshed + second.refreshed, 10);
    assert_eq!(second.feeds_ranked, 2);
    let trending = f.store.feed(FeedKind::Trending).await.unwrap().unwrap();
    assert_eq!(trending.ids.len(), 10, "products of both runs are ranked");
    assert!(f.store.cursor(JOB).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_run_that_overlaps_another_skips_and_the_runner_stays_the_last_run() {
    let f = Fixture::new(&[("a", true, 1), ("b", true, 2)]).await;
    let slow = Arc::new(LatencyShim::new(f.store.clone(), Duration::from_millis(5)));
    let deps = RefreshDeps {
        catalog: slow.clone(),
        stats: slow.clone(),
        cache: f.cache(),
    };
    let options = RefreshOptions::default();
    // The second run starts while the first holds the lease.
    let (first, second) = tokio::join!(refresh_once(&deps, &options, NOW, None), async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        refresh_once(&deps, &options, NOW + 1_000, None).await
    });
    assert_eq!(first.refreshed, 2);
    assert_eq!(second.refreshed, 0);
    assert_eq!(
        second.skipped_reason.as_deref(),
        Some(lease::HELD_ELSEWHERE)
    );
    let last = f.store.last_runs().await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        last[0].started_at, NOW,
        "a skip never hides the run that worked"
    );
    let history = f.store.run_history(JOB, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].outcome, RunOutcome::Skipped);
}

#[tokio::test(start_paused = true)]
async fn a_lease_left_by_a_crashed_run_is_taken_over_once_it_lapses() {
    let f = Fixture::new(&[("a", true, 1)]).await;
    // A run that died holding the lease for ten minutes.
    f.store
        .acquire_lease(JOB, "crashed", NOW, NOW + 600_000)
        .await
        .unwrap()
        .unwrap();
    let deps = f.deps();
    let blocked = refresh_once(&deps, &RefreshOptions::default(), NOW + 60_000, None).await;
    assert!(blocked.skipped_reason.is_some());
    let after = refresh_once(&deps, &RefreshOptions::default(), NOW + 600_001, None).await;
    assert_eq!((after.refreshed, after.skipped_reason), (1, None));
}

#[tokio::test(start_paused = true)]
async fn the_revalidation_queue_is_drained() {
    let f = Fixture::new(&[("a", true, 1)]).await;
    let cache = f.cache();
    let catalog: Arc<dyn ProductReader> = f.store.clone();
    reads::product_detail(&cache, &catalog, &id("a"))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(301)); // stale
    // The API answers stale; its revalidation, after the response, queues the key and then
    // fails to load it (DynamoDB unavailable), so the key stays queued for the job.
    let reader = f.cache();
    let key = reader.keys().product(&id("a"));
    let stale = reader
        .get_or_load(&key, || async {
            Err::<Option<crate::model::ProductDetail>, _>(crate::Error::Timeout {
                op: "Query",
                after: Duration::from_secs(3),
            })
        })
        .await
        .unwrap();
    assert_eq!(stale.source, Source::Stale);
    stale.revalidation.unwrap().run().await;
    let queued = cache.pending_revalidations(10).await;
    assert_eq!(queued.len(), 1);

    let deps = f.deps();
    let report = refresh_once(&deps, &RefreshOptions::default(), NOW + 301_000, None).await;
    assert_eq!(report.revalidated, 1);
    assert!(cache.pending_revalidations(10).await.is_empty());
}
