//! The offer-expiry job: every minute, expire the offers that are due, exactly once, and make
//! the cache forget them.
//!
//! DynamoDB is the truth. Each offer is expired by one conditional write (still active, still
//! due, same version), which also drops it from the sparse `active-by-expiry` index; an offer
//! extended, cancelled or expired by someone else meanwhile fails the condition and is
//! counted, never overwritten. So two runs at once, or a run after one that crashed half-way,
//! expire every offer once: the second writer always loses the condition.
//!
//! Where the due offers come from:
//! - the Redis expiry set ([`ExpirySet`]) when it is synced: one `ZRANGE`, plus one item per
//!   index shard to check the set missed nothing due. The set knows no versions, so each
//!   candidate is read back (BatchGetItem) before it is written; what the read shows also
//!   repairs the set (a rescheduled or gone offer);
//! - the index (every shard, every page) when Redis is down, the set lost its marker, or the
//!   check found the set missing an offer. A reconcile, at least every `reconcile_every` and
//!   after any such finding, puts the set back in step with the time a run has left.
//!
//! A run holds the job's lease, so an overlapping schedule skips; it stops starting chunks
//! shortly before its deadline, and what is left is due again next minute.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use super::lease;
use crate::cache::Cache;
use crate::error::Result;
use crate::expiry_set::{ExpirySet, SetState, member};
use crate::model::{
    EpochMillis, ExpiringOffer, JobRun, Offer, OfferId, OfferStatus, ProductId, RunOutcome,
};
use crate::store::{ExpiryIndex, OfferExpirer, OfferReader, StatsStore};

/// The job's name in metadata and leases.
pub const JOB: &str = "offer-expiry";

/// The catalog ports the job uses: read offers, expire them, list the index.
pub trait ExpiryCatalog: OfferReader + OfferExpirer + ExpiryIndex {}
impl<T: OfferReader + OfferExpirer + ExpiryIndex> ExpiryCatalog for T {}

/// What the job works on.
#[derive(Clone)]
pub struct ExpiryDeps {
    /// Offers (read, conditional expiry, index).
    pub catalog: Arc<dyn ExpiryCatalog>,
    /// Run metadata and the lease.
    pub stats: Arc<dyn StatsStore>,
    /// The cache whose product entries and expiry set follow the expiries.
    pub cache: Cache,
}

/// How the job runs.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryOptions {
    /// Conditional writes in flight at once.
    pub concurrency: usize,
    /// Offers handled per step; the deadline is checked between steps.
    pub chunk: usize,
    /// Most offers one run takes on; the rest are due again next run.
    pub max_per_run: usize,
    /// Reconcile the Redis set with the index at least this often.
    pub reconcile_every: Duration,
    /// Stop starting steps this long before the deadline.
    pub stop_before: Duration,
    /// Lease lifetime of a run without a deadline (local runs).
    pub lease_without_deadline: Duration,
}

impl ExpiryOptions {
    /// Options from the configuration, with the job's defaults for the rest.
    pub fn from_config(jobs: &crate::config::JobsConfig) -> Self {
        ExpiryOptions {
            concurrency: jobs.expiry_concurrency,
            reconcile_every: jobs.expiry_reconcile_interval,
            ..ExpiryOptions::default()
        }
    }
}

impl Default for ExpiryOptions {
    fn default() -> Self {
        ExpiryOptions {
            concurrency: 128,
            chunk: 1000,
            max_per_run: 250_000,
            reconcile_every: Duration::from_secs(3600),
            stop_before: Duration::from_secs(2),
            lease_without_deadline: Duration::from_secs(120),
        }
    }
}

