//! A store wrapper that adds a fixed latency to every call and counts calls: how benchmarks
//! model DynamoDB on top of the in-memory store (moto is correct but far too slow to time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{OfferWriter, ProductReader, ProductWriter};
use crate::error::{ExpectedVersion, Result};
use crate::model::{Offer, Product, ProductDetail, ProductId};

/// Wraps a store; every call sleeps `per_call` first and is counted.
#[derive(Debug)]
pub struct LatencyShim<S> {
    inner: S,
    per_call: Duration,
    calls: AtomicU64,
}

impl<S> LatencyShim<S> {
    /// `inner` behind `per_call` of latency (4 ms models a DynamoDB call from Lambda).
    pub fn new(inner: S, per_call: Duration) -> Self {
        LatencyShim {
            inner,
            per_call,
            calls: AtomicU64::new(0),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn delay(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.per_call.is_zero() {
            tokio::time::sleep(self.per_call).await;
        }
    }
}

#[async_trait]
impl<S: ProductReader> ProductReader for LatencyShim<S> {
    async fn product_detail(&self, id: &ProductId) -> Result<Option<ProductDetail>> {
        self.delay().await;
        self.inner.product_detail(id).await
    }

    async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>> {
        self.delay().await;
        self.inner.products(ids).await
    }
}

#[async_trait]
impl<S: ProductWriter> ProductWriter for LatencyShim<S> {
    async fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product> {
        self.delay().await;
        self.inner.put_product(product, expected).await
    }
}

#[async_trait]
impl<S: OfferWriter> OfferWriter for LatencyShim<S> {
    async fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer> {
        self.delay().await;
        self.inner.put_offer(offer, expected).await
    }
}
