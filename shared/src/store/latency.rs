//! A store wrapper that adds a fixed latency to every call and counts calls: how benchmarks
//! model DynamoDB on top of the in-memory store (moto is correct but far too slow to time).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CounterMark, ExpiryIndex, JobLeases, OfferExpirer, OfferReader, OfferWriter, ProductLister,
    ProductReader, ProductWriter, StatsReader, StatsWriter, ViewCounters, ViewRecorder,
};
use crate::error::{ExpectedVersion, Result};
use crate::model::{
    CounterBucket, EpochMillis, ExpiringOffer, FeedKind, JobRun, Lease, Offer, OfferId,
    PeriodStats, Product, ProductDetail, ProductId, RankedFeed, ViewEvent,
};

/// Wraps a shared store; every call sleeps `per_call` first and is counted (writes also on
/// their own, for figures such as writes per expired offer). Writes can be made to fail from
/// a given one on, as a throttled or failing DynamoDB would fail them.
#[derive(Debug)]
pub struct LatencyShim<S: ?Sized> {
    inner: Arc<S>,
    per_call: Duration,
    calls: AtomicU64,
    writes: AtomicU64,
    /// Writes numbered from this one on fail (`u64::MAX`: none).
    fail_writes_from: AtomicU64,
    /// Whether reads fail (after their latency), as throttled or failing DynamoDB reads do.
    fail_reads: std::sync::atomic::AtomicBool,
    /// Calls per method name.
    by_method: std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
}

impl<S: ?Sized> LatencyShim<S> {
    /// `inner` behind `per_call` of latency (4 ms models a DynamoDB call from Lambda).
    pub fn new(inner: Arc<S>, per_call: Duration) -> Self {
        LatencyShim {
            inner,
            per_call,
            calls: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            fail_writes_from: AtomicU64::new(u64::MAX),
            fail_reads: std::sync::atomic::AtomicBool::new(false),
            by_method: std::sync::Mutex::default(),
        }
    }

    /// Calls made so far to one method of the ports (e.g. `add_views_once`).
    pub fn calls_of(&self, method: &str) -> u64 {
        self.by_method
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    fn note(&self, method: &'static str) {
        *self
            .by_method
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(method)
            .or_default() += 1;
    }

    /// Makes every write fail once `ok_first` more writes have succeeded (a retryable
    /// DynamoDB error), until [`LatencyShim::heal`].
    pub fn fail_writes_after(&self, ok_first: u64) {
        self.fail_writes_from
            .store(self.writes() + ok_first, Ordering::SeqCst);
    }

    /// Makes every read fail (a retryable DynamoDB error) until [`LatencyShim::heal`].
    pub fn fail_reads(&self) {
        self.fail_reads.store(true, Ordering::SeqCst);
    }

    /// Lets reads and writes succeed again.
    pub fn heal(&self) {
        self.fail_writes_from.store(u64::MAX, Ordering::SeqCst);
        self.fail_reads.store(false, Ordering::SeqCst);
    }

    /// Write calls made so far (a subset of [`LatencyShim::calls`]).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn delay(&self, write: bool) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.per_call.is_zero() {
            tokio::time::sleep(self.per_call).await;
        }
        if write
            && self.writes.fetch_add(1, Ordering::SeqCst)
                >= self.fail_writes_from.load(Ordering::SeqCst)
        {
            return Err(crate::Error::Dynamo {
                op: "write",
                retryable: true,
                source: "injected write failure".into(),
            });
        }
        if !write {
            self.read_fault()?;
        }
        Ok(())
    }

    fn read_fault(&self) -> Result<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(crate::Error::Dynamo {
                op: "read",
                retryable: true,
                source: "injected read failure".into(),
            });
        }
        Ok(())
    }
}

/// Implements a port for the shim: each method waits, then delegates. `read`/`write` says
/// which counter the call goes to.
macro_rules! shim {
    ($port:ident { $($kind:ident fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl<S: $port + ?Sized> $port for LatencyShim<S> {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.note(stringify!($name));
                self.delay(shim!(@write $kind)).await?;
                self.inner.$name($($arg),*).await
            })*
        }
    };
    (@write read) => { false };
    (@write write) => { true };
}

