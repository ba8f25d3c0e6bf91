#!/usr/bin/env python3
"""The media shard's samples of a profile.sh run, summed into kinds of work.

usage: profile.py SYMBOLS [LOADTEST_JSON]
SYMBOLS: `perf report --sort sym --no-children` lines of the shard thread (self time per
symbol). With the load tester's report, each kind is also given in microseconds per forwarded
packet (its share of the gateway's CPU per forwarded packet).
"""
import json
import re
import sys

# (kind, pattern on the symbol), first match wins; kernel symbols ([k]) are split apart first.
KERNEL_WAKE = re.compile(
    r"spin_unlock_irq|finish_task_switch|schedule|futex|epoll|hrtimer|timer|wake|irq|tick|idle"
    r"|switch|pick_|enqueue_task|dequeue|update_curr|select_task"
)
USER = [
    ("SRTP crypto (ring's AES-GCM)", re.compile(r"ring_core|RingAead|aes_gcm|ghash", re.I)),
    ("SRTP framing (ours: sealer, opener)", re.compile(r"Sealer|OwnSrtp|srtp_gcm|Opener")),
    ("allocation and Bytes refcounts", re.compile(r"malloc|free|unlink_chunk|shared_drop|bytes::")),
    ("memcpy", re.compile(r"memmove|memcpy|memset")),
    ("rtc's interceptor chain (rtc_interceptor: its timers, RTCP, rtc's TWCC and reports before session 23)", re.compile(r"rtc_interceptor")),
    ("receive side (own inbound: stream lookup, receipts, NACK generator, layer RTX)", re.compile(r"own_inbound|receipts|nack::|layer_rtx")),
    ("rtc, other", re.compile(r"^<?rtc|rtc_|sansio")),
    ("tokio", re.compile(r"tokio|mio::|PollFn")),
    ("clock reads and Instant arithmetic", re.compile(r"Instant|Timespec|clock_gettime|SystemTime")),
    ("hashing and sorting", re.compile(r"hash::|sort::")),
    ("media room (forward, legs, stamps)", re.compile(r"media_room|forward::|retransmit|bwe::|sender_reports|temporal|speaker")),
    ("peers and shard (routing, delivery, timers)", re.compile(r"gatehouse::sfu::(peers|shard|timers|udp|demux)|hashbrown|Delivery")),
    ("gatehouse, other", re.compile(r"gatehouse")),
    ("UDP system call wrappers (quinn-udp, socket2, libc)", re.compile(r"quinn_udp|socket2|recvmmsg|sendmmsg|epoll_wait")),
]


def kind_of(kernel: bool, sym: str) -> str:
    if kernel:
        return "kernel: wake-ups and scheduling" if KERNEL_WAKE.search(sym) else "kernel: UDP send and receive"
    for kind, pattern in USER:
        if pattern.search(sym):
            return kind
    return "other"


def main() -> None:
    kinds: dict[str, float] = {}
    for line in open(sys.argv[1]):
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*)", line)
        if m:
            k = kind_of(m.group(2) == "k", m.group(3))
            kinds[k] = kinds.get(k, 0.0) + float(m.group(1))
    total = sum(kinds.values()) or 1.0
    us = None
    if len(sys.argv) > 2:
        us = json.load(open(sys.argv[2])).get("server_us_per_forwarded_packet")
    head = f"{'share':>6}  {'us/fwd':>6}  kind" if us else f"{'share':>6}  kind"
    print(head + (f"   (whole gateway: {us:.2f} us per forwarded packet)" if us else ""))
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        share = v / total
        print(f"{share * 100:5.1f}%  {share * us:6.2f}  {k}" if us else f"{share * 100:5.1f}%  {k}")


if __name__ == "__main__":
    main()
