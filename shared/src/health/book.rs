//! Since when each alert has been active, and the history of its changes (raised, escalated,
//! eased, cleared).
//!
//! The bookkeeping is a hash: field `<figure>` holds since when the alert is active, and
//! `<figure>!critical` since when it has been critical. An evaluation sets what is absent and
//! deletes what no longer holds, in one script. Redis answers `HSETNX` and `HDEL` with 1 to one
//! caller only, so each change is recorded by at most one of the environments evaluating at
//! once (by none if that answer is lost on its way back).
//!
//! Figures about the fleet are kept in a hash shared in Redis. Figures about one process (its
//! circuit breaker, whether it reaches Redis) are kept by that process: environments that
//! disagree would otherwise raise and clear the alert in turn, and "Redis did not answer"
//! cannot be kept in Redis. Their events name the environment.

use std::collections::HashMap;

use super::{Alert, HealthReport, Status};
use crate::cache::l2::HashUpdate;
use crate::model::EpochMillis;

/// The figures each process judges for itself: each environment keeps their since-when.
pub const PROCESS_ALERTS: [&str; 2] = ["circuit", "redis"];

/// The field suffix of since when an alert has been critical.
const CRITICAL: &str = "!critical";

/// One change of an alert, as the alert history keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertEvent {
    /// When (epoch ms).
    pub at: EpochMillis,
    /// The alert's figure, e.g. `hit_ratio`.
    pub figure: String,
    /// `raised`, `escalated` (WARNING to CRITICAL), `eased` (CRITICAL to WARNING) or `cleared`.
    pub event: String,
    /// The severity it has after the change (`WARNING` or `CRITICAL`); `null` when cleared.
    pub severity: Option<Status>,
    /// The figure's value then, if it has one.
    pub value: Option<f64>,
    /// What is wrong, in words, unless cleared.
    pub message: Option<String>,
    /// The execution environment (its log stream) for an alert about one process, such as its
    /// circuit breaker; `null` for the fleet's figures.
    #[serde(default)]
    pub environment: Option<String>,
}

/// What to set (when absent) and delete in one bookkeeping hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookUpdate {
    /// `(field, now)` to set if absent.
    pub set_if_absent: Vec<(String, EpochMillis)>,
    /// Fields to delete.
    pub delete: Vec<String>,
}

/// The updates of an evaluation: the shared hash's and this process's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookUpdates {
    /// For the hash shared in Redis.
    pub shared: BookUpdate,
    /// For this process's own hash.
    pub process: BookUpdate,
}

impl BookUpdates {
    /// What the alerts active now change in the bookkeeping of every figure in `figures`.
    pub fn for_alerts(alerts: &[Alert], figures: &[&str], now: EpochMillis) -> BookUpdates {
        let mut updates = BookUpdates::default();
        for figure in figures {
            let book = if PROCESS_ALERTS.contains(figure) {
                &mut updates.process
            } else {
                &mut updates.shared
            };
            let critical = format!("{figure}{CRITICAL}");
            match alerts.iter().find(|a| a.figure == *figure) {
                Some(alert) => {
                    book.set_if_absent.push(((*figure).to_owned(), now));
                    if alert.severity == Status::Critical {
                        book.set_if_absent.push((critical, now));
                    } else {
                        book.delete.push(critical);
                    }
                }
                None => book.delete.extend([(*figure).to_owned(), critical]),
            }
        }
        updates
    }
}

/// What the updates did: the shared one (`None` when Redis did not answer) and this process's.
#[derive(Debug, Clone, Default)]
pub struct BookOutcome {
    /// The shared hash's answer.
    pub shared: Option<HashUpdate>,
    /// This process's hash's answer.
    pub process: HashUpdate,
}

impl BookOutcome {
    /// Since when each active alert has been active (alerts missing here are new).
    pub fn since(&self) -> HashMap<String, EpochMillis> {
        self.shared
            .iter()
            .chain([&self.process])
            .flat_map(|update| &update.hash)
            .filter(|(field, _)| !field.ends_with(CRITICAL))
            .map(|(field, since)| (field.clone(), *since))
            .collect()
    }

