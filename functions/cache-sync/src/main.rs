//! The `cache-sync` Lambda function: triggered by the catalog table's stream
//! (`NEW_AND_OLD_IMAGES`); the Redis connection is built once at cold start.

use catalog_core::config::Config;
use catalog_core::streams::RawEvent;
use lambda_runtime::{LambdaEvent, service_fn};

/// mimalloc: faster than the system allocator for this many small JSON allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalog_core::telemetry::init();
    let config = Config::from_env()?;
    if config.redis.is_none() {
        // Without Redis there is nothing to keep in step: fail the cold start loudly rather
        // than acknowledge every record.
        return Err(
            "cache-sync needs REDIS_ENDPOINTS or CACHE_NAME: it keeps Redis in step with the catalog".into(),
        );
    }
    let cache = catalog_core::wiring::cache(&config).await;
    let cache = &cache;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RawEvent>| async move {
        cache_sync::handle(event.payload, cache).await
    }))
    .await
}
