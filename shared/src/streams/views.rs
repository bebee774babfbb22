//! The view-aggregator: turns the views table's stream into hourly and daily counters,
//! exactly once, with one counter update per (product, bucket) per tumbling window.
//!
//! ## How a window is counted
//! The event source mapping has a tumbling window. Each invocation of a window adds its
//! records to the window's state, which Lambda carries to the next invocation (the function
//! returns it); the state holds the views per product and hour, the first and last sequence
//! number seen, and the window's counts. Non-final invocations write nothing. They only check
//! that each product exists (through the cache). A check that fails reports
//! `batchItemFailures` from the first record it could not check, and the returned state
//! holds exactly the records before it; when that is the batch's first record, the
//! invocation fails instead, so that bisect-on-error can isolate a record that keeps failing.
//! The final invocation writes the window: per product, one update per hour bucket and one
//! per day bucket.
//!
//! ## Why it is exactly once
//! Each counter update is one conditional `UpdateItem`. It adds the window's views and moves
//! the shard's mark on that counter item (`mark_<shard>`) to the window's last sequence
//! number. It is applied only if the mark is absent or before the window's first sequence
//! number. Within a shard, sequence numbers grow and windows do not overlap. So:
//! - a retried final invocation (after a crash part-way, or a lost response) finds the
//!   updates it already made refused by their marks, and makes the others;
//! - a record delivered again within the window is dropped by the state (its sequence
//!   number is not after the last one seen);
//! - a batch split by bisect-on-error is re-run from the state it started from;
//! - shards have their own marks, so several shards can update one counter at once.
//!
//! A window terminated early (state over 1 MB) is counted when it ends, and the rest of the
//! window continues from a fresh state with a later first sequence number.
//!
//! An event without tumbling-window properties cannot be counted exactly once (there is no
//! state and no shard id), so it fails: Lambda retries it and, past its retries, sends it to
//! the on-failure destination, where nothing is lost and the alarm fires.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use aws_lambda_events::dynamodb::TimeWindowEventResponse;
use aws_lambda_events::time_window::TimeWindowProperties;
use futures::StreamExt;
use serde::Serialize;

use super::{EventError, Incoming, RawEvent, item_failure, parse_event, sequence_key, shard_key};
use crate::cache::Cache;
use crate::jobs::refresh::recompute_stats;
use crate::model::{CounterBucket, EpochMillis, JobRun, ProductId, RunOutcome, ViewEvent};
use crate::reads;
use crate::store::dynamo::items::ViewItem;
use crate::store::{CounterMark, MarkCondition, ProductReader, StatsStore};

/// The job name its window reports are recorded under.
pub const JOB: &str = "view-aggregator";

/// What the aggregator works on.
#[derive(Clone)]
pub struct ViewAggDeps {
    /// Products, to skip views of unknown ones (read through the cache).
    pub products: Arc<dyn ProductReader>,
    /// Counters (conditional updates), stats and window reports.
    pub stats: Arc<dyn StatsStore>,
    /// The cache the product check reads through and fresh stats go to.
    pub cache: Cache,
}

/// How the aggregator works.
#[derive(Debug, Clone, Copy)]
pub struct ViewAggOptions {
    /// Counter updates in flight at once when a window is written.
    pub write_concurrency: usize,
    /// After a window, recompute the period stats of its most viewed products, at most this
    /// many (0: leave it to the refresh job).
    pub stats_refresh_max: usize,
}

impl ViewAggOptions {
    /// Options from the configuration.
    pub fn from_config(jobs: &crate::config::JobsConfig) -> Self {
        ViewAggOptions {
            write_concurrency: jobs.view_write_concurrency,
            stats_refresh_max: jobs.view_stats_refresh_max,
        }
    }
}

impl Default for ViewAggOptions {
    fn default() -> Self {
        ViewAggOptions {
            write_concurrency: 32,
            stats_refresh_max: 100,
        }
    }
}

