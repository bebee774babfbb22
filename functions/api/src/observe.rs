//! Counts every routed request per method and route template (`GET /products/{id}`, not the
//! raw path): its
//! answer (from `X-Cache` and the status), the handler's latency and the age of the data it
//! served. In process, atomics only; the counts reach Redis with the cache counters' flush.

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

/// Middleware on the matched routes (so the route template is known).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // The method too: a write to a route shares its template with the read.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", request.method(), p.as_str()));
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        let age = response
            .extensions()
            .get::<ServedAge>()
            .map(|a| Duration::from_millis(a.0));
        state.cache.traffic().record(
            &route,
            answer_of(response.status(), response.headers()),
            started.elapsed(),
            age,
        );
    }
    response
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
