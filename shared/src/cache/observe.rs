//! Observability of the cache across processes: each process adds what it counted to
//! per-minute buckets in Redis, so the admin endpoints see every environment's traffic
//! over the last 5 minutes, hour or day; plus alert bookkeeping and CloudWatch EMF lines.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use super::Cache;
use super::l2::{HashUpdate, ServerInfo};
use super::metrics::MetricsSnapshot;
use super::traffic::{self, RouteWindow};
use crate::health::book::{AlertEvent, BookOutcome, BookUpdates};
use crate::model::EpochMillis;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Buckets live a little longer than the longest window (24 h).
const BUCKET_TTL: Duration = Duration::from_secs(26 * 3600);
/// Minute-resolution traffic serves the 5 min and 1 h windows only.
const TRAFFIC_MINUTES_TTL: Duration = Duration::from_secs(3 * 3600);
/// Field of a minute bucket holding a memory sample (a gauge, first sample of the minute wins).
const MEMORY_SAMPLE: &str = "used_memory_sample";

/// Cache counters summed over a trailing window, from every process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Length of the window in minutes.
    pub minutes: i64,
    /// Counters summed over the window.
    pub counters: MetricsSnapshot,
}

/// Windows of the counters and the memory samples, read in one round trip.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Last 5 minutes.
    pub last_5m: Window,
    /// Last hour.
    pub last_1h: Window,
    /// Last 24 hours.
    pub last_24h: Window,
    /// The 55 minutes before the last 5 (the baseline trends compare against).
    pub previous_55m: Window,
    /// Oldest memory sample of the last hour, if any.
    pub memory_hour_ago: Option<u64>,
    /// Requests per route over the last 5 minutes, hour and 24 hours.
    pub routes: RoutesByWindow,
    /// The cache operations' latency per tier over the same windows.
    pub operations: OperationsByWindow,
    /// The p99 age of the data each cache category served over the last 5 minutes.
    pub age_p99_5m: std::collections::BTreeMap<String, traffic::AgeP99>,
}

/// The cache operations' latency (Redis reads and writes, loads) over the standard windows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationsByWindow {
    /// Last 5 minutes.
    pub last_5m: Vec<traffic::OperationWindow>,
    /// Last hour.
    pub last_1h: Vec<traffic::OperationWindow>,
    /// Last 24 hours.
    pub last_24h: Vec<traffic::OperationWindow>,
}

/// The per-route breakdown over the standard windows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutesByWindow {
    /// Last 5 minutes.
    pub last_5m: Vec<RouteWindow>,
    /// Last hour.
    pub last_1h: Vec<RouteWindow>,
    /// Last 24 hours.
    pub last_24h: Vec<RouteWindow>,
}

impl Cache {
    /// Whether [`Cache::flush_counters`] with `every` would flush now: a request can skip
    /// queueing it otherwise.
    pub fn counters_flush_due(&self, every: Duration) -> bool {
        let last = self
            .inner
            .flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        self.now() - last >= crate::clock::millis(every)
    }

    /// Adds what this process counted since its last flush to the shared per-minute buckets,
    /// if at least `every` has passed. With `emf_function`, also prints the delta as a
    /// CloudWatch Embedded Metric Format line with that `Function` dimension (in Lambda, where
    /// stdout goes to CloudWatch Logs). Returns the delta flushed.
    pub async fn flush_counters(
        &self,
        every: Duration,
        emf_function: Option<&str>,
    ) -> Option<MetricsSnapshot> {
        self.flush(every, emf_function, true).await
    }

