//! The refresh function: validates what triggered it (an EventBridge schedule, or a manual
//! invoke after a deploy), then runs [`refresh_once`] within the invocation's deadline.

use catalog_core::clock::Clock;
use catalog_core::jobs::refresh::{RefreshDeps, RefreshOptions, RefreshReport, refresh_once};
use catalog_core::jobs::trigger::{deadline_instant, parse_trigger};
use serde::Serialize;
use serde_json::Value;

/// What the function returns.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The job ran (or skipped because another run held the lease: see the report).
    Ran(RefreshReport),
    /// The payload was not a trigger this function accepts; nothing ran. Returned rather than
    /// failed, because retrying the same payload cannot help.
    Ignored {
        /// Why.
        reason: &'static str,
    },
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
    let deadline = deadline_instant(deadline_ms);
    Outcome::Ran(refresh_once(deps, options, clock.now_ms(), deadline).await)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use catalog_core::cache::{Cache, CacheOptions};
    use catalog_core::clock::ManualClock;
    use catalog_core::store::StatsReader;
    use catalog_core::store::memory::MemoryStore;
    use serde_json::json;

    use super::*;

    const SCHEDULED: &str = include_str!("../../../tests/fixtures/eventbridge-scheduled.json");

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
