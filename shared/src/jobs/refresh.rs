//! The refresh job: recompute every active product's period stats, write them and the
//! product's cached views through the cache (most popular first, bounded concurrency), rank
//! the feeds, drain the revalidation queue, and record what it did.
//!
//! One failing product is logged and counted and the run goes on. The run watches its
//! deadline: it stops starting products in time to record a cursor and its metadata, and the
//! next run resumes from the cursor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::time::Instant;

use super::{lease, periods};
use crate::cache::{Cache, PutOutcome};
use crate::error::Result;
use crate::model::{
    EpochMillis, FeedKind, JobRun, PeriodStats, Product, ProductId, RankedFeed, RunOutcome,
};
use crate::reads::{self, FEED_NAMESPACE};
use crate::store::{ProductLister, ProductReader, StatsStore};

/// The job's name in metadata and cursors.
pub const JOB: &str = "refresh";

/// The catalog ports the job reads.
pub trait RefreshCatalog: ProductLister + ProductReader {}
impl<T: ProductLister + ProductReader> RefreshCatalog for T {}

/// What the job works on.
#[derive(Clone)]
pub struct RefreshDeps {
    /// Products (read only).
    pub catalog: Arc<dyn RefreshCatalog>,
    /// Counters (read), stats, feeds and metadata (write).
    pub stats: Arc<dyn StatsStore>,
    /// The cache to write through.
    pub cache: Cache,
}