/// Where a run found its due offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DueSource {
    /// The Redis expiry set.
    Set,
    /// The DynamoDB index (Redis unavailable, set unsynced, or a reconcile run).
    Index,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpiryReport {
    /// Where the due offers came from (`None`: the run did not get that far).
    pub source: Option<DueSource>,
    /// Offers due at the start of the run (at most `max_per_run`).
    pub due: u64,
    /// Offers handled (due, minus those left for the next run).
    pub processed: u64,
    /// Offers this run expired.
    pub expired: u64,
    /// Offers another run (or writer) had already expired.
    pub already_expired: u64,
    /// Offers moved to a later expiry meanwhile (left active).
    pub extended: u64,
    /// Offers cancelled or deleted meanwhile (left alone).
    pub cancelled: u64,
    /// Set members whose offer is no longer active, removed.
    pub orphans_removed: u64,
    /// Active offers missing from the set (or with a stale expiry there), added back.
    pub members_added: u64,
    /// Due offers not started before the deadline; the next run takes them.
    pub left_for_next_run: u64,
    /// Whether more offers were due than one run takes on (`max_per_run`).
    pub more_due: bool,
    /// Due offers the index listed that the Redis set missed (the run then used the index).
    pub set_missed: u64,
    /// Reads or writes that failed (the offers stay due and are retried next run).
    pub errors: u64,
    /// Product entries invalidated in the cache.
    pub invalidated: u64,
    /// Now minus the oldest due `expires_at` at the start: how late the job is.
    pub lag_ms: u64,
    /// Whether this run reconciled the Redis set with the index.
    pub reconciled: bool,
    /// How long the run took.
    pub duration_ms: u64,
    /// Why the run did nothing, if it did nothing (another run held the lease).
    pub skipped_reason: Option<String>,
    /// How the run ended, as recorded in its metadata (`None` for a skipped run).
    pub outcome: Option<RunOutcome>,
}

impl ExpiryReport {
    /// Offers whose expiry lost its condition because someone else changed them first.
    pub fn changed_meanwhile(&self) -> u64 {
        self.already_expired + self.extended + self.cancelled
    }
}

/// Runs the job once. `now` is the time offers are due by; `deadline` is when the invocation
/// ends (`None`: no limit).
pub async fn expire_once(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    now: EpochMillis,
    deadline: Option<Instant>,
) -> ExpiryReport {
    let started = Instant::now();
    let ttl = lease::lease_ttl(deadline, options.lease_without_deadline);
    let held = match lease::acquire(deps.stats.as_ref(), JOB, now, ttl).await {
        Ok(Some(held)) => held,
        Ok(None) => {
            lease::record_skip(deps.stats.as_ref(), JOB, now).await;
            return ExpiryReport {
                skipped_reason: Some(lease::HELD_ELSEWHERE.to_owned()),
                ..ExpiryReport::default()
            };
        }
        Err(e) => {
            tracing::error!(error.message = %e, "offer-expiry cannot take its lease; not running");
            let mut report = ExpiryReport {
                errors: 1,
                ..ExpiryReport::default()
            };
            finish(deps, &mut report, now, started, RunOutcome::Failed).await;
            return report;
        }
    };
    let mut report = ExpiryReport::default();
    let outcome = match run(deps, options, now, deadline, &mut report).await {
        Ok(()) if report.due > 0 && report.expired == 0 && report.errors > 0 => RunOutcome::Failed,
        Ok(()) if report.errors > 0 || report.left_for_next_run > 0 || report.more_due => {
            RunOutcome::Partial
        }
        Ok(()) => RunOutcome::Succeeded,
        Err(e) => {
            tracing::error!(error.message = %e, "offer-expiry cannot list due offers");
            report.errors += 1;
            RunOutcome::Failed
        }
    };
    finish(deps, &mut report, now, started, outcome).await;
    lease::release(deps.stats.as_ref(), &held).await;
    report
}

/// How long an offer may be due before the index's word that the set misses it counts: the
/// API writes the set right after the table, and the index lags the table by well under this.
const MISSED_GRACE_MS: i64 = 10_000;

