//! The outcome of a load test: per-participant results in, one [`Report`] out,
//! with the verdict against the operator's thresholds and its two renderings
//! (a table for people, one JSON object for machines). Pure: the runner hands
//! over plain values, and the tests here use hand-made ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use gatehouse_signaling::protocol::TrackKind;
use serde::Serialize;

use super::gateway::GatewayFigures;
use super::scenario::{Role, Shape};
use gatehouse_sdk::synthetic::{LatencyHistogram, StreamSummary};

/// Exit code of a run that finished within its thresholds.
pub const EXIT_OK: i32 = 0;
/// Exit code of a run that could not be made (or in which nobody could join).
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad arguments (as clap uses).
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a run that breached `--max-loss` or `--max-p99-ms`.
pub const EXIT_THRESHOLD: i32 = 3;
/// Exit code of a run stopped with Ctrl-C (the partial report is still printed).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Limits that make a run fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Thresholds {
    /// Highest acceptable packet loss, percent. Streams that never arrived breach it too.
    pub max_loss_percent: Option<f64>,
    /// Highest acceptable 99th percentile one-way latency, milliseconds.
    pub max_p99_ms: Option<f64>,
}

/// One received stream at the end of the run.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// Audio or video.
    pub kind: TrackKind,
    /// What the receiver counted (time to first packet is measured from the
    /// receiving participant's start, i.e. from holding its token).
    pub summary: StreamSummary,
    /// Its latency histogram, merged into the run's.
    pub latency: LatencyHistogram,
}

/// One participant at the end of the run.
#[derive(Debug, Clone)]
pub struct ParticipantOutcome {
    /// Publisher or subscriber.
    pub role: Role,
    /// From holding the token to being in the call (`admitted`), if it got there.
    pub admitted_after: Option<Duration>,
    /// From holding the token to sending `join` (WebSocket and TLS handshakes), if it got there.
    pub join_sent_after: Option<Duration>,
    /// What went wrong for it, if anything (join refused, media failed...).
    pub error: Option<String>,
    /// RTP packets its synthetic senders sent.
    pub sent_packets: u64,
    /// Payload bytes of those packets.
    pub sent_bytes: u64,
    /// The streams it received.
    pub streams: Vec<StreamOutcome>,
    /// Lean engine: its media connections (publisher, subscriber) up when the run stopped,
    /// and how many it had.
    pub connections: Option<ConnectionsUp>,
}

/// A participant's media connections when the run stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionsUp {
    /// Connected (ICE and DTLS up, not disconnected or failed).
    pub up: usize,
    /// All it had.
    pub total: usize,
}

/// An idle run's figures (`--idle`): what connected participants cost the gateway when no
/// media flows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdleFigures {
    /// Participants started.
    pub participants: usize,
    /// Of them, with every media connection still up when the run stopped (and at least one).
    pub connected: usize,
    /// Media connections up when the run stopped.
    pub connections_up: usize,
    /// Media connections the participants had.
    pub connections: usize,
    /// The gateway's whole-process CPU over the measured window, percent of one core.
    pub gateway_cpu_percent: Option<f64>,
    /// The gateway's whole-process CPU per connected idle participant, milliseconds of CPU
    /// per second: `gateway_cpu_percent` x 10 / `connected`.
    pub gateway_cpu_ms_per_participant_per_sec: Option<f64>,
    /// Packets the gateway forwarded per second over the measured window (0 when idle).
    pub forwarded_per_sec: Option<f64>,
}

impl IdleFigures {
    /// The figures of `participants` (every one of an idle run) and the gateway's.
    pub fn of(participants: &[ParticipantOutcome], gateway: &GatewayFigures) -> IdleFigures {
        let counts: Vec<ConnectionsUp> = participants
            .iter()
            .map(|p| {
                if p.error.is_some() {
                    ConnectionsUp {
                        up: 0,
                        ..p.connections.unwrap_or_default()
                    }
                } else {
                    p.connections.unwrap_or_default()
                }
            })
            .collect();
        let connected = counts.iter().filter(|c| c.total > 0 && c.up == c.total).count();
        IdleFigures {
            participants: participants.len(),
            connected,
            connections_up: counts.iter().map(|c| c.up).sum(),
            connections: counts.iter().map(|c| c.total).sum(),
            gateway_cpu_percent: gateway.cpu_percent,
            gateway_cpu_ms_per_participant_per_sec: gateway
                .cpu_percent
                .filter(|_| connected > 0)
                .map(|cpu| cpu * 10.0 / connected as f64),
            forwarded_per_sec: gateway.forwarded_per_sec,
        }
    }
}

impl ParticipantOutcome {
    /// From holding the token to its first media packet from anyone.
    pub fn first_media_after(&self) -> Option<Duration> {
        self.streams
            .iter()
            .filter_map(|s| s.summary.time_to_first_packet_us)
            .min()
            .map(Duration::from_micros)
    }

    /// From sending `join` to the first video frame it could show: the first keyframe
    /// of any remote video track complete (every packet from its first to its marker).
    pub fn join_to_first_frame(&self) -> Option<Duration> {
        let join = self.join_sent_after?;
        self.streams
            .iter()
            .filter(|s| s.kind == TrackKind::Video)
            .filter_map(|s| s.summary.time_to_first_complete_keyframe_us)
            .min()
            .map(|us| Duration::from_micros(us).saturating_sub(join))
    }
}

/// The load tester's own figures, so a report says which side was the limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientFigures {
    /// The engine that drove the media: `sdk` (async `webrtc` peers) or `lean` (`rtc` on one
    /// socket per thread).
    pub engine: String,
    /// Whether its publishers sent cameras as three simulcast layers (the SDK engine without
    /// `--no-simulcast`) or as one.
    pub simulcast: bool,
    /// Cores the load tester may run on (its CPU affinity).
    pub cores: usize,
    /// The load tester's process CPU over the steady phase, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Lean engine: the busiest engine thread's CPU over the steady phase, percent of one core
    /// (one thread cannot use more than one core: at 100 % it is the limit).
    pub busiest_thread_percent: Option<f64>,
    /// Datagrams the kernel dropped on the load tester's UDP sockets because a receive buffer
    /// was full during the steady phase (`/proc/net/udp`, sockets open at its start and end;
    /// the whole run when no steady phase began). What judges the limit.
    pub socket_drops: Option<u64>,
    /// The same from the run's start to the end of the steady phase (the joins included).
    pub socket_drops_run: Option<u64>,
}

/// Which side held the load back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The load tester saturated (a core, or its socket buffers) and the gateway did not.
    LoadTester,
    /// The gateway saturated (90 % of one core: a gateway with one media shard) and the
    /// load tester did not.
    Gateway,
    /// Both did.
    Both,
    /// Neither did: the load was within both.
    Neither,
    /// Not enough figures to tell.
    Unknown,
}

/// "; N over the run (what)" after a steady phase's socket drops, when the run's count is known.
fn over_run(run: Option<u64>, what: &str) -> String {
    run.map_or_else(String::new, |n| format!("; {n} over the run ({what})"))
}

/// CPU share of one core from which a side counts as saturated, percent.
pub const SATURATED_PERCENT: f64 = 90.0;

