#!/bin/bash
# The floor under the gateway's cost per forwarded packet (docs/BENCHMARKS.md §3, "The floor"):
# examples/udp_floor.rs's relay (the shard's I/O shell, receive coalescing, nothing else) pinned
# to CPU 0, its clients (the SDK engine's default media, one camera layer, a socket and tasks per
# participant) to CPU 1; prints the relay's JSON line (us_per_fwd: its CPU per forwarded packet
# over the steady window) and the clients' (loss, one-way latency through the relay).
# usage: floor.sh CALLS [COALESCE_US]     e.g. floor.sh 30; floor.sh 30 0 (coalescing off)
# Run it under flock /tmp/heavy.lock beside other benchmarks. BIN: a built udp_floor (default:
# cargo build --release --example udp_floor first).
# SRTP=1: the relay opens each datagram and seals it again (AES-128-GCM, the gateway's own sealer
# and opener), the floor with the crypto no forwarded packet can do without.
# BESIDE=<gatehouse binary>: the gateway's run of the same calls goes at the same time (run.sh
# A<CALLS>, SDK engine, --no-simulcast, its summary in ${OUT:-/tmp/ghb}/runs), started a ramp
# before the relay so that the two steady windows overlap and share the machine's moment (only
# such pairs compare: this VM's figures drift by a third within minutes); a last line then gives
# the gateway's us/fwd, the floor's, their difference (the gateway's own work) and their ratio.
set -eu
CALLS=${1:?usage: floor.sh CALLS [COALESCE_US]}; COALESCE=${2:-500}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${BIN:-}" ]; then
  (cd "$HERE/../.." && cargo build -q --release --example udp_floor)
  BIN=$HERE/../../target/release/examples/udp_floor
fi
PORT=${PORT:-7990}
GW_OUT=${OUT:-/tmp/ghb}
if [ -n "${BESIDE:-}" ]; then
  RAMP=$(( CALLS > 30 ? 20 : 10 ))
  BIN=$BESIDE "$HERE/run.sh" A$CALLS -- --meetings "$CALLS" --publishers 2 --duration 15 --ramp $RAMP --no-simulcast > /dev/null 2>&1 &
  GP=$!
  sleep $(( RAMP - 1 ))
fi
TMPD=$(mktemp -d)
taskset -c 0 "$BIN" relay --calls "$CALLS" --listen 127.0.0.1:$PORT --coalesce-us "$COALESCE" ${SRTP:+--srtp} > "$TMPD/relay.json" 2> "$TMPD/relay.err" &
RP=$!
# (The gateway's run.sh, if any, ends by itself after its duration: waited for, not killed.)
trap 'kill $RP 2>/dev/null || true; [ -z "${GP:-}" ] || wait $GP; rm -rf "$TMPD"' EXIT
RC=0
taskset -c 1 "$BIN" clients --calls "$CALLS" --relay 127.0.0.1:$PORT --seconds 21 ${SRTP:+--srtp} > "$TMPD/clients.json" 2> "$TMPD/clients.err" || RC=$?
wait $RP || RC=$?
[ $RC = 0 ] || { echo "floor.sh: failed (exit $RC)" >&2; cat "$TMPD/relay.err" "$TMPD/clients.err" >&2; exit $RC; }
cat "$TMPD/relay.json" "$TMPD/clients.json"
if [ -n "${BESIDE:-}" ]; then
  wait $GP || true; GP=
  SUMMARY=$GW_OUT/runs/summary.jsonl
  tail -1 "$SUMMARY"
  python3 - "$TMPD/relay.json" "$SUMMARY" <<'PY'
import json, sys
floor = json.load(open(sys.argv[1]))["us_per_fwd"]
gw = json.loads(open(sys.argv[2]).read().splitlines()[-1])["us_per_fwd"]
print(json.dumps({"gateway_us_per_fwd": round(gw, 2), "floor_us_per_fwd": round(floor, 2),
                  "gateway_minus_floor_us": round(gw - floor, 2), "ratio": round(gw / floor, 2)}))
PY
fi