/// Finds the due offers and expires them, step by step, until done or out of time; then, if
/// one is due and time is left, reconciles the set with the index.
async fn run(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    now: EpochMillis,
    deadline: Option<Instant>,
    report: &mut ExpiryReport,
) -> Result<()> {
    let set = ExpirySet::new(&deps.cache);
    let (due, reconcile_wanted) = find_due(deps, options, &set, now, report).await?;
    report.due = due.len() as u64;
    report.more_due = due.len() >= options.max_per_run;
    let out_of_time = || deadline.is_some_and(|d| Instant::now() + options.stop_before >= d);
    for (i, step) in due.chunks(options.chunk.max(1)).enumerate() {
        if out_of_time() {
            report.left_for_next_run = (due.len() - i * options.chunk.max(1)) as u64;
            tracing::warn!(
                left = report.left_for_next_run,
                "offer-expiry stopped before its deadline; the rest is due next run"
            );
            break;
        }
        expire_step(deps, options, &set, step, now, report).await;
    }
    if reconcile_wanted && !out_of_time() {
        // Expiring comes first; the reconcile gets the time that is left.
        let budget = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .saturating_sub(options.stop_before)
        });
        let reconciling = reconcile(deps, &set, now, report);
        match budget {
            None => reconciling.await,
            Some(budget) => {
                if tokio::time::timeout(budget, reconciling).await.is_err() {
                    tracing::warn!(
                        "reconcile of the expiry set ran out of time; the next run tries again"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The offers due at `now`, soonest first, and whether the set wants a reconcile.
///
/// From the set when it is synced: then one small query per index shard checks that the set
/// did not miss an offer the index lists as due (a write whose set update never arrived);
/// if it did, this run reads the index and reconciles. From the index when Redis is down
/// or the set unsynced. The lag is measured on the index, the truth, either way.
async fn find_due(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    set: &ExpirySet,
    now: EpochMillis,
    report: &mut ExpiryReport,
) -> Result<(Vec<ExpiringOffer>, bool)> {
    let reconcile_every = crate::clock::millis(options.reconcile_every);
    let state = set.state().await;
    let reconcile_due = match state {
        SetState::Synced(at) => now - at >= reconcile_every,
        SetState::Unsynced => true,
        SetState::Unavailable => false,
    };
    if matches!(state, SetState::Synced(_))
        && let Some(due) = set.due(now, options.max_per_run).await
    {
        let oldest = deps.catalog.oldest_due(now).await?;
        report.lag_ms = lag(now, &oldest);
        let listed: BTreeSet<String> = due
            .iter()
            .map(|o| member(&o.product_id, &o.offer_id))
            .collect();
        // A capped list says nothing about offers due after its last one.
        let horizon = match due.last() {
            Some(last) if due.len() >= options.max_per_run => last.expires_at,
            _ => now,
        };
        let missed = oldest
            .iter()
            .filter(|o| o.expires_at <= (now - MISSED_GRACE_MS).min(horizon))
            .filter(|o| !listed.contains(&member(&o.product_id, &o.offer_id)))
            .count();
        if missed == 0 {
            report.source = Some(DueSource::Set);
            return Ok((due, reconcile_due));
        }
        tracing::warn!(
            missed,
            "the expiry set misses due offers the index lists; reading the index and reconciling"
        );
        report.set_missed = missed as u64;
        report.source = Some(DueSource::Index);
        return Ok((deps.catalog.expiring(now, options.max_per_run).await?, true));
    }
    report.source = Some(DueSource::Index);
    let due = deps.catalog.expiring(now, options.max_per_run).await?;
    report.lag_ms = lag(now, due.first());
    Ok((due, reconcile_due))
}

/// Now minus the oldest of `offers`' expiries (0 if none is due).
fn lag<'a>(now: EpochMillis, offers: impl IntoIterator<Item = &'a ExpiringOffer>) -> u64 {
    offers
        .into_iter()
        .map(|o| o.expires_at)
        .min()
        .map_or(0, |oldest| u64::try_from(now - oldest).unwrap_or(0))
}

/// Puts the set back in step with the index. Every member the index does not list, and every
/// active offer the set lacks (or holds with an earlier expiry), is read back consistently
/// (the index lags writes): active offers are added at their expiry (`ZADD GT`, so an
/// extension that lands meanwhile is not undone), the others removed as orphans. The marker
/// is written last, and only if every repair reached Redis.
async fn reconcile(
    deps: &ExpiryDeps,
    set: &ExpirySet,
    now: EpochMillis,
    report: &mut ExpiryReport,
) {
    let Some(members) = set.all().await else {
        return;
    };
    let active = match deps.catalog.expiring(i64::MAX, usize::MAX).await {
        Ok(active) => active,
        Err(e) => {
            tracing::warn!(error.message = %e, "cannot list the index to reconcile the expiry set");
            report.errors += 1;
            return;
        }
    };
    let in_set: HashMap<String, i64> = members
        .iter()
        .map(|m| (member(&m.product_id, &m.offer_id), m.expires_at))
        .collect();
    let listed: BTreeSet<String> = active
        .iter()
        .map(|o| member(&o.product_id, &o.offer_id))
        .collect();
    let lacking = active.iter().filter(|o| {
        in_set
            .get(&member(&o.product_id, &o.offer_id))
            .is_none_or(|score| *score < o.expires_at)
    });
    let unlisted = members
        .iter()
        .filter(|m| !listed.contains(&member(&m.product_id, &m.offer_id)));
    let suspects: Vec<(ProductId, OfferId)> = lacking
        .chain(unlisted)
        .map(|o| (o.product_id.clone(), o.offer_id.clone()))
        .collect();
    let found = match deps.catalog.offers(&suspects).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error.message = %e, "cannot confirm reconcile candidates; tried again next run");
            report.errors += 1;
            return;
        }
    };
    let truth: HashMap<String, &Offer> = found
        .iter()
        .filter(|o| o.status == OfferStatus::Active)
        .map(|o| (member(&o.product_id, &o.id), o))
        .collect();
    let mut add = Vec::new();
    let mut orphans = Vec::new();
    for (product, offer) in &suspects {
        let m = member(product, offer);
        match truth.get(&m) {
            Some(o) if in_set.get(&m).is_none_or(|score| *score < o.expires_at) => {
                add.push((m, o.expires_at));
            }
            Some(_) => {}
            None if in_set.contains_key(&m) => orphans.push(m),
            None => {}
        }
    }
    let added = set.track(&add).await;
    let removed = set.untrack(&orphans).await;
    if added {
        report.members_added += add.len() as u64;
    }
    if removed {
        report.orphans_removed += orphans.len() as u64;
    }
    if added && removed && set.mark_synced(now).await {
        report.reconciled = true;
        tracing::info!(
            members_added = add.len(),
            orphans_removed = orphans.len(),
            "offer expiry set reconciled with the index"
        );
    }
}

