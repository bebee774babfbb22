//! The Redis sorted set of active offers by expiry: the fast path of `GET /offers/expiring`
//! and of the offer-expiry job, kept in step by every offer write.
//!
//! It is only an accelerator. DynamoDB's `active-by-expiry` index is the truth: the set can
//! lose members (Redis flushed, a write made while Redis was down) or keep stale ones (an
//! update it never heard of). So:
//! - the set carries a marker member, [`SYNCED_MARKER`], scored with the time it was last
//!   reconciled against the index. Marker and members live in one key, so a flush or an
//!   eviction takes both: no marker means "do not trust the set", and readers fall back to
//!   the index until a reconcile puts the marker back;
//! - everything the set says is confirmed against the table before anything is written.

use crate::cache::Cache;
use crate::model::{EpochMillis, ExpiringOffer, Offer, OfferId, OfferStatus, ProductId};

/// The member whose score says when the set was last reconciled with the index. `~` is not
/// an id character, so it never collides with an offer.
pub const SYNCED_MARKER: &str = "~synced";

/// Members read per page.
const PAGE: usize = 1000;

/// The set's member for an offer: `<product>/<offer>` (`/` is not an id character).
pub fn member(product: &ProductId, offer: &OfferId) -> String {
    format!("{product}/{offer}")
}

/// Parses a member back; `None` for the marker or anything this version did not write.
pub fn parse_member(member: &str) -> Option<(ProductId, OfferId)> {
    let (product, offer) = member.split_once('/')?;
    Some((ProductId::parse(product).ok()?, OfferId::parse(offer).ok()?))
}

/// Whether the set can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetState {
    /// Redis is not configured, not reachable, or its circuit is open.
    Unavailable,
    /// Redis answers, but the marker is gone (flushed, evicted, never reconciled): the set
    /// may be missing members, so it must not be trusted until reconciled.
    Unsynced,
    /// Reconciled with the index at this time, and kept in step by writes since.
    Synced(EpochMillis),
}

/// The expiry set of one cache (one key prefix).
///
/// ## Behavior
/// - Every call goes through the cache engine's breaker and deadlines: with Redis down it
///   answers `None` (reads) or `false` (writes) at once, never an error.
/// - Scores only move later on [`ExpirySet::track`] (`ZADD GT`): an expiry moves only later
///   through the API, so an old write replayed late cannot pull an offer's expiry back.
#[derive(Debug, Clone)]
pub struct ExpirySet {
    cache: Cache,
    key: String,
}

impl ExpirySet {
    /// The set of `cache`'s key space.
    pub fn new(cache: &Cache) -> Self {
        ExpirySet {
            key: cache.keys().expiry_set(),
            cache: cache.clone(),
        }
    }

    /// Adds an active offer (or moves it to a later expiry); removes an offer that is no
    /// longer active. Returns false if Redis could not be reached.
    pub async fn follow(&self, offer: &Offer) -> bool {
        if offer.status == OfferStatus::Active {
            self.track(&[(member(&offer.product_id, &offer.id), offer.expires_at)])
                .await
        } else {
            self.untrack(&[member(&offer.product_id, &offer.id)]).await
        }
    }

    /// Adds members or moves them later. False if Redis could not be reached.
    pub async fn track(&self, members: &[(String, i64)]) -> bool {
        self.add(members, true).await
    }

    /// Adds members or moves them to exactly these scores, earlier included: for a writer
    /// that sees every change of an offer in order (cache-sync, from the catalog stream).
    pub async fn place(&self, members: &[(String, i64)]) -> bool {
        self.add(members, false).await
    }

    async fn add(&self, members: &[(String, i64)], only_later: bool) -> bool {
        if members.is_empty() {
            return true;
        }
        self.cache
            .l2_call("ZADD", true, |l2| {
                l2.zset_add(&self.key, members, only_later)
            })
            .await
            .is_some()
    }

    /// Removes members. False if Redis could not be reached.
    pub async fn untrack(&self, members: &[String]) -> bool {
        if members.is_empty() {
            return true;
        }
        self.cache
            .l2_call("ZREM", true, |l2| l2.zset_remove(&self.key, members))
            .await
            .is_some()
    }

    /// Whether the set can be trusted, and since when.
    pub async fn state(&self) -> SetState {
        match self
            .cache
            .l2_call("ZSCORE", false, |l2| {
                l2.zset_score(&self.key, SYNCED_MARKER)
            })
            .await
        {
            None => SetState::Unavailable,
            Some(None) => SetState::Unsynced,
            Some(Some(at)) => SetState::Synced(at),
        }
    }

    /// Records a reconcile finished at `at`. False if Redis could not be reached.
    pub async fn mark_synced(&self, at: EpochMillis) -> bool {
        self.add(&[(SYNCED_MARKER.to_owned(), at)], false).await
    }

    /// Offers expiring at or before `until`, soonest first, at most `limit`; `None` if Redis
    /// is unavailable. Versions are unknown (`None`): confirm against the table.
    ///
    /// Pages by score (the next page starts at the last score seen, skipping the members
    /// already returned at that score), so each page costs O(log n + page) however deep.
    pub async fn due(&self, until: EpochMillis, limit: usize) -> Option<Vec<ExpiringOffer>> {
        let mut due: Vec<ExpiringOffer> = Vec::new();
        let mut from = i64::MIN;
        let mut seen_at_from: Vec<String> = Vec::new();
        while due.len() < limit {
            // One extra for the marker, plus the members already seen at `from`.
            let want = (limit - due.len()).min(PAGE) + 1 + seen_at_from.len();
            let page = self
                .cache
                .l2_call("ZRANGE", true, |l2| {
                    l2.zset_range_by_score(&self.key, from, until, 0, want)
                })
                .await?;
            let exhausted = page.len() < want;
            for (m, score) in page {
                if score == from && seen_at_from.contains(&m) {
                    continue;
                }
                if score != from {
                    from = score;
                    seen_at_from.clear();
                }
                seen_at_from.push(m.clone());
                due.extend(expiring(&m, score));
            }
            if exhausted {
                break;
            }
        }
        due.truncate(limit);
        Some(due)
    }

