//! The `offer-expiry` Lambda function: clients built once at cold start, one run per
//! invocation (an EventBridge schedule, every minute).

use catalog_core::clock::SystemClock;
use catalog_core::config::Config;
use catalog_core::jobs::offer_expiry::{ExpiryDeps, ExpiryOptions};
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
    let deps = ExpiryDeps {
        catalog: store.clone(),
        stats: store,
        cache: catalog_core::wiring::cache(&config).await,
    };
    let options = ExpiryOptions::from_config(&config.jobs);
    let (deps, options) = (&deps, &options);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = event.context.deadline;
        let outcome =
            offer_expiry::handle(&event.payload, deadline, deps, options, &SystemClock).await;
        Ok::<_, lambda_runtime::Error>(outcome)
    }))
    .await
}
