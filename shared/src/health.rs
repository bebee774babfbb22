//! Cache health from the shared counters, Redis' own figures, the circuit breaker and the
//! refresh job: a status, alerts with severity and since when, and a trend per figure.
//!
//! Pure: the caller gathers the inputs, so every threshold is unit-tested.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::cache::breaker::BreakerState;
use crate::cache::l2::ServerInfo;
use crate::cache::metrics::MetricsSnapshot;
use crate::cache::observe::History;
use crate::model::{EpochMillis, JobRun};

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
    /// Now.
    pub now: EpochMillis,
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
    let memory_trend = trend(
        inputs.server.map(|s| s.used_memory as f64),
        h.memory_hour_ago.map(|m| m as f64),
        inputs.server.map_or(0.0, |s| s.used_memory as f64 * 0.05),
        false,
    );
    let figures = vec![
        Figure {
            name: "hit_ratio",
            value: hit_ratio,
            trend: trend(hit_ratio, h.previous_55m.counters.hit_ratio(), 0.02, true),
        },
        Figure {
            name: "redis_error_rate",
            value: errors,
            trend: trend(errors, error_rate(&h.previous_55m.counters), 0.005, false),
        },
        Figure {
            name: "memory",
            value: memory,
            trend: memory_trend,
        },
    ];
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
}