    /// [`Cache::flush_counters`]; without `with_l1`, L1's inserts and evictions are left out.
    async fn flush(
        &self,
        every: Duration,
        emf_function: Option<&str>,
        with_l1: bool,
    ) -> Option<MetricsSnapshot> {
        let now = self.now();
        let delta = {
            let mut last = self
                .inner
                .flushed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now - last.0 < crate::clock::millis(every) {
                return None;
            }
            let current = self.snapshot();
            let mut delta = current.delta_since(&last.1);
            *last = (now, current);
            if !with_l1 {
                delta.l1_inserts = 0;
                delta.l1_evictions = 0;
            }
            delta
        };
        let traffic = self.traffic().take_fields();
        // What goes to Redis: this flush's counts plus what earlier flushes could not send.
        // (The EMF lines below carry this flush's counts only: CloudWatch got the rest.)
        let (counters, traffic_to_send) = {
            let mut unsent = self.unsent();
            let mut counters = std::mem::take(&mut unsent.counters);
            counters.add(&delta);
            let mut fields = std::mem::take(&mut unsent.traffic);
            for (name, value) in &traffic {
                *fields.entry(name.clone()).or_default() += value;
            }
            (counters, fields)
        };
        let hour = now.div_euclid(HOUR_MS);
        let key = self.keys().counters_hour(hour);
        let increments = increments(
            counters
                .fields()
                .into_iter()
                .filter(|(_, value, _)| *value > 0)
                .map(|(name, value, _)| (name, value)),
            Some(now),
        );
        let written = self
            .with_l2("HINCRBY", self.single_deadline(), |l2| {
                l2.hash_add(&key, &increments, BUCKET_TTL)
            })
            .await;
        if written.is_err() {
            self.unsent().counters.add(&counters);
        }
        if !traffic_to_send.is_empty() {
            self.flush_traffic(traffic_to_send, now).await;
        }
        self.flush_dated().await;
        if let Some(function) = emf_function {
            // EMF lines must be the whole log line, so they go straight to stdout.
            let line = delta.emf_line(
                crate::jobs::metrics::NAMESPACE,
                &[("Function", function)],
                now,
            );
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let routes = traffic::breakdown(traffic.iter().map(|(n, v)| (n.as_str(), *v)));
            for route in &routes {
                let line = route.emf_line(crate::jobs::metrics::NAMESPACE, function, now);
                let _ = writeln!(out, "{line}");
            }
        }
        Some(delta)
    }

    /// Counts one `name` event under the minute it happened (`at`), not the minute of the flush
    /// that sends it: for events whose time a reader compares with something else's (a view,
    /// with the report of the view-aggregator window that counted it), since a process may
    /// flush long after the event (a Lambda environment is frozen between requests). Read
    /// back with [`Cache::first_minute_counting`].
    pub fn count_at(&self, name: &'static str, at: EpochMillis) {
        let minute = at.div_euclid(MINUTE_MS) * MINUTE_MS;
        *self.dated().0.entry((minute, name)).or_default() += 1;
    }

    /// Adds the dated counts to their minutes' buckets, one write per hour; an hour that cannot
    /// be written waits for the next flush.
    async fn flush_dated(&self) {
        let dated = std::mem::take(&mut self.dated().0);
        let mut by_hour: BTreeMap<i64, DatedCounts> = BTreeMap::new();
        for (key, count) in dated {
            let hour = key.0.div_euclid(HOUR_MS);
            by_hour.entry(hour).or_default().0.insert(key, count);
        }
        for (hour, counts) in by_hour {
            let key = self.keys().counters_hour(hour);
            let fields: Vec<(String, i64)> = counts
                .0
                .iter()
                .map(|((minute, name), count)| {
                    (
                        minute_field(*minute, name),
                        i64::try_from(*count).unwrap_or(i64::MAX),
                    )
                })
                .collect();
            let written = self
                .with_l2("HINCRBY", self.single_deadline(), |l2| {
                    l2.hash_add(&key, &fields, BUCKET_TTL)
                })
                .await;
            if written.is_err() {
                let mut dated = self.dated();
                for (key, count) in counts.0 {
                    *dated.0.entry(key).or_default() += count;
                }
            }
        }
    }

