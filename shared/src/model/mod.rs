//! The domain: products, offers, view events and period stats, with validating constructors.
//!
//! Serde only; no AWS types. Conversions to DynamoDB items live in the store adapter.

mod ids;
mod money;
mod validation;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use ids::{EventId, OfferId, ProductId};
pub use money::{Currency, Money};
pub use validation::ValidationError;

/// Milliseconds since the Unix epoch, UTC. Stored and sent as a JSON/DynamoDB number.
pub type EpochMillis = i64;

/// A catalog product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Product {
    /// Stable id.
    pub id: ProductId,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Free text, up to 4000 characters.
    #[serde(default)]
    pub description: String,
    /// Category slug (same alphabet as ids).
    pub category: String,
    /// List price.
    pub price: Money,
    /// Whether the product is listed; refresh and feeds skip inactive products.
    pub active: bool,
    /// When the product was first written.
    pub created_at: EpochMillis,
    /// When the product was last written.
    pub updated_at: EpochMillis,
    /// Monotonic version, incremented by every write (optimistic concurrency and cache version guard).
    pub version: u64,
}

impl Product {
    /// Checks every field; the store refuses to write a product that fails this.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validation::text("name", &self.name, 1, 200)?;
        validation::text("description", &self.description, 0, 4000)?;
        validation::slug("category", &self.category)?;
        self.price.validate()?;
        validation::timestamp("created_at", self.created_at)?;
        validation::timestamp("updated_at", self.updated_at)
    }
}

/// Lifecycle of an offer. Only `Active` offers are served and indexed by expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OfferStatus {
    /// Live until `expires_at`.
    Active,
    /// Passed its expiry and was expired by the offer-expiry job.
    Expired,
    /// Withdrawn before expiry.
    Cancelled,
}

/// A time-limited price for a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Offer {
    /// Globally unique offer id.
    pub id: OfferId,
    /// The product the offer belongs to.
    pub product_id: ProductId,
    /// Lifecycle state.
    pub status: OfferStatus,
    /// Offer price.
    pub price: Money,
    /// When the offer stops being valid.
    pub expires_at: EpochMillis,
    /// When the offer was first written.
    pub created_at: EpochMillis,
    /// When the offer was last written.
    pub updated_at: EpochMillis,
    /// Monotonic version, incremented by every write.
    pub version: u64,
}

impl Offer {
    /// Checks every field; the store refuses to write an offer that fails this.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.price.validate()?;
        validation::timestamp("expires_at", self.expires_at)?;
        validation::timestamp("created_at", self.created_at)?;
        validation::timestamp("updated_at", self.updated_at)
    }

    /// Whether the offer should be shown at `now`: active and not yet past its expiry.
    pub fn is_live_at(&self, now: EpochMillis) -> bool {
        self.status == OfferStatus::Active && self.expires_at > now
    }
}

/// A product together with all its offers: what one DynamoDB Query on the product's partition returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductDetail {
    /// The product.
    pub product: Product,
    /// Its offers in any status, ordered by offer id.
    pub offers: Vec<Offer>,
}

/// One product view, as written to the views table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewEvent {
    /// Unique per view; makes counting idempotent.
    pub event_id: EventId,
    /// The viewed product.
    pub product_id: ProductId,
    /// When the view happened.
    pub viewed_at: EpochMillis,
}

impl ViewEvent {
    /// Checks the timestamp (the ids are valid by construction).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validation::timestamp("viewed_at", self.viewed_at)
    }
}

/// A ranked feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FeedKind {
    /// By views in the last 24 hours, most viewed first.
    Trending,
    /// By creation time, newest first.
    New,
}

impl FeedKind {
    /// Every feed, for jobs that rank them all.
    pub const ALL: [FeedKind; 2] = [FeedKind::Trending, FeedKind::New];

    /// The feed's name in keys and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Trending => "trending",
            FeedKind::New => "new",
        }
    }

    /// Parses a feed name.
    pub fn parse(raw: &str) -> Result<FeedKind, ValidationError> {
        FeedKind::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| ValidationError::new("kind", "must be one of: trending, new"))
    }
}

/// The ranked product ids of a feed, as computed by the refresh job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RankedFeed {
    /// Which feed.
    pub kind: FeedKind,
    /// Product ids, best first.
    pub ids: Vec<ProductId>,
    /// When the ranking was computed.
    pub computed_at: EpochMillis,
}

/// An active offer due to expire, as listed by the expiry index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpiringOffer {
    /// The offer.
    pub offer_id: OfferId,
    /// Its product.
    pub product_id: ProductId,
    /// When it expires.
    pub expires_at: EpochMillis,
    /// The offer's version as the listing saw it, when the listing knows it (the DynamoDB
    /// index projects it; the Redis expiry set does not). Internal: never sent to clients.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub version: Option<u64>,
}

/// How a job run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunOutcome {
    /// Everything was processed.
    Succeeded,
    /// The run stopped early (deadline) or some items failed; the rest continues next run.
    Partial,
    /// Nothing useful was done.
    Failed,
    /// The run did nothing because another run of the same job held the lease.
    Skipped,
}

