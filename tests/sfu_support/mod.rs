//! Test peers for the SFU: clients built on the async `webrtc` crate (the other
//! driver of the same `rtc` core), talking to an in-process `Sfu` through its
//! API the way the signaling socket would.
//!
//! A client publishes synthetic RTP: every payload carries a magic, its own
//! sequence number, the send time and a flag byte, then a pattern derived from
//! the sequence number, so a receiver can check integrity, order, loss and
//! latency. A publisher marks the next video payload as a keyframe after it
//! receives a keyframe request (PLI/FIR), which is how tests see PLIs arrive.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatehouse::sfu::rtcp::{RTCP_TAP_SLOT, RtcpTap, TapCounters, TapSink};
use gatehouse::sfu::{MediaParticipant, Sfu};
use gatehouse_signaling::protocol::{
    IceCandidate, MediaMessage, ParticipantKind, PeerRole, PublishedTrack, ServerMessage, TrackSource,
};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{Notify, mpsc};
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

pub const OPUS_PT: u8 = 111;
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const VIDEO_ORIENTATION_URI: &str = "urn:3gpp:video-orientation";
pub const VP8_PT: u8 = 96;
const MAGIC: &[u8; 4] = b"GHT1";
const HEADER: usize = 17;

/// Logs to the test output, filtered by `RUST_LOG` (e.g. `gatehouse=debug`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A video codec from the default set, by mime type and fmtp line.
pub fn video_codec(mime: &str, fmtp: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: vec![],
    }
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

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Builds a synthetic payload of `len` bytes (at least the header).
pub fn payload(seq: u32, keyframe: bool, len: usize) -> Bytes {
    let len = len.max(HEADER);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&unix_micros().to_be_bytes());
    p.push(u8::from(keyframe));
    for i in 0..len - HEADER {
        p.push((seq as u8).wrapping_add(i as u8));
    }
    Bytes::from(p)
}

/// The audio level (RFC 6464, -dBov) a synthetic audio packet carries: derived from its sequence number.
pub fn audio_level(seq: u32) -> u8 {
    (seq % 127) as u8
}

/// What a payload says about itself, or `None` if it is corrupt.
pub struct Parsed {
    pub seq: u32,
    pub sent_us: u64,
    pub keyframe: bool,
}

pub fn parse(p: &[u8]) -> Option<Parsed> {
    if p.len() < HEADER || &p[..4] != MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes(p[4..8].try_into().ok()?);
    let sent_us = u64::from_be_bytes(p[8..16].try_into().ok()?);
    let keyframe = p[16] & 1 == 1;
    for (i, b) in p[HEADER..].iter().enumerate() {
        if *b != (seq as u8).wrapping_add(i as u8) {
            return None;
        }
    }
    Some(Parsed { seq, sent_us, keyframe })
}

/// What one client received on one track.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The stream id the track arrived with (the owner's participant id).
    pub owner: String,
    pub kind: Option<RtpCodecKind>,
    pub packets: u64,
    pub first_seq: Option<u32>,
    pub last_seq: Option<u32>,
    /// Packets whose payload sequence was below the last one seen.
    pub out_of_order: u64,
    /// Sequence numbers skipped (sum of gaps).
    pub missing: u64,
    pub corrupt: u64,
    pub keyframes: u64,
    pub max_latency_us: u64,
    /// RTP sequence numbers that did not follow the previous one by exactly 1.
    pub rtp_seq_jumps: u64,
    last_rtp_seq: Option<u16>,
    pub payload_types: Vec<u8>,
    /// Header extension ids seen.
    pub extension_ids: Vec<u8>,
    /// Audio-level values that did not match the level the sender derived from its sequence number.
    pub bad_levels: u64,
}

