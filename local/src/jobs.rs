//! The jobs of `make dev`, in the background of the API process: the scheduled ones run once
//! at start, then on their interval (as EventBridge would invoke them); the stream functions
//! run behind the local event-source mapping on the store's streams (as Lambda would).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use catalog_core::cache::Cache;
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::jobs::offer_expiry::{self, ExpiryDeps, ExpiryOptions};
use catalog_core::jobs::refresh::{self, RefreshDeps, RefreshOptions};
use catalog_core::streams::cache_sync;
use catalog_core::streams::views::{self, ViewAggDeps, ViewAggOptions};
use esm::invoke::stream_handler;
use esm::mapping::{EventSourceMapping, MappingConfig, StartingPosition};
use esm::source::StreamSource;

/// Runs `job` every `interval` (the first tick after one interval; callers run it once
/// themselves first) until the process ends.
fn every<F, Fut>(interval: Duration, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            job().await;
        }
    });
}

/// Refreshes now, then every `interval`. Returns how many products the first run refreshed.
pub async fn start_refresh(deps: RefreshDeps, options: RefreshOptions, interval: Duration) -> u64 {
    let first = refresh::refresh_once(&deps, &options, SystemClock.now_ms(), None).await;
    every(interval, move || {
        let (deps, options) = (deps.clone(), options);
        async move {
            refresh::refresh_once(&deps, &options, SystemClock.now_ms(), None).await;
        }
    });
    first.refreshed
}

/// Expires due offers now (which also reconciles the Redis set with the index), then every
/// `interval`.
pub async fn start_offer_expiry(deps: ExpiryDeps, options: ExpiryOptions, interval: Duration) {
    offer_expiry::expire_once(&deps, &options, SystemClock.now_ms(), None).await;
    every(interval, move || {
        let (deps, options) = (deps.clone(), options);
        async move {
            offer_expiry::expire_once(&deps, &options, SystemClock.now_ms(), None).await;
        }
    });
}

/// The dev mapping's settings: the deployed mapping's, with a five-second tumbling window so
/// a view shows in its product's stats within seconds.
pub fn dev_mapping() -> MappingConfig {
    MappingConfig {
        batch_size: 100,
        tumbling_window: Some(Duration::from_secs(5)),
        ..MappingConfig::default()
    }
}

/// Runs the view-aggregator in this process on the views stream, as Lambda would.
pub fn start_view_aggregator(
    stream: Arc<dyn StreamSource>,
    deps: ViewAggDeps,
    options: ViewAggOptions,
) -> tokio::task::JoinHandle<()> {
    let deps = Arc::new(deps);
    let handler = stream_handler(move |event| {
        let deps = deps.clone();
        async move { views::handle(event, &deps, &options, SystemClock.now_ms()).await }
    });
    Arc::new(EventSourceMapping::new(
        stream,
        vec![Arc::new(handler)],
        dev_mapping(),
    ))
    .spawn()
}

/// Runs cache-sync in this process on the catalog stream, as Lambda would: no batching
/// window, so a write reaches the cache within one poll (a quarter of a second). It starts
/// at the stream's end (`LATEST`, as the template deploys it): the seeding before it is
/// already what the refresh job warmed.
pub async fn start_cache_sync(
    stream: Arc<dyn StreamSource>,
    cache: Cache,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let handler = stream_handler(move |event| {
        let cache = cache.clone();
        async move {
            cache_sync::handle(event, &cache)
                .await
                .map(|(response, _)| response)
        }
    });
    let mapping = Arc::new(EventSourceMapping::new(
        stream,
        vec![Arc::new(handler)],
        MappingConfig {
            starting_position: StartingPosition::Latest,
            ..MappingConfig::default()
        },
    ));
    // Before the API serves: a write made through it later is never skipped.
    mapping.take_starting_position().await?;
    Ok(mapping.spawn())
}