    fn dated(&self) -> std::sync::MutexGuard<'_, DatedCounts> {
        self.inner
            .dated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds traffic fields to the hour's rollup (the 24 h window), then to its minute (the
    /// 5 min and 1 h windows). If the rollup cannot be written nothing was, and the fields wait
    /// for the next flush; if only the minute fails, they stay in the 24 h window and are
    /// missing from the shorter ones (never counted twice).
    async fn flush_traffic(&self, fields: BTreeMap<String, u64>, now: EpochMillis) {
        let hour = now.div_euclid(HOUR_MS);
        let rollup_key = self.keys().traffic_rollup(hour);
        let rollup = increments(fields.iter().map(|(n, v)| (n.as_str(), *v)), None);
        let rolled_up = self
            .with_l2("HINCRBY", self.single_deadline(), |l2| {
                l2.hash_add(&rollup_key, &rollup, BUCKET_TTL)
            })
            .await;
        if rolled_up.is_err() {
            let mut unsent = self.unsent();
            for (name, value) in fields {
                *unsent.traffic.entry(name).or_default() += value;
            }
            return;
        }
        let minute_key = self.keys().traffic_hour(hour);
        let by_minute = increments(fields.iter().map(|(n, v)| (n.as_str(), *v)), Some(now));
        let _ = self
            .with_l2("HINCRBY", self.single_deadline(), |l2| {
                l2.hash_add(&minute_key, &by_minute, TRAFFIC_MINUTES_TTL)
            })
            .await;
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        self.inner
            .unsent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At the end of an invocation of a job or stream function, before Lambda freezes the
    /// environment: what it counted (cache counters, operation timings) goes to the shared
    /// windows, with an EMF line in Lambda. These functions serve no requests to flush after,
    /// and run about once a minute or once a batch, so each invocation flushes (a few Redis
    /// calls, each bounded by the command timeout, well inside the jobs' 2 s stop margin).
    /// Their L1 serves no reads (they write through it), so its inserts and evictions are left
    /// out: health's L1 figures are about the API's.
    pub async fn flush_invocation(&self) {
        let function = crate::telemetry::lambda_function_name();
        self.flush(Duration::ZERO, function.as_deref(), false).await;
    }

    /// The start of the first minute wholly after `after` (or in the last 24 hours) in which
    /// any environment counted `counter` (see [`Cache::count_at`]), from the shared per-minute
    /// buckets: one round trip over the hours concerned. `None` if there is none, or Redis did
    /// not answer.
    pub async fn first_minute_counting(
        &self,
        counter: &str,
        after: Option<EpochMillis>,
    ) -> Option<EpochMillis> {
        let now = self.now();
        let from = after.unwrap_or(EpochMillis::MIN).max(now - 24 * HOUR_MS);
        let hours = from.div_euclid(HOUR_MS)..=now.div_euclid(HOUR_MS);
        let keys: Vec<String> = hours
            .clone()
            .map(|h| self.keys().counters_hour(h))
            .collect();
        let hashes = self
            .with_l2("HGETALL", self.batch_deadline(), |l2| {
                l2.hash_get_all(&keys)
            })
            .await
            .ok()?;
        hours
            .zip(hashes)
            .flat_map(|(hour, hash)| {
                hash.into_iter().filter_map(move |(field, value)| {
                    let (minute, name) = parse_minute_field(hour, &field)?;
                    (name == counter && value > 0).then_some(minute * MINUTE_MS)
                })
            })
            .filter(|start| after.is_none_or(|after| *start > after) && *start <= now)
            .min()
    }

    /// The shared counters over the standard windows, and the memory trend samples.
    /// Empty without Redis.
    pub async fn history(&self) -> History {
        let now = self.now();
        let first_hour = (now - 24 * HOUR_MS).div_euclid(HOUR_MS);
        let last_hour = now.div_euclid(HOUR_MS);
        let hours = first_hour..=last_hour;
        // One pipeline (every key shares the {counters} hash tag): the counters by minute for
        // 24 h, the traffic by minute for the last two hours, the traffic rollups for 24 h.
        let minute_hours = last_hour - 1..=last_hour;
        let keys: Vec<String> = hours
            .clone()
            .map(|h| self.keys().counters_hour(h))
            .chain(minute_hours.clone().map(|h| self.keys().traffic_hour(h)))
            .chain(hours.clone().map(|h| self.keys().traffic_rollup(h)))
            .collect();
        let Ok(mut hashes) = self
            .with_l2("HGETALL", self.batch_deadline(), |l2| {
                l2.hash_get_all(&keys)
            })
            .await
        else {
            return History::default();
        };
        let rollups = hashes.split_off(hours.clone().count() + minute_hours.clone().count());
        let traffic_minutes = hashes.split_off(hours.clone().count());
        let current_minute = now.div_euclid(MINUTE_MS);
        // (minutes ago, name, value) of every minute field.
        let by_minute = |hours: &mut dyn Iterator<Item = (i64, HashMap<String, i64>)>| {
            let mut fields = Vec::new();
            for (hour, hash) in hours {
                for (field, value) in hash {
                    if let Some((minute, name)) = parse_minute_field(hour, &field) {
                        fields.push((current_minute - minute, name.to_owned(), value));
                    }
                }
            }
            fields
        };
        let fields = by_minute(&mut hours.clone().zip(hashes));
        let traffic_fields = by_minute(&mut minute_hours.zip(traffic_minutes));
        // The 24 h traffic: whole hours, the current one included (24 to 25 hours).
        let mut day: HashMap<String, u64> = HashMap::new();
        for hash in rollups {
            for (name, value) in hash {
                *day.entry(name).or_default() += u64::try_from(value).unwrap_or(0);
            }
        }
        let window = |from: i64, to: i64| -> Window {
            let pairs = fields
                .iter()
                .filter(|(ago, _, _)| (from..to).contains(ago))
                .map(|(_, name, value)| (name.as_str(), u64::try_from(*value).unwrap_or(0)));
            let mut sums: HashMap<&str, u64> = HashMap::new();
            for (name, value) in pairs {
                *sums.entry(name).or_default() += value;
            }
            Window {
                minutes: to - from,
                counters: MetricsSnapshot::from_fields(sums),
            }
        };
        let memory_hour_ago = fields
            .iter()
            .filter(|(ago, name, _)| *ago < 60 && name == MEMORY_SAMPLE)
            .max_by_key(|(ago, _, _)| *ago)
            .and_then(|(_, _, v)| u64::try_from(*v).ok());
        let recent = |to: i64, prefix: &'static str| {
            traffic_fields
                .iter()
                .filter(move |(ago, name, _)| (0..to).contains(ago) && name.starts_with(prefix))
                .map(|(_, name, value)| (name.as_str(), u64::try_from(*value).unwrap_or(0)))
        };
        let whole_day = |prefix: &'static str| {
            day.iter()
                .filter(move |(name, _)| name.starts_with(prefix))
                .map(|(name, value)| (name.as_str(), *value))
        };
        let (routes, operations) = (traffic::FIELD_PREFIX, traffic::OPERATION_PREFIX);
        let age_p99_5m = traffic::age_p99_by_category(recent(5, routes));
        History {
            operations: OperationsByWindow {
                last_5m: traffic::operations(recent(5, operations)),
                last_1h: traffic::operations(recent(60, operations)),
                last_24h: traffic::operations(whole_day(operations)),
            },
            age_p99_5m,
            routes: RoutesByWindow {
                last_5m: traffic::breakdown(recent(5, routes)),
                last_1h: traffic::breakdown(recent(60, routes)),
                last_24h: traffic::breakdown(whole_day(routes)),
            },
            last_5m: window(0, 5),
            last_1h: window(0, 60),
            last_24h: window(0, 24 * 60),
            previous_55m: window(5, 60),
            memory_hour_ago,
        }
    }

    /// What Redis reports about itself (and a memory sample for the trend); `None` without Redis.
    pub async fn server_info(&self) -> Option<ServerInfo> {
        let info = self
            .with_l2("INFO", self.batch_deadline(), |l2| l2.server_info())
            .await
            .ok()?;
        let now = self.now();
        let key = self.keys().counters_hour(now.div_euclid(HOUR_MS));
        let sample = [(
            minute_field(now, MEMORY_SAMPLE),
            i64::try_from(info.used_memory).unwrap_or(i64::MAX),
        )];
        let _ = self
            .with_l2("HSETNX", self.single_deadline(), |l2| {
                l2.hash_update(&key, &sample, &[], false)
            })
            .await;
        Some(info)
    }

    /// Applies an evaluation's bookkeeping updates: the shared one to Redis (one pipeline),
    /// this process's here. What each did tells since when every alert is active and which
    /// changes this evaluation made.
    pub async fn update_alert_book(&self, updates: &BookUpdates) -> BookOutcome {
        let key = format!("{}health:alerts", self.keys().prefix());
        let shared = self
            .with_l2("HSETNX", self.single_deadline(), |l2| {
                l2.hash_update(
                    &key,
                    &updates.shared.set_if_absent,
                    &updates.shared.delete,
                    true,
                )
            })
            .await
            .ok();
        let process = HashUpdate::apply(
            &mut self.process_alerts().book,
            &updates.process.set_if_absent,
            &updates.process.delete,
        );
        BookOutcome { shared, process }
    }

    /// This execution environment's name, for the events of its own alerts.
    pub fn environment(&self) -> &str {
        &self.inner.environment
    }

    /// Adds `events` to the shared alert history, drops what is older than `keep`, and returns
    /// the history, newest first. Events Redis does not take are kept (the latest
    /// [`PENDING_ALERT_EVENTS`]) and added with the next call; without Redis the history
    /// shown is those.
    pub async fn alert_history(&self, events: Vec<AlertEvent>, keep: Duration) -> Vec<AlertEvent> {
        let now = self.now();
        let key = format!("{}health:alert-history", self.keys().prefix());
        let mut events = {
            let mut pending = std::mem::take(&mut self.process_alerts().pending);
            pending.extend(events);
            pending
        };
        let members: Vec<(String, i64)> = events
            .iter()
            .filter_map(|e| Some((serde_json::to_string(e).ok()?, e.at)))
            .collect();
        let keep_from = now - crate::clock::millis(keep);
        let history = self
            .with_l2("ZADD", self.batch_deadline(), |l2| {
                l2.log_append(&key, &members, keep_from, keep, ALERT_HISTORY_SHOWN)
            })
            .await;
        match history {
            Ok(history) => history
                .iter()
                .filter_map(|(member, _)| serde_json::from_str(member).ok())
                .collect(),
            Err(_) => {
                let mut alerts = self.process_alerts();
                // Whatever a concurrent evaluation queued meanwhile stays, in time order.
                events.append(&mut alerts.pending);
                events.sort_by_key(|e| e.at);
                let excess = events.len().saturating_sub(PENDING_ALERT_EVENTS);
                events.drain(..excess);
                alerts.pending.clone_from(&events);
                events.reverse();
                events
            }
        }
    }

    fn process_alerts(&self) -> std::sync::MutexGuard<'_, ProcessAlerts> {
        self.inner
            .alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Alert events shown at most.
