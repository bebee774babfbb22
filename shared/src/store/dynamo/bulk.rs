//! Bulk loading: `BatchWriteItem` in chunks of 25, a few requests in flight. Unprocessed items
//! (DynamoDB's answer to throttling inside a batch) and requests throttled past the SDK's own
//! retries are retried with backoff.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::{StreamExt, TryStreamExt};

use super::items::{OFFER_REF_SK, OfferItem, OfferRefItem, ProductItem, offer_ref_pk};
use super::stats::counter_item;
use super::{DynamoStore, backoff, sdk_error};
use crate::error::{Error, Result};
use crate::store::{BulkCatalog, BulkLoader};

/// Items per `BatchWriteItem` (DynamoDB's limit).
const BATCH_ITEMS: usize = 25;
/// Requests in flight at once.
const IN_FLIGHT: usize = 4;
/// Attempts at a batch's unprocessed items before giving up.
const MAX_ATTEMPTS: u32 = 12;

type Item = HashMap<String, AttributeValue>;

fn to_item<T: serde::Serialize>(value: &T) -> Result<Item> {
    serde_dynamo::to_item(value).map_err(|e| Error::Codec {
        what: "bulk item",
        source: e.into(),
    })
}

impl DynamoStore {
    /// Writes `items` to `table`, 25 per request, retrying what DynamoDB leaves unprocessed.
    async fn put_all(&self, table: &str, items: Vec<Item>) -> Result<()> {
        let chunks: Vec<Vec<Item>> = items.chunks(BATCH_ITEMS).map(<[Item]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|chunk| self.put_chunk(table, chunk))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    async fn put_chunk(&self, table: &str, chunk: Vec<Item>) -> Result<()> {
        let mut pending: Vec<WriteRequest> = chunk
            .into_iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| Error::Codec {
                        what: "bulk item",
                        source: e.into(),
                    })
            })
            .collect::<Result<_>>()?;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let sent = self
                .client
                .batch_write_item()
                .request_items(table, pending.clone())
                .send()
                .await
                .map_err(|e| sdk_error("BatchWriteItem", e));
            let out = match sent {
                Ok(out) => out,
                // Throttled (or a transient fault) past the SDK's own retries: again, later.
                Err(e) if e.is_retryable() && attempt + 1 < MAX_ATTEMPTS => {
                    tracing::warn!(error.message = %e, attempt, "bulk write throttled; retrying");
                    continue;
                }
                Err(e) => return Err(e),
            };
            pending = out
                .unprocessed_items
                .and_then(|mut left| left.remove(table))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(Error::Dynamo {
            op: "BatchWriteItem",
            retryable: true,
            source: format!(
                "{} items unprocessed after {MAX_ATTEMPTS} attempts",
                pending.len()
            )
            .into(),
        })
    }
}

#[async_trait]
impl BulkLoader for DynamoStore {
    async fn load(&self, catalog: BulkCatalog<'_>) -> Result<()> {
        let mut catalog_items = Vec::new();
        for product in catalog.products {
            product.validate()?;
            let mut product = product.clone();
            product.version = 1;
            catalog_items.push(to_item(&ProductItem::from(&product))?);
        }
        for offer in catalog.offers {
            offer.validate()?;
            let mut offer = offer.clone();
            offer.version = 1;
            catalog_items.push(to_item(&OfferItem::from(&offer))?);
            catalog_items.push(to_item(&OfferRefItem {
                pk: offer_ref_pk(&offer.id),
                sk: OFFER_REF_SK.to_owned(),
                product_id: offer.product_id.clone(),
            })?);
        }
        let counters: Vec<Item> = catalog
            .counters
            .iter()
            .map(|(product, bucket, views)| counter_item(product, *bucket, *views))
            .collect();
        self.put_all(&self.tables.catalog, catalog_items).await?;
        self.put_all(&self.tables.stats, counters).await
    }
}
