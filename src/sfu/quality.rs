//! Connection quality per participant (issue 12), pure: `excellent`, `good`, `poor` or
//! `lost`, from what the gateway measures of the participant's two links. No clock and no
//! sockets: every input carries `now`.
//!
//! - Uplink, what the gateway receives from the participant: a [`Reception`] per published
//!   stream counts the packets that arrived against the sequence numbers seen (loss after
//!   repair: a retransmission that fills a gap counts as arrived) and keeps the RFC 3550
//!   interarrival jitter.
//! - Downlink, what the participant receives from the gateway: its receiver reports (loss
//!   fraction, jitter, and the round-trip time from LSR/DLSR, [`rtt_of`]) and its
//!   transport-wide congestion control feedback (loss), gathered by a [`Downlink`].
//! - Video reduced: how many simulcast layers its legs forward below the layer it asked for,
//!   because its bandwidth estimate caps them.
//! - Silence: how long since its expected media or RTCP last arrived.
//!
//! Each evaluation ([`Params::evaluate_every`], on the shard's tick) turns one window of
//! that into a score from 0 to 100, the way LiveKit's connection quality does (a simplified
//! E-model, the ITU-T R-factor's scale): 100, less a delay effect (effective delay = RTT/2 +
//! 2 x jitter; 1 point per 40 ms up to 160 ms, then 1 per 10 ms), less
//! [`Params::loss_weight`] points per percent lost, on each link; less
//! [`Params::layer_weight`] points per video layer missed (and at least enough to be `poor`
//! when video is down to its smallest layer while more was asked for). The lowest of the
//! three is smoothed, falling fast and rising slowly ([`Params::fall`], [`Params::rise`]),
//! and mapped to a level: above 80 `excellent`, above 40 `good`, else `poor`. A level is
//! left upward only once the score clears its threshold by [`Params::hysteresis`], so a
//! score hovering at a boundary does not flap; `lost` comes at once when everything expected
//! has been silent for [`Params::lost_after`], and ends with the first sign of life. A change
//! for the worse is announced at once (the person should know now); one for the better at
//! least [`Params::min_gap`] after the previous announcement (a change inside it waits, and
//! one undone inside it is never announced), so a link that wavers does not flap.

use std::time::{Duration, Instant};

use gatehouse_signaling::protocol::ConnectionQuality;

/// The evaluator's tuning. [`Params::default`] is what the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// How often participants are evaluated (the window of each measurement).
    pub evaluate_every: Duration,
    /// Score points per percent of packets lost (LiveKit weighs video loss about so).
    pub loss_weight: f64,
    /// Score points per simulcast layer missed (LiveKit: 35, "each layer missed drops a level").
    pub layer_weight: f64,
    /// Smoothing factor of a falling score (the new window's share).
    pub fall: f64,
    /// ... and of a rising one: slower, a link must prove itself.
    pub rise: f64,
    /// A level is left upward only at its upper threshold plus this many points.
    pub hysteresis: f64,
    /// Everything expected silent this long: `lost`; one direction silent this long: at best `poor`.
    pub lost_after: Duration,
    /// An improvement is announced at least this long after the previous announcement.
    pub min_gap: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            evaluate_every: Duration::from_secs(1),
            loss_weight: 5.0,
            layer_weight: 35.0,
            fall: 0.7,
            rise: 0.4,
            hysteresis: 5.0,
            lost_after: Duration::from_secs(4),
            min_gap: Duration::from_secs(2),
        }
    }
}

/// Above this score: `excellent`.
pub const EXCELLENT_ABOVE: f64 = 80.0;
/// Above this score: `good`; at or below: `poor`.
pub const GOOD_ABOVE: f64 = 40.0;
/// The score of video down to its smallest layer while more was asked for: `poor`.
const SMALLEST_LAYER_SCORE: f64 = 30.0;
/// The score of a participant one of whose expected directions is silent.
const HALF_SILENT_SCORE: f64 = 30.0;
/// The score never goes below this (it must be able to climb back in a few windows).
const MIN_SCORE: f64 = 20.0;

