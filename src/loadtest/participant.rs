//! One load-test participant: a staff peer from the SDK that joins its meeting,
//! publishes synthetic media if it is a publisher, and counts every packet of
//! every remote track with the SDK's [`ReceiverStats`]. Its [`Probe`] is shared
//! with the runner, which reads it for the live display and the final report.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{TrackKind, TrackSource};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, debug, info_span};

use super::report::{ConnectionsUp, ParticipantOutcome, StreamOutcome};
use super::scenario::{Role, Seat};
use gatehouse_sdk::synthetic::{ReceiverStats, StreamSummary, SyntheticConfig};
use gatehouse_sdk::{Client, ConnectOptions, Event, RemoteTrack, SyntheticSender, now_us};

/// How long joining (socket, `joined`, `admitted`) may take.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long closing one participant may take before it is abandoned.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every participant of a run shares.
pub(crate) struct Setup {
    /// Connection template: URL, token, TLS, media addresses.
    pub connect: ConnectOptions,
    /// Audio each publisher sends.
    pub audio: Option<SyntheticConfig>,
    /// Video each publisher sends.
    pub video: Option<SyntheticConfig>,
}

/// One received stream, counted as it arrives.
pub(crate) struct StreamProbe {
    kind: TrackKind,
    stats: Mutex<ReceiverStats>,
    /// A packet has arrived (cheaper to check than a summary).
    flowing: AtomicBool,
}

impl StreamProbe {
    /// A stream of `kind` in `codec`'s synthetic format; `started_us` is its receiver's start.
    pub fn new(kind: TrackKind, codec: gatehouse_sdk::synthetic::SyntheticCodec, started_us: u64) -> StreamProbe {
        StreamProbe {
            kind,
            stats: Mutex::new(ReceiverStats::new(codec, started_us)),
            flowing: AtomicBool::new(false),
        }
    }

    /// Counts one received payload (corrupt ones are counted as such inside).
    pub fn record(&self, arrival_us: u64, payload: &[u8]) {
        let _ = self.stats().on_payload(arrival_us, payload);
        self.flowing.store(true, Ordering::Relaxed);
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, ReceiverStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream's figures so far.
    pub fn summary(&self) -> StreamSummary {
        self.stats().summary()
    }

    fn outcome(&self) -> StreamOutcome {
        let stats = self.stats();
        StreamOutcome {
            kind: self.kind,
            summary: stats.summary(),
            latency: stats.latency().clone(),
        }
    }
}

#[derive(Default)]
struct ProbeState {
    admitted_after: Option<Duration>,
    join_sent_after: Option<Duration>,
    error: Option<String>,
    published: bool,
    streams: Vec<Arc<StreamProbe>>,
    connections: Option<ConnectionsUp>,
}

/// What the runner can see of a participant while it runs.
pub(crate) struct Probe {
    /// Its role.
    pub role: Role,
    /// Wall clock (µs) when it started, token in hand: the reference for join times.
    started_us: u64,
    /// Streams it should receive: every track of every other publisher in its meeting.
    expected_streams: usize,
    state: Mutex<ProbeState>,
    /// The gateway refused our media: give up publishing now rather than at the timeout.
    media_refused: Notify,
    /// The run is stopping: errors from here on are teardown, not failures.
    stopping: AtomicBool,
    /// Lean engine: its media connections, and how many of them are up now.
    connections_total: AtomicUsize,
    connections_up: AtomicUsize,
}

impl Probe {
    /// Starts latency measurement afresh on every stream (at the start of the steady phase).
    pub fn reset_latency(&self) {
        let streams = self.state.lock().unwrap_or_else(|p| p.into_inner()).streams.clone();
        for stream in streams {
            stream.stats().reset_latency();
        }
    }

    /// Every stream's latency since the last reset, merged (for a window of the steady
    /// phase: see `LatencyHistogram::since`).
    pub fn latency(&self) -> gatehouse_sdk::synthetic::LatencyHistogram {
        let streams = self.state.lock().unwrap_or_else(|p| p.into_inner()).streams.clone();
        let mut out = gatehouse_sdk::synthetic::LatencyHistogram::default();
        for stream in streams {
            out.merge(stream.stats().latency());
        }
        out
    }

