//! The floor of any cache read over Redis: a plain GET on one connection, measured in the same
//! run as the figures compared with it.

use std::time::{Duration, Instant};

use crate::stats::Samples;

/// p50 of `GET` over `keys` in turn (each must exist), one at a time on one multiplexed
/// connection (what the engine uses), after a warm-up pass.
pub async fn get_p50(node: &str, keys: &[String]) -> anyhow::Result<Duration> {
    Ok(get_samples(node, keys).await?.percentile(50.0))
}

/// The latencies behind [`get_p50`].
pub async fn get_samples(node: &str, keys: &[String]) -> anyhow::Result<Samples> {
    anyhow::ensure!(!keys.is_empty(), "no keys to read");
    let client = redis::Client::open(format!("redis://{node}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let reads = keys.len().max(5_000);
    let mut samples = Samples::with_capacity(reads);
    for i in 0..keys.len() + reads {
        let started = Instant::now();
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&keys[i % keys.len()])
            .query_async(&mut conn)
            .await?;
        if i >= keys.len() {
            samples.push(started.elapsed());
        }
        anyhow::ensure!(value.is_some(), "{} is not in Redis", keys[i % keys.len()]);
    }
    Ok(samples)
}
