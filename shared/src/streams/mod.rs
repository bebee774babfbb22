//! DynamoDB stream events as Lambda delivers them to the stream functions, read leniently:
//! each record is decoded on its own, so one malformed record is skipped and counted instead
//! of failing (and blocking) the whole batch.
//!
//! Every type here is `aws_lambda_events`'; nothing about the event is hand-modelled.

pub mod cache_sync;
pub mod views;

use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::DynamoDbBatchItemFailure;
use aws_lambda_events::time_window::TimeWindowProperties;
use serde::Deserialize;
use serde_json::value::RawValue;
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
        /// Its partition key (`dynamodb.Keys.pk.S`), if one could be read: enough for
        /// cache-sync to invalidate the product a record it cannot read was about.
        partition: Option<String>,
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

/// A stream event as the runtime hands it over: each record still as its JSON text, the rest
/// (the tumbling-window properties, if any) as values.
///
/// Records are decoded one by one later, straight from their text into `EventRecord`, so one
/// that does not decode is skipped on its own, and no record is parsed twice.
#[derive(Debug, Default)]
pub struct RawEvent {
    /// `Records`, each as its JSON text; `None` when the payload has no `Records` array.
    pub records: Option<Vec<Box<RawValue>>>,
    /// Every other key of the payload.
    pub rest: Map<String, Value>,
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RawEvent;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawEvent, A::Error> {
                let mut event = RawEvent::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "Records" {
                        // Each record's text, unparsed: needs a text deserializer (as the
                        // runtime's), not a `Value`.
                        event.records = Some(map.next_value()?);
                    } else {
                        event.rest.insert(key, map.next_value()?);
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl RawEvent {
    /// From an event held as a value (tests, the in-process dev invoker).
    pub fn from_value(event: &Value) -> Result<RawEvent, serde_json::Error> {
        serde_json::from_str(&event.to_string())
    }
}

/// Reads an invocation payload as a stream event.
pub fn parse_event(payload: RawEvent) -> Result<StreamEvent, EventError> {
    let RawEvent { records, rest } = payload;
    let records = records.ok_or(EventError::NotAStreamEvent)?;
    // What is left is the tumbling-window properties, when the mapping has a window.
    let window = if rest.contains_key("window") {
        Some(
            TimeWindowProperties::deserialize(Value::Object(rest))
                .map_err(|e| EventError::BadWindow(e.to_string()))?,
        )
    } else {
        None
    };
    Ok(StreamEvent {
        records: records.iter().map(|r| parse_record(r)).collect(),
        window,
    })
}

fn parse_record(raw: &RawValue) -> Incoming {
    match serde_json::from_str::<EventRecord>(raw.get()) {
        Ok(record) => match record
            .change
            .sequence_number
            .as_deref()
            .and_then(sequence_key)
        {
            Some(sequence) => Incoming::Record {
                raw_sequence: record.change.sequence_number.clone().unwrap_or_default(),
                sequence,
                record: Box::new(record),
            },
            None => Incoming::Malformed {
                raw_sequence: record.change.sequence_number.clone(),
                partition: match record.change.keys.get("pk") {
                    Some(serde_dynamo::AttributeValue::S(pk)) => Some(pk.clone()),
                    _ => None,
                },
                reason: "missing or malformed SequenceNumber".into(),
            },
        },
        Err(e) => {
            // For the log and for cache-sync: what can still be read of it.
            let value = serde_json::from_str::<Value>(raw.get()).ok();
            let text = |pointer: &str| {
                value
                    .as_ref()
                    .and_then(|v| v.pointer(pointer)?.as_str().map(str::to_owned))
            };
            Incoming::Malformed {
                raw_sequence: text("/dynamodb/SequenceNumber"),
                partition: text("/dynamodb/Keys/pk/S"),
                reason: e.to_string(),
            }
        }
    }
}

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
        let parsed = parse_event(RawEvent::from_value(&event).unwrap()).unwrap();
        assert!(parsed.window.is_none());
        assert!(matches!(parsed.records[0], Incoming::Record { .. }));
        assert!(
            parsed.records[1..]
                .iter()
                .all(|r| matches!(r, Incoming::Malformed { .. }))
        );
        assert_eq!(
            parse_event(RawEvent::from_value(&json!({"hello": 1})).unwrap()).unwrap_err(),
            EventError::NotAStreamEvent
        );
        assert!(RawEvent::from_value(&json!([])).is_err());
        assert!(RawEvent::from_value(&json!({"Records": 7})).is_err());
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
        let window = parse_event(RawEvent::from_value(&event).unwrap())
            .unwrap()
            .window
            .unwrap();
        assert!(window.is_final_invoke_for_window);
        assert_eq!(window.state["k"], "v");
        assert_eq!(window.shard_id.as_deref(), Some("shardId-1"));
        let mut bad = event;
        bad["window"] = json!("soon");
        assert!(matches!(
            parse_event(RawEvent::from_value(&bad).unwrap()),
            Err(EventError::BadWindow(_))
        ));
    }
}
