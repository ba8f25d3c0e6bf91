//! Forwarded copies encrypted by the shard itself, past `rtc`'s write chain (issue 13; see
//! docs/ARCHITECTURE.md "A forwarded packet's path").
//!
//! A subscriber connection's SRTP keys are read as `rtc` derives them (`srtp_keys`); from
//! its first forwarded copy on, the connection's media is marshalled into a buffer kept for
//! it, encrypted by an SRTP context of our own and queued for the socket, and the
//! connection's [`SenderReports`] count it, since `rtc`'s sender-report interceptor never
//! sees it. The GCM profiles are sealed in place (`srtp_gcm`), the others by `rtc-srtp`'s
//! context. The sender reports of those streams are sealed by the shard too, with an SRTCP
//! context of its own from the same key ([`OwnSrtp::seal_report`]): `rtc` sends no RTCP from
//! their SSRCs (its sender-report interceptor never saw a packet of them), so no SRTCP index
//! is counted by two contexts. Everything else the connection sends (RTX, which is another
//! SSRC, and any other RTCP, which `rtc` numbers and encrypts with its own SRTCP index) still
//! goes through `rtc`; no SSRC is ever encrypted by both, so no SRTP index is used twice.

use bytes::BytesMut;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::Packet;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;

use super::own_rtcp::RtcpSealer;
use super::sender_reports::SenderReports;
use super::srtp_gcm::{self, Sealer};
use super::srtp_keys::SrtpKeys;

/// One connection's own sending side.
pub struct OwnSrtp {
    seal: Seal,
    pub reports: SenderReports,
    /// Its sender reports' SRTCP (see the module documentation).
    report_sealer: RtcpSealer,
}

/// What encrypts: the GCM profiles in place (`srtp_gcm`), the others with `rtc-srtp`.
enum Seal {
    Gcm(Sealer),
    Rtc {
        context: Context,
        /// The packet marshalled before it is encrypted (grown once to the largest packet).
        plain: Vec<u8>,
    },
}

impl OwnSrtp {
    /// The sending side of a connection with these keys (`None` if the built-in provider
    /// refuses them, which it does not for any profile `rtc` negotiates).
    pub fn new(keys: &SrtpKeys) -> Option<Self> {
        let seal = if srtp_gcm::handles(keys.profile) {
            Seal::Gcm(Sealer::new(keys.profile, &keys.local)?)
        } else {
            Seal::Rtc {
                context: keys.local_context().ok()?,
                plain: Vec::new(),
            }
        };
        Some(Self {
            seal,
            reports: SenderReports::default(),
            report_sealer: RtcpSealer::new(keys)?,
        })
    }

    /// A sender report of one of its streams as an SRTCP datagram (a compound of that one
    /// report, as `rtc`'s `write_rtcp` sent it), sealed in space cut from `arena` for the GCM
    /// profiles.
    pub fn seal_report(
        &mut self,
        report: &SenderReport,
        arena: &mut BytesMut,
    ) -> Result<BytesMut, Box<dyn std::error::Error>> {
        // No report blocks, no profile extensions: 28 bytes, marshalled on the stack.
        let mut plain = [0u8; 28];
        if report.marshal_size() > plain.len() {
            return Err("a sender report with report blocks".into());
        }
        let n = report.marshal_to(&mut plain)?;
        self.report_sealer.seal_in(&plain[..n], arena)
    }

    /// `packet` as an SRTP datagram, ready for the socket (tests; the shard seals into its
    /// arena, [`protect_in`](Self::protect_in)).
    #[cfg(test)]
    pub fn protect(&mut self, packet: &Packet) -> Result<BytesMut, Box<dyn std::error::Error>> {
        self.protect_in(packet, &mut BytesMut::new())
    }

