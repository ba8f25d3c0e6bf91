//! One server-side peer connection: how it is built (ICE-lite, our ufrag, our
//! host candidate, default codecs and interceptors plus the RTCP tap), the
//! little state the shard keeps beside it, and the `rtc` calls the shard makes
//! on it (SDP, senders, what was negotiated), each returning plain data for the
//! media room. The shard runs each of them inside `Peers::guard`.
//!
//! The server is ICE-lite: it never sends connectivity checks, it only answers
//! them. That is what makes one shared socket simple: the client's first binding
//! request teaches the demultiplexer its address before the server ever needs to
//! send anything to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_signaling::protocol::PeerRole;
use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::crypto::SignatureScheme;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::SenderReportBuilder;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};

use gatehouse_signaling::protocol::{TrackInfo, TrackKind};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection};

use super::layer_rtx::{LayerRtxInterceptor, SharedSettings};
use super::media_room::{Codec, ConnId, Negotiated, SimulcastLayer, Stream};
use super::nack::{NackGenerator, NackParams};
use super::own_inbound::{OwnInbound, ReceiveSide};
use super::own_rtcp::{OwnRtcp, RtcpSealer};
use super::own_srtp::OwnSrtp;
use super::receipts::Receipts;
use super::rtcp::{RTCP_TAP_SLOT, RtcpTap};
use super::srtp_keys::KeyCapture;
use super::stats::StatsPair;
use super::twcc_feedback;

/// Shard-local room handle.
pub type RoomId = u64;

/// A path to a client: its address over UDP, or its end of a TCP link (ICE-TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Path {
    pub fn addr(self) -> SocketAddr {
        match self {
            Path::Udp(addr) | Path::Tcp(addr) => addr,
        }
    }

    /// `udp` or `tcp`, as ICE candidates name the transport.
    pub fn transport(self) -> &'static str {
        match self {
            Path::Udp(_) => "udp",
            Path::Tcp(_) => "tcp",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.transport(), self.addr())
    }
}

/// A peer connection and what the shard needs to route to and from it.
pub struct Conn {
    pub pc: RTCPeerConnection,
    /// The room it belongs to, so a datagram finds its meeting without a string hash.
    pub room: RoomId,
    /// Its meeting and owner (participant id), for events and logs.
    pub meeting_id: String,
    pub participant: String,
    pub role: PeerRole,
    /// Our ICE ufrag: the demultiplexer's key for it.
    pub ufrag: String,
    /// DTLS is up and SRTP keyed: writing RTP before this only produces warnings.
    pub connected: bool,
    /// Whether a remote description has been applied (candidates wait until then).
    pub has_remote: bool,
    /// The client's ICE password, from its latest description: what its Binding
    /// successes are signed with (see `ice_lite`).
    pub client_pwd: Option<String>,
    /// Our ICE password, from our latest description (an ICE restart changes it): a
    /// client's check that does not verify with it is junk (see `demux::check_integrity`).
    pub local_pwd: String,
    /// Junk from this connection's address: counted, and logged at a bounded rate.
    pub junk: super::junk::JunkLog,
    /// When ICE reported Connected (cleared when DTLS completes: the histogram of the gap).
    pub ice_connected_at: Option<Instant>,
    /// The last connection state reported (for the debug snapshot).
    pub state: RTCPeerConnectionState,
    /// Where the client last nominated (USE-CANDIDATE) from: its chosen path.
    /// DTLS and SRTP go there, whatever pair `rtc`'s agent selected (see [`build`]).
    pub nominated: Option<Path>,
    /// A nomination seen but not yet proven: it becomes `nominated` when the
    /// connection answers that address with a binding success (its request passed
    /// MESSAGE-INTEGRITY). Without this, anyone who saw a ufrag on the wire could
    /// redirect the media with one spoofed request.
    pub pending_nomination: Option<Path>,
    /// `rtc` panicked inside this connection: it is no longer fed or polled
    /// (see `Peers::guard`), and is only forgotten when its participant leaves.
    pub broken: bool,
    /// When a datagram last arrived from the client: our consent freshness.
    pub last_seen: Instant,
    /// Checks that came before the client's description (at most
    /// [`MAX_EARLY_CHECKS`]): the path they came on, whether they nominated, the datagram.
    /// A client answering our subscriber offer starts checking as soon as it has made
    /// its answer, so its first check usually beats the answer, which travels the
    /// signaling path; `rtc` refuses a check it cannot attribute (no remote ufrag yet),
    /// and the client would retry only a check interval later. So they wait here and
    /// are handed over once the description is applied.
    pub early_checks: Vec<(Path, bool, bytes::BytesMut)>,
    /// What the connection's [`LayerRtxInterceptor`] needs from its negotiation (the
    /// extension ids and RTX payload types), set by [`answer_offer`]; the same handle
    /// that was given to [`build`].
    pub layer_rtx: SharedSettings,
    /// How many forwarded packets were written into it this turn, not settled yet
    /// (`Peers::settle_written`).
    pub written: usize,
    /// When its timer was last re-armed from `rtc`'s `poll_timeout` (`Peers::settle_media`).
    pub rearmed_at: Option<Instant>,
    /// When its timer last ran `rtc`'s `handle_timeout` (`timers::connected_due`).
    pub swept_at: Option<Instant>,
    /// When RTP was last read from it or written into it: a connection without any for a
    /// while is quiet, and its timer fires on a coarse grid (`timers::quiet_slot`).
    pub last_media: Option<Instant>,
    /// Where `rtc` last sent something other than a check (DTLS, RTCP, media): where the
    /// shard's own datagrams go while no nomination is known.
    pub out_path: Option<Path>,
    /// The capture its SRTP keys are read through (subscriber connections; see [`build`]).
    pub keys: Option<Arc<KeyCapture>>,
    /// Its own sending side, from the first forwarded copy written once its keys are
    /// known: from then on all its media goes that way (`own_srtp`).
    pub own: Option<Box<OwnSrtp>>,
    /// A publisher connection's receive interceptors, shared with `rtc` (`own_inbound`).
    pub hosted: Option<ReceiveSide>,
    /// Its own receiving side, from the first stream taken over once its keys are known
    /// (`own_inbound`).
    pub inbound: Option<Box<OwnInbound>>,
    /// The connection's RTCP tap's counters, for the RTCP the shard opens itself (`own_rtcp`;
    /// `None` without keys of its own, when `rtc` reads it all).
    pub rtcp_stats: Option<StatsPair>,
    /// Its own reading of RTCP, once its keys are known (`own_rtcp`).
    pub own_rtcp: Option<Box<OwnRtcp>>,
    /// A publisher connection's receipts sealed and sent by the shard, from when its own
    /// receiving side starts (`own_rtcp::RtcpSealer`, `Receipts::send_own`): its timer then
    /// serves them and `rtc`'s deadline apart.
    pub receipts_out: Option<Box<RtcpSealer>>,
    /// `rtc`'s own next deadline as its `poll_timeout` said at the last re-arm, as the timer
    /// serves it (`timers::connected_due`), `None` when unknown (`rtc` was touched since, or
    /// a NACK fell due): with [`receipts_out`], a timer that finds it not due sends the
    /// receipts without a drive of `rtc`.
    ///
    /// [`receipts_out`]: Self::receipts_out
    pub rtc_due: Option<Option<Instant>>,
}