const ALERT_HISTORY_SHOWN: usize = 1000;
/// Alert events a process keeps while Redis does not take them.
const PENDING_ALERT_EVENTS: usize = 100;

/// This process's alert bookkeeping (see [`crate::health::book`]) and the events the shared
/// history has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct ProcessAlerts {
    book: HashMap<String, EpochMillis>,
    pending: Vec<AlertEvent>,
}

/// Counts by the minute their events happened (minute start, name), until flushed.
#[derive(Debug, Default)]
pub(crate) struct DatedCounts(BTreeMap<(EpochMillis, &'static str), u64>);

/// The dated count of views the API recorded (a new event id each): the stream records the
/// view-aggregator's windows will count.
pub const VIEWS_RECORDED: &str = "views_recorded";

/// Counts a failed flush could not write to Redis, merged by name until a flush succeeds.
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    counters: MetricsSnapshot,
    traffic: BTreeMap<String, u64>,
}

/// The field of `name` in the minute holding `at` (epoch ms), in that minute's hour bucket:
/// `MM:<name>`.
fn minute_field(at: EpochMillis, name: &str) -> String {
    let minute = at.div_euclid(MINUTE_MS).rem_euclid(60);
    format!("{minute:02}:{name}")
}

/// The inverse of [`minute_field`] for a field of hour bucket `hour`: the minute (since the
/// epoch) and the name.
fn parse_minute_field(hour: i64, field: &str) -> Option<(i64, &str)> {
    let (minute, name) = field.split_once(':')?;
    Some((hour * 60 + minute.parse::<i64>().ok()?, name))
}

/// `HINCRBY` increments of counts, under the field of the minute holding `at` (see
/// [`minute_field`]) or, without it, under their name.
fn increments<'a>(
    counts: impl IntoIterator<Item = (&'a str, u64)>,
    at: Option<EpochMillis>,
) -> Vec<(String, i64)> {
    counts
        .into_iter()
        .map(|(name, value)| {
            let field = match at {
                Some(at) => minute_field(at, name),
                None => name.to_owned(),
            };
            (field, i64::try_from(value).unwrap_or(i64::MAX))
        })
        .collect()
}
