//! Per-test tables and key prefix, the binary under the emulator, the catalog stream mapping,
//! and a reader that sees Redis as another API instance would (L1 off).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Source};
use catalog_core::clock::SystemClock;
use catalog_core::config::{RedisConfig, RedisMode, TableNames};
use catalog_core::model::{Currency, Money, Product, ProductDetail, ProductId};
use catalog_core::reads;
use catalog_core::store::dynamo::DynamoStore;
use catalog_core::store::dynamo::schema::create_tables;
use catalog_core::store::{ProductReader, ProductWriter};
use esm::invoke::{FunctionProcess, Invoker};
use esm::mapping::{EventSourceMapping, MappingConfig};
use esm::source::StreamSource;
use integration_tests::{dynamodb_client, dynamodb_endpoint, unique_name};

/// How long a change may take to reach the cache here: moto is slow and CI machines are
/// shared, so this is a liveness bound, not the propagation figure (that is `make bench`).
pub const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

/// The mapping the template deploys: no batching window, partial failures reported, retried
/// without limit (the template's `-1`), with short pauses for tests.
pub fn config() -> MappingConfig {
    MappingConfig {
        batch_size: 100,
        max_retry_attempts: None,
        poll_interval: Duration::from_millis(100),
        retry_pause: Duration::from_millis(200),
        ..MappingConfig::default()
    }
}

pub struct Harness {
    pub tables: TableNames,
    pub store: Arc<DynamoStore>,
    pub prefix: String,
    pub redis: RedisConfig,
}

impl Harness {
    /// Fresh tables, and a key prefix of its own on `redis`.
    pub async fn new(redis: RedisConfig) -> Harness {
        let tables = TableNames {
            catalog: unique_name("catalog"),
            views: unique_name("views"),
            stats: unique_name("stats"),
        };
        let client = dynamodb_client();
        create_tables(&client, &tables).await.unwrap();
        Harness {
            store: Arc::new(DynamoStore::new(client, tables.clone())),
            tables,
            prefix: format!("{}:", unique_name("sync")),
            redis,
        }
    }

    /// The function's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        let mode = match self.redis.mode {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        };
        [
            ("CATALOG_TABLE", self.tables.catalog.as_str()),
            ("VIEWS_TABLE", self.tables.views.as_str()),
            ("STATS_TABLE", self.tables.stats.as_str()),
            ("CACHE_KEY_PREFIX", self.prefix.as_str()),
            ("DYNAMODB_ENDPOINT", &dynamodb_endpoint()),
            ("REDIS_ENDPOINTS", &self.redis.nodes.join(",")),
            ("REDIS_MODE", mode),
            ("REDIS_TIMEOUT_MS", "300"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("RUST_LOG", "error"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The real binary under the runtime API emulator.
    pub async fn function(&self) -> Arc<FunctionProcess> {
        Arc::new(
            FunctionProcess::start(
                std::path::Path::new(env!("CARGO_BIN_EXE_cache-sync")),
                self.env(),
                Duration::from_secs(30),
            )
            .await
            .unwrap(),
        )
    }

    /// The catalog table's stream on moto.
    pub async fn stream(&self) -> Arc<dyn StreamSource> {
        integration_tests::dynamodb_stream(&self.tables.catalog).await
    }

    /// A mapping from the catalog stream to `function`.
    pub async fn mapping(&self, function: Arc<dyn Invoker>) -> Arc<EventSourceMapping> {
        Arc::new(EventSourceMapping::new(
            self.stream().await,
            vec![function],
            config(),
        ))
    }

    /// What another API instance reads: a cache on the same Redis and prefix, L1 off.
    pub async fn reader(&self) -> Cache {
        let l2 = RedisL2::connect(self.redis.clone(), Duration::from_secs(2)).await;
        Cache::new(
            CacheOptions {
                key_prefix: self.prefix.clone(),
                l1_max_bytes: 0,
                ..CacheOptions::default()
            },
            Some(l2 as Arc<dyn L2Store>),
            Arc::new(SystemClock),
        )
    }

    pub fn catalog(&self) -> Arc<dyn ProductReader> {
        self.store.clone()
    }

    /// A product's summary and detail as a reader gets them.
    pub async fn read(
        &self,
        reader: &Cache,
        id: &str,
    ) -> (Source, Option<Product>, Option<ProductDetail>) {
        let id = ProductId::parse(id).unwrap();
        let mut summaries = reads::summaries(reader, &self.catalog(), std::slice::from_ref(&id))
            .await
            .unwrap();
        let summary = summaries.items.remove(0);
        let detail = reads::product_detail(reader, &self.catalog(), &id)
            .await
            .unwrap();
        (
            summary.source,
            summary.value.map(|p| p.as_ref().clone()),
            detail.value.map(|d| d.as_ref().clone()),
        )
    }

    /// Waits until `check` holds for what a reader gets, up to [`PROPAGATION_BOUND`].
    pub async fn eventually<F>(&self, reader: &Cache, id: &str, what: &str, check: F) -> Duration
    where
        F: Fn(&Option<Product>, &Option<ProductDetail>) -> bool,
    {
        let started = Instant::now();
        loop {
            let (_, summary, detail) = self.read(reader, id).await;
            if check(&summary, &detail) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < PROPAGATION_BOUND,
                "{what}: not in the cache after {PROPAGATION_BOUND:?} (summary {summary:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a product through the store (as any writer would).
    pub async fn create(&self, id: &str, name: &str) -> Product {
        self.store
            .put_product(&product(id, name), ExpectedVersion::Absent)
            .await
            .unwrap()
    }

    /// Writes a product item straight to DynamoDB with the SDK, as the console or another
    /// service would: no store code, no cache code.
    pub async fn put_raw(&self, item: std::collections::HashMap<String, AttributeValue>) {
        self.store
            .client()
            .put_item()
            .table_name(&self.tables.catalog)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    /// Deletes an item straight from DynamoDB.
    pub async fn delete_raw(&self, pk: &str, sk: &str) {
        self.store
            .client()
            .delete_item()
            .table_name(&self.tables.catalog)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .unwrap();
    }
}

/// A product's item as DynamoDB JSON, for writes made with the SDK.
pub fn raw_item(product: &Product) -> std::collections::HashMap<String, AttributeValue> {
    serde_dynamo::to_item(catalog_core::store::dynamo::items::ProductItem::from(
        product,
    ))
    .unwrap()
}

pub fn product(id: &str, name: &str) -> Product {
    let now = catalog_core::clock::Clock::now_ms(&SystemClock);
    Product {
        id: ProductId::parse(id).unwrap(),
        name: name.into(),
        description: String::new(),
        category: "kitchen".into(),
        price: Money::new(1000, Currency::parse("EUR").unwrap()),
        active: true,
        created_at: now,
        updated_at: now,
        version: 0,
    }
}
