//! Running in Lambda: the router under `lambda_http`, plus an internal extension that runs
//! each invocation's deferred work after the response and before the environment freezes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use catalog_core::cache::BoxFuture;
use lambda_extension::{Extension, LambdaEvent, NextEvent, service_fn};
use tokio::sync::{Mutex, mpsc};

use crate::deferred::AfterResponse;
use crate::state::AppState;

/// Time kept back from the invocation deadline, so the extension always reports back in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(200);

/// Registers the extension, then serves invocations until the environment shuts down.
pub async fn run(state: AppState) -> Result<(), lambda_http::Error> {
    let (sender, receiver) = mpsc::unbounded_channel::<Vec<BoxFuture>>();
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
    let app = crate::router(AppState {
        after_response: AfterResponse::Extension(sender),
        ..state
    });
    tokio::try_join!(lambda_http::run(app), extension.run())?;
    Ok(())
}

/// For one INVOKE event: waits for the handler's deferred work, runs it, and returns, which
/// tells Lambda this extension is done with the invocation. Bounded by the deadline.
async fn run_deferred(
    event: LambdaEvent,
    receiver: &Mutex<mpsc::UnboundedReceiver<Vec<BoxFuture>>>,
) {
    let NextEvent::Invoke(invoke) = event.next else {
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let budget = Duration::from_millis(invoke.deadline_ms.saturating_sub(now_ms))
        .saturating_sub(DEADLINE_MARGIN);
    let started = tokio::time::Instant::now();
    let mut receiver = receiver.lock().await;
    let Ok(Some(work)) = tokio::time::timeout(budget, receiver.recv()).await else {
        tracing::warn!(request_id = %invoke.request_id, "no deferred work arrived before the deadline");
        return;
    };
    let remaining = budget.saturating_sub(started.elapsed());
    if tokio::time::timeout(remaining, futures::future::join_all(work))
        .await
        .is_err()
    {
        tracing::warn!(request_id = %invoke.request_id, "deferred work cut off by the deadline; the revalidation queue keeps it");
    }
}
