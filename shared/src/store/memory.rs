//! In-process adapter for every store port: the same semantics as DynamoDB (conditional writes,
//! batch reads of any size, idempotent view events, last-run ordering) without a network, for
//! unit tests and the embedded dev mode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::dynamo::items::{
    OFFER_REF_SK, OfferItem, OfferRefItem, PRODUCT_SK, ProductItem, ViewItem, expiry_shard,
    offer_ref_pk, offer_sk, product_pk,
};
use super::stream::{Change, ChangeKind, MemoryStream, MemoryStreams};
use super::{
    CounterMark, ExpiryIndex, JobLeases, OfferExpirer, OfferReader, OfferWriter, ProductLister,
    ProductReader, ProductWriter, StatsReader, StatsWriter, ViewCounters, ViewRecorder,
};
use crate::error::{Error, ExpectedVersion, Result};
use crate::model::{
    CounterBucket, EpochMillis, EventId, ExpiringOffer, FeedKind, JobRun, Lease, Offer, OfferId,
    OfferStatus, PeriodStats, Product, ProductDetail, ProductId, RankedFeed, RunOutcome, ViewEvent,
};

/// One product partition: the product item and its offers, like the catalog table's layout.
#[derive(Debug, Default, Clone)]
struct Partition {
    product: Option<Product>,
    offers: BTreeMap<OfferId, Offer>,
}

#[derive(Debug, Default)]
struct Tables {
    catalog: BTreeMap<ProductId, Partition>,
    offer_products: HashMap<OfferId, ProductId>,
    views: HashMap<EventId, ViewEvent>,
    counters: BTreeMap<(ProductId, CounterBucket), u64>,
    /// Stream marks on counter items: (product, bucket, shard) to sequence number.
    counter_marks: HashMap<(ProductId, CounterBucket, String), String>,
    period_stats: HashMap<ProductId, PeriodStats>,
    feeds: HashMap<FeedKind, RankedFeed>,
    last_runs: BTreeMap<String, JobRun>,
    history: BTreeMap<(String, EpochMillis), JobRun>,
    cursors: HashMap<String, String>,
    leases: HashMap<String, Lease>,
}

/// Every table held in memory.
///
/// ## Behavior
/// - One lock, taken only to copy data in or out, never across an `.await`.
/// - Writes check versions exactly as the DynamoDB condition expressions do.
/// - [`MemoryStore::set_unavailable`] makes every call fail as a DynamoDB outage would.
/// - Built with [`MemoryStore::streaming`], every write to the catalog and views tables
///   appends its stream record (same item layout as the DynamoDB adapter), under the same
///   lock, so stream order is write order.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    unavailable: AtomicBool,
    streams: Option<MemoryStreams>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// An empty store whose writes feed these streams.
    pub fn streaming(streams: MemoryStreams) -> Self {
        MemoryStore {
            streams: Some(streams),
            ..MemoryStore::default()
        }
    }

    /// The streams this store feeds, if any.
    pub fn streams(&self) -> Option<&MemoryStreams> {
        self.streams.as_ref()
    }

    /// Appends a catalog write to the catalog stream (when streaming).
    fn emit_catalog<T: serde::Serialize>(
        &self,
        pk: &str,
        sk: &str,
        old: Option<&T>,
        new: Option<&T>,
    ) {
        if let Some(streams) = &self.streams {
            emit(&streams.catalog, &[("pk", pk), ("sk", sk)], old, new);
        }
    }

    /// Number of view events stored.
    pub fn view_count(&self) -> usize {
        self.tables().views.len()
    }

    /// While `true`, every call fails with a retryable error, as during a DynamoDB outage.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tables for one call, or the injected outage.
    fn lock(&self) -> Result<MutexGuard<'_, Tables>> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Error::Dynamo {
                op: "memory store",
                retryable: true,
                source: "injected outage".into(),
            });
        }
        Ok(self.tables())
    }
}

