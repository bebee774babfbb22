//! Size of each function's deployable binary: the arm64 release build `make build` leaves in
//! `target/lambda/<function>/bootstrap` (what Lambda downloads and maps at a cold start).

use std::path::PathBuf;

use crate::report::Report;

/// The functions the template deploys.
const FUNCTIONS: [&str; 5] = [
    "api",
    "refresh",
    "offer-expiry",
    "view-aggregator",
    "cache-sync",
];

/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 0xB7;

pub fn run(report: &mut Report) -> anyhow::Result<()> {
    for function in FUNCTIONS {
        let path = lambda_binary(function);
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}; run `make build` first", path.display()))?;
        anyhow::ensure!(
            is_aarch64_elf(&bytes),
            "{} is not an arm64 ELF binary; `make build` builds for arm64",
            path.display()
        );
        report.set(
            &format!("{}_binary_bytes_arm64", function.replace('-', "_")),
            bytes.len() as f64,
            "bytes",
        );
    }
    Ok(())
}

fn lambda_binary(function: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("lambda").join(function).join("bootstrap")
}

/// A little-endian ELF whose machine is AArch64.
fn is_aarch64_elf(bytes: &[u8]) -> bool {
    bytes.len() > 20
        && bytes.starts_with(b"\x7fELF")
        && bytes[5] == 1
        && u16::from_le_bytes([bytes[18], bytes[19]]) == EM_AARCH64
}
