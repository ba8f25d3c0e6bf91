#!/bin/bash
# Impaired links, 5 % loss both ways: see docs/BENCHMARKS.md section 6.
# usage: loss.sh [RUNS]          both cameras one layer (the default suite's test)
#        SIMULCAST=1 loss.sh [RUNS]  both cameras simulcast (the web client's default; the
#                                    test is #[ignore]d in the default suite, see tests/browser.rs)
# Runs the Chromium loss test RUNS times (default 3; root, as the suite is): a guest in a
# network namespace loses 5 % of its UDP datagrams both ways for 15 s while it and staff in
# the console (a second Chromium) send each other their fake camera. Prints, per run, the
# gateway's loss-repair counters, what reached the guest (loss left after repair, longest
# stretch without a new frame, Chrome's freeze counters), what reached staff, and how much the
# guest's camera resent for what the gateway found missing.
set -e
RUNS=${1:-3}
export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(command -v clippy-driver)}
OUT=$(mktemp -d /tmp/loss.XXXX)
cd "$(dirname "$0")/../.."
cargo test --test browser --no-run >/dev/null 2>&1
TEST=chromium_video_survives_5_percent_loss_both_ways
if [ -n "$SIMULCAST" ]; then TEST=chromium_simulcast_video_survives_5_percent_loss_both_ways; fi
for i in $(seq "$RUNS"); do
  cargo test --test browser "$TEST" -- --nocapture --exact \
    >> "$OUT/run-$i.log" 2>&1 || echo "run $i failed (figures kept): $OUT/run-$i.log"
done
cat "$OUT"/run-*.log | grep '^LOSS' > "$OUT/loss.jsonl" || true
python3 - "$OUT/loss.jsonl" <<'PY'
import json, sys
rows = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1])]
def col(name, f):
    print(f"{name:40} " + "  ".join(str(f(r)) for r in rows))
s, g, st, cam = (lambda r: r["server"]), (lambda r: r["to_guest"]), (lambda r: r["to_staff"]), (lambda r: r["guest_camera"])
col("impaired (ms)", lambda r: r["impaired_ms"])
col("nft dropped up / down", lambda r: "/".join(map(str, r["nft_dropped_up_down"])))
col("guest NACKed (packets)", lambda r: s(r)["nacked_packets"])
col("resent to guest (of them RTX)", lambda r: f'{s(r)["retransmitted_packets"]} ({s(r)["retransmitted_rtx"]})')
col("unservable", lambda r: s(r)["unservable_nacks"])
col("to guest: loss after repair", lambda r: f'{g(r)["lost_after_repair"]:.0f}/{g(r)["packets"]:.0f} = {100 * g(r)["residual_loss"]:.2f} %')
col("to guest: longest frame gap (ms)", lambda r: g(r)["freeze"]["longestMs"])
col("to guest: freezes (count, s)", lambda r: f'{g(r)["freeze_count"]:.0f}, {g(r)["freezes_s"]:.1f}')
col("to staff: loss after repair", lambda r: f'{st(r)["lost_after_repair"]:.0f}/{st(r)["packets"]:.0f}')
col("to staff: longest frame gap (ms)", lambda r: st(r)["freeze"]["longestMs"])
col("to staff: freezes (count, s)", lambda r: f'{st(r)["freeze_count"]:.0f}, {st(r)["freezes_s"]:.1f}')
col("missing from guest (gateway)", lambda r: s(r)["missing_packets"])
col("NACKs / packets asked of guest", lambda r: f'{s(r)["nacks_sent"]} / {s(r)["nack_requests_sent"]}')
col("guest camera resent (NACKs seen)", lambda r: f'{cam(r)["resent"]:.0f} ({cam(r)["nacks"]:.0f})')
col("guest camera resend ratio", lambda r: f'{cam(r)["resent"] / max(1, s(r)["missing_packets"]):.2f}')
col("guest camera rate (Mbit/s)", lambda r: f'{8 * cam(r)["bytes"] / r["impaired_ms"] / 1000:.2f}')
col("PLIs sent / duplicates dropped", lambda r: f'{s(r)["plis_sent"]} / {s(r)["duplicate_packets"]}')
col("layer RTX repaired (gateway)", lambda r: s(r).get("layer_rtx_repaired", "-"))
PY
echo "logs: $OUT"
