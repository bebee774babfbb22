//! Cache-sync benchmarks.
//!
//! - Propagation: 1,000 product writes made straight to the store (no API, no invalidation),
//!   100 a second, through the in-memory catalog stream, the local event-source mapping (which
//!   polls four times a second, as Lambda does) and the real handler, while another
//!   environment's cache (same L2, L1 off) reads each written product every 5 ms; from the
//!   write's commit to that cache serving the new version of the product detail and summary.
//! - Records per second: real-shaped catalog records (product edits, offers created with
//!   their reference items) through the handler on one core, in batches of 100, from the
//!   event's JSON text to the response's; L2 is in-process, so this is the function's own
//!   cost, and the Redis round trips per batch are counted beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::memory::MemoryL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::model::{Currency, Money, Offer, OfferId, OfferStatus, Product, ProductId};
use catalog_core::reads;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::stream::MemoryStreams;
use catalog_core::store::{OfferWriter, ProductReader, ProductWriter};
use catalog_core::streams::{RawEvent, cache_sync};
use esm::invoke::stream_handler;
use esm::mapping::{EventSourceMapping, MappingConfig, StartingPosition};
use esm::source::{MemorySource, Polled};
use serde_json::{Value, json};

use crate::fixtures::product_detail;
use crate::report::Report;

const PRODUCTS: usize = 1_000;
const WRITES: usize = 1_000;
const WRITE_EVERY: Duration = Duration::from_millis(10);
const READ_EVERY: Duration = Duration::from_millis(5);

fn product_id(n: usize) -> ProductId {
    ProductId::parse(&format!("p{n:05}")).unwrap_or_else(|e| panic!("{e}"))
}