/// Why an invocation failed as a whole (Lambda retries it; past its retries the event goes
/// to the on-failure destination).
#[derive(Debug, thiserror::Error)]
pub enum ViewAggError {
    /// The event has no tumbling-window properties (see the module docs).
    #[error("view-aggregator needs a tumbling window on its event source mapping")]
    NoWindow,
    /// The window's state is not one this function wrote.
    #[error("unreadable window state: {0}")]
    BadState(String),
    /// The event is not a stream event.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Some counter updates of a final invocation failed; the retried invocation makes them.
    #[error("{failed} of {attempted} counter updates failed")]
    Writes {
        /// Updates that failed.
        failed: usize,
        /// Updates attempted.
        attempted: usize,
    },
    /// The products of the final invocation's own records could not be checked.
    #[error("cannot check products: {0}")]
    Products(#[source] crate::Error),
}

/// What a window counted, carried in its state and recorded when it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Records seen (every kind, duplicates and malformed ones included).
    pub records: u64,
    /// Views counted.
    pub views: u64,
    /// Records seen before (a batch delivered again), dropped.
    pub duplicates: u64,
    /// Records that could not be read, skipped.
    pub malformed: u64,
    /// `MODIFY` and `REMOVE` (TTL expiry) records, ignored.
    pub ignored: u64,
    /// Views of products that do not exist, skipped.
    pub unknown_products: u64,
}

impl WindowCounts {
    fn encode(&self) -> String {
        [
            self.records,
            self.views,
            self.duplicates,
            self.malformed,
            self.ignored,
            self.unknown_products,
        ]
        .map(|n| n.to_string())
        .join(",")
    }

    fn decode(raw: &str) -> Option<WindowCounts> {
        let numbers: Vec<u64> = raw
            .split(',')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let [
            records,
            views,
            duplicates,
            malformed,
            ignored,
            unknown_products,
        ] = numbers[..]
        else {
            return None;
        };
        Some(WindowCounts {
            records,
            views,
            duplicates,
            malformed,
            ignored,
            unknown_products,
        })
    }
}

/// The state's keys.
const FIRST: &str = "~first";
const LAST: &str = "~last";
const COUNTS: &str = "~counts";
const VIEWS: &str = "~views";
const DELTA: &str = "~delta";

/// Below this many bytes of deltas, a batch's views are appended rather than merged.
const DELTA_MIN_BYTES: usize = 64 * 1024;

/// A window's state between invocations.
///
/// Lambda carries it as a map of strings, parsed and re-sent whole on every invocation, so
/// the views travel packed in two strings rather than as thousands of entries: `~views`
/// (`product:hour:views,...`, each product and hour once) and `~delta` (the same format,
/// appended by each batch). A batch only appends its own views; when the deltas outgrow the
/// base (and 64 KB), they are merged into it. So an invocation costs about its batch, not
/// the window's size, and the state stays well under Lambda's 1 MB for a window of tens of
/// thousands of products.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowState {
    /// The first sequence number of the window (padded), once a record was seen.
    pub first: Option<String>,
    /// The last sequence number seen: anything at or before it is a duplicate.
    pub last: Option<String>,
    /// What the window counted so far.
    pub counts: WindowCounts,
    /// Merged views.
    base: String,
    /// Views appended since the last merge.
    delta: String,
    /// This invocation's views, not yet appended.
    batch: HashMap<(ProductId, i64), u64>,
}

/// Reads `product:hour:views` entries, adding them into `into`.
fn read_views(packed: &str, into: &mut HashMap<(ProductId, i64), u64>) -> Result<(), String> {
    for entry in packed.split(',').filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let parsed = (|| {
            let product = ProductId::parse(parts.next()?).ok()?;
            let hour: i64 = parts.next()?.parse().ok()?;
            let views: u64 = parts.next()?.parse().ok()?;
            Some((product, hour, views))
        })();
        let (product, hour, views) = parsed.ok_or_else(|| format!("bad views entry `{entry}`"))?;
        *into.entry((product, hour)).or_default() += views;
    }
    Ok(())
}

