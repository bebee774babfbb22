//! Storage ports (one small trait per capability) and their adapters.
//!
//! Handlers take only the ports they need, mirroring the IAM policy of their function.
//! [`dynamo::DynamoStore`] is the real adapter; [`memory::MemoryStore`] has the same
//! semantics in process, for unit tests and the embedded dev mode.

pub mod dynamo;
pub mod latency;
pub mod memory;

use async_trait::async_trait;

use crate::error::{ExpectedVersion, Result};
use crate::model::{Offer, Product, ProductDetail, ProductId};

/// Most keys one DynamoDB BatchGetItem call accepts.
pub const BATCH_GET_LIMIT: usize = 100;

/// Reads products.
#[async_trait]
pub trait ProductReader: Send + Sync {
    /// A product with all its offers, or `None` if the product does not exist.
    /// One DynamoDB Query on the product's partition.
    async fn product_detail(&self, id: &ProductId) -> Result<Option<ProductDetail>>;

    /// The products among `ids` that exist, in no particular order; unknown ids are left out.
    /// Any number of ids (duplicates allowed), fetched in BatchGetItem chunks of 100.
    async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>>;
}

/// Writes products with optimistic concurrency.
#[async_trait]
pub trait ProductWriter: Send + Sync {
    /// Stores `product` if the stored version matches `expected`, and returns it as stored,
    /// with `version` set to `expected.next()` (the caller's `version` field is ignored).
    ///
    /// Fails with [`crate::Error::VersionConflict`] if another write got there first.
    async fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product>;
}

/// Writes offers with optimistic concurrency.
#[async_trait]
pub trait OfferWriter: Send + Sync {
    /// Stores `offer` if its stored version matches `expected`; same contract as
    /// [`ProductWriter::put_product`]. Active offers are indexed by expiry; others are not.
    async fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer>;
}
