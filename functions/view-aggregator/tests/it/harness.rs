//! Per-test tables, a Redis prefix, the binary under the emulator, and the stream mapping.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use catalog_core::ExpectedVersion;
use catalog_core::config::TableNames;
use catalog_core::model::{
    CounterBucket, Currency, EpochMillis, EventId, Money, Product, ProductId, ViewEvent,
};
use catalog_core::store::dynamo::DynamoStore;
use catalog_core::store::dynamo::items::ViewItem;
use catalog_core::store::dynamo::schema::create_tables;
use catalog_core::store::{ProductWriter, ViewCounters};
use esm::invoke::{FunctionProcess, Invoker};
use esm::mapping::{EventSourceMapping, MappingConfig};
use esm::source::StreamSource;
use integration_tests::{dynamodb_client, dynamodb_endpoint, redis_node, unique_name};

/// 2026-11-18 (in the past, so records are never "from the future").
pub const NOW: EpochMillis = 1_795_000_000_000;
pub const HOUR: i64 = 3_600_000;

/// The mapping the template deploys, with a short tumbling window for tests.
pub fn config() -> MappingConfig {
    MappingConfig {
        batch_size: 100,
        tumbling_window: Some(Duration::from_secs(60)),
        max_retry_attempts: Some(3),
        retry_pause: Duration::from_millis(10),
        ..MappingConfig::default()
    }
}

pub struct Harness {
    pub tables: TableNames,
    pub store: Arc<DynamoStore>,
    pub prefix: String,
}

impl Harness {
    /// Fresh tables with `products`.
    pub async fn new(products: &[&str]) -> Harness {
        let tables = TableNames {
            catalog: unique_name("catalog"),
            views: unique_name("views"),
            stats: unique_name("stats"),
        };
        let client = dynamodb_client();
        create_tables(&client, &tables).await.unwrap();
        let store = Arc::new(DynamoStore::new(client, tables.clone()));
        for id in products {
            store
                .put_product(&product(id), ExpectedVersion::Absent)
                .await
                .unwrap();
        }
        Harness {
            tables,
            store,
            prefix: format!("{}:", unique_name("views")),
        }
    }

    /// The function's environment, with DynamoDB at `dynamodb` (moto, or a fault proxy).
    pub fn env(&self, dynamodb: &str) -> Vec<(String, String)> {
        [
            ("CATALOG_TABLE", self.tables.catalog.as_str()),
            ("VIEWS_TABLE", self.tables.views.as_str()),
            ("STATS_TABLE", self.tables.stats.as_str()),
            ("CACHE_KEY_PREFIX", self.prefix.as_str()),
            ("DYNAMODB_ENDPOINT", dynamodb),
            ("REDIS_ENDPOINTS", &redis_node()),
            ("REDIS_TIMEOUT_MS", "500"),
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
    pub async fn function(&self, dynamodb: &str) -> Arc<dyn Invoker> {
        Arc::new(
            FunctionProcess::start(
                std::path::Path::new(env!("CARGO_BIN_EXE_view-aggregator")),
                self.env(dynamodb),
                Duration::from_secs(30),
            )
            .await
            .unwrap(),
        )
    }

    /// The views table's stream on moto.
    pub async fn stream(&self) -> Arc<dyn StreamSource> {
        integration_tests::dynamodb_stream(&self.tables.views).await
    }

    /// A mapping from the views stream to the binary.
    pub async fn mapping(&self, config: MappingConfig) -> EventSourceMapping {
        EventSourceMapping::new(
            self.stream().await,
            vec![self.function(&dynamodb_endpoint()).await],
            config,
        )
    }

    /// Writes view events to the views table, 25 per BatchWriteItem.
    pub async fn write_views(&self, views: &[ViewEvent]) {
        for chunk in views.chunks(25) {
            let requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|v| {
                    let item = serde_dynamo::to_item(ViewItem::from(v)).unwrap();
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                        .build()
                })
                .collect();
            let mut pending = Some(std::collections::HashMap::from([(
                self.tables.views.clone(),
                requests,
            )]));
            while let Some(items) = pending.filter(|p| p.values().any(|v| !v.is_empty())) {
                let out = self
                    .store
                    .client()
                    .batch_write_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .unwrap();
                pending = out.unprocessed_items;
            }
        }
    }

    /// Sum of a product's counters of one kind (hours or days).
    pub async fn total(&self, product: &str, hourly: bool) -> u64 {
        self.store
            .view_counters(&ProductId::parse(product).unwrap())
            .await
            .unwrap()
            .into_iter()
            .filter(|(b, _)| matches!(b, CounterBucket::Hour(_)) == hourly)
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn product(id: &str) -> Product {
    Product {
        id: ProductId::parse(id).unwrap(),
        name: format!("Product {id}"),
        description: String::new(),
        category: "kitchen".into(),
        price: Money::new(1000, Currency::parse("EUR").unwrap()),
        active: true,
        created_at: NOW - 48 * HOUR,
        updated_at: NOW - 48 * HOUR,
        version: 0,
    }
}

pub fn view(event: &str, product: &str, at: EpochMillis) -> ViewEvent {
    ViewEvent {
        event_id: EventId::parse(event).unwrap(),
        product_id: ProductId::parse(product).unwrap(),
        viewed_at: at,
    }
}