/// Appends entries to a packed string.
fn write_views<'a>(
    packed: &mut String,
    views: impl IntoIterator<Item = (&'a (ProductId, i64), &'a u64)>,
) {
    use std::fmt::Write;
    for ((product, hour), n) in views {
        if !packed.is_empty() {
            packed.push(',');
        }
        let _ = write!(packed, "{product}:{hour}:{n}");
    }
}

impl WindowState {
    /// Reads the state Lambda passed in (empty at the start of a window). The views are
    /// checked when they are read (a merge or the window's end).
    pub fn decode(mut state: HashMap<String, String>) -> Result<WindowState, String> {
        let mut decoded = WindowState::default();
        if let Some(first) = state.remove(FIRST) {
            decoded.first = Some(sequence_key(&first).ok_or("bad ~first")?);
        }
        if let Some(last) = state.remove(LAST) {
            decoded.last = Some(sequence_key(&last).ok_or("bad ~last")?);
        }
        if let Some(counts) = state.remove(COUNTS) {
            decoded.counts = WindowCounts::decode(&counts).ok_or("bad ~counts")?;
        }
        decoded.base = state.remove(VIEWS).unwrap_or_default();
        decoded.delta = state.remove(DELTA).unwrap_or_default();
        if let Some(unknown) = state.keys().next() {
            return Err(format!("unknown state key `{unknown}`"));
        }
        Ok(decoded)
    }

    /// The state to hand back to Lambda.
    pub fn encode(mut self) -> Result<HashMap<String, String>, String> {
        let batch = std::mem::take(&mut self.batch);
        write_views(&mut self.delta, &batch);
        if self.delta.len() > self.base.len().max(DELTA_MIN_BYTES) {
            let mut merged = HashMap::new();
            read_views(&self.base, &mut merged)?;
            read_views(&self.delta, &mut merged)?;
            let mut entries: Vec<_> = merged.iter().collect();
            entries.sort();
            self.base.clear();
            write_views(&mut self.base, entries);
            self.delta.clear();
        }
        let mut state = HashMap::from([(COUNTS.to_owned(), self.counts.encode())]);
        for (key, value) in [(FIRST, self.first), (LAST, self.last)] {
            if let Some(value) = value {
                state.insert(key.to_owned(), value);
            }
        }
        for (key, value) in [(VIEWS, self.base), (DELTA, self.delta)] {
            if !value.is_empty() {
                state.insert(key.to_owned(), value);
            }
        }
        Ok(state)
    }

    /// Adds `views` views of `product` in epoch hour `hour`.
    pub fn add_views(&mut self, product: &ProductId, hour: i64, views: u64) {
        *self.batch.entry((product.clone(), hour)).or_default() += views;
    }

    /// Views per product per epoch hour, everything read (a window's final invocation).
    pub fn views(&self) -> Result<BTreeMap<ProductId, BTreeMap<i64, u64>>, String> {
        let mut merged = self.batch.clone();
        read_views(&self.base, &mut merged)?;
        read_views(&self.delta, &mut merged)?;
        let mut views: BTreeMap<ProductId, BTreeMap<i64, u64>> = BTreeMap::new();
        for ((product, hour), n) in merged {
            views.entry(product).or_default().insert(hour, n);
        }
        Ok(views)
    }

    /// Records that a record at `sequence` was handled (whatever became of it).
    fn advance(&mut self, sequence: &str) {
        if self.first.is_none() {
            self.first = Some(sequence.to_owned());
        }
        self.last = Some(sequence.to_owned());
    }
}

/// What one record of an invocation amounts to.
enum Action {
    /// Unreadable: skipped (no usable sequence number to advance to).
    Malformed,
    /// At or before the last sequence number seen: delivered again, dropped.
    Duplicate,
    /// A `MODIFY` or `REMOVE` record: ignored.
    Ignored(String),
    /// An `INSERT` whose image is not a valid view event: skipped.
    Unreadable(String),
    /// A view, counted if its product exists.
    View {
        raw_sequence: String,
        sequence: String,
        event: ViewEvent,
    },
}

