//! `make bench`: runs benchmark groups against real Redis (started by `scripts/with-services.sh`
//! or privately) and merges their figures into `bench/results/latest.json`.
//!
//! Usage: `bench [group...]` where a group is `cache`, `handler`, `api`, `refresh`, `expiry`, `views`,
//! `sync`, `faults`, `binaries` (the arm64 builds of `make build`), `cost` (priced from the counts
//! the others measured) or `plots` (SVG charts of the report; default: all, in that order).
//! Figures are ratios and counts where possible; latencies are from one run on a shared,
//! noisy machine and are reported, never asserted.

mod api;
mod binaries;
mod cache;
mod cost;
mod expiry;
mod faults;
mod fixtures;
mod handler;
mod load;
mod plots;
mod redis_raw;
mod refresh;
mod report;
mod stats;
mod sync;
mod views;
mod zipf;

use std::path::PathBuf;

use report::Report;

const GROUPS: [&str; 11] = [
    "cache", "handler", "api", "refresh", "expiry", "views", "sync", "faults", "binaries", "cost",
    "plots",
];

/// mimalloc: faster than the system allocator for this many small JSON allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let requested: Vec<String> = std::env::args().skip(1).collect();
    let groups: Vec<&str> = if requested.is_empty() {
        GROUPS.to_vec()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    let path = results_path();
    let mut report = Report::load(&path)?;
    for group in groups {
        eprintln!("bench: running {group}");
        match group {
            "cache" => cache::run(&mut report).await?,
            "api" => api::run(&mut report).await?,
            "refresh" => refresh::run(&mut report).await?,
            "expiry" => expiry::run(&mut report).await?,
            "views" => views::run(&mut report).await?,
            "views-rate" => views::run_rate(&mut report).await?,
            "sync" => sync::run(&mut report).await?,
            "faults" => faults::run(&mut report).await?,
            "binaries" => binaries::run(&mut report)?,
            "cost" => cost::run(&mut report)?,
            "plots" => plots::run(&report)?,
            // Parts of `cache` alone.
            "codec" => cache::compression(&mut report),
            "coherence" => cache::coherence(&mut report).await?,
            "zipf" => zipf::run(&mut report).await?,
            "handler" => handler::run(&mut report).await?,
            other => anyhow::bail!("unknown benchmark group `{other}`; known: {GROUPS:?}"),
        }
        // Save after every group so a later failure keeps what was measured.
        report.save(&path)?;
    }
    eprintln!("bench: figures written to {}", path.display());
    Ok(())
}

fn results_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results/latest.json")
}