/// One participant's links over one evaluation window. `None` where nothing was measured
/// (nothing published, nothing received, no report yet): it costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Share (0 to 1) of the packets it sent that never reached the gateway.
    pub uplink_loss: Option<f64>,
    /// The interarrival jitter of what it sends, ms.
    pub uplink_jitter_ms: Option<f64>,
    /// Share (0 to 1) of what the gateway sent it that was lost on the way.
    pub downlink_loss: Option<f64>,
    /// The jitter it reports of what it receives, ms.
    pub downlink_jitter_ms: Option<f64>,
    /// Round-trip time between the gateway and it, ms.
    pub rtt_ms: Option<f64>,
    /// The most video layers any of its legs forwards below what it asked for.
    pub layers_missed: u8,
    /// Some leg of it forwards the track's smallest layer while it asked for a higher one.
    pub smallest_layer: bool,
    /// How long the most recently heard and the least recently heard of its expected
    /// directions (media from its publisher connection, RTCP from its subscriber
    /// connection) have been silent; `None` when nothing is expected of it.
    pub silent: Option<(Duration, Duration)>,
}

/// The delay effect of the E-model as LiveKit simplifies it.
fn delay_effect(rtt_ms: f64, jitter_ms: f64) -> f64 {
    let effective = rtt_ms / 2.0 + 2.0 * jitter_ms;
    if effective <= 160.0 {
        effective / 40.0
    } else {
        (effective - 120.0) / 10.0
    }
}

impl Sample {
    /// One link's score: 100 less its delay and loss effects, at least 0.
    fn link_score(loss: Option<f64>, jitter_ms: Option<f64>, rtt_ms: Option<f64>, params: &Params) -> f64 {
        // Unknown (or not a number) costs nothing.
        let known = |x: Option<f64>| x.filter(|x| !x.is_nan()).unwrap_or(0.0);
        let delay = delay_effect(known(rtt_ms).max(0.0), known(jitter_ms).max(0.0));
        let loss = known(loss).clamp(0.0, 1.0) * 100.0 * params.loss_weight;
        (100.0 - delay - loss).max(0.0)
    }

    /// This window's score (0 to 100), before smoothing, and whether the participant is lost.
    pub fn score(&self, params: &Params) -> (f64, bool) {
        if let Some((shortest, longest)) = self.silent {
            if shortest >= params.lost_after {
                return (0.0, true);
            }
            if longest >= params.lost_after {
                return (HALF_SILENT_SCORE, false);
            }
        }
        // The round-trip time is measured on the downlink; the path is the same both ways.
        let up = Self::link_score(self.uplink_loss, self.uplink_jitter_ms, self.rtt_ms, params);
        let down = Self::link_score(self.downlink_loss, self.downlink_jitter_ms, self.rtt_ms, params);
        let mut layers = (100.0 - params.layer_weight * f64::from(self.layers_missed)).max(0.0);
        if self.smallest_layer {
            layers = layers.min(SMALLEST_LAYER_SCORE);
        }
        (up.min(down).min(layers), false)
    }
}

/// The level of a score, leaving `current` upward only past a threshold plus `hysteresis`.
pub fn level(score: f64, current: ConnectionQuality, hysteresis: f64) -> ConnectionQuality {
    let plain = |s: f64| {
        if s > EXCELLENT_ABOVE {
            ConnectionQuality::Excellent
        } else if s > GOOD_ABOVE {
            ConnectionQuality::Good
        } else {
            ConnectionQuality::Poor
        }
    };
    let down = plain(score);
    if down <= current || current == ConnectionQuality::Lost {
        return down;
    }
    // Upward: only as far as the score clears with the margin.
    plain(score - hysteresis).max(current)
}

/// What to tell about a participant: its level and whether its video is reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub quality: ConnectionQuality,
    pub video_reduced: bool,
}

impl Verdict {
    /// Whether this is worse than `other`: a lower level, or video newly reduced at the same one.
    pub fn is_worse_than(self, other: Verdict) -> bool {
        self.quality < other.quality || (self.quality == other.quality && self.video_reduced && !other.video_reduced)
    }

