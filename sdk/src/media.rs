//! Media over two peer connections, LiveKit style.
//!
//! The [`Publisher`] connection carries our own tracks: we offer, the server
//! answers. The [`Subscriber`] connection carries everyone else's: the server
//! offers, we answer. Both speak only [`ClientMessage`]s into a channel and take
//! the server's answers, offers and candidates through plain method calls, so the
//! same code runs against the gateway or against another peer in a test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{
    ClientMessage, IceCandidate, IceServer, MediaPath, ParticipantId, PeerRole, PublishedTrack, PublisherLayer,
    TrackId, TrackInfo, TrackKind, TrackSource,
};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tracing::{debug, warn};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfiguration,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::error::{Result, SdkError};
use crate::health::{PendingRestart, RestartTimeout};

/// An RTP packet as webrtc-rs models it (header and payload).
pub use rtc::rtp::Packet as RtpPacket;

/// Payload type the publisher offers for Opus.
const PT_OPUS: u8 = 111;
/// Payload type the publisher offers for VP8.
const PT_VP8: u8 = 96;
/// Payload type the publisher offers for H.264 (constrained baseline, packetization mode 1).
const PT_H264: u8 = 102;
/// Payload type the publisher offers for VP9 (profile 0).
const PT_VP9: u8 = 98;
/// Payload type the publisher offers for AV1 (main profile).
const PT_AV1: u8 = 41;

/// The RFC 6464 audio-level header extension (client to mixer: how loud each audio
/// packet is). Both connections negotiate it for audio, as browsers do; send it with
/// [`LocalTrack::write_payload_with_audio_level`], read it with [`audio_level_of`].
pub const AUDIO_LEVEL_URI: &str = rtc::sdp::extmap::AUDIO_LEVEL_URI;

/// The header extension that names a packet's `mid` (RFC 8843): with [`RID_URI`], how the
/// gateway tells a simulcast layer's packets apart (its SSRCs are not in the offer).
pub const MID_URI: &str = rtc::sdp::extmap::SDES_MID_URI;

/// The header extension that names a packet's simulcast layer by its `rid` (RFC 8852).
pub const RID_URI: &str = rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI;

/// The rids of a simulcast camera's layers, smallest first: about a quarter, a half and
/// the full resolution, as the web client (and LiveKit's clients) name them. The gateway
/// ranks layers by these names (docs/PROTOCOL.md, `publisher_layers`).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// Which codec the publisher offers for video (one per publisher connection).
///
/// Synthetic video (the `synthetic` feature) goes over any of them: its payloads keep
/// their VP8 framing whatever the codec, which a forwarding SFU never looks into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    /// VP8: what every SFU and browser handles.
    #[default]
    Vp8,
    /// H.264 constrained baseline, packetization mode 1.
    H264,
    /// VP9 profile 0.
    Vp9,
    /// AV1 main profile.
    Av1,
}

/// How peer connections are built.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Local UDP addresses to gather host candidates on. `0.0.0.0:0` binds every
    /// non-loopback interface; loopback must be listed explicitly (`127.0.0.1:0`),
    /// which is what a gateway on the same machine needs. Default: both.
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers. The client fills these from `admitted`.
    pub ice_servers: Vec<IceServer>,
    /// Use relay candidates only (the browser's `iceTransportPolicy: "relay"`): media goes
    /// through a TURN server from `ice_servers` or not at all. For checking that TURN works,
    /// or to hide this machine's addresses from the gateway. webrtc-rs allocates over UDP
    /// only: `turns:` and `?transport=tcp` URLs are skipped (browsers use them). Default: off.
    pub relay_only: bool,
    /// The codec offered for camera and screen tracks.
    pub video_codec: VideoCodec,
    /// Publish camera tracks as simulcast: three layers with the rids of
    /// [`SIMULCAST_RIDS`] (`q`, `h`, `f`), each its own RTP stream, as browsers publish
    /// cameras; the gateway forwards each subscriber the layer it needs and tells us which
    /// layers nobody needs ([`LocalTrack::is_layer_active`]). Off: one layer, as before.
    /// Screen shares and audio are always one layer. Default: on.
    pub simulcast: bool,
    /// How long to wait for the server's answer to a publisher offer.
    pub negotiation_timeout: Duration,
    /// Stream id (first half of `msid`) our published tracks carry; the client sets
    /// our participant id. The server is free to rewrite it for subscribers.
    pub stream_id: String,
}

impl Default for MediaOptions {
    fn default() -> Self {
        MediaOptions {
            udp_addrs: vec!["0.0.0.0:0".to_owned(), "127.0.0.1:0".to_owned()],
            ice_servers: Vec::new(),
            relay_only: false,
            video_codec: VideoCodec::Vp8,
            simulcast: true,
            negotiation_timeout: Duration::from_secs(10),
            stream_id: "gatehouse-sdk".to_owned(),
        }
    }
}

/// How often our ICE agent acts while connecting: RFC 8445's pacing (Ta, 50 ms) rather
/// than webrtc-rs's 200 ms. The gateway is ICE-lite, so we are always the controlling
/// agent, and webrtc-rs's controlling agent nominates a pair only on its next tick after
/// the pair's check succeeded (`rtc-ice` `ControllingSelector::contact_candidates`; a
/// full remote agent's own check would trigger it at once, a lite one sends none): at
/// 200 ms that tick was most of a join's time to first media.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Checks per candidate pair before it is given up: with [`ICE_CHECK_INTERVAL`], the
/// same 1.4 s as webrtc-rs's defaults (7 at 200 ms).
const ICE_MAX_BINDING_REQUESTS: u16 = 28;

/// Where a connection's outgoing signaling goes. Local ICE candidates are held
/// back until the offer or answer they belong to has been sent, so the server
/// never sees a candidate for a description it does not have yet.
struct Outbox {
    tx: mpsc::UnboundedSender<ClientMessage>,
    /// `None` once the first description went out; until then, held candidates.
    held: StdMutex<Option<Vec<IceCandidate>>>,
}

impl Outbox {
    fn new(tx: mpsc::UnboundedSender<ClientMessage>) -> Self {
        Outbox {
            tx,
            held: StdMutex::new(Some(Vec::new())),
        }
    }

    fn candidate(&self, target: PeerRole, candidate: IceCandidate) {
        let mut held = self
            .held
            .lock()
            .expect("outbox lock is never poisoned: no panics inside");
        match held.as_mut() {
            Some(list) => list.push(candidate),
            None => {
                let _ = self.tx.send(ClientMessage::IceCandidate { target, candidate });
            }
        }
    }

    /// Holds candidates again until the next description (an ICE restart: candidates
    /// gathered for it must follow the offer or answer that carries its credentials).
    fn hold(&self) {
        let mut held = self
            .held
            .lock()
            .expect("outbox lock is never poisoned: no panics inside");
        held.get_or_insert_with(Vec::new);
    }

    /// Sends a description, then any candidates that waited for it.
    fn send_description(&self, target: PeerRole, message: ClientMessage) -> Result<()> {
        let mut held = self
            .held
            .lock()
            .expect("outbox lock is never poisoned: no panics inside");
        self.tx.send(message).map_err(|_| SdkError::Closed)?;
        for candidate in held.take().unwrap_or_default() {
            self.tx
                .send(ClientMessage::IceCandidate { target, candidate })
                .map_err(|_| SdkError::Closed)?;
        }
        Ok(())
    }
}

/// Remote candidates that arrived before the remote description; webrtc-rs
/// rejects those, so they wait here.
#[derive(Default)]
struct RemoteCandidates {
    ready: bool,
    pending: Vec<IceCandidate>,
}

fn to_init(candidate: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: candidate.candidate,
        sdp_mid: candidate.sdp_mid,
        sdp_mline_index: candidate.sdp_mline_index,
        ..Default::default()
    }
}

impl RemoteCandidates {
    async fn add(&mut self, pc: Option<&Arc<dyn PeerConnection>>, candidate: IceCandidate) -> Result<()> {
        match pc {
            Some(pc) if self.ready => Ok(pc.add_ice_candidate(to_init(candidate)).await?),
            _ => {
                self.pending.push(candidate);
                Ok(())
            }
        }
    }

    async fn ready(&mut self, pc: &Arc<dyn PeerConnection>) {
        self.ready = true;
        for candidate in std::mem::take(&mut self.pending) {
            if let Err(e) = pc.add_ice_candidate(to_init(candidate)).await {
                warn!(error = %e, "dropping a remote ICE candidate webrtc-rs refused");
            }
        }
    }
}

/// The event handler both connections use: callbacks run on the connection's
/// driver task, so each one only hands its event on.
struct Handler {
    role: PeerRole,
    outbox: Arc<Outbox>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    /// Set when a fresh connection replaced this one (a subscriber restart): what the
    /// old one still reports (its closing, late candidates) must not count.
    replaced: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if self.replaced.load(Ordering::Acquire) {
            return;
        }
        match event.candidate.to_json() {
            Ok(init) => self.outbox.candidate(
                self.role,
                IceCandidate {
                    candidate: init.candidate,
                    // webrtc-rs says mid "" and index 0; with BUNDLE the index alone is right.
                    sdp_mid: init.sdp_mid.filter(|m| !m.is_empty()),
                    sdp_mline_index: init.sdp_mline_index,
                },
            ),
            Err(e) => warn!(error = %e, "cannot serialise a local ICE candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(role = ?self.role, %state, replaced = self.replaced.load(Ordering::Acquire), "peer connection state");
        if !self.replaced.load(Ordering::Acquire) {
            self.state.send_replace(state);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tx) = self.tracks.as_ref().filter(|_| !self.replaced.load(Ordering::Acquire)) {
            let _ = tx.send(track);
        }
    }
}

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: PT_OPUS,
    }
}

