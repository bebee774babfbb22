//! Admin routes: cache statistics and health, warming, invalidation, job runs.
//! Every route needs `Authorization: Bearer <ADMIN_TOKEN>`; without it nothing is revealed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::State;
use catalog_core::cache::breaker::BreakerState;
use catalog_core::cache::key::KeyTarget;
use catalog_core::cache::l2::ServerInfo;
use catalog_core::cache::metrics::MetricsSnapshot;
use catalog_core::cache::observe::{OperationsByWindow, RoutesByWindow};
use catalog_core::elasticache::{ControlPlane, ServerlessCacheInfo};
use catalog_core::health::book::{AlertEvent, BookUpdates};
use catalog_core::health::{self, HealthInputs, HealthReport, Thresholds};
use catalog_core::jobs::{offer_expiry, refresh};
use catalog_core::model::{FeedKind, JobRun, ProductId};
use catalog_core::reads::{self, WarmReport};
use serde::{Deserialize, Serialize};

pub use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::routes::products::parse_ids;
use crate::state::AppState;

/// Reads and ratios over one window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowStats {
    /// Reads in the window.
    pub reads: u64,
    /// Share of reads served from cache (L1, L2, stale and cached not-found).
    pub hit_ratio: Option<f64>,
    /// Share served by L1.
    pub l1_ratio: Option<f64>,
    /// Share served fresh by Redis.
    pub l2_ratio: Option<f64>,
    /// Share served stale while revalidating.
    pub stale_ratio: Option<f64>,
    /// Database loads.
    pub loads: u64,
    /// Failed database loads.
    pub load_errors: u64,
    /// Failed Redis calls.
    pub redis_errors: u64,
    /// Reads and writes that skipped Redis.
    pub bypasses: u64,
}

impl From<&MetricsSnapshot> for WindowStats {
    fn from(c: &MetricsSnapshot) -> Self {
        let reads = c.l1_hits + c.l2_hits + c.stale_serves + c.negative_hits + c.misses;
        #[allow(clippy::cast_precision_loss)]
        let share = |n: u64| (reads > 0).then(|| n as f64 / reads as f64);
        WindowStats {
            reads,
            hit_ratio: c.hit_ratio(),
            l1_ratio: share(c.l1_hits),
            l2_ratio: share(c.l2_hits),
            stale_ratio: share(c.stale_serves),
            loads: c.loads,
            load_errors: c.load_errors,
            redis_errors: c.l2_errors,
            bypasses: c.bypasses,
        }
    }
}

/// This process's L1.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct L1Stats {
    /// Entries held.
    pub entries: u64,
    /// Bytes held (encoded size).
    pub bytes: u64,
    /// Byte bound.
    pub max_bytes: u64,
}

/// `GET /admin/cache/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    /// Every process's counters over the last 5 minutes.
    pub last_5m: WindowStats,
    /// Over the last hour.
    pub last_1h: WindowStats,
    /// Over the last 24 hours.
    pub last_24h: WindowStats,
    /// Redis' own figures (`null` if Redis did not answer).
    #[schema(value_type = Option<Object>)]
    pub redis: Option<ServerInfo>,
    /// This process's L1.
    pub l1: L1Stats,
    /// This process's circuit breaker.
    #[schema(value_type = Object)]
    pub circuit: BreakerState,
    /// Keys waiting on the revalidation queue (`null` without Redis).
    pub revalidation_backlog: Option<u64>,
    /// The ElastiCache Serverless cache's status and usage limits, from its control plane
    /// (`null` without `CACHE_NAME`, or if the control plane did not answer).
    pub serverless_cache: Option<ServerlessCacheInfo>,
    /// Every environment's requests per route template and cache category over the same
    /// windows: answers per source, handler latency (µs) and the age of the data served (ms).
    pub routes: RoutesByWindow,
    /// Every environment's cache operations over the same windows: calls and latency (µs) of
    /// Redis reads (`l2_get`), Redis writes (`l2_set`) and loads (`load`).
    pub operations: OperationsByWindow,
}