/// How many early checks a connection keeps (a client sends one per candidate pair
/// per check interval; the newest are dropped beyond this).
pub const MAX_EARLY_CHECKS: usize = 8;

impl Conn {
    /// A fresh connection, not yet negotiated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pc: RTCPeerConnection,
        room: RoomId,
        meeting_id: &str,
        participant: &str,
        role: PeerRole,
        ufrag: String,
        local_pwd: String,
        now: Instant,
    ) -> Self {
        Self {
            pc,
            room,
            meeting_id: meeting_id.to_owned(),
            participant: participant.to_owned(),
            role,
            ufrag,
            connected: false,
            has_remote: false,
            client_pwd: None,
            local_pwd,
            junk: Default::default(),
            ice_connected_at: None,
            state: RTCPeerConnectionState::default(),
            nominated: None,
            pending_nomination: None,
            broken: false,
            last_seen: now,
            early_checks: Vec::new(),
            layer_rtx: SharedSettings::default(),
            written: 0,
            rearmed_at: None,
            swept_at: None,
            last_media: None,
            out_path: None,
            keys: None,
            own: None,
            hosted: None,
            inbound: None,
            rtcp_stats: None,
            own_rtcp: None,
            receipts_out: None,
            rtc_due: None,
        }
    }
}

/// Random ICE credentials: a ufrag of 16 and a password of 32 alphanumerics
/// (RFC 8839 asks for at least 4 and 22 characters).
pub fn ice_credentials() -> (String, String) {
    let mut rng = rand::rng();
    let mut take = |n| {
        (&mut rng)
            .sample_iter(&Alphanumeric)
            .take(n)
            .map(char::from)
            .collect::<String>()
    };
    (take(16), take(32))
}

/// The DTLS certificate a shard's connections present (ECDSA P-256, self-signed, as
/// `rtc` would make for each connection). One per shard, made when the shard starts:
/// `rtc` otherwise generates a key pair and signs a certificate for every connection it
/// builds, which was half of building one (125 against 59 us, median; BENCHMARKS §3,
/// "Joins and leaves off the forwarding turn"). A client checks the certificate against the fingerprint in
/// our SDP, which reaches it over the authenticated signaling socket: one certificate per
/// server process or worker is what mediasoup and Janus do too.
pub fn dtls_certificate() -> Result<RTCCertificate, rtc::shared::error::Error> {
    let provider = rtc::crypto::default_provider().map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
    // A random name, as `rtc` gives the certificates it makes (no name is checked in DTLS-SRTP).
    let params = CertificateParams::new(vec![ice_credentials().0])
        .map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
}

