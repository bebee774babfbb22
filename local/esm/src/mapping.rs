//! Lambda's event-source mapping for a DynamoDB stream, run locally.
//!
//! What it honours, as Lambda does:
//! - `BatchSize` and `MaximumBatchingWindowInSeconds`: a batch is sent when full, when the
//!   batching window has passed since its first record arrived, or (with no window) at once;
//! - `TumblingWindowInSeconds`: records are grouped by their creation time into aligned
//!   windows; each invocation gets the state the previous one returned; a window ends with a
//!   final invocation (`isFinalInvokeForWindow`, no records) once its time has passed and a
//!   record of a later window arrived (or, when draining, at once); a state over 1 MB ends
//!   the window early (`isWindowTerminatedEarly`) and the window goes on with a fresh state;
//! - `ReportBatchItemFailures`: the response's `batchItemFailures` checkpoint at the lowest
//!   sequence number named, and the records from there are retried (with the state the
//!   response returned); an identifier that is empty or not in the batch fails the batch;
//! - `BisectBatchOnFunctionError`: a failed batch is split in two and each half retried
//!   (a split does not count as a retry);
//! - `MaximumRetryAttempts` and `MaximumRecordAgeInSeconds`: past either, the batch (or a
//!   failing final invocation, with its state) goes to the on-failure [`Destination`].
//!
//! Records of one shard are processed in order, one batch at a time; shards run at once.
//! For tests, [`Chaos`] delivers batches again (as when Lambda loses a response) and repeats
//! final invocations.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::EventRecord;
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::invoke::Invoker;
use crate::source::{SourceError, StreamSource};

/// Lambda's limit on a tumbling window's state.
const STATE_LIMIT_BYTES: usize = 1024 * 1024;

