//! The mapping against an in-memory stream and a scripted function in process.

use std::sync::Mutex;

use aws_lambda_events::dynamodb::StreamViewType;
use catalog_core::store::stream::{Change, ChangeKind, MemoryStream};
use futures::FutureExt;

use super::*;
use crate::invoke::InProcess;
use crate::source::MemorySource;

/// 2026-11-18, in the past, on a minute boundary (every window size used here).
const T0: i64 = 1_794_999_960_000;

fn stream_with(records: &[(&str, i64)]) -> Arc<MemoryStream> {
    let stream = MemoryStream::new("views", 1, StreamViewType::NewImage);
    for (id, at_ms) in records {
        let item: serde_dynamo::Item = serde_dynamo::to_item(json!({"id": id})).unwrap();
        stream.record(Change {
            kind: ChangeKind::Insert,
            keys: item.clone(),
            old: None,
            new: Some(item),
            partition: "p".into(),
            at: DateTime::from_timestamp_millis(*at_ms),
        });
    }
    stream
}

/// What the scripted function saw: each invocation's record ids, state and final flag.
#[derive(Debug, Clone)]
struct Seen {
    ids: Vec<String>,
    state: Value,
    final_invoke: bool,
}

type Script = Box<dyn Fn(&[String], &Value, bool) -> Result<Value, String> + Send + Sync>;

