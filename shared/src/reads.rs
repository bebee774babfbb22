//! Cached reads of the catalog: which key and which loader each kind of data uses. The API,
//! the refresh job and the revalidation-queue drain all go through here, so they agree.

use std::collections::HashMap;

use futures::StreamExt;
use std::sync::Arc;

use crate::cache::key::KeyTarget;
use crate::cache::{BatchLookup, Cache, Lookup, PutOutcome};
use crate::error::Result;
use crate::model::{FeedKind, PeriodStats, Product, ProductDetail, ProductId, RankedFeed};
use crate::store::{ProductReader, StatsReader};

/// Namespace whose generation versions every feed key.
pub const FEED_NAMESPACE: &str = "feed";

/// A product with all its offers (one Query on a miss).
pub async fn product_detail(
    cache: &Cache,
    catalog: &Arc<dyn ProductReader>,
    id: &ProductId,
) -> Result<Lookup<ProductDetail>> {
    let (catalog, owned) = (catalog.clone(), id.clone());
    cache
        .get_or_load(&cache.keys().product(id), move || async move {
            catalog.product_detail(&owned).await
        })
        .await
}

/// A product with its offers, and its period stats: one Redis round trip when neither is in
/// L1 (the keys share a hash tag), each loaded on its own on a miss.
pub async fn product_detail_and_stats(
    cache: &Cache,
    catalog: &Arc<dyn ProductReader>,
    stats: &Arc<dyn StatsReader>,
    id: &ProductId,
) -> (Result<Lookup<ProductDetail>>, Result<Lookup<PeriodStats>>) {
    let (catalog, stats, for_detail, for_stats) =
        (catalog.clone(), stats.clone(), id.clone(), id.clone());
    cache
        .get_or_load_both(
            (&cache.keys().product(id), move || async move {
                catalog.product_detail(&for_detail).await
            }),
            (&cache.keys().stats(id), move || async move {
                Ok(Some(
                    stats.period_stats(&for_stats).await?.unwrap_or_default(),
                ))
            }),
        )
        .await
}

/// A product's period stats; a product nothing has computed stats for has zero views.
pub async fn period_stats(
    cache: &Cache,
    stats: &Arc<dyn StatsReader>,
    id: &ProductId,
) -> Result<Lookup<PeriodStats>> {
    let (stats, owned) = (stats.clone(), id.clone());
    cache
        .get_or_load(&cache.keys().stats(id), move || async move {
            Ok(Some(stats.period_stats(&owned).await?.unwrap_or_default()))
        })
        .await
}

/// Products without their offers, in request order (one BatchGetItem for all misses).
pub async fn summaries(
    cache: &Cache,
    catalog: &Arc<dyn ProductReader>,
    ids: &[ProductId],
) -> Result<BatchLookup<Product>> {
    let entries = ids
        .iter()
        .map(|id| (cache.keys().summary(id), id.clone()))
        .collect();
    let catalog = catalog.clone();
    cache
        .get_many(entries, move |missing: Vec<ProductId>| {
            let catalog = catalog.clone();
            async move {
                Ok(catalog
                    .products(&missing)
                    .await?
                    .into_iter()
                    .map(|p| (p.id.clone(), p))
                    .collect::<HashMap<_, _>>())
            }
        })
        .await
}

/// A feed's ranking at the current feed generation (empty until the refresh job ranks it).
pub async fn ranked_feed(
    cache: &Cache,
    stats: &Arc<dyn StatsReader>,
    kind: FeedKind,
) -> Result<Lookup<RankedFeed>> {
    let generation = cache.generation(FEED_NAMESPACE).await;
    let stats = stats.clone();
    cache
        .get_or_load(&cache.keys().feed(kind, generation), move || async move {
            Ok(Some(stats.feed(kind).await?.unwrap_or(RankedFeed {
                kind,
                ids: Vec::new(),
                computed_at: 0,
            })))
        })
        .await
}

/// Drops everything cached about a product after it was written, and moves the feeds to a
/// new generation so no page shows the old version. Returns false if Redis was unreachable
/// (then L2 keeps the old entries until their TTL; L1 is cleared regardless).
pub async fn invalidate_product(cache: &Cache, id: &ProductId, feeds_too: bool) -> bool {
    let dropped = cache.invalidate(&cache.keys().product_keys(id)).await;
    let bumped = !feeds_too || cache.bump_generation(FEED_NAMESPACE).await.is_some();
    dropped && bumped
}

/// What [`warm`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WarmReport {
    /// Products written to the cache.
    pub warmed: u64,
    /// Cache entries written (details, summaries, stats).
    pub entries_written: u64,
    /// Requested ids that do not exist.
    pub not_found: Vec<ProductId>,
}

