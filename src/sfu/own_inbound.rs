//! Media from publishers opened by the shard itself, past `rtc`'s read pipeline (issue 13;
//! see docs/ARCHITECTURE.md "A forwarded packet's path").
//!
//! `rtc` reads an SRTP datagram through eight handlers (ICE, DTLS/SRTP demultiplexing, SRTP,
//! the interceptor chain, the endpoint's track lookup), each moving the packet through a
//! queue of its own: in small rooms, where every inbound packet is forwarded once or twice,
//! that read was the largest share of a forwarded packet's cost (BENCHMARKS §3). What a
//! publisher's packet needs on its way in is much less: decryption, the receive
//! interceptors (TWCC feedback, receiver reports, layer RTX repair, the NACK generator), and
//! the track it belongs to.
//!
//! - A publisher connection's receive interceptors run in a chain of our own
//!   ([`SharedChain`]), which sits in `rtc`'s chain at their place: packets `rtc` reads pass
//!   through it as before, and the interceptors' RTCP (feedback, reports, NACKs) still
//!   leaves through `rtc`, which encrypts it. The shard feeds the same chain directly.
//! - A connection's SRTP keys are read as `rtc` derives them (`srtp_keys`), and its
//!   [`OwnInbound`] context opens SRTP packets with the remote key.
//! - A stream (SSRC) is taken over once `rtc` has delivered one of its packets to a track:
//!   `rtc` binds new streams (simulcast layers by their RID, RTX flows), the shard follows.
//!   From then on its packets from the nominated path are opened by the shard, fed to the
//!   chain, and what comes out is forwarded. RTX flows (whose packets `rtc` turns back into
//!   the primary's) and every RTCP packet stay with `rtc`. Each SSRC is decrypted by one
//!   context at a time, the shard's from its first packet after the takeover on, so the
//!   rollover counter is found afresh within the first 2^15 packets (a few minutes of
//!   video), as for any new stream.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rtc::interceptor::{AttributedPacket, Interceptor, Packet as Attributed, StreamInfo, TaggedPacket};
use rtc::rtp::Packet;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;
use rtc::shared::marshal::Unmarshal;
use rtc::srtp::context::Context;

use super::srtp_keys::SrtpKeys;

/// Streams a connection may have taken over (a publisher's camera with three simulcast
/// layers and its microphone is four); more are left to `rtc`.
pub const MAX_STREAMS: usize = 16;

/// A chain of interceptors shared between `rtc` (which holds it as one interceptor of its
/// own chain) and the shard (which feeds it the packets it opened itself). `rtc`'s
/// `Interceptor` must be `Send + Sync`, hence the mutex; only the shard's thread ever
/// takes it, so it is never contended.
#[derive(Clone)]
pub struct SharedChain(Arc<Mutex<Box<dyn Interceptor>>>);

impl SharedChain {
    pub fn new(chain: impl Interceptor + 'static) -> Self {
        Self(Arc::new(Mutex::new(Box::new(chain))))
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn Interceptor>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a packet the shard opened through the chain, as `rtc` would have: `out` gets
    /// what comes out (the packet itself, or nothing if an interceptor kept it). Returns
    /// the chain's deadline after it (a gap may want a NACK at once, the first packet
    /// after a quiet spell wants feedback).
    pub fn feed(
        &self,
        now: Instant,
        transport: TransportContext,
        packet: Packet,
        out: &mut Vec<Packet>,
    ) -> Option<Instant> {
        let mut chain = self.lock();
        let fed = TaggedPacket {
            now,
            transport,
            message: AttributedPacket::new(Attributed::Rtp(packet)),
        };
        if let Err(e) = chain.handle_read(fed) {
            tracing::trace!("own inbound: interceptor refused a packet: {e}");
        }
        while let Some(read) = chain.poll_read() {
            if let Attributed::Rtp(packet) = read.message.packet {
                out.push(packet);
            }
        }
        chain.poll_timeout()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SharedChain {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.lock().handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.lock().poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.lock().handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.lock().poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.lock().handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.lock().poll_timeout()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.lock().close()
    }
}

impl Interceptor for SharedChain {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.lock().bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.lock().unbind_local_stream(info);
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.lock().bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.lock().unbind_remote_stream(info);
    }
}

/// A publisher connection's own receiving side: its SRTP context (the remote key) and the
/// streams taken over.
pub struct OwnInbound {
    context: Context,
    streams: Vec<u32>,
}

impl OwnInbound {
    /// The receiving side of a connection with these keys (`None` if the built-in provider
    /// refuses them, which it does not for any profile `rtc` negotiates).
    pub fn new(keys: &SrtpKeys) -> Option<Self> {
        Some(Self {
            context: keys.remote_context().ok()?,
            streams: Vec::new(),
        })
    }

    /// Whether the shard opens this stream's packets.
    pub fn has(&self, ssrc: u32) -> bool {
        self.streams.contains(&ssrc)
    }

    /// `rtc` delivered a packet of `ssrc` to a track: its next packets are the shard's.
    pub fn take_over(&mut self, ssrc: u32) {
        if !self.has(ssrc) && self.streams.len() < MAX_STREAMS {
            self.streams.push(ssrc);
        }
    }

    /// Opens an SRTP packet (authenticates, checks for replay, decrypts) and parses it.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Packet, Error> {
        let plain = self.context.decrypt_rtp(datagram)?;
        Packet::unmarshal(&mut plain.freeze())
    }
}

