//! Every case of the issue, through the runner and the real binary.

use std::collections::BTreeMap;
use std::sync::Arc;

use catalog_core::model::{RunOutcome, ViewEvent};
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::stream::MemoryStreams;
use catalog_core::store::{StatsReader, ViewRecorder};
use catalog_core::streams::views::JOB;
use esm::mapping::{Chaos, EventSourceMapping, MappingConfig};
use esm::source::MemorySource;
use integration_tests::dynamo_faults::{DynamoFaults, Fault, Rule};
use integration_tests::dynamodb_endpoint;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::harness::{HOUR, Harness, NOW, config, view};

/// Sums of the window reports the function recorded, by count name.
async fn reported(h: &Harness) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for run in h.store.run_history(JOB, 1000).await.unwrap() {
        assert_eq!(run.outcome, RunOutcome::Succeeded);
        for (name, n) in run.counts {
            *totals.entry(name).or_default() += n;
        }
    }
    totals
}

/// Asserts every product's hourly and daily totals equal the views it was given.
async fn assert_counted(h: &Harness, views: &[ViewEvent]) {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for v in views {
        *expected.entry(v.product_id.to_string()).or_default() += 1;
    }
    for (product, n) in expected {
        assert_eq!(
            h.total(&product, true).await,
            n,
            "{product}: hourly counters"
        );
        assert_eq!(
            h.total(&product, false).await,
            n,
            "{product}: daily counters"
        );
    }
}

#[tokio::test]
async fn ten_thousand_views_with_a_tenth_delivered_twice_count_each_distinct_event_once() {
    let products: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
    let ids: Vec<&str> = products.iter().map(String::as_str).collect();
    let h = Harness::new(&ids).await;
    let mut rng = SmallRng::seed_from_u64(7);
    let views: Vec<ViewEvent> = (0..10_000)
        .map(|i| {
            // A few hot products, and views over three hours (and across a day boundary).
            let product = &products[(rng.random_range(0.0_f64..1.0).powi(3) * 40.0) as usize];
            view(
                &format!("e{i}"),
                product,
                NOW - rng.random_range(0..3 * HOUR),
            )
        })
        .collect();
    h.write_views(&views).await;
    // Batches of 25, a tenth of them delivered twice: about a thousand duplicate records.
    let esm = h
        .mapping(MappingConfig {
            batch_size: 25,
            ..config()
        })
        .await
        .with_chaos(Chaos {
            redeliver_probability: 0.1,
            seed: 1,
            ..Chaos::default()
        });
    esm.drain().await.unwrap();

    let stats = esm.stats();
    let duplicates_delivered = stats.records_delivered - 10_000;
    assert!((700..=1_300).contains(&duplicates_delivered), "{stats:?}");
    assert!(esm.destination().messages().is_empty());
    assert_counted(&h, &views).await;
    let reported = reported(&h).await;
    assert_eq!(reported["views"], 10_000);
    assert!(reported["duplicates"] > 0);
}

#[tokio::test]
async fn a_batch_delivered_three_more_times_counts_once() {
    let h = Harness::new(&["a", "b"]).await;
    let views: Vec<ViewEvent> = (0..30)
        .map(|i| view(&format!("e{i}"), ["a", "b"][i % 2], NOW))
        .collect();
    h.write_views(&views).await;
    let esm = h.mapping(config()).await.with_chaos(Chaos {
        redeliver: 3,
        ..Chaos::default()
    });
    esm.drain().await.unwrap();
    assert_eq!(esm.stats().redeliveries, 3);
    assert_counted(&h, &views).await;
}

#[tokio::test]
async fn a_retried_final_window_invocation_counts_once() {
    let h = Harness::new(&["a", "b", "c"]).await;
    let views: Vec<ViewEvent> = (0..12)
        .map(|i| view(&format!("e{i}"), ["a", "b", "c"][i % 3], NOW - HOUR))
        .collect();
    h.write_views(&views).await;
    let esm = h.mapping(config()).await.with_chaos(Chaos {
        repeat_final: 2,
        ..Chaos::default()
    });
    esm.drain().await.unwrap();
    assert_counted(&h, &views).await;
    let reported = reported(&h).await;
    assert_eq!(
        reported["counter_writes"], 6,
        "three products, an hour and a day each"
    );
    assert_eq!(
        reported["already_applied"], 12,
        "the two repeats wrote nothing"
    );
}

#[tokio::test]
async fn bisect_isolates_a_poison_record_and_every_other_view_counts_once() {
    let h = Harness::new(&["a", "poison"]).await;
    let faults = DynamoFaults::start(&dynamodb_endpoint()).await;
    // Any read of this product fails, and is not worth retrying.
    faults.add(Rule {
        body_contains: Some("PRODUCT#poison".into()),
        ..Rule::on("BatchGetItem", Fault::Invalid)
    });
    let mut views: Vec<ViewEvent> = (0..15)
        .map(|i| view(&format!("e{i:02}"), "a", NOW))
        .collect();
    views.insert(9, view("bad", "poison", NOW));
    h.write_views(&views).await;
    let esm = EventSourceMapping::new(
        h.stream().await,
        vec![h.function(&faults.endpoint()).await],
        MappingConfig {
            batch_size: 16,
            max_retry_attempts: Some(1),
            ..config()
        },
    );
    esm.drain().await.unwrap();

    let messages = esm.destination().messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0]["DDBStreamBatchInfo"]["batchSize"], 1);
    assert_eq!(
        messages[0]["records"][0]["dynamodb"]["NewImage"]["event_id"]["S"],
        "bad"
    );
    assert!(esm.stats().bisects > 0);
    assert_eq!(h.total("a", true).await, 15);
    assert_eq!(h.total("poison", true).await, 0);
}

