//! Synthetic media: a self-describing RTP payload format and the receiver-side
//! statistics that check it.
//!
//! A synthetic stream carries no real audio or video. Every RTP payload holds a
//! small header (stream sequence number, frame number, send time, keyframe flag)
//! and a checksummed filler, so a receiver can measure loss, duplicates,
//! reordering, corruption, jitter and one-way latency without decoding anything.
//! For VP8 the header sits behind a valid VP8 payload descriptor and frame tag,
//! so an SFU (or a real depacketizer) sees keyframes where the sender put them.
//! Synthetic video keeps that framing on H.264, VP9 and AV1 tracks too: an SFU that
//! forwards without looking inside payloads passes it as it would any other, and no
//! decoder could make a picture of a synthetic payload anyway. Synthetic audio can
//! carry an RFC 6464 audio level ([`audio_level`]), so header-extension handling is
//! checked too.
//!
//! The format and the statistics are pure: no IO, no clock. Callers pass times in
//! microseconds since the UNIX epoch; [`crate::now_us`] reads the wall clock. The
//! `sender` part puts them on real tracks: [`LocalTrack::start_synthetic`](crate::LocalTrack::start_synthetic)
//! and [`RemoteTrack::measure_synthetic`](crate::RemoteTrack::measure_synthetic).
//!
//! Behind the `synthetic` feature: load testers and tests want it, staff applications
//! that send real media do not.

use std::collections::VecDeque;
use std::fmt;

use gatehouse_signaling::protocol::TrackKind;

mod sender;
pub use sender::{SyntheticLayerSent, SyntheticSender, SyntheticSent};

/// First four bytes of every synthetic header: `GHSY`.
pub const MAGIC: [u8; 4] = *b"GHSY";

/// Version of the header layout, byte 4 of the header.
pub const VERSION: u8 = 1;

/// Size of the synthetic header in bytes (before the filler).
///
/// Layout, big-endian: magic (4) | version (1) | flags (1) | filler length (2)
/// | sequence (4) | frame (4) | send time µs (8) | checksum (4).
pub const HEADER_LEN: usize = 28;

/// Bytes a VP8 packet spends before the synthetic header: descriptor (1),
/// plus on the first packet of a frame the frame tag (3) and, for keyframes,
/// the start code and dimensions (7).
const VP8_DESCRIPTOR_LEN: usize = 1;
const VP8_FRAME_TAG_LEN: usize = 3;
const VP8_KEYFRAME_HEADER_LEN: usize = 7;
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

const FLAG_KEYFRAME: u8 = 0x01;
const FLAG_FRAME_START: u8 = 0x02;
const FLAG_FRAME_END: u8 = 0x04;
/// Bits 3 and 4 of the flags: the simulcast layer the packet was sent on (0 the
/// smallest; always 0 on a track of one layer, which keeps such payloads as they were).
const FLAG_LAYER_SHIFT: u8 = 3;
const FLAG_LAYER_MASK: u8 = 0x18;

/// The most layers the header can tell apart (two bits).
pub const MAX_LAYERS: u8 = 4;

/// How the synthetic header is wrapped inside the RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyntheticCodec {
    /// Audio: the payload is the synthetic header and filler, nothing else.
    Opus,
    /// Video: a VP8 payload descriptor (RFC 7741) and, on a frame's first
    /// packet, a VP8 frame tag (keyframes also carry the start code and a
    /// 320x240 size), then the synthetic header and filler. Also what synthetic
    /// video sends on H.264, VP9 and AV1 tracks (see the module documentation).
    Vp8,
}

impl SyntheticCodec {
    /// The RTP clock rate of the codec this format poses as.
    pub fn clock_rate(self) -> u32 {
        match self {
            SyntheticCodec::Opus => 48_000,
            SyntheticCodec::Vp8 => 90_000,
        }
    }

    /// Picks the payload format for a negotiated MIME type, case-insensitively:
    /// `audio/opus` is [`Opus`](Self::Opus); the video codecs a publisher can offer
    /// ([`VideoCodec`](crate::VideoCodec): VP8, H.264, VP9, AV1) are [`Vp8`](Self::Vp8).
    pub fn from_mime(mime: &str) -> Option<SyntheticCodec> {
        match mime.to_ascii_lowercase().as_str() {
            "audio/opus" => Some(SyntheticCodec::Opus),
            "video/vp8" | "video/h264" | "video/vp9" | "video/av1" => Some(SyntheticCodec::Vp8),
            _ => None,
        }
    }

    /// The format of a remote track with codec `mime` (empty: unknown) and `kind`: by its
    /// codec, or by its kind when the codec is unknown (one format per kind).
    pub fn of_track(mime: &str, kind: TrackKind) -> Option<SyntheticCodec> {
        if !mime.is_empty() {
            return Self::from_mime(mime);
        }
        Some(match kind {
            TrackKind::Audio => SyntheticCodec::Opus,
            TrackKind::Video => SyntheticCodec::Vp8,
        })
    }

    /// Bytes before the synthetic header for a packet in the given position.
    fn prefix_len(self, frame_start: bool, keyframe: bool) -> usize {
        match self {
            SyntheticCodec::Opus => 0,
            SyntheticCodec::Vp8 => {
                let mut n = VP8_DESCRIPTOR_LEN;
                if frame_start {
                    n += VP8_FRAME_TAG_LEN;
                    if keyframe {
                        n += VP8_KEYFRAME_HEADER_LEN;
                    }
                }
                n
            }
        }
    }
}

/// What a receiver learns from one synthetic payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticPacket {
    /// Per-stream packet counter, starting at 0 and increasing by one per packet.
    pub seq: u32,
    /// Frame counter; all packets of one frame share it.
    pub frame: u32,
    /// Sender's wall clock when the frame was made, µs since the UNIX epoch.
    pub send_time_us: u64,
    /// The frame is a keyframe (for VP8, also what the frame tag says).
    pub keyframe: bool,
    /// First packet of its frame.
    pub frame_start: bool,
    /// Last packet of its frame (the RTP marker bit is set on it too).
    pub frame_end: bool,
    /// Bytes of filler after the header.
    pub filler_len: u16,
    /// The simulcast layer it was sent on (0 the smallest; 0 without simulcast).
    pub layer: u8,
}

/// Why a payload is not an intact synthetic packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The payload ends before the headers do, or the filler is shorter than announced.
    Truncated,
    /// The VP8 descriptor or frame tag is not what a synthetic sender writes.
    BadVp8,
    /// The magic bytes are missing: not a synthetic stream.
    BadMagic,
    /// A header version this code does not know.
    BadVersion(u8),
    /// The checksum does not match: bytes were changed in transit.
    BadChecksum,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated => f.write_str("payload truncated"),
            ParseError::BadVp8 => f.write_str("invalid VP8 payload descriptor or frame tag"),
            ParseError::BadMagic => f.write_str("not a synthetic payload (bad magic)"),
            ParseError::BadVersion(v) => write!(f, "unknown synthetic header version {v}"),
            ParseError::BadChecksum => f.write_str("checksum mismatch"),
        }
    }
}

impl std::error::Error for ParseError {}