#[utoipa::path(
    get, path = "/admin/cache/stats", tag = "admin", security(("admin_token" = []), ("admin_token_header" = [])),
    responses((status = 200, body = CacheStats), (status = 401, body = ErrorBody))
)]
/// Hit ratios per tier over 5 min, 1 h and 24 h, the same per route, Redis memory and keys, L1 size.
pub async fn cache_stats(_: Admin, State(state): State<AppState>) -> ApiResult<Json<CacheStats>> {
    let cache = &state.cache;
    let (history, redis, backlog, serverless_cache) = tokio::join!(
        cache.history(),
        cache.server_info(),
        cache.revalidation_backlog(),
        describe_serverless_cache(state.control_plane.as_ref())
    );
    let (entries, bytes) = cache.l1_usage();
    Ok(Json(CacheStats {
        last_5m: (&history.last_5m.counters).into(),
        last_1h: (&history.last_1h.counters).into(),
        last_24h: (&history.last_24h.counters).into(),
        redis,
        l1: L1Stats {
            entries,
            bytes,
            max_bytes: cache.options().l1_max_bytes,
        },
        circuit: cache.breaker_state(),
        revalidation_backlog: backlog,
        serverless_cache,
        routes: history.routes,
        operations: history.operations,
    }))
}

async fn describe_serverless_cache(
    control_plane: Option<&ControlPlane>,
) -> Option<ServerlessCacheInfo> {
    match control_plane?.describe().await {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::warn!(error = %e, "the cache's control plane did not answer");
            None
        }
    }
}

/// `GET /admin/cache/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `HEALTHY`, `WARNING` or `CRITICAL`, alerts and figures with trends.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub report: HealthReport,
    /// When this was evaluated (epoch ms).
    pub checked_at: i64,
    /// Alerts raised and cleared, with their figure's value then, newest first, over the last
    /// `ALERT_HISTORY_SECS` (24 h by default).
    pub history: Vec<AlertEvent>,
}

#[utoipa::path(
    get, path = "/admin/cache/health", tag = "admin", security(("admin_token" = []), ("admin_token_header" = [])),
    responses((status = 200, body = HealthResponse), (status = 401, body = ErrorBody))
)]
/// Health from thresholds (hit ratio, memory, circuit, error rate, refresh), with trends.
pub async fn cache_health(
    _: Admin,
    State(state): State<AppState>,
) -> ApiResult<Json<HealthResponse>> {
    let cache = &state.cache;
    let (history, server, refresh_runs, expiry_runs) = tokio::join!(
        cache.history(),
        cache.server_info(),
        recent_runs(&state, refresh::JOB),
        recent_runs(&state, offer_expiry::JOB),
    );
    let now = state.clock.now_ms();
    let inputs = HealthInputs {
        history,
        server,
        breaker: cache.breaker_state(),
        refresh_runs,
        refresh_interval: state.refresh_interval,
        expiry_runs,
        expiry_interval: state.expiry_interval,
        l1: Some(health::L1Memory {
            bytes: cache.l1_usage().1,
            max_bytes: cache.options().l1_max_bytes,
            function_memory_bytes: state.function_memory_bytes,
        }),
        now,
    };
    let thresholds = Thresholds {
        freshness: state.freshness.by_category(),
        ..Thresholds::default()
    };
    // Evaluated twice: first to know which alerts are active, then with since when each
    // has been, from the bookkeeping that first result updates.
    let first = health::evaluate(&inputs, &thresholds, &HashMap::new());
    let updates = BookUpdates::for_alerts(&first.alerts, &health::ALERT_FIGURES, now);
    let outcome = cache.update_alert_book(&updates).await;
    let report = health::evaluate(&inputs, &thresholds, &outcome.since());
    let events = outcome.events(&updates, &report, now, cache.environment());
    let history = cache.alert_history(events, state.alert_history).await;
    Ok(Json(HealthResponse {
        report,
        checked_at: now,
        history,
    }))
}

/// A job's recent runs, newest first (empty, logged, if they cannot be read).
async fn recent_runs(state: &AppState, job: &str) -> Vec<JobRun> {
    state.stats.run_history(job, 10).await.unwrap_or_else(|e| {
        tracing::warn!(job, error.message = %e, "cannot read job history for health");
        Vec::new()
    })
}

/// What to warm: explicit ids, or the most viewed products (exactly one).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum WarmRequest {
    /// These products.
    Ids(WarmIds),
    /// The most viewed products.
    Top(WarmTop),
}

/// Products to warm.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmIds {
    /// 1 to 100 product ids.
    #[schema(value_type = Vec<crate::openapi::IdString>, min_items = 1, max_items = 100)]
    pub ids: Vec<String>,
}

/// The most viewed products to warm.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmTop {
    /// The top N products by 24 h views.
    #[schema(minimum = 1, maximum = 1000)]
    pub top: usize,
}