#[tokio::test]
async fn a_crash_after_part_of_a_window_was_written_is_finished_by_the_retry() {
    let products: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let ids: Vec<&str> = products.iter().map(String::as_str).collect();
    let h = Harness::new(&ids).await;
    let views: Vec<ViewEvent> = (0..50)
        .map(|i| view(&format!("e{i}"), &products[i % 10], NOW))
        .collect();
    h.write_views(&views).await;
    let faults = DynamoFaults::start(&dynamodb_endpoint()).await;
    // Five counter updates land; then every request fails until the SDK's retries of the
    // other fifteen are spent, so the final invocation fails part-way.
    faults.add(Rule {
        pass_first: 5,
        fail: Some(45),
        ..Rule::on("UpdateItem", Fault::ServerError)
    });
    let esm = EventSourceMapping::new(
        h.stream().await,
        vec![h.function(&faults.endpoint()).await],
        config(),
    );
    esm.drain().await.unwrap();

    assert!(esm.stats().failed_invocations >= 1, "{:?}", esm.stats());
    assert!(esm.destination().messages().is_empty());
    assert_counted(&h, &views).await;
    let reported = reported(&h).await;
    assert_eq!(
        reported["counter_writes"] + reported["already_applied"],
        20,
        "the retry found what the first try wrote, and wrote the rest"
    );
    assert!(reported["already_applied"] >= 5);
}

#[tokio::test]
async fn a_dynamodb_error_mid_batch_reports_batch_item_failures_and_nothing_is_counted_twice() {
    let h = Harness::new(&["a", "late"]).await;
    let faults = DynamoFaults::start(&dynamodb_endpoint()).await;
    // Reads of `late` fail long enough for one check (the SDK retries 3 times) and its
    // retry on its own; a's reads always pass.
    faults.add(Rule {
        body_contains: Some("PRODUCT#late".into()),
        fail: Some(6),
        ..Rule::on("BatchGetItem", Fault::ServerError)
    });
    let views: Vec<ViewEvent> = (0..15)
        .map(|i| {
            view(
                &format!("e{i:02}"),
                if (5..10).contains(&i) { "late" } else { "a" },
                NOW,
            )
        })
        .collect();
    h.write_views(&views).await;
    let esm = EventSourceMapping::new(
        h.stream().await,
        vec![h.function(&faults.endpoint()).await],
        config(),
    );
    esm.drain().await.unwrap();

    assert_eq!(esm.stats().partial_failures, 1, "{:?}", esm.stats());
    assert!(faults.injected() >= 6);
    assert!(esm.destination().messages().is_empty());
    assert_counted(&h, &views).await;
}

#[tokio::test]
async fn two_shards_at_once_each_count_their_views_once() {
    let products: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let ids: Vec<&str> = products.iter().map(String::as_str).collect();
    let h = Harness::new(&ids).await;
    // A two-shard stream (moto's has one), feeding two function environments.
    let streams = MemoryStreams::new(1, 2);
    let recorder = MemoryStore::streaming(streams.clone());
    let views: Vec<ViewEvent> = (0..200)
        .map(|i| view(&format!("e{i}"), &products[i % 10], NOW))
        .collect();
    for v in &views {
        recorder.record_view(v).await.unwrap();
    }
    let shard_sizes: Vec<usize> = streams
        .views
        .shard_ids()
        .iter()
        .map(|s| streams.views.read(s, None, usize::MAX).len())
        .collect();
    assert!(shard_sizes.iter().all(|n| *n > 0), "{shard_sizes:?}");
    let esm = EventSourceMapping::new(
        Arc::new(MemorySource(streams.views.clone())),
        vec![
            h.function(&dynamodb_endpoint()).await,
            h.function(&dynamodb_endpoint()).await,
        ],
        config(),
    )
    .with_chaos(Chaos {
        repeat_final: 1,
        ..Chaos::default()
    });
    esm.drain().await.unwrap();
    assert_counted(&h, &views).await;
    assert_eq!(esm.stats().windows_closed, 2);
}

#[tokio::test]
async fn remove_and_modify_records_are_ignored() {
    let h = Harness::new(&["a"]).await;
    let views: Vec<ViewEvent> = (0..6).map(|i| view(&format!("e{i}"), "a", NOW)).collect();
    h.write_views(&views).await;
    let client = h.store.client();
    for event in ["e0", "e1", "e2"] {
        // As a TTL expiry would.
        client
            .delete_item()
            .table_name(&h.tables.views)
            .key(
                "event_id",
                aws_sdk_dynamodb::types::AttributeValue::S(event.into()),
            )
            .send()
            .await
            .unwrap();
    }
    let mut modified = views[3].clone();
    modified.viewed_at += 1;
    h.write_views(&[modified]).await;
    let esm = h.mapping(config()).await;
    esm.drain().await.unwrap();
    assert_eq!(h.total("a", true).await, 6);
    let reported = reported(&h).await;
    assert_eq!((reported["views"], reported["ignored"]), (6, 4));
}
