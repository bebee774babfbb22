//! The `api` binary under a Lambda runtime: work after the response, and a GET through
//! `cargo lambda watch`.

use std::time::Duration;

use catalog_core::ExpectedVersion;
use catalog_core::cache::envelope;
use catalog_core::store::ProductWriter;
use integration_tests::lambda_emulator::{Emulator, Event};
use integration_tests::{CargoLambdaWatch, connect, standalone_config};
use redis::AsyncCommands;

use crate::support::{ApiProcess, Services, get_event, http_response, product};

const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Given a product whose cached copy is stale, when it is read through the real runtime, then
/// the stale copy is answered at once, the revalidation finishes after the response was posted
/// and before the runtime asks for the next invocation (Lambda would freeze the environment in
/// between), and the next invocation sees the fresh product.
#[tokio::test]
async fn the_response_arrives_before_the_revalidation_which_finishes_before_the_next_invocation() {
    let services = Services::new().await;
    services.seed("p1", "Old name").await;
    let emulator = Emulator::start().await;
    let _api = ApiProcess::start(
        &emulator.runtime_api(),
        services.env(&[
            ("CACHE_TTL_PRODUCT_SECS", "1"),
            ("CACHE_STALE_PRODUCT_SECS", "300"),
        ]),
    );

    let first = http_response(
        &emulator
            .invoke(get_event("/products/p1"), INVOKE_TIMEOUT)
            .await
            .response,
    );
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.headers["x-cache"], "MISS");
    assert!(
        emulator.extensions().await.is_empty(),
        "no extension: the runtime itself runs the work after the response"
    );

    // The product changes behind the cache, and the cached copy goes stale.
    services
        .store
        .put_product(&product("p1", "New name"), ExpectedVersion::Exactly(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let stale = emulator
        .invoke(get_event("/products/p1"), INVOKE_TIMEOUT)
        .await;
    let stale_response = http_response(&stale.response);
    assert_eq!(stale_response.headers["x-cache"], "STALE");
    assert_eq!(stale_response.body["product"]["name"], "Old name");

    let third = http_response(
        &emulator
            .invoke(get_event("/products/p1"), INVOKE_TIMEOUT)
            .await
            .response,
    );
    assert_eq!(third.body["product"]["name"], "New name");
    assert_eq!(
        third.headers["x-cache"], "HIT-L1",
        "the revalidation filled this environment's L1"
    );

    // When the revalidation wrote the fresh copy to Redis.
    let mut redis = connect(&standalone_config()).await;
    let bytes: Vec<u8> = redis
        .get(format!("{}product:{{p1}}", services.prefix))
        .await
        .unwrap();
    let revalidated_at = envelope::decode_header(&bytes).unwrap().stored_at;

    let events = emulator.events().await;
    let delivered: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
        .collect();
    assert!(
        stale.responded_at_ms < revalidated_at,
        "the response was posted before the revalidation finished: {events:?}"
    );
    assert!(
        revalidated_at <= delivered[2],
        "the runtime asked for the next invocation (where Lambda freezes the environment) only after the revalidation: {events:?}"
    );
}

/// One GET through cargo-lambda's runtime emulator (`cargo lambda watch --only-lambda-apis`),
/// the function running as the real `api` binary, invoked as a Lambda function URL.
#[tokio::test]
async fn a_get_through_cargo_lambda_watch() {
    let services = Services::new().await;
    services.seed("p1", "Kettle").await;
    let watch = CargoLambdaWatch::start(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).await;
    // A function that dies would leave the request waiting; a timeout turns that into a failure.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let _api = ApiProcess::start(&watch.runtime_api(), services.env(&[]));

    let url = watch.function_url("/products/p1");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["product"]["name"], "Kettle");
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT-L1");
}
