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
//! - A publisher connection's receive interceptors sit in `rtc`'s chain at their slots as
//!   before, all three behind one handle shared with the shard ([`ReceiveSide`]):
//!   packets `rtc` reads pass through them as before, and their NACKs still leave through
//!   `rtc`, which encrypts them; the feedback and reports do too until the shard sends them
//!   itself (once it opens the connection's first stream, `Receipts::send_own` and
//!   `own_rtcp::RtcpSealer`). The shard feeds the same
//!   interceptors directly, in the chain's order, without the chain's queues where the
//!   interceptor is ours (layer RTX repair and the NACK generator look at the packet in
//!   place).
//! - A connection's SRTP keys are read as `rtc` derives them (`srtp_keys`), and its
//!   [`OwnInbound`] context opens SRTP packets with the remote key.
//! - A stream (SSRC) is taken over once `rtc` has delivered one of its packets to a track:
//!   `rtc` binds new streams (simulcast layers by their RID, RTX flows), the shard follows.
//!   From then on its packets (from any path routed to the connection, once it has nominated
//!   one) are opened by the shard, fed to the
//!   receive interceptors, and what comes out is forwarded. RTX flows (whose packets `rtc` turns back into
//!   the primary's) and every RTCP packet stay with `rtc`. Each SSRC is decrypted by one
//!   context at a time, the shard's from its first packet after the takeover on (for
//!   AES-GCM carrying the packet index on from the packet `rtc` delivered, `srtp_gcm`).

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::BytesMut;
use rtc::interceptor::{Interceptor, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::rtp::Packet;
use rtc::rtp::header::Extension;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::Unmarshal;
use rtc::srtp::context::Context;

use super::layer_rtx::{LAYER_RTX_SLOT, LayerRtxInterceptor};
use super::nack::NackGenerator;
use super::receipts::Receipts;
use super::srtp_gcm::{self, Opener};
use super::srtp_keys::SrtpKeys;

/// Streams a connection may have taken over (a publisher's camera with three simulcast
/// layers and its microphone is four); more are left to `rtc`.
pub const MAX_STREAMS: usize = srtp_gcm::MAX_OPENED_STREAMS;

/// A publisher connection's three receive interceptors, behind one lock: `rtc`'s chain holds
/// a [`Part`] of them at each one's slot, the shard the whole ([`ReceiveSide`]). `rtc`'s
/// `Interceptor` must be `Send + Sync`, hence the mutex; only the shard's thread ever takes
/// it, so it is never contended, and one lock per packet the shard opens (not one each) is
/// what it costs.
struct Trio {
    layer_rtx: LayerRtxInterceptor,
    nack: NackGenerator,
    receipts: Receipts,
}

type SharedTrio = Arc<Mutex<Trio>>;

fn lock(trio: &SharedTrio) -> MutexGuard<'_, Trio> {
    trio.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which of the [`Trio`] a [`Part`] is.
trait Pick: 'static {
    type I: Interceptor;
    fn pick(trio: &mut Trio) -> &mut Self::I;
}

struct PickLayerRtx;
struct PickNack;
struct PickReceipts;

impl Pick for PickLayerRtx {
    type I = LayerRtxInterceptor;
    fn pick(trio: &mut Trio) -> &mut LayerRtxInterceptor {
        &mut trio.layer_rtx
    }
}

impl Pick for PickNack {
    type I = NackGenerator;
    fn pick(trio: &mut Trio) -> &mut NackGenerator {
        &mut trio.nack
    }
}

impl Pick for PickReceipts {
    type I = Receipts;
    fn pick(trio: &mut Trio) -> &mut Receipts {
        &mut trio.receipts
    }
}

/// One of a connection's receive interceptors as `rtc`'s chain holds it: the shared
/// [`Trio`], of which it runs the one `P` picks.
struct Part<P>(SharedTrio, PhantomData<fn() -> P>);

impl<P: Pick> Part<P> {
    fn new(trio: &SharedTrio) -> Self {
        Self(trio.clone(), PhantomData)
    }

    fn with<T>(&self, f: impl FnOnce(&mut P::I) -> T) -> T {
        f(P::pick(&mut lock(&self.0)))
    }
}

impl<P: Pick> Protocol<TaggedPacket, TaggedPacket, ()> for Part<P> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.with(|i| i.handle_read(msg))
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.with(|i| i.poll_read())
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.with(|i| i.handle_write(msg))
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.with(|i| i.poll_write())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.with(|i| i.handle_timeout(now))
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.with(|i| i.poll_timeout())
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.with(|i| i.close())
    }
}

