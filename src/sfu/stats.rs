//! Media-plane counters: plain atomics, written by the shard threads on the hot
//! path and read by anyone (metrics, the debug endpoint, tests) without a lock.
//!
//! There is one [`Counters`] per shard and one per meeting; the shard bumps both
//! for every event, so a meeting's numbers and the totals agree. Each is written
//! by one shard thread only (no cache line bounces between cores on the hot
//! path); the process totals are the sum over shards, taken when read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A set of monotonic counters plus the `tracks` gauge.
#[derive(Debug, Default)]
pub struct Counters {
    /// Published tracks currently live (gauge).
    pub tracks: AtomicU64,
    /// RTP packets written to a subscriber leg.
    pub forwarded_packets: AtomicU64,
    /// RTP payload plus header bytes written to subscriber legs.
    pub forwarded_bytes: AtomicU64,
    /// Packets we chose not to forward or could not deliver: garbage datagrams,
    /// rejected writes, send-queue overflows, the test drop hook.
    pub dropped_packets: AtomicU64,
    /// Datagrams on the media port that named no connection (a subset of `dropped_packets`).
    pub garbage_datagrams: AtomicU64,
    /// Datagrams from a connection's own address (or naming it) that failed the
    /// demultiplexer's screen: dropped before `rtc` (a subset of `dropped_packets`). Shard
    /// counters only, like `garbage_datagrams`; per connection in the debug snapshot.
    pub junk_datagrams: AtomicU64,
    /// RTCP NACK packets received from subscribers.
    pub nacks: AtomicU64,
    /// Keyframe requests (PLI or FIR) received from subscribers.
    pub keyframe_requests_received: AtomicU64,
    /// PLIs sent to publishers (after throttling).
    pub plis_sent: AtomicU64,
    /// REMBs sent to publishers without simulcast (`remb`).
    pub rembs_sent: AtomicU64,
    /// Sequence numbers subscribers asked to have resent (in their NACKs).
    pub nacked_packets: AtomicU64,
    /// Packets resent to subscribers from the retransmission cache (RTX or plain).
    pub retransmitted_packets: AtomicU64,
    /// Of `retransmitted_packets`, those sent as RTX (RFC 4588).
    pub retransmitted_rtx: AtomicU64,
    /// NACKed packets the cache could not serve (too old, overwritten, never sent).
    pub unservable_nacks: AtomicU64,
    /// RTCP NACK packets sent to publishers.
    pub nacks_sent: AtomicU64,
    /// Sequence numbers asked of publishers (a packet asked twice counts twice).
    pub nack_requests_sent: AtomicU64,
    /// Publisher packets that arrived again after arriving once: not forwarded again.
    pub duplicate_packets: AtomicU64,
    /// Gaps in publishers' NACK-capable streams, in packets (lost on the way in, or late).
    pub missing_packets: AtomicU64,
    /// Subscriber legs moved from one simulcast layer to another (on a keyframe of the new one).
    pub layer_switches: AtomicU64,
    /// Packets of frames above a subscriber leg's temporal cap, not sent to it (`temporal`).
    pub temporal_drops: AtomicU64,
    /// Retransmissions of simulcast layers received (RTX named by `repaired-rtp-stream-id`)
    /// and turned back into their layers' packets (`layer_rtx`).
    pub layer_rtx_repaired: AtomicU64,
    /// Drops of a subscriber connection's bandwidth estimate (overuse or loss seen in its
    /// transport-wide congestion control feedback; `bwe`), each fitting its video legs under it.
    pub bwe_drops: AtomicU64,
    /// Probes of a subscriber's path before a leg steps up (`probe`), and those that found
    /// room for the step.
    pub bwe_probes: AtomicU64,
    pub bwe_probes_passed: AtomicU64,
    /// Padding packets sent in probes (RTX copies of packets already sent).
    pub bwe_probe_packets: AtomicU64,
    /// Packets of local publishers handed to another shard holding part of their meeting
    /// (`relay`), and those lost because that shard's queue was full. Shard counters only.
    pub relayed_packets: AtomicU64,
    pub relay_drops: AtomicU64,
    /// Publishers' packets opened by the shard itself and fed to the connection's receive
    /// interceptors, past `rtc`'s read pipeline (`own_inbound`). Shard counters only.
    pub opened_packets: AtomicU64,
    /// Pauses a busy shard took to let datagrams gather (`coalesce`), and the datagrams the
    /// turns after them read. Shard counters only.
    pub coalesce_pauses: AtomicU64,
    pub coalesced_datagrams: AtomicU64,
    /// Transport-wide congestion control feedback packets received from subscribers (what
    /// `bwe` estimates their downlinks from). Shard counters only.
    pub twcc_feedback_received: AtomicU64,
    /// Runs of the WebRTC stack's timers (`rtc`'s `handle_timeout`, each a sweep of its whole
    /// pipeline), by the shard's timer. Shard counters only.
    pub rtc_timeouts: AtomicU64,
    /// ICE connected to DTLS connected (keys ready), per peer connection.
    pub ice_to_dtls: LatencyHistogram,
    /// A participant entering the call to the first media packet written to it.
    pub join_to_first_packet: LatencyHistogram,
}

