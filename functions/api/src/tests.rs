//! Router tests over the in-memory adapters: every route, status and header, no network.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::memory::MemoryL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::ManualClock;
use catalog_core::config::Config;
use catalog_core::model::{
    Currency, FeedKind, Money, Offer, OfferId, OfferStatus, Product, ProductId, RankedFeed,
};
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::{OfferWriter, ProductReader, ProductWriter, StatsWriter};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::AppState;

const NOW: i64 = 1_800_000_000_000;
const TOKEN: &str = "s3cret-admin-token";
const WRITE_TOKEN: &str = "s3cret-write-token";

struct TestApp {
    state: AppState,
    store: Arc<MemoryStore>,
    l2: Arc<MemoryL2>,
    clock: Arc<ManualClock>,
}

impl TestApp {
    fn new() -> TestApp {
        let store = Arc::new(MemoryStore::new());
        let l2 = Arc::new(MemoryL2::new());
        let clock = ManualClock::at(NOW);
        let config = Config::from_lookup(|name| match name {
            "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("t".repeat(3)),
            "ADMIN_TOKEN" => Some(TOKEN.to_owned()),
            "WRITE_TOKEN" => Some(WRITE_TOKEN.to_owned()),
            _ => None,
        })
        .unwrap();
        let cache = Cache::new(
            CacheOptions {
                jitter: 0.0,
                ..CacheOptions::default()
            },
            Some(l2.clone() as Arc<dyn L2Store>),
            clock.clone(),
        );
        let mut state = AppState::new(store.clone(), store.clone(), store.clone(), cache, &config);
        state.clock = clock.clone();
        TestApp {
            state,
            store,
            l2,
            clock,
        }
    }

    async fn send(&self, request: Request<Body>) -> Response {
        crate::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap()
    }

    async fn get(&self, uri: &str) -> Response {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// A JSON request from a client holding the write token.
    async fn json(&self, method: &str, uri: &str, body: Value) -> Response {
        self.json_as(method, uri, body, Some(WRITE_TOKEN)).await
    }

    async fn json_as(&self, method: &str, uri: &str, body: Value, token: Option<&str>) -> Response {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(builder.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Response {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        self.send(builder.body(body).unwrap()).await
    }

    async fn seed_product(&self, id: &str) -> Product {
        self.store
            .put_product(&product(id), ExpectedVersion::Absent)
            .await
            .unwrap()
    }

    async fn seed_offer(&self, product: &str, offer: &str, expires_in: Duration) -> Offer {
        let offer = Offer {
            id: OfferId::parse(offer).unwrap(),
            product_id: ProductId::parse(product).unwrap(),
            status: OfferStatus::Active,
            price: Money::new(999, Currency::parse("EUR").unwrap()),
            expires_at: NOW + i64::try_from(expires_in.as_millis()).unwrap(),
            created_at: NOW,
            updated_at: NOW,
            version: 0,
        };
        self.store
            .put_offer(&offer, ExpectedVersion::Absent)
            .await
            .unwrap()
    }
}

fn product(id: &str) -> Product {
    Product {
        id: ProductId::parse(id).unwrap(),
        name: format!("Product {id}"),
        description: "desc".into(),
        category: "kitchen".into(),
        price: Money::new(1999, Currency::parse("EUR").unwrap()),
        active: true,
        created_at: NOW,
        updated_at: NOW,
        version: 0,
    }
}

async fn body(response: Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(&bytes).unwrap()
}

/// The element of a JSON array whose `key` is `value` (panics, showing the array, if none is).
fn element<'a>(array: &'a Value, key: &str, value: &str) -> &'a Value {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {array}"))
}

fn header_of<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_product_is_loaded_once_then_served_from_l1_with_cache_headers() {
    let app = TestApp::new();
    app.seed_product("kettle").await;
    app.seed_offer("kettle", "o-live", Duration::from_secs(3600))
        .await;

    let first = app.get("/products/kettle").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header_of(&first, "x-cache"), "MISS");
    assert_eq!(header_of(&first, "age"), "0");
    assert!(header_of(&first, "cache-control").starts_with("public, max-age=300"));
    let etag = header_of(&first, "etag").to_owned();
    let json = body(first).await;
    assert_eq!(json["product"]["name"], "Product kettle");
    assert_eq!(json["offers"][0]["id"], "o-live");
    assert_eq!(json["cache"]["source"], "LOADED");
    assert!(json["processing_time_ms"].is_number());
    assert_eq!(json["stats"]["views_24h"], 0);

    // Within the L1 coherence bound (1 s), so L1 still answers without a poll.
    app.clock.advance(Duration::from_millis(500));
    let second = app.get("/products/kettle").await;
    assert_eq!(header_of(&second, "x-cache"), "HIT-L1");
    assert_eq!(header_of(&second, "etag"), etag);
    assert_eq!(body(second).await["cache"]["age_ms"], 500);

    let revalidated = app
        .send(
            Request::get("/products/kettle")
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_of(&revalidated, "etag"), etag);
    assert_eq!(body(revalidated).await, Value::Null);
}

#[tokio::test]
async fn expired_and_cancelled_offers_are_not_served() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    app.seed_offer("p1", "o-soon", Duration::from_secs(60))
        .await;
    app.seed_offer("p1", "o-later", Duration::from_secs(7200))
        .await;
    // Past the first offer's expiry, within the product's fresh TTL.
    app.clock.advance(Duration::from_secs(61));
    let json = body(app.get("/products/p1").await).await;
    let ids: Vec<&str> = json["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o-later"]);
}

