//! The catalog HTTP API: one axum [`Router`] with every route, served by `lambda_http` in
//! Lambda ([`lambda::run`]) and by a TCP listener locally ([`serve`]).
//!
//! # Layout
//! - [`routes`]: handlers per resource (products, offers, feeds, admin).
//! - [`state`]: shared state (store ports, cache, clock, admin token).
//! - [`deferred`]: work that runs after the response (revalidation, prefetch, counters).
//! - [`lambda`]: the Lambda runtime and the internal extension that runs deferred work.
//! - [`auth`]: the admin and write bearer tokens.
//! - `respond`, `error`, `extract`: cache headers, JSON errors, validated inputs.

pub mod auth;
pub mod deferred;
mod error;
mod extract;
pub mod lambda;
pub mod observe;
pub mod openapi;
mod respond;
pub mod routes;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use error::{ApiError, ErrorBody};
pub use state::AppState;

/// Largest request body accepted (a batch of 100 ids is about 7 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The API's router, with the OpenAPI document at `/openapi.json`.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus the caller's `extra` routes, behind the same layers (error fallbacks,
/// panic catching, post-response work, body limit). Extra routes are not in the OpenAPI
/// document.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (routes, mut document) = openapi::routes().split_for_parts();
    openapi::finish(&mut document, state.cache.keys().prefix());
    let document = std::sync::Arc::new(document);
    let routes = routes
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .merge(extra);
    with_layers(routes, state)
}

/// The fallbacks and layers every route goes through.
fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        // Only matched routes know their template: they name it for the counting layer.
        .route_layer(observe::NameRouteLayer)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Inside the deferred-work layer: a panicking handler becomes a 500 and the layer
        // still hands this invocation's work on, so the extension is never left waiting
        // for a batch that will not come (holding the environment until the deadline).
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_| -> Response { ApiError::Internal("handler panicked".into()).into_response() },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deferred::layer,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost: every request is counted, unmatched ones and panics included.
        .layer(observe::CountLayer::new(state.cache.clone()))
        .with_state(state)
}

/// Serves the API on a TCP listener (local runs, tests, benchmarks). Deferred work is spawned.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// [`serve`] until `shutdown` completes, then finishes the requests under way.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