impl Action {
    fn of(incoming: Incoming, last: &mut Option<String>) -> Action {
        let (raw_sequence, sequence, mut record) = match incoming {
            Incoming::Record {
                raw_sequence,
                sequence,
                record,
            } => (raw_sequence, sequence, record),
            Incoming::Malformed {
                raw_sequence,
                reason,
                ..
            } => {
                tracing::warn!(sequence = ?raw_sequence, reason, "malformed stream record skipped");
                return Action::Malformed;
            }
        };
        if last.as_deref().is_some_and(|l| sequence.as_str() <= l) {
            return Action::Duplicate;
        }
        *last = Some(sequence.clone());
        if record.event_name != "INSERT" {
            return Action::Ignored(sequence);
        }
        let image = std::mem::take(&mut record.change.new_image);
        let view = serde_dynamo::from_item::<_, ViewItem>(image)
            .map_err(|e| e.to_string())
            .and_then(|item| {
                item.event
                    .validate()
                    .map(|()| item.event)
                    .map_err(|e| e.to_string())
            });
        match view {
            Ok(event) => Action::View {
                raw_sequence,
                sequence,
                event,
            },
            Err(reason) => {
                tracing::warn!(
                    sequence = raw_sequence,
                    reason,
                    "unreadable view event skipped"
                );
                Action::Unreadable(sequence)
            }
        }
    }

    /// Adds the record to the window's state.
    fn apply(self, state: &mut WindowState, known: &HashSet<ProductId>) {
        state.counts.records += 1;
        match self {
            Action::Malformed => state.counts.malformed += 1,
            Action::Duplicate => state.counts.duplicates += 1,
            Action::Ignored(sequence) => {
                state.counts.ignored += 1;
                state.advance(&sequence);
            }
            Action::Unreadable(sequence) => {
                state.counts.malformed += 1;
                state.advance(&sequence);
            }
            Action::View {
                raw_sequence,
                sequence,
                event,
            } => {
                state.advance(&sequence);
                if !known.contains(&event.product_id) {
                    state.counts.unknown_products += 1;
                    tracing::warn!(product = %event.product_id, sequence = raw_sequence, "view of an unknown product skipped");
                    return;
                }
                let CounterBucket::Hour(hour) = CounterBucket::hour_of(event.viewed_at) else {
                    return;
                };
                state.counts.views += 1;
                state.add_views(&event.product_id, hour, 1);
            }
        }
    }
}

/// Handles one invocation: the response to return, or an error (a failed invocation).
pub async fn handle(
    payload: RawEvent,
    deps: &ViewAggDeps,
    options: &ViewAggOptions,
    now: EpochMillis,
) -> Result<TimeWindowEventResponse, ViewAggError> {
    let event = parse_event(payload)?;
    let window = event.window.ok_or(ViewAggError::NoWindow)?;
    let mut window = window;
    let mut state =
        WindowState::decode(std::mem::take(&mut window.state)).map_err(ViewAggError::BadState)?;
    let final_invoke = window.is_final_invoke_for_window || window.is_window_terminated_early;

    let mut last = state.last.clone();
    let actions: Vec<Action> = event
        .records
        .into_iter()
        .map(|incoming| Action::of(incoming, &mut last))
        .collect();
    let products: Vec<ProductId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::View { event, .. } => Some(event.product_id.clone()),
            _ => None,
        })
        .collect();
    let mut response = TimeWindowEventResponse::default();
    let checked = known_products(deps, &products).await;
    if !checked.failed.is_empty() && final_invoke {
        return Err(ViewAggError::Products(
            checked.error.unwrap_or(crate::Error::NotConnected),
        ));
    }
    // Records are applied in order: from the first view whose product could not be checked
    // on, they wait for the retry, and the state handed back holds exactly the ones before.
    let stop_at = actions
        .iter()
        .position(|a| matches!(a, Action::View { event, .. } if checked.failed.contains(&event.product_id)))
        .unwrap_or(actions.len());
    if let Some(Action::View { raw_sequence, .. }) = actions.get(stop_at) {
        let error = checked.error.map(|e| e.to_string()).unwrap_or_default();
        if stop_at == 0 {
            // Nothing could be done: a function error, so that Lambda can bisect the batch
            // and isolate a record that keeps failing.
            return Err(ViewAggError::Products(crate::Error::Dynamo {
                op: "product check",
                retryable: true,
                source: error.into(),
            }));
        }
        tracing::warn!(
            error.message = error,
            sequence = raw_sequence,
            "cannot check products; Lambda retries from this record"
        );
        response.batch_item_failures = vec![item_failure(raw_sequence)];
    }
    let known = checked.known;
    for action in actions.into_iter().take(stop_at) {
        action.apply(&mut state, &known);
    }
    if final_invoke {
        // The window is written; a new one starts with a fresh state.
        let views = state.views().map_err(ViewAggError::BadState)?;
        write_window(deps, options, &window, &state, &views, now).await?;
    } else {
        response.time_window_event_response_properties.state =
            state.encode().map_err(ViewAggError::BadState)?;
    }
    Ok(response)
}

