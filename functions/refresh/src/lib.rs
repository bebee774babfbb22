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
    let report = refresh_once(deps, options, clock.now_ms(), deadline).await;
    // Before Lambda freezes the environment: what this run counted.
    deps.cache.flush_invocation().await;
    Outcome::Ran(report)
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
            cache: Cache::new(
                CacheOptions::default(),
                Some(Arc::new(catalog_core::cache::l2::memory::MemoryL2::new())),
                clock.clone(),
            ),
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
        // What the run counted reached the shared windows before the handler returned.
        let history = deps.cache.history().await;
        assert!(history.last_5m.counters.l2_calls > 0, "{history:?}");
        let writes = history
            .operations
            .last_5m
            .iter()
            .find(|o| o.operation == "l2_set")
            .map(|o| o.calls);
        assert!(writes > Some(0), "{history:?}");
        // Its L1 serves no reads: what it took is not in the fleet's L1 figures.
        assert!(deps.cache.snapshot().l1_inserts > 0);
        assert_eq!(history.last_5m.counters.l1_inserts, 0, "{history:?}");

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