/// Appends one write to `stream`: its key attributes (the first is the partition key) and
/// its images, encoded as DynamoDB items exactly as the DynamoDB adapter stores them.
fn emit<T: serde::Serialize>(
    stream: &MemoryStream,
    keys: &[(&str, &str)],
    old: Option<&T>,
    new: Option<&T>,
) {
    let image = |value: Option<&T>| value.and_then(|v| serde_dynamo::to_item(v).ok());
    let key_map: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).into()))
        .collect();
    let Ok(key_item) = serde_dynamo::to_item(serde_json::Value::Object(key_map)) else {
        return;
    };
    let kind = match (old.is_some(), new.is_some()) {
        (false, _) => ChangeKind::Insert,
        (true, true) => ChangeKind::Modify,
        (true, false) => ChangeKind::Remove,
    };
    stream.record(Change {
        kind,
        keys: key_item,
        old: image(old),
        new: image(new),
        partition: keys
            .first()
            .map_or_else(String::new, |(_, v)| (*v).to_owned()),
        at: None,
    });
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
        let tables = self.lock()?;
        Ok(tables.catalog.get(id).and_then(|partition| {
            partition.product.clone().map(|product| ProductDetail {
                product,
                offers: partition.offers.values().cloned().collect(),
            })
        }))
    }

    async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>> {
        let tables = self.lock()?;
        let unique: BTreeSet<&ProductId> = ids.iter().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| tables.catalog.get(id)?.product.clone())
            .collect())
    }
}

#[async_trait]
impl ProductLister for MemoryStore {
    async fn list_products(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Product>, Option<String>)> {
        let tables = self.lock()?;
        let after = cursor.map(str::to_owned);
        let mut page: Vec<Product> = tables
            .catalog
            .iter()
            .filter(|(id, _)| after.as_deref().is_none_or(|a| id.as_str() > a))
            .filter_map(|(_, p)| p.product.clone())
            .take(limit.max(1) + 1)
            .collect();
        let next = if page.len() > limit.max(1) {
            page.pop();
            page.last().map(|p| p.id.to_string())
        } else {
            None
        };
        Ok((page, next))
    }
}

#[async_trait]
impl ProductWriter for MemoryStore {
    async fn put_product(&self, product: &Product, expected: ExpectedVersion) -> Result<Product> {
        product.validate()?;
        let mut tables = self.lock()?;
        let stored_version = tables
            .catalog
            .get(&product.id)
            .and_then(|p| p.product.as_ref())
            .map(|p| p.version);
        check_version(stored_version, expected, "product", product.id.as_str())?;
        let stored = Product {
            version: expected.next(),
            ..product.clone()
        };
        let previous = tables
            .catalog
            .entry(product.id.clone())
            .or_default()
            .product
            .replace(stored.clone());
        self.emit_catalog(
            &product_pk(&stored.id),
            PRODUCT_SK,
            previous.as_ref().map(ProductItem::from).as_ref(),
            Some(&ProductItem::from(&stored)),
        );
        Ok(stored)
    }
}

#[async_trait]
impl OfferReader for MemoryStore {
    async fn offer(&self, id: &OfferId) -> Result<Option<Offer>> {
        let tables = self.lock()?;
        Ok(tables
            .offer_products
            .get(id)
            .and_then(|product| tables.catalog.get(product)?.offers.get(id).cloned()))
    }

    async fn offers(&self, keys: &[(ProductId, OfferId)]) -> Result<Vec<Offer>> {
        let tables = self.lock()?;
        let unique: BTreeSet<&(ProductId, OfferId)> = keys.iter().collect();
        Ok(unique
            .into_iter()
            .filter_map(|(product, offer)| tables.catalog.get(product)?.offers.get(offer).cloned())
            .collect())
    }
}

