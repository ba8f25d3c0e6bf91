#!/bin/bash
# Reach and recovery in Chromium: see docs/BENCHMARKS.md section 5.
# usage: reach.sh [RUNS]
# Runs the network-namespace browser tests RUNS times (default 3; root, as the suite is):
# a 3 s outage of the guest's network and a change of the guest's address with staff in the
# console (video decoded again on both sides), a 10 s outage with staff on the SDK (media
# packets back), and a network with no media path (staff on the SDK, then in the console).
# Prints, per case, every run's figures (ms): video or media back to staff and to the guest
# after the network is back (or after the move), and when the guest with no path was first
# told, when the console showed it as "no media", and when the guest was told what to try.
set -e
RUNS=${1:-3}
export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(command -v clippy-driver)}
OUT=$(mktemp -d /tmp/reach.XXXX)
cd "$(dirname "$0")/../.."
cargo test --test browser --no-run >/dev/null 2>&1
for i in $(seq "$RUNS"); do
  for t in chromium_video_decodes_again_soon_after_a_3_s_outage \
           chromium_video_decodes_again_soon_after_an_address_change \
           chromium_guest_keeps_the_call_through_a_10_s_network_outage \
           chromium_guest_with_no_media_path_is_told_and_staff_see_no_media \
           console_shows_a_guest_with_no_media_path_as_no_media; do
    cargo test --test browser "$t" -- --nocapture --exact --include-ignored >> "$OUT/run-$i.log" 2>&1 \
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
