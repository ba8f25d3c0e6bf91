//! Retransmissions of simulcast layers, received: RTX packets named only by the
//! `repaired-rtp-stream-id` header extension turned back into their layer's packets
//! before `rtc` drops them.
//!
//! A simulcast layer (`a=rid`) has no SSRC in the offer, and neither has its RTX
//! stream: `rtc` 0.21.1 learns a layer's SSRC from the `mid`/`rid` header extensions
//! of its first packets (`bind_by_rid`), but an RTX packet carries `mid` and
//! `repaired-rtp-stream-id` (rrid) instead, and `bind_by_rid` returns at once for it
//! ("TODO: Add support of handling repair rtp stream id (rrid) #12", rtc 0.21.1
//! `src/peer_connection/handler/interceptor.rs:510`). The packet then passes the
//! interceptor chain under its unknown SSRC and the endpoint handler, which only
//! de-encapsulates RTX streams declared by `a=ssrc-group:FID`, drops it ("drop rtp
//! packet ssrc", `endpoint.rs:194`). So no retransmission of a layer ever arrived.
//!
//! [`LayerRtx`] is the pure part, per connection: it learns each layer's SSRC from the
//! `rid` extension of its packets, each RTX SSRC's layer from its `rrid`, and rewrites
//! an RTX packet into the original (RFC 4588 §4: the layer's SSRC, the sequence number
//! from the first two payload bytes, the payload type from the RTX codec's `apt`, the
//! payload after those two bytes). [`LayerRtxInterceptor`] runs it in the read chain
//! at slot 6 500, after SRTP (RTP headers are not encrypted, but `rtc` hands the chain
//! parsed, decrypted packets) and before our NACK generator (7 000), so the generator,
//! our TWCC feedback and receiver reports (`receipts`), `rtc`'s endpoint (which now knows the
//! SSRC) and the media room all see a repaired packet of the layer. What it cannot
//! repair (an unknown rrid, a payload type that is no RTX of ours, padding-only
//! probes with no OSN) passes unchanged and `rtc` drops it as before, after the TWCC
//! feedback has recorded its arrival (the publisher's estimate counts probes).
//! Upstream's fix would be `bind_by_rid` learning the rrid as the layer's RTX SSRC
//! (the coding's `rtx`), after which its own de-encapsulation applies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::stats::StatsPair;

/// The header-extension URIs that name a packet's media section and layer.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub const RRID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// Where the interceptor sits in `rtc`'s read chain: after FEC recovery (6 000),
/// before the NACK generator (7 000), so a repair is seen as the packet it repairs.
pub const LAYER_RTX_SLOT: usize = 6_500;

/// At most this many layers and RTX streams are remembered per connection (a
/// publisher has a camera of up to four layers and a screen; a restarted layer
/// replaces its entry). Beyond it the oldest is forgotten.
const MAX_STREAMS: usize = 16;

/// What a connection negotiated that the rewrite needs: the extension ids and each
/// RTX payload type's `apt`. Session-wide: under BUNDLE an id or a payload type means
/// one thing in every section (RFC 8843 §9.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub rrid: Option<u8>,
    /// (RTX payload type, the payload type it repairs).
    pub apt: Vec<(u8, u8)>,
}

impl Settings {
    /// From what the receivers negotiated: codecs as (payload type, mime type, fmtp)
    /// and header extensions as (uri, id).
    pub fn from_negotiated<'a>(
        codecs: impl IntoIterator<Item = (u8, &'a str, &'a str)>,
        extensions: impl IntoIterator<Item = (&'a str, u16)>,
    ) -> Self {
        let mut settings = Settings::default();
        for (uri, id) in extensions {
            let id = u8::try_from(id).ok().filter(|id| *id != 0);
            match uri {
                MID_URI => settings.mid = settings.mid.or(id),
                RID_URI => settings.rid = settings.rid.or(id),
                RRID_URI => settings.rrid = settings.rrid.or(id),
                _ => {}
            }
        }
        for (pt, mime, fmtp) in codecs {
            if !mime.eq_ignore_ascii_case("video/rtx") || settings.apt.iter().any(|(rtx, _)| *rtx == pt) {
                continue;
            }
            let apt = fmtp
                .split(';')
                .find_map(|p| p.trim().strip_prefix("apt="))
                .and_then(|apt| apt.trim().parse::<u8>().ok());
            if let Some(apt) = apt {
                settings.apt.push((pt, apt));
            }
        }
        settings
    }