    /// What clients assume before anything is said.
    pub const ASSUMED: Self = Self {
        quality: ConnectionQuality::Excellent,
        video_reduced: false,
    };
}

/// One participant's quality over time: the smoothed score, its level, and what was
/// last announced. See the module documentation.
#[derive(Debug, Clone)]
pub struct Assessment {
    score: f64,
    current: Verdict,
    announced: Verdict,
    announced_at: Option<Instant>,
}

impl Default for Assessment {
    fn default() -> Self {
        Self {
            score: 100.0,
            current: Verdict::ASSUMED,
            announced: Verdict::ASSUMED,
            announced_at: None,
        }
    }
}

impl Assessment {
    /// The smoothed score (0 to 100).
    pub fn score(&self) -> f64 {
        self.score
    }

    /// The level as it stands (announced or waiting for [`Params::min_gap`]).
    pub fn current(&self) -> Verdict {
        self.current
    }

    /// What was last announced ([`Verdict::ASSUMED`] before anything was).
    pub fn announced(&self) -> Verdict {
        self.announced
    }

    /// One window's sample. Returns the verdict when it must be announced now.
    pub fn update(&mut self, sample: &Sample, now: Instant, params: &Params) -> Option<Verdict> {
        let (raw, lost) = sample.score(params);
        let video_reduced = sample.layers_missed > 0 || sample.smallest_layer;
        let quality = if lost {
            ConnectionQuality::Lost
        } else {
            if self.current.quality == ConnectionQuality::Lost {
                // Back: the first window after an outage stands on its own.
                self.score = raw;
            } else {
                let factor = if raw < self.score { params.fall } else { params.rise };
                self.score = factor * raw + (1.0 - factor) * self.score;
            }
            self.score = self.score.clamp(MIN_SCORE, 100.0);
            let from = match self.current.quality {
                ConnectionQuality::Lost => ConnectionQuality::Poor,
                q => q,
            };
            level(self.score, from, params.hysteresis)
        };
        self.current = Verdict { quality, video_reduced };
        if self.current == self.announced {
            return None;
        }
        if !self.current.is_worse_than(self.announced)
            && self
                .announced_at
                .is_some_and(|at| now.saturating_duration_since(at) < params.min_gap)
        {
            return None;
        }
        self.announced = self.current;
        self.announced_at = Some(now);
        Some(self.current)
    }
}

/// What the gateway receives on one published stream (a layer), for the uplink's loss
/// and jitter. Fed every packet that is not a duplicate; read once per window. Loss is
/// counted as RFC 3550 counts it: packets the sequence numbers said to expect less those
/// that arrived, so a retransmission that fills an earlier window's gap makes up for it.
#[derive(Debug, Clone, Default)]
pub struct Reception {
    /// RTP clock ticks per second.
    clock_rate: u32,
    /// The lowest and highest sequence numbers seen, extended with their wrap count.
    first: Option<u64>,
    highest: u64,
    /// Packets that arrived.
    received: u64,
    /// Expected and received at the end of the last window.
    at_last: (u64, u64),
    /// RFC 3550 interarrival jitter, in clock ticks, and the last in-order packet's
    /// relative transit time (arrival in ticks since `origin` less its timestamp).
    jitter: f64,
    last_transit: Option<i64>,
    origin: Option<Instant>,
    /// When the last in-order packet arrived: after a pause (a muted or stopped sender) the
    /// next packet's transit starts afresh instead of counting the pause as jitter.
    last_arrival: Option<Instant>,
}

/// A pause longer than this between packets of a stream is no jitter.
const JITTER_PAUSE: Duration = Duration::from_secs(1);

/// A window of one stream's reception.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Received {
    /// Packets its sequence numbers said to expect, and how many of them did not arrive.
    pub expected: u64,
    pub lost: u64,
    /// Its interarrival jitter, ms.
    pub jitter_ms: f64,
}

