#!/bin/bash
# Join time: see docs/BENCHMARKS.md section 4. Linux only (taskset).
# usage: join.sh BIN NAME -> prints the load tester's join_to_media_ms and join_to_first_frame_ms percentiles
# A fresh gateway (CPU 0, 1 media shard); 10 meetings of one publisher and one subscriber, the
# publishers joining first, so each subscriber joins a meeting whose media already flows.
BIN=$1; NAME=$2
D=/tmp/jb-$NAME; rm -rf $D; mkdir -p $D
taskset -c 0 $BIN serve --data-dir $D --listen 127.0.0.1:8443 --media-bind 127.0.0.1:7882 --media-shards 1 > $D/server.log 2>&1 &
SP=$!
for i in $(seq 100); do curl -sk https://127.0.0.1:8443/healthz >/dev/null 2>&1 && break; sleep 0.1; done
taskset -c 1 $BIN loadtest --data-dir $D --url https://localhost:8443 --json --meetings 10 --publishers 1 --subscribers 1 --ramp 4 --duration 5 > $D/run.json 2> $D/run.err
kill $SP; wait $SP 2>/dev/null
python3 -c "
import json,sys
r=json.load(open('$D/run.json'))
def find(o,k):
    if isinstance(o,dict):
        if k in o: return o[k]
        for v in o.values():
            x=find(v,k)
            if x is not None: return x
    return None
for k in ['join_to_media_ms', 'join_to_first_frame_ms']:
    p=find(r,k)
    print('$NAME', k, p and 'n=%d p50 %.1f p95 %.1f max %.1f' % (p['count'], p['p50'], p['p95'], p['max']))
"