/// Judges which side was the limit from the gateway's CPU (percent of one core), its busiest
/// media shard's (a shard is one thread: saturated at one core's worth, whatever the process
/// uses; the process figure is the judge only when the shards' are unknown), its media
/// sockets' drops and the load tester's figures, with the reason in a sentence.
pub fn limiting_side(
    gateway_cpu: Option<f64>,
    busiest_shard: Option<f64>,
    gateway_drops: Option<u64>,
    client: &ClientFigures,
) -> (Limit, String) {
    let drops = client.socket_drops.unwrap_or(0);
    let busiest = client.busiest_thread_percent.unwrap_or(0.0);
    let whole = client.cpu_percent.unwrap_or(0.0);
    let cores = client.cores.max(1) as f64;
    let mut client_reasons = Vec::new();
    if drops > 0 {
        client_reasons.push(format!("its sockets dropped {drops} datagrams (receive buffers full)"));
    }
    if busiest >= SATURATED_PERCENT {
        client_reasons.push(format!("its busiest engine thread used {busiest:.0} % of a core"));
    }
    if whole >= SATURATED_PERCENT * cores {
        client_reasons.push(format!("it used {whole:.0} % of its {cores} core(s)"));
    }
    let client_full = !client_reasons.is_empty();
    let gateway_dropped = gateway_drops.unwrap_or(0);
    let gateway_full = match busiest_shard {
        Some(b) => b >= SATURATED_PERCENT,
        None => gateway_cpu.is_some_and(|c| c >= SATURATED_PERCENT),
    } || gateway_dropped > 0;
    let used = |c: f64| match busiest_shard {
        Some(b) => format!("the gateway used {c:.0} % of one core, its busiest media shard {b:.0} %"),
        None => format!("the gateway used {c:.0} % of one core"),
    };
    let gateway_reason = match (gateway_cpu, gateway_dropped) {
        (Some(c), 0) => Some(used(c)),
        (Some(c), d) => Some(format!("{} and its media sockets dropped {d} datagrams", used(c))),
        (None, 0) => None,
        (None, d) => Some(format!("the gateway's media sockets dropped {d} datagrams")),
    };
    match (gateway_full, client_full) {
        (true, true) => (
            Limit::Both,
            format!(
                "both: {} and the load tester: {}",
                gateway_reason.unwrap_or_default(),
                client_reasons.join(", ")
            ),
        ),
        (false, true) => (
            Limit::LoadTester,
            format!("the load tester: {}", client_reasons.join(", ")),
        ),
        (true, false) => (
            Limit::Gateway,
            format!("the gateway: {}", gateway_reason.unwrap_or_default()),
        ),
        (false, false) => match (gateway_cpu, client.cpu_percent) {
            (Some(g), Some(c)) => (
                Limit::Neither,
                format!(
                    "neither: {}, the load tester {c:.0} % of {cores} and dropped nothing",
                    used(g)
                ),
            ),
            _ => (
                Limit::Unknown,
                "unknown: the gateway's or the load tester's CPU was not measured".to_owned(),
            ),
        },
    }
}

/// Everything a run produced, as the runner hands it over.
#[derive(Debug, Clone)]
pub struct RunData {
    /// What was asked for.
    pub shape: Shape,
    /// What makes it fail.
    pub thresholds: Thresholds,
    /// Meetings actually created.
    pub meetings_created: usize,
    /// Every participant that was started (not-yet-started ones of an
    /// interrupted run are absent).
    pub participants: Vec<ParticipantOutcome>,
    /// The gateway's own figures.
    pub gateway: GatewayFigures,
    /// The load tester's own figures.
    pub client: ClientFigures,
    /// From the start of the run to the stop.
    pub elapsed: Duration,
    /// The steady phase (start, end) since the run started, if it began.
    pub steady: Option<(Duration, Duration)>,
    /// Stopped with Ctrl-C.
    pub interrupted: bool,
    /// The join storm, if the shape had one and it began.
    pub storm: Option<StormData>,
}

/// What the runner measured of a join storm (`--storm`).
#[derive(Debug, Clone)]
pub struct StormData {
    /// Every storm participant that was started.
    pub participants: Vec<ParticipantOutcome>,
    /// When the storm began, since the steady phase did.
    pub started_after: Duration,
    /// From the storm's start until every storm participant settled (joined with its media
    /// flowing, or failed); `None` if the steady phase ended first.
    pub settled_in: Option<Duration>,
    /// One-way latency of the run's own calls (not the storm's) before the storm: from the
    /// steady phase's start to the storm's.
    pub latency_before: LatencyHistogram,
    /// The same during the storm: from its start until its participants settled (or the
    /// steady phase ended).
    pub latency_during: LatencyHistogram,
    /// The same after it, to the steady phase's end (or to a leave storm).
    pub latency_after: LatencyHistogram,
    /// A leave storm (`--storm-leave-after`): when the storm's participants all left, after
    /// they had settled; `None` if they did not before the run ended.
    pub left_after: Option<Duration>,
    /// The run's calls' one-way latency over the 5 s from the leaving (less if the run
    /// ended first).
    pub latency_leaving: Option<LatencyHistogram>,
}

/// A join storm's figures in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StormFigures {
    /// Storm participants planned.
    pub planned: usize,
    /// Started before the run stopped.
    pub started: usize,
    /// Admitted into their calls.
    pub joined: usize,
    /// Ended with an error.
    pub failed: usize,
    /// When the storm began, seconds after the steady phase did.
    pub started_after_secs: f64,
    /// From the storm's start until every storm participant settled, seconds (absent if the
    /// steady phase ended first).
    pub settled_in_secs: Option<f64>,
    /// Storm participants: from holding the token to being admitted, ms.
    pub admitted_ms: Option<Percentiles>,
    /// Storm participants: from holding the token to their first media packet, ms.
    pub join_to_media_ms: Option<Percentiles>,
    /// One-way latency of the run's own calls before the storm, ms.
    pub latency_before_ms: Option<Percentiles>,
    /// The same while the storm joined (its start until its participants settled), ms.
    pub latency_during_ms: Option<Percentiles>,
    /// The same after it, ms.
    pub latency_after_ms: Option<Percentiles>,
    /// How much the storm raised the run's calls' p99 latency: during minus before, ms.
    pub p99_rise_ms: Option<f64>,
    /// A leave storm: seconds from every storm participant settled to their leaving.
    pub left_after_secs: Option<f64>,
    /// A leave storm: the run's calls' one-way latency over the 5 s from the leaving, ms.
    pub latency_leaving_ms: Option<Percentiles>,
    /// How much the leaving raised the calls' p99 latency: leaving minus before, ms.
    pub leaving_p99_rise_ms: Option<f64>,
    /// Storm participants' errors, most frequent first.
    pub errors: Vec<ErrorCount>,
}

impl StormFigures {
    fn of(data: &StormData, planned: usize) -> StormFigures {
        let p = &data.participants;
        let before = histogram_percentiles(&data.latency_before);
        let during = histogram_percentiles(&data.latency_during);
        let leaving = data.latency_leaving.as_ref().and_then(histogram_percentiles);
        StormFigures {
            planned,
            started: p.len(),
            joined: p.iter().filter(|p| p.admitted_after.is_some()).count(),
            failed: p.iter().filter(|p| p.error.is_some()).count(),
            started_after_secs: data.started_after.as_secs_f64(),
            settled_in_secs: data.settled_in.map(|d| d.as_secs_f64()),
            admitted_ms: duration_percentiles(p.iter().filter_map(|p| p.admitted_after).collect()),
            join_to_media_ms: duration_percentiles(p.iter().filter_map(|p| p.first_media_after()).collect()),
            latency_before_ms: before,
            latency_during_ms: during,
            latency_after_ms: histogram_percentiles(&data.latency_after),
            p99_rise_ms: before.zip(during).map(|(b, d)| d.p99 - b.p99),
            left_after_secs: data.left_after.map(|d| d.as_secs_f64()),
            latency_leaving_ms: leaving,
            leaving_p99_rise_ms: before.zip(leaving).map(|(b, l)| l.p99 - b.p99),
            errors: error_counts(p),
        }
    }
}