impl Reception {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            ..Self::default()
        }
    }

    /// A packet with sequence number `seq` and RTP timestamp `timestamp` arrived `now`.
    pub fn packet(&mut self, seq: u16, timestamp: u32, now: Instant) {
        self.received += 1;
        let Some(first) = self.first else {
            // The first cycle is 1, so that a packet from just before the first one extends below it.
            let ext = u64::from(seq) + (1 << 16);
            (self.first, self.highest) = (Some(ext), ext);
            self.transit(timestamp, now);
            return;
        };
        // The extension of `seq` nearest to the highest seen.
        let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        let ext = (self.highest as i64 + delta).max(0) as u64;
        if ext < first {
            self.first = Some(ext);
        }
        if ext <= self.highest {
            // Late or retransmitted: it fills a gap, and its transit says nothing of jitter.
            return;
        }
        self.highest = ext;
        self.transit(timestamp, now);
    }

    fn transit(&mut self, timestamp: u32, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let arrival = (now.saturating_duration_since(origin).as_secs_f64() * f64::from(self.clock_rate)) as i64;
        let transit = arrival - i64::from(timestamp);
        let paused = self
            .last_arrival
            .is_some_and(|at| now.saturating_duration_since(at) > JITTER_PAUSE);
        self.last_arrival = Some(now);
        if let Some(last) = self.last_transit
            && !paused
        {
            // The difference taken modulo 2^32, as the timestamps wrap.
            let d = (transit - last) as i32;
            self.jitter += (f64::from(d.unsigned_abs()) - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// The window since the last call: what was expected, lost, and the jitter now.
    /// `None` when nothing arrived in it.
    pub fn take_window(&mut self) -> Option<Received> {
        let first = self.first?;
        let expected_total = self.highest + 1 - first;
        let (expected_before, received_before) = self.at_last;
        if self.received == received_before {
            return None;
        }
        self.at_last = (expected_total, self.received);
        let expected = expected_total.saturating_sub(expected_before);
        let received = self.received - received_before;
        Some(Received {
            expected,
            lost: expected.saturating_sub(received),
            jitter_ms: self.jitter * 1000.0 / f64::from(self.clock_rate),
        })
    }
}

/// Seconds since 1900 (NTP) of a Unix time, in the compact form of RTCP's LSR and DLSR:
/// the middle 32 bits of the 64-bit timestamp (16 bits of seconds, 16 of fraction).
pub fn ntp_compact(since_unix_epoch: Duration) -> u32 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = since_unix_epoch.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 16) / 1_000_000_000;
    (((secs & 0xFFFF) << 16) | frac) as u32
}

/// The round-trip time a reception report says (RFC 3550 §6.4.1): now less the last
/// sender report's time (`lsr`) less how long the receiver held it (`dlsr`), all in
/// 1/65536 s. `None` before any sender report (`lsr` 0) or for a nonsensical result.
pub fn rtt_of(now_compact: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let rtt = now_compact.wrapping_sub(lsr).wrapping_sub(dlsr);
    // More than a minute means a clock step or a bad report, not a path.
    if rtt > 60 << 16 {
        return None;
    }
    Some(Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536))
}

/// What one participant's receiver reports said over a window (the worst of each).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Downlink {
    loss: Option<f64>,
    jitter_ms: Option<f64>,
    rtt_ms: Option<f64>,
    /// The last round-trip time measured: reports without one keep it.
    last_rtt_ms: Option<f64>,
}

impl Downlink {
    /// One reception report: `fraction_lost` in 1/256, `jitter_ms`, and its round-trip time if known.
    pub fn report(&mut self, fraction_lost: u8, jitter_ms: f64, rtt: Option<Duration>) {
        let loss = f64::from(fraction_lost) / 256.0;
        self.loss = Some(self.loss.map_or(loss, |l| l.max(loss)));
        self.jitter_ms = Some(self.jitter_ms.map_or(jitter_ms, |j| j.max(jitter_ms)));
        if let Some(rtt) = rtt {
            let ms = rtt.as_secs_f64() * 1000.0;
            self.rtt_ms = Some(self.rtt_ms.map_or(ms, |r| r.max(ms)));
            self.last_rtt_ms = Some(ms);
        }
    }

