#!/bin/bash
# One capacity run: see docs/BENCHMARKS.md. Linux only (reads /proc).
# usage: run.sh NAME -- loadtest args...
# Fresh gateway (release, CPU 0, 1 media shard) per run; load tester on CPU 1. Environment:
# SHARDS (the gateway's --media-shards, default 1), GW_CPUS and LT_CPUS (taskset CPU lists of
# the gateway and the load tester, default 0 and 1), SPLIT_AT (--media-split-at, when set),
# PORT and MEDIA_PORT (the gateway's HTTPS and first media port, default 8443 and 7882: two
# runs at once need their own, see ab.sh). LT_BIN: the load tester's binary, default BIN (a
# before/after of the gateway with the newer load tester's options).
# RIG: lo (the default) or veth, the load tester and the gateway on loopback or each in a network
# namespace of its own (rig.sh).
set -u
NAME=$1; shift; [ "$1" = "--" ] && shift
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../target/release/gatehouse}
LT_BIN=${LT_BIN:-$BIN}
OUT=${OUT:-/tmp/ghb}
D=$OUT/data; R=$OUT/runs; mkdir -p $D $R
SHARDS=${SHARDS:-1}; GW_CPUS=${GW_CPUS:-0}; LT_CPUS=${LT_CPUS:-1}; PORT=${PORT:-8443}; MEDIA_PORT=${MEDIA_PORT:-7882}
. "$HERE/rig.sh"
# Every load-tester participant connects from one address: lift the per-address connection limit.
# In a session of its own (setsid: a background job of this script is no group leader, so it
# does not fork), so that the end of the run stops everything it started, also when BIN is a
# wrapper that forks the gateway (a profiler, heaptrack).
GATEHOUSE_MAX_CONNECTIONS_PER_IP=100000 setsid "${IN_GW[@]}" taskset -c $GW_CPUS $BIN serve --data-dir $D --listen $HOST:$PORT --media-bind $HOST:$MEDIA_PORT --media-shards $SHARDS ${SPLIT_AT:+--media-split-at $SPLIT_AT} > $R/$NAME.server.log 2>&1 &
SP=$!
for i in $(seq 50); do "${IN_GW[@]}" curl -sk https://$HOST:$PORT/metrics >/dev/null 2>&1 && break; sleep 0.2; done
IDLE_RSS=$(awk '/VmRSS/{print $2}' /proc/$SP/status)
"${IN_LT[@]}" taskset -c $LT_CPUS /usr/bin/time -f "%U %S %e %M" -o $R/$NAME.time $LT_BIN loadtest --data-dir $D --url $URL "${TRUST[@]}" --json "$@" > $R/$NAME.json 2> $R/$NAME.err &
LP=$!
sleep 0.3
CP=$(pgrep -P $LP | head -1); [ -z "$CP" ] && CP=$LP
$HERE/sample.sh $SP $CP $R/$NAME.samples &
wait $LP; RC=$?
sleep 1
# The gateway's forwarding and relay counters at the end (relayed: packets handed to another shard).
"${IN_GW[@]}" curl -sk https://$HOST:$PORT/metrics | grep -E '^gatehouse_sfu_(forwarded_packets|dropped_packets|relayed_packets|relay_drops|rtc_timeouts)_total' > $R/$NAME.metrics
echo "idle_rss_kb $IDLE_RSS rc $RC" > $R/$NAME.meta
grep -c 'WARN' $R/$NAME.server.log >> $R/$NAME.meta
grep -c 'ERROR' $R/$NAME.server.log >> $R/$NAME.meta
kill -- -$SP; wait $SP 2>/dev/null
python3 $HERE/summ.py $R $NAME
