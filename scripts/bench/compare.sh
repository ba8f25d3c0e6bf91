#!/bin/bash
# Before/after on the issue-13 shapes, interleaved: for each repetition and shape, one run
# with each binary, alternating, so both see the same machine load. See docs/BENCHMARKS.md.
# usage: compare.sh BEFORE_BIN AFTER_BIN [REPS [SHAPE...]]   (summaries in /tmp/ghb-cmp-<label>/runs/summary.jsonl)
# Without SHAPE names, the first three shapes below (F8 A30 AU32).
set -u
BEFORE=$1; AFTER=$2; REPS=${3:-2}; shift $(( $# < 3 ? $# : 3 ))
ONLY=${*:-F8 A30 AU32}
HERE=$(cd "$(dirname "$0")" && pwd)
# name|loadtest arguments
SHAPES=(
  "F8|--meetings 1 --publishers 1 --subscribers 8 --no-audio --video-kbps 17600 --duration 15 --ramp 10"
  "A30|--meetings 30 --publishers 2 --duration 15 --ramp 10"
  "AU32|--meetings 32 --publishers 2 --no-video --audio-kbps 40 --duration 15 --ramp 10"
  # 100 quiet audio rooms: 200 participants, 50 packets/s of 100 bytes each (issue 13).
  "AU100|--meetings 100 --publishers 2 --no-video --audio-kbps 40 --duration 15 --ramp 20"
  # Nearly idle: the same 200 participants connected, one 750-byte audio packet a second each.
  "IDLE100|--meetings 100 --publishers 2 --no-video --audio-kbps 6 --audio-pps 1 --duration 15 --ramp 20"
)
for rep in $(seq "$REPS"); do
  for shape in "${SHAPES[@]}"; do
    name=${shape%%|*}; args=${shape#*|}
    case " $ONLY " in *" $name "*) ;; *) continue ;; esac
    for label in before after; do
      if [ $label = before ]; then bin=$BEFORE; else bin=$AFTER; fi
      # Separate data directories: the two binaries may differ in their store schema.
      BIN=$bin OUT=/tmp/ghb-cmp-$label "$HERE/run.sh" "$name-$rep" -- $args
    done
  done
done
