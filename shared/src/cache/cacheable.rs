//! Which version the L2 guard compares for each cached domain type.

use super::Cacheable;
use crate::model::{PeriodStats, Product, ProductDetail, RankedFeed};

/// A product with its offers changes when the product or any offer is written. Every write
/// increments exactly one of those versions and offers are never deleted (expired and
/// cancelled are statuses), so their sum only grows: a sound version for the whole partition.
impl Cacheable for ProductDetail {
    fn cache_version(&self) -> u64 {
        self.offers
            .iter()
            .fold(self.product.version, |sum, o| sum.saturating_add(o.version))
    }
}

impl Cacheable for Product {
    fn cache_version(&self) -> u64 {
        self.version
    }
}

/// Stats are recomputed, never edited: the computation time orders them.
impl Cacheable for PeriodStats {
    fn cache_version(&self) -> u64 {
        u64::try_from(self.computed_at).unwrap_or(0)
    }
}

/// Rankings too.
impl Cacheable for RankedFeed {
    fn cache_version(&self) -> u64 {
        u64::try_from(self.computed_at).unwrap_or(0)
    }
}