#[async_trait]
impl OfferExpirer for MemoryStore {
    async fn expire_offer(
        &self,
        product: &ProductId,
        offer: &OfferId,
        version: u64,
        now: EpochMillis,
    ) -> Result<bool> {
        let mut tables = self.lock()?;
        let Some(stored) = tables
            .catalog
            .get_mut(product)
            .and_then(|p| p.offers.get_mut(offer))
        else {
            return Ok(false);
        };
        if stored.status != OfferStatus::Active
            || stored.expires_at > now
            || stored.version != version
        {
            return Ok(false);
        }
        let before = OfferItem::from(&*stored);
        stored.status = OfferStatus::Expired;
        stored.version = version.saturating_add(1);
        stored.updated_at = now;
        let after = OfferItem::from(&*stored);
        self.emit_catalog(&before.pk, &before.sk, Some(&before), Some(&after));
        Ok(true)
    }
}

#[async_trait]
impl OfferWriter for MemoryStore {
    async fn put_offer(&self, offer: &Offer, expected: ExpectedVersion) -> Result<Offer> {
        offer.validate()?;
        let mut tables = self.lock()?;
        let product_exists = tables
            .catalog
            .get(&offer.product_id)
            .is_some_and(|p| p.product.is_some());
        if expected == ExpectedVersion::Absent && !product_exists {
            return Err(Error::NotFound {
                entity: "product",
                id: offer.product_id.to_string(),
            });
        }
        let stored_version = match tables.offer_products.get(&offer.id) {
            Some(product) => tables
                .catalog
                .get(product)
                .and_then(|p| p.offers.get(&offer.id))
                .map(|o| o.version),
            None => None,
        };
        check_version(stored_version, expected, "offer", offer.id.as_str())?;
        let stored = Offer {
            version: expected.next(),
            ..offer.clone()
        };
        let created = tables
            .offer_products
            .insert(stored.id.clone(), stored.product_id.clone())
            .is_none();
        let previous = tables
            .catalog
            .entry(stored.product_id.clone())
            .or_default()
            .offers
            .insert(stored.id.clone(), stored.clone());
        let pk = product_pk(&stored.product_id);
        self.emit_catalog(
            &pk,
            &offer_sk(&stored.id),
            previous.as_ref().map(OfferItem::from).as_ref(),
            Some(&OfferItem::from(&stored)),
        );
        if created {
            // The offer-id lookup item, written in the same transaction on DynamoDB.
            let reference = OfferRefItem {
                pk: offer_ref_pk(&stored.id),
                sk: OFFER_REF_SK.to_owned(),
                product_id: stored.product_id.clone(),
            };
            self.emit_catalog(&reference.pk, OFFER_REF_SK, None, Some(&reference));
        }
        Ok(stored)
    }
}

#[async_trait]
impl ExpiryIndex for MemoryStore {
    async fn expiring(&self, until: EpochMillis, limit: usize) -> Result<Vec<ExpiringOffer>> {
        let tables = self.lock()?;
        let mut due: Vec<ExpiringOffer> = tables
            .catalog
            .values()
            .flat_map(|p| p.offers.values())
            .filter(|o| o.status == OfferStatus::Active && o.expires_at <= until)
            .map(|o| ExpiringOffer {
                offer_id: o.id.clone(),
                product_id: o.product_id.clone(),
                expires_at: o.expires_at,
                version: Some(o.version),
            })
            .collect();
        due.sort_by_key(|o| (o.expires_at, o.offer_id.clone()));
        due.truncate(limit);
        Ok(due)
    }

    async fn oldest_due(&self, until: EpochMillis) -> Result<Vec<ExpiringOffer>> {
        let mut oldest: BTreeMap<String, ExpiringOffer> = BTreeMap::new();
        for offer in self.expiring(until, usize::MAX).await? {
            oldest.entry(expiry_shard(&offer.offer_id)).or_insert(offer);
        }
        Ok(oldest.into_values().collect())
    }
}

