#!/bin/bash
# Join time in Chromium: see docs/BENCHMARKS.md section 4.
# usage: [PROFILE=debug] join-chromium.sh RUNS [GUESTS_PER_RUN]
# Runs the browser test `chromium_join_time_to_first_frame` RUNS times (each run a fresh gateway,
# in the test process, and a fresh browser; GUESTS_PER_RUN guests per scenario, default 3) and
# prints p50/p95 of Join click -> first remote frame decoded (straight admission) and Admit click ->
# first frame (through the lobby), plus the steps between. PROFILE=release (default) builds in
# $CARGO_TARGET_DIR (default /work/target-bench); PROFILE=debug uses the ordinary debug build.
set -e
RUNS=${1:-5}; export GATEHOUSE_JOIN_REPEATS=${2:-3}
if [ "${PROFILE:-release}" = release ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}; FLAGS=--release
else
  # The shared debug build is made with clippy as the workspace wrapper: reuse it.
  export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(command -v clippy-driver)}
fi
OUT=$(mktemp -d /tmp/join-chromium.XXXX)
cd "$(dirname "$0")/../.."
cargo test $FLAGS --test browser --no-run >/dev/null 2>&1
for i in $(seq "$RUNS"); do
  cargo test $FLAGS --test browser chromium_join_time_to_first_frame -- --nocapture --exact \
    > "$OUT/run-$i.log" 2>&1 || { echo "run $i failed: $OUT/run-$i.log"; exit 1; }
done
cat "$OUT"/run-*.log | grep '^JOIN-TIME' | python3 -c '
import json, sys
rows = {}
for line in sys.stdin:
    _, scenario, data = line.split(" ", 2)
    rows.setdefault(scenario, []).append(json.loads(data))
def pct(v, q):
    v = sorted(v)
    return v[max(0, -(-len(v) * q // 100) - 1)]
for scenario, joins in sorted(rows.items()):
    for key in ["joinToJoinSentMs", "joinToCallMs", "joinToOfferMs", "joinToAnsweredMs", "joinToIceMs", "joinToConnectedMs",
                "joinToFirstPacketMs", "joinToFirstFrameMs",
                "joinSentToJoinedMs", "joinSentToAdmittedMs", "joinSentToOfferFrameMs", "joinSentToOfferApplyMs",
                "joinSentToOfferAppliedMs", "joinSentToAnswerMadeMs", "joinSentToAnswerSentMs", "joinSentToIceMs",
                "joinSentToConnectedMs", "joinSentToFirstFrameMs", "admitToFirstFrameMs",
                "connectedToPliMs", "connectedToKeyEncodedMs", "connectedToFrameReceivedMs", "connectedToFirstFrameMs"]:
        v = [j[key] for j in joins if j.get(key) is not None]
        if v:
            print(f"{scenario:16} {key:24} n={len(v):3} p50 {pct(v, 50):7.1f} ms  p95 {pct(v, 95):7.1f} ms  max {max(v):7.1f} ms")
'
echo "logs: $OUT"