fn video(codec: VideoCodec) -> RTCRtpCodecParameters {
    let feedback = [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect();
    let (mime, fmtp, payload_type) = match codec {
        VideoCodec::Vp8 => ("video/VP8", "", PT_VP8),
        VideoCodec::H264 => (
            "video/H264",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            PT_H264,
        ),
        VideoCodec::Vp9 => ("video/VP9", "profile-id=0", PT_VP9),
        VideoCodec::Av1 => ("video/AV1", "profile-id=0", PT_AV1),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: feedback,
        },
        payload_type,
    }
}

/// Registers the header extensions we negotiate. Done before the interceptors register
/// theirs, which is also why our ids differ from a server that registers them after.
fn register_extensions(media_engine: &mut MediaEngine) -> Result<()> {
    let audio_level = RTCRtpHeaderExtensionCapability {
        uri: AUDIO_LEVEL_URI.to_owned(),
    };
    media_engine.register_header_extension(audio_level, RtpCodecKind::Audio, None)?;
    Ok(())
}

/// The configuration of a connection: `ice_servers` and the transport policy.
fn rtc_configuration(options: &MediaOptions, ice_servers: &[IceServer]) -> RTCConfiguration {
    let ice_servers = ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(if options.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        })
        .build()
}

/// The interceptor chain of every connection: `rtc`'s defaults (NACK responder, TWCC
/// receiver, receiver and sender reports, the simulcast header extensions) but our own NACK
/// generator (`nack`: it learns RTX repairs and paces and bounds its asks, where `rtc` 0.21's
/// asked for every lost packet every 100 ms for seconds), and the tap that lets keyframe
/// requests reach the application (the synthetic sender answers them; by default inbound RTCP
/// ends inside the chain).
fn interceptors(media_engine: &mut MediaEngine) -> Result<Registry> {
    use rtc::interceptor::{NackResponderBuilder, Slot};
    use rtc::peer_connection::configuration::interceptor_registry::{
        configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
    };
    // What `configure_nack` registers, with our generator in its slot.
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::NackGenerator, crate::nack::NackGenerator::default());
    configure_simulcast_extension_headers(media_engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    Ok(configure_rtcp_reports(registry).with(
        Slot::from(crate::rtcp::KEYFRAME_TAP_SLOT),
        crate::rtcp::KeyframeTap::default(),
    ))
}

async fn build_connection(
    options: &MediaOptions,
    mut media_engine: MediaEngine,
    handler: Handler,
) -> Result<Arc<dyn PeerConnection>> {
    let registry = interceptors(&mut media_engine)?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(rtc_configuration(options, &options.ice_servers))
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(options.udp_addrs.clone())
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// Maps each `msid` track id to its `mid`, reading an SDP's media sections.
fn mids_by_msid_track(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut mid = None;
    let mut track = None;
    let mut flush = |mid: &mut Option<String>, track: &mut Option<String>| {
        if let (Some(m), Some(t)) = (mid.take(), track.take()) {
            out.insert(t, m);
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(&mut mid, &mut track);
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            track = msid.split_whitespace().nth(1).map(str::to_owned);
        }
    }
    flush(&mut mid, &mut track);
    out
}

/// The id an SDP's `a=extmap` lines give the header extension `uri` (with BUNDLE,
/// one id per extension for the whole connection).
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let mut fields = line.trim_end().strip_prefix("a=extmap:")?.split_whitespace();
        let id = fields.next()?;
        // `<id>` or `<id>/<direction>`.
        let id = id.split('/').next()?.parse().ok()?;
        (fields.next()? == uri).then_some(id)
    })
}

/// Our side of the publisher connection: we offer, the server answers.
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    outbox: Arc<Outbox>,
    options: MediaOptions,
    /// Held for a whole negotiation: one offer in flight at a time.
    negotiating: Mutex<()>,
    /// Our published tracks (never held across an await: the reader task reads it).
    tracks: StdMutex<Vec<LocalTrack>>,
    /// Where the answer (or the server's refusal) to the offer in flight goes.
    pending_answer: StdMutex<Option<oneshot::Sender<Result<String>>>>,
    remote: Mutex<RemoteCandidates>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

impl Publisher {
    /// Builds the connection (no offer yet). Outgoing frames go to `out`.
    pub async fn new(options: MediaOptions, out: mpsc::UnboundedSender<ClientMessage>) -> Result<Arc<Publisher>> {
        let outbox = Arc::new(Outbox::new(out));
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(opus(), RtpCodecKind::Audio)?;
        media_engine.register_codec(video(options.video_codec), RtpCodecKind::Video)?;
        register_extensions(&mut media_engine)?;
        let handler = Handler {
            role: PeerRole::Publisher,
            outbox: outbox.clone(),
            state: state_tx,
            tracks: None,
            replaced: Arc::default(),
        };
        let pc = build_connection(&options, media_engine, handler).await?;
        Ok(Arc::new(Publisher {
            pc,
            outbox,
            options,
            negotiating: Mutex::new(()),
            tracks: StdMutex::new(Vec::new()),
            pending_answer: StdMutex::new(None),
            remote: Mutex::new(RemoteCandidates::default()),
            state,
        }))
    }

    /// Adds a track for `source`, negotiates it, and returns it ready to write
    /// once the connection is up (see [`LocalTrack::wait_connected`]).
    pub async fn publish(&self, source: TrackSource) -> Result<LocalTrack> {
        let _negotiating = self.negotiating.lock().await;
        let codec = self.codec_for(source);
        let rids: &[&str] = if source == TrackSource::Camera && self.options.simulcast {
            &SIMULCAST_RIDS
        } else {
            &[""]
        };
        let mut layers: Vec<LayerState> = Vec::with_capacity(rids.len());
        for rid in rids {
            // Distinct SSRCs: a clash would merge two layers at the receiver.
            let ssrc = loop {
                let ssrc = rand::random::<u32>();
                if ssrc != 0 && layers.iter().all(|l| l.ssrc != ssrc) {
                    break ssrc;
                }
            };
            layers.push(LayerState {
                rid: (*rid).to_owned(),
                ssrc,
                next_seq: AtomicU16::new(rand::random()),
                active: AtomicBool::new(true),
            });
        }
        let local_id = format!("{}-{:08x}", source_name(source), rand::random::<u32>());
        let bound = self.bind(source, &local_id, &layers).await?;
        let local = LocalTrack {
            inner: Arc::new(LocalTrackInner {
                source,
                mime_type: codec.rtp_codec.mime_type.clone(),
                clock_rate: codec.rtp_codec.clock_rate,
                local_id,
                layers,
                layers_changed: watch::channel(0).0,
                bound: watch::channel(Some(bound)).0,
                mid: StdMutex::new(None),
                payload_type: AtomicU16::new(NOT_NEGOTIATED),
                extensions: StdMutex::new(Vec::new()),
                server_track_id: watch::channel(None).0,
                muted: AtomicBool::new(false),
                rebinding: AtomicBool::new(false),
            }),
        };
        self.tracks_mut().push(local.clone());
        if let Err(e) = self.negotiate(&self.tracks()).await {
            self.tracks_mut().retain(|t| !Arc::ptr_eq(&t.inner, &local.inner));
            let _ = self.pc.remove_track(&local.bound().sender).await;
            return Err(e);
        }
        Ok(local)
    }

    /// Publishes `tracks`, which were published on another connection (one the server
    /// dropped when the client came back on a new socket), on this one with one offer:
    /// the same handles keep working for the application, their SSRCs, sequence numbers
    /// and mutes carried over; the server gives them new track ids. What is written to
    /// them meanwhile is dropped (see [`LocalTrack::write_rtp`]).
    pub async fn republish(&self, tracks: Vec<LocalTrack>) -> Result<()> {
        let _negotiating = self.negotiating.lock().await;
        for track in &tracks {
            let bound = self
                .bind(track.inner.source, &track.inner.local_id, &track.inner.layers)
                .await?;
            // A new connection starts with every layer sent, as the gateway expects.
            track.set_all_layers_active();
            track.inner.payload_type.store(NOT_NEGOTIATED, Ordering::Relaxed);
            track.inner.server_track_id.send_replace(None);
            *track.inner.mid.lock().expect("mid lock is never poisoned") = None;
            track.inner.bound.send_replace(Some(bound));
            self.tracks_mut().push(track.clone());
        }
        self.negotiate(&self.tracks()).await?;
        for track in &tracks {
            track.inner.rebinding.store(false, Ordering::Release);
        }
        Ok(())
    }

    fn codec_for(&self, source: TrackSource) -> RTCRtpCodecParameters {
        match source.kind() {
            TrackKind::Audio => opus(),
            TrackKind::Video => video(self.options.video_codec),
        }
    }

