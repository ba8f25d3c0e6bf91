//! Test participants for an in-process [`Sfu`], built from the SDK's media layer.
//!
//! A [`Peer`] is the SDK's [`Publisher`] and [`Subscriber`] wired to the SFU the way
//! [`gatehouse_sdk::Client`] wires them to the signaling socket: their `ClientMessage`s
//! go to [`Sfu::handle`], and what the SFU puts in the participant's outbox comes back
//! as answers, offers, candidates and track announcements. Every published track sends
//! the SDK's synthetic media; every received one is checked payload by payload
//! ([`ReceiverStats`]) and at the RTP level (sequence numbers, payload types, header
//! extensions), which is what the SFU rewrites.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse::outbox::Next;
use gatehouse::sfu::{MediaParticipant, Sfu};
use gatehouse_sdk::media::{
    AUDIO_LEVEL_URI, MediaOptions, Publisher, RemoteTrack, RemoteTracks, Subscriber, VideoCodec, audio_level_of,
};
use gatehouse_sdk::synthetic::{ReceiverStats, StreamSummary, SyntheticConfig, audio_level};
use gatehouse_sdk::{LocalTrack, RtpPacket, SdkError, SyntheticSender, now_us};
use gatehouse_signaling::Error;
use gatehouse_signaling::protocol::{
    ClientMessage, MediaMessage, ParticipantKind, PeerRole, ServerMessage, TrackInfo, TrackKind, TrackSource,
};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// The payload types the SFU's subscriber legs use for Opus and VP8 (its default codecs).
pub const OPUS_PT: u8 = 111;
pub const VP8_PT: u8 = 96;

/// Logs to the test output, filtered by `RUST_LOG` (e.g. `gatehouse=debug`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls a condition until it holds or the timeout passes. Returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Synthetic video: 50 frames a second of two 600-byte packets, a keyframe only
/// first and on request, so a keyframe that arrives is one a request provoked.
fn video() -> SyntheticConfig {
    SyntheticConfig {
        frame_rate: 50,
        bitrate_bps: 480_000,
        keyframe_interval: 0,
        ..SyntheticConfig::video()
    }
}

/// What one peer received on one track.
#[derive(Debug, Clone)]
pub struct Received {
    /// The stream id the track arrived with (the owner's participant id).
    pub owner: String,
    pub kind: TrackKind,
    /// RTP packets, corrupt ones included.
    pub packets: u64,
    /// What the synthetic payloads say: loss, order, duplicates, corruption, keyframes, latency.
    pub stream: StreamSummary,
    /// RTP sequence numbers that did not follow the previous one by exactly 1.
    pub rtp_seq_jumps: u64,
    pub payload_types: Vec<u8>,
    /// Header extension ids seen.
    pub extension_ids: Vec<u8>,
    /// Audio packets whose audio level was missing or not the one the sender put there.
    pub bad_levels: u64,
}

/// A track being received: the payload statistics and the RTP-level checks.
struct Receiving {
    stats: ReceiverStats,
    /// The subscriber connection's audio-level id (audio tracks).
    level_id: Option<u8>,
    last_rtp_seq: Option<u16>,
    seen: Received,
}

impl Receiving {
    fn record(&mut self, packet: &RtpPacket) {
        let seen = &mut self.seen;
        seen.packets += 1;
        if !seen.payload_types.contains(&packet.header.payload_type) {
            seen.payload_types.push(packet.header.payload_type);
        }
        if let Some(last) = self.last_rtp_seq
            && packet.header.sequence_number != last.wrapping_add(1)
        {
            seen.rtp_seq_jumps += 1;
        }
        self.last_rtp_seq = Some(packet.header.sequence_number);
        for ext in &packet.header.extensions {
            if !seen.extension_ids.contains(&ext.id) {
                seen.extension_ids.push(ext.id);
            }
        }
        // A corrupt payload is counted by the statistics.
        if let Ok(synthetic) = self.stats.on_payload(now_us(), &packet.payload)
            && let Some(id) = self.level_id
            && audio_level_of(packet, id) != Some(audio_level(synthetic.frame))
        {
            seen.bad_levels += 1;
        }
    }

    fn snapshot(&self) -> Received {
        Received {
            stream: self.stats.summary(),
            ..self.seen.clone()
        }
    }
}

type Tracks<T> = Arc<Mutex<HashMap<String, T>>>;

