//! What may start a scheduled job: an EventBridge schedule, or an empty manual invoke (for
//! example once after a deploy). Anything else is refused before any work starts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde_json::Value;

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The EventBridge schedule (`detail-type: Scheduled Event`, `source: aws.events`).
    Schedule {
        /// The rule that fired.
        rule: Option<String>,
    },
    /// A direct invoke with an empty payload (`{}` or `null`).
    Manual,
}

/// Validates a job's payload. The error says why it was refused, for the log and the
/// function's answer (returned rather than failed: retrying the same payload cannot help).
pub fn parse_trigger(payload: &Value) -> Result<Trigger, &'static str> {
    match payload {
        Value::Null => return Ok(Trigger::Manual),
        Value::Object(fields) if fields.is_empty() => return Ok(Trigger::Manual),
        _ => {}
    }
    let event: EventBridgeEvent<Value> =
        serde_json::from_value(payload.clone()).map_err(|_| "not an EventBridge event")?;
    if event.source != "aws.events" || event.detail_type != "Scheduled Event" {
        return Err("not a scheduled event");
    }
    Ok(Trigger::Schedule {
        rule: event.resources.and_then(|r| r.into_iter().next()),
    })
}

/// The invocation's deadline (epoch ms, as Lambda gives it) as an instant of the runtime's
/// clock; `None` if it has already passed or is unknown (0).
pub fn deadline_instant(deadline_ms: u64) -> Option<tokio::time::Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    (deadline_ms > now_ms)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(deadline_ms - now_ms))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SCHEDULED: &str = include_str!("../../../tests/fixtures/eventbridge-scheduled.json");

    #[test]
    fn a_scheduled_event_and_an_empty_payload_are_triggers() {
        let event: Value = serde_json::from_str(SCHEDULED).unwrap();
        assert_eq!(
            parse_trigger(&event),
            Ok(Trigger::Schedule {
                rule: Some(
                    "arn:aws:events:us-east-1:123456789012:rule/catalog-cache-refresh".into()
                )
            })
        );
        assert_eq!(parse_trigger(&json!({})), Ok(Trigger::Manual));
        assert_eq!(parse_trigger(&Value::Null), Ok(Trigger::Manual));
    }

    #[test]
    fn other_payloads_are_refused() {
        let mut event: Value = serde_json::from_str(SCHEDULED).unwrap();
        event["source"] = "aws.s3".into();
        assert!(parse_trigger(&event).is_err());
        event["source"] = "aws.events".into();
        event["detail-type"] = "Object Created".into();
        assert!(parse_trigger(&event).is_err());
        assert!(parse_trigger(&json!({"hello": "world"})).is_err());
        assert!(parse_trigger(&json!([1, 2])).is_err());
        assert!(parse_trigger(&json!("run")).is_err());
    }
}