/// What the table says about a candidate, read back consistently.
enum Found {
    /// Active and due at this version: expire it.
    Due(u64),
    /// Active, but its expiry is later: the set's score was stale.
    Later(EpochMillis),
    /// Already expired (by another run or writer).
    Expired,
    /// Cancelled, or not there at all.
    Gone,
}

fn classify(offer: Option<&Offer>, now: EpochMillis) -> Found {
    match offer {
        Some(o) if o.status == OfferStatus::Active && o.expires_at <= now => Found::Due(o.version),
        Some(o) if o.status == OfferStatus::Active => Found::Later(o.expires_at),
        Some(o) if o.status == OfferStatus::Expired => Found::Expired,
        _ => Found::Gone,
    }
}

/// Which follow-up work a step leaves for the cache and the set.
#[derive(Default)]
struct Followups {
    /// Products whose cached detail showed an offer that has now expired.
    products: BTreeSet<ProductId>,
    /// Set members of offers this run expired.
    expired_members: Vec<String>,
    /// Set members whose offer was no longer active when read (expired by someone else,
    /// cancelled, gone): orphans.
    orphans: Vec<String>,
    /// Set members to move to the (later) expiry the table has.
    later: Vec<(String, i64)>,
}

impl Followups {
    /// Records what the table said about a candidate that will not be (or was not) written.
    fn settle(&mut self, candidate: &ExpiringOffer, found: &Found, report: &mut ExpiryReport) {
        let m = member(&candidate.product_id, &candidate.offer_id);
        match found {
            Found::Due(_) => {}
            Found::Later(expires_at) => {
                report.extended += 1;
                self.later.push((m, *expires_at));
            }
            Found::Expired => {
                // Usually another run's work, but it may be this job's own write seen again
                // (an SDK retry of a write that landed, or a run that died before its
                // invalidations): invalidating again is harmless, missing it is not.
                report.already_expired += 1;
                self.products.insert(candidate.product_id.clone());
                self.orphans.push(m);
            }
            Found::Gone => {
                report.cancelled += 1;
                self.orphans.push(m);
            }
        }
    }
}

