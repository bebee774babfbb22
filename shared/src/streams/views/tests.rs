//! The view-aggregator over the in-memory adapters, fed the records the in-memory views
//! stream emits, invoked the way Lambda invokes it with a tumbling window.

use std::sync::Arc;

use aws_lambda_events::dynamodb::EventRecord;
use serde_json::{Value, json};

use super::*;
use crate::cache::l2::L2Store;
use crate::cache::l2::memory::MemoryL2;
use crate::cache::{Cache, CacheOptions};
use crate::clock::ManualClock;
use crate::error::ExpectedVersion;
use crate::model::{Currency, EventId, Money, Product};
use crate::store::latency::LatencyShim;
use crate::store::memory::MemoryStore;
use crate::store::stream::MemoryStreams;
use crate::store::{ProductWriter, StatsReader, ViewCounters, ViewRecorder};
use crate::streams::RawEvent;

/// 2026-11-20 10:30 UTC.
const NOW: i64 = 1_795_602_600_000;
const HOUR: i64 = 3_600_000;

struct Fixture {
    store: Arc<MemoryStore>,
    shim: Arc<LatencyShim<MemoryStore>>,
    cache: Cache,
    streams: MemoryStreams,
}

impl Fixture {
    async fn new(products: &[&str]) -> Fixture {
        let streams = MemoryStreams::new(1, 1);
        let store = Arc::new(MemoryStore::streaming(streams.clone()));
        for id in products {
            store
                .put_product(
                    &Product {
                        id: ProductId::parse(id).unwrap(),
                        name: format!("Product {id}"),
                        description: String::new(),
                        category: "misc".into(),
                        price: Money::new(100, Currency::parse("EUR").unwrap()),
                        active: true,
                        created_at: NOW - 10 * HOUR,
                        updated_at: NOW - 10 * HOUR,
                        version: 0,
                    },
                    ExpectedVersion::Absent,
                )
                .await
                .unwrap();
        }
        let cache = Cache::new(
            CacheOptions::default(),
            Some(Arc::new(MemoryL2::new()) as Arc<dyn L2Store>),
            ManualClock::at(NOW),
        );
        Fixture {
            shim: Arc::new(LatencyShim::new(store.clone(), std::time::Duration::ZERO)),
            store,
            cache,
            streams,
        }
    }

