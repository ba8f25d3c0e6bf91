//! Transport-wide congestion control feedback to publishers, sent only when there is
//! something to report (issue 13, the idle cost).
//!
//! `rtc` 0.21's `TwccReceiverInterceptor` records the arrival of every packet carrying
//! the transport-wide sequence number and writes feedback every 100 ms; but once its first
//! such packet has arrived it re-arms that timer for good, so a publisher connection that
//! receives nothing (a muted camera, a silent client, an idle participant) still wakes the
//! shard ten times a second to build empty feedback. Across a shard of quiet rooms those
//! firings were most of the timers' share of an idle participant's cost (BENCHMARKS §3,
//! "Timers on a grid per connection": 12 timer firings a second per participant).
//!
//! [`QuietTwccReceiver`] wraps it and hides its deadline while no packet has arrived since
//! the last feedback: the first packet after a quiet spell arms it again (the feedback then
//! goes out at once, since the interceptor's old deadline has passed, so a publisher waking
//! up is told about its packets without waiting), and a connection receiving media keeps
//! the 100 ms cadence unchanged. Everything else passes straight through.

use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket, TwccReceiverBuilder, TwccReceiverInterceptor};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// What `rtc`'s `configure_twcc_receiver_only` negotiates: `transport-cc` feedback and the
/// transport-wide sequence number extension for audio and video. The receiver itself
/// ([`QuietTwccReceiver`]) is put in a publisher connection's chain by `own_inbound`'s
/// `ReceiveSide`; a connection that receives no media (a subscriber's: the feedback flows
/// toward us, and congestion control reads it from the RTCP tap) has none.
pub fn negotiate(media_engine: &mut MediaEngine) -> Result<(), Error> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(())
}

/// An interceptor whose timer only runs while packets arrive: its deadline is hidden
/// until an RTP packet has arrived since it last fired, and firing it re-arms the wait.
/// Everything else passes straight through. `rtc` 0.21's TWCC receiver and receiver-report
/// interceptors re-arm their timers for good once a first packet has arrived, so a
/// connection whose media stopped woke its shard for nothing (see the module
/// documentation and `quiet_reports`).
pub struct Quiet<I> {
    inner: I,
    /// An RTP packet arrived since the timer last fired.
    heard: bool,
}

impl<I> Quiet<I> {
    pub fn wrap(inner: I) -> Self {
        Self { inner, heard: false }
    }
}

/// `rtc`'s TWCC receiver, quiet while nothing arrives. See the module documentation.
pub type QuietTwccReceiver = Quiet<TwccReceiverInterceptor>;

impl QuietTwccReceiver {
    pub fn new() -> Self {
        Self::wrap(TwccReceiverBuilder::new().build())
    }
}

impl Default for QuietTwccReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for Quiet<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtp(_)) {
            self.heard = true;
        }
        self.inner.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inner.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inner.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.inner.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        if !self.heard || self.inner.poll_timeout().is_none_or(|due| now < due) {
            return Ok(());
        }
        self.heard = false;
        self.inner.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        if self.heard { self.inner.poll_timeout() } else { None }
    }
}

impl<I: Interceptor> Interceptor for Quiet<I> {
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::AttributedPacket;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
    use rtc::shared::TransportContext;
    use rtc::shared::marshal::Marshal;
    use std::time::Duration;

    const TWCC_ID: u8 = 3;
    const SSRC: u32 = 0x1234;

    fn bound() -> QuietTwccReceiver {
        let mut twcc = QuietTwccReceiver::new();
        twcc.bind_remote_stream(&StreamInfo {
            ssrc: SSRC,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                id: u16::from(TWCC_ID),
            }],
            ..Default::default()
        });
        twcc
    }

    fn packet(transport_seq: u16, now: Instant) -> TaggedPacket {
        let header = Header {
            version: 2,
            payload_type: 96,
            sequence_number: transport_seq,
            ssrc: SSRC,
            extension: true,
            extension_profile: EXTENSION_PROFILE_ONE_BYTE,
            extensions: vec![Extension {
                id: TWCC_ID,
                payload: Bytes::copy_from_slice(&transport_seq.to_be_bytes()),
            }],
            ..Default::default()
        };
        let rtp = rtc::rtp::Packet {
            header,
            payload: Bytes::from_static(&[0u8; 20]),
        };
        assert!(rtp.marshal().is_ok());
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        }
    }

    /// The TWCC feedback packets written, and how many packets they acknowledge.
    fn feedback(twcc: &mut QuietTwccReceiver) -> Vec<u16> {
        let mut acked = Vec::new();
        while let Some(out) = twcc.poll_write() {
            if let Packet::Rtcp(packets) = &out.message.packet {
                for p in packets {
                    if let Some(cc) = p.as_any().downcast_ref::<TransportLayerCc>() {
                        acked.push(cc.packet_status_count);
                    }
                }
            }
        }
        acked
    }

    /// Fires the timer when it is due, as the shard does, up to `until`.
    fn run_until(twcc: &mut QuietTwccReceiver, until: Instant) -> usize {
        let mut fired = 0;
        while let Some(due) = twcc.poll_timeout() {
            if due > until {
                break;
            }
            twcc.handle_timeout(due).unwrap();
            fired += 1;
        }
        fired
    }

    #[test]
    fn a_connection_that_never_received_media_has_no_timer() {
        let mut twcc = bound();
        assert_eq!(twcc.poll_timeout(), None);
    }

    #[test]
    fn media_arriving_is_acknowledged_every_100_ms_and_silence_stops_the_timer() {
        let t0 = Instant::now();
        let mut twcc = bound();
        // 50 packets a second for one second: feedback every 100 ms, as `rtc`'s own.
        let mut fired = 0;
        let mut acked = Vec::new();
        for i in 0..50u16 {
            let at = t0 + Duration::from_millis(20) * u32::from(i);
            fired += run_until(&mut twcc, at);
            twcc.handle_read(packet(i, at)).unwrap();
            while twcc.poll_read().is_some() {}
            acked.extend(feedback(&mut twcc));
        }
        fired += run_until(&mut twcc, t0 + Duration::from_millis(1100));
        acked.extend(feedback(&mut twcc));
        assert!(
            (9..=11).contains(&fired),
            "about ten feedback turns in a second: {fired}"
        );
        assert_eq!(
            acked.iter().map(|n| u32::from(*n)).sum::<u32>(),
            50,
            "every packet acknowledged once: {acked:?}"
        );
        // Then nothing arrives: no timer at all, however long.
        assert_eq!(twcc.poll_timeout(), None);
        assert_eq!(run_until(&mut twcc, t0 + Duration::from_secs(60)), 0);
    }

    #[test]
    fn a_packet_after_a_quiet_spell_is_acknowledged_at_once() {
        let t0 = Instant::now();
        let mut twcc = bound();
        twcc.handle_read(packet(0, t0)).unwrap();
        run_until(&mut twcc, t0 + Duration::from_millis(200));
        assert_eq!(feedback(&mut twcc), [1]);
        assert_eq!(twcc.poll_timeout(), None);
        // Ten seconds later one packet: its feedback is due at once (the old deadline passed).
        let later = t0 + Duration::from_secs(10);
        twcc.handle_read(packet(1, later)).unwrap();
        let due = twcc.poll_timeout().expect("armed by the packet");
        assert!(due <= later, "due at once");
        assert_eq!(run_until(&mut twcc, later), 1);
        assert_eq!(feedback(&mut twcc), [1]);
        assert_eq!(twcc.poll_timeout(), None);
    }
}