/// Loads products (with offers) and their stats from the stores and writes them to the cache,
/// eight at a time: each group is read within the engine's load timeout and written with the
/// time its reads began, so an invalidation made meanwhile refuses its writes (the tombstone
/// outlives the load timeout).
pub async fn warm(
    cache: &Cache,
    catalog: &Arc<dyn ProductReader>,
    stats: &Arc<dyn StatsReader>,
    ids: &[ProductId],
) -> Result<WarmReport> {
    use futures::TryStreamExt;
    const GROUP: usize = 8;
    let mut report = WarmReport::default();
    for group in ids.chunks(GROUP) {
        let read_at = cache.now();
        let reads = futures::stream::iter(group.iter().cloned())
            .map(|id| async move {
                let (detail, period) =
                    tokio::try_join!(catalog.product_detail(&id), stats.period_stats(&id))?;
                Ok::<_, crate::Error>((id, detail, period))
            })
            .buffer_unordered(GROUP)
            .try_collect::<Vec<(ProductId, Option<ProductDetail>, Option<PeriodStats>)>>();
        let loaded = cache.bounded_load(reads).await?;
        let (mut details, mut products, mut periods) = (Vec::new(), Vec::new(), Vec::new());
        for (id, detail, period) in loaded {
            let Some(detail) = detail else {
                report.not_found.push(id);
                continue;
            };
            report.warmed += 1;
            products.push((cache.keys().summary(&id), detail.product.clone()));
            details.push((cache.keys().product(&id), detail));
            periods.push((cache.keys().stats(&id), period.unwrap_or_default()));
        }
        let written = |outcomes: Vec<PutOutcome>| {
            outcomes
                .into_iter()
                .filter(|o| *o == PutOutcome::Written)
                .count() as u64
        };
        report.entries_written += written(cache.put_many(details, read_at).await)
            + written(cache.put_many(products, read_at).await)
            + written(cache.put_many(periods, read_at).await);
    }
    Ok(report)
}

/// Reloads one key from the stores and writes it (draining the revalidation queue). Returns
/// false for keys this version does not know how to reload; they are dropped from the queue.
pub async fn reload_key(
    cache: &Cache,
    catalog: &Arc<dyn ProductReader>,
    stats: &Arc<dyn StatsReader>,
    key: &str,
) -> Result<bool> {
    let read_at = cache.now();
    match cache.keys().parse(key) {
        Some(KeyTarget::Product(id)) => {
            if let Some(detail) = cache.bounded_load(catalog.product_detail(&id)).await? {
                cache.put(&cache.keys().product(&id), detail, read_at).await;
            }
        }
        Some(KeyTarget::Summary(id)) => {
            let read = catalog.products(std::slice::from_ref(&id));
            if let Some(product) = cache.bounded_load(read).await?.pop() {
                cache
                    .put(&cache.keys().summary(&id), product, read_at)
                    .await;
            }
        }
        Some(KeyTarget::Stats(id)) => {
            let period = cache
                .bounded_load(stats.period_stats(&id))
                .await?
                .unwrap_or_default();
            cache.put(&cache.keys().stats(&id), period, read_at).await;
        }
        None => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::cache::CacheOptions;
    use crate::cache::l2::L2Store;
    use crate::cache::l2::memory::MemoryL2;
    use crate::clock::SystemClock;
    use crate::store::memory::MemoryStore;

    /// A catalog whose reads never answer (a DynamoDB call stuck past every retry).
    struct Stuck;

    #[async_trait]
    impl ProductReader for Stuck {
        async fn product_detail(&self, _: &ProductId) -> Result<Option<ProductDetail>> {
            std::future::pending().await
        }

        async fn products(&self, _: &[ProductId]) -> Result<Vec<Product>> {
            std::future::pending().await
        }
    }

    /// Reads that write their result back at the time they began (the revalidation drain, an
    /// admin warm) give up at the engine's load timeout, which the tombstone outlives; they
    /// write nothing.
    #[tokio::test(start_paused = true)]
    async fn reads_written_back_later_are_bounded_by_the_load_timeout() {
        let l2 = Arc::new(MemoryL2::new());
        let cache = Cache::new(
            CacheOptions {
                load_timeout: Duration::from_millis(300),
                ..CacheOptions::default()
            },
            Some(l2.clone() as Arc<dyn L2Store>),
            Arc::new(SystemClock),
        );
        let catalog: Arc<dyn ProductReader> = Arc::new(Stuck);
        let stats: Arc<dyn StatsReader> = Arc::new(MemoryStore::new());
        let id = ProductId::parse("p1").unwrap();
        for key in [cache.keys().product(&id), cache.keys().summary(&id)] {
            let err = reload_key(&cache, &catalog, &stats, key.as_str())
                .await
                .unwrap_err();
            assert!(matches!(err, crate::Error::Timeout { .. }), "{err:?}");
        }
        let err = warm(&cache, &catalog, &stats, std::slice::from_ref(&id))
            .await
            .unwrap_err();
        assert!(matches!(err, crate::Error::Timeout { .. }), "{err:?}");
        assert_eq!(l2.len(), 0, "nothing was written");
    }
}