    /// As [`protect`](Self::protect); the GCM profiles seal into space cut from `arena`
    /// (`srtp_gcm::Sealer::seal_in`).
    pub fn protect_in(
        &mut self,
        packet: &Packet,
        arena: &mut BytesMut,
    ) -> Result<BytesMut, Box<dyn std::error::Error>> {
        match &mut self.seal {
            Seal::Gcm(sealer) => Ok(sealer.seal_in(packet, arena)?),
            Seal::Rtc { context, plain } => {
                let size = packet.marshal_size();
                if plain.len() < size {
                    plain.resize(size, 0);
                }
                let n = packet.marshal_to(&mut plain[..size])?;
                Ok(context.encrypt_rtp_with_header(&plain[..n], &packet.header)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::srtp_keys::MasterKey;
    use rtc::shared::marshal::Unmarshal;
    use rtc::srtp::protection_profile::ProtectionProfile;

    /// A sending side with a key of `fill` bytes, and the peer's context that opens it.
    fn own_and_peer(profile: ProtectionProfile, fill: u8) -> (OwnSrtp, Context) {
        let local = MasterKey {
            key: vec![fill; profile.key_len()],
            salt: vec![fill + 2; profile.salt_len()],
        };
        let keys = SrtpKeys {
            profile,
            local: local.clone(),
            remote: local.clone(),
        };
        let own = OwnSrtp::new(&keys).expect("keys taken");
        let provider = rtc::crypto::default_provider().expect("provider");
        let peer = Context::new(&local.key, &local.salt, profile, None, None, provider.crypto()).expect("peer");
        (own, peer)
    }

    #[test]
    fn what_it_protects_the_peer_opens_in_order_across_sizes() {
        for profile in [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::Aes128CmHmacSha1_80] {
            let (mut own, mut peer) = own_and_peer(profile, 7);
            // A large packet, then a small one: the buffer is reused, nothing of the large
            // one leaks into the small one.
            for (seq, len) in [(1u16, 1200usize), (2, 20), (3, 600)] {
                let packet = Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        payload_type: 96,
                        sequence_number: seq,
                        timestamp: 90 * u32::from(seq),
                        ssrc: 0xABCD,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from(vec![seq as u8; len]),
                };
                let datagram = own.protect(&packet).expect("protected");
                let plain = peer.decrypt_rtp(&datagram).expect("the peer opens it");
                let opened = Packet::unmarshal(&mut &plain[..]).expect("rtp");
                assert_eq!(opened.header.sequence_number, seq, "{profile:?}");
                assert_eq!(opened.payload, packet.payload, "{profile:?}");
            }
        }
    }

    /// Its sender reports are SRTCP the peer's one context opens in turn, each the report
    /// that was sealed (two streams, each's index counted on); one with report blocks,
    /// which it never makes, is refused.
    #[test]
    fn its_sender_reports_the_peer_opens_in_turn() {
        for profile in [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::Aes128CmHmacSha1_80] {
            let (mut own, mut peer) = own_and_peer(profile, 3);
            let mut arena = BytesMut::new();
            for round in 0..3u32 {
                for ssrc in [0xA1, 0xB2] {
                    let report = SenderReport {
                        ssrc,
                        ntp_time: 0x0123_4567_0000_0000 + u64::from(round),
                        rtp_time: 90_000 * round,
                        packet_count: 50 * round,
                        octet_count: 50_000 * round,
                        ..Default::default()
                    };
                    let datagram = own.seal_report(&report, &mut arena).expect("sealed");
                    let plain = peer.decrypt_rtcp(&datagram).expect("the peer opens it");
                    let opened = SenderReport::unmarshal(&mut &plain[..]).expect("a sender report");
                    assert_eq!(opened, report, "{profile:?} round {round}");
                }
            }
            let with_block = SenderReport {
                ssrc: 0xA1,
                reports: vec![Default::default()],
                ..Default::default()
            };
            assert!(own.seal_report(&with_block, &mut arena).is_err(), "{profile:?}");
        }
    }
}
