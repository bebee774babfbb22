//! A store wrapper that adds a fixed latency to every call and counts calls: how benchmarks
//! model DynamoDB on top of the in-memory store (moto is correct but far too slow to time).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    ExpiryIndex, OfferReader, OfferWriter, ProductLister, ProductReader, ProductWriter,
    StatsReader, StatsWriter, ViewCounters, ViewRecorder,
};
use crate::error::{ExpectedVersion, Result};
use crate::model::{
    CounterBucket, EpochMillis, ExpiringOffer, FeedKind, JobRun, Offer, OfferId, PeriodStats,
    Product, ProductDetail, ProductId, RankedFeed, ViewEvent,
};

/// Wraps a shared store; every call sleeps `per_call` first and is counted.
#[derive(Debug)]
pub struct LatencyShim<S: ?Sized> {
    inner: Arc<S>,
    per_call: Duration,
    calls: AtomicU64,
}

impl<S: ?Sized> LatencyShim<S> {
    /// `inner` behind `per_call` of latency (4 ms models a DynamoDB call from Lambda).
    pub fn new(inner: Arc<S>, per_call: Duration) -> Self {
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

/// Implements a port for the shim: each method waits, then delegates.
macro_rules! shim {
    ($port:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl<S: $port + ?Sized> $port for LatencyShim<S> {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.delay().await;
                self.inner.$name($($arg),*).await
            })*
        }
    };
}

shim!(ProductReader {
    fn product_detail(&self, id: &ProductId) -> Result<Option<ProductDetail>>;
    fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>>;
});
shim!(ProductLister {
    fn list_products(&self, cursor: Option<&str>, limit: usize) -> Result<(Vec<Product>, Option<String>)>;
});
shim!(ProductWriter {
    fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product>;
});
shim!(OfferReader {
    fn offer(&self, id: &OfferId) -> Result<Option<Offer>>;
});
shim!(OfferWriter {
    fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer>;
});
shim!(ExpiryIndex {
    fn expiring(&self, until: EpochMillis, limit: usize) -> Result<Vec<ExpiringOffer>>;
});
shim!(ViewRecorder {
    fn record_view(&self, event: &ViewEvent) -> Result<bool>;
});
shim!(ViewCounters {
    fn add_views(&self, product: &ProductId, bucket: CounterBucket, count: u64) -> Result<()>;
    fn view_counters(&self, product: &ProductId) -> Result<Vec<(CounterBucket, u64)>>;
});
shim!(StatsReader {
    fn period_stats(&self, product: &ProductId) -> Result<Option<PeriodStats>>;
    fn feed(&self, kind: FeedKind) -> Result<Option<RankedFeed>>;
    fn last_runs(&self) -> Result<Vec<JobRun>>;
    fn run_history(&self, job: &str, limit: usize) -> Result<Vec<JobRun>>;
    fn cursor(&self, job: &str) -> Result<Option<String>>;
});
shim!(StatsWriter {
    fn put_period_stats(&self, product: &ProductId, stats: &PeriodStats) -> Result<()>;
    fn put_feed(&self, feed: &RankedFeed) -> Result<()>;
    fn record_run(&self, run: &JobRun) -> Result<()>;
    fn set_cursor(&self, job: &str, cursor: Option<&str>) -> Result<()>;
});