/// How the job runs.
#[derive(Debug, Clone, Copy)]
pub struct RefreshOptions {
    /// Products refreshed at once.
    pub concurrency: usize,
    /// Stop starting products this long before the deadline, to leave time to record.
    pub stop_before: Duration,
    /// Products per catalog page.
    pub page_size: usize,
    /// Ids kept per feed.
    pub feed_len: usize,
    /// Revalidation-queue keys handled per run.
    pub drain_max: usize,
    /// Lease lifetime of a run without a deadline (local runs).
    pub lease_without_deadline: Duration,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        RefreshOptions {
            concurrency: 16,
            stop_before: Duration::from_secs(2),
            page_size: 500,
            feed_len: 1000,
            drain_max: 1000,
            lease_without_deadline: Duration::from_secs(600),
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshReport {
    /// Products whose stats and cached views were refreshed.
    pub refreshed: u64,
    /// Cache entries written to Redis.
    pub entries_written: u64,
    /// Products not refreshed: inactive, or left for the next run.
    pub skipped: u64,
    /// Products (and queue keys) that failed.
    pub errors: u64,
    /// How long the run took.
    pub duration_ms: u64,
    /// The product this run resumed from, if a previous run left a cursor.
    pub resumed_from: Option<String>,
    /// Where the next run resumes, if this one stopped before the end.
    pub next_cursor: Option<String>,
    /// Feeds ranked (0 when the run stopped early: the previous ranking stays).
    pub feeds_ranked: u64,
    /// Keys refreshed from the revalidation queue.
    pub revalidated: u64,
    /// Why the run did nothing, if it did nothing (another run held the lease).
    pub skipped_reason: Option<String>,
}

/// Refreshes once, holding the job's lease (a run that finds it held records a skip and
/// does nothing). `now` is the time the stats are computed for; `deadline` is when the
/// invocation ends (`None`: no limit).
pub async fn refresh_once(
    deps: &RefreshDeps,
    options: &RefreshOptions,
    now: EpochMillis,
    deadline: Option<Instant>,
) -> RefreshReport {
    let ttl = lease::lease_ttl(deadline, options.lease_without_deadline);
    match lease::acquire(deps.stats.as_ref(), JOB, now, ttl).await {
        Ok(Some(held)) => {
            let report = refresh_holding_lease(deps, options, now, deadline).await;
            lease::release(deps.stats.as_ref(), &held).await;
            report
        }
        Ok(None) => {
            lease::record_skip(deps.stats.as_ref(), JOB, now).await;
            RefreshReport {
                skipped_reason: Some(lease::HELD_ELSEWHERE.to_owned()),
                ..RefreshReport::default()
            }
        }
        Err(e) => {
            tracing::error!(error.message = %e, "refresh cannot take its lease; not running");
            let mut report = RefreshReport {
                errors: 1,
                ..RefreshReport::default()
            };
            finish(deps, &mut report, now, Instant::now(), RunOutcome::Failed).await;
            report
        }
    }
}

async fn refresh_holding_lease(
    deps: &RefreshDeps,
    options: &RefreshOptions,
    now: EpochMillis,
    deadline: Option<Instant>,
) -> RefreshReport {
    let started = Instant::now();
    let mut report = RefreshReport::default();
    let out_of_time = move || deadline.is_some_and(|d| Instant::now() + options.stop_before >= d);

    let products = match list_all(deps.catalog.as_ref(), options.page_size).await {
        Ok(products) => products,
        Err(e) => {
            tracing::error!(error.message = %e, "refresh cannot list the catalog");
            report.errors = 1;
            finish(deps, &mut report, now, started, RunOutcome::Failed).await;
            return report;
        }
    };
    let (active, inactive): (Vec<Product>, Vec<Product>) =
        products.into_iter().partition(|p| p.active);
    report.skipped = inactive.len() as u64;

    let previous_ranking = deps
        .stats
        .feed(FeedKind::Trending)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error.message = %e, "no previous ranking; refreshing in catalog order");
            None
        });
    let order = popularity_order(&active, previous_ranking.as_ref());
    let cursor = deps.stats.cursor(JOB).await.unwrap_or_else(|e| {
        tracing::warn!(error.message = %e, "cannot read the cursor; starting from the top");
        None
    });
    let start = cursor
        .as_deref()
        .and_then(|c| order.iter().position(|p| p.id.as_str() == c))
        .unwrap_or(0);
    if start > 0 {
        report.resumed_from = cursor;
    }

    // Products in popularity order, `concurrency` at a time; `buffered` keeps the order of
    // results, so the first product not started is exactly where the next run resumes.
    //
    // The futures are built before streaming them (they do nothing until polled): a closure
    // inside the stream would make the whole job's future fail `tokio::spawn`'s `Send` check.
    let mut computed: HashMap<ProductId, PeriodStats> = HashMap::new();
    let refreshes: Vec<_> = order[start..]
        .iter()
        .map(|product| refresh_unless_late(deps, product, now, deadline, options.stop_before))
        .collect();
    let mut results = futures::stream::iter(refreshes).buffered(options.concurrency.max(1));
    while let Some((product, outcome)) = results.next().await {
        match outcome {
            None => {
                report.next_cursor = Some(product.id.to_string());
                break;
            }
            Some(Ok((stats, written))) => {
                report.refreshed += 1;
                report.entries_written += written;
                computed.insert(product.id.clone(), stats);
            }
            Some(Err(e)) => {
                report.errors += 1;
                tracing::warn!(product = %product.id, error.message = %e, "refresh of one product failed; continuing");
            }
        }
    }
    drop(results);
    if report.next_cursor.is_some() {
        let done = start as u64 + report.refreshed + report.errors;
        report.skipped += order.len() as u64 - done;
    }

    if report.next_cursor.is_none() {
        match rank_feeds(deps, options, &order[..start], &active, computed, now).await {
            Ok(written) => {
                report.feeds_ranked = FeedKind::ALL.len() as u64;
                report.entries_written += written;
            }
            Err(e) => {
                report.errors += 1;
                tracing::warn!(error.message = %e, "ranking the feeds failed; the previous ranking stays");
            }
        }
    }

    if !out_of_time() {
        let (revalidated, failed) = drain_revalidations(deps, options).await;
        report.revalidated = revalidated;
        report.errors += failed;
    }

    let outcome = if report.refreshed == 0 && report.errors > 0 {
        RunOutcome::Failed
    } else if report.errors > 0 || report.next_cursor.is_some() {
        RunOutcome::Partial
    } else {
        RunOutcome::Succeeded
    };
    finish(deps, &mut report, now, started, outcome).await;
    report
}

/// Every product, page by page.
async fn list_all(catalog: &dyn RefreshCatalog, page_size: usize) -> Result<Vec<Product>> {
    let mut products = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = catalog.list_products(cursor.as_deref(), page_size).await?;
        products.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(products),
        }
    }
}