/// One participant in the call: the SDK's two connections, signaling through the `Sfu` API.
pub struct Peer {
    pub sfu: Sfu,
    pub meeting_id: String,
    pub id: String,
    pub publisher: Arc<Publisher>,
    pub subscriber: Arc<Subscriber>,
    /// Every server message, in order.
    log: Arc<Mutex<Vec<ServerMessage>>>,
    /// The others' tracks its `admitted` listed ([`enter`](Self::enter); none after [`join`](Self::join)).
    pub admitted: Vec<TrackInfo>,
    /// Per subscribed track id.
    received: Tracks<Receiving>,
    /// The subscribed tracks themselves, to send feedback on.
    remotes: Tracks<Arc<RemoteTrack>>,
    /// Our published tracks and their synthetic senders.
    sending: Mutex<Vec<(LocalTrack, SyntheticSender)>>,
    /// What the SFU refused of our media frames, and our own media failures.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Signaling in both directions, and the receiver of remote tracks.
    tasks: Vec<AbortHandle>,
}

impl Peer {
    /// Joins the call publishing VP8 video (see [`join_with`](Self::join_with)).
    pub async fn join(sfu: &Sfu, meeting_id: &str, id: &str, may_present: bool) -> Arc<Peer> {
        Self::join_with(sfu, meeting_id, id, may_present, VideoCodec::Vp8).await
    }

    /// Enters the call as the gateway's signaling does for a participant admitted to it
    /// (`server::live`): the others' tracks listed in its `admitted` ([`admitted`](Self::admitted),
    /// `Sfu::tracks_for`), then `Sfu::enter_call` with them, so [`listed`](Self::listed) is
    /// what its client shows.
    pub async fn enter(sfu: &Sfu, meeting_id: &str, id: &str) -> Arc<Peer> {
        Self::start(sfu, meeting_id, id, true, VideoCodec::Vp8, true).await
    }

    /// Joins the call (`add_participant`) with both connections ready: the subscriber
    /// answers the SFU's offers as they come, the publisher offers on [`publish`](Self::publish).
    pub async fn join_with(
        sfu: &Sfu,
        meeting_id: &str,
        id: &str,
        may_present: bool,
        video_codec: VideoCodec,
    ) -> Arc<Peer> {
        Self::start(sfu, meeting_id, id, may_present, video_codec, false).await
    }

