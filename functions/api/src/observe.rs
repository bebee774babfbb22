//! Counts every request per method and route template (`GET /products/{id}`, not the raw
//! path; `(unmatched)` when no route matched): its
//! answer (from `X-Cache` and the status), the handler's latency and the age of the data it
//! served. In process, atomics only; the counts reach Redis with the cache counters' flush.
//!
//! Two tower layers rather than axum's `from_fn`: that boxes the rest of the stack and its
//! future on every request, which cost more than the counting itself (`bench handler`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use catalog_core::cache::Cache;
use catalog_core::cache::traffic::Answer;

/// The data's age in milliseconds, set on cached responses (the `Age` header has seconds).
#[derive(Debug, Clone, Copy)]
pub struct ServedAge(pub u64);

/// Where the routing layer leaves the matched route for [`CountLayer`], which runs outside
/// the router (and the panic catcher), so it sees every request: unmatched ones and panics too.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Requests that matched no route are counted under this name.
pub const UNMATCHED: &str = "(unmatched)";

/// Outermost layer: times each request and counts it under the route the router matched
/// (`<METHOD> <template>`, named by [`NameRouteLayer`]), or [`UNMATCHED`].
#[derive(Clone)]
pub struct CountLayer {
    cache: Cache,
}

impl CountLayer {
    /// Counts into `cache`'s traffic.
    pub fn new(cache: Cache) -> CountLayer {
        CountLayer { cache }
    }
}

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// The service of [`CountLayer`].
#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    cache: Cache,
}

impl<S> tower::Service<Request> for Count<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let slot = RouteSlot::default();
        request.extensions_mut().insert(slot.clone());
        Counted {
            started: Instant::now(),
            inner: self.inner.call(request),
            slot,
            cache: self.cache.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; counted when its response is ready.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        started: Instant,
        slot: RouteSlot,
        cache: Cache,
    }
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let age = response
            .extensions()
            .get::<ServedAge>()
            .map(|a| Duration::from_millis(a.0));
        this.cache.traffic().record(
            this.slot.0.get().map_or(UNMATCHED, String::as_str),
            answer_of(response.status(), response.headers()),
            this.started.elapsed(),
            age,
        );
        Poll::Ready(Ok(response))
    }
}

/// On the matched routes: names the route for [`CountLayer`]. The method too: a write to a
/// route shares its template with the read.
#[derive(Clone, Copy, Default)]
pub struct NameRouteLayer;

impl<S> tower::Layer<S> for NameRouteLayer {
    type Service = NameRoute<S>;

    fn layer(&self, inner: S) -> NameRoute<S> {
        NameRoute { inner }
    }
}

/// The service of [`NameRouteLayer`]: adds nothing to the request's future.
#[derive(Clone)]
pub struct NameRoute<S> {
    inner: S,
}

impl<S: tower::Service<Request>> tower::Service<Request> for NameRoute<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        if let (Some(slot), Some(path)) = (
            request.extensions().get::<RouteSlot>(),
            request.extensions().get::<MatchedPath>(),
        ) {
            let _ = slot
                .0
                .set(format!("{} {}", request.method(), path.as_str()));
        }
        self.inner.call(request)
    }
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