/// The SSRC of an RTP (or SRTP) datagram, whose header is never encrypted.
pub fn ssrc_of(datagram: &[u8]) -> Option<u32> {
    let bytes = datagram.get(8..12)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::srtp_keys::MasterKey;
    use rtc::interceptor::Registry;
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::protection_profile::ProtectionProfile;

    fn keys(profile: ProtectionProfile) -> SrtpKeys {
        let key = |k: u8, s: u8| MasterKey {
            key: vec![k; profile.key_len()],
            salt: vec![s; profile.salt_len()],
        };
        SrtpKeys {
            profile,
            local: key(1, 2),
            remote: key(3, 4),
        }
    }

    fn packet(ssrc: u32, seq: u16, payload: &'static [u8]) -> Packet {
        Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(payload),
        }
    }

    /// What the remote peer sends: encrypted with its local key, our remote one.
    fn peer_context(keys: &SrtpKeys) -> Context {
        let provider = rtc::crypto::default_provider().expect("provider");
        Context::new(
            &keys.remote.key,
            &keys.remote.salt,
            keys.profile,
            None,
            None,
            provider.crypto(),
        )
        .expect("peer context")
    }

    #[test]
    fn what_the_peer_sends_is_opened_once_and_a_forgery_or_replay_is_refused() {
        for profile in [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::Aes128CmHmacSha1_80] {
            let keys = keys(profile);
            let mut peer = peer_context(&keys);
            let mut own = OwnInbound::new(&keys).expect("keys taken");
            for seq in [7u16, 8, 10, 9] {
                let sent = packet(0xABCD, seq, b"opus frame");
                let datagram = peer.encrypt_rtp(&sent.marshal().expect("marshal")).expect("encrypt");
                assert_eq!(ssrc_of(&datagram), Some(0xABCD));
                let opened = own.open(&datagram).expect("opened");
                assert_eq!(opened.header.sequence_number, seq, "{profile:?}");
                assert_eq!(&opened.payload[..], b"opus frame");
                assert!(own.open(&datagram).is_err(), "{profile:?}: a replay is refused");
            }
            let mut forged = peer
                .encrypt_rtp(&packet(0xABCD, 11, b"opus frame").marshal().expect("marshal"))
                .expect("encrypt")
                .to_vec();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(own.open(&forged).is_err(), "{profile:?}: a forgery is refused");
            // Our own local key does not open what the peer sent.
            let swapped = SrtpKeys {
                profile,
                local: keys.remote.clone(),
                remote: keys.local.clone(),
            };
            let datagram = peer
                .encrypt_rtp(&packet(0xABCD, 12, b"x").marshal().expect("marshal"))
                .expect("encrypt");
            assert!(OwnInbound::new(&swapped).expect("keys").open(&datagram).is_err());
        }
    }

    #[test]
    fn streams_are_taken_over_once_each_and_no_more_than_the_limit() {
        let mut own = OwnInbound::new(&keys(ProtectionProfile::AeadAes128Gcm)).expect("keys");
        assert!(!own.has(5));
        own.take_over(5);
        own.take_over(5);
        assert!(own.has(5));
        for ssrc in 100..200 {
            own.take_over(ssrc);
        }
        assert_eq!(own.streams.len(), MAX_STREAMS);
        assert!(own.has(100) && !own.has(199));
    }

    #[test]
    fn ssrc_of_reads_the_header_and_refuses_a_short_datagram() {
        let datagram = packet(0x0102_0304, 1, b"").marshal().expect("marshal");
        assert_eq!(ssrc_of(&datagram), Some(0x0102_0304));
        assert_eq!(ssrc_of(&datagram[..11]), None);
    }

    /// An interceptor that keeps every other packet and wants a timeout after each it keeps.
    #[derive(Default)]
    struct KeepOdd {
        queue: std::collections::VecDeque<TaggedPacket>,
        due: Option<Instant>,
    }

    impl Protocol<TaggedPacket, TaggedPacket, ()> for KeepOdd {
        type Rout = TaggedPacket;
        type Wout = TaggedPacket;
        type Eout = ();
        type Error = Error;
        type Time = Instant;
        fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
            if let Attributed::Rtp(p) = &msg.message.packet
                && p.header.sequence_number % 2 == 1
            {
                self.due = Some(msg.now);
                return Ok(());
            }
            self.queue.push_back(msg);
            Ok(())
        }
        fn poll_read(&mut self) -> Option<TaggedPacket> {
            self.queue.pop_front()
        }
        fn handle_write(&mut self, _msg: TaggedPacket) -> Result<(), Error> {
            Ok(())
        }
        fn poll_write(&mut self) -> Option<TaggedPacket> {
            None
        }
        fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
            self.due = None;
            Ok(())
        }
        fn poll_timeout(&mut self) -> Option<Instant> {
            self.due
        }
    }

    impl Interceptor for KeepOdd {
        fn bind_local_stream(&mut self, _info: &StreamInfo) {}
        fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
        fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
        fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
    }

    #[test]
    fn the_shared_chain_gives_the_shard_what_comes_out_and_its_new_deadline() {
        let chain = SharedChain::new(
            Registry::new()
                .with(rtc::interceptor::Slot::NackGenerator, KeepOdd::default())
                .build(),
        );
        let now = Instant::now();
        let mut out = Vec::new();
        let due = chain.feed(now, TransportContext::default(), packet(1, 2, b"a"), &mut out);
        assert_eq!((out.len(), due), (1, None));
        let due = chain.feed(now, TransportContext::default(), packet(1, 3, b"b"), &mut out);
        assert_eq!((out.len(), due), (1, Some(now)), "kept, and it wants its timeout");
        // `rtc`'s side of the same chain sees the same state.
        let mut rtc_side = chain.clone();
        assert_eq!(rtc_side.poll_timeout(), Some(now));
        rtc_side.handle_timeout(now).expect("timeout");
        assert_eq!(chain.clone().poll_timeout(), None);
    }
}