    /// The window's loss, jitter and round-trip time (the last known one when none came in
    /// it), and a fresh window.
    pub fn take_window(&mut self) -> (Option<f64>, Option<f64>, Option<f64>) {
        (
            self.loss.take(),
            self.jitter_ms.take(),
            self.rtt_ms.take().or(self.last_rtt_ms),
        )
    }
}

/// What the media room keeps per participant for its quality between evaluations.
#[derive(Debug, Clone)]
pub struct Participant {
    pub assessment: Assessment,
    /// Its receiver reports of the window.
    pub downlink: Downlink,
    /// Its subscriber connection's congestion feedback reports counted at the last
    /// evaluation: the estimator's loss is this window's only when more came since.
    pub twcc_reports: u64,
    /// How far it has been told the news of those it should know about (itself; everyone,
    /// for staff): the room's number of the last change told (0: none yet, as on entering
    /// the call and on coming back on a new socket).
    pub told_up_to: u64,
    /// The changes up to this one happened before it was first evaluated: of those it is
    /// told only what is not the assumed state (it assumes that). Set at its first evaluation.
    pub catch_up_to: Option<u64>,
    /// The room's number of the last change of its own announced verdict (0: never changed).
    pub changed_at: u64,
    /// When it entered the call (a new value: it came back on a new socket).
    pub joined_at: Instant,
}

