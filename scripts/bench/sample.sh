#!/bin/sh
# usage: sample.sh SERVER_PID CLIENT_PID OUT
# Every second: server process CPU%, its sfu-shard-0 thread CPU%, client process CPU%, then
# the CPU% of each further media shard thread (sfu-shard-1, sfu-shard-2, ...), if any.
# OUT.sleeps: every second, how often the sfu-shard-0 thread went to sleep (its voluntary
# context switches: a wait in epoll_wait, or a receive-coalescing pause).
S=$1; C=$2; OUT=$3
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "$1" 2>/dev/null || echo 0; }
sleeps() { awk '/^voluntary_ctxt_switches/{print $2}' "$1" 2>/dev/null || echo 0; }
# The stat files of the shard threads, shard 0 first.
shards=$(grep -H '^sfu-shard-[0-9]*$' /proc/$S/task/*/comm | sort -t- -k3 -n | sed 's/comm:.*$/stat/')
shard=$(echo "$shards" | head -1); more=$(echo "$shards" | tail -n +2)
ps=$(ticks /proc/$S/stat); ts=$(ticks $shard); cs=$(ticks /proc/$C/stat)
ms=""; for f in $more; do ms="$ms $(ticks $f)"; done
hdr="t server% shard% client%"; n=1; for f in $more; do hdr="$hdr shard$n%"; n=$((n+1)); done
echo "$hdr" > "$OUT"
status=${shard%stat}status; vs=$(sleeps $status)
echo "t shard_sleeps" > "$OUT.sleeps"
t=0
while kill -0 $C 2>/dev/null; do
  sleep 1; t=$((t+1))
  p=$(ticks /proc/$S/stat); th=$(ticks $shard); c=$(ticks /proc/$C/stat)
  line="$t $(( (p-ps)*100/hz )) $(( (th-ts)*100/hz )) $(( (c-cs)*100/hz ))"
  set -- $ms; nm=""
  for f in $more; do m=$(ticks $f); line="$line $(( (m-$1)*100/hz ))"; nm="$nm $m"; shift; done
  echo "$line" >> "$OUT"
  v=$(sleeps $status); echo "$t $((v-vs))" >> "$OUT.sleeps"; vs=$v
  ps=$p; ts=$th; cs=$c; ms=$nm
done
