#!/bin/sh
# Kernel receive-buffer drops per UDP socket, sampled twice a second while a run goes on:
# the gateway's media socket (MEDIA_PORT, default 7882) versus every other socket (the load
# tester's), IPv4 and IPv6. (Until 2026-12-05 it looked for port 0x1EC2, which is 7874, not 7882,
# and read IPv4 only: what it printed as "others" included the gateway's drops.)
# usage: drops.sh SECONDS > drops.log   (the last lines hold the totals)
n=$(( ${1:-35} * 2 ))
hex=$(printf '%04X' "${MEDIA_PORT:-7882}")
for i in $(seq $n); do
  cat /proc/net/udp /proc/net/udp6 | awk -v port="$hex" '$1 != "sl" {n=split($2,a,":"); if(a[n]==port) s+=$NF; else {o+=$NF; if($NF>m)m=$NF}} END{print "gateway", s+0, "others", o+0, "max_other_socket", m+0}'
  sleep 0.5
done
