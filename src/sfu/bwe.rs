//! Bandwidth estimation toward one subscriber connection (issue 12), pure: every
//! packet the gateway forwards to the connection carries a transport-wide sequence
//! number ([`SendHistory::stamp`]), the subscriber's transport-wide congestion control
//! feedback (TWCC) says when each arrived or that it did not, and a GCC-style
//! estimator ([`Estimator`]: delay-gradient trendline, overuse detector, AIMD rate
//! control, loss-based bound, as libwebrtc's) turns that into the bit rate the path
//! takes. [`Bwe`] adds the policy the media room applies with it: which simulcast layer
//! each video leg of the connection may have ([`fit`]), stepping down at once when the
//! estimate drops and up when it has room, or by trying the next layer after a hold-off
//! that doubles each time a try (or the probe before it, [`super::probe`]) fails
//! (docs/ARCHITECTURE.md, Simulcast). A REMB stands in for the feedback where a subscriber
//! sends none ([`Bwe::remb`]). No clock and no IO: every input carries `now`.

use std::time::{Duration, Instant};

use super::probe::{self, Cluster};
use super::stamp::{Clock, NEVER};

/// Packets remembered for their feedback: at 1 000 packets a second, two seconds.
pub const HISTORY: usize = 2048;

/// Packets sent within this of a group's first one form one group (a burst the
/// network sees as one), as libwebrtc's inter-arrival filter does.
pub const GROUP: Duration = Duration::from_millis(5);

/// Delay-gradient samples in the trendline's regression window.
const TREND_WINDOW: usize = 20;
/// Smoothing of the accumulated delay (libwebrtc `kDefaultTrendlineSmoothingCoeff`).
const SMOOTHING: f64 = 0.9;
/// Gain applied to the slope before it meets the threshold (libwebrtc `kDefaultTrendlineThresholdGain`).
const THRESHOLD_GAIN: f64 = 4.0;
/// Overuse must last this long (and the trend keep rising) before it counts.
const OVERUSE_TIME: Duration = Duration::from_millis(10);

/// The estimate never goes below this (one low layer and audio still fit).
pub const MIN_BPS: u64 = 50_000;
/// Nor above this.
pub const MAX_BPS: u64 = 50_000_000;
/// Multiplicative decrease on overuse, of the rate that arrived.
const BETA: f64 = 0.85;

/// What the delay trend says about the path's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Normal,
    /// Delay grows: a queue is building, the path is full.
    Over,
    /// Delay shrinks: a queue is draining.
    Under,
}

/// One packet the subscriber reported on: its transport-wide sequence number and, if it
/// arrived, when on the subscriber's clock (only differences between arrivals matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u16,
    pub arrival: Option<Duration>,
}

/// 12 bytes (it was 24 with an `Option<Instant>`: 48 KB per subscriber connection).
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    /// When it was sent ([`Clock`] stamp), [`NEVER`] once reported or for an empty slot.
    at: u32,
    seq: u16,
    size: u16,
    /// The probe cluster it was sent in (`probe::Cluster::id`; 0: none).
    cluster: u16,
}

/// What was sent under each transport-wide sequence number: a ring allocated once.
pub struct SendHistory {
    slots: Box<[Sent]>,
    next: u16,
    clock: Clock,
}

impl std::fmt::Debug for SendHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendHistory").field("next", &self.next).finish()
    }
}

impl Default for SendHistory {
    fn default() -> Self {
        Self {
            slots: vec![Sent::default(); HISTORY].into_boxed_slice(),
            next: 0,
            clock: Clock::default(),
        }
    }
}

impl SendHistory {
    /// Numbers a packet of `size` bytes sent `now`; returns its transport-wide sequence number.
    pub fn stamp(&mut self, size: usize, now: Instant) -> u16 {
        self.stamp_in(size, now, 0)
    }

    /// As [`stamp`](Self::stamp), the packet marked as sent in probe cluster `cluster`.
    pub fn stamp_in(&mut self, size: usize, now: Instant, cluster: u16) -> u16 {
        let seq = self.next;
        self.next = seq.wrapping_add(1);
        self.slots[seq as usize % HISTORY] = Sent {
            at: self.clock.stamp(now),
            seq,
            size: size.min(u16::MAX as usize) as u16,
            cluster,
        };
        seq
    }

    /// When the packet `seq` was sent (read back from `now`, to the microsecond), its size
    /// and its probe cluster, once: a second report of it finds nothing. A report names
    /// packets sent in the last second or so, well within the clock's 71-minute wrap.
    pub fn take(&mut self, seq: u16, now: Instant) -> Option<(Instant, u16, u16)> {
        let slot = &mut self.slots[seq as usize % HISTORY];
        if slot.seq != seq {
            return None;
        }
        let age = self.clock.age(std::mem::replace(&mut slot.at, NEVER), now)?;
        Some((now.checked_sub(age).unwrap_or(now), slot.size, slot.cluster))
    }
}

/// A group of packets sent within [`GROUP`] of each other.
#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    last_arrival: Duration,
}

