//! Building the clients every function needs, once, at cold start.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::l2::L2Store;
use crate::cache::l2::redis::RedisL2;
use crate::cache::{Cache, CacheOptions};
use crate::clock::SystemClock;
use crate::config::{Config, RedisConfig};
use crate::elasticache::{ControlPlane, ServerlessCacheInfo};
use crate::store::dynamo::{self, DynamoStore};

/// How long init waits for the first Redis connection before serving without it; the
/// connection keeps being retried in the background.
pub const REDIS_INIT_WAIT: Duration = Duration::from_millis(1500);

/// The DynamoDB store for the configured tables.
pub async fn dynamo_store(config: &Config) -> Arc<DynamoStore> {
    let client = dynamo::client(&config.dynamodb).await;
    Arc::new(DynamoStore::new(client, config.tables.clone()))
}

/// The control plane of the configured `CACHE_NAME`, if any.
pub async fn control_plane(config: &Config) -> Option<ControlPlane> {
    let name = config.redis.as_ref()?.cache_name.as_ref()?;
    Some(ControlPlane::from_environment(name.clone()).await)
}

/// The cache engine on the configured Redis (L1 only without `REDIS_ENDPOINTS` or
/// `CACHE_NAME`). A cache given by name alone is looked up first.
pub async fn cache(config: &Config) -> Cache {
    let needs_discovery = config.redis.as_ref().is_some_and(|r| r.nodes.is_empty());
    let control_plane = if needs_discovery {
        control_plane(config).await
    } else {
        None
    };
    cache_with(config, control_plane.as_ref()).await
}

/// [`cache`], looking a nameless endpoint up through `control_plane`.
pub async fn cache_with(config: &Config, control_plane: Option<&ControlPlane>) -> Cache {
    let redis = match &config.redis {
        Some(redis) if redis.nodes.is_empty() => discover(redis, control_plane).await,
        Some(redis) => Some(redis.clone()),
        None => {
            tracing::warn!(
                "neither REDIS_ENDPOINTS nor CACHE_NAME is set: running with the in-process cache only"
            );
            None
        }
    };
    let l2 = match &redis {
        Some(redis) => {
            Some(RedisL2::connect(redis.clone(), REDIS_INIT_WAIT).await as Arc<dyn L2Store>)
        }
        None => None,
    };
    Cache::new(
        CacheOptions::from_config(&config.cache, redis.as_ref()),
        l2,
        Arc::new(SystemClock),
    )
}

/// `redis` with the endpoint the control plane gives for its cache, or `None` (and a
/// warning: the function then serves from L1 and DynamoDB) if it gives none.
async fn discover(
    redis: &RedisConfig,
    control_plane: Option<&ControlPlane>,
) -> Option<RedisConfig> {
    let Some(control_plane) = control_plane else {
        tracing::warn!("no control plane to look CACHE_NAME up: running without Redis");
        return None;
    };
    match control_plane.describe().await {
        Ok(ServerlessCacheInfo {
            endpoint: Some(endpoint),
            status,
            ..
        }) => {
            tracing::info!(cache = control_plane.cache_name(), %endpoint, %status, "discovered the cache's endpoint");
            Some(RedisConfig {
                nodes: vec![endpoint],
                ..redis.clone()
            })
        }
        Ok(info) => {
            tracing::warn!(cache = control_plane.cache_name(), status = %info.status, "the cache has no endpoint yet: running without Redis");
            None
        }
        Err(e) => {
            tracing::warn!(cache = control_plane.cache_name(), error = %e, "cannot look the cache up: running without Redis");
            None
        }
    }
}