#[utoipa::path(
    post, path = "/admin/cache/warm", tag = "admin", security(("admin_token" = []), ("admin_token_header" = [])), request_body = WarmRequest,
    responses(
        (status = 200, body = WarmReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, description = "the body is not application/json", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
/// Loads products, their offers and stats into the cache.
pub async fn warm(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<WarmRequest>,
) -> ApiResult<Json<WarmReport>> {
    let ids: Vec<ProductId> = match request {
        WarmRequest::Ids(WarmIds { ids }) => parse_ids(&ids)?,
        WarmRequest::Top(WarmTop { top }) if (1..=1000).contains(&top) => {
            let ranking = state.stats.feed(FeedKind::Trending).await?;
            ranking
                .map(|r| r.ids.into_iter().take(top).collect())
                .unwrap_or_default()
        }
        _ => {
            return Err(ApiError::Invalid(
                "give either ids (1 to 100) or top (1 to 1000)".into(),
            ));
        }
    };
    Ok(Json(
        reads::warm(&state.cache, &state.product_reader(), &state.stats, &ids).await?,
    ))
}

/// What to invalidate: products, keys, or a namespace (exactly one).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum InvalidateRequest {
    /// Products whose every entry (detail, summary, stats) is dropped.
    Ids(InvalidateIds),
    /// Individual keys.
    Keys(InvalidateKeys),
    /// A namespace moved to a new generation.
    Namespace(InvalidateNamespace),
}

/// Products to drop.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateIds {
    /// 1 to 100 product ids.
    #[schema(value_type = Vec<crate::openapi::IdString>, min_items = 1, max_items = 100)]
    pub ids: Vec<String>,
}

/// Keys to drop, as the cache names them: `<prefix>product:<id>`, `<prefix>summary:<id>` or
/// `<prefix>stats:<id>` (the document's pattern carries this deployment's prefix).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateKeys {
    /// 1 to 100 keys.
    #[schema(min_items = 1, max_items = 100)]
    pub keys: Vec<String>,
}

/// A namespace to move to a new generation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateNamespace {
    /// `feed`: every feed page.
    #[schema(pattern = "^feed$")]
    pub namespace: String,
}

/// What was invalidated.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvalidateResponse {
    /// Keys dropped (or 0 for a namespace).
    pub invalidated: usize,
    /// The namespace's new generation.
    pub generation: Option<u64>,
    /// False if Redis could not be reached: only this process's L1 was cleared.
    pub redis_reached: bool,
}