    /// Whether layers can be repaired at all: their RTX must name its layer.
    fn usable(&self) -> bool {
        self.rid.is_some() && self.rrid.is_some() && !self.apt.is_empty()
    }
}

/// The shell's handle on a connection's [`Settings`], shared with its interceptor:
/// set when an offer has been applied, read by the interceptor only when the
/// generation moved (one atomic load per packet, no lock).
#[derive(Debug, Clone, Default)]
pub struct SharedSettings(Arc<(AtomicU64, Mutex<Settings>)>);

impl SharedSettings {
    pub fn set(&self, settings: Settings) {
        let (generation, slot) = &*self.0;
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        if *held != settings {
            *held = settings;
            generation.fetch_add(1, Ordering::Release);
        }
    }

    fn generation(&self) -> u64 {
        self.0.0.load(Ordering::Acquire)
    }

    pub(super) fn get(&self) -> Settings {
        self.0.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What one packet was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not an RTX packet of a layer (media, or nothing to learn from): unchanged.
    Media,
    /// Turned into the layer's original packet.
    Repaired,
    /// An RTX packet of a layer that carries no original (padding only, or shorter
    /// than its two OSN bytes): left as it is, for `rtc` to drop.
    NoOriginal,
    /// Named by an rrid no layer has been seen with yet: unchanged.
    UnknownLayer,
    /// Its payload type is no negotiated RTX type: unchanged.
    NotRtx,
}

/// A learned name: the section and stream id a packet carried, and its SSRC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    mid: Box<[u8]>,
    rid: Box<[u8]>,
    ssrc: u32,
}

/// The pure state of one publisher connection (see the module doc).
#[derive(Debug, Default)]
pub struct LayerRtx {
    settings: Settings,
    /// Layers seen: (mid, rid) -> their SSRC.
    layers: VecDeque<Named>,
    /// RTX streams seen: RTX SSRC -> the layer's SSRC.
    rtx: VecDeque<(u32, u32)>,
}

fn extension(header: &rtp::Header, id: Option<u8>) -> Option<&[u8]> {
    let id = id?;
    if !header.extension {
        return None;
    }
    header
        .extensions
        .iter()
        .find(|e| e.id == id)
        .map(|e| e.payload.as_ref())
}

impl LayerRtx {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// New settings (a later offer): what was learned stays, SSRCs outlive offers.
    pub fn configure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Looks at one received packet and rewrites it in place when it is the RTX of a
    /// known layer.
    pub fn on_packet(&mut self, packet: &mut rtp::Packet) -> Seen {
        if !self.settings.usable() {
            return Seen::Media;
        }
        let ssrc = packet.header.ssrc;
        let layer = match self.rtx.iter().find(|(rtx, _)| *rtx == ssrc) {
            Some(&(_, layer)) => layer,
            None => {
                if let Some(rid) = extension(&packet.header, self.settings.rid).filter(|r| !r.is_empty()) {
                    let mid = extension(&packet.header, self.settings.mid).unwrap_or_default();
                    self.learn_layer(mid, rid, ssrc);
                    return Seen::Media;
                }
                let Some(rrid) = extension(&packet.header, self.settings.rrid).filter(|r| !r.is_empty()) else {
                    return Seen::Media;
                };
                let mid = extension(&packet.header, self.settings.mid);
                let Some(layer) = self.layer(mid, rrid) else {
                    return Seen::UnknownLayer;
                };
                if self.rtx.len() == MAX_STREAMS {
                    self.rtx.pop_front();
                }
                self.rtx.push_back((ssrc, layer));
                layer
            }
        };
        let Some(&(_, apt)) = self
            .settings
            .apt
            .iter()
            .find(|(rtx, _)| *rtx == packet.header.payload_type)
        else {
            return Seen::NotRtx;
        };
        if unwrap_rtx(packet, layer, apt) {
            Seen::Repaired
        } else {
            Seen::NoOriginal
        }
    }

    fn learn_layer(&mut self, mid: &[u8], rid: &[u8], ssrc: u32) {
        match self.layers.iter_mut().find(|l| *l.mid == *mid && *l.rid == *rid) {
            Some(known) if known.ssrc == ssrc => {}
            Some(known) => {
                // The layer restarted on a new SSRC: its old RTX stream repairs nothing now.
                let old = known.ssrc;
                known.ssrc = ssrc;
                self.rtx.retain(|(_, layer)| *layer != old);
            }
            None => {
                if self.layers.len() == MAX_STREAMS {
                    self.layers.pop_front();
                }
                self.layers.push_back(Named {
                    mid: mid.into(),
                    rid: rid.into(),
                    ssrc,
                });
            }
        }
    }

