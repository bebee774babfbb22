//! Storage ports (one small trait per capability) and their adapters.
//!
//! Handlers take only the ports they need, mirroring the IAM policy of their function.
//! [`dynamo::DynamoStore`] is the real adapter; [`memory::MemoryStore`] has the same
//! semantics in process, for unit tests and the embedded dev mode, and can emit the tables'
//! streams ([`stream::MemoryStream`]); [`latency::LatencyShim`] models DynamoDB's latency over
//! the in-memory store for benchmarks.

pub mod dynamo;
pub mod latency;
pub mod memory;
pub mod stream;

use async_trait::async_trait;

use crate::error::{ExpectedVersion, Result};
use crate::model::{
    CounterBucket, EpochMillis, ExpiringOffer, FeedKind, JobRun, Lease, Offer, OfferId,
    PeriodStats, Product, ProductDetail, ProductId, RankedFeed, ViewEvent,
};

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

/// Lists every product, in pages (jobs that walk the catalog).
#[async_trait]
pub trait ProductLister: Send + Sync {
    /// Up to about `limit` products starting at `cursor` (`None`: the beginning), in a stable
    /// order, and the cursor of the next page (`None` at the end). Cursors are opaque.
    async fn list_products(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Product>, Option<String>)>;
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

/// Reads offers by their own id.
#[async_trait]
pub trait OfferReader: Send + Sync {
    /// The offer, or `None` if no offer has that id.
    async fn offer(&self, id: &OfferId) -> Result<Option<Offer>>;

    /// The offers stored under these (product, offer) keys, read consistently (BatchGetItem in
    /// chunks of 100); keys with no offer are left out, and the order is not kept.
    async fn offers(&self, keys: &[(ProductId, OfferId)]) -> Result<Vec<Offer>>;
}

/// Writes offers with optimistic concurrency.
#[async_trait]
pub trait OfferWriter: Send + Sync {
    /// Stores `offer` if its stored version matches `expected`; same contract as
    /// [`ProductWriter::put_product`]. Creating an offer (`Absent`) requires its product to
    /// exist ([`crate::Error::NotFound`] otherwise) and an unused offer id. Active offers are
    /// indexed by expiry; others are not.
    async fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer>;
}

/// Expires offers (the offer-expiry job's only write).
#[async_trait]
pub trait OfferExpirer: Send + Sync {
    /// Marks an offer expired at `now` with one conditional write: only if it is still
    /// active, still due (`expires_at <= now`) and still at `version`. The write also drops
    /// the offer from the expiry index. Returns false, changing nothing, when the condition
    /// fails (the offer was extended, cancelled, expired or rewritten meanwhile, or is gone).
    async fn expire_offer(
        &self,
        product: &ProductId,
        offer: &OfferId,
        version: u64,
        now: EpochMillis,
    ) -> Result<bool>;
}

/// The index of active offers by expiry.
#[async_trait]
pub trait ExpiryIndex: Send + Sync {
    /// Active offers expiring at or before `until`, soonest first, at most `limit`, with
    /// the version the index saw. Every shard of the index is read, every page followed (up
    /// to `limit` per shard). The index is eventually consistent: a write made a moment ago
    /// may not show yet, so callers confirm against the table before acting.
    async fn expiring(&self, until: EpochMillis, limit: usize) -> Result<Vec<ExpiringOffer>>;

    /// The oldest offer due by `until` in each shard of the index (one small query per shard):
    /// a cheap check that a faster list of due offers missed nothing.
    async fn oldest_due(&self, until: EpochMillis) -> Result<Vec<ExpiringOffer>>;
}

/// Records product views.
#[async_trait]
pub trait ViewRecorder: Send + Sync {
    /// Stores a view event. Returns false if an event with this id was already stored
    /// (a retried request), which is not an error.
    async fn record_view(&self, event: &ViewEvent) -> Result<bool>;
}

/// Hourly and daily view counters per product.
#[async_trait]
pub trait ViewCounters: Send + Sync {
    /// Adds `count` views to a product's bucket.
    async fn add_views(&self, product: &ProductId, bucket: CounterBucket, count: u64)
    -> Result<()>;

    /// Adds `count` views to a product's bucket at most once per stream position: one
    /// conditional update that also moves the shard's mark on the counter item to
    /// `mark.through`, applied only if the mark passes `mark.condition`. Returns false,
    /// changing nothing, when it does not (the views were already counted).
    async fn add_views_once(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
        mark: &CounterMark<'_>,
    ) -> Result<bool>;

    /// A shard's mark on a counter item: the last stream position it counted there.
    async fn counter_mark(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        shard: &str,
    ) -> Result<Option<String>>;

