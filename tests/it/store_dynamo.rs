//! The DynamoDB adapter against moto: round trips, chunked batch reads, conditional writes.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use catalog_core::model::OfferId;
use catalog_core::model::OfferStatus;
use catalog_core::store::dynamo::items::{EXPIRY_INDEX, expiry_shard};
use catalog_core::store::{
    ExpiryIndex, OfferReader, OfferWriter, ProductLister, ProductReader, ProductWriter,
};
use catalog_core::{Error, ExpectedVersion};
use futures::{StreamExt, TryStreamExt};

use crate::helpers::{id, offer, product, spawn_dynamo_env};

#[tokio::test]
async fn product_with_offers_round_trips_in_one_query() {
    let env = spawn_dynamo_env().await;
    let stored = env
        .store
        .put_product(&product("kettle"), ExpectedVersion::Absent)
        .await
        .unwrap();
    assert_eq!(stored.version, 1);
    for (offer_id, status) in [
        ("o-live", OfferStatus::Active),
        ("o-gone", OfferStatus::Cancelled),
    ] {
        env.store
            .put_offer(&offer("kettle", offer_id, status), ExpectedVersion::Absent)
            .await
            .unwrap();
    }

    let detail = env
        .store
        .product_detail(&id("kettle"))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(detail.product, stored);
    let statuses: Vec<_> = detail
        .offers
        .iter()
        .map(|o| (o.id.as_str(), o.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("o-gone", OfferStatus::Cancelled),
            ("o-live", OfferStatus::Active)
        ]
    );
    assert_eq!(detail.offers[1].price.amount_minor, 1499);
}

#[tokio::test]
async fn only_active_offers_are_in_the_expiry_index() {
    let env = spawn_dynamo_env().await;
    env.store
        .put_product(&product("p1"), ExpectedVersion::Absent)
        .await
        .unwrap();
    let live = offer("p1", "o-live", OfferStatus::Active);
    env.store
        .put_offer(&live, ExpectedVersion::Absent)
        .await
        .unwrap();
    let cancelled = offer("p1", "o-dead", OfferStatus::Cancelled);
    env.store
        .put_offer(&cancelled, ExpectedVersion::Absent)
        .await
        .unwrap();

    let mut indexed = BTreeSet::new();
    for shard in [expiry_shard(&live.id), expiry_shard(&cancelled.id)] {
        let out = env
            .store
            .client()
            .query()
            .table_name(&env.tables.catalog)
            .index_name(EXPIRY_INDEX)
            .key_condition_expression("gsi1pk = :shard")
            .expression_attribute_values(":shard", AttributeValue::S(shard))
            .send()
            .await
            .unwrap();
        for item in out.items() {
            indexed.insert(item["sk"].as_s().unwrap().clone());
        }
    }
    assert_eq!(indexed, BTreeSet::from(["OFFER#o-live".to_owned()]));

    // Cancelling the live offer drops it from the index.
    let cancelled_live = catalog_core::model::Offer {
        status: OfferStatus::Cancelled,
        ..live.clone()
    };
    env.store
        .put_offer(&cancelled_live, ExpectedVersion::Exactly(1))
        .await
        .unwrap();
    let out = env
        .store
        .client()
        .query()
        .table_name(&env.tables.catalog)
        .index_name(EXPIRY_INDEX)
        .key_condition_expression("gsi1pk = :shard")
        .expression_attribute_values(":shard", AttributeValue::S(expiry_shard(&live.id)))
        .send()
        .await
        .unwrap();
    assert!(
        out.items()
            .iter()
            .all(|i| i["sk"].as_s().unwrap() != "OFFER#o-live")
    );
}

#[tokio::test]
async fn batch_get_of_150_ids_spans_chunks_and_skips_unknown_ids() {
    let env = spawn_dynamo_env().await;
    let ids: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
    let products: Vec<_> = ids.iter().map(|raw| product(raw)).collect();
    futures::stream::iter(&products)
        .map(|p| env.store.put_product(p, ExpectedVersion::Absent))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();

    let mut wanted: Vec<_> = ids.iter().map(|raw| id(raw)).collect();
    wanted.push(id("missing-1"));
    wanted.push(id("missing-2"));
    wanted.push(id("p007")); // a duplicate must not break the request
    let found = env.store.products(&wanted).await.unwrap();

    let found_ids: BTreeSet<String> = found.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(found.len(), 150);
    assert_eq!(found_ids, ids.iter().cloned().collect());
}

