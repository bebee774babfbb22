//! The `refresh` Lambda function: clients built once at cold start, one run per invocation.

use catalog_core::clock::SystemClock;
use catalog_core::config::Config;
use catalog_core::jobs::refresh::{RefreshDeps, RefreshOptions};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

/// mimalloc: faster than the system allocator for this many small JSON allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalog_core::telemetry::init();
    let config = Config::from_env()?;
    let store = catalog_core::wiring::dynamo_store(&config).await;
    let deps = RefreshDeps {
        catalog: store.clone(),
        stats: store,
        cache: catalog_core::wiring::cache(&config).await,
    };
    let options = RefreshOptions {
        concurrency: config.jobs.refresh_concurrency,
        ..RefreshOptions::default()
    };
    let (deps, options) = (&deps, &options);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = event.context.deadline;
        let outcome = refresh::handle(&event.payload, deadline, deps, options, &SystemClock).await;
        Ok::<_, lambda_runtime::Error>(outcome)
    }))
    .await
}