    async fn start(
        sfu: &Sfu,
        meeting_id: &str,
        id: &str,
        may_present: bool,
        video_codec: VideoCodec,
        admitted: bool,
    ) -> Arc<Peer> {
        let options = MediaOptions {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            video_codec,
            negotiation_timeout: Duration::from_secs(5),
            stream_id: id.to_owned(),
            ..MediaOptions::default()
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let publisher = Publisher::new(options.clone(), out_tx.clone())
            .await
            .expect("publisher connection");
        let (subscriber, remote_tracks) = Subscriber::new(options, out_tx);
        let (outbox, inbox) = gatehouse::outbox::outbox();
        let participant = MediaParticipant {
            meeting_id: meeting_id.into(),
            participant_id: id.into(),
            kind: if may_present {
                ParticipantKind::Staff
            } else {
                ParticipantKind::Guest
            },
            may_present,
        };
        let mut told = Vec::new();
        if admitted {
            told = sfu.tracks_for(meeting_id, id).await;
            told.retain(|t| t.participant_id != id);
            sfu.enter_call(participant, outbox, told.clone())
                .await
                .expect("enter_call");
        } else {
            sfu.add_participant(participant, outbox).await.expect("add_participant");
        }
        let (log, errors) = (Arc::default(), Arc::default());
        let (received, remotes) = (Arc::default(), Arc::default());
        let signaling = Signaling {
            sfu: sfu.clone(),
            meeting_id: meeting_id.to_owned(),
            id: id.to_owned(),
            publisher: publisher.clone(),
            subscriber: subscriber.clone(),
            errors: Arc::clone(&errors),
        };
        let tasks = vec![
            tokio::spawn(signaling.clone().client_to_sfu(out_rx)).abort_handle(),
            tokio::spawn(signaling.sfu_to_client(inbox, Arc::clone(&log))).abort_handle(),
            tokio::spawn(receive(
                remote_tracks,
                subscriber.clone(),
                Arc::clone(&received),
                Arc::clone(&remotes),
            ))
            .abort_handle(),
        ];
        Arc::new(Peer {
            sfu: sfu.clone(),
            meeting_id: meeting_id.into(),
            id: id.into(),
            publisher,
            subscriber,
            log,
            admitted: told,
            received,
            remotes,
            sending: Mutex::new(Vec::new()),
            errors,
            tasks,
        })
    }

    /// Publishes a track for `source` (a negotiation of the publisher connection) and
    /// starts its synthetic media, which flows once the connection is up. The SFU's
    /// refusal comes back as [`SdkError::Server`].
    pub async fn publish(&self, source: TrackSource) -> Result<LocalTrack, SdkError> {
        let track = self.publisher.publish(source).await?;
        let config = match track.kind() {
            TrackKind::Audio => SyntheticConfig::audio(),
            TrackKind::Video => video(),
        };
        let sender = track.start_synthetic(config)?;
        self.sending.lock().unwrap().push((track.clone(), sender));
        Ok(track)
    }

    /// Stops sending `source` and renegotiates without it.
    pub async fn unpublish(&self, source: TrackSource) {
        let (track, sender) = {
            let mut sending = self.sending.lock().unwrap();
            let i = sending
                .iter()
                .position(|(t, _)| t.source() == source)
                .expect("a published track of that source");
            sending.remove(i)
        };
        sender.stop().await.expect("the synthetic sender ran cleanly");
        self.publisher.unpublish(&track).await.expect("unpublish");
    }

    /// Keyframe requests (PLI, FIR) that reached our published track of `source`.
    pub fn keyframe_requests(&self, source: TrackSource) -> u64 {
        let sending = self.sending.lock().unwrap();
        let (_, sender) = sending
            .iter()
            .find(|(t, _)| t.source() == source)
            .expect("a published track of that source");
        sender.sent().keyframe_requests
    }

    /// Sends a PLI for a subscribed track, as a browser does when it needs a keyframe.
    pub async fn request_keyframe(&self, track_id: &str) {
        let track = self.remotes.lock().unwrap().get(track_id).cloned();
        track
            .expect("subscribed track")
            .request_keyframe()
            .await
            .expect("write PLI");
    }

    /// The header-extension id our subscriber connection negotiated for `uri`.
    pub async fn subscriber_extension_id(&self, uri: &str) -> Option<u8> {
        self.subscriber.header_extension_id(uri).await
    }

    /// The header-extension id our publisher connection negotiated for `uri`.
    pub fn publisher_extension_id(&self, uri: &str) -> Option<u8> {
        let sending = self.sending.lock().unwrap();
        sending.iter().find_map(|(t, _)| t.header_extension_id(uri))
    }

    /// A media message from this participant.
    pub async fn send(&self, message: MediaMessage) -> Result<(), Error> {
        self.sfu.handle(&self.meeting_id, &self.id, message).await
    }

    /// The others' tracks its client lists now: its `admitted`, then every `track_published`
    /// and `track_unpublished` in order.
    pub fn listed(&self) -> Vec<TrackInfo> {
        let mut listed = self.admitted.clone();
        for message in self.log.lock().unwrap().iter() {
            match message {
                ServerMessage::TrackPublished { track } if track.participant_id != self.id.as_str() => {
                    listed.retain(|t| t.track_id != track.track_id);
                    listed.push(track.clone());
                }
                ServerMessage::TrackUnpublished { track_id, .. } => listed.retain(|t| t.track_id != *track_id),
                _ => {}
            }
        }
        listed
    }

    /// Messages received so far matching `f`.
    pub fn messages<T>(&self, f: impl Fn(&ServerMessage) -> Option<T>) -> Vec<T> {
        self.log.lock().unwrap().iter().filter_map(f).collect()
    }

    pub fn received(&self, track_id: &str) -> Option<Received> {
        self.received.lock().unwrap().get(track_id).map(Receiving::snapshot)
    }

    /// Everything received so far, per track id.
    pub fn received_all(&self) -> HashMap<String, Received> {
        let received = self.received.lock().unwrap();
        received.iter().map(|(k, r)| (k.clone(), r.snapshot())).collect()
    }

    pub fn received_from(&self, owner: &str) -> Vec<(String, Received)> {
        self.received_all()
            .into_iter()
            .filter(|(_, r)| r.owner == owner)
            .collect()
    }

    /// Leaves the call: media stops, the SFU forgets us, our connections close.
    pub async fn leave(&self) {
        self.sending.lock().unwrap().clear();
        self.sfu.remove_participant(&self.meeting_id, &self.id).await;
        self.close().await;
    }

    /// Closes our connections without telling the SFU (it may be gone already).
    pub async fn close(&self) {
        self.sending.lock().unwrap().clear();
        self.publisher.close().await;
        self.subscriber.close().await;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The signaling between one peer and the SFU, both ways: what
/// `gatehouse_sdk::Client` does over the WebSocket, through the `Sfu` API instead.
#[derive(Clone)]
struct Signaling {
    sfu: Sfu,
    meeting_id: String,
    id: String,
    publisher: Arc<Publisher>,
    subscriber: Arc<Subscriber>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Signaling {
    /// Our connections' frames to the SFU, in order. A refused offer fails the
    /// `publish` waiting for its answer.
    async fn client_to_sfu(self, mut out: mpsc::UnboundedReceiver<ClientMessage>) {
        while let Some(message) = out.recv().await {
            let media = message.into_media().expect("the media layer sends media frames only");
            let offer = matches!(media, MediaMessage::PublishOffer { .. });
            if let Err(e) = self.sfu.handle(&self.meeting_id, &self.id, media).await {
                if offer {
                    self.publisher.on_refused(e.code, e.message.clone());
                }
                self.errors.lock().unwrap().push(e.to_string());
            }
        }
    }

    /// The SFU's messages to our connections; every one is logged.
    async fn sfu_to_client(self, mut inbox: gatehouse::outbox::OutboxReceiver, log: Arc<Mutex<Vec<ServerMessage>>>) {
        while let Next::Message(message) = inbox.next().await {
            log.lock().unwrap().push(message.clone());
            let result = match message {
                ServerMessage::PublishAnswer { sdp } => match self.publisher.on_answer(sdp) {
                    true => Ok(()),
                    false => Err(SdkError::Protocol("publish_answer without an offer in flight".into())),
                },
                ServerMessage::SubscribeOffer { sdp, .. } => self.subscriber.on_offer(sdp).await,
                ServerMessage::IceCandidate { target, candidate } => match target {
                    PeerRole::Publisher => self.publisher.add_remote_candidate(candidate).await,
                    PeerRole::Subscriber => self.subscriber.add_remote_candidate(candidate).await,
                },
                ServerMessage::TrackPublished { track } if track.participant_id == self.id => {
                    self.publisher.claim_track(&track);
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                self.errors.lock().unwrap().push(e.to_string());
            }
        }
    }
}

/// Takes each remote track as it opens and checks what arrives on it.
async fn receive(
    mut tracks: RemoteTracks,
    subscriber: Arc<Subscriber>,
    received: Tracks<Receiving>,
    remotes: Tracks<Arc<RemoteTrack>>,
) {
    while let Some(track) = tracks.recv().await {
        let track = Arc::new(track);
        let track_id = track.track_id().to_owned();
        // webrtc-rs fills a remote track's codec in from its receiver after opening it, and
        // can miss it (a track the SFU removes at once, and rarely a live one): the SDK then
        // judges the synthetic format by the track's kind, so a live track is still read (it
        // once was not, and its packets filled webrtc-rs's queue unread: "got 0 packets").
        let Some(codec) = track.synthetic_codec() else {
            tracing::warn!(
                track_id,
                mime_type = track.mime_type(),
                "a remote track of no synthetic format"
            );
            continue;
        };
        let level_id = match track.kind() {
            TrackKind::Audio => subscriber.header_extension_id(AUDIO_LEVEL_URI).await,
            TrackKind::Video => None,
        };
        let stats = ReceiverStats::new(codec, now_us());
        let seen = Received {
            owner: track.participant_id().to_owned(),
            kind: track.kind(),
            packets: 0,
            stream: stats.summary(),
            rtp_seq_jumps: 0,
            payload_types: Vec::new(),
            extension_ids: Vec::new(),
            bad_levels: 0,
        };
        let receiving = Receiving {
            stats,
            level_id,
            last_rtp_seq: None,
            seen,
        };
        received.lock().unwrap().insert(track_id.clone(), receiving);
        remotes.lock().unwrap().insert(track_id.clone(), Arc::clone(&track));
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(packet) = track.recv_rtp().await {
                if let Some(r) = received.lock().unwrap().get_mut(&track_id) {
                    r.record(&packet);
                }
            }
        });
    }
}
