//! Probing a subscriber's path before a video leg steps up (issue 12), pure.
//!
//! Once a subscriber connection's estimate has dropped, a leg held below what its
//! subscriber asked for may step up again only if the path can take the next layer.
//! Switching first and watching for overuse (a *try*, `bwe::Trial`) costs loss when the
//! answer is no: the bigger layer's frames queue behind a full bottleneck before the
//! feedback says so. A probe asks first, cheaply, as libwebrtc's prober does: for
//! [`SEND`] the connection is sent at the rate the step would need ([`Cluster::target_bps`]),
//! the media already flowing plus padding made of RTX copies of packets the leg recently
//! sent (the subscriber drops them as duplicates; RFC 4588). Every packet sent in that
//! window carries the cluster's mark in the send history; the subscriber's transport-wide
//! feedback says when each arrived, and the rate they arrived at
//! ([`Cluster::outcome`], libwebrtc's `ProbeBitrateEstimator`) is what the path took.
//! Only then does the leg switch (and the switch is still watched as a try).
//!
//! A short cluster cannot fill a router's queue: on a 300 kbit/s path, probing at
//! 700 kbit/s for 40 ms queues about 2 KB more than the link drains, some 55 ms of
//! queueing, which a router's buffer holds (the test scenario's holds 250 ms); a try of
//! a 700 kbit/s layer overfills it for as long as the feedback takes to say so. No clock
//! and no IO: every input carries `now`.

use std::time::{Duration, Instant};

/// How long a cluster is sent.
pub const SEND: Duration = Duration::from_millis(40);
/// A cluster sends at least this many packets (libwebrtc: 5), for a rate to be measured.
pub const MIN_PACKETS: u32 = 5;
/// Nor does it send longer than this, packets or not.
pub const MAX_SEND: Duration = Duration::from_millis(100);
/// Padding may run ahead of the target rate by this much (the shard sends it on its
/// turns, about every 10 ms; the first turn sends a burst's worth at once).
pub const AHEAD: Duration = Duration::from_millis(10);
/// Feedback on a cluster not complete this long after it stopped sending: judged on what came.
pub const WAIT: Duration = Duration::from_millis(800);
/// A share of a cluster's packets that must arrive for its rate to count (libwebrtc: 80 %).
const MIN_RECEIVED: f64 = 0.8;
/// Arriving below this share of the send rate, the path was saturated: it carries what arrived.
const SATURATED: f64 = 0.9;
/// Of a saturated path's arrival rate, this much is taken as its capacity (libwebrtc: 0.95).
const UTILISATION: f64 = 0.95;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The path carried this many bit/s.
    Rate(u64),
    /// Too little arrived (or nothing measurable): the path is no wider than it was.
    Failed,
}

/// One probe of one subscriber connection, for one leg's step up to layer `rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// Its mark in the send history (never 0: that is "no cluster").
    pub id: u16,
    pub leg: u64,
    pub rank: u8,
    /// The rate it is sent at, bit/s.
    pub target_bps: u64,
    /// What must arrive for the step up, bit/s (below the target by the headroom).
    pub need_bps: u64,
    /// The connection's estimate when it started: a probe that overuses gives it back.
    pub estimate_before: u64,
    pub started: Instant,
    sent_bytes: u64,
    sent_packets: u32,
    /// When sending stopped.
    stopped: Option<Instant>,
    reported: u32,
    received: u32,
    /// Received packets: their bytes, the earliest and latest send time (with the
    /// latest's size), the earliest and latest arrival (with the earliest's size).
    bytes: u64,
    first_sent: Option<Instant>,
    last_sent: Option<(Instant, u16)>,
    first_arrival: Option<(Duration, u16)>,
    last_arrival: Option<Duration>,
}

impl Cluster {
    pub fn new(id: u16, leg: u64, rank: u8, target_bps: u64, need_bps: u64, now: Instant) -> Self {
        Self {
            id: id.max(1),
            leg,
            rank,
            target_bps,
            need_bps,
            estimate_before: 0,
            started: now,
            sent_bytes: 0,
            sent_packets: 0,
            stopped: None,
            reported: 0,
            received: 0,
            bytes: 0,
            first_sent: None,
            last_sent: None,
            first_arrival: None,
            last_arrival: None,
        }
    }