#[tokio::test]
async fn write_with_stale_version_is_rejected() {
    let env = spawn_dynamo_env().await;
    let v1 = env
        .store
        .put_product(&product("lamp"), ExpectedVersion::Absent)
        .await
        .unwrap();
    let v2 = env
        .store
        .put_product(&v1, ExpectedVersion::Exactly(1))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);

    let stale = env
        .store
        .put_product(&v1, ExpectedVersion::Exactly(1))
        .await;
    let recreate = env.store.put_product(&v1, ExpectedVersion::Absent).await;

    for result in [stale, recreate] {
        match result {
            Err(Error::VersionConflict {
                entity: "product",
                id,
                ..
            }) => assert_eq!(id, "lamp"),
            other => panic!("expected a version conflict, got {other:?}"),
        }
    }
    let stored = env
        .store
        .product_detail(&id("lamp"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.product.version, 2);
}

#[tokio::test]
async fn unknown_id_is_none_and_empty_batch_is_empty() {
    let env = spawn_dynamo_env().await;
    assert!(
        env.store
            .product_detail(&id("nope"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(env.store.products(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_product_never_reaches_dynamodb() {
    let env = spawn_dynamo_env().await;
    let bad = catalog_core::model::Product {
        name: String::new(),
        ..product("bad")
    };
    let err = env
        .store
        .put_product(&bad, ExpectedVersion::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(
        env.store
            .product_detail(&id("bad"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn config_built_client_reaches_the_endpoint_and_unreachable_is_retryable() {
    let config = catalog_core::config::DynamoConfig {
        endpoint: Some(integration_tests::dynamodb_endpoint()),
        operation_timeout: std::time::Duration::from_secs(5),
    };
    let client = catalog_core::store::dynamo::client(&config).await;
    client.list_tables().send().await.unwrap();

    // Nothing listens on port 9 (discard) on loopback: a network failure, so retryable.
    let dead = catalog_core::config::DynamoConfig {
        endpoint: Some("http://127.0.0.1:9".into()),
        operation_timeout: std::time::Duration::from_secs(2),
    };
    let store = catalog_core::store::dynamo::DynamoStore::new(
        catalog_core::store::dynamo::client(&dead).await,
        spawn_dynamo_env().await.tables,
    );
    let err = store.product_detail(&id("x")).await.unwrap_err();
    assert!(err.is_retryable() && err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn an_offer_needs_its_product_and_a_fresh_id() {
    let env = spawn_dynamo_env().await;
    let orphan = offer("ghost", "o1", OfferStatus::Active);
    let err = env
        .store
        .put_offer(&orphan, ExpectedVersion::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                entity: "product",
                ..
            }
        ),
        "{err:?}"
    );

    env.store
        .put_product(&product("p1"), ExpectedVersion::Absent)
        .await
        .unwrap();
    env.store
        .put_product(&product("p2"), ExpectedVersion::Absent)
        .await
        .unwrap();
    env.store
        .put_offer(
            &offer("p1", "o1", OfferStatus::Active),
            ExpectedVersion::Absent,
        )
        .await
        .unwrap();
    // The same offer id under another product is refused: offer ids are global.
    let err = env
        .store
        .put_offer(
            &offer("p2", "o1", OfferStatus::Active),
            ExpectedVersion::Absent,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionConflict {
                entity: "offer",
                ..
            }
        ),
        "{err:?}"
    );

    let found = env
        .store
        .offer(&OfferId::parse("o1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.product_id.as_str(), "p1");
    assert!(
        env.store
            .offer(&OfferId::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_expiry_index_lists_due_offers_soonest_first_across_shards() {
    let env = spawn_dynamo_env().await;
    env.store
        .put_product(&product("p1"), ExpectedVersion::Absent)
        .await
        .unwrap();
    for i in 0..12i64 {
        let o = catalog_core::model::Offer {
            expires_at: crate::helpers::NOW + i * 60_000,
            ..offer("p1", &format!("o{i:02}"), OfferStatus::Active)
        };
        env.store
            .put_offer(&o, ExpectedVersion::Absent)
            .await
            .unwrap();
    }
    let due = env
        .store
        .expiring(crate::helpers::NOW + 5 * 60_000, 100)
        .await
        .unwrap();
    let ids: Vec<_> = due.iter().map(|o| o.offer_id.as_str()).collect();
    assert_eq!(ids, ["o00", "o01", "o02", "o03", "o04", "o05"]);
    assert_eq!(env.store.expiring(i64::MAX, 3).await.unwrap().len(), 3);
}

#[tokio::test]
async fn listing_pages_through_every_product_and_skips_offers() {
    let env = spawn_dynamo_env().await;
    for i in 0..9 {
        env.store
            .put_product(&product(&format!("p{i}")), ExpectedVersion::Absent)
            .await
            .unwrap();
        env.store
            .put_offer(
                &offer(&format!("p{i}"), &format!("o{i}"), OfferStatus::Active),
                ExpectedVersion::Absent,
            )
            .await
            .unwrap();
    }
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let (page, next) = env.store.list_products(cursor.as_deref(), 4).await.unwrap();
        seen.extend(page.into_iter().map(|p| p.id.to_string()));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
}

/// A bulk load through a proxy that throttles whole requests, more often in a row than the
/// SDK retries one: the loader retries them, and every item lands. (Unprocessed items inside
/// a successful batch take the same retry path; moto never leaves any.)
#[tokio::test]
async fn a_bulk_load_lands_every_item_through_throttling() {
    use catalog_core::model::CounterBucket;
    use catalog_core::store::dynamo::DynamoStore;
    use catalog_core::store::{BulkCatalog, BulkLoader, ExpiryIndex, OfferReader, ViewCounters};
    use integration_tests::dynamo_faults::{DynamoFaults, Fault, Rule};

    let env = spawn_dynamo_env().await;
    let faults = DynamoFaults::start(&integration_tests::dynamodb_endpoint()).await;
    // After two requests, six in a row are throttled as a whole: more than the SDK's own
    // three attempts at one request.
    faults.add(Rule {
        pass_first: 2,
        fail: Some(6),
        ..Rule::on("BatchWriteItem", Fault::Throttle)
    });
    let config = catalog_core::config::DynamoConfig {
        endpoint: Some(faults.endpoint()),
        operation_timeout: std::time::Duration::from_secs(10),
    };
    let client = catalog_core::store::dynamo::client(&config).await;
    let store = DynamoStore::new(client, env.tables.clone());
    let products: Vec<_> = (0..60).map(|n| product(&format!("bulk-{n:02}"))).collect();
    let offers: Vec<_> = (0..60)
        .map(|n| {
            offer(
                &format!("bulk-{n:02}"),
                &format!("bulk-offer-{n:02}"),
                OfferStatus::Active,
            )
        })
        .collect();
    let counters: Vec<_> = (0..60)
        .map(|n| {
            (
                id(&format!("bulk-{n:02}")),
                CounterBucket::hour_of(crate::helpers::NOW),
                n as u64 + 1,
            )
        })
        .collect();
    store
        .load(BulkCatalog {
            products: &products,
            offers: &offers,
            counters: &counters,
        })
        .await
        .unwrap();
    assert_eq!(faults.injected(), 6, "the proxy throttled six requests");

    let ids: Vec<_> = products.iter().map(|p| p.id.clone()).collect();
    let stored = env.store.products(&ids).await.unwrap();
    assert_eq!(stored.len(), 60);
    assert!(stored.iter().all(|p| p.version == 1));
    // Offers are found by id (their reference items landed) and are in the expiry index.
    let found = env
        .store
        .offer(&OfferId::parse("bulk-offer-42").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.product_id, id("bulk-42"));
    let due = env
        .store
        .expiring(crate::helpers::NOW + 7_200_000, 1000)
        .await
        .unwrap();
    assert_eq!(due.len(), 60);
    let counted: u64 = env
        .store
        .view_counters(&id("bulk-59"))
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(counted, 60);
}