    /// A local track for `source` added to this connection (not negotiated yet).
    async fn bind(&self, source: TrackSource, local_id: &str, layers: &[LayerState]) -> Result<Arc<Bound>> {
        let codec = self.codec_for(source);
        let kind = match source.kind() {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        };
        let media_track = MediaStreamTrack::new(
            self.options.stream_id.clone(),
            local_id.to_owned(),
            local_id.to_owned(),
            kind,
            // One encoding per layer; with rids, `rtc` offers them as simulcast
            // (`a=rid:<rid> send` and `a=simulcast:send q;h;f`, no `a=ssrc` lines).
            layers
                .iter()
                .map(|layer| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: layer.rid.clone(),
                        ssrc: Some(layer.ssrc),
                        ..Default::default()
                    },
                    codec: codec.rtp_codec.clone(),
                    ..Default::default()
                })
                .collect(),
        );
        let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), media_track)?);
        let sender = self.pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        Ok(Arc::new(Bound {
            track,
            sender,
            state: self.state.clone(),
        }))
    }

    /// Stops sending a track and renegotiates without it.
    pub async fn unpublish(&self, track: &LocalTrack) -> Result<()> {
        let _negotiating = self.negotiating.lock().await;
        self.tracks_mut().retain(|t| !Arc::ptr_eq(&t.inner, &track.inner));
        self.pc.remove_track(&track.bound().sender).await?;
        track.inner.bound.send_replace(None);
        self.negotiate(&self.tracks()).await
    }

    /// The tracks published on this connection.
    pub fn tracks(&self) -> Vec<LocalTrack> {
        self.tracks_mut().clone()
    }

    fn tracks_mut(&self) -> std::sync::MutexGuard<'_, Vec<LocalTrack>> {
        self.tracks
            .lock()
            .expect("track list lock is never poisoned: no panics inside")
    }

    async fn negotiate(&self, tracks: &[LocalTrack]) -> Result<()> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        let sdp = self
            .pc
            .local_description()
            .await
            .ok_or(SdkError::Protocol("no local description".into()))?
            .sdp;
        let mids = mids_by_msid_track(&sdp);
        let mut announced = Vec::new();
        for track in tracks {
            let mid = mids.get(&track.inner.local_id).cloned().ok_or_else(|| {
                SdkError::Protocol(format!("offer has no m-section for track {}", track.inner.local_id))
            })?;
            *track.inner.mid.lock().expect("mid lock is never poisoned") = Some(mid.clone());
            announced.push(PublishedTrack {
                mid,
                source: track.inner.source,
                // Every offer says it: a renegotiation (another track, an ICE restart,
                // a republish after a reconnect) must not unmute what is muted.
                muted: track.is_muted(),
            });
        }
        let (tx, rx) = oneshot::channel();
        *self.pending_answer.lock().expect("answer slot lock is never poisoned") = Some(tx);
        self.outbox.send_description(
            PeerRole::Publisher,
            ClientMessage::PublishOffer { sdp, tracks: announced },
        )?;
        let answer = tokio::time::timeout(self.options.negotiation_timeout, rx)
            .await
            .map_err(|_| SdkError::Timeout("publish_answer"))?
            .map_err(|_| SdkError::Closed)??;
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        self.remote.lock().await.ready(&self.pc).await;
        for track in tracks {
            let parameters = track.bound().sender.get_parameters().await?;
            let negotiated = parameters
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&track.inner.mime_type))
                .map(|c| c.payload_type)
                .ok_or_else(|| {
                    SdkError::Protocol(format!(
                        "the answer did not accept {} for {:?}",
                        track.inner.mime_type,
                        track.source()
                    ))
                })?;
            track.inner.payload_type.store(u16::from(negotiated), Ordering::Relaxed);
            let extensions = parameters
                .rtp_parameters
                .header_extensions
                .iter()
                .filter_map(|h| Some((h.uri.clone(), u8::try_from(h.id).ok()?)))
                .collect();
            *track
                .inner
                .extensions
                .lock()
                .expect("extensions lock is never poisoned") = extensions;
        }
        Ok(())
    }

    fn settle_offer(&self, outcome: Result<String>) -> bool {
        match self
            .pending_answer
            .lock()
            .expect("answer slot lock is never poisoned")
            .take()
        {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Feeds the server's `publish_answer`. Returns false if no offer was waiting.
    pub fn on_answer(&self, sdp: String) -> bool {
        self.settle_offer(Ok(sdp))
    }

    /// Feeds the server's refusal of the offer in flight: the pending
    /// [`publish`](Self::publish) or [`unpublish`](Self::unpublish) fails with
    /// [`SdkError::Server`] at once instead of waiting out the negotiation timeout.
    /// Returns false if no offer was waiting.
    ///
    /// The signaling protocol does not tie an `error` frame to the request it answers,
    /// so [`Client`](crate::Client) cannot tell a refused offer from other errors and
    /// leaves this alone; a caller that sees the refusal directly (an in-process
    /// server, as in the gateway's SFU tests) calls it.
    pub fn on_refused(&self, code: ErrorCode, message: String) -> bool {
        self.settle_offer(Err(SdkError::Server { code, message }))
    }

    /// Records the server's id for one of our tracks from its `track_published`: it
    /// goes to the oldest of our tracks of that source still without one. Call it only
    /// for our own announcements; one whose id a track already has changes nothing.
    pub fn claim_track(&self, track: &TrackInfo) {
        let ours = self.tracks();
        if ours
            .iter()
            .any(|t| t.server_track_id().as_deref() == Some(track.track_id.as_str()))
        {
            return;
        }
        if let Some(local) = ours
            .iter()
            .find(|t| t.source() == track.source && t.server_track_id().is_none())
        {
            local.set_server_track_id(track.track_id.clone());
        }
    }

    /// Feeds a server ICE candidate for this connection.
    pub async fn add_remote_candidate(&self, candidate: IceCandidate) -> Result<()> {
        self.remote.lock().await.add(Some(&self.pc), candidate).await
    }

    /// The connection's state as webrtc-rs reports it.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// The connection's state, to wait on.
    pub fn watch_state(&self) -> watch::Receiver<RTCPeerConnectionState> {
        self.state.clone()
    }

    /// The path of the selected candidate pair (`None` while nothing is selected).
    pub async fn selected_path(&self) -> Option<MediaPath> {
        crate::health::selected_path(&self.pc.get_stats(Instant::now(), StatsSelector::None).await)
    }

    /// Uses `ice_servers` from now on (fresh TURN credentials from the server's
    /// `ice_servers`): the next ICE restart gathers with them, as a browser's
    /// `setConfiguration` does.
    pub async fn set_ice_servers(&self, ice_servers: &[IceServer]) -> Result<()> {
        let configuration = rtc_configuration(&self.options, ice_servers);
        Ok(self.pc.set_configuration(configuration).await?)
    }

    /// Restarts ICE: new credentials in a new offer with the complete track list, sent
    /// as any renegotiation is (docs/PROTOCOL.md §11.6); returns once the server
    /// answered. Tracks, their ids and mutes stay.
    pub async fn restart_ice(&self) -> Result<()> {
        let _negotiating = self.negotiating.lock().await;
        self.outbox.hold();
        self.pc.restart_ice().await?;
        self.negotiate(&self.tracks()).await
    }

    /// Closes the connection (always do this: webrtc-rs leaks sockets otherwise).
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            debug!(error = %e, "closing publisher connection");
        }
    }
}

fn source_name(source: TrackSource) -> &'static str {
    match source {
        TrackSource::Microphone => "microphone",
        TrackSource::Camera => "camera",
        TrackSource::Screen => "screen",
    }
}

const NOT_NEGOTIATED: u16 = u16::MAX;

struct LocalTrackInner {
    source: TrackSource,
    mime_type: String,
    clock_rate: u32,
    /// Our own `msid` track id; the server names the track with its own `t_...` id.
    local_id: String,
    /// The track's RTP streams: one, or a simulcast camera's layers smallest first.
    layers: Vec<LayerState>,
    /// Counts changes of the layers' `active` flags, for a sender to wait on.
    layers_changed: watch::Sender<u64>,
    /// The connection the track sends on now: replaced when the client republishes it
    /// on a new connection after a reconnect; `None` once unpublished.
    bound: watch::Sender<Option<Arc<Bound>>>,
    mid: StdMutex<Option<String>>,
    /// The payload type the answer accepted (`NOT_NEGOTIATED` until then).
    payload_type: AtomicU16,
    /// The header extensions the answer accepted, by URI, with their ids.
    extensions: StdMutex<Vec<(String, u8)>>,
    server_track_id: watch::Sender<Option<TrackId>>,
    /// What the application last asked for (`mute_track`): every offer announces it.
    muted: AtomicBool,
    /// The client is moving the track to a new connection (a reconnect): writes are
    /// dropped until it is negotiated there.
    rebinding: AtomicBool,
}

/// One RTP stream of a local track: its only one, or one simulcast layer.
struct LayerState {
    /// The layer's rid (`q`, `h`, `f`); empty without simulcast.
    rid: String,
    ssrc: u32,
    /// The next sequence number of the `write_payload` family on this layer.
    next_seq: AtomicU16,
    /// Whether anyone needs the layer, as the gateway last said (`publisher_layers`).
    active: AtomicBool,
}

/// One layer of a local track as [`LocalTrack::layers`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackLayer {
    /// Its rid (`q`, `h` or `f` for a simulcast camera, see [`SIMULCAST_RIDS`]); empty for
    /// a track of one layer.
    pub rid: String,
    /// The SSRC its packets carry.
    pub ssrc: u32,
    /// Whether someone in the call needs it (the gateway's `publisher_layers`): a sender
    /// should stop sending an inactive layer and resume, with a keyframe, when it is
    /// active again. A track of one layer is always active.
    pub active: bool,
}

/// A custom RTP header extension carrying raw bytes (a `mid` or a `rid`), for the
/// packetizing [`LocalTrack::write_sample`] path.
struct RawExtension(Bytes);

impl rtc::shared::marshal::MarshalSize for RawExtension {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl rtc::shared::marshal::Marshal for RawExtension {
    fn marshal_to(&self, buf: &mut [u8]) -> std::result::Result<usize, rtc::shared::error::Error> {
        let out = buf
            .get_mut(..self.0.len())
            .ok_or(rtc::shared::error::Error::ErrBufferTooSmall)?;
        out.copy_from_slice(&self.0);
        Ok(self.0.len())
    }
}

/// A local track's place on one publisher connection.
struct Bound {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

/// One of our published tracks. Cheap to clone; all clones are the same track.
///
/// Send either encoded frames ([`write_sample`](Self::write_sample), which
/// packetizes) or ready payloads/RTP ([`write_payload`](Self::write_payload),
/// [`write_rtp`](Self::write_rtp)), not both: they keep separate sequence numbers.
///
/// **Simulcast.** A camera track is published as three layers by default
/// ([`MediaOptions::simulcast`]): rids `q`, `h`, `f` ([`SIMULCAST_RIDS`]), about a quarter,
/// a half and the full resolution, each its own RTP stream (its own SSRC and sequence
/// numbers). An application that encodes its own video sends each layer with the
/// `write_layer_*` calls ([`write_layer_payload`](Self::write_layer_payload),
/// [`write_layer_rtp`](Self::write_layer_rtp), [`write_layer_sample`](Self::write_layer_sample);
/// layer 0 is the smallest), giving the same RTP timestamp to the encodings of the same
/// captured frame. The plain `write_*` calls send on layer 0, the smallest, which the
/// gateway never asks to pause: an application that encodes one stream still reaches
/// everyone, only labelled as the low layer (publish with `simulcast: false` to say what it
/// is). The SDK puts the `mid` and `rid` header extensions on every packet of a layer, which
/// is how the gateway tells the layers apart. Keyframe requests (PLI, FIR) name the SSRC of
/// the layer they want: [`keyframe_layers`](Self::keyframe_layers) says which. The gateway
/// says which layers anybody needs ([`is_layer_active`](Self::is_layer_active),
/// [`Event::PublisherLayers`](crate::Event::PublisherLayers)); writes to an inactive layer
/// are still sent (they only spend the uplink), so a sender should skip it and start again
/// with a keyframe when it is active again, as the synthetic sender does.
#[derive(Clone)]
pub struct LocalTrack {
    inner: Arc<LocalTrackInner>,
}

impl std::fmt::Debug for LocalTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTrack")
            .field("source", &self.inner.source)
            .field("mime_type", &self.inner.mime_type)
            .field("ssrcs", &self.inner.layers.iter().map(|l| l.ssrc).collect::<Vec<_>>())
            .field("mid", &self.mid())
            .field("server_track_id", &self.server_track_id())
            .finish()
    }
}

