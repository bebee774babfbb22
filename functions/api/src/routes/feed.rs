//! Ranked feeds: the ranking written by the refresh job, then one batch read of the page; the
//! next page is read into the cache after the response.

use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use catalog_core::cache::Source;
use catalog_core::cache::key::Category;
use catalog_core::model::{FeedKind, Product};
use catalog_core::reads;
use serde::{Deserialize, Serialize};

use crate::deferred::Deferred;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::respond::{CacheInfo, Cached, combined_source, elapsed_ms, etag};
use crate::state::AppState;

/// Query of `GET /feed`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// `trending` (24 h views) or `new` (creation time); default `trending`.
    #[param(pattern = "^(trending|new)$")]
    pub kind: Option<String>,
    /// Page number from 1 (default 1).
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// Products per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

/// One page of a feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedResponse {
    /// Which feed.
    pub kind: FeedKind,
    /// This page.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Products in the whole ranking.
    pub total: usize,
    /// This page's products, best first.
    pub products: Vec<Product>,
    /// The next page, if there is one (already being read into the cache).
    pub next_page: Option<u32>,
    /// Where the page came from (the weakest source of the ranking and the products).
    pub cache: CacheInfo,
    /// When the ranking was computed (epoch ms; 0 before the first refresh).
    pub ranked_at: i64,
    /// Time spent in the handler.
    pub processing_time_ms: f64,
}

#[utoipa::path(
    get, path = "/feed", tag = "feeds", params(FeedQuery),
    responses(
        (status = 200, body = FeedResponse), (status = 304, description = "Not modified"),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
/// A page of a ranked feed.
pub async fn feed(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FeedQuery>,
    headers: HeaderMap,
    deferred: Deferred,
) -> ApiResult<Response> {
    let started = Instant::now();
    let kind = FeedKind::parse(query.kind.as_deref().unwrap_or("trending"))
        .map_err(|e| ApiError::invalid(&e))?;
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(20);
    if !(1..=1_000_000).contains(&page) || !(1..=100).contains(&per_page) {
        return Err(ApiError::Invalid(
            "page: 1 to 1000000; per_page: 1 to 100".into(),
        ));
    }
    let mut ranking = reads::ranked_feed(&state.cache, &state.stats, kind).await?;
    deferred.revalidate(ranking.revalidation.take());
    let ranked = ranking
        .value
        .clone()
        .unwrap_or_else(|| std::sync::Arc::new(empty(kind)));
    let per = per_page as usize;
    let start = (page as usize - 1)
        .saturating_mul(per)
        .min(ranked.ids.len());
    let end = (start + per).min(ranked.ids.len());

    let mut sources = vec![ranking.source];
    let mut products = Vec::with_capacity(end - start);
    if start < end {
        let mut lookup = reads::summaries(
            &state.cache,
            &state.product_reader(),
            &ranked.ids[start..end],
        )
        .await?;
        deferred.revalidate(lookup.revalidation.take());
        for item in lookup.items {
            sources.push(item.source);
            // A product deactivated since the ranking was computed is left out.
            if let Some(product) = item.value.filter(|p| p.active) {
                products.push(product.as_ref().clone());
            }
        }
    }
    let next_page = (end < ranked.ids.len()).then_some(page + 1);
    if next_page.is_some() {
        let next: Vec<_> = ranked.ids[end..(end + per).min(ranked.ids.len())].to_vec();
        let (cache, catalog) = (state.cache.clone(), state.product_reader());
        deferred.push(async move {
            if let Err(e) = reads::summaries(&cache, &catalog, &next).await {
                tracing::warn!(error.message = %e, "next-page prefetch failed");
            }
        });
    }
    let source: Source = combined_source(sources);
    Ok(Cached {
        etag: etag(&(&products, ranked.ids.len(), ranked.computed_at)),
        body: FeedResponse {
            kind,
            page,
            per_page,
            total: ranked.ids.len(),
            products,
            next_page,
            cache: CacheInfo {
                source,
                age_ms: ranking.age_ms,
            },
            ranked_at: ranked.computed_at,
            processing_time_ms: elapsed_ms(started),
        },
        source,
        age_ms: ranking.age_ms,
        policy: state.cache.policy(Category::Feed),
    }
    .respond(&headers))
}

fn empty(kind: FeedKind) -> catalog_core::model::RankedFeed {
    catalog_core::model::RankedFeed {
        kind,
        ids: Vec::new(),
        computed_at: 0,
    }
}
