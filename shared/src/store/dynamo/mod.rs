//! DynamoDB adapter (aws-sdk-dynamodb + serde_dynamo) for the store ports.

mod bulk;
mod catalog;
pub mod items;
pub mod schema;
mod stats;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use rand::Rng;

use crate::config::{DynamoConfig, TableNames};
use crate::error::Error;

/// Builds the DynamoDB client once per process: region and credentials from the environment
/// (see [`crate::aws`]), an endpoint override for local APIs, and an operation deadline so a stuck call
/// cannot eat the Lambda's whole timeout.
pub async fn client(config: &DynamoConfig) -> Client {
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(config.operation_timeout)
        .connect_timeout(Duration::from_secs(1))
        .build();
    Client::new(&crate::aws::sdk_config(
        Some(timeouts),
        config.endpoint.as_deref(),
    ))
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
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
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
    /// Items asked for per page of the expiry index (DynamoDB also stops a page at 1 MB).
    index_page: i32,
}

impl DynamoStore {
    /// A store over `client` using the given tables.
    pub fn new(client: Client, tables: TableNames) -> Self {
        DynamoStore {
            client,
            tables,
            index_page: 1000,
        }
    }

    /// The same store reading the expiry index `items` per page, so tests can make a few
    /// offers span several pages.
    pub fn with_index_page(mut self, items: i32) -> Self {
        self.index_page = items.max(1);
        self
    }

    /// The underlying client, for jobs that need operations outside the ports.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table names this store uses.
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }
}

/// Full-jitter exponential backoff: up to 25 ms × 2^attempt, capped at 1 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap_ms = (25u64 << attempt.min(10)).min(1000);
    Duration::from_millis(rand::rng().random_range(cap_ms / 2..=cap_ms))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::infallible_client_fn;
    use serde_json::{Value, json};

    use super::catalog::BATCH_MAX_ATTEMPTS;
    use super::*;
    use crate::model::ProductId;
    use crate::store::ProductReader;

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