    /// The layer an rrid names: within its section, or, for an RTX packet without a
    /// `mid`, the only layer of that rid.
    fn layer(&self, mid: Option<&[u8]>, rrid: &[u8]) -> Option<u32> {
        match mid {
            Some(mid) => self
                .layers
                .iter()
                .find(|l| *l.mid == *mid && *l.rid == *rrid)
                .map(|l| l.ssrc),
            None => {
                let mut named = self.layers.iter().filter(|l| *l.rid == *rrid);
                let first = named.next()?;
                named.next().is_none().then_some(first.ssrc)
            }
        }
    }
}

/// RFC 4588 §4: an RTX packet becomes the original it carries: the primary SSRC and
/// payload type, the original sequence number (OSN, the payload's first two bytes)
/// and the payload after it; timestamp, marker, CSRCs and extensions are the
/// original's already. Any padding was the RTX packet's own (`rtp` already cut it
/// from the payload). `false`, and the packet untouched, when there is no OSN.
pub fn unwrap_rtx(packet: &mut rtp::Packet, ssrc: u32, payload_type: u8) -> bool {
    let [hi, lo, ..] = packet.payload[..] else {
        return false;
    };
    packet.header.ssrc = ssrc;
    packet.header.payload_type = payload_type;
    packet.header.sequence_number = u16::from_be_bytes([hi, lo]);
    packet.header.padding = false;
    packet.payload = packet.payload.slice(2..);
    true
}