/// Active products, the previous trending ranking first (most viewed first), then the rest in
/// id order (new or unranked products).
fn popularity_order<'a>(active: &'a [Product], ranking: Option<&RankedFeed>) -> Vec<&'a Product> {
    let rank: HashMap<&ProductId, usize> = ranking
        .map(|r| r.ids.iter().enumerate().map(|(i, id)| (id, i)).collect())
        .unwrap_or_default();
    let mut order: Vec<&Product> = active.iter().collect();
    order.sort_by(|a, b| {
        let ra = rank.get(&a.id).copied().unwrap_or(usize::MAX);
        let rb = rank.get(&b.id).copied().unwrap_or(usize::MAX);
        ra.cmp(&rb).then_with(|| a.id.cmp(&b.id))
    });
    order
}

/// Refreshes one product, or reports it not started when the deadline is too close.
async fn refresh_unless_late<'a>(
    deps: &RefreshDeps,
    product: &'a Product,
    now: EpochMillis,
    deadline: Option<Instant>,
    stop_before: Duration,
) -> (&'a Product, Option<Result<(PeriodStats, u64)>>) {
    if deadline.is_some_and(|d| Instant::now() + stop_before >= d) {
        return (product, None);
    }
    (product, Some(refresh_product(deps, product, now).await))
}

/// Recomputes one product's period stats from its counters at `now`, stores them, and writes
/// them through the cache. Returns the stats and what the cache did with them.
pub async fn recompute_stats(
    stats: &dyn StatsStore,
    cache: &Cache,
    product: &ProductId,
    now: EpochMillis,
) -> Result<(PeriodStats, PutOutcome)> {
    let counters = stats.view_counters(product).await?;
    let period = periods::period_stats(&counters, now);
    stats.put_period_stats(product, &period).await?;
    let outcome = cache
        .put(&cache.keys().stats(product), period.clone(), cache.now())
        .await;
    Ok((period, outcome))
}

/// Recomputes one product's stats, stores them, and writes its stats, summary and detail
/// through the cache. Returns the stats and the number of cache entries written.
async fn refresh_product(
    deps: &RefreshDeps,
    product: &Product,
    now: EpochMillis,
) -> Result<(PeriodStats, u64)> {
    let (stats, stats_outcome) =
        recompute_stats(deps.stats.as_ref(), &deps.cache, &product.id, now).await?;
    // A write to the product after this read invalidates its keys; the cache then refuses
    // what we read (see `Cache::put`).
    let read_at = deps.cache.now();
    let detail = deps
        .cache
        .bounded_load(deps.catalog.product_detail(&product.id))
        .await?;
    let keys = deps.cache.keys();
    let cache = &deps.cache;
    let mut outcomes = vec![stats_outcome];
    if let Some(detail) = detail {
        outcomes.push(
            cache
                .put(&keys.summary(&product.id), detail.product.clone(), read_at)
                .await,
        );
        outcomes.push(cache.put(&keys.product(&product.id), detail, read_at).await);
    }
    let written = outcomes
        .iter()
        .filter(|o| **o == PutOutcome::Written)
        .count() as u64;
    Ok((stats, written))
}

