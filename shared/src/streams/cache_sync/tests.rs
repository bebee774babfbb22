//! Cache-sync over the in-memory adapters, fed the records the in-memory catalog stream
//! emits (and hand-made ones for what the store never writes: deletes, poison).

use std::sync::Arc;

use aws_lambda_events::dynamodb::EventRecord;
use serde_json::{Value, json};

use super::*;
use crate::cache::l2::L2Store;
use crate::cache::l2::memory::MemoryL2;
use crate::cache::{CacheOptions, PutOutcome, Source};
use crate::clock::{Clock, SystemClock};
use crate::error::ExpectedVersion;
use crate::expiry_set::SetState;
use crate::model::{Currency, Money, OfferId, ProductDetail};
use crate::store::memory::MemoryStore;
use crate::store::stream::{Change as StreamChange, ChangeKind, MemoryStreams};
use crate::store::{OfferExpirer, OfferWriter, ProductReader, ProductWriter};

struct Fixture {
    store: Arc<MemoryStore>,
    l2: Arc<MemoryL2>,
    cache: Cache,
    streams: MemoryStreams,
    /// Records already handed to the function.
    seen: std::sync::atomic::AtomicUsize,
}

fn pid(id: &str) -> ProductId {
    ProductId::parse(id).unwrap()
}

fn product(id: &str, name: &str, active: bool) -> Product {
    let now = SystemClock.now_ms();
    Product {
        id: pid(id),
        name: name.into(),
        description: String::new(),
        category: "misc".into(),
        price: Money::new(100, Currency::parse("EUR").unwrap()),
        active,
        created_at: now - 1000,
        updated_at: now,
        version: 0,
    }
}

fn offer(product: &str, id: &str, expires_at: i64) -> Offer {
    let now = SystemClock.now_ms();
    Offer {
        id: OfferId::parse(id).unwrap(),
        product_id: pid(product),
        status: OfferStatus::Active,
        price: Money::new(90, Currency::parse("EUR").unwrap()),
        expires_at,
        created_at: now,
        updated_at: now,
        version: 0,
    }
}

impl Fixture {
    fn new() -> Fixture {
        let streams = MemoryStreams::new(1, 1);
        let l2 = Arc::new(MemoryL2::new());
        Fixture {
            store: Arc::new(MemoryStore::streaming(streams.clone())),
            cache: Cache::new(
                CacheOptions::default(),
                Some(l2.clone() as Arc<dyn L2Store>),
                Arc::new(SystemClock),
            ),
            l2,
            streams,
            seen: Default::default(),
        }
    }

    /// The records written since the last call.
    fn new_records(&self) -> Vec<EventRecord> {
        let catalog = &self.streams.catalog;
        let all = catalog.read(&catalog.shard_ids()[0], None, usize::MAX);
        let seen = self
            .seen
            .swap(all.len(), std::sync::atomic::Ordering::SeqCst);
        all[seen..].to_vec()
    }

    async fn sync(&self, records: &[EventRecord]) -> (DynamoDbEventResponse, SyncCounts) {
        handle(raw(&json!({ "Records": records })), &self.cache)
            .await
            .unwrap()
    }

    /// A second process's cache on the same L2, with L1 off: what another API instance
    /// reads.
    fn reader(&self) -> Cache {
        Cache::new(
            CacheOptions {
                l1_max_bytes: 0,
                ..CacheOptions::default()
            },
            Some(self.l2.clone() as Arc<dyn L2Store>),
            Arc::new(SystemClock),
        )
    }

    async fn summary(&self, id: &str) -> (Source, Option<Product>) {
        let catalog: Arc<dyn ProductReader> = self.store.clone();
        let mut lookup = crate::reads::summaries(&self.reader(), &catalog, &[pid(id)])
            .await
            .unwrap();
        let item = lookup.items.remove(0);
        (item.source, item.value.map(|p| p.as_ref().clone()))
    }

    async fn detail(&self, id: &str) -> (Source, Option<ProductDetail>) {
        let catalog: Arc<dyn ProductReader> = self.store.clone();
        let lookup = crate::reads::product_detail(&self.reader(), &catalog, &pid(id))
            .await
            .unwrap();
        (lookup.source, lookup.value.map(|d| d.as_ref().clone()))
    }
}

fn raw(event: &Value) -> RawEvent {
    RawEvent::from_value(event).unwrap()
}