impl Received {
    fn record(&mut self, pkt: &rtp::Packet) {
        self.packets += 1;
        if !self.payload_types.contains(&pkt.header.payload_type) {
            self.payload_types.push(pkt.header.payload_type);
        }
        if let Some(last) = self.last_rtp_seq
            && pkt.header.sequence_number != last.wrapping_add(1)
        {
            self.rtp_seq_jumps += 1;
        }
        self.last_rtp_seq = Some(pkt.header.sequence_number);
        for ext in &pkt.header.extensions {
            if !self.extension_ids.contains(&ext.id) {
                self.extension_ids.push(ext.id);
            }
        }
        let Some(p) = parse(&pkt.payload) else {
            self.corrupt += 1;
            return;
        };
        if let Some(ext) = pkt.header.extensions.first()
            && ext.payload.first().map(|b| b & 0x7f) != Some(audio_level(p.seq))
        {
            self.bad_levels += 1;
        }
        if p.keyframe {
            self.keyframes += 1;
        }
        self.max_latency_us = self.max_latency_us.max(unix_micros().saturating_sub(p.sent_us));
        match self.last_seq {
            None => self.first_seq = Some(p.seq),
            Some(last) if p.seq <= last => {
                self.out_of_order += 1;
                return;
            }
            Some(last) => self.missing += u64::from(p.seq - last - 1),
        }
        self.last_seq = Some(p.seq);
    }
}

struct Handler {
    role: PeerRole,
    /// Trickled candidates, forwarded by the signaling task.
    candidates: mpsc::UnboundedSender<(PeerRole, IceCandidate)>,
    gathered: Arc<(AtomicBool, Notify)>,
    connected: Arc<AtomicBool>,
    received: Arc<Mutex<HashMap<String, Received>>>,
    remotes: Arc<Mutex<HashMap<String, Arc<dyn TrackRemote>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.candidates.send((
                self.role,
                IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                },
            ));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.0.store(true, Ordering::SeqCst);
            self.gathered.1.notify_waiters();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.connected
            .store(state == RTCPeerConnectionState::Connected, Ordering::SeqCst);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let remotes = self.remotes.clone();
        tokio::spawn(async move {
            let owner = track.stream_id().await;
            let track_id = track.track_id().await;
            let kind = track.kind().await;
            remotes.lock().unwrap().insert(track_id.clone(), track.clone());
            {
                let mut r = received.lock().unwrap();
                let e = r.entry(track_id.clone()).or_default();
                e.owner = owner;
                e.kind = Some(kind);
            }
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(pkt) = event {
                    received
                        .lock()
                        .unwrap()
                        .entry(track_id.clone())
                        .or_default()
                        .record(&pkt);
                }
            }
        });
    }
}

/// A published synthetic track and its sending task.
pub struct LocalTrack {
    pub track_id: String,
    pub mid: String,
    pub source: TrackSource,
    pub local: Arc<TrackLocalStaticRTP>,
    pub sender: Arc<dyn RtpSender>,
    pub codec: RTCRtpCodec,
    pub sent: Arc<AtomicU64>,
    started: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

pub struct Client {
    pub sfu: Sfu,
    pub meeting_id: String,
    pub id: String,
    pub publisher: Arc<dyn PeerConnection>,
    pub subscriber: Arc<dyn PeerConnection>,
    /// Every server message, in order.
    pub log: Arc<Mutex<Vec<ServerMessage>>>,
    /// Per subscribed track id.
    pub received: Arc<Mutex<HashMap<String, Received>>>,
    /// The subscribed tracks themselves, to send feedback on.
    remotes: Arc<Mutex<HashMap<String, Arc<dyn TrackRemote>>>>,
    /// Keyframe requests (and NACKs) that reached this client's publisher connection.
    pub feedback: Arc<TapCounters>,
    pub publisher_connected: Arc<AtomicBool>,
    pub subscriber_connected: Arc<AtomicBool>,
    publisher_gathered: Arc<(AtomicBool, Notify)>,
    answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    pub tracks: Mutex<Vec<LocalTrack>>,
    /// Errors the SFU returned to the automatic subscriber answers.
    pub answer_errors: Arc<Mutex<Vec<String>>>,
}

async fn peer(
    role: PeerRole,
    candidates: mpsc::UnboundedSender<(PeerRole, IceCandidate)>,
    gathered: Arc<(AtomicBool, Notify)>,
    connected: Arc<AtomicBool>,
    received: Arc<Mutex<HashMap<String, Received>>>,
    remotes: Arc<Mutex<HashMap<String, Arc<dyn TrackRemote>>>>,
    feedback: Arc<TapCounters>,
) -> Arc<dyn PeerConnection> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().expect("default codecs");
    // Registered before the interceptors' own extensions, so the ids differ from the
    // server's and the SFU has to remap them.
    for (uri, kind) in [
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
    ] {
        media_engine
            .register_header_extension(RTCRtpHeaderExtensionCapability { uri: uri.to_owned() }, kind, None)
            .expect("header extension");
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .expect("default interceptors")
        .with(Slot::from(RTCP_TAP_SLOT), RtcpTap::new(TapSink::Counters(feedback)));
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let handler = Arc::new(Handler {
        role,
        candidates,
        gathered,
        connected,
        received,
        remotes,
    });
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .expect("client peer connection");
    Arc::new(pc)
}

async fn wait_gathered(g: &(AtomicBool, Notify)) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let notified = g.1.notified();
            if g.0.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    })
    .await;
}

