//! The catalog table's item layout: how model types map to DynamoDB keys and attributes.
//!
//! Product: `pk = PRODUCT#<id>`, `sk = META`. Offer: `pk = PRODUCT#<id>`, `sk = OFFER#<offer_id>`,
//! so one Query on the partition returns a product with its offers. Active offers also carry
//! `gsi1pk = ACTIVE#<shard>` and `gsi1sk = expires_at`, a sparse index of what will expire;
//! the attributes are dropped when the offer leaves `Active`, which removes it from the index.

use serde::{Deserialize, Serialize};

use crate::model::{EpochMillis, Offer, OfferId, OfferStatus, Product, ProductId, ViewEvent};

/// Sort key of a product's own item.
pub const PRODUCT_SK: &str = "META";
/// Sort key prefix of offers.
pub const OFFER_SK_PREFIX: &str = "OFFER#";
/// Name of the sparse index of active offers by expiry.
pub const EXPIRY_INDEX: &str = "active-by-expiry";
/// Partitions of the expiry index. Spreading active offers over a few partition keys keeps one
/// hot `ACTIVE` partition from throttling; readers query every shard.
pub const EXPIRY_SHARDS: u32 = 8;

/// Sort key of the item that maps an offer id to its product.
pub const OFFER_REF_SK: &str = "REF";

/// Partition key of the item that maps an offer id to its product.
pub fn offer_ref_pk(id: &OfferId) -> String {
    format!("OFFER#{id}")
}

/// Parses `PRODUCT#<id>`.
pub fn product_id_from_pk(pk: &str) -> Option<ProductId> {
    ProductId::parse(pk.strip_prefix("PRODUCT#")?).ok()
}

/// Parses `OFFER#<id>` (a sort key).
pub fn offer_id_from_sk(sk: &str) -> Option<OfferId> {
    OfferId::parse(sk.strip_prefix(OFFER_SK_PREFIX)?).ok()
}

/// Partition key of a product's items.
pub fn product_pk(id: &ProductId) -> String {
    format!("PRODUCT#{id}")
}

/// Sort key of an offer's item.
pub fn offer_sk(id: &OfferId) -> String {
    format!("{OFFER_SK_PREFIX}{id}")
}

/// The expiry-index partition an offer belongs to: a stable hash (FNV-1a), so every
/// process and every run agrees on it.
pub fn expiry_shard(id: &OfferId) -> String {
    let hash = id.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("ACTIVE#{}", hash % EXPIRY_SHARDS)
}

/// A product as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProductItem {
    /// `PRODUCT#<id>`.
    pub pk: String,
    /// `META`.
    pub sk: String,
    /// The product's attributes.
    #[serde(flatten)]
    pub product: Product,
}

impl From<&Product> for ProductItem {
    fn from(product: &Product) -> Self {
        ProductItem {
            pk: product_pk(&product.id),
            sk: PRODUCT_SK.to_owned(),
            product: product.clone(),
        }
    }
}

/// An offer as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct OfferItem {
    /// `PRODUCT#<product_id>`.
    pub pk: String,
    /// `OFFER#<offer_id>`.
    pub sk: String,
    /// Expiry-index partition; present only while the offer is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1pk: Option<String>,
    /// Expiry-index sort key (`expires_at`); present only while the offer is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1sk: Option<EpochMillis>,
    /// The offer's attributes.
    #[serde(flatten)]
    pub offer: Offer,
}

impl From<&Offer> for OfferItem {
    fn from(offer: &Offer) -> Self {
        let active = offer.status == OfferStatus::Active;
        OfferItem {
            pk: product_pk(&offer.product_id),
            sk: offer_sk(&offer.id),
            gsi1pk: active.then(|| expiry_shard(&offer.id)),
            gsi1sk: active.then_some(offer.expires_at),
            offer: offer.clone(),
        }
    }
}

/// Maps an offer id to its product, so `PATCH /offers/{id}` needs no product id.
#[derive(Debug, Serialize, Deserialize)]
pub struct OfferRefItem {
    /// `OFFER#<offer_id>`.
    pub pk: String,
    /// `REF`.
    pub sk: String,
    /// The offer's product.
    pub product_id: ProductId,
}

/// View events only feed the counters; two days covers any stream retry.
pub const VIEW_RETENTION_S: i64 = 2 * 86_400;

/// A view event as stored in the views table: the event plus its TTL (epoch seconds).
#[derive(Debug, Serialize, Deserialize)]
pub struct ViewItem {
    /// The event's attributes.
    #[serde(flatten)]
    pub event: ViewEvent,
    /// When DynamoDB may delete it.
    pub ttl: i64,
}

impl From<&ViewEvent> for ViewItem {
    fn from(event: &ViewEvent) -> Self {
        ViewItem {
            event: event.clone(),
            ttl: event.viewed_at / 1000 + VIEW_RETENTION_S,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_shard_is_stable_and_in_range() {
        let id = OfferId::parse("offer-42").unwrap();
        assert_eq!(expiry_shard(&id), expiry_shard(&id));
        let shard: u32 = expiry_shard(&id)
            .trim_start_matches("ACTIVE#")
            .parse()
            .unwrap();
        assert!(shard < EXPIRY_SHARDS);
    }
}