/// FNV-1a, 32 bit: cheap, dependency-free, and good enough to catch changed bytes.
fn fnv1a(parts: &[&[u8]]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for &b in *part {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

/// Builds one payload. `payload_len` is the whole RTP payload size; it is raised
/// to the minimum the headers need.
#[allow(clippy::too_many_arguments)]
///
/// ```
/// use gatehouse_sdk::synthetic::{SyntheticCodec, build_payload, parse_payload};
/// let payload = build_payload(SyntheticCodec::Vp8, 7, 3, 1_000_000, true, true, true, 300);
/// let parsed = parse_payload(SyntheticCodec::Vp8, &payload).expect("intact");
/// assert_eq!((parsed.seq, parsed.frame, parsed.keyframe), (7, 3, true));
/// let mut corrupted = payload.clone();
/// *corrupted.last_mut().unwrap() ^= 1;
/// assert!(parse_payload(SyntheticCodec::Vp8, &corrupted).is_err());
/// ```
pub fn build_payload(
    codec: SyntheticCodec,
    seq: u32,
    frame: u32,
    send_time_us: u64,
    keyframe: bool,
    frame_start: bool,
    frame_end: bool,
    payload_len: usize,
) -> Vec<u8> {
    build_layer_payload(
        codec,
        0,
        seq,
        frame,
        send_time_us,
        keyframe,
        frame_start,
        frame_end,
        payload_len,
    )
}

/// [`build_payload`] for simulcast layer `layer` (0 the smallest, below [`MAX_LAYERS`];
/// higher values are cut to two bits), which the header records so a receiver can tell
/// the layers' sequence spaces apart.
///
/// ```
/// use gatehouse_sdk::synthetic::{SyntheticCodec, build_layer_payload, parse_payload};
/// let payload = build_layer_payload(SyntheticCodec::Vp8, 2, 7, 3, 1_000_000, true, true, true, 300);
/// assert_eq!(parse_payload(SyntheticCodec::Vp8, &payload).unwrap().layer, 2);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn build_layer_payload(
    codec: SyntheticCodec,
    layer: u8,
    seq: u32,
    frame: u32,
    send_time_us: u64,
    keyframe: bool,
    frame_start: bool,
    frame_end: bool,
    payload_len: usize,
) -> Vec<u8> {
    let prefix = codec.prefix_len(frame_start, keyframe);
    let min_len = prefix + HEADER_LEN;
    let max_filler = usize::from(u16::MAX);
    let filler_len = payload_len.saturating_sub(min_len).min(max_filler);
    let mut out = Vec::with_capacity(min_len + filler_len);

    if codec == SyntheticCodec::Vp8 {
        // Descriptor: X=0 R=0 N=0 S=frame_start PID=0.
        out.push(if frame_start { 0x10 } else { 0x00 });
        if frame_start {
            // Frame tag: P (bit 0) = 0 for keyframes, version 0, show_frame = 1,
            // first partition size = the filler that follows in this packet.
            let size = (HEADER_LEN + filler_len) as u32 & 0x7_ffff;
            let p = if keyframe { 0 } else { 1 };
            out.push(((size & 0x7) << 5) as u8 | 0x10 | p);
            out.push((size >> 3) as u8);
            out.push((size >> 11) as u8);
            if keyframe {
                out.extend_from_slice(&VP8_START_CODE);
                out.extend_from_slice(&320u16.to_le_bytes());
                out.extend_from_slice(&240u16.to_le_bytes());
            }
        }
    }

    let mut flags = (layer << FLAG_LAYER_SHIFT) & FLAG_LAYER_MASK;
    if keyframe {
        flags |= FLAG_KEYFRAME;
    }
    if frame_start {
        flags |= FLAG_FRAME_START;
    }
    if frame_end {
        flags |= FLAG_FRAME_END;
    }
    let header_at = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&(filler_len as u16).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&frame.to_be_bytes());
    out.extend_from_slice(&send_time_us.to_be_bytes());
    let checksum_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let seed = seq.to_le_bytes()[0];
    out.extend((0..filler_len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(31))));

    let checksum = fnv1a(&[&out[header_at + 4..checksum_at], &out[checksum_at + 4..]]);
    out[checksum_at..checksum_at + 4].copy_from_slice(&checksum.to_be_bytes());
    out
}

/// The RFC 6464 audio level (0 = loudest to 127 = silence, in -dBov) that synthetic
/// audio carries on frame `frame` when its connection negotiated the extension: not
/// a measurement but a pattern (0 to 126, over and over), so a receiver can check
/// that the level arrives with its own packet and unchanged.
///
/// ```
/// use gatehouse_sdk::synthetic::audio_level;
/// assert_eq!((audio_level(0), audio_level(5), audio_level(127 + 5)), (0, 5, 5));
/// ```
pub fn audio_level(frame: u32) -> u8 {
    (frame % 127) as u8
}

/// What the VP8 framing in front of a synthetic header says.
struct Vp8Prefix {
    /// Offset of the synthetic header.
    header_at: usize,
    /// On a frame's first packet: (keyframe, first partition size).
    frame: Option<(bool, u32)>,
}

/// Strips the VP8 descriptor (with any extension fields a repacketizer may add)
/// and, on a frame's first packet, the frame tag, checking what we write there.
fn skip_vp8(payload: &[u8]) -> Result<Vp8Prefix, ParseError> {
    let b0 = *payload.first().ok_or(ParseError::Truncated)?;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let ext = *payload.get(at).ok_or(ParseError::Truncated)?;
        at += 1;
        if ext & 0x80 != 0 {
            let pid = *payload.get(at).ok_or(ParseError::Truncated)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !(start && pid == 0) {
        return Ok(Vp8Prefix {
            header_at: at,
            frame: None,
        });
    }
    let tag = payload.get(at..at + VP8_FRAME_TAG_LEN).ok_or(ParseError::Truncated)?;
    at += VP8_FRAME_TAG_LEN;
    let keyframe = tag[0] & 0x01 == 0;
    let version = (tag[0] >> 1) & 0x07;
    let show_frame = tag[0] & 0x10 != 0;
    if version != 0 || !show_frame {
        return Err(ParseError::BadVp8);
    }
    let size = u32::from(tag[0] >> 5) | (u32::from(tag[1]) << 3) | (u32::from(tag[2]) << 11);
    if keyframe {
        let key = payload
            .get(at..at + VP8_KEYFRAME_HEADER_LEN)
            .ok_or(ParseError::Truncated)?;
        if key[..3] != VP8_START_CODE || key[3..] != [0x40, 0x01, 0xf0, 0x00] {
            return Err(ParseError::BadVp8);
        }
        at += VP8_KEYFRAME_HEADER_LEN;
    }
    Ok(Vp8Prefix {
        header_at: at,
        frame: Some((keyframe, size)),
    })
}

/// Parses and verifies one payload.
pub fn parse_payload(codec: SyntheticCodec, payload: &[u8]) -> Result<SyntheticPacket, ParseError> {
    let vp8 = match codec {
        SyntheticCodec::Opus => None,
        SyntheticCodec::Vp8 => Some(skip_vp8(payload)?),
    };
    let at = vp8.as_ref().map_or(0, |v| v.header_at);
    let rest = payload.get(at..).ok_or(ParseError::Truncated)?;
    if rest.len() < HEADER_LEN {
        // Too short for a header: tell a foreign stream from a cut one by the magic.
        return Err(if rest.len() >= 4 && rest[..4] != MAGIC {
            ParseError::BadMagic
        } else {
            ParseError::Truncated
        });
    }
    if rest[..4] != MAGIC {
        return Err(ParseError::BadMagic);
    }
    if rest[4] != VERSION {
        return Err(ParseError::BadVersion(rest[4]));
    }
    let flags = rest[5];
    let filler_len = u16::from_be_bytes([rest[6], rest[7]]);
    let be32 = |i: usize| u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    let seq = be32(8);
    let frame = be32(12);
    let mut time = [0u8; 8];
    time.copy_from_slice(&rest[16..24]);
    let send_time_us = u64::from_be_bytes(time);
    let checksum = be32(24);
    let filler = &rest[HEADER_LEN..];
    if filler.len() < usize::from(filler_len) {
        return Err(ParseError::Truncated);
    }
    // Extra trailing bytes (e.g. RTP padding left in by a careless stack) are not ours.
    let filler = &filler[..usize::from(filler_len)];
    if fnv1a(&[&rest[4..24], filler]) != checksum {
        return Err(ParseError::BadChecksum);
    }
    let packet = SyntheticPacket {
        seq,
        frame,
        send_time_us,
        keyframe: flags & FLAG_KEYFRAME != 0,
        frame_start: flags & FLAG_FRAME_START != 0,
        frame_end: flags & FLAG_FRAME_END != 0,
        filler_len,
        layer: (flags & FLAG_LAYER_MASK) >> FLAG_LAYER_SHIFT,
    };
    if let Some(vp8) = vp8 {
        // The VP8 view and our header must agree, or something rewrote the payload.
        let consistent = match vp8.frame {
            Some((key, size)) => {
                packet.frame_start && key == packet.keyframe && size as usize == HEADER_LEN + filler.len()
            }
            None => !packet.frame_start,
        };
        if !consistent {
            return Err(ParseError::BadVp8);
        }
    }
    Ok(packet)
}

/// Whether a VP8 RTP payload starts a keyframe, the way an SFU decides it
/// (descriptor S bit and partition 0, then the frame tag's P bit).
pub fn vp8_is_keyframe_start(payload: &[u8]) -> bool {
    matches!(
        skip_vp8(payload),
        Ok(Vp8Prefix {
            frame: Some((true, _)),
            ..
        })
    )
}

/// What a synthetic sender produces and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Payload wrapping and RTP clock rate.
    pub codec: SyntheticCodec,
    /// Target payload bitrate in bits per second (RTP/SRTP overhead not counted).
    pub bitrate_bps: u32,
    /// Frames per second; each frame is one or more packets with the same RTP timestamp.
    pub frame_rate: u32,
    /// Largest RTP payload to produce; frames are split into packets of at most this.
    pub max_payload: usize,
    /// Every how many frames a keyframe is sent (video only; 0 = only the first frame).
    pub keyframe_interval: u32,
}

