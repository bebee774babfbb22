//! DynamoDB adapter (aws-sdk-dynamodb + serde_dynamo) for the store ports.

pub mod items;
pub mod schema;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures::{StreamExt, TryStreamExt};
use rand::Rng;

use self::items::{OFFER_SK_PREFIX, OfferItem, PRODUCT_SK, ProductItem, product_pk};
use super::{BATCH_GET_LIMIT, OfferWriter, ProductReader, ProductWriter};
use crate::config::{DynamoConfig, TableNames};
use crate::error::{Error, ExpectedVersion, Result};
use crate::model::{Offer, Product, ProductDetail, ProductId};

/// Builds the DynamoDB client once per process: region and credentials from the standard
/// AWS chain, an endpoint override for local APIs, and an operation deadline so a stuck call
/// cannot eat the Lambda's whole timeout.
pub async fn client(config: &DynamoConfig) -> Client {
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(config.operation_timeout)
        .connect_timeout(Duration::from_secs(1))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}

/// Classifies an SDK error: network failures, timeouts, throttling and 5xx are retryable.
pub(crate) fn sdk_error<E, R>(op: &'static str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionInProgressException"
            )
        ),
        _ => false,
    };
    Error::Dynamo {
        op,
        retryable,
        source: Box::new(err),
    }
}

/// Whether an SDK error is a failed condition expression (a lost optimistic-concurrency race).
fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// The catalog store on DynamoDB.
///
/// ## Behavior
/// - Reads are strongly consistent: a read that refills the cache right after a write and its
///   invalidation must not bring the old item back for a whole TTL.
/// - Batch reads deduplicate ids, split them into chunks of 100, run up to four chunks at once
///   and retry `UnprocessedKeys` with capped, jittered exponential backoff.
/// - Writes are conditional on the stored version; a lost race is [`Error::VersionConflict`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
}

/// How many BatchGetItem chunks run at once: enough to hide latency, few enough not to throttle.
const BATCH_CONCURRENCY: usize = 4;
/// Attempts at draining `UnprocessedKeys` before giving up with a retryable error.
const BATCH_MAX_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// A store over `client` using the given tables.
    pub fn new(client: Client, tables: TableNames) -> Self {
        DynamoStore { client, tables }
    }

    /// The underlying client, for jobs that need operations outside the ports.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table names this store uses.
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// Reads one chunk of at most 100 product keys, retrying unprocessed keys.
    async fn batch_get_chunk(&self, ids: &[&ProductId]) -> Result<Vec<Product>> {
        let keys = ids.iter().map(|id| product_key(id)).collect::<Vec<_>>();
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|e| Error::Dynamo {
                op: "BatchGetItem",
                retryable: false,
                source: Box::new(e),
            })?;
        let mut found = Vec::with_capacity(ids.len());
        for attempt in 0..BATCH_MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.tables.catalog, pending)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", e))?;
            for item in output
                .responses
                .and_then(|mut r| r.remove(&self.tables.catalog))
                .unwrap_or_default()
            {
                found.push(decode_product(item)?);
            }
            match output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.tables.catalog))
            {
                Some(rest) if !rest.keys.is_empty() => pending = rest,
                _ => return Ok(found),
            }
        }
        Err(Error::Dynamo {
            op: "BatchGetItem",
            retryable: true,
            source: format!("unprocessed keys remained after {BATCH_MAX_ATTEMPTS} attempts").into(),
        })
    }
}

/// Full-jitter exponential backoff: up to 25 ms × 2^attempt, capped at 1 s.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (25u64 << attempt.min(10)).min(1000);
    Duration::from_millis(rand::rng().random_range(cap_ms / 2..=cap_ms))
}

fn product_key(id: &ProductId) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(product_pk(id))),
        ("sk".to_owned(), AttributeValue::S(PRODUCT_SK.to_owned())),
    ])
}

fn decode_product(item: HashMap<String, AttributeValue>) -> Result<Product> {
    serde_dynamo::from_item::<_, ProductItem>(item)
        .map(|i| i.product)
        .map_err(|e| Error::codec("product item", e))
}

fn decode_offer(item: HashMap<String, AttributeValue>) -> Result<Offer> {
    serde_dynamo::from_item::<_, OfferItem>(item)
        .map(|i| i.offer)
        .map_err(|e| Error::codec("offer item", e))
}

/// The condition that makes a put an optimistic-concurrency write.
fn version_condition(
    expected: ExpectedVersion,
) -> (&'static str, Option<(String, AttributeValue)>) {
    match expected {
        ExpectedVersion::Absent => ("attribute_not_exists(pk)", None),
        ExpectedVersion::Exactly(v) => (
            "version = :expected",
            Some((":expected".to_owned(), AttributeValue::N(v.to_string()))),
        ),
    }
}

impl DynamoStore {
    async fn conditional_put(
        &self,
        item: HashMap<String, AttributeValue>,
        expected: ExpectedVersion,
        entity: &'static str,
        id: &str,
    ) -> Result<()> {
        let (condition, value) = version_condition(expected);
        self.client
            .put_item()
            .table_name(&self.tables.catalog)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(value.map(|(k, v)| HashMap::from([(k, v)])))
            .send()
            .await
            .map_err(|e| {
                if is_condition_failure(&e) {
                    Error::VersionConflict {
                        entity,
                        id: id.to_owned(),
                        expected,
                    }
                } else {
                    sdk_error("PutItem", e)
                }
            })?;
        Ok(())
    }
}

