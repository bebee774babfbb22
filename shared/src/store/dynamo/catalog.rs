//! The catalog table: products, offers, the offer-id lookup and the expiry index.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, TransactWriteItem,
};
use futures::{StreamExt, TryStreamExt};

use super::items::{
    EXPIRY_INDEX, EXPIRY_SHARDS, OFFER_REF_SK, OFFER_SK_PREFIX, OfferItem, OfferRefItem,
    PRODUCT_SK, ProductItem, offer_id_from_sk, offer_ref_pk, offer_sk, product_id_from_pk,
    product_pk,
};
use super::{DynamoStore, backoff, is_condition_failure, sdk_error};
use crate::error::{Error, ExpectedVersion, Result};
use crate::model::{EpochMillis, ExpiringOffer, Offer, OfferId, Product, ProductDetail, ProductId};
use crate::store::{
    BATCH_GET_LIMIT, ExpiryIndex, OfferExpirer, OfferReader, OfferWriter, ProductLister,
    ProductReader, ProductWriter,
};

/// How many BatchGetItem chunks run at once: enough to hide latency, few enough not to throttle.
const BATCH_CONCURRENCY: usize = 4;
/// Attempts at draining `UnprocessedKeys` before giving up with a retryable error.
pub(super) const BATCH_MAX_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// Reads one chunk of at most 100 catalog keys consistently, retrying unprocessed keys.
    async fn batch_get_chunk(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|e| Error::Dynamo {
                op: "BatchGetItem",
                retryable: false,
                source: Box::new(e),
            })?;
        let mut found = Vec::new();
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
            found.extend(
                output
                    .responses
                    .and_then(|mut r| r.remove(&self.tables.catalog))
                    .unwrap_or_default(),
            );
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

    /// Reads any number of distinct catalog keys: chunks of 100, a few chunks at once.
    async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        // The futures are built up front (they do nothing until polled): a closure inside
        // the stream would need a higher-ranked lifetime that `async_trait`'s `Send` check rejects.
        let chunk_reads: Vec<_> = keys
            .chunks(BATCH_GET_LIMIT)
            .map(|chunk| self.batch_get_chunk(chunk.to_vec()))
            .collect();
        let found: Vec<Vec<_>> = futures::stream::iter(chunk_reads)
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// One page of one expiry-index shard: offers due by `until`, after `start`.
    async fn expiry_page(
        &self,
        shard: u32,
        until: EpochMillis,
        start: Option<HashMap<String, AttributeValue>>,
        limit: i32,
    ) -> Result<(Vec<ExpiringOffer>, Option<HashMap<String, AttributeValue>>)> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.catalog)
            .index_name(EXPIRY_INDEX)
            .key_condition_expression("gsi1pk = :shard AND gsi1sk <= :until")
            .expression_attribute_values(":shard", AttributeValue::S(format!("ACTIVE#{shard}")))
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        let due = out.items().iter().filter_map(expiring_from_index).collect();
        Ok((due, out.last_evaluated_key))
    }

    /// Every offer of one shard due by `until`, page after page, up to `limit`.
    async fn expiry_shard(
        &self,
        shard: u32,
        until: EpochMillis,
        limit: usize,
    ) -> Result<Vec<ExpiringOffer>> {
        let page_limit = i32::try_from(limit.max(1))
            .unwrap_or(i32::MAX)
            .min(self.index_page);
        let mut due = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self.expiry_page(shard, until, start, page_limit).await?;
            due.extend(page);
            match next {
                Some(next) if due.len() < limit => start = Some(next),
                _ => return Ok(due),
            }
        }
    }

    /// Creates an offer atomically with its id lookup item, if its product exists.
    async fn create_offer(
        &self,
        offer: &Offer,
        item: HashMap<String, AttributeValue>,
    ) -> Result<()> {
        let table = &self.tables.catalog;
        let product_exists = ConditionCheck::builder()
            .table_name(table)
            .key("pk", AttributeValue::S(product_pk(&offer.product_id)))
            .key("sk", AttributeValue::S(PRODUCT_SK.to_owned()))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(build_error)?;
        let put_offer = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let reference = serde_dynamo::to_item(OfferRefItem {
            pk: offer_ref_pk(&offer.id),
            sk: OFFER_REF_SK.to_owned(),
            product_id: offer.product_id.clone(),
        })
        .map_err(|e| Error::codec("offer reference", e))?;
        let put_reference = Put::builder()
            .table_name(table)
            .set_item(Some(reference))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(product_exists)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().put(put_offer).build())
            .transact_items(TransactWriteItem::builder().put(put_reference).build())
            .send()
            .await;
        let Err(err) = result else { return Ok(()) };
        // Which condition failed decides the error: the product check, or an id already used.
        let reasons: Vec<Option<String>> = err
            .as_service_error()
            .and_then(|e| match e {
                TransactWriteItemsError::TransactionCanceledException(canceled) => Some(
                    canceled
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let failed =
            |i: usize| reasons.get(i).and_then(Option::as_deref) == Some("ConditionalCheckFailed");
        if failed(0) {
            Err(Error::NotFound {
                entity: "product",
                id: offer.product_id.to_string(),
            })
        } else if failed(1) || failed(2) {
            Err(Error::VersionConflict {
                entity: "offer",
                id: offer.id.to_string(),
                expected: ExpectedVersion::Absent,
            })
        } else {
            Err(sdk_error("TransactWriteItems", err))
        }
    }

    async fn get_item(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>> {
        self.client
            .get_item()
            .table_name(&self.tables.catalog)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map(|out| out.item)
            .map_err(|e| sdk_error("GetItem", e))
    }
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::Dynamo {
        op: "TransactWriteItems",
        retryable: false,
        source: Box::new(e),
    }
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
        let unique: BTreeSet<&ProductId> = ids.iter().collect();
        self.batch_get(unique.into_iter().map(product_key).collect())
            .await?
            .into_iter()
            .map(decode_product)
            .collect()
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
        match expected {
            ExpectedVersion::Absent => self.create_offer(&stored, item).await?,
            ExpectedVersion::Exactly(_) => {
                self.conditional_put(item, expected, "offer", stored.id.as_str())
                    .await?;
            }
        }
        Ok(stored)
    }
}

#[async_trait]
impl ProductLister for DynamoStore {
    async fn list_products(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Product>, Option<String>)> {
        // The cursor is the last evaluated key, `<pk>|<sk>`; ids never contain `|`.
        let start = match cursor {
            None => None,
            Some(raw) => {
                let (pk, sk) = raw.split_once('|').ok_or_else(|| {
                    Error::Invalid(crate::model::ValidationError::new(
                        "cursor",
                        "malformed cursor",
                    ))
                })?;
                Some(HashMap::from([
                    ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
                    ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
                ]))
            }
        };
        let out = self
            .client
            .scan()
            .table_name(&self.tables.catalog)
            .filter_expression("sk = :meta")
            .expression_attribute_values(":meta", AttributeValue::S(PRODUCT_SK.to_owned()))
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| sdk_error("Scan", e))?;
        let products = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(decode_product)
            .collect::<Result<Vec<_>>>()?;
        let next = out
            .last_evaluated_key
            .and_then(|key| match (key.get("pk"), key.get("sk")) {
                (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
                    Some(format!("{pk}|{sk}"))
                }
                _ => None,
            });
        Ok((products, next))
    }
}

