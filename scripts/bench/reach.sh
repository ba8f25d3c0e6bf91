#!/bin/bash
# Reach and recovery in Chromium: see docs/BENCHMARKS.md section 5.
# usage: reach.sh [RUNS]
# Runs the network-namespace browser tests RUNS times (default 3; root, as the suite is):
# a 3 s and a 10 s outage of the guest's network, a change of the guest's address, and a
# network with no media path. Prints, per case, every run's figures (ms): media back to
# staff and to the guest after the network is back (or after the move), and when the guest
# with no path was first told, and told what to try.
set -e
RUNS=${1:-3}
export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(command -v clippy-driver)}
OUT=$(mktemp -d /tmp/reach.XXXX)
cd "$(dirname "$0")/../.."
cargo test --test browser --no-run >/dev/null 2>&1
for i in $(seq "$RUNS"); do
  for t in chromium_guest_keeps_the_call_through_a_3_s_network_outage \
           chromium_guest_keeps_the_call_through_a_10_s_network_outage \
           chromium_guest_keeps_the_call_when_its_address_changes \
           chromium_guest_with_no_media_path_is_told_and_staff_see_no_media; do
    cargo test --test browser "$t" -- --nocapture --exact >> "$OUT/run-$i.log" 2>&1 \
      || { echo "run $i, $t failed: $OUT/run-$i.log"; exit 1; }
  done
done
cat "$OUT"/run-*.log | grep '^REACH' | python3 -c '
import json, sys
rows = {}
for line in sys.stdin:
    _, case, data = line.split(" ", 2)
    rows.setdefault(case, []).append(json.loads(data))
for case, runs in rows.items():
    keys = [k for k in runs[0] if k.endswith("_ms")]
    print(f"{case} ({len(runs)} runs)")
    for k in keys:
        print(f"  {k:24} " + "  ".join(str(r[k]) for r in runs))
'
echo "logs: $OUT"
