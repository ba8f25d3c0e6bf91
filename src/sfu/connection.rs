//! One server-side peer connection: how it is built (ICE-lite, our ufrag, our
//! host candidate, default codecs and interceptors plus the RTCP tap) and the
//! little state the shard keeps beside it.
//!
//! The server is ICE-lite: it never sends connectivity checks, it only answers
//! them. That is what makes one shared socket simple: the client's first binding
//! request teaches the demultiplexer its address before the server ever needs to
//! send anything to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatehouse_signaling::protocol::PeerRole;
use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};

use super::rtcp::{RTCP_TAP_SLOT, RtcpTap, TapSink};
use super::stats::StatsPair;

/// Shard-local connection handle (never reused within a shard).
pub type ConnId = u64;

/// Shard-local room handle.
pub type RoomId = u64;

/// A peer connection and what the shard needs to route to and from it.
pub struct Conn {
    pub pc: RTCPeerConnection,
    /// The room it belongs to, so a datagram finds its meeting without a string hash.
    pub room: RoomId,
    /// Its owner (participant id), for events that concern the participant.
    pub participant: String,
    pub role: PeerRole,
    /// Our ICE ufrag: the demultiplexer's key for it.
    pub ufrag: String,
    /// The deadline currently armed in the shard's timer heap.
    pub deadline: Option<Instant>,
    /// DTLS is up and SRTP keyed: writing RTP before this only produces warnings.
    pub connected: bool,
    /// Whether a remote description has been applied (candidates wait until then).
    pub has_remote: bool,
    /// The last connection state reported (for the debug snapshot).
    pub state: RTCPeerConnectionState,
    /// Where the client last nominated (USE-CANDIDATE) from: its chosen path.
    /// DTLS and SRTP go there, whatever pair `rtc`'s agent selected (see [`build`]).
    pub nominated: Option<SocketAddr>,
    /// A nomination seen but not yet proven: it becomes `nominated` when the
    /// connection answers that address with a binding success (its request passed
    /// MESSAGE-INTEGRITY). Without this, anyone who saw a ufrag on the wire could
    /// redirect the media with one spoofed request.
    pub pending_nomination: Option<SocketAddr>,
    /// `rtc` panicked inside this connection: it is no longer fed or polled, and
    /// is only closed when its participant leaves.
    pub broken: bool,
    /// When a datagram last arrived from the client: our consent freshness.
    pub last_seen: Instant,
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

/// Builds a server connection advertising one host candidate at `advertised`.
pub fn build(
    now: Instant,
    ufrag: &str,
    pwd: &str,
    advertised: SocketAddr,
    stats: StatsPair,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    // Extensions worth carrying from publisher to subscribers (remapped per leg by
    // `forward::ExtMap`): audio levels (active speaker, `getSynchronizationSources`)
    // and camera rotation from phones.
    for (uri, kind) in [
        (rtc::sdp::extmap::AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (rtc::sdp::extmap::VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
    ] {
        media_engine.register_header_extension(RTCRtpHeaderExtensionCapability { uri: uri.to_owned() }, kind, None)?;
    }
    let registry = registry.with(Slot::from(RTCP_TAP_SLOT), RtcpTap::new(TapSink::Stats(stats)));
    // ICE-lite in `rtc` 0.21.1 keeps the first nominated pair for good and ignores
    // later nominations, while Chrome moves to another pair (and sends consent
    // checks only there) when it has several candidates: the agent then reports
    // Disconnected after 5 s and Failed after 30 s, and Failed drops the selected
    // pair. So its timers are off (zero disables them) and the shard does both
    // jobs itself: it sends media to the latest nominated address and judges
    // liveness by what arrives (`Conn::last_seen`).
    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_timeouts(Some(Duration::ZERO), Some(Duration::ZERO), None)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: advertised.ip().to_string(),
            port: advertised.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    // End of gathering: we have exactly one candidate.
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    Ok(pc)
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
}
