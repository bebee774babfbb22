//! Running in Lambda: the router under `lambda_http`, with a runtime layer that runs each
//! invocation's deferred work after its response is posted and before the runtime asks for the
//! next event. Lambda freezes the environment only once the runtime asks for the next event, so
//! the work runs in the invocation, after the caller has its response, with no extension and
//! no extra round trip to the Runtime API (an extension costs one more per invocation).

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::lambda_runtime::{LambdaInvocation, Runtime, layers::TracingLayer};
use lambda_http::tower::{Layer, Service};
use tokio::sync::mpsc;

use crate::deferred::{AfterResponse, DeferredBatch};
use crate::state::AppState;

/// How long deferred work may run: up to the deadline less [`DEADLINE_MARGIN`]; nothing
/// past it (Lambda ends the invocation there); [`FALLBACK_BUDGET`] without a deadline.
fn deferred_budget(deadline_ms: u64, now_ms: u64) -> Duration {
    if deadline_ms == 0 {
        return FALLBACK_BUDGET;
    }
    Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(DEADLINE_MARGIN)
}

/// Time kept back from the invocation deadline, so the runtime always asks for its next event
/// in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(200);
/// Budget when the event carries no usable deadline (local emulators send `deadlineMs: 0`).
const FALLBACK_BUDGET: Duration = Duration::from_secs(10);

type BoxError = lambda_http::lambda_runtime::tower::BoxError;

/// Serves invocations until the environment shuts down.
pub async fn run(state: AppState) -> Result<(), lambda_http::Error> {
    run_with(state, axum::Router::new()).await
}

/// [`run`] with the caller's `extra` routes (see [`crate::router_with`]).
pub async fn run_with(
    state: AppState,
    extra: axum::Router<AppState>,
) -> Result<(), lambda_http::Error> {
    let (sender, receiver) = mpsc::unbounded_channel::<DeferredBatch>();
    let app = crate::router_with(
        AppState {
            after_response: AfterResponse::Invocation(sender),
            ..state
        },
        extra,
    );
    Runtime::new(lambda_http::Adapter::from(app))
        .layer(TracingLayer::new())
        .layer(RunDeferred {
            receiver: Arc::new(Mutex::new(receiver)),
        })
        .run()
        .await
}

/// The outermost runtime layer: around the handler and the posting of its response.
#[derive(Clone)]
struct RunDeferred {
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<DeferredBatch>>>,
}

impl<S> Layer<S> for RunDeferred {
    type Service = RunDeferredService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RunDeferredService {
            inner,
            receiver: self.receiver.clone(),
        }
    }
}

struct RunDeferredService<S> {
    inner: S,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<DeferredBatch>>>,
}

impl<S> Service<LambdaInvocation> for RunDeferredService<S>
where
    S: Service<LambdaInvocation, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let (request_id, deadline_ms) = (
            invocation.context.request_id.clone(),
            invocation.context.deadline,
        );
        let handled = self.inner.call(invocation);
        let receiver = self.receiver.clone();
        Box::pin(async move {
            // The handler ran and its response (or error) was posted.
            let posted = handled.await;
            run_deferred(&request_id, deadline_ms, &receiver).await;
            posted
        })
    }
}

/// Runs the work the invocation left (and any an earlier one left, should one have been cut
/// off), bounded by the invocation's deadline. Nothing waits for work that never comes: a
/// handler that panicked left none, and the batch of one that answered is already queued.
async fn run_deferred(
    request_id: &str,
    deadline_ms: u64,
    receiver: &Mutex<mpsc::UnboundedReceiver<DeferredBatch>>,
) {
    let mut work = Vec::new();
    {
        let mut receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
        while let Ok(batch) = receiver.try_recv() {
            work.extend(batch);
        }
    }
    if work.is_empty() {
        return;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let budget = deferred_budget(deadline_ms, now_ms);
    if tokio::time::timeout(budget, futures::future::join_all(work))
        .await
        .is_err()
    {
        tracing::warn!(
            request_id,
            "deferred work cut off by the deadline; revalidations already queued are finished by the refresh job"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_work_stops_short_of_the_deadline_and_never_runs_past_it() {
        assert_eq!(deferred_budget(10_000, 9_000), Duration::from_millis(800));
        assert_eq!(deferred_budget(10_000, 9_900), Duration::ZERO);
        assert_eq!(deferred_budget(10_000, 12_000), Duration::ZERO);
        assert_eq!(deferred_budget(0, 12_000), FALLBACK_BUDGET);
    }
}
