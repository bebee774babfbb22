//! Every job run recorded is also a CloudWatch Embedded Metric Format line (namespace
//! `CatalogCache`, dimension `Job`), so alarms can watch a job that stops succeeding or falls
//! behind: the run history in the stats table is for people, these are for CloudWatch.

use crate::model::{JobRun, RunOutcome};
use crate::store::StatsWriter;

/// The namespace of every metric the functions emit.
pub const NAMESPACE: &str = "CatalogCache";

/// The metrics of a job run, with their CloudWatch unit; alarms in `infra/template.yaml` name
/// them (checked by `tests/it/template.rs`).
pub const RUN_METRICS: [(&str, &str); 6] = [
    ("job_succeeded", "Count"),
    ("job_failed", "Count"),
    ("job_skipped", "Count"),
    ("job_errors", "Count"),
    ("job_duration_ms", "Milliseconds"),
    ("job_lag_ms", "Milliseconds"),
];

/// Records `run` in the stats table and, in Lambda, prints its metrics for CloudWatch.
pub async fn record_run(stats: &dyn StatsWriter, run: &JobRun) -> crate::Result<()> {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        // EMF lines must be the whole log line, so they go straight to stdout.
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{}", emf_line(run));
    }
    stats.record_run(run).await
}

/// The run as one EMF line. A run that stopped early with progress (`Partial`) counts as
/// succeeded: the next run resumes it. `job_lag_ms` is present only for jobs that measure it.
pub fn emf_line(run: &JobRun) -> String {
    let flag = |yes: bool| u64::from(yes);
    let mut values = vec![
        (
            "job_succeeded",
            flag(matches!(
                run.outcome,
                RunOutcome::Succeeded | RunOutcome::Partial
            )),
        ),
        ("job_failed", flag(run.outcome == RunOutcome::Failed)),
        ("job_skipped", flag(run.outcome == RunOutcome::Skipped)),
        ("job_errors", run.errors),
        ("job_duration_ms", run.duration_ms),
    ];
    if let Some(lag) = run.lag_ms {
        values.push(("job_lag_ms", lag));
    }
    let metrics: Vec<_> = values
        .iter()
        .map(|(name, _)| {
            let unit = RUN_METRICS
                .iter()
                .find(|(known, _)| known == name)
                .map_or("None", |(_, unit)| *unit);
            serde_json::json!({"Name": name, "Unit": unit})
        })
        .collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": run.started_at,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Job"]],
                "Metrics": metrics,
            }],
        },
        "Job": run.job,
    });
    if let Some(object) = line.as_object_mut() {
        for (name, value) in values {
            object.insert(name.to_owned(), serde_json::Value::from(value));
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_one_emf_line_with_the_job_dimension() {
        let mut run = JobRun::new("offer-expiry", 1_795_000_000_000, RunOutcome::Partial);
        run.duration_ms = 1200;
        run.lag_ms = Some(45_000);
        run.errors = 2;
        let line: serde_json::Value = serde_json::from_str(&emf_line(&run)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([["Job"]]));
        assert_eq!(line["Job"], "offer-expiry");
        assert_eq!(
            (line["job_succeeded"].as_u64(), line["job_failed"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(line["job_lag_ms"], 45_000);
        assert_eq!(line["job_errors"], 2);
        let declared: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(declared.len(), RUN_METRICS.len());
        for name in declared {
            assert!(line[name].is_u64(), "{name} has a value");
        }

        let failed = JobRun::new("refresh", 1_795_000_000_000, RunOutcome::Failed);
        let line: serde_json::Value = serde_json::from_str(&emf_line(&failed)).unwrap();
        assert_eq!(line["job_failed"], 1);
        assert!(line.get("job_lag_ms").is_none(), "refresh measures no lag");
    }
}
