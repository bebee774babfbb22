//! The cache-sync function: one batch of the catalog table's stream. The work is
//! [`catalog_core::streams::cache_sync`]; this maps an unreadable payload to a function error,
//! which Lambda retries and, past its retries, sends to the on-failure destination.

use aws_lambda_events::streams::DynamoDbEventResponse;
use catalog_core::cache::Cache;
use catalog_core::streams::{RawEvent, cache_sync};

/// Handles one invocation: `batchItemFailures` if Redis could not be reached, or an error if
/// the payload is not a stream event.
pub async fn handle(
    payload: RawEvent,
    cache: &Cache,
) -> Result<DynamoDbEventResponse, lambda_runtime::Error> {
    let outcome = cache_sync::handle(payload, cache).await;
    // Before Lambda freezes the environment: what this batch counted.
    cache.flush_invocation().await;
    match outcome {
        Ok((response, _)) => Ok(response),
        Err(e) => {
            tracing::error!(error.message = %e, "cache-sync invocation failed; Lambda retries it");
            Err(lambda_runtime::Error::from(e.to_string()))
        }
    }
}