    /// Every counter bucket the product has (at most ~2 days of hours and ~1 month of days).
    async fn view_counters(&self, product: &ProductId) -> Result<Vec<(CounterBucket, u64)>>;
}

/// Where a stream consumer is in one shard, written on each counter it updates: stream
/// sequence numbers only grow within a shard, so an update whose records all come at or
/// before the mark has already been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterMark<'a> {
    /// The shard, as an attribute-safe key (see `streams::shard_key`).
    pub shard: &'a str,
    /// When the update may apply.
    pub condition: MarkCondition<'a>,
    /// The mark after the update: the last sequence number the update counts.
    pub through: &'a str,
}

/// The condition on a shard's mark (sequence numbers padded to 40 digits, so string order is
/// numeric order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkCondition<'a> {
    /// No mark yet, or a mark before this sequence number (the update's first record).
    Before(&'a str),
    /// Exactly this mark (a compare-and-set after reading it).
    Exactly(&'a str),
}

impl MarkCondition<'_> {
    /// Whether a stored mark lets the update through.
    pub fn admits(&self, stored: Option<&str>) -> bool {
        match (self, stored) {
            (MarkCondition::Before(_), None) => true,
            (MarkCondition::Before(first), Some(mark)) => mark < *first,
            (MarkCondition::Exactly(expected), stored) => stored == Some(*expected),
        }
    }
}

/// Reads precomputed stats, feeds and job metadata.
#[async_trait]
pub trait StatsReader: Send + Sync {
    /// A product's period stats as last computed, if any.
    async fn period_stats(&self, product: &ProductId) -> Result<Option<PeriodStats>>;

    /// A feed's ranking as last computed, if any.
    async fn feed(&self, kind: FeedKind) -> Result<Option<RankedFeed>>;

    /// The last run of every job that has run.
    async fn last_runs(&self) -> Result<Vec<JobRun>>;

    /// A job's most recent runs, newest first.
    async fn run_history(&self, job: &str, limit: usize) -> Result<Vec<JobRun>>;

    /// Where a job should resume, if a previous run left a cursor.
    async fn cursor(&self, job: &str) -> Result<Option<String>>;
}

/// Writes precomputed stats, feeds and job metadata.
#[async_trait]
pub trait StatsWriter: Send + Sync {
    /// Stores a product's period stats.
    async fn put_period_stats(&self, product: &ProductId, stats: &PeriodStats) -> Result<()>;

    /// Stores a feed's ranking.
    async fn put_feed(&self, feed: &RankedFeed) -> Result<()>;

    /// Appends a run to the job's history and makes it the job's last run, unless a run that
    /// started later is already recorded (two runs at once never leave the older one as last).
    /// A skipped run goes to the history only: it must not hide the run that held the lease.
    async fn record_run(&self, run: &JobRun) -> Result<()>;

    /// Sets or clears where the job resumes.
    async fn set_cursor(&self, job: &str, cursor: Option<&str>) -> Result<()>;
}

/// Leases that keep two runs of one job from working at the same time.
#[async_trait]
pub trait JobLeases: Send + Sync {
    /// Takes `job`'s lease for `holder` until `until`, if nobody holds it or the holder's
    /// lease lapsed before `now`. `None` if another holder has it.
    async fn acquire_lease(
        &self,
        job: &str,
        holder: &str,
        now: EpochMillis,
        until: EpochMillis,
    ) -> Result<Option<Lease>>;

    /// Gives the lease back, if `lease` still holds it (a lapsed lease that another run took
    /// over is left alone).
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
}

/// A fresh catalog written in bulk (the demo seed, imports): what it holds, unconditionally.
pub struct BulkCatalog<'a> {
    /// Products, written at version 1.
    pub products: &'a [Product],
    /// Their offers, written at version 1 (with their offer-id references).
    pub offers: &'a [Offer],
    /// View counters to set: (product, bucket, views).
    pub counters: &'a [(ProductId, CounterBucket, u64)],
}

/// Writes a fresh catalog in bulk.
#[async_trait]
pub trait BulkLoader: Send + Sync {
    /// Puts every item, overwriting what is there. Items are validated first; nothing is
    /// written if one is invalid.
    async fn load(&self, catalog: BulkCatalog<'_>) -> Result<()>;
}

/// Everything the catalog offers; both adapters implement it.
pub trait CatalogStore:
    ProductReader
    + ProductLister
    + ProductWriter
    + OfferReader
    + OfferWriter
    + OfferExpirer
    + ExpiryIndex
{
}

impl<T> CatalogStore for T where
    T: ProductReader
        + ProductLister
        + ProductWriter
        + OfferReader
        + OfferWriter
        + OfferExpirer
        + ExpiryIndex
{
}

/// Everything the stats table offers; both adapters implement it.
pub trait StatsStore: ViewCounters + StatsReader + StatsWriter + JobLeases {}

impl<T> StatsStore for T where T: ViewCounters + StatsReader + StatsWriter + JobLeases {}
