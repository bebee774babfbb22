//! Responses that say where they came from: `X-Cache`, `Age`, `ETag` (answering
//! `If-None-Match` with 304) and `Cache-Control`, plus the `cache` and `processing_time_ms`
//! fields every cached body carries.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalog_core::cache::{Policy, Source};
use catalog_core::model::{Offer, PeriodStats, Product};
use serde::Serialize;

/// The `X-Cache` value of a source.
pub fn x_cache(source: Source) -> &'static str {
    match source {
        Source::L1 => "HIT-L1",
        Source::L2 => "HIT-L2",
        Source::Stale => "STALE",
        Source::Loaded => "MISS",
        Source::Bypass => "BYPASS",
    }
}

/// A 404 that still says where the "not found" came from (a cached not-found is `HIT-L1` or
/// `HIT-L2`).
pub fn not_found(source: Source) -> Response {
    let mut response = crate::error::ApiError::NotFound.into_response();
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(x_cache(source)));
    response
}

/// The answer for several lookups at once (a batch or a feed page): the weakest source wins,
/// so a response with one miss says `MISS`, and one read without Redis says `BYPASS`.
pub fn combined_source(sources: impl IntoIterator<Item = Source>) -> Source {
    let rank = |s: Source| match s {
        Source::L1 => 0,
        Source::L2 => 1,
        Source::Stale => 2,
        Source::Loaded => 3,
        Source::Bypass => 4,
    };
    sources
        .into_iter()
        .max_by_key(|s| rank(*s))
        .unwrap_or(Source::L1)
}

/// The `cache` object of a body.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct CacheInfo {
    /// `L1`, `L2`, `STALE`, `LOADED` or `BYPASS`.
    #[schema(value_type = String, example = "L2")]
    pub source: Source,
    /// Age of the data in milliseconds.
    pub age_ms: u64,
}

/// Milliseconds since `started`, for `processing_time_ms`.
pub fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// How a cached response may be reused downstream.
pub fn cache_control(source: Source, age_ms: u64, policy: Policy) -> String {
    let fresh_left = policy
        .fresh
        .saturating_sub(Duration::from_millis(age_ms))
        .as_secs();
    let max_age = if source == Source::Stale {
        0
    } else {
        fresh_left
    };
    format!(
        "public, max-age={max_age}, stale-while-revalidate={}",
        policy.stale.as_secs()
    )
}

/// A strong validator over the data part of a body (not its `cache` or timing fields, which
/// change on every request).
pub fn etag<T: Serialize>(data: &T) -> String {
    // Deterministic within one build, which is all a validator needs.
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_vec(data)
        .unwrap_or_default()
        .hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// A strong validator from what identifies a product answer's content, with no serializing:
/// the product's version, each live offer's id and version (every write bumps a version; an
/// offer that expires leaves the set) and update times (a bulk load restarts versions), and the
/// stats' figures.
pub fn product_etag(
    product: &Product,
    live_offers: &[Offer],
    stats: Option<&PeriodStats>,
) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    (&product.id, product.version, product.updated_at).hash(&mut hasher);
    live_offers.len().hash(&mut hasher);
    for offer in live_offers {
        (&offer.id, offer.version, offer.updated_at).hash(&mut hasher);
    }
    // Destructured: a new field must be added here to reach the validator.
    stats
        .map(
            |PeriodStats {
                 views_1h,
                 views_24h,
                 views_7d,
                 views_30d,
                 computed_at,
             }| (views_1h, views_24h, views_7d, views_30d, computed_at),
        )
        .hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// Whether `If-None-Match` matches `etag` (weak comparison, lists and `*`).
fn not_modified(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// A cached read's response: the body, or 304 when the client already has this version.
pub struct Cached<T> {
    /// The whole body.
    pub body: T,
    /// `ETag` of the data part.
    pub etag: String,
    /// Where the answer came from.
    pub source: Source,
    /// Age of the data.
    pub age_ms: u64,
    /// The data's lifetimes, for `Cache-Control`.
    pub policy: Policy,
}

impl<T: Serialize> Cached<T> {
    /// Builds the response for a request with these headers.
    pub fn respond(self, request: &HeaderMap) -> Response {
        let mut response = if not_modified(request, &self.etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            Json(self.body).into_response()
        };
        let headers = response.headers_mut();
        headers.insert("x-cache", HeaderValue::from_static(x_cache(self.source)));
        headers.insert(header::AGE, HeaderValue::from(self.age_ms / 1000));
        response
            .extensions_mut()
            .insert(crate::observe::ServedAge(self.age_ms));
        let headers = response.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, etag);
        }
        if let Ok(control) =
            HeaderValue::from_str(&cache_control(self.source, self.age_ms, self.policy))
        {
            headers.insert(header::CACHE_CONTROL, control);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_handles_lists_weak_tags_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(not_modified(&headers, "\"b\""));
        assert!(!not_modified(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, "\"c\""));
    }

    #[test]
    fn the_weakest_source_names_a_combined_answer() {
        assert_eq!(combined_source([Source::L1, Source::L2]), Source::L2);
        assert_eq!(
            combined_source([Source::L1, Source::Loaded, Source::Stale]),
            Source::Loaded
        );
        assert_eq!(
            combined_source([Source::Bypass, Source::L1]),
            Source::Bypass
        );
    }

    #[test]
    fn stale_answers_must_be_revalidated_downstream() {
        let policy = Policy {
            fresh: Duration::from_secs(300),
            stale: Duration::from_secs(60),
            negative: Duration::from_secs(30),
        };
        assert_eq!(
            cache_control(Source::L2, 100_000, policy),
            "public, max-age=200, stale-while-revalidate=60"
        );
        assert_eq!(
            cache_control(Source::Stale, 400_000, policy),
            "public, max-age=0, stale-while-revalidate=60"
        );
    }
}
