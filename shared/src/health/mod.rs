//! Cache health from the shared counters, Redis' own figures, the circuit breaker and the
//! refresh job: a status, alerts with severity and since when, and a trend per figure.
//!
//! Pure: the caller gathers the inputs, so every threshold is unit-tested.

pub mod book;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::cache::breaker::BreakerState;
use crate::cache::l2::ServerInfo;
use crate::cache::metrics::MetricsSnapshot;
use crate::cache::observe::History;
use crate::model::{EpochMillis, JobRun};

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Nothing to do.
    Healthy,
    /// Look at it soon.
    Warning,
    /// Look at it now.
    Critical,
}

/// Direction of a figure over the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Getting better.
    Improving,
    /// Getting worse.
    Degrading,
    /// No meaningful change.
    Stable,
    /// Not enough data.
    Unknown,
}

/// One threshold crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The figure, e.g. `hit_ratio`.
    pub figure: &'static str,
    /// `WARNING` or `CRITICAL`.
    pub severity: Status,
    /// What is wrong, in words.
    pub message: String,
    /// Since when the figure has been past a threshold (epoch ms).
    pub since: EpochMillis,
}

/// One figure with its trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// Name, e.g. `hit_ratio`.
    pub name: &'static str,
    /// Value now, if known.
    pub value: Option<f64>,
    /// Direction over the last hour.
    pub trend: Trend,
    /// How much the figure moved: now minus its value over the baseline (the 55 minutes
    /// before the last 5, or an hour ago for memory); `None` without both.
    pub change: Option<f64>,
}

impl Figure {
    /// A figure compared with its baseline; `tolerance` is the change still called stable.
    fn compared(
        name: &'static str,
        value: Option<f64>,
        baseline: Option<f64>,
        tolerance: f64,
        higher_is_better: bool,
    ) -> Figure {
        Figure {
            name,
            value,
            trend: trend(value, baseline, tolerance, higher_is_better),
            change: value.zip(baseline).map(|(v, b)| v - b),
        }
    }

    /// A figure without a baseline.
    fn now(name: &'static str, value: Option<f64>) -> Figure {
        Figure {
            name,
            value,
            trend: Trend::Unknown,
            change: None,
        }
    }
}

/// The health report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The worst severity among the alerts.
    pub status: Status,
    /// Thresholds crossed now.
    pub alerts: Vec<Alert>,
    /// Every figure considered.
    pub figures: Vec<Figure>,
}

/// Thresholds; the defaults are the ones the API documents.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Hit ratio below this warns (0.70).
    pub hit_ratio_warning: f64,
    /// Hit ratio below this is critical (0.50).
    pub hit_ratio_critical: f64,
    /// Memory above this share of `maxmemory` warns (0.80).
    pub memory_warning: f64,
    /// Memory above this share is critical (0.95).
    pub memory_critical: f64,
    /// Redis error rate above this warns (0.01).
    pub error_rate_warning: f64,
    /// Redis error rate above this is critical (0.05).
    pub error_rate_critical: f64,
    /// Fewer reads than this in 5 minutes make the hit ratio too noisy to alert on.
    pub min_reads: u64,
    /// An offer-expiry lag above this warns (2 minutes).
    pub expiry_lag_warning_ms: u64,
    /// L1 evicting this share of the entries it took over 5 minutes before they expired
    /// warns (0.10): `L1_MAX_BYTES` is smaller than what is read.
    pub l1_eviction_warning: f64,
    /// Fewer L1 inserts than this in 5 minutes make the eviction share too noisy to alert on.
    pub min_l1_inserts: u64,
    /// `L1_MAX_BYTES` above this share of the function's memory is critical (0.5): a full L1
    /// plus the runtime and a response can run the function out of memory.
    pub l1_function_share_critical: f64,
    /// Per cache category, how old its served data may be (p99 over 5 minutes) before a
    /// warning; twice it is critical.
    pub freshness: [(&'static str, Duration); 3],
    /// Fewer cached answers than this in 5 minutes make a category's age too noisy to alert on.
    pub min_age_answers: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            hit_ratio_warning: 0.70,
            hit_ratio_critical: 0.50,
            memory_warning: 0.80,
            memory_critical: 0.95,
            error_rate_warning: 0.01,
            error_rate_critical: 0.05,
            min_reads: 100,
            expiry_lag_warning_ms: 120_000,
            l1_eviction_warning: 0.10,
            min_l1_inserts: 100,
            l1_function_share_critical: 0.5,
            freshness: crate::config::FreshnessObjectives::default().by_category(),
            min_age_answers: 20,
        }
    }
}

