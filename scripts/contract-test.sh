#!/usr/bin/env bash
# Contract test: schemathesis (PyPI) against the API served by the dev binary on its embedded
# store, with every check, the fuzzing and stateful phases, and both bearer tokens
# (tests/contract/schemathesis.toml says which check is off for which operation, and why).
# Any finding fails. Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_python_tools

cargo build --quiet -p local
port=$("$python_bin" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ADMIN_TOKEN=contract-admin-token WRITE_TOKEN=contract-write-token
DEV_ADDR="127.0.0.1:$port" DEMO_PRODUCTS=300 RUST_LOG=error "${CARGO_TARGET_DIR:-target}/debug/local" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  "$python_bin" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$port/openapi.json" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "contract-test: the dev server exited" >&2; exit 1; }
  sleep 0.25
done
cd tests/contract
"$python_scripts/schemathesis" --config-file schemathesis.toml run "http://127.0.0.1:$port/openapi.json"
