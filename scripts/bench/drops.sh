#!/bin/sh
# Kernel receive-buffer drops per UDP socket, sampled twice a second while a run goes on:
# the gateway's media socket (port 7882 = 0x1EC2) versus every other socket (the load tester's).
# usage: drops.sh SECONDS > drops.log   (the last lines hold the totals)
n=$(( ${1:-35} * 2 ))
for i in $(seq $n); do
  awk 'NR>1{split($2,a,":"); if(a[2]=="1EC2") s+=$NF; else {o+=$NF; if($NF>m)m=$NF}} END{print "gateway", s+0, "others", o+0, "max_other_socket", m+0}' /proc/net/udp
  sleep 0.5
done
