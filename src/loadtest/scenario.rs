//! The shape of a load test and its timeline, as pure values.
//!
//! A [`Shape`] says how many meetings, publishers and subscribers, what each
//! publisher sends, how fast participants join and how long the steady phase
//! lasts; [`Shape::validate`] refuses what cannot be meant. The [`Timeline`]
//! turns elapsed time into a [`Phase`] and the ramp into start offsets, so the
//! runner never decides timing on its own and the schedule is testable without
//! a clock.

use std::time::Duration;

use serde::Serialize;

use gatehouse_sdk::synthetic::{SyntheticCodec, SyntheticConfig};

/// Most meetings one run may create.
pub const MAX_MEETINGS: u32 = 1_000;
/// Most participants in one meeting (the gateway's own limit).
pub const MAX_PER_MEETING: u32 = 1_000;
/// Most participants in one run: each is two peer connections on this machine.
pub const MAX_PARTICIPANTS: u32 = 5_000;
/// Longest steady phase: a day. Longer runs are soak tests, not load tests.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Fastest ramp, participants per second.
pub const MAX_RAMP: f64 = 1_000.0;
/// Longest a join storm may take to start everyone.
pub const MAX_STORM_WITHIN: Duration = Duration::from_secs(600);
/// How long the ramp waits past the last scheduled join for every participant to
/// settle (joined and media flowing, or failed) before the steady phase starts anyway.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// An idle run (`--idle`): how long after its publishers went quiet the measured window
/// starts, so that the last packets, their feedback and reports are not in it.
pub const QUIET_GRACE: Duration = Duration::from_secs(2);

/// What a participant does in its meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes synthetic audio and/or video, and receives everyone else's.
    Publisher,
    /// Only receives.
    Subscriber,
}

/// One synthetic stream every publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamShape {
    /// Payload bitrate, kbit/s.
    pub kbps: u32,
    /// Frames per second (audio: one packet per frame).
    pub fps: u32,
}

impl StreamShape {
    /// The SDK's synthetic sender configuration for this stream.
    pub fn synthetic(&self, codec: SyntheticCodec) -> SyntheticConfig {
        let base = match codec {
            SyntheticCodec::Opus => SyntheticConfig::audio(),
            SyntheticCodec::Vp8 => SyntheticConfig::video(),
        };
        SyntheticConfig {
            bitrate_bps: self.kbps.saturating_mul(1000),
            frame_rate: self.fps,
            // A keyframe every two seconds, whatever the frame rate.
            keyframe_interval: if codec == SyntheticCodec::Vp8 { 2 * self.fps } else { 0 },
            ..base
        }
    }

    /// RTP packets per second this stream sends.
    pub fn packets_per_sec(&self, codec: SyntheticCodec) -> f64 {
        let config = self.synthetic(codec);
        config.packets_per_frame() as f64 * f64::from(config.frame_rate)
    }
}

/// A join storm in the steady phase (`--storm`): more participants join, in meetings of
/// their own of the run's shape, while the run's calls forward, to see what joining
/// (signaling, ICE, DTLS, SDP) costs the media already flowing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Storm {
    /// Participants joining (a whole number of meetings of the run's shape).
    pub participants: u32,
    /// They all start within this, evenly spread (the first at once).
    #[serde(serialize_with = "secs")]
    pub within: Duration,
    /// The storm starts this long after the steady phase did (the window before it is the
    /// latency it is compared with).
    #[serde(serialize_with = "secs")]
    pub after: Duration,
    /// The storm's participants all leave at once this long after every one of them settled
    /// (`--storm-leave-after`: a large meeting ending), if given.
    #[serde(serialize_with = "opt_secs")]
    pub leave_after: Option<Duration>,
}

impl Storm {
    /// How many storm participants should have been started `since` the storm began.
    pub fn due(&self, since: Duration) -> usize {
        let n = u128::from(self.participants);
        let within = self.within.as_nanos();
        if within == 0 {
            return n as usize;
        }
        (since.as_nanos() * n / within + 1).min(n) as usize
    }