/// Pass or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within every threshold given.
    Pass,
    /// At least one threshold was breached, or a participant failed (see `breaches`).
    ThresholdBreached,
    /// Nobody could join: there was nothing to measure.
    Failed,
}

/// How many participants got in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Participants {
    /// The shape's total.
    pub planned: usize,
    /// Started before the run stopped.
    pub started: usize,
    /// Admitted into their meeting.
    pub joined: usize,
    /// Ended with an error (see `errors`).
    pub failed: usize,
}

/// Streams: what the shape implies, what arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Streams {
    /// Every participant receiving every track of every other publisher in its meeting.
    pub expected: u64,
    /// Streams with at least one packet.
    pub received: u64,
}

/// Packet counts over all streams.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Packets {
    /// Sent by all publishers.
    pub sent: u64,
    /// Distinct valid packets received, all receivers.
    pub received: u64,
    /// What the receivers should have got between each stream's first and last packet.
    pub expected: u64,
    /// `expected - received`.
    pub lost: u64,
    /// `lost / expected`, percent (0 when nothing was expected).
    pub loss_percent: f64,
    /// Extra copies.
    pub duplicates: u64,
    /// Arrived after a later packet.
    pub reordered: u64,
    /// Failed their checksum: changed in transit.
    pub corrupt: u64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Jitter across streams, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Jitter {
    /// Mean of the streams' RFC 3550 jitter.
    pub mean: f64,
    /// The worst stream's.
    pub max: f64,
}

/// Received bitrates, kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bitrate {
    /// All streams together.
    pub total_kbps: f64,
    /// Mean per audio stream.
    pub audio_stream_kbps: Option<f64>,
    /// Mean per video stream.
    pub video_stream_kbps: Option<f64>,
}

/// An error and how many participants hit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// What happened.
    pub message: String,
    /// How often.
    pub count: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Pass, breach, or nothing measured.
    pub verdict: Verdict,
    /// Why the thresholds were breached, one sentence each.
    pub breaches: Vec<String>,
    /// Stopped with Ctrl-C: the figures are partial.
    pub interrupted: bool,
    /// What was asked for.
    pub shape: Shape,
    /// What makes it fail.
    pub thresholds: Thresholds,
    /// Wall time of the whole run, seconds.
    pub elapsed_secs: f64,
    /// Length of the steady phase, seconds (absent if it never began).
    pub steady_secs: Option<f64>,
    /// Meetings created.
    pub meetings: usize,
    /// Who got in.
    pub participants: Participants,
    /// Which streams arrived.
    pub streams: Streams,
    /// Packet counts and loss.
    pub packets: Packets,
    /// One-way latency, sender's clock to receiver's clock, ms (all streams merged).
    pub latency_ms: Option<Percentiles>,
    /// Interarrival jitter, ms.
    pub jitter_ms: Option<Jitter>,
    /// Received bitrate.
    pub bitrate: Bitrate,
    /// From holding the token to being admitted, ms.
    pub admitted_ms: Option<Percentiles>,
    /// From holding the token to the first media packet, ms (participants that got media).
    pub join_to_media_ms: Option<Percentiles>,
    /// From sending `join` to the first remote video keyframe complete, ms (participants
    /// that received video): see [`ParticipantOutcome::join_to_first_frame`].
    pub join_to_first_frame_ms: Option<Percentiles>,
    /// What the gateway's `/metrics` said.
    pub gateway: GatewayFigures,
    /// The gateway's whole-process CPU per forwarded packet over the steady phase, µs
    /// (its CPU over its forwarded packets/s): receiving and decrypting each inbound packet,
    /// RTCP, timers and ICE included.
    pub server_us_per_forwarded_packet: Option<f64>,
    /// What the load tester measured of itself.
    pub client: ClientFigures,
    /// Which side was the limit.
    pub limit: Limit,
    /// Why, in a sentence.
    pub limit_reason: String,
    /// Errors, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// The join storm (`--storm`), if there was one: the latency above covers the run's own
    /// calls over the whole steady phase, the storm included.
    pub storm: Option<StormFigures>,
    /// An idle run (`--idle`): the gateway's CPU per connected idle participant.
    pub idle: Option<IdleFigures>,
}

/// Nearest-rank percentiles of durations, in ms.
fn duration_percentiles(mut values: Vec<Duration>) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1].as_secs_f64() * 1e3
    };
    Some(Percentiles {
        count: values.len() as u64,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    })
}

fn histogram_percentiles(h: &LatencyHistogram) -> Option<Percentiles> {
    let ms = |us: u64| us as f64 / 1e3;
    Some(Percentiles {
        count: h.count(),
        p50: ms(h.percentile(0.50)?),
        p95: ms(h.percentile(0.95)?),
        p99: ms(h.percentile(0.99)?),
        max: ms(h.max()?),
    })
}

/// The participants' errors and how many hit each, most frequent first.
fn error_counts(participants: &[ParticipantOutcome]) -> Vec<ErrorCount> {
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for e in participants.iter().filter_map(|p| p.error.as_deref()) {
        *errors.entry(e).or_default() += 1;
    }
    let mut errors: Vec<ErrorCount> = errors
        .into_iter()
        .map(|(message, count)| ErrorCount {
            message: message.to_owned(),
            count,
        })
        .collect();
    errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.message.cmp(&b.message)));
    errors
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

impl Report {
    /// Adds everything up and judges it.
    pub fn from_run(data: &RunData) -> Report {
        let participants = &data.participants;
        let streams: Vec<&StreamOutcome> = participants.iter().flat_map(|p| &p.streams).collect();
        let received_streams: Vec<&StreamOutcome> =
            streams.iter().copied().filter(|s| s.summary.received > 0).collect();

        let sum = |f: fn(&StreamSummary) -> u64| streams.iter().map(|s| f(&s.summary)).sum::<u64>();
        let expected = sum(|s| s.expected);
        let lost = sum(|s| s.lost);
        let packets = Packets {
            sent: participants.iter().map(|p| p.sent_packets).sum(),
            received: sum(|s| s.received),
            expected,
            lost,
            loss_percent: if expected == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / expected as f64
            },
            duplicates: sum(|s| s.duplicates),
            reordered: sum(|s| s.reordered),
            corrupt: sum(|s| s.corrupt),
        };

        let mut latency = LatencyHistogram::default();
        for s in &streams {
            latency.merge(&s.latency);
        }
        let jitters: Vec<f64> = received_streams.iter().map(|s| s.summary.jitter_us / 1e3).collect();
        let jitter_ms = mean(&jitters).map(|mean| Jitter {
            mean,
            max: jitters.iter().copied().fold(0.0, f64::max),
        });
        let kbps_of = |kind: TrackKind| {
            // Streams with a measured rate only: one that got a burst and stopped has none.
            let rates: Vec<f64> = received_streams
                .iter()
                .filter(|s| s.kind == kind && s.summary.bitrate_bps > 0.0)
                .map(|s| s.summary.bitrate_bps / 1e3)
                .collect();
            mean(&rates)
        };
        let bitrate = Bitrate {
            total_kbps: received_streams
                .iter()
                .fold(0.0, |total, s| total + s.summary.bitrate_bps / 1e3),
            audio_stream_kbps: kbps_of(TrackKind::Audio),
            video_stream_kbps: kbps_of(TrackKind::Video),
        };

