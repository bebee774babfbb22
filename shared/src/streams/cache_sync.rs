//! Cache-sync: the catalog table's stream keeps the cache in step with every write, wherever
//! it was made (the API, the offer-expiry job, the console, another service, a script).
//!
//! ## What a change touches
//! - A product written (`INSERT`, `MODIFY`): its summary is rewritten from the new image, and
//!   its detail (product with offers) is invalidated, since the image has no offers.
//! - A product deleted (`REMOVE`), or a product image that cannot be read: its detail, summary
//!   and stats are invalidated, so the next read loads the truth.
//! - The feed namespace moves to a new generation only when a feed's membership or order can
//!   change: a product created, deleted, activated or deactivated. A price or name edit does
//!   not touch the feeds (their pages read the summaries, which were rewritten).
//! - An offer written or deleted: its product's detail is invalidated, and the expiring-offers
//!   set follows it (active: added or moved later; anything else: removed).
//! - Other items (the offer-id references): ignored and counted.
//!
//! ## Why an old image never wins
//! Rewrites go through the engine's guard: it refuses a value whose version is older than the
//! one cached, or that was read before the key's last invalidation. The image's "read time" is
//! the record's `ApproximateCreationDateTime` (when the write happened), so a record processed
//! late (delivered out of order, or retried) cannot undo a newer write or an invalidation made
//! after it. Invalidations are order-free: they only ever make the next read load the table.
//! The expiry set only moves an offer later (`ZADD GT`), and it is an accelerator whose every
//! answer is confirmed against the table (see [`crate::expiry_set`]).
//!
//! ## Why nothing is dropped
//! Every action is idempotent, so a batch is applied as a whole (one pipeline per kind of
//! action) and, if any action could not reach Redis, reported as failed from its first record
//! that needed one (`batchItemFailures`): Lambda delivers it again, and redoing what did land
//! is harmless. Records before it needed nothing (ignored or unreadable).

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::DynamoDbEventResponse;
use serde::Serialize;

use super::{EventError, Incoming, RawEvent, item_failure, parse_event};
use crate::cache::{Cache, PutOutcome};
use crate::expiry_set::{self, ExpirySet};
use crate::model::{EpochMillis, Offer, OfferStatus, Product, ProductId};
use crate::reads::FEED_NAMESPACE;
use crate::store::dynamo::items::{
    OFFER_SK_PREFIX, OfferItem, PRODUCT_SK, ProductItem, offer_id_from_sk, product_id_from_pk,
};

/// What one invocation did (logged as one line, and returned to tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    /// Records in the event.
    pub records: u64,
    /// Product changes.
    pub products: u64,
    /// Offer changes.
    pub offers: u64,
    /// Records of other items (offer-id references), ignored.
    pub ignored: u64,
    /// Records that could not be read at all (no usable key), skipped.
    pub malformed: u64,
    /// Records whose key was readable but whose image was not: their product was
    /// invalidated instead of rewritten.
    pub unreadable_images: u64,
    /// Summaries rewritten from a new image.
    pub summaries_written: u64,
    /// Rewrites the guard refused (the cache already held something newer).
    pub summaries_refused: u64,
    /// Keys invalidated.
    pub keys_invalidated: u64,
    /// Offers added to or moved in the expiring-offers set.
    pub offers_tracked: u64,
    /// Offers removed from it.
    pub offers_untracked: u64,
    /// Whether the feed namespace moved to a new generation.
    pub feeds_bumped: bool,
    /// Whether Redis could not be reached and the records were reported as failures.
    pub failed: bool,
}

/// One record, read.
#[derive(Debug)]
enum Change {
    Product {
        id: ProductId,
        /// The new image, if the item still exists and its image could be read.
        new: Option<Box<Product>>,
        /// Whether the change can alter a feed's membership or order.
        moves_feeds: bool,
        /// Whether the image could not be read (so the product is invalidated instead).
        unreadable: bool,
    },
    Offer {
        product: ProductId,
        /// The set member, `<product>/<offer>`.
        member: String,
        /// The offer's expiry if it is active after the change; `None` if it is not (or is
        /// gone, or could not be read).
        active_until: Option<EpochMillis>,
        unreadable: bool,
    },
    Ignored,
}

