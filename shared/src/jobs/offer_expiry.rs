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
//! - the Redis expiry set ([`ExpirySet`]) when it is synced: one `ZRANGE`, no query. The set
//!   knows no versions, so each candidate is read back (BatchGetItem) before it is written;
//!   what the read shows also repairs the set (a rescheduled or gone offer);
//! - the index (every shard, every page) when Redis is down or the set lost its marker, and on
//!   every reconcile, which runs at least every `reconcile_every` and puts the set back in step.
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
        Ok(()) if report.errors > 0 || report.left_for_next_run > 0 => RunOutcome::Partial,
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

/// Finds the due offers and expires them, step by step, until done or out of time.
async fn run(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    now: EpochMillis,
    deadline: Option<Instant>,
    report: &mut ExpiryReport,
) -> Result<()> {
    let set = ExpirySet::new(&deps.cache);
    let due = find_due(deps, options, &set, now, report).await?;
    report.due = due.len() as u64;
    report.lag_ms = due.first().map_or(0, |oldest| {
        u64::try_from(now - oldest.expires_at).unwrap_or(0)
    });
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
    Ok(())
}

/// The offers due at `now`, soonest first: from the set when it is synced and no reconcile
/// is due, otherwise from the index (reconciling the set on the way when Redis answers).
async fn find_due(
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    set: &ExpirySet,
    now: EpochMillis,
    report: &mut ExpiryReport,
) -> Result<Vec<ExpiringOffer>> {
    let reconcile_every = crate::clock::millis(options.reconcile_every);
    match set.state().await {
        SetState::Synced(at) if now - at < reconcile_every => {
            if let Some(due) = set.due(now, options.max_per_run).await {
                report.source = Some(DueSource::Set);
                return Ok(due);
            }
            // Redis went away between the two calls: the index answers instead.
        }
        SetState::Synced(_) | SetState::Unsynced => {
            let active = deps.catalog.expiring(i64::MAX, usize::MAX).await?;
            reconcile(deps, set, &active, now, report).await;
            report.source = Some(DueSource::Index);
            let mut due: Vec<ExpiringOffer> =
                active.into_iter().filter(|o| o.expires_at <= now).collect();
            due.truncate(options.max_per_run);
            return Ok(due);
        }
        SetState::Unavailable => {}
    }
    report.source = Some(DueSource::Index);
    deps.catalog.expiring(now, options.max_per_run).await
}

/// Puts the set back in step with `active` (every active offer, from the index): members
/// missing or with an earlier expiry are added; members the index does not list are read
/// back from the table (the index lags writes) and removed only if really no longer active.
/// The marker is written last, and only if every repair reached Redis.
async fn reconcile(
    deps: &ExpiryDeps,
    set: &ExpirySet,
    active: &[ExpiringOffer],
    now: EpochMillis,
    report: &mut ExpiryReport,
) {
    let Some(members) = set.all().await else {
        return;
    };
    let in_set: HashMap<String, i64> = members
        .iter()
        .map(|m| (member(&m.product_id, &m.offer_id), m.expires_at))
        .collect();
    let listed: HashMap<String, i64> = active
        .iter()
        .map(|o| (member(&o.product_id, &o.offer_id), o.expires_at))
        .collect();
    let missing: Vec<(String, i64)> = listed
        .iter()
        .filter(|(m, expires_at)| in_set.get(*m).is_none_or(|score| score < *expires_at))
        .map(|(m, expires_at)| (m.clone(), *expires_at))
        .collect();
    let suspects: Vec<(ProductId, OfferId)> = members
        .iter()
        .filter(|m| !listed.contains_key(&member(&m.product_id, &m.offer_id)))
        .map(|m| (m.product_id.clone(), m.offer_id.clone()))
        .collect();
    let orphans = match deps.catalog.offers(&suspects).await {
        Ok(found) => {
            let still_active: BTreeSet<String> = found
                .iter()
                .filter(|o| o.status == OfferStatus::Active)
                .map(|o| member(&o.product_id, &o.id))
                .collect();
            suspects
                .iter()
                .map(|(p, o)| member(p, o))
                .filter(|m| !still_active.contains(m))
                .collect::<Vec<_>>()
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "cannot confirm orphan candidates; kept until the next reconcile");
            report.errors += 1;
            Vec::new()
        }
    };
    let added = set.track(&missing).await;
    let removed = set.untrack(&orphans).await;
    if added {
        report.members_added += missing.len() as u64;
    }
    if removed {
        report.orphans_removed += orphans.len() as u64;
    }
    if added && removed && set.mark_synced(now).await {
        report.reconciled = true;
        tracing::info!(
            members_added = missing.len(),
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
    /// Set members to move to the expiry the table has.
    rescore: Vec<(String, i64)>,
}

impl Followups {
    /// Records what the table said about a candidate that will not be (or was not) written.
    fn settle(&mut self, candidate: &ExpiringOffer, found: &Found, report: &mut ExpiryReport) {
        let m = member(&candidate.product_id, &candidate.offer_id);
        match found {
            Found::Due(_) => {}
            Found::Later(expires_at) => {
                report.extended += 1;
                self.rescore.push((m, *expires_at));
            }
            Found::Expired => {
                report.already_expired += 1;
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
    if set.rescore(&followups.rescore).await {
        report.members_added += followups.rescore.len() as u64;
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
        ("invalidated", report.invalidated),
    ] {
        run.counts.insert(name.to_owned(), value);
    }
    if let Err(e) = deps.stats.record_run(&run).await {
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