    /// The changes these updates made, with the value of each one's figure in `report`; the
    /// process's name `environment`.
    pub fn events(
        &self,
        updates: &BookUpdates,
        report: &HealthReport,
        now: EpochMillis,
        environment: &str,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let books = [
            (&updates.shared, self.shared.as_ref(), None),
            (&updates.process, Some(&self.process), Some(environment)),
        ];
        for (update, outcome, environment) in books {
            let Some(outcome) = outcome else { continue };
            let mut event = |figure: &str, kind: &str| {
                let alert = report.alerts.iter().find(|a| a.figure == figure);
                events.push(AlertEvent {
                    at: now,
                    figure: figure.to_owned(),
                    event: kind.to_owned(),
                    severity: alert.map(|a| a.severity),
                    value: super::alert_value(report, figure),
                    message: alert.map(|a| a.message.clone()),
                    environment: environment.map(str::to_owned),
                });
            };
            let newly_set: Vec<&str> = update
                .set_if_absent
                .iter()
                .zip(&outcome.set)
                .filter(|(_, set)| **set)
                .map(|((field, _), _)| field.as_str())
                .collect();
            for field in &newly_set {
                match field.strip_suffix(CRITICAL) {
                    None => event(field, "raised"),
                    // Critical from the start is one "raised".
                    Some(figure) if !newly_set.contains(&figure) => event(figure, "escalated"),
                    Some(_) => {}
                }
            }
            let deleted = update
                .delete
                .iter()
                .zip(&outcome.deleted)
                .filter(|(_, deleted)| **deleted)
                .map(|(field, _)| field.as_str());
            for field in deleted {
                match field.strip_suffix(CRITICAL) {
                    None => event(field, "cleared"),
                    // Still active, no longer critical.
                    Some(figure) if report.alerts.iter().any(|a| a.figure == figure) => {
                        event(figure, "eased");
                    }
                    Some(_) => {}
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: EpochMillis = 1_700_000_000_000;

    fn alert(figure: &'static str, severity: Status) -> Alert {
        Alert {
            figure,
            severity,
            message: format!("{figure} is bad"),
            since: NOW,
        }
    }

    fn report(alerts: Vec<Alert>) -> HealthReport {
        HealthReport {
            status: Status::Healthy,
            alerts,
            figures: Vec::new(),
        }
    }

    /// One environment's evaluation against the shared hash and its own: the events it records.
    fn evaluate(
        shared: &mut HashMap<String, i64>,
        own: &mut HashMap<String, i64>,
        alerts: Vec<Alert>,
        at: EpochMillis,
    ) -> Vec<(String, String, Option<String>)> {
        let figures = ["hit_ratio", "memory", "circuit"];
        let updates = BookUpdates::for_alerts(&alerts, &figures, at);
        let outcome = BookOutcome {
            shared: Some(HashUpdate::apply(
                shared,
                &updates.shared.set_if_absent,
                &updates.shared.delete,
            )),
            process: HashUpdate::apply(
                own,
                &updates.process.set_if_absent,
                &updates.process.delete,
            ),
        };
        let report = report(alerts);
        outcome
            .events(&updates, &report, at, "env-a")
            .into_iter()
            .map(|e| {
                // As the history's JSON names it.
                let severity = e.severity.map(|s| serde_json::to_value(s).unwrap());
                let severity = severity.and_then(|s| s.as_str().map(str::to_owned));
                (e.event, e.figure, severity)
            })
            .collect()
    }

    fn event(kind: &str, figure: &str, severity: Option<&str>) -> (String, String, Option<String>) {
        (kind.into(), figure.into(), severity.map(str::to_owned))
    }

    #[test]
    fn each_change_is_recorded_once_however_many_environments_evaluate() {
        let mut shared = HashMap::new();
        let (mut a, mut b) = (HashMap::new(), HashMap::new());
        let warning = || vec![alert("hit_ratio", Status::Warning)];
        let critical = || vec![alert("hit_ratio", Status::Critical)];
        // Raised by whichever evaluates first; the other sees it already set.
        assert_eq!(
            evaluate(&mut shared, &mut a, warning(), NOW),
            [event("raised", "hit_ratio", Some("WARNING"))]
        );
        assert!(evaluate(&mut shared, &mut b, warning(), NOW + 1).is_empty());
        // Since when: the first evaluation's.
        assert_eq!(shared["hit_ratio"], NOW);
        // Escalated once, eased once.
        assert_eq!(
            evaluate(&mut shared, &mut a, critical(), NOW + 2),
            [event("escalated", "hit_ratio", Some("CRITICAL"))]
        );
        assert!(evaluate(&mut shared, &mut b, critical(), NOW + 3).is_empty());
        assert_eq!(
            evaluate(&mut shared, &mut b, warning(), NOW + 4),
            [event("eased", "hit_ratio", Some("WARNING"))]
        );
        assert!(evaluate(&mut shared, &mut a, warning(), NOW + 5).is_empty());
        // Cleared once.
        assert_eq!(
            evaluate(&mut shared, &mut a, vec![], NOW + 6),
            [event("cleared", "hit_ratio", None)]
        );
        assert!(evaluate(&mut shared, &mut b, vec![], NOW + 7).is_empty());
        assert!(shared.is_empty(), "{shared:?}");
        // Critical from the start: one "raised", critical.
        assert_eq!(
            evaluate(&mut shared, &mut a, critical(), NOW + 8),
            [event("raised", "hit_ratio", Some("CRITICAL"))]
        );
    }

    #[test]
    fn a_process_alert_is_kept_by_each_process_and_names_its_environment() {
        let mut shared = HashMap::new();
        let (mut a, mut b) = (HashMap::new(), HashMap::new());
        let open = || vec![alert("circuit", Status::Critical)];
        // Environment a's breaker is open, b's is closed: neither flaps the other's alert.
        assert_eq!(
            evaluate(&mut shared, &mut a, open(), NOW),
            [event("raised", "circuit", Some("CRITICAL"))]
        );
        assert!(evaluate(&mut shared, &mut b, vec![], NOW + 1).is_empty());
        assert!(evaluate(&mut shared, &mut a, open(), NOW + 2).is_empty());
        assert!(shared.is_empty(), "{shared:?}");
        assert_eq!(a["circuit"], NOW);
        let updates = BookUpdates::for_alerts(&[], &["circuit"], NOW + 3);
        let outcome = BookOutcome {
            shared: None,
            process: HashUpdate::apply(
                &mut a,
                &updates.process.set_if_absent,
                &updates.process.delete,
            ),
        };
        let events = outcome.events(&updates, &report(vec![]), NOW + 3, "env-a");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].event.as_str(), events[0].environment.as_deref()),
            ("cleared", Some("env-a"))
        );
    }

    #[test]
    fn without_redis_shared_alerts_are_new_and_record_nothing() {
        let alerts = vec![alert("memory", Status::Warning)];
        let updates = BookUpdates::for_alerts(&alerts, &["memory", "circuit"], NOW);
        let outcome = BookOutcome {
            shared: None,
            process: HashUpdate::apply(
                &mut HashMap::new(),
                &updates.process.set_if_absent,
                &updates.process.delete,
            ),
        };
        assert!(outcome.since().is_empty());
        assert!(
            outcome
                .events(&updates, &report(alerts), NOW, "env-a")
                .is_empty()
        );
    }
}
