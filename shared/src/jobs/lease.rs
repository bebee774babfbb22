//! Taking and giving back a job's lease, so an overlapping schedule or a retried invoke skips
//! instead of doing the work twice.
//!
//! The lease is a conditional item in the stats table ([`JobLeases`]), not a Redis lock: the
//! jobs must keep working when Redis is down, and DynamoDB is what they write anyway. It
//! lapses on its own at `until`, so a run that crashed holds up the next one at most that long.
//!
//! The lease saves duplicate work; it is not what makes the jobs correct. Every write they
//! make is conditional (offer expiry) or idempotent (refresh), so a run whose lease lapsed
//! while it was still working cannot do harm. The fence (how many times the lease changed
//! hands) is logged to tell such runs apart.

use std::time::Duration;

use rand::Rng;

use crate::clock::millis;
use crate::error::Result;
use crate::model::{EpochMillis, JobRun, Lease, RunOutcome};
use crate::store::{JobLeases, StatsWriter};

/// What a skipped run records as its note.
pub const HELD_ELSEWHERE: &str = "skipped: another run holds the lease";

/// Tries to take `job`'s lease at `now` for `ttl`. `Ok(None)`: another run holds it.
pub async fn acquire(
    leases: &dyn JobLeases,
    job: &str,
    now: EpochMillis,
    ttl: Duration,
) -> Result<Option<Lease>> {
    let holder = format!("{:032x}", rand::rng().random::<u128>());
    let lease = leases
        .acquire_lease(job, &holder, now, now.saturating_add(millis(ttl)))
        .await?;
    if let Some(lease) = &lease {
        tracing::info!(job, fence = lease.fence, until = lease.until, "lease taken");
    }
    Ok(lease)
}

/// Gives the lease back; a failure only delays the next run until the lease lapses.
pub async fn release(leases: &dyn JobLeases, lease: &Lease) {
    if let Err(e) = leases.release_lease(lease).await {
        tracing::warn!(job = lease.job, error.message = %e, "cannot release the lease; it lapses on its own");
    }
}

/// Records a run that did nothing because the lease was held (history only), and logs it.
pub async fn record_skip(stats: &dyn StatsWriter, job: &str, now: EpochMillis) -> JobRun {
    let mut run = JobRun::new(job, now, RunOutcome::Skipped);
    run.note = Some(HELD_ELSEWHERE.to_owned());
    tracing::info!(job, "{HELD_ELSEWHERE}");
    if let Err(e) = crate::jobs::metrics::record_run(stats, &run).await {
        tracing::warn!(job, error.message = %e, "cannot record the skipped run");
    }
    run
}

/// How long a run may hold its lease: until its deadline (Lambda stops it there) plus a
/// second for clock skew, or `fallback` when it has no deadline (local runs). Kept tight so
/// that a run killed at its timeout does not make the next scheduled run skip.
pub fn lease_ttl(deadline: Option<tokio::time::Instant>, fallback: Duration) -> Duration {
    deadline.map_or(fallback, |d| {
        d.saturating_duration_since(tokio::time::Instant::now()) + Duration::from_secs(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StatsReader;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_held_lease_is_refused_until_it_lapses_and_then_taken_over_with_a_new_fence() {
        let store = MemoryStore::new();
        let first = acquire(&store, "job", 1_000, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert!(
            acquire(&store, "job", 30_000, Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        // Another job has its own lease.
        assert!(
            acquire(&store, "other", 30_000, Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        );
        let second = acquire(&store, "job", 61_000, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.fence, first.fence + 1);
        // The lapsed holder's release does not free the new holder's lease.
        release(&store, &first).await;
        assert!(
            acquire(&store, "job", 62_000, Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        release(&store, &second).await;
        assert!(
            acquire(&store, "job", 62_000, Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_skip_goes_to_the_history_but_never_becomes_the_last_run() {
        let store = MemoryStore::new();
        use crate::store::StatsWriter;
        store
            .record_run(&JobRun::new("job", 1_000, RunOutcome::Succeeded))
            .await
            .unwrap();
        record_skip(&store, "job", 2_000).await;
        assert_eq!(store.last_runs().await.unwrap()[0].started_at, 1_000);
        let history = store.run_history("job", 10).await.unwrap();
        assert_eq!(history[0].outcome, RunOutcome::Skipped);
        assert_eq!(history[0].note.as_deref(), Some(HELD_ELSEWHERE));
    }
}
