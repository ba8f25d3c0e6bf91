//! Active speakers, pure: who is speaking in a meeting, loudest first, from the RFC 6464
//! audio levels (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`) that publishers put on
//! their audio packets. No clock and no sockets: packets and evaluations carry `now`.
//!
//! Two stages, as LiveKit's audio-level observer and Jitsi's dominant-speaker
//! identification do it:
//!
//! - [`LevelMeter`], one per published audio track, on the forwarding path: it folds
//!   each packet's level into a [`Params::window`] of audio (measured in RTP time, so
//!   network jitter does not stretch it). A window counts as speech only when at least
//!   [`Params::min_active_percent`] of it was at or above [`Params::active_level`] (a
//!   cough or a click does not); its level is the loudest packet, weighted by how much
//!   of the window was speech, smoothed across windows. A window mostly silent sets the
//!   level to 0; no packets for two windows too (a sender that stopped).
//! - [`Detector`], one per meeting, on the shard's timer every
//!   [`Params::evaluate_every`]: the list of speakers, with hysteresis so that it does
//!   not flap. A speaker is listed once its level crosses the threshold and stays listed
//!   until it has been below it for [`Params::hold`] (pauses between words and
//!   sentences); the first entry, the dominant speaker, changes only when another has
//!   been louder by [`Params::switch_margin_db`] for [`Params::switch_after`], or when
//!   it stops being listed. Two people talking over each other at the same loudness
//!   leave the dominant one in place. The list is announced only when its members or
//!   its dominant speaker change (levels alone do not make a message), at most once per
//!   [`Params::min_gap`].
//!
//! The voice-activity bit is not used: senders differ in whether they set it (it is only
//! meaningful with `vad=on`), and LiveKit and Jitsi ignore it too.

use std::time::{Duration, Instant};

use gatehouse_signaling::protocol::{ActiveSpeaker, ParticipantId, TrackId};

/// The detector's tuning. [`Params::default`] is what the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// A packet at this level or louder (in -dBov: 0 is the loudest, 127 silence) is
    /// speech. 35 is LiveKit's default: ordinary speech at a laptop microphone reads
    /// 20 to 35, a quiet room 50 and more.
    pub active_level: u8,
    /// The share of a window (percent) that must be speech for the window to count.
    pub min_active_percent: u8,
    /// How much audio one level measurement covers.
    pub window: Duration,
    /// Windows the exponential smoothing spans (the centre of mass of a moving average
    /// over this many windows); 0 or 1 for none.
    pub smooth_windows: u32,
    /// How often the meeting's list is evaluated.
    pub evaluate_every: Duration,
    /// A listed speaker stays listed while silent for this long.
    pub hold: Duration,
    /// A challenger must be louder than the dominant speaker for this long to replace it.
    pub switch_after: Duration,
    /// ... and louder by at least this much (dB).
    pub switch_margin_db: f32,
    /// Announcements are at least this far apart; a change inside it waits.
    pub min_gap: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            active_level: 35,
            min_active_percent: 40,
            window: Duration::from_millis(400),
            smooth_windows: 2,
            evaluate_every: Duration::from_millis(200),
            hold: Duration::from_millis(800),
            switch_after: Duration::from_millis(600),
            switch_margin_db: 3.0,
            min_gap: Duration::from_millis(300),
        }
    }
}

impl Params {
    /// The linear level (0 to 1) a window at `active_level` throughout has.
    fn threshold(&self) -> f32 {
        linear(f32::from(self.active_level))
    }
}

/// -dBov to a linear amplitude in 0..=1.
fn linear(dbov: f32) -> f32 {
    10f32.powf(-dbov / 20.0)
}

/// The level byte of an RFC 6464 header extension (its first byte: V flag, then 7
/// bits of -dBov). `None` for an empty extension.
pub fn parse_level(payload: &[u8]) -> Option<u8> {
    payload.first().map(|b| b & 0x7f)
}

/// One audio track's level, measured over windows of its packets. See the module documentation.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    /// The audio-level extension's id on the publisher's connection.
    ext_id: u8,
    /// RTP ticks per millisecond (48 for Opus).
    ticks_per_ms: u32,
    /// The last packet's RTP timestamp and arrival.
    last_timestamp: Option<u32>,
    last_packet: Option<Instant>,
    /// The window being filled: audio seen, of which speech, and its loudest level.
    observed_ms: u32,
    active_ms: u32,
    loudest: u8,
    /// The level of the last complete windows, smoothed.
    smoothed: f32,
}

