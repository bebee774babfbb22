//! View-aggregator benchmarks.
//!
//! - Write reduction: 1,000,000 views in one simulated hour (Zipf s = 1.0 over 10,000
//!   products, one stream shard) run through the local event-source mapping and the real
//!   handler at several tumbling windows; counter updates per 1,000 views, each one write
//!   unit (every counter item is far below 1 KB), against one update per view per bucket.
//! - Decode and aggregate: records per second one core turns from real-shaped stream JSON
//!   into window state, inside the handler, with a 10,000-product state carried in and out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::StreamViewType;
use catalog_core::ExpectedVersion;
use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::memory::MemoryL2;
use catalog_core::cache::{Cache, CacheOptions};
use catalog_core::clock::SystemClock;
use catalog_core::model::CounterBucket;
use catalog_core::model::{EventId, ProductId, ViewEvent};
use catalog_core::store::dynamo::items::ViewItem;
use catalog_core::store::latency::LatencyShim;
use catalog_core::store::memory::MemoryStore;
use catalog_core::store::stream::{Change, ChangeKind, MemoryStream};
use catalog_core::store::{ProductWriter, ViewCounters};
use catalog_core::streams::RawEvent;
use catalog_core::streams::views::{self, ViewAggDeps, ViewAggOptions, WindowState};
use esm::invoke::stream_handler;
use esm::mapping::{EventSourceMapping, MappingConfig};
use esm::source::MemorySource;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde_json::json;

use crate::fixtures::product_detail;
use crate::report::Report;

const PRODUCTS: usize = 10_000;
const VIEWS: usize = 1_000_000;
/// The hour simulated: 2026-11-18 10:00 UTC (aligned with every window size).
const HOUR_START: i64 = 1_795_514_400_000;

/// The deployed mapping's settings (see the README): chosen from the figures below.
pub const BATCH_SIZE: usize = 500;
pub const TUMBLING_WINDOW_S: u64 = 900;

fn product_id(n: usize) -> ProductId {
    ProductId::parse(&format!("p{n:05}")).unwrap_or_else(|e| panic!("{e}"))
}

async fn store_with_products() -> anyhow::Result<Arc<MemoryStore>> {
    let store = Arc::new(MemoryStore::new());
    for n in 0..PRODUCTS {
        let mut product = product_detail(&format!("p{n:05}"), 300).product;
        product.id = product_id(n);
        store.put_product(&product, ExpectedVersion::Absent).await?;
    }
    Ok(store)
}