#[async_trait]
impl OfferReader for DynamoStore {
    async fn offer(&self, id: &OfferId) -> Result<Option<Offer>> {
        let Some(reference) = self.get_item(offer_ref_pk(id), OFFER_REF_SK).await? else {
            return Ok(None);
        };
        let reference: OfferRefItem =
            serde_dynamo::from_item(reference).map_err(|e| Error::codec("offer reference", e))?;
        self.get_item(product_pk(&reference.product_id), &offer_sk(id))
            .await?
            .map(decode_offer)
            .transpose()
    }

    async fn offers(&self, keys: &[(ProductId, OfferId)]) -> Result<Vec<Offer>> {
        let unique: BTreeSet<&(ProductId, OfferId)> = keys.iter().collect();
        let keys = unique
            .into_iter()
            .map(|(product, offer)| {
                HashMap::from([
                    ("pk".to_owned(), AttributeValue::S(product_pk(product))),
                    ("sk".to_owned(), AttributeValue::S(offer_sk(offer))),
                ])
            })
            .collect();
        self.batch_get(keys)
            .await?
            .into_iter()
            .map(decode_offer)
            .collect()
    }
}

#[async_trait]
impl OfferExpirer for DynamoStore {
    async fn expire_offer(
        &self,
        product: &ProductId,
        offer: &OfferId,
        version: u64,
        now: EpochMillis,
    ) -> Result<bool> {
        let n = |v: String| AttributeValue::N(v);
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.catalog)
            .key("pk", AttributeValue::S(product_pk(product)))
            .key("sk", AttributeValue::S(offer_sk(offer)))
            // Dropping gsi1pk/gsi1sk takes the offer out of the sparse expiry index.
            .update_expression(
                "SET #status = :expired, #version = :next, updated_at = :now REMOVE gsi1pk, gsi1sk",
            )
            .condition_expression(
                "#status = :active AND expires_at <= :now AND #version = :version",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expired", AttributeValue::S("expired".into()))
            .expression_attribute_values(":active", AttributeValue::S("active".into()))
            .expression_attribute_values(":now", n(now.to_string()))
            .expression_attribute_values(":version", n(version.to_string()))
            .expression_attribute_values(":next", n(version.saturating_add(1).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

#[async_trait]
impl ExpiryIndex for DynamoStore {
    async fn expiring(&self, until: EpochMillis, limit: usize) -> Result<Vec<ExpiringOffer>> {
        let shards = (0..EXPIRY_SHARDS).map(|shard| self.expiry_shard(shard, until, limit));
        let mut due: Vec<ExpiringOffer> = futures::future::try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            .collect();
        due.sort_by(|a, b| (a.expires_at, &a.offer_id).cmp(&(b.expires_at, &b.offer_id)));
        due.truncate(limit);
        Ok(due)
    }

    async fn oldest_due(&self, until: EpochMillis) -> Result<Vec<ExpiringOffer>> {
        let shards = (0..EXPIRY_SHARDS).map(|shard| self.expiry_page(shard, until, None, 1));
        Ok(futures::future::try_join_all(shards)
            .await?
            .into_iter()
            .flat_map(|(oldest, _)| oldest)
            .collect())
    }
}

/// An expiry-index item (keys plus the projected version) as a due offer; `None` for an
/// item this version cannot read.
fn expiring_from_index(item: &HashMap<String, AttributeValue>) -> Option<ExpiringOffer> {
    let string = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    };
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    Some(ExpiringOffer {
        product_id: product_id_from_pk(string("pk")?)?,
        offer_id: offer_id_from_sk(string("sk")?)?,
        expires_at: number("gsi1sk")?,
        version: number("version").and_then(|v| u64::try_from(v).ok()),
    })
}