    fn deps(&self) -> ViewAggDeps {
        ViewAggDeps {
            products: self.store.clone(),
            stats: self.shim.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Records views (`(event id, product, viewed_at)`) and returns their stream records.
    async fn view(&self, views: &[(&str, &str, i64)]) -> Vec<EventRecord> {
        let before = self.records().len();
        for (event, product, at) in views {
            self.store
                .record_view(&ViewEvent {
                    event_id: EventId::parse(event).unwrap(),
                    product_id: ProductId::parse(product).unwrap(),
                    viewed_at: *at,
                })
                .await
                .unwrap();
        }
        self.records()[before..].to_vec()
    }

    fn records(&self) -> Vec<EventRecord> {
        let views = &self.streams.views;
        views.read(&views.shard_ids()[0], None, usize::MAX)
    }

    async fn counter(&self, product: &str, bucket: CounterBucket) -> u64 {
        self.store
            .view_counters(&ProductId::parse(product).unwrap())
            .await
            .unwrap()
            .into_iter()
            .find(|(b, _)| *b == bucket)
            .map_or(0, |(_, n)| n)
    }
}

/// A time-window event as Lambda sends it, as the runtime hands it over.
fn event(
    records: &[EventRecord],
    state: &HashMap<String, String>,
    shard: &str,
    final_invoke: bool,
) -> RawEvent {
    raw(&event_json(records, state, shard, final_invoke))
}

fn raw(event: &Value) -> RawEvent {
    RawEvent::from_value(event).unwrap()
}

/// The same event as JSON.
fn event_json(
    records: &[EventRecord],
    state: &HashMap<String, String>,
    shard: &str,
    final_invoke: bool,
) -> Value {
    json!({
        "Records": records,
        "window": {"start": "2026-11-20T10:30:00Z", "end": "2026-11-20T10:45:00Z"},
        "state": state,
        "shardId": shard,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/views/stream/x",
        "isFinalInvokeForWindow": final_invoke,
        "isWindowTerminatedEarly": false
    })
}

async fn invoke(
    f: &Fixture,
    records: &[EventRecord],
    state: &HashMap<String, String>,
    final_invoke: bool,
) -> Result<TimeWindowEventResponse, ViewAggError> {
    handle(
        event(records, state, "shardId-1", final_invoke),
        &f.deps(),
        &ViewAggOptions::default(),
        NOW,
    )
    .await
}

fn state_of(response: &TimeWindowEventResponse) -> HashMap<String, String> {
    response.time_window_event_response_properties.state.clone()
}

#[tokio::test]
async fn a_window_counts_each_view_once_into_hour_and_day_counters() {
    let f = Fixture::new(&["p1", "p2"]).await;
    let first = f
        .view(&[
            ("e1", "p1", NOW),
            ("e2", "p1", NOW + 1),
            ("e3", "p2", NOW - HOUR),
        ])
        .await;
    let second = f.view(&[("e4", "p1", NOW + 2)]).await;

    let r1 = invoke(&f, &first, &HashMap::new(), false).await.unwrap();
    assert!(r1.batch_item_failures.is_empty());
    let r2 = invoke(&f, &second, &state_of(&r1), false).await.unwrap();
    assert_eq!(
        f.counter("p1", CounterBucket::hour_of(NOW)).await,
        0,
        "nothing written before the window ends"
    );
    let done = invoke(&f, &[], &state_of(&r2), true).await.unwrap();
    assert!(state_of(&done).is_empty(), "a new window starts fresh");

    assert_eq!(f.counter("p1", CounterBucket::hour_of(NOW)).await, 3);
    assert_eq!(f.counter("p1", CounterBucket::day_of(NOW)).await, 3);
    assert_eq!(f.counter("p2", CounterBucket::hour_of(NOW - HOUR)).await, 1);
    assert_eq!(f.counter("p2", CounterBucket::day_of(NOW)).await, 1);
    // p1: one hour and one day; p2: one hour and one day. Then the window's report and the
    // fresh stats of its two products.
    assert_eq!(f.shim.writes(), 4 + 1 + 2);

    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!(run.job, JOB);
    assert_eq!((run.counts["views"], run.counts["counter_writes"]), (4, 4));
    let stats = f
        .store
        .period_stats(&ProductId::parse("p1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.views_1h, 3, "the window's products have fresh stats");
}

#[tokio::test]
async fn a_batch_delivered_three_times_counts_once() {
    let f = Fixture::new(&["p1"]).await;
    let batch = f
        .view(&[("e1", "p1", NOW), ("e2", "p1", NOW), ("e3", "p1", NOW)])
        .await;
    let r1 = invoke(&f, &batch, &HashMap::new(), false).await.unwrap();
    // Delivered again with the state that already holds it (duplicates), and again with the
    // state from before it (Lambda lost the first response): never more than once.
    let r2 = invoke(&f, &batch, &state_of(&r1), false).await.unwrap();
    let r3 = invoke(&f, &batch, &HashMap::new(), false).await.unwrap();
    assert_eq!(state_of(&r3), state_of(&r1));
    let r4 = invoke(&f, &batch, &state_of(&r2), false).await.unwrap();
    invoke(&f, &[], &state_of(&r4), true).await.unwrap();
    assert_eq!(f.counter("p1", CounterBucket::hour_of(NOW)).await, 3);
    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!(run.counts["duplicates"], 6);
}

#[tokio::test]
async fn a_retried_final_invocation_writes_nothing_twice() {
    let f = Fixture::new(&["p1", "p2"]).await;
    let batch = f.view(&[("e1", "p1", NOW), ("e2", "p2", NOW)]).await;
    let state = state_of(&invoke(&f, &batch, &HashMap::new(), false).await.unwrap());
    invoke(&f, &[], &state, true).await.unwrap();
    invoke(&f, &[], &state, true).await.unwrap();
    assert_eq!(f.counter("p1", CounterBucket::hour_of(NOW)).await, 1);
    assert_eq!(f.counter("p2", CounterBucket::day_of(NOW)).await, 1);
    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!(
        (run.counts["counter_writes"], run.counts["already_applied"]),
        (0, 4)
    );
}

#[tokio::test]
async fn a_crash_part_way_through_writing_a_window_is_finished_by_the_retry() {
    let f = Fixture::new(&["p1", "p2", "p3"]).await;
    let batch = f
        .view(&[
            ("e1", "p1", NOW),
            ("e2", "p2", NOW),
            ("e3", "p3", NOW),
            ("e4", "p3", NOW),
        ])
        .await;
    let state = state_of(&invoke(&f, &batch, &HashMap::new(), false).await.unwrap());
    // Three of the six updates land, then DynamoDB fails: the invocation fails.
    f.shim.fail_writes_after(3);
    let failed = invoke(&f, &[], &state, true).await.unwrap_err();
    assert!(
        matches!(
            failed,
            ViewAggError::Writes {
                failed: 3,
                attempted: 6
            }
        ),
        "{failed}"
    );
    f.shim.heal();
    invoke(&f, &[], &state, true).await.unwrap();
    for (product, views) in [("p1", 1), ("p2", 1), ("p3", 2)] {
        assert_eq!(
            f.counter(product, CounterBucket::hour_of(NOW)).await,
            views,
            "{product} hour"
        );
        assert_eq!(
            f.counter(product, CounterBucket::day_of(NOW)).await,
            views,
            "{product} day"
        );
    }
}

#[tokio::test]
async fn remove_and_modify_records_are_ignored_and_malformed_ones_skipped() {
    let f = Fixture::new(&["p1"]).await;
    let mut records = f.view(&[("e1", "p1", NOW), ("e2", "p1", NOW)]).await;
    let mut removed = records[0].clone();
    removed.event_name = "REMOVE".into();
    removed.change.sequence_number = Some("200000000000000000000".into());
    let mut modified = records[1].clone();
    modified.event_name = "MODIFY".into();
    modified.change.sequence_number = Some("200000000000000000001".into());
    let mut garbage = records[1].clone();
    garbage.change.new_image = serde_dynamo::to_item(json!({"event_id": "x"})).unwrap();
    garbage.change.sequence_number = Some("200000000000000000002".into());
    records.extend([removed, modified, garbage]);
    let mut payload = event_json(&records, &HashMap::new(), "s", false);
    payload["Records"]
        .as_array_mut()
        .unwrap()
        .push(json!({"eventName": "INSERT", "dynamodb": {"SequenceNumber": "oops"}}));
    let response = handle(raw(&payload), &f.deps(), &ViewAggOptions::default(), NOW)
        .await
        .unwrap();
    assert!(
        response.batch_item_failures.is_empty(),
        "bad records never block the shard"
    );
    let state = WindowState::decode(state_of(&response)).unwrap();
    assert_eq!(
        state.counts,
        WindowCounts {
            records: 6,
            views: 2,
            duplicates: 0,
            malformed: 2,
            ignored: 2,
            unknown_products: 0,
        }
    );
}

#[tokio::test]
async fn a_view_of_an_unknown_product_is_skipped_and_counted() {
    let f = Fixture::new(&["p1"]).await;
    let batch = f.view(&[("e1", "ghost", NOW), ("e2", "p1", NOW)]).await;
    let state = state_of(&invoke(&f, &batch, &HashMap::new(), false).await.unwrap());
    invoke(&f, &[], &state, true).await.unwrap();
    assert_eq!(f.counter("ghost", CounterBucket::hour_of(NOW)).await, 0);
    assert_eq!(f.counter("p1", CounterBucket::hour_of(NOW)).await, 1);
    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!(run.counts["unknown_products"], 1);
}

#[tokio::test]
async fn a_failed_product_check_reports_the_first_view_and_keeps_only_what_came_before() {
    let f = Fixture::new(&["p1"]).await;
    let mut records = f.view(&[("e1", "p1", NOW), ("e2", "p1", NOW)]).await;
    // A TTL deletion ahead of the views, which needs no product check.
    let mut removed = records[0].clone();
    removed.event_name = "REMOVE".into();
    removed.change.sequence_number = Some("99999999999999999999".into());
    records.insert(0, removed);
    f.store.set_unavailable(true);
    let response = invoke(&f, &records, &HashMap::new(), false).await.unwrap();
    f.store.set_unavailable(false);
    let failures: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect();
    assert_eq!(
        failures,
        [records[1].change.sequence_number.clone().unwrap()]
    );
    let state = WindowState::decode(state_of(&response)).unwrap();
    assert_eq!(
        (
            state.counts.records,
            state.counts.ignored,
            state.counts.views
        ),
        (1, 1, 0)
    );

    // Lambda retries from the failed record with the state returned: each view counts once.
    let retried = invoke(&f, &records[1..], &state_of(&response), false)
        .await
        .unwrap();
    invoke(&f, &[], &state_of(&retried), true).await.unwrap();
    assert_eq!(f.counter("p1", CounterBucket::hour_of(NOW)).await, 2);
}

#[tokio::test]
async fn two_shards_count_into_the_same_counters_each_once() {
    let f = Fixture::new(&["p1"]).await;
    let a = f.view(&[("a1", "p1", NOW), ("a2", "p1", NOW)]).await;
    let b = f.view(&[("b1", "p1", NOW)]).await;
    let run = |records: Vec<EventRecord>, shard: &'static str| {
        let deps = f.deps();
        async move {
            let options = ViewAggOptions::default();
            let r = handle(
                event(&records, &HashMap::new(), shard, false),
                &deps,
                &options,
                NOW,
            )
            .await
            .unwrap();
            let state = state_of(&r);
            for _ in 0..2 {
                // Each shard's final invocation, retried once.
                handle(event(&[], &state, shard, true), &deps, &options, NOW)
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(run(a, "shardId-a"), run(b, "shardId-b"));
    assert_eq!(f.counter("p1", CounterBucket::hour_of(NOW)).await, 3);
}

#[tokio::test]
async fn an_event_without_a_tumbling_window_fails_rather_than_risk_a_wrong_count() {
    let f = Fixture::new(&["p1"]).await;
    let records = f.view(&[("e1", "p1", NOW)]).await;
    let err = handle(
        raw(&json!({"Records": records})),
        &f.deps(),
        &ViewAggOptions::default(),
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ViewAggError::NoWindow));
    let err = handle(
        raw(&json!({"hello": 1})),
        &f.deps(),
        &ViewAggOptions::default(),
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ViewAggError::Event(_)));
}

#[test]
fn the_state_round_trips_and_rejects_what_it_did_not_write() {
    let mut state = WindowState {
        first: sequence_key("100"),
        last: sequence_key("250"),
        counts: WindowCounts {
            records: 9,
            views: 5,
            duplicates: 1,
            malformed: 1,
            ignored: 1,
            unknown_products: 1,
        },
        ..WindowState::default()
    };
    let p1 = ProductId::parse("p-1").unwrap();
    state.add_views(&p1, 498_778, 3);
    state.add_views(&p1, 498_779, 2);
    state.add_views(&p1, 498_778, 1);
    let back = WindowState::decode(state.clone().encode().unwrap()).unwrap();
    assert_eq!(back.views().unwrap(), state.views().unwrap());
    assert_eq!(
        (back.first.clone(), back.counts),
        (state.first.clone(), state.counts)
    );
    assert_eq!(
        back.views().unwrap()[&p1],
        BTreeMap::from([(498_778, 4), (498_779, 2)])
    );
    for (key, value) in [("~first", "x"), ("~counts", "1,2"), ("p1", "1:1")] {
        let bad = HashMap::from([(key.to_owned(), value.to_owned())]);
        assert!(WindowState::decode(bad).is_err(), "{key}={value}");
    }
    for (key, value) in [("~views", "p 1:1:1"), ("~delta", "p1:1:x")] {
        let raw = HashMap::from([(key.to_owned(), value.to_owned())]);
        let state = WindowState::decode(raw).unwrap();
        assert!(state.views().is_err(), "{key}={value} is refused when used");
    }
}

/// A catalog whose reads fail whenever they include one product.
struct PoisonedReads(Arc<MemoryStore>, ProductId);

#[async_trait::async_trait]
impl ProductReader for PoisonedReads {
    async fn product_detail(
        &self,
        id: &ProductId,
    ) -> crate::Result<Option<crate::model::ProductDetail>> {
        self.0.product_detail(id).await
    }

    async fn products(&self, ids: &[ProductId]) -> crate::Result<Vec<Product>> {
        if ids.contains(&self.1) {
            return Err(crate::Error::Timeout {
                op: "BatchGetItem",
                after: std::time::Duration::from_secs(3),
            });
        }
        self.0.products(ids).await
    }
}

#[tokio::test]
async fn a_product_that_cannot_be_checked_stops_the_batch_at_its_first_view_only() {
    let f = Fixture::new(&["p1", "p2", "poison"]).await;
    let deps = ViewAggDeps {
        products: Arc::new(PoisonedReads(
            f.store.clone(),
            ProductId::parse("poison").unwrap(),
        )),
        ..f.deps()
    };
    let records = f
        .view(&[("e1", "p1", NOW), ("e2", "poison", NOW), ("e3", "p2", NOW)])
        .await;
    let options = ViewAggOptions::default();
    let response = handle(
        event(&records, &HashMap::new(), "s", false),
        &deps,
        &options,
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        response.batch_item_failures[0].item_identifier, records[1].change.sequence_number,
        "p1 is checked one by one and counted; the batch stops at the poison"
    );
    let state = WindowState::decode(state_of(&response)).unwrap();
    assert_eq!(state.counts.views, 1);

    // The retry starts at the poison: nothing can be done, so the invocation fails and the
    // mapping can bisect the batch down to the poison record.
    let retry = handle(
        event(&records[1..], &state_of(&response), "s", false),
        &deps,
        &options,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(retry, ViewAggError::Products(_)), "{retry}");
    let without_poison = handle(
        event(&records[2..], &state_of(&response), "s", false),
        &deps,
        &options,
        NOW,
    )
    .await
    .unwrap();
    let state = WindowState::decode(state_of(&without_poison)).unwrap();
    assert_eq!(state.counts.views, 2);
}

#[test]
fn batches_append_to_the_state_and_are_merged_once_the_deltas_outgrow_the_base() {
    let mut state = WindowState::default();
    let mut expected: BTreeMap<ProductId, BTreeMap<i64, u64>> = BTreeMap::new();
    for round in 0..40 {
        let mut next = WindowState::decode(state.encode().unwrap()).unwrap();
        for p in 0..500 {
            let id = ProductId::parse(&format!("product-{p:04}")).unwrap();
            let hour = 498_000 + (round % 2);
            next.add_views(&id, hour, 1);
            *expected.entry(id).or_default().entry(hour).or_default() += 1;
        }
        state = next;
    }
    let encoded = state.clone().encode().unwrap();
    assert!(encoded["~views"].len() > 10_000, "merged at least once");
    assert!(
        encoded.len() <= 5,
        "a handful of keys, whatever the products"
    );
    assert_eq!(
        WindowState::decode(encoded).unwrap().views().unwrap(),
        expected
    );
}

#[tokio::test]
async fn the_lambda_fixture_is_read_as_aws_sends_it() {
    let f = Fixture::new(&["p1"]).await;
    let fixture: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/views-stream-window-event.json"
    ))
    .unwrap();
    let response = handle(raw(&fixture), &f.deps(), &ViewAggOptions::default(), NOW)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let mut last = fixture.clone();
    last["Records"] = json!([]);
    last["state"] = json!(state_of(&response));
    last["isFinalInvokeForWindow"] = json!(true);
    handle(raw(&last), &f.deps(), &ViewAggOptions::default(), NOW)
        .await
        .unwrap();
    let hour = CounterBucket::hour_of(1_795_602_660_000);
    assert_eq!(
        f.counter("p1", hour).await,
        2,
        "two views; the TTL REMOVE is ignored"
    );
    let run = &f.store.last_runs().await.unwrap()[0];
    assert_eq!((run.counts["views"], run.counts["ignored"]), (2, 1));
}
