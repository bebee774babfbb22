//! Building the clients every function needs, once, at cold start.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::l2::L2Store;
use crate::cache::l2::redis::RedisL2;
use crate::cache::{Cache, CacheOptions};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::elasticache::ControlPlane;
use crate::store::dynamo::{self, DynamoStore};

/// How long init waits for the first Redis connection before serving without it; the
/// connection keeps being retried in the background.
pub const REDIS_INIT_WAIT: Duration = Duration::from_millis(1500);

/// The DynamoDB store for the configured tables.
pub async fn dynamo_store(config: &Config) -> Arc<DynamoStore> {
    let client = dynamo::client(&config.dynamodb).await;
    Arc::new(DynamoStore::new(client, config.tables.clone()))
}

/// The control plane of the configured `CACHE_NAME`, if any (its client is built on first use).
pub fn control_plane(config: &Config) -> Option<ControlPlane> {
    let name = config.redis.as_ref()?.cache_name.as_ref()?;
    Some(ControlPlane::from_environment(name.clone()))
}

/// The cache engine on the configured Redis (L1 only without `REDIS_ENDPOINTS` or
/// `CACHE_NAME`). A cache given by name alone is looked up through its control plane.
pub async fn cache(config: &Config) -> Cache {
    cache_with(config, control_plane(config).as_ref()).await
}

/// [`cache`], looking a nameless endpoint up through `control_plane` (in the background, until
/// it answers: meanwhile the engine reads through to the database).
pub async fn cache_with(config: &Config, control_plane: Option<&ControlPlane>) -> Cache {
    crate::aws::install_crypto_provider();
    let l2 = match &config.redis {
        Some(redis) => Some(
            RedisL2::connect_discovering(redis.clone(), control_plane.cloned(), REDIS_INIT_WAIT)
                .await as Arc<dyn L2Store>,
        ),
        None => {
            tracing::warn!(
                "neither REDIS_ENDPOINTS nor CACHE_NAME is set: running with the in-process cache only"
            );
            None
        }
    };
    Cache::new(
        CacheOptions::from_config(&config.cache, config.redis.as_ref()),
        l2,
        Arc::new(SystemClock),
    )
}