/// The delay-gradient trendline and overuse detector (libwebrtc's `TrendlineEstimator`
/// with its adaptive threshold).
#[derive(Debug, Clone)]
struct Trendline {
    current: Option<Group>,
    previous: Option<Group>,
    /// First arrival seen (the regression's time origin).
    origin: Option<Duration>,
    accumulated: f64,
    smoothed: f64,
    /// (arrival ms since origin, smoothed accumulated delay ms), a ring.
    points: [(f64, f64); TREND_WINDOW],
    len: usize,
    head: usize,
    deltas: u32,
    threshold: f64,
    last_threshold_update: Option<Duration>,
    overusing_since: Option<Duration>,
    overuse_count: u32,
    prev_trend: f64,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            current: None,
            previous: None,
            origin: None,
            accumulated: 0.0,
            smoothed: 0.0,
            points: [(0.0, 0.0); TREND_WINDOW],
            len: 0,
            head: 0,
            deltas: 0,
            threshold: 12.5,
            last_threshold_update: None,
            overusing_since: None,
            overuse_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// A packet sent at `sent` arrived at `arrival`. Packets come in send order within a
    /// report; one sent before the current group (reordered) is left out.
    fn packet(&mut self, sent: Instant, arrival: Duration) {
        match &mut self.current {
            None => {
                self.current = Some(Group {
                    first_sent: sent,
                    last_sent: sent,
                    last_arrival: arrival,
                })
            }
            Some(g) if sent < g.first_sent => {}
            Some(g) if sent.saturating_duration_since(g.first_sent) <= GROUP => {
                g.last_sent = g.last_sent.max(sent);
                g.last_arrival = g.last_arrival.max(arrival);
            }
            Some(g) => {
                let done = *g;
                *g = Group {
                    first_sent: sent,
                    last_sent: sent,
                    last_arrival: arrival,
                };
                if let Some(prev) = self.previous.replace(done) {
                    let send_delta = done.last_sent.saturating_duration_since(prev.last_sent).as_secs_f64() * 1e3;
                    let arrival_delta = done.last_arrival.as_secs_f64() * 1e3 - prev.last_arrival.as_secs_f64() * 1e3;
                    self.delta(arrival_delta - send_delta, done.last_arrival, send_delta);
                }
            }
        }
    }

    fn delta(&mut self, delay_ms: f64, arrival: Duration, send_delta_ms: f64) {
        let origin = *self.origin.get_or_insert(arrival);
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated += delay_ms;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let x = arrival.saturating_sub(origin).as_secs_f64() * 1e3;
        self.points[self.head] = (x, self.smoothed);
        self.head = (self.head + 1) % TREND_WINDOW;
        self.len = (self.len + 1).min(TREND_WINDOW);
        if self.len < TREND_WINDOW {
            return;
        }
        let slope = slope(&self.points).unwrap_or(self.prev_trend);
        let modified = f64::from(self.deltas.min(60)) * slope * THRESHOLD_GAIN;
        self.detect(modified, slope, arrival, send_delta_ms);
        self.prev_trend = slope;
    }