    /// Whether packets sent `now` belong to the cluster (it stops for good once not).
    pub fn sending(&mut self, now: Instant) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < SEND || (self.sent_packets < MIN_PACKETS && elapsed < MAX_SEND) {
            return true;
        }
        self.stopped = Some(now);
        false
    }

    /// A packet of `size` bytes went out on the connection while the cluster sends
    /// (media or padding alike: the path sees both).
    pub fn sent(&mut self, size: usize) {
        self.sent_bytes += size as u64;
        self.sent_packets += 1;
    }

    /// Padding bytes to send now: what the target rate has called for since the start
    /// (and [`AHEAD`] more), less what went. 0 once it stopped.
    pub fn due(&mut self, now: Instant) -> u64 {
        if !self.sending(now) {
            return 0;
        }
        let elapsed = now.saturating_duration_since(self.started) + AHEAD;
        let owed = (self.target_bps as f64 * elapsed.as_secs_f64() / 8.0) as u64;
        let owed = if self.sent_packets < MIN_PACKETS {
            owed.max(self.sent_bytes + 1)
        } else {
            owed
        };
        owed.saturating_sub(self.sent_bytes)
    }

    /// The subscriber's report on one of the cluster's packets: sent at `sent`, `size`
    /// bytes, arrived at `arrival` on its clock (`None`: lost).
    pub fn report(&mut self, sent: Instant, size: u16, arrival: Option<Duration>) {
        self.reported += 1;
        let Some(arrival) = arrival else {
            return;
        };
        self.received += 1;
        self.bytes += u64::from(size);
        self.first_sent = Some(self.first_sent.map_or(sent, |f| f.min(sent)));
        if self.last_sent.is_none_or(|(l, _)| sent >= l) {
            self.last_sent = Some((sent, size));
        }
        if self.first_arrival.is_none_or(|(f, _)| arrival < f) {
            self.first_arrival = Some((arrival, size));
        }
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |l| l.max(arrival)));
    }

    /// What the probe found, once every packet was reported or [`WAIT`] passed after it
    /// stopped sending; `None` while feedback may still come.
    pub fn outcome(&mut self, now: Instant) -> Option<Outcome> {
        self.sending(now);
        let stopped = self.stopped?;
        let complete = self.reported >= self.sent_packets;
        if !complete && now.saturating_duration_since(stopped) < WAIT {
            return None;
        }
        Some(self.rate().map_or(Outcome::Failed, Outcome::Rate))
    }

    /// libwebrtc's estimate of a cluster: the send rate without the last packet, the
    /// arrival rate without the first; a path that delivered well below what was sent
    /// is saturated and carries [`UTILISATION`] of what arrived.
    fn rate(&self) -> Option<u64> {
        if self.sent_packets == 0 || (self.received as f64) < MIN_RECEIVED * self.sent_packets as f64 {
            return None;
        }
        if self.received < (MIN_PACKETS as f64 * MIN_RECEIVED) as u32 {
            return None;
        }
        let (first_sent, (last_sent, last_size)) = (self.first_sent?, self.last_sent?);
        let ((first_arrival, first_size), last_arrival) = (self.first_arrival?, self.last_arrival?);
        let send_interval = last_sent.saturating_duration_since(first_sent).as_secs_f64();
        let receive_interval = last_arrival.saturating_sub(first_arrival).as_secs_f64();
        if !(0.0..=1.0).contains(&send_interval)
            || !(0.0..=1.0).contains(&receive_interval)
            || send_interval <= 0.0
            || receive_interval <= 0.0
        {
            return None;
        }
        let send_bps = (self.bytes - u64::from(last_size)) as f64 * 8.0 / send_interval;
        let receive_bps = (self.bytes - u64::from(first_size)) as f64 * 8.0 / receive_interval;
        let bps = if receive_bps < SATURATED * send_bps {
            UTILISATION * receive_bps
        } else {
            send_bps.min(receive_bps)
        };
        Some(bps as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Sends a cluster through a bottleneck of `link_bps` (a FIFO, 20 ms one way, a
    /// queue of `queue` beyond which packets drop) the way the shard does: on turns
    /// every 10 ms, `due` bytes in packets of `size`; reports every packet at the end.
    /// Returns the outcome and how many packets the bottleneck dropped.
    fn probe(target_bps: u64, link_bps: f64, queue: Duration, size: usize) -> (Outcome, u32) {
        let t0 = Instant::now();
        let mut c = Cluster::new(3, 7, 2, target_bps, target_bps, t0);
        let mut busy_until = 0.0f64;
        let mut dropped = 0;
        let mut sent = Vec::new();
        let mut turn = 0u64;
        loop {
            let now = t0 + MS(10 * turn);
            let due = c.due(now);
            if !c.sending(now) {
                break;
            }
            let mut left = due as i64;
            while left > 0 {
                c.sent(size);
                left -= size as i64;
                let t = (now - t0).as_secs_f64();
                let start = busy_until.max(t);
                let arrival = if start - t > queue.as_secs_f64() {
                    dropped += 1;
                    None
                } else {
                    busy_until = start + size as f64 * 8.0 / link_bps;
                    Some(Duration::from_secs_f64(busy_until + 0.020))
                };
                sent.push((now, arrival));
            }
            turn += 1;
        }
        let end = t0 + MS(10 * turn);
        assert_eq!(c.outcome(end - MS(1)), None, "nothing reported yet");
        for (at, arrival) in sent {
            c.report(at, size as u16, arrival);
        }
        (c.outcome(end).expect("every packet reported"), dropped)
    }

    #[test]
    fn a_wide_path_carries_the_probe_rate() {
        let (outcome, dropped) = probe(1_200_000, 10_000_000.0, MS(50), 1000);
        let Outcome::Rate(bps) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(dropped, 0);
        // Bursts every 10 ms: the rate measured is within a burst of the target.
        assert!((900_000..=1_700_000).contains(&bps), "{bps}");
    }

    #[test]
    fn a_narrow_path_shows_its_capacity_and_loses_nothing() {
        let (outcome, dropped) = probe(700_000, 300_000.0, MS(100), 1000);
        let Outcome::Rate(bps) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(bps < 350_000, "saturated: about the link's 300 kbit/s, got {bps}");
        assert!(bps > 200_000, "{bps}");
        assert_eq!(dropped, 0, "40 ms of 700 kbit/s fits a 100 ms buffer at 300 kbit/s");
    }

    #[test]
    fn a_cluster_sends_its_minimum_even_at_a_low_rate_then_stops() {
        let t0 = Instant::now();
        let mut c = Cluster::new(0, 1, 1, 50_000, 50_000, t0);
        assert_eq!(c.id, 1, "0 is no cluster");
        let mut packets = 0;
        for turn in 0..20 {
            let now = t0 + MS(10 * turn);
            let mut due = c.due(now);
            while due > 0 {
                c.sent(1000);
                packets += 1;
                due = due.saturating_sub(1000);
            }
        }
        assert_eq!(packets, MIN_PACKETS, "at least five, then no more after SEND");
        assert!(!c.sending(t0 + MS(200)));
        assert_eq!(c.due(t0 + MS(300)), 0);
    }

    #[test]
    fn too_few_arrivals_or_no_feedback_fail() {
        let t0 = Instant::now();
        let mut c = Cluster::new(1, 1, 1, 1_000_000, 1_000_000, t0);
        for i in 0..10 {
            c.sent(1000);
            let arrival = (i < 7).then(|| MS(100 + i));
            c.report(t0 + MS(i), 1000, arrival);
        }
        assert_eq!(c.outcome(t0 + MS(50)), Some(Outcome::Failed), "7 of 10 arrived");
        let mut silent = Cluster::new(2, 1, 1, 1_000_000, 1_000_000, t0);
        for _ in 0..10 {
            silent.sent(1000);
        }
        assert_eq!(silent.outcome(t0 + SEND), None, "stopped; feedback may come");
        assert_eq!(silent.outcome(t0 + SEND + WAIT - MS(1)), None);
        assert_eq!(silent.outcome(t0 + SEND + WAIT), Some(Outcome::Failed));
        // All arriving at one instant: no interval to measure.
        let mut flat = Cluster::new(3, 1, 1, 1_000_000, 1_000_000, t0);
        for i in 0..6 {
            flat.sent(1000);
            flat.report(t0 + MS(i), 1000, Some(MS(100)));
        }
        assert_eq!(flat.outcome(t0 + SEND), Some(Outcome::Failed));
    }
}