/// Expires one step of candidates: confirm the versions the set does not know, write each
/// conditionally, sort out the conditions that failed, then update the cache and the set.
async fn expire_step(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    set: &ExpirySet,
    step: &[ExpiringOffer],
    now: EpochMillis,
    report: &mut ExpiryReport,
) {
    let mut followups = Followups::default();
    let (known, unknown): (Vec<&ExpiringOffer>, Vec<&ExpiringOffer>) =
        step.iter().partition(|c| c.version.is_some());
    let mut attempts: Vec<(&ExpiringOffer, u64)> = known
        .into_iter()
        .filter_map(|c| c.version.map(|v| (c, v)))
        .collect();
    match read_back(deps, &unknown, now).await {
        Ok(found) => {
            for (candidate, found) in unknown.into_iter().zip(found) {
                match found {
                    Found::Due(version) => attempts.push((candidate, version)),
                    other => followups.settle(candidate, &other, report),
                }
            }
        }
        Err(e) => {
            tracing::warn!(error.message = %e, offers = unknown.len(), "cannot read offers back; they stay due");
            report.errors += unknown.len() as u64;
        }
    }

    let lost = write_expiries(deps, options, attempts, now, report, &mut followups).await;
    // A lost condition: read the offer again. Still active and due means only its version
    // moved (an edit, or an index that lagged): one more attempt at the version read.
    let mut retries = Vec::new();
    match read_back(deps, &lost, now).await {
        Ok(found) => {
            for (candidate, found) in lost.into_iter().zip(found) {
                match found {
                    Found::Due(version) => retries.push((candidate, version)),
                    other => followups.settle(candidate, &other, report),
                }
            }
        }
        Err(e) => {
            tracing::warn!(error.message = %e, offers = lost.len(), "cannot read back offers whose expiry lost its condition; they stay due");
            report.errors += lost.len() as u64;
        }
    }
    let still_lost = write_expiries(deps, options, retries, now, report, &mut followups).await;
    // Changed twice under us: leave it, it is due again next run.
    report.errors += still_lost.len() as u64;
    report.processed += step.len() as u64;

    let keys = deps.cache.keys();
    let product_keys: Vec<_> = followups.products.iter().map(|p| keys.product(p)).collect();
    if deps.cache.invalidate(&product_keys).await {
        report.invalidated += product_keys.len() as u64;
    } else if !product_keys.is_empty() {
        tracing::warn!(
            products = product_keys.len(),
            "cache invalidation did not reach Redis; readers still filter expired offers"
        );
    }
    // Best effort: a member left behind is found again, read back and removed next run.
    set.untrack(&followups.expired_members).await;
    if set.untrack(&followups.orphans).await {
        report.orphans_removed += followups.orphans.len() as u64;
    }
    if set.track(&followups.later).await {
        report.members_added += followups.later.len() as u64;
    }
}