/// [`LayerRtx`] in `rtc`'s read chain (slot [`LAYER_RTX_SLOT`]).
pub struct LayerRtxInterceptor {
    shared: SharedSettings,
    /// Repairs are counted (`layer_rtx_repaired`).
    stats: StatsPair,
    /// The generation of `shared` that `state` was configured with.
    generation: u64,
    state: LayerRtx,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl LayerRtxInterceptor {
    pub fn new(shared: SharedSettings, stats: StatsPair) -> Self {
        let generation = shared.generation();
        let state = LayerRtx::new(shared.get());
        Self {
            shared,
            stats,
            generation,
            state,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// What `handle_read` does to an RTP packet, without the queue (`own_inbound` calls it
    /// directly): learns layers, turns a layer's RTX back into its packet.
    pub fn observe(&mut self, p: &mut rtp::Packet) {
        let generation = self.shared.generation();
        if generation != self.generation {
            self.generation = generation;
            self.state.configure(self.shared.get());
        }
        if self.state.on_packet(p) == Seen::Repaired {
            self.stats.add(|c| &c.layer_rtx_repaired, 1);
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LayerRtxInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            self.observe(p);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for LayerRtxInterceptor {
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    const MID: u8 = 4;
    const RID: u8 = 10;
    const RRID: u8 = 11;

    /// Chromium 156's numbering: VP8 96 with RTX 97, H.264 102 with RTX 103.
    fn settings() -> Settings {
        Settings::from_negotiated(
            [
                (96, "video/VP8", ""),
                (97, "video/rtx", "apt=96"),
                (102, "video/H264", "packetization-mode=1"),
                (103, "video/rtx", "apt=102"),
            ],
            [
                (
                    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                    3,
                ),
                (MID_URI, MID as u16),
                (RID_URI, RID as u16),
                (RRID_URI, RRID as u16),
            ],
        )
    }

    /// A packet as it is on the wire: one-byte extensions (RFC 8285), padding when
    /// asked (the last byte counts the padding bytes).
    fn wire(ssrc: u32, pt: u8, seq: u16, exts: &[(u8, &[u8])], payload: &[u8], padding: u8) -> Bytes {
        let mut header = rtp::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: 90_000,
            ssrc,
            marker: true,
            ..Default::default()
        };
        for (id, value) in exts {
            header.set_extension(*id, Bytes::copy_from_slice(value)).unwrap();
        }
        let mut raw = header.marshal().unwrap().to_vec();
        raw.extend_from_slice(payload);
        if padding > 0 {
            raw[0] |= 0x20;
            raw.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            raw.push(padding);
        }
        Bytes::from(raw)
    }

    fn parse(raw: &Bytes) -> rtp::Packet {
        rtp::Packet::unmarshal(&mut raw.clone()).unwrap()
    }

    /// Bytes in, bytes out (a packet left unchanged compares as parsed: `rtp`
    /// marshals padding its own way).
    fn run(state: &mut LayerRtx, raw: Bytes) -> (Seen, Bytes) {
        let mut p = parse(&raw);
        let seen = state.on_packet(&mut p);
        let out = if p == parse(&raw) {
            raw
        } else {
            p.marshal().unwrap().freeze()
        };
        (seen, out)
    }

    /// The layers q (SSRC 1) and h (2) of mid 1 seen, and mid 2's own q (3).
    fn learned() -> LayerRtx {
        let mut s = LayerRtx::new(settings());
        for (ssrc, mid, rid) in [(1, b"1", b"q"), (2, b"1", b"h"), (3, b"2", b"q")] {
            let raw = wire(ssrc, 96, 10, &[(MID, mid), (RID, rid)], b"media", 0);
            assert_eq!(run(&mut s, raw.clone()), (Seen::Media, raw), "media passes unchanged");
        }
        s
    }

    #[test]
    fn an_rtx_packet_of_a_layer_becomes_the_packet_it_repairs() {
        let mut s = learned();
        // RTX SSRC 20 repairs h of mid 1: OSN 0x1234, then the original payload; with
        // the transport-cc extension, which stays (it numbers this arrival).
        let tcc: &[u8] = &[0, 7];
        let rtx = wire(
            20,
            97,
            500,
            &[(3, tcc), (MID, b"1"), (RRID, b"h")],
            b"\x12\x34vp8 frame",
            0,
        );
        let (seen, out) = run(&mut s, rtx);
        assert_eq!(seen, Seen::Repaired);
        let original = wire(2, 96, 0x1234, &[(3, tcc), (MID, b"1"), (RRID, b"h")], b"vp8 frame", 0);
        assert_eq!(out, original);
        // Later RTX packets of that SSRC are known without their rrid; H.264's RTX
        // type maps to H.264; padding after the payload is the RTX packet's own.
        let rtx = wire(20, 103, 501, &[], b"\x00\x05h264", 7);
        let (seen, out) = run(&mut s, rtx);
        assert_eq!(seen, Seen::Repaired);
        assert_eq!(out, wire(2, 102, 5, &[], b"h264", 0));
        // The same rid in another section is another layer.
        let rtx = wire(30, 97, 1, &[(MID, b"2"), (RRID, b"q")], b"\xff\xffx", 0);
        let (seen, out) = run(&mut s, rtx);
        assert_eq!(seen, Seen::Repaired);
        assert_eq!(out, wire(3, 96, 0xffff, &[(MID, b"2"), (RRID, b"q")], b"x", 0));
    }

    #[test]
    fn what_cannot_be_repaired_passes_unchanged() {
        let mut s = learned();
        // An rrid no layer was seen with (f never sent yet), or one of another section.
        for (mid, rrid) in [(&b"1"[..], &b"f"[..]), (b"3", b"q")] {
            let raw = wire(21, 97, 1, &[(MID, mid), (RRID, rrid)], b"\x00\x01x", 0);
            assert_eq!(run(&mut s, raw.clone()), (Seen::UnknownLayer, raw));
        }
        // A payload type that is no RTX (or an RTX type of no negotiated codec).
        let raw = wire(20, 96, 1, &[(MID, b"1"), (RRID, b"h")], b"\x00\x01x", 0);
        assert_eq!(run(&mut s, raw.clone()), (Seen::NotRtx, raw));
        // Padding only (a bandwidth probe), and a payload shorter than its OSN.
        let raw = wire(20, 97, 2, &[(MID, b"1"), (RRID, b"h")], b"", 200);
        assert_eq!(run(&mut s, raw.clone()), (Seen::NoOriginal, raw));
        let raw = wire(20, 97, 3, &[], b"\x01", 0);
        assert_eq!(run(&mut s, raw.clone()), (Seen::NoOriginal, raw));
        // Media of a known layer, and packets with no extensions at all.
        for raw in [wire(2, 96, 11, &[], b"media", 0), wire(9, 96, 1, &[], b"\x00\x01", 0)] {
            assert_eq!(run(&mut s, raw.clone()), (Seen::Media, raw));
        }
    }

    #[test]
    fn an_rrid_without_a_mid_names_the_only_layer_of_that_rid() {
        let mut s = learned();
        // h exists in mid 1 only; q in mids 1 and 2: ambiguous.
        let (seen, out) = run(&mut s, wire(20, 97, 1, &[(RRID, b"h")], b"\x00\x09x", 0));
        assert_eq!((seen, out), (Seen::Repaired, wire(2, 96, 9, &[(RRID, b"h")], b"x", 0)));
        let raw = wire(21, 97, 1, &[(RRID, b"q")], b"\x00\x09x", 0);
        assert_eq!(run(&mut s, raw.clone()), (Seen::UnknownLayer, raw));
    }

    #[test]
    fn a_restarted_layer_drops_its_old_rtx_stream() {
        let mut s = learned();
        run(&mut s, wire(20, 97, 1, &[(MID, b"1"), (RRID, b"h")], b"\x00\x01x", 0));
        // h restarts on SSRC 12 (and a new RTX SSRC, 22).
        run(&mut s, wire(12, 96, 1, &[(MID, b"1"), (RID, b"h")], b"m", 0));
        let raw = wire(20, 97, 2, &[], b"\x00\x02x", 0);
        assert_eq!(
            run(&mut s, raw.clone()),
            (Seen::Media, raw),
            "the old RTX SSRC is forgotten"
        );
        let (seen, out) = run(&mut s, wire(22, 97, 1, &[(MID, b"1"), (RRID, b"h")], b"\x00\x03x", 0));
        assert_eq!(
            (seen, out),
            (Seen::Repaired, wire(12, 96, 3, &[(MID, b"1"), (RRID, b"h")], b"x", 0))
        );
    }

    #[test]
    fn nothing_is_rewritten_without_the_extensions_or_an_rtx_codec() {
        let rtx = wire(20, 97, 1, &[(MID, b"1"), (RRID, b"h")], b"\x00\x01x", 0);
        let no_rrid = Settings {
            rrid: None,
            ..settings()
        };
        let no_apt = Settings {
            apt: vec![],
            ..settings()
        };
        for settings in [Settings::default(), no_rrid, no_apt] {
            let mut s = LayerRtx::new(settings.clone());
            run(&mut s, wire(2, 96, 1, &[(MID, b"1"), (RID, b"h")], b"m", 0));
            assert_eq!(run(&mut s, rtx.clone()), (Seen::Media, rtx.clone()), "{settings:?}");
        }
        // Malformed apt and extension ids out of range are ignored.
        let odd = Settings::from_negotiated(
            [(97, "video/rtx", "apt=x"), (99, "video/RTX", "foo=1; apt=98")],
            [(RRID_URI, 300), (RID_URI, 0)],
        );
        assert_eq!(
            odd,
            Settings {
                apt: vec![(99, 98)],
                ..Settings::default()
            }
        );
    }

    #[test]
    fn the_layer_tables_are_bounded() {
        let mut s = LayerRtx::new(settings());
        for n in 0..100u32 {
            let rid = format!("r{n}");
            run(&mut s, wire(n, 96, 1, &[(MID, b"1"), (RID, rid.as_bytes())], b"m", 0));
            run(
                &mut s,
                wire(1000 + n, 97, 1, &[(MID, b"1"), (RRID, rid.as_bytes())], b"\x00\x01x", 0),
            );
        }
        assert_eq!((s.layers.len(), s.rtx.len()), (MAX_STREAMS, MAX_STREAMS));
        let (seen, _) = run(&mut s, wire(1099, 97, 2, &[], b"\x00\x02x", 0));
        assert_eq!(seen, Seen::Repaired, "the newest are kept");
    }

    fn tagged(raw: &Bytes) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(parse(raw))),
        }
    }

    #[test]
    fn the_interceptor_picks_up_settings_set_after_it_was_built() {
        let shared = SharedSettings::default();
        let stats = StatsPair {
            meeting: Default::default(),
            shard: Default::default(),
        };
        let mut i = LayerRtxInterceptor::new(shared.clone(), stats.clone());
        let media = wire(2, 96, 1, &[(MID, b"1"), (RID, b"h")], b"m", 0);
        let rtx = wire(20, 97, 1, &[(MID, b"1"), (RRID, b"h")], b"\x00\x01x", 0);
        let ssrcs = |i: &mut LayerRtxInterceptor| {
            i.handle_read(tagged(&media)).unwrap();
            i.handle_read(tagged(&rtx)).unwrap();
            std::iter::from_fn(|| i.poll_read())
                .map(|m| match m.message.packet {
                    Packet::Rtp(p) => p.header.ssrc,
                    _ => unreachable!("only RTP was read"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ssrcs(&mut i), [2, 20], "no settings yet: unchanged");
        shared.set(settings());
        assert_eq!(ssrcs(&mut i), [2, 2], "repaired");
        assert_eq!(stats.meeting.snapshot().layer_rtx_repaired, 1);
        assert_eq!(stats.shard.snapshot().layer_rtx_repaired, 1);
        assert!(i.poll_timeout().is_none());
    }
}
