#!/usr/bin/env python3
import json, os, sys
# Prints a one-line JSON summary of a run made by run.sh (docs/BENCHMARKS.md). usage: summ.py RUNS_DIR NAME
name = sys.argv[2]
R = sys.argv[1] + "/"
try:
    j = json.load(open(R + name + ".json"))
except Exception as e:
    print(name, "no json", e); sys.exit()
g = j["gateway"]; p = j["packets"]; lat = j.get("latency_ms") or {}
meta = open(R + name + ".meta").read().split()
idle_rss = float(meta[1]); warn = meta[4]; err = meta[5]
u, s, e, maxrss = open(R + name + ".time").read().split()[-4:]
rows = [l.split() for l in open(R + name + ".samples").read().splitlines()[1:]]
rows = [list(map(int, r)) for r in rows]
steady = j.get("steady_secs") or 0
# steady samples: the busiest window of steady_secs length by server CPU
win = max(1, int(steady) - 2)
best = None
best_at = 0
for i in range(0, max(1, len(rows) - win + 1)):
    w = rows[i:i + win]
    if not w: break
    sv = sum(r[1] for r in w) / len(w)
    if best is None or sv > best[0]:
        best_at = i
        best = (sv, sum(r[2] for r in w) / len(w), sum(r[3] for r in w) / len(w), max(r[3] for r in w),
                # every shard thread's mean, shard 0 first (sample.sh puts shards 1.. after the client)
                [round(sum(r[c] for r in w) / len(w), 1) for c in [2] + list(range(4, len(w[0])))])
# The shard's sleeps per second (sample.sh's OUT.sleeps) over the same window.
try:
    sl = [int(l.split()[1]) for l in open(R + name + ".samples.sleeps").read().splitlines()[1:]]
    sl = sl[best_at:best_at + win]
    shard_sleeps = round(sum(sl) / len(sl)) if sl else None
except (OSError, IndexError, ValueError):
    shard_sleeps = None
parts = j["participants"]["joined"]
cpu = g.get("cpu_percent"); fwd = g.get("forwarded_per_sec"); rss = g.get("rss_peak_bytes")
# The gateway's counters at the end of the run (run.sh reads /metrics): totals, not rates.
counters = {}
try:
    for l in open(R + name + ".metrics"):
        k, v = l.split()
        counters[k.removeprefix("gatehouse_sfu_").removesuffix("_total")] = int(float(v))
except OSError:
    pass
out = dict(name=name, verdict=j["verdict"], joined=parts, planned=j["participants"]["planned"],
    loss=p["loss_percent"], p99=lat.get("p99"), p50=lat.get("p50"), fwd_per_s=fwd, gw_cpu=cpu,
    us_per_fwd=(cpu / 100 / fwd * 1e6) if cpu and fwd else None,
    rss_mb=rss / 1e6 if rss else None, idle_rss_mb=idle_rss / 1e3,
    rss_per_part_kb=((rss / 1e3 - idle_rss) / parts) if rss and parts else None,
    cpu_per_part=(cpu / parts) if cpu and parts else None,
    sampled_server=best and best[0], sampled_shard=best and best[1], sampled_client=best and best[2], client_max=best and best[3],
    sampled_shards=best and best[4], shard_sleeps_per_s=shard_sleeps, relayed=counters.get("relayed_packets"), relay_drops=counters.get("relay_drops"),
    relayed_per_s=g.get("sfu_rates", {}).get("gatehouse_sfu_relayed_packets_total"),
    socket_drops_gw=g.get("socket_drops"), socket_drops_client=(j.get("client") or {}).get("socket_drops"),
    # over the run (the gateway's until the end of its teardown, the load tester's joins included)
    socket_drops_gw_run=g.get("socket_drops_run"), socket_drops_client_run=(j.get("client") or {}).get("socket_drops_run"),
    client_avg_cpu=round((float(u) + float(s)) / float(e) * 100, 1), warn=warn, error=err, errors=j.get("errors"))
# The load tester's own figures over the steady phase and its verdict on which side was the limit
# (reports from before the load tester stated them have neither).
client = j.get("client") or {}
streams = j.get("streams") or {}
out.update(client_cpu=client.get("cpu_percent"), client_busiest=client.get("busiest_thread_percent"),
           streams=f'{streams.get("received")}/{streams.get("expected")}', limit=j.get("limit"),
           limit_reason=j.get("limit_reason"))
# Which rig (run.sh's RIG): loopback, or namespaces joined by a veth pair.
out.update(rig=os.environ.get("RIG", "lo"))
idle = j.get("idle")
if idle:
    out.update(idle_connected=idle["connected"], idle_participants=idle["participants"],
               idle_connections_up=idle["connections_up"], idle_ms_per_part_s=idle["gateway_cpu_ms_per_participant_per_sec"])
print(json.dumps(out))
open(R + "summary.jsonl", "a").write(json.dumps(out) + "\n")
