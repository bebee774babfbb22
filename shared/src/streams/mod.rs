//! DynamoDB stream events as Lambda delivers them to the stream functions, read leniently:
//! each record is decoded on its own, so one malformed record is skipped and counted instead
//! of failing (and blocking) the whole batch.
//!
//! Every type here is `aws_lambda_events`'; nothing about the event is hand-modelled.

pub mod views;

use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::DynamoDbBatchItemFailure;
use aws_lambda_events::time_window::TimeWindowProperties;
use serde_json::{Map, Value};

/// Width sequence numbers are padded to: DynamoDB's are at most 40 digits.
const SEQUENCE_DIGITS: usize = 40;

/// One record of an event.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A record that decoded.
    Record {
        /// The sequence number as sent (what `batchItemFailures` must name).
        raw_sequence: String,
        /// The sequence number padded to 40 digits: string order is stream order.
        sequence: String,
        /// The record.
        record: Box<EventRecord>,
    },
    /// A record that did not decode (or has no usable sequence number).
    Malformed {
        /// Its sequence number, if one could be read.
        raw_sequence: Option<String>,
        /// What was wrong, for the log.
        reason: String,
    },
}

/// A stream event: its records in order, and its tumbling-window properties if the event
/// source mapping has a tumbling window.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The records, in stream order.
    pub records: Vec<Incoming>,
    /// Window, state, shard and whether this is the window's final invocation.
    pub window: Option<TimeWindowProperties>,
}

/// Why an invocation payload is not a stream event at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not a JSON object with a `Records` array.
    #[error("not a DynamoDB stream event (no Records array)")]
    NotAStreamEvent,
    /// The tumbling-window properties are there but cannot be read.
    #[error("malformed tumbling-window properties: {0}")]
    BadWindow(String),
}

/// The window-related keys of a time-window event (everything but `Records`).
const WINDOW_KEYS: [&str; 6] = [
    "window",
    "state",
    "shardId",
    "eventSourceARN",
    "isFinalInvokeForWindow",
    "isWindowTerminatedEarly",
];

/// Reads an invocation payload as a stream event.
pub fn parse_event(payload: &Value) -> Result<StreamEvent, EventError> {
    let object = payload.as_object().ok_or(EventError::NotAStreamEvent)?;
    let raw = object
        .get("Records")
        .and_then(Value::as_array)
        .ok_or(EventError::NotAStreamEvent)?;
    let window = if object.contains_key("window") {
        let properties: Map<String, Value> = WINDOW_KEYS
            .iter()
            .filter_map(|k| object.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        Some(
            serde_json::from_value(Value::Object(properties))
                .map_err(|e| EventError::BadWindow(e.to_string()))?,
        )
    } else {
        None
    };
    Ok(StreamEvent {
        records: raw.iter().map(parse_record).collect(),
        window,
    })
}

fn parse_record(raw: &Value) -> Incoming {
    let raw_sequence = raw
        .pointer("/dynamodb/SequenceNumber")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(sequence) = raw_sequence.as_deref().and_then(sequence_key) else {
        return Incoming::Malformed {
            raw_sequence,
            reason: "missing or malformed SequenceNumber".into(),
        };
    };
    match EventRecord::deserialize(raw) {
        Ok(record) => Incoming::Record {
            raw_sequence: raw_sequence.unwrap_or_default(),
            sequence,
            record: Box::new(record),
        },
        Err(e) => Incoming::Malformed {
            raw_sequence,
            reason: e.to_string(),
        },
    }
}

use serde::Deserialize;

/// A sequence number padded to 40 digits, so that comparing strings compares positions in
/// the shard; `None` unless it is 1 to 40 ASCII digits.
pub fn sequence_key(raw: &str) -> Option<String> {
    let valid =
        !raw.is_empty() && raw.len() <= SEQUENCE_DIGITS && raw.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| format!("{raw:0>SEQUENCE_DIGITS$}"))
}

/// A shard id as a short, attribute-safe key (16 hex digits of FNV-1a): the name of the
/// shard's mark on counter items.
pub fn shard_key(shard_id: &str) -> String {
    let hash = shard_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A `batchItemFailures` entry naming the record Lambda must retry from.
pub fn item_failure(raw_sequence: &str) -> DynamoDbBatchItemFailure {
    let mut failure = DynamoDbBatchItemFailure::default();
    failure.item_identifier = Some(raw_sequence.to_owned());
    failure
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sequence_keys_sort_like_numbers_and_reject_anything_else() {
        let a = sequence_key("999").unwrap();
        let b = sequence_key("1000").unwrap();
        assert!(a < b);
        assert_eq!(a.len(), 40);
        for bad in ["", "12a", "-1", &"9".repeat(41)] {
            assert_eq!(sequence_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_bad_record_does_not_spoil_the_others() {
        let event = json!({
            "Records": [
                {"eventID": "1", "eventName": "INSERT", "awsRegion": "us-east-1", "dynamodb": {"SequenceNumber": "100", "SizeBytes": 10, "Keys": {}}},
                {"eventID": "2", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "not-a-number", "SizeBytes": 10}},
                {"eventID": "3", "dynamodb": "garbage"},
                42
            ]
        });
        let parsed = parse_event(&event).unwrap();
        assert!(parsed.window.is_none());
        assert!(matches!(parsed.records[0], Incoming::Record { .. }));
        assert!(
            parsed.records[1..]
                .iter()
                .all(|r| matches!(r, Incoming::Malformed { .. }))
        );
        assert_eq!(
            parse_event(&json!({"hello": 1})).unwrap_err(),
            EventError::NotAStreamEvent
        );
        assert_eq!(
            parse_event(&json!([])).unwrap_err(),
            EventError::NotAStreamEvent
        );
    }

    #[test]
    fn window_properties_are_read_when_present() {
        let event = json!({
            "Records": [],
            "window": {"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T10:15:00Z"},
            "state": {"k": "v"},
            "shardId": "shardId-1",
            "eventSourceARN": "arn:stream",
            "isFinalInvokeForWindow": true,
            "isWindowTerminatedEarly": false
        });
        let window = parse_event(&event).unwrap().window.unwrap();
        assert!(window.is_final_invoke_for_window);
        assert_eq!(window.state["k"], "v");
        assert_eq!(window.shard_id.as_deref(), Some("shardId-1"));
        let mut bad = event;
        bad["window"] = json!("soon");
        assert!(matches!(parse_event(&bad), Err(EventError::BadWindow(_))));
    }
}