/// What the product check found.
#[derive(Default)]
struct Checked {
    /// Products that exist.
    known: HashSet<ProductId>,
    /// Products that could not be checked.
    failed: HashSet<ProductId>,
    /// Why (the first error).
    error: Option<crate::Error>,
}

/// Which of these products exist, read through the cache, 100 at a time. A batch that fails
/// is checked again product by product, so one product that cannot be read does not hold
/// up the others.
async fn known_products(deps: &ViewAggDeps, products: &[ProductId]) -> Checked {
    let ids: Vec<ProductId> = products
        .iter()
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut checked = Checked::default();
    for chunk in ids.chunks(crate::store::BATCH_GET_LIMIT) {
        match reads::summaries(&deps.cache, &deps.products, chunk).await {
            Ok(lookup) => {
                for (id, item) in chunk.iter().zip(lookup.items) {
                    if item.value.is_some() {
                        checked.known.insert(id.clone());
                    }
                }
            }
            Err(_) => {
                for id in chunk {
                    match reads::summaries(&deps.cache, &deps.products, std::slice::from_ref(id))
                        .await
                    {
                        Ok(lookup) if lookup.items.first().is_some_and(|i| i.value.is_some()) => {
                            checked.known.insert(id.clone());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            checked.failed.insert(id.clone());
                            checked.error.get_or_insert(e);
                        }
                    }
                }
            }
        }
    }
    checked
}

/// One counter update of a window.
struct Update {
    product: ProductId,
    bucket: CounterBucket,
    count: u64,
}

/// What writing a window did.
#[derive(Debug, Default)]
struct Written {
    applied: u64,
    already: u64,
    failed: usize,
}