impl<P: Pick> Interceptor for Part<P> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.with(|i| i.bind_local_stream(info));
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.with(|i| i.unbind_local_stream(info));
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.with(|i| i.bind_remote_stream(info));
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.with(|i| i.unbind_remote_stream(info));
    }
}

/// A publisher connection's receive interceptors, shared between `rtc`'s chain (each at the
/// slot it always had, [`registry`](Self::registry)) and the shard ([`feed`](Self::feed)).
#[derive(Clone)]
pub struct ReceiveSide(SharedTrio);

impl ReceiveSide {
    pub fn new(layer_rtx: LayerRtxInterceptor, nack: NackGenerator, receipts: Receipts) -> Self {
        Self(Arc::new(Mutex::new(Trio {
            layer_rtx,
            nack,
            receipts,
        })))
    }

    /// `registry` with the receive interceptors at their slots.
    pub fn registry(&self, registry: Registry) -> Registry {
        registry
            .with(Slot::from(LAYER_RTX_SLOT), Part::<PickLayerRtx>::new(&self.0))
            .with(Slot::NackGenerator, Part::<PickNack>::new(&self.0))
            .with(Slot::TwccReceiver, Part::<PickReceipts>::new(&self.0))
    }

    /// Runs a packet the shard opened past the receive interceptors in the order of `rtc`'s
    /// read walk (wire-most first: layer RTX, the NACK generator, the receipts), each looking
    /// at it in place, under one lock; `out` gets it. Returns their deadlines after it (a gap
    /// may want a NACK at once, the first packet after a quiet spell wants feedback).
    pub fn feed(&self, now: Instant, mut packet: Packet, out: &mut Vec<Packet>) -> Due {
        let mut trio = lock(&self.0);
        trio.layer_rtx.observe(&mut packet);
        trio.nack.observe(now, &packet);
        let nack = trio.nack.poll_timeout();
        trio.receipts.observe(now, &packet);
        let receipts = trio.receipts.next_due();
        drop(trio);
        out.push(packet);
        Due { nack, receipts }
    }

    /// From now on the shard sends the receipts itself (`Receipts::send_own`), from an SSRC
    /// the NACK generator does not send from either.
    pub fn send_receipts_own(&self) -> u32 {
        let mut trio = lock(&self.0);
        let avoid = trio.nack.sender_ssrc();
        trio.receipts.send_own(&[avoid])
    }

    /// The receipts due at `now`, written as compound packets (for the shard to send, once it
    /// does: `Receipts::due_into`).
    pub fn receipts_due_into(&self, now: Instant, wire: &mut Vec<u8>, ends: &mut Vec<usize>) {
        lock(&self.0).receipts.due_into(now, wire, ends);
    }

    /// A sender report of one of the publisher's streams, read by the shard (`own_rtcp`), for
    /// the receipts' last-SR fields.
    pub fn sender_report(&self, now: Instant, ssrc: u32, ntp_time: u64) {
        lock(&self.0).receipts.sender_report(now, ssrc, ntp_time);
    }

    /// When the NACK generator asks to run next (`None`: nothing missing).
    pub fn nack_next_due(&self) -> Option<Instant> {
        lock(&self.0).nack.poll_timeout()
    }

    /// When the next receipt is due.
    pub fn receipts_next_due(&self) -> Option<Instant> {
        lock(&self.0).receipts.next_due()
    }

    /// The SSRC the receipts are sent from.
    pub fn receipts_sender_ssrc(&self) -> u32 {
        lock(&self.0).receipts.sender_ssrc()
    }
}

/// The receive interceptors' deadlines after a packet ([`ReceiveSide::feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The NACK generator's: `rtc`'s chain fires it.
    pub nack: Option<Instant>,
    /// The receipts': `rtc`'s chain fires it, or the shard once it sends them itself.
    pub receipts: Option<Instant>,
}

impl Due {
    /// The earlier of the two.
    pub fn earliest(&self) -> Option<Instant> {
        [self.nack, self.receipts].into_iter().flatten().min()
    }
}

/// A publisher connection's own receiving side: its SRTP context (the remote key) and the
/// streams taken over.
pub struct OwnInbound {
    open: Open,
}