#[tokio::test]
async fn a_product_written_behind_the_cache_is_rewritten_and_its_detail_dropped() {
    let f = Fixture::new();
    let v1 = f
        .store
        .put_product(&product("p1", "Kettle", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    let created = f.new_records();
    let (response, counts) = f.sync(&created).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(counts.feeds_bumped, "a new product can enter the feeds");
    // Cached by readers (once past the engine's skew margin after the sync's invalidation).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(f.summary("p1").await.1.unwrap().version, v1.version);
    assert_eq!(f.detail("p1").await.0, Source::Loaded);
    assert_eq!(f.detail("p1").await.0, Source::L2);

    // Renamed straight in the store: no API, no invalidation.
    let generation = f.cache.generation(FEED_NAMESPACE).await;
    let v2 = f
        .store
        .put_product(
            &Product {
                name: "Renamed kettle".into(),
                ..v1.clone()
            },
            ExpectedVersion::Exactly(v1.version),
        )
        .await
        .unwrap();
    let (_, counts) = f.sync(&f.new_records()).await;
    assert_eq!((counts.products, counts.summaries_written), (1, 1));
    assert!(!counts.feeds_bumped, "a rename moves no feed");
    assert_eq!(f.cache.generation(FEED_NAMESPACE).await, generation);
    let (source, summary) = f.summary("p1").await;
    assert_eq!(source, Source::L2, "rewritten, not merely dropped");
    assert_eq!(summary.unwrap().name, "Renamed kettle");
    let (source, detail) = f.detail("p1").await;
    assert_eq!(source, Source::Loaded);
    assert_eq!(detail.unwrap().product.version, v2.version);
}

#[tokio::test]
async fn an_older_image_delivered_after_a_newer_one_never_wins() {
    let f = Fixture::new();
    let v1 = f
        .store
        .put_product(&product("p1", "One", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    let v2 = f
        .store
        .put_product(
            &Product {
                name: "Two".into(),
                ..v1.clone()
            },
            ExpectedVersion::Exactly(v1.version),
        )
        .await
        .unwrap();
    let records = f.new_records();
    // The newer first, then the older one, each in its own batch.
    let (_, newer) = f.sync(&records[1..]).await;
    assert_eq!(newer.summaries_written, 1);
    let (response, older) = f.sync(&records[..1]).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        (older.summaries_written, older.summaries_refused),
        (0, 1),
        "the guard refuses the older version"
    );
    assert_eq!(f.summary("p1").await.1.unwrap().version, v2.version);
}

#[tokio::test]
async fn within_one_batch_the_newest_version_wins_whatever_the_order() {
    for reversed in [false, true] {
        let f = Fixture::new();
        let v1 = f
            .store
            .put_product(&product("p1", "One", true), ExpectedVersion::Absent)
            .await
            .unwrap();
        f.store
            .put_product(
                &Product {
                    name: "Two".into(),
                    ..v1.clone()
                },
                ExpectedVersion::Exactly(v1.version),
            )
            .await
            .unwrap();
        let mut records = f.new_records();
        if reversed {
            records.reverse();
        }
        let (_, counts) = f.sync(&records).await;
        assert_eq!(counts.summaries_written, 1, "reversed: {reversed}");
        let (source, summary) = f.summary("p1").await;
        assert_eq!(source, Source::L2, "reversed: {reversed}");
        assert_eq!(summary.unwrap().name, "Two", "reversed: {reversed}");
    }
}

#[tokio::test]
async fn a_refused_rewrite_leaves_a_tombstone_newer_than_the_write() {
    let f = Fixture::new();
    let v1 = f
        .store
        .put_product(&product("p1", "One", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    f.new_records();
    // The API writes v2 and invalidates; a reader loads v2 meanwhile (read before the
    // console's v3, slow to write back).
    let v2 = f
        .store
        .put_product(
            &Product {
                name: "Two".into(),
                ..v1.clone()
            },
            ExpectedVersion::Exactly(v1.version),
        )
        .await
        .unwrap();
    let summary_key = f.cache.keys().summary(&pid("p1"));
    f.cache.invalidate(std::slice::from_ref(&summary_key)).await;
    let slow_read_at = f.cache.now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // The console's v3, whose record carries a time before the API's tombstone (stream
    // times are coarse): the rewrite is refused...
    let v3 = f
        .store
        .put_product(
            &Product {
                name: "Three".into(),
                ..v2.clone()
            },
            ExpectedVersion::Exactly(v2.version),
        )
        .await
        .unwrap();
    let mut records = f.new_records();
    records.remove(0); // v2's record, already handled by the API
    records[0].change.approximate_creation_date_time =
        chrono::DateTime::from_timestamp_millis(slow_read_at - 1000).unwrap();
    let (_, counts) = f.sync(&records).await;
    assert_eq!(counts.summaries_refused, 1);
    // ...and replaced by an invalidation, so the slow reader's v2 cannot land.
    assert_eq!(
        f.cache.put(&summary_key, v2.clone(), slow_read_at).await,
        PutOutcome::Refused
    );
    assert_eq!(f.summary("p1").await.1.unwrap().version, v3.version);
}

#[tokio::test]
async fn deleted_and_created_again_in_one_batch_drops_the_old_entries() {
    let f = Fixture::new();
    let old = f
        .store
        .put_product(&product("p1", "Old", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    // The old product at a high version is cached.
    f.cache
        .put(
            &f.cache.keys().summary(&pid("p1")),
            Product {
                version: 7,
                ..old.clone()
            },
            f.cache.now(),
        )
        .await;
    f.new_records();
    let remove = StreamChange {
        kind: ChangeKind::Remove,
        keys: serde_dynamo::to_item(json!({"pk": "PRODUCT#p1", "sk": "META"})).unwrap(),
        old: Some(serde_dynamo::to_item(ProductItem::from(&old)).unwrap()),
        new: None,
        partition: "PRODUCT#p1".into(),
        at: None,
    };
    f.streams.catalog.record(remove);
    let created = StreamChange {
        kind: ChangeKind::Insert,
        keys: serde_dynamo::to_item(json!({"pk": "PRODUCT#p1", "sk": "META"})).unwrap(),
        old: None,
        new: Some(
            serde_dynamo::to_item(ProductItem::from(&Product {
                name: "New".into(),
                ..old.clone()
            }))
            .unwrap(),
        ),
        partition: "PRODUCT#p1".into(),
        at: None,
    };
    f.streams.catalog.record(created);
    let (_, counts) = f.sync(&f.new_records()).await;
    assert_eq!(
        counts.summaries_written, 0,
        "nothing rewritten over the old version"
    );
    assert_eq!(counts.keys_invalidated, 3, "detail, summary, stats");
    assert_eq!(f.summary("p1").await.0, Source::Loaded);
}

#[tokio::test]
async fn a_delete_drops_every_entry_of_the_product_and_moves_the_feeds() {
    let f = Fixture::new();
    let v1 = f
        .store
        .put_product(&product("p1", "Kettle", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    f.sync(&f.new_records()).await;
    assert!(f.summary("p1").await.1.is_some());
    let generation = f.cache.generation(FEED_NAMESPACE).await;
    // The store has no delete (the API never deletes); the console does.
    let item = serde_dynamo::to_item(ProductItem::from(&v1)).unwrap();
    f.streams.catalog.record(StreamChange {
        kind: ChangeKind::Remove,
        keys: serde_dynamo::to_item(json!({"pk": "PRODUCT#p1", "sk": "META"})).unwrap(),
        old: Some(item),
        new: None,
        partition: "PRODUCT#p1".into(),
        at: None,
    });
    let (response, counts) = f.sync(&f.new_records()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(counts.keys_invalidated, 3, "detail, summary, stats");
    assert!(counts.feeds_bumped);
    assert_eq!(f.cache.generation(FEED_NAMESPACE).await, generation + 1);
    assert_eq!(f.summary("p1").await.0, Source::Loaded);
}

#[tokio::test]
async fn deactivating_moves_the_feeds_and_a_price_edit_does_not() {
    let f = Fixture::new();
    let v1 = f
        .store
        .put_product(&product("p1", "Kettle", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    f.sync(&f.new_records()).await;
    let mut cheaper = v1.clone();
    cheaper.price = Money::new(50, Currency::parse("EUR").unwrap());
    let v2 = f
        .store
        .put_product(&cheaper, ExpectedVersion::Exactly(v1.version))
        .await
        .unwrap();
    assert!(!f.sync(&f.new_records()).await.1.feeds_bumped);
    f.store
        .put_product(
            &Product {
                active: false,
                ..v2.clone()
            },
            ExpectedVersion::Exactly(v2.version),
        )
        .await
        .unwrap();
    assert!(f.sync(&f.new_records()).await.1.feeds_bumped);
}

#[tokio::test]
async fn offers_drop_the_detail_and_keep_the_expiry_set_in_step() {
    let f = Fixture::new();
    f.store
        .put_product(&product("p1", "Kettle", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    f.sync(&f.new_records()).await;
    assert_eq!(f.detail("p1").await.1.unwrap().offers.len(), 0);
    let set = ExpirySet::new(&f.cache);
    set.mark_synced(SystemClock.now_ms()).await;
    let expires = SystemClock.now_ms() + 60_000;
    let stored = f
        .store
        .put_offer(&offer("p1", "o1", expires), ExpectedVersion::Absent)
        .await
        .unwrap();
    let records = f.new_records();
    let (response, counts) = f.sync(&records).await;
    assert!(response.batch_item_failures.is_empty());
    // The offer, and the offer-id reference item (ignored).
    assert_eq!((counts.offers, counts.ignored), (1, 1));
    assert_eq!(counts.offers_tracked, 1);
    assert!(!counts.feeds_bumped);
    assert_eq!(f.detail("p1").await.1.unwrap().offers.len(), 1);
    assert!(matches!(set.state().await, SetState::Synced(_)));
    assert_eq!(set.due(expires, 10).await.unwrap().len(), 1);

    // Expired by the job (or anyone): out of the set, detail dropped.
    f.store
        .expire_offer(&pid("p1"), &stored.id, stored.version, expires + 1)
        .await
        .unwrap();
    let (_, counts) = f.sync(&f.new_records()).await;
    assert_eq!(counts.offers_untracked, 1);
    assert_eq!(set.due(expires, 10).await.unwrap().len(), 0);
    assert_eq!(
        f.detail("p1").await.1.unwrap().offers[0].status,
        OfferStatus::Expired
    );
}

#[tokio::test]
async fn with_redis_down_the_batch_is_reported_and_its_retry_makes_the_cache_right() {
    let f = Fixture::new();
    let v1 = f
        .store
        .put_product(&product("p1", "Kettle", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    f.sync(&f.new_records()).await;
    assert_eq!(f.summary("p1").await.1.unwrap().name, "Kettle");
    f.store
        .put_product(
            &Product {
                name: "Renamed".into(),
                ..v1
            },
            ExpectedVersion::Exactly(1),
        )
        .await
        .unwrap();
    let records = f.new_records();
    f.l2.set_failing(true);
    let (response, counts) = f.sync(&records).await;
    assert!(counts.failed);
    assert_eq!(
        response.batch_item_failures[0].item_identifier, records[0].change.sequence_number,
        "retried from the first record"
    );
    f.l2.set_failing(false);
    // A fresh process (the breaker of the failed one is open): what Lambda's retry gets.
    let retry = Cache::new(
        CacheOptions::default(),
        Some(f.l2.clone() as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let (response, counts) = handle(raw(&json!({ "Records": records })), &retry)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(counts.summaries_written, 1);
    assert_eq!(f.summary("p1").await.1.unwrap().name, "Renamed");
}

#[tokio::test]
async fn poison_records_are_skipped_and_counted_and_unreadable_images_invalidate() {
    let f = Fixture::new();
    f.store
        .put_product(&product("p1", "Kettle", true), ExpectedVersion::Absent)
        .await
        .unwrap();
    let good = f.new_records();
    f.sync(&good).await;
    assert_eq!(f.summary("p1").await.0, Source::L2);
    let mut bad_image = serde_json::to_value(&good[0]).unwrap();
    bad_image["eventName"] = json!("MODIFY");
    bad_image["dynamodb"]["SequenceNumber"] = json!("900000000000000000001");
    bad_image["dynamodb"]["NewImage"]["price"] = json!({"S": "free"});
    let event = json!({"Records": [
        {"eventID": "x", "eventName": "INSERT", "dynamodb": "garbage"},
        {"eventID": "y", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "900000000000000000000", "Keys": {"pk": {"N": "1"}}}},
        {"eventID": "z", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "900000000000000000002", "Keys": {"pk": {"S": "PRODUCT#p2"}}, "NewImage": "garbage"}},
        bad_image,
    ]});
    let (response, counts) = handle(raw(&event), &f.cache).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((counts.malformed, counts.unreadable_images), (3, 1));
    assert_eq!(
        counts.keys_invalidated, 6,
        "p1 (image unreadable) and p2 (record unreadable, key readable): detail, summary, stats"
    );
    assert_eq!(
        f.summary("p1").await.0,
        Source::Loaded,
        "the product an unreadable image names is invalidated"
    );
    assert!(matches!(
        handle(raw(&json!({"hello": 1})), &f.cache).await,
        Err(EventError::NotAStreamEvent)
    ));
}

#[tokio::test]
async fn the_lambda_fixture_is_read_as_aws_sends_it() {
    let f = Fixture::new();
    let fixture: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/catalog-stream-event.json"
    ))
    .unwrap();
    let (response, counts) = handle(raw(&fixture), &f.cache).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(counts.records, 3);
    assert_eq!((counts.products, counts.offers), (2, 1));
    assert_eq!(counts.malformed + counts.unreadable_images, 0);
    assert_eq!(counts.summaries_written, 1);
    assert!(
        counts.feeds_bumped,
        "the fixture creates and deletes a product"
    );
}
