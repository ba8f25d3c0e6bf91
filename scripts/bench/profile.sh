#!/bin/bash
# Where the gateway's CPU goes in one load-tester shape: a fresh release gateway (CPU 0, one media
# shard) runs as `perf record`'s child (cpu-clock sampling: this VM has no hardware counters, and
# attaching to a running gateway sampled nothing on some boots), the load tester on CPU 1; samples
# start DELAY_MS after the gateway (default 8000: past the joins of the shapes below) and the
# media shard's samples are summed into kinds of work (kernel send/receive, wake-ups, SRTP, `rtc`'s
# receive interceptors, ...) by profile.py. See docs/BENCHMARKS.md §3, "Where a small room's
# packet goes". Samples carry kernel call chains (-g), from which the last line says how much of
# the shard's time was the load tester's receive path: on loopback the sender's system call runs
# the receiver's softirq (`net_rx_action`), so a rig on one machine bills the gateway for it
# (§3, "Independent senders").
# usage: profile.sh NAME -- loadtest args...   e.g.
#   profile.sh LA100 -- --engine lean --meetings 100 --publishers 2 --duration 15
# Output in $OUT/NAME (OUT defaults to /tmp/ghb-profile): perf.data, symbols.txt (the shard's
# symbols, self time), kinds.txt (the summary, also printed), lt.json (the load tester's report).
# CALLGRAPH=dwarf: user-space call chains too (`--call-graph dwarf` at 299 Hz: the release build
# has no frame pointers), for inclusive shares of the shard's own functions (`perf report
# --children -i $OUT/NAME/perf.data --comm sfu-shard-0`); fewer samples, each far larger.
# Needs `perf` (Debian linux-perf); run it under flock /tmp/heavy.lock. RIG=veth: the gateway and
# the load tester each in a network namespace of its own (rig.sh; the last line then reads about
# zero).
set -eu
NAME=$1; shift; [ "${1:-}" = "--" ] && shift
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../target/release/gatehouse}
OUT=${OUT:-/tmp/ghb-profile}/$NAME
PORT=${PORT:-8443}; MEDIA_PORT=${MEDIA_PORT:-7882}
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
GW_CPUS=0 LT_CPUS=1
case ${CALLGRAPH:-fp} in
  fp) CHAINS=(-g -F 1999) ;;
  dwarf) CHAINS=(--call-graph dwarf,32768 -F 299) ;;
  *) echo "CALLGRAPH is fp or dwarf, not $CALLGRAPH" >&2; exit 2 ;;
esac
. "$HERE/rig.sh"
GATEHOUSE_MAX_CONNECTIONS_PER_IP=100000 "${IN_GW[@]}" taskset -c $GW_CPUS perf record -q "${CHAINS[@]}" -e cpu-clock -D "${DELAY_MS:-8000}" \
  -o "$OUT/perf.data" -- "$BIN" serve --data-dir "$OUT/data" --listen $HOST:$PORT \
  --media-bind $HOST:$MEDIA_PORT --media-shards 1 > "$OUT/server.log" 2>&1 &
PP=$!
trap 'kill -INT $PP 2>/dev/null || true; [ "${RIG:-lo}" = lo ] || { wait $PP; ip netns del $NS_GW; ip netns del $NS_LT; }' EXIT
for _ in $(seq 50); do "${IN_GW[@]}" curl -sk https://$HOST:$PORT/metrics >/dev/null 2>&1 && break; sleep 0.2; done
"${IN_LT[@]}" taskset -c $LT_CPUS "$BIN" loadtest --data-dir "$OUT/data" --url $URL "${TRUST[@]}" --json "$@" > "$OUT/lt.json" 2> "$OUT/lt.err"
# perf ends its child and writes its data on SIGINT.
kill -INT $PP; wait $PP || true
trap - EXIT
[ "${RIG:-lo}" = lo ] || { ip netns del $NS_GW; ip netns del $NS_LT; }
perf report -i "$OUT/perf.data" --stdio --no-children --comm sfu-shard-0 --sort sym -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' > "$OUT/symbols.txt"
python3 "$HERE/profile.py" "$OUT/symbols.txt" "$OUT/lt.json" | tee "$OUT/kinds.txt"
# Inclusive share of the softirq that delivers datagrams on loopback (to the load tester's sockets,
# inside the gateway's sends; the gateway's own inbound softirq runs in the senders' calls).
perf report -i "$OUT/perf.data" --stdio --children --percentage relative --comm sfu-shard-0 --sort sym -g none 2>/dev/null \
  | awk '$NF == "net_rx_action" { share = $1 } END { sub("%", "", share); printf "of which the receive path in the shard'"'"'s time (net_rx_action, inclusive; on loopback the load tester'"'"'s): %.1f%%\n", share }' \
  | tee -a "$OUT/kinds.txt"
