//! The stores `make dev` runs on: the embedded in-memory store (with in-memory streams), or
//! DynamoDB (a local `moto_server`) when `DYNAMODB_ENDPOINT` is set, seeded when empty.

use std::sync::Arc;

use anyhow::Context;
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::Config;
use catalog_core::jobs::offer_expiry::ExpiryCatalog;
use catalog_core::jobs::refresh::RefreshCatalog;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::stream::MemoryStreams;
use catalog_core::store::{CatalogStore, ProductLister, ProductReader, StatsStore, ViewRecorder};
use catalog_core::wiring;
use esm::source::{DynamoStreamSource, MemorySource, StreamSource};

use crate::seed;

/// One store seen through each of the ports its users need.
pub struct Stores {
    pub catalog: Arc<dyn CatalogStore>,
    /// The refresh job's narrower view of the catalog.
    pub refresh_catalog: Arc<dyn RefreshCatalog>,
    /// The offer-expiry job's narrower view of the catalog.
    pub expiry_catalog: Arc<dyn ExpiryCatalog>,
    /// Product reads (the view-aggregator's product check).
    pub products: Arc<dyn ProductReader>,
    pub stats: Arc<dyn StatsStore>,
    pub views: Arc<dyn ViewRecorder>,
    /// The views table's stream, which the view-aggregator reads.
    pub views_stream: Arc<dyn StreamSource>,
    /// The catalog table's stream, which cache-sync reads.
    #[allow(
        dead_code,
        reason = "cache-sync (issue 11) is the reader; it lands next"
    )]
    pub catalog_stream: Arc<dyn StreamSource>,
    /// What the store is, for the tour.
    pub description: String,
}

/// The stores the configuration asks for; `demo_products` overrides the seeded count.
pub async fn open(config: &Config, demo_products: Option<usize>) -> anyhow::Result<Stores> {
    let now = SystemClock.now_ms();
    let Some(endpoint) = &config.dynamodb.endpoint else {
        let streams = MemoryStreams::new(1, 1);
        let store = Arc::new(MemoryStore::streaming(streams.clone()));
        let seeded = seed::seed(store.as_ref(), demo_products.unwrap_or(3000), now, 48, 30).await?;
        return Ok(ports(
            store,
            Arc::new(MemorySource(streams.views)),
            Arc::new(MemorySource(streams.catalog)),
            format!(
                "embedded store: {} products, {} offers, {} view counters",
                seeded.products, seeded.offers, seeded.counters
            ),
        ));
    };
    let store = wiring::dynamo_store(config).await;
    // Missing tables are created; only a catalog without a single product is seeded (the
    // bulk load overwrites, so any doubt means "existing data").
    let _ =
        catalog_core::store::dynamo::schema::create_tables(store.client(), &config.tables).await;
    let description = match has_products(store.as_ref()).await {
        Ok(true) => format!("DynamoDB at {endpoint} (existing data)"),
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context("checking whether the catalog holds products")
            );
        }
        Ok(false) => {
            let seeded = seed::seed(store.as_ref(), demo_products.unwrap_or(200), now, 6, 7)
                .await
                .context("seeding the demo catalog")?;
            format!(
                "DynamoDB at {endpoint}: seeded {} products, {} offers",
                seeded.products, seeded.offers
            )
        }
    };
    let streams =
        aws_sdk_dynamodbstreams::Client::new(&catalog_core::aws::sdk_config(None, Some(endpoint)));
    let stream_of = |table: &str| {
        let (client, streams, table) = (store.client().clone(), streams.clone(), table.to_owned());
        async move {
            DynamoStreamSource::for_table(&client, streams, &table)
                .await
                .with_context(|| format!("reading the stream of {table}"))
        }
    };
    Ok(ports(
        store.clone(),
        Arc::new(stream_of(&config.tables.views).await?),
        Arc::new(stream_of(&config.tables.catalog).await?),
        description,
    ))
}

/// The ports of one store.
fn ports<S>(
    store: Arc<S>,
    views_stream: Arc<dyn StreamSource>,
    catalog_stream: Arc<dyn StreamSource>,
    description: String,
) -> Stores
where
    S: CatalogStore + StatsStore + ViewRecorder + 'static,
{
    Stores {
        catalog: store.clone(),
        refresh_catalog: store.clone(),
        expiry_catalog: store.clone(),
        products: store.clone(),
        stats: store.clone(),
        views: store,
        views_stream,
        catalog_stream,
        description,
    }
}

/// Whether the catalog holds at least one product: pages on past offers and references (a
/// page can come back empty before the end of the table).
async fn has_products(store: &dyn ProductLister) -> catalog_core::Result<bool> {
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = store.list_products(cursor.as_deref(), 100).await?;
        if !page.is_empty() {
            return Ok(true);
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(false),
        }
    }
}