/// Builds a server connection for `role` advertising a UDP host candidate at `advertised`
/// and, when ICE-TCP is on, a passive TCP host candidate at `tcp` (RFC 6544; its
/// priority is below the UDP one's, so clients that can use UDP do). `layer_rtx` is
/// the handle through which [`answer_offer`] tells the connection's simulcast RTX
/// repair what was negotiated (keep it in [`Conn::layer_rtx`]). With `keys`, the
/// connection's cryptography goes through that capture, so its SRTP keys can be read once
/// DTLS completes (`srtp_keys`; kept in [`Conn::keys`]), and it offers no SRTP profile
/// whose keys would be ambiguous there (`SRTP_AES128_CM_HMAC_SHA1_32`). With `certificate`
/// it presents that one ([`dtls_certificate`]); without, `rtc` makes one for it.
#[allow(clippy::too_many_arguments)]
pub fn build(
    now: Instant,
    role: PeerRole,
    ufrag: &str,
    pwd: &str,
    advertised: SocketAddr,
    tcp: Option<SocketAddr>,
    stats: StatsPair,
    layer_rtx: SharedSettings,
    keys: Option<Arc<KeyCapture>>,
    certificate: Option<&RTCCertificate>,
) -> Result<(RTCPeerConnection, Option<ReceiveSide>), rtc::shared::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let (registry, hosted) = interceptors(&mut media_engine, role, stats, layer_rtx)?;
    // Extensions worth carrying from publisher to subscribers (remapped per leg by
    // `forward::ExtMap`): audio levels (active speaker, `getSynchronizationSources`)
    // and camera rotation from phones.
    for (uri, kind) in [
        (rtc::sdp::extmap::AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (rtc::sdp::extmap::VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
    ] {
        media_engine.register_header_extension(RTCRtpHeaderExtensionCapability { uri: uri.to_owned() }, kind, None)?;
    }
    // ICE-lite in `rtc` 0.21.1 keeps the first nominated pair for good and ignores
    // later nominations, while Chrome moves to another pair (and sends consent
    // checks only there) when it has several candidates: the agent then reports
    // Disconnected after 5 s and Failed after 30 s, and Failed drops the selected
    // pair. So its timers are off (zero disables them) and the shard does both
    // jobs itself: it sends media to the latest nominated address and judges
    // liveness by what arrives (`Conn::last_seen`).
    let mut setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_timeouts(Some(Duration::ZERO), Some(Duration::ZERO), None)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_multicast_dns_mode(MulticastDnsMode::Disabled);
    if let Some(keys) = keys {
        setting_engine = setting_engine
            .with_crypto_provider(keys)
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ]);
    }
    let setting_engine = setting_engine.build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(certificate.into_iter().cloned().collect())
                .build(),
        )
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    let udp = std::iter::once(("udp", advertised, TcpType::Unspecified));
    let tcp = tcp.map(|addr| ("tcp", addr, TcpType::Passive));
    for (network, addr, tcp_type) in udp.chain(tcp) {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type,
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    }
    // End of gathering: these are all our candidates.
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    Ok((pc, hosted))
}

/// `rtc`'s default interceptors (`register_default_interceptors`: NACK feedback,
/// simulcast header extensions, TWCC feedback to publishers, sender and receiver
/// reports) with TWCC feedback and receiver reports of our own in place of `rtc`'s
/// (one interceptor, quiet while nothing arrives, see `receipts`), our NACK
/// generator in place of `rtc`'s (see `nack`), no NACK
/// responder (subscribers' NACKs are answered by the media room from its
/// retransmission cache, see `retransmit`; `rtc`'s could never answer them, as our
/// senders are added without a codec and so are never bound to the interceptors),
/// and the RTCP tap; before our NACK generator, the RTX of simulcast layers is turned
/// back into the layers' packets (`layer_rtx`).
///
/// The negotiation (the media engine's feedback and extensions) is the same for both
/// roles; the chain holds only the interceptors of the direction media flows on the
/// connection. A publisher's connection receives media and sends none: its chain has
/// the receive side (TWCC feedback, receiver reports, layer RTX, NACK generator) and no
/// sender reports. A subscriber's connection sends media and receives none: its chain
/// has sender reports only. An interceptor of the other direction never acts there,
/// but every packet and every sweep of `rtc`'s pipeline (one per `poll_write`,
/// `poll_read`, `poll_event`, `poll_timeout`) passes through it: each costs a move of
/// the packet through its queue, per packet and per sweep.
fn interceptors(
    media_engine: &mut MediaEngine,
    role: PeerRole,
    stats: StatsPair,
    layer_rtx: SharedSettings,
) -> Result<(Registry, Option<ReceiveSide>), rtc::shared::error::Error> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(media_engine)?;
    let (registry, hosted) = match role {
        // The receive side, each interceptor at its slot and shared with the shard
        // (`own_inbound`).
        PeerRole::Publisher => {
            twcc_feedback::negotiate(media_engine)?;
            let receive = ReceiveSide::new(
                LayerRtxInterceptor::new(layer_rtx, stats.clone()),
                NackGenerator::new(NackParams::default(), stats.clone()),
                Receipts::default(),
            );
            (receive.registry(Registry::new()), Some(receive))
        }
        PeerRole::Subscriber => {
            twcc_feedback::negotiate(media_engine)?;
            (
                Registry::new().with(Slot::SenderReport, SenderReportBuilder::new().build()),
                None,
            )
        }
    };
    Ok((registry.with(Slot::from(RTCP_TAP_SLOT), RtcpTap::new(stats)), hosted))
}

/// The description we send, tidied where `rtc` 0.21.1 writes what a client should
/// not have to cope with: with `a=rtcp-mux` there is one ICE component, so candidate
/// lines of component 2 go; and `a=msid-semantic: WMS` is always at session level when
/// any `a=msid` is used (the first offer lacked it, later ones had it). Candidates stay
/// in the first m-section only: every m-section is in one BUNDLE group, whose first
/// section carries the transport (RFC 8843 §7.1.2).
pub fn tidy_sdp(sdp: &str) -> String {
    let rtcp_mux = sdp.lines().any(|l| l.trim_end() == "a=rtcp-mux");
    let needs_semantic =
        sdp.lines().any(|l| l.starts_with("a=msid:")) && !sdp.lines().any(|l| l.starts_with("a=msid-semantic"));
    let mut out = String::with_capacity(sdp.len() + 32);
    let mut in_session = true;
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end();
        if rtcp_mux && is_component_two(text) {
            continue;
        }
        if in_session && text.starts_with("m=") {
            in_session = false;
            if needs_semantic {
                out.push_str("a=msid-semantic: WMS *\r\n");
            }
        }
        out.push_str(line);
    }
    out
}