/// An Opus frame is 20 ms unless the timestamps say otherwise.
const DEFAULT_FRAME_MS: u32 = 20;

impl LevelMeter {
    /// A meter for a track whose connection negotiated the extension as `ext_id`, with
    /// an RTP clock of `clock_rate` Hz.
    pub fn new(ext_id: u8, clock_rate: u32) -> Self {
        Self {
            ext_id,
            ticks_per_ms: (clock_rate / 1000).max(1),
            last_timestamp: None,
            last_packet: None,
            observed_ms: 0,
            active_ms: 0,
            loudest: 127,
            smoothed: 0.0,
        }
    }

    /// The extension id this meter reads.
    pub fn ext_id(&self) -> u8 {
        self.ext_id
    }

    /// One packet's level (`level` in -dBov; values above 127 are treated as 127) and
    /// RTP timestamp. The packet lasts from the previous packet's timestamp to its own,
    /// at most one window (a sender restart or a DTX gap), nothing when it is older.
    pub fn observe(&mut self, level: u8, timestamp: u32, now: Instant, params: &Params) {
        let window_ms = params.window.as_millis().min(u128::from(u32::MAX)) as u32;
        let duration = match self.last_timestamp {
            None => DEFAULT_FRAME_MS,
            Some(last) => {
                let ticks = timestamp.wrapping_sub(last) as i32;
                if ticks <= 0 {
                    0
                } else {
                    (ticks as u32 / self.ticks_per_ms).min(window_ms)
                }
            }
        };
        if duration > 0 || self.last_timestamp.is_none() {
            self.last_timestamp = Some(timestamp);
        }
        self.reset_if_stale(now, params);
        self.last_packet = Some(now);
        let level = level.min(127);
        self.observed_ms += duration;
        if level <= params.active_level {
            self.active_ms += duration;
            self.loudest = self.loudest.min(level);
        }
        if self.observed_ms >= window_ms {
            self.close_window(window_ms, params);
        }
    }

    fn close_window(&mut self, window_ms: u32, params: &Params) {
        let min_active = u32::from(params.min_active_percent) * window_ms / 100;
        self.smoothed = if self.active_ms > 0 && self.active_ms >= min_active {
            // The loudest level, lowered by how little of the window was speech (0 dB when
            // all of it was): a burst is not as loud as a sentence.
            let weight = 20.0 * (self.active_ms as f32 / window_ms as f32).log10();
            let level = linear(f32::from(self.loudest) - weight).min(1.0);
            let factor = if params.smooth_windows > 1 {
                2.0 / (params.smooth_windows as f32 + 1.0)
            } else {
                1.0
            };
            self.smoothed + (level - self.smoothed) * factor
        } else {
            0.0
        };
        self.observed_ms = 0;
        self.active_ms = 0;
        self.loudest = 127;
    }

    fn reset_if_stale(&mut self, now: Instant, params: &Params) {
        if self
            .last_packet
            .is_some_and(|at| now.saturating_duration_since(at) >= params.window * 2)
        {
            self.smoothed = 0.0;
            self.observed_ms = 0;
            self.active_ms = 0;
            self.loudest = 127;
        }
    }

    /// The smoothed level (0 to 1) of the last complete windows; 0 once no packet came
    /// for two windows.
    pub fn level(&mut self, now: Instant, params: &Params) -> f32 {
        self.reset_if_stale(now, params);
        self.smoothed
    }
}

/// One audio track as the detector tracks it.
#[derive(Debug, Clone)]
struct Entry {
    track_id: TrackId,
    participant_id: ParticipantId,
    level: f32,
    listed: bool,
    /// Whether the evaluation under way has had its level (those without are dropped).
    seen: bool,
    /// When its level was last at or above the threshold.
    last_active: Option<Instant>,
    /// Since when it has been louder than the dominant speaker (by the margin).
    louder_since: Option<Instant>,
}

/// A meeting's active speakers. See the module documentation.
#[derive(Debug, Clone)]
pub struct Detector {
    params: Params,
    entries: Vec<Entry>,
    dominant: Option<TrackId>,
    /// What was last announced (track ids in order), and when.
    announced: Vec<TrackId>,
    announced_at: Option<Instant>,
    next_evaluation: Option<Instant>,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(Params::default())
    }
}