/// Everything the evaluation looks at.
#[derive(Debug, Clone)]
pub struct HealthInputs {
    /// Shared counters over the standard windows.
    pub history: History,
    /// Redis' figures, if Redis answered.
    pub server: Option<ServerInfo>,
    /// This process's circuit breaker.
    pub breaker: BreakerState,
    /// The refresh job's recent runs, newest first.
    pub refresh_runs: Vec<JobRun>,
    /// The refresh job's schedule.
    pub refresh_interval: Duration,
    /// The offer-expiry job's recent runs, newest first.
    pub expiry_runs: Vec<JobRun>,
    /// The offer-expiry job's schedule.
    pub expiry_interval: Duration,
    /// This process's L1.
    pub l1: Option<L1Memory>,
    /// Now.
    pub now: EpochMillis,
}

/// This process's L1 and what bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Memory {
    /// Bytes its entries hold now.
    pub bytes: u64,
    /// `L1_MAX_BYTES`.
    pub max_bytes: u64,
    /// The function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`), when known.
    pub function_memory_bytes: Option<u64>,
}

/// Redis calls that failed over all Redis calls.
fn error_rate(c: &MetricsSnapshot) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (c.l2_calls > 0).then(|| c.l2_errors.min(c.l2_calls) as f64 / c.l2_calls as f64)
}

fn reads(c: &MetricsSnapshot) -> u64 {
    c.l1_hits + c.l2_hits + c.stale_serves + c.negative_hits + c.misses
}

/// Why a job is overdue, if it has not done its work (succeeded or partly) within `overdue`.
/// Skipped runs do not count: the run that held the lease records its own outcome.
fn job_overdue(job: &str, runs: &[JobRun], overdue: Duration, now: EpochMillis) -> Option<String> {
    let last_good = runs.iter().find(|r| r.did_work()).map(|r| r.started_at);
    match last_good {
        Some(at) if now - at <= crate::clock::millis(overdue) => None,
        Some(at) => Some(format!(
            "{job} has not succeeded for {} s",
            (now - at) / 1000
        )),
        None => Some(format!("{job} has never succeeded")),
    }
}

/// Compares a recent value with a baseline; `higher_is_better` orients the result.
fn trend(
    recent: Option<f64>,
    baseline: Option<f64>,
    tolerance: f64,
    higher_is_better: bool,
) -> Trend {
    match (recent, baseline) {
        (Some(r), Some(b)) if (r - b).abs() <= tolerance => Trend::Stable,
        (Some(r), Some(b)) if (r > b) == higher_is_better => Trend::Improving,
        (Some(_), Some(_)) => Trend::Degrading,
        _ => Trend::Unknown,
    }
}

/// Grades a figure against a warning and a critical threshold.
fn grade(value: f64, warning: f64, critical: f64, higher_is_worse: bool) -> Option<Status> {
    let past = |limit: f64| {
        if higher_is_worse {
            value > limit
        } else {
            value < limit
        }
    };
    if past(critical) {
        Some(Status::Critical)
    } else if past(warning) {
        Some(Status::Warning)
    } else {
        None
    }
}

/// Per cache category: the alert figure of its freshness, and the health figure it grades.
const FRESHNESS_NAMES: [(&str, &str, &str); 3] = [
    ("product", "freshness_product", "data_age_p99_s_product"),
    ("stats", "freshness_stats", "data_age_p99_s_stats"),
    ("feed", "freshness_feed", "data_age_p99_s_feed"),
];

/// The alert figure and the health figure of a category's freshness.
fn freshness_names(category: &str) -> (&'static str, &'static str) {
    let (_, alert, figure) = FRESHNESS_NAMES
        .iter()
        .find(|(c, _, _)| *c == category)
        .unwrap_or(&FRESHNESS_NAMES[2]);
    (alert, figure)
}

