//! Building the clients every function needs, once, at cold start.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::l2::L2Store;
use crate::cache::l2::redis::RedisL2;
use crate::cache::{Cache, CacheOptions};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::store::dynamo::{self, DynamoStore};

/// How long init waits for the first Redis connection before serving without it; the
/// connection keeps being retried in the background.
pub const REDIS_INIT_WAIT: Duration = Duration::from_millis(1500);

/// The DynamoDB store for the configured tables.
pub async fn dynamo_store(config: &Config) -> Arc<DynamoStore> {
    let client = dynamo::client(&config.dynamodb).await;
    Arc::new(DynamoStore::new(client, config.tables.clone()))
}

/// The cache engine on the configured Redis (L1 only without `REDIS_ENDPOINTS`).
pub async fn cache(config: &Config) -> Cache {
    let l2 = match &config.redis {
        Some(redis) => {
            Some(RedisL2::connect(redis.clone(), REDIS_INIT_WAIT).await as Arc<dyn L2Store>)
        }
        None => {
            tracing::warn!("REDIS_ENDPOINTS is not set: running with the in-process cache only");
            None
        }
    };
    Cache::new(
        CacheOptions::from_config(&config.cache, config.redis.as_ref()),
        l2,
        Arc::new(SystemClock),
    )
}
