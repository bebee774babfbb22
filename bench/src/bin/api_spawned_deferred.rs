//! The `api` function without its post-response runtime layer: deferred work is spawned, as on
//! a long-running server. Not deployable (Lambda would freeze that work until the next invoke);
//! measured beside the real `api` under the same emulator, it isolates what running the work
//! inside the invocation costs.

use catalog_core::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    catalog_core::telemetry::init();
    let config = Config::from_env()?;
    let state = api::AppState::from_config(&config).await;
    lambda_http::run(api::router(state)).await
}