    fn detect(&mut self, modified: f64, trend: f64, now: Duration, send_delta_ms: f64) {
        if modified > self.threshold {
            let since = *self
                .overusing_since
                .get_or_insert(now.saturating_sub(Duration::from_secs_f64((send_delta_ms / 2e3).clamp(0.0, 1.0))));
            self.overuse_count += 1;
            if now.saturating_sub(since) >= OVERUSE_TIME && self.overuse_count > 1 && trend >= self.prev_trend {
                self.overusing_since = None;
                self.overuse_count = 0;
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold {
            self.overusing_since = None;
            self.overuse_count = 0;
            self.usage = Usage::Under;
        } else {
            self.overusing_since = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.adapt_threshold(modified, now);
    }

    /// libwebrtc's adaptive threshold: it follows the trend up slowly and down quickly,
    /// so a path whose delay varies a lot needs a larger trend to count as overuse.
    fn adapt_threshold(&mut self, modified: f64, now: Duration) {
        let last = self.last_threshold_update.replace(now).unwrap_or(now);
        if modified.abs() > self.threshold + 15.0 {
            return;
        }
        let k = if modified.abs() < self.threshold { 0.039 } else { 0.0087 };
        let dt = now.saturating_sub(last).as_secs_f64().min(0.1) * 1e3;
        self.threshold = (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
    }
}

/// Least-squares slope of the points (ring order does not matter); `None` if all x equal.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

/// The rate that arrived at the subscriber, from the reported arrivals, over windows of
/// at least [`AckedRate::WINDOW`] of arrival time.
#[derive(Debug, Clone, Default)]
struct AckedRate {
    start: Option<Duration>,
    last: Duration,
    bytes: u64,
    bps: Option<u64>,
}

impl AckedRate {
    const WINDOW: Duration = Duration::from_millis(500);

    fn arrived(&mut self, arrival: Duration, size: u16) {
        let start = *self.start.get_or_insert(arrival);
        if arrival < start {
            return;
        }
        self.bytes += u64::from(size);
        self.last = self.last.max(arrival);
        let span = self.last.saturating_sub(start);
        if span >= Self::WINDOW {
            self.bps = Some((self.bytes as f64 * 8.0 / span.as_secs_f64()) as u64);
            self.start = Some(self.last);
            self.bytes = 0;
        }
    }
}

/// How an update moved the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Up,
    /// Overuse or loss: the path cannot take what it is sent.
    Down,
}

/// The AIMD state (libwebrtc's `AimdRateControl`): increase while the path looks
/// normal, decrease once on overuse, hold while the queue drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aimd {
    Hold,
    Increase,
    Decrease,
}

/// A GCC-style estimator for one connection. Inputs are the packets the subscriber
/// reported on, each with when it was sent and its size; output the estimate in bit/s.
#[derive(Debug, Clone)]
pub struct Estimator {
    trend: Trendline,
    acked: AckedRate,
    state: Aimd,
    /// The delay-based estimate.
    delay_bps: f64,
    /// The loss-based bound.
    loss_bps: f64,
    /// Received rate at the last decrease: growth near it is additive.
    last_decrease_bps: Option<f64>,
    last_update: Option<Instant>,
    last_loss_change: Option<Instant>,
    /// Loss over the last reports (an average of the fraction per report).
    loss: f64,
    /// Whether any report has come yet.
    started: bool,
}

impl Estimator {
    /// Starts at `initial` bit/s.
    pub fn new(initial: u64) -> Self {
        let initial = initial.clamp(MIN_BPS, MAX_BPS) as f64;
        Self {
            trend: Trendline::default(),
            acked: AckedRate::default(),
            state: Aimd::Hold,
            delay_bps: initial,
            loss_bps: initial,
            last_decrease_bps: None,
            last_update: None,
            last_loss_change: None,
            loss: 0.0,
            started: false,
        }
    }

    /// The estimate, bit/s.
    pub fn bps(&self) -> u64 {
        self.delay_bps.min(self.loss_bps).clamp(MIN_BPS as f64, MAX_BPS as f64) as u64
    }

    /// The rate that arrived, bit/s, once measured.
    pub fn acked_bps(&self) -> Option<u64> {
        self.acked.bps
    }

    /// Loss over the recent reports (0 to 1).
    pub fn loss(&self) -> f64 {
        self.loss
    }

    pub fn usage(&self) -> Usage {
        self.trend.usage
    }

    /// The estimate is `bps`, as the subscriber says (a REMB, [`Bwe::remb`]).
    pub fn set(&mut self, bps: u64) {
        let bps = bps.clamp(MIN_BPS, MAX_BPS) as f64;
        self.delay_bps = bps;
        self.loss_bps = bps;
        self.started = true;
    }

    /// The path carried `bps` without overuse (a layer tried and kept): the estimate is at least that.
    pub fn raise_to(&mut self, bps: u64) {
        let bps = (bps as f64).min(MAX_BPS as f64);
        self.delay_bps = self.delay_bps.max(bps);
        self.loss_bps = self.loss_bps.max(bps);
    }

    /// One feedback report: `packets` are (sent at, size, arrival) in transport-wide order,
    /// `lost` how many of the report's packets did not arrive.
    pub fn update(&mut self, packets: &[(Instant, u16, Duration)], lost: usize, now: Instant) -> Change {
        let before = self.bps();
        for &(sent, size, arrival) in packets {
            self.acked.arrived(arrival, size);
            self.trend.packet(sent, arrival);
        }
        let total = packets.len() + lost;
        if total == 0 {
            return Change::Same;
        }
        self.started = true;
        let overused = self.rate_control(now);
        let lossy = self.loss_control(lost, total, now);
        let after = self.bps();
        // Congestion, not the number: a bound that follows the acknowledged rate down (an
        // application-limited sender) is no reason to step down, and an estimate already
        // below what the decrease would give still saw the path overflow.
        match () {
            _ if overused || lossy => Change::Down,
            _ if after > before => Change::Up,
            _ => Change::Same,
        }
    }

    /// The delay-based AIMD step; true when it saw overuse.
    fn rate_control(&mut self, now: Instant) -> bool {
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        self.state = match (self.trend.usage, self.state) {
            (Usage::Over, _) => Aimd::Decrease,
            (Usage::Under, _) => Aimd::Hold,
            (Usage::Normal, Aimd::Hold) => Aimd::Increase,
            (Usage::Normal, s) => s,
        };
        let acked = self.acked.bps.map(|b| b as f64);
        let mut overused = false;
        match self.state {
            Aimd::Hold => {}
            Aimd::Decrease => {
                overused = true;
                if let Some(acked) = acked {
                    let target = (BETA * acked).min(self.delay_bps);
                    self.delay_bps = target.max(MIN_BPS as f64);
                    self.last_decrease_bps = Some(acked);
                }
                // One decrease per overuse: wait for the queue to drain.
                self.state = Aimd::Hold;
                self.trend.usage = Usage::Normal;
            }
            Aimd::Increase => {
                let near = self.last_decrease_bps.is_some_and(|d| self.delay_bps < d * 1.15);
                let grown = if near {
                    // About one packet per round trip (200 ms assumed), per second.
                    self.delay_bps + 1200.0 * 8.0 / 0.2 * elapsed.as_secs_f64()
                } else {
                    self.delay_bps * 1.08f64.powf(elapsed.as_secs_f64())
                };
                // Never far above what the path has shown it carries (an application-limited
                // sender learns nothing about the rest).
                let cap = acked.map_or(f64::MAX, |a| 1.5 * a + 10_000.0);
                self.delay_bps = grown.min(cap).max(self.delay_bps.min(cap));
            }
        }
        self.delay_bps = self.delay_bps.clamp(MIN_BPS as f64, MAX_BPS as f64);
        overused
    }

    /// libwebrtc's loss-based rule: over 10 % lowers the bound by half the loss, under
    /// 2 % lets it follow the delay-based estimate, between holds. At most every 300 ms.
    /// True when loss lowered it.
    fn loss_control(&mut self, lost: usize, total: usize, now: Instant) -> bool {
        let sample = lost as f64 / total as f64;
        self.loss = if self.last_loss_change.is_none() && self.loss == 0.0 {
            sample
        } else {
            0.7 * self.loss + 0.3 * sample
        };
        if self
            .last_loss_change
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_millis(300))
        {
            return false;
        }
        let loss = self.loss.min(sample.max(self.loss));
        if loss > 0.10 {
            let base = self
                .acked
                .bps
                .map_or(self.bps() as f64, |a| (a as f64).min(self.bps() as f64));
            self.loss_bps = (base * (1.0 - 0.5 * loss)).max(MIN_BPS as f64);
            self.last_loss_change = Some(now);
            return true;
        } else if loss < 0.02 {
            self.loss_bps = self.loss_bps.max(self.delay_bps);
            self.last_loss_change = Some(now);
        }
        false
    }
}

/// The highest of a track's layers a leg may have: `layers` are (rank, measured bit/s,
/// sending) per layer; among those sending, at or below the subscriber's `target` rank,
/// the highest whose rate fits `share`, else the lowest sending (video is reduced, never
/// stopped, for bandwidth). `None` when nothing sends.
pub fn fit(layers: &[(u8, u64, bool)], target: u8, share: u64) -> Option<u8> {
    let sending = || layers.iter().filter(|l| l.2);
    let lowest = sending().map(|l| l.0).min()?;
    Some(
        sending()
            .filter(|l| l.0 <= target && l.1 <= share)
            .map(|l| l.0)
            .max()
            .unwrap_or(lowest),
    )
}

/// How one subscriber connection's estimate is split among its video legs, once audio is
/// taken off (`video`: what is left). Screen shares come first: each gets what it needs (the
/// rate of its best layer within its subscriber's wish), or, when together they need more than
/// there is, a part of it in proportion to that need; the cameras share what the screens leave
/// equally. A screen share's slide is what a guest came for, and its text must stay sharp: so
/// under congestion the cameras step down first (issue 12, "screen share is protected").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub video: u64,
    /// What the connection's screen share legs need together, and how many there are.
    pub screens_need: u64,
    pub screens: u64,
    pub cameras: u64,
}

