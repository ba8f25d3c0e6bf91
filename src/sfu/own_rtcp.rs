//! Subscribers' and publishers' RTCP opened by the shard itself, past `rtc`'s read pipeline
//! (issue 13; see docs/ARCHITECTURE.md "A forwarded packet's path").
//!
//! A subscriber connection receives no media; what its client sends is RTCP about what it
//! receives: receiver reports once a second, NACKs, keyframe requests, and (browsers, ten a
//! second) transport-wide congestion control feedback. Every one of those went through `rtc`'s
//! read pipeline (ICE, the DTLS/SRTP demultiplexer, SRTCP, the interceptor chain) and a drive of
//! the connection to reach the RTCP tap and the room; with browser-like clients that was a sixth
//! of the shard's time in small rooms (BENCHMARKS §3). Nothing in a subscriber connection's
//! chain but the tap reads RTCP (its sender-report interceptor only writes), so once the
//! connection's keys are known (`srtp_keys`) the shard opens its SRTCP with a context of its own
//! (`rtc-srtp`'s, from the remote key, with `rtc`'s replay window; for the GCM profiles
//! `srtp_gcm::RtcpOpener`, in place into a buffer the connection keeps), reads the compound where
//! it lies (`rtcp_view`; `rtc-rtcp` where that declines), counts what the tap counts
//! (`rtcp::tap`) and hands the packets to the room, as `rtc`'s delivery would have.
//!
//! A publisher connection's client sends sender reports (each stream's, once a second or so)
//! and source descriptions. In its chain only the receipts read them (a report's NTP time and
//! arrival make the last-SR fields of the receiver reports the shard sends back), so its RTCP
//! is opened here too, and each sender report handed to the receipts
//! (`own_inbound::ReceiveSide::sender_report`): at 30 calls, 120 reads of `rtc`'s pipeline a
//! second, each with a drive and `rtc-rtcp`'s boxes, were left.
//!
//! The other way, a publisher connection's receipts (TWCC feedback and receiver reports,
//! `receipts`, ten a second) are encrypted by the shard with [`RtcpSealer`], an SRTCP
//! context of its own from the local key, and sent without a drive of `rtc` (which swept its
//! whole pipeline five times or so for each). They come from an SSRC nothing else on the
//! connection sends from (`Receipts::send_own`), so no SRTCP index is counted by two contexts.

use bytes::BytesMut;
use rtc::rtcp;
use rtc::srtp::context::Context;

use super::rtcp::tap;
use super::rtcp_view::{Feedback, Tally, View};
use super::srtp_gcm::{self, RtcpOpener};
use super::srtp_keys::SrtpKeys;
use super::stats::StatsPair;

/// A compound RTCP packet, parsed.
pub type Compound = Vec<Box<dyn rtcp::Packet>>;

/// A connection's own reading of RTCP.
pub struct OwnRtcp {
    /// SRTCP opened by `rtc-srtp` (the AES-CM profiles)...
    context: Context,
    /// ... or in place, into [`spare`](Self::spare) (the GCM profiles, `srtp_gcm`).
    gcm: Option<RtcpOpener>,
    /// The buffer the last compound was opened into, back from the room
    /// ([`give_back`](Self::give_back)).
    spare: BytesMut,
    stats: StatsPair,
}

impl OwnRtcp {
    /// The reading side of a connection with these keys, counting into its tap's `stats`
    /// (`None` if the built-in provider refuses the keys, which it does not for any profile
    /// `rtc` negotiates).
    pub fn new(keys: &SrtpKeys, stats: StatsPair) -> Option<Self> {
        Some(Self {
            context: keys.remote_context().ok()?,
            gcm: srtp_gcm::handles(keys.profile)
                .then(|| RtcpOpener::new(keys.profile, &keys.remote))
                .flatten(),
            spare: BytesMut::new(),
            stats,
        })
    }

    /// Takes back the buffer of a compound the room has read, for the next one.
    pub fn give_back(&mut self, opened: Opened) {
        if let Opened::Plain(plain) = opened {
            self.spare = plain;
        }
    }

    /// Opens an SRTCP datagram (authenticates, refuses a replay, decrypts) and reads its
    /// compound packet (in place, `rtcp_view`, or with `rtc-rtcp` where that declines),
    /// counting what [`tap`] counts and telling `senders` each sender report's SSRC and NTP
    /// time (a publisher's, for its receipts): what was opened, if the room wants it.
    pub fn open(
        &mut self,
        datagram: &[u8],
        mut senders: impl FnMut(u32, u64),
    ) -> Result<Option<Opened>, Box<dyn std::error::Error>> {
        let plain = match self.gcm.as_mut() {
            Some(gcm) => {
                let mut plain = std::mem::take(&mut self.spare);
                if let Err(e) = gcm.open_into(datagram, &mut plain) {
                    self.spare = plain;
                    return Err(e.into());
                }
                plain
            }
            None => self.context.decrypt_rtcp(datagram)?,
        };
        if let Some(view) = View::read(&plain) {
            for (ssrc, ntp_time) in view.sender_reports() {
                senders(ssrc, ntp_time);
            }
            let mut tally = Tally::default();
            view.visit(&mut tally);
            if tally.nacks > 0 {
                self.stats.add(|c| &c.nacks, tally.nacks);
            }
            if tally.keyframe_requests > 0 {
                self.stats
                    .add(|c| &c.keyframe_requests_received, tally.keyframe_requests);
            }
            if !tally.wanted() {
                self.spare = plain;
                return Ok(None);
            }
            return Ok(Some(Opened::Plain(plain)));
        }
        let packets = rtcp::packet::unmarshal(&mut plain.freeze())?;
        for (ssrc, ntp_time) in super::rtcp_view::rtc_sender_reports(&packets) {
            senders(ssrc, ntp_time);
        }
        Ok(tap(&self.stats, &packets).then_some(Opened::Parsed(packets)))
    }
}

