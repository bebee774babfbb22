//! Realistic catalog documents for benchmarks: product details whose JSON looks like real
//! product data (prose descriptions, several offers), at a chosen size.

use catalog_core::model::{
    Currency, Money, Offer, OfferId, OfferStatus, Product, ProductDetail, ProductId,
};

const WORDS: &[&str] = &[
    "stainless",
    "steel",
    "kettle",
    "with",
    "rapid",
    "boil",
    "and",
    "keep",
    "warm",
    "function",
    "cordless",
    "design",
    "for",
    "easy",
    "pouring",
    "the",
    "a",
    "of",
    "to",
    "in",
    "capacity",
    "litres",
    "energy",
    "efficient",
    "heating",
    "element",
    "limescale",
    "filter",
    "removable",
    "washable",
    "automatic",
    "shut",
    "off",
    "boil",
    "dry",
    "protection",
    "ergonomic",
    "handle",
    "soft",
    "touch",
    "lid",
    "opening",
    "illuminated",
    "water",
    "level",
    "window",
    "base",
    "rotates",
    "degrees",
    "cord",
    "storage",
    "brushed",
    "finish",
    "matches",
    "toaster",
    "range",
    "warranty",
    "years",
    "dishwasher",
    "safe",
    "parts",
    "quiet",
    "temperature",
    "control",
    "settings",
    "green",
    "tea",
    "coffee",
    "baby",
    "formula",
    "precise",
    "display",
    "digital",
];

/// Deterministic prose of about `bytes` bytes.
pub fn prose(seed: u64, bytes: usize) -> String {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_possible_truncation)]
        let word = WORDS[(state >> 33) as usize % WORDS.len()];
        if !text.is_empty() {
            text.push(if (state >> 20).is_multiple_of(11) {
                '.'
            } else {
                ' '
            });
            if text.ends_with('.') {
                text.push(' ');
            }
        }
        text.push_str(word);
    }
    text
}

/// A product detail whose JSON is close to `target_bytes`.
pub fn product_detail(id: &str, target_bytes: usize) -> ProductDetail {
    let eur = Currency::parse("EUR").unwrap_or_else(|_| unreachable!("EUR is valid"));
    let now = 1_790_000_000_000;
    let product_id = ProductId::parse(id).unwrap_or_else(|e| panic!("bad fixture id {id}: {e}"));
    let seed = id
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let offer = |i: usize| Offer {
        id: OfferId::parse(&format!("{id}-offer-{i}")).unwrap_or_else(|e| panic!("{e}")),
        product_id: product_id.clone(),
        status: OfferStatus::Active,
        price: Money::new(1999 - 10 * i as i64, eur),
        expires_at: now + 86_400_000 * (i as i64 + 1),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let offers = vec![offer(0)];
    let mut detail = ProductDetail {
        product: Product {
            id: product_id.clone(),
            name: "Stainless steel kettle 1.7 l with temperature control".into(),
            description: String::new(),
            category: "kitchen-appliances".into(),
            price: Money::new(2599, eur),
            active: true,
            created_at: now,
            updated_at: now,
            version: 3,
        },
        offers,
    };
    let size = |d: &ProductDetail| serde_json::to_vec(d).map_or(0, |v| v.len());
    // Offers first, while the description (at most 4000 characters) can fill the rest.
    while size(&detail) + 3900 < target_bytes {
        let next = offer(detail.offers.len());
        detail.offers.push(next);
    }
    let base = size(&detail);
    detail.product.description = prose(seed, target_bytes.saturating_sub(base).min(3990));
    // `prose` stops at a word boundary past the target; trim to the exact size.
    let over = size(&detail).saturating_sub(target_bytes);
    let keep = detail.product.description.len().saturating_sub(over);
    detail.product.description.truncate(keep);
    detail
}