impl Budget {
    /// A camera leg's share.
    pub fn camera(&self) -> u64 {
        if self.cameras == 0 {
            return 0;
        }
        if self.screens_need == 0 {
            // No screen, or none measured yet: every video leg an equal part.
            return self.video / (self.screens + self.cameras);
        }
        self.video.saturating_sub(self.screens_need) / self.cameras
    }

    /// The share of a screen share leg that needs `need`.
    pub fn screen(&self, need: u64) -> u64 {
        let screens = self.screens.max(1);
        if self.screens_need == 0 {
            // Nothing measured yet (a screen share just started): an equal part.
            return self.video / (screens + self.cameras);
        }
        let of = |total: u64| ((total as u128 * need as u128) / self.screens_need as u128) as u64;
        if self.cameras == 0 {
            // Alone, the screens take everything, in proportion.
            return of(self.video);
        }
        of(self.video.min(self.screens_need))
    }
}

/// What a leg of a track needs for the layer its subscriber wishes: the rate of the layer
/// [`fit`] picks with no bandwidth limit (0 when nothing sends).
pub fn need(layers: &[(u8, u64, bool)], target: u8) -> u64 {
    fit(layers, target, u64::MAX)
        .and_then(|rank| layers.iter().find(|l| l.2 && l.0 == rank))
        .map_or(0, |l| l.1)
}

/// How long after a failed try the next may start, first; it doubles up to [`MAX_HOLD`].
pub const BASE_HOLD: Duration = Duration::from_secs(2);
/// The longest wait between tries.
pub const MAX_HOLD: Duration = Duration::from_secs(6);
/// A try that overused nothing for this long is kept.
pub const TRIAL: Duration = Duration::from_millis(1500);
/// A leg moves up on the estimate alone when the next layer fits with this much to spare.
pub const UP_HEADROOM: f64 = 1.15;

/// A try of a higher layer for one leg (see [`Bwe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    pub leg: u64,
    pub since: Instant,
}

/// One subscriber connection's estimate and the policy around it: its send history,
/// its [`Estimator`], and the state of stepping up. Until the estimate first drops
/// nothing is capped (a path that never overuses keeps what the subscribers ask for);
/// from then, the media room fits each video leg under the estimate and steps up when
/// the estimate has room or, since an application-limited sender cannot see spare
/// capacity, by a [`Trial`] of the next layer after a hold-off, probed first where the
/// connection can carry padding ([`Bwe::start_probe`]).
#[derive(Debug)]
pub struct Bwe {
    pub history: SendHistory,
    pub estimator: Estimator,
    /// The estimate has dropped at least once: caps apply.
    pub capping: bool,
    pub trial: Option<Trial>,
    /// Wait after the last drop (or failed try) before trying a higher layer.
    pub hold: Duration,
    pub last_down: Option<Instant>,
    /// Feedback reports taken, and packets reported lost (for the debug view).
    pub reports: u64,
    pub lost: u64,
    /// A probe of the path before a leg steps up ([`probe`]); none while a try runs.
    pub probe: Option<Cluster>,
    /// The last probe cluster's id (ids count up, skipping 0).
    pub probes: u16,
}

impl Default for Bwe {
    fn default() -> Self {
        Self {
            history: SendHistory::default(),
            estimator: Estimator::new(1_000_000),
            capping: false,
            trial: None,
            hold: BASE_HOLD,
            last_down: None,
            reports: 0,
            lost: 0,
            probe: None,
            probes: 0,
        }
    }
}

/// What a feedback report means for the connection's legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to change (or nothing capped yet).
    Keep,
    /// The estimate dropped: fit every leg under it now (down only).
    Down,
    /// The estimate may have room: move legs up where it fits with headroom.
    Up,
    /// The try of leg `.0` is kept: the estimate was raised to what arrived.
    TrialKept(u64),
    /// The probe for leg `leg` found room: it may try layer `rank` (a [`Trial`] started).
    Probed { leg: u64, rank: u8 },
}

impl Bwe {
    /// A feedback report: `acks` in report order. Packets this connection never
    /// numbered (or already reported) are skipped.
    pub fn feedback(
        &mut self,
        acks: impl IntoIterator<Item = Ack>,
        now: Instant,
        scratch: &mut Vec<(Instant, u16, Duration)>,
    ) -> Verdict {
        scratch.clear();
        let mut lost = 0;
        for ack in acks {
            let Some((sent, size, cluster)) = self.history.take(ack.seq, now) else {
                continue;
            };
            if let Some(probe) = self.probe.as_mut().filter(|p| p.id == cluster && cluster != 0) {
                probe.report(sent, size, ack.arrival);
            }
            match ack.arrival {
                Some(arrival) => scratch.push((sent, size, arrival)),
                None => lost += 1,
            }
        }
        if scratch.is_empty() && lost == 0 {
            return Verdict::Keep;
        }
        self.reports += 1;
        self.lost += lost as u64;
        // Arrival order is what the trendline needs; reports list by sequence number. (In place:
        // a stable sort would allocate its buffer per report.)
        scratch.sort_unstable_by_key(|p| (p.2, p.0));
        let change = self.estimator.update(scratch, lost, now);
        self.settle(change, now)
    }

    /// A REMB from a subscriber connection that sends no transport-wide feedback (aiortc;
    /// receive-side estimation): the subscriber's own estimate of its downlink, `bps`, is
    /// taken as the estimate. It is a drop (caps apply; a try running failed) only when it
    /// is below 90 % of `sending_bps`, what the connection is being sent: a receive-side
    /// estimator stays near 1.5 times what arrives, so an estimate below an earlier one
    /// is no sign of congestion while what is sent still fits.
    pub fn remb(&mut self, bps: u64, sending_bps: u64, now: Instant) -> Verdict {
        let before = self.estimator.bps();
        self.estimator.set(bps);
        self.reports += 1;
        let change = if (bps as f64) < 0.9 * sending_bps as f64 {
            Change::Down
        } else if bps > before {
            Change::Up
        } else {
            Change::Same
        };
        self.settle(change, now)
    }

