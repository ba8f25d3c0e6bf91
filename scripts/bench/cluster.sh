#!/bin/bash
# One cluster capacity run (docs/BENCHMARKS.md §8). Linux only; run as root (PostgreSQL runs as
# the `postgres` user) under flock /tmp/heavy.lock.
#
# usage: cluster.sh NAME NODES -- loadtest args...
#   e.g. cluster.sh K2 2 -- --lean --meetings 40 --publishers 2 --duration 20 --ramp 10
#
# Starts a fresh redis-server and PostgreSQL (a throwaway cluster in $OUT/NAME) and NODES
# `gatehouse serve` nodes with --redis-url and --database-url, one media shard each, on the CPUs
# of NODE_CPUS (default "0"; the nodes take them in turn); then `gatehouse loadtest` on
# CLIENT_CPU (default 1) against node 1 only, as behind a load balancer that sends every
# socket to one node: each meeting is placed by the nodes (least loaded), its signaling
# relayed to its node when that is another, its media straight to its node. cluster.py samples
# every node's /metrics each second and sums up the steady window per node.
# Output: $OUT/runs/NAME.json (the load tester's report), NAME.summary.json (one line, also
# appended to $OUT/runs/summary.jsonl and printed), the logs in $OUT/NAME.
set -u
NAME=$1; NODES=$2; shift 2; [ "${1:-}" = "--" ] && shift
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../target/release/gatehouse}
OUT=${OUT:-/tmp/ghb-cluster}
NODE_CPUS=(${NODE_CPUS:-0}); CLIENT_CPU=${CLIENT_CPU:-1}
W=$OUT/$NAME; R=$OUT/runs
rm -rf "$W"; mkdir -p "$W" "$R"
REDIS_PORT=${REDIS_PORT:-16390}; PG_PORT=${PG_PORT:-15440}; HTTPS_BASE=18440; MEDIA_BASE=17890
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

PIDS=()
cleanup() {
  touch "$W/stop"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -d "$W/pg/data" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg/data" -m immediate stop >/dev/null 2>&1
}
trap cleanup EXIT
until_up() { # until_up WHAT COMMAND...: at most 30 s
  for _ in $(seq 150); do "${@:2}" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "cluster.sh: $1 did not come up (logs in $W)" >&2; exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$W" >"$W/redis.log" 2>&1 &
PIDS+=($!)
until_up redis redis-cli -p "$REDIS_PORT" ping

mkdir -p "$W/pg"; chown postgres "$W/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$W/pg/data" -A trust -U gatehouse -E UTF8 --locale=C --no-sync >"$W/pg/initdb.log" 2>&1 \
  || { echo "cluster.sh: initdb failed ($W/pg/initdb.log)" >&2; exit 1; }
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/postgres.log" -w \
  -o "-p $PG_PORT -k $W/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
  || { echo "cluster.sh: PostgreSQL did not start ($W/pg/postgres.log)" >&2; exit 1; }
DB=postgres://gatehouse@127.0.0.1:$PG_PORT/postgres

URLS=()
for i in $(seq "$NODES"); do
  cpu=${NODE_CPUS[$(( (i - 1) % ${#NODE_CPUS[@]} ))]}
  port=$((HTTPS_BASE + i))
  # Every load-tester participant connects from 127.0.0.1: lift the per-address connection limit.
  GATEHOUSE_MAX_CONNECTIONS_PER_IP=100000 taskset -c "$cpu" "$BIN" serve --data-dir "$W/n$i" \
    --listen "127.0.0.1:$port" --media-bind "127.0.0.1:$((MEDIA_BASE + i))" --media-shards 1 \
    --redis-url "redis://127.0.0.1:$REDIS_PORT/0" --database-url "$DB" >"$W/n$i.log" 2>&1 &
  PIDS+=($!)
  until_up "node $i" curl -sfk "https://127.0.0.1:$port/metrics"
  URLS+=("https://127.0.0.1:$port")
done
# Every node in every node's registry view before the run (a beat a second).
until_up registry sh -c "[ \$(redis-cli -p $REDIS_PORT scard gatehouse:nodes) -eq $NODES ]"

TOKEN=$("$BIN" token --data-dir "$W/n1" --database-url "$DB" --name Bench --sub bench --role admin --ttl 3600)
python3 "$HERE/cluster.py" sample "$W/samples.jsonl" "$W/stop" "${URLS[@]}" &
PIDS+=($!)
taskset -c "$CLIENT_CPU" "$BIN" loadtest --url "https://localhost:$((HTTPS_BASE + 1))" --ca "$W/n1/tls/ca.pem" \
  --token "$TOKEN" --json "$@" >"$R/$NAME.json" 2>"$R/$NAME.err"
RC=$?
touch "$W/stop"; sleep 1.5
for i in $(seq "$NODES"); do
  echo "node $i: $(grep -c WARN "$W/n$i.log") WARN, $(grep -c ERROR "$W/n$i.log") ERROR" >>"$W/meta"
done
echo "loadtest exit $RC" >>"$W/meta"
python3 "$HERE/cluster.py" summary "$W/samples.jsonl" "$R/$NAME.json" "$NAME" | tee "$R/$NAME.summary.json" >>"$R/summary.jsonl"
cat "$R/$NAME.summary.json" "$W/meta"
