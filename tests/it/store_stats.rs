//! The views and stats tables against moto.

use catalog_core::model::{
    CounterBucket, EventId, FeedKind, JobRun, PeriodStats, RankedFeed, RunOutcome, ViewEvent,
};
use catalog_core::store::{StatsReader, StatsWriter, ViewCounters, ViewRecorder};

use crate::helpers::{NOW, id, spawn_dynamo_env};

#[tokio::test]
async fn a_retried_view_event_is_stored_once() {
    let env = spawn_dynamo_env().await;
    let event = ViewEvent {
        event_id: EventId::parse("evt-1").unwrap(),
        product_id: id("p1"),
        viewed_at: NOW,
    };
    assert!(env.store.record_view(&event).await.unwrap());
    assert!(!env.store.record_view(&event).await.unwrap());
}

#[tokio::test]
async fn counters_accumulate_per_bucket() {
    let env = spawn_dynamo_env().await;
    let hour = CounterBucket::hour_of(NOW);
    let day = CounterBucket::day_of(NOW);
    env.store.add_views(&id("p1"), hour, 3).await.unwrap();
    env.store.add_views(&id("p1"), hour, 4).await.unwrap();
    env.store.add_views(&id("p1"), day, 7).await.unwrap();
    env.store.add_views(&id("p2"), hour, 100).await.unwrap();

    let mut counters = env.store.view_counters(&id("p1")).await.unwrap();
    counters.sort();
    assert_eq!(counters, [(hour, 7), (day, 7)]);
}

#[tokio::test]
async fn stats_and_feeds_round_trip() {
    let env = spawn_dynamo_env().await;
    let stats = PeriodStats {
        views_1h: 1,
        views_24h: 24,
        views_7d: 70,
        views_30d: 300,
        computed_at: NOW,
    };
    env.store.put_period_stats(&id("p1"), &stats).await.unwrap();
    assert_eq!(
        env.store.period_stats(&id("p1")).await.unwrap(),
        Some(stats)
    );
    assert_eq!(env.store.period_stats(&id("p2")).await.unwrap(), None);

    let feed = RankedFeed {
        kind: FeedKind::Trending,
        ids: vec![id("b"), id("a")],
        computed_at: NOW,
    };
    env.store.put_feed(&feed).await.unwrap();
    assert_eq!(
        env.store.feed(FeedKind::Trending).await.unwrap(),
        Some(feed)
    );
    assert_eq!(env.store.feed(FeedKind::New).await.unwrap(), None);
}

fn run(job: &str, started_at: i64) -> JobRun {
    let mut run = JobRun::new(job, started_at, RunOutcome::Succeeded);
    run.duration_ms = 10;
    run.processed = 5;
    run.entries_written = 10;
    run.counts.insert("expired".into(), 3);
    run.lag_ms = Some(1_500);
    run
}

#[tokio::test]
async fn the_last_run_is_the_latest_started_whatever_the_finishing_order() {
    let env = spawn_dynamo_env().await;
    env.store
        .record_run(&run("refresh", NOW + 1_000))
        .await
        .unwrap();
    env.store.record_run(&run("refresh", NOW)).await.unwrap(); // an older run finishing late
    env.store
        .record_run(&run("offer-expiry", NOW))
        .await
        .unwrap();

    let mut last = env.store.last_runs().await.unwrap();
    last.sort_by(|a, b| a.job.cmp(&b.job));
    assert_eq!(last.len(), 2);
    assert_eq!(last[1].job, "refresh");
    assert_eq!(last[1].started_at, NOW + 1_000);

    env.store.set_cursor("refresh", Some("p42")).await.unwrap();
    let history = env.store.run_history("refresh", 10).await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.started_at).collect::<Vec<_>>(),
        [NOW + 1_000, NOW]
    );
    assert_eq!(
        env.store.cursor("refresh").await.unwrap().as_deref(),
        Some("p42")
    );
    env.store.set_cursor("refresh", None).await.unwrap();
    assert_eq!(env.store.cursor("refresh").await.unwrap(), None);
}