#[async_trait]
impl ViewRecorder for MemoryStore {
    async fn record_view(&self, event: &ViewEvent) -> Result<bool> {
        event.validate()?;
        let mut tables = self.lock()?;
        if tables.views.contains_key(&event.event_id) {
            return Ok(false);
        }
        tables.views.insert(event.event_id.clone(), event.clone());
        if let Some(streams) = &self.streams {
            let key = [("event_id", event.event_id.as_str())];
            emit(&streams.views, &key, None, Some(&ViewItem::from(event)));
        }
        Ok(true)
    }
}

#[async_trait]
impl ViewCounters for MemoryStore {
    async fn add_views(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
    ) -> Result<()> {
        *self
            .lock()?
            .counters
            .entry((product.clone(), bucket))
            .or_default() += count;
        Ok(())
    }

    async fn add_views_once(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
        mark: &CounterMark<'_>,
    ) -> Result<bool> {
        let mut tables = self.lock()?;
        let key = (product.clone(), bucket, mark.shard.to_owned());
        if !mark
            .condition
            .admits(tables.counter_marks.get(&key).map(String::as_str))
        {
            return Ok(false);
        }
        tables.counter_marks.insert(key, mark.through.to_owned());
        *tables
            .counters
            .entry((product.clone(), bucket))
            .or_default() += count;
        Ok(true)
    }

    async fn counter_mark(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        shard: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .lock()?
            .counter_marks
            .get(&(product.clone(), bucket, shard.to_owned()))
            .cloned())
    }

    async fn view_counters(&self, product: &ProductId) -> Result<Vec<(CounterBucket, u64)>> {
        // Keys sort by product, then hours before days: one contiguous range per product.
        let tables = self.lock()?;
        Ok(tables
            .counters
            .range((product.clone(), CounterBucket::Hour(i64::MIN))..)
            .take_while(|((p, _), _)| p == product)
            .map(|((_, bucket), count)| (*bucket, *count))
            .collect())
    }
}

#[async_trait]
impl StatsReader for MemoryStore {
    async fn period_stats(&self, product: &ProductId) -> Result<Option<PeriodStats>> {
        Ok(self.lock()?.period_stats.get(product).cloned())
    }

    async fn feed(&self, kind: FeedKind) -> Result<Option<RankedFeed>> {
        Ok(self.lock()?.feeds.get(&kind).cloned())
    }

    async fn last_runs(&self) -> Result<Vec<JobRun>> {
        Ok(self.lock()?.last_runs.values().cloned().collect())
    }

    async fn run_history(&self, job: &str, limit: usize) -> Result<Vec<JobRun>> {
        let tables = self.lock()?;
        Ok(tables
            .history
            .iter()
            .rev()
            .filter(|((j, _), _)| j == job)
            .take(limit)
            .map(|(_, run)| run.clone())
            .collect())
    }

    async fn cursor(&self, job: &str) -> Result<Option<String>> {
        Ok(self.lock()?.cursors.get(job).cloned())
    }
}

#[async_trait]
impl StatsWriter for MemoryStore {
    async fn put_period_stats(&self, product: &ProductId, stats: &PeriodStats) -> Result<()> {
        self.lock()?
            .period_stats
            .insert(product.clone(), stats.clone());
        Ok(())
    }

    async fn put_feed(&self, feed: &RankedFeed) -> Result<()> {
        self.lock()?.feeds.insert(feed.kind, feed.clone());
        Ok(())
    }

    async fn record_run(&self, run: &JobRun) -> Result<()> {
        let mut tables = self.lock()?;
        tables
            .history
            .insert((run.job.clone(), run.started_at), run.clone());
        if run.outcome == RunOutcome::Skipped {
            return Ok(());
        }
        let newer_recorded = tables
            .last_runs
            .get(&run.job)
            .is_some_and(|last| last.started_at > run.started_at);
        if !newer_recorded {
            tables.last_runs.insert(run.job.clone(), run.clone());
        }
        Ok(())
    }

