//! The cost model: what 1 million product reads of the Zipf workload, and 1 million counted
//! views, cost on AWS, from counts measured earlier in the same `make bench` run (the `cache`
//! and `views` groups) priced with the dated table in `bench/prices.json`.
//!
//! Nothing here is measured and nothing is typed in but the prices and the scenario's read
//! rate: every count comes from the report. What each part assumes is said where it is priced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::report::Report;

const MILLION: f64 = 1_000_000.0;

/// `bench/prices.json`.
#[derive(Debug, Deserialize)]
struct PriceTable {
    as_of: String,
    region: String,
    prices: BTreeMap<String, Entry>,
    scenario: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    value: f64,
}

impl PriceTable {
    fn load() -> anyhow::Result<PriceTable> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prices.json");
        Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
    }

    fn price(&self, name: &str) -> anyhow::Result<f64> {
        self.prices
            .get(name)
            .or_else(|| self.scenario.get(name))
            .map(|e| e.value)
            .ok_or_else(|| anyhow::anyhow!("bench/prices.json has no `{name}`"))
    }
}

/// One priced alternative: dollars per part, in the order of [`PARTS`].
pub struct Bill {
    pub name: &'static str,
    pub parts: [f64; 6],
}

/// The parts of a bill, in the plots' order.
pub const PARTS: [&str; 6] = [
    "API Gateway",
    "Lambda requests",
    "Lambda duration",
    "DynamoDB",
    "cache requests",
    "cache capacity",
];

impl Bill {
    pub fn total(&self) -> f64 {
        self.parts.iter().sum()
    }
}

/// The function memory the template configures (`Globals.Function.MemorySize`), in GB.
fn configured_memory_gb() -> anyhow::Result<f64> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let template = std::fs::read_to_string(&path)?;
    let megabytes: f64 = template
        .lines()
        .find_map(|l| l.trim().strip_prefix("MemorySize:"))
        .ok_or_else(|| anyhow::anyhow!("{} sets no MemorySize", path.display()))?
        .trim()
        .parse()?;
    Ok(megabytes / 1024.0)
}

/// DynamoDB read units for one read of `bytes`: 4 KB units, halved when eventually consistent.
fn read_units(bytes: f64, consistent: bool) -> f64 {
    let units = (bytes / 4096.0).ceil().max(1.0);
    if consistent { units } else { units / 2.0 }
}

pub fn run(report: &mut Report) -> anyhow::Result<()> {
    let prices = PriceTable::load()?;
    eprintln!(
        "  prices of {} in {}, from bench/prices.json",
        prices.as_of, prices.region
    );
    let memory_gb = configured_memory_gb()?;
    report.set("cost_lambda_memory_mb", memory_gb * 1024.0, "MB");
    let reads_per_s = prices.price("reads_per_second")?;
    report.set("cost_scenario_reads_per_s", reads_per_s, "req/s");
    let hours_per_million = MILLION / reads_per_s / 3600.0;

    let bills = read_bills(report, &prices, memory_gb, hours_per_million)?;
    for bill in &bills {
        report.set(
            &format!("cost_per_million_reads_usd_{}", bill.name),
            bill.total(),
            "USD",
        );
        report.set_series(
            &format!("cost_parts_{}", bill.name),
            bill.parts
                .iter()
                .enumerate()
                .map(|(i, usd)| [i as f64, *usd])
                .collect(),
        );
    }

    // Read units: the engine against no cache, at the same freshness (the Zipf run's TTLs),
    // on Redis as the stack deploys it (serverless: no eviction) and on the 10% Redis.
    let item_units = read_units(report.get("zipf_item_bytes")?, true);
    let units_nocache = report.get("zipf_db_loads_per_read_nocache")? * item_units;
    report.set(
        "dynamodb_read_units_per_million_reads_nocache",
        units_nocache * MILLION,
        "RRU",
    );
    for (suffix, loads) in [
        ("", "zipf_db_loads_serverless"),
        ("_redis_10pct", "zipf_db_loads"),
    ] {
        let units_ours = report.get(loads)? / report.get("zipf_reads")? * item_units;
        report.set(
            &format!("dynamodb_read_units_per_million_reads_ours{suffix}"),
            units_ours * MILLION,
            "RRU",
        );
        report.set(
            &format!("dynamodb_read_units_saved_pct{suffix}"),
            100.0 * (1.0 - units_ours / units_nocache),
            "%",
        );
    }

    let (before, after) = view_bills(report, &prices, memory_gb)?;
    report.set("cost_per_million_views_usd_before", before, "USD");
    report.set("cost_per_million_views_usd_after", after, "USD");
    Ok(())
}

