//! Product routes: cached reads (one product, a batch, stats) and writes that invalidate.

use std::collections::HashSet;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use catalog_core::ExpectedVersion;
use catalog_core::cache::Lookup;
use catalog_core::cache::key::Category;
use catalog_core::expiry_set::ExpirySet;
use catalog_core::model::{
    EventId, Money, Offer, OfferId, OfferStatus, PeriodStats, Product, ProductDetail, ProductId,
    ViewEvent,
};
use catalog_core::reads;
use serde::{Deserialize, Serialize};

use crate::auth::Writer;
use crate::deferred::Deferred;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, offer_id, product_id};
use crate::respond::{
    CacheInfo, Cached, combined_source, elapsed_ms, etag, not_found, product_etag,
};
use crate::state::AppState;

/// Most ids one batch request may name.
pub const MAX_BATCH: usize = 100;
/// Offers may be scheduled at most this far ahead.
const MAX_OFFER_LIFETIME_MS: i64 = 366 * 86_400_000;

/// A product with its live offers and view stats.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductResponse {
    /// The product.
    pub product: Product,
    /// Offers that are active and not yet expired.
    pub offers: Vec<Offer>,
    /// Views over the standard periods (`null` if the stats could not be read).
    pub stats: Option<PeriodStats>,
    /// Where the product came from.
    pub cache: CacheInfo,
    /// Time spent in the handler.
    pub processing_time_ms: f64,
}

#[utoipa::path(
    get, path = "/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id: 1 to 64 of [A-Za-z0-9_-]", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The product; see X-Cache, Age, ETag", body = ProductResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
/// A product with its active offers and period stats: one DynamoDB Query on a miss.
pub async fn get_product(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
    deferred: Deferred,
) -> ApiResult<Response> {
    let started = Instant::now();
    let id = product_id(&raw)?;
    let (detail, stats) = detail_and_stats(&state, &id, &deferred).await;
    let detail = detail?;
    let stats = match stats {
        Ok(lookup) => lookup.value.map(|s| s.as_ref().clone()),
        // Stats are secondary: without them the product is still worth serving.
        Err(e) => {
            tracing::warn!(product = %id, error.message = %e, "stats unavailable; served without them");
            None
        }
    };
    let Some(found) = detail.value else {
        return Ok(not_found(detail.source));
    };
    let now = state.clock.now_ms();
    let offers: Vec<Offer> = found
        .offers
        .iter()
        .filter(|o| o.is_live_at(now))
        .cloned()
        .collect();
    let tag = product_etag(&found.product, &offers, stats.as_ref());
    Ok(Cached {
        body: ProductResponse {
            product: found.product.clone(),
            offers,
            stats,
            cache: CacheInfo {
                source: detail.source,
                age_ms: detail.age_ms,
            },
            processing_time_ms: elapsed_ms(started),
        },
        etag: tag,
        source: detail.source,
        age_ms: detail.age_ms,
        policy: state.cache.policy(Category::Product),
    }
    .respond(&headers))
}

/// A product's detail and stats, read together (one Redis round trip on an L2 hit); their
/// stale-answer refreshes go to `deferred`.
async fn detail_and_stats(
    state: &AppState,
    id: &ProductId,
    deferred: &Deferred,
) -> (
    catalog_core::Result<Lookup<ProductDetail>>,
    catalog_core::Result<Lookup<PeriodStats>>,
) {
    let catalog = state.product_reader();
    let (mut detail, mut stats) =
        reads::product_detail_and_stats(&state.cache, &catalog, &state.stats, id).await;
    if let Ok(lookup) = &mut detail {
        deferred.revalidate(lookup.revalidation.take());
    }
    if let Ok(lookup) = &mut stats {
        deferred.revalidate(lookup.revalidation.take());
    }
    (detail, stats)
}

/// Ids to read at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 100 product ids.
    #[schema(value_type = Vec<crate::openapi::IdString>, min_items = 1, max_items = 100)]
    pub ids: Vec<String>,
}