impl LocalTrack {
    /// The connection the track is on now. Before it was unpublished there always is one.
    fn bound(&self) -> Arc<Bound> {
        self.bound_now()
            .expect("a track is bound from publish until unpublish, and callers hold it published")
    }

    fn bound_now(&self) -> Option<Arc<Bound>> {
        self.inner.bound.borrow().clone()
    }

    /// Whether the application muted it ([`Client::mute_track`](crate::Client::mute_track)).
    pub fn is_muted(&self) -> bool {
        self.inner.muted.load(Ordering::Relaxed)
    }

    /// Records the application's mute (the client does it in `mute_track`).
    pub fn set_muted(&self, muted: bool) {
        self.inner.muted.store(muted, Ordering::Relaxed);
    }

    /// Whether the client is moving the track to a new connection after a reconnect
    /// (writes are dropped meanwhile).
    pub fn is_rebinding(&self) -> bool {
        self.inner.rebinding.load(Ordering::Acquire)
    }

    /// Marks the track as moving to a new connection (the client does it when its
    /// socket comes back): until [`Publisher::republish`] has negotiated it there,
    /// writes are dropped rather than failing on the closed connection.
    pub fn start_rebinding(&self) {
        self.inner.rebinding.store(true, Ordering::Release);
    }

    /// Microphone, camera or screen.
    pub fn source(&self) -> TrackSource {
        self.inner.source
    }

    /// Audio or video.
    pub fn kind(&self) -> TrackKind {
        self.inner.source.kind()
    }

    /// The codec's MIME type (`audio/opus`, `video/VP8`, `video/H264`, `video/VP9`, `video/AV1`).
    pub fn mime_type(&self) -> &str {
        &self.inner.mime_type
    }

    /// The RTP clock rate of the codec.
    pub fn clock_rate(&self) -> u32 {
        self.inner.clock_rate
    }

    /// The SSRC of the track's first layer: the one every packet carries on a track of
    /// one layer, the smallest layer's (`q`) on a simulcast one (see [`layers`](Self::layers)).
    pub fn ssrc(&self) -> u32 {
        self.inner.layers[0].ssrc
    }

    /// The track's layers, smallest first: one, or a simulcast camera's three.
    pub fn layers(&self) -> Vec<TrackLayer> {
        self.inner
            .layers
            .iter()
            .map(|l| TrackLayer {
                rid: l.rid.clone(),
                ssrc: l.ssrc,
                active: l.active.load(Ordering::Acquire),
            })
            .collect()
    }

    /// How many layers the track is sent as (1 without simulcast).
    pub fn layer_count(&self) -> usize {
        self.inner.layers.len()
    }

    /// Whether the track is published as simulcast (more than one layer).
    pub fn is_simulcast(&self) -> bool {
        self.inner.layers.len() > 1
    }

    /// Whether someone needs layer `layer` (0 the smallest), as the gateway last said
    /// (`publisher_layers`); false for a layer the track does not have.
    pub fn is_layer_active(&self, layer: usize) -> bool {
        self.inner
            .layers
            .get(layer)
            .is_some_and(|l| l.active.load(Ordering::Acquire))
    }

    /// The layer whose SSRC is `ssrc`.
    pub fn layer_of_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.inner.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// The layers an RTCP compound packet (from [`next_rtcp`](Self::next_rtcp)) asks a
    /// keyframe of, each once, smallest first: a PLI names one by its media SSRC, a FIR by
    /// each entry's SSRC. A request naming no SSRC of ours (a sender SSRC of 0, say) asks
    /// for every layer.
    pub fn keyframe_layers(&self, packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<usize> {
        let mut wanted = vec![false; self.inner.layers.len()];
        let mut want = |ssrc: u32| match self.layer_of_ssrc(ssrc) {
            Some(layer) => wanted[layer] = true,
            None => wanted.iter_mut().for_each(|w| *w = true),
        };
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                want(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                if fir.fir.is_empty() {
                    want(fir.media_ssrc);
                }
                for entry in &fir.fir {
                    want(entry.ssrc);
                }
            }
        }
        wanted.iter().enumerate().filter_map(|(i, w)| w.then_some(i)).collect()
    }

    /// Applies the gateway's `publisher_layers` for this track: each named layer (by rid)
    /// becomes active or not; layers not named stay as they are. Returns whether anything
    /// changed. The client does it on the message; a track of one layer has no rids to
    /// name and never changes.
    pub fn apply_publisher_layers(&self, layers: &[PublisherLayer]) -> bool {
        let mut changed = false;
        for wanted in layers {
            if let Some(layer) = self
                .inner
                .layers
                .iter()
                .find(|l| !l.rid.is_empty() && l.rid == wanted.rid)
            {
                changed |= layer.active.swap(wanted.active, Ordering::AcqRel) != wanted.active;
            }
        }
        if changed {
            self.inner.layers_changed.send_modify(|n| *n += 1);
        }
        changed
    }

    /// Every layer active again (a new connection sends them all until told otherwise).
    fn set_all_layers_active(&self) {
        let mut changed = false;
        for layer in &self.inner.layers {
            changed |= !layer.active.swap(true, Ordering::AcqRel);
        }
        if changed {
            self.inner.layers_changed.send_modify(|n| *n += 1);
        }
    }

    /// Notified whenever a layer becomes active or inactive.
    pub fn watch_layers(&self) -> watch::Receiver<u64> {
        self.inner.layers_changed.subscribe()
    }

    /// The `mid` of this track's m-section in the publisher offer.
    pub fn mid(&self) -> Option<String> {
        self.inner.mid.lock().expect("mid lock is never poisoned").clone()
    }

    /// The id we gave the track in our offer's `msid`.
    pub fn local_id(&self) -> &str {
        &self.inner.local_id
    }

    /// The server's id for this track (`t_...`), once a `track_published` about it arrived.
    pub fn server_track_id(&self) -> Option<TrackId> {
        self.inner.server_track_id.borrow().clone()
    }

    /// Records the server's id for this track (the client does it on `track_published`).
    pub fn set_server_track_id(&self, track_id: TrackId) {
        self.inner.server_track_id.send_replace(Some(track_id));
    }

    /// The payload type negotiated for this track, once the answer arrived.
    pub fn payload_type(&self) -> Option<u8> {
        u8::try_from(self.inner.payload_type.load(Ordering::Relaxed)).ok()
    }

    /// The id negotiated for the header extension `uri` (e.g. [`AUDIO_LEVEL_URI`]),
    /// once the answer arrived; `None` if the server did not accept it.
    pub fn header_extension_id(&self, uri: &str) -> Option<u8> {
        self.inner
            .extensions
            .lock()
            .expect("extensions lock is never poisoned")
            .iter()
            .find(|(u, _)| u == uri)
            .map(|&(_, id)| id)
    }