impl Client {
    /// Joins the call: `add_participant`, and a task that answers subscriber
    /// offers and forwards trickled candidates, recording every server message.
    pub async fn join(sfu: &Sfu, meeting_id: &str, id: &str, may_present: bool) -> Arc<Client> {
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(HashMap::new()));
        let remotes = Arc::new(Mutex::new(HashMap::new()));
        let feedback = Arc::new(TapCounters::default());
        let publisher_gathered = Arc::new((AtomicBool::new(false), Notify::new()));
        let subscriber_gathered = Arc::new((AtomicBool::new(false), Notify::new()));
        let publisher_connected = Arc::new(AtomicBool::new(false));
        let subscriber_connected = Arc::new(AtomicBool::new(false));
        let publisher = peer(
            PeerRole::Publisher,
            cand_tx.clone(),
            publisher_gathered.clone(),
            publisher_connected.clone(),
            received.clone(),
            remotes.clone(),
            feedback.clone(),
        )
        .await;
        let subscriber = peer(
            PeerRole::Subscriber,
            cand_tx,
            subscriber_gathered.clone(),
            subscriber_connected.clone(),
            received.clone(),
            remotes.clone(),
            Arc::new(TapCounters::default()),
        )
        .await;
        let (outbox, mut inbox) = gatehouse::outbox::outbox();
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        sfu.add_participant(
            MediaParticipant {
                meeting_id: meeting_id.into(),
                participant_id: id.into(),
                kind: if may_present {
                    ParticipantKind::Staff
                } else {
                    ParticipantKind::Guest
                },
                may_present,
            },
            outbox,
        )
        .await
        .expect("add_participant");
        let client = Arc::new(Client {
            sfu: sfu.clone(),
            meeting_id: meeting_id.into(),
            id: id.into(),
            publisher,
            subscriber,
            log: Arc::default(),
            received,
            remotes,
            feedback,
            publisher_connected,
            subscriber_connected,
            publisher_gathered,
            answers: tokio::sync::Mutex::new(answers_rx),
            tracks: Mutex::new(Vec::new()),
            answer_errors: Arc::default(),
        });
        // Trickle: candidates go to the SFU as they are gathered.
        {
            let (sfu, meeting, me) = (sfu.clone(), meeting_id.to_owned(), id.to_owned());
            tokio::spawn(async move {
                while let Some((target, candidate)) = cand_rx.recv().await {
                    let _ = sfu
                        .handle(&meeting, &me, MediaMessage::IceCandidate { target, candidate })
                        .await;
                }
            });
        }
        // Signaling: answer subscriber offers, hand publish answers to `publish`.
        {
            let c = client.clone();
            tokio::spawn(async move {
                while let gatehouse::outbox::Next::Message(msg) = inbox.next().await {
                    c.log.lock().unwrap().push(msg.clone());
                    match msg {
                        ServerMessage::PublishAnswer { sdp } => {
                            let _ = answers_tx.send(sdp);
                        }
                        ServerMessage::SubscribeOffer { sdp } => {
                            if let Err(e) = c.answer_subscription(sdp, &subscriber_gathered).await {
                                c.answer_errors.lock().unwrap().push(e);
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
        client
    }

    async fn answer_subscription(&self, sdp: String, gathered: &(AtomicBool, Notify)) -> Result<(), String> {
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
        self.subscriber
            .set_remote_description(offer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = self.subscriber.create_answer(None).await.map_err(|e| e.to_string())?;
        self.subscriber
            .set_local_description(answer)
            .await
            .map_err(|e| e.to_string())?;
        wait_gathered(gathered).await;
        let local = self
            .subscriber
            .local_description()
            .await
            .ok_or("no local description")?;
        self.sfu
            .handle(
                &self.meeting_id,
                &self.id,
                MediaMessage::SubscribeAnswer { sdp: local.sdp },
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Adds a synthetic track (not yet negotiated; call [`publish`](Self::publish)).
    pub async fn add_track(&self, source: TrackSource) -> Arc<TrackLocalStaticRTP> {
        let codec = match source {
            TrackSource::Microphone => RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            _ => video_codec("video/VP8", ""),
        };
        self.add_track_with(source, codec).await
    }

    /// Adds a synthetic track sent with a given codec (from the default set).
    pub async fn add_track_with(&self, source: TrackSource, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
        let kind = if source == TrackSource::Microphone {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let ssrc = rand::random::<u32>();
        let label = format!("{source:?}").to_lowercase();
        let track_id = format!("{}-{label}-{ssrc:08x}", self.id);
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("{}-stream", self.id),
            track_id.clone(),
            label,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            }],
        )));
        let sender = self
            .publisher
            .add_track(local.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add_track");
        self.tracks.lock().unwrap().push(LocalTrack {
            track_id,
            mid: String::new(),
            source,
            local: local.clone(),
            sender,
            codec,
            sent: Arc::default(),
            started: Arc::default(),
            stop: Arc::default(),
        });
        local
    }

    /// Stops sending on a source and removes its track from the publisher connection.
    pub async fn remove_track(&self, source: TrackSource) {
        let removed = {
            let mut tracks = self.tracks.lock().unwrap();
            let i = tracks
                .iter()
                .position(|t| t.source == source)
                .expect("track of that source");
            tracks.remove(i)
        };
        removed.stop.store(true, Ordering::SeqCst);
        self.publisher
            .remove_track(&removed.sender)
            .await
            .expect("remove_track");
    }

    /// Offers the publisher connection with the current tracks and applies the answer.
    pub async fn publish(&self) -> Result<(), gatehouse_signaling::Error> {
        let offer = self.publisher.create_offer(None).await.expect("create_offer");
        self.publisher
            .set_local_description(offer)
            .await
            .expect("set_local_description");
        wait_gathered(&self.publisher_gathered).await;
        // Map each of our tracks to the mid its transceiver got.
        let mut mids: HashMap<String, String> = HashMap::new();
        for t in self.publisher.get_transceivers().await {
            if let (Ok(Some(mid)), Ok(Some(sender))) = (t.mid().await, t.sender().await) {
                mids.insert(sender.track().track_id().await, mid);
            }
        }
        let mut announced = Vec::new();
        {
            let mut tracks = self.tracks.lock().unwrap();
            for t in tracks.iter_mut() {
                t.mid = mids
                    .get(&t.track_id)
                    .cloned()
                    .expect("each track has a mid after the offer");
                announced.push(PublishedTrack {
                    mid: t.mid.clone(),
                    source: t.source,
                    muted: false,
                });
            }
        }
        let local = self.publisher.local_description().await.expect("local description");
        self.sfu
            .handle(
                &self.meeting_id,
                &self.id,
                MediaMessage::PublishOffer {
                    sdp: local.sdp,
                    tracks: announced,
                },
            )
            .await?;
        let sdp = tokio::time::timeout(Duration::from_secs(5), async { self.answers.lock().await.recv().await })
            .await
            .expect("publish_answer within 5 s")
            .expect("signaling task alive");
        let answer = RTCSessionDescription::answer(sdp).expect("answer parses");
        self.publisher
            .set_remote_description(answer)
            .await
            .expect("apply answer");
        Ok(())
    }

    /// Starts sending synthetic RTP on every track not yet sending: audio every
    /// 20 ms, video every 10 ms (first video payload and the one after each
    /// keyframe request are keyframes).
    pub fn start_media(&self) {
        for t in self.tracks.lock().unwrap().iter() {
            if t.started.swap(true, Ordering::SeqCst) || t.stop.load(Ordering::SeqCst) {
                continue;
            }
            let (local, sent, stop, feedback) =
                (t.local.clone(), t.sent.clone(), t.stop.clone(), self.feedback.clone());
            let (sender, codec) = (t.sender.clone(), t.codec.clone());
            let audio = t.source == TrackSource::Microphone;
            tokio::spawn(async move {
                let ssrc = local.ssrcs().await[0];
                // The payload type this leg negotiated for our codec.
                let params = sender.get_parameters().await.expect("sender parameters");
                let same = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
                    c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
                };
                let pt = params
                    .rtp_parameters
                    .codecs
                    .iter()
                    .filter(same)
                    .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
                    .or_else(|| params.rtp_parameters.codecs.iter().find(same))
                    .unwrap_or_else(|| {
                        panic!(
                            "codec {} not negotiated: {:?}",
                            codec.mime_type,
                            params
                                .rtp_parameters
                                .codecs
                                .iter()
                                .map(|c| (&c.rtp_codec.mime_type, c.payload_type))
                                .collect::<Vec<_>>()
                        )
                    })
                    .payload_type;
                let (step, ts_step, len) = if audio { (20, 960, 80) } else { (10, 900, 600) };
                let level_id = params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|h| audio && h.uri == AUDIO_LEVEL_URI)
                    .map(|h| h.id as u8);
                let mut ticker = tokio::time::interval(Duration::from_millis(step));
                let mut seen_requests = 0;
                let mut seq: u32 = 0;
                while !stop.load(Ordering::SeqCst) {
                    ticker.tick().await;
                    let requests = feedback.keyframe_requests.load(Ordering::SeqCst);
                    let keyframe = !audio && (seq == 0 || requests != seen_requests);
                    seen_requests = requests;
                    let mut header = rtp::header::Header {
                        version: 2,
                        marker: true,
                        payload_type: pt,
                        sequence_number: seq as u16,
                        timestamp: seq.wrapping_mul(ts_step),
                        ssrc,
                        ..Default::default()
                    };
                    if let Some(id) = level_id {
                        header.extension = true;
                        header.extension_profile = rtp::header::EXTENSION_PROFILE_ONE_BYTE;
                        header.extensions.push(rtp::header::Extension {
                            id,
                            payload: Bytes::copy_from_slice(&[0x80 | audio_level(seq)]),
                        });
                    }
                    let pkt = rtp::Packet {
                        header,
                        payload: payload(seq, keyframe, len),
                    };
                    if local.write_rtp(pkt).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    seq += 1;
                }
            });
        }
    }

    /// Sends a PLI for a subscribed track, as a browser does when it needs a keyframe.
    pub async fn request_keyframe(&self, track_id: &str) {
        let track = self
            .remotes
            .lock()
            .unwrap()
            .get(track_id)
            .cloned()
            .expect("subscribed track");
        let ssrc = track.ssrcs().await[0];
        track
            .write_rtcp(vec![Box::new(
                rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                },
            )])
            .await
            .expect("write PLI");
    }

    /// The header-extension id this client's subscriber connection negotiated for `uri`.
    pub async fn subscriber_extension_id(&self, uri: &str) -> Option<u8> {
        for r in self.subscriber.get_receivers().await {
            if let Ok(params) = r.get_parameters().await
                && let Some(h) = params.rtp_parameters.header_extensions.iter().find(|h| h.uri == uri)
            {
                return Some(h.id as u8);
            }
        }
        None
    }

    /// The header-extension id this client's publisher connection negotiated for `uri`.
    pub async fn publisher_extension_id(&self, uri: &str) -> Option<u8> {
        for s in self.publisher.get_senders().await {
            if let Ok(params) = s.get_parameters().await
                && let Some(h) = params.rtp_parameters.header_extensions.iter().find(|h| h.uri == uri)
            {
                return Some(h.id as u8);
            }
        }
        None
    }

    /// A media message from this client.
    pub async fn send(&self, message: MediaMessage) -> Result<(), gatehouse_signaling::Error> {
        self.sfu.handle(&self.meeting_id, &self.id, message).await
    }

    /// Messages received so far matching `f`.
    pub fn messages<T>(&self, f: impl Fn(&ServerMessage) -> Option<T>) -> Vec<T> {
        self.log.lock().unwrap().iter().filter_map(f).collect()
    }

    pub fn received(&self, track_id: &str) -> Option<Received> {
        self.received.lock().unwrap().get(track_id).cloned()
    }

    pub fn received_from(&self, owner: &str) -> Vec<(String, Received)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    pub async fn leave(&self) {
        for t in self.tracks.lock().unwrap().iter() {
            t.stop.store(true, Ordering::SeqCst);
        }
        self.sfu.remove_participant(&self.meeting_id, &self.id).await;
        let _ = self.publisher.close().await;
        let _ = self.subscriber.close().await;
    }
}
