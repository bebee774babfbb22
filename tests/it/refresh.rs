//! The refresh job end to end on DynamoDB (moto) and Redis.

use std::sync::Arc;

use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Source};
use catalog_core::clock::ManualClock;
use catalog_core::jobs::refresh::{RefreshDeps, RefreshOptions, refresh_once};
use catalog_core::model::{CounterBucket, FeedKind, RunOutcome};
use catalog_core::reads;
use catalog_core::store::{ProductReader, ProductWriter, StatsReader, ViewCounters};
use integration_tests::{connect, standalone_config, unique_name};

use crate::helpers::{NOW, id, product, spawn_dynamo_env};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

#[tokio::test]
async fn a_run_on_dynamodb_and_redis_computes_stats_ranks_feeds_and_warms_the_cache() {
    let env = spawn_dynamo_env().await;
    let store = Arc::new(env.store.clone());
    for (i, raw) in ["a", "b", "c"].iter().enumerate() {
        let mut p = product(raw);
        p.created_at = NOW - DAY + i as i64 * HOUR;
        store
            .put_product(&p, ExpectedVersion::Absent)
            .await
            .unwrap();
    }
    let mut inactive = product("gone");
    inactive.active = false;
    store
        .put_product(&inactive, ExpectedVersion::Absent)
        .await
        .unwrap();
    // b: 7 views an hour ago; c: 3 views today, 100 views 31 days ago (out of every period).
    store
        .add_views(&id("b"), CounterBucket::hour_of(NOW - HOUR), 7)
        .await
        .unwrap();
    store
        .add_views(&id("b"), CounterBucket::day_of(NOW - HOUR), 7)
        .await
        .unwrap();
    store
        .add_views(&id("c"), CounterBucket::hour_of(NOW), 3)
        .await
        .unwrap();
    store
        .add_views(&id("c"), CounterBucket::day_of(NOW), 3)
        .await
        .unwrap();
    store
        .add_views(&id("c"), CounterBucket::day_of(NOW - 31 * DAY), 100)
        .await
        .unwrap();

    let clock = ManualClock::at(NOW);
    let cache = Cache::new(
        CacheOptions {
            key_prefix: format!("{}:", unique_name("refresh")),
            ..CacheOptions::default()
        },
        Some(Arc::new(RedisL2::new(connect(&standalone_config()).await)) as Arc<dyn L2Store>),
        clock.clone(),
    );
    let deps = RefreshDeps {
        catalog: store.clone(),
        stats: store.clone(),
        cache: cache.clone(),
    };

    let report = refresh_once(&deps, &RefreshOptions::default(), NOW, None).await;

    assert_eq!(
        (
            report.refreshed,
            report.skipped,
            report.errors,
            report.feeds_ranked
        ),
        (3, 1, 0, 2),
        "{report:?}"
    );
    let c = store.period_stats(&id("c")).await.unwrap().unwrap();
    assert_eq!((c.views_1h, c.views_24h, c.views_30d), (3, 3, 3));
    let trending = store.feed(FeedKind::Trending).await.unwrap().unwrap();
    assert_eq!(trending.ids, [id("b"), id("c"), id("a")]);
    let runs = store.last_runs().await.unwrap();
    assert_eq!(
        (runs[0].outcome, runs[0].processed),
        (RunOutcome::Succeeded, 3)
    );

    // A reader in another environment is answered by Redis, not DynamoDB.
    let reader = Cache::new(
        CacheOptions {
            key_prefix: cache.keys().prefix().to_owned(),
            ..CacheOptions::default()
        },
        Some(Arc::new(RedisL2::new(connect(&standalone_config()).await)) as Arc<dyn L2Store>),
        clock,
    );
    let catalog: Arc<dyn ProductReader> = store.clone();
    let stats: Arc<dyn StatsReader> = store.clone();
    assert_eq!(
        reads::product_detail(&reader, &catalog, &id("b"))
            .await
            .unwrap()
            .source,
        Source::L2
    );
    assert_eq!(
        reads::period_stats(&reader, &stats, &id("b"))
            .await
            .unwrap()
            .value
            .unwrap()
            .views_24h,
        7
    );
    let ranking = reads::ranked_feed(&reader, &stats, FeedKind::New)
        .await
        .unwrap();
    assert_eq!(ranking.source, Source::L2);
    assert_eq!(ranking.value.unwrap().ids[0], id("c"), "newest first");
}
