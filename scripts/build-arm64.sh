#!/usr/bin/env bash
# `make build`: every function, release, for Lambda's arm64 (Graviton), with cargo-lambda.
# Binaries land in target/lambda/<function>/bootstrap; their sizes are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_python_tools
ensure_arm64_toolchain

functions=(api refresh offer-expiry view-aggregator cache-sync)
packages=()
for f in "${functions[@]}"; do packages+=(-p "$f"); done
cargo lambda build --release --arm64 "${packages[@]}"

for f in "${functions[@]}"; do
  bin="${CARGO_TARGET_DIR:-target}/lambda/$f/bootstrap"
  printf '%-16s %10d bytes  %s\n' "$f" "$(stat -c %s "$bin")" "$(file -b "$bin" 2>/dev/null | cut -d, -f1-2)"
done