/// The per-read counts of one Zipf variant.
struct ReadCounts {
    loads_per_read: f64,
    billed_ms_per_read: f64,
    /// `None` without a cache.
    redis: Option<RedisCounts>,
}

struct RedisCounts {
    commands_per_read: f64,
    bytes_per_read: f64,
    used_memory_bytes: f64,
}

impl ReadCounts {
    fn of(report: &Report, suffix: &str) -> anyhow::Result<ReadCounts> {
        let reads = report.get("zipf_reads")?;
        Ok(ReadCounts {
            loads_per_read: report.get(&format!("zipf_db_loads{suffix}"))? / reads,
            billed_ms_per_read: report.get(&format!("zipf_lambda_billed_ms_per_read{suffix}"))?,
            redis: Some(RedisCounts {
                commands_per_read: report.get(&format!("zipf_redis_commands_per_read{suffix}"))?,
                bytes_per_read: report.get(&format!("zipf_redis_bytes_per_read{suffix}"))?,
                used_memory_bytes: report.get(&format!("zipf_redis_used_memory_bytes{suffix}"))?,
            }),
        })
    }

    fn nocache(report: &Report) -> anyhow::Result<ReadCounts> {
        Ok(ReadCounts {
            loads_per_read: report.get("zipf_db_loads_per_read_nocache")?,
            billed_ms_per_read: report.get("zipf_lambda_billed_ms_per_read_nocache")?,
            redis: None,
        })
    }
}

/// 1 million reads of the Zipf workload, without a cache, with hand-rolled cache-aside, with
/// ours, and with DAX in front of DynamoDB.
fn read_bills(
    report: &Report,
    prices: &PriceTable,
    memory_gb: f64,
    hours_per_million: f64,
) -> anyhow::Result<Vec<Bill>> {
    let item_bytes = report.get("zipf_item_bytes")?;
    // Every read is one API Gateway request and one Lambda invocation.
    let front = [
        MILLION * prices.price("api_gateway_http_request_usd")?,
        MILLION * prices.price("lambda_request_usd")?,
    ];
    let duration = |counts: &ReadCounts| -> anyhow::Result<f64> {
        Ok(MILLION * counts.billed_ms_per_read / 1000.0
            * memory_gb
            * prices.price("lambda_arm64_gb_second_usd")?)
    };
    // The product is read consistently (a Query of its item collection), as our store does.
    let dynamodb = |counts: &ReadCounts, consistent: bool| -> anyhow::Result<f64> {
        Ok(MILLION
            * counts.loads_per_read
            * read_units(item_bytes, consistent)
            * prices.price("dynamodb_read_request_unit_usd")?)
    };
    // ElastiCache Serverless bills a simple command one ECPU per KiB moved, at least one:
    // estimated per read as the larger of the commands and the KiB (Lua scripts are billed by
    // their vCPU time, not counted); storage at the run's end, at least the metered minimum.
    let cache = |redis: &RedisCounts| -> anyhow::Result<(f64, f64)> {
        let ecpus = redis.commands_per_read.max(redis.bytes_per_read / 1024.0);
        let stored_gb = (redis.used_memory_bytes / 1e9)
            .max(prices.price("elasticache_serverless_valkey_min_gb")?);
        Ok((
            MILLION * ecpus * prices.price("elasticache_serverless_valkey_ecpu_usd")?,
            stored_gb
                * hours_per_million
                * prices.price("elasticache_serverless_valkey_gb_hour_usd")?,
        ))
    };
    let mut bills = Vec::new();
    let nocache = ReadCounts::nocache(report)?;
    bills.push(Bill {
        name: "nocache",
        parts: [
            front[0],
            front[1],
            duration(&nocache)?,
            dynamodb(&nocache, true)?,
            0.0,
            0.0,
        ],
    });
    // Unsuffixed: Redis as the stack deploys it (serverless, nothing evicted).
    for (name, suffix) in [
        ("plain", "_plain_serverless"),
        ("ours", "_serverless"),
        ("plain_redis_10pct", "_plain"),
        ("ours_redis_10pct", ""),
    ] {
        let counts = ReadCounts::of(report, suffix)?;
        let redis = counts
            .redis
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no Redis counts"))?;
        let (requests, capacity) = cache(redis)?;
        bills.push(Bill {
            name,
            parts: [
                front[0],
                front[1],
                duration(&counts)?,
                dynamodb(&counts, true)?,
                requests,
                capacity,
            ],
        });
    }
    // DAX, modelled rather than measured (there is no DAX here): it caches only eventually
    // consistent reads, so the reads become eventually consistent; its item cache is
    // cache-aside with a TTL and its smallest node's memory holds this key space, so it misses
    // as often as plain cache-aside on the serverless-sized Redis did and its requests take as
    // long; its nodes are billed by the hour.
    let plain = ReadCounts::of(report, "_plain_serverless")?;
    bills.push(Bill {
        name: "dax",
        parts: [
            front[0],
            front[1],
            duration(&plain)?,
            dynamodb(&plain, false)?,
            0.0,
            prices.price("dax_nodes")?
                * prices.price("dax_t3_small_node_hour_usd")?
                * hours_per_million,
        ],
    });
    Ok(bills)
}