impl Participant {
    pub fn new(joined_at: Instant) -> Self {
        Self {
            assessment: Assessment::default(),
            downlink: Downlink::default(),
            twcc_reports: 0,
            told_up_to: 0,
            catch_up_to: None,
            changed_at: 0,
            joined_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionQuality::*;

    fn params() -> Params {
        Params::default()
    }

    fn clean() -> Sample {
        Sample {
            uplink_loss: Some(0.0),
            uplink_jitter_ms: Some(2.0),
            downlink_loss: Some(0.0),
            downlink_jitter_ms: Some(3.0),
            rtt_ms: Some(20.0),
            layers_missed: 0,
            smallest_layer: false,
            silent: Some((Duration::from_millis(20), Duration::from_millis(200))),
        }
    }

    /// Feeds `sample` every second from `start` for `windows` windows; every announcement, by window.
    fn feed(a: &mut Assessment, sample: &Sample, start: Instant, windows: u32) -> Vec<(u32, Verdict)> {
        (0..windows)
            .filter_map(|i| {
                a.update(sample, start + Duration::from_secs(u64::from(i)), &params())
                    .map(|v| (i, v))
            })
            .collect()
    }

    #[test]
    fn a_clean_link_scores_excellent_and_nothing_is_announced() {
        let (score, lost) = clean().score(&params());
        assert!(score > 95.0, "{score}");
        assert!(!lost);
        let mut a = Assessment::default();
        assert!(feed(&mut a, &clean(), Instant::now(), 10).is_empty());
        assert_eq!(a.current(), Verdict::ASSUMED);
        // Nothing measured at all costs nothing either.
        assert_eq!(Sample::default().score(&params()), (100.0, false));
    }

    #[test]
    fn the_delay_effect_follows_the_simplified_e_model() {
        assert_eq!(delay_effect(0.0, 0.0), 0.0);
        // 80 ms effective: 2 points; 160 ms: 4; beyond, 1 per 10 ms from 120.
        assert!((delay_effect(160.0, 0.0) - 2.0).abs() < 1e-9);
        assert!((delay_effect(0.0, 80.0) - 4.0).abs() < 1e-9);
        assert!((delay_effect(400.0, 0.0) - 8.0).abs() < 1e-9);
        assert!((delay_effect(1000.0, 0.0) - 38.0).abs() < 1e-9);
        // Continuous at the bend.
        assert!((delay_effect(320.0, 0.0) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn each_input_alone_can_make_a_link_good_or_poor() {
        let p = params();
        let with = |f: &dyn Fn(&mut Sample)| {
            let mut s = clean();
            f(&mut s);
            let (score, _) = s.score(&p);
            level(score, Excellent, 0.0)
        };
        assert_eq!(with(&|s| s.uplink_loss = Some(0.02)), Excellent, "2 % up: 10 points");
        assert_eq!(with(&|s| s.uplink_loss = Some(0.06)), Good, "6 % up");
        assert_eq!(with(&|s| s.downlink_loss = Some(0.06)), Good, "6 % down");
        assert_eq!(with(&|s| s.downlink_loss = Some(0.15)), Poor, "15 % down");
        assert_eq!(with(&|s| s.uplink_loss = Some(0.15)), Poor, "15 % up");
        assert_eq!(with(&|s| s.rtt_ms = Some(500.0)), Excellent, "500 ms round trip");
        assert_eq!(with(&|s| s.rtt_ms = Some(800.0)), Good, "800 ms round trip");
        assert_eq!(with(&|s| s.rtt_ms = Some(1500.0)), Poor, "1.5 s round trip");
        assert_eq!(with(&|s| s.downlink_jitter_ms = Some(200.0)), Good, "200 ms jitter");
        assert_eq!(with(&|s| s.uplink_jitter_ms = Some(400.0)), Poor, "400 ms jitter");
        assert_eq!(with(&|s| s.layers_missed = 1), Good, "one layer below the wish");
        assert_eq!(with(&|s| s.layers_missed = 2), Poor, "two layers below");
        assert_eq!(
            with(&|s| {
                s.layers_missed = 1;
                s.smallest_layer = true;
            }),
            Poor,
            "down to the smallest layer"
        );
        // Nonsense in, a bounded score out.
        assert_eq!(with(&|s| s.uplink_loss = Some(7.0)), Poor);
        assert_eq!(with(&|s| s.rtt_ms = Some(-5.0)), Excellent);
        assert_eq!(
            with(&|s| s.downlink_loss = Some(f64::NAN)),
            with(&|s| s.downlink_loss = Some(0.0))
        );
    }

    #[test]
    fn silence_of_everything_expected_is_lost_and_of_one_direction_poor() {
        let p = params();
        let silent = |shortest: u64, longest: u64| Sample {
            silent: Some((Duration::from_millis(shortest), Duration::from_millis(longest))),
            ..clean()
        };
        assert_eq!(silent(4000, 9000).score(&p), (0.0, true));
        assert_eq!(silent(3999, 9000).score(&p), (HALF_SILENT_SCORE, false));
        assert!(silent(3999, 3999).score(&p).0 > 95.0);
        // Nothing expected of it (publishes nothing, receives nothing): never lost.
        let idle = Sample {
            silent: None,
            ..clean()
        };
        assert!(!idle.score(&p).1);
    }

    #[test]
    fn lost_is_announced_at_once_and_ends_with_the_first_sign_of_life() {
        let mut a = Assessment::default();
        let t0 = Instant::now();
        let lost = Sample {
            silent: Some((Duration::from_secs(5), Duration::from_secs(5))),
            ..clean()
        };
        assert_eq!(a.update(&lost, t0, &params()).map(|v| v.quality), Some(Lost));
        // Back 3 s later: the first window stands on its own (a clean one: excellent).
        assert_eq!(
            a.update(&clean(), t0 + Duration::from_secs(3), &params()),
            Some(Verdict::ASSUMED)
        );
        // Back on a bad link: poor, not lost and not excellent.
        a.update(&lost, t0 + Duration::from_secs(6), &params());
        let bad = Sample {
            downlink_loss: Some(0.2),
            ..clean()
        };
        assert_eq!(
            a.update(&bad, t0 + Duration::from_secs(9), &params())
                .map(|v| v.quality),
            Some(Poor)
        );
    }

    #[test]
    fn a_drop_is_announced_within_two_windows_and_a_recovery_takes_longer() {
        let mut a = Assessment::default();
        let t0 = Instant::now();
        let capped = Sample {
            layers_missed: 2,
            smallest_layer: true,
            ..clean()
        };
        let said = feed(&mut a, &capped, t0, 6);
        let reduced = |quality| Verdict {
            quality,
            video_reduced: true,
        };
        // The first window says reduced (the score falls to 51: good), the second poor (36):
        // worse is told at once.
        assert_eq!(said, [(0, reduced(Good)), (1, reduced(Poor))]);
        // Recovered: back up through `good`, to `excellent` only windows later.
        let t1 = t0 + Duration::from_secs(10);
        let said = feed(&mut a, &clean(), t1, 15);
        let levels: Vec<(u32, ConnectionQuality)> = said.iter().map(|(i, v)| (*i, v.quality)).collect();
        assert_eq!(levels.len(), 2, "poor -> good -> excellent: {said:?}");
        assert_eq!(levels[0].1, Good);
        assert_eq!(levels[1].1, Excellent);
        assert!(levels[1].0 >= 3, "excellent needs a few clean windows: {said:?}");
        assert!(!said.last().unwrap().1.video_reduced);
    }

    #[test]
    fn a_score_hovering_at_a_threshold_does_not_flap() {
        // Alternating windows around 80 (loss of 3.6 % and 4.4 %: 82 and 78 before delay).
        let mut a = Assessment::default();
        let t0 = Instant::now();
        let mut said = Vec::new();
        for i in 0..60u64 {
            let loss = if i % 2 == 0 { 0.036 } else { 0.044 };
            let s = Sample {
                downlink_loss: Some(loss),
                ..clean()
            };
            if let Some(v) = a.update(&s, t0 + Duration::from_secs(i), &params()) {
                said.push((i, v.quality));
            }
        }
        assert!(said.len() <= 1, "one step at most: {said:?}");
        // And a level is only left upward past its threshold plus the margin.
        assert_eq!(level(82.0, Good, 5.0), Good);
        assert_eq!(level(86.0, Good, 5.0), Excellent);
        assert_eq!(level(79.0, Excellent, 5.0), Good, "downward at once");
        assert_eq!(level(44.0, Poor, 5.0), Poor);
        assert_eq!(level(46.0, Poor, 5.0), Good);
        assert_eq!(level(90.0, Poor, 5.0), Excellent, "two levels at once when clear");
        assert_eq!(level(30.0, Lost, 5.0), Poor);
    }

    #[test]
    fn improvements_inside_the_minimum_gap_wait_and_worsenings_do_not() {
        let mut a = Assessment::default();
        let t0 = Instant::now();
        let p = params();
        let reduced = Sample {
            layers_missed: 1,
            ..clean()
        };
        assert_eq!(
            a.update(&reduced, t0, &p),
            Some(Verdict {
                quality: Good,
                video_reduced: true
            }),
        );
        // All clear 1 s later: inside the gap, it waits...
        assert_eq!(a.update(&clean(), t0 + Duration::from_secs(1), &p), None);
        assert_eq!(a.current(), Verdict::ASSUMED);
        assert!(a.announced().video_reduced);
        // ... and goes out at the next evaluation past the gap.
        assert_eq!(
            a.update(&clean(), t0 + Duration::from_secs(2), &p),
            Some(Verdict::ASSUMED)
        );
        // Reduced again 1 s later: worse, told at once.
        assert_eq!(
            a.update(&reduced, t0 + Duration::from_secs(3), &p),
            Some(Verdict {
                quality: Good,
                video_reduced: true
            })
        );
        // An improvement undone inside the gap is never told.
        assert_eq!(a.update(&clean(), t0 + Duration::from_secs(4), &p), None);
        assert_eq!(a.current().quality, Good, "not back to excellent in one window from 73");
        assert!(!a.current().video_reduced);
        assert_eq!(a.update(&reduced, t0 + Duration::from_millis(4500), &p), None);
        assert!(a.announced().video_reduced);
    }

    #[test]
    fn worse_is_a_lower_level_or_video_newly_reduced() {
        let v = |quality, video_reduced| Verdict { quality, video_reduced };
        assert!(v(Poor, false).is_worse_than(v(Good, true)));
        assert!(v(Good, true).is_worse_than(v(Good, false)));
        assert!(v(Lost, false).is_worse_than(v(Poor, true)));
        assert!(!v(Good, false).is_worse_than(v(Good, true)));
        assert!(!v(Excellent, true).is_worse_than(v(Good, true)));
        assert!(!v(Good, true).is_worse_than(v(Good, true)));
    }

    #[test]
    fn reception_counts_loss_after_repair_across_the_wrap() {
        let t0 = Instant::now();
        let mut r = Reception::new(90_000);
        assert_eq!(r.take_window(), None, "nothing arrived");
        // 65530 .. 65535, 0 .. 13 with 2 and 5 missing: 20 expected, 2 lost.
        for (i, seq) in (65530u16..=65535).chain(0..14).enumerate() {
            if seq == 2 || seq == 5 {
                continue;
            }
            r.packet(seq, 3000 * i as u32, t0 + Duration::from_millis(33 * i as u64));
        }
        let w = r.take_window().unwrap();
        assert_eq!((w.expected, w.lost), (20, 2));
        // Seq 2 retransmitted in the next window plus 14..=23: nothing lost in it.
        r.packet(2, 0, t0 + Duration::from_secs(1));
        for seq in 14..24u16 {
            r.packet(
                seq,
                60_000 + 3000 * u32::from(seq),
                t0 + Duration::from_millis(700 + 33 * u64::from(seq)),
            );
        }
        let w = r.take_window().unwrap();
        assert_eq!(w.lost, 0, "{w:?}");
        // A duplicate-free reordering is no loss either.
        for seq in [25u16, 24, 26] {
            r.packet(seq, 0, t0 + Duration::from_secs(2));
        }
        assert_eq!(r.take_window().unwrap().lost, 0);
        // A first packet far into the sequence space does not count the space before it.
        let mut r = Reception::new(48_000);
        r.packet(40_000, 0, t0);
        r.packet(40_001, 960, t0 + Duration::from_millis(20));
        let w = r.take_window().unwrap();
        assert_eq!((w.expected, w.lost), (2, 0));
        assert_eq!(r.take_window(), None, "nothing since");
    }

    #[test]
    fn reception_jitter_is_zero_for_a_steady_stream_and_grows_with_uneven_arrival() {
        let t0 = Instant::now();
        let mut steady = Reception::new(48_000);
        let mut uneven = Reception::new(48_000);
        for i in 0..200u32 {
            let ts = 960 * i;
            steady.packet(i as u16, ts, t0 + Duration::from_millis(20 * u64::from(i)));
            // Every other packet 30 ms late.
            let late = if i % 2 == 1 { 30 } else { 0 };
            uneven.packet(i as u16, ts, t0 + Duration::from_millis(20 * u64::from(i) + late));
        }
        let steady = steady.take_window().unwrap().jitter_ms;
        let uneven = uneven.take_window().unwrap().jitter_ms;
        assert!(steady < 0.1, "{steady}");
        assert!((25.0..=31.0).contains(&uneven), "{uneven}");
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        let now = Duration::from_secs(1_700_000_000) + Duration::from_millis(500);
        let sent = now - Duration::from_millis(250);
        let lsr = ntp_compact(sent);
        // The receiver held it 200 ms: 50 ms on the wire both ways.
        let dlsr = (0.2 * 65536.0) as u32;
        let rtt = rtt_of(ntp_compact(now), lsr, dlsr).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(50)) < Duration::from_millis(1),
            "{rtt:?}"
        );
        assert_eq!(rtt_of(ntp_compact(now), 0, dlsr), None, "no sender report yet");
        // A report claiming it held the SR longer than it existed: nonsense.
        assert_eq!(rtt_of(ntp_compact(now), lsr, (1.0 * 65536.0) as u32), None);
        // Across the compact form's wrap (every 65536 s).
        assert!(rtt_of(5, u32::MAX - 10, 0).is_some());
    }

    #[test]
    fn downlink_reports_keep_the_worst_of_a_window_and_the_last_round_trip() {
        let mut d = Downlink::default();
        assert_eq!(d.take_window(), (None, None, None));
        d.report(0, 4.0, Some(Duration::from_millis(40)));
        d.report(64, 2.0, None);
        let (loss, jitter, rtt) = d.take_window();
        assert_eq!(loss, Some(0.25));
        assert_eq!(jitter, Some(4.0));
        assert_eq!(rtt, Some(40.0));
        // A window without reports: no loss or jitter known, the round trip as last measured.
        assert_eq!(d.take_window(), (None, None, Some(40.0)));
    }
}