    pub fn new(role: Role, expected_streams: usize) -> Probe {
        Probe {
            role,
            started_us: now_us(),
            expected_streams,
            state: Mutex::default(),
            media_refused: Notify::new(),
            stopping: AtomicBool::new(false),
            connections_total: AtomicUsize::new(0),
            connections_up: AtomicUsize::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wall clock (µs) when it started, token in hand.
    pub fn started_us(&self) -> u64 {
        self.started_us
    }

    /// A stream it receives (the lean engine finds them in the packets).
    pub fn add_stream(&self, stream: Arc<StreamProbe>) {
        self.state().streams.push(stream);
    }

    /// It sent `join` (µs on the wall clock).
    pub fn join_sent(&self, at_us: u64) {
        self.state().join_sent_after = Some(Duration::from_micros(at_us.saturating_sub(self.started_us)));
    }

    /// It was admitted into the call now.
    pub fn admitted(&self) {
        self.state().admitted_after = Some(Duration::from_micros(now_us().saturating_sub(self.started_us)));
    }

    /// Its media is published (or it gave up publishing).
    pub fn published(&self) {
        self.state().published = true;
    }

    /// Lean engine: it has one more media connection.
    pub fn connection_added(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Lean engine: one of its media connections came up (`true`) or went down.
    pub fn connection_changed(&self, up: bool) {
        if up {
            self.connections_up.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self
                .connections_up
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Notes its media connections as they are now, for the report: the runner calls it just
    /// before telling everyone to stop (none noted if it never had one, as with the sdk engine).
    /// One down then is a failure: its media stopped during the run.
    pub fn note_connections(&self) {
        let total = self.connections_total.load(Ordering::Relaxed);
        if total > 0 {
            let up = self.connections_up.load(Ordering::Relaxed).min(total);
            self.state().connections = Some(ConnectionsUp { up, total });
            if up < total {
                self.fail(format!(
                    "{} of {total} media connections down at the end of the run",
                    total - up
                ));
            }
        }
    }

    /// The run is stopping: later errors are teardown.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Records the first error only: the first is the cause, the rest follow from it.
    pub fn fail(&self, error: String) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        debug!(%error, "participant failed");
        self.state().error.get_or_insert(error);
    }

    /// Admitted into the call.
    pub fn joined(&self) -> bool {
        self.state().admitted_after.is_some()
    }

    /// Ended with an error.
    pub fn failed(&self) -> bool {
        self.state().error.is_some()
    }

    /// Done joining: failed, or in the call with its media published and every
    /// expected stream arriving, short of `missing` streams whose publishers failed.
    pub fn settled(&self, missing: usize) -> bool {
        let state = self.state();
        if state.error.is_some() {
            return true;
        }
        let published = state.published || self.role == Role::Subscriber;
        let flowing = state
            .streams
            .iter()
            .filter(|s| s.flowing.load(Ordering::Relaxed))
            .count();
        state.admitted_after.is_some() && published && flowing >= self.expected_streams.saturating_sub(missing)
    }

    /// Its streams, for the live display.
    pub fn streams(&self) -> Vec<Arc<StreamProbe>> {
        self.state().streams.clone()
    }

    /// The final outcome (call after the participant stopped).
    pub fn outcome(&self, sent_packets: u64, sent_bytes: u64) -> ParticipantOutcome {
        let state = self.state();
        ParticipantOutcome {
            role: self.role,
            admitted_after: state.admitted_after,
            join_sent_after: state.join_sent_after,
            error: state.error.clone(),
            sent_packets,
            sent_bytes,
            streams: state.streams.iter().map(|s| s.outcome()).collect(),
            connections: state.connections,
        }
    }
}

/// Resolves once the run is stopping (or the runner is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs one participant until `stop`, then closes it. Returns the packets and
/// bytes it sent; everything else is in its probe.
pub(crate) async fn run(
    setup: Arc<Setup>,
    seat: Seat,
    meeting_id: String,
    probe: Arc<Probe>,
    mut stop: watch::Receiver<bool>,
) -> (u64, u64) {
    let span = info_span!("loadtest", %meeting_id, participant_id = tracing::field::Empty, slot = seat.slot);
    async move {
        let options = setup.connect.clone().meeting(meeting_id);
        let connected = tokio::select! {
            c = tokio::time::timeout(JOIN_TIMEOUT, Client::connect(options)) => c,
            () = stopped(&mut stop) => return (0, 0),
        };
        let (client, events) = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                probe.fail(format!("join failed: {e}"));
                return (0, 0);
            }
            Err(_) => {
                probe.fail("join failed: no `joined` within 15 s".into());
                return (0, 0);
            }
        };
        tracing::Span::current().record("participant_id", client.me().participant_id.as_str());
        probe.state().join_sent_after = Some(Duration::from_micros(
            client.join_sent_us().saturating_sub(probe.started_us),
        ));
        let sent = in_call(&setup, &client, events, &probe, &mut stop).await;
        // Always close: webrtc-rs keeps sockets and tasks alive otherwise.
        probe.stopping.store(true, Ordering::Relaxed);
        let _ = client.leave();
        client.close().await;
        sent
    }
    .instrument(span)
    .await
}

/// From `joined` to the stop: wait for admission, publish, receive.
async fn in_call(
    setup: &Setup,
    client: &Client,
    mut events: gatehouse_sdk::Events,
    probe: &Arc<Probe>,
    stop: &mut watch::Receiver<bool>,
) -> (u64, u64) {
    let admitted = tokio::select! {
        a = events.wait_for(JOIN_TIMEOUT, |e| match e {
            Event::Admitted { .. } => Some(Ok(())),
            Event::Lobby { status, .. } => Some(Err(format!(
                "put in the lobby ({status:?}): the meeting's lobby bypass does not let this token's staff in"
            ))),
            Event::Left { reason, message } => Some(Err(format!("left before admission: {reason:?} {}", message.unwrap_or_default()))),
            Event::Disconnected { error } => Some(Err(format!("disconnected before admission: {}", error.unwrap_or_default()))),
            _ => None,
        }) => a,
        () = stopped(stop) => return (0, 0),
    };
    match admitted {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            probe.fail(reason);
            return (0, 0);
        }
        Err(e) => {
            probe.fail(format!("not admitted: {e}"));
            return (0, 0);
        }
    }
    probe.state().admitted_after = Some(Duration::from_micros(now_us().saturating_sub(probe.started_us)));

    // From now on events are read by their own task, so remote tracks are
    // picked up while we negotiate our own.
    let (events_done_tx, events_done) = tokio::sync::oneshot::channel();
    let event_task = tokio::spawn(
        pump_events(events, probe.clone(), stop.clone(), events_done_tx).instrument(tracing::Span::current()),
    );

    let mut senders: Vec<SyntheticSender> = Vec::new();
    if probe.role == Role::Publisher {
        let wanted = [
            (TrackSource::Microphone, setup.audio.clone()),
            (TrackSource::Camera, setup.video.clone()),
        ];
        for (source, config) in wanted {
            let Some(config) = config else { continue };
            let published = tokio::select! {
                p = client.publish(source) => p.map_err(|e| format!("publishing {source:?} failed: {e}")),
                () = probe.media_refused.notified() => Err("the gateway refused our media".into()),
                () = stopped(stop) => break,
            };
            match published.and_then(|track| {
                track
                    .start_synthetic(config)
                    .map_err(|e| format!("synthetic {source:?}: {e}"))
            }) {
                Ok(sender) => senders.push(sender),
                Err(e) => {
                    probe.fail(e);
                    break;
                }
            }
        }
        probe.state().published = true;
    }

    stopped(stop).await;
    let mut sent = (0, 0);
    for sender in senders {
        let s = sender.sent();
        sent.0 += s.packets;
        sent.1 += s.bytes;
        let _ = tokio::time::timeout(Duration::from_secs(2), sender.stop()).await;
    }
    // The receive tasks stop on the same signal; wait for the last counts.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, events_done).await;
    event_task.abort();
    sent
}

/// Reads events after admission: counts remote tracks, notes media refusals
/// and departures. Signals `done` once every receive task has finished.
async fn pump_events(
    mut events: gatehouse_sdk::Events,
    probe: Arc<Probe>,
    mut stop: watch::Receiver<bool>,
    done: tokio::sync::oneshot::Sender<()>,
) {
    let mut receivers = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = stopped(&mut stop) => break,
        };
        let Some(event) = event else { break };
        match event {
            Event::RemoteTrack(track) => {
                let Some(codec) = track.synthetic_codec() else {
                    probe.fail(format!(
                        "received a {} track, which carries no synthetic media",
                        track.mime_type()
                    ));
                    continue;
                };
                let stream = Arc::new(StreamProbe {
                    kind: track.kind(),
                    stats: Mutex::new(ReceiverStats::new(codec, probe.started_us)),
                    flowing: AtomicBool::new(false),
                });
                probe.state().streams.push(stream.clone());
                receivers.spawn(receive(track, stream, stop.clone()).instrument(tracing::Span::current()));
            }
            Event::Error { code, message } => {
                if code == ErrorCode::MediaStateError || code == ErrorCode::NotInCall {
                    probe.fail(format!("media refused by the gateway: {message}"));
                    probe.media_refused.notify_one();
                } else {
                    debug!(?code, %message, "gateway error");
                }
            }
            Event::MediaFailed { role, error } => {
                probe.fail(format!("{role:?} connection failed: {error}"));
                probe.media_refused.notify_one();
            }
            Event::Left { reason, message } => {
                probe.fail(format!(
                    "removed from the call: {reason:?} {}",
                    message.unwrap_or_default()
                ));
                break;
            }
            Event::Disconnected { error } => {
                probe.fail(format!("signaling disconnected: {}", error.unwrap_or_default()));
                break;
            }
            _ => {}
        }
    }
    // Keep receiving until the stop even if signaling ended early: media may still flow.
    stopped(&mut stop).await;
    while receivers.join_next().await.is_some() {}
    let _ = done.send(());
}

/// Counts one remote track's packets until the stop or its end.
async fn receive(track: RemoteTrack, stream: Arc<StreamProbe>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            packet = track.recv_rtp() => match packet {
                Some(packet) => {
                    // Corrupt payloads are counted inside; nothing else to do with them.
                    let _ = stream.stats().on_payload(now_us(), &packet.payload);
                    stream.flowing.store(true, Ordering::Relaxed);
                }
                None => break,
            },
            () = stopped(&mut stop) => break,
        }
    }
}