/// The value of an alert's figure in `report`: its own figure, but for freshness, which
/// grades the category's age figure, and L1, whose warning is about evictions and critical
/// about its bound against the function's memory.
fn alert_value(report: &HealthReport, alert_figure: &str) -> Option<f64> {
    let l1_critical = report
        .alerts
        .iter()
        .any(|a| a.figure == "l1_memory" && a.severity == Status::Critical);
    let figure = match alert_figure {
        "l1_memory" if l1_critical => "l1_function_share",
        "l1_memory" => "l1_evicted_ratio",
        _ => FRESHNESS_NAMES
            .iter()
            .find(|(_, alert, _)| *alert == alert_figure)
            .map_or(alert_figure, |(_, _, figure)| figure),
    };
    report.figures.iter().find(|f| f.name == figure)?.value
}

/// The figures that can raise an alert, for the since-when bookkeeping.
pub const ALERT_FIGURES: [&str; 12] = [
    "hit_ratio",
    "redis_error_rate",
    "memory",
    "redis",
    "circuit",
    "refresh",
    "offer_expiry",
    "offer_expiry_lag",
    "l1_memory",
    "freshness_product",
    "freshness_stats",
    "freshness_feed",
];

/// Evaluates health. `since` says since when each alert (by figure) has been active; alerts
/// not in it are new and get `now`.
pub fn evaluate(
    inputs: &HealthInputs,
    thresholds: &Thresholds,
    since: &HashMap<String, EpochMillis>,
) -> HealthReport {
    let h = &inputs.history;
    let mut alerts = Vec::new();
    let mut alert = |figure: &'static str, severity: Status, message: String| {
        alerts.push(Alert {
            figure,
            severity,
            message,
            since: since.get(figure).copied().unwrap_or(inputs.now),
        });
    };

    let recent_reads = reads(&h.last_5m.counters);
    let hit_ratio = h.last_5m.counters.hit_ratio();
    let errors = error_rate(&h.last_5m.counters);
    let memory = inputs.server.and_then(|s| s.memory_ratio());
    // (figure, value, warning, critical, higher is worse, what the value means)
    let graded = [
        (
            "hit_ratio",
            hit_ratio.filter(|_| recent_reads >= thresholds.min_reads),
            thresholds.hit_ratio_warning,
            thresholds.hit_ratio_critical,
            false,
            "hit ratio over the last 5 minutes",
        ),
        (
            "redis_error_rate",
            errors,
            thresholds.error_rate_warning,
            thresholds.error_rate_critical,
            true,
            "of Redis calls failed over the last 5 minutes",
        ),
        (
            "memory",
            memory,
            thresholds.memory_warning,
            thresholds.memory_critical,
            true,
            "of Redis maxmemory in use",
        ),
    ];
    for (figure, value, warning, critical, higher_is_worse, meaning) in graded {
        let Some(value) = value else { continue };
        if let Some(severity) = grade(value, warning, critical, higher_is_worse) {
            alert(figure, severity, format!("{:.1}% {meaning}", value * 100.0));
        }
    }
    if inputs.server.is_none() {
        alert("redis", Status::Critical, "Redis did not answer".into());
    }

    if matches!(
        inputs.breaker,
        BreakerState::Open { .. } | BreakerState::HalfOpen
    ) {
        alert(
            "circuit",
            Status::Critical,
            "circuit breaker open: reads bypass Redis".into(),
        );
    }

    let mut job_alert = |figure: &'static str, job: &str, runs: &[JobRun], overdue: Duration| {
        if let Some(message) = job_overdue(job, runs, overdue, inputs.now) {
            alert(figure, Status::Warning, message);
        }
    };
    job_alert(
        "refresh",
        "refresh",
        &inputs.refresh_runs,
        inputs.refresh_interval * 2,
    );
    job_alert(
        "offer_expiry",
        "offer-expiry",
        &inputs.expiry_runs,
        inputs.expiry_interval * 3,
    );
    let expiry_lag = inputs
        .expiry_runs
        .iter()
        .find(|r| r.did_work())
        .and_then(|r| r.lag_ms);
    if let Some(lag) = expiry_lag.filter(|lag| *lag > thresholds.expiry_lag_warning_ms) {
        alert(
            "offer_expiry_lag",
            Status::Warning,
            format!(
                "offers expire {} s late (at most {} s expected)",
                lag / 1000,
                thresholds.expiry_lag_warning_ms / 1000
            ),
        );
    }

    #[allow(clippy::cast_precision_loss)]
    let l1_share = inputs
        .l1
        .filter(|l1| l1.max_bytes > 0)
        .map(|l1| l1.bytes as f64 / l1.max_bytes as f64);
    let recent = &h.last_5m.counters;
    #[allow(clippy::cast_precision_loss)]
    let l1_evicted = (recent.l1_inserts >= thresholds.min_l1_inserts)
        .then(|| recent.l1_evictions as f64 / recent.l1_inserts as f64);
    #[allow(clippy::cast_precision_loss)]
    let l1_of_function = inputs.l1.and_then(|l1| {
        let memory = l1.function_memory_bytes.filter(|m| *m > 0)?;
        Some((l1.max_bytes as f64 / memory as f64, memory))
    });
    const MIB: f64 = 1024.0 * 1024.0;
    match (l1_of_function, l1_evicted) {
        (Some((share, memory)), _) if share > thresholds.l1_function_share_critical => {
            #[allow(clippy::cast_precision_loss)]
            let (bound, memory) = (
                inputs.l1.map_or(0.0, |l1| l1.max_bytes as f64) / MIB,
                memory as f64 / MIB,
            );
            alert(
                "l1_memory",
                Status::Critical,
                format!(
                    "L1_MAX_BYTES is {bound:.0} MiB, {:.0}% of the function's {memory:.0} MiB: \
                     a full L1 can run it out of memory",
                    share * 100.0
                ),
            );
        }
        (_, Some(evicted)) if evicted >= thresholds.l1_eviction_warning => alert(
            "l1_memory",
            Status::Warning,
            format!(
                "L1 evicted {:.0}% of the entries it took over the last 5 minutes before they \
                 expired: L1_MAX_BYTES is smaller than what is read",
                evicted * 100.0
            ),
        ),
        _ => {}
    }

    let mut freshness_figures = Vec::new();
    for (category, objective) in thresholds.freshness {
        let (figure, name) = freshness_names(category);
        let age = h.age_p99_5m.get(category);
        #[allow(clippy::cast_precision_loss)]
        let age_s = age.map(|a| a.at_least_ms as f64 / 1000.0);
        freshness_figures.push(Figure::now(name, age_s));
        // Too few answers make a p99 of one stale read: no alert on them.
        let Some(age_s) =
            age_s.filter(|_| age.is_some_and(|a| a.answers >= thresholds.min_age_answers))
        else {
            continue;
        };
        let objective_s = objective.as_secs_f64();
        if let Some(severity) = grade(age_s, objective_s, objective_s * 2.0, true) {
            alert(
                figure,
                severity,
                format!(
                    "{category} data served over the last 5 minutes is up to {age_s:.0} s old (p99), \
                     against an objective of {objective_s:.0} s"
                ),
            );
        }
    }

    #[allow(clippy::cast_precision_loss)]
    let used_memory = Figure::compared(
        "used_memory_bytes",
        inputs.server.map(|s| s.used_memory as f64),
        h.memory_hour_ago.map(|m| m as f64),
        inputs.server.map_or(0.0, |s| s.used_memory as f64 * 0.05),
        false,
    );
    let mut figures = vec![
        Figure::compared(
            "hit_ratio",
            hit_ratio,
            h.previous_55m.counters.hit_ratio(),
            0.02,
            true,
        ),
        Figure::compared(
            "redis_error_rate",
            errors,
            error_rate(&h.previous_55m.counters),
            0.005,
            false,
        ),
        // The share of maxmemory moves as the bytes do.
        Figure {
            trend: used_memory.trend,
            ..Figure::now("memory", memory)
        },
        used_memory,
        Figure::now("l1_memory", l1_share),
        Figure::now("l1_evicted_ratio", l1_evicted),
        Figure::now("l1_function_share", l1_of_function.map(|(share, _)| share)),
    ];
    figures.extend(freshness_figures);
    let status = alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Status::Healthy);
    HealthReport {
        status,
        alerts,
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::observe::Window;
    use crate::cache::traffic::AgeP99;
    use crate::model::RunOutcome;

    const NOW: i64 = 1_800_000_000_000;

    fn counters(hits: u64, misses: u64) -> MetricsSnapshot {
        MetricsSnapshot {
            l2_hits: hits,
            misses,
            l2_calls: hits + misses,
            ..MetricsSnapshot::default()
        }
    }

    fn refreshed(ago_s: i64) -> JobRun {
        JobRun {
            duration_ms: 1,
            processed: 1,
            entries_written: 1,
            ..JobRun::new("refresh", NOW - ago_s * 1000, RunOutcome::Succeeded)
        }
    }

    fn expired(ago_s: i64, lag_ms: u64) -> JobRun {
        JobRun {
            lag_ms: Some(lag_ms),
            ..JobRun::new("offer-expiry", NOW - ago_s * 1000, RunOutcome::Succeeded)
        }
    }

    fn inputs(last_5m: MetricsSnapshot, previous: MetricsSnapshot) -> HealthInputs {
        HealthInputs {
            history: History {
                last_5m: Window {
                    minutes: 5,
                    counters: last_5m,
                },
                previous_55m: Window {
                    minutes: 55,
                    counters: previous,
                },
                ..History::default()
            },
            server: Some(ServerInfo {
                nodes: 1,
                used_memory: 50,
                maxmemory: 100,
                ..ServerInfo::default()
            }),
            breaker: BreakerState::Closed,
            refresh_runs: vec![refreshed(60)],
            refresh_interval: Duration::from_secs(900),
            expiry_runs: vec![expired(30, 5_000)],
            expiry_interval: Duration::from_secs(60),
            l1: l1(10, 100, None),
            now: NOW,
        }
    }

    #[test]
    fn a_good_cache_is_healthy_and_a_rising_ratio_is_improving() {
        let report = evaluate(
            &inputs(counters(950, 50), counters(800, 200)),
            &Thresholds::default(),
            &HashMap::new(),
        );
        assert_eq!(report.status, Status::Healthy, "{report:?}");
        assert_eq!(report.figures[0].trend, Trend::Improving);
    }

    #[test]
    fn hit_ratio_thresholds_warn_at_70_and_are_critical_at_50() {
        let t = Thresholds::default();
        let warn = evaluate(
            &inputs(counters(600, 400), counters(600, 400)),
            &t,
            &HashMap::new(),
        );
        assert_eq!(warn.status, Status::Warning);
        let crit = evaluate(
            &inputs(counters(400, 600), counters(900, 100)),
            &t,
            &HashMap::new(),
        );
        assert_eq!(crit.status, Status::Critical);
        assert_eq!(crit.figures[0].trend, Trend::Degrading);
        // Too few reads to judge.
        let quiet = evaluate(
            &inputs(counters(1, 9), MetricsSnapshot::default()),
            &t,
            &HashMap::new(),
        );
        assert_eq!(quiet.status, Status::Healthy);
    }

    #[test]
    fn memory_and_an_open_circuit_raise_alerts_with_their_since() {
        let mut i = inputs(counters(950, 50), counters(950, 50));
        i.server = Some(ServerInfo {
            nodes: 1,
            used_memory: 96,
            maxmemory: 100,
            ..ServerInfo::default()
        });
        i.breaker = BreakerState::Open { until: NOW + 1000 };
        let since = HashMap::from([("memory".to_owned(), NOW - 60_000)]);
        let report = evaluate(&i, &Thresholds::default(), &since);
        assert_eq!(report.status, Status::Critical);
        let memory = report.alerts.iter().find(|a| a.figure == "memory").unwrap();
        assert_eq!(memory.since, NOW - 60_000);
        assert!(
            report
                .alerts
                .iter()
                .any(|a| a.figure == "circuit" && a.since == NOW)
        );
    }

    #[test]
    fn a_refresh_that_has_not_succeeded_for_two_intervals_warns() {
        let mut i = inputs(counters(950, 50), counters(950, 50));
        i.refresh_runs = vec![
            JobRun {
                outcome: RunOutcome::Failed,
                ..refreshed(60)
            },
            refreshed(1801),
        ];
        let report = evaluate(&i, &Thresholds::default(), &HashMap::new());
        assert_eq!(report.status, Status::Warning);
        assert_eq!(report.alerts[0].figure, "refresh");
        i.refresh_runs = vec![refreshed(1799)];
        assert_eq!(
            evaluate(&i, &Thresholds::default(), &HashMap::new()).status,
            Status::Healthy
        );
    }

    #[test]
    fn redis_errors_are_graded() {
        let mut failing = counters(950, 50);
        failing.l2_errors = 100;
        failing.l2_calls += 100;
        let report = evaluate(
            &inputs(failing, counters(950, 50)),
            &Thresholds::default(),
            &HashMap::new(),
        );
        assert!(
            report
                .alerts
                .iter()
                .any(|a| a.figure == "redis_error_rate" && a.severity == Status::Critical)
        );
        assert_eq!(report.figures[1].trend, Trend::Degrading);
    }

    #[test]
    fn offer_expiry_lag_over_two_minutes_warns() {
        let mut i = inputs(counters(950, 50), counters(950, 50));
        i.expiry_runs = vec![expired(30, 120_000)];
        assert_eq!(
            evaluate(&i, &Thresholds::default(), &HashMap::new()).status,
            Status::Healthy
        );
        i.expiry_runs = vec![expired(30, 120_001)];
        let report = evaluate(&i, &Thresholds::default(), &HashMap::new());
        assert_eq!(report.status, Status::Warning);
        assert_eq!(report.alerts[0].figure, "offer_expiry_lag");
    }

    #[test]
    fn offer_expiry_that_has_not_worked_for_three_intervals_warns_and_skips_do_not_count() {
        let mut i = inputs(counters(950, 50), counters(950, 50));
        let skipped = JobRun::new("offer-expiry", NOW - 10_000, RunOutcome::Skipped);
        i.expiry_runs = vec![skipped.clone(), expired(181, 1_000)];
        let report = evaluate(&i, &Thresholds::default(), &HashMap::new());
        assert_eq!(report.status, Status::Warning);
        assert_eq!(report.alerts[0].figure, "offer_expiry");
        i.expiry_runs = vec![skipped, expired(179, 1_000)];
        assert_eq!(
            evaluate(&i, &Thresholds::default(), &HashMap::new()).status,
            Status::Healthy
        );
        i.expiry_runs = Vec::new();
        assert!(
            evaluate(&i, &Thresholds::default(), &HashMap::new()).alerts[0]
                .message
                .contains("never succeeded")
        );
    }

    fn age(at_least_ms: u64) -> AgeP99 {
        AgeP99 {
            at_least_ms,
            answers: 100,
        }
    }

    fn figure<'a>(report: &'a HealthReport, name: &str) -> &'a Figure {
        report.figures.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn a_categorys_served_age_past_its_objective_warns_past_twice_is_critical_then_clears() {
        let t = Thresholds::default(); // 15 minutes for every category
        let mut i = inputs(counters(950, 50), counters(950, 50));
        let evaluate_at = |i: &HealthInputs, stats_age_s: u64| {
            let mut i = i.clone();
            i.history
                .age_p99_5m
                .insert("stats".into(), age(stats_age_s * 1000));
            i.history.age_p99_5m.insert("product".into(), age(30_000));
            evaluate(&i, &t, &HashMap::new())
        };
        let fine = evaluate_at(&i, 900);
        assert_eq!(fine.status, Status::Healthy, "{fine:?}");
        assert_eq!(figure(&fine, "data_age_p99_s_stats").value, Some(900.0));
        assert_eq!(figure(&fine, "data_age_p99_s_product").value, Some(30.0));
        assert_eq!(figure(&fine, "data_age_p99_s_feed").value, None);
        let warned = evaluate_at(&i, 901);
        assert_eq!(warned.status, Status::Warning);
        assert_eq!(warned.alerts[0].figure, "freshness_stats");
        assert!(warned.alerts[0].message.contains("901 s old"), "{warned:?}");
        let critical = evaluate_at(&i, 1801);
        assert_eq!(critical.status, Status::Critical);
        assert_eq!(critical.alerts[0].figure, "freshness_stats");
        // The objective comes from the thresholds (configuration), per category.
        i.history.age_p99_5m.insert("feed".into(), age(61_000));
        // Too few answers to judge: no alert.
        let few = AgeP99 {
            answers: 19,
            ..age(10_000_000)
        };
        i.history.age_p99_5m.insert("product".into(), few);
        assert_eq!(evaluate(&i, &t, &HashMap::new()).alerts.len(), 0);
        i.history.age_p99_5m.remove("product");
        let feed = evaluate(
            &i,
            &Thresholds {
                freshness: [
                    ("product", Duration::from_secs(900)),
                    ("stats", Duration::from_secs(900)),
                    ("feed", Duration::from_secs(60)),
                ],
                ..t
            },
            &HashMap::new(),
        );
        assert_eq!(feed.alerts[0].figure, "freshness_feed");
        // Fresh again: the alert is gone.
        i.history.age_p99_5m.clear();
        assert_eq!(evaluate(&i, &t, &HashMap::new()).status, Status::Healthy);
    }

    fn l1(bytes: u64, max_bytes: u64, function_mib: Option<u64>) -> Option<L1Memory> {
        Some(L1Memory {
            bytes,
            max_bytes,
            function_memory_bytes: function_mib.map(|m| m << 20),
        })
    }

    #[test]
    fn l1_evicting_what_it_takes_warns_and_a_bound_the_function_cannot_hold_is_critical() {
        let t = Thresholds::default();
        let mut i = inputs(counters(950, 50), counters(950, 50));
        // Full is not a problem by itself: a warm L1 is full.
        i.l1 = l1(100, 100, Some(1024));
        for (inserts, evictions, status) in [
            (1000, 99, Status::Healthy),
            (1000, 100, Status::Warning),
            (1000, 900, Status::Warning),
            // Too few inserts to judge.
            (99, 99, Status::Healthy),
        ] {
            i.history.last_5m.counters.l1_inserts = inserts;
            i.history.last_5m.counters.l1_evictions = evictions;
            let report = evaluate(&i, &t, &HashMap::new());
            assert_eq!(report.status, status, "{inserts}/{evictions}: {report:?}");
            assert_eq!(figure(&report, "l1_memory").value, Some(1.0));
            if status == Status::Warning {
                assert_eq!(report.alerts[0].figure, "l1_memory");
                assert!(report.alerts[0].message.contains("evicted"), "{report:?}");
                assert_eq!(
                    figure(&report, "l1_evicted_ratio").value,
                    Some(evictions as f64 / inserts as f64)
                );
                assert_eq!(
                    alert_value(&report, "l1_memory"),
                    Some(evictions as f64 / inserts as f64)
                );
            }
        }
        // A bound over half the function's memory is critical, evicting or not.
        for (max_mib, function_mib, status) in [
            (512, 1024, Status::Healthy),
            (513, 1024, Status::Critical),
            // Unknown function memory (not in Lambda): not judged.
            (4096, 0, Status::Healthy),
        ] {
            i.history.last_5m.counters.l1_evictions = 0;
            i.l1 = l1(0, max_mib << 20, Some(function_mib));
            let report = evaluate(&i, &t, &HashMap::new());
            assert_eq!(
                report.status, status,
                "{max_mib}/{function_mib}: {report:?}"
            );
            if status == Status::Critical {
                assert!(
                    report.alerts[0]
                        .message
                        .contains("513 MiB, 50% of the function's 1024 MiB"),
                    "{report:?}"
                );
                // The alert's value is the bound's share of the function's memory.
                let share = alert_value(&report, "l1_memory").unwrap();
                assert!((share - 513.0 / 1024.0).abs() < 1e-9, "{share}");
            }
        }
    }

    #[test]
    fn trends_carry_their_size() {
        let report = evaluate(
            &inputs(counters(950, 50), counters(800, 200)),
            &Thresholds::default(),
            &HashMap::new(),
        );
        let hit_ratio = figure(&report, "hit_ratio");
        assert_eq!(hit_ratio.trend, Trend::Improving);
        let change = hit_ratio.change.unwrap();
        assert!((change - 0.15).abs() < 1e-9, "{change}");
        // No memory sample from an hour ago: a direction and a size are both unknown.
        assert_eq!(figure(&report, "used_memory_bytes").change, None);
        assert_eq!(figure(&report, "used_memory_bytes").trend, Trend::Unknown);
    }

    #[test]
    fn every_alert_figure_is_in_the_bookkeeping_list() {
        let mut i = inputs(counters(100, 900), counters(950, 50));
        i.l1 = l1(200, 100, Some(100));
        i.server = None;
        i.breaker = BreakerState::HalfOpen;
        i.refresh_runs.clear();
        i.expiry_runs = vec![expired(1_000, 1_000_000)];
        for category in ["product", "stats", "feed"] {
            i.history
                .age_p99_5m
                .insert(category.into(), age(100_000_000));
        }
        let report = evaluate(&i, &Thresholds::default(), &HashMap::new());
        assert!(report.alerts.len() >= 9, "{report:?}");
        for alert in &report.alerts {
            assert!(ALERT_FIGURES.contains(&alert.figure), "{}", alert.figure);
        }
    }
}
