//! Cache counters: lock-free increments on the hot path, snapshots for the stats endpoints,
//! and CloudWatch Embedded Metric Format lines for dashboards and alarms.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::model::EpochMillis;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident: $unit:literal),* $(,)?) => {
        /// Live counters of one cache engine. Every field only grows.
        #[derive(Debug, Default)]
        pub struct CacheMetrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`CacheMetrics`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct MetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl CacheMetrics {
            /// Copies every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl MetricsSnapshot {
            /// What happened between `earlier` and this snapshot.
            pub fn delta_since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.saturating_sub(earlier.$name),)* }
            }

            /// Adds another snapshot's counts (e.g. per-minute buckets into a window).
            pub fn add(&mut self, other: &MetricsSnapshot) {
                $(self.$name = self.$name.saturating_add(other.$name);)*
            }

            /// `(name, value, CloudWatch unit)` of every counter.
            pub fn fields(&self) -> Vec<(&'static str, u64, &'static str)> {
                vec![$((stringify!($name), self.$name, $unit),)*]
            }

            /// Rebuilds a snapshot from `(name, value)` pairs, ignoring unknown names; the
            /// inverse of [`MetricsSnapshot::fields`], for counters kept in a Redis hash.
            pub fn from_fields<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> MetricsSnapshot {
                let mut snapshot = MetricsSnapshot::default();
                for (name, value) in pairs {
                    match name {
                        $(stringify!($name) => snapshot.$name = value,)*
                        _ => {}
                    }
                }
                snapshot
            }
        }
    };
}

counters! {
    /// Reads answered by the in-process L1.
    l1_hits: "Count",
    /// Reads answered fresh by Redis.
    l2_hits: "Count",
    /// Reads answered with a stale value while it is revalidated.
    stale_serves: "Count",
    /// Reads that found nothing usable in either tier.
    misses: "Count",
    /// Reads answered by a cached "not found".
    negative_hits: "Count",
    /// Loader calls (each is one or more database reads).
    loads: "Count",
    /// Loader calls that failed.
    load_errors: "Count",
    /// Times a reader waited for another process's load.
    lock_waits: "Count",
    /// Waits that gave up and loaded themselves.
    lock_wait_timeouts: "Count",
    /// Reads or writes that skipped Redis (circuit open or Redis failed).
    bypasses: "Count",
    /// Redis calls that failed or timed out.
    l2_errors: "Count",
    /// Stored values that could not be decoded (corrupt, unknown format, too large, wrong type).
    decode_errors: "Count",
    /// Values not written to the cache because they exceed the size limit.
    oversized_skips: "Count",
    /// Writes the version guard refused because a newer version was cached.
    version_rejects: "Count",
    /// Revalidations completed.
    revalidations: "Count",
    /// Keys put on the durable revalidation queue.
    revalidations_enqueued: "Count",
    /// Times the circuit breaker opened.
    breaker_opens: "Count",
    /// Redis calls made, failed ones included (a command, a batch or a pipeline).
    l2_calls: "Count",
    /// L1 entries dropped because another environment changed their key (L1 coherence).
    l1_remote_drops: "Count",
    /// L1 entries not served because no poll of the change log vouched for them (after a
    /// freeze, or with polls failing): read from L2 instead.
    l1_unchecked: "Count",
    /// Values put in L1.
    l1_inserts: "Count",
    /// L1 entries evicted before they expired, to keep L1 within `L1_MAX_BYTES` (or not
    /// admitted for it): L1 is smaller than what is read.
    l1_evictions: "Count",
    /// Payload bytes written before compression.
    bytes_raw: "Bytes",
    /// Bytes written to Redis after compression, headers included.
    bytes_stored: "Bytes",
}

impl CacheMetrics {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl MetricsSnapshot {
    /// Reads served from cache (either tier, stale and negative included) over all reads.
    /// `None` before the first read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let hits = self.l1_hits + self.l2_hits + self.stale_serves + self.negative_hits;
        let reads = hits + self.misses;
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        (reads > 0).then(|| hits as f64 / reads as f64)
    }

    /// One CloudWatch Embedded Metric Format line: every counter as a metric in `namespace`,
    /// with the given dimensions (e.g. `[("Function", "api")]`).
    pub fn emf_line(
        &self,
        namespace: &str,
        dimensions: &[(&str, &str)],
        timestamp: EpochMillis,
    ) -> String {
        let fields = self.fields();
        let metrics: Vec<_> = fields
            .iter()
            .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit}))
            .collect();
        let dimension_names: Vec<_> = dimensions.iter().map(|(name, _)| *name).collect();
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [dimension_names],
                    "Metrics": metrics,
                }],
            },
        });
        if let Some(object) = line.as_object_mut() {
            for (name, value) in dimensions {
                object.insert((*name).to_owned(), serde_json::Value::from(*value));
            }
            for (name, value, _) in fields {
                object.insert(name.to_owned(), serde_json::Value::from(value));
            }
        }
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_delta_and_ratio() {
        let metrics = CacheMetrics::default();
        CacheMetrics::incr(&metrics.l1_hits);
        let before = metrics.snapshot();
        CacheMetrics::add(&metrics.l2_hits, 2);
        CacheMetrics::incr(&metrics.misses);
        let delta = metrics.snapshot().delta_since(&before);
        assert_eq!((delta.l1_hits, delta.l2_hits, delta.misses), (0, 2, 1));
        assert_eq!(metrics.snapshot().hit_ratio(), Some(0.75));
        assert_eq!(MetricsSnapshot::default().hit_ratio(), None);
    }

    #[test]
    fn fields_round_trip_through_from_fields() {
        let snapshot = MetricsSnapshot {
            loads: 3,
            bytes_raw: 100,
            ..MetricsSnapshot::default()
        };
        let pairs = snapshot.fields().into_iter().map(|(n, v, _)| (n, v));
        assert_eq!(MetricsSnapshot::from_fields(pairs), snapshot);
    }

    #[test]
    fn emf_line_declares_every_metric_with_its_value() {
        let snapshot = MetricsSnapshot {
            l1_hits: 5,
            bytes_stored: 1024,
            ..MetricsSnapshot::default()
        };
        let line = snapshot.emf_line("CatalogCache", &[("Function", "api")], 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "CatalogCache");
        assert_eq!(directive["Dimensions"][0][0], "Function");
        assert_eq!(v["Function"], "api");
        assert_eq!(v["l1_hits"], 5);
        assert_eq!(v["bytes_stored"], 1024);
        let declared = directive["Metrics"].as_array().unwrap();
        assert!(
            declared
                .iter()
                .any(|m| m["Name"] == "bytes_stored" && m["Unit"] == "Bytes")
        );
        assert_eq!(declared.len(), snapshot.fields().len());
    }
}