impl SyntheticConfig {
    /// Audio like Opus at 20 ms frames: 50 packets per second at 32 kbit/s.
    pub fn audio() -> Self {
        SyntheticConfig {
            codec: SyntheticCodec::Opus,
            bitrate_bps: 32_000,
            frame_rate: 50,
            max_payload: 1_100,
            keyframe_interval: 0,
        }
    }

    /// Video like VP8 at 30 frames per second and 500 kbit/s, a keyframe every 2 s.
    pub fn video() -> Self {
        SyntheticConfig {
            codec: SyntheticCodec::Vp8,
            bitrate_bps: 500_000,
            frame_rate: 30,
            max_payload: 1_100,
            keyframe_interval: 60,
        }
    }

    /// Time between frames in microseconds.
    pub fn frame_interval_us(&self) -> u64 {
        1_000_000 / u64::from(self.frame_rate.max(1))
    }

    /// Payload bytes per frame, all packets together.
    pub fn frame_bytes(&self) -> usize {
        (u64::from(self.bitrate_bps) / 8 / u64::from(self.frame_rate.max(1))) as usize
    }

    /// The configuration of layer `layer` of a simulcast track of `layers` (0 the
    /// smallest): the same frame rate and keyframe interval, and a third of the bitrate of
    /// the layer above, so this configuration's `bitrate_bps` is the top layer's and the
    /// layers run at about 1:3:9. A browser's camera layers (a quarter, a half and the full
    /// resolution) run at about 1:3:10 (Chromium's defaults for 720p: 150, 500 and 1 700
    /// kbit/s). What a subscriber receives at the top layer is unchanged by simulcast.
    ///
    /// ```
    /// use gatehouse_sdk::synthetic::SyntheticConfig;
    /// let top = SyntheticConfig { bitrate_bps: 900_000, ..SyntheticConfig::video() };
    /// let rates: Vec<u32> = (0..3).map(|l| top.for_layer(l, 3).bitrate_bps).collect();
    /// assert_eq!(rates, [100_000, 300_000, 900_000]);
    /// assert_eq!(top.for_layer(0, 1), top, "one layer: as configured");
    /// ```
    pub fn for_layer(&self, layer: usize, layers: usize) -> SyntheticConfig {
        let steps = layers.saturating_sub(layer + 1).min(12) as u32;
        SyntheticConfig {
            bitrate_bps: (self.bitrate_bps / 3u32.pow(steps)).max(1),
            ..self.clone()
        }
    }

    /// Packets per frame at this bitrate and payload size (at least one).
    pub fn packets_per_frame(&self) -> usize {
        let room = self.max_payload.max(HEADER_LEN + 12);
        self.frame_bytes().div_ceil(room).max(1)
    }
}

/// One frame's worth of payloads, in sending order.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticFrame {
    /// Frame counter, from 0.
    pub frame: u32,
    /// RTP timestamp offset of this frame from the stream's first, in clock-rate units.
    pub rtp_timestamp: u32,
    /// Whether this frame is a keyframe.
    pub keyframe: bool,
    /// The RTP payloads; the last one gets the marker bit.
    pub payloads: Vec<Vec<u8>>,
}

/// The sending half: a state machine that turns "time is now T" into frames.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    config: SyntheticConfig,
    /// The simulcast layer its payloads say they belong to.
    layer: u8,
    next_seq: u32,
    next_frame: u32,
    force_keyframe: bool,
}

impl SyntheticSource {
    /// A source starting at sequence 0, frame 0 (a keyframe for video).
    pub fn new(config: SyntheticConfig) -> Self {
        Self::for_layer(config, 0)
    }

    /// A source for simulcast layer `layer` (0 the smallest; see [`build_layer_payload`]),
    /// with its own sequence numbers. Give it [`SyntheticConfig::for_layer`]; tick the
    /// sources of one track together (a paused layer with [`skip_frame`](Self::skip_frame))
    /// and their frames keep the same numbers and RTP timestamps.
    pub fn for_layer(config: SyntheticConfig, layer: u8) -> Self {
        SyntheticSource {
            config,
            layer,
            next_seq: 0,
            next_frame: 0,
            force_keyframe: false,
        }
    }

    /// The simulcast layer of this source.
    pub fn layer(&self) -> u8 {
        self.layer
    }

    /// Lets a frame pass without producing it (a paused simulcast layer): the frame
    /// number and RTP timestamp move on, the sequence numbers do not.
    pub fn skip_frame(&mut self) {
        self.next_frame = self.next_frame.wrapping_add(1);
    }

    /// The configuration this source follows.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Makes the next frame a keyframe (e.g. on a PLI from the receiver).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Produces the next frame, stamped with `now_us` as its send time.
    pub fn next_frame(&mut self, now_us: u64) -> SyntheticFrame {
        let config = &self.config;
        let frame = self.next_frame;
        let keyframe = config.codec == SyntheticCodec::Vp8
            && (frame == 0 || self.force_keyframe || frame.is_multiple_of(config.keyframe_interval));
        self.force_keyframe = false;
        let count = config.packets_per_frame();
        let per_packet = config.frame_bytes() / count;
        let payloads = (0..count)
            .map(|i| {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1);
                build_layer_payload(
                    config.codec,
                    self.layer,
                    seq,
                    frame,
                    now_us,
                    keyframe,
                    i == 0,
                    i + 1 == count,
                    per_packet,
                )
            })
            .collect();
        let rtp_timestamp =
            (u64::from(frame) * u64::from(config.codec.clock_rate()) / u64::from(config.frame_rate.max(1))) as u32;
        self.next_frame = self.next_frame.wrapping_add(1);
        SyntheticFrame {
            frame,
            rtp_timestamp,
            keyframe,
            payloads,
        }
    }
}

/// Sub-buckets per power of two in [`LatencyHistogram`]: about 3 % resolution.
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
const HISTOGRAM_BUCKETS: usize = (2 * SUB_BUCKETS + (63 - SUB_BUCKET_BITS as u64) * SUB_BUCKETS) as usize;

/// A log-linear histogram of microsecond values: exact below 64, within about
/// 3 % above; fixed size (about 15 KiB) and mergeable across streams.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    min: u64,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("p50", &self.percentile(0.5))
            .field("max", &self.max)
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; HISTOGRAM_BUCKETS],
            total: 0,
            max: 0,
            min: u64::MAX,
        }
    }
}

impl LatencyHistogram {
    fn index(value: u64) -> usize {
        if value < 2 * SUB_BUCKETS {
            return value as usize;
        }
        let exp = 63 - u64::from(value.leading_zeros());
        let shift = exp - u64::from(SUB_BUCKET_BITS);
        let top = value >> shift; // in [SUB_BUCKETS, 2 * SUB_BUCKETS)
        (2 * SUB_BUCKETS + (exp - u64::from(SUB_BUCKET_BITS) - 1) * SUB_BUCKETS + (top - SUB_BUCKETS)) as usize
    }

    /// The smallest value and the width of a bucket.
    fn bucket_range(index: usize) -> (u64, u64) {
        let index = index as u64;
        if index < 2 * SUB_BUCKETS {
            return (index, 1);
        }
        let rel = index - 2 * SUB_BUCKETS;
        let exp = rel / SUB_BUCKETS + u64::from(SUB_BUCKET_BITS) + 1;
        let shift = exp - u64::from(SUB_BUCKET_BITS);
        let top = rel % SUB_BUCKETS + SUB_BUCKETS;
        (top << shift, 1 << shift)
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
        self.min = self.min.min(value);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.min = self.min.min(other.min);
    }

