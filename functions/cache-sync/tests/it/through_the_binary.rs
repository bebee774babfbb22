//! Every case of the issue, through the runner and the real binary, on moto and a real Redis.

use std::time::Duration;

use catalog_core::ExpectedVersion;
use catalog_core::cache::Source;
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::config::RedisConfig;
use catalog_core::expiry_set::{ExpirySet, member};
use catalog_core::model::{Currency, Money, Offer, OfferId, OfferStatus, Product, ProductId};
use catalog_core::reads::FEED_NAMESPACE;
use catalog_core::store::{OfferExpirer, OfferWriter, ProductWriter};
use esm::invoke::Invoker;
use integration_tests::RedisServer;
use serde_json::json;

use crate::harness::{Harness, PROPAGATION_BOUND, product, raw_item};

/// Waits until the reader's summary of `id` is cached in Redis (an L2 hit) at `version`.
async fn cached_at(h: &Harness, id: &str, version: u64) {
    let reader = h.reader().await;
    let started = std::time::Instant::now();
    loop {
        let (source, summary, _) = h.read(&reader, id).await;
        if source == Source::L2 && summary.as_ref().is_some_and(|p| p.version == version) {
            return;
        }
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "{id} v{version} never cached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_product_written_straight_to_dynamodb_is_served_fresh(redis: RedisConfig) {
    let h = Harness::new(redis).await;
    let v1 = h.create("p1", "Kettle").await;
    let esm = h.mapping(h.function().await).await;
    let running = esm.clone().spawn();
    // Readers hold v1 in Redis.
    cached_at(&h, "p1", v1.version).await;

    // The console renames it: an SDK PutItem, nothing of ours involved.
    h.put_raw(raw_item(&Product {
        name: "Renamed behind the cache".into(),
        version: v1.version + 1,
        ..v1.clone()
    }))
    .await;
    let reader = h.reader().await;
    h.eventually(&reader, "p1", "the rename", |summary, detail| {
        summary
            .as_ref()
            .is_some_and(|p| p.name == "Renamed behind the cache")
            && detail
                .as_ref()
                .is_some_and(|d| d.product.version == v1.version + 1)
    })
    .await;
    running.abort();
    let stats = esm.stats();
    assert_eq!((stats.failed_invocations, stats.partial_failures), (0, 0));
}

async fn an_older_image_delivered_after_a_newer_one_never_wins(redis: RedisConfig) {
    let h = Harness::new(redis).await;
    let v1 = h.create("p1", "One").await;
    let v2 = h
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
    let stream = h.stream().await;
    let shard = stream.shards().await.unwrap().remove(0);
    let records = stream.read(&shard, None, 100).await.unwrap();
    assert_eq!(records.len(), 2);
    let function = h.function().await;
    // The newer image, then the older one, each as its own invocation.
    for record in [&records[1], &records[0]] {
        let response = function
            .invoke(json!({ "Records": [record] }))
            .await
            .unwrap();
        assert_eq!(response["batchItemFailures"], json!([]));
    }
    let reader = h.reader().await;
    let (source, summary, _) = h.read(&reader, "p1").await;
    // The older image was refused by the guard, and the refusal became an invalidation
    // (never a rewrite): the reader loads the table's version.
    assert_eq!(source, Source::Loaded);
    assert_eq!(
        summary.unwrap().version,
        v2.version,
        "the older image was refused"
    );
}

async fn a_delete_drops_the_product_and_moves_the_feeds(redis: RedisConfig) {
    let h = Harness::new(redis).await;
    let v1 = h.create("p1", "Kettle").await;
    let esm = h.mapping(h.function().await).await;
    let running = esm.clone().spawn();
    cached_at(&h, "p1", v1.version).await;
    let generation = h.reader().await.generation(FEED_NAMESPACE).await;

    h.delete_raw("PRODUCT#p1", "META").await;
    let reader = h.reader().await;
    h.eventually(&reader, "p1", "the delete", |summary, detail| {
        summary.is_none() && detail.is_none()
    })
    .await;
    running.abort();
    assert!(
        h.reader().await.generation(FEED_NAMESPACE).await > generation,
        "a deleted product leaves the feeds"
    );
}

async fn an_offer_expiry_reaches_the_detail_and_the_expiry_set(redis: RedisConfig) {
    let h = Harness::new(redis).await;
    h.create("p1", "Kettle").await;
    let now = SystemClock.now_ms();
    let offer = h
        .store
        .put_offer(
            &Offer {
                id: OfferId::parse("o1").unwrap(),
                product_id: ProductId::parse("p1").unwrap(),
                status: OfferStatus::Active,
                price: Money::new(800, Currency::parse("EUR").unwrap()),
                expires_at: now + 1000,
                created_at: now,
                updated_at: now,
                version: 0,
            },
            ExpectedVersion::Absent,
        )
        .await
        .unwrap();
    let esm = h.mapping(h.function().await).await;
    let running = esm.clone().spawn();
    let reader = h.reader().await;
    let set = ExpirySet::new(&reader);
    let tracked = member(&offer.product_id, &offer.id);
    let in_set = |all: Option<Vec<catalog_core::model::ExpiringOffer>>| {
        all.unwrap_or_default()
            .iter()
            .any(|o| member(&o.product_id, &o.offer_id) == tracked)
    };
    h.eventually(&reader, "p1", "the offer", |_, detail| {
        detail.as_ref().is_some_and(|d| d.offers.len() == 1)
    })
    .await;
    // The offer's stream record put it in the set (nothing else wrote the set here).
    let started = std::time::Instant::now();
    while !in_set(set.all().await) {
        assert!(started.elapsed() < PROPAGATION_BOUND, "never tracked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The offer-expiry job's write, and nothing else: no invalidation of its own.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        h.store
            .expire_offer(
                &offer.product_id,
                &offer.id,
                offer.version,
                SystemClock.now_ms()
            )
            .await
            .unwrap()
    );
    h.eventually(&reader, "p1", "the expiry", |_, detail| {
        detail
            .as_ref()
            .is_some_and(|d| d.offers[0].status == OfferStatus::Expired)
    })
    .await;
    let started = std::time::Instant::now();
    while in_set(set.all().await) {
        assert!(started.elapsed() < PROPAGATION_BOUND, "never untracked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.abort();
}

async fn poison_records_are_skipped_and_counted(redis: RedisConfig) {
    let h = Harness::new(redis).await;
    let good = h.create("p-good", "Kettle").await;
    let esm = h.mapping(h.function().await).await;
    let running = esm.clone().spawn();
    cached_at(&h, "p-good", good.version).await;
    // An item another service wrote that no version of ours can read, then a good write
    // behind it in the same shard.
    let mut poison = raw_item(&product("p-bad", "Broken"));
    poison.insert(
        "price".into(),
        aws_sdk_dynamodb::types::AttributeValue::S("free".into()),
    );
    h.put_raw(poison).await;
    h.put_raw(raw_item(&Product {
        name: "After the poison".into(),
        version: good.version + 1,
        ..good.clone()
    }))
    .await;
    let reader = h.reader().await;
    h.eventually(
        &reader,
        "p-good",
        "the write after the poison",
        |summary, _| {
            summary
                .as_ref()
                .is_some_and(|p| p.name == "After the poison")
        },
    )
    .await;
    running.abort();
    let stats = esm.stats();
    assert_eq!(
        (
            stats.failed_invocations,
            stats.partial_failures,
            stats.sent_to_destination
        ),
        (0, 0, 0),
        "the poison blocked nothing"
    );

    // A record that is not even a record, next to a good one: skipped, the batch succeeds.
    let function = h.function().await;
    let stream = h.stream().await;
    let shard = stream.shards().await.unwrap().remove(0);
    let last = stream.read(&shard, None, 100).await.unwrap().pop().unwrap();
    let response = function
        .invoke(json!({ "Records": [{"eventID": "x", "dynamodb": "garbage"}, last] }))
        .await
        .unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));
    // Not a stream event at all: the invocation fails (Lambda retries, then the destination).
    assert!(function.invoke(json!({"hello": 1})).await.is_err());
}

/// Redis is killed while records arrive, and comes back with its data (append-only file):
/// the records are reported as failures, retried, and the stale entry is replaced.
#[tokio::test]
async fn records_arriving_while_redis_is_down_are_retried_until_the_cache_is_right() {
    let port = RedisServer::free_port();
    let persistent = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = RedisServer::start(port, &persistent);
    let h = Harness::new(RedisConfig {
        command_timeout: Duration::from_millis(300),
        ..RedisConfig::standalone(server.node())
    })
    .await;
    let v1 = h.create("p1", "Kettle").await;
    let esm = h.mapping(h.function().await).await;
    let running = esm.clone().spawn();
    cached_at(&h, "p1", v1.version).await;

    server.stop();
    h.put_raw(raw_item(&Product {
        name: "Renamed during the outage".into(),
        version: v1.version + 1,
        ..v1.clone()
    }))
    .await;
    let started = std::time::Instant::now();
    while esm.stats().partial_failures == 0 {
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "the failure was never reported: {:?}",
            esm.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Back, with the old summary still in it.
    server.restart(&persistent);
    let reader = h.reader().await;
    h.eventually(
        &reader,
        "p1",
        "the rename after the outage",
        |summary, _| {
            summary
                .as_ref()
                .is_some_and(|p| p.name == "Renamed during the outage")
        },
    )
    .await;
    running.abort();
    let stats = esm.stats();
    assert!(stats.partial_failures >= 1, "{stats:?}");
    assert_eq!(stats.sent_to_destination, 0, "nothing was given up on");
}

macro_rules! on_both_topologies {
    ($($test:ident),* $(,)?) => {
        mod standalone {
            $(#[tokio::test] async fn $test() { super::$test(integration_tests::standalone_config()).await; })*
        }
        mod cluster {
            $(#[tokio::test] async fn $test() { super::$test(integration_tests::cluster_config()).await; })*
        }
    };
}

on_both_topologies!(
    a_product_written_straight_to_dynamodb_is_served_fresh,
    an_older_image_delivered_after_a_newer_one_never_wins,
    a_delete_drops_the_product_and_moves_the_feeds,
    an_offer_expiry_reaches_the_detail_and_the_expiry_set,
    poison_records_are_skipped_and_counted,
);