/// Applies one stream event to the cache.
///
/// Returns the response Lambda expects (with `batchItemFailures` if Redis could not be
/// reached) and what was done; an error if the payload is not a stream event at all.
pub async fn handle(
    payload: RawEvent,
    cache: &Cache,
) -> Result<(DynamoDbEventResponse, SyncCounts), EventError> {
    let event = parse_event(payload)?;
    let mut counts = SyncCounts {
        records: event.records.len() as u64,
        ..SyncCounts::default()
    };
    let mut plan = Plan::default();
    for incoming in event.records {
        match incoming {
            Incoming::Malformed {
                raw_sequence,
                partition,
                reason,
            } => {
                counts.malformed += 1;
                tracing::warn!(sequence = ?raw_sequence, partition, reason, "unreadable catalog stream record skipped");
                // If it names a product, that product is dropped from the cache: whatever
                // the record said, the next read loads the truth.
                if let Some(id) = partition.as_deref().and_then(product_id_from_pk) {
                    plan.forget(id, raw_sequence.as_deref());
                }
            }
            Incoming::Record {
                raw_sequence,
                record,
                ..
            } => match read_change(*record) {
                Ok((change, at)) => plan.add(change, at, &raw_sequence, &mut counts),
                Err(reason) => {
                    counts.malformed += 1;
                    tracing::warn!(
                        sequence = raw_sequence,
                        reason,
                        "catalog stream record without a usable key skipped"
                    );
                }
            },
        }
    }
    let applied = plan.apply(cache, &mut counts).await;
    let mut response = DynamoDbEventResponse::default();
    if !applied && let Some(first) = plan.first_action {
        counts.failed = true;
        response.batch_item_failures.push(item_failure(&first));
    }
    tracing::info!(
        records = counts.records,
        products = counts.products,
        offers = counts.offers,
        ignored = counts.ignored,
        malformed = counts.malformed,
        unreadable_images = counts.unreadable_images,
        summaries_written = counts.summaries_written,
        summaries_refused = counts.summaries_refused,
        keys_invalidated = counts.keys_invalidated,
        offers_tracked = counts.offers_tracked,
        offers_untracked = counts.offers_untracked,
        feeds_bumped = counts.feeds_bumped,
        failed = counts.failed,
        "cache-sync batch"
    );
    Ok((response, counts))
}

/// Reads a record's key, then its images. `Err` only when the key itself is unusable.
fn read_change(record: EventRecord) -> Result<(Change, EpochMillis), String> {
    let at = record
        .change
        .approximate_creation_date_time
        .timestamp_millis();
    let key = |name: &str| match record.change.keys.get(name) {
        Some(serde_dynamo::AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(format!("key attribute {name:?} missing or not a string")),
    };
    let (pk, sk) = (key("pk")?, key("sk")?);
    let removed = record.event_name == "REMOVE";
    if !removed && !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return Err(format!("unknown eventName {:?}", record.event_name));
    }
    let Some(product) = product_id_from_pk(&pk) else {
        // Not a product partition (an offer-id reference, or something this version does
        // not know).
        return Ok((Change::Ignored, at));
    };
    let EventRecord { change, .. } = record;
    let image = |item: serde_dynamo::Item| (!item.is_empty()).then_some(item);
    if sk == PRODUCT_SK {
        let old = image(change.old_image).and_then(|i| read_product(i).ok());
        let (new, unreadable) = match (removed, image(change.new_image)) {
            (true, _) => (None, false),
            (false, None) => (None, true),
            (false, Some(item)) => match read_product(item) {
                Ok(p) if p.id == product => (Some(Box::new(p)), false),
                Ok(_) => (None, true),
                Err(reason) => {
                    tracing::warn!(product = %product, reason, "unreadable product image; invalidating instead");
                    (None, true)
                }
            },
        };
        let moves_feeds = match (&old, &new) {
            (Some(old), Some(new)) => old.active != new.active,
            // Created, deleted, or one side unknown: assume the worst.
            _ => true,
        };
        return Ok((
            Change::Product {
                id: product,
                new,
                moves_feeds,
                unreadable,
            },
            at,
        ));
    }
    if sk.starts_with(OFFER_SK_PREFIX) {
        let offer_id =
            offer_id_from_sk(&sk).ok_or_else(|| format!("unreadable offer sort key {sk:?}"))?;
        let (active_until, unreadable) = match (removed, image(change.new_image)) {
            (true, _) => (None, false),
            (false, None) => (None, true),
            (false, Some(item)) => match read_offer(item) {
                Ok(o) if o.id == offer_id && o.product_id == product => (
                    (o.status == OfferStatus::Active).then_some(o.expires_at),
                    false,
                ),
                Ok(_) => (None, true),
                Err(reason) => {
                    tracing::warn!(offer = %offer_id, reason, "unreadable offer image; invalidating instead");
                    (None, true)
                }
            },
        };
        return Ok((
            Change::Offer {
                member: expiry_set::member(&product, &offer_id),
                product,
                active_until,
                unreadable,
            },
            at,
        ));
    }
    Ok((Change::Ignored, at))
}

fn read_product(item: serde_dynamo::Item) -> Result<Product, String> {
    let product = serde_dynamo::from_item::<_, ProductItem>(item)
        .map_err(|e| e.to_string())?
        .product;
    product.validate().map_err(|e| e.to_string())?;
    Ok(product)
}

fn read_offer(item: serde_dynamo::Item) -> Result<Offer, String> {
    let offer = serde_dynamo::from_item::<_, OfferItem>(item)
        .map_err(|e| e.to_string())?
        .offer;
    offer.validate().map_err(|e| e.to_string())?;
    Ok(offer)
}