fn cache() -> Cache {
    Cache::new(
        CacheOptions::default(),
        Some(Arc::new(MemoryL2::new()) as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    )
}

/// `views` Zipf views spread over an hour, as the views table's stream would hold them.
fn hour_of_views(seed: u64, views: usize) -> anyhow::Result<Arc<MemoryStream>> {
    let stream = MemoryStream::with_retention("views", 1, StreamViewType::NewImage, views + 1);
    let zipf = Zipf::new(PRODUCTS as f64, 1.0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 0..views {
        let at = HOUR_START + (i as i64 * 3_600_000) / views as i64;
        let event = ViewEvent {
            event_id: EventId::parse(&format!("v{i}"))?,
            product_id: product_id(zipf.sample(&mut rng) as usize - 1),
            viewed_at: at,
        };
        let item: serde_dynamo::Item = serde_dynamo::to_item(ViewItem::from(&event))?;
        stream.record(Change {
            kind: ChangeKind::Insert,
            keys: serde_dynamo::to_item(json!({"event_id": event.event_id.as_str()}))?,
            old: None,
            new: Some(item),
            partition: event.event_id.to_string(),
            at: chrono::DateTime::from_timestamp_millis(at),
        });
    }
    Ok(stream)
}

/// Counter updates, other writes and invocations for the hour at one tumbling window.
async fn simulate(
    store: &Arc<MemoryStore>,
    stream: &Arc<MemoryStream>,
    window_s: u64,
) -> anyhow::Result<(u64, u64, u64)> {
    // Counters and reports on a fresh store (products shared), writes counted by the shim.
    let counters = Arc::new(MemoryStore::new());
    let shim = Arc::new(LatencyShim::new(counters.clone(), Duration::ZERO));
    let deps = Arc::new(ViewAggDeps {
        products: store.clone(),
        stats: shim.clone(),
        cache: cache(),
    });
    let handler = stream_handler(move |event| {
        let deps = deps.clone();
        async move {
            let options = ViewAggOptions::default();
            views::handle(event, &deps, &options, HOUR_START + 3_600_000).await
        }
    });
    let mapping = EventSourceMapping::new(
        Arc::new(MemorySource(stream.clone())),
        vec![Arc::new(handler)],
        MappingConfig {
            batch_size: BATCH_SIZE,
            tumbling_window: Some(Duration::from_secs(window_s)),
            ..MappingConfig::default()
        },
    );
    mapping.drain().await?;
    let mut counted = 0;
    for n in 0..PRODUCTS {
        counted += counters
            .view_counters(&product_id(n))
            .await?
            .iter()
            .filter(|(bucket, _)| matches!(bucket, CounterBucket::Hour(_)))
            .map(|(_, views)| views)
            .sum::<u64>();
    }
    anyhow::ensure!(
        counted == VIEWS as u64,
        "counted {counted} of {VIEWS} views"
    );
    let updates = shim.calls_of("add_views_once");
    Ok((
        updates,
        shim.writes() - updates,
        mapping.stats().invocations,
    ))
}

/// Records per second through `views::handle` on one core: a batch of 1,000 real-shaped
/// records, a state of 10,000 products carried in and out, products in L1.
async fn records_per_second(store: &Arc<MemoryStore>) -> anyhow::Result<f64> {
    let deps = ViewAggDeps {
        products: store.clone(),
        stats: store.clone(),
        cache: cache(),
    };
    let stream = hour_of_views(3, 1_000)?;
    let records = stream.read(&stream.shard_ids()[0], None, 1_000);
    let mut state = WindowState::default();
    for n in 0..PRODUCTS {
        state.add_views(&product_id(n), 498_754, 3);
    }
    // Merged, as a state is after many batches.
    let state = WindowState::decode(state.encode().map_err(|e| anyhow::anyhow!(e))?)
        .map_err(|e| anyhow::anyhow!(e))?;
    let event = json!({
        "Records": records,
        "window": {"start": "2026-11-18T10:00:00Z", "end": "2026-11-18T10:15:00Z"},
        "state": state.encode().map_err(|e| anyhow::anyhow!(e))?,
        "shardId": "shardId-1",
        "eventSourceARN": stream.arn(),
        "isFinalInvokeForWindow": false,
        "isWindowTerminatedEarly": false
    });
    let options = ViewAggOptions::default();
    // What Lambda hands the function: the event's JSON text, parsed inside the timing.
    let bytes = serde_json::to_vec(&event)?;
    // Warm the product cache, as a running environment has it.
    views::handle(serde_json::from_slice(&bytes)?, &deps, &options, HOUR_START).await?;
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let event: RawEvent = serde_json::from_slice(&bytes)?;
        let response = views::handle(event, &deps, &options, HOUR_START).await?;
        // ...and the response's JSON text, state included, as the runtime sends it back.
        std::hint::black_box(serde_json::to_vec(&response)?);
    }
    Ok((rounds * records.len()) as f64 / started.elapsed().as_secs_f64())
}

/// Only the records-per-second figure (for profiling).
pub async fn run_rate(report: &mut Report) -> anyhow::Result<()> {
    let store = store_with_products().await?;
    let rate = records_per_second(&store).await?;
    report.set("view_agg_records_per_s", rate, "records/s");
    Ok(())
}

pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let store = store_with_products().await?;
    let stream = hour_of_views(1, VIEWS)?;
    let naive = 2.0 * 1000.0; // one update per view for its hour, one for its day
    report.set(
        "view_agg_counter_writes_per_1000_views_naive",
        naive,
        "writes",
    );
    for window_s in [60, 300, TUMBLING_WINDOW_S] {
        let (updates, other, invocations) = simulate(&store, &stream, window_s).await?;
        let per_1000 = updates as f64 * 1000.0 / VIEWS as f64;
        let suffix = if window_s == TUMBLING_WINDOW_S {
            String::new()
        } else {
            format!("_window_{window_s}s")
        };
        report.set(
            &format!("view_agg_counter_writes_per_1000_views{suffix}"),
            per_1000,
            "writes",
        );
        if suffix.is_empty() {
            report.set(
                "view_agg_write_reduction_pct",
                100.0 * (1.0 - per_1000 / naive),
                "%",
            );
            report.set(
                "view_agg_other_writes_per_1000_views",
                other as f64 * 1000.0 / VIEWS as f64,
                "writes",
            );
            report.set(
                "view_agg_invocations_per_1000_views",
                invocations as f64 * 1000.0 / VIEWS as f64,
                "invocations",
            );
        }
    }
    report.set("view_agg_batch_size", BATCH_SIZE as f64, "records");
    report.set("view_agg_tumbling_window_s", TUMBLING_WINDOW_S as f64, "s");
    let rate = tokio::task::spawn_blocking({
        let store = store.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(records_per_second(&store))
        }
    })
    .await??;
    report.set("view_agg_records_per_s", rate, "records/s");
    Ok(())
}
