#!/usr/bin/env bash
# Runs a command with real services on free loopback ports, then stops them, whatever the
# command's outcome:
#   - one standalone redis-server            -> TEST_REDIS_NODE=127.0.0.1:<port>
#   - a 3-master Redis Cluster                -> TEST_REDIS_CLUSTER_NODES=127.0.0.1:<p1>,...
#   - moto_server, a real DynamoDB API        -> TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:<port>
#     (scripts/moto-server.py: one request at a time, so conditional writes are atomic)
# Missing tools are installed first (Debian redis-server; PyPI moto[server] and cfn-lint).
# Usage: scripts/with-services.sh <command> [args...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/ensure-tools.sh
source "$here/ensure-tools.sh"
ensure_redis
ensure_python_tools

workdir=$(mktemp -d "${TMPDIR:-/tmp}/catalog-cache-services.XXXXXX")
pids=()

stop_services() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$workdir"
  exit "$status"
}
trap stop_services EXIT
trap 'exit 130' INT TERM

# N distinct free ports: all sockets are bound before any is released, so they differ.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_for() { # description, command...
  local what=$1; shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "with-services: $what did not come up; logs in $workdir:" >&2
  tail -n 20 "$workdir"/*.log >&2 || true
  return 1
}

start_redis() { # port, extra redis-server args...
  local port=$1; shift
  mkdir -p "$workdir/redis-$port"
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$workdir/redis-$port" --logfile "$workdir/redis-$port.log" "$@" &
  pids+=($!)
}

read -r redis_port cluster_a cluster_b cluster_c bus_a bus_b bus_c moto_port <<<"$(free_ports 8)"

start_redis "$redis_port"
# Cluster nodes get an explicit bus port: the default (port + 10000) overflows for high ports.
for node in "$cluster_a:$bus_a" "$cluster_b:$bus_b" "$cluster_c:$bus_c"; do
  start_redis "${node%:*}" --cluster-enabled yes --cluster-port "${node#*:}" \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000
done
# moto, with requests serialised so its conditional writes are atomic as DynamoDB's are.
"$python_bin" "$here/moto-server.py" 127.0.0.1 "$moto_port" >"$workdir/moto.log" 2>&1 &
pids+=($!)

for port in "$redis_port" "$cluster_a" "$cluster_b" "$cluster_c"; do
  wait_for "redis-server on port $port" redis-cli -p "$port" ping
done
redis-cli --cluster create "127.0.0.1:$cluster_a" "127.0.0.1:$cluster_b" "127.0.0.1:$cluster_c" \
  --cluster-replicas 0 --cluster-yes >"$workdir/cluster-create.log" 2>&1
cluster_ok() { redis-cli -p "$cluster_a" cluster info | grep -q 'cluster_state:ok'; }
wait_for "the Redis Cluster" cluster_ok
wait_for "moto_server on port $moto_port" curl -sf "http://127.0.0.1:$moto_port/moto-api/"

export TEST_REDIS_NODE="127.0.0.1:$redis_port"
export TEST_REDIS_CLUSTER_NODES="127.0.0.1:$cluster_a,127.0.0.1:$cluster_b,127.0.0.1:$cluster_c"
export TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$moto_port"
# moto accepts any credentials; the SDK's default chain just needs some to sign with.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
echo "with-services: redis $TEST_REDIS_NODE, cluster $TEST_REDIS_CLUSTER_NODES, dynamodb $TEST_DYNAMODB_ENDPOINT" >&2

"$@"
