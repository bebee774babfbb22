//! The L1 holds the memory it is given: filled far past its bound with decoded product
//! details, the heap it really occupies (counted by the global allocator) stays within
//! `l1_max_bytes`. Its own test binary, so the allocator counts this test only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::model::{
    Currency, Money, Offer, OfferId, OfferStatus, PeriodStats, Product, ProductDetail, ProductId,
};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const L1_BYTES: u64 = 8 << 20;

fn detail(n: usize) -> ProductDetail {
    let id = ProductId::parse(&format!("p{n:06}")).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let product = Product {
        id: id.clone(),
        name: format!("Product number {n}"),
        description: "A sturdy kettle with a long description. ".repeat(36),
        category: "kitchen".into(),
        price: Money::new(2599, eur),
        active: true,
        created_at: 1_790_000_000_000,
        updated_at: 1_790_000_000_000,
        version: 1,
    };
    let offers = (0..4)
        .map(|o| Offer {
            id: OfferId::parse(&format!("o{n:06}-{o}")).unwrap(),
            product_id: id.clone(),
            status: OfferStatus::Active,
            price: Money::new(1999, eur),
            expires_at: 1_800_000_000_000,
            created_at: 1_790_000_000_000,
            updated_at: 1_790_000_000_000,
            version: 1,
        })
        .collect();
    ProductDetail { product, offers }
}

/// Fills a fresh L1 bounded at `L1_BYTES` with `count` values made by `value(n)` under keys
/// made by `key(n)`, and returns (entries, bytes weighed, heap bytes held).
async fn fill<T: catalog_core::cache::Cacheable + Clone>(
    count: usize,
    key: impl Fn(&Cache, usize) -> catalog_core::cache::key::CacheKey,
    value: impl Fn(usize) -> T,
) -> (u64, u64, u64) {
    let cache = Cache::new(
        CacheOptions {
            l1_max_bytes: L1_BYTES,
            ..CacheOptions::default()
        },
        None,
        Arc::new(SystemClock),
    );
    // Warm the cache's own structures before the baseline.
    let warm = value(usize::MAX / 2);
    cache
        .get_or_load(&key(&cache, usize::MAX / 2), move || async move {
            Ok(Some(warm))
        })
        .await
        .unwrap();
    cache.l1_usage();
    let baseline = ALLOCATOR.allocated();
    for n in 0..count {
        let v = value(n);
        cache
            .get_or_load(&key(&cache, n), move || async move { Ok(Some(v)) })
            .await
            .unwrap();
    }
    let (entries, weighed) = cache.l1_usage();
    let held = ALLOCATOR.allocated().saturating_sub(baseline) as u64;
    #[allow(clippy::print_stdout)] // the figures, for `--nocapture`
    {
        println!(
            "L1: {entries} entries, {weighed} bytes weighed, {held} bytes held; bound {L1_BYTES}"
        );
    }
    (entries, weighed, held)
}

/// One test for both shapes, one after the other: the allocator counts the whole process.
#[tokio::test(flavor = "current_thread")]
async fn the_l1_holds_no_more_memory_than_its_bound() {
    let product = |cache: &Cache, n: usize| {
        cache
            .keys()
            .product(&ProductId::parse(&format!("p{n:06}")).unwrap())
    };
    let stats_key = |cache: &Cache, n: usize| {
        cache
            .keys()
            .stats(&ProductId::parse(&format!("p{n:06}")).unwrap())
    };
    let stats = |n: usize| PeriodStats {
        views_24h: n as u64,
        computed_at: 1_790_000_000_000,
        ..PeriodStats::default()
    };
    for (shape, (_, weighed, held)) in [
        // About 50 MB of decoded details (3.5 KB each), six times the bound.
        (
            "product details",
            fill(20_000, product, |n| detail(n % 1_000_000)).await,
        ),
        // Small entries, where the per-entry overhead is most of the weight.
        ("period stats", fill(100_000, stats_key, stats).await),
    ] {
        assert!(weighed <= L1_BYTES, "{shape}");
        assert!(
            held <= L1_BYTES + L1_BYTES / 20,
            "{shape}: the L1 holds {held} bytes for a bound of {L1_BYTES}"
        );
        assert!(
            held >= L1_BYTES / 2,
            "{shape}: the L1 was filled ({held} bytes held): the test measures a full cache"
        );
    }
}