/// The mapping's settings, named as in `AWS::Lambda::EventSourceMapping`.
#[derive(Debug, Clone, Copy)]
pub struct MappingConfig {
    /// `BatchSize`: most records per invocation.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`: how long to gather records before invoking.
    pub batching_window: Duration,
    /// `TumblingWindowInSeconds`: `None` for no window.
    pub tumbling_window: Option<Duration>,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `MaximumRetryAttempts`: `None` retries until the records expire.
    pub max_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds`: `None` keeps retrying however old.
    pub max_record_age: Option<Duration>,
    /// How often an idle shard is polled (Lambda polls four times a second).
    pub poll_interval: Duration,
    /// Pause before retrying a failed invocation.
    pub retry_pause: Duration,
    /// `StartingPosition`: where a new mapping starts reading each shard.
    pub starting_position: StartingPosition,
}

/// Where a new mapping starts reading (later drains and polls go on from where it stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartingPosition {
    /// `TRIM_HORIZON`: the oldest record the stream keeps.
    #[default]
    TrimHorizon,
    /// `LATEST`: only records written after the mapping started.
    Latest,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            batch_size: 100,
            batching_window: Duration::ZERO,
            tumbling_window: None,
            report_batch_item_failures: true,
            bisect_on_error: true,
            max_retry_attempts: Some(3),
            max_record_age: None,
            poll_interval: Duration::from_millis(250),
            retry_pause: Duration::from_millis(20),
            starting_position: StartingPosition::TrimHorizon,
        }
    }
}

/// Faults a test asks for on top of what the function does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chaos {
    /// After every successful batch, deliver it again this many times with the state it was
    /// first given (Lambda lost the response and retries).
    pub redeliver: usize,
    /// The chance that a successful batch is delivered once more, with either state.
    pub redeliver_probability: f64,
    /// After every successful final invocation, invoke it again this many times.
    pub repeat_final: usize,
    /// Seed of the random choices.
    pub seed: u64,
}

/// What the mapping did, for tests and the dev log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MappingStats {
    /// Invocations made.
    pub invocations: u64,
    /// Records delivered (each time they were delivered).
    pub records_delivered: u64,
    /// Batches delivered again by [`Chaos`].
    pub redeliveries: u64,
    /// Invocations that failed.
    pub failed_invocations: u64,
    /// Responses with `batchItemFailures`.
    pub partial_failures: u64,
    /// Batches split in two.
    pub bisects: u64,
    /// Final invocations that ended a window.
    pub windows_closed: u64,
    /// Windows ended early because the state reached 1 MB.
    pub windows_ended_early: u64,
    /// Records (or windows) sent to the on-failure destination.
    pub sent_to_destination: u64,
}

/// The on-failure destination: what Lambda would send to an SQS queue, kept in memory.
#[derive(Debug, Default)]
pub struct Destination {
    messages: Mutex<Vec<Value>>,
}

impl Destination {
    /// Every message so far. Each is Lambda's on-failure message (`requestContext`,
    /// `DDBStreamBatchInfo`, ...) plus `records` (or `state`): Lambda sends only the batch's
    /// coordinates; keeping the records lets a test (or an operator) see what was given up.
    pub fn messages(&self) -> Vec<Value> {
        self.messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, message: Value) {
        self.messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message);
    }
}

/// An event-source mapping from one stream to one function.
pub struct EventSourceMapping {
    source: Arc<dyn StreamSource>,
    invokers: Vec<Arc<dyn Invoker>>,
    config: MappingConfig,
    chaos: Chaos,
    destination: Arc<Destination>,
    stats: Mutex<MappingStats>,
    /// Where each shard's reading stands (the last sequence number fetched).
    positions: Mutex<HashMap<String, Option<String>>>,
}

impl EventSourceMapping {
    /// A mapping that calls the function through `invokers` (shard `i` uses invoker
    /// `i mod n`: one function environment per shard, as Lambda's concurrency per shard).
    pub fn new(
        source: Arc<dyn StreamSource>,
        invokers: Vec<Arc<dyn Invoker>>,
        config: MappingConfig,
    ) -> EventSourceMapping {
        EventSourceMapping {
            source,
            invokers,
            config,
            chaos: Chaos::default(),
            destination: Arc::new(Destination::default()),
            stats: Mutex::new(MappingStats::default()),
            positions: Mutex::new(HashMap::new()),
        }
    }

    /// The same mapping with faults injected.
    pub fn with_chaos(mut self, chaos: Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// Where records that exhausted their retries went.
    pub fn destination(&self) -> Arc<Destination> {
        self.destination.clone()
    }

    /// What the mapping did so far.
    pub fn stats(&self) -> MappingStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, update: impl FnOnce(&mut MappingStats)) {
        update(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Processes every record the stream holds now, ending every window, then returns. A
    /// later call goes on from where this one stopped.
    pub async fn drain(&self) -> Result<(), SourceError> {
        let shards = self.source.shards().await?;
        let workers = shards.into_iter().enumerate().map(|(i, shard)| async move {
            let mut worker = self.worker(i, shard);
            while worker.step(true).await? {}
            worker.park();
            Ok::<_, SourceError>(())
        });
        futures::future::try_join_all(workers).await.map(drop)
    }

    /// Takes the starting position of every shard now, so that with `LATEST` whatever is
    /// written after this returns is delivered (otherwise the position is taken when the
    /// mapping first reads, and a write made meanwhile may be skipped).
    pub async fn take_starting_position(&self) -> Result<(), SourceError> {
        for (i, shard) in self.source.shards().await?.into_iter().enumerate() {
            let mut worker = self.worker(i, shard);
            worker.take_starting_position().await?;
            worker.park();
        }
        Ok(())
    }

    /// Runs until the returned handle is dropped or aborted: polls each shard, honours the
    /// batching window, and ends each tumbling window once its time has passed.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let shards = loop {
                match self.source.shards().await {
                    Ok(shards) => break shards,
                    Err(e) => {
                        tracing::warn!(error.message = %e, "cannot list the stream's shards; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            let workers = shards.into_iter().enumerate().map(|(i, shard)| {
                let mapping = self.clone();
                async move {
                    let mut worker = mapping.worker(i, shard);
                    loop {
                        match worker.step(false).await {
                            Ok(true) => {}
                            Ok(false) => mapping.source.wait(mapping.config.poll_interval).await,
                            Err(e) => {
                                tracing::warn!(error.message = %e, "stream read failed; retrying");
                                tokio::time::sleep(mapping.config.poll_interval).await;
                            }
                        }
                    }
                }
            });
            futures::future::join_all(workers).await;
        })
    }

    fn worker(&self, index: usize, shard: String) -> ShardWorker<'_> {
        let parked = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&shard)
            .cloned();
        ShardWorker {
            invoker: self.invokers[index % self.invokers.len().max(1)].clone(),
            mapping: self,
            rng: SmallRng::seed_from_u64(self.chaos.seed.wrapping_add(index as u64)),
            shard,
            positioned: parked.is_some(),
            fetched_to: parked.flatten(),
            buffer: VecDeque::new(),
            buffered_since: None,
            window: None,
        }
    }
}

/// A tumbling window that has records: its span and the state its invocations built.
#[derive(Debug, Clone)]
struct OpenWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    state: HashMap<String, String>,
}

/// One shard's reading, in order.
struct ShardWorker<'a> {
    mapping: &'a EventSourceMapping,
    invoker: Arc<dyn Invoker>,
    rng: SmallRng,
    shard: String,
    /// Whether the starting position was applied (by this worker or an earlier drain).
    positioned: bool,
    /// The last sequence number read from the source.
    fetched_to: Option<String>,
    /// Read, not yet delivered.
    buffer: VecDeque<EventRecord>,
    /// When the buffer last went from empty to not empty (for the batching window).
    buffered_since: Option<Instant>,
    window: Option<OpenWindow>,
}

impl ShardWorker<'_> {
    fn config(&self) -> &MappingConfig {
        &self.mapping.config
    }

    /// Applies the starting position, once.
    async fn take_starting_position(&mut self) -> Result<(), SourceError> {
        if !self.positioned {
            if self.config().starting_position == StartingPosition::Latest {
                self.skip_to_latest().await?;
            }
            self.positioned = true;
        }
        Ok(())
    }

    /// Moves past every record the shard holds now (`LATEST`).
    async fn skip_to_latest(&mut self) -> Result<(), SourceError> {
        loop {
            let page = self
                .mapping
                .source
                .read(&self.shard, self.fetched_to.as_deref(), 1000)
                .await?;
            match page.last() {
                Some(last) => self.fetched_to = last.change.sequence_number.clone(),
                None => return Ok(()),
            }
        }
    }

    /// Keeps the shard's position for the next drain. Only called with an empty buffer and
    /// no open window, so nothing read is lost between drains.
    fn park(&self) {
        self.mapping
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.shard.clone(), self.fetched_to.clone());
    }

    /// Does one thing (read, deliver a batch, end a window); false when there was nothing
    /// to do now. `drain` ignores time: no batching window, windows end as soon as the
    /// stream has nothing more for them.
    async fn step(&mut self, drain: bool) -> Result<bool, SourceError> {
        self.take_starting_position().await?;
        let batch_size = self.config().batch_size.max(1);
        if self.buffer.len() < batch_size {
            let more = self
                .mapping
                .source
                .read(&self.shard, self.fetched_to.as_deref(), batch_size)
                .await?;
            if let Some(last) = more.last() {
                self.fetched_to = last.change.sequence_number.clone();
            }
            if self.buffer.is_empty() && !more.is_empty() {
                self.buffered_since = Some(Instant::now());
            }
            self.buffer.extend(more);
        }
        let Some(window_size) = self.config().tumbling_window else {
            if self.buffer.is_empty() || !self.batch_ready(self.buffer.len(), drain) {
                return Ok(false);
            }
            let batch: Vec<EventRecord> = self
                .buffer
                .drain(..self.buffer.len().min(batch_size))
                .collect();
            self.deliver(batch, None).await;
            return Ok(true);
        };
        match self.buffer.front().map(|r| window_of(r, window_size)) {
            Some((start, end)) => {
                if self.window.as_ref().is_some_and(|w| w.start != start) {
                    // A record of a later window: the open one is over.
                    self.close_window(false).await;
                    return Ok(true);
                }
                let same_window = self
                    .buffer
                    .iter()
                    .take(batch_size)
                    .take_while(|r| window_of(r, window_size).0 == start)
                    .count();
                let window_done = same_window < self.buffer.len().min(batch_size);
                if !window_done && !self.batch_ready(same_window, drain) {
                    return Ok(false);
                }
                if self.window.is_none() {
                    self.window = Some(OpenWindow {
                        start,
                        end,
                        state: HashMap::new(),
                    });
                }
                let batch: Vec<EventRecord> = self.buffer.drain(..same_window).collect();
                self.deliver(batch, Some((start, end))).await;
                Ok(true)
            }
            None => match &self.window {
                Some(open) if drain || Utc::now() >= open.end => {
                    self.close_window(false).await;
                    Ok(true)
                }
                _ => Ok(false),
            },
        }
    }

    /// Whether a batch of `len` records goes now: full, drained, or its batching window over.
    fn batch_ready(&self, len: usize, drain: bool) -> bool {
        drain
            || len >= self.config().batch_size
            || self.config().batching_window.is_zero()
            || self
                .buffered_since
                .is_some_and(|since| since.elapsed() >= self.config().batching_window)
    }

    /// Delivers a batch until it is processed, split, or given up on.
    async fn deliver(
        &mut self,
        records: Vec<EventRecord>,
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) {
        self.buffered_since = (!self.buffer.is_empty()).then(Instant::now);
        let mut work: VecDeque<(Vec<EventRecord>, u32)> = VecDeque::from([(records, 0)]);
        while let Some((batch, attempts)) = work.pop_front() {
            let given_state = self.window.as_ref().map(|w| w.state.clone());
            match self
                .invoke(&batch, window, given_state.as_ref(), false, false)
                .await
            {
                Ok(response) => {
                    let Some(state) = self.response_state(&response, window.is_some()) else {
                        self.failed(batch, attempts, &mut work, "the response has no state")
                            .await;
                        continue;
                    };
                    match self.first_failure(&response, &batch) {
                        Ok(None) => {
                            self.set_state(state);
                            self.chaos_redeliver(&batch, window, given_state).await;
                        }
                        Ok(Some(at)) => {
                            self.mapping.count(|s| s.partial_failures += 1);
                            self.set_state(state);
                            let rest = batch[at..].to_vec();
                            self.retry_or_give_up(
                                rest,
                                attempts + 1,
                                &mut work,
                                "batch item failure",
                            )
                            .await;
                        }
                        Err(reason) => self.failed(batch, attempts, &mut work, reason).await,
                    }
                }
                Err(e) => {
                    tracing::debug!(shard = self.shard, error.message = %e, "invocation failed");
                    self.failed(batch, attempts, &mut work, "function error")
                        .await;
                }
            }
        }
        self.maybe_end_early(window).await;
    }

    /// A failed invocation: bisect, retry or give up.
    async fn failed(
        &mut self,
        batch: Vec<EventRecord>,
        attempts: u32,
        work: &mut VecDeque<(Vec<EventRecord>, u32)>,
        reason: &str,
    ) {
        self.mapping.count(|s| s.failed_invocations += 1);
        // As on Lambda, splitting a batch does not count towards the retry quota: a poison
        // record ends up alone, and only it exhausts its retries.
        if self.config().bisect_on_error && batch.len() > 1 && !self.too_old(&batch) {
            self.mapping.count(|s| s.bisects += 1);
            let (first, second) = batch.split_at(batch.len() / 2);
            work.push_front((second.to_vec(), attempts));
            work.push_front((first.to_vec(), attempts));
            return;
        }
        self.retry_or_give_up(batch, attempts + 1, work, reason)
            .await;
    }

    async fn retry_or_give_up(
        &mut self,
        batch: Vec<EventRecord>,
        attempts: u32,
        work: &mut VecDeque<(Vec<EventRecord>, u32)>,
        reason: &str,
    ) {
        if self.exhausted(&batch, attempts) {
            let condition = if self.too_old(&batch) {
                "RecordAgeExceeded"
            } else {
                "RetryAttemptsExhausted"
            };
            tracing::warn!(
                shard = self.shard,
                records = batch.len(),
                reason,
                condition,
                "records sent to the on-failure destination"
            );
            self.mapping
                .count(|s| s.sent_to_destination += batch.len() as u64);
            let message = self.failure_message(condition, attempts, &batch, None);
            self.mapping.destination.push(message);
            return;
        }
        tokio::time::sleep(self.config().retry_pause).await;
        work.push_front((batch, attempts));
    }

    fn exhausted(&self, batch: &[EventRecord], attempts: u32) -> bool {
        self.config()
            .max_retry_attempts
            .is_some_and(|max| attempts > max)
            || self.too_old(batch)
    }

    fn too_old(&self, batch: &[EventRecord]) -> bool {
        let Some(max_age) = self.config().max_record_age else {
            return false;
        };
        batch.first().is_some_and(|r| {
            let age = Utc::now() - r.change.approximate_creation_date_time;
            age.to_std().is_ok_and(|age| age > max_age)
        })
    }

    /// The response's state (window mode: it must have one, or the invocation failed).
    fn response_state(&self, response: &Value, windowed: bool) -> Option<HashMap<String, String>> {
        if !windowed {
            return Some(HashMap::new());
        }
        serde_json::from_value(response.get("state")?.clone()).ok()
    }

    fn set_state(&mut self, state: HashMap<String, String>) {
        if let Some(open) = &mut self.window {
            open.state = state;
        }
    }

    /// Where `batchItemFailures` say to retry from: `Ok(None)` for full success, the index of
    /// the lowest sequence number named, or an error if an identifier is unusable.
    fn first_failure(
        &self,
        response: &Value,
        batch: &[EventRecord],
    ) -> Result<Option<usize>, &'static str> {
        if !self.config().report_batch_item_failures {
            return Ok(None);
        }
        let failures = match response.get("batchItemFailures") {
            Some(Value::Array(failures)) if !failures.is_empty() => failures,
            _ => return Ok(None),
        };
        let mut lowest: Option<usize> = None;
        for failure in failures {
            let id = failure
                .get("itemIdentifier")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or("an empty itemIdentifier")?;
            let index = batch
                .iter()
                .position(|r| r.change.sequence_number.as_deref() == Some(id))
                .ok_or("an itemIdentifier not in the batch")?;
            lowest = Some(lowest.map_or(index, |l| l.min(index)));
        }
        Ok(lowest)
    }

    /// [`Chaos`]: delivers a successful batch again.
    async fn chaos_redeliver(
        &mut self,
        batch: &[EventRecord],
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
        given_state: Option<HashMap<String, String>>,
    ) {
        let chaos = self.mapping.chaos;
        let extra = chaos.redeliver
            + usize::from(
                chaos.redeliver_probability > 0.0
                    && self.rng.random_bool(chaos.redeliver_probability.min(1.0)),
            );
        for _ in 0..extra {
            self.mapping.count(|s| s.redeliveries += 1);
            // Either the state the batch was first given (the response was lost) or the one
            // it produced (the batch arrives twice).
            let state = if self.rng.random_bool(0.5) {
                given_state.clone()
            } else {
                self.window.as_ref().map(|w| w.state.clone())
            };
            if let Ok(response) = self
                .invoke(batch, window, state.as_ref(), false, false)
                .await
                && self.first_failure(&response, batch) == Ok(None)
                && let Some(state) = self.response_state(&response, window.is_some())
            {
                self.set_state(state);
            }
        }
    }

    /// Ends the window early if its state reached Lambda's limit; it goes on with a fresh
    /// state.
    async fn maybe_end_early(&mut self, window: Option<(DateTime<Utc>, DateTime<Utc>)>) {
        let Some(open) = &self.window else { return };
        let size = serde_json::to_vec(&open.state).map_or(0, |b| b.len());
        if size > STATE_LIMIT_BYTES && window.is_some() {
            self.mapping.count(|s| s.windows_ended_early += 1);
            let span = (open.start, open.end);
            self.close_window(true).await;
            self.window = Some(OpenWindow {
                start: span.0,
                end: span.1,
                state: HashMap::new(),
            });
        }
    }

    /// The final invocation of the open window, retried until it succeeds or is given up.
    async fn close_window(&mut self, ended_early: bool) {
        let Some(open) = self.window.take() else {
            return;
        };
        let span = Some((open.start, open.end));
        let mut attempts = 0;
        loop {
            match self
                .invoke(&[], span, Some(&open.state), true, ended_early)
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    attempts += 1;
                    self.mapping.count(|s| s.failed_invocations += 1);
                    if self
                        .config()
                        .max_retry_attempts
                        .is_some_and(|max| attempts > max)
                    {
                        tracing::warn!(shard = self.shard, error.message = %e, "final invocation given up; its state goes to the on-failure destination");
                        self.mapping.count(|s| s.sent_to_destination += 1);
                        let message = self.failure_message(
                            "RetryAttemptsExhausted",
                            attempts,
                            &[],
                            Some(&open),
                        );
                        self.mapping.destination.push(message);
                        return;
                    }
                    tokio::time::sleep(self.config().retry_pause).await;
                }
            }
        }
        self.mapping.count(|s| s.windows_closed += 1);
        for _ in 0..self.mapping.chaos.repeat_final {
            let _ = self
                .invoke(&[], span, Some(&open.state), true, ended_early)
                .await;
        }
    }

    /// One invocation with the event Lambda would build.
    async fn invoke(
        &self,
        records: &[EventRecord],
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
        state: Option<&HashMap<String, String>>,
        final_invoke: bool,
        ended_early: bool,
    ) -> Result<Value, crate::invoke::InvokeError> {
        self.mapping.count(|s| {
            s.invocations += 1;
            s.records_delivered += records.len() as u64;
        });
        let mut event = json!({ "Records": records });
        if let Some((start, end)) = window {
            event["window"] = json!({"start": start.to_rfc3339(), "end": end.to_rfc3339()});
            event["state"] = json!(state.cloned().unwrap_or_default());
            event["shardId"] = json!(self.shard);
            event["eventSourceARN"] = json!(self.mapping.source.arn());
            event["isFinalInvokeForWindow"] = json!(final_invoke && !ended_early);
            event["isWindowTerminatedEarly"] = json!(ended_early);
        }
        self.invoker.invoke(event).await
    }

    /// Lambda's on-failure message for a stream batch, plus what was given up.
    fn failure_message(
        &self,
        condition: &str,
        attempts: u32,
        batch: &[EventRecord],
        window: Option<&OpenWindow>,
    ) -> Value {
        let sequence = |r: Option<&EventRecord>| r.and_then(|r| r.change.sequence_number.clone());
        let arrival = |r: Option<&EventRecord>| {
            r.map(|r| r.change.approximate_creation_date_time.to_rfc3339())
        };
        let mut message = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": Utc::now().to_rfc3339(),
            "DDBStreamBatchInfo": {
                "shardId": self.shard,
                "startSequenceNumber": sequence(batch.first()),
                "endSequenceNumber": sequence(batch.last()),
                "approximateArrivalOfFirstRecord": arrival(batch.first()),
                "approximateArrivalOfLastRecord": arrival(batch.last()),
                "batchSize": batch.len(),
                "streamArn": self.mapping.source.arn(),
            },
            "records": batch,
        });
        if let Some(open) = window {
            message["window"] =
                json!({"start": open.start.to_rfc3339(), "end": open.end.to_rfc3339()});
            message["state"] = json!(open.state);
        }
        message
    }
}

/// The aligned tumbling window a record belongs to, by its creation time.
fn window_of(record: &EventRecord, size: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    let size_ms = i64::try_from(size.as_millis()).unwrap_or(i64::MAX).max(1);
    let at = record
        .change
        .approximate_creation_date_time
        .timestamp_millis();
    let start = at.div_euclid(size_ms) * size_ms;
    let to_time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    (to_time(start), to_time(start + size_ms))
}

#[cfg(test)]
mod tests;
