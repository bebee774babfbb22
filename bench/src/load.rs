//! A closed-loop HTTP load generator on loopback: `concurrency` workers, each sending its next
//! request when the previous one is answered, for a fixed duration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::stats::Samples;

/// What a load run saw.
pub struct LoadResult {
    pub requests: usize,
    pub failures: usize,
    /// `X-Cache` values seen, with counts.
    pub x_cache: BTreeMap<String, usize>,
    pub latencies: Samples,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Share of responses with this `X-Cache` value.
    pub fn share(&self, x_cache: &str) -> f64 {
        *self.x_cache.get(x_cache).unwrap_or(&0) as f64 / self.requests.max(1) as f64
    }
}

pub fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// GETs `url(i)` for i = 0, 1, ... from `concurrency` workers for `duration`.
pub async fn get_load(
    url: impl Fn(usize) -> String + Send + Sync + 'static,
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let client = client(concurrency);
    let url = Arc::new(url);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut seen = (0, 0, BTreeMap::<String, usize>::new(), Samples::default());
                while Instant::now() < deadline {
                    let target = url(next.fetch_add(1, Ordering::Relaxed));
                    let sent = Instant::now();
                    match client.get(&target).send().await {
                        Ok(response) if response.status().is_success() => {
                            let tag = response
                                .headers()
                                .get("x-cache")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_owned();
                            let _ = response.bytes().await;
                            seen.3.push(sent.elapsed());
                            seen.0 += 1;
                            *seen.2.entry(tag).or_default() += 1;
                        }
                        _ => seen.1 += 1,
                    }
                }
                seen
            })
        })
        .collect();
    let mut result = LoadResult {
        requests: 0,
        failures: 0,
        x_cache: BTreeMap::new(),
        latencies: Samples::default(),
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        if let Ok((ok, failed, tags, latencies)) = worker.await {
            result.requests += ok;
            result.failures += failed;
            for (tag, n) in tags {
                *result.x_cache.entry(tag).or_default() += n;
            }
            result.latencies.extend(latencies);
        }
    }
    result.elapsed = started.elapsed();
    result
}