/// Counts of where a batch's products came from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchCacheInfo {
    /// The weakest source among the items (what `X-Cache` says).
    #[schema(value_type = String)]
    pub source: catalog_core::cache::Source,
    /// Answered by this process's L1.
    pub l1: usize,
    /// Answered by Redis.
    pub l2: usize,
    /// Answered stale while being refreshed.
    pub stale: usize,
    /// Loaded from DynamoDB (one BatchGetItem for all of them).
    pub loaded: usize,
}

/// The products of a batch, in request order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    /// Products found, in the order requested.
    pub products: Vec<Product>,
    /// Requested ids that do not exist.
    pub not_found: Vec<ProductId>,
    /// Where the products came from.
    pub cache: BatchCacheInfo,
    /// Time spent in the handler.
    pub processing_time_ms: f64,
}

/// Parses a list of 1 to 100 ids, dropping duplicates but keeping order.
pub fn parse_ids(raw: &[String]) -> ApiResult<Vec<ProductId>> {
    if raw.is_empty() || raw.len() > MAX_BATCH {
        return Err(ApiError::Invalid(format!("ids: 1 to {MAX_BATCH} ids")));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(raw.len());
    for r in raw {
        let id = product_id(r)?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[utoipa::path(
    post, path = "/products/batch", tag = "products", request_body = BatchRequest,
    responses(
        (status = 200, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, description = "the body is not application/json", body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
/// Up to 100 products: L1, then one MGET per slot group, then one BatchGetItem for the misses.
pub async fn batch(
    State(state): State<AppState>,
    deferred: Deferred,
    ApiJson(request): ApiJson<BatchRequest>,
) -> ApiResult<Response> {
    let started = Instant::now();
    let ids = parse_ids(&request.ids)?;
    let mut lookup = reads::summaries(&state.cache, &state.product_reader(), &ids).await?;
    deferred.revalidate(lookup.revalidation.take());
    let mut info = BatchCacheInfo {
        source: combined_source(lookup.items.iter().map(|l| l.source)),
        l1: 0,
        l2: 0,
        stale: 0,
        loaded: 0,
    };
    // The batch is as fresh as its oldest item: that is the age its route is counted with.
    let oldest_ms = lookup.items.iter().map(|l| l.age_ms).max().unwrap_or(0);
    let mut products = Vec::with_capacity(ids.len());
    let mut not_found = Vec::new();
    for (id, item) in ids.into_iter().zip(lookup.items) {
        use catalog_core::cache::Source;
        match item.source {
            Source::L1 => info.l1 += 1,
            Source::L2 => info.l2 += 1,
            Source::Stale => info.stale += 1,
            Source::Loaded | Source::Bypass => info.loaded += 1,
        }
        match item.value {
            Some(product) => products.push(product.as_ref().clone()),
            None => not_found.push(id),
        }
    }
    let source = info.source;
    let mut response = Json(BatchResponse {
        products,
        not_found,
        cache: info,
        processing_time_ms: elapsed_ms(started),
    })
    .into_response();
    response.headers_mut().insert(
        "x-cache",
        axum::http::HeaderValue::from_static(crate::respond::x_cache(source)),
    );
    response
        .extensions_mut()
        .insert(crate::observe::ServedAge(oldest_ms));
    Ok(response)
}

/// A product's view stats.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsResponse {
    /// The product.
    pub product_id: ProductId,
    /// Views over 1 h, 24 h, 7 d and 30 d, as last computed by the refresh job.
    pub stats: PeriodStats,
    /// Where the stats came from.
    pub cache: CacheInfo,
    /// Time spent in the handler.
    pub processing_time_ms: f64,
}

#[utoipa::path(
    get, path = "/products/{id}/stats", tag = "products",
    params(("id" = String, Path, description = "Product id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, body = StatsResponse), (status = 304, description = "Not modified"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
/// A product's 1 h, 24 h, 7 d and 30 d views.
pub async fn stats(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
    deferred: Deferred,
) -> ApiResult<Response> {
    let started = Instant::now();
    let id = product_id(&raw)?;
    let (exists, lookup) = detail_and_stats(&state, &id, &deferred).await;
    let (exists, lookup) = (exists?, lookup?);
    if exists.value.is_none() {
        return Ok(not_found(exists.source));
    }
    let stats = lookup.value.map(|s| s.as_ref().clone()).unwrap_or_default();
    Ok(Cached {
        etag: etag(&stats),
        body: StatsResponse {
            product_id: id,
            stats,
            cache: CacheInfo {
                source: lookup.source,
                age_ms: lookup.age_ms,
            },
            processing_time_ms: elapsed_ms(started),
        },
        source: lookup.source,
        age_ms: lookup.age_ms,
        policy: state.cache.policy(Category::Stats),
    }
    .respond(&headers))
}

/// A product as written by a client.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// Display name, 1 to 200 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// Up to 4000 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 4000, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: String,
    /// Category slug.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub category: String,
    /// List price.
    pub price: Money,
    /// Listed or not.
    pub active: bool,
    /// The version being replaced; omit to create.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_u64)]
    pub expected_version: Option<u64>,
}

#[utoipa::path(
    put, path = "/products/{id}", tag = "products", request_body = ProductInput, security(("write_token" = []), ("write_token_header" = [])),
    params(("id" = String, Path, description = "Product id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "Updated", body = Product), (status = 201, description = "Created", body = Product),
        (status = 400, body = ErrorBody), (status = 401, description = "no valid write token", body = ErrorBody), (status = 404, description = "expected_version given for an unknown product", body = ErrorBody),
        (status = 409, description = "expected_version is stale, or the product exists", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, description = "the body is not application/json", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
/// Creates or replaces a product, conditional on its version, and invalidates its cache entries.
pub async fn put_product(
    _writer: Writer,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<Response> {
    let id = product_id(&raw)?;
    let now = state.clock.now_ms();
    let expected = input
        .expected_version
        .map_or(ExpectedVersion::Absent, ExpectedVersion::Exactly);
    // An update keeps the creation time, so read the current item (consistently).
    let (created_at, was_active) = match expected {
        ExpectedVersion::Absent => (now, None),
        ExpectedVersion::Exactly(version) => {
            let current = state
                .catalog
                .products(std::slice::from_ref(&id))
                .await?
                .pop();
            match current {
                None => return Err(ApiError::NotFound),
                Some(p) if p.version != version => return Err(ApiError::Conflict),
                Some(p) => (p.created_at, Some(p.active)),
            }
        }
    };
    // Feeds list active products by views and by creation: only a new product or one
    // (de)activated can change them. A price or name edit reaches feed pages through the
    // summaries, which the invalidation below drops.
    let moves_feeds = was_active != Some(input.active);
    let product = Product {
        id: id.clone(),
        name: input.name,
        description: input.description,
        category: input.category,
        price: input.price,
        active: input.active,
        created_at,
        updated_at: now,
        version: 0,
    };
    let stored = state.catalog.put_product(&product, expected).await?;
    if !reads::invalidate_product(&state.cache, &id, moves_feeds).await {
        tracing::warn!(product = %id, "cache invalidation did not reach Redis; entries expire by TTL");
    }
    let status = if expected == ExpectedVersion::Absent {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)).into_response())
}

/// A new offer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferInput {
    /// Offer id (generated when omitted); unique across products.
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::IdString>)]
    pub offer_id: Option<String>,
    /// Offer price.
    pub price: Money,
    /// When the offer ends (epoch milliseconds, in the future, at most a year ahead).
    pub expires_at: i64,
}

#[utoipa::path(
    post, path = "/products/{id}/offers", tag = "offers", request_body = OfferInput, security(("write_token" = []), ("write_token_header" = [])),
    params(("id" = String, Path, description = "Product id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 201, body = Offer), (status = 400, body = ErrorBody), (status = 401, description = "no valid write token", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the offer id is taken", body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, description = "the body is not application/json", body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
/// Adds an active offer to a product and invalidates the product's cache entries.
pub async fn create_offer(
    _writer: Writer,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(input): ApiJson<OfferInput>,
) -> ApiResult<Response> {
    let product = product_id(&raw)?;
    let now = state.clock.now_ms();
    check_expiry(input.expires_at, now)?;
    let id = match &input.offer_id {
        Some(raw) => offer_id(raw)?,
        None => OfferId::parse(&format!("o-{}", uuid::Uuid::new_v4().simple()))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let offer = Offer {
        id,
        product_id: product.clone(),
        status: OfferStatus::Active,
        price: input.price,
        expires_at: input.expires_at,
        created_at: now,
        updated_at: now,
        version: 0,
    };
    let stored = state
        .catalog
        .put_offer(&offer, ExpectedVersion::Absent)
        .await?;
    reads::invalidate_product(&state.cache, &product, false).await;
    // Best effort: an offer the set misses is found by the next reconcile.
    ExpirySet::new(&state.cache).follow(&stored).await;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// An offer's expiry must be in the future and at most a year ahead.
pub fn check_expiry(expires_at: i64, now: i64) -> ApiResult<()> {
    if expires_at <= now || expires_at > now + MAX_OFFER_LIFETIME_MS {
        return Err(ApiError::Invalid(
            "expires_at: epoch milliseconds in the future, at most a year ahead".into(),
        ));
    }
    Ok(())
}

/// A view to record.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewInput {
    /// Client-chosen id that makes retries count once (generated when omitted).
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::IdString>)]
    pub event_id: Option<String>,
}

/// A recorded view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ViewAccepted {
    /// The event's id.
    pub event_id: EventId,
    /// False when this event id was already recorded (a retry): it counts once.
    pub recorded: bool,
}

#[utoipa::path(
    post, path = "/products/{id}/views", tag = "products", request_body(content = Option<ViewInput>, description = "Optional: without a body, an event id is generated"),
    params(("id" = String, Path, description = "Product id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 202, body = ViewAccepted), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
/// Records one view in the views table; its stream feeds the view counters.
pub async fn record_view(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    deferred: Deferred,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = product_id(&raw)?;
    // The body is optional: an empty one (or `null`) means "no event id, generate one".
    let input: ViewInput = if body.iter().all(u8::is_ascii_whitespace) {
        ViewInput::default()
    } else {
        let invalid = || ApiError::Invalid("body: not valid JSON for this endpoint".into());
        match serde_json::from_slice::<serde_json::Value>(&body).map_err(|_| invalid())? {
            serde_json::Value::Null => ViewInput::default(),
            // An object only: a derived `Deserialize` would also read an array of fields.
            object @ serde_json::Value::Object(_) => {
                serde_json::from_value(object).map_err(|_| invalid())?
            }
            _ => return Err(invalid()),
        }
    };
    let event_id = match &input.event_id {
        Some(raw) => EventId::parse(raw).map_err(|e| ApiError::invalid(&e))?,
        None => EventId::parse(&uuid::Uuid::new_v4().simple().to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    // The product check goes through the cache: views are frequent, products rarely change.
    let product = reads::product_detail(&state.cache, &state.product_reader(), &id).await?;
    deferred.revalidate(product.revalidation);
    if product.value.is_none() {
        return Err(ApiError::NotFound);
    }
    let event = ViewEvent {
        event_id: event_id.clone(),
        product_id: id,
        viewed_at: state.clock.now_ms(),
    };
    let recorded = state.views.record_view(&event).await?;
    if recorded {
        // For /admin/jobs: a view-aggregator window is due, the one holding this minute.
        state.cache.count_at(
            catalog_core::cache::observe::VIEWS_RECORDED,
            event.viewed_at,
        );
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ViewAccepted { event_id, recorded }),
    )
        .into_response())
}