    /// Waits until the publisher connection is connected (DTLS up); writing
    /// earlier only produces warnings in webrtc-rs and loses the packets.
    /// While the client reconnects, it waits for the new connection.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bound = self.inner.bound.subscribe();
        loop {
            let Some(current) = bound.borrow_and_update().clone() else {
                return Err(SdkError::Closed);
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                result = wait_connected(current.state.clone(), remaining, "publisher connection") => {
                    // A closed connection the track has since left is not the end of it.
                    let moved = !self.bound_now().is_some_and(|b| Arc::ptr_eq(&b, &current));
                    if result.is_err() && moved && tokio::time::Instant::now() < deadline {
                        continue;
                    }
                    return result;
                }
                changed = bound.changed() => {
                    if changed.is_err() {
                        return Err(SdkError::Closed);
                    }
                }
            }
        }
    }

    /// Sends one RTP packet. Its SSRC and payload type are overwritten with the
    /// track's (webrtc-rs rejects anything else); sequence number, timestamp and
    /// marker are yours. Header extensions must be negotiated ones.
    ///
    /// While the client reconnects ([`Event::Reconnecting`](crate::Event::Reconnecting))
    /// and until the track is negotiated on the new connection, writes succeed and the
    /// packets are dropped, as a network outage would: a sending loop need not stop.
    ///
    /// On a simulcast track it goes out on layer 0, the smallest (see [`LocalTrack`]).
    pub async fn write_rtp(&self, packet: RtpPacket) -> Result<()> {
        self.write_layer_rtp(0, packet).await
    }

    /// Sends one RTP packet on layer `layer` (0 the smallest) of this track, as
    /// [`write_rtp`](Self::write_rtp) does: SSRC and payload type become the layer's and the
    /// track's, and on a simulcast track the `mid` and `rid` header extensions are set.
    /// [`SdkError::NoSuchLayer`] for a layer the track does not have.
    pub async fn write_layer_rtp(&self, layer: usize, mut packet: RtpPacket) -> Result<()> {
        if self.is_rebinding() {
            return Ok(());
        }
        let pt = self.payload_type().ok_or(SdkError::NotNegotiated)?;
        let state = self.layer(layer)?;
        packet.header.ssrc = state.ssrc;
        packet.header.payload_type = pt;
        self.stamp_layer(state, &mut packet)?;
        self.send(packet).await
    }

    fn layer(&self, layer: usize) -> Result<&LayerState> {
        self.inner.layers.get(layer).ok_or(SdkError::NoSuchLayer {
            layer,
            layers: self.inner.layers.len(),
        })
    }

    /// The `mid` and `rid` header extensions a simulcast layer's packets carry (every
    /// packet: a gateway that restarted or a receiver that missed the first ones still
    /// learns the layer's SSRC); nothing on a track of one layer, or if the answer did not
    /// accept them.
    fn layer_extensions(&self, state: &LayerState) -> Vec<(u8, Bytes)> {
        if state.rid.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(2);
        if let (Some(id), Some(mid)) = (self.header_extension_id(MID_URI), self.mid()) {
            out.push((id, Bytes::from(mid.into_bytes())));
        }
        if let Some(id) = self.header_extension_id(RID_URI) {
            out.push((id, Bytes::from(state.rid.clone().into_bytes())));
        }
        out
    }

    fn stamp_layer(&self, state: &LayerState, packet: &mut RtpPacket) -> Result<()> {
        for (id, value) in self.layer_extensions(state) {
            packet
                .header
                .set_extension(id, value)
                .map_err(|e| SdkError::Protocol(format!("mid/rid extension id {id}: {e}")))?;
        }
        Ok(())
    }

    async fn send(&self, packet: RtpPacket) -> Result<()> {
        let bound = self.bound_now().ok_or(SdkError::Closed)?;
        match bound.track.write_rtp(packet).await {
            // The connection closed under us because the client is moving the track.
            Err(_) if self.is_rebinding() => Ok(()),
            result => Ok(result?),
        }
    }

    /// Sends one payload as an RTP packet with the next sequence number of this track.
    /// On a simulcast track it goes out on layer 0, the smallest (see [`LocalTrack`]).
    pub async fn write_payload(&self, payload: Bytes, timestamp: u32, marker: bool) -> Result<()> {
        self.write_layer_payload(0, payload, timestamp, marker).await
    }

    /// Sends one payload as an RTP packet on layer `layer` (0 the smallest), with that
    /// layer's SSRC and next sequence number (each layer numbers its own packets). Give
    /// the encodings of one captured frame the same `timestamp` on every layer.
    /// [`SdkError::NoSuchLayer`] for a layer the track does not have.
    pub async fn write_layer_payload(&self, layer: usize, payload: Bytes, timestamp: u32, marker: bool) -> Result<()> {
        if self.is_rebinding() {
            return Ok(());
        }
        let packet = self.next_packet(layer, payload, timestamp, marker)?;
        self.send(packet).await
    }

    /// Like [`write_payload`](Self::write_payload), with an RFC 6464 audio level
    /// (0 = loudest to 127 = silence, in -dBov; the voice-activity bit set) in the
    /// [`AUDIO_LEVEL_URI`] header extension, when the connection negotiated it.
    pub async fn write_payload_with_audio_level(
        &self,
        payload: Bytes,
        timestamp: u32,
        marker: bool,
        level: u8,
    ) -> Result<()> {
        if self.is_rebinding() {
            return Ok(());
        }
        let mut packet = self.next_packet(0, payload, timestamp, marker)?;
        if let Some(id) = self.header_extension_id(AUDIO_LEVEL_URI) {
            packet
                .header
                .set_extension(id, Bytes::copy_from_slice(&[0x80 | level.min(127)]))
                .map_err(|e| SdkError::Protocol(format!("audio-level extension id {id}: {e}")))?;
        }
        self.send(packet).await
    }

    /// A packet of layer `layer` of this track with that layer's next sequence number.
    fn next_packet(&self, layer: usize, payload: Bytes, timestamp: u32, marker: bool) -> Result<RtpPacket> {
        let pt = self.payload_type().ok_or(SdkError::NotNegotiated)?;
        let state = self.layer(layer)?;
        let mut packet = RtpPacket {
            payload,
            ..Default::default()
        };
        packet.header.version = 2;
        packet.header.marker = marker;
        packet.header.payload_type = pt;
        packet.header.sequence_number = state.next_seq.fetch_add(1, Ordering::Relaxed);
        packet.header.timestamp = timestamp;
        packet.header.ssrc = state.ssrc;
        self.stamp_layer(state, &mut packet)?;
        Ok(packet)
    }

    /// Sends one encoded frame (an Opus packet, a VP8 or H.264 access unit),
    /// packetized for the codec, lasting `duration`. On a simulcast track it goes out on
    /// layer 0, the smallest (see [`LocalTrack`]).
    pub async fn write_sample(&self, data: Bytes, duration: Duration) -> Result<()> {
        self.write_layer_sample(0, data, duration).await
    }

    /// Sends one encoded frame on layer `layer` (0 the smallest), packetized, lasting
    /// `duration`. Each layer has its own packetizer, whose RTP timestamps start at their
    /// own random point: for timestamps shared across layers, packetize yourself and use
    /// [`write_layer_payload`](Self::write_layer_payload).
    /// [`SdkError::NoSuchLayer`] for a layer the track does not have.
    pub async fn write_layer_sample(&self, layer: usize, data: Bytes, duration: Duration) -> Result<()> {
        if self.is_rebinding() {
            return Ok(());
        }
        let pt = self.payload_type().ok_or(SdkError::NotNegotiated)?;
        let state = self.layer(layer)?;
        let sample = Sample {
            data,
            duration,
            ..Sample::new(Instant::now())
        };
        let bound = self.bound_now().ok_or(SdkError::Closed)?;
        let mut writer = bound.track.sample_writer(state.ssrc, pt);
        if !state.rid.is_empty() {
            let mut values = Vec::with_capacity(2);
            if let Some(mid) = self.mid() {
                values.push((MID_URI, Bytes::from(mid.into_bytes())));
            }
            values.push((RID_URI, Bytes::from(state.rid.clone().into_bytes())));
            for (uri, value) in values {
                writer = writer.with_extension(HeaderExtension::Custom {
                    uri: uri.into(),
                    extension: Box::new(RawExtension(value)),
                });
            }
        }
        match writer.write_sample(&sample).await {
            Err(_) if self.is_rebinding() => Ok(()),
            result => Ok(result?),
        }
    }

    /// Waits for the next RTCP feedback about this track (PLI, FIR, NACK, REMB...),
    /// following the track to its new connection after a reconnect. `None` once the
    /// track is unpublished or its connection closed for good.
    pub async fn next_rtcp(&self) -> Option<Vec<Box<dyn rtc::rtcp::Packet>>> {
        let mut bound = self.inner.bound.subscribe();
        loop {
            let current = bound.borrow_and_update().clone()?;
            tokio::select! {
                event = current.track.poll() => match event {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => return Some(packets),
                    #[allow(unreachable_patterns)]
                    Some(_) => continue,
                    None if self.is_rebinding() => {
                        // The old connection is gone and the new one not bound yet.
                        bound.changed().await.ok()?;
                    }
                    None => return None,
                },
                changed = bound.changed() => changed.ok()?,
            }
        }
    }
}

/// Waits for a connection state to reach `Connected`; `Failed` or `Closed` first is an error.
async fn wait_connected(
    mut state: watch::Receiver<RTCPeerConnectionState>,
    timeout: Duration,
    what: &'static str,
) -> Result<()> {
    let wait = state.wait_for(|s| {
        matches!(
            s,
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        )
    });
    let reached = *tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| SdkError::Timeout(what))?
        .map_err(|_| SdkError::Closed)?;
    match reached {
        RTCPeerConnectionState::Connected => Ok(()),
        _ => Err(SdkError::Closed),
    }
}

/// A subscriber connection and the flag that retires its handler once replaced.
type LiveConnection = (Arc<dyn PeerConnection>, Arc<AtomicBool>);

/// Our side of the subscriber connection: the server offers, we answer. The
/// connection itself is made on the first offer, and made anew for an ICE restart
/// (the server's offer marked `restart`).
pub struct Subscriber {
    options: StdMutex<MediaOptions>,
    outbox: Arc<Outbox>,
    /// The connection and the flag that retires its handler when a fresh one replaces it.
    pc: Mutex<Option<LiveConnection>>,
    remote: Mutex<RemoteCandidates>,
    tracks_tx: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    state_tx: watch::Sender<RTCPeerConnectionState>,
    /// `restart_ice` sent and its `restart` offer not here yet: offers for the old
    /// connection are ignored meanwhile, and a lost restart is asked for again.
    restart: StdMutex<PendingRestart>,
    /// Test hook: the next `restart` offer is dropped as if lost on the way.
    drop_next_restart_offer: AtomicBool,
}

impl Subscriber {
    /// A subscriber that will answer offers through `out`; remote tracks arrive on the returned receiver.
    pub fn new(options: MediaOptions, out: mpsc::UnboundedSender<ClientMessage>) -> (Arc<Subscriber>, RemoteTracks) {
        let (tracks_tx, rx) = mpsc::unbounded_channel();
        let subscriber = Arc::new(Subscriber {
            options: StdMutex::new(options),
            outbox: Arc::new(Outbox::new(out)),
            pc: Mutex::new(None),
            remote: Mutex::new(RemoteCandidates::default()),
            tracks_tx,
            state_tx: watch::channel(RTCPeerConnectionState::New).0,
            restart: StdMutex::new(PendingRestart::default()),
            drop_next_restart_offer: AtomicBool::new(false),
        });
        (subscriber, RemoteTracks { rx })
    }