    /// What was recorded since `earlier`, an earlier copy of this same histogram: the
    /// difference of the counts (a window of a histogram that only grew meanwhile). Its
    /// smallest and largest values are known to the resolution of their buckets only, within
    /// this histogram's exact ones.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut out = LatencyHistogram::default();
        for (i, (now, then)) in self.counts.iter().zip(&earlier.counts).enumerate() {
            let n = now.saturating_sub(*then);
            if n == 0 {
                continue;
            }
            out.counts[i] = n;
            out.total += n;
            let (low, width) = Self::bucket_range(i);
            out.min = out.min.min(low.max(self.min));
            out.max = out.max.max((low + (width - 1)).min(self.max));
        }
        out
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact), or `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The smallest value recorded (exact), or `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    /// The value at quantile `q` (0.0..=1.0), to the histogram's resolution and
    /// clamped to the exact min and max; `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = Self::bucket_range(index);
                return Some((low + (width - 1) / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// The packets of one keyframe seen so far (duplicates never reach it).
#[derive(Debug, Clone, Copy, Default)]
struct KeyframeAssembly {
    frame: u32,
    first_seq: Option<u32>,
    last_seq: Option<u32>,
    packets: u32,
}

impl KeyframeAssembly {
    /// Counts one packet of the frame; true once every packet is in.
    fn add(&mut self, packet: &SyntheticPacket) -> bool {
        self.packets += 1;
        if packet.frame_start {
            self.first_seq = Some(packet.seq);
        }
        if packet.frame_end {
            self.last_seq = Some(packet.seq);
        }
        match (self.first_seq, self.last_seq) {
            (Some(first), Some(last)) => last.wrapping_sub(first).wrapping_add(1) == self.packets,
            _ => false,
        }
    }
}

/// How many sequence numbers back duplicates are still recognised.
const SEEN_WINDOW: u32 = 4096;

/// How many replaced runs a repair can still fill ([`ReceiverStats::on_packet`]).
const CLOSED_RUNS: usize = 8;

/// One run of a layer's packets: the sequence numbers from its lowest to its highest,
/// and which of the latest [`SEEN_WINDOW`] arrived.
#[derive(Debug, Clone)]
struct SeqRun {
    lowest: u32,
    highest: u32,
    seen: Vec<u64>,
}

/// How a packet fits its run.
enum Placed {
    /// New and in order (or after a gap).
    Next,
    /// New, behind a later one.
    Late,
    Duplicate,
    TooOld,
}

impl SeqRun {
    fn new(seq: u32) -> SeqRun {
        let mut run = SeqRun {
            lowest: seq,
            highest: seq,
            seen: vec![0; (SEEN_WINDOW / 64) as usize],
        };
        let (word, bit) = run.bit(seq);
        *word |= bit;
        run
    }

    /// The packets the sender sent from the lowest to the highest.
    fn expected(&self) -> u64 {
        u64::from(self.highest - self.lowest) + 1
    }

    fn bit(&mut self, seq: u32) -> (&mut u64, u64) {
        let slot = seq % SEEN_WINDOW;
        (&mut self.seen[(slot / 64) as usize], 1u64 << (slot % 64))
    }

    fn place(&mut self, seq: u32) -> Placed {
        if seq > self.highest {
            // Forget the window slots the new highest reuses.
            let advance = seq - self.highest;
            if advance >= SEEN_WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.highest + 1..=seq {
                    let (word, bit) = self.bit(s);
                    *word &= !bit;
                }
            }
            self.highest = seq;
            let (word, bit) = self.bit(seq);
            *word |= bit;
            Placed::Next
        } else if self.highest - seq >= SEEN_WINDOW {
            // Too far behind to tell a duplicate from a straggler.
            Placed::TooOld
        } else {
            let (word, bit) = self.bit(seq);
            if *word & bit != 0 {
                return Placed::Duplicate;
            }
            *word |= bit;
            self.lowest = self.lowest.min(seq);
            Placed::Late
        }
    }
}

/// Receiver-side statistics for one synthetic stream. Feed it every payload
/// with its arrival time; read a [`StreamSummary`] whenever you like.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    codec: SyntheticCodec,
    started_at_us: u64,
    first_arrival_us: Option<u64>,
    last_arrival_us: u64,
    /// The layer being received (of the latest packet that was not a straggler).
    layer: u8,
    /// How often that changed (a forwarding SFU switched layers).
    layer_switches: u64,
    /// The packets the sender sent in runs that a later run of their layer replaced and that
    /// fell out of `closed`.
    earlier_expected: u64,
    /// Per simulcast layer, its latest run.
    runs: Vec<Option<SeqRun>>,
    /// The last [`CLOSED_RUNS`] runs a later run of their layer replaced (with the layer),
    /// oldest first: a repair that comes after the next run began still fills its hole.
    closed: VecDeque<(u8, SeqRun)>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    too_old: u64,
    corrupt: u64,
    bytes: u64,
    keyframes: u64,
    first_keyframe_us: Option<u64>,
    /// The keyframe being put together until the first one is complete.
    assembling: Option<KeyframeAssembly>,
    first_complete_keyframe_us: Option<u64>,
    last_transit_us: Option<i64>,
    jitter_us: f64,
    latency: LatencyHistogram,
}

impl ReceiverStats {
    /// Statistics for a stream the receiver started waiting for at `started_at_us`
    /// (for time to first packet).
    ///
    /// ```
    /// use gatehouse_sdk::synthetic::{ReceiverStats, SyntheticCodec, build_payload};
    /// let mut stats = ReceiverStats::new(SyntheticCodec::Opus, 0);
    /// for seq in [0u32, 1, 3] {
    ///     let payload = build_payload(SyntheticCodec::Opus, seq, seq, 1_000, false, true, true, 80);
    ///     stats.on_payload(3_000, &payload).unwrap();
    /// }
    /// let summary = stats.summary();
    /// assert_eq!((summary.received, summary.lost), (3, 1));
    /// ```
    pub fn new(codec: SyntheticCodec, started_at_us: u64) -> Self {
        ReceiverStats {
            codec,
            started_at_us,
            first_arrival_us: None,
            last_arrival_us: 0,
            layer: 0,
            layer_switches: 0,
            earlier_expected: 0,
            runs: vec![None; usize::from(MAX_LAYERS)],
            closed: VecDeque::new(),
            unique: 0,
            duplicates: 0,
            reordered: 0,
            too_old: 0,
            corrupt: 0,
            bytes: 0,
            keyframes: 0,
            first_keyframe_us: None,
            assembling: None,
            first_complete_keyframe_us: None,
            last_transit_us: None,
            jitter_us: 0.0,
            latency: LatencyHistogram::default(),
        }
    }

    /// Parses one RTP payload that arrived at `arrival_us` and counts it.
    /// Corrupt payloads are counted and returned as errors.
    pub fn on_payload(&mut self, arrival_us: u64, payload: &[u8]) -> Result<SyntheticPacket, ParseError> {
        match parse_payload(self.codec, payload) {
            Ok(packet) => {
                self.on_packet(arrival_us, &packet, payload.len());
                Ok(packet)
            }
            Err(e) => {
                self.corrupt += 1;
                Err(e)
            }
        }
    }

