//! `make dev`: the API on 127.0.0.1:3000 and the scheduled jobs (refresh, offer expiry) on
//! short intervals, in one process, seeded with a demo catalog.
//!
//! By default everything is embedded (in-memory store and cache, no services needed). Give
//! `DYNAMODB_ENDPOINT` (e.g. a local `moto_server`) and/or `REDIS_ENDPOINTS` to use real
//! services instead; tables are created and seeded when missing.

mod jobs;
mod seed;

use std::sync::Arc;

use anyhow::Context;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::memory::MemoryL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::Config;
use catalog_core::jobs::offer_expiry::{ExpiryCatalog, ExpiryDeps, ExpiryOptions};
use catalog_core::jobs::refresh::{RefreshCatalog, RefreshDeps, RefreshOptions};
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{CatalogStore, ProductLister, StatsStore, ViewRecorder};
use catalog_core::wiring;

/// Defaults that make the embedded mode need no environment at all.
fn default_var(name: &str) -> Option<String> {
    let value = match name {
        "CATALOG_TABLE" => "catalog-cache-catalog",
        "VIEWS_TABLE" => "catalog-cache-views",
        "STATS_TABLE" => "catalog-cache-stats",
        "ADMIN_TOKEN" => "dev-admin-token",
        // Short enough to watch the jobs work while trying the API.
        "REFRESH_INTERVAL_SECS" => "30",
        "OFFER_EXPIRY_INTERVAL_SECS" => "10",
        _ => return None,
    };
    Some(value.to_owned())
}

struct Stores {
    catalog: Arc<dyn CatalogStore>,
    /// The same store, as the refresh job's narrower port.
    refresh_catalog: Arc<dyn RefreshCatalog>,
    /// The same store, as the offer-expiry job's narrower port.
    expiry_catalog: Arc<dyn ExpiryCatalog>,
    stats: Arc<dyn StatsStore>,
    views: Arc<dyn ViewRecorder>,
    description: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    catalog_core::telemetry::init();
    let config =
        Config::from_lookup(|name| std::env::var(name).ok().or_else(|| default_var(name)))?;
    let clock = SystemClock;
    let demo_products: usize = std::env::var("DEMO_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    let stores = match &config.dynamodb.endpoint {
        None => {
            let store = Arc::new(MemoryStore::new());
            let count = if demo_products > 0 {
                demo_products
            } else {
                3000
            };
            let seeded = seed::seed(store.as_ref(), count, clock.now_ms(), 48, 30).await?;
            Stores {
                catalog: store.clone(),
                refresh_catalog: store.clone(),
                expiry_catalog: store.clone(),
                stats: store.clone(),
                views: store,
                description: format!(
                    "embedded store: {} products, {} offers, {} view counters",
                    seeded.products, seeded.offers, seeded.counters
                ),
            }
        }
        Some(endpoint) => {
            let store = wiring::dynamo_store(&config).await;
            let existing = store.list_products(None, 1).await;
            let description = match existing {
                Ok((page, _)) if !page.is_empty() => {
                    format!("DynamoDB at {endpoint} (existing data)")
                }
                _ => {
                    // Missing tables are created; an existing empty catalog is seeded.
                    let _ = catalog_core::store::dynamo::schema::create_tables(
                        store.client(),
                        &config.tables,
                    )
                    .await;
                    let count = if demo_products > 0 {
                        demo_products
                    } else {
                        200
                    };
                    let seeded = seed::seed(store.as_ref(), count, clock.now_ms(), 6, 7)
                        .await
                        .context("seeding the demo catalog")?;
                    format!(
                        "DynamoDB at {endpoint}: seeded {} products, {} offers",
                        seeded.products, seeded.offers
                    )
                }
            };
            Stores {
                catalog: store.clone(),
                refresh_catalog: store.clone(),
                expiry_catalog: store.clone(),
                stats: store.clone(),
                views: store,
                description,
            }
        }
    };

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
    api::serve_until(listener, state, async {
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
    let json = "-H 'content-type: application/json'";
    println!(
        r#"
catalog-cache dev server on {base}
  store: {store}
  cache: {cache}
  refresh: {refreshed} products refreshed at start, then every {refresh_every:?}
  offer expiry: every {expiry_every:?} (some demo offers expire in the first minutes)

A tour (run each twice and watch X-Cache go MISS -> HIT-L1):
  curl -i {base}/products/p-0001
  curl -s {base}/products/p-0001/stats
  curl -s -X POST {base}/products/batch {json} -d '{{"ids": ["p-0001", "p-0002", "nope"]}}'
  curl -s '{base}/feed?kind=trending&page=1&per_page=5'
  curl -s '{base}/feed?kind=new&per_page=3'
  curl -s '{base}/offers/expiring?within=5m'      # then, once one has passed its time:
  curl -s {base}/admin/jobs {admin}              # offer-expiry: expired, lag_ms, source
  curl -s -X PUT {base}/products/p-0001 {json} -d '{{"name": "Renamed kettle", "category": "kitchen", "price": {{"amount_minor": 1999, "currency": "EUR"}}, "active": true, "expected_version": 1}}'
  curl -s -X POST {base}/products/p-0003/offers {json} -d '{{"price": {{"amount_minor": 999, "currency": "EUR"}}, "expires_at": <epoch ms in the future>}}'
  curl -s -X POST {base}/products/p-0001/views {json} -d '{{"event_id": "my-first-view"}}'
  curl -s {base}/admin/cache/stats {admin}
  curl -s {base}/admin/cache/health {admin}
  curl -s {base}/admin/jobs {admin}
  curl -s {base}/openapi.json
Ctrl-C stops the server.
"#
    );
}
