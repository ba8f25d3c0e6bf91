#!/usr/bin/env python3
"""The cluster benchmark's sampler and summary (scripts/bench/cluster.sh, docs/BENCHMARKS.md §8).

  cluster.py sample OUT.jsonl STOPFILE URL...   every second, each node's /metrics counters, one
                                                JSON line per node and sample, until STOPFILE exists
  cluster.py summary SAMPLES.jsonl REPORT.json NAME   one JSON line: the steady window and per node
                                                      what it carried, plus the load tester's figures

The steady window is the nodes' own view: from the first sample at which every participant the
load tester asked for is in a call (summed over the nodes) to the last such sample, less 2 s at
each end. Over it, per node: forwarded packets/s and CPU (from its counters), CPU per forwarded
packet, the meetings it ran and the participants in its calls, and its relayed sessions.
"""

import json
import os
import ssl
import sys
import time
import urllib.request

WANTED = {
    "gatehouse_sfu_forwarded_packets_total": "fwd",
    "gatehouse_process_cpu_seconds_total": "cpu_s",
    "gatehouse_meetings_live": "meetings",
    "gatehouse_participants_in_call": "in_call",
    "gatehouse_relayed_sockets": "relayed_sockets",
    "gatehouse_relayed_sessions_served": "relayed_served",
}


def scrape(url, ctx):
    """The wanted samples of one node's /metrics, each summed over its label sets."""
    with urllib.request.urlopen(url + "/metrics", context=ctx, timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = WANTED.get(name)
        if key is None:
            continue
        try:
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            pass
    return out


def sample(path, stop, urls):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # each node has its own development CA; loopback only
    with open(path, "w") as f:
        while not os.path.exists(stop):
            t = time.time()
            for i, url in enumerate(urls):
                try:
                    values = scrape(url, ctx)
                except OSError as e:
                    values = {"error": str(e)}
                f.write(json.dumps({"t": t, "node": i + 1, **values}) + "\n")
            f.flush()
            time.sleep(max(0.0, 1.0 - (time.time() - t)))


def summary(samples_path, report_path, name):
    with open(report_path) as f:
        report = json.load(f)
    rows = [json.loads(l) for l in open(samples_path)]
    nodes = sorted({r["node"] for r in rows})
    by_t = {}
    for r in rows:
        by_t.setdefault(r["t"], {})[r["node"]] = r
    times = sorted(t for t, s in by_t.items() if len(s) == len(nodes) and all("error" not in v for v in s.values()))
    shape = report["shape"]
    want = shape["meetings"] * (shape["publishers"] + shape.get("subscribers", 0))
    full = [t for t in times if sum(by_t[t][n].get("in_call", 0) for n in nodes) >= want]
    out = {"name": name, "nodes": len(nodes), "participants_wanted": want}
    if len(full) < 2:
        out["error"] = "never all in a call at once"
        print(json.dumps(out))
        return
    start, end = full[0] + 2, full[-1] - 2
    window = [t for t in times if start <= t <= end]
    if len(window) < 2:
        window = full
    t0, t1 = window[0], window[-1]
    secs = t1 - t0
    per_node = []
    total_fwd = total_cpu = 0.0
    for n in nodes:
        a, b = by_t[t0][n], by_t[t1][n]
        fwd = (b.get("fwd", 0) - a.get("fwd", 0)) / secs
        cpu = (b.get("cpu_s", 0) - a.get("cpu_s", 0)) / secs * 100
        total_fwd += fwd
        total_cpu += cpu
        mid = by_t[window[len(window) // 2]][n]
        per_node.append(
            {
                "node": n,
                "meetings": mid.get("meetings"),
                "in_call": mid.get("in_call"),
                "relayed_sockets": mid.get("relayed_sockets"),
                "relayed_served": mid.get("relayed_served"),
                "fwd_per_sec": round(fwd),
                "cpu_percent": round(cpu, 1),
                "us_per_fwd": round(cpu * 1e4 / fwd, 1) if fwd > 0 else None,
            }
        )
    lat = report.get("latency_ms") or {}
    join = report.get("join_to_media_ms") or {}
    out.update(
        {
            "window_secs": round(secs, 1),
            "fwd_per_sec": round(total_fwd),
            "cpu_percent": round(total_cpu, 1),
            "us_per_fwd": round(total_cpu * 1e4 / total_fwd, 1) if total_fwd > 0 else None,
            "per_node": per_node,
            "loss_percent": report["packets"].get("loss_percent"),
            "latency_p50_ms": lat.get("p50"),
            "latency_p99_ms": lat.get("p99"),
            "join_to_media_p50_ms": join.get("p50"),
            "join_to_media_p99_ms": join.get("p99"),
            "joined": report["participants"],
            "client_cpu_percent": (report.get("client") or {}).get("cpu_percent"),
            "limit": report.get("limit"),
            "verdict": report.get("verdict"),
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 5 and sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
