//! The scheduled jobs of `make dev`: each runs once at start, then on its interval, in the
//! background of the API process (as EventBridge would invoke the functions).

use std::future::Future;
use std::time::Duration;

use catalog_core::clock::{Clock, SystemClock};
use catalog_core::jobs::offer_expiry::{self, ExpiryDeps, ExpiryOptions};
use catalog_core::jobs::refresh::{self, RefreshDeps, RefreshOptions};

/// Runs `job` every `interval` (the first tick after one interval; callers run it once
/// themselves first) until the process ends.
fn every<F, Fut>(interval: Duration, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            job().await;
        }
    });
}

/// Refreshes now, then every `interval`. Returns how many products the first run refreshed.
pub async fn start_refresh(deps: RefreshDeps, options: RefreshOptions, interval: Duration) -> u64 {
    let first = refresh::refresh_once(&deps, &options, SystemClock.now_ms(), None).await;
    every(interval, move || {
        let (deps, options) = (deps.clone(), options);
        async move {
            refresh::refresh_once(&deps, &options, SystemClock.now_ms(), None).await;
        }
    });
    first.refreshed
}

/// Expires due offers now (which also reconciles the Redis set with the index), then every
/// `interval`.
pub async fn start_offer_expiry(deps: ExpiryDeps, options: ExpiryOptions, interval: Duration) {
    offer_expiry::expire_once(&deps, &options, SystemClock.now_ms(), None).await;
    every(interval, move || {
        let (deps, options) = (deps.clone(), options);
        async move {
            offer_expiry::expire_once(&deps, &options, SystemClock.now_ms(), None).await;
        }
    });
}
