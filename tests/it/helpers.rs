//! Per-test environments: fresh tables and a fresh key prefix for every test.

use catalog_core::config::TableNames;
use catalog_core::model::{Currency, Money, Offer, OfferId, OfferStatus, Product, ProductId};
use catalog_core::store::dynamo::DynamoStore;
use catalog_core::store::dynamo::schema::create_tables;
use integration_tests::{dynamodb_client, unique_name};

/// A test's own tables on moto and a store over them.
pub struct DynamoEnv {
    pub tables: TableNames,
    pub store: DynamoStore,
}

/// Creates uniquely named catalog, views and stats tables.
pub async fn spawn_dynamo_env() -> DynamoEnv {
    let client = dynamodb_client();
    let tables = TableNames {
        catalog: unique_name("catalog"),
        views: unique_name("views"),
        stats: unique_name("stats"),
    };
    if let Err(e) = create_tables(&client, &tables).await {
        panic!(
            "cannot create tables on moto ({}): {e:?}",
            integration_tests::dynamodb_endpoint()
        );
    }
    DynamoEnv {
        store: DynamoStore::new(client, tables.clone()),
        tables,
    }
}

pub const NOW: i64 = 1_790_000_000_000;

pub fn product(id: &str) -> Product {
    Product {
        id: ProductId::parse(id).unwrap(),
        name: format!("Product {id}"),
        description: "A fine thing".into(),
        category: "kitchen".into(),
        price: Money::new(1999, Currency::parse("EUR").unwrap()),
        active: true,
        created_at: NOW,
        updated_at: NOW,
        version: 0,
    }
}

pub fn offer(product_id: &str, offer_id: &str, status: OfferStatus) -> Offer {
    Offer {
        id: OfferId::parse(offer_id).unwrap(),
        product_id: ProductId::parse(product_id).unwrap(),
        status,
        price: Money::new(1499, Currency::parse("EUR").unwrap()),
        expires_at: NOW + 3_600_000,
        created_at: NOW,
        updated_at: NOW,
        version: 0,
    }
}

pub fn id(raw: &str) -> ProductId {
    ProductId::parse(raw).unwrap()
}