    /// Counts one already parsed packet of `payload_len` bytes.
    ///
    /// Each simulcast layer numbers its own packets, and a forwarding SFU switches
    /// between them. A packet of another layer than the one being received starts a new
    /// run of its layer, unless it falls inside that layer's latest run (a straggler or a
    /// repair sent before the switch, which fills its hole). Loss, duplicates and order are
    /// counted within each run, and `expected` adds up the runs: neither the old layer's
    /// packets the SFU stopped forwarding nor the new layer's it had not forwarded yet
    /// count as lost. A packet older than its layer's latest run that falls inside one of
    /// the layer's last [`CLOSED_RUNS`] runs fills that run's hole: a repair can come after
    /// the next run began (a lost packet at the end of a layer's run is repaired after the
    /// switch, looks like a switch back, and the next packet of the layer being received
    /// then starts a run of its own while that run's losses are still being repaired).
    pub fn on_packet(&mut self, arrival_us: u64, packet: &SyntheticPacket, payload_len: usize) {
        let seq = packet.seq;
        let layer = packet.layer.min(MAX_LAYERS - 1);
        let run = &mut self.runs[usize::from(layer)];
        let earlier = match run {
            Some(r) if seq >= r.lowest => None,
            _ => self
                .closed
                .iter()
                .rposition(|(l, r)| *l == layer && (r.lowest..=r.highest).contains(&seq)),
        };
        let straggler = run.as_ref().is_some_and(|r| seq <= r.highest);
        let placed = match (earlier, run) {
            (Some(i), _) => self.closed[i].1.place(seq),
            (None, Some(r)) if layer == self.layer || straggler => r.place(seq),
            (None, run) => {
                // A new run: the first packet, or the SFU switched to this layer.
                if let Some(old) = run.replace(SeqRun::new(seq)) {
                    self.closed.push_back((layer, old));
                    if self.closed.len() > CLOSED_RUNS
                        && let Some((_, oldest)) = self.closed.pop_front()
                    {
                        self.earlier_expected += oldest.expected();
                    }
                }
                if self.first_arrival_us.is_some() && layer != self.layer {
                    self.layer_switches += 1;
                }
                self.layer = layer;
                Placed::Next
            }
        };
        self.first_arrival_us.get_or_insert(arrival_us);
        match placed {
            Placed::Next => {}
            Placed::Late => self.reordered += 1,
            Placed::Duplicate => {
                self.duplicates += 1;
                return;
            }
            Placed::TooOld => {
                self.too_old += 1;
                return;
            }
        }

        self.unique += 1;
        self.bytes += payload_len as u64;
        self.last_arrival_us = self.last_arrival_us.max(arrival_us);
        if packet.keyframe && packet.frame_start {
            self.keyframes += 1;
            self.first_keyframe_us.get_or_insert(arrival_us);
        }
        if packet.keyframe && self.first_complete_keyframe_us.is_none() {
            let assembly = match &mut self.assembling {
                Some(a) if a.frame == packet.frame => a,
                // A later keyframe replaces an incomplete earlier one (its loss was not repaired).
                slot => slot.insert(KeyframeAssembly {
                    frame: packet.frame,
                    ..KeyframeAssembly::default()
                }),
            };
            if assembly.add(packet) {
                self.first_complete_keyframe_us = Some(arrival_us);
                self.assembling = None;
            }
        }
        let transit = arrival_us as i64 - packet.send_time_us as i64;
        self.latency.record(transit.max(0) as u64);
        if let Some(last) = self.last_transit_us {
            // RFC 3550 interarrival jitter, in µs rather than RTP clock units.
            let d = (transit - last).unsigned_abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit_us = Some(transit);
    }

    /// The simulcast layer of the latest packet (0 without simulcast, or before any).
    pub fn layer(&self) -> u8 {
        self.layer
    }

    /// How many times the layer changed from one packet to the next (see
    /// [`on_packet`](Self::on_packet)).
    pub fn layer_switches(&self) -> u64 {
        self.layer_switches
    }

    /// Forgets the latencies recorded so far (loss and order counters stay), so
    /// percentiles describe only what follows, e.g. a load test's steady phase
    /// rather than its join burst.
    pub fn reset_latency(&mut self) {
        self.latency = LatencyHistogram::default();
    }

    /// The latency histogram (arrival minus send time, µs; negative clamps to 0).
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// A snapshot of everything counted so far.
    pub fn summary(&self) -> StreamSummary {
        let expected = self.earlier_expected
            + self.closed.iter().map(|(_, r)| r.expected()).sum::<u64>()
            + self.runs.iter().flatten().map(SeqRun::expected).sum::<u64>();
        let current = self.runs[usize::from(self.layer)].as_ref();
        let duration_us = self
            .first_arrival_us
            .map_or(0, |first| self.last_arrival_us.saturating_sub(first));
        StreamSummary {
            received: self.unique,
            expected,
            lost: expected.saturating_sub(self.unique),
            duplicates: self.duplicates,
            reordered: self.reordered,
            too_old: self.too_old,
            corrupt: self.corrupt,
            bytes: self.bytes,
            keyframes: self.keyframes,
            first_seq: current.map(|r| r.lowest),
            last_seq: current.map(|r| r.highest),
            time_to_first_packet_us: self.first_arrival_us.map(|t| t.saturating_sub(self.started_at_us)),
            time_to_first_keyframe_us: self.first_keyframe_us.map(|t| t.saturating_sub(self.started_at_us)),
            time_to_first_complete_keyframe_us: self
                .first_complete_keyframe_us
                .map(|t| t.saturating_sub(self.started_at_us)),
            bitrate_bps: if duration_us >= BITRATE_SPAN_US {
                self.bytes as f64 * 8.0 * 1e6 / duration_us as f64
            } else {
                0.0
            },
            jitter_us: self.jitter_us,
            latency_p50_us: self.latency.percentile(0.50),
            latency_p95_us: self.latency.percentile(0.95),
            latency_p99_us: self.latency.percentile(0.99),
            latency_max_us: self.latency.max(),
        }
    }
}

/// The shortest span of arrivals a stream's bitrate is stated over, µs.
pub const BITRATE_SPAN_US: u64 = 1_000_000;

/// Counters and figures for one stream at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummary {
    /// Distinct valid packets received.
    pub received: u64,
    /// Packets the sender sent between the lowest and highest sequence seen (added up
    /// over the runs of one simulcast layer each, see [`ReceiverStats::on_packet`]).
    pub expected: u64,
    /// `expected - received`: never arrived (or arrived too late to place).
    pub lost: u64,
    /// Packets received more than once (extra copies).
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number had.
    pub reordered: u64,
    /// Packets more than 4096 behind the highest: neither counted nor deduplicated.
    pub too_old: u64,
    /// Payloads that failed to parse or verify.
    pub corrupt: u64,
    /// Payload bytes of the distinct valid packets.
    pub bytes: u64,
    /// Keyframes seen (counted on their first packet).
    pub keyframes: u64,
    /// Lowest sequence number seen (in the current run of one simulcast layer, see
    /// [`ReceiverStats::on_packet`]).
    pub first_seq: Option<u32>,
    /// Highest sequence number seen (in the current run of one layer).
    pub last_seq: Option<u32>,
    /// From `started_at_us` to the first packet.
    pub time_to_first_packet_us: Option<u64>,
    /// From `started_at_us` to the first keyframe's first packet (video).
    pub time_to_first_keyframe_us: Option<u64>,
    /// From `started_at_us` to the arrival that completed the first keyframe: every
    /// packet from its first to its last (marker) present, the earliest moment a
    /// decoder could show a picture (video).
    pub time_to_first_complete_keyframe_us: Option<u64>,
    /// Payload bitrate between the first and the last arrival, once they are at least
    /// [`BITRATE_SPAN_US`] apart (0 before: a frame's packets arrive microseconds apart, and
    /// their bytes over that would be gigabits per second).
    pub bitrate_bps: f64,
    /// RFC 3550 interarrival jitter, µs.
    pub jitter_us: f64,
    /// One-way latency percentiles, µs (only meaningful with synchronised clocks).
    pub latency_p50_us: Option<u64>,
    /// 95th percentile latency, µs.
    pub latency_p95_us: Option<u64>,
    /// 99th percentile latency, µs.
    pub latency_p99_us: Option<u64>,
    /// Largest latency seen, µs.
    pub latency_max_us: Option<u64>,
}