/// Reads candidates back from the table, in their order.
async fn read_back(
    deps: &ExpiryDeps,
    candidates: &[&ExpiringOffer],
    now: EpochMillis,
) -> Result<Vec<Found>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<(ProductId, OfferId)> = candidates
        .iter()
        .map(|c| (c.product_id.clone(), c.offer_id.clone()))
        .collect();
    let offers = deps.catalog.offers(&keys).await?;
    let by_key: HashMap<(&ProductId, &OfferId), &Offer> =
        offers.iter().map(|o| ((&o.product_id, &o.id), o)).collect();
    Ok(candidates
        .iter()
        .map(|c| classify(by_key.get(&(&c.product_id, &c.offer_id)).copied(), now))
        .collect())
}

/// Writes the conditional expiries, `concurrency` at a time. Returns the candidates whose
/// condition failed; successes go to the report and the follow-ups.
async fn write_expiries<'a>(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    attempts: Vec<(&'a ExpiringOffer, u64)>,
    now: EpochMillis,
    report: &mut ExpiryReport,
    followups: &mut Followups,
) -> Vec<&'a ExpiringOffer> {
    let writes: Vec<_> = attempts
        .into_iter()
        .map(|(candidate, version)| async move {
            let outcome = deps
                .catalog
                .expire_offer(&candidate.product_id, &candidate.offer_id, version, now)
                .await;
            (candidate, outcome)
        })
        .collect();
    let outcomes: Vec<_> = futures::stream::iter(writes)
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let mut lost = Vec::new();
    for (candidate, outcome) in outcomes {
        match outcome {
            Ok(true) => {
                report.expired += 1;
                followups.products.insert(candidate.product_id.clone());
                followups
                    .expired_members
                    .push(member(&candidate.product_id, &candidate.offer_id));
            }
            Ok(false) => lost.push(candidate),
            Err(e) => {
                report.errors += 1;
                tracing::warn!(offer = %candidate.offer_id, error.message = %e, "expiring one offer failed; it stays due");
            }
        }
    }
    lost
}

/// Records the run's metadata and logs its report.
async fn finish(
    deps: &ExpiryDeps,
    report: &mut ExpiryReport,
    now: EpochMillis,
    started: Instant,
    outcome: RunOutcome,
) {
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.outcome = Some(outcome);
    let mut run = JobRun::new(JOB, now, outcome);
    run.duration_ms = report.duration_ms;
    run.processed = report.processed;
    run.entries_written = report.invalidated;
    run.skipped = report.left_for_next_run;
    run.errors = report.errors;
    run.lag_ms = Some(report.lag_ms);
    run.note = report.source.map(|s| match s {
        DueSource::Set => "due offers from the Redis set".to_owned(),
        DueSource::Index => "due offers from the DynamoDB index".to_owned(),
    });
    for (name, value) in [
        ("expired", report.expired),
        ("already_expired", report.already_expired),
        ("extended", report.extended),
        ("cancelled", report.cancelled),
        ("orphans_removed", report.orphans_removed),
        ("members_added", report.members_added),
        ("set_missed", report.set_missed),
        ("invalidated", report.invalidated),
    ] {
        run.counts.insert(name.to_owned(), value);
    }
    if let Err(e) = crate::jobs::metrics::record_run(deps.stats.as_ref(), &run).await {
        tracing::error!(error.message = %e, "cannot record the offer-expiry run");
    }
    tracing::info!(
        expired = report.expired,
        changed_meanwhile = report.changed_meanwhile(),
        orphans_removed = report.orphans_removed,
        members_added = report.members_added,
        errors = report.errors,
        lag_ms = report.lag_ms,
        left = report.left_for_next_run,
        source = ?report.source,
        duration_ms = report.duration_ms,
        "offer-expiry finished"
    );
}

#[cfg(test)]
#[path = "offer_expiry/tests.rs"]
mod tests;