impl Detector {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            entries: Vec::new(),
            dominant: None,
            announced: Vec::new(),
            announced_at: None,
            next_evaluation: None,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Whether an evaluation is due at `now` (the first call always is).
    pub fn due(&self, now: Instant) -> bool {
        self.next_evaluation.is_none_or(|at| now >= at)
    }

    /// Evaluates the list from every audio track's current level (`levels`: the tracks
    /// that carry audio levels; a track missing from it is gone, and leaves the list at
    /// once). Returns the new list when it must be announced. Call when [`due`](Self::due).
    pub fn evaluate<'a>(
        &mut self,
        now: Instant,
        levels: impl IntoIterator<Item = (&'a TrackId, &'a ParticipantId, f32)>,
    ) -> Option<Vec<ActiveSpeaker>> {
        self.next_evaluation = Some(now + self.params.evaluate_every);
        let threshold = self.params.threshold();
        // Marked in place, not collected: an evaluation (every 200 ms per room) allocates
        // nothing unless a track is new to it.
        for entry in &mut self.entries {
            entry.seen = false;
        }
        for (track_id, participant_id, level) in levels {
            let entry = match self.entries.iter_mut().position(|e| &e.track_id == track_id) {
                Some(i) => &mut self.entries[i],
                None => {
                    self.entries.push(Entry {
                        track_id: track_id.clone(),
                        participant_id: participant_id.clone(),
                        level: 0.0,
                        listed: false,
                        seen: false,
                        last_active: None,
                        louder_since: None,
                    });
                    self.entries.last_mut().expect("just pushed")
                }
            };
            entry.level = level;
            entry.seen = true;
            if level > 0.0 && level >= threshold {
                entry.listed = true;
                entry.last_active = Some(now);
            } else if entry.listed
                && entry
                    .last_active
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.params.hold)
            {
                entry.listed = false;
            }
            if !entry.listed {
                entry.louder_since = None;
            }
        }
        self.entries.retain(|e| e.seen);
        self.choose_dominant(now);
        self.announce(now)
    }

    fn choose_dominant(&mut self, now: Instant) {
        let current = self
            .dominant
            .as_ref()
            .and_then(|d| self.entries.iter().position(|e| &e.track_id == d && e.listed));
        let Some(current) = current else {
            // Nobody (listed) holds the floor: the loudest listed speaker takes it.
            self.dominant = self
                .entries
                .iter()
                .filter(|e| e.listed)
                .fold(None::<&Entry>, |best, e| match best {
                    Some(b) if b.level >= e.level => Some(b),
                    _ => Some(e),
                })
                .map(|e| e.track_id.clone());
            for e in &mut self.entries {
                e.louder_since = None;
            }
            return;
        };
        let margin = 10f32.powf(self.params.switch_margin_db / 20.0);
        let floor = self.entries[current].level;
        let mut winner: Option<(usize, Instant)> = None;
        for (i, e) in self.entries.iter_mut().enumerate() {
            if i == current || !e.listed {
                e.louder_since = None;
                continue;
            }
            if e.level > floor * margin && e.level > 0.0 {
                let since = *e.louder_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.params.switch_after
                    && winner.is_none_or(|(_, w)| since < w)
                {
                    winner = Some((i, since));
                }
            } else {
                e.louder_since = None;
            }
        }
        if let Some((i, _)) = winner {
            self.dominant = Some(self.entries[i].track_id.clone());
            for e in &mut self.entries {
                e.louder_since = None;
            }
        }
    }

    /// The list as it stands: the dominant speaker, then the other listed ones loudest first.
    fn current(&self) -> Vec<&Entry> {
        let mut listed: Vec<&Entry> = self.entries.iter().filter(|e| e.listed).collect();
        listed.sort_by(|a, b| {
            let a_dom = Some(&a.track_id) == self.dominant.as_ref();
            let b_dom = Some(&b.track_id) == self.dominant.as_ref();
            b_dom.cmp(&a_dom).then(b.level.total_cmp(&a.level))
        });
        listed
    }

    fn announce(&mut self, now: Instant) -> Option<Vec<ActiveSpeaker>> {
        let current = self.current();
        let dominant_same = current.first().map(|e| &e.track_id) == self.announced.first();
        let members_same =
            current.len() == self.announced.len() && current.iter().all(|e| self.announced.contains(&e.track_id));
        if dominant_same && members_same {
            return None;
        }
        if self
            .announced_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.params.min_gap)
        {
            return None;
        }
        let speakers: Vec<ActiveSpeaker> = current
            .iter()
            .map(|e| ActiveSpeaker {
                participant_id: e.participant_id.clone(),
                track_id: Some(e.track_id.clone()),
                level: (e.level.min(1.0) * 1000.0).round() / 1000.0,
            })
            .collect();
        self.announced = current.iter().map(|e| e.track_id.clone()).collect();
        self.announced_at = Some(now);
        Some(speakers)
    }

    /// Whether anything is left to evaluate: tracks with levels, or a list that was
    /// announced non-empty (its end must still be announced).
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.announced.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOUD: u8 = 20;
    const QUIET: u8 = 60;
    const SILENT: u8 = 127;
    /// 20 ms of Opus at 48 kHz.
    const FRAME: u32 = 960;
    const FRAME_MS: u64 = 20;

    /// A meeting's audio tracks, fed packet by packet, evaluated as the shard does.
    struct Sim {
        params: Params,
        start: Instant,
        ms: u64,
        tracks: Vec<(TrackId, ParticipantId, LevelMeter, u32)>,
        detector: Detector,
        /// Every announcement: (ms, participant ids in order).
        announced: Vec<(u64, Vec<String>)>,
    }

    impl Sim {
        fn new(names: &[&str]) -> Self {
            let params = Params::default();
            Self {
                params,
                start: Instant::now(),
                ms: 0,
                tracks: names
                    .iter()
                    .map(|n| {
                        (
                            TrackId::new(format!("t_{n}")),
                            ParticipantId::new(format!("p_{n}")),
                            LevelMeter::new(1, 48_000),
                            rand::random(),
                        )
                    })
                    .collect(),
                detector: Detector::new(params),
                announced: Vec::new(),
            }
        }

        fn now(&self) -> Instant {
            self.start + Duration::from_millis(self.ms)
        }

        /// `ms` of audio; `level(name, ms)` gives each track's level for the frame at
        /// `ms`, `None` for no packet.
        fn run(&mut self, ms: u64, level: impl Fn(&str, u64) -> Option<u8>) {
            let end = self.ms + ms;
            while self.ms < end {
                let now = self.now();
                for (track, _, meter, ts) in &mut self.tracks {
                    let name = &track.as_str()[2..];
                    *ts = ts.wrapping_add(FRAME);
                    if let Some(l) = level(name, self.ms) {
                        meter.observe(l, *ts, now, &self.params);
                    }
                }
                if self.detector.due(now) {
                    let levels: Vec<(TrackId, ParticipantId, f32)> = self
                        .tracks
                        .iter_mut()
                        .map(|(t, p, m, _)| (t.clone(), p.clone(), m.level(now, &self.params)))
                        .collect();
                    if let Some(list) = self.detector.evaluate(now, levels.iter().map(|(t, p, l)| (t, p, *l))) {
                        self.announced.push((
                            self.ms,
                            list.iter().map(|s| s.participant_id.as_str()[2..].to_owned()).collect(),
                        ));
                    }
                }
                self.ms += FRAME_MS;
            }
        }

        fn remove(&mut self, name: &str) {
            self.tracks.retain(|(t, ..)| &t.as_str()[2..] != name);
        }

        fn lists(&self) -> Vec<Vec<String>> {
            self.announced.iter().map(|(_, l)| l.clone()).collect()
        }

        fn dominant_at(&self, ms: u64) -> Option<String> {
            self.announced
                .iter()
                .take_while(|(at, _)| *at <= ms)
                .last()
                .and_then(|(_, l)| l.first().cloned())
        }
    }

    fn strs(lists: &[&[&str]]) -> Vec<Vec<String>> {
        lists
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn parses_the_level_and_ignores_the_voice_activity_bit() {
        assert_eq!(parse_level(&[0x80 | 30]), Some(30));
        assert_eq!(parse_level(&[30]), Some(30));
        assert_eq!(parse_level(&[0xff, 1, 2]), Some(127));
        assert_eq!(parse_level(&[]), None);
    }

    #[test]
    fn a_meter_reads_speech_silence_and_a_stopped_sender() {
        let params = Params::default();
        let start = Instant::now();
        let mut meter = LevelMeter::new(1, 48_000);
        let mut ts = 0u32;
        let mut at = |meter: &mut LevelMeter, frames: u64, from: u64, level: u8| {
            for i in 0..frames {
                ts = ts.wrapping_add(FRAME);
                meter.observe(level, ts, start + Duration::from_millis((from + i) * FRAME_MS), &params);
            }
        };
        at(&mut meter, 19, 0, LOUD);
        assert_eq!(meter.level(start, &params), 0.0, "no window complete yet");
        at(&mut meter, 1, 19, LOUD);
        let first = meter.level(start + Duration::from_millis(400), &params);
        // Loud throughout: -20 dBov is 0.1, two-thirds of it after one window of smoothing.
        assert!((first - 0.1 * 2.0 / 3.0).abs() < 1e-4, "{first}");
        at(&mut meter, 20, 20, LOUD);
        let second = meter.level(start + Duration::from_millis(800), &params);
        assert!(second > first && second < 0.1, "smoothed towards 0.1: {second}");
        assert!(second >= params.threshold());
        // A window of silence: 0 at once.
        at(&mut meter, 20, 40, SILENT);
        assert_eq!(meter.level(start + Duration::from_millis(1200), &params), 0.0);
        // Loud again, then the sender stops: 0 after two windows without packets.
        at(&mut meter, 20, 60, LOUD);
        let t = start + Duration::from_millis(1600);
        assert!(meter.level(t, &params) > 0.0);
        assert!(meter.level(t + Duration::from_millis(700), &params) > 0.0);
        assert_eq!(meter.level(t + Duration::from_millis(800), &params), 0.0);
    }

    #[test]
    fn a_window_needs_enough_speech_and_a_burst_counts_less_than_a_sentence() {
        let params = Params::default();
        let start = Instant::now();
        let window = |loud_frames: u64| {
            let mut meter = LevelMeter::new(1, 48_000);
            for i in 0..20u64 {
                let level = if i < loud_frames { LOUD } else { SILENT };
                meter.observe(
                    level,
                    (i as u32 + 1) * FRAME,
                    start + Duration::from_millis(i * FRAME_MS),
                    &params,
                );
            }
            meter.level(start + Duration::from_millis(400), &params)
        };
        // 40 % of a 400 ms window is 160 ms: 7 frames are too few, 8 enough.
        assert_eq!(window(7), 0.0);
        assert!(window(8) > 0.0);
        assert!(window(8) < window(14) && window(14) < window(20));
        // A quiet room never counts.
        let mut meter = LevelMeter::new(1, 48_000);
        for i in 0..40u64 {
            meter.observe(
                QUIET,
                (i as u32 + 1) * FRAME,
                start + Duration::from_millis(i * FRAME_MS),
                &params,
            );
        }
        assert_eq!(meter.level(start + Duration::from_millis(800), &params), 0.0);
    }

    #[test]
    fn durations_come_from_rtp_time_not_arrival() {
        let params = Params::default();
        let start = Instant::now();
        // Twenty 20 ms frames arriving in one burst (jitter) fill one window.
        let mut meter = LevelMeter::new(1, 48_000);
        for i in 0..20u32 {
            meter.observe(LOUD, (i + 1) * FRAME, start, &params);
        }
        assert!(meter.level(start, &params) > 0.0);
        // Reordered and duplicated packets add no time; a jump counts at most one window.
        let mut meter = LevelMeter::new(1, 48_000);
        meter.observe(LOUD, 10 * FRAME, start, &params);
        for _ in 0..30 {
            meter.observe(LOUD, 5 * FRAME, start, &params);
            meter.observe(LOUD, 10 * FRAME, start, &params);
        }
        assert_eq!(meter.level(start, &params), 0.0, "no time passed");
        meter.observe(LOUD, 10 * FRAME + 48_000 * 60, start, &params);
        assert!(meter.level(start, &params) > 0.0, "one window, not sixty seconds");
        // Timestamps wrap.
        let mut meter = LevelMeter::new(1, 48_000);
        for i in 0..20u32 {
            meter.observe(LOUD, (u32::MAX - 5 * FRAME).wrapping_add(i * FRAME), start, &params);
        }
        assert!(meter.level(start, &params) > 0.0);
    }

    #[test]
    fn alternating_speakers_are_followed_without_flapping() {
        let mut sim = Sim::new(&["a", "b"]);
        // a speaks 2 s, a second of silence, b speaks 2 s, a second, a again, b again.
        let turn = |name: &str, ms: u64| {
            let phase = ms % 6000;
            let speaker = if ms >= 12_000 {
                ""
            } else if phase < 2000 {
                "a"
            } else if (3000..5000).contains(&phase) {
                "b"
            } else {
                ""
            };
            Some(if name == speaker { LOUD } else { SILENT })
        };
        sim.run(13_000, turn);
        assert_eq!(
            sim.lists(),
            strs(&[&["a"], &[], &["b"], &[], &["a"], &[], &["b"], &[]]),
            "{:?}",
            sim.announced
        );
        // Heard within a few hundred ms of starting, dropped about a second after stopping.
        let at: Vec<u64> = sim.announced.iter().map(|(ms, _)| *ms).collect();
        for (i, start) in [0u64, 3000, 6000, 9000].iter().enumerate() {
            let listed = at[2 * i] - start;
            assert!((400..=1000).contains(&listed), "turn {i} listed after {listed} ms");
            let dropped = at[2 * i + 1] - (start + 2000);
            assert!((800..=1600).contains(&dropped), "turn {i} dropped after {dropped} ms");
        }
    }

    #[test]
    fn a_short_gap_between_speakers_hands_over_once() {
        let mut sim = Sim::new(&["a", "b"]);
        // b answers 300 ms after a stops: no empty list in between, one handover.
        sim.run(5000, |name, ms| {
            let speaker = if ms < 2000 {
                "a"
            } else if ms >= 2300 {
                "b"
            } else {
                ""
            };
            Some(if name == speaker { LOUD } else { SILENT })
        });
        let lists = sim.lists();
        assert_eq!(lists.first(), Some(&vec!["a".to_owned()]));
        assert_eq!(lists.last().and_then(|l| l.first()), Some(&"b".to_owned()));
        assert!(lists.len() <= 3, "{:?}", sim.announced);
        assert!(lists.iter().all(|l| !l.is_empty()), "never empty: {:?}", sim.announced);
        assert_eq!(sim.dominant_at(4999).as_deref(), Some("b"));
    }

    #[test]
    fn coughs_and_clicks_are_not_speakers() {
        let mut sim = Sim::new(&["a", "b"]);
        // b speaks throughout; a coughs for 100 ms every second.
        sim.run(6000, |name, ms| {
            Some(match name {
                "b" => LOUD,
                _ if ms % 1000 < 100 => 0,
                _ => SILENT,
            })
        });
        assert_eq!(sim.lists(), strs(&[&["b"]]), "{:?}", sim.announced);
    }

    #[test]
    fn pauses_inside_speech_and_silence_do_not_flap() {
        let mut sim = Sim::new(&["a"]);
        // Speech in 1.2 s phrases with 400 ms pauses between them, then long silence.
        sim.run(8000, |_, ms| {
            Some(if ms < 5600 && ms % 1600 < 1200 { LOUD } else { SILENT })
        });
        assert_eq!(sim.lists(), strs(&[&["a"], &[]]), "{:?}", sim.announced);
        // Silence alone announces nothing, ever.
        let mut sim = Sim::new(&["a", "b"]);
        sim.run(10_000, |_, _| Some(SILENT));
        assert!(sim.announced.is_empty());
        // Nor do senders that send nothing.
        sim.run(2000, |_, _| None);
        assert!(sim.announced.is_empty());
    }

    #[test]
    fn two_speaking_at_once_keep_the_first_dominant_until_one_is_clearly_louder() {
        let mut sim = Sim::new(&["a", "b"]);
        // a starts, b joins at the same loudness: both listed, a stays first.
        sim.run(3000, |name, ms| {
            Some(if name == "a" || ms >= 1000 { LOUD } else { SILENT })
        });
        assert_eq!(sim.lists(), strs(&[&["a"], &["a", "b"]]), "{:?}", sim.announced);
        // b gets clearly louder (-6 dBov against -20): it takes over after switch_after,
        // and only once.
        let before = sim.announced.len();
        sim.run(3000, |name, _| Some(if name == "b" { 6 } else { LOUD }));
        let after: Vec<_> = sim.announced[before..].to_vec();
        assert_eq!(
            after.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(),
            strs(&[&["b", "a"]]),
            "{:?}",
            sim.announced
        );
        let took = after[0].0 - 3000;
        assert!((600..=1400).contains(&took), "took over after {took} ms");
        // Slightly louder (2 dB, inside the margin) is not enough to take it back.
        let before = sim.announced.len();
        sim.run(3000, |name, _| Some(if name == "a" { 18 } else { LOUD }));
        assert_eq!(sim.announced.len(), before, "{:?}", sim.announced);
    }

    #[test]
    fn a_louder_burst_shorter_than_switch_after_does_not_take_the_floor() {
        let mut sim = Sim::new(&["a", "b"]);
        sim.run(2000, |name, _| Some(if name == "a" { LOUD } else { SILENT }));
        // b bursts in loudly for 400 ms (listed, but a stays dominant).
        sim.run(400, |name, _| Some(if name == "a" { LOUD } else { 0 }));
        sim.run(4000, |name, _| Some(if name == "a" { LOUD } else { SILENT }));
        assert!(
            sim.announced
                .iter()
                .all(|(_, l)| l.first().map(String::as_str) == Some("a")),
            "{:?}",
            sim.announced
        );
    }

    #[test]
    fn a_speaker_leaving_leaves_the_list_at_once() {
        let mut sim = Sim::new(&["a", "b"]);
        sim.run(2000, |_, _| Some(LOUD));
        assert_eq!(sim.lists(), strs(&[&["a", "b"]]));
        sim.remove("a");
        let at = sim.ms;
        sim.run(1000, |_, _| Some(LOUD));
        assert_eq!(sim.lists(), strs(&[&["a", "b"], &["b"]]));
        assert!(sim.announced[1].0 - at <= 200, "{:?}", sim.announced);
        sim.remove("b");
        sim.run(1000, |_, _| Some(LOUD));
        assert_eq!(sim.lists(), strs(&[&["a", "b"], &["b"], &[]]));
        assert!(sim.detector.is_idle());
    }

    #[test]
    fn a_sender_that_stops_mid_sentence_drops_out() {
        let mut sim = Sim::new(&["a"]);
        sim.run(2000, |_, _| Some(LOUD));
        // No more packets (the track was muted at the sender, or its network died).
        sim.run(3000, |_, _| None);
        let lists = sim.lists();
        assert_eq!(lists, strs(&[&["a"], &[]]), "{:?}", sim.announced);
        let dropped = sim.announced[1].0 - 2000;
        assert!((800..=1800).contains(&dropped), "dropped after {dropped} ms");
    }

    #[test]
    fn announcements_are_rate_limited() {
        let params = Params::default();
        let mut detector = Detector::new(params);
        let start = Instant::now();
        let (a, pa) = (TrackId::new("t_a"), ParticipantId::new("p_a"));
        let (b, pb) = (TrackId::new("t_b"), ParticipantId::new("p_b"));
        let loud = linear(f32::from(LOUD));
        assert!(detector.due(start));
        let first = detector.evaluate(start, [(&a, &pa, loud)]).expect("a is heard");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].track_id.as_ref(), Some(&a));
        assert!((first[0].level - 0.1).abs() < 1e-6);
        assert!(!detector.due(start + Duration::from_millis(199)));
        // b arrives 100 ms later: the change waits for min_gap.
        let soon = start + Duration::from_millis(100);
        assert_eq!(detector.evaluate(soon, [(&a, &pa, loud), (&b, &pb, loud)]), None);
        let later = start + Duration::from_millis(300);
        let list = detector
            .evaluate(later, [(&a, &pa, loud), (&b, &pb, loud)])
            .expect("announced once the gap has passed");
        let order: Vec<_> = list.iter().map(|s| s.participant_id.as_str()).collect();
        assert_eq!(order, ["p_a", "p_b"]);
        // A level change alone announces nothing.
        let quieter = linear(30.0);
        assert_eq!(
            detector.evaluate(start + Duration::from_secs(1), [(&a, &pa, quieter), (&b, &pb, loud)]),
            None
        );
    }
}
