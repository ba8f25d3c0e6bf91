#!/bin/bash
# The issue-13 target shapes driven by the lean load tester (`gatehouse loadtest --lean`), each
# run by run.sh (a fresh release gateway on CPU 0, the load tester on CPU 1), optionally with the
# SDK engine in alternation for a side-by-side. See docs/BENCHMARKS.md §3, "The lean load tester".
# usage: lean.sh [REPS [ENGINES [SHAPE...]]]   e.g. lean.sh 1 "lean sdk" LF8
# Summaries in $OUT/runs/summary.jsonl (OUT defaults to /tmp/ghb-lean); run it under
# flock /tmp/heavy.lock.
# Before/after: BINS="/path/to/before/gatehouse /path/to/after/gatehouse" runs each shape with each
# binary in turn (summaries in $OUT-<n>/runs/summary.jsonl, n = the binary's place in BINS, 1 up).
# TOGETHER=1 with BINS: the binaries' runs of a shape go at the same time (each gateway on CPU 0
# with its own ports, each load tester on CPU 1), so that both see the same moment of the
# machine: their ratio is then a fair before/after even when the machine drifts from run to run
# (absolute figures are a little higher than alone: the two share the cores' caches).
# EXTRA: more load-tester arguments for every run (e.g. EXTRA=--precise-sends).
set -u
REPS=${1:-1}; ENGINES=${2:-lean}; shift $(( $# < 2 ? $# : 2 ))
ONLY=${*:-LF8 LA100 LAU100}
HERE=$(cd "$(dirname "$0")" && pwd)
export OUT=${OUT:-/tmp/ghb-lean}
# name|loadtest arguments (without the engine)
SHAPES=(
  # Fan-out 8: one publisher, 4 000 video packets/s in (40 packets of 1 100 bytes per frame at
  # 100 fps), 32 000 forwarded/s.
  "LF8|--meetings 1 --publishers 1 --subscribers 8 --no-audio --video-kbps 35200 --video-fps 100 --duration 15 --ramp 10"
  # Many 1:1 calls with the default media (audio 50 + video ~57 packets/s per participant).
  "LA100|--meetings 100 --publishers 2 --duration 15 --ramp 40"
  # The same at a third of the load, where a turn of the shard mostly holds one datagram
  # (with the SDK engine, whose every participant sends from a socket of its own).
  "LA30|--meetings 30 --publishers 2 --duration 15 --ramp 10"
  "LA60|--meetings 60 --publishers 2 --duration 15 --ramp 20"
  "LA200|--meetings 200 --publishers 2 --duration 15 --ramp 40"
  # Three 10-person all-video meetings (fan-out 9, about 30 000 forwarded/s with one layer).
  "LM10|--meetings 3 --publishers 10 --duration 15 --ramp 10"
  # 100 audio-only rooms: 50 packets/s of 100 bytes per participant.
  "LAU100|--meetings 100 --publishers 2 --no-video --audio-kbps 40 --duration 15 --ramp 40"
  # Idle participants (--idle): 200 and 500 participants with a microphone and a camera, which
  # send a little (so that every connection and track comes up) until the steady phase, then
  # nothing; the report's idle.gateway_cpu_ms_per_participant_per_sec is the figure.
  "LIDLE200|--meetings 100 --publishers 2 --idle --audio-kbps 8 --audio-pps 10 --video-kbps 30 --video-fps 5 --duration 30 --ramp 40"
  "LIDLE500|--meetings 250 --publishers 2 --idle --audio-kbps 8 --audio-pps 10 --video-kbps 30 --video-fps 5 --duration 30 --ramp 50"
)
for rep in $(seq "$REPS"); do
  for shape in "${SHAPES[@]}"; do
    name=${shape%%|*}; args=${shape#*|}
    case " $ONLY " in *" $name "*) ;; *) continue ;; esac
    for engine in $ENGINES; do
      if [ -z "${BINS:-}" ]; then
        "$HERE/run.sh" "$name-$engine-$rep" -- --engine "$engine" $args ${EXTRA:-}
        continue
      fi
      n=0
      for bin in $BINS; do
        n=$((n + 1))
        if [ -n "${TOGETHER:-}" ]; then
          BIN=$bin OUT=$OUT-$n PORT=$((8443 + 100 * n)) MEDIA_PORT=$((7882 + 100 * n)) \
            "$HERE/run.sh" "$name-$engine-$rep" -- --engine "$engine" $args ${EXTRA:-} &
        else
          BIN=$bin OUT=$OUT-$n "$HERE/run.sh" "$name-$engine-$rep" -- --engine "$engine" $args ${EXTRA:-}
        fi
      done
      wait
    done
  done
done