        let errors = error_counts(participants);

        let joined = participants.iter().filter(|p| p.admitted_after.is_some()).count();
        let server_us_per_forwarded_packet = match (data.gateway.cpu_percent, data.gateway.forwarded_per_sec) {
            (Some(cpu), Some(fwd)) if fwd > 0.0 => Some(cpu / 100.0 / fwd * 1e6),
            _ => None,
        };
        let (limit, limit_reason) = limiting_side(
            data.gateway.cpu_percent,
            data.gateway.busiest_shard_percent,
            data.gateway.socket_drops,
            &data.client,
        );
        let mut report = Report {
            verdict: Verdict::Pass,
            breaches: Vec::new(),
            interrupted: data.interrupted,
            shape: data.shape.clone(),
            thresholds: data.thresholds,
            elapsed_secs: data.elapsed.as_secs_f64(),
            steady_secs: data.steady.map(|(from, to)| to.saturating_sub(from).as_secs_f64()),
            meetings: data.meetings_created,
            participants: Participants {
                planned: data.shape.total_participants(),
                started: participants.len(),
                joined,
                failed: participants.iter().filter(|p| p.error.is_some()).count(),
            },
            streams: Streams {
                expected: data.shape.expected_streams(),
                received: received_streams.len() as u64,
            },
            packets,
            latency_ms: histogram_percentiles(&latency),
            jitter_ms,
            bitrate,
            admitted_ms: duration_percentiles(participants.iter().filter_map(|p| p.admitted_after).collect()),
            join_to_media_ms: duration_percentiles(participants.iter().filter_map(|p| p.first_media_after()).collect()),
            join_to_first_frame_ms: duration_percentiles(
                participants.iter().filter_map(|p| p.join_to_first_frame()).collect(),
            ),
            gateway: data.gateway.clone(),
            server_us_per_forwarded_packet,
            client: data.client.clone(),
            limit,
            limit_reason,
            errors,
            storm: data
                .storm
                .as_ref()
                .map(|st| StormFigures::of(st, data.shape.storm.map_or(0, |s| s.participants as usize))),
            idle: data.shape.idle.then(|| IdleFigures::of(participants, &data.gateway)),
        };
        report.judge();
        report
    }

    fn judge(&mut self) {
        let mut breaches = Vec::new();
        if let Some(max) = self.thresholds.max_loss_percent {
            if self.packets.loss_percent > max {
                breaches.push(format!(
                    "loss {:.2} % is over --max-loss {max} % ({} of {} packets)",
                    self.packets.loss_percent, self.packets.lost, self.packets.expected
                ));
            }
            if self.streams.received < self.streams.expected {
                breaches.push(format!(
                    "{} of {} expected streams never arrived (counts against --max-loss)",
                    self.streams.expected - self.streams.received,
                    self.streams.expected
                ));
            }
        }
        if self.participants.failed > 0 {
            // Always, thresholds or not: a participant the gateway dropped is not a pass.
            breaches.push(format!(
                "{} of {} participants failed (see errors)",
                self.participants.failed, self.participants.started
            ));
        }
        if let Some(max) = self.thresholds.max_p99_ms {
            match self.latency_ms {
                Some(l) if l.p99 > max => {
                    breaches.push(format!("latency p99 {:.1} ms is over --max-p99-ms {max} ms", l.p99));
                }
                Some(_) => {}
                None => breaches.push("no latency was measured (no media arrived), so --max-p99-ms cannot hold".into()),
            }
        }
        self.verdict = if self.participants.joined == 0 {
            Verdict::Failed
        } else if breaches.is_empty() {
            Verdict::Pass
        } else {
            Verdict::ThresholdBreached
        };
        self.breaches = breaches;
    }

    /// The process exit code this report stands for (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            return EXIT_INTERRUPTED;
        }
        match self.verdict {
            Verdict::Pass => EXIT_OK,
            Verdict::ThresholdBreached => EXIT_THRESHOLD,
            Verdict::Failed => EXIT_FAILED,
        }
    }

    /// One JSON object with every figure.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report is plain data and always serialises")
    }

    /// The summary table for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let s = &self.shape;
        let stream = |name: &str, shape: Option<super::scenario::StreamShape>| match shape {
            Some(x) => format!("{name} {} kbit/s at {}/s", x.kbps, x.fps),
            None => format!("no {name}"),
        };
        let _ = writeln!(
            out,
            "Gatehouse load test: {} meeting{} x ({} publisher{} + {} subscriber{}), {}, {}",
            s.meetings,
            plural(s.meetings as usize),
            s.publishers,
            plural(s.publishers as usize),
            s.subscribers,
            plural(s.subscribers as usize),
            stream("audio", s.audio),
            stream("video", s.video),
        );
        let steady = self
            .steady_secs
            .map_or_else(|| "never reached".to_owned(), |x| format!("{x:.1} s"));
        let _ = writeln!(
            out,
            "ran {:.1} s, steady phase {steady}{}",
            self.elapsed_secs,
            if self.interrupted {
                " (INTERRUPTED: partial figures)"
            } else {
                ""
            }
        );
        let row = |out: &mut String, label: &str, value: String| {
            let _ = writeln!(out, "  {label:<22} {value}");
        };
        let _ = writeln!(out, "\nClient");
        row(&mut out, "meetings created", self.meetings.to_string());
        let p = &self.participants;
        row(
            &mut out,
            "participants joined",
            format!("{} of {} ({} failed)", p.joined, p.planned, p.failed),
        );
        row(
            &mut out,
            "streams received",
            format!("{} of {}", self.streams.received, self.streams.expected),
        );
        let k = &self.packets;
        row(&mut out, "packets sent", k.sent.to_string());
        row(&mut out, "packets received", k.received.to_string());
        row(
            &mut out,
            "loss",
            format!(
                "{:.2} % ({} of {}; {} duplicate, {} reordered, {} corrupt)",
                k.loss_percent, k.lost, k.expected, k.duplicates, k.reordered, k.corrupt
            ),
        );
        row(
            &mut out,
            "jitter",
            self.jitter_ms
                .map_or_else(na, |j| format!("{:.2} ms mean, {:.2} ms worst stream", j.mean, j.max)),
        );
        row(&mut out, "latency (one-way)", percentiles(self.latency_ms));
        let b = &self.bitrate;
        let per = |x: Option<f64>| x.map_or_else(na, |v| format!("{v:.0} kbit/s"));
        row(
            &mut out,
            "bitrate received",
            format!(
                "{:.0} kbit/s total; per stream: audio {}, video {}",
                b.total_kbps,
                per(b.audio_stream_kbps),
                per(b.video_stream_kbps)
            ),
        );
        row(&mut out, "token to admitted", percentiles(self.admitted_ms));
        row(&mut out, "token to first media", percentiles(self.join_to_media_ms));
        row(
            &mut out,
            "join to first frame",
            percentiles(self.join_to_first_frame_ms),
        );

        let g = &self.gateway;
        let _ = writeln!(
            out,
            "\nGateway ({} scrapes of /metrics, {} failed)",
            g.scrapes, g.scrape_errors
        );
        row(
            &mut out,
            "CPU (steady phase)",
            g.cpu_percent.map_or_else(na, |c| {
                let coarse = g.cpu_metric.as_deref() == Some(super::gateway::CPU_SECONDS);
                let note = if coarse {
                    " (from a whole-second counter: rough unless the phase is long)"
                } else {
                    ""
                };
                format!("{c:.1} % of one core{note}")
            }),
        );
        if let (Some(b), Some(n)) = (g.busiest_shard_percent, g.shards) {
            row(
                &mut out,
                "busiest media shard",
                format!("{b:.1} % of one core (of {n} shard{})", if n == 1 { "" } else { "s" }),
            );
        }
        row(
            &mut out,
            "memory (RSS peak)",
            g.rss_peak_bytes
                .map_or_else(na, |b| format!("{:.1} MiB", b / (1024.0 * 1024.0))),
        );
        row(
            &mut out,
            "forwarded packets/s",
            g.forwarded_per_sec.map_or_else(na, |f| {
                if s.idle {
                    format!("{f:.0} (an idle run: no media in the measured window)")
                } else {
                    format!("{f:.0} (full strength would be {:.0})", s.expected_forwarded_per_sec())
                }
            }),
        );

        if let Some(d) = g.socket_drops {
            row(
                &mut out,
                "socket drops",
                format!(
                    "{d} datagrams in the steady phase (media receive buffers full){}",
                    over_run(g.socket_drops_run, "the socket's life, teardown included")
                ),
            );
        }
        row(
            &mut out,
            "CPU per forwarded pkt",
            self.server_us_per_forwarded_packet
                .map_or_else(na, |us| format!("{us:.2} us (whole process, steady phase)")),
        );
        let c = &self.client;
        let _ = writeln!(
            out,
            "\nLoad tester ({} engine, {} camera, {} core(s))",
            c.engine,
            if c.simulcast { "simulcast" } else { "one-layer" },
            c.cores
        );
        row(
            &mut out,
            "CPU (steady phase)",
            c.cpu_percent.map_or_else(na, |x| {
                let busiest = c
                    .busiest_thread_percent
                    .map_or_else(String::new, |b| format!("; busiest engine thread {b:.1} %"));
                format!("{x:.1} % of one core{busiest}")
            }),
        );
        row(
            &mut out,
            "socket drops",
            c.socket_drops.map_or_else(na, |d| {
                format!(
                    "{d} datagrams in the steady phase (receive buffers full){}",
                    over_run(c.socket_drops_run, "joins included")
                )
            }),
        );
        row(&mut out, "limit", self.limit_reason.clone());

        if let Some(idle) = &self.idle {
            let _ = writeln!(
                out,
                "\nIdle participants (no media from {} s after the steady phase began)",
                super::scenario::QUIET_GRACE.as_secs()
            );
            row(
                &mut out,
                "connected at the end",
                format!(
                    "{} of {} participants ({} of {} media connections up)",
                    idle.connected, idle.participants, idle.connections_up, idle.connections
                ),
            );
            row(
                &mut out,
                "gateway CPU",
                idle.gateway_cpu_percent
                    .map_or_else(na, |c| format!("{c:.2} % of one core")),
            );
            row(
                &mut out,
                "CPU per participant",
                idle.gateway_cpu_ms_per_participant_per_sec.map_or_else(na, |ms| {
                    format!("{ms:.3} ms per second (whole gateway process / connected participants)")
                }),
            );
            row(
                &mut out,
                "forwarded packets/s",
                idle.forwarded_per_sec.map_or_else(na, |f| format!("{f:.1}")),
            );
        }

        if let Some(st) = &self.storm {
            let _ = writeln!(
                out,
                "\nJoin storm ({} participants within {} s, from {:.1} s into the steady phase)",
                st.planned,
                s.storm.map_or(0.0, |x| x.within.as_secs_f64()),
                st.started_after_secs
            );
            row(
                &mut out,
                "joined",
                format!(
                    "{} of {} ({} failed); all settled {}",
                    st.joined,
                    st.planned,
                    st.failed,
                    st.settled_in_secs
                        .map_or_else(|| "never (steady phase over)".to_owned(), |x| format!("in {x:.1} s"))
                ),
            );
            row(&mut out, "token to admitted", percentiles(st.admitted_ms));
            row(&mut out, "token to first media", percentiles(st.join_to_media_ms));
            let _ = writeln!(out, "  the run's own calls, one-way latency:");
            row(&mut out, "  before the storm", percentiles(st.latency_before_ms));
            row(&mut out, "  during the storm", percentiles(st.latency_during_ms));
            row(&mut out, "  after the storm", percentiles(st.latency_after_ms));
            row(
                &mut out,
                "p99 rise",
                st.p99_rise_ms
                    .map_or_else(na, |r| format!("{r:+.1} ms (during minus before)")),
            );
            if let Some(left) = st.left_after_secs {
                row(&mut out, "  leaving (5 s)", percentiles(st.latency_leaving_ms));
                row(
                    &mut out,
                    "leave storm",
                    format!(
                        "all left at once {left:.1} s after settling; p99 rise {}",
                        st.leaving_p99_rise_ms
                            .map_or_else(na, |r| format!("{r:+.1} ms (leaving minus before)"))
                    ),
                );
            }
            for e in &st.errors {
                let _ = writeln!(out, "  {:>5} x {}", e.count, e.message);
            }
        }

        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nErrors");
            for e in &self.errors {
                let _ = writeln!(out, "  {:>5} x {}", e.count, e.message);
            }
        }
        let _ = writeln!(out);
        if self.streams.received < self.streams.expected && self.thresholds.max_loss_percent.is_none() {
            let _ = writeln!(
                out,
                "Note: {} of {} expected streams never arrived (with --max-loss that fails the run).",
                self.streams.expected - self.streams.received,
                self.streams.expected
            );
        }
        match self.verdict {
            Verdict::Pass => {
                let _ = writeln!(out, "Verdict: PASS");
            }
            Verdict::Failed => {
                let _ = writeln!(out, "Verdict: FAILED: no participant could join");
            }
            Verdict::ThresholdBreached => {
                let _ = writeln!(out, "Verdict: THRESHOLD BREACHED");
                for b in &self.breaches {
                    let _ = writeln!(out, "  - {b}");
                }
            }
        }
        out
    }
}

