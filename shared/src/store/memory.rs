//! In-process adapter for the store ports: the same semantics as DynamoDB (conditional writes,
//! batch reads of any size) without a network, for unit tests and the embedded dev mode.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;

use super::{OfferWriter, ProductReader, ProductWriter};
use crate::error::{Error, ExpectedVersion, Result};
use crate::model::{Offer, OfferId, Product, ProductDetail, ProductId};

/// One product partition: the product item and its offers, like the catalog table's layout.
#[derive(Debug, Default, Clone)]
struct Partition {
    product: Option<Product>,
    offers: BTreeMap<OfferId, Offer>,
}

/// The catalog held in memory.
///
/// ## Behavior
/// - Every method takes a lock only for the copy in or out, never across an `.await`.
/// - Writes check the version exactly as the DynamoDB condition expressions do.
#[derive(Debug, Default)]
pub struct MemoryStore {
    catalog: RwLock<BTreeMap<ProductId, Partition>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Number of products stored.
    pub fn product_count(&self) -> usize {
        let catalog = self.catalog.read().unwrap_or_else(PoisonError::into_inner);
        catalog.values().filter(|p| p.product.is_some()).count()
    }
}

/// Checks a conditional write against the stored version.
fn check_version(
    stored: Option<u64>,
    expected: ExpectedVersion,
    entity: &'static str,
    id: &str,
) -> Result<()> {
    let ok = match expected {
        ExpectedVersion::Absent => stored.is_none(),
        ExpectedVersion::Exactly(v) => stored == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::VersionConflict {
            entity,
            id: id.to_owned(),
            expected,
        })
    }
}

#[async_trait]
impl ProductReader for MemoryStore {
    async fn product_detail(&self, id: &ProductId) -> Result<Option<ProductDetail>> {
        let catalog = self.catalog.read().unwrap_or_else(PoisonError::into_inner);
        Ok(catalog.get(id).and_then(|partition| {
            partition.product.clone().map(|product| ProductDetail {
                product,
                offers: partition.offers.values().cloned().collect(),
            })
        }))
    }

    async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>> {
        let catalog = self.catalog.read().unwrap_or_else(PoisonError::into_inner);
        let unique: std::collections::BTreeSet<&ProductId> = ids.iter().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| catalog.get(id)?.product.clone())
            .collect())
    }
}

#[async_trait]
impl ProductWriter for MemoryStore {
    async fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product> {
        product.validate()?;
        let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
        let partition = catalog.entry(product.id.clone()).or_default();
        let stored_version = partition.product.as_ref().map(|p| p.version);
        check_version(stored_version, expected, "product", product.id.as_str())?;
        let stored = Product {
            version: expected.next(),
            ..product.clone()
        };
        partition.product = Some(stored.clone());
        Ok(stored)
    }
}

#[async_trait]
impl OfferWriter for MemoryStore {
    async fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer> {
        offer.validate()?;
        let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
        let partition = catalog.entry(offer.product_id.clone()).or_default();
        let stored_version = partition.offers.get(&offer.id).map(|o| o.version);
        check_version(stored_version, expected, "offer", offer.id.as_str())?;
        let stored = Offer {
            version: expected.next(),
            ..offer.clone()
        };
        partition.offers.insert(stored.id.clone(), stored.clone());
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Currency, Money, OfferStatus};

    fn product(id: &str) -> Product {
        Product {
            id: ProductId::parse(id).unwrap(),
            name: format!("Product {id}"),
            description: String::new(),
            category: "misc".into(),
            price: Money::new(100, Currency::parse("EUR").unwrap()),
            active: true,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            version: 0,
        }
    }

    #[tokio::test]
    async fn create_then_update_with_matching_version() {
        let store = MemoryStore::new();
        let created = store
            .put_product(&product("a"), ExpectedVersion::Absent)
            .await
            .unwrap();
        assert_eq!(created.version, 1);
        let updated = store
            .put_product(&created, ExpectedVersion::Exactly(1))
            .await
            .unwrap();
        assert_eq!(updated.version, 2);
    }

    #[tokio::test]
    async fn stale_version_and_duplicate_create_are_conflicts() {
        let store = MemoryStore::new();
        store
            .put_product(&product("a"), ExpectedVersion::Absent)
            .await
            .unwrap();
        for expected in [ExpectedVersion::Absent, ExpectedVersion::Exactly(7)] {
            let err = store
                .put_product(&product("a"), expected)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::VersionConflict { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn detail_includes_offers_and_batch_skips_unknown_ids() {
        let store = MemoryStore::new();
        store
            .put_product(&product("a"), ExpectedVersion::Absent)
            .await
            .unwrap();
        let offer = Offer {
            id: OfferId::parse("o1").unwrap(),
            product_id: ProductId::parse("a").unwrap(),
            status: OfferStatus::Active,
            price: Money::new(50, Currency::parse("EUR").unwrap()),
            expires_at: 1_800_000_000_000,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            version: 0,
        };
        store
            .put_offer(&offer, ExpectedVersion::Absent)
            .await
            .unwrap();
        let detail = store
            .product_detail(&ProductId::parse("a").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail.offers.len(), 1);
        let ids = [
            ProductId::parse("a").unwrap(),
            ProductId::parse("zz").unwrap(),
        ];
        assert_eq!(store.products(&ids).await.unwrap().len(), 1);
        assert!(store.product_detail(&ids[1]).await.unwrap().is_none());
    }
}