#[tokio::test]
async fn bad_ids_unknown_products_routes_and_methods_are_json_errors() {
    let app = TestApp::new();
    // Not found is cached too, and says so.
    assert_eq!(
        header_of(&app.get("/products/ghost").await, "x-cache"),
        "MISS"
    );
    assert_eq!(
        header_of(&app.get("/products/ghost").await, "x-cache"),
        "HIT-L1"
    );
    let cases = [
        (
            app.get("/products/bad%20id").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.get(&format!("/products/{}", "x".repeat(65))).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.get("/products/ghost").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (app.get("/nowhere").await, StatusCode::NOT_FOUND, "no_route"),
        (
            app.send(Request::delete("/products/p1").body(Body::empty()).unwrap())
                .await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            app.get("/feed?kind=hot").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.get("/feed?per_page=500").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.get("/offers/expiring?within=+8h").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.get("/feed?page=1000001").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.get("/offers/expiring?within=soon").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(response.status(), status);
        assert_eq!(header_of(&response, "content-type"), "application/json");
        let json = body(response).await;
        assert_eq!(json["error"], code, "{json}");
        assert!(json["message"].is_string());
    }
}

#[tokio::test]
async fn a_batch_lists_what_it_did_not_find_and_rejects_bad_bodies() {
    let app = TestApp::new();
    for id in ["a", "b"] {
        app.seed_product(id).await;
    }
    let response = app
        .json(
            "POST",
            "/products/batch",
            json!({"ids": ["b", "zz", "a", "b"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, "x-cache"), "MISS");
    let json = body(response).await;
    let names: Vec<&str> = json["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(json["not_found"], json!(["zz"]));
    assert_eq!(json["cache"]["loaded"], 3);

    let again = app
        .json("POST", "/products/batch", json!({"ids": ["a", "b"]}))
        .await;
    assert_eq!(header_of(&again, "x-cache"), "HIT-L1");

    let too_many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    let cases = [
        (json!({"ids": too_many}), StatusCode::BAD_REQUEST),
        (json!({"ids": []}), StatusCode::BAD_REQUEST),
        (json!({"ids": ["ok", "not ok"]}), StatusCode::BAD_REQUEST),
        (json!({"idz": ["a"]}), StatusCode::BAD_REQUEST),
        (
            json!({"ids": ["x".repeat(40_000), "y".repeat(40_000)]}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (request, status) in cases {
        let response = app.json("POST", "/products/batch", request).await;
        assert_eq!(response.status(), status);
        assert!(body(response).await["error"].is_string());
    }
    let not_json = app
        .send(
            Request::post("/products/batch")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn writes_need_the_write_token_and_views_stay_public() {
    let app = TestApp::new();
    let product = json!({"name": "Lamp", "category": "kitchen", "price": {"amount_minor": 1500, "currency": "EUR"}, "active": true});
    let offer =
        json!({"price": {"amount_minor": 999, "currency": "EUR"}, "expires_at": NOW + 60_000});
    let writes = [
        ("PUT", "/products/lamp", product.clone()),
        ("POST", "/products/lamp/offers", offer.clone()),
        ("PATCH", "/offers/o1", json!({"action": "cancel"})),
    ];
    for (method, uri, body) in &writes {
        for token in [None, Some(TOKEN), Some("s3cret-write-tokeN")] {
            let response = app.json_as(method, uri, body.clone(), token).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {uri} as {token:?}"
            );
            assert_eq!(header_of(&response, "www-authenticate"), "Bearer");
        }
    }
    assert!(
        app.store
            .products(&[ProductId::parse("lamp").unwrap()])
            .await
            .unwrap()
            .is_empty(),
        "nothing was written"
    );
    assert_eq!(
        app.json("PUT", "/products/lamp", product).await.status(),
        StatusCode::CREATED
    );
    let view = app
        .json_as(
            "POST",
            "/products/lamp/views",
            json!({"event_id": "v1"}),
            None,
        )
        .await;
    assert!(view.status().is_success(), "{}", view.status());
}

#[tokio::test]
async fn only_writes_that_can_change_a_feed_move_the_feed_generation() {
    let app = TestApp::new();
    let input = |name: &str, active: bool, expected: Option<u64>| {
        json!({"name": name, "category": "kitchen", "price": {"amount_minor": 1500, "currency": "EUR"},
               "active": active, "expected_version": expected})
    };
    let generation = || async {
        app.state
            .cache
            .generation(catalog_core::reads::FEED_NAMESPACE)
            .await
    };
    app.json("PUT", "/products/lamp", input("Lamp", true, None))
        .await;
    assert_eq!(generation().await, 1, "a new product can enter the feeds");
    app.json(
        "PUT",
        "/products/lamp",
        input("Lamp, cheaper", true, Some(1)),
    )
    .await;
    assert_eq!(generation().await, 1, "an edit moves no feed");
    app.json("PUT", "/products/lamp", input("Lamp", false, Some(2)))
        .await;
    assert_eq!(generation().await, 2, "deactivating leaves the feeds");
}

#[tokio::test]
async fn writes_are_conditional_on_version_and_invalidate_at_once() {
    let app = TestApp::new();
    let input = |name: &str, expected: Option<u64>| {
        json!({"name": name, "category": "kitchen", "price": {"amount_minor": 1500, "currency": "EUR"},
               "active": true, "expected_version": expected})
    };
    let created = app.json("PUT", "/products/lamp", input("Lamp", None)).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(body(created).await["version"], 1);
    assert_eq!(
        app.json("PUT", "/products/lamp", input("Lamp", None))
            .await
            .status(),
        StatusCode::CONFLICT
    );

    // Cache it, then update: the next read sees the update, not the cached copy.
    assert_eq!(
        body(app.get("/products/lamp").await).await["product"]["name"],
        "Lamp"
    );
    let updated = app
        .json("PUT", "/products/lamp", input("Lamp v2", Some(1)))
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let read = app.get("/products/lamp").await;
    assert_eq!(header_of(&read, "x-cache"), "MISS");
    assert_eq!(body(read).await["product"]["name"], "Lamp v2");

    assert_eq!(
        app.json("PUT", "/products/lamp", input("stale", Some(1)))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.json("PUT", "/products/ghost", input("x", Some(1)))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let invalid = app.json("PUT", "/products/lamp", json!({"name": "", "category": "k", "price": {"amount_minor": 1, "currency": "EUR"}, "active": true, "expected_version": 2})).await;
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let bad_currency = app.json("PUT", "/products/lamp2", json!({"name": "x", "category": "k", "price": {"amount_minor": 1, "currency": "euro"}, "active": true})).await;
    assert_eq!(bad_currency.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn offers_are_created_extended_and_cancelled_with_their_product_invalidated() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    assert_eq!(
        body(app.get("/products/p1").await).await["offers"],
        json!([])
    );

    let created = app
        .json("POST", "/products/p1/offers", json!({"offer_id": "o1", "price": {"amount_minor": 900, "currency": "EUR"}, "expires_at": NOW + 3_600_000}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        body(app.get("/products/p1").await).await["offers"][0]["id"],
        "o1"
    );

    let extended = app
        .json(
            "PATCH",
            "/offers/o1",
            json!({"action": "extend", "expires_at": NOW + 7_200_000, "expected_version": 1}),
        )
        .await;
    assert_eq!(extended.status(), StatusCode::OK);
    assert_eq!(body(extended).await["version"], 2);
    let stale = app
        .json(
            "PATCH",
            "/offers/o1",
            json!({"action": "cancel", "expected_version": 1}),
        )
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let cancelled = app
        .json(
            "PATCH",
            "/offers/o1",
            json!({"action": "cancel", "expected_version": 2}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(
        body(app.get("/products/p1").await).await["offers"],
        json!([])
    );

    let cases = [
        (
            "POST",
            "/products/ghost/offers",
            json!({"price": {"amount_minor": 1, "currency": "EUR"}, "expires_at": NOW + 1000}),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/products/p1/offers",
            json!({"price": {"amount_minor": 1, "currency": "EUR"}, "expires_at": NOW - 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/products/p1/offers",
            json!({"offer_id": "o1", "price": {"amount_minor": 1, "currency": "EUR"}, "expires_at": NOW + 1000}),
            StatusCode::CONFLICT,
        ),
        (
            "PATCH",
            "/offers/ghost",
            json!({"action": "cancel", "expected_version": 1}),
            StatusCode::NOT_FOUND,
        ),
        (
            "PATCH",
            "/offers/o1",
            json!({"action": "explode", "expected_version": 3}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PATCH",
            "/offers/o1",
            json!({"action": "cancel", "expected_version": 3}),
            StatusCode::CONFLICT,
        ),
    ];
    for (method, uri, request, status) in cases {
        assert_eq!(
            app.json(method, uri, request).await.status(),
            status,
            "{method} {uri}"
        );
    }
}

#[tokio::test]
async fn a_retried_view_counts_once_and_unknown_products_are_404() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    let first = app
        .json("POST", "/products/p1/views", json!({"event_id": "evt-1"}))
        .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(
        body(first).await,
        json!({"event_id": "evt-1", "recorded": true})
    );
    let retry = app
        .json("POST", "/products/p1/views", json!({"event_id": "evt-1"}))
        .await;
    assert_eq!(body(retry).await["recorded"], false);
    let anonymous = app
        .send(
            Request::post("/products/p1/views")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status(), StatusCode::ACCEPTED);
    assert_eq!(app.store.view_count(), 2);
    assert_eq!(
        app.json("POST", "/products/ghost/views", json!({}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_feed_pages_through_the_ranking_and_prefetches_the_next_page() {
    let app = TestApp::new();
    let ids: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    for id in &ids {
        app.seed_product(id).await;
    }
    let ranking = RankedFeed {
        kind: FeedKind::Trending,
        ids: ids
            .iter()
            .rev()
            .map(|i| ProductId::parse(i).unwrap())
            .collect(),
        computed_at: NOW,
    };
    app.store.put_feed(&ranking).await.unwrap();

    let page1 = body(app.get("/feed?kind=trending&page=1&per_page=2").await).await;
    let names = |page: &Value| -> Vec<String> {
        page["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["p4", "p3"]);
    assert_eq!(
        (page1["total"].clone(), page1["next_page"].clone()),
        (json!(5), json!(2))
    );

    // The prefetch of page 2 ran after the response: page 2 is already in L1.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let page2 = app.get("/feed?kind=trending&page=2&per_page=2").await;
    assert_eq!(header_of(&page2, "x-cache"), "HIT-L1");
    assert_eq!(names(&body(page2).await), ["p2", "p1"]);
    let last = body(app.get("/feed?page=3&per_page=2").await).await;
    assert_eq!(last["next_page"], Value::Null);
    let empty = body(app.get("/feed?kind=new").await).await;
    assert_eq!(empty["total"], 0);
}

#[tokio::test]
async fn expiring_offers_are_listed_soonest_first() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    app.seed_offer("p1", "o-2h", Duration::from_secs(7200))
        .await;
    app.seed_offer("p1", "o-10m", Duration::from_secs(600))
        .await;
    let json = body(app.get("/offers/expiring?within=1h").await).await;
    assert_eq!(json["within_s"], 3600);
    assert_eq!(json["offers"].as_array().unwrap().len(), 1);
    assert_eq!(json["offers"][0]["offer_id"], "o-10m");
    let all = body(app.get("/offers/expiring?within=3h").await).await;
    assert_eq!(all["offers"].as_array().unwrap().len(), 2);
    assert_eq!(all["source"], "index", "the Redis set was never reconciled");
}

#[tokio::test]
async fn offer_writes_keep_the_expiry_set_in_step_and_a_synced_set_answers_the_route() {
    use catalog_core::expiry_set::ExpirySet;
    let app = TestApp::new();
    app.seed_product("p1").await;
    let set = ExpirySet::new(&app.state.cache);
    set.mark_synced(NOW).await;
    let offer = json!({"offer_id": "o1", "price": {"amount_minor": 900, "currency": "EUR"}, "expires_at": NOW + 600_000});
    assert_eq!(
        app.json("POST", "/products/p1/offers", offer)
            .await
            .status(),
        StatusCode::CREATED
    );
    let listed = body(app.get("/offers/expiring?within=15m").await).await;
    assert_eq!(listed["source"], "set");
    assert_eq!(listed["offers"][0]["offer_id"], "o1");
    assert_eq!(listed["offers"][0]["expires_at"], NOW + 600_000);

    let extend = json!({"action": "extend", "expires_at": NOW + 1_200_000, "expected_version": 1});
    assert_eq!(
        app.json("PATCH", "/offers/o1", extend).await.status(),
        StatusCode::OK
    );
    assert_eq!(set.all().await.unwrap()[0].expires_at, NOW + 1_200_000);
    let within_15m = body(app.get("/offers/expiring?within=15m").await).await;
    assert_eq!(within_15m["offers"], json!([]));

    let cancel = json!({"action": "cancel", "expected_version": 2});
    assert_eq!(
        app.json("PATCH", "/offers/o1", cancel).await.status(),
        StatusCode::OK
    );
    assert!(set.all().await.unwrap().is_empty());

    // Redis flushed: the marker is gone with the members, and the route reads the index.
    app.seed_offer("p1", "o2", Duration::from_secs(60)).await;
    app.l2.flush_all();
    let fallback = body(app.get("/offers/expiring?within=5m").await).await;
    assert_eq!(fallback["source"], "index");
    assert_eq!(fallback["offers"][0]["offer_id"], "o2");
}

#[tokio::test]
async fn a_stale_product_is_served_at_once_and_refreshed_after_the_response() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    app.get("/products/p1").await;
    let mut renamed = product("p1");
    renamed.name = "Renamed behind the cache".into();
    app.store
        .put_product(&renamed, ExpectedVersion::Exactly(1))
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(301)); // past fresh (300 s), inside stale

    let stale = app.get("/products/p1").await;
    assert_eq!(header_of(&stale, "x-cache"), "STALE");
    assert!(header_of(&stale, "cache-control").contains("max-age=0"));
    assert_eq!(body(stale).await["product"]["name"], "Product p1");

    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = app.get("/products/p1").await;
    assert_eq!(header_of(&fresh, "x-cache"), "HIT-L1");
    assert_eq!(
        body(fresh).await["product"]["name"],
        "Renamed behind the cache"
    );
}

#[tokio::test]
async fn a_redis_outage_is_never_a_5xx() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    app.l2.set_failing(true);
    let response = app.get("/products/p1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, "x-cache"), "BYPASS");
    let batch = app
        .json("POST", "/products/batch", json!({"ids": ["p1", "p2"]}))
        .await;
    assert_eq!(batch.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_dynamodb_outage_is_a_503_with_retry_after_unless_a_stale_copy_exists() {
    let app = TestApp::new();
    app.seed_product("cached").await;
    app.get("/products/cached").await;
    app.store.set_unavailable(true);

    let response = app.get("/products/uncached").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_of(&response, "retry-after"), "1");
    let json = body(response).await;
    assert_eq!(json["error"], "unavailable");
    assert!(
        !json.to_string().contains("injected"),
        "internals leaked: {json}"
    );

    app.clock.advance(Duration::from_secs(301));
    let stale = app.get("/products/cached").await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(header_of(&stale, "x-cache"), "STALE");
}

#[tokio::test]
async fn admin_routes_need_the_token_and_reveal_nothing_without_it() {
    let app = TestApp::new();
    for uri in ["/admin/cache/stats", "/admin/cache/health", "/admin/jobs"] {
        for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
            let mut request = Request::get(uri);
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let response = app.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{uri} {auth:?}"
            );
            assert_eq!(header_of(&response, "www-authenticate"), "Bearer");
            let json = body(response).await;
            assert_eq!(
                json.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["error", "message"]
            );
        }
    }
    let warm = app
        .json("POST", "/admin/cache/warm", json!({"top": 5}))
        .await;
    assert_eq!(warm.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_stats_health_warm_invalidate_and_jobs() {
    let app = TestApp::new();
    for id in ["a", "b"] {
        app.seed_product(id).await;
    }
    let warm = app
        .admin(
            "POST",
            "/admin/cache/warm",
            Some(json!({"ids": ["a", "b", "ghost"]})),
        )
        .await;
    assert_eq!(warm.status(), StatusCode::OK);
    let warm = body(warm).await;
    assert_eq!(
        (warm["warmed"].clone(), warm["not_found"].clone()),
        (json!(2), json!(["ghost"]))
    );
    assert_eq!(warm["entries_written"], 6);
    assert_eq!(
        header_of(&app.get("/products/a").await, "x-cache"),
        "HIT-L1"
    );

    // Reads are flushed into the shared per-minute counters after each response.
    app.clock.advance(Duration::from_secs(11));
    app.get("/products/a").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = body(app.admin("GET", "/admin/cache/stats", None).await).await;
    assert!(stats["last_5m"]["reads"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["last_24h"]["hit_ratio"].is_number());
    assert!(stats["redis"]["keys"].as_u64().unwrap() > 0);
    assert!(stats["l1"]["entries"].as_u64().unwrap() > 0);
    assert_eq!(stats["circuit"]["state"], "closed");

    assert!(
        stats["serverless_cache"].is_null(),
        "no CACHE_NAME: {stats}"
    );

    let health = body(app.admin("GET", "/admin/cache/health", None).await).await;
    // No refresh has ever run: a warning, with the refresh alert and since when.
    assert_eq!(health["status"], "WARNING");
    assert_eq!(health["alerts"][0]["figure"], "refresh");
    assert_eq!(health["alerts"][0]["since"], NOW + 11_000);
    assert!(
        health["figures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "hit_ratio")
    );

    let invalidated = body(
        app.admin(
            "POST",
            "/admin/cache/invalidate",
            Some(json!({"ids": ["a"]})),
        )
        .await,
    )
    .await;
    assert_eq!(invalidated["invalidated"], 3);
    assert_eq!(header_of(&app.get("/products/a").await, "x-cache"), "MISS");
    let key = format!("{}summary:{{b}}", app.state.cache.keys().prefix());
    let by_key = app
        .admin(
            "POST",
            "/admin/cache/invalidate",
            Some(json!({"keys": [key]})),
        )
        .await;
    assert_eq!(body(by_key).await["invalidated"], 1);
    let namespace = body(
        app.admin(
            "POST",
            "/admin/cache/invalidate",
            Some(json!({"namespace": "feed"})),
        )
        .await,
    )
    .await;
    assert_eq!(namespace["generation"], 1);
    for bad in [
        json!({"keys": ["*"]}),
        json!({"namespace": "everything"}),
        json!({"ids": ["a"], "namespace": "feed"}),
    ] {
        assert_eq!(
            app.admin("POST", "/admin/cache/invalidate", Some(bad))
                .await
                .status(),
            StatusCode::BAD_REQUEST
        );
    }

    let jobs = body(app.admin("GET", "/admin/jobs", None).await).await;
    assert_eq!(jobs["jobs"], json!([]));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_every_path_is_served() {
    let app = TestApp::new();
    let document = body(app.get("/openapi.json").await).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let expected = [
        ("get", "/products/{id}"),
        ("put", "/products/{id}"),
        ("post", "/products/batch"),
        ("get", "/products/{id}/stats"),
        ("post", "/products/{id}/offers"),
        ("post", "/products/{id}/views"),
        ("patch", "/offers/{id}"),
        ("get", "/offers/expiring"),
        ("get", "/feed"),
        ("get", "/admin/cache/stats"),
        ("get", "/admin/cache/health"),
        ("post", "/admin/cache/warm"),
        ("post", "/admin/cache/invalidate"),
        ("get", "/admin/jobs"),
        ("get", "/status"),
    ];
    let mut documented = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented += 1;
            assert!(
                expected.contains(&(method.as_str(), path.as_str())),
                "undocumented expectation: {method} {path}"
            );
            // Every documented operation reaches a handler (never the no-route fallback).
            let uri = path.replace("{id}", "p1");
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = app.send(request).await;
            if path == "/status" {
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(
                    header_of(&response, "content-type"),
                    "text/html; charset=utf-8"
                );
                continue;
            }
            let json = body(response).await;
            assert_ne!(json["error"], "no_route", "{method} {path}");
            assert_ne!(json["error"], "method_not_allowed", "{method} {path}");
        }
    }
    assert_eq!(documented, expected.len(), "every route is documented");
}

/// A handler that panics, and one whose post-response work panics, behind the API's layers,
/// with the work going where the Lambda runtime layer takes it.
#[tokio::test]
async fn a_panic_never_keeps_the_invocation_s_work_from_the_runtime_layer() {
    use axum::routing::get;

    use crate::deferred::{AfterResponse, Deferred};

    let app = TestApp::new();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let state = AppState {
        after_response: AfterResponse::Invocation(sender),
        ..app.state.clone()
    };
    let ran_after_the_panic = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran = ran_after_the_panic.clone();
    let pushed_before_the_panic = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushed = pushed_before_the_panic.clone();
    let routes = axum::Router::new()
        .route(
            "/boom",
            get(move |deferred: Deferred| async move {
                deferred.push(async move {
                    pushed.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                #[allow(clippy::panic)]
                if true {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        )
        .route(
            "/late-boom",
            get(move |deferred: Deferred| async move {
                deferred.push(async {
                    #[allow(clippy::panic)]
                    {
                        panic!("post-response bug");
                    }
                });
                deferred.push(async move {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                "ok"
            }),
        );
    let router = crate::with_layers(routes, state);

    let response = router
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let batch = receiver
        .try_recv()
        .expect("the panicked request's work was handed on");
    futures::future::join_all(batch).await;
    assert!(pushed_before_the_panic.load(std::sync::atomic::Ordering::SeqCst));

    let response = router
        .oneshot(Request::get("/late-boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let batch = receiver.try_recv().unwrap();
    // Run as the runtime layer runs it: the panic is caught, the rest of the batch still runs.
    futures::future::join_all(batch).await;
    assert!(ran_after_the_panic.load(std::sync::atomic::Ordering::SeqCst));
}

/// The document's links lead to operations it has, each taking the `id` the link gives.
#[tokio::test]
async fn every_openapi_link_leads_to_an_operation_with_that_parameter() {
    let app = TestApp::new();
    let document = body(app.get("/openapi.json").await).await;
    let mut operations = std::collections::HashMap::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            if let Some(id) = operation["operationId"].as_str() {
                operations.insert(id.to_owned(), operation.clone());
            }
        }
    }
    let mut links = 0;
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for response in responses.values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    links += 1;
                    let target = &operations[link["operationId"].as_str().unwrap()];
                    for parameter in link["parameters"].as_object().unwrap().keys() {
                        assert!(
                            target["parameters"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"] == parameter.as_str()),
                            "{link}"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(links, 14, "writes link to what they made");
}

/// Behind the HTTP API's IAM authorisation, `Authorization` holds the SigV4 signature: the
/// token then comes in `X-Api-Token`, and only the right token for the route is accepted.
#[tokio::test]
async fn a_token_in_x_api_token_is_accepted_next_to_a_sigv4_signature() {
    let app = TestApp::new();
    let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/execute-api/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=0123456789abcdef";
    let product = json!({"name": "Lamp", "category": "kitchen", "price": {"amount_minor": 1500, "currency": "EUR"}, "active": true});
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(TOKEN), StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some(WRITE_TOKEN), StatusCode::CREATED),
    ] {
        let mut request = Request::put("/products/lamp")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, sigv4);
        if let Some(token) = token {
            request = request.header("x-api-token", token);
        }
        let response = app
            .send(request.body(Body::from(product.to_string())).unwrap())
            .await;
        assert_eq!(response.status(), status, "{token:?}");
    }
    let stats = app
        .send(
            Request::get("/admin/cache/stats")
                .header(header::AUTHORIZATION, sigv4)
                .header("x-api-token", TOKEN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(stats.status(), StatusCode::OK);
}

/// A body is a JSON object, and so is a price in it: arrays of a struct's fields, which a
/// derived `Deserialize` would read, are refused.
#[tokio::test]
async fn bodies_and_prices_given_as_arrays_are_refused() {
    let app = TestApp::new();
    let cases = [
        (
            "PUT",
            "/products/lamp",
            json!(["Lamp", "", "kitchen", {"amount_minor": 1, "currency": "EUR"}, true]),
        ),
        (
            "PUT",
            "/products/lamp",
            json!({"name": "Lamp", "category": "kitchen", "price": [1500, "EUR"], "active": true}),
        ),
        ("POST", "/products/lamp/views", json!([])),
        ("POST", "/products/lamp/views", json!(["v1"])),
        ("POST", "/products/batch", json!([["p1"]])),
    ];
    for (method, uri, body) in cases {
        let response = app
            .json_as(method, uri, body.clone(), Some(WRITE_TOKEN))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {uri} {body}"
        );
    }
    app.seed_product("lamp").await;
    let view = app
        .json_as("POST", "/products/lamp/views", json!(null), None)
        .await;
    assert_eq!(
        view.status(),
        StatusCode::ACCEPTED,
        "a null body is no body"
    );
}

#[tokio::test]
async fn cache_stats_report_the_serverless_caches_status_and_limits() {
    use catalog_core::elasticache::ControlPlane;
    use catalog_core::elasticache::testing::{client_answering, describe_response};

    let mut app = TestApp::new();
    let recorded = describe_response("catalog-cache", "modifying", Some(("cache.example", 6379)));
    let (client, calls) = client_answering(200, recorded);
    app.state.control_plane = Some(ControlPlane::new(client, "catalog-cache"));
    let stats = body(app.admin("GET", "/admin/cache/stats", None).await).await;
    assert_eq!(
        stats["serverless_cache"],
        json!({
            "name": "catalog-cache",
            "status": "modifying",
            "endpoint": "cache.example:6379",
            "data_storage_max_gb": 5,
            "ecpu_per_second_max": 5000,
        })
    );
    assert_eq!(calls.lock().unwrap().len(), 1);

    // A control plane that refuses leaves the figure empty; the rest of the stats still answer.
    let denied = r#"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>"#;
    let (client, _) = client_answering(403, denied.into());
    app.state.control_plane = Some(ControlPlane::new(client, "catalog-cache"));
    let stats = app.admin("GET", "/admin/cache/stats", None).await;
    assert_eq!(stats.status(), StatusCode::OK);
    let stats = body(stats).await;
    assert!(stats["serverless_cache"].is_null(), "{stats}");
    assert!(stats["l1"]["max_bytes"].is_number());
}

#[tokio::test]
async fn requests_are_counted_per_route_template_with_their_answers_latency_and_data_age() {
    let app = TestApp::new();
    app.seed_product("p1").await;
    assert_eq!(header_of(&app.get("/products/p1").await, "x-cache"), "MISS");
    let batch = app.json("POST", "/products/batch", json!({"ids": ["p1"]}));
    assert_eq!(batch.await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(30));
    // Past L1's poll bound, the second read is answered by Redis, 30 s old.
    assert_eq!(
        header_of(&app.get("/products/p1").await, "x-cache"),
        "HIT-L2"
    );
    assert_eq!(
        app.get("/products/nope").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/feed?kind=trending&per_page=5").await.status(),
        StatusCode::OK
    );
    // A batch of a fresh load and the 30 s old p1 counts the age of its oldest item.
    app.seed_product("p2").await;
    let batch = app
        .json("POST", "/products/batch", json!({"ids": ["p1", "p2"]}))
        .await;
    assert_eq!(batch.status(), StatusCode::OK);
    // Whatever a deferred flush took lands first; then the rest.
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.state
        .cache
        .flush_counters(Duration::ZERO, None)
        .await
        .unwrap();
    let stats = body(app.admin("GET", "/admin/cache/stats", None).await).await;
    let routes = stats["routes"]["last_5m"].as_array().unwrap();
    let product = element(&stats["routes"]["last_5m"], "route", "GET /products/{id}");
    assert_eq!(product["category"], "product");
    assert_eq!(product["requests"], 3);
    assert_eq!(
        product["answers"],
        json!({"loaded": 1, "l2": 1, "not_found": 1})
    );
    // Ages under the manual clock: 0 ms for the load, 30 s for the L2 hit (bucket bounds are
    // at most 12.5% above the value).
    let age_p99 = product["age_ms"]["p99"].as_u64().unwrap();
    assert!((30_000..=33_750).contains(&age_p99), "{age_p99}");
    assert_eq!(product["age_ms"]["p50"], 0);
    assert!(product["latency_us"]["p99"].as_u64().unwrap() > 0);
    let batch = element(&stats["routes"]["last_5m"], "route", "POST /products/batch");
    assert_eq!(batch["age_ms"]["p50"], 0, "{batch}");
    let age_p99 = batch["age_ms"]["p99"].as_u64().unwrap();
    assert!((30_000..=33_750).contains(&age_p99), "{batch}");
    let feed = element(&stats["routes"]["last_5m"], "route", "GET /feed");
    assert_eq!(feed["category"], "feed");
    // The windows nest, and the breakdown adds up to the requests counted.
    for route in routes {
        let answers: u64 = route["answers"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(answers, route["requests"].as_u64().unwrap(), "{route}");
    }
    assert_eq!(stats["routes"]["last_1h"], stats["routes"]["last_5m"]);
    assert_eq!(stats["routes"]["last_24h"], stats["routes"]["last_5m"]);
    // The cache's own operations, per tier: the miss loaded once and wrote to Redis; the
    // reads asked Redis.
    for name in ["l2_get", "l2_set", "load"] {
        let operation = element(&stats["operations"]["last_5m"], "operation", name);
        assert!(operation["calls"].as_u64().unwrap() >= 1, "{operation}");
        assert!(operation["latency_us"]["p50"].is_u64(), "{operation}");
    }
}

#[tokio::test]
async fn a_category_serving_data_older_than_its_objective_makes_health_warn_until_it_is_fresh() {
    let mut app = TestApp::new();
    app.state.freshness.product = Duration::from_secs(20);
    app.state.alert_history = Duration::from_secs(600);
    app.seed_product("p1").await;
    app.get("/products/p1").await;
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(
        header_of(&app.get("/products/p1").await, "x-cache"),
        "HIT-L2"
    );
    // Enough answers for the p99 to be judged (health ignores fewer than 20).
    for _ in 0..20 {
        app.get("/products/p1").await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.state.cache.flush_counters(Duration::ZERO, None).await;
    let health = body(app.admin("GET", "/admin/cache/health", None).await).await;
    let alert = element(&health["alerts"], "figure", "freshness_product");
    assert_eq!(alert["severity"], "WARNING");
    let age = element(&health["figures"], "name", "data_age_p99_s_product");
    assert!(
        (28.0..=30.0).contains(&age["value"].as_f64().unwrap()),
        "{age}"
    );
    // The history says when it was raised, with the figure's value then.
    let raised = element(&health["history"], "figure", "freshness_product").clone();
    assert_eq!(
        (raised["event"].as_str(), raised["severity"].as_str()),
        (Some("raised"), Some("WARNING"))
    );
    assert_eq!(raised["value"], age["value"]);
    // Asked again, nothing new is raised.
    let again = body(app.admin("GET", "/admin/cache/health", None).await).await;
    assert_eq!(again["history"], health["history"]);
    // Five minutes on, the old reads have left the window: the alert clears, and the history
    // says so, newest first.
    app.clock.advance(Duration::from_secs(6 * 60));
    let health = body(app.admin("GET", "/admin/cache/health", None).await).await;
    assert!(
        !health["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["figure"] == "freshness_product"),
        "{health}"
    );
    let history: Vec<&str> = health["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["figure"] == "freshness_product")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["cleared", "raised"]);
    // Past the history's window (10 minutes here), both events are gone.
    app.clock.advance(Duration::from_secs(11 * 60));
    let health = body(app.admin("GET", "/admin/cache/health", None).await).await;
    assert!(
        !health["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["figure"] == "freshness_product"),
        "{health}"
    );
}

#[tokio::test]
async fn a_redis_outage_is_in_the_alert_history_once_redis_is_back() {
    let app = TestApp::new();
    let history_of = |health: &Value, figure: &str| -> Vec<(String, Value)> {
        health["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["figure"] == figure)
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_owned(),
                    e["environment"].clone(),
                )
            })
            .collect()
    };
    app.l2.set_failing(true);
    let down = body(app.admin("GET", "/admin/cache/health", None).await).await;
    let alert = element(&down["alerts"], "figure", "redis");
    assert_eq!(alert["severity"], "CRITICAL");
    // Kept by this environment while Redis cannot take it.
    assert_eq!(history_of(&down, "redis").len(), 1, "{down}");
    app.l2.set_failing(false);
    app.clock.advance(Duration::from_secs(60));
    let back = body(app.admin("GET", "/admin/cache/health", None).await).await;
    let events = history_of(&back, "redis");
    let environment = json!(app.state.cache.environment());
    assert_eq!(
        events,
        [
            ("cleared".to_owned(), environment.clone()),
            ("raised".to_owned(), environment)
        ],
        "{back}"
    );
    // Written to Redis: asked again, the history comes from Redis, not this queue.
    let again = body(app.admin("GET", "/admin/cache/health", None).await).await;
    assert_eq!(history_of(&again, "redis").len(), 2, "{again}");
}

#[tokio::test]
async fn jobs_say_when_each_ran_and_when_it_is_expected_next() {
    let app = TestApp::new();
    let jobs = body(app.admin("GET", "/admin/jobs", None).await).await;
    let schedule = jobs["schedule"].as_array().unwrap();
    assert_eq!(schedule.len(), 3, "{jobs}");
    for job in schedule {
        assert!(job["next_expected_at"].is_null());
        // The scheduled jobs should have run; the view-aggregator has had nothing to do.
        let aggregator = job["job"] == "view-aggregator";
        assert_eq!(job["overdue"], !aggregator, "never ran: {job}");
        assert_eq!(job["idle"], aggregator, "{job}");
    }
    let mut run = catalog_core::model::JobRun::new(
        "offer-expiry",
        NOW - 30_000,
        catalog_core::model::RunOutcome::Succeeded,
    );
    run.duration_ms = 120;
    run.lag_ms = Some(4_000);
    catalog_core::jobs::metrics::record_run(app.store.as_ref(), &run)
        .await
        .unwrap();
    let jobs = body(app.admin("GET", "/admin/jobs", None).await).await;
    let expiry = element(&jobs["schedule"], "job", "offer-expiry").clone();
    assert_eq!(expiry["every_s"], 60);
    assert_eq!(expiry["last_duration_ms"], 120);
    assert_eq!(expiry["last_lag_ms"], 4_000);
    assert_eq!(expiry["next_expected_at"], NOW + 30_000);
    assert_eq!(expiry["overdue"], false);
    // More than one interval past the expected time.
    app.clock.advance(Duration::from_secs(91));
    let jobs = body(app.admin("GET", "/admin/jobs", None).await).await;
    let expiry = element(&jobs["schedule"], "job", "offer-expiry").clone();
    assert_eq!(expiry["overdue"], true);
}

#[tokio::test]
async fn the_view_aggregator_is_expected_only_once_views_were_recorded_after_its_last_window() {
    let mut app = TestApp::new();
    // Only the test flushes, when it says.
    app.state.counters_flush_every = Duration::from_secs(86_400);
    let app = app;
    let aggregator = || async {
        let jobs = body(app.admin("GET", "/admin/jobs", None).await).await;
        element(&jobs["schedule"], "job", "view-aggregator").clone()
    };
    let window_ms = app.state.view_window.as_millis() as i64;
    let now = || catalog_core::clock::Clock::now_ms(app.clock.as_ref());
    let view = |event: String, product: &'static str| {
        let app = &app;
        async move {
            let uri = format!("/products/{product}/views");
            app.json("POST", &uri, json!({"event_id": event}))
                .await
                .status()
        }
    };
    let flush = || app.state.cache.flush_counters(Duration::ZERO, None);
    let report = |window_end: i64| {
        let mut run = catalog_core::model::JobRun::new(
            "view-aggregator",
            now(),
            catalog_core::model::RunOutcome::Succeeded,
        );
        run.duration_ms = 15;
        run.lag_ms = u64::try_from(now() - window_end).ok();
        let store = app.store.clone();
        async move {
            catalog_core::jobs::metrics::record_run(store.as_ref(), &run)
                .await
                .unwrap();
        }
    };
    app.seed_product("p1").await;
    // A view the stream never gets (an unknown product) is not pending.
    assert_eq!(view("evt-0".into(), "nope").await, StatusCode::NOT_FOUND);
    flush().await;
    assert_eq!(aggregator().await["idle"], true);
    // A view at NOW whose environment flushes only after the window holding it was reported
    // (frozen in between): counted under its own minute, it is not pending.
    assert_eq!(view("evt-1".into(), "p1").await, StatusCode::ACCEPTED);
    app.clock.advance(Duration::from_secs(300));
    report(NOW + 60_000).await;
    flush().await;
    let reported = aggregator().await;
    assert_eq!(
        (&reported["idle"], &reported["overdue"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(reported["last_duration_ms"], 15);
    // An hour on, a new view: its window closes by the end of its minute plus a window.
    app.clock.advance(Duration::from_secs(3600));
    let minute = now() - now().rem_euclid(60_000);
    assert_eq!(view("evt-2".into(), "p1").await, StatusCode::ACCEPTED);
    flush().await;
    let pending = aggregator().await;
    assert_eq!(pending["idle"], false, "{pending}");
    assert_eq!(pending["next_expected_at"], minute + 60_000 + window_ms);
    assert_eq!(pending["overdue"], false);
    // Views keep arriving minute after minute, a retry among them, and no report comes: the
    // first of them is what the window is late for.
    for n in 0..(2 * window_ms / 60_000 + 2) {
        app.clock.advance(Duration::from_secs(60));
        assert_eq!(view("evt-2".into(), "p1").await, StatusCode::ACCEPTED);
        assert_eq!(view(format!("evt-3-{n}"), "p1").await, StatusCode::ACCEPTED);
        flush().await;
    }
    let late = aggregator().await;
    assert_eq!(
        late["next_expected_at"],
        minute + 60_000 + window_ms,
        "{late}"
    );
    assert_eq!(late["overdue"], true, "{late}");
    // The window's report arrives, covering them: neither expected nor overdue however long
    // the stream stays quiet, and a retried view (no new record) does not change that.
    report(now()).await;
    app.clock.advance(Duration::from_secs(3600));
    assert_eq!(view("evt-2".into(), "p1").await, StatusCode::ACCEPTED);
    flush().await;
    let quiet = aggregator().await;
    assert_eq!(
        (
            &quiet["idle"],
            &quiet["overdue"],
            &quiet["next_expected_at"]
        ),
        (&json!(true), &json!(false), &Value::Null),
        "{quiet}"
    );
}

#[tokio::test]
async fn unmatched_requests_and_panicking_handlers_are_counted_too() {
    let app = TestApp::new();
    let routes = axum::Router::new().route(
        "/boom/{id}",
        axum::routing::get(|| async {
            #[allow(clippy::panic)]
            if true {
                panic!("handler bug");
            }
            "unreachable"
        }),
    );
    let router = crate::with_layers(routes, app.state.clone());
    for uri in ["/boom/1", "/boom/2", "/nowhere"] {
        router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.state.cache.flush_counters(Duration::ZERO, None).await;
    let routes = app.state.cache.history().await.routes.last_5m;
    let boom = routes.iter().find(|r| r.route == "GET /boom/{id}").unwrap();
    assert_eq!((boom.requests, boom.answers["error"]), (2, 2), "{routes:?}");
    let unmatched = routes
        .iter()
        .find(|r| r.route == crate::observe::UNMATCHED)
        .unwrap();
    assert_eq!((unmatched.requests, unmatched.answers["not_found"]), (1, 1));
    assert_eq!(unmatched.category, "none");
}