#[async_trait]
impl ProductReader for DynamoStore {
    async fn product_detail(&self, id: &ProductId) -> Result<Option<ProductDetail>> {
        let pages = self
            .client
            .query()
            .table_name(&self.tables.catalog)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(product_pk(id)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let items: Vec<_> = pages
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| sdk_error("Query", e))?;

        let mut product = None;
        let mut offers = Vec::new();
        for item in items {
            match item.get("sk") {
                Some(AttributeValue::S(sk)) if sk == PRODUCT_SK => {
                    product = Some(decode_product(item)?);
                }
                Some(AttributeValue::S(sk)) if sk.starts_with(OFFER_SK_PREFIX) => {
                    offers.push(decode_offer(item)?);
                }
                // Items of kinds this version does not know are ignored, so a newer writer
                // can add them without breaking older readers.
                _ => {}
            }
        }
        Ok(product.map(|product| ProductDetail { product, offers }))
    }

    async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>> {
        // BatchGetItem rejects a request that names the same key twice.
        let unique: Vec<&ProductId> = ids.iter().collect::<BTreeSet<_>>().into_iter().collect();
        // The futures are built up front (they do nothing until polled): a closure inside
        // the stream would need a higher-ranked lifetime that `async_trait`'s `Send` check rejects.
        let chunk_reads: Vec<_> = unique
            .chunks(BATCH_GET_LIMIT)
            .map(|chunk| self.batch_get_chunk(chunk))
            .collect();
        let found: Vec<Vec<Product>> = futures::stream::iter(chunk_reads)
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

#[async_trait]
impl ProductWriter for DynamoStore {
    async fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product> {
        product.validate()?;
        let stored = Product {
            version: expected.next(),
            ..product.clone()
        };
        let item = serde_dynamo::to_item(ProductItem::from(&stored))
            .map_err(|e| Error::codec("product item", e))?;
        self.conditional_put(item, expected, "product", stored.id.as_str())
            .await?;
        Ok(stored)
    }
}

#[async_trait]
impl OfferWriter for DynamoStore {
    async fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer> {
        offer.validate()?;
        let stored = Offer {
            version: expected.next(),
            ..offer.clone()
        };
        let item = serde_dynamo::to_item(OfferItem::from(&stored))
            .map_err(|e| Error::codec("offer item", e))?;
        self.conditional_put(item, expected, "offer", stored.id.as_str())
            .await?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::infallible_client_fn;
    use serde_json::{Value, json};

    use super::*;

    fn product_json(key: &Value) -> Value {
        let pk = key["pk"]["S"].as_str().unwrap();
        let id = pk.trim_start_matches("PRODUCT#");
        json!({
            "pk": {"S": pk}, "sk": {"S": "META"}, "id": {"S": id}, "name": {"S": id},
            "description": {"S": ""}, "category": {"S": "misc"},
            "price": {"M": {"amount_minor": {"N": "100"}, "currency": {"S": "EUR"}}},
            "active": {"BOOL": true}, "created_at": {"N": "1700000000000"},
            "updated_at": {"N": "1700000000000"}, "version": {"N": "1"}
        })
    }

    /// A store whose DynamoDB answers every BatchGetItem with the first key found and the rest
    /// unprocessed (while `stingy_calls` lasts), the way DynamoDB does under throttling.
    fn store_with_stingy_batch_get(stingy_calls: usize) -> (DynamoStore, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let http = infallible_client_fn(move |request| {
            let call = seen.fetch_add(1, Ordering::SeqCst);
            let body: Value = serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
            let keys = body["RequestItems"]["catalog"]["Keys"]
                .as_array()
                .unwrap()
                .clone();
            let (served, rest) = if call < stingy_calls {
                keys.split_at(1)
            } else {
                keys.split_at(keys.len())
            };
            let mut response = json!({
                "Responses": {"catalog": served.iter().map(product_json).collect::<Vec<_>>()},
            });
            if !rest.is_empty() {
                response["UnprocessedKeys"] =
                    json!({"catalog": {"Keys": rest, "ConsistentRead": true}});
            }
            http::Response::builder()
                .status(200)
                .header("content-type", "application/x-amz-json-1.0")
                .body(response.to_string())
                .unwrap()
        });
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("k", "s", None, None, "test"))
            .http_client(http)
            .build();
        let tables = TableNames {
            catalog: "catalog".into(),
            views: "views".into(),
            stats: "stats".into(),
        };
        (DynamoStore::new(Client::from_conf(config), tables), calls)
    }

    fn ids(n: usize) -> Vec<ProductId> {
        (0..n)
            .map(|i| ProductId::parse(&format!("p{i}")).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_keys_are_retried_until_every_product_is_read() {
        let (store, calls) = store_with_stingy_batch_get(2);
        let found = store.products(&ids(5)).await.unwrap();
        assert_eq!(found.len(), 5);
        // Two stingy answers (one key each), then the remaining three in one call.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_still_unprocessed_after_every_attempt_are_a_retryable_error() {
        let (store, calls) = store_with_stingy_batch_get(usize::MAX);
        let err = store.products(&ids(20)).await.unwrap_err();
        assert!(err.is_retryable() && err.is_unavailable(), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), BATCH_MAX_ATTEMPTS as usize);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let delay = backoff(attempt);
            assert!(delay <= Duration::from_secs(1));
            assert!(delay >= Duration::from_millis(25));
        }
    }
}