/// 1 million views posted and counted, before the view-aggregator (each view updates its
/// hour's and its day's counter) and after (tumbling windows, one update per product and
/// window). Both post the view the same way: one API request, one conditional put of the view
/// (one write unit), Lambda billed for that write (the latency shim, rounded up). The counting
/// side is billed as the stream consumer's decode time per record (measured) plus one shim
/// latency per write, one after another (an upper bound).
fn view_bills(report: &Report, prices: &PriceTable, memory_gb: f64) -> anyhow::Result<(f64, f64)> {
    let shim_ms = report.get("db_latency_shim_ms")?;
    let gb_s = prices.price("lambda_arm64_gb_second_usd")?;
    let wru = prices.price("dynamodb_write_request_unit_usd")?;
    let post = prices.price("api_gateway_http_request_usd")?
        + prices.price("lambda_request_usd")?
        + (shim_ms.ceil() + 1.0) / 1000.0 * memory_gb * gb_s
        + wru;
    let request = prices.price("lambda_request_usd")?;
    let decode_ms = 1000.0 / report.get("view_agg_records_per_s")?;
    let invocations = report.get("view_agg_invocations_per_1000_views")? / 1000.0;
    let counting = |writes_per_view: f64| -> f64 {
        writes_per_view * wru
            + (decode_ms + writes_per_view * shim_ms) / 1000.0 * memory_gb * gb_s
            + invocations * request
    };
    let naive = report.get("view_agg_counter_writes_per_1000_views_naive")? / 1000.0;
    let windowed = (report.get("view_agg_counter_writes_per_1000_views")?
        + report.get("view_agg_other_writes_per_1000_views")?)
        / 1000.0;
    Ok((
        MILLION * (post + counting(naive)),
        MILLION * (post + counting(windowed)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_units_follow_dynamodbs_rounding() {
        assert_eq!(read_units(2048.0, true), 1.0);
        assert_eq!(read_units(4096.0, true), 1.0);
        assert_eq!(read_units(4097.0, true), 2.0);
        assert_eq!(read_units(2048.0, false), 0.5);
        assert_eq!(read_units(0.0, true), 1.0);
    }

    #[test]
    fn the_price_table_has_every_price_the_model_uses() {
        let table = PriceTable::load().unwrap();
        for name in [
            "lambda_arm64_gb_second_usd",
            "lambda_request_usd",
            "api_gateway_http_request_usd",
            "dynamodb_read_request_unit_usd",
            "dynamodb_write_request_unit_usd",
            "elasticache_serverless_valkey_ecpu_usd",
            "elasticache_serverless_valkey_gb_hour_usd",
            "elasticache_serverless_valkey_min_gb",
            "dax_t3_small_node_hour_usd",
            "reads_per_second",
            "dax_nodes",
        ] {
            assert!(table.price(name).unwrap() > 0.0, "{name}");
        }
        assert!(configured_memory_gb().unwrap() > 0.0);
    }
}