    /// What an estimate's `change` means for the legs, and for a try or probe running.
    fn settle(&mut self, change: Change, now: Instant) -> Verdict {
        if change == Change::Down {
            if let Some(probe) = self.probe.take() {
                // The probe's own queue, most likely: it failed, and what flowed before it
                // still flows. The estimate goes back to where it was, and no leg steps
                // down for a probe (a real overload shows again in the next reports).
                tracing::trace!(leg = probe.leg, "probe overused");
                self.estimator.raise_to(probe.estimate_before);
                self.hold = (self.hold * 2).clamp(BASE_HOLD, MAX_HOLD);
                self.last_down = Some(now);
                return Verdict::Keep;
            }
            self.capping = true;
            if let Some(trial) = self.trial.take() {
                tracing::trace!(leg = trial.leg, "layer try overused");
                self.hold = (self.hold * 2).min(MAX_HOLD);
            }
            self.last_down = Some(now);
            return Verdict::Down;
        }
        if !self.capping {
            return Verdict::Keep;
        }
        if let Some(verdict) = self.probe_outcome(now) {
            return verdict;
        }
        if let Some(trial) = self.trial
            && now.saturating_duration_since(trial.since) >= TRIAL
        {
            self.trial = None;
            self.hold = Duration::ZERO;
            self.last_down = Some(now);
            if let Some(acked) = self.estimator.acked_bps() {
                self.estimator.raise_to(acked);
            }
            return Verdict::TrialKept(trial.leg);
        }
        Verdict::Up
    }

    /// Whether a try of a higher layer (or a probe for one) may start now.
    pub fn may_try(&self, now: Instant) -> bool {
        self.capping
            && self.trial.is_none()
            && self.probe.is_none()
            && self
                .last_down
                .is_none_or(|at| now.saturating_duration_since(at) >= self.hold)
    }

    /// Probes the path for leg `leg`'s step up to layer `rank`: for [`probe::SEND`]
    /// the connection is sent at `target_bps`; `need_bps` must arrive for the step.
    pub fn start_probe(&mut self, leg: u64, rank: u8, target_bps: u64, need_bps: u64, now: Instant) {
        self.probes = self.probes.wrapping_add(1).max(1);
        let mut cluster = Cluster::new(self.probes, leg, rank, target_bps, need_bps, now);
        cluster.estimate_before = self.estimator.bps();
        self.probe = Some(cluster);
    }

    /// Numbers a packet of `size` bytes sent on the connection `now` (as
    /// [`SendHistory::stamp`]), marked as the probe cluster's while one sends.
    pub fn stamp(&mut self, size: usize, now: Instant) -> u16 {
        let mut cluster = 0;
        if let Some(probe) = self.probe.as_mut()
            && probe.sending(now)
        {
            probe.sent(size);
            cluster = probe.id;
        }
        self.history.stamp_in(size, now, cluster)
    }

    /// The probe's outcome once known (also from a tick, when its feedback never came):
    /// room for the step starts its [`Trial`] with the estimate raised to what the path
    /// took; otherwise the hold before the next attempt doubles, as after a failed try.
    pub fn probe_outcome(&mut self, now: Instant) -> Option<Verdict> {
        let outcome = self.probe.as_mut()?.outcome(now)?;
        let probe = self.probe.take()?;
        match outcome {
            probe::Outcome::Rate(bps) if bps >= probe.need_bps => {
                tracing::trace!(leg = probe.leg, bps, need = probe.need_bps, "probe found room");
                self.estimator.raise_to(bps);
                self.start_trial(probe.leg, now);
                Some(Verdict::Probed {
                    leg: probe.leg,
                    rank: probe.rank,
                })
            }
            outcome => {
                tracing::trace!(leg = probe.leg, ?outcome, need = probe.need_bps, "probe found no room");
                self.hold = (self.hold * 2).clamp(BASE_HOLD, MAX_HOLD);
                self.last_down = Some(now);
                None
            }
        }
    }

    /// Leg `leg` tries its next layer from `now`.
    pub fn start_trial(&mut self, leg: u64, now: Instant) {
        self.trial = Some(Trial { leg, since: now });
        if self.hold.is_zero() {
            self.hold = BASE_HOLD;
        }
    }
}

/// A layer's rate as the publisher sends it, over windows of [`RateMeter::WINDOW`]
/// (keyframes and frame sizes vary; a window averages them). No allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateMeter {
    start: Option<Instant>,
    bytes: u64,
    bps: u64,
}

impl RateMeter {
    pub const WINDOW: Duration = Duration::from_secs(1);

    pub fn add(&mut self, size: u64, now: Instant) {
        let start = *self.start.get_or_insert(now);
        self.bytes += size;
        let span = now.saturating_duration_since(start);
        if span >= Self::WINDOW {
            self.bps = (self.bytes as f64 * 8.0 / span.as_secs_f64()) as u64;
            self.start = Some(now);
            self.bytes = 0;
        }
    }

    /// The last full window's rate, bit/s (0 before one passed).
    pub fn bps(&self) -> u64 {
        self.bps
    }
}

/// The two bytes of a transport-wide sequence number extension, for every number, made
/// at compile time: a stamped copy shares them (`Bytes::from_static`) instead of allocating.
pub static TWCC_BYTES: [[u8; 2]; 65536] = {
    let mut t = [[0u8; 2]; 65536];
    let mut i = 0;
    while i < 65536 {
        t[i] = (i as u16).to_be_bytes();
        i += 1;
    }
    t
};

