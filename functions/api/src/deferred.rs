//! Work that runs after the response: stale-while-revalidate refreshes, next-page prefetch and
//! the counters flush.
//!
//! Lambda freezes the execution environment as soon as the runtime asks for its next event,
//! so a task spawned by the handler would only run at the next invoke. In Lambda the work
//! therefore goes to a runtime layer (see [`crate::lambda`]) that runs it after the response
//! is posted and before the runtime asks for the next event. On a long-running server nothing
//! freezes, so the work is spawned.
//! Handlers do not know which: they push onto [`Deferred`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use catalog_core::cache::{BoxFuture, Revalidation};
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::state::AppState;

/// The work one request leaves behind.
#[derive(Clone, Default)]
pub struct Deferred(Arc<Mutex<Vec<BoxFuture>>>);

impl Deferred {
    /// Adds work to run after the response. A panic in it is caught and logged: it ends
    /// that piece of work, never the extension that runs it or the process.
    pub fn push(&self, work: impl Future<Output = ()> + Send + 'static) {
        let guarded = async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = message, "post-response work panicked; dropped");
            }
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(guarded));
    }

    /// Adds a stale answer's refresh, if there is one.
    pub fn revalidate(&self, revalidation: Option<Revalidation>) {
        if let Some(revalidation) = revalidation {
            self.push(revalidation.run());
        }
    }

    fn take(&self) -> Vec<BoxFuture> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Deferred {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Deferred>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("the deferred-work layer is missing".into()))
    }
}

/// Where the work of a finished request goes.
#[derive(Clone, Debug)]
pub enum AfterResponse {
    /// Spawned on the runtime: a long-running server, where nothing freezes.
    Spawn,
    /// Handed to the runtime layer (when there is any), to run after the response and before
    /// the environment freezes.
    Invocation(mpsc::UnboundedSender<DeferredBatch>),
}

/// One invocation's deferred work.
pub type DeferredBatch = Vec<BoxFuture>;

impl AfterResponse {
    fn dispatch(&self, work: DeferredBatch) {
        match self {
            AfterResponse::Spawn => {
                if !work.is_empty() {
                    tokio::spawn(futures::future::join_all(work));
                }
            }
            AfterResponse::Invocation(sender) => {
                if !work.is_empty() && sender.send(work).is_err() {
                    tracing::warn!(
                        "the runtime layer is gone; deferred work dropped (the next stale read revalidates again)"
                    );
                }
            }
        }
    }
}

/// Gives every request a [`Deferred`], adds the counters flush to it, and hands the work on
/// once the handler has produced the response.
pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let deferred = Deferred::default();
    request.extensions_mut().insert(deferred.clone());
    let response = next.run(request).await;
    let (cache, every, emf) = (
        state.cache.clone(),
        state.counters_flush_every,
        state.emf_function.clone(),
    );
    // Most requests find the flush not due: they leave no work at all.
    if cache.counters_flush_due(every) {
        deferred.push(async move {
            cache.flush_counters(every, emf.as_deref()).await;
        });
    }
    state.after_response.dispatch(deferred.take());
    response
}