    async fn set_cursor(&self, job: &str, cursor: Option<&str>) -> Result<()> {
        let mut tables = self.lock()?;
        match cursor {
            Some(c) => tables.cursors.insert(job.to_owned(), c.to_owned()),
            None => tables.cursors.remove(job),
        };
        Ok(())
    }
}

#[async_trait]
impl JobLeases for MemoryStore {
    async fn acquire_lease(
        &self,
        job: &str,
        holder: &str,
        now: EpochMillis,
        until: EpochMillis,
    ) -> Result<Option<Lease>> {
        let mut tables = self.lock()?;
        let fence = match tables.leases.get(job) {
            Some(current) if current.until > now => return Ok(None),
            Some(current) => current.fence + 1,
            None => 1,
        };
        let lease = Lease {
            job: job.to_owned(),
            holder: holder.to_owned(),
            fence,
            until,
        };
        tables.leases.insert(job.to_owned(), lease.clone());
        Ok(Some(lease))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut tables = self.lock()?;
        if let Some(current) = tables.leases.get_mut(&lease.job)
            && current.holder == lease.holder
            && current.fence == lease.fence
        {
            current.until = EpochMillis::MIN;
        }
        Ok(())
    }
}

/// The memory store is loaded through its ordinary writes (it is always fresh when seeded).
#[async_trait]
impl crate::store::BulkLoader for MemoryStore {
    async fn load(&self, catalog: crate::store::BulkCatalog<'_>) -> Result<()> {
        use crate::store::{OfferWriter, ProductWriter, ViewCounters};
        for product in catalog.products {
            self.put_product(product, ExpectedVersion::Absent).await?;
        }
        for offer in catalog.offers {
            self.put_offer(offer, ExpectedVersion::Absent).await?;
        }
        for (product, bucket, views) in catalog.counters {
            self.add_views(product, *bucket, *views).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Currency, Money};

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

    fn offer(product: &str, id: &str) -> Offer {
        Offer {
            id: OfferId::parse(id).unwrap(),
            product_id: ProductId::parse(product).unwrap(),
            status: OfferStatus::Active,
            price: Money::new(50, Currency::parse("EUR").unwrap()),
            expires_at: 1_800_000_000_000,
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
    async fn offers_need_their_product_and_are_found_by_id() {
        let store = MemoryStore::new();
        let err = store
            .put_offer(&offer("a", "o1"), ExpectedVersion::Absent)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::NotFound {
                entity: "product",
                ..
            }
        ));
        store
            .put_product(&product("a"), ExpectedVersion::Absent)
            .await
            .unwrap();
        store
            .put_offer(&offer("a", "o1"), ExpectedVersion::Absent)
            .await
            .unwrap();
        let found = store
            .offer(&OfferId::parse("o1").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.product_id.as_str(), "a");
        let detail = store
            .product_detail(&ProductId::parse("a").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail.offers.len(), 1);
        assert_eq!(
            store.expiring(1_800_000_000_000, 10).await.unwrap().len(),
            1
        );
        assert!(
            store
                .expiring(1_799_999_999_999, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn listing_pages_through_every_product() {
        let store = MemoryStore::new();
        for i in 0..7 {
            store
                .put_product(&product(&format!("p{i}")), ExpectedVersion::Absent)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = store.list_products(cursor.as_deref(), 3).await.unwrap();
            seen.extend(page.into_iter().map(|p| p.id.to_string()));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
    }

    #[tokio::test]
    async fn an_older_run_never_replaces_a_newer_last_run() {
        let store = MemoryStore::new();
        let run = |started_at| JobRun::new("refresh", started_at, RunOutcome::Succeeded);
        store.record_run(&run(2_000)).await.unwrap();
        store.record_run(&run(1_000)).await.unwrap();
        assert_eq!(store.last_runs().await.unwrap()[0].started_at, 2_000);
        assert_eq!(store.run_history("refresh", 10).await.unwrap().len(), 2);
    }
}
