//! What every handler shares: the store ports the API's IAM policy allows, the cache, the clock.

use std::sync::Arc;
use std::time::Duration;

use catalog_core::cache::Cache;
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::Config;
use catalog_core::elasticache::ControlPlane;
use catalog_core::store::{CatalogStore, StatsReader, ViewRecorder};
use catalog_core::wiring;

use crate::auth::BearerToken;
use crate::deferred::AfterResponse;

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    /// Products and offers: read and write.
    pub catalog: Arc<dyn CatalogStore>,
    /// Stats, feeds and job metadata: read only.
    pub stats: Arc<dyn StatsReader>,
    /// View events: write only.
    pub views: Arc<dyn ViewRecorder>,
    /// The two-tier cache.
    pub cache: Cache,
    /// Wall clock (injected in tests).
    pub clock: Arc<dyn Clock>,
    /// Admin credentials; `None` disables the admin routes.
    pub admin_token: Option<BearerToken>,
    /// Write credentials; `None` disables product and offer writes.
    pub write_token: Option<BearerToken>,
    /// The refresh job's schedule, for health.
    pub refresh_interval: Duration,
    /// The offer-expiry job's schedule, for health.
    pub expiry_interval: Duration,
    /// The view-aggregator's tumbling window (when `/admin/jobs` expects its next window).
    pub view_window: Duration,
    /// How old each cache category's served data may be before health warns.
    pub freshness: catalog_core::config::FreshnessObjectives,
    /// How long the health report keeps raised and cleared alerts.
    pub alert_history: Duration,
    /// How often this process adds its counters to the shared per-minute buckets.
    pub counters_flush_every: Duration,
    /// `Function` dimension of the EMF metric lines; `None` outside Lambda, where nobody
    /// collects them.
    pub emf_function: Option<Arc<str>>,
    /// The function's memory, which `L1_MAX_BYTES` must leave room in; `None` outside Lambda.
    pub function_memory_bytes: Option<u64>,
    /// Where post-response work goes.
    pub after_response: AfterResponse,
    /// The ElastiCache control plane of `CACHE_NAME`, for the cache's status and limits.
    pub control_plane: Option<ControlPlane>,
}

impl AppState {
    /// State on DynamoDB and Redis from the configuration: clients built once, at cold start.
    pub async fn from_config(config: &Config) -> AppState {
        let store = wiring::dynamo_store(config).await;
        let control_plane = wiring::control_plane(config);
        let cache = wiring::cache_with(config, control_plane.as_ref()).await;
        AppState {
            control_plane,
            ..AppState::new(store.clone(), store.clone(), store, cache, config)
        }
    }

    /// State over any adapters (the embedded dev mode, tests, benchmarks).
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        stats: Arc<dyn StatsReader>,
        views: Arc<dyn ViewRecorder>,
        cache: Cache,
        config: &Config,
    ) -> AppState {
        AppState {
            catalog,
            stats,
            views,
            cache,
            clock: Arc::new(SystemClock),
            admin_token: config.admin_token.as_ref().map(BearerToken::new),
            write_token: config.write_token.as_ref().map(BearerToken::new),
            refresh_interval: config.jobs.refresh_interval,
            expiry_interval: config.jobs.expiry_interval,
            view_window: config.jobs.view_window,
            freshness: config.freshness,
            alert_history: config.alert_history,
            counters_flush_every: Duration::from_secs(10),
            emf_function: catalog_core::telemetry::lambda_function_name().map(Into::into),
            function_memory_bytes: catalog_core::telemetry::lambda_memory_bytes(),
            after_response: AfterResponse::Spawn,
            control_plane: None,
        }
    }

    /// The catalog as a reader, for the shared cached reads.
    pub fn product_reader(&self) -> Arc<dyn catalog_core::store::ProductReader> {
        self.catalog.clone()
    }
}
