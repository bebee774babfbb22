//! The refresh function: validates what triggered it (an EventBridge schedule, or a manual
//! invoke after a deploy), then runs [`refresh_once`] within the invocation's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use catalog_core::clock::Clock;
use catalog_core::jobs::refresh::{RefreshDeps, RefreshOptions, RefreshReport, refresh_once};
use serde::Serialize;
use serde_json::Value;

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The EventBridge schedule (`detail-type: Scheduled Event`, `source: aws.events`).
    Schedule {
        /// The rule that fired.
        rule: Option<String>,
    },
    /// A direct invoke with an empty payload (`{}` or `null`), e.g. once after a deploy.
    Manual,
}

/// What the function returns.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The job ran.
    Ran(RefreshReport),
    /// The payload was not a trigger this function accepts; nothing ran. Returned rather than
    /// failed, because retrying the same payload cannot help.
    Ignored {
        /// Why.
        reason: &'static str,
    },
}

/// Validates the payload.
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

/// Handles one invocation. `deadline_ms` is the invocation's deadline (epoch ms).
pub async fn handle(
    payload: &Value,
    deadline_ms: u64,
    deps: &RefreshDeps,
    options: &RefreshOptions,
    clock: &dyn Clock,
) -> Outcome {
    let trigger = match parse_trigger(payload) {
        Ok(trigger) => trigger,
        Err(reason) => {
            tracing::warn!(reason, "refresh ignored an unexpected payload");
            return Outcome::Ignored { reason };
        }
    };
    tracing::info!(?trigger, "refresh starting");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let deadline = (deadline_ms > now_ms)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(deadline_ms - now_ms));
    Outcome::Ran(refresh_once(deps, options, clock.now_ms(), deadline).await)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use catalog_core::cache::{Cache, CacheOptions};
    use catalog_core::clock::ManualClock;
    use catalog_core::store::memory::MemoryStore;
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
        assert!(parse_trigger(&json!({"hello": "world"})).is_err());
        assert!(parse_trigger(&json!([1, 2])).is_err());
    }

    #[tokio::test]
    async fn the_scheduled_fixture_drives_a_run_through_the_handler() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::at(1_795_602_600_000);
        let deps = RefreshDeps {
            catalog: store.clone(),
            stats: store.clone(),
            cache: Cache::new(CacheOptions::default(), None, clock.clone()),
        };
        let event: Value = serde_json::from_str(SCHEDULED).unwrap();
        let outcome = handle(
            &event,
            u64::MAX,
            &deps,
            &RefreshOptions::default(),
            clock.as_ref(),
        )
        .await;
        let Outcome::Ran(report) = outcome else {
            panic!("expected a run, got {outcome:?}")
        };
        assert_eq!(report.errors, 0);
        use catalog_core::store::StatsReader;
        assert_eq!(store.last_runs().await.unwrap()[0].job, "refresh");

        let ignored = handle(
            &json!({"unexpected": true}),
            u64::MAX,
            &deps,
            &RefreshOptions::default(),
            clock.as_ref(),
        )
        .await;
        assert!(matches!(ignored, Outcome::Ignored { .. }));
    }
}