/// `a=candidate:<foundation> 2 ...`
fn is_component_two(line: &str) -> bool {
    line.strip_prefix("a=candidate:")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .is_some_and(|component| component == "2")
}

/// Applies a publisher offer and returns our answer's SDP. The offer is first read
/// through [`publisher_offer`], with the simulcast receivers this connection already has;
/// what was negotiated for receiving simulcast layers' RTX goes to `layer_rtx`.
pub fn answer_offer(
    pc: &mut RTCPeerConnection,
    now: Instant,
    offer: RTCSessionDescription,
    layer_rtx: &SharedSettings,
) -> Result<String, String> {
    let offer = match publisher_offer(&offer.sdp, &simulcast_receivers(pc)) {
        std::borrow::Cow::Borrowed(_) => offer,
        std::borrow::Cow::Owned(sdp) => RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?,
    };
    pc.set_remote_description(now, offer)
        .and_then(|()| pc.create_answer(None))
        .and_then(|answer| pc.set_local_description(now, answer))
        .map_err(|e| e.to_string())?;
    layer_rtx.set(layer_rtx_settings(pc));
    pc.local_description()
        .map(|d| tidy_sdp(&d.sdp))
        .ok_or_else(|| "no local description after answering".to_owned())
}

/// What the receivers of a publisher connection negotiated, as simulcast RTX repair
/// needs it (extension ids, RTX payload types).
fn layer_rtx_settings(pc: &mut RTCPeerConnection) -> super::layer_rtx::Settings {
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    let negotiated: Vec<Negotiated> = transceivers
        .into_iter()
        .filter_map(|t| {
            let receiver = pc.rtp_transceiver(t)?.receiver()?;
            let mut rx = pc.rtp_receiver(receiver)?;
            Some(negotiated(&rx.get_parameters().rtp_parameters))
        })
        .collect();
    super::layer_rtx::Settings::from_negotiated(
        negotiated.iter().flat_map(|n| {
            n.codecs
                .iter()
                .map(|c| (c.payload_type, c.mime_type.as_str(), c.fmtp.as_str()))
        }),
        negotiated
            .iter()
            .flat_map(|n| n.extensions.iter().map(|(uri, id)| (uri.as_str(), *id))),
    )
}

/// The simulcast receivers of a publisher connection: each receiving transceiver's mid
/// with the rids its track was set up with (none before the first offer was applied).
fn simulcast_receivers(pc: &mut RTCPeerConnection) -> Vec<(String, Vec<String>)> {
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    transceivers
        .into_iter()
        .filter_map(|t| {
            let transceiver = pc.rtp_transceiver(t)?;
            let mid = transceiver.mid().clone()?;
            let receiver = transceiver.receiver()?;
            let rx = pc.rtp_receiver(receiver)?;
            let rids: Vec<String> = rx
                .track()
                .codings()
                .iter()
                .map(|c| c.rtp_coding_parameters.rid.to_string())
                .filter(|rid| !rid.is_empty())
                .collect();
            (!rids.is_empty()).then_some((mid, rids))
        })
        .collect()
}

/// A publisher's offer as `rtc` 0.21.1 is given it. **Layers forgotten on a re-offer**:
/// in a simulcast (`a=rid`) media section, applying a remote description gives every
/// receiving transceiver a fresh track (`start_rtp`); for a section with rids its layers
/// have no SSRC until a packet names its rid again in the `mid`/`rid` header extensions.
/// Chromium sends those only until a receiver report acknowledges the SSRC, so after any
/// re-offer (an ICE restart, a screen added) every layer's packets were dropped by `rtc`
/// ("no track id for <ssrc>") and the camera froze for everyone. A section whose mid
/// already has a simulcast receiver with the same rids therefore loses its `a=msid` and
/// `a=ssrc*` lines: `rtc` then finds no track described in it and leaves the receiver,
/// with the layers it learned, as it is.
///
/// Its RTX stays: `layer_rtx` turns the layers' retransmissions, which `rtc` would drop,
/// back into their packets. `layered` lists the connection's simulcast receivers (mid,
/// rids). Other sections and offers without rids are returned unchanged (borrowed).
pub fn publisher_offer<'a>(sdp: &'a str, layered: &[(String, Vec<String>)]) -> std::borrow::Cow<'a, str> {
    let lines: Vec<&str> = sdp.split_inclusive('\n').collect();
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("m=")).collect();
    let mut drop = vec![false; lines.len()];
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let section = start..end;
        let attr = |i: usize, key: &str| lines[i].trim_end().strip_prefix(key);
        let rids: Vec<&str> = section
            .clone()
            .filter_map(|i| attr(i, "a=rid:")?.split_whitespace().next())
            .collect();
        if rids.is_empty() {
            continue;
        }
        let mid = section.clone().find_map(|i| attr(i, "a=mid:"));
        let known = layered.iter().any(|(m, r)| {
            Some(m.as_str()) == mid && {
                let (mut a, mut b) = (r.iter().map(String::as_str).collect::<Vec<_>>(), rids.clone());
                a.sort_unstable();
                b.sort_unstable();
                a == b
            }
        });
        if !known {
            continue;
        }
        for i in section {
            let text = lines[i].trim_end();
            drop[i] = ["a=msid:", "a=ssrc:", "a=ssrc-group:"]
                .iter()
                .any(|key| text.starts_with(key));
        }
    }
    if !drop.contains(&true) {
        return std::borrow::Cow::Borrowed(sdp);
    }
    let mut out = String::with_capacity(sdp.len());
    for (line, _) in lines.iter().zip(&drop).filter(|(_, drop)| !**drop) {
        out.push_str(line);
    }
    std::borrow::Cow::Owned(out)
}