/// A function that records every invocation and answers as `script` says.
fn function(seen: Arc<Mutex<Vec<Seen>>>, script: Script) -> Arc<dyn Invoker> {
    let script = Arc::new(script);
    Arc::new(InProcess(move |event: Value| {
        let ids: Vec<String> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["dynamodb"]["NewImage"]["id"]["S"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let final_invoke = event["isFinalInvokeForWindow"].as_bool().unwrap_or(false)
            || event["isWindowTerminatedEarly"].as_bool().unwrap_or(false);
        seen.lock().unwrap().push(Seen {
            ids: ids.clone(),
            state: event["state"].clone(),
            final_invoke,
        });
        let answer = script(&ids, &event, final_invoke);
        async move { answer }.boxed()
    }))
}

/// A windowed function that counts records in its state under "n" and lists them under
/// "ids" (so a test sees exactly which records the window holds).
fn counting(ids: &[String], event: &Value, final_invoke: bool) -> Value {
    let mut seen: Vec<String> = event["state"]["ids"]
        .as_str()
        .map(|s| {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    seen.extend(ids.iter().cloned());
    if final_invoke {
        return json!({"state": {}, "batchItemFailures": []});
    }
    json!({"state": {"ids": seen.join(",")}, "batchItemFailures": []})
}

fn sequence_of(stream: &MemoryStream, id: &str) -> String {
    stream
        .read(&stream.shard_ids()[0], None, usize::MAX)
        .into_iter()
        .find(|r| {
            r.change
                .new_image
                .get("id")
                .is_some_and(|v| format!("{v:?}").contains(id))
        })
        .and_then(|r| r.change.sequence_number)
        .unwrap()
}

fn mapping(
    stream: &Arc<MemoryStream>,
    invoker: Arc<dyn Invoker>,
    config: MappingConfig,
) -> EventSourceMapping {
    EventSourceMapping::new(
        Arc::new(MemorySource(stream.clone())),
        vec![invoker],
        config,
    )
}

#[tokio::test]
async fn batches_are_at_most_batch_size_and_in_order() {
    let stream = stream_with(
        &(0..7)
            .map(|i| (["a", "b", "c", "d", "e", "f", "g"][i], T0))
            .collect::<Vec<_>>(),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(seen.clone(), Box::new(|_, _, _| Ok(json!({})))),
        MappingConfig {
            batch_size: 3,
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    let batches: Vec<Vec<String>> = seen.lock().unwrap().iter().map(|s| s.ids.clone()).collect();
    assert_eq!(
        batches,
        [vec!["a", "b", "c"], vec!["d", "e", "f"], vec!["g"]]
    );
    // A second drain goes on from where the first stopped.
    esm.drain().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn latest_starts_after_what_the_stream_holds_when_the_mapping_starts() {
    let stream = stream_with(&[("old-1", T0), ("old-2", T0)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(seen.clone(), Box::new(|_, _, _| Ok(json!({})))),
        MappingConfig {
            starting_position: StartingPosition::Latest,
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    assert!(seen.lock().unwrap().is_empty(), "nothing new yet");
    let item: serde_dynamo::Item = serde_dynamo::to_item(json!({"id": "new"})).unwrap();
    stream.record(Change {
        kind: ChangeKind::Insert,
        keys: item.clone(),
        old: None,
        new: Some(item),
        partition: "p".into(),
        at: DateTime::from_timestamp_millis(T0),
    });
    // The position was taken once: the second drain does not skip again.
    esm.drain().await.unwrap();
    let ids: Vec<Vec<String>> = seen.lock().unwrap().iter().map(|s| s.ids.clone()).collect();
    assert_eq!(ids, [vec!["new"]]);
}

#[tokio::test]
async fn a_tumbling_window_carries_its_state_and_ends_with_a_final_invocation() {
    let stream = stream_with(&[
        ("a", T0),
        ("b", T0 + 1_000),
        ("c", T0 + 2_000),
        ("d", T0 + 60_000),
    ]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(
            seen.clone(),
            Box::new(|ids, event, last| Ok(counting(ids, event, last))),
        ),
        MappingConfig {
            batch_size: 2,
            tumbling_window: Some(Duration::from_secs(60)),
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let shape: Vec<(Vec<String>, bool)> = seen
        .iter()
        .map(|s| (s.ids.clone(), s.final_invoke))
        .collect();
    assert_eq!(
        shape,
        [
            (vec!["a".to_owned(), "b".to_owned()], false),
            (vec!["c".to_owned()], false),
            (vec![], true),
            (vec!["d".to_owned()], false),
            (vec![], true),
        ]
    );
    assert_eq!(
        seen[1].state["ids"], "a,b",
        "the state of the previous invocation"
    );
    assert_eq!(
        seen[2].state["ids"], "a,b,c",
        "the final invocation gets the whole window"
    );
    assert_eq!(seen[3].state, json!({}), "a new window starts fresh");
    assert_eq!(esm.stats().windows_closed, 2);
}

#[tokio::test]
async fn batch_item_failures_checkpoint_and_retry_from_the_lowest_named_record() {
    let stream = stream_with(&[("a", T0), ("b", T0), ("c", T0), ("d", T0)]);
    let c = sequence_of(&stream, "c");
    let failed_once = Arc::new(Mutex::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(
            seen.clone(),
            Box::new(move |ids, event, last| {
                let mut answer = counting(ids, event, last);
                let mut failed = failed_once.lock().unwrap();
                if !*failed && ids.len() == 4 {
                    *failed = true;
                    // a and b done; c failed (d was never reached).
                    answer = json!({"state": {"ids": "a,b"}, "batchItemFailures": [{"itemIdentifier": c}]});
                }
                Ok(answer)
            }),
        ),
        MappingConfig {
            tumbling_window: Some(Duration::from_secs(60)),
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[1].ids, ["c", "d"], "retried from c");
    assert_eq!(
        seen[1].state["ids"], "a,b",
        "with the state the response returned"
    );
    assert_eq!(seen[2].state["ids"], "a,b,c,d");
    assert_eq!(esm.stats().partial_failures, 1);
}

#[tokio::test]
async fn bisect_isolates_a_poison_record_which_alone_goes_to_the_destination() {
    let ids: Vec<String> = (0..16).map(|i| format!("r{i:02}")).collect();
    let records: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), T0)).collect();
    let stream = stream_with(&records);
    let delivered = Arc::new(Mutex::new(Vec::<String>::new()));
    let ok = delivered.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(
            seen,
            Box::new(move |ids, _, _| {
                if ids.iter().any(|id| id == "r11") {
                    return Err("poison".into());
                }
                ok.lock().unwrap().extend(ids.iter().cloned());
                Ok(json!({}))
            }),
        ),
        MappingConfig {
            max_retry_attempts: Some(2),
            retry_pause: Duration::ZERO,
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    let mut delivered = delivered.lock().unwrap().clone();
    delivered.sort();
    let expected: Vec<String> = ids.iter().filter(|id| *id != "r11").cloned().collect();
    assert_eq!(
        delivered, expected,
        "every other record processed exactly once"
    );
    let messages = esm.destination().messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["DDBStreamBatchInfo"]["batchSize"], 1);
    assert_eq!(
        messages[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(
        messages[0]["records"][0]["dynamodb"]["NewImage"]["id"]["S"],
        "r11"
    );
    assert!(esm.stats().bisects >= 4);
}

#[tokio::test]
async fn records_too_old_go_to_the_destination_without_more_retries() {
    let stream = stream_with(&[("old", T0)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(seen.clone(), Box::new(|_, _, _| Err("down".into()))),
        MappingConfig {
            max_retry_attempts: None,
            max_record_age: Some(Duration::from_secs(60)),
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        esm.destination().messages()[0]["requestContext"]["condition"],
        "RecordAgeExceeded"
    );
}

#[tokio::test]
async fn chaos_delivers_batches_and_final_invocations_again() {
    let stream = stream_with(&[("a", T0), ("b", T0)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(
            seen.clone(),
            Box::new(|ids, event, last| Ok(counting(ids, event, last))),
        ),
        MappingConfig {
            tumbling_window: Some(Duration::from_secs(60)),
            ..MappingConfig::default()
        },
    )
    .with_chaos(Chaos {
        redeliver: 3,
        repeat_final: 1,
        ..Chaos::default()
    });
    esm.drain().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let batches = seen.iter().filter(|s| !s.final_invoke).count();
    let finals = seen.iter().filter(|s| s.final_invoke).count();
    assert_eq!((batches, finals), (4, 2));
    assert_eq!(esm.stats().redeliveries, 3);
}

#[tokio::test]
async fn a_failing_final_invocation_is_retried_then_its_state_goes_to_the_destination() {
    let stream = stream_with(&[("a", T0)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(
            seen.clone(),
            Box::new(|ids, event, last| {
                if last {
                    Err("cannot write".into())
                } else {
                    Ok(counting(ids, event, last))
                }
            }),
        ),
        MappingConfig {
            tumbling_window: Some(Duration::from_secs(60)),
            max_retry_attempts: Some(2),
            retry_pause: Duration::ZERO,
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    let finals = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.final_invoke)
        .count();
    assert_eq!(finals, 3, "the first try and two retries");
    let message = &esm.destination().messages()[0];
    assert_eq!(
        message["state"]["ids"], "a",
        "the window's state is kept, not lost"
    );
}

#[tokio::test]
async fn a_state_over_one_megabyte_ends_the_window_early_and_it_goes_on_fresh() {
    let stream = stream_with(&[("a", T0), ("b", T0)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let esm = mapping(
        &stream,
        function(
            seen.clone(),
            Box::new(|ids, _, last| {
                if last || ids.is_empty() {
                    return Ok(json!({"state": {}}));
                }
                Ok(
                    json!({"state": {"big": "x".repeat(if ids[0] == "a" { 1_100_000 } else { 10 })}}),
                )
            }),
        ),
        MappingConfig {
            batch_size: 1,
            tumbling_window: Some(Duration::from_secs(60)),
            ..MappingConfig::default()
        },
    );
    esm.drain().await.unwrap();
    let shape: Vec<(Vec<String>, bool)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.ids.clone(), s.final_invoke))
        .collect();
    assert_eq!(
        shape,
        [
            (vec!["a".to_owned()], false),
            (vec![], true),
            (vec!["b".to_owned()], false),
            (vec![], true),
        ]
    );
    assert_eq!(esm.stats().windows_ended_early, 1);
}