/// What a batch asks of the cache: per product and per offer, what its changes add up to.
#[derive(Debug, Default)]
struct Plan {
    /// Products whose detail is invalidated (any product or offer change).
    details: BTreeSet<ProductId>,
    /// Per product, its newest readable image: the summary is rewritten from it.
    summaries: BTreeMap<ProductId, Box<Product>>,
    /// Products deleted, or with a change that could not be read: summary and stats are
    /// invalidated and never rewritten in this batch (a re-created product starts again at
    /// version 1, below what the cache may hold).
    forgotten: BTreeSet<ProductId>,
    /// Per offer member, its expiry if active after its last change.
    offers: BTreeMap<String, Option<EpochMillis>>,
    moves_feeds: bool,
    /// The earliest change time among the rewrites: their guard's read time.
    earliest_write: Option<EpochMillis>,
    /// The first record that needs the cache: failures are reported from it.
    first_action: Option<String>,
}

impl Plan {
    fn add(&mut self, change: Change, at: EpochMillis, sequence: &str, counts: &mut SyncCounts) {
        match change {
            Change::Ignored => {
                counts.ignored += 1;
                return;
            }
            Change::Product {
                id,
                new,
                moves_feeds,
                unreadable,
            } => {
                counts.products += 1;
                counts.unreadable_images += u64::from(unreadable);
                self.moves_feeds |= moves_feeds;
                match new {
                    Some(new) => {
                        self.details.insert(id.clone());
                        self.earliest_write = Some(self.earliest_write.map_or(at, |e| e.min(at)));
                        // The newest version wins, whatever order the records came in.
                        let newer = self
                            .summaries
                            .get(&id)
                            .is_none_or(|held| held.version <= new.version);
                        if newer {
                            self.summaries.insert(id, new);
                        }
                    }
                    None => self.forget(id, None),
                }
            }
            Change::Offer {
                product,
                member,
                active_until,
                unreadable,
            } => {
                counts.offers += 1;
                counts.unreadable_images += u64::from(unreadable);
                self.details.insert(product);
                // An item's records come in stream order: its last one is its state.
                self.offers.insert(member, active_until);
            }
        }
        if self.first_action.is_none() {
            self.first_action = Some(sequence.to_owned());
        }
    }

    /// Drops everything cached about a product (deleted, or a change that cannot be read).
    fn forget(&mut self, id: ProductId, sequence: Option<&str>) {
        self.details.insert(id.clone());
        self.forgotten.insert(id);
        if self.first_action.is_none() {
            self.first_action = sequence.map(str::to_owned);
        }
    }

    /// Applies the plan; false if any part of it could not reach Redis.
    async fn apply(&self, cache: &Cache, counts: &mut SyncCounts) -> bool {
        if self.first_action.is_none() {
            return true;
        }
        let keys = cache.keys();
        let mut invalidate = Vec::new();
        let mut rewrites = Vec::new();
        for id in &self.details {
            invalidate.push(keys.product(id));
        }
        for id in &self.forgotten {
            invalidate.extend([keys.summary(id), keys.stats(id)]);
        }
        for (id, newest) in &self.summaries {
            if !self.forgotten.contains(id) {
                rewrites.push((keys.summary(id), newest.as_ref().clone()));
            }
        }
        let (mut track, mut untrack) = (Vec::new(), Vec::new());
        for (member, active_until) in &self.offers {
            match active_until {
                Some(at) => track.push((member.clone(), *at)),
                None => untrack.push(member.clone()),
            }
        }
        let set = ExpirySet::new(cache);
        let read_at = self.earliest_write.unwrap_or(0);
        let rewritten: Vec<_> = rewrites.iter().map(|(key, _)| key.clone()).collect();
        let (invalidated, written, tracked, untracked) = tokio::join!(
            cache.invalidate(&invalidate),
            cache.put_many(rewrites, read_at),
            // Exact scores, not only later ones: the stream delivers an offer's changes in
            // order, so an expiry moved earlier (by the console, a script) is followed too.
            set.place(&track),
            set.untrack(&untrack),
        );
        let mut ok = invalidated && tracked && untracked;
        if invalidated {
            counts.keys_invalidated += invalidate.len() as u64;
        }
        if tracked {
            counts.offers_tracked += track.len() as u64;
        }
        if untracked {
            counts.offers_untracked += untrack.len() as u64;
        }
        // A rewrite the guard refused (the key holds something newer, or was invalidated
        // after this write) or the engine would not cache (over the size limit) is replaced
        // by an invalidation: its tombstone is newer than the write, so no load that read
        // the table before it can put an older copy back.
        let mut not_written = Vec::new();
        for (key, outcome) in rewritten.into_iter().zip(written) {
            match outcome {
                PutOutcome::Written => counts.summaries_written += 1,
                PutOutcome::Refused => {
                    counts.summaries_refused += 1;
                    not_written.push(key);
                }
                PutOutcome::L2Unavailable => ok = false,
                PutOutcome::Skipped | PutOutcome::LocalOnly => not_written.push(key),
            }
        }
        if !not_written.is_empty() {
            let dropped = cache.invalidate(&not_written).await;
            ok &= dropped;
            if dropped {
                counts.keys_invalidated += not_written.len() as u64;
            }
        }
        if self.moves_feeds {
            counts.feeds_bumped = cache.bump_generation(FEED_NAMESPACE).await.is_some();
            ok &= counts.feeds_bumped;
        }
        ok
    }
}

#[cfg(test)]
mod tests;