    /// When storm participant `index` starts, from the storm's start (to the nanosecond,
    /// rounded up, so it is due then).
    pub fn start_offset(&self, index: usize) -> Duration {
        let n = u128::from(self.participants.max(1));
        let nanos = (self.within.as_nanos() * index as u128).div_ceil(n);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Everything that decides the load, checked by [`Shape::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    /// Meetings to create.
    pub meetings: u32,
    /// Publishers per meeting.
    pub publishers: u32,
    /// Receive-only participants per meeting.
    pub subscribers: u32,
    /// The audio stream each publisher sends, if any.
    pub audio: Option<StreamShape>,
    /// The video stream each publisher sends, if any.
    pub video: Option<StreamShape>,
    /// Participants started per second, across all meetings.
    pub ramp_per_sec: f64,
    /// Length of the steady phase (after everyone joined).
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// A join storm in the steady phase, if any.
    pub storm: Option<Storm>,
    /// An idle run (`--idle`): the publishers send until everyone receives everything (every
    /// connection up, every leg negotiated), then stop sending and announce their tracks
    /// muted when the steady phase starts, and everyone stays connected with no media either
    /// way. The gateway's figures are measured from [`QUIET_GRACE`] after that.
    pub idle: bool,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Why a shape was refused: a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

impl Shape {
    /// Refuses shapes that measure nothing or that no single machine should try.
    pub fn validate(&self) -> Result<(), ShapeError> {
        let bad = |s: String| Err(ShapeError(s));
        if !(1..=MAX_MEETINGS).contains(&self.meetings) {
            return bad(format!("--meetings must be 1 to {MAX_MEETINGS}, not {}", self.meetings));
        }
        if self.publishers == 0 {
            return bad("--publishers must be at least 1: without a publisher there is no media to measure".into());
        }
        let per_meeting = self.publishers.saturating_add(self.subscribers);
        if per_meeting < 2 {
            return bad("each meeting needs at least 2 participants (e.g. --publishers 2, or --subscribers 1) so someone receives".into());
        }
        if per_meeting > MAX_PER_MEETING {
            return bad(format!(
                "{per_meeting} participants per meeting is over the gateway's limit of {MAX_PER_MEETING}"
            ));
        }
        let total = u64::from(self.meetings) * u64::from(per_meeting);
        if total > u64::from(MAX_PARTICIPANTS) {
            return bad(format!(
                "{total} participants in all is more than one load tester should run (at most {MAX_PARTICIPANTS}); \
                 split the load over several machines"
            ));
        }
        if self.audio.is_none() && self.video.is_none() {
            return bad("--no-audio and --no-video together leave nothing to send".into());
        }
        if let Some(audio) = self.audio {
            if !(6..=510).contains(&audio.kbps) {
                return bad(format!("--audio-kbps must be 6 to 510, not {}", audio.kbps));
            }
            if !(1..=200).contains(&audio.fps) {
                return bad(format!("--audio-pps must be 1 to 200, not {}", audio.fps));
            }
            if audio.kbps * 1000 / 8 / audio.fps > 1_100 {
                return bad(format!(
                    "{} kbit/s of audio at {} packets/s makes packets over 1100 bytes; raise --audio-pps",
                    audio.kbps, audio.fps
                ));
            }
        }
        if let Some(video) = self.video {
            if !(30..=50_000).contains(&video.kbps) {
                return bad(format!("--video-kbps must be 30 to 50000, not {}", video.kbps));
            }
            if !(1..=120).contains(&video.fps) {
                return bad(format!("--video-fps must be 1 to 120, not {}", video.fps));
            }
        }
        if !(self.ramp_per_sec.is_finite() && self.ramp_per_sec > 0.0 && self.ramp_per_sec <= MAX_RAMP) {
            return bad(format!(
                "--ramp must be more than 0 and at most {MAX_RAMP} participants per second, not {}",
                self.ramp_per_sec
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!(
                "--duration must be 1 s to {} s, not {} s",
                MAX_DURATION.as_secs(),
                self.duration.as_secs_f64()
            ));
        }
        if self.idle {
            if self.storm.is_some() {
                return bad("--idle and --storm do not go together: a storm's participants send media".into());
            }
            if self.duration <= QUIET_GRACE {
                return bad(format!(
                    "--duration must be more than {} s with --idle (the first {} s after the publishers \
                     went quiet are not measured)",
                    QUIET_GRACE.as_secs(),
                    QUIET_GRACE.as_secs()
                ));
            }
        }
        if let Some(storm) = self.storm {
            if storm.participants == 0 || storm.participants % per_meeting != 0 {
                return bad(format!(
                    "--storm must be a positive multiple of the {per_meeting} participants per meeting \
                     (storm participants fill meetings of the run's shape), not {}",
                    storm.participants
                ));
            }
            let meetings = self.meetings + storm.participants / per_meeting;
            if meetings > MAX_MEETINGS || total + u64::from(storm.participants) > u64::from(MAX_PARTICIPANTS) {
                return bad(format!(
                    "the storm makes {} participants in {meetings} meetings: at most {MAX_PARTICIPANTS} \
                     participants and {MAX_MEETINGS} meetings per run",
                    total + u64::from(storm.participants)
                ));
            }
            if storm.within.is_zero() || storm.within > MAX_STORM_WITHIN {
                return bad(format!(
                    "--storm-within must be 1 s to {} s, not {} s",
                    MAX_STORM_WITHIN.as_secs(),
                    storm.within.as_secs_f64()
                ));
            }
            if storm.after.is_zero() {
                return bad("--storm-after must be at least 1 s: the latency before the storm is its yardstick".into());
            }
            if storm.leave_after.is_some_and(|d| d.is_zero()) {
                return bad("--storm-leave-after must be at least 1 s".into());
            }
            if storm.after + storm.within >= self.duration {
                return bad(format!(
                    "--duration must be more than --storm-after + --storm-within ({} s): the storm happens \
                     inside the steady phase (leave time for its participants to settle, {} s at most)",
                    (storm.after + storm.within).as_secs_f64(),
                    SETTLE_TIMEOUT.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// When the gateway's figures start being measured, given when the steady phase
    /// started: at once, or [`QUIET_GRACE`] later in an idle run (its publishers go quiet
    /// when the steady phase starts).
    pub fn measured_from(&self, steady_start: Duration) -> Duration {
        if self.idle {
            steady_start + QUIET_GRACE
        } else {
            steady_start
        }
    }

    /// Meetings the storm's participants fill (after the run's own).
    pub fn storm_meetings(&self) -> u32 {
        self.storm.map_or(0, |s| s.participants / self.per_meeting().max(1))
    }

    /// Who joins in the storm, in joining order: as [`plan`](Self::plan), in the storm's
    /// meetings (numbered after the run's own).
    pub fn storm_plan(&self) -> Vec<Seat> {
        let storm = Shape {
            meetings: self.storm_meetings(),
            ..self.clone()
        };
        let mut seats = storm.plan();
        for seat in &mut seats {
            seat.meeting += self.meetings;
        }
        seats
    }

    /// Participants per meeting.
    pub fn per_meeting(&self) -> u32 {
        self.publishers + self.subscribers
    }

    /// Participants in the whole run.
    pub fn total_participants(&self) -> usize {
        self.meetings as usize * self.per_meeting() as usize
    }

    /// Tracks each publisher sends.
    pub fn tracks_per_publisher(&self) -> u32 {
        u32::from(self.audio.is_some()) + u32::from(self.video.is_some())
    }

    /// Streams the run should receive: in each meeting, every participant gets
    /// every track of every other publisher.
    pub fn expected_streams(&self) -> u64 {
        let receivers_per_publisher = u64::from(self.per_meeting() - 1);
        u64::from(self.meetings)
            * u64::from(self.publishers)
            * receivers_per_publisher
            * u64::from(self.tracks_per_publisher())
    }

    /// RTP packets per second one publisher sends, all tracks.
    pub fn publisher_packets_per_sec(&self) -> f64 {
        self.audio.map_or(0.0, |a| a.packets_per_sec(SyntheticCodec::Opus))
            + self.video.map_or(0.0, |v| v.packets_per_sec(SyntheticCodec::Vp8))
    }

    /// Packets per second the gateway should forward at full strength.
    pub fn expected_forwarded_per_sec(&self) -> f64 {
        f64::from(self.meetings)
            * f64::from(self.publishers)
            * f64::from(self.per_meeting() - 1)
            * self.publisher_packets_per_sec()
    }

    /// Who joins, in joining order: publishers of every meeting first (so media
    /// flows as early as possible), meetings interleaved so each fills evenly.
    pub fn plan(&self) -> Vec<Seat> {
        let mut seats = Vec::with_capacity(self.total_participants());
        for slot in 0..self.per_meeting() {
            for meeting in 0..self.meetings {
                let role = if slot < self.publishers {
                    Role::Publisher
                } else {
                    Role::Subscriber
                };
                seats.push(Seat { meeting, slot, role });
            }
        }
        seats
    }

    /// The run's timeline for this shape.
    pub fn timeline(&self) -> Timeline {
        Timeline {
            participants: self.total_participants(),
            ramp_per_sec: self.ramp_per_sec,
            duration: self.duration,
            settle_timeout: SETTLE_TIMEOUT,
        }
    }
}

/// One participant in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    /// Index of its meeting, from 0.
    pub meeting: u32,
    /// Its place in the meeting, from 0 (publishers first).
    pub slot: u32,
    /// Publisher or subscriber.
    pub role: Role,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Participants are joining; the steady phase has not started.
    Ramp,
    /// Everyone has settled; measuring until `ends_at` (elapsed time since the start).
    Steady {
        /// When the steady phase began.
        started_at: Duration,
        /// When it ends.
        ends_at: Duration,
    },
    /// The steady phase is over: stop.
    Done,
}

/// The run's timing as a pure function of elapsed time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// Participants to start.
    pub participants: usize,
    /// Starts per second.
    pub ramp_per_sec: f64,
    /// Steady phase length.
    pub duration: Duration,
    /// Grace after the last scheduled start for everyone to settle.
    pub settle_timeout: Duration,
}

impl Timeline {
    /// When participant `index` (in plan order) starts: the first at once, then
    /// one every `1 / ramp_per_sec`.
    pub fn start_offset(&self, index: usize) -> Duration {
        Duration::from_secs_f64(index as f64 / self.ramp_per_sec)
    }

    /// How many participants should have been started by `elapsed`.
    pub fn due(&self, elapsed: Duration) -> usize {
        let started = (elapsed.as_secs_f64() * self.ramp_per_sec).floor() as usize + 1;
        started.min(self.participants)
    }

    /// When the last participant is scheduled to start.
    pub fn ramp_end(&self) -> Duration {
        self.start_offset(self.participants.saturating_sub(1))
    }

    /// When the steady phase starts: once everyone settled (at `all_settled_at`)
    /// but not before the last start, and at the latest `settle_timeout` after it.
    /// `None` while that is not yet known at `elapsed`.
    pub fn steady_start(&self, elapsed: Duration, all_settled_at: Option<Duration>) -> Option<Duration> {
        let latest = self.ramp_end() + self.settle_timeout;
        let start = match all_settled_at {
            Some(at) => at.max(self.ramp_end()).min(latest),
            None => latest,
        };
        (elapsed >= start).then_some(start)
    }

    /// The phase at `elapsed`, given when (if yet) every participant settled.
    pub fn phase(&self, elapsed: Duration, all_settled_at: Option<Duration>) -> Phase {
        match self.steady_start(elapsed, all_settled_at) {
            None => Phase::Ramp,
            Some(started_at) => {
                let ends_at = started_at + self.duration;
                if elapsed >= ends_at {
                    Phase::Done
                } else {
                    Phase::Steady { started_at, ends_at }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            meetings: 2,
            publishers: 2,
            subscribers: 1,
            audio: Some(StreamShape { kbps: 32, fps: 50 }),
            video: Some(StreamShape { kbps: 500, fps: 30 }),
            ramp_per_sec: 4.0,
            duration: Duration::from_secs(10),
            storm: None,
            idle: false,
        }
    }

    #[test]
    fn an_idle_run_is_measured_after_its_publishers_went_quiet() {
        let idle = Shape { idle: true, ..shape() };
        idle.validate().unwrap();
        let s = Duration::from_secs;
        assert_eq!(idle.measured_from(s(7)), s(7) + QUIET_GRACE);
        assert_eq!(
            shape().measured_from(s(7)),
            s(7),
            "a run with media is measured at once"
        );
        let e = Shape {
            duration: QUIET_GRACE,
            ..idle.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.0.contains("--duration must be more than 2 s with --idle"), "{e}");
        let e = Shape {
            duration: s(30),
            storm: storm(3, 10, 10),
            ..idle
        }
        .validate()
        .unwrap_err();
        assert!(e.0.contains("--idle and --storm"), "{e}");
    }

    fn storm(participants: u32, within: u64, after: u64) -> Option<Storm> {
        Some(Storm {
            participants,
            within: Duration::from_secs(within),
            after: Duration::from_secs(after),
            leave_after: None,
        })
    }

    #[test]
    fn a_storm_fills_meetings_of_its_own_evenly_in_time() {
        // Issue 13's shape: 50 calls, then 200 more participants within 10 s.
        let s = Shape {
            meetings: 50,
            publishers: 2,
            subscribers: 0,
            duration: Duration::from_secs(60),
            storm: storm(200, 10, 15),
            ..shape()
        };
        s.validate().unwrap();
        assert_eq!(s.storm_meetings(), 100);
        let plan = s.storm_plan();
        assert_eq!(plan.len(), 200);
        assert!(
            plan.iter().all(|seat| (50..150).contains(&seat.meeting)),
            "meetings after the run's"
        );
        assert!(
            plan[..100]
                .iter()
                .all(|seat| seat.role == Role::Publisher && seat.slot == 0)
        );
        assert_eq!(s.plan().len(), 100, "the run's own plan is unchanged");
        let st = s.storm.unwrap();
        assert_eq!(st.due(Duration::ZERO), 1, "the first at once");
        assert_eq!(st.due(Duration::from_millis(49)), 1);
        assert_eq!(st.due(Duration::from_millis(50)), 2, "one every 50 ms");
        assert_eq!(st.due(Duration::from_secs(5)), 101);
        assert_eq!(st.due(Duration::from_secs(10)), 200, "all within 10 s");
        assert_eq!(st.due(Duration::from_secs(60)), 200);
        assert_eq!(st.start_offset(0), Duration::ZERO);
        assert_eq!(st.start_offset(199), Duration::from_millis(9950));
        for i in 0..200 {
            assert!(st.due(st.start_offset(i)) > i, "participant {i} is due at its offset");
        }
    }

    #[test]
    fn storms_that_cannot_be_meant_are_refused() {
        let cases = [
            (storm(0, 10, 10), "--storm must be a positive multiple"),
            (storm(5, 10, 10), "multiple of the 3 participants"),
            (storm(3, 0, 10), "--storm-within must be"),
            (storm(3, 601, 10), "--storm-within must be"),
            (storm(3, 10, 0), "--storm-after"),
            (storm(3, 10, 20), "--duration must be more than"),
            (storm(6_000, 10, 10), "at most 5000"),
            (
                storm(3, 10, 10).map(|s| Storm {
                    leave_after: Some(Duration::ZERO),
                    ..s
                }),
                "--storm-leave-after must be at least 1 s",
            ),
        ];
        for (storm, why) in cases {
            let s = Shape {
                duration: Duration::from_secs(30),
                storm,
                ..shape()
            };
            let e = s.validate().expect_err(why);
            assert!(e.0.contains(why), "{e} should say {why}");
        }
        let fits = Shape {
            duration: Duration::from_secs(30),
            storm: storm(3, 10, 19),
            ..shape()
        };
        fits.validate().unwrap();
    }

    #[test]
    fn a_sensible_shape_passes_and_counts() {
        let s = shape();
        s.validate().unwrap();
        assert_eq!(s.total_participants(), 6);
        assert_eq!(s.tracks_per_publisher(), 2);
        // Per meeting: 2 publishers x 2 receivers each x 2 tracks.
        assert_eq!(s.expected_streams(), 2 * 2 * 2 * 2);
        // Audio 50 pkt/s; video 500 kbit/s at 30 fps = 2083 B/frame = 2 packets -> 60 pkt/s.
        assert_eq!(s.publisher_packets_per_sec(), 110.0);
        assert_eq!(s.expected_forwarded_per_sec(), 2.0 * 2.0 * 2.0 * 110.0);
    }

    #[test]
    fn absurd_shapes_are_refused_with_a_reason() {
        let cases: Vec<(Shape, &str)> = vec![
            (Shape { meetings: 0, ..shape() }, "--meetings"),
            (
                Shape {
                    meetings: 5_000,
                    ..shape()
                },
                "--meetings",
            ),
            (
                Shape {
                    publishers: 0,
                    ..shape()
                },
                "--publishers",
            ),
            (
                Shape {
                    publishers: 1,
                    subscribers: 0,
                    ..shape()
                },
                "at least 2",
            ),
            (
                Shape {
                    publishers: 900,
                    subscribers: 200,
                    ..shape()
                },
                "limit of 1000",
            ),
            (
                Shape {
                    meetings: 100,
                    publishers: 40,
                    subscribers: 20,
                    ..shape()
                },
                "split the load",
            ),
            (
                Shape {
                    audio: None,
                    video: None,
                    ..shape()
                },
                "nothing to send",
            ),
            (
                Shape {
                    audio: Some(StreamShape { kbps: 1, fps: 50 }),
                    ..shape()
                },
                "--audio-kbps",
            ),
            (
                Shape {
                    audio: Some(StreamShape { kbps: 500, fps: 10 }),
                    ..shape()
                },
                "raise --audio-pps",
            ),
            (
                Shape {
                    video: Some(StreamShape { kbps: 500, fps: 0 }),
                    ..shape()
                },
                "--video-fps",
            ),
            (
                Shape {
                    video: Some(StreamShape { kbps: 900_000, fps: 30 }),
                    ..shape()
                },
                "--video-kbps",
            ),
            (
                Shape {
                    ramp_per_sec: 0.0,
                    ..shape()
                },
                "--ramp",
            ),
            (
                Shape {
                    ramp_per_sec: f64::NAN,
                    ..shape()
                },
                "--ramp",
            ),
            (
                Shape {
                    duration: Duration::ZERO,
                    ..shape()
                },
                "--duration",
            ),
            (
                Shape {
                    duration: Duration::from_secs(100_000),
                    ..shape()
                },
                "--duration",
            ),
        ];
        for (s, needle) in cases {
            let err = s.validate().expect_err(needle).0;
            assert!(err.contains(needle), "{err:?} should mention {needle}");
        }
        // One publisher and one subscriber is the smallest useful meeting.
        Shape {
            publishers: 1,
            subscribers: 1,
            ..shape()
        }
        .validate()
        .unwrap();
        Shape { video: None, ..shape() }.validate().unwrap();
    }

    #[test]
    fn plan_puts_publishers_first_and_interleaves_meetings() {
        let plan = shape().plan();
        let seats: Vec<(u32, u32, Role)> = plan.iter().map(|s| (s.meeting, s.slot, s.role)).collect();
        use Role::*;
        assert_eq!(
            seats,
            [
                (0, 0, Publisher),
                (1, 0, Publisher),
                (0, 1, Publisher),
                (1, 1, Publisher),
                (0, 2, Subscriber),
                (1, 2, Subscriber)
            ]
        );
    }

    #[test]
    fn stream_shapes_become_synthetic_configs() {
        let video = StreamShape { kbps: 800, fps: 25 }.synthetic(SyntheticCodec::Vp8);
        assert_eq!(
            (video.bitrate_bps, video.frame_rate, video.keyframe_interval),
            (800_000, 25, 50)
        );
        assert_eq!(video.codec, SyntheticCodec::Vp8);
        let audio = StreamShape { kbps: 24, fps: 50 }.synthetic(SyntheticCodec::Opus);
        assert_eq!((audio.bitrate_bps, audio.keyframe_interval), (24_000, 0));
        assert_eq!(
            StreamShape { kbps: 24, fps: 50 }.packets_per_sec(SyntheticCodec::Opus),
            50.0
        );
    }

    #[test]
    fn ramp_starts_one_at_once_then_paces() {
        let t = Timeline {
            participants: 5,
            ramp_per_sec: 2.0,
            duration: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(15),
        };
        let ms = Duration::from_millis;
        assert_eq!(t.due(ms(0)), 1);
        assert_eq!(t.due(ms(499)), 1);
        assert_eq!(t.due(ms(500)), 2);
        assert_eq!(t.due(ms(1999)), 4);
        assert_eq!(t.due(ms(60_000)), 5, "never more than planned");
        assert_eq!(t.start_offset(0), ms(0));
        assert_eq!(t.start_offset(3), ms(1500));
        assert_eq!(t.ramp_end(), ms(2000));
        // Schedule and count agree: participant i is due exactly from its offset on.
        for i in 0..5 {
            assert_eq!(t.due(t.start_offset(i)), i + 1);
        }
    }

    #[test]
    fn phases_follow_settling_with_a_deadline() {
        let t = Timeline {
            participants: 5,
            ramp_per_sec: 2.0,
            duration: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(15),
        };
        let s = Duration::from_secs;
        // Nobody settled yet: ramp until the deadline (ramp end 2 s + 15 s).
        assert_eq!(t.phase(s(5), None), Phase::Ramp);
        assert_eq!(
            t.phase(s(17), None),
            Phase::Steady {
                started_at: s(17),
                ends_at: s(27)
            }
        );
        assert_eq!(t.phase(s(27), None), Phase::Done);
        // Everyone settled at 3 s: steady from 3 s to 13 s.
        assert_eq!(t.phase(s(2), Some(s(3))), Phase::Ramp);
        assert_eq!(
            t.phase(s(3), Some(s(3))),
            Phase::Steady {
                started_at: s(3),
                ends_at: s(13)
            }
        );
        assert_eq!(t.phase(s(13), Some(s(3))), Phase::Done);
        // Settled before the last start is even due (cannot really happen, but the
        // schedule still waits for the ramp to finish).
        assert_eq!(t.steady_start(s(2), Some(s(1))), Some(s(2)));
        // Settled after the deadline: the deadline wins.
        assert_eq!(t.steady_start(s(30), Some(s(25))), Some(s(17)));
    }
}