/// What one run of a scheduled job did; stored as the job's last run and in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRun {
    /// The job's name, e.g. `refresh`.
    pub job: String,
    /// When the run started.
    pub started_at: EpochMillis,
    /// How long it took.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Items processed (products refreshed, offers expired, ...).
    pub processed: u64,
    /// Cache entries written.
    pub entries_written: u64,
    /// Items skipped (not due, invalid, left for the next run).
    pub skipped: u64,
    /// Items that failed.
    pub errors: u64,
    /// Where the next run resumes, if this one stopped early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Job-specific counts, by name (offer-expiry: `expired`, `already_expired`, `extended`,
    /// `cancelled`, `orphans_removed`, `members_added`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// How far behind the job was when it started (offer-expiry: now minus the oldest due
    /// `expires_at`), if the job measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Why the run ended as it did, in words (e.g. `another run holds the lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl JobRun {
    /// A run of `job` started at `started_at` that ended with `outcome`, every count zero.
    pub fn new(job: &str, started_at: EpochMillis, outcome: RunOutcome) -> JobRun {
        JobRun {
            job: job.to_owned(),
            started_at,
            duration_ms: 0,
            outcome,
            processed: 0,
            entries_written: 0,
            skipped: 0,
            errors: 0,
            next_cursor: None,
            counts: BTreeMap::new(),
            lag_ms: None,
            note: None,
        }
    }

    /// Whether the run did its work (fully or in part); failed and skipped runs did not.
    pub fn did_work(&self) -> bool {
        matches!(self.outcome, RunOutcome::Succeeded | RunOutcome::Partial)
    }
}

/// Permission to run a job alone until `until`: a conditional item in the stats table.
/// `fence` grows by one every time the lease changes hands, so a holder whose lease
/// expired can tell (and a log can show) that another run took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job the lease is for.
    pub job: String,
    /// Who holds it (a random token per run).
    pub holder: String,
    /// Fencing token: how many times the lease has been taken.
    pub fence: u64,
    /// When it lapses if not released.
    pub until: EpochMillis,
}

/// A view counter bucket: one hour or one day (UTC), identified by its number since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterBucket {
    /// Hours since the epoch.
    Hour(i64),
    /// Days since the epoch.
    Day(i64),
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl CounterBucket {
    /// The hour bucket containing `at`.
    pub fn hour_of(at: EpochMillis) -> CounterBucket {
        CounterBucket::Hour(at.div_euclid(HOUR_MS))
    }

    /// The day bucket containing `at`.
    pub fn day_of(at: EpochMillis) -> CounterBucket {
        CounterBucket::Day(at.div_euclid(DAY_MS))
    }

    /// When the bucket starts.
    pub fn start_ms(self) -> EpochMillis {
        match self {
            CounterBucket::Hour(h) => h * HOUR_MS,
            CounterBucket::Day(d) => d * DAY_MS,
        }
    }

    /// When the bucket ends (exclusive).
    pub fn end_ms(self) -> EpochMillis {
        match self {
            CounterBucket::Hour(h) => (h + 1) * HOUR_MS,
            CounterBucket::Day(d) => (d + 1) * DAY_MS,
        }
    }
}

/// Views of one product over the standard trailing periods.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodStats {
    /// Views in the last hour.
    pub views_1h: u64,
    /// Views in the last 24 hours.
    pub views_24h: u64,
    /// Views in the last 7 days.
    pub views_7d: u64,
    /// Views in the last 30 days.
    pub views_30d: u64,
    /// When these figures were computed.
    pub computed_at: EpochMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product {
            id: ProductId::parse("p-1").unwrap(),
            name: "Kettle".into(),
            description: String::new(),
            category: "kitchen".into(),
            price: Money::new(2599, Currency::parse("EUR").unwrap()),
            active: true,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            version: 1,
        }
    }

    #[test]
    fn valid_product_passes_and_blank_name_fails() {
        assert!(product().validate().is_ok());
        let err = Product {
            name: "  ".into(),
            ..product()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "name");
    }

    #[test]
    fn product_json_round_trips_and_rejects_bad_ids() {
        let json = serde_json::to_string(&product()).unwrap();
        let back: Product = serde_json::from_str(&json).unwrap();
        assert_eq!(back, product());
        let bad = json.replace("\"p-1\"", "\"p 1\"");
        assert!(serde_json::from_str::<Product>(&bad).is_err());
    }

    #[test]
    fn expired_or_cancelled_offers_are_not_live() {
        let offer = Offer {
            id: OfferId::parse("o1").unwrap(),
            product_id: ProductId::parse("p1").unwrap(),
            status: OfferStatus::Active,
            price: Money::new(100, Currency::parse("USD").unwrap()),
            expires_at: 2_000,
            created_at: 1_000,
            updated_at: 1_000,
            version: 1,
        };
        assert!(offer.is_live_at(1_999));
        assert!(!offer.is_live_at(2_000));
        let cancelled = Offer {
            status: OfferStatus::Cancelled,
            ..offer
        };
        assert!(!cancelled.is_live_at(1_000));
    }
}
