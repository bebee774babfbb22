//! The offer-expiry function: validates what triggered it (the one-minute EventBridge
//! schedule, or a manual invoke), then runs [`expire_once`] within the invocation's deadline.

use catalog_core::clock::Clock;
use catalog_core::jobs::offer_expiry::{ExpiryDeps, ExpiryOptions, ExpiryReport, expire_once};
use catalog_core::jobs::trigger::{deadline_instant, parse_trigger};
use serde::Serialize;
use serde_json::Value;

/// What the function returns.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The job ran (or skipped because another run held the lease: see the report).
    Ran(ExpiryReport),
    /// The payload was not a trigger this function accepts; nothing ran. Returned rather than
    /// failed, because retrying the same payload cannot help.
    Ignored {
        /// Why.
        reason: &'static str,
    },
}

/// Handles one invocation. `deadline_ms` is the invocation's deadline (epoch ms).
pub async fn handle(
    payload: &Value,
    deadline_ms: u64,
    deps: &ExpiryDeps,
    options: &ExpiryOptions,
    clock: &dyn Clock,
) -> Outcome {
    let trigger = match parse_trigger(payload) {
        Ok(trigger) => trigger,
        Err(reason) => {
            tracing::warn!(reason, "offer-expiry ignored an unexpected payload");
            return Outcome::Ignored { reason };
        }
    };
    tracing::info!(?trigger, "offer-expiry starting");
    let deadline = deadline_instant(deadline_ms);
    let report = expire_once(deps, options, clock.now_ms(), deadline).await;
    // Before Lambda freezes the environment: what this run counted.
    deps.cache.flush_invocation().await;
    Outcome::Ran(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use catalog_core::ExpectedVersion;
    use catalog_core::cache::{Cache, CacheOptions};
    use catalog_core::clock::ManualClock;
    use catalog_core::model::{
        Currency, Money, Offer, OfferId, OfferStatus, Product, ProductId, RunOutcome,
    };
    use catalog_core::store::memory::MemoryStore;
    use catalog_core::store::{OfferReader, OfferWriter, ProductWriter, StatsReader};
    use serde_json::json;

    use super::*;

    const SCHEDULED: &str =
        include_str!("../../../tests/fixtures/eventbridge-scheduled-offer-expiry.json");
    const NOW: i64 = 1_795_602_600_000;

    #[tokio::test]
    async fn the_scheduled_fixture_expires_a_due_offer_through_the_handler() {
        let store = Arc::new(MemoryStore::new());
        let eur = Currency::parse("EUR").unwrap();
        let product = Product {
            id: ProductId::parse("p1").unwrap(),
            name: "Kettle".into(),
            description: String::new(),
            category: "kitchen".into(),
            price: Money::new(2500, eur),
            active: true,
            created_at: NOW - 1000,
            updated_at: NOW - 1000,
            version: 0,
        };
        store
            .put_product(&product, ExpectedVersion::Absent)
            .await
            .unwrap();
        let offer = Offer {
            id: OfferId::parse("o1").unwrap(),
            product_id: product.id.clone(),
            status: OfferStatus::Active,
            price: Money::new(2000, eur),
            expires_at: NOW - 1,
            created_at: NOW - 1000,
            updated_at: NOW - 1000,
            version: 0,
        };
        store
            .put_offer(&offer, ExpectedVersion::Absent)
            .await
            .unwrap();
        let clock = ManualClock::at(NOW);
        let deps = ExpiryDeps {
            catalog: store.clone(),
            stats: store.clone(),
            cache: Cache::new(CacheOptions::default(), None, clock.clone()),
        };
        let event: Value = serde_json::from_str(SCHEDULED).unwrap();
        let outcome = handle(
            &event,
            u64::MAX,
            &deps,
            &ExpiryOptions::default(),
            clock.as_ref(),
        )
        .await;
        let Outcome::Ran(report) = outcome else {
            panic!("expected a run, got {outcome:?}")
        };
        assert_eq!((report.expired, report.errors), (1, 0));
        let stored = store.offer(&offer.id).await.unwrap().unwrap();
        assert_eq!(stored.status, OfferStatus::Expired);
        let run = &store.last_runs().await.unwrap()[0];
        assert_eq!(
            (run.job.as_str(), run.outcome),
            ("offer-expiry", RunOutcome::Succeeded)
        );
    }

    #[tokio::test]
    async fn other_payloads_run_nothing() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::at(NOW);
        let deps = ExpiryDeps {
            catalog: store.clone(),
            stats: store.clone(),
            cache: Cache::new(CacheOptions::default(), None, clock.clone()),
        };
        for payload in [json!({"source": "aws.s3"}), json!([1]), json!("go")] {
            let outcome = handle(
                &payload,
                u64::MAX,
                &deps,
                &ExpiryOptions::default(),
                clock.as_ref(),
            )
            .await;
            assert!(matches!(outcome, Outcome::Ignored { .. }), "{payload}");
        }
        assert!(store.last_runs().await.unwrap().is_empty());
    }
}