/// Makes and applies an offer on a subscriber connection and returns its SDP.
pub fn make_offer(pc: &mut RTCPeerConnection, now: Instant) -> Result<String, String> {
    pc.create_offer(None)
        .and_then(|offer| pc.set_local_description(now, offer))
        .map_err(|e| e.to_string())?;
    pc.local_description()
        .map(|d| tidy_sdp(&d.sdp))
        .ok_or_else(|| "no local description after offering".to_owned())
}

/// What the receiver or sender of one transceiver negotiated.
fn negotiated(params: &rtc::rtp_transceiver::rtp_sender::RTCRtpParameters) -> Negotiated {
    Negotiated {
        codecs: params
            .codecs
            .iter()
            .map(|c| Codec {
                payload_type: c.payload_type,
                mime_type: c.rtp_codec.mime_type.clone(),
                clock_rate: c.rtp_codec.clock_rate,
                fmtp: c.rtp_codec.sdp_fmtp_line.clone(),
            })
            .collect(),
        extensions: params.header_extensions.iter().map(|h| (h.uri.clone(), h.id)).collect(),
    }
}

/// The senders of a subscriber connection that its current description
/// sends on, with what each negotiated.
pub fn negotiated_senders(pc: &mut RTCPeerConnection) -> Vec<(RTCRtpSenderId, Negotiated)> {
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    transceivers
        .into_iter()
        .filter_map(|t| {
            if !pc.rtp_transceiver(t)?.current_direction().has_send() {
                return None;
            }
            let id = RTCRtpSenderId::from(t);
            let mut sender = pc.rtp_sender(id)?;
            Some((id, negotiated(&sender.get_parameters().rtp_parameters)))
        })
        .collect()
}

/// Adds a send-only sender for a published track (msid `<participant_id> <track_id>`)
/// with the leg's own SSRC.
pub fn add_sender(pc: &mut RTCPeerConnection, track: &TrackInfo, ssrc: u32) -> Result<RTCRtpSenderId, String> {
    let kind = match track.kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    };
    // No codec on the encoding, on purpose: `rtc` turns a codec there into the
    // transceiver's codec preferences, the m-line then offers only that codec, and
    // since 0.21.1 negotiates codecs once per connection (first m-line of a kind), a
    // later track with another codec could not be added to this connection at all.
    // Offering the full list keeps every codec the client accepts available.
    let local = MediaStreamTrack::new(
        track.participant_id.to_string(),
        track.track_id.to_string(),
        format!("{:?}", track.source).to_lowercase(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                // Video legs offer RTX (`a=ssrc-group:FID`): where the subscriber accepts
                // it, retransmissions go there (`retransmit`); where it does not, `rtc`
                // drops it from the sender when the answer is applied.
                rtx: (track.kind == TrackKind::Video).then(|| RTCRtpRtxParameters {
                    ssrc: super::retransmit::rtx_ssrc(ssrc),
                }),
                ..Default::default()
            },
            ..Default::default()
        }],
    );
    let sender = pc.add_track(local).map_err(|e| e.to_string())?;
    // `add_track` makes (or recycles) a sendrecv transceiver; the subscriber
    // connection only ever sends, and an unpublished track's m-line then goes
    // inactive rather than recvonly.
    if let Some(mut t) = pc.rtp_transceiver(sender.into()) {
        t.set_direction(RTCRtpTransceiverDirection::Sendonly);
    }
    Ok(sender)
}

/// The stream `ssrc` arriving on a publisher connection's receiver, as the media room
/// needs it: with its simulcast layer when it has a rid (`rtc` fires `OnOpen` once per
/// rid, each with its own SSRC), ranked among the rids the offer listed.
pub fn stream(
    pc: &mut RTCPeerConnection,
    conn: ConnId,
    receiver: RTCRtpReceiverId,
    ssrc: u32,
    replaces: bool,
) -> Option<Stream> {
    let mid = pc.rtp_transceiver(receiver.into())?.mid().clone()?;
    let mut rx = pc.rtp_receiver(receiver)?;
    let track = rx.track();
    let mime_type = track.codec(ssrc)?.mime_type.clone();
    let layer = track.rid(ssrc).filter(|rid| !rid.is_empty()).map(|rid| {
        let rids: Vec<&str> = track
            .codings()
            .iter()
            .map(|c| c.rtp_coding_parameters.rid.as_str())
            .filter(|r| !r.is_empty())
            .collect();
        let ranks = super::forward::simulcast_ranks(&rids);
        let rank = rids
            .iter()
            .position(|r| *r == rid.as_str())
            .and_then(|i| ranks.get(i).copied())
            .unwrap_or(0);
        SimulcastLayer {
            rid: rid.to_string(),
            rank,
        }
    });
    let negotiated = negotiated(&rx.get_parameters().rtp_parameters);
    Some(Stream {
        conn,
        receiver,
        mid,
        ssrc,
        mime_type,
        negotiated,
        replaces: replaces && layer.is_none(),
        layer,
    })
}