impl StreamSummary {
    /// Lost packets as a fraction of expected ones (0.0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    fn packet(codec: SyntheticCodec, seq: u32, send: u64) -> Vec<u8> {
        build_payload(codec, seq, seq, send, false, true, true, 200)
    }

    #[test]
    fn opus_payload_round_trips() {
        let p = build_payload(SyntheticCodec::Opus, 7, 3, T0, false, true, false, 300);
        assert_eq!(p.len(), 300);
        assert_eq!(&p[..4], &MAGIC);
        let parsed = parse_payload(SyntheticCodec::Opus, &p).unwrap();
        assert_eq!(
            parsed,
            SyntheticPacket {
                seq: 7,
                frame: 3,
                send_time_us: T0,
                keyframe: false,
                frame_start: true,
                frame_end: false,
                filler_len: (300 - HEADER_LEN) as u16,
                layer: 0,
            }
        );
    }

    #[test]
    fn the_layer_travels_in_the_flags_and_is_covered_by_the_checksum() {
        for layer in 0..MAX_LAYERS {
            let p = build_layer_payload(SyntheticCodec::Vp8, layer, 9, 4, T0, true, true, true, 400);
            let parsed = parse_payload(SyntheticCodec::Vp8, &p).unwrap();
            assert_eq!((parsed.layer, parsed.seq, parsed.keyframe), (layer, 9, true));
        }
        let p = build_layer_payload(SyntheticCodec::Opus, 1, 9, 4, T0, false, true, true, 100);
        let mut other_layer = p.clone();
        other_layer[5] ^= 0x18;
        assert_eq!(
            parse_payload(SyntheticCodec::Opus, &other_layer),
            Err(ParseError::BadChecksum)
        );
        assert_eq!(
            build_payload(SyntheticCodec::Opus, 9, 4, T0, false, true, true, 100),
            build_layer_payload(SyntheticCodec::Opus, 0, 9, 4, T0, false, true, true, 100),
            "layer 0 is the payload of a track of one layer"
        );
    }

    #[test]
    fn layer_sources_keep_frames_and_timestamps_together_while_one_pauses() {
        let top = SyntheticConfig {
            bitrate_bps: 900_000,
            keyframe_interval: 0,
            ..SyntheticConfig::video()
        };
        let mut sources: Vec<SyntheticSource> = (0..3)
            .map(|l| SyntheticSource::for_layer(top.for_layer(l, 3), l as u8))
            .collect();
        let bytes = |f: &SyntheticFrame| f.payloads.iter().map(Vec::len).sum::<usize>();
        let first: Vec<SyntheticFrame> = sources.iter_mut().map(|s| s.next_frame(T0)).collect();
        assert!(first.iter().all(|f| f.keyframe && f.frame == 0));
        let sizes: Vec<usize> = first.iter().map(bytes).collect();
        assert!(
            sizes[0] * 2 < sizes[1] && sizes[1] * 2 < sizes[2],
            "about 1:3:9: {sizes:?}"
        );
        // Layer 2 pauses for two frames, then resumes with a keyframe on request.
        for _ in 0..2 {
            sources[0].next_frame(T0);
            sources[1].next_frame(T0);
            sources[2].skip_frame();
        }
        sources[2].request_keyframe();
        let next: Vec<SyntheticFrame> = sources.iter_mut().map(|s| s.next_frame(T0)).collect();
        assert!(next.iter().all(|f| f.frame == 3));
        assert!(next.iter().all(|f| f.rtp_timestamp == next[0].rtp_timestamp));
        assert_eq!(
            next.iter().map(|f| f.keyframe).collect::<Vec<_>>(),
            [false, false, true]
        );
        let resumed = parse_payload(SyntheticCodec::Vp8, &next[2].payloads[0]).unwrap();
        assert_eq!((resumed.layer, resumed.seq), (2, first[2].payloads.len() as u32));
    }

    /// Feeds `stats` the VP8 packets `seqs` of simulcast `layer`, all arriving at once.
    fn feed_layer(stats: &mut ReceiverStats, layer: u8, seqs: &[u32]) {
        for &seq in seqs {
            let p = build_layer_payload(SyntheticCodec::Vp8, layer, seq, seq, T0, false, true, true, 200);
            stats.on_payload(T0 + 1_000, &p).unwrap();
        }
    }

    #[test]
    fn a_layer_switch_starts_a_run_and_loses_nothing() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Vp8, T0);
        let mut feed = |layer: u8, seqs: &[u32]| feed_layer(&mut stats, layer, seqs);
        // Layer 0 from 100 to 106 (103 and 105 lost), then layer 2 from 40, then back to 0 at
        // 300. 103 comes late, after the switch: a repair, which fills layer 0's run.
        feed(0, &[100, 101, 102, 104, 106]);
        feed(2, &[40, 41]);
        feed(0, &[103]);
        feed(2, &[42, 42]);
        feed(0, &[300, 301]);
        let summary = stats.summary();
        assert_eq!(summary.received, 11);
        assert_eq!(summary.expected, 7 + 3 + 2);
        assert_eq!(summary.lost, 1, "only 105, a gap inside a run");
        assert_eq!((summary.reordered, summary.duplicates), (1, 1));
        assert_eq!((summary.first_seq, summary.last_seq), (Some(300), Some(301)));
        assert_eq!(
            (stats.layer(), stats.layer_switches()),
            (0, 2),
            "the repair was no switch"
        );
    }

    /// The flake of `tests/sfu.rs`'s `packets_lost_toward_a_subscriber_are_resent_from_the_cache`
    /// under load ("2 lost" with every payload repaired), replayed.
    #[test]
    fn a_repair_after_the_next_run_of_its_layer_began_still_fills_its_hole() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Vp8, T0);
        let mut feed = |layer: u8, seqs: &[u32]| feed_layer(&mut stats, layer, seqs);
        // Layer 0 up to 109, its 110 lost; the SFU switches to layer 1: 500, 502 (501 lost).
        // 110's repair comes now, past the end of layer 0's run: as far as the receiver can
        // tell, a switch back to layer 0, so layer 1's 503 starts a run of its own. 501's
        // repair comes after that: it fills the hole in the run before.
        feed(0, &[105, 106, 107, 108, 109]);
        feed(1, &[500, 502]);
        feed(0, &[110]);
        feed(1, &[503, 501, 504]);
        // A second copy of the repair is a duplicate there.
        feed(1, &[501]);
        let summary = stats.summary();
        assert_eq!(summary.received, 11);
        assert_eq!(summary.expected, 5 + 3 + 1 + 2);
        assert_eq!(summary.lost, 0, "every payload arrived: {summary:?}");
        assert_eq!((summary.reordered, summary.duplicates), (1, 1));
        assert_eq!(
            (stats.layer(), summary.first_seq, summary.last_seq),
            (1, Some(503), Some(504))
        );
    }

    #[test]
    fn vp8_keyframe_has_valid_descriptor_and_frame_tag() {
        let p = build_payload(SyntheticCodec::Vp8, 0, 0, T0, true, true, false, 1000);
        assert_eq!(p.len(), 1000);
        assert_eq!(p[0], 0x10, "S=1, PID=0");
        assert_eq!(p[1] & 0x01, 0, "P bit 0 = keyframe");
        assert_eq!(p[1] & 0x10, 0x10, "show_frame");
        assert_eq!(&p[4..7], &VP8_START_CODE);
        assert_eq!(u16::from_le_bytes([p[7], p[8]]), 320);
        assert_eq!(u16::from_le_bytes([p[9], p[10]]), 240);
        assert!(vp8_is_keyframe_start(&p));
        let parsed = parse_payload(SyntheticCodec::Vp8, &p).unwrap();
        assert!(parsed.keyframe && parsed.frame_start && !parsed.frame_end);
        // The first partition size in the tag covers the rest of this packet.
        let size = (u32::from(p[1]) >> 5) | (u32::from(p[2]) << 3) | (u32::from(p[3]) << 11);
        assert_eq!(size as usize, 1000 - 11);
    }

    #[test]
    fn vp8_interframe_and_continuation_packets() {
        let inter = build_payload(SyntheticCodec::Vp8, 5, 2, T0, false, true, false, 500);
        assert_eq!(inter[0], 0x10);
        assert_eq!(inter[1] & 0x01, 1, "P bit 1 = interframe");
        assert!(!vp8_is_keyframe_start(&inter));
        assert!(!parse_payload(SyntheticCodec::Vp8, &inter).unwrap().keyframe);

        // Later packets of a keyframe: S=0, no frame tag, still flagged keyframe in our header.
        let cont = build_payload(SyntheticCodec::Vp8, 6, 2, T0, true, false, true, 500);
        assert_eq!(cont[0], 0x00);
        assert_eq!(&cont[1..5], &MAGIC);
        assert!(!vp8_is_keyframe_start(&cont));
        let parsed = parse_payload(SyntheticCodec::Vp8, &cont).unwrap();
        assert!(parsed.keyframe && !parsed.frame_start && parsed.frame_end);
    }

    #[test]
    fn vp8_parser_skips_extended_descriptor() {
        // A repacketizer may add X with a 15-bit picture id, TL0PICIDX and TID/KEYIDX.
        let p = build_payload(SyntheticCodec::Vp8, 9, 4, T0, true, true, true, 400);
        let mut ext = vec![0x90, 0xf0, 0x81, 0x23, 0x05, 0x20];
        ext.extend_from_slice(&p[1..]);
        assert!(vp8_is_keyframe_start(&ext));
        assert_eq!(parse_payload(SyntheticCodec::Vp8, &ext).unwrap().seq, 9);
    }

    #[test]
    fn tiny_payload_request_grows_to_header_size() {
        let p = build_payload(SyntheticCodec::Vp8, 1, 1, T0, true, true, true, 0);
        assert_eq!(p.len(), 1 + 3 + 7 + HEADER_LEN);
        assert_eq!(parse_payload(SyntheticCodec::Vp8, &p).unwrap().filler_len, 0);
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        for codec in [SyntheticCodec::Opus, SyntheticCodec::Vp8] {
            let p = build_payload(codec, 42, 7, T0, true, true, true, 120);
            for i in 0..p.len() {
                let mut bad = p.clone();
                bad[i] ^= 0x04;
                assert!(
                    parse_payload(codec, &bad).is_err(),
                    "{codec:?}: flip in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncation_and_foreign_payloads_are_errors() {
        let p = build_payload(SyntheticCodec::Opus, 1, 1, T0, false, true, true, 100);
        assert_eq!(
            parse_payload(SyntheticCodec::Opus, &p[..99]),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            parse_payload(SyntheticCodec::Opus, &p[..10]),
            Err(ParseError::Truncated)
        );
        assert_eq!(parse_payload(SyntheticCodec::Opus, &[]), Err(ParseError::Truncated));
        assert_eq!(parse_payload(SyntheticCodec::Vp8, &[]), Err(ParseError::Truncated));
        assert_eq!(
            parse_payload(SyntheticCodec::Opus, &[0xfc; 60]),
            Err(ParseError::BadMagic)
        );
        let mut v2 = p.clone();
        v2[4] = 2;
        assert_eq!(parse_payload(SyntheticCodec::Opus, &v2), Err(ParseError::BadVersion(2)));
        // Trailing bytes past the announced filler are tolerated.
        let mut longer = p.clone();
        longer.extend_from_slice(&[0, 0, 4]);
        assert!(parse_payload(SyntheticCodec::Opus, &longer).is_ok());
        // A VP8 frame tag that disagrees with our keyframe flag is corruption.
        let mut lie = build_payload(SyntheticCodec::Vp8, 1, 1, T0, false, true, true, 100);
        lie[1] &= !0x01;
        assert!(parse_payload(SyntheticCodec::Vp8, &lie).is_err());
    }

    #[test]
    fn codec_from_mime() {
        assert_eq!(SyntheticCodec::from_mime("audio/opus"), Some(SyntheticCodec::Opus));
        assert_eq!(SyntheticCodec::from_mime("video/VP8"), Some(SyntheticCodec::Vp8));
        for video in ["video/H264", "video/VP9", "video/av1"] {
            assert_eq!(SyntheticCodec::from_mime(video), Some(SyntheticCodec::Vp8), "{video}");
        }
        assert_eq!(SyntheticCodec::from_mime("audio/PCMU"), None);
        assert_eq!(SyntheticCodec::from_mime("video/H265"), None);
    }

    /// A remote track whose codec webrtc-rs did not know as it opened is judged by its kind;
    /// a known codec still decides (an unknown one is no synthetic format whatever the kind).
    #[test]
    fn a_track_without_a_codec_is_judged_by_its_kind() {
        assert_eq!(
            SyntheticCodec::of_track("", TrackKind::Audio),
            Some(SyntheticCodec::Opus)
        );
        assert_eq!(
            SyntheticCodec::of_track("", TrackKind::Video),
            Some(SyntheticCodec::Vp8)
        );
        assert_eq!(
            SyntheticCodec::of_track("video/H264", TrackKind::Video),
            Some(SyntheticCodec::Vp8)
        );
        assert_eq!(
            SyntheticCodec::of_track("audio/opus", TrackKind::Audio),
            Some(SyntheticCodec::Opus)
        );
        assert_eq!(SyntheticCodec::of_track("video/H265", TrackKind::Video), None);
    }

    #[test]
    fn audio_levels_cycle_through_the_loud_ones() {
        let levels: Vec<u8> = (0..300).map(audio_level).collect();
        assert!(levels.iter().all(|&l| l < 127), "127 (silence) is never used");
        assert_eq!(levels[126], 126);
        assert_eq!(levels[127], 0);
        assert_eq!(audio_level(u32::MAX), (u32::MAX % 127) as u8);
    }

    #[test]
    fn source_splits_frames_and_paces_rtp_timestamps() {
        let config = SyntheticConfig {
            bitrate_bps: 240_000,
            frame_rate: 10,
            max_payload: 1000,
            ..SyntheticConfig::video()
        };
        assert_eq!(config.frame_bytes(), 3000);
        assert_eq!(config.packets_per_frame(), 3);
        assert_eq!(config.frame_interval_us(), 100_000);
        let mut source = SyntheticSource::new(config);
        let f0 = source.next_frame(T0);
        assert!(f0.keyframe);
        assert_eq!(f0.payloads.len(), 3);
        assert_eq!(f0.rtp_timestamp, 0);
        assert!(vp8_is_keyframe_start(&f0.payloads[0]));
        let parsed: Vec<_> = f0
            .payloads
            .iter()
            .map(|p| parse_payload(SyntheticCodec::Vp8, p).unwrap())
            .collect();
        assert_eq!(parsed.iter().map(|p| p.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(parsed[0].frame_start && !parsed[0].frame_end);
        assert!(!parsed[2].frame_start && parsed[2].frame_end);
        let total: usize = f0.payloads.iter().map(Vec::len).sum();
        assert!((3000..3100).contains(&total), "frame of {total} bytes");

        let f1 = source.next_frame(T0 + 100_000);
        assert!(!f1.keyframe);
        assert_eq!(f1.rtp_timestamp, 9_000);
        assert_eq!(parse_payload(SyntheticCodec::Vp8, &f1.payloads[0]).unwrap().seq, 3);
        source.request_keyframe();
        assert!(source.next_frame(T0 + 200_000).keyframe);
        assert!(!source.next_frame(T0 + 300_000).keyframe);
    }

    #[test]
    fn source_keyframe_interval_and_audio() {
        let mut video = SyntheticSource::new(SyntheticConfig {
            keyframe_interval: 3,
            ..SyntheticConfig::video()
        });
        let keys: Vec<bool> = (0..7).map(|i| video.next_frame(T0 + i).keyframe).collect();
        assert_eq!(keys, [true, false, false, true, false, false, true]);

        let mut audio = SyntheticSource::new(SyntheticConfig::audio());
        let f = audio.next_frame(T0);
        assert!(!f.keyframe);
        assert_eq!(f.payloads.len(), 1);
        assert_eq!(f.payloads[0].len(), 80, "32 kbit/s at 50 fps");
        assert_eq!(audio.next_frame(T0).rtp_timestamp, 960);
    }

    #[test]
    fn stats_count_in_order_stream() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0 - 5_000);
        for seq in 0..100u32 {
            let send = T0 + u64::from(seq) * 20_000;
            stats
                .on_payload(send + 1_000, &packet(SyntheticCodec::Opus, seq, send))
                .unwrap();
        }
        let s = stats.summary();
        assert_eq!(
            (s.received, s.expected, s.lost, s.duplicates, s.reordered, s.corrupt),
            (100, 100, 0, 0, 0, 0)
        );
        assert_eq!(s.first_seq, Some(0));
        assert_eq!(s.last_seq, Some(99));
        assert_eq!(s.time_to_first_packet_us, Some(6_000));
        assert_eq!(s.latency_p50_us, Some(1_000));
        assert_eq!(s.latency_p99_us, Some(1_000));
        assert_eq!(s.jitter_us, 0.0);
        // 100 x 200 bytes over 99 x 20 ms.
        let expect = 100.0 * 200.0 * 8.0 / (99.0 * 0.020);
        assert!((s.bitrate_bps - expect).abs() < 1.0, "{}", s.bitrate_bps);
        assert_eq!(s.loss_ratio(), 0.0);
    }

    #[test]
    fn stats_see_loss_duplicates_reordering_and_corruption() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        let order = [0u32, 1, 3, 2, 2, 5, 6, 6, 9];
        for seq in order {
            stats
                .on_payload(T0 + 10, &packet(SyntheticCodec::Opus, seq, T0))
                .unwrap();
        }
        let mut bad = packet(SyntheticCodec::Opus, 10, T0);
        bad[40] ^= 1;
        assert_eq!(stats.on_payload(T0, &bad), Err(ParseError::BadChecksum));
        let s = stats.summary();
        assert_eq!(s.expected, 10, "0..=9");
        assert_eq!(s.received, 7);
        assert_eq!(s.lost, 3, "4, 7, 8");
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.corrupt, 1);
        assert!((s.loss_ratio() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn stats_handle_late_start_and_stragglers_before_first() {
        // Joined mid-stream: loss counts from the first seen sequence, and an
        // earlier packet that straggles in widens the range instead of counting as loss.
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        for seq in [1000u32, 1001, 999, 1002] {
            stats.on_payload(T0, &packet(SyntheticCodec::Opus, seq, T0)).unwrap();
        }
        let s = stats.summary();
        assert_eq!((s.expected, s.received, s.lost, s.reordered), (4, 4, 0, 1));
        assert_eq!(s.first_seq, Some(999));
    }

    #[test]
    fn stats_window_forgets_far_history() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        stats.on_payload(T0, &packet(SyntheticCodec::Opus, 0, T0)).unwrap();
        stats.on_payload(T0, &packet(SyntheticCodec::Opus, 10_000, T0)).unwrap();
        // 0 again: too old to tell whether it is a duplicate.
        stats.on_payload(T0, &packet(SyntheticCodec::Opus, 0, T0)).unwrap();
        // 9_000 is within the window and new (its slot was cleared when 10_000 arrived).
        stats.on_payload(T0, &packet(SyntheticCodec::Opus, 9_000, T0)).unwrap();
        stats.on_payload(T0, &packet(SyntheticCodec::Opus, 9_000, T0)).unwrap();
        let s = stats.summary();
        assert_eq!(s.too_old, 1);
        assert_eq!(s.received, 3);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
        // Slot reuse: seq 4096 and 0 share a slot; advancing past 4096 clears it.
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        for seq in [0u32, 4000, 4096, 4095] {
            stats.on_payload(T0, &packet(SyntheticCodec::Opus, seq, T0)).unwrap();
        }
        assert_eq!(stats.summary().duplicates, 0);
    }

    #[test]
    fn stats_jitter_follows_rfc3550() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        // Transit alternates 1 ms and 3 ms: |D| = 2000 every step after the first.
        for seq in 0..200u32 {
            let send = T0 + u64::from(seq) * 20_000;
            let transit = if seq % 2 == 0 { 1_000 } else { 3_000 };
            stats
                .on_payload(send + transit, &packet(SyntheticCodec::Opus, seq, send))
                .unwrap();
        }
        let s = stats.summary();
        assert!((s.jitter_us - 2_000.0).abs() < 1.0, "{}", s.jitter_us);
        assert_eq!(s.latency_p50_us, Some(1_000));
        let p95 = s.latency_p95_us.unwrap();
        assert!((2_900..=3_000).contains(&p95), "{p95}");
        assert_eq!(s.latency_max_us, Some(3_000));
    }

    #[test]
    fn stats_count_keyframes_and_time_to_first_keyframe() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Vp8, T0);
        let mut source = SyntheticSource::new(SyntheticConfig {
            keyframe_interval: 2,
            ..SyntheticConfig::video()
        });
        for i in 0..4 {
            let frame = source.next_frame(T0 + i * 33_000);
            for p in &frame.payloads {
                stats.on_payload(T0 + i * 33_000 + 500, p).unwrap();
            }
        }
        let s = stats.summary();
        assert_eq!(s.keyframes, 2);
        assert_eq!(s.time_to_first_keyframe_us, Some(500));
        assert_eq!(s.lost, 0);
    }

    #[test]
    fn the_first_keyframe_counts_as_complete_only_with_every_packet() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Vp8, T0);
        let mut source = SyntheticSource::new(SyntheticConfig {
            keyframe_interval: 2,
            max_payload: 600,
            ..SyntheticConfig::video()
        });
        // Frame 0 (a keyframe) loses its second packet; frame 1 is a delta frame.
        let first = source.next_frame(T0);
        assert!(first.keyframe && first.payloads.len() >= 3, "{}", first.payloads.len());
        for (i, p) in first.payloads.iter().enumerate().filter(|(i, _)| *i != 1) {
            stats.on_payload(T0 + 100 + i as u64, p).unwrap();
        }
        for p in &source.next_frame(T0 + 33_000).payloads {
            stats.on_payload(T0 + 33_100, p).unwrap();
        }
        let s = stats.summary();
        assert_eq!(s.time_to_first_keyframe_us, Some(100));
        assert_eq!(s.time_to_first_complete_keyframe_us, None);
        // The lost packet comes late (a retransmission): now the keyframe is whole.
        stats.on_payload(T0 + 40_000, &first.payloads[1]).unwrap();
        assert_eq!(stats.summary().time_to_first_complete_keyframe_us, Some(40_000));
        // A later keyframe does not move it.
        for p in &source.next_frame(T0 + 66_000).payloads {
            stats.on_payload(T0 + 66_100, p).unwrap();
        }
        assert_eq!(stats.summary().time_to_first_complete_keyframe_us, Some(40_000));
    }

    #[test]
    fn a_burst_has_no_bitrate_until_a_second_of_arrivals() {
        // A video frame's packets arriving 10 µs apart: 2 x 200 bytes over 10 µs would
        // read as 320 Mbit/s; under a second of arrivals there is no rate yet.
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        for (seq, arrival) in [(0, T0 + 1_000), (1, T0 + 1_010)] {
            stats
                .on_payload(arrival, &packet(SyntheticCodec::Opus, seq, T0))
                .unwrap();
        }
        assert_eq!(stats.summary().bitrate_bps, 0.0);
        // A second later the rate is there: 3 x 200 bytes over exactly one second.
        stats
            .on_payload(T0 + 1_000 + BITRATE_SPAN_US, &packet(SyntheticCodec::Opus, 2, T0))
            .unwrap();
        assert!((stats.summary().bitrate_bps - 4_800.0).abs() < 1e-9);
    }

    #[test]
    fn empty_stats_have_no_figures() {
        let s = ReceiverStats::new(SyntheticCodec::Vp8, T0).summary();
        assert_eq!((s.received, s.expected, s.lost), (0, 0, 0));
        assert_eq!(s.first_seq, None);
        assert_eq!(s.latency_p50_us, None);
        assert_eq!(s.time_to_first_packet_us, None);
        assert_eq!(s.bitrate_bps, 0.0);
    }

    #[test]
    fn negative_latency_clamps_to_zero() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, T0);
        stats.on_payload(T0 - 5, &packet(SyntheticCodec::Opus, 0, T0)).unwrap();
        assert_eq!(stats.summary().latency_p50_us, Some(0));
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_cover_u64() {
        let mut expected_low = 0u64;
        for index in 0..HISTOGRAM_BUCKETS {
            let (low, width) = LatencyHistogram::bucket_range(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(LatencyHistogram::index(low), index);
            assert_eq!(LatencyHistogram::index(low + (width - 1)), index);
            expected_low = low.wrapping_add(width);
        }
        assert_eq!(expected_low, 0, "the last bucket ends at u64::MAX");
        assert_eq!(LatencyHistogram::index(u64::MAX), HISTOGRAM_BUCKETS - 1);
    }

    #[test]
    fn histogram_percentiles_are_within_resolution() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentile(0.5), None);
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.max(), Some(10_000));
        for (q, exact) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.percentile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact < 1.0 / 32.0, "p{q}: {got} vs {exact}");
        }
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.percentile(1.0), Some(10_000));
    }

    #[test]
    fn histogram_merge_adds_counts() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        for _ in 0..90 {
            a.record(10);
        }
        for _ in 0..10 {
            b.record(50_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.percentile(0.5), Some(10));
        let p95 = a.percentile(0.95).unwrap();
        assert!((49_000..=51_000).contains(&p95), "{p95}");
        assert_eq!(a.min(), Some(10));
        assert_eq!(a.max(), Some(50_000));
    }

    #[test]
    fn histogram_since_is_the_window_between_two_copies() {
        let mut h = LatencyHistogram::default();
        for _ in 0..100 {
            h.record(1_000);
        }
        let earlier = h.clone();
        for _ in 0..50 {
            h.record(40_000);
        }
        h.record(5);
        let window = h.since(&earlier);
        assert_eq!(window.count(), 51);
        assert_eq!(window.min(), Some(5), "an exact bucket");
        let p50 = window.percentile(0.5).unwrap();
        assert!(
            (39_000..=41_000).contains(&p50),
            "{p50}: the earlier 1 ms values are not in it"
        );
        assert_eq!(window.max(), Some(40_000), "within the whole's exact max");
        assert_eq!(h.since(&h).count(), 0);
        assert_eq!(h.since(&h).percentile(0.99), None);
        assert_eq!(h.since(&LatencyHistogram::default()), {
            let mut w = h.clone();
            w.min = 5;
            w
        });
    }

    #[test]
    fn reset_latency_keeps_loss_and_forgets_latencies() {
        let mut stats = ReceiverStats::new(SyntheticCodec::Opus, 0);
        let payload = |seq: u32| build_payload(SyntheticCodec::Opus, seq, seq, 1_000, false, true, true, 80);
        stats.on_payload(501_000, &payload(0)).unwrap(); // 500 ms: the join burst
        stats.reset_latency();
        stats.on_payload(2_000, &payload(2)).unwrap(); // 1 ms: steady
        let s = stats.summary();
        assert_eq!((s.received, s.lost), (2, 1));
        assert_eq!(s.latency_max_us, Some(1_000));
    }
}