    /// Replaces the ICE servers used when the connection gets built (the client sets them on `admitted`).
    pub fn set_ice_servers(&self, ice_servers: Vec<IceServer>) {
        self.options.lock().expect("options lock is never poisoned").ice_servers = ice_servers;
    }

    /// Applies an offer (initial or renegotiation) and sends the answer.
    pub async fn on_offer(&self, sdp: String) -> Result<()> {
        self.on_server_offer(sdp, false).await
    }

    /// Applies a `subscribe_offer`: one marked `restart` is answered on a fresh
    /// connection (the old one is closed; its tracks end and the new connection's
    /// arrive as new remote tracks); after [`request_restart`](Self::request_restart),
    /// offers not so marked were made for the old connection and are ignored.
    pub async fn on_server_offer(&self, sdp: String, restart: bool) -> Result<()> {
        if restart && self.drop_next_restart_offer.swap(false, Ordering::AcqRel) {
            warn!("test hook: dropping a restart subscribe_offer");
            return Ok(());
        }
        if restart {
            self.pending_restart().offer_arrived();
        } else if self.pending_restart().pending() {
            debug!("ignoring a subscribe_offer for the connection a restart replaces");
            return Ok(());
        }
        let started = Instant::now();
        let mut slot = self.pc.lock().await;
        if restart && let Some((old, replaced)) = slot.take() {
            replaced.store(true, Ordering::Release);
            if let Err(e) = old.close().await {
                debug!(error = %e, "closing the replaced subscriber connection");
            }
            *self.remote.lock().await = RemoteCandidates::default();
            self.outbox.hold();
            self.state_tx.send_replace(RTCPeerConnectionState::New);
        }
        let pc = match slot.as_ref() {
            Some((pc, _)) => pc.clone(),
            None => {
                let options = self.options.lock().expect("options lock is never poisoned").clone();
                let mut media_engine = MediaEngine::default();
                // Receive whatever other participants (browsers) publish.
                media_engine.register_default_codecs()?;
                register_extensions(&mut media_engine)?;
                let replaced = Arc::new(AtomicBool::new(false));
                let handler = Handler {
                    role: PeerRole::Subscriber,
                    outbox: self.outbox.clone(),
                    state: self.state_tx.clone(),
                    tracks: Some(self.tracks_tx.clone()),
                    replaced: replaced.clone(),
                };
                let pc = build_connection(&options, media_engine, handler).await?;
                *slot = Some((pc.clone(), replaced));
                pc
            }
        };
        pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
        let answer = pc.create_answer(None).await?;
        pc.set_local_description(answer).await?;
        let sdp = pc
            .local_description()
            .await
            .ok_or(SdkError::Protocol("no local description".into()))?
            .sdp;
        self.outbox
            .send_description(PeerRole::Subscriber, ClientMessage::SubscribeAnswer { sdp })?;
        debug!(restart, elapsed = ?started.elapsed(), "subscribe_offer answered");
        self.remote.lock().await.ready(&pc).await;
        Ok(())
    }

    /// Asks the server for a fresh subscriber connection (`restart_ice`), its ICE
    /// restart; the answer is a `subscribe_offer` marked `restart`, for
    /// [`on_server_offer`](Self::on_server_offer). False (nothing sent) while there is
    /// no connection to restart.
    pub async fn request_restart(&self) -> Result<bool> {
        // Held so that no offer is being answered while the flag changes.
        let slot = self.pc.lock().await;
        if slot.is_none() {
            return Ok(false);
        }
        self.pending_restart().requested(Instant::now());
        self.outbox
            .tx
            .send(ClientMessage::RestartIce)
            .map_err(|_| SdkError::Closed)?;
        Ok(true)
    }

    fn pending_restart(&self) -> std::sync::MutexGuard<'_, PendingRestart> {
        self.restart
            .lock()
            .expect("restart lock is never poisoned: no panics inside")
    }

    /// When [`on_timer`](Self::on_timer) is due: a restart whose offer has not come.
    pub fn restart_deadline(&self) -> Option<Instant> {
        self.pending_restart().deadline()
    }

    /// Time passed: a `restart_ice` whose `restart` offer has not come within
    /// [`RESTART_OFFER_TIMEOUT`](crate::health::RESTART_OFFER_TIMEOUT) was lost (or
    /// refused) and is asked for again, a few times; then the SDK stops waiting for it
    /// and takes the server's offers as they come, so negotiation never stays wedged.
    /// Returns an error to report when it stops waiting.
    pub async fn on_timer(&self, now: Instant) -> Result<()> {
        let outcome = self.pending_restart().on_timer(now);
        match outcome {
            Some(RestartTimeout::AskAgain) => {
                warn!("no offer came for restart_ice: asking again");
                self.outbox
                    .tx
                    .send(ClientMessage::RestartIce)
                    .map_err(|_| SdkError::Closed)
            }
            Some(RestartTimeout::GiveUp) => Err(SdkError::Timeout("the restart subscribe_offer")),
            None => Ok(()),
        }
    }

    /// Test hook: the next `subscribe_offer` marked `restart` is dropped, as if lost.
    #[doc(hidden)]
    pub fn drop_next_restart_offer(&self) {
        self.drop_next_restart_offer.store(true, Ordering::Release);
    }

    /// Forgets the connection for a new signaling socket (a reconnect): the server has
    /// dropped it and makes a fresh one, whose first offer this answers on a new
    /// peer connection. The old connection's tracks end.
    pub async fn reset(&self) {
        let mut slot = self.pc.lock().await;
        if let Some((old, replaced)) = slot.take() {
            replaced.store(true, Ordering::Release);
            if let Err(e) = old.close().await {
                debug!(error = %e, "closing the subscriber connection of the old socket");
            }
        }
        *self.remote.lock().await = RemoteCandidates::default();
        *self.pending_restart() = PendingRestart::default();
        self.outbox.hold();
        self.state_tx.send_replace(RTCPeerConnectionState::New);
    }

    /// Feeds a server ICE candidate for this connection (held until the first offer).
    pub async fn add_remote_candidate(&self, candidate: IceCandidate) -> Result<()> {
        let pc = self.current().await;
        self.remote.lock().await.add(pc.as_ref(), candidate).await
    }

    async fn current(&self) -> Option<Arc<dyn PeerConnection>> {
        self.pc.lock().await.as_ref().map(|(pc, _)| pc.clone())
    }

    /// The connection's state (`New` until the first offer, and again when a restart
    /// replaces it).
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state_tx.borrow()
    }

    /// The connection's state, to wait on (it follows the fresh connection after a restart).
    pub fn watch_state(&self) -> watch::Receiver<RTCPeerConnectionState> {
        self.state_tx.subscribe()
    }

    /// The path of the selected candidate pair (`None` with no connection or nothing selected).
    pub async fn selected_path(&self) -> Option<MediaPath> {
        let pc = self.current().await?;
        crate::health::selected_path(&pc.get_stats(Instant::now(), StatsSelector::None).await)
    }

    /// Waits until the subscriber connection is connected (DTLS up, so media sent to
    /// it from now on can be decrypted); an error if it fails or closes first.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        wait_connected(self.state_tx.subscribe(), timeout, "subscriber connection").await
    }

    /// The id this connection negotiated for the header extension `uri` (e.g.
    /// [`AUDIO_LEVEL_URI`], to read with [`audio_level_of`]): what our latest answer
    /// says. `None` before the first offer or if the server did not offer it.
    pub async fn header_extension_id(&self, uri: &str) -> Option<u8> {
        let pc = self.current().await?;
        extmap_id(&pc.local_description().await?.sdp, uri)
    }

    /// Closes the connection if there is one.
    pub async fn close(&self) {
        if let Some((pc, _)) = self.pc.lock().await.take()
            && let Err(e) = pc.close().await
        {
            debug!(error = %e, "closing subscriber connection");
        }
    }
}

/// The RFC 6464 audio level (0 = loudest to 127 = silence, in -dBov) a packet carries
/// in header extension `id` (see [`Subscriber::header_extension_id`]), if it has one.
pub fn audio_level_of(packet: &RtpPacket, id: u8) -> Option<u8> {
    packet.header.get_extension(id)?.first().map(|b| b & 0x7f)
}

/// Remote tracks as the subscriber connection opens them.
pub struct RemoteTracks {
    rx: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl RemoteTracks {
    /// The next remote track, without announcement info (see [`RemoteTrack::info`]).
    /// `None` once the subscriber is gone.
    pub async fn recv(&mut self) -> Option<RemoteTrack> {
        let track = self.rx.recv().await?;
        Some(RemoteTrack::new(track, None).await)
    }
}

/// A track someone else publishes, as received on the subscriber connection.
///
/// Its `msid` is `<participant_id> <track_id>`, which is how it is matched
/// with the `track_published` announcement.
pub struct RemoteTrack {
    participant_id: ParticipantId,
    track_id: TrackId,
    kind: TrackKind,
    mime_type: String,
    ssrc: u32,
    info: Option<TrackInfo>,
    track: Arc<dyn TrackRemote>,
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("participant_id", &self.participant_id)
            .field("track_id", &self.track_id)
            .field("kind", &self.kind)
            .field("mime_type", &self.mime_type)
            .field("ssrc", &self.ssrc)
            .field("info", &self.info)
            .finish()
    }
}

impl RemoteTrack {
    pub(crate) async fn new(track: Arc<dyn TrackRemote>, info: Option<TrackInfo>) -> RemoteTrack {
        let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
        let mime_type = track.codec(ssrc).await.map(|c| c.mime_type).unwrap_or_default();
        let kind = match track.kind().await {
            RtpCodecKind::Audio => TrackKind::Audio,
            _ => TrackKind::Video,
        };
        if mime_type.is_empty() {
            debug!(ssrc, ?kind, "a remote track opened without a codec");
        }
        RemoteTrack {
            participant_id: track.stream_id().await.to_string().into(),
            track_id: track.track_id().await.to_string().into(),
            kind,
            mime_type,
            ssrc,
            info,
            track,
        }
    }