fn l2_cache(l2: &Arc<MemoryL2>, l1: bool) -> Cache {
    let defaults = CacheOptions::default();
    Cache::new(
        CacheOptions {
            l1_max_bytes: if l1 { defaults.l1_max_bytes } else { 0 },
            ..defaults
        },
        Some(l2.clone() as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    )
}

async fn seeded(streams: &MemoryStreams) -> anyhow::Result<Arc<MemoryStore>> {
    let store = Arc::new(MemoryStore::streaming(streams.clone()));
    for n in 0..PRODUCTS {
        let mut product = product_detail(&format!("p{n:05}"), 300).product;
        product.id = product_id(n);
        store.put_product(&product, ExpectedVersion::Absent).await?;
    }
    Ok(store)
}

/// Milliseconds from each write's commit to the reader serving it.
async fn propagation() -> anyhow::Result<Vec<f64>> {
    let streams = MemoryStreams::new(1, 1);
    let store = seeded(&streams).await?;
    let l2 = Arc::new(MemoryL2::new());
    let function_cache = l2_cache(&l2, true);
    let handler = stream_handler(move |event| {
        let cache = function_cache.clone();
        async move {
            cache_sync::handle(event, &cache)
                .await
                .map(|(response, _)| response)
        }
    });
    let mapping = Arc::new(EventSourceMapping::new(
        // Polled four times a second, never woken early: what a deployed mapping does.
        Arc::new(Polled(MemorySource(streams.catalog.clone()))),
        vec![Arc::new(handler)],
        MappingConfig {
            starting_position: StartingPosition::Latest,
            ..MappingConfig::default()
        },
    ));
    mapping.take_starting_position().await?;
    let running = mapping.clone().spawn();

    let reader = l2_cache(&l2, false);
    let catalog: Arc<dyn ProductReader> = store.clone();
    // Every product's detail and summary cached in L2, as a warm deployment has them.
    let ids: Vec<ProductId> = (0..PRODUCTS).map(product_id).collect();
    for id in &ids {
        reads::product_detail(&reader, &catalog, id).await?;
    }
    reads::summaries(&reader, &catalog, &ids).await?;
    // Past the engine's skew margin after the loads, as a deployment long warm is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut watchers = Vec::with_capacity(WRITES);
    for n in 0..WRITES {
        let id = product_id(n % PRODUCTS);
        let current = store
            .products(std::slice::from_ref(&id))
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("{id} missing"))?;
        let written = store
            .put_product(
                &Product {
                    name: format!("Renamed behind the cache {n}"),
                    ..current.clone()
                },
                ExpectedVersion::Exactly(current.version),
            )
            .await?;
        let committed = Instant::now();
        let (reader, catalog) = (reader.clone(), catalog.clone());
        watchers.push(tokio::spawn(async move {
            loop {
                let detail = reads::product_detail(&reader, &catalog, &written.id).await?;
                let summary =
                    reads::summaries(&reader, &catalog, std::slice::from_ref(&written.id)).await?;
                let fresh = |version: Option<u64>| version == Some(written.version);
                if fresh(detail.value.map(|d| d.product.version))
                    && fresh(summary.items[0].value.as_ref().map(|p| p.version))
                {
                    return Ok::<f64, anyhow::Error>(committed.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::ensure!(
                    committed.elapsed() < Duration::from_secs(30),
                    "{} never propagated",
                    written.id
                );
                tokio::time::sleep(READ_EVERY).await;
            }
        }));
        tokio::time::sleep(WRITE_EVERY).await;
    }
    let mut millis = Vec::with_capacity(WRITES);
    for watcher in watchers {
        millis.push(watcher.await??);
    }
    running.abort();
    Ok(millis)
}

/// The catalog records of product edits and new offers, as the stream emits them.
async fn catalog_records() -> anyhow::Result<Vec<Value>> {
    let streams = MemoryStreams::new(1, 1);
    let store = seeded(&streams).await?;
    let skip = streams.catalog.appended() as usize;
    let eur = Currency::parse("EUR")?;
    let now = SystemClock.now_ms();
    for n in 0..PRODUCTS {
        let id = product_id(n);
        if n % 4 == 0 {
            // An offer: its item and its reference item.
            store
                .put_offer(
                    &Offer {
                        id: OfferId::parse(&format!("o{n:05}"))?,
                        product_id: id,
                        status: OfferStatus::Active,
                        price: Money::new(999, eur),
                        expires_at: now + 86_400_000,
                        created_at: now,
                        updated_at: now,
                        version: 0,
                    },
                    ExpectedVersion::Absent,
                )
                .await?;
        } else {
            let current = store
                .products(std::slice::from_ref(&id))
                .await?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("{id} missing"))?;
            store
                .put_product(
                    &Product {
                        price: Money::new(current.price.amount_minor + 1, eur),
                        ..current.clone()
                    },
                    ExpectedVersion::Exactly(current.version),
                )
                .await?;
        }
    }
    let catalog = &streams.catalog;
    let records = catalog.read(&catalog.shard_ids()[0], None, usize::MAX);
    records[skip..]
        .iter()
        .map(|r| serde_json::to_value(r).map_err(Into::into))
        .collect()
}

/// Records per second through the handler on one core, and Redis round trips per batch.
async fn records_per_second() -> anyhow::Result<(f64, f64, usize)> {
    let records = catalog_records().await?;
    let batches: Vec<Vec<u8>> = records
        .chunks(100)
        .map(|chunk| serde_json::to_vec(&json!({ "Records": chunk })))
        .collect::<Result<_, _>>()?;
    let l2 = Arc::new(MemoryL2::new());
    let cache = l2_cache(&l2, true);
    // Once to warm up (script loading, allocations).
    for batch in &batches {
        cache_sync::handle(serde_json::from_slice(batch)?, &cache).await?;
    }
    let trips_before = cache.round_trips();
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        for batch in &batches {
            let event: RawEvent = serde_json::from_slice(batch)?;
            let (response, _) = cache_sync::handle(event, &cache).await?;
            std::hint::black_box(serde_json::to_vec(&response)?);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let trips = (cache.round_trips() - trips_before) as f64 / (rounds * batches.len()) as f64;
    Ok((
        (rounds * records.len()) as f64 / elapsed,
        trips,
        records.len(),
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let mut millis = propagation().await?;
    millis.sort_by(f64::total_cmp);
    report.set(
        "cache_sync_propagation_p50_ms",
        percentile(&millis, 50.0),
        "ms",
    );
    report.set(
        "cache_sync_propagation_p99_ms",
        percentile(&millis, 99.0),
        "ms",
    );
    report.set(
        "cache_sync_propagation_max_ms",
        millis.last().copied().unwrap_or_default(),
        "ms",
    );
    let (rate, trips, _) = tokio::task::spawn_blocking(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(records_per_second())
    })
    .await??;
    report.set("cache_sync_records_per_s", rate, "records/s");
    report.set(
        "cache_sync_redis_round_trips_per_batch",
        trips,
        "round trips",
    );
    Ok(())
}