/// What decrypts: the GCM profiles in place (`srtp_gcm`, which also keeps the streams), the
/// others with `rtc-srtp`. The GCM opener keeps its streams inline on purpose (no pointer to
/// follow per datagram), and a connection's `OwnInbound` is boxed, so the variants' sizes
/// differing costs each connection a few hundred bytes once.
#[allow(clippy::large_enum_variant)]
enum Open {
    Gcm(Opener),
    Rtc { context: Context, streams: Vec<u32> },
}

impl OwnInbound {
    /// The receiving side of a connection with these keys (`None` if the built-in provider
    /// refuses them, which it does not for any profile `rtc` negotiates).
    pub fn new(keys: &SrtpKeys) -> Option<Self> {
        let open = if srtp_gcm::handles(keys.profile) {
            Open::Gcm(Opener::new(keys.profile, &keys.remote)?)
        } else {
            Open::Rtc {
                context: keys.remote_context().ok()?,
                streams: Vec::new(),
            }
        };
        Some(Self { open })
    }

    /// Whether the shard opens this stream's packets.
    pub fn has(&self, ssrc: u32) -> bool {
        match &self.open {
            Open::Gcm(opener) => opener.has(ssrc),
            Open::Rtc { streams, .. } => streams.contains(&ssrc),
        }
    }

    fn taken(&self) -> usize {
        match &self.open {
            Open::Gcm(opener) => opener.taken(),
            Open::Rtc { streams, .. } => streams.len(),
        }
    }

    /// `rtc` delivered packet `seq` of `ssrc` to a track: its next packets are the shard's.
    /// (`rtc-srtp`'s context, for the AES-CM profiles, finds the stream's rollover counter
    /// afresh; `srtp_gcm` carries on from `seq`.)
    pub fn take_over(&mut self, ssrc: u32, seq: u16) {
        if self.has(ssrc) || self.taken() >= MAX_STREAMS {
            return;
        }
        match &mut self.open {
            Open::Gcm(opener) => opener.take(ssrc, seq),
            Open::Rtc { streams, .. } => streams.push(ssrc),
        }
    }

