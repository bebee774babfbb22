//! `make dev`: the API on 127.0.0.1:3000, the scheduled jobs (refresh, offer expiry) on
//! short intervals and the stream functions (view-aggregator, cache-sync) on the store's
//! streams, in one process, seeded with a demo catalog.
//!
//! By default everything is embedded (in-memory store and cache, no services needed). Give
//! `DYNAMODB_ENDPOINT` (e.g. a local `moto_server`) and/or `REDIS_ENDPOINTS` to use real
//! services instead; tables are created and seeded when missing.

mod direct;
mod jobs;
mod seed;
mod stores;

use std::sync::Arc;

use anyhow::Context;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::memory::MemoryL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::Config;
use catalog_core::jobs::offer_expiry::{ExpiryDeps, ExpiryOptions};
use catalog_core::jobs::refresh::{RefreshDeps, RefreshOptions};
use catalog_core::streams::views::{ViewAggDeps, ViewAggOptions};
use catalog_core::wiring;

/// Defaults that make the embedded mode need no environment at all.
fn default_var(name: &str) -> Option<String> {
    let value = match name {
        "CATALOG_TABLE" => "catalog-cache-catalog",
        "VIEWS_TABLE" => "catalog-cache-views",
        "STATS_TABLE" => "catalog-cache-stats",
        "ADMIN_TOKEN" => "dev-admin-token",
        "WRITE_TOKEN" => "dev-write-token",
        // Short enough to watch the jobs work while trying the API.
        "REFRESH_INTERVAL_SECS" => "30",
        "OFFER_EXPIRY_INTERVAL_SECS" => "10",
        // The dev mapping's tumbling window (local/src/jobs.rs).
        "VIEW_WINDOW_SECS" => "5",
        _ => return None,
    };
    Some(value.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    catalog_core::telemetry::init();
    let config =
        Config::from_lookup(|name| std::env::var(name).ok().or_else(|| default_var(name)))?;
    let demo_products: Option<usize> = std::env::var("DEMO_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0);
    let stores = stores::open(&config, demo_products).await?;

    let cache = match &config.redis {
        Some(_) => wiring::cache(&config).await,
        None => Cache::new(
            CacheOptions::from_config(&config.cache, None),
            Some(Arc::new(MemoryL2::new()) as Arc<dyn L2Store>),
            Arc::new(SystemClock),
        ),
    };
    let cache_description = match &config.redis {
        Some(redis) => format!("Redis at {}", redis.nodes.join(",")),
        None => "embedded L2 (in-memory, Redis semantics)".to_owned(),
    };

    // The jobs: once now (stats, feeds, warm cache; due offers, set reconciled), then on
    // their intervals.
    let refreshed = jobs::start_refresh(
        RefreshDeps {
            catalog: stores.refresh_catalog.clone(),
            stats: stores.stats.clone(),
            cache: cache.clone(),
        },
        RefreshOptions {
            concurrency: config.jobs.refresh_concurrency,
            ..RefreshOptions::default()
        },
        config.jobs.refresh_interval,
    )
    .await;
    jobs::start_offer_expiry(
        ExpiryDeps {
            catalog: stores.expiry_catalog.clone(),
            stats: stores.stats.clone(),
            cache: cache.clone(),
        },
        ExpiryOptions::from_config(&config.jobs),
        config.jobs.expiry_interval,
    )
    .await;
    let _views = jobs::start_view_aggregator(
        stores.views_stream.clone(),
        ViewAggDeps {
            products: stores.products.clone(),
            stats: stores.stats.clone(),
            cache: cache.clone(),
        },
        ViewAggOptions::from_config(&config.jobs),
    );

    let _sync = jobs::start_cache_sync(stores.catalog_stream.clone(), cache.clone()).await?;

    let state = api::AppState::new(
        stores.catalog.clone(),
        stores.stats.clone(),
        stores.views.clone(),
        cache,
        &config,
    );
    let address = std::env::var("DEV_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| {
            format!("cannot listen on {address} (set DEV_ADDR to use another address)")
        })?;
    tour(
        &address,
        &stores.description,
        &cache_description,
        refreshed,
        &config,
    );
    let write_token = state.write_token.clone();
    let app = api::router(state).merge(direct::routes(stores.catalog.clone(), write_token));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[allow(clippy::print_stdout)] // the tour is this binary's user interface
fn tour(address: &str, store: &str, cache: &str, refreshed: u64, config: &Config) {
    let refresh_every = config.jobs.refresh_interval;
    let expiry_every = config.jobs.expiry_interval;
    let base = format!("http://{address}");
    let admin = "-H 'authorization: Bearer dev-admin-token'";
    let writer = "-H 'authorization: Bearer dev-write-token'";
    let json = "-H 'content-type: application/json'";
    println!(
        r#"
catalog-cache dev server on {base}
  store: {store}
  cache: {cache}
  refresh: {refreshed} products refreshed at start, then every {refresh_every:?}
  offer expiry: every {expiry_every:?} (some demo offers expire in the first minutes)
  view-aggregator: on the views stream, 5 s tumbling windows (a posted view is counted within seconds)
  cache-sync: on the catalog stream (a write made anywhere reaches the cache within a second)

A tour (run each twice and watch X-Cache go MISS -> HIT-L1):
  curl -i {base}/products/p-0001
  curl -s {base}/products/p-0001/stats
  curl -s -X POST {base}/products/batch {json} -d '{{"ids": ["p-0001", "p-0002", "nope"]}}'
  curl -s '{base}/feed?kind=trending&page=1&per_page=5'
  curl -s '{base}/feed?kind=new&per_page=3'
  curl -s '{base}/offers/expiring?within=5m'      # then, once one has passed its time:
  curl -s {base}/admin/jobs {admin}              # offer-expiry: expired, lag_ms, source
  curl -s -X PUT {base}/products/p-0001 {writer} {json} -d '{{"name": "Renamed kettle", "category": "kitchen", "price": {{"amount_minor": 1999, "currency": "EUR"}}, "active": true, "expected_version": 1}}'
  curl -s -X POST {base}/products/p-0003/offers {writer} {json} -d '{{"price": {{"amount_minor": 999, "currency": "EUR"}}, "expires_at": <epoch ms in the future>}}'
  curl -s -X PATCH {base}/dev/store/products/p-0002 {writer} {json} -d '{{"name": "Written behind the API"}}'   # straight to the store, no invalidation
  sleep 1; curl -s {base}/products/p-0002         # cache-sync already followed the stream
  curl -s -X POST {base}/products/p-0001/views {json} -d '{{"event_id": "my-first-view"}}'
  sleep 6; curl -s {base}/products/p-0001/stats   # views_1h went up by one
  curl -s {base}/admin/cache/stats {admin}    # per tier, per route and per cache operation, over 5 min, 1 h, 24 h
  curl -s {base}/admin/cache/health {admin}   # alerts (with their history), figures with trend and change
  curl -s {base}/admin/jobs {admin}
  curl -s {base}/openapi.json
  open {base}/status in a browser: the live status page (type the admin token, dev-admin-token)
Ctrl-C stops the server.
"#
    );
}