/// The acknowledgements of a TWCC feedback packet (draft-holmer-rmcat-transport-wide-cc-extensions-01).
pub fn acks_of(
    feedback: &rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc,
) -> impl Iterator<Item = Ack> + use<> {
    rtc::interceptor::convert_twcc(feedback)
        .into_iter()
        .take(feedback.packet_status_count as usize)
        .map(|a| Ack {
            seq: a.sequence_number,
            arrival: a.arrival,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic path: a bottleneck of `link_bps` with a FIFO queue of `queue`
    /// (beyond it packets are dropped, as tbf does) and a fixed one-way delay. The
    /// sender sends `send_bps` in packets of 1 000 bytes, evenly; feedback every 50 ms.
    struct Path {
        link_bps: f64,
        queue: Duration,
        /// When the bottleneck is free again, seconds since t0.
        busy_until: f64,
    }

    impl Path {
        fn new(link_bps: u64, queue: Duration) -> Self {
            Self {
                link_bps: link_bps as f64,
                queue,
                busy_until: 0.0,
            }
        }

        /// Arrival (s since t0) of a packet of `size` bytes sent at `t` s, or None if dropped.
        fn carry(&mut self, t: f64, size: usize) -> Option<f64> {
            let start = self.busy_until.max(t);
            if start - t > self.queue.as_secs_f64() {
                return None;
            }
            self.busy_until = start + size as f64 * 8.0 / self.link_bps;
            Some(self.busy_until + 0.020)
        }
    }

    /// Runs `bwe` for `secs` seconds sending `send(estimate)` bit/s through `path`;
    /// returns every verdict with its time, and the estimate at the end.
    fn run(
        bwe: &mut Bwe,
        path: &mut Path,
        t0: Instant,
        from: f64,
        secs: f64,
        mut send: impl FnMut(&Bwe, f64) -> f64,
    ) -> Vec<(f64, Verdict)> {
        let mut verdicts = Vec::new();
        let mut scratch = Vec::new();
        let mut t = from;
        let mut pending: Vec<Ack> = Vec::new();
        let mut next_report = from + 0.05;
        while t < from + secs {
            let rate = send(bwe, t).max(10_000.0);
            let size = 1000;
            let at = t0 + Duration::from_secs_f64(t);
            let seq = bwe.history.stamp(size, at);
            pending.push(Ack {
                seq,
                arrival: path.carry(t, size).map(Duration::from_secs_f64),
            });
            t += size as f64 * 8.0 / rate;
            if t >= next_report {
                // Only what has arrived by now is reported (lost ones once later ones arrived).
                let (ready, later): (Vec<Ack>, Vec<Ack>) = pending
                    .iter()
                    .partition(|a| a.arrival.is_none_or(|x| x.as_secs_f64() <= t));
                pending = later;
                let now = t0 + Duration::from_secs_f64(t);
                let v = bwe.feedback(ready, now, &mut scratch);
                verdicts.push((t, v));
                next_report += 0.05;
            }
        }
        verdicts
    }

    fn downs(v: &[(f64, Verdict)]) -> Vec<f64> {
        v.iter().filter(|(_, v)| *v == Verdict::Down).map(|(t, _)| *t).collect()
    }

    #[test]
    fn a_sent_entry_is_12_bytes() {
        assert_eq!(std::mem::size_of::<Sent>(), 12);
    }

    #[test]
    fn history_numbers_consecutively_and_answers_each_number_once() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        assert_eq!(h.stamp(1200, t0), 0);
        assert_eq!(h.stamp(100_000, t0 + Duration::from_millis(1)), 1);
        let later = t0 + Duration::from_millis(40);
        assert_eq!(h.take(1, later), Some((t0 + Duration::from_millis(1), u16::MAX, 0)));
        assert_eq!(
            h.take(1, later),
            None,
            "a second report of the same packet finds nothing"
        );
        assert_eq!(h.take(7, later), None, "never sent");
        for _ in 0..HISTORY {
            h.stamp(10, t0);
        }
        assert_eq!(h.take(0, later), None, "overwritten by a later number in its slot");
    }

    #[test]
    fn history_wraps_the_sequence_space() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        for _ in 0..65_535u32 {
            h.stamp(10, t0);
        }
        assert_eq!(h.stamp(10, t0), 65_535);
        assert_eq!(h.stamp(20, t0), 0);
        assert_eq!(h.take(0, t0), Some((t0, 20, 0)));
        assert_eq!(h.take(65_535, t0 + Duration::from_millis(7)), Some((t0, 10, 0)));
    }

    #[test]
    fn the_static_extension_bytes_are_big_endian_numbers() {
        assert_eq!(TWCC_BYTES[0], [0, 0]);
        assert_eq!(TWCC_BYTES[0x1234], [0x12, 0x34]);
        assert_eq!(TWCC_BYTES[65_535], [0xFF, 0xFF]);
    }

    #[test]
    fn a_path_with_room_never_overuses_and_nothing_is_capped() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        let mut path = Path::new(5_000_000, Duration::from_millis(300));
        let v = run(&mut bwe, &mut path, t0, 0.0, 20.0, |_, _| 1_500_000.0);
        assert!(downs(&v).is_empty(), "no drop on a path with room: {:?}", downs(&v));
        assert!(!bwe.capping);
        assert!(v.iter().all(|(_, v)| *v == Verdict::Keep));
        let acked = bwe.estimator.acked_bps().expect("measured");
        assert!((1_400_000..1_600_000).contains(&acked), "acked {acked}");
    }

    #[test]
    fn a_full_path_drops_the_estimate_within_a_second_to_about_its_capacity() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        // A 300 kbit/s downlink fed a top layer of 1.2 Mbit/s.
        let mut path = Path::new(300_000, Duration::from_millis(400));
        let v = run(&mut bwe, &mut path, t0, 0.0, 3.0, |_, _| 1_200_000.0);
        let first = *downs(&v).first().expect("the estimate drops");
        assert!(first < 1.0, "first drop after {first} s");
        let bps = bwe.estimator.bps();
        assert!(bps <= 330_000, "estimate {bps} at most the 300 kbit/s capacity");
        assert!(bwe.capping);
    }

    #[test]
    fn a_sender_that_follows_the_estimate_settles_near_the_capacity() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        let mut path = Path::new(300_000, Duration::from_millis(400));
        let v = run(&mut bwe, &mut path, t0, 0.0, 20.0, |b, _| {
            (b.estimator.bps() as f64).min(1_200_000.0)
        });
        assert!(!downs(&v).is_empty());
        let bps = bwe.estimator.bps();
        assert!(
            (150_000..=450_000).contains(&bps),
            "estimate {bps} near the 300 kbit/s capacity"
        );
        let acked = bwe.estimator.acked_bps().expect("measured");
        assert!((150_000..=310_000).contains(&acked), "what arrived: {acked}");
    }

    #[test]
    fn loss_alone_lowers_the_estimate() {
        // A path that drops a fifth of the packets without any queue (a policer).
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        let mut scratch = Vec::new();
        let mut n = 0u32;
        let mut before = bwe.estimator.bps();
        let mut dropped_at = None;
        for report in 0..40u32 {
            let now = t0 + Duration::from_millis(50 * u64::from(report + 1));
            let mut acks = Vec::new();
            for i in 0..20u32 {
                let sent = t0 + Duration::from_micros(u64::from(report * 50_000 + i * 2_500));
                let seq = bwe.history.stamp(1000, sent);
                n += 1;
                let arrival = (!n.is_multiple_of(5))
                    .then(|| Duration::from_micros(u64::from(report * 50_000 + i * 2_500 + 20_000)));
                acks.push(Ack { seq, arrival });
            }
            if bwe.feedback(acks, now, &mut scratch) == Verdict::Down && dropped_at.is_none() {
                dropped_at = Some(report);
            }
            if report == 0 {
                before = bwe.estimator.bps();
            }
        }
        assert!(dropped_at.is_some(), "20 % loss lowers the estimate");
        assert!(bwe.estimator.bps() < before, "{} < {before}", bwe.estimator.bps());
        assert!(
            (0.15..0.25).contains(&bwe.estimator.loss()),
            "loss {}",
            bwe.estimator.loss()
        );
    }

    #[test]
    fn light_loss_without_queueing_does_not_lower_it() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        let mut scratch = Vec::new();
        let mut n = 0u32;
        for report in 0..100u32 {
            let now = t0 + Duration::from_millis(50 * u64::from(report + 1));
            let mut acks = Vec::new();
            for i in 0..20u32 {
                let sent = t0 + Duration::from_micros(u64::from(report * 50_000 + i * 2_500));
                let seq = bwe.history.stamp(1000, sent);
                n += 1;
                let arrival = (!n.is_multiple_of(100))
                    .then(|| Duration::from_micros(u64::from(report * 50_000 + i * 2_500 + 20_000)));
                acks.push(Ack { seq, arrival });
            }
            assert_ne!(
                bwe.feedback(acks, now, &mut scratch),
                Verdict::Down,
                "1 % loss is no congestion"
            );
        }
    }

    #[test]
    fn the_estimate_never_grows_far_beyond_what_arrived() {
        let t0 = Instant::now();
        let mut bwe = Bwe {
            capping: true,
            estimator: Estimator::new(200_000),
            ..Default::default()
        };
        let mut path = Path::new(10_000_000, Duration::from_millis(300));
        run(&mut bwe, &mut path, t0, 0.0, 30.0, |_, _| 150_000.0);
        let bps = bwe.estimator.bps();
        assert!(bps <= 1_500 * 150 + 10_000 + 20_000, "application-limited: {bps}");
        assert!(bps > 200_000, "but it grew: {bps}");
    }

    #[test]
    fn reports_of_unknown_or_repeated_numbers_change_nothing() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        let mut scratch = Vec::new();
        let seq = bwe.history.stamp(1000, t0);
        let ack = Ack {
            seq,
            arrival: Some(Duration::from_millis(20)),
        };
        bwe.feedback([ack], t0 + Duration::from_millis(50), &mut scratch);
        assert_eq!(bwe.reports, 1);
        let v = bwe.feedback(
            [
                ack,
                Ack {
                    seq: 999,
                    arrival: None,
                },
            ],
            t0 + Duration::from_millis(100),
            &mut scratch,
        );
        assert_eq!(v, Verdict::Keep);
        assert_eq!(
            (bwe.reports, bwe.lost),
            (1, 0),
            "nothing counted twice, unknown ignored"
        );
    }

    #[test]
    fn a_try_that_overuses_doubles_the_hold_and_one_that_holds_is_kept() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        let mut path = Path::new(300_000, Duration::from_millis(400));
        // Overload: capped from here on.
        let v = run(&mut bwe, &mut path, t0, 0.0, 2.0, |_, _| 1_000_000.0);
        assert!(!downs(&v).is_empty());
        // The leg then gets a layer of 150 kbit/s: the overflow's loss fades from the
        // average within a few reports, and no try starts before the hold has passed.
        let v = run(&mut bwe, &mut path, t0, 2.0, 1.0, |_, _| 150_000.0);
        assert!(downs(&v).iter().all(|t| *t < 2.6), "{:?}", downs(&v));
        let quiet = t0 + Duration::from_secs_f64(3.0);
        let last_down = bwe.last_down.expect("dropped");
        assert_eq!(
            bwe.may_try(quiet),
            quiet.saturating_duration_since(last_down) >= BASE_HOLD
        );
        let at = t0 + Duration::from_secs_f64(5.0);
        run(&mut bwe, &mut path, t0, 3.0, 2.0, |_, _| 150_000.0);
        assert!(bwe.may_try(at), "hold passed without a drop");
        // A try of a 450 kbit/s layer on the 300 kbit/s path: overuse, the hold doubles.
        bwe.start_trial(7, at);
        let v = run(&mut bwe, &mut path, t0, 5.0, 1.5, |b, _| {
            if b.trial.is_some() { 450_000.0 } else { 150_000.0 }
        });
        let failed = downs(&v);
        assert!(!failed.is_empty(), "the try overused: {v:?}");
        assert!(failed[0] < 6.2, "and was seen within 1.2 s: {failed:?}");
        assert_eq!(bwe.trial, None);
        assert_eq!(bwe.hold, BASE_HOLD * 2);
        // The path widens to 2 Mbit/s: the next try holds for TRIAL and is kept.
        path.link_bps = 2_000_000.0;
        run(&mut bwe, &mut path, t0, 6.5, 4.0, |_, _| 150_000.0);
        let at = t0 + Duration::from_secs_f64(10.5);
        assert!(bwe.may_try(at));
        bwe.start_trial(7, at);
        let v = run(&mut bwe, &mut path, t0, 10.5, 2.0, |_, _| 450_000.0);
        assert!(downs(&v).is_empty(), "{v:?}");
        assert!(v.iter().any(|(_, v)| *v == Verdict::TrialKept(7)), "{v:?}");
        assert_eq!(bwe.hold, Duration::ZERO, "the next try may follow at once");
        assert!(
            bwe.estimator.bps() >= 400_000,
            "raised to what arrived: {}",
            bwe.estimator.bps()
        );
    }

    #[test]
    fn overuse_during_a_probe_fails_the_probe_and_steps_nothing_down() {
        let t0 = Instant::now();
        let mut bwe = Bwe {
            capping: true,
            hold: BASE_HOLD,
            ..Bwe::default()
        };
        bwe.estimator.set(400_000);
        bwe.start_probe(7, 2, 1_500_000, 1_300_000, t0);
        // The estimator saw overuse and decreased; the probe takes the blame.
        bwe.estimator.set(300_000);
        assert_eq!(bwe.settle(Change::Down, t0 + Duration::from_millis(60)), Verdict::Keep);
        assert_eq!(bwe.probe, None);
        assert_eq!(bwe.estimator.bps(), 400_000, "back to where it was");
        assert_eq!(bwe.hold, BASE_HOLD * 2);
        assert!(!bwe.may_try(t0 + Duration::from_millis(60) + BASE_HOLD));
        // Overuse with no probe out is a drop.
        assert_eq!(bwe.settle(Change::Down, t0 + Duration::from_millis(100)), Verdict::Down);
    }

    #[test]
    fn a_remb_below_what_is_sent_is_a_drop_and_one_following_the_flow_is_not() {
        let t0 = Instant::now();
        let mut bwe = Bwe::default();
        assert_eq!(
            bwe.remb(500_000, 300_000, t0),
            Verdict::Keep,
            "below the start, above the flow"
        );
        assert!(!bwe.capping);
        assert_eq!(bwe.remb(250_000, 300_000, t0), Verdict::Down);
        assert!(bwe.capping);
        assert_eq!(bwe.estimator.bps(), 250_000);
        assert_eq!(bwe.remb(900_000, 250_000, t0), Verdict::Up);
        assert_eq!(bwe.estimator.bps(), 900_000);
    }

    #[test]
    fn screen_shares_get_what_they_need_before_cameras_share_the_rest() {
        // 1.5 Mbit/s of video budget, a screen share needing 1 Mbit/s, two cameras.
        let b = Budget {
            video: 1_500_000,
            screens_need: 1_000_000,
            screens: 1,
            cameras: 2,
        };
        assert_eq!((b.screen(1_000_000), b.camera()), (1_000_000, 250_000));
        // Less than the screen needs: it gets all there is, the cameras nothing (their lowest
        // layer all the same: `fit` never stops video).
        let b = Budget { video: 800_000, ..b };
        assert_eq!((b.screen(1_000_000), b.camera()), (800_000, 0));
        // Two screens needing 600 and 200 kbit/s of 400: in proportion.
        let b = Budget {
            video: 400_000,
            screens_need: 800_000,
            screens: 2,
            cameras: 1,
        };
        assert_eq!(
            (b.screen(600_000), b.screen(200_000), b.camera()),
            (300_000, 100_000, 0)
        );
        // No camera: the screens take everything, in proportion, even beyond their need.
        let b = Budget {
            video: 2_000_000,
            screens_need: 500_000,
            screens: 1,
            cameras: 0,
        };
        assert_eq!((b.screen(500_000), b.camera()), (2_000_000, 0));
        // No screen: the cameras share equally, as before.
        let b = Budget {
            video: 900_000,
            screens_need: 0,
            screens: 0,
            cameras: 3,
        };
        assert_eq!(b.camera(), 300_000);
        // A screen that has sent nothing yet: an equal part.
        let b = Budget {
            video: 900_000,
            screens_need: 0,
            screens: 1,
            cameras: 2,
        };
        assert_eq!((b.screen(0), b.camera()), (300_000, 300_000));
        assert_eq!(Budget::default().camera(), 0);
        assert_eq!(Budget::default().screen(0), 0);
        // A screen share's need: its best layer within the wish; one layer, that layer.
        let layers = [(0, 150_000, true), (1, 500_000, true), (2, 1_500_000, false)];
        assert_eq!(need(&layers, u8::MAX), 500_000, "the top layer does not send");
        assert_eq!(need(&layers, 0), 150_000);
        assert_eq!(need(&[(0, 900_000, true)], u8::MAX), 900_000);
        assert_eq!(need(&[(0, 900_000, false)], u8::MAX), 0);
    }

    #[test]
    fn fit_picks_the_highest_layer_under_the_share_and_the_target() {
        let layers = [(0u8, 150_000u64, true), (1, 450_000, true), (2, 1_200_000, true)];
        assert_eq!(fit(&layers, u8::MAX, 5_000_000), Some(2));
        assert_eq!(fit(&layers, u8::MAX, 600_000), Some(1));
        assert_eq!(
            fit(&layers, 0, 5_000_000),
            Some(0),
            "the subscriber's own wish still caps"
        );
        assert_eq!(
            fit(&layers, u8::MAX, 100_000),
            Some(0),
            "the lowest even when nothing fits"
        );
        let top_off = [(0u8, 150_000u64, true), (1, 450_000, true), (2, 0, false)];
        assert_eq!(fit(&top_off, u8::MAX, 5_000_000), Some(1), "only layers sending");
        let low_off = [(0u8, 0u64, false), (1, 450_000, true)];
        assert_eq!(fit(&low_off, u8::MAX, 100_000), Some(1));
        assert_eq!(fit(&[(0, 0, false)], u8::MAX, 100_000), None);
    }

    #[test]
    fn the_rate_meter_measures_whole_windows() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..=100u64 {
            m.add(1250, t0 + Duration::from_millis(10 * i));
        }
        // 101 packets of 10 kbit over 1 s.
        assert!((1_000_000..=1_020_000).contains(&m.bps()), "{}", m.bps());
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_set() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 2.0 * f64::from(i) + 1.0)).collect();
        assert!((slope(&pts).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