    pub(crate) fn set_info(&mut self, info: Option<TrackInfo>) {
        self.info = info;
    }

    /// The publishing participant (the `msid` stream id).
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// The track id (the `msid` track id), as in `track_published`.
    pub fn track_id(&self) -> &str {
        &self.track_id
    }

    /// Audio or video.
    pub fn kind(&self) -> TrackKind {
        self.kind
    }

    /// The negotiated codec's MIME type (`audio/opus`, `video/VP8`...); empty when webrtc-rs
    /// had no codec for the track's first SSRC as it opened (seen rarely, with
    /// renegotiations under way; its packets still arrive).
    pub fn mime_type(&self) -> &str {
        &self.mime_type
    }

    /// The SSRC of the first packet.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The announcement (`track_published` or `admitted`) for this track, if it came first.
    pub fn info(&self) -> Option<&TrackInfo> {
        self.info.as_ref()
    }

    /// The next RTP packet; `None` when the track has ended.
    pub async fn recv_rtp(&self) -> Option<RtpPacket> {
        loop {
            match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(packet) => return Some(packet),
                TrackRemoteEvent::OnEnded => return None,
                _ => continue,
            }
        }
    }

    /// Asks the sender for a keyframe (RTCP PLI).
    pub async fn request_keyframe(&self) -> Result<()> {
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.ssrc,
        };
        Ok(self.track.write_rtcp(vec![Box::new(pli)]).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> MediaOptions {
        MediaOptions {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            ..MediaOptions::default()
        }
    }

    /// The chain is `rtc`'s default one with our NACK generator in its slot, plus the tap.
    #[test]
    fn the_chain_is_rtcs_default_with_our_nack_generator() {
        let names = |r: &Registry| {
            r.slots()
                .into_iter()
                .map(|(s, n)| (format!("{s:?}"), n))
                .collect::<Vec<_>>()
        };
        let ours = names(&interceptors(&mut MediaEngine::default()).expect("our chain"));
        let mut theirs = names(
            &webrtc::peer_connection::register_default_interceptors(Registry::new(), &mut MediaEngine::default())
                .expect("rtc's chain"),
        );
        for (slot, name) in &mut theirs {
            if slot == "NackGenerator" {
                *name = "NackGenerator".to_owned();
            }
        }
        let tap = ours.last().cloned().expect("a chain");
        assert_eq!(tap.1, "KeyframeTap", "the tap last: {ours:?}");
        assert_eq!(ours[..ours.len() - 1], theirs[..], "the rest as rtc's");
    }

    /// The next frame on `rx` that is not a trickled candidate.
    async fn next_description(rx: &mut mpsc::UnboundedReceiver<ClientMessage>) -> ClientMessage {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a frame in time")
                .expect("publisher alive");
            if !matches!(message, ClientMessage::IceCandidate { .. }) {
                return message;
            }
        }
    }

    #[tokio::test]
    async fn a_refused_offer_fails_the_publish_at_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let options = MediaOptions {
            negotiation_timeout: Duration::from_secs(60),
            ..loopback()
        };
        let publisher = Publisher::new(options, tx).await.unwrap();
        assert!(!publisher.on_refused(ErrorCode::InvalidSdp, "nothing in flight".into()));
        let publishing = tokio::spawn({
            let publisher = publisher.clone();
            async move { publisher.publish(TrackSource::Screen).await }
        });
        assert!(matches!(
            next_description(&mut rx).await,
            ClientMessage::PublishOffer { .. }
        ));
        assert!(publisher.on_refused(ErrorCode::PresentingNotAllowed, "guests may not present".into()));
        let refused = tokio::time::timeout(Duration::from_secs(5), publishing)
            .await
            .expect("fails at once, not after the negotiation timeout")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&refused, SdkError::Server { code: ErrorCode::PresentingNotAllowed, message } if message == "guests may not present"),
            "{refused:?}"
        );
        assert!(publisher.tracks().is_empty(), "the refused track is gone");
        assert!(!publisher.on_answer("v=0".into()), "nothing in flight any more");
        publisher.close().await;
    }

    #[tokio::test]
    async fn an_answer_settles_payload_type_audio_level_and_server_ids() {
        let (pub_tx, mut pub_rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let publisher = Publisher::new(loopback(), pub_tx).await.unwrap();
        // Our own subscriber stands in for the server's answering side.
        let (subscriber, _tracks) = Subscriber::new(loopback(), sub_tx);
        let answering = tokio::spawn({
            let (publisher, subscriber) = (publisher.clone(), subscriber.clone());
            async move {
                loop {
                    let ClientMessage::PublishOffer { sdp, .. } = next_description(&mut pub_rx).await else {
                        panic!("only offers from a publisher");
                    };
                    subscriber.on_offer(sdp).await.unwrap();
                    let answer = next_description(&mut sub_rx).await;
                    let ClientMessage::SubscribeAnswer { sdp } = answer else {
                        panic!("{answer:?}");
                    };
                    assert!(publisher.on_answer(sdp));
                }
            }
        });
        let mic = publisher.publish(TrackSource::Microphone).await.unwrap();
        let camera = publisher.publish(TrackSource::Camera).await.unwrap();
        assert_eq!(mic.payload_type(), Some(PT_OPUS));
        assert_eq!(camera.payload_type(), Some(PT_VP8));
        let level_id = mic.header_extension_id(AUDIO_LEVEL_URI).expect("audio level accepted");
        assert_eq!(
            subscriber.header_extension_id(AUDIO_LEVEL_URI).await,
            Some(level_id),
            "the answerer takes the offerer's id"
        );
        assert_eq!(camera.header_extension_id(AUDIO_LEVEL_URI), None, "audio only");

        let announced = |track_id: &str, source: TrackSource| TrackInfo {
            track_id: track_id.into(),
            participant_id: "p_me".into(),
            kind: source.kind(),
            source,
            muted: false,
        };
        publisher.claim_track(&announced("t_cam", TrackSource::Camera));
        publisher.claim_track(&announced("t_mic", TrackSource::Microphone));
        // Announced again (a renegotiation), or a microphone we do not have: nothing changes.
        publisher.claim_track(&announced("t_cam", TrackSource::Camera));
        publisher.claim_track(&announced("t_other", TrackSource::Microphone));
        assert_eq!(mic.server_track_id().as_deref(), Some("t_mic"));
        assert_eq!(camera.server_track_id().as_deref(), Some("t_cam"));

        answering.abort();
        publisher.close().await;
        subscriber.close().await;
    }

    /// A camera is offered as simulcast (rids `q`, `h`, `f`, the mid and rid extensions);
    /// a screen share, and a camera with `simulcast: false`, as one layer. Keyframe requests
    /// map to the layer whose SSRC they name, and `publisher_layers` sets the layers' flags.
    #[tokio::test]
    async fn a_camera_is_offered_as_simulcast_and_requests_name_its_layers() {
        for simulcast in [true, false] {
            let (pub_tx, mut pub_rx) = mpsc::unbounded_channel();
            let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
            let options = MediaOptions {
                simulcast,
                ..loopback()
            };
            let publisher = Publisher::new(options, pub_tx).await.unwrap();
            let (subscriber, _tracks) = Subscriber::new(loopback(), sub_tx);
            let offers = Arc::new(StdMutex::new(Vec::new()));
            let answering = tokio::spawn({
                let (publisher, subscriber, offers) = (publisher.clone(), subscriber.clone(), offers.clone());
                async move {
                    loop {
                        let ClientMessage::PublishOffer { sdp, .. } = next_description(&mut pub_rx).await else {
                            panic!("only offers from a publisher");
                        };
                        offers.lock().unwrap().push(sdp.clone());
                        subscriber.on_offer(sdp).await.unwrap();
                        let ClientMessage::SubscribeAnswer { sdp } = next_description(&mut sub_rx).await else {
                            panic!("an answer");
                        };
                        assert!(publisher.on_answer(sdp));
                    }
                }
            });
            let camera = publisher.publish(TrackSource::Camera).await.unwrap();
            let screen = publisher.publish(TrackSource::Screen).await.unwrap();
            let offer = offers.lock().unwrap().last().cloned().unwrap();
            assert_eq!(screen.layer_count(), 1, "a screen share is one layer");
            assert!(!screen.is_simulcast());
            let video_sections: Vec<&str> = offer.split("m=video").skip(1).collect();
            assert_eq!(video_sections.len(), 2);
            let camera_section = video_sections[0];
            if !simulcast {
                assert_eq!(camera.layer_count(), 1);
                assert!(!offer.contains("a=simulcast"), "{offer}");
                answering.abort();
                publisher.close().await;
                subscriber.close().await;
                continue;
            }
            let rids: Vec<String> = camera.layers().into_iter().map(|l| l.rid).collect();
            assert_eq!(rids, SIMULCAST_RIDS);
            for line in ["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"] {
                assert!(camera_section.contains(line), "{line} in {camera_section}");
            }
            assert!(!video_sections[1].contains("a=rid:"), "the screen is one layer");
            assert!(camera.header_extension_id(MID_URI).is_some(), "mid accepted");
            assert!(camera.header_extension_id(RID_URI).is_some(), "rid accepted");

            let ssrcs: Vec<u32> = camera.layers().iter().map(|l| l.ssrc).collect();
            let pli = |ssrc| -> Box<dyn rtc::rtcp::Packet> {
                Box::new(PictureLossIndication {
                    sender_ssrc: 1,
                    media_ssrc: ssrc,
                })
            };
            assert_eq!(camera.keyframe_layers(&[pli(ssrcs[1])]), [1]);
            assert_eq!(camera.keyframe_layers(&[pli(ssrcs[2]), pli(ssrcs[0])]), [0, 2]);
            assert_eq!(camera.keyframe_layers(&[pli(0)]), [0, 1, 2], "no layer named: all");
            let fir: Box<dyn rtc::rtcp::Packet> = Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: 0,
                fir: vec![rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry {
                    ssrc: ssrcs[2],
                    sequence_number: 1,
                }],
            });
            assert_eq!(camera.keyframe_layers(&[fir]), [2]);
            assert_eq!(camera.keyframe_layers(&[]), Vec::<usize>::new());

            let changes = camera.watch_layers();
            let layer = |rid: &str, active| PublisherLayer {
                rid: rid.into(),
                active,
            };
            assert!(camera.apply_publisher_layers(&[layer("q", true), layer("h", false), layer("f", false)]));
            assert!(changes.has_changed().unwrap());
            assert_eq!(
                (0..3).map(|l| camera.is_layer_active(l)).collect::<Vec<_>>(),
                [true, false, false]
            );
            assert!(!camera.apply_publisher_layers(&[layer("h", false)]), "no change");
            assert!(!camera.apply_publisher_layers(&[layer("x", false)]), "not ours");
            assert!(
                camera.apply_publisher_layers(&[layer("f", true)]),
                "f alone, h left as it is"
            );
            assert_eq!(
                (0..3).map(|l| camera.is_layer_active(l)).collect::<Vec<_>>(),
                [true, false, true]
            );
            assert!(!camera.is_layer_active(3));
            assert!(
                !screen.apply_publisher_layers(&[layer("", false)]),
                "a one-layer track has no rid"
            );
            assert!(screen.is_layer_active(0));
            assert!(matches!(
                camera.write_layer_payload(3, Bytes::from_static(b"x"), 0, true).await,
                Err(SdkError::NoSuchLayer { layer: 3, layers: 3 })
            ));
            answering.abort();
            publisher.close().await;
            subscriber.close().await;
        }
    }

    fn ice_ufrag(sdp: &str) -> Option<String> {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:").map(str::to_owned))
    }

    /// Every layer write reaches a peer as its layer: packetized samples and ready payloads
    /// alike carry the `rid` (and `mid`) header extensions that name the layer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn layer_writes_arrive_named_by_their_rid() {
        let (pub_tx, mut pub_rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let publisher = Publisher::new(loopback(), pub_tx).await.unwrap();
        let (subscriber, mut remote_tracks) = Subscriber::new(loopback(), sub_tx);
        let relaying = tokio::spawn({
            let (publisher, subscriber) = (publisher.clone(), subscriber.clone());
            async move {
                loop {
                    tokio::select! {
                        Some(message) = pub_rx.recv() => match message {
                            ClientMessage::PublishOffer { sdp, .. } => subscriber.on_offer(sdp).await.unwrap(),
                            ClientMessage::IceCandidate { candidate, .. } => {
                                subscriber.add_remote_candidate(candidate).await.unwrap()
                            }
                            other => panic!("from a publisher: {other:?}"),
                        },
                        Some(message) = sub_rx.recv() => match message {
                            ClientMessage::SubscribeAnswer { sdp } => assert!(publisher.on_answer(sdp)),
                            ClientMessage::IceCandidate { candidate, .. } => {
                                publisher.add_remote_candidate(candidate).await.unwrap()
                            }
                            other => panic!("from a subscriber: {other:?}"),
                        },
                        else => return,
                    }
                }
            }
        });
        let wait = Duration::from_secs(10);
        let camera = publisher.publish(TrackSource::Camera).await.unwrap();
        camera.wait_connected(wait).await.unwrap();
        subscriber.wait_connected(wait).await.unwrap();
        let rid_id = subscriber.header_extension_id(RID_URI).await.expect("rid negotiated");
        let (rids_tx, mut rids_rx) = mpsc::unbounded_channel();
        let receiving = tokio::spawn(async move {
            while let Some(track) = remote_tracks.recv().await {
                let rids_tx = rids_tx.clone();
                tokio::spawn(async move {
                    while let Some(packet) = track.recv_rtp().await {
                        let rid = packet.header.get_extension(rid_id).map(|r| r.to_vec());
                        let _ = rids_tx.send((rid, packet.header.ssrc));
                    }
                });
            }
        });
        let layers = camera.layers();
        let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
        let deadline = tokio::time::Instant::now() + wait;
        while seen.len() < 2 && tokio::time::Instant::now() < deadline {
            // A VP8 keyframe's first bytes (the packetizer adds the descriptor).
            let frame = Bytes::from_static(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
            camera
                .write_layer_sample(2, frame, Duration::from_millis(33))
                .await
                .unwrap();
            camera
                .write_layer_payload(0, Bytes::from_static(&[0x10, 0x00]), 1_000, true)
                .await
                .unwrap();
            while let Ok(Some((rid, ssrc))) = tokio::time::timeout(Duration::from_millis(50), rids_rx.recv()).await {
                seen.insert(rid.expect("every layer packet names its rid"), ssrc);
            }
        }
        assert_eq!(
            seen.get(b"f".as_slice()),
            Some(&layers[2].ssrc),
            "samples on f: {seen:?}"
        );
        assert_eq!(
            seen.get(b"q".as_slice()),
            Some(&layers[0].ssrc),
            "payloads on q: {seen:?}"
        );
        receiving.abort();
        relaying.abort();
        publisher.close().await;
        subscriber.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ice_restart_brings_new_credentials_and_keeps_the_udp_path() {
        let (pub_tx, mut pub_rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let publisher = Publisher::new(loopback(), pub_tx).await.unwrap();
        // Our own subscriber stands in for the server's answering side: descriptions and
        // trickled candidates go across both ways (two full ICE agents need the candidates).
        let (subscriber, _tracks) = Subscriber::new(loopback(), sub_tx);
        let answering = tokio::spawn({
            let (publisher, subscriber) = (publisher.clone(), subscriber.clone());
            async move {
                loop {
                    tokio::select! {
                        Some(message) = pub_rx.recv() => match message {
                            ClientMessage::PublishOffer { sdp, .. } => subscriber.on_offer(sdp).await.unwrap(),
                            ClientMessage::IceCandidate { candidate, .. } => {
                                subscriber.add_remote_candidate(candidate).await.unwrap()
                            }
                            other => panic!("from a publisher: {other:?}"),
                        },
                        Some(message) = sub_rx.recv() => match message {
                            ClientMessage::SubscribeAnswer { sdp } => assert!(publisher.on_answer(sdp)),
                            ClientMessage::IceCandidate { candidate, .. } => {
                                publisher.add_remote_candidate(candidate).await.unwrap()
                            }
                            other => panic!("from a subscriber: {other:?}"),
                        },
                        else => return,
                    }
                }
            }
        });
        let wait = Duration::from_secs(10);
        let mic = publisher.publish(TrackSource::Microphone).await.unwrap();
        mic.wait_connected(wait).await.unwrap();
        subscriber.wait_connected(wait).await.unwrap();
        assert_eq!(publisher.selected_path().await, Some(MediaPath::Udp));
        assert_eq!(subscriber.selected_path().await, Some(MediaPath::Udp));
        let local_ufrag = || async { ice_ufrag(&publisher.pc.local_description().await.unwrap().sdp) };
        let before = local_ufrag().await.expect("a ufrag");

        tokio::time::timeout(wait, publisher.restart_ice())
            .await
            .expect("answered in time")
            .unwrap();
        let after = local_ufrag().await.expect("a ufrag");
        assert_ne!(before, after, "new ICE credentials");
        assert_eq!(publisher.tracks().len(), 1, "the track stays");
        mic.wait_connected(wait).await.expect("connected after the restart");
        assert_eq!(publisher.selected_path().await, Some(MediaPath::Udp));

        answering.abort();
        publisher.close().await;
        subscriber.close().await;
    }

    #[test]
    fn extension_ids_come_from_extmap_lines() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                   a=extmap:5/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:7 urn:3gpp:video-orientation\r\n";
        assert_eq!(extmap_id(sdp, AUDIO_LEVEL_URI), Some(5));
        assert_eq!(extmap_id(sdp, "urn:3gpp:video-orientation"), Some(7));
        assert_eq!(extmap_id(sdp, "urn:ietf:params:rtp-hdrext:toffset"), None);
        assert_eq!(
            extmap_id(
                "a=extmap:x urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                AUDIO_LEVEL_URI
            ),
            None
        );
    }

    #[test]
    fn audio_level_is_read_from_its_extension() {
        let mut packet = RtpPacket::default();
        assert_eq!(audio_level_of(&packet, 1), None);
        packet
            .header
            .set_extension(3, Bytes::from_static(&[0x80 | 42]))
            .unwrap();
        assert_eq!(
            audio_level_of(&packet, 3),
            Some(42),
            "the voice bit is not part of the level"
        );
        assert_eq!(audio_level_of(&packet, 1), None, "another id");
    }

    #[test]
    fn mids_follow_msid_track_ids() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:p_1 microphone-1\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:p_1 camera-2\r\na=mid:1\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let mids = mids_by_msid_track(sdp);
        assert_eq!(mids.len(), 2);
        assert_eq!(mids["microphone-1"], "0");
        assert_eq!(mids["camera-2"], "1");
    }

    #[test]
    fn outbox_holds_candidates_until_the_description_is_sent() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let outbox = Outbox::new(tx);
        let candidate = |n: u16| IceCandidate {
            candidate: format!("c{n}"),
            sdp_mid: None,
            sdp_mline_index: Some(n),
        };
        outbox.candidate(PeerRole::Publisher, candidate(1));
        assert!(rx.try_recv().is_err());
        outbox
            .send_description(
                PeerRole::Publisher,
                ClientMessage::PublishOffer {
                    sdp: "o".into(),
                    tracks: vec![],
                },
            )
            .unwrap();
        outbox.candidate(PeerRole::Publisher, candidate(2));
        let got: Vec<ClientMessage> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            vec![
                ClientMessage::PublishOffer {
                    sdp: "o".into(),
                    tracks: vec![]
                },
                ClientMessage::IceCandidate {
                    target: PeerRole::Publisher,
                    candidate: candidate(1)
                },
                ClientMessage::IceCandidate {
                    target: PeerRole::Publisher,
                    candidate: candidate(2)
                },
            ]
        );
    }
}
