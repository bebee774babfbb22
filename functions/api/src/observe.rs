//! Counts every request per method and route template (`GET /products/{id}`, not the raw
//! path; `(unmatched)` when no route matched): its
//! answer (from `X-Cache` and the status), the handler's latency and the age of the data it
//! served. In process, atomics only; the counts reach Redis with the cache counters' flush.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use catalog_core::cache::traffic::Answer;

use crate::state::AppState;

/// The data's age in milliseconds, set on cached responses (the `Age` header has seconds).
#[derive(Debug, Clone, Copy)]
pub struct ServedAge(pub u64);

/// Where the routing layer leaves the matched route for [`layer`], which runs outside the
/// router (and the panic catcher), so it sees every request: unmatched ones and panics too.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Requests that matched no route are counted under this name.
pub const UNMATCHED: &str = "(unmatched)";

/// Outermost middleware: times the request and counts it under the route the router matched
/// (`<METHOD> <template>`), or [`UNMATCHED`].
pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    let age = response
        .extensions()
        .get::<ServedAge>()
        .map(|a| Duration::from_millis(a.0));
    state.cache.traffic().record(
        slot.0.get().map_or(UNMATCHED, String::as_str),
        answer_of(response.status(), response.headers()),
        started.elapsed(),
        age,
    );
    response
}

/// On the matched routes: names the route for [`layer`]. The method too: a write to a route
/// shares its template with the read.
pub async fn name_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        request.extensions().get::<RouteSlot>(),
        request.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot
            .0
            .set(format!("{} {}", request.method(), path.as_str()));
    }
    next.run(request).await
}

/// What a response says of where it came from.
pub fn answer_of(status: StatusCode, headers: &HeaderMap) -> Answer {
    if status == StatusCode::NOT_FOUND {
        return Answer::NotFound;
    }
    if status.is_server_error() {
        return Answer::Error;
    }
    match headers
        .get("x-cache")
        .map(axum::http::HeaderValue::as_bytes)
    {
        Some(b"HIT-L1") => Answer::L1,
        Some(b"HIT-L2") => Answer::L2,
        Some(b"STALE") => Answer::Stale,
        Some(b"MISS") => Answer::Loaded,
        Some(b"BYPASS") => Answer::Bypass,
        _ => Answer::Uncached,
    }
}
