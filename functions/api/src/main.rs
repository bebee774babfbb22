//! The `api` Lambda function: configuration and clients are built once at cold start, then
//! invocations are served by the shared router.

use catalog_core::config::Config;

/// mimalloc: faster than the system allocator for this many small JSON allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread: Lambda sends an environment one request at a time, and the handler, the Redis
/// connection's driver and the runtime client on one thread hand work to each other without
/// waking a second one (`make bench`: `lambda_watch_*`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    catalog_core::telemetry::init();
    let config = Config::from_env()?;
    let state = api::AppState::from_config(&config).await;
    api::lambda::run(state).await
}
