//! Offer routes: extend or cancel an offer, list offers about to expire.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use catalog_core::ExpectedVersion;
use catalog_core::expiry_set::{ExpirySet, SetState};
use catalog_core::model::{ExpiringOffer, Offer, OfferStatus};
use catalog_core::reads;
use serde::{Deserialize, Serialize};

use crate::auth::Writer;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, duration_ms, offer_id};
use crate::routes::products::check_expiry;
use crate::state::AppState;

/// What to do to an offer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum OfferPatch {
    /// Move the expiry later.
    Extend {
        /// New expiry (epoch ms): later than the current one, at most a year ahead.
        expires_at: i64,
        /// The offer version being replaced.
        #[schema(minimum = 1, maximum = 9_007_199_254_740_991_u64)]
        expected_version: u64,
    },
    /// Withdraw the offer now.
    Cancel {
        /// The offer version being replaced.
        #[schema(minimum = 1, maximum = 9_007_199_254_740_991_u64)]
        expected_version: u64,
    },
}

#[utoipa::path(
    patch, path = "/offers/{id}", tag = "offers", request_body = OfferPatch, security(("write_token" = []), ("write_token_header" = [])),
    params(("id" = String, Path, description = "Offer id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, body = Offer), (status = 400, body = ErrorBody), (status = 401, description = "no valid write token", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "stale expected_version, or the offer is no longer active", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, description = "the body is not application/json", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
/// Extends or cancels an active offer, conditional on its version; invalidates its product.
pub async fn patch_offer(
    _writer: Writer,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(patch): ApiJson<OfferPatch>,
) -> ApiResult<Response> {
    let id = offer_id(&raw)?;
    let now = state.clock.now_ms();
    let current = state.catalog.offer(&id).await?.ok_or(ApiError::NotFound)?;
    let expected = match patch {
        OfferPatch::Extend {
            expected_version, ..
        }
        | OfferPatch::Cancel { expected_version } => expected_version,
    };
    if current.version != expected || !current.is_live_at(now) {
        return Err(ApiError::Conflict);
    }
    let updated = match patch {
        OfferPatch::Extend { expires_at, .. } => {
            check_expiry(expires_at, now)?;
            if expires_at <= current.expires_at {
                return Err(ApiError::Invalid(
                    "expires_at: must be later than the current expiry".into(),
                ));
            }
            Offer {
                expires_at,
                updated_at: now,
                ..current
            }
        }
        OfferPatch::Cancel { .. } => Offer {
            status: OfferStatus::Cancelled,
            updated_at: now,
            ..current
        },
    };
    let stored = state
        .catalog
        .put_offer(&updated, ExpectedVersion::Exactly(expected))
        .await?;
    reads::invalidate_product(&state.cache, &stored.product_id, false).await;
    ExpirySet::new(&state.cache).follow(&stored).await;
    Ok(Json(stored).into_response())
}

/// Query of `GET /offers/expiring`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExpiringQuery {
    /// Window ahead: up to 9 digits of seconds, or with a unit s, m, h or d (default `1h`);
    /// windows over `7d` are read as `7d`.
    #[param(pattern = "^[0-9]{1,9}[smhd]?$")]
    pub within: Option<String>,
    /// Most offers to list (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Offers about to expire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExpiringResponse {
    /// The window, in seconds.
    pub within_s: i64,
    /// Active offers expiring within the window (or overdue), soonest first.
    pub offers: Vec<ExpiringOffer>,
    /// Where the list came from: `set` (the Redis expiry set) or `index` (DynamoDB).
    pub source: &'static str,
}

const MAX_WINDOW_MS: i64 = 7 * 86_400_000;

#[utoipa::path(
    get, path = "/offers/expiring", tag = "offers", params(ExpiringQuery),
    responses((status = 200, body = ExpiringResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody))
)]
/// Active offers that expire within a window: from the Redis expiry set when it is in step
/// with the index, from the index itself otherwise (Redis down, or the set flushed).
pub async fn expiring(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExpiringQuery>,
) -> ApiResult<Response> {
    // A longer window is read as 7 days (the response says which window was used).
    let within = match query.within.as_deref() {
        None => 3_600_000,
        Some(raw) => duration_ms("within", raw)?,
    }
    .min(MAX_WINDOW_MS);
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid("limit: 1 to 1000".into()));
    }
    let until = state.clock.now_ms() + within;
    let set = ExpirySet::new(&state.cache);
    let from_set = match set.state().await {
        SetState::Synced(_) => set.due(until, limit).await,
        SetState::Unsynced | SetState::Unavailable => None,
    };
    let (offers, source) = match from_set {
        Some(offers) => (offers, "set"),
        None => (state.catalog.expiring(until, limit).await?, "index"),
    };
    Ok(Json(ExpiringResponse {
        within_s: within / 1000,
        offers,
        source,
    })
    .into_response())
}
