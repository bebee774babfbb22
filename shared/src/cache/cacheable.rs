//! Which version the L2 guard compares for each cached domain type, and what each holds on
//! the heap (the L1's memory bound).

use super::Cacheable;
use crate::model::{Offer, PeriodStats, Product, ProductDetail, RankedFeed};

fn product_heap(p: &Product) -> usize {
    p.id.as_str().len() + p.name.capacity() + p.description.capacity() + p.category.capacity()
}

fn offer_heap(o: &Offer) -> usize {
    o.id.as_str().len() + o.product_id.as_str().len()
}

/// A product with its offers changes when the product or any offer is written. Every write
/// increments exactly one of those versions and offers are never deleted (expired and
/// cancelled are statuses), so their sum only grows: a sound version for the whole partition.
impl Cacheable for ProductDetail {
    fn cache_version(&self) -> u64 {
        self.offers
            .iter()
            .fold(self.product.version, |sum, o| sum.saturating_add(o.version))
    }

    fn heap_bytes(&self) -> usize {
        product_heap(&self.product)
            + self.offers.capacity() * std::mem::size_of::<Offer>()
            + self.offers.iter().map(offer_heap).sum::<usize>()
    }
}

impl Cacheable for Product {
    fn cache_version(&self) -> u64 {
        self.version
    }

    fn heap_bytes(&self) -> usize {
        product_heap(self)
    }
}

/// Stats are recomputed, never edited: the computation time orders them.
impl Cacheable for PeriodStats {
    fn cache_version(&self) -> u64 {
        u64::try_from(self.computed_at).unwrap_or(0)
    }

    fn heap_bytes(&self) -> usize {
        0
    }
}

/// Rankings too.
impl Cacheable for RankedFeed {
    fn cache_version(&self) -> u64 {
        u64::try_from(self.computed_at).unwrap_or(0)
    }

    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<crate::model::ProductId>()
            + self.ids.iter().map(|id| id.as_str().len()).sum::<usize>()
    }
}