/// Upper bounds of the media plane's latency histograms, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram of plain atomics (one writer: its shard), in the buckets of
/// [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); past the last bound they only count.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// A point-in-time copy of a [`LatencyHistogram`], or the sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// Observations per bucket of [`LATENCY_BUCKETS`] (not cumulative).
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            Counters::add(&self.buckets[i], 1);
        }
        Counters::add(&self.count, 1);
        Counters::add(&self.sum_us, u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = [0; LATENCY_BUCKETS.len()];
        for (out, b) in buckets.iter_mut().zip(&self.buckets) {
            *out = b.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl HistogramSnapshot {
    /// Adds another histogram's observations (the process total over shards).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }

    /// (upper bound, observations at or below it), as Prometheus histograms count.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BUCKETS.iter().zip(&self.buckets).scan(0, |total, (&le, &n)| {
            *total += n;
            Some((le, *total))
        })
    }
}

/// The media plane's latency histograms, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latencies {
    pub ice_to_dtls: HistogramSnapshot,
    pub join_to_first_packet: HistogramSnapshot,
}

impl Latencies {
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Latencies {
        let mut total = Latencies::default();
        for c in all {
            total.ice_to_dtls.merge(&c.ice_to_dtls.snapshot());
            total.join_to_first_packet.merge(&c.join_to_first_packet.snapshot());
        }
        total
    }
}

/// A point-in-time copy of [`Counters`], for JSON and assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    pub tracks: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
    pub garbage_datagrams: u64,
    pub junk_datagrams: u64,
    pub nacks: u64,
    pub keyframe_requests_received: u64,
    pub plis_sent: u64,
    pub rembs_sent: u64,
    pub nacked_packets: u64,
    pub retransmitted_packets: u64,
    pub retransmitted_rtx: u64,
    pub unservable_nacks: u64,
    pub nacks_sent: u64,
    pub nack_requests_sent: u64,
    pub duplicate_packets: u64,
    pub missing_packets: u64,
    pub layer_switches: u64,
    pub temporal_drops: u64,
    pub layer_rtx_repaired: u64,
    pub bwe_drops: u64,
    pub bwe_probes: u64,
    pub bwe_probes_passed: u64,
    pub bwe_probe_packets: u64,
    pub relayed_packets: u64,
    pub relay_drops: u64,
    pub opened_packets: u64,
    pub coalesce_pauses: u64,
    pub coalesced_datagrams: u64,
    pub twcc_feedback_received: u64,
    pub rtc_timeouts: u64,
}

