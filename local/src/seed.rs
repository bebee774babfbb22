//! A deterministic demo catalog: products in a few categories, offers expiring over the next
//! week (some within minutes, some within the hour), and view counters with a few hot products, so every route
//! has something to show.

use catalog_core::model::{
    CounterBucket, Currency, EpochMillis, Money, Offer, OfferId, OfferStatus, Product, ProductId,
};
use catalog_core::store::{BulkCatalog, BulkLoader};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CATEGORIES: [&str; 6] = [
    "kitchen", "garden", "office", "outdoor", "audio", "lighting",
];
const ADJECTIVES: [&str; 8] = [
    "Compact", "Classic", "Smart", "Quiet", "Solid", "Portable", "Deluxe", "Eco",
];
const NOUNS: [&str; 8] = [
    "kettle", "lamp", "speaker", "chair", "grill", "desk", "fan", "heater",
];
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The id of the `n`-th demo product.
pub fn product_id(n: usize) -> String {
    format!("p-{n:04}")
}

/// What was seeded.
pub struct Seeded {
    pub products: usize,
    pub offers: usize,
    pub counters: usize,
}

/// Writes `count` products with offers and view counters, in bulk (`BatchWriteItem` on
/// DynamoDB). `hourly_days` and `daily_days` bound
/// how much counter history is written (a real DynamoDB API is slower to seed than memory).
pub async fn seed<S>(
    store: &S,
    count: usize,
    now: EpochMillis,
    hourly_hours: i64,
    daily_days: i64,
) -> catalog_core::Result<Seeded>
where
    S: BulkLoader + ?Sized,
{
    let mut rng = SmallRng::seed_from_u64(42);
    let eur = Currency::parse("EUR")?;
    let mut products = Vec::with_capacity(count);
    let mut offers = Vec::new();
    let mut counters = Vec::new();
    for n in 1..=count {
        let id = ProductId::parse(&product_id(n))?;
        let name = format!(
            "{} {}",
            ADJECTIVES[n % ADJECTIVES.len()],
            NOUNS[(n / ADJECTIVES.len()) % NOUNS.len()]
        );
        let price = rng.random_range(499..=49_999);
        products.push(Product {
            id: id.clone(),
            name: format!("{name} #{n}"),
            description: format!(
                "The {} for every home; demo product {n}.",
                name.to_lowercase()
            ),
            category: CATEGORIES[n % CATEGORIES.len()].to_owned(),
            price: Money::new(price, eur),
            // A few inactive products, to show they are left out of feeds.
            active: n % 50 != 0,
            created_at: now - rng.random_range(0..60) * DAY - rng.random_range(0..DAY),
            updated_at: now,
            version: 0,
        });
        if n % 3 == 0 {
            for k in 0..rng.random_range(1..=3) {
                let expires_in = match k {
                    // A few offers run out in the first minutes, to watch the job expire them.
                    0 if n % 30 == 0 => rng.random_range(30..240) * 1000,
                    0 => rng.random_range(5..120) * 60_000,
                    _ => rng.random_range(1..7 * 24) * HOUR,
                };
                offers.push(Offer {
                    id: OfferId::parse(&format!("o-{n:04}-{k}"))?,
                    product_id: id.clone(),
                    status: OfferStatus::Active,
                    price: Money::new(price * rng.random_range(60..95) / 100, eur),
                    expires_at: now + expires_in,
                    created_at: now,
                    updated_at: now,
                    version: 0,
                });
            }
        }
        // Popularity falls off with the id (a Zipf-like catalog): p-0001 is the hottest.
        let daily_views = (2_000 / n as u64).max(u64::from(n % 7 == 0));
        if daily_views > 0 {
            for h in 0..hourly_hours {
                let views = (daily_views / 24).max(u64::from(h % 5 == 0));
                counters.push((id.clone(), CounterBucket::hour_of(now - h * HOUR), views));
            }
            for d in 0..daily_days {
                counters.push((
                    id.clone(),
                    CounterBucket::day_of(now - d * DAY),
                    daily_views,
                ));
            }
        }
    }
    store
        .load(BulkCatalog {
            products: &products,
            offers: &offers,
            counters: &counters,
        })
        .await?;
    Ok(Seeded {
        products: products.len(),
        offers: offers.len(),
        counters: counters.len(),
    })
}