    /// Opens an SRTP packet (authenticates, checks for replay, decrypts) and parses it; the
    /// GCM profiles decrypt it in place and parse into `spare`, a list of extensions to reuse
    /// (see `srtp_gcm::Opener::open_owned`).
    pub fn open(&mut self, datagram: BytesMut, spare: Vec<Extension>) -> Result<Packet, Box<dyn std::error::Error>> {
        match &mut self.open {
            Open::Gcm(opener) => Ok(opener.open_owned(datagram, spare)?),
            Open::Rtc { context, .. } => {
                let plain = context.decrypt_rtp(&datagram)?;
                Ok(Packet::unmarshal(&mut plain.freeze())?)
            }
        }
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
    use crate::sfu::srtp_keys::testing::{keys, peer_context};
    use rtc::interceptor::Registry;
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::protection_profile::ProtectionProfile;

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

    #[test]
    fn what_the_peer_sends_is_opened_once_and_a_forgery_or_replay_is_refused() {
        for profile in [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::Aes128CmHmacSha1_80] {
            let keys = keys(profile);
            let mut peer = peer_context(&keys);
            let mut own = OwnInbound::new(&keys).expect("keys taken");
            own.take_over(0xABCD, 6);
            for seq in [7u16, 8, 10, 9] {
                let sent = packet(0xABCD, seq, b"opus frame");
                let datagram = peer.encrypt_rtp(&sent.marshal().expect("marshal")).expect("encrypt");
                assert_eq!(ssrc_of(&datagram), Some(0xABCD));
                let opened = own.open(BytesMut::from(&datagram[..]), Vec::new()).expect("opened");
                assert_eq!(opened.header.sequence_number, seq, "{profile:?}");
                assert_eq!(&opened.payload[..], b"opus frame");
                assert!(
                    own.open(BytesMut::from(&datagram[..]), Vec::new()).is_err(),
                    "{profile:?}: a replay is refused"
                );
            }
            let mut forged = peer
                .encrypt_rtp(&packet(0xABCD, 11, b"opus frame").marshal().expect("marshal"))
                .expect("encrypt")
                .to_vec();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(
                own.open(BytesMut::from(&forged[..]), Vec::new()).is_err(),
                "{profile:?}: a forgery is refused"
            );
            // Our own local key does not open what the peer sent.
            let swapped = SrtpKeys {
                profile,
                local: keys.remote.clone(),
                remote: keys.local.clone(),
            };
            let datagram = peer
                .encrypt_rtp(&packet(0xABCD, 12, b"x").marshal().expect("marshal"))
                .expect("encrypt");
            let mut wrong = OwnInbound::new(&swapped).expect("keys");
            wrong.take_over(0xABCD, 11);
            assert!(wrong.open(BytesMut::from(&datagram[..]), Vec::new()).is_err());
        }
    }

    #[test]
    fn streams_are_taken_over_once_each_and_no_more_than_the_limit() {
        let mut own = OwnInbound::new(&keys(ProtectionProfile::AeadAes128Gcm)).expect("keys");
        assert!(!own.has(5));
        own.take_over(5, 0);
        own.take_over(5, 0);
        assert!(own.has(5));
        for ssrc in 100..200 {
            own.take_over(ssrc, 0);
        }
        assert_eq!(own.taken(), MAX_STREAMS);
        assert!(own.has(100) && !own.has(199));
    }

    #[test]
    fn ssrc_of_reads_the_header_and_refuses_a_short_datagram() {
        let datagram = packet(0x0102_0304, 1, b"").marshal().expect("marshal");
        assert_eq!(ssrc_of(&datagram), Some(0x0102_0304));
        assert_eq!(ssrc_of(&datagram[..11]), None);
    }

    /// The receive side of a publisher connection whose one stream carries the
    /// transport-wide sequence number (`TWCC_ID`).
    fn receive_side() -> (ReceiveSide, Registry) {
        let stats = crate::sfu::stats::StatsPair {
            meeting: Default::default(),
            shard: Default::default(),
        };
        let side = ReceiveSide::new(
            LayerRtxInterceptor::new(Default::default(), stats.clone()),
            NackGenerator::new(Default::default(), stats),
            Receipts::default(),
        );
        let registry = side.registry(Registry::new());
        (side, registry)
    }

    const TWCC_ID: u8 = 5;

    fn with_twcc(seq: u16) -> Packet {
        let mut p = packet(0xABCD, seq, b"opus frame");
        p.header.extension = true;
        p.header.extension_profile = rtc::rtp::header::EXTENSION_PROFILE_ONE_BYTE;
        p.header.extensions = vec![rtc::rtp::header::Extension {
            id: TWCC_ID,
            payload: bytes::Bytes::copy_from_slice(&seq.to_be_bytes()),
        }];
        p
    }

    #[test]
    fn the_receive_side_hands_back_each_packet_and_wakes_rtc_for_its_feedback() {
        let (side, registry) = receive_side();
        let mut chain = registry.build();
        chain.bind_remote_stream(&StreamInfo {
            ssrc: 0xABCD,
            clock_rate: 48_000,
            rtp_header_extensions: vec![rtc::interceptor::RTPHeaderExtension {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                id: u16::from(TWCC_ID),
            }],
            ..Default::default()
        });
        assert_eq!(chain.poll_timeout(), None, "quiet before any packet");
        let now = Instant::now();
        let mut out = Vec::new();
        let mut due = None;
        for seq in 1..=3 {
            due = side.feed(now, with_twcc(seq), &mut out).earliest();
        }
        assert_eq!(
            out.iter().map(|p| p.header.sequence_number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let due = due.expect("feedback and a report are due");
        // `rtc`'s chain holds the same interceptors: the deadline is the one it polls, and
        // the feedback it writes when it fires acknowledges what the shard fed.
        assert_eq!(chain.poll_timeout(), Some(due));
        let later = now + std::time::Duration::from_secs(1);
        chain.handle_timeout(later).expect("timeout");
        let mut acked = Vec::new();
        let mut reported = Vec::new();
        while let Some(msg) = chain.poll_write() {
            if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
                for p in packets {
                    reported.extend(
                        crate::sfu::rtcp::reception_reports(p.as_ref())
                            .iter()
                            .map(|r| r.last_sequence_number),
                    );
                    if let Some(feedback) = crate::sfu::rtcp::as_twcc(p.as_ref()) {
                        acked.extend(
                            crate::sfu::bwe::acks_of(feedback)
                                .filter(|a| a.arrival.is_some())
                                .map(|a| a.seq),
                        );
                    }
                }
            }
        }
        assert_eq!(acked, [1, 2, 3]);
        assert_eq!(reported, [3], "a receiver report up to the last packet fed");
    }
}
