//! Running in Lambda: the router under `lambda_http`, plus an internal extension that runs
//! each invocation's deferred work after the response and before the environment freezes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_extension::{Extension, LambdaEvent, NextEvent, service_fn};
use tokio::sync::{Mutex, mpsc};

use crate::deferred::{AfterResponse, DeferredBatch};
use crate::state::AppState;

/// Time kept back from the invocation deadline, so the extension always reports back in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(200);
/// Budget when the event carries no usable deadline (local emulators send `deadlineMs: 0`).
const FALLBACK_BUDGET: Duration = Duration::from_secs(10);

/// Registers the extension, then serves invocations until the environment shuts down.
pub async fn run(state: AppState) -> Result<(), lambda_http::Error> {
    run_with(state, axum::Router::new()).await
}

/// [`run`] with the caller's `extra` routes (see [`crate::router_with`]).
pub async fn run_with(
    state: AppState,
    extra: axum::Router<AppState>,
) -> Result<(), lambda_http::Error> {
    let (sender, receiver) = mpsc::unbounded_channel::<DeferredBatch>();
    let receiver = Arc::new(Mutex::new(receiver));
    // Registration must happen during init, before the runtime asks for its first event.
    let extension = Extension::new()
        .with_extension_name("after-response")
        .with_events(&["INVOKE"])
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let receiver = receiver.clone();
            async move {
                run_deferred(event, &receiver).await;
                Ok::<(), lambda_extension::Error>(())
            }
        }))
        .register()
        .await?;
    let app = crate::router_with(
        AppState {
            after_response: AfterResponse::Extension(sender),
            ..state
        },
        extra,
    );
    tokio::try_join!(lambda_http::run(app), extension.run())?;
    Ok(())
}

/// For one INVOKE event: runs deferred work until this invocation's batch has run, then
/// returns, which tells Lambda this extension is done with the invocation. Batches of earlier
/// invocations still in the channel (their extension gave up at a deadline) run first: late,
/// but before this freeze, so nothing is lost. Bounded by the deadline.
async fn run_deferred(
    event: LambdaEvent,
    receiver: &Mutex<mpsc::UnboundedReceiver<DeferredBatch>>,
) {
    let NextEvent::Invoke(invoke) = event.next else {
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let budget = if invoke.deadline_ms > now_ms {
        Duration::from_millis(invoke.deadline_ms - now_ms).saturating_sub(DEADLINE_MARGIN)
    } else {
        FALLBACK_BUDGET
    };
    let deadline = tokio::time::Instant::now() + budget;
    let mut receiver = receiver.lock().await;
    loop {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, receiver.recv()).await else {
            tracing::warn!(request_id = %invoke.request_id, "no deferred work arrived before the deadline");
            return;
        };
        let ours = batch
            .request_id
            .as_deref()
            .is_none_or(|id| id == invoke.request_id);
        if tokio::time::timeout_at(deadline, futures::future::join_all(batch.work))
            .await
            .is_err()
        {
            tracing::warn!(request_id = %invoke.request_id, "deferred work cut off by the deadline; revalidations already queued are finished by the refresh job");
            return;
        }
        if ours {
            return;
        }
    }
}