/// Round trips of a BatchGetItem read of `keys` keys, as the DynamoDB adapter makes it:
/// chunks of 100, four chunks in flight at once.
fn batch_rounds(keys: usize) -> u32 {
    u32::try_from(keys.div_ceil(super::BATCH_GET_LIMIT).div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

impl<S: ?Sized> LatencyShim<S> {
    /// One batch read of `keys` keys: one counted call, as long as the adapter's rounds take.
    async fn batch_delay(&self, keys: usize) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.per_call.is_zero() {
            tokio::time::sleep(self.per_call * batch_rounds(keys)).await;
        }
        self.read_fault()
    }
}

#[async_trait]
impl<S: ProductReader + ?Sized> ProductReader for LatencyShim<S> {
    async fn product_detail(&self, id: &ProductId) -> Result<Option<ProductDetail>> {
        self.delay(false).await?;
        self.inner.product_detail(id).await
    }

    async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>> {
        self.batch_delay(ids.len()).await?;
        self.inner.products(ids).await
    }
}
shim!(ProductLister {
    read fn list_products(&self, cursor: Option<&str>, limit: usize) -> Result<(Vec<Product>, Option<String>)>;
});
shim!(ProductWriter {
    write fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product>;
});
#[async_trait]
impl<S: OfferReader + ?Sized> OfferReader for LatencyShim<S> {
    async fn offer(&self, id: &OfferId) -> Result<Option<Offer>> {
        self.delay(false).await?;
        self.inner.offer(id).await
    }

    async fn offers(&self, keys: &[(ProductId, OfferId)]) -> Result<Vec<Offer>> {
        self.batch_delay(keys.len()).await?;
        self.inner.offers(keys).await
    }
}
shim!(OfferWriter {
    write fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer>;
});
shim!(OfferExpirer {
    write fn expire_offer(&self, product: &ProductId, offer: &OfferId, version: u64, now: EpochMillis) -> Result<bool>;
});
shim!(ExpiryIndex {
    read fn expiring(&self, until: EpochMillis, limit: usize) -> Result<Vec<ExpiringOffer>>;
    read fn oldest_due(&self, until: EpochMillis) -> Result<Vec<ExpiringOffer>>;
});
shim!(ViewRecorder {
    write fn record_view(&self, event: &ViewEvent) -> Result<bool>;
});
shim!(ViewCounters {
    write fn add_views(&self, product: &ProductId, bucket: CounterBucket, count: u64) -> Result<()>;
    write fn add_views_once(&self, product: &ProductId, bucket: CounterBucket, count: u64, mark: &CounterMark<'_>) -> Result<bool>;
    read fn counter_mark(&self, product: &ProductId, bucket: CounterBucket, shard: &str) -> Result<Option<String>>;
    read fn view_counters(&self, product: &ProductId) -> Result<Vec<(CounterBucket, u64)>>;
});
shim!(StatsReader {
    read fn period_stats(&self, product: &ProductId) -> Result<Option<PeriodStats>>;
    read fn feed(&self, kind: FeedKind) -> Result<Option<RankedFeed>>;
    read fn last_runs(&self) -> Result<Vec<JobRun>>;
    read fn run_history(&self, job: &str, limit: usize) -> Result<Vec<JobRun>>;
    read fn cursor(&self, job: &str) -> Result<Option<String>>;
});
shim!(StatsWriter {
    write fn put_period_stats(&self, product: &ProductId, stats: &PeriodStats) -> Result<()>;
    write fn put_feed(&self, feed: &RankedFeed) -> Result<()>;
    write fn record_run(&self, run: &JobRun) -> Result<()>;
    write fn set_cursor(&self, job: &str, cursor: Option<&str>) -> Result<()>;
});
shim!(JobLeases {
    write fn acquire_lease(&self, job: &str, holder: &str, now: EpochMillis, until: EpochMillis) -> Result<Option<Lease>>;
    write fn release_lease(&self, lease: &Lease) -> Result<()>;
});