    /// Every member, marker left out, with its score; `None` if Redis is unavailable. Read
    /// with `ZSCAN`, so a member added or removed meanwhile may be missed or seen twice:
    /// callers confirm against the table.
    pub async fn all(&self) -> Option<Vec<ExpiringOffer>> {
        let mut members = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, page) = self
                .cache
                .l2_call("ZSCAN", true, |l2| l2.zset_scan(&self.key, cursor, PAGE))
                .await?;
            members.extend(
                page.into_iter()
                    .filter_map(|(m, score)| expiring(&m, score)),
            );
            if next == 0 {
                members
                    .sort_by(|a, b| (a.expires_at, &a.offer_id).cmp(&(b.expires_at, &b.offer_id)));
                members.dedup_by(|a, b| a.offer_id == b.offer_id && a.product_id == b.product_id);
                return Some(members);
            }
            cursor = next;
        }
    }
}

fn expiring(member: &str, score: i64) -> Option<ExpiringOffer> {
    if member == SYNCED_MARKER {
        return None;
    }
    let Some((product_id, offer_id)) = parse_member(member) else {
        tracing::warn!(member, "unreadable member in the offer expiry set; ignored");
        return None;
    };
    Some(ExpiringOffer {
        offer_id,
        product_id,
        expires_at: score,
        version: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::l2::L2Store;
    use crate::cache::l2::memory::MemoryL2;
    use crate::cache::{Cache, CacheOptions};
    use crate::clock::ManualClock;

    fn set_on(l2: &Arc<MemoryL2>) -> ExpirySet {
        let cache = Cache::new(
            CacheOptions::default(),
            Some(l2.clone() as Arc<dyn L2Store>),
            ManualClock::at(1_000),
        );
        ExpirySet::new(&cache)
    }

    fn m(product: &str, offer: &str) -> String {
        member(
            &ProductId::parse(product).unwrap(),
            &OfferId::parse(offer).unwrap(),
        )
    }

    #[tokio::test]
    async fn due_lists_members_by_expiry_without_the_marker() {
        let l2 = Arc::new(MemoryL2::new());
        let set = set_on(&l2);
        assert!(
            set.track(&[(m("p1", "o1"), 300), (m("p2", "o2"), 100)])
                .await
        );
        assert!(set.mark_synced(50).await);
        let due = set.due(300, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|d| d.offer_id.as_str()).collect();
        assert_eq!(ids, ["o2", "o1"]);
        assert_eq!(set.due(200, 10).await.unwrap().len(), 1);
        assert_eq!(set.due(300, 1).await.unwrap().len(), 1);
        assert_eq!(set.state().await, SetState::Synced(50));
    }

    #[tokio::test]
    async fn an_expiry_only_moves_later() {
        let l2 = Arc::new(MemoryL2::new());
        let set = set_on(&l2);
        set.track(&[(m("p", "o"), 500)]).await;
        set.track(&[(m("p", "o"), 400)]).await;
        assert_eq!(set.all().await.unwrap()[0].expires_at, 500);
        set.track(&[(m("p", "o"), 600)]).await;
        assert_eq!(set.all().await.unwrap()[0].expires_at, 600);
    }

    #[tokio::test]
    async fn due_pages_through_many_members_sharing_a_score() {
        let l2 = Arc::new(MemoryL2::new());
        let set = set_on(&l2);
        let members: Vec<(String, i64)> = (0..2_500)
            .map(|i| {
                (
                    m(&format!("p{i}"), &format!("o{i}")),
                    100 + i64::from(i % 3 == 0),
                )
            })
            .collect();
        set.track(&members).await;
        set.mark_synced(100).await;
        let due = set.due(200, 10_000).await.unwrap();
        assert_eq!(due.len(), 2_500);
        let distinct: std::collections::BTreeSet<&str> =
            due.iter().map(|d| d.offer_id.as_str()).collect();
        assert_eq!(distinct.len(), 2_500, "no member twice, none missed");
        assert!(due.windows(2).all(|w| w[0].expires_at <= w[1].expires_at));
        assert_eq!(set.due(200, 1_200).await.unwrap().len(), 1_200);
        assert_eq!(set.all().await.unwrap().len(), 2_500);
    }

    #[tokio::test]
    async fn a_flushed_set_is_not_synced_and_an_unreachable_one_answers_none() {
        let l2 = Arc::new(MemoryL2::new());
        let set = set_on(&l2);
        set.mark_synced(10).await;
        l2.flush_all();
        assert_eq!(set.state().await, SetState::Unsynced);
        l2.set_failing(true);
        assert_eq!(set.state().await, SetState::Unavailable);
        assert!(set.due(100, 10).await.is_none());
        assert!(!set.track(&[(m("p", "o"), 1)]).await);
    }

    #[test]
    fn members_round_trip_and_the_marker_does_not_parse() {
        let (p, o) = parse_member(&m("p-1", "o_2")).unwrap();
        assert_eq!((p.as_str(), o.as_str()), ("p-1", "o_2"));
        assert!(parse_member(SYNCED_MARKER).is_none());
        assert!(parse_member("a/b/c").is_none());
    }
}