/// A compound RTCP packet [`OwnRtcp::open`] opened.
pub enum Opened {
    /// Decrypted, for [`View::read`] (which read it once).
    Plain(BytesMut),
    /// Parsed by `rtc-rtcp`, where [`View`] declined.
    Parsed(Compound),
}

impl Opened {
    /// What the room reads of it.
    pub fn feedback(&self) -> Feedback<'_> {
        match self {
            // `open` read it: `read` reads it again.
            Opened::Plain(plain) => View::read(plain).map_or(Feedback::Rtc(&[]), Feedback::Own),
            Opened::Parsed(packets) => Feedback::Rtc(packets),
        }
    }
}

/// A publisher connection's receipts, encrypted by the shard itself (see the module
/// documentation).
pub struct RtcpSealer {
    /// SRTCP sealed by `rtc-srtp` (the AES-CM profiles)...
    context: Context,
    /// ... or in place (the GCM profiles, `srtp_gcm`), byte for byte as `rtc-srtp` would.
    gcm: Option<srtp_gcm::RtcpSealer>,
}

impl RtcpSealer {
    /// The sending side of a connection with these keys (`None` if the built-in provider
    /// refuses them, which it does not for any profile `rtc` negotiates).
    pub fn new(keys: &SrtpKeys) -> Option<Self> {
        Some(Self {
            context: keys.local_context().ok()?,
            gcm: srtp_gcm::handles(keys.profile)
                .then(|| srtp_gcm::RtcpSealer::new(keys.profile, &keys.local))
                .flatten(),
        })
    }

    /// A compound RTCP packet as an SRTCP datagram, ready for the socket.
    pub fn seal(&mut self, packets: &[Box<dyn rtcp::Packet>]) -> Result<BytesMut, Box<dyn std::error::Error>> {
        let plain = rtcp::packet::marshal(packets)?;
        self.seal_in(&plain, &mut BytesMut::new())
    }

