//! The view-aggregator function: one invocation of a tumbling window of the views stream.
//! The counting is [`catalog_core::streams::views`]; this adds the clock and maps a failed
//! window to a function error, which Lambda retries.

use aws_lambda_events::dynamodb::TimeWindowEventResponse;
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::streams::RawEvent;
use catalog_core::streams::views::{self, ViewAggDeps, ViewAggOptions};

/// Handles one invocation: the window's state (and any `batchItemFailures`), or an error
/// that makes Lambda retry the invocation.
pub async fn handle(
    payload: RawEvent,
    deps: &ViewAggDeps,
    options: &ViewAggOptions,
) -> Result<TimeWindowEventResponse, lambda_runtime::Error> {
    let outcome = views::handle(payload, deps, options, SystemClock.now_ms()).await;
    // Before Lambda freezes the environment: what this invocation counted.
    deps.cache.flush_invocation().await;
    outcome.map_err(|e| {
        tracing::error!(error.message = %e, "view-aggregator invocation failed; Lambda retries it");
        lambda_runtime::Error::from(e.to_string())
    })
}
