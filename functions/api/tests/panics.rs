//! Panics under the Lambda runtime: the real `lambda::run` (runtime client, the layer that
//! runs post-response work, the API's layers) against the runtime API emulator, in its own test
//! binary because the runtime reads its endpoint from the process environment.
//!
//! A handler that panics, and post-response work that panics, must neither hold the
//! environment (waiting for work that never comes, until 200 ms before the deadline) nor kill
//! the process: the next invocation is delivered and answered promptly.

// Test code: a failed unwrap is a failed test with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::AppState;
use api::deferred::Deferred;
use axum::Router;
use axum::routing::get;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::config::Config;
use catalog_core::store::memory::MemoryStore;
use integration_tests::lambda_emulator::Emulator;
use serde_json::Value;

/// The emulator gives each invocation 30 s; a runtime held until its deadline would keep the
/// next invocation waiting about that long. Ten seconds tells the two apart on any machine.
const NEXT_INVOCATION_WITHIN: Duration = Duration::from_secs(10);

fn get_event(path: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/apigw-v2-http-get.json"
    ))
    .unwrap();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    event
}

fn status(invocation: &integration_tests::lambda_emulator::Invocation) -> u64 {
    invocation.response["statusCode"].as_u64().unwrap_or(0)
}

/// Routes that panic, added to the real router behind its layers.
fn panicking_routes(ran_after_the_panic: Arc<AtomicBool>) -> Router<AppState> {
    let ran = ran_after_the_panic.clone();
    Router::new()
        .route(
            "/ran-after-the-panic",
            get(move || async move { ran.load(Ordering::SeqCst).to_string() }),
        )
        .route(
            "/boom",
            get(|| async {
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
                let ran = ran_after_the_panic.clone();
                deferred.push(async move {
                    ran.store(true, Ordering::SeqCst);
                });
                "ok"
            }),
        )
}

/// Set in the child process that runs the function.
const CHILD: &str = "CATALOG_PANICS_TEST_CHILD";

/// The function: the real `lambda::run` with the panicking routes. It runs only in the child
/// process the test below starts (re-running this test binary with the runtime's variables
/// set); run directly it returns at once.
#[test]
#[ignore = "the function process of the test below; it starts it itself"]
fn function_with_panicking_routes() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let config = Config::from_lookup(|name| match name {
        "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("panics".into()),
        "ADMIN_TOKEN" => Some("panics-admin-token".into()),
        "WRITE_TOKEN" => Some("panics-write-token".into()),
        _ => None,
    })
    .unwrap();
    let ran_after_the_panic = Arc::new(AtomicBool::new(false));
    let result = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let cache = Cache::new(CacheOptions::default(), None, Arc::new(SystemClock));
        let state = AppState::new(store.clone(), store.clone(), store, cache, &config);
        api::lambda::run_with(state, panicking_routes(ran_after_the_panic)).await
    });
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_neither_hold_the_environment_nor_kill_the_process() {
    let emulator = Emulator::start().await;
    let mut function = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "function_with_panicking_routes",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        // The panics are expected; their messages suffice.
        .env("RUST_BACKTRACE", "0")
        .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "api")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let boom = emulator
        .invoke(get_event("/boom"), Duration::from_secs(30))
        .await;
    assert_eq!(status(&boom), 500, "{:?}", boom.response);
    let body: Value = serde_json::from_str(boom.response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "internal");

    let after_boom = emulator
        .try_invoke(get_event("/openapi.json"), NEXT_INVOCATION_WITHIN)
        .await
        .expect("the next invocation is delivered: nothing waited for the deadline");
    assert_eq!(status(&after_boom), 200, "{:?}", after_boom.response);

    let late = emulator
        .invoke(get_event("/late-boom"), Duration::from_secs(30))
        .await;
    assert_eq!(status(&late), 200);
    let after_late = emulator
        .try_invoke(get_event("/openapi.json"), NEXT_INVOCATION_WITHIN)
        .await
        .expect("the next invocation is delivered after post-response work panicked");
    assert_eq!(status(&after_late), 200);
    let ran = emulator
        .invoke(get_event("/ran-after-the-panic"), Duration::from_secs(30))
        .await;
    assert_eq!(
        ran.response["body"], "true",
        "the rest of the panicked batch still ran"
    );
    assert!(
        function.try_wait().unwrap().is_none(),
        "the function process is still running"
    );
}
