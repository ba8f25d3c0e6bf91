#!/bin/sh
# usage: sample.sh SERVER_PID CLIENT_PID OUT
# Every second: server process CPU%, its sfu-shard-0 thread CPU%, client process CPU%.
S=$1; C=$2; OUT=$3
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "$1" 2>/dev/null || echo 0; }
shard=$(grep -l '^sfu-shard-0$' /proc/$S/task/*/comm | head -1 | sed 's/comm$/stat/')
ps=$(ticks /proc/$S/stat); ts=$(ticks $shard); cs=$(ticks /proc/$C/stat)
echo "t server% shard% client%" > "$OUT"
t=0
while kill -0 $C 2>/dev/null; do
  sleep 1; t=$((t+1))
  p=$(ticks /proc/$S/stat); th=$(ticks $shard); c=$(ticks /proc/$C/stat)
  echo "$t $(( (p-ps)*100/hz )) $(( (th-ts)*100/hz )) $(( (c-cs)*100/hz ))" >> "$OUT"
  ps=$p; ts=$th; cs=$c
done