    /// A compound RTCP packet on the wire as an SRTCP datagram, sealed in space cut from
    /// `arena` for the GCM profiles (`srtp_gcm::RtcpSealer::seal_in`).
    pub fn seal_in(&mut self, plain: &[u8], arena: &mut BytesMut) -> Result<BytesMut, Box<dyn std::error::Error>> {
        match self.gcm.as_mut() {
            Some(gcm) => Ok(gcm.seal_in(plain, arena)?),
            None => Ok(self.context.encrypt_rtcp(plain)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::rtcp_view::{Fact, Facts};
    use crate::sfu::srtp_keys::testing::{keys, peer_context};
    use rtc::rtcp::goodbye::Goodbye;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::sender_report::SenderReport;
    use rtc::rtcp::source_description::{SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem};
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
            let opened = own.open(&datagram, |_, _| {}).expect("opened").expect("for the room");
            let Opened::Plain(buffer) = &opened else {
                panic!("{profile:?}: not read in place");
            };
            let at = buffer.as_ptr();
            let mut facts = Facts::default();
            opened.feedback().visit(&mut facts);
            own.give_back(opened);
            // The next compound is opened into the same buffer (GCM: in place, `srtp_gcm`).
            let again = client.encrypt_rtcp(&compound(&feedback)).expect("protect");
            let opened = own.open(&again, |_, _| {}).expect("opened").expect("for the room");
            let Opened::Plain(buffer) = &opened else {
                panic!("{profile:?}: not read in place");
            };
            if matches!(profile, ProtectionProfile::AeadAes128Gcm) {
                assert_eq!(buffer.as_ptr(), at, "the buffer is reused");
            }
            let mut facts_again = Facts::default();
            opened.feedback().visit(&mut facts_again);
            assert_eq!(facts_again, facts);
            assert_eq!(
                facts.0,
                vec![
                    Fact::Reports(vec![]),
                    Fact::Nack(9, vec![100]),
                    Fact::KeyframeRequest(vec![9])
                ],
                "{profile:?}"
            );
            let counted = stats.shard.snapshot();
            assert_eq!(
                (counted.nacks, counted.keyframe_requests_received),
                (2, 2),
                "{profile:?}"
            );
            // With a BYE, which is not read in place, `rtc-rtcp` reads it, counted alike.
            let mut with_bye = feedback.clone();
            with_bye.push(Box::new(Goodbye {
                sources: vec![7],
                reason: bytes::Bytes::new(),
            }));
            let datagram_bye = client.encrypt_rtcp(&compound(&with_bye)).expect("protect");
            let opened = own
                .open(&datagram_bye, |_, _| {})
                .expect("opened")
                .expect("for the room");
            assert!(matches!(opened, Opened::Parsed(_)), "{profile:?}: read by rtc-rtcp");
            let mut facts_bye = Facts::default();
            opened.feedback().visit(&mut facts_bye);
            assert_eq!(facts_bye, facts, "{profile:?}");
            let counted = stats.shard.snapshot();
            assert_eq!(
                (counted.nacks, counted.keyframe_requests_received),
                (3, 3),
                "{profile:?}"
            );
            assert!(
                own.open(&datagram, |_, _| {}).is_err(),
                "{profile:?}: a replay is refused"
            );
            let mut forged = client.encrypt_rtcp(&compound(&feedback)).expect("protect").to_vec();
            forged[10] ^= 1;
            assert!(
                own.open(&forged, |_, _| {}).is_err(),
                "{profile:?}: a forgery is refused"
            );
            // A report with nothing in it is opened and not handed on.
            let empty: Vec<Box<dyn rtcp::Packet>> = vec![Box::new(ReceiverReport {
                ssrc: 7,
                ..Default::default()
            })];
            let datagram = client.encrypt_rtcp(&compound(&empty)).expect("protect");
            assert!(own.open(&datagram, |_, _| {}).expect("opened").is_none(), "{profile:?}");
            // A publisher's sender reports (with a description, read in place; with a BYE, by
            // `rtc-rtcp`): each one's SSRC and NTP time told, in order.
            let reports = |ssrc: u32, ntp_time: u64| -> Box<dyn rtcp::Packet> {
                Box::new(SenderReport {
                    ssrc,
                    ntp_time,
                    rtp_time: 90_000,
                    packet_count: 10,
                    octet_count: 10_000,
                    ..Default::default()
                })
            };
            let description: Box<dyn rtcp::Packet> = Box::new(SourceDescription {
                chunks: vec![SourceDescriptionChunk {
                    source: 11,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: bytes::Bytes::from_static(b"publisher"),
                    }],
                }],
            });
            let bye: Box<dyn rtcp::Packet> = Box::new(Goodbye {
                sources: vec![12],
                reason: bytes::Bytes::new(),
            });
            for (last, in_place) in [(description, true), (bye, false)] {
                let sent = vec![reports(11, 0x0123_4567_89ab_cdef), reports(12, 42), last];
                let datagram = client.encrypt_rtcp(&compound(&sent)).expect("protect");
                let mut told = Vec::new();
                let opened = own.open(&datagram, |ssrc, ntp| told.push((ssrc, ntp))).expect("opened");
                assert_eq!(
                    told,
                    vec![(11, 0x0123_4567_89ab_cdef), (12, 42)],
                    "{profile:?} {in_place}"
                );
                if in_place {
                    assert!(opened.is_none(), "{profile:?}: nothing in it for the room");
                }
            }
        }
    }

    /// The client opens the receipts the shard seals, in turn with the RTCP `rtc` sends from
    /// another SSRC with its own context of the same key: each SSRC's index is counted apart,
    /// and a replay of either is refused.
    #[test]
    fn receipts_sealed_by_the_shard_are_opened_by_the_client_beside_rtcs_own() {
        for profile in [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::Aes128CmHmacSha1_80] {
            let keys = keys(profile);
            let mut sealer = RtcpSealer::new(&keys).expect("keys");
            let mut rtcs = keys.local_context().expect("rtc's context");
            // The client's side: what we send is opened with its remote key, our local one.
            let mut client = SrtpKeys {
                profile,
                local: keys.remote.clone(),
                remote: keys.local.clone(),
            }
            .remote_context()
            .expect("client");
            let report = |ssrc: u32| -> Vec<Box<dyn rtcp::Packet>> {
                vec![Box::new(ReceiverReport {
                    ssrc,
                    ..Default::default()
                })]
            };
            for round in 0..3 {
                let ours = sealer.seal(&report(0xabc)).expect("sealed");
                let theirs = rtcs.encrypt_rtcp(&compound(&report(0xdef))).expect("rtc's");
                for (datagram, ssrc) in [(&ours, 0xabc), (&theirs, 0xdef)] {
                    let plain = client.decrypt_rtcp(datagram).expect("opened");
                    let packets = rtcp::packet::unmarshal(&mut plain.freeze()).expect("parses");
                    let rr = packets[0].as_any().downcast_ref::<ReceiverReport>().expect("a report");
                    assert_eq!(rr.ssrc, ssrc, "{profile:?} round {round}");
                }
                assert!(client.decrypt_rtcp(&ours).is_err(), "{profile:?}: a replay is refused");
            }
        }
    }
}
