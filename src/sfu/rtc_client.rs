//! An `rtc` client connection driven in-process, as the whole-path bench ([`super::benching`]),
//! the fuzz harness ([`super::fuzzing`]) and the lean load tester (`loadtest::lean`) connect
//! to a shard: Opus and VP8 at the payload types browsers use, the header extensions the
//! caller asks for, and one host candidate at the address its datagrams go from. One
//! builder, so the three drive the same client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::time::Instant;

use rtc::crypto::RTCCryptoProvider;
use rtc::interceptor::{ReceiverReportBuilder, Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

use super::rtcp::{RTCP_TAP_SLOT, RtcpTap};
use super::stats::StatsPair;

/// The audio payload type (Opus), as browsers offer it.
pub const OPUS_PT: u8 = 111;
/// The video payload type (VP8), as browsers offer it.
pub const VP8_PT: u8 = 96;

/// The client's codec of `kind`: Opus (48 kHz stereo, in-band FEC) or VP8.
pub fn codec(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    let (mime_type, clock_rate, channels, fmtp, payload_type) = match kind {
        RtpCodecKind::Audio => (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", OPUS_PT),
        _ => (MIME_TYPE_VP8, 90_000, 0, "", VP8_PT),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime_type.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

/// A datagram that arrived at `local` from `from` over UDP, as a connection's `handle_read`
/// takes it.
pub fn datagram(now: Instant, local: SocketAddr, from: SocketAddr, data: BytesMut) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: data,
    }
}

/// A track of `kind` sending on `ssrc`, to add to a client before its offer.
pub fn track(stream: &str, id: &str, kind: RtpCodecKind, ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream.to_owned(),
        id.to_owned(),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(kind).rtp_codec,
            ..Default::default()
        }],
    )
}

/// A client connection with Opus and VP8, the header `extensions` given (URI and kind), and
/// a host candidate at `addr`, where the caller sends its datagrams from.
pub fn client(
    addr: SocketAddr,
    extensions: &[(&str, RtpCodecKind)],
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    build(addr, extensions, false, None)
}

/// [`client`] whose cryptography comes from `provider` (see `srtp_keys`).
pub fn client_with_crypto(
    addr: SocketAddr,
    extensions: &[(&str, RtpCodecKind)],
    provider: Arc<dyn RTCCryptoProvider>,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    build(addr, extensions, false, Some(provider))
}

/// [`client`] that behaves toward the gateway as a browser does (the lean load tester's
/// connections): VP8 offers `nack pli`, and the gateway's PLIs and FIRs reach the application
/// (`poll_read` yields them as `RtcpPacket`), as a publishing browser answers them with a
/// keyframe; it sends receiver reports for the streams it receives, once a second (without
/// them the gateway's connection quality judges a subscriber `lost`); it negotiates
/// transport-wide congestion control both ways, stamping the transport-wide sequence number
/// on every packet it sends and acknowledging what it receives in TWCC feedback every 100 ms,
/// and the audio level extension (`AUDIO_LEVEL_URI`; the caller stamps it, see
/// [`extension_id`]).
pub fn browser_like(addr: SocketAddr) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    build(
        addr,
        &[(rtc::sdp::extmap::AUDIO_LEVEL_URI, RtpCodecKind::Audio)],
        true,
        None,
    )
}

/// The id a sender negotiated for the header extension `uri`, if it did.
pub fn extension_id(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId, uri: &str) -> Option<u8> {
    let mut sender = pc.rtp_sender(sender)?;
    let parameters = sender.get_parameters();
    parameters
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == uri)
        .and_then(|e| u8::try_from(e.id).ok())
}

fn build(
    addr: SocketAddr,
    extensions: &[(&str, RtpCodecKind)],
    browser_like: bool,
    provider: Option<Arc<dyn RTCCryptoProvider>>,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let mut media_engine = MediaEngine::default();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let mut codec = codec(kind);
        if browser_like && kind == RtpCodecKind::Video {
            codec.rtp_codec.rtcp_feedback.push(RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: "pli".to_owned(),
            });
        }
        media_engine.register_codec(codec, kind)?;
    }
    for (uri, kind) in extensions {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: (*uri).to_owned() },
            *kind,
            None,
        )?;
    }
    let mut builder = RTCPeerConnectionBuilder::new().with_configuration(RTCConfigurationBuilder::new().build());
    if let Some(provider) = provider {
        builder = builder.with_setting_engine(SettingEngineBuilder::new().with_crypto_provider(provider).build());
    }
    if browser_like {
        // The gateway's own RTCP tap, counting into counters nobody reads.
        let stats = StatsPair {
            meeting: Default::default(),
            shard: Default::default(),
        };
        let registry = Registry::new()
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(Slot::from(RTCP_TAP_SLOT), RtcpTap::new(stats));
        builder = builder.with_interceptor_registry(configure_twcc(registry, &mut media_engine)?);
    }
    let builder = builder.with_media_engine(media_engine);
    let mut pc = builder.build(Instant::now())?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    Ok(pc)
}
