//! The `view-aggregator` Lambda function: triggered by the views table's stream with a
//! tumbling window; clients built once at cold start.

use catalog_core::config::Config;
use catalog_core::streams::RawEvent;
use catalog_core::streams::views::{ViewAggDeps, ViewAggOptions};
use lambda_runtime::{LambdaEvent, service_fn};

/// mimalloc: faster than the system allocator for this many small JSON allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalog_core::telemetry::init();
    let config = Config::from_env()?;
    let store = catalog_core::wiring::dynamo_store(&config).await;
    let deps = ViewAggDeps {
        products: store.clone(),
        stats: store,
        cache: catalog_core::wiring::cache(&config).await,
    };
    let options = ViewAggOptions::from_config(&config.jobs);
    let (deps, options) = (&deps, &options);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RawEvent>| async move {
        view_aggregator::handle(event.payload, deps, options).await
    }))
    .await
}
