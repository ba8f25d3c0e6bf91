#!/usr/bin/env python3
"""Before/after table of lean.sh runs with BINS (docs/BENCHMARKS.md §3).

usage: pairs.py OUT [N]   reads OUT-1 .. OUT-N/runs/summary.jsonl (N binaries, default 2) and
prints, per run name, each binary's server CPU per forwarded packet and the change of each
binary against the first, then the mean change per shape.
"""
import json
import sys
from collections import defaultdict

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2
runs = defaultdict(dict)
for k in range(1, n + 1):
    for line in open(f"{out}-{k}/runs/summary.jsonl"):
        d = json.loads(line)
        runs[d["name"]][k] = d
cols = " | ".join(f"binary {k} us/fwd" for k in range(1, n + 1))
changes = " | ".join(f"{k} vs 1" for k in range(2, n + 1))
print(f"| run | fwd/s | {cols} | {changes} |")
print("|---|---|" + "---|" * (2 * n - 1))
per_shape = defaultdict(lambda: defaultdict(list))
for name in sorted(runs, key=lambda s: (s.rsplit("-", 2)[0], int(s.rsplit("-", 1)[1]))):
    row = runs[name]
    if 1 not in row or any(row[k].get("us_per_fwd") is None for k in row):
        continue
    base = row[1]["us_per_fwd"]
    vals = " | ".join(f"{row[k]['us_per_fwd']:.2f}" if k in row else "-" for k in range(1, n + 1))
    deltas = []
    for k in range(2, n + 1):
        if k in row:
            change = (row[k]["us_per_fwd"] / base - 1) * 100
            per_shape[name.rsplit("-", 2)[0]][k].append(change)
            deltas.append(f"{change:+.1f} %")
        else:
            deltas.append("-")
    print(f"| {name} | {row[1]['fwd_per_s']:.0f} | {vals} | {' | '.join(deltas)} |")
print()
for shape, by_bin in per_shape.items():
    for k, changes in by_bin.items():
        mean = sum(changes) / len(changes)
        print(f"{shape}: binary {k} against 1, mean {mean:+.1f} % over {len(changes)} pairs "
              f"(from {min(changes):+.1f} to {max(changes):+.1f} %)")
