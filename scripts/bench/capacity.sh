#!/bin/bash
# Capacity steps of the three load-tester shapes (docs/BENCHMARKS.md §3, "Capacity of one node"):
# each step is one run.sh run with the lean engine, on one core (one media shard on CPU 0, the
# load tester on CPU 1) or on all cores (two shards; the gateway and the load tester both on both
# cores, two engine threads). Before each run it waits (up to 10 minutes) for both cores to be
# under 15 % busy over 2 s with no compiler running, and it records how busy the machine was over
# the run (both cores, in % of one core), so a run beside someone else's work can be told apart.
# usage: capacity.sh STEP...   with STEP = <shape><size>-<1c|2c>, shape A (N 2-person calls),
#        B (M 10-person meetings) or C (one presenter and S viewers), e.g. A250-1c B14-2c C999-2c
# Results: $OUT/runs/summary.jsonl (run.sh's) and $OUT/machine.txt (step, machine busy %).
# Run it under flock /tmp/heavy.lock.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export OUT=${OUT:-/tmp/ghb-capacity}
mkdir -p "$OUT"
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
quiet() {
  for _ in $(seq 300); do
    read -r b0 t0 < <(busy); sleep 2; read -r b1 t1 < <(busy)
    pct=$(( (b1 - b0) * 100 / (t1 - t0 + 1) ))
    if [ "$pct" -lt 15 ] && ! pgrep -x rustc >/dev/null && ! pgrep -x clippy-driver >/dev/null; then return; fi
  done
  echo "capacity.sh: the machine did not get quiet; running anyway" >&2
}
for step in "$@"; do
  shape=${step:0:1}; rest=${step:1}; size=${rest%-*}; cores=${rest#*-}
  case $shape in
    A) args="--meetings $size --publishers 2 --ramp 40" ;;
    B) args="--meetings $size --publishers 10 --ramp 40" ;;
    C) args="--meetings 1 --publishers 1 --subscribers $size --ramp $([ "$size" -gt 900 ] && echo 80 || echo 50)" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
  n=1; while [ -e "$OUT/runs/$step-$n.json" ]; do n=$((n + 1)); done
  quiet
  read -r b0 t0 < <(busy)
  if [ "$cores" = 2c ]; then
    SHARDS=2 GW_CPUS=0,1 LT_CPUS=0,1 "$HERE/run.sh" "$step-$n" -- --engine lean --client-threads 2 $args --duration 15
  else
    "$HERE/run.sh" "$step-$n" -- --engine lean $args --duration 15
  fi
  read -r b1 t1 < <(busy)
  echo "$step-$n $(date -u +%H:%M) machine_busy_pct_of_one_core $(( (b1 - b0) * 200 / (t1 - t0 + 1) ))" >> "$OUT/machine.txt"
done