fn na() -> String {
    "n/a".to_owned()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn percentiles(p: Option<Percentiles>) -> String {
    p.map_or_else(na, |p| {
        format!(
            "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            p.p50, p.p95, p.p99, p.max, p.count
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::scenario::StreamShape;

    fn shape() -> Shape {
        Shape {
            meetings: 1,
            publishers: 2,
            subscribers: 0,
            audio: Some(StreamShape { kbps: 32, fps: 50 }),
            video: None,
            ramp_per_sec: 10.0,
            duration: Duration::from_secs(3),
            storm: None,
            idle: false,
        }
    }

    /// A stream that received `received` of `expected` packets, `latency_ms` each.
    fn stream(kind: TrackKind, expected: u64, received: u64, latency_ms: u64, first_after_ms: u64) -> StreamOutcome {
        let mut latency = LatencyHistogram::default();
        for _ in 0..received {
            latency.record(latency_ms * 1000);
        }
        StreamOutcome {
            kind,
            summary: StreamSummary {
                received,
                expected,
                lost: expected - received,
                duplicates: 0,
                reordered: 1,
                too_old: 0,
                corrupt: 0,
                bytes: received * 80,
                keyframes: 0,
                first_seq: (received > 0).then_some(0),
                last_seq: (received > 0).then_some(expected as u32 - 1),
                time_to_first_packet_us: (received > 0).then_some(first_after_ms * 1000),
                time_to_first_keyframe_us: None,
                time_to_first_complete_keyframe_us: (kind == TrackKind::Video && received > 0)
                    .then_some(first_after_ms * 1000 + 30_000),
                bitrate_bps: if received > 0 { 32_000.0 } else { 0.0 },
                jitter_us: 500.0,
                latency_p50_us: None,
                latency_p95_us: None,
                latency_p99_us: None,
                latency_max_us: None,
            },
            latency,
        }
    }

    fn participant(streams: Vec<StreamOutcome>) -> ParticipantOutcome {
        ParticipantOutcome {
            role: Role::Publisher,
            admitted_after: Some(Duration::from_millis(100)),
            join_sent_after: Some(Duration::from_millis(20)),
            error: None,
            sent_packets: 150,
            sent_bytes: 150 * 80,
            streams,
            connections: None,
        }
    }

    fn run(participants: Vec<ParticipantOutcome>, thresholds: Thresholds) -> RunData {
        RunData {
            shape: shape(),
            thresholds,
            meetings_created: 1,
            participants,
            gateway: GatewayFigures {
                scrapes: 4,
                rss_peak_bytes: Some(50.0 * 1024.0 * 1024.0),
                cpu_percent: Some(12.5),
                ..GatewayFigures::default()
            },
            client: ClientFigures {
                engine: "lean".into(),
                simulcast: false,
                cores: 1,
                cpu_percent: Some(40.0),
                busiest_thread_percent: Some(35.0),
                socket_drops: Some(0),
                socket_drops_run: Some(3),
            },
            elapsed: Duration::from_secs(4),
            steady: Some((Duration::from_secs(1), Duration::from_secs(4))),
            interrupted: false,
            storm: None,
        }
    }

    /// `n` latencies of `ms` each.
    fn latencies(n: u64, ms: u64) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        for _ in 0..n {
            h.record(ms * 1000);
        }
        h
    }

    #[test]
    fn a_storm_is_reported_apart_with_the_calls_latency_before_during_and_after() {
        let mut data = run(
            vec![participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)])],
            Thresholds::default(),
        );
        data.shape.duration = Duration::from_secs(40);
        data.shape.storm = Some(crate::loadtest::scenario::Storm {
            participants: 4,
            within: Duration::from_secs(10),
            after: Duration::from_secs(10),
            leave_after: None,
        });
        let mut late = participant(vec![stream(TrackKind::Audio, 10, 10, 1, 900)]);
        late.admitted_after = Some(Duration::from_millis(700));
        let mut failed = participant(Vec::new());
        failed.admitted_after = None;
        failed.error = Some("join failed: no WebSocket within 15 s".into());
        let mut during = latencies(98, 2);
        during.merge(&latencies(2, 40));
        data.storm = Some(StormData {
            participants: vec![
                participant(vec![stream(TrackKind::Audio, 10, 10, 1, 500)]),
                late,
                failed,
            ],
            started_after: Duration::from_secs(10),
            settled_in: Some(Duration::from_millis(11_500)),
            latency_before: latencies(100, 2),
            latency_during: during,
            latency_after: latencies(100, 3),
            left_after: None,
            latency_leaving: None,
        });
        let r = Report::from_run(&data);
        let st = r.storm.clone().expect("the storm's figures");
        assert_eq!((st.planned, st.started, st.joined, st.failed), (4, 3, 2, 1));
        assert_eq!(st.settled_in_secs, Some(11.5));
        assert_eq!(st.admitted_ms.map(|p| p.max), Some(700.0));
        assert_eq!(st.join_to_media_ms.map(|p| p.count), Some(2));
        let before = st.latency_before_ms.expect("before");
        let during = st.latency_during_ms.expect("during");
        assert!((before.p99 - 2.0).abs() < 0.1, "{before:?}");
        assert!((during.p99 - 40.0).abs() < 1.5, "{during:?}");
        assert!((st.p99_rise_ms.unwrap() - 38.0).abs() < 1.5, "{st:?}");
        assert_eq!(st.errors.len(), 1);
        assert_eq!(r.participants.started, 1, "the run's own participants only");
        let table = r.to_table();
        assert!(table.contains("Join storm (4 participants within 10 s"), "{table}");
        assert!(table.contains("p99 rise"), "{table}");
        assert!(table.contains("during the storm"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["storm"]["joined"], 2);
        assert_eq!(json["shape"]["storm"]["participants"], 4);
        assert!(json["storm"]["p99_rise_ms"].as_f64().is_some());
        assert!(!table.contains("leave storm") && json["storm"]["latency_leaving_ms"].is_null());
        // A leave storm: its 5 s window and its rise over the latency before the storm.
        let mut leaving = latencies(95, 2);
        leaving.merge(&latencies(5, 25));
        if let Some(st) = data.storm.as_mut() {
            st.left_after = Some(Duration::from_secs(5));
            st.latency_leaving = Some(leaving);
        }
        let r = Report::from_run(&data);
        let st = r.storm.clone().expect("the storm's figures");
        assert_eq!(st.left_after_secs, Some(5.0));
        assert!((st.latency_leaving_ms.unwrap().p99 - 25.0).abs() < 1.0, "{st:?}");
        assert!((st.leaving_p99_rise_ms.unwrap() - 23.0).abs() < 1.0, "{st:?}");
        let table = r.to_table();
        assert!(
            table.contains("leaving (5 s)") && table.contains("all left at once 5.0 s after settling"),
            "{table}"
        );
        // Without a storm: nothing about one.
        let plain = Report::from_run(&run(Vec::new(), Thresholds::default()));
        assert!(plain.storm.is_none() && !plain.to_table().contains("Join storm"));
    }

    #[test]
    fn aggregates_loss_latency_bitrate_and_join_times() {
        // Two publishers, each receiving the other's audio: one clean (1 ms),
        // one with 10 % loss and slower (99 packets at 1 ms, then a tail).
        let mut slow = stream(TrackKind::Audio, 100, 90, 1, 400);
        for _ in 0..10 {
            slow.latency.record(80_000);
        }
        let data = run(
            vec![
                participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)]),
                participant(vec![slow]),
            ],
            Thresholds::default(),
        );
        let r = Report::from_run(&data);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.exit_code(), EXIT_OK);
        assert_eq!(
            r.participants,
            Participants {
                planned: 2,
                started: 2,
                joined: 2,
                failed: 0
            }
        );
        assert_eq!(
            r.streams,
            Streams {
                expected: 2,
                received: 2
            }
        );
        assert_eq!(
            (r.packets.sent, r.packets.received, r.packets.expected, r.packets.lost),
            (300, 190, 200, 10)
        );
        assert!((r.packets.loss_percent - 5.0).abs() < 1e-9);
        assert_eq!(r.packets.reordered, 2);
        // Histograms merged: 190 at 1 ms and 10 at 80 ms -> p50 1 ms, p99 ~80 ms.
        let l = r.latency_ms.unwrap();
        assert_eq!(l.count, 200);
        assert!((l.p50 - 1.0).abs() < 0.05, "{l:?}");
        assert!((l.p99 - 80.0).abs() < 80.0 * 0.04, "{l:?}");
        assert_eq!(l.max, 80.0);
        let j = r.join_to_media_ms.unwrap();
        assert_eq!((j.count, j.p50, j.max), (2, 300.0, 400.0));
        assert_eq!(r.admitted_ms.unwrap().p95, 100.0);
        assert_eq!(r.jitter_ms.unwrap().mean, 0.5);
        assert_eq!(r.bitrate.total_kbps, 64.0);
        assert_eq!(r.bitrate.audio_stream_kbps, Some(32.0));
        assert_eq!(r.bitrate.video_stream_kbps, None);
        assert_eq!(r.steady_secs, Some(3.0));
    }

    #[test]
    fn thresholds_turn_figures_into_a_verdict() {
        let lossy = || {
            vec![
                participant(vec![stream(TrackKind::Audio, 100, 90, 30, 300)]),
                participant(vec![stream(TrackKind::Audio, 100, 90, 30, 300)]),
            ]
        };
        let strict = Thresholds {
            max_loss_percent: Some(1.0),
            max_p99_ms: Some(20.0),
        };
        let r = Report::from_run(&run(lossy(), strict));
        assert_eq!(r.verdict, Verdict::ThresholdBreached);
        assert_eq!(r.exit_code(), EXIT_THRESHOLD);
        assert_eq!(r.breaches.len(), 2, "{:?}", r.breaches);
        assert!(r.breaches[0].contains("loss 10.00 %"), "{:?}", r.breaches);
        assert!(r.breaches[1].contains("p99 30.0 ms"), "{:?}", r.breaches);

        let lenient = Thresholds {
            max_loss_percent: Some(15.0),
            max_p99_ms: Some(50.0),
        };
        assert_eq!(Report::from_run(&run(lossy(), lenient)).verdict, Verdict::Pass);

        // A stream that never arrived is loss too, and no media at all fails a latency bound.
        let missing = vec![
            participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)]),
            participant(vec![]),
        ];
        let r = Report::from_run(&run(missing, lenient));
        assert_eq!(r.verdict, Verdict::ThresholdBreached);
        assert!(
            r.breaches[0].contains("1 of 2 expected streams never arrived"),
            "{:?}",
            r.breaches
        );
        let r = Report::from_run(&run(vec![participant(vec![]), participant(vec![])], lenient));
        assert!(r.breaches.iter().any(|b| b.contains("no latency")), "{:?}", r.breaches);
        // Without thresholds, missing media is reported but does not fail the run.
        let r = Report::from_run(&run(
            vec![participant(vec![]), participant(vec![])],
            Thresholds::default(),
        ));
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.latency_ms, None);
        assert_eq!(r.packets.loss_percent, 0.0);
        assert_eq!(r.bitrate.total_kbps.to_string(), "0", "not -0");
        assert!(r.to_table().contains("Note: 2 of 2 expected streams never arrived"));
    }

    #[test]
    fn join_to_first_frame_runs_from_join_to_a_complete_video_keyframe() {
        // Each receives audio and video; its first complete keyframe comes 30 ms after
        // the video's first packet, and `join` went out 20 ms after it held the token.
        let both = |first_ms| {
            participant(vec![
                stream(TrackKind::Audio, 100, 100, 1, first_ms - 50),
                stream(TrackKind::Video, 100, 100, 1, first_ms),
            ])
        };
        let audio_only = participant(vec![stream(TrackKind::Audio, 100, 100, 1, 100)]);
        let r = Report::from_run(&run(vec![both(300), both(500), audio_only], Thresholds::default()));
        let f = r.join_to_first_frame_ms.unwrap();
        assert_eq!((f.count, f.p50, f.max), (2, 310.0, 510.0));
        assert!(r.to_table().contains("join to first frame"));
        assert!(r.to_json().contains("\"join_to_first_frame_ms\""));
    }

    #[test]
    fn socket_drops_are_the_steady_phases_with_the_runs_beside() {
        let r = Report::from_run(&run(
            vec![participant(vec![stream(TrackKind::Audio, 100, 100, 1, 100)])],
            Thresholds::default(),
        ));
        assert!(
            r.to_table()
                .contains("0 datagrams in the steady phase (receive buffers full); 3 over the run (joins included)"),
            "{}",
            r.to_table()
        );
        assert_eq!(r.limit, Limit::Neither, "drops outside the steady phase judge nothing");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["client"]["socket_drops_run"], 3);
    }

    #[test]
    fn a_participant_that_failed_during_the_run_is_no_pass() {
        // One of three dropped by the gateway mid-run: no threshold is set, its streams
        // stopped early and lost nothing, and still the run does not pass.
        let mut dropped = participant(vec![stream(TrackKind::Audio, 10, 10, 1, 300)]);
        dropped.error = Some("signaling disconnected".into());
        let ok = || participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)]);
        let r = Report::from_run(&run(vec![ok(), dropped, ok()], Thresholds::default()));
        assert_eq!(r.packets.loss_percent, 0.0);
        assert_eq!(r.participants.failed, 1);
        assert_eq!(r.verdict, Verdict::ThresholdBreached);
        assert_eq!(r.exit_code(), EXIT_THRESHOLD);
        assert_eq!(r.breaches, vec!["1 of 3 participants failed (see errors)".to_owned()]);
        assert_eq!(
            r.errors,
            vec![ErrorCount {
                message: "signaling disconnected".into(),
                count: 1
            }]
        );
        assert!(r.to_table().contains("1 of 3 participants failed"));
        let fine = Report::from_run(&run(vec![ok(), ok()], Thresholds::default()));
        assert_eq!(fine.verdict, Verdict::Pass);
    }

    #[test]
    fn a_stream_without_a_measured_rate_leaves_the_mean_bitrate_alone() {
        // Two video streams at 500 kbit/s and one that got a frame's burst and stopped:
        // the summary gives that one no rate (under a second of arrivals), and the mean
        // per video stream stays 500, not a burst's bytes over microseconds.
        let video = |bps: f64| {
            let mut s = stream(TrackKind::Video, 100, 100, 1, 300);
            s.summary.bitrate_bps = bps;
            s
        };
        let r = Report::from_run(&run(
            vec![participant(vec![video(500_000.0), video(500_000.0), video(0.0)])],
            Thresholds::default(),
        ));
        assert_eq!(r.streams.received, 3);
        assert_eq!(r.bitrate.video_stream_kbps, Some(500.0));
        assert_eq!(r.bitrate.total_kbps, 1000.0);
    }

    #[test]
    fn nobody_joined_fails_and_interruption_wins_the_exit_code() {
        let refused = |msg: &str| ParticipantOutcome {
            admitted_after: None,
            error: Some(msg.to_owned()),
            sent_packets: 0,
            sent_bytes: 0,
            ..participant(vec![])
        };
        let mut data = run(
            vec![refused("join refused: forbidden"), refused("join refused: forbidden")],
            Thresholds::default(),
        );
        let r = Report::from_run(&data);
        assert_eq!(r.verdict, Verdict::Failed);
        assert_eq!(r.exit_code(), EXIT_FAILED);
        assert_eq!(
            r.errors,
            vec![ErrorCount {
                message: "join refused: forbidden".into(),
                count: 2
            }]
        );
        assert!(r.to_table().contains("FAILED"));
        data.interrupted = true;
        data.participants = vec![participant(vec![stream(TrackKind::Audio, 10, 10, 1, 300)])];
        let r = Report::from_run(&data);
        assert_eq!(r.exit_code(), EXIT_INTERRUPTED);
        assert_eq!(r.participants.started, 1);
        assert!(r.to_table().contains("INTERRUPTED"));
    }

    #[test]
    fn an_idle_run_states_the_gateways_cpu_per_connected_participant() {
        let idle = |up: usize, error: Option<&str>| ParticipantOutcome {
            connections: Some(ConnectionsUp { up, total: 2 }),
            error: error.map(str::to_owned),
            ..participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)])
        };
        let mut data = run(
            vec![
                idle(2, None),
                idle(2, None),
                idle(2, None),
                idle(1, None),
                idle(2, Some("publisher connection failed")),
            ],
            Thresholds::default(),
        );
        data.shape.idle = true;
        data.gateway.cpu_percent = Some(1.5);
        data.gateway.forwarded_per_sec = Some(0.0);
        let r = Report::from_run(&data);
        let f = r.idle.expect("an idle run has idle figures");
        assert_eq!(
            (f.participants, f.connected),
            (5, 3),
            "one lost a connection, one failed"
        );
        assert_eq!(
            (f.connections_up, f.connections),
            (7, 10),
            "a failed participant's count as down"
        );
        // 1.5 % of a core = 15 ms of CPU per second, over 3 connected participants.
        assert!(
            (f.gateway_cpu_ms_per_participant_per_sec.unwrap() - 5.0).abs() < 1e-9,
            "{f:?}"
        );
        assert_eq!(f.forwarded_per_sec, Some(0.0));
        let table = r.to_table();
        assert!(table.contains("Idle participants"), "{table}");
        assert!(
            table.contains("3 of 5 participants (7 of 10 media connections up)"),
            "{table}"
        );
        assert!(table.contains("5.000 ms per second"), "{table}");
        assert!(r.to_json().contains("\"gateway_cpu_ms_per_participant_per_sec\": 5.0"));
        // Nobody connected, or no CPU figure: no per-participant figure, not a division by zero.
        let f = IdleFigures::of(&[idle(0, None)], &data.gateway);
        assert_eq!((f.connected, f.gateway_cpu_ms_per_participant_per_sec), (0, None));
        data.gateway.cpu_percent = None;
        assert_eq!(
            Report::from_run(&data)
                .idle
                .unwrap()
                .gateway_cpu_ms_per_participant_per_sec,
            None
        );
        // A run with media has none.
        data.shape.idle = false;
        assert!(Report::from_run(&data).idle.is_none());
        assert!(!Report::from_run(&data).to_table().contains("Idle participants"));
    }

    #[test]
    fn the_limit_is_the_side_that_saturated() {
        let client = |cpu: f64, busiest: Option<f64>, drops: u64, cores: usize| ClientFigures {
            engine: "lean".into(),
            simulcast: false,
            cores,
            cpu_percent: Some(cpu),
            busiest_thread_percent: busiest,
            socket_drops: Some(drops),
            socket_drops_run: None,
        };
        let (limit, why) = limiting_side(Some(95.0), None, None, &client(30.0, Some(28.0), 0, 1));
        assert_eq!(limit, Limit::Gateway, "{why}");
        assert!(why.contains("95 % of one core"), "{why}");
        // A saturated engine thread, a full socket buffer, or the whole process on its cores.
        for c in [
            client(93.0, Some(92.0), 0, 2),
            client(20.0, Some(20.0), 12, 1),
            client(185.0, None, 0, 2),
        ] {
            let (limit, why) = limiting_side(Some(40.0), None, Some(0), &c);
            assert_eq!(limit, Limit::LoadTester, "{c:?}: {why}");
        }
        assert!(
            limiting_side(Some(40.0), None, None, &client(20.0, None, 12, 1))
                .1
                .contains("dropped 12 datagrams")
        );
        // The sdk engine on two cores at 150 % is not saturated (no thread figure).
        assert_eq!(
            limiting_side(Some(40.0), None, None, &client(150.0, None, 0, 2)).0,
            Limit::Neither
        );
        assert_eq!(
            limiting_side(Some(99.0), None, None, &client(99.0, Some(99.0), 0, 1)).0,
            Limit::Both
        );
        assert_eq!(
            limiting_side(None, None, None, &client(20.0, None, 0, 1)).0,
            Limit::Unknown
        );
        assert_eq!(
            limiting_side(Some(20.0), None, None, &ClientFigures::default()).0,
            Limit::Unknown
        );
        // A gateway whose media sockets overflowed was the limit, whatever its CPU said (a
        // core shared with other work shows less than it needed).
        let (limit, why) = limiting_side(Some(55.0), None, Some(4_000), &client(45.0, Some(45.0), 0, 1));
        assert_eq!(limit, Limit::Gateway, "{why}");
        assert!(why.contains("dropped 4000 datagrams"), "{why}");
        // Two shards: the process at 120 % of one core is not saturated while neither shard
        // is; one shard at 95 % is, with the process at 70 %.
        let idle = client(30.0, Some(30.0), 0, 1);
        let (limit, why) = limiting_side(Some(120.0), Some(60.0), Some(0), &idle);
        assert_eq!(limit, Limit::Neither, "{why}");
        assert!(why.contains("busiest media shard 60 %"), "{why}");
        let (limit, why) = limiting_side(Some(70.0), Some(95.0), Some(0), &idle);
        assert_eq!(limit, Limit::Gateway, "{why}");
        assert!(why.contains("busiest media shard 95 %"), "{why}");
    }

    #[test]
    fn cpu_per_forwarded_packet_comes_from_the_gateways_cpu_and_rate() {
        let mut data = run(
            vec![participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)])],
            Thresholds::default(),
        );
        data.gateway.cpu_percent = Some(25.0);
        data.gateway.forwarded_per_sec = Some(50_000.0);
        let r = Report::from_run(&data);
        let us = r.server_us_per_forwarded_packet.expect("both figures");
        assert!(
            (us - 5.0).abs() < 1e-9,
            "0.25 s of CPU per second / 50 000 packets = 5 us, got {us}"
        );
        assert_eq!(r.limit, Limit::Neither, "{}", r.limit_reason);
        let table = r.to_table();
        assert!(table.contains("CPU per forwarded pkt  5.00 us"), "{table}");
        assert!(
            table.contains("Load tester (lean engine, one-layer camera, 1 core(s))"),
            "{table}"
        );
        assert!(table.contains("busiest engine thread 35.0 %"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["limit"], "neither");
        assert_eq!(json["client"]["socket_drops"], 0);
        data.gateway.forwarded_per_sec = Some(0.0);
        assert_eq!(Report::from_run(&data).server_us_per_forwarded_packet, None);
    }

    #[test]
    fn renders_a_table_and_one_json_object() {
        let data = run(
            vec![
                participant(vec![stream(TrackKind::Audio, 100, 100, 1, 300)]),
                participant(vec![stream(TrackKind::Video, 100, 100, 2, 350)]),
            ],
            Thresholds {
                max_loss_percent: Some(1.0),
                max_p99_ms: None,
            },
        );
        let r = Report::from_run(&data);
        let table = r.to_table();
        for needle in [
            "1 meeting x (2 publishers + 0 subscribers), audio 32 kbit/s at 50/s, no video",
            "participants joined    2 of 2 (0 failed)",
            "streams received       2 of 2",
            "loss                   0.00 %",
            "CPU (steady phase)     12.5 % of one core",
            "memory (RSS peak)      50.0 MiB",
            "forwarded packets/s    n/a",
            "Verdict: PASS",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in\n{table}");
        }
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["verdict"], "pass");
        assert_eq!(json["participants"]["joined"], 2);
        assert_eq!(json["packets"]["loss_percent"], 0.0);
        assert_eq!(json["shape"]["duration"], 3.0);
        assert_eq!(json["thresholds"]["max_loss_percent"], 1.0);
        assert_eq!(json["gateway"]["forwarded_per_sec"], serde_json::Value::Null);
        assert_eq!(json["gateway"]["rss_peak_bytes"], 50.0 * 1024.0 * 1024.0);
        assert!(json["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
}
