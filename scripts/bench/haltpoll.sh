#!/bin/bash
# Runs a command with this virtual machine's idle vCPUs polling for up to NS nanoseconds before
# they halt, then puts the setting back (also when the command fails or is interrupted).
#
# On a KVM guest with the `haltpoll` cpuidle driver (cat /sys/devices/system/cpu/cpuidle/
# current_driver), an idle vCPU halts: the host takes the core back, and the next wake-up pays
# for the exit, the entry and the caches the host's other work left behind. A media shard at
# moderate load sleeps about a thousand times a second (the coalescing pause, then epoll_wait),
# so on such a guest that cost is a large share of a forwarded packet (docs/BENCHMARKS.md §3,
# "A vCPU that halts"). `guest_halt_poll_ns` is how long the idle loop may poll before it halts:
# the driver's poll limit per CPU grows towards it after idle periods shorter than it and, unless
# `guest_halt_poll_allow_shrink` is off (this script turns it off), shrinks after longer ones. So
# NS must exceed the shard's usual idle period (about a millisecond at moderate load: 2000000
# does; 200000 may leave the limit where an earlier setting grew it, or at nothing). The polling
# is idle time inside the guest (no process is charged for it), but the host sees a busy vCPU.
#
# usage: haltpoll.sh NS -- command args...   e.g.
#   haltpoll.sh 2000000 -- scripts/bench/run.sh A30 -- --meetings 30 --publishers 2 --no-simulcast
#   haltpoll.sh 0 -- ...   (halt at once, this VM's default)
# Prints, on stderr after the command, how long CPU 0 and CPU 1 spent polling and halted while it
# ran (cpuidle states POLL and haltpoll). Needs root.
set -u
NS=${1:?usage: haltpoll.sh NS -- command args...}; shift; [ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "haltpoll.sh: no command" >&2; exit 2; }
P=/sys/module/haltpoll/parameters
DRIVER=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || true)
if [ "$DRIVER" != haltpoll ] || [ ! -w $P/guest_halt_poll_ns ]; then
  echo "haltpoll.sh: needs the haltpoll cpuidle driver (here: '${DRIVER:-none}') and root" >&2
  exit 2
fi
OLD_NS=$(cat $P/guest_halt_poll_ns); OLD_SHRINK=$(cat $P/guest_halt_poll_allow_shrink)
restore() { echo "$OLD_NS" > $P/guest_halt_poll_ns; echo "$OLD_SHRINK" > $P/guest_halt_poll_allow_shrink; }
trap restore EXIT
# Microseconds each CPU has spent in each idle state: "cpu0:poll cpu0:halt cpu1:poll cpu1:halt".
idle_us() {
  for c in 0 1; do
    for s in 0 1; do cat /sys/devices/system/cpu/cpu$c/cpuidle/state$s/time 2>/dev/null || echo 0; done
  done | tr '\n' ' '
}
echo N > $P/guest_halt_poll_allow_shrink
echo "$NS" > $P/guest_halt_poll_ns
BEFORE=($(idle_us))
"$@" &
CP=$!
trap 'kill -TERM $CP 2>/dev/null; wait $CP; exit 130' INT TERM
wait $CP
RC=$?
AFTER=($(idle_us))
printf 'haltpoll.sh: guest_halt_poll_ns=%s; idle polling / halted, s: cpu0 %.1f / %.1f, cpu1 %.1f / %.1f\n' "$NS" \
  "$(( AFTER[0] - BEFORE[0] ))e-6" "$(( AFTER[1] - BEFORE[1] ))e-6" \
  "$(( AFTER[2] - BEFORE[2] ))e-6" "$(( AFTER[3] - BEFORE[3] ))e-6" >&2
exit $RC
