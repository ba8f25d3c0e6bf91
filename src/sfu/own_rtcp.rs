//! Subscribers' RTCP opened by the shard itself, past `rtc`'s read pipeline (issue 13; see
//! docs/ARCHITECTURE.md "A forwarded packet's path").
//!
//! A subscriber connection receives no media; what its client sends is RTCP about what it
//! receives: receiver reports once a second, NACKs, keyframe requests, and (browsers, ten a
//! second) transport-wide congestion control feedback. Every one of those went through `rtc`'s
//! read pipeline (ICE, the DTLS/SRTP demultiplexer, SRTCP, the interceptor chain) and a drive of
//! the connection to reach the RTCP tap and the room; with browser-like clients that was a sixth
//! of the shard's time in small rooms (BENCHMARKS §3). Nothing in a subscriber connection's
//! chain but the tap reads RTCP (its sender-report interceptor only writes), so once the
//! connection's keys are known (`srtp_keys`) the shard opens its SRTCP with a context of its own
//! (`rtc-srtp`'s, from the remote key, with `rtc`'s replay window), counts what the tap counts
//! (`rtcp::tap`) and hands the packets to the room, as `rtc`'s delivery would have.

use rtc::rtcp;
use rtc::srtp::context::Context;

use super::rtcp::tap;
use super::srtp_keys::SrtpKeys;
use super::stats::StatsPair;

/// A compound RTCP packet, parsed.
pub type Compound = Vec<Box<dyn rtcp::Packet>>;

/// A subscriber connection's own reading of RTCP.
pub struct OwnRtcp {
    context: Context,
    stats: StatsPair,
}

impl OwnRtcp {
    /// The reading side of a connection with these keys, counting into its tap's `stats`
    /// (`None` if the built-in provider refuses the keys, which it does not for any profile
    /// `rtc` negotiates).
    pub fn new(keys: &SrtpKeys, stats: StatsPair) -> Option<Self> {
        Some(Self {
            context: keys.remote_context().ok()?,
            stats,
        })
    }

    /// Opens an SRTCP datagram (authenticates, refuses a replay, decrypts) and parses its
    /// compound packet: the packets, if the room wants them (see [`tap`]).
    pub fn open(&mut self, datagram: &[u8]) -> Result<Option<Compound>, Box<dyn std::error::Error>> {
        let plain = self.context.decrypt_rtcp(datagram)?;
        let packets = rtcp::packet::unmarshal(&mut plain.freeze())?;
        Ok(tap(&self.stats, &packets).then_some(packets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::srtp_keys::testing::{keys, peer_context};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    use rtc::srtp::protection_profile::ProtectionProfile;
    use std::sync::Arc;

    fn compound(packets: &[Box<dyn rtcp::Packet>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            out.extend_from_slice(&p.marshal().expect("marshal"));
        }
        out
    }

    #[test]
    fn a_subscribers_feedback_is_opened_counted_and_handed_on_and_a_replay_or_forgery_refused() {
        for profile in [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::Aes128CmHmacSha1_80] {
            let keys = keys(profile);
            let stats = StatsPair {
                meeting: Arc::default(),
                shard: Arc::default(),
            };
            let mut own = OwnRtcp::new(&keys, stats.clone()).expect("keys");
            let mut client = peer_context(&keys);
            let feedback: Vec<Box<dyn rtcp::Packet>> = vec![
                Box::new(ReceiverReport {
                    ssrc: 7,
                    ..Default::default()
                }),
                Box::new(TransportLayerNack {
                    sender_ssrc: 7,
                    media_ssrc: 9,
                    nacks: vec![NackPair {
                        packet_id: 100,
                        lost_packets: 0,
                    }],
                }),
                Box::new(PictureLossIndication {
                    sender_ssrc: 7,
                    media_ssrc: 9,
                }),
            ];
            let datagram = client.encrypt_rtcp(&compound(&feedback)).expect("protect");
            let opened = own.open(&datagram).expect("opened").expect("for the room");
            assert_eq!(opened.len(), 3, "{profile:?}");
            assert!(crate::sfu::rtcp::as_nack(opened[1].as_ref()).is_some());
            let counted = stats.shard.snapshot();
            assert_eq!(
                (counted.nacks, counted.keyframe_requests_received),
                (1, 1),
                "{profile:?}"
            );
            assert!(own.open(&datagram).is_err(), "{profile:?}: a replay is refused");
            let mut forged = client.encrypt_rtcp(&compound(&feedback)).expect("protect").to_vec();
            forged[10] ^= 1;
            assert!(own.open(&forged).is_err(), "{profile:?}: a forgery is refused");
            // A report with nothing in it is opened and not handed on.
            let empty: Vec<Box<dyn rtcp::Packet>> = vec![Box::new(ReceiverReport {
                ssrc: 7,
                ..Default::default()
            })];
            let datagram = client.encrypt_rtcp(&compound(&empty)).expect("protect");
            assert!(own.open(&datagram).expect("opened").is_none(), "{profile:?}");
        }
    }
}
