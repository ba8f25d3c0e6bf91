#!/bin/bash
# The floor under the gateway's cost per forwarded packet (docs/BENCHMARKS.md §3, "The floor"):
# examples/udp_floor.rs's relay (the shard's I/O shell, receive coalescing, nothing else) pinned
# to CPU 0, its clients (the SDK engine's default media, one camera layer, a socket and tasks per
# participant) to CPU 1; prints the relay's JSON line (us_per_fwd: its CPU per forwarded packet
# over the steady window) and the clients' (loss, one-way latency through the relay).
# usage: floor.sh CALLS [COALESCE_US]     e.g. floor.sh 30; floor.sh 30 0 (coalescing off)
# Run it under flock /tmp/heavy.lock beside other benchmarks. BIN: a built udp_floor (default:
# cargo build --release --example udp_floor first).
set -eu
CALLS=${1:?usage: floor.sh CALLS [COALESCE_US]}; COALESCE=${2:-500}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${BIN:-}" ]; then
  (cd "$HERE/../.." && cargo build -q --release --example udp_floor)
  BIN=$HERE/../../target/release/examples/udp_floor
fi
PORT=${PORT:-7990}
OUT=$(mktemp -d)
taskset -c 0 "$BIN" relay --calls "$CALLS" --listen 127.0.0.1:$PORT --coalesce-us "$COALESCE" > "$OUT/relay.json" 2> "$OUT/relay.err" &
RP=$!
trap 'kill $RP 2>/dev/null || true; rm -rf "$OUT"' EXIT
RC=0
taskset -c 1 "$BIN" clients --calls "$CALLS" --relay 127.0.0.1:$PORT --seconds 21 > "$OUT/clients.json" 2> "$OUT/clients.err" || RC=$?
wait $RP || RC=$?
[ $RC = 0 ] || { echo "floor.sh: failed (exit $RC)" >&2; cat "$OUT/relay.err" "$OUT/clients.err" >&2; exit $RC; }
cat "$OUT/relay.json" "$OUT/clients.json"