/// Streams already arriving on a publisher connection (their first packets came
/// before their mids were announced): every SSRC of each receiver (the layers of a
/// simulcast track), the first one opening the track.
pub fn arriving_streams(pc: &mut RTCPeerConnection, conn: ConnId) -> Vec<Stream> {
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    transceivers
        .into_iter()
        .filter_map(|t| {
            let receiver = pc.rtp_transceiver(t)?.receiver()?;
            let ssrcs: Vec<u32> = pc.rtp_receiver(receiver)?.track().ssrcs().collect();
            Some(
                ssrcs
                    .into_iter()
                    .filter_map(|ssrc| stream(pc, conn, receiver, ssrc, false))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// Sends a PLI for `ssrc` on a publisher connection's receiver.
pub fn send_pli(pc: &mut RTCPeerConnection, now: Instant, receiver: RTCRtpReceiverId, ssrc: u32) -> Result<(), String> {
    let mut rx = pc.rtp_receiver(receiver).ok_or("no such receiver")?;
    rx.write_rtcp(now, super::rtcp::pli(ssrc)).map_err(|e| e.to_string())
}

/// Tells a publisher connection the most it may send (REMB through `receiver`, naming `ssrc`).
pub fn send_remb(
    pc: &mut RTCPeerConnection,
    now: Instant,
    receiver: RTCRtpReceiverId,
    ssrc: u32,
    bps: u64,
) -> Result<(), String> {
    let mut rx = pc.rtp_receiver(receiver).ok_or("no such receiver")?;
    rx.write_rtcp(now, super::rtcp::remb(ssrc, bps))
        .map_err(|e| e.to_string())
}

/// Checks a trickled candidate's syntax without a connection. An empty string
/// (end of candidates) is valid.
pub fn validate_candidate(candidate: &str) -> Result<(), String> {
    let value = candidate.strip_prefix("candidate:").unwrap_or(candidate);
    if value.is_empty() {
        return Ok(());
    }
    rtc::ice::candidate::unmarshal_candidate(value)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_long_enough_and_differ() {
        let (u1, p1) = ice_credentials();
        let (u2, _) = ice_credentials();
        assert_eq!((u1.len(), p1.len()), (16, 32));
        assert_ne!(u1, u2);
    }

    #[test]
    fn candidate_validation() {
        assert!(validate_candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host").is_ok());
        assert!(validate_candidate("1 1 udp 2130706431 127.0.0.1 5000 typ host").is_ok());
        assert!(validate_candidate("").is_ok());
        assert!(validate_candidate("candidate:garbage").is_err());
        assert!(validate_candidate("candidate:1 1 udp x 127.0.0.1 5000 typ host").is_err());
    }

    fn stats() -> StatsPair {
        StatsPair {
            meeting: Default::default(),
            shard: Default::default(),
        }
    }

    /// What a client is sent: one candidate per transport (component 1 only, in the
    /// first m-section; UDP preferred over passive TCP), end-of-candidates, and a
    /// session-level msid-semantic from the first offer on.
    /// The first offer of a `role` connection with UDP at `127.0.0.1:7000` (and passive TCP
    /// at 7443 when `tcp`) sending a microphone and a camera.
    fn offer_of_two_tracks(role: PeerRole, tcp: bool) -> String {
        offer_with(role, tcp, None)
    }

    /// The same, presenting `certificate` if given.
    fn offer_with(role: PeerRole, tcp: bool, certificate: Option<&RTCCertificate>) -> String {
        let (u, p) = ice_credentials();
        let udp = "127.0.0.1:7000".parse().unwrap();
        let tcp = tcp.then(|| "127.0.0.1:7443".parse().unwrap());
        let mut pc = build(
            Instant::now(),
            role,
            &u,
            &p,
            udp,
            tcp,
            stats(),
            Default::default(),
            None,
            certificate,
        )
        .unwrap()
        .0;
        for (n, source) in [
            (1, gatehouse_signaling::protocol::TrackSource::Microphone),
            (2, gatehouse_signaling::protocol::TrackSource::Camera),
        ] {
            let track = TrackInfo {
                track_id: format!("t_{n}").into(),
                participant_id: "p_1".into(),
                kind: source.kind(),
                source,
                muted: false,
            };
            add_sender(&mut pc, &track, 1000 + n).unwrap();
        }
        make_offer(&mut pc, Instant::now()).unwrap()
    }

    /// The `a=fingerprint` lines of an SDP.
    fn fingerprints(sdp: &str) -> Vec<&str> {
        sdp.lines().filter(|l| l.starts_with("a=fingerprint:")).collect()
    }

    /// A shard's connections present its one certificate (`dtls_certificate`), in either
    /// role; connections built without one each get a certificate of their own.
    #[test]
    fn connections_given_the_shards_certificate_present_it_and_others_their_own() {
        let shard = dtls_certificate().expect("certificate");
        let other = dtls_certificate().expect("certificate");
        let a = offer_with(PeerRole::Subscriber, false, Some(&shard));
        let b = offer_with(PeerRole::Publisher, false, Some(&shard));
        let c = offer_with(PeerRole::Subscriber, false, Some(&other));
        let (fa, fb, fc) = (fingerprints(&a), fingerprints(&b), fingerprints(&c));
        assert!(!fa.is_empty() && fa[0].starts_with("a=fingerprint:sha-256 "), "{a}");
        assert_eq!(fa, fb, "one certificate for the shard");
        assert_ne!(fa, fc, "another shard's certificate is another");
        let (d, e) = (
            offer_of_two_tracks(PeerRole::Subscriber, false),
            offer_of_two_tracks(PeerRole::Subscriber, false),
        );
        assert_ne!(
            fingerprints(&d),
            fingerprints(&e),
            "without one, each connection makes its own"
        );
        assert_ne!(fingerprints(&d), fa);
    }

    #[test]
    fn offers_carry_one_component_and_an_msid_semantic() {
        let sdp = offer_of_two_tracks(PeerRole::Subscriber, true);
        let candidates: Vec<&str> = sdp.lines().filter(|l| l.starts_with("a=candidate:")).collect();
        assert_eq!(candidates.len(), 2, "{sdp}");
        assert!(candidates[0].contains(" 1 udp ") && candidates[0].contains("127.0.0.1 7000 typ host"));
        assert!(candidates[1].contains(" 1 tcp ") && candidates[1].contains("127.0.0.1 7443 typ host tcptype passive"));
        let priority = |line: &str| line.split_whitespace().nth(3).unwrap().parse::<u32>().unwrap();
        assert!(priority(candidates[0]) > priority(candidates[1]), "UDP first: {sdp}");
        let first_m = sdp.find("m=").unwrap();
        let second_m = first_m + 2 + sdp[first_m + 2..].find("m=").expect("two m-sections");
        let at = sdp.rfind("a=candidate:").unwrap();
        assert!(
            sdp.find("a=candidate:").unwrap() > first_m && at < second_m,
            "in the first m-section"
        );
        let semantic = sdp.find("a=msid-semantic: WMS").expect("msid-semantic");
        assert!(semantic < first_m, "at session level");
        assert_eq!(sdp.matches("a=msid-semantic").count(), 1);
        assert!(sdp.contains("a=end-of-candidates"));
    }

    /// The interceptor chain is per role (a subscriber's has no receive-side interceptors,
    /// a publisher's no sender reports), the negotiation is not: both roles offer the same
    /// feedback (`nack`, `nack pli`, `transport-cc`, which congestion control toward
    /// subscribers reads) and the same header extensions, the transport-wide sequence
    /// number among them.
    #[test]
    fn both_roles_negotiate_the_same_feedback_and_extensions() {
        let offer = |role: PeerRole| {
            let sdp = offer_of_two_tracks(role, false);
            let mut lines: Vec<String> = sdp
                .lines()
                .filter(|l| l.starts_with("a=rtcp-fb:") || l.starts_with("a=extmap:") || l.starts_with("m="))
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        let (publisher, subscriber) = (offer(PeerRole::Publisher), offer(PeerRole::Subscriber));
        assert_eq!(publisher, subscriber);
        for needed in ["transport-cc", " nack", "nack pli", rtc::sdp::extmap::TRANSPORT_CC_URI] {
            assert!(
                subscriber.iter().any(|l| l.contains(needed)),
                "{needed}: {subscriber:?}"
            );
        }
    }

    #[test]
    fn tidying_leaves_what_is_right_alone() {
        let tidy = "v=0\r\na=msid-semantic: WMS *\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:a b\r\na=rtcp-mux\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n";
        assert_eq!(tidy_sdp(tidy), tidy);
        let no_mux = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 2 udp 1 127.0.0.1 5 typ host\r\n";
        assert_eq!(tidy_sdp(no_mux), no_mux, "without rtcp-mux component 2 is real");
    }

    /// A Chromium 156 publisher offer (audio, and a camera as simulcast rids q/h/f), cut
    /// down to VP8, H.264 and RED/ULPFEC with their RTX, in the order Chromium writes
    /// them. `ufrag` and `pwd` change on an ICE restart; nothing else does.
    fn chromium_offer(ufrag: &str, pwd: &str, version: u32) -> String {
        let transport = format!(
            "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
             a=ice-options:trickle\r\na=fingerprint:sha-256 ED:1B:95:76:88:76:BA:AA:BF:19:C0:83:F1:8A:B0:B4:22:DF:D1:F1:E9:86:4E:23:EB:D6:BC:4A:1D:E4:41:5C\r\n\
             a=setup:actpass\r\n"
        );
        format!(
            "v=0\r\no=- 825777593074236849 {version} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             a=extmap-allow-mixed\r\na=msid-semantic: WMS d0f7\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n{transport}a=mid:0\r\n\
             a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
             a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\na=msid:d0f7 aaf3\r\n\
             a=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
             a=ssrc:878396849 cname:rX3NooVbV2Rs2Ede\r\na=ssrc:878396849 msid:d0f7 aaf3\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 118 119 120\r\n{transport}a=mid:1\r\n\
             a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
             a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
             a=sendonly\r\na=msid:d0f7 0fe6\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
             a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
             a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
             a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
             a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
             a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
             a=rtpmap:118 red/90000\r\na=rtpmap:119 rtx/90000\r\na=fmtp:119 apt=118\r\n\
             a=rtpmap:120 ulpfec/90000\r\n\
             a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n"
        )
    }

    /// The video m-section of an SDP (from its `m=video` line to the end or the next `m=`).
    fn video_section(sdp: &str) -> &str {
        let at = sdp.find("m=video").expect("a video section");
        let rest = &sdp[at..];
        rest[2..].find("\nm=").map_or(rest, |end| &rest[..end + 3])
    }

    /// A first offer is applied as it is (its RTX too: `layer_rtx` receives it).
    #[test]
    fn a_first_simulcast_offer_is_applied_as_it_is() {
        let offer = chromium_offer("Rhgm", "NqGfKMmRHEVnCuaco7tmdR0G", 2);
        assert!(matches!(publisher_offer(&offer, &[]), std::borrow::Cow::Borrowed(_)));
    }

    /// On a re-offer, a section whose mid already has a simulcast receiver with the same
    /// rids loses its track description (`a=msid`, `a=ssrc*`); other rids or mids keep it.
    #[test]
    fn a_simulcast_reoffer_of_a_known_receiver_describes_no_track() {
        let offer = chromium_offer("Xg6j", "fhVmlY0R0BIaRWrIjhsfw4H1", 3).replace(
            "a=rid:q send",
            "a=ssrc-group:FID 1 2\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\na=rid:q send",
        );
        let known = |mid: &str, rids: &[&str]| vec![(mid.to_owned(), rids.iter().map(|r| r.to_string()).collect())];
        let read = publisher_offer(&offer, &known("1", &["f", "q", "h"]));
        let video = video_section(&read);
        for gone in ["a=msid:", "a=ssrc:", "a=ssrc-group:"] {
            assert!(!video.contains(gone), "{gone}: {video}");
        }
        assert!(video.contains("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96"), "{video}");
        assert!(
            read.contains("a=msid:d0f7 aaf3") && read.contains("a=ssrc:878396849"),
            "audio untouched"
        );
        for other in [known("1", &["q", "h"]), known("0", &["q", "h", "f"])] {
            let read = publisher_offer(&offer, &other);
            assert!(video_section(&read).contains("a=msid:d0f7 0fe6"), "{other:?}");
        }
    }

    /// The fault behind "an ICE restart of a simulcast publisher freezes its camera":
    /// applying a re-offer made `rtc` 0.21.1 give the simulcast receiver a fresh track
    /// whose layers have no SSRC (they are learned again only from the `rid` header
    /// extension, which Chromium has stopped sending), so every layer's packets were
    /// dropped. Through `answer_offer` the receiver keeps its track, and with it the
    /// layers it learned; the answer still receives q, h and f, with RTX and the
    /// `repaired-rtp-stream-id` extension that names a layer's RTX stream, and what
    /// the layers' RTX repair needs reaches the connection's handle.
    #[test]
    fn an_ice_restart_reoffer_keeps_the_simulcast_receivers_track() {
        let (u, p) = ice_credentials();
        let layer_rtx = SharedSettings::default();
        let mut pc = build(
            Instant::now(),
            PeerRole::Publisher,
            &u,
            &p,
            "127.0.0.1:7000".parse().unwrap(),
            None,
            stats(),
            layer_rtx.clone(),
            None,
            None,
        )
        .unwrap()
        .0;
        let video_track = |pc: &mut RTCPeerConnection| {
            let transceivers: Vec<_> = pc.get_transceivers().collect();
            transceivers
                .into_iter()
                .find_map(|t| {
                    let transceiver = pc.rtp_transceiver(t)?;
                    (transceiver.mid().as_deref() == Some("1")).then_some(())?;
                    let receiver = transceiver.receiver()?;
                    let rx = pc.rtp_receiver(receiver)?;
                    let track = rx.track();
                    let rids: Vec<String> = track
                        .codings()
                        .iter()
                        .map(|c| c.rtp_coding_parameters.rid.to_string())
                        .collect();
                    Some((track.label().clone(), rids))
                })
                .expect("a video receiver")
        };
        let offer = |ufrag, pwd, version| {
            RTCSessionDescription::offer(chromium_offer(ufrag, pwd, version)).expect("a valid offer")
        };
        let first = answer_offer(
            &mut pc,
            Instant::now(),
            offer("Rhgm", "NqGfKMmRHEVnCuaco7tmdR0G", 2),
            &layer_rtx,
        )
        .unwrap();
        let (label, rids) = video_track(&mut pc);
        assert_eq!(rids, ["q", "h", "f"]);
        let again = answer_offer(
            &mut pc,
            Instant::now(),
            offer("Xg6j", "fhVmlY0R0BIaRWrIjhsfw4H1", 3),
            &layer_rtx,
        )
        .unwrap();
        assert_eq!(
            video_track(&mut pc),
            (label, rids),
            "the same receiver track after the re-offer"
        );
        for answer in [&first, &again] {
            let video = video_section(answer);
            assert!(video.contains("a=simulcast:recv q;h;f"), "{video}");
            assert!(video.contains("a=rtpmap:97 rtx/90000"), "{video}");
            assert!(
                video.contains("a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
                "{video}"
            );
        }
        let mut settings = layer_rtx.get();
        settings.apt.sort_unstable();
        assert_eq!(
            settings,
            super::super::layer_rtx::Settings {
                mid: Some(4),
                rid: Some(10),
                rrid: Some(11),
                // RED (118, its RTX 119) is not among `rtc`'s codecs.
                apt: vec![(97, 96), (103, 102)],
            }
        );
    }
}