impl Counters {
    /// Adds `n` to a counter. Relaxed: these are statistics, nothing synchronises on them.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Decrements the `tracks` gauge without wrapping below zero.
    pub fn track_removed(&self) {
        let _ = self
            .tracks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// The sum of several counter sets (the process total over shards).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> CountersSnapshot {
        all.into_iter().fold(CountersSnapshot::default(), |acc, c| {
            let s = c.snapshot();
            CountersSnapshot {
                tracks: acc.tracks + s.tracks,
                forwarded_packets: acc.forwarded_packets + s.forwarded_packets,
                forwarded_bytes: acc.forwarded_bytes + s.forwarded_bytes,
                dropped_packets: acc.dropped_packets + s.dropped_packets,
                garbage_datagrams: acc.garbage_datagrams + s.garbage_datagrams,
                junk_datagrams: acc.junk_datagrams + s.junk_datagrams,
                nacks: acc.nacks + s.nacks,
                keyframe_requests_received: acc.keyframe_requests_received + s.keyframe_requests_received,
                plis_sent: acc.plis_sent + s.plis_sent,
                rembs_sent: acc.rembs_sent + s.rembs_sent,
                nacked_packets: acc.nacked_packets + s.nacked_packets,
                retransmitted_packets: acc.retransmitted_packets + s.retransmitted_packets,
                retransmitted_rtx: acc.retransmitted_rtx + s.retransmitted_rtx,
                unservable_nacks: acc.unservable_nacks + s.unservable_nacks,
                nacks_sent: acc.nacks_sent + s.nacks_sent,
                nack_requests_sent: acc.nack_requests_sent + s.nack_requests_sent,
                duplicate_packets: acc.duplicate_packets + s.duplicate_packets,
                missing_packets: acc.missing_packets + s.missing_packets,
                layer_switches: acc.layer_switches + s.layer_switches,
                temporal_drops: acc.temporal_drops + s.temporal_drops,
                layer_rtx_repaired: acc.layer_rtx_repaired + s.layer_rtx_repaired,
                bwe_drops: acc.bwe_drops + s.bwe_drops,
                bwe_probes: acc.bwe_probes + s.bwe_probes,
                bwe_probes_passed: acc.bwe_probes_passed + s.bwe_probes_passed,
                bwe_probe_packets: acc.bwe_probe_packets + s.bwe_probe_packets,
                relayed_packets: acc.relayed_packets + s.relayed_packets,
                relay_drops: acc.relay_drops + s.relay_drops,
                opened_packets: acc.opened_packets + s.opened_packets,
                coalesce_pauses: acc.coalesce_pauses + s.coalesce_pauses,
                coalesced_datagrams: acc.coalesced_datagrams + s.coalesced_datagrams,
                twcc_feedback_received: acc.twcc_feedback_received + s.twcc_feedback_received,
                rtc_timeouts: acc.rtc_timeouts + s.rtc_timeouts,
            }
        })
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            tracks: get(&self.tracks),
            forwarded_packets: get(&self.forwarded_packets),
            forwarded_bytes: get(&self.forwarded_bytes),
            dropped_packets: get(&self.dropped_packets),
            garbage_datagrams: get(&self.garbage_datagrams),
            junk_datagrams: get(&self.junk_datagrams),
            nacks: get(&self.nacks),
            keyframe_requests_received: get(&self.keyframe_requests_received),
            plis_sent: get(&self.plis_sent),
            rembs_sent: get(&self.rembs_sent),
            nacked_packets: get(&self.nacked_packets),
            retransmitted_packets: get(&self.retransmitted_packets),
            retransmitted_rtx: get(&self.retransmitted_rtx),
            unservable_nacks: get(&self.unservable_nacks),
            nacks_sent: get(&self.nacks_sent),
            nack_requests_sent: get(&self.nack_requests_sent),
            duplicate_packets: get(&self.duplicate_packets),
            missing_packets: get(&self.missing_packets),
            layer_switches: get(&self.layer_switches),
            temporal_drops: get(&self.temporal_drops),
            layer_rtx_repaired: get(&self.layer_rtx_repaired),
            bwe_drops: get(&self.bwe_drops),
            bwe_probes: get(&self.bwe_probes),
            bwe_probes_passed: get(&self.bwe_probes_passed),
            bwe_probe_packets: get(&self.bwe_probe_packets),
            relayed_packets: get(&self.relayed_packets),
            relay_drops: get(&self.relay_drops),
            opened_packets: get(&self.opened_packets),
            coalesce_pauses: get(&self.coalesce_pauses),
            coalesced_datagrams: get(&self.coalesced_datagrams),
            twcc_feedback_received: get(&self.twcc_feedback_received),
            rtc_timeouts: get(&self.rtc_timeouts),
        }
    }
}

/// Bumps the same counter in the meeting's and its shard's [`Counters`].
#[derive(Debug, Clone)]
pub struct StatsPair {
    pub meeting: std::sync::Arc<Counters>,
    pub shard: std::sync::Arc<Counters>,
}

impl StatsPair {
    #[inline]
    pub fn add(&self, pick: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        Counters::add(pick(&self.meeting), n);
        Counters::add(pick(&self.shard), n);
    }

    pub fn track_removed(&self) {
        self.meeting.track_removed();
        self.shard.track_removed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pair_bumps_both_and_gauge_does_not_wrap() {
        let pair = StatsPair {
            meeting: Arc::default(),
            shard: Arc::default(),
        };
        pair.add(|c| &c.forwarded_packets, 3);
        pair.add(|c| &c.tracks, 1);
        pair.track_removed();
        pair.track_removed();
        assert_eq!(pair.meeting.snapshot().forwarded_packets, 3);
        assert_eq!(pair.shard.snapshot().forwarded_packets, 3);
        assert_eq!(pair.shard.snapshot().tracks, 0);
    }

    #[test]
    fn histograms_bucket_sum_and_merge() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(80));
        h.observe(Duration::from_millis(80));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 60.163).abs() < 1e-6);
        let cumulative: Vec<(f64, u64)> = s.cumulative().collect();
        assert_eq!(cumulative[0], (0.005, 1));
        assert_eq!(cumulative[4], (0.1, 3));
        assert_eq!(
            cumulative.last(),
            Some(&(30.0, 3)),
            "past the last bound only the count has it"
        );
        let a = Counters::default();
        let b = Counters::default();
        a.ice_to_dtls.observe(Duration::from_millis(7));
        b.ice_to_dtls.observe(Duration::from_millis(7));
        b.join_to_first_packet.observe(Duration::from_millis(400));
        let total = Latencies::sum([&a, &b]);
        assert_eq!(total.ice_to_dtls.count, 2);
        assert_eq!(total.ice_to_dtls.buckets[1], 2);
        assert_eq!(total.join_to_first_packet.buckets[6], 1);
    }
}
