#!/usr/bin/env bash
# Browser test of the /status page: a real headless Chromium (Debian's chromium and
# chromium-driver, installed when missing) against the dev binary on its embedded store,
# both on free loopback ports; tests/browser/status_page.py drives it. Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_browser

cargo build --quiet -p local
read -r port driver_port <<<"$("$python_bin" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
token=browser-admin-token
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
# The jobs run once at start, then not again during the test, so the figures hold still.
ADMIN_TOKEN=$token DEV_ADDR="127.0.0.1:$port" DEMO_PRODUCTS=50 REFRESH_INTERVAL_SECS=3600 \
  OFFER_EXPIRY_INTERVAL_SECS=3600 RUST_LOG=error "${CARGO_TARGET_DIR:-target}/debug/local" >/dev/null 2>&1 &
pids+=($!)
chromedriver --port="$driver_port" --allowed-ips=127.0.0.1 >/dev/null 2>&1 &
pids+=($!)
up() { "$python_bin" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
wait_up() { # what, url, tries
  for _ in $(seq 1 "$3"); do up "$2" && return 0; sleep 0.25; done
  echo "browser-test: $1 did not come up at $2" >&2
  return 1
}
wait_up "the dev server" "http://127.0.0.1:$port/openapi.json" 240
wait_up "chromedriver" "http://127.0.0.1:$driver_port/status" 80
# Some reads, so the hit ratios are not empty: a miss, then hits.
for id in p-0001 p-0001 p-0002 p-0002 p-0003; do up "http://127.0.0.1:$port/products/$id" || true; done
"$python_bin" tests/browser/status_page.py "http://127.0.0.1:$port" "http://127.0.0.1:$driver_port" "$token"
