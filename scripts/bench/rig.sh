# Sourced by run.sh and profile.sh: where the gateway and the load tester run, from RIG.
#   RIG=lo (the default): both on loopback.
#   RIG=veth: each in a network namespace of its own, joined by a veth pair whose two ends steer
#     their receive work (RPS) to the receiver's CPUs (GW_CPUS, LT_CPUS), as two hosts' network
#     cards would. On loopback the sender's system call runs the receiver's softirq: the
#     gateway's sendmmsg carries the load tester's receiving and the waking of its threads
#     (15 % of the gateway's time at 30 SDK calls, BENCHMARKS §3), and the load tester's sends
#     carry the gateway's receiving. With veth each side pays for its own receiving, on its
#     own cores. Needs root (ip netns); the namespaces go when the sourcing script exits.
# Sets IN_GW and IN_LT (command prefixes), HOST (the gateway's address), URL (the load tester's
# --url) and TRUST (the load tester's certificate options). Needs PORT, GW_CPUS and LT_CPUS.

# The RPS mask of a taskset CPU list ("0", "1", "0-1", "0,2").
rps_mask() {
  python3 -c 'import sys
m = 0
for part in sys.argv[1].split(","):
    lo, _, hi = part.partition("-")
    for c in range(int(lo), int(hi or lo) + 1):
        m |= 1 << c
print(format(m, "x"))' "$1"
}

case ${RIG:-lo} in
  lo) IN_GW=(); IN_LT=(); HOST=127.0.0.1; URL=https://localhost:$PORT; TRUST=() ;;
  veth)
    k=$((PORT % 250)); NS_GW=ghb-gw-$k; NS_LT=ghb-lt-$k; HOST=10.77.$k.1
    ip netns del $NS_GW 2>/dev/null || true; ip netns del $NS_LT 2>/dev/null || true
    ip netns add $NS_GW && ip netns add $NS_LT || exit 2
    trap 'ip netns del $NS_GW; ip netns del $NS_LT' EXIT
    ip link add ghb-g$k netns $NS_GW type veth peer name ghb-l$k netns $NS_LT || exit 2
    ip -n $NS_GW addr add $HOST/24 dev ghb-g$k && ip -n $NS_LT addr add 10.77.$k.2/24 dev ghb-l$k || exit 2
    for ns in $NS_GW $NS_LT; do ip -n $ns link set lo up || exit 2; done
    ip -n $NS_GW link set ghb-g$k up && ip -n $NS_LT link set ghb-l$k up || exit 2
    ip netns exec $NS_GW sh -c "echo $(rps_mask $GW_CPUS) > /sys/class/net/ghb-g$k/queues/rx-0/rps_cpus" || exit 2
    ip netns exec $NS_LT sh -c "echo $(rps_mask $LT_CPUS) > /sys/class/net/ghb-l$k/queues/rx-0/rps_cpus" || exit 2
    IN_GW=(ip netns exec $NS_GW); IN_LT=(ip netns exec $NS_LT); URL=https://$HOST:$PORT
    # The gateway's development certificate names localhost, not the veth address.
    TRUST=(--insecure) ;;
  *) echo "RIG is lo or veth, not $RIG" >&2; exit 2 ;;
esac