#[utoipa::path(
    post, path = "/admin/cache/invalidate", tag = "admin", security(("admin_token" = []), ("admin_token_header" = [])), request_body = InvalidateRequest,
    responses(
        (status = 200, body = InvalidateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, description = "the body is not application/json", body = ErrorBody),
    )
)]
/// Drops products, keys or a whole namespace from the cache.
pub async fn invalidate(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<InvalidateRequest>,
) -> ApiResult<Json<InvalidateResponse>> {
    let cache = &state.cache;
    let keys = cache.keys();
    let targets = match request {
        InvalidateRequest::Ids(InvalidateIds { ids }) => parse_ids(&ids)?
            .iter()
            .flat_map(|id| keys.product_keys(id))
            .collect::<Vec<_>>(),
        InvalidateRequest::Keys(InvalidateKeys { keys: raw }) if (1..=100).contains(&raw.len()) => {
            raw.iter()
                .map(|k| match keys.parse(k) {
                    Some(KeyTarget::Product(id)) => Ok(keys.product(&id)),
                    Some(KeyTarget::Summary(id)) => Ok(keys.summary(&id)),
                    Some(KeyTarget::Stats(id)) => Ok(keys.stats(&id)),
                    None => Err(ApiError::Invalid(
                        "keys: only product, summary and stats keys of this cache".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        InvalidateRequest::Namespace(InvalidateNamespace { namespace })
            if namespace == reads::FEED_NAMESPACE =>
        {
            let generation = cache.bump_generation(&namespace).await;
            return Ok(Json(InvalidateResponse {
                invalidated: 0,
                redis_reached: generation.is_some(),
                generation,
            }));
        }
        _ => {
            return Err(ApiError::Invalid(
                "give exactly one of ids (1 to 100), keys (1 to 100) or namespace (feed)".into(),
            ));
        }
    };
    let redis_reached = cache.invalidate(&targets).await;
    Ok(Json(InvalidateResponse {
        invalidated: targets.len(),
        generation: None,
        redis_reached,
    }))
}

/// `GET /admin/jobs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobsResponse {
    /// The last run of every job that has run (a run skipped on the lease is never a last run).
    pub jobs: Vec<JobRun>,
    /// Each job's most recent runs, newest first, skipped ones included.
    pub history: BTreeMap<String, Vec<JobRun>>,
    /// Each job's last run and when the next is expected.
    pub schedule: Vec<JobSchedule>,
}

/// When a job last ran and when it should run next.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobSchedule {
    /// `refresh`, `offer-expiry` or `view-aggregator`.
    pub job: String,
    /// How often it runs, in seconds: its schedule, or the view-aggregator's tumbling window.
    pub every_s: u64,
    /// When its last run (or window report) started (epoch ms); `null` before the first.
    pub last_started_at: Option<i64>,
    /// How long the last run took.
    pub last_duration_ms: Option<u64>,
    /// How far behind the last run was, where the job measures it (offer-expiry: now minus
    /// the oldest due expiry; view-aggregator: the report's time minus the window's end).
    pub last_lag_ms: Option<u64>,
    /// When the next run is expected (epoch ms): the last start plus the interval; for the
    /// view-aggregator, a window after the end of the minute of the first view recorded since
    /// its last reported window. `null` before the first run, or while there is nothing to
    /// aggregate.
    pub next_expected_at: Option<i64>,
    /// True when the next run is more than one interval late (or a scheduled job never ran).
    pub overdue: bool,
    /// The view-aggregator only: no view was recorded after the end of its last reported
    /// window (or Redis, which counts them, did not answer), so no window is due: Lambda
    /// invokes it only for windows with records. Always false for the scheduled jobs.
    pub idle: bool,
}

/// The schedule of each job, from its last run; the view-aggregator's also from the first
/// minute after its last reported window in which a view was recorded (`first_view_minute`).
fn schedule(
    state: &AppState,
    last_runs: &[JobRun],
    first_view_minute: Option<i64>,
    now: i64,
) -> Vec<JobSchedule> {
    let millis = |every: std::time::Duration| i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    let scheduled = |job: &str, every: std::time::Duration| {
        let last = last_runs.iter().find(|r| r.job == job);
        let next_expected_at = last.map(|r| r.started_at.saturating_add(millis(every)));
        JobSchedule {
            job: job.to_owned(),
            every_s: every.as_secs(),
            last_started_at: last.map(|r| r.started_at),
            last_duration_ms: last.map(|r| r.duration_ms),
            last_lag_ms: last.and_then(|r| r.lag_ms),
            next_expected_at,
            overdue: next_expected_at.is_none_or(|next| now > next.saturating_add(millis(every))),
            idle: false,
        }
    };
    let mut views = scheduled(catalog_core::streams::views::JOB, state.view_window);
    // Event-driven: a window is due only once a view was recorded after the last reported
    // window. Known to the minute: views in the minute that window ended in may have been in
    // it, so only later minutes count (no false "overdue"). The window holding a view of that
    // minute closes at most a window after the minute's end.
    views.idle = first_view_minute.is_none();
    views.next_expected_at =
        first_view_minute.map(|minute| minute.saturating_add(60_000 + millis(state.view_window)));
    views.overdue = views
        .next_expected_at
        .is_some_and(|next| now > next.saturating_add(millis(state.view_window)));
    vec![
        scheduled(refresh::JOB, state.refresh_interval),
        scheduled(offer_expiry::JOB, state.expiry_interval),
        views,
    ]
}

/// Runs shown per job in `history`.
const HISTORY_SHOWN: usize = 5;

#[utoipa::path(
    get, path = "/admin/jobs", tag = "admin", security(("admin_token" = []), ("admin_token_header" = [])),
    responses((status = 200, body = JobsResponse), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody))
)]
/// The last run of each scheduled job, each job's recent runs, and when each should run next.
pub async fn jobs(_: Admin, State(state): State<AppState>) -> ApiResult<Json<JobsResponse>> {
    let jobs = state.stats.last_runs().await?;
    let mut names: BTreeSet<String> = jobs.iter().map(|r| r.job.clone()).collect();
    names.extend([refresh::JOB, offer_expiry::JOB].map(str::to_owned));
    let mut history = BTreeMap::new();
    for name in names {
        let runs = state.stats.run_history(&name, HISTORY_SHOWN).await?;
        if !runs.is_empty() {
            history.insert(name, runs);
        }
    }
    // The end of the last reported window: its report's time minus its lag.
    let last_window_end = jobs
        .iter()
        .find(|r| r.job == catalog_core::streams::views::JOB)
        .map(|r| {
            let lag = r.lag_ms.and_then(|l| i64::try_from(l).ok()).unwrap_or(0);
            r.started_at - lag
        });
    let first_view_minute = state
        .cache
        .first_minute_counting(
            catalog_core::cache::observe::VIEWS_RECORDED,
            last_window_end,
        )
        .await;
    let schedule = schedule(&state, &jobs, first_view_minute, state.clock.now_ms());
    Ok(Json(JobsResponse {
        jobs,
        history,
        schedule,
    }))
}