/// Writes a window: one conditional update per product and hour, and per product and day;
/// then records the window's report and refreshes the stats of its most viewed products.
async fn write_window(
    deps: &ViewAggDeps,
    options: &ViewAggOptions,
    window: &TimeWindowProperties,
    state: &WindowState,
    views: &BTreeMap<ProductId, BTreeMap<i64, u64>>,
    now: EpochMillis,
) -> Result<(), ViewAggError> {
    let (Some(first), Some(last)) = (&state.first, &state.last) else {
        return Ok(()); // an empty window
    };
    let started = std::time::Instant::now();
    let shard = shard_key(window.shard_id.as_deref().unwrap_or_default());
    let updates: Vec<Update> = views
        .iter()
        .flat_map(|(product, hours)| {
            let mut days: BTreeMap<i64, u64> = BTreeMap::new();
            for (hour, n) in hours {
                if let CounterBucket::Day(day) =
                    CounterBucket::day_of(CounterBucket::Hour(*hour).start_ms())
                {
                    *days.entry(day).or_default() += n;
                }
            }
            hours
                .iter()
                .map(|(hour, n)| (CounterBucket::Hour(*hour), *n))
                .chain(
                    days.into_iter()
                        .map(|(day, n)| (CounterBucket::Day(day), n)),
                )
                .map(|(bucket, count)| Update {
                    product: product.clone(),
                    bucket,
                    count,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let writes: Vec<_> = updates
        .iter()
        .map(|u| {
            let mark = CounterMark {
                shard: &shard,
                condition: MarkCondition::Before(first),
                through: last,
            };
            let stats = deps.stats.clone();
            async move {
                stats
                    .add_views_once(&u.product, u.bucket, u.count, &mark)
                    .await
            }
        })
        .collect();
    let outcomes: Vec<crate::Result<bool>> = futures::stream::iter(writes)
        .buffer_unordered(options.write_concurrency.max(1))
        .collect()
        .await;
    let mut written = Written::default();
    for outcome in outcomes {
        match outcome {
            Ok(true) => written.applied += 1,
            Ok(false) => written.already += 1,
            Err(e) => {
                written.failed += 1;
                tracing::warn!(error.message = %e, "a counter update failed; the window is retried");
            }
        }
    }
    if written.failed > 0 {
        return Err(ViewAggError::Writes {
            failed: written.failed,
            attempted: updates.len(),
        });
    }
    record_window(deps, window, state, views, &written, now, started.elapsed()).await;
    refresh_stats(deps, options, views, now).await;
    Ok(())
}

/// Records the window's report as a run of the view-aggregator.
async fn record_window(
    deps: &ViewAggDeps,
    window: &TimeWindowProperties,
    state: &WindowState,
    views: &BTreeMap<ProductId, BTreeMap<i64, u64>>,
    written: &Written,
    now: EpochMillis,
    took: std::time::Duration,
) {
    let counts = state.counts;
    let mut run = JobRun::new(JOB, now, RunOutcome::Succeeded);
    // Writing the window's counters: the work this report is about.
    run.duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    run.processed = counts.records;
    run.entries_written = written.applied;
    run.skipped = counts.duplicates + counts.malformed + counts.ignored + counts.unknown_products;
    run.lag_ms = u64::try_from(now - window.window.end.timestamp_millis()).ok();
    run.note = Some(format!(
        "window {} to {} of {}{}",
        window.window.start.to_rfc3339(),
        window.window.end.to_rfc3339(),
        window.shard_id.as_deref().unwrap_or("?"),
        if window.is_window_terminated_early {
            " (ended early: state over 1 MB)"
        } else {
            ""
        }
    ));
    for (name, value) in [
        ("views", counts.views),
        ("duplicates", counts.duplicates),
        ("malformed", counts.malformed),
        ("ignored", counts.ignored),
        ("unknown_products", counts.unknown_products),
        ("counter_writes", written.applied),
        ("already_applied", written.already),
        ("products", views.len() as u64),
    ] {
        run.counts.insert(name.to_owned(), value);
    }
    tracing::info!(
        views = counts.views,
        counter_writes = written.applied,
        already_applied = written.already,
        duplicates = counts.duplicates,
        malformed = counts.malformed,
        ignored = counts.ignored,
        unknown_products = counts.unknown_products,
        "view window counted"
    );
    if let Err(e) = crate::jobs::metrics::record_run(deps.stats.as_ref(), &run).await {
        tracing::warn!(error.message = %e, "cannot record the window's report");
    }
}

/// Recomputes the period stats of the window's most viewed products, so a view shows in its
/// product's stats within a window rather than at the next refresh. Best effort: the counters
/// are written already, and the refresh job recomputes everything anyway.
async fn refresh_stats(
    deps: &ViewAggDeps,
    options: &ViewAggOptions,
    views: &BTreeMap<ProductId, BTreeMap<i64, u64>>,
    now: EpochMillis,
) {
    let mut by_views: Vec<(&ProductId, u64)> = views
        .iter()
        .map(|(product, hours)| (product, hours.values().sum()))
        .collect();
    by_views.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (product, _) in by_views.into_iter().take(options.stats_refresh_max) {
        if let Err(e) = recompute_stats(deps.stats.as_ref(), &deps.cache, product, now).await {
            tracing::warn!(product = %product, error.message = %e, "cannot refresh a product's stats after its window");
        }
    }
}

#[cfg(test)]
#[path = "views/tests.rs"]
mod tests;