/// Ranks every feed, stores the rankings, moves the feed namespace to a new generation and
/// writes the rankings under it. `earlier` are the products a previous, interrupted run
/// refreshed (their stats are read back). Returns the cache entries written.
async fn rank_feeds(
    deps: &RefreshDeps,
    options: &RefreshOptions,
    earlier: &[&Product],
    active: &[Product],
    mut computed: HashMap<ProductId, PeriodStats>,
    now: EpochMillis,
) -> Result<u64> {
    let reads: Vec<_> = earlier.iter().map(|p| stored_stats(deps, &p.id)).collect();
    let stored: Vec<(ProductId, Option<PeriodStats>)> = futures::stream::iter(reads)
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await?;
    for (id, stats) in stored {
        computed
            .entry(id)
            .or_insert_with(|| stats.unwrap_or_default());
    }
    let views = |p: &Product| computed.get(&p.id).map_or(0, |s| s.views_24h);

    let mut trending: Vec<&Product> = active.iter().collect();
    trending.sort_by(|a, b| views(b).cmp(&views(a)).then_with(|| a.id.cmp(&b.id)));
    let mut newest: Vec<&Product> = active.iter().collect();
    newest.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let rankings =
        [(FeedKind::Trending, trending), (FeedKind::New, newest)].map(|(kind, ranked)| {
            RankedFeed {
                kind,
                ids: ranked
                    .into_iter()
                    .take(options.feed_len)
                    .map(|p| p.id.clone())
                    .collect(),
                computed_at: now,
            }
        });
    for ranking in &rankings {
        deps.stats.put_feed(ranking).await?;
    }
    // Pages of the old generation are never read again; the new rankings go in at once.
    let Some(generation) = deps.cache.bump_generation(FEED_NAMESPACE).await else {
        return Ok(0);
    };
    let keys = deps.cache.keys();
    let outcomes = deps
        .cache
        .put_many(
            rankings
                .into_iter()
                .map(|r| (keys.feed(r.kind, generation), r))
                .collect(),
            deps.cache.now(),
        )
        .await;
    Ok(outcomes
        .iter()
        .filter(|o| **o == PutOutcome::Written)
        .count() as u64)
}

/// A product's stats as stored by an earlier run.
async fn stored_stats(
    deps: &RefreshDeps,
    id: &ProductId,
) -> Result<(ProductId, Option<PeriodStats>)> {
    Ok((id.clone(), deps.stats.period_stats(id).await?))
}

/// Reloads one queued key.
async fn reload(
    deps: &RefreshDeps,
    catalog: &Arc<dyn ProductReader>,
    stats: &Arc<dyn crate::store::StatsReader>,
    key: String,
) -> (String, Result<bool>) {
    let outcome = reads::reload_key(&deps.cache, catalog, stats, &key).await;
    (key, outcome)
}

/// Refreshes keys the API queued on stale reads. Returns (refreshed, failed); failed keys stay
/// queued for the next run.
async fn drain_revalidations(deps: &RefreshDeps, options: &RefreshOptions) -> (u64, u64) {
    let keys = deps.cache.pending_revalidations(options.drain_max).await;
    if keys.is_empty() {
        return (0, 0);
    }
    let catalog: Arc<dyn ProductReader> = deps.catalog.clone();
    let stats: Arc<dyn crate::store::StatsReader> = deps.stats.clone();
    let reloads: Vec<_> = keys
        .into_iter()
        .map(|key| reload(deps, &catalog, &stats, key))
        .collect();
    let outcomes: Vec<(String, Result<bool>)> = futures::stream::iter(reloads)
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let (mut done, mut refreshed, mut failed) = (Vec::new(), 0, 0);
    for (key, outcome) in outcomes {
        match outcome {
            Ok(known) => {
                refreshed += u64::from(known);
                done.push(key);
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(key, error.message = %e, "revalidation from the queue failed; kept for the next run");
            }
        }
    }
    deps.cache.complete_revalidations(&done).await;
    (refreshed, failed)
}

/// Records the cursor and the run's metadata.
async fn finish(
    deps: &RefreshDeps,
    report: &mut RefreshReport,
    now: EpochMillis,
    started: Instant,
    outcome: RunOutcome,
) {
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = deps
        .stats
        .set_cursor(JOB, report.next_cursor.as_deref())
        .await
    {
        tracing::error!(error.message = %e, "cannot record the refresh cursor; the next run starts from the top");
    }
    let mut run = JobRun::new(JOB, now, outcome);
    run.duration_ms = report.duration_ms;
    run.processed = report.refreshed;
    run.entries_written = report.entries_written;
    run.skipped = report.skipped;
    run.errors = report.errors;
    run.next_cursor = report.next_cursor.clone();
    if let Err(e) = crate::jobs::metrics::record_run(deps.stats.as_ref(), &run).await {
        tracing::error!(error.message = %e, "cannot record the refresh run");
    }
    tracing::info!(
        refreshed = report.refreshed,
        entries_written = report.entries_written,
        skipped = report.skipped,
        errors = report.errors,
        duration_ms = report.duration_ms,
        next_cursor = ?report.next_cursor,
        "refresh finished"
    );
}

#[cfg(test)]
#[path = "refresh/tests.rs"]
mod tests;
