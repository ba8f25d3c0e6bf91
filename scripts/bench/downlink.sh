#!/bin/bash
# Impaired links, the guest's downlink capped at 300 kbit/s: see docs/BENCHMARKS.md section 6.
# usage: downlink.sh [RUNS]              staff's camera simulcast (the web client's default)
#        SIMULCAST=0 downlink.sh [RUNS]  both cameras one layer, for comparison
# Runs the Chromium capped-downlink scenario RUNS times (default 3; root, as the suite is,
# one browser test at a time): a guest in a network namespace receives staff's fake camera
# (staff in the console, a second Chromium); its downlink is capped with tc tbf at 300 kbit/s
# (8 KB bucket, 250 ms queue) for 15 s, then the cap is lifted for 12 s; the guest's media
# goes through a relay in the test that delays what goes to it by 40 ms. Prints, per run,
# when the guest decoded the low layer (and when the server's leg forwarded it), the loss
# over the next 10 s, the longest stretch without a new frame, audio's longest gap, the
# server's estimate while capped, and when the top layer came back after the cap was lifted.
set -e
RUNS=${1:-3}
export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(command -v clippy-driver)}
OUT=$(mktemp -d /tmp/downlink.XXXX)
cd "$(dirname "$0")/../.."
cargo test --test browser --no-run >/dev/null 2>&1
TEST=chromium_guest_on_a_300_kbits_downlink_adapts_and_recovers
if [ "$SIMULCAST" = 0 ]; then TEST=chromium_guest_on_a_300_kbits_downlink_without_simulcast; fi
for i in $(seq "$RUNS"); do
  flock /tmp/browser.lock cargo test --test browser "$TEST" -- --nocapture --exact --ignored \
    >> "$OUT/run-$i.log" 2>&1 || echo "run $i failed (figures kept): $OUT/run-$i.log"
done
cat "$OUT"/run-*.log | grep '^DOWNLINK' > "$OUT/downlink.jsonl" || true
python3 - "$OUT/downlink.jsonl" <<'PY'
import json, sys
rows = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1])]
def col(name, f):
    print(f"{name:42} " + "  ".join(str(f(r)) for r in rows))
col("delay toward the guest (ms)", lambda r: r.get("delay_ms"))
col("staff's layers sent (widths)", lambda r: "/".join(map(str, r["sent_widths_at_top"])))
col("guest's width before the cap", lambda r: r["top_width_before"])
col("low layer decoded after (ms)", lambda r: r["low_ms"])
col("server's leg on the low layer after (ms)", lambda r: r["server_low_ms"])
col("next 10 s: lost / received (loss %)", lambda r: f'{r["window_lost"]:.0f}/{r["window_packets"]:.0f} ({100 * r["loss"]:.2f})')
col("next 10 s: lost after repair (%)", lambda r: f'{100 * r["residual_loss"]:.2f}')
col("longest frame gap capped (ms)", lambda r: r["longest_freeze_ms"])
col("  began after the cap (ms)", lambda r: r.get("longest_freeze_began_ms", "-"))
col("freezeCount capped", lambda r: f'{r["freeze_count"]:.0f}')
col("audio's longest gap capped (ms)", lambda r: r["audio_gap_ms"])
col("estimate min/max/last (kbit/s)", lambda r: "/".join(str(round(x / 1000)) if x else "-" for x in r["estimate_bps_min_max_last"]))
col("estimate drops / layer switches", lambda r: f'{r["estimate_drops"]} / {r["layer_switches"]}')
col("probes passed / sent (padding packets)", lambda r: "{} / {} ({})".format(*r["probes_passed_sent_packets"]) if "probes_passed_sent_packets" in r else "-")
col("top layer decoded after the lift (ms)", lambda r: r["top_ms_after_lift"])
col("server's leg back on top after (ms)", lambda r: r.get("server_top_ms_after_lift", "-"))
col("staff's layers sent at the end", lambda r: "/".join(map(str, r.get("staff_widths_at_end", []))))
col("tbf dropped (packets)", lambda r: r["tc"].split("dropped ")[1].split(",")[0] if "dropped " in r["tc"] else "-")
PY
echo "logs: $OUT"
