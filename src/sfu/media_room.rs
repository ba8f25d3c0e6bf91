//! The media meaning of one meeting, pure: who is in the call, which tracks are
//! published, who receives which track on which leg, and the subscriber
//! renegotiations that changes require. No sockets, no peer connections, no
//! clock: every input carries `now`, and everything to be done outside is
//! pushed as an [`Effect`] for the shard (the IO shell) to carry out, the way
//! `gatehouse_signaling::room::Room` drives the control plane.
//!
//! Every participant has two connections (like LiveKit): a publisher
//! connection the client offers, and a subscriber connection the server
//! offers. A track is published when its first RTP packet arrives on a mid the
//! client announced ([`MediaRoom::stream_opened`]); every other participant
//! then gets a leg of it: a sender on their subscriber connection (msid
//! `<participant_id> <track_id>`), added by the shell on
//! [`Effect::AddSender`]. `track_published`, `track_unpublished` and
//! `track_muted` go to everyone in the call, the owner included: that is how a
//! client learns the server's id of its own tracks (docs/PROTOCOL.md §11.1).
//!
//! The server is the only offerer on subscriber connections and keeps at most
//! one offer outstanding on each ([`Negotiation`]): changes made meanwhile are
//! folded into one re-offer, which [`MediaRoom::due_offers`] hands out once per
//! shard turn. No glare by design.
//!
//! Forwarding ([`MediaRoom::forward`]) is the hot path: a published track holds
//! its own list of legs, so a packet finds its track by (connection, SSRC) and
//! walks exactly the legs that receive it, rewriting each copy's header
//! ([`DownLeg`]) without allocating.
//!
//! A camera sent as simulcast is one track whose [`Layer`]s are the publisher's rid
//! encodings; each leg forwards one layer, the one its subscriber's quality asks
//! for among those arriving, and changes layers only on a keyframe of the new one
//! ([`LayerSelector`]), its sequence numbers and timestamps continuing.

use std::time::{Duration, Instant};

use gatehouse_signaling::protocol::{
    ParticipantId, ParticipantKind, PeerRole, PublishedTrack, PublisherLayer, Quality, ServerMessage, TrackId,
    TrackInfo, TrackKind, TrackSource,
};
use gatehouse_signaling::{Error, ErrorCode};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use super::bwe::{self, Ack, Bwe, RateMeter, Verdict};
use super::dynacast::{self, Dynacast};
use super::forward::{CodecKey, DownLeg, ExtMap, KeyframeFormat, KeyframeThrottle, LayerSelector, Pick, PtMap, Target};
use super::quality;
use super::remb::{self, Remb};
use super::retransmit::{self, Answer, Insert, LegHistory, PacketCache, Rtx};
use super::speaker::{self, LevelMeter};
use super::stats::StatsPair;
use super::temporal::{self, TemporalRates};
use super::vp8::{Offsets, Temporal};

mod mirror;
pub use mirror::{MirrorTrack, MirrorView};

/// Shard-local connection handle (never reused within a shard).
pub type ConnId = u64;

/// Room-local handle of one subscriber's leg of one track.
pub type LegId = u64;

/// Keyframe requests per published track are at most this frequent.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// A publisher's stream silent this long and then back, or a subscriber connection
/// silent this long (no RTCP) and then heard again, is an outage ending: the decoders
/// on the far side have missed frames, so a keyframe is asked for at once instead of
/// waiting for the receiver to give up on retransmissions and ask itself (seconds).
pub const RESUME_GAP: Duration = Duration::from_millis(1500);

/// A simulcast layer silent this long counts as stopped (the publisher dropped it, for
/// bandwidth or CPU, or switched it off): its legs move to the next layer available.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);

/// A layer its publisher was told to pause that sent within this is still arriving
/// (see [`dynacast::RETELL`]).
const PAUSED_LAYER_QUIET: Duration = Duration::from_millis(500);

/// A parked track (its owner came back on a new socket) that its owner has not published
/// again this long after coming back is unpublished: a participant who returns without a
/// camera, or whose new publisher connection never comes up, leaves no frozen tile behind.
/// Long enough for a reloaded page to ask for its devices again and renegotiate.
pub const PARK_GRACE: Duration = Duration::from_secs(20);

/// Simulcast layers kept per track (browsers send at most three or four); more are not forwarded.
pub const MAX_LAYERS: usize = 4;

/// `connection_quality` messages a participant is sent per quality evaluation at most (the
/// rest follow at the next ones, oldest change first): staff entering a large meeting where
/// many connections are poor, or a moment that changes many verdicts at once, must not fill
/// their signaling outbox (`crate::outbox::OUTBOX_CAPACITY`), which would close the socket.
pub const QUALITY_NEWS_PER_EVALUATION: usize = 64;

/// Candidates kept per participant while their connection has no remote description.
pub const MAX_PENDING_CANDIDATES: usize = 64;

/// A probe sends at most this many padding packets on one turn (a turn late by a lot
/// does not turn into a burst; `probe::AHEAD` bounds what is due anyway).
const MAX_PROBE_PACKETS_PER_TURN: u64 = 16;

/// A codec as a connection negotiated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub mime_type: String,
    pub clock_rate: u32,
    pub fmtp: String,
}

impl Codec {
    fn key(&self) -> CodecKey<'_> {
        CodecKey {
            payload_type: self.payload_type,
            mime_type: &self.mime_type,
            clock_rate: self.clock_rate,
            fmtp: &self.fmtp,
        }
    }
}

/// What one leg (a sender, publisher or subscriber side) negotiated: its codecs
/// and header extensions (uri, id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub codecs: Vec<Codec>,
    pub extensions: Vec<(String, u16)>,
}

/// A stream that started arriving on a publisher connection.
#[derive(Debug, Clone)]
pub struct Stream {
    pub conn: ConnId,
    pub receiver: RTCRtpReceiverId,
    pub mid: String,
    pub ssrc: u32,
    /// The codec of its first packet.
    pub mime_type: String,
    /// What the publisher leg negotiated.
    pub negotiated: Negotiated,
    /// A new SSRC without a rid on an already published mid means the client
    /// restarted its sender: the track follows it. (A stream with a rid is a
    /// simulcast layer, see [`Stream::layer`].)
    pub replaces: bool,
    /// The simulcast layer this stream is, when the publisher sends several.
    pub layer: Option<SimulcastLayer>,
}

/// One simulcast encoding of a publisher's track: its rid, and its place in the
/// quality order of the track's layers (0 lowest; [`super::forward::simulcast_ranks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastLayer {
    pub rid: String,
    pub rank: u8,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a signaling message to one participant.
    Signal { to: ParticipantId, message: ServerMessage },
    /// Give `subscriber` a sender for `track` on its subscriber connection (making
    /// that connection first if it has none), with the leg's own SSRC. Report the
    /// outcome with [`MediaRoom::leg_bound`] or [`MediaRoom::leg_failed`].
    AddSender {
        subscriber: ParticipantId,
        leg: LegId,
        track: TrackInfo,
        ssrc: u32,
    },
    /// Remove a sender from a subscriber connection (its track is gone).
    RemoveSender { conn: ConnId, sender: RTCRtpSenderId },
    /// Ask a publisher for a keyframe (PLI on its receiver).
    RequestKeyframe {
        conn: ConnId,
        receiver: RTCRtpReceiverId,
        ssrc: u32,
    },
    /// Tell a publisher connection the most it may send (an RTCP REMB through `receiver`,
    /// naming `ssrc`; see [`remb`]).
    LimitPublisher {
        conn: ConnId,
        receiver: RTCRtpReceiverId,
        ssrc: u32,
        bps: u64,
    },
    /// Close a connection for good (its participant left).
    Close { conn: ConnId },
    /// Tell shard `source`, where the publisher of mirrored track `track_id` is, the best
    /// layer this shard's subscribers of it wish (`None`: none), for its dynacast.
    RelayNeed {
        source: usize,
        track_id: TrackId,
        needed: Option<u8>,
    },
    /// Tell shard `source` the REMB shares of this shard's legs of its single-layer video
    /// track `track_id` (sorted; `None`: a leg whose path limits nothing), for the limit it
    /// tells the publisher ([`remb`]).
    RelayShares {
        source: usize,
        track_id: TrackId,
        shares: Vec<Option<u64>>,
    },
}

/// An offer the shell must make on a subscriber connection; report a failure
/// with [`MediaRoom::offer_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub participant: ParticipantId,
    pub conn: ConnId,
    /// The first offer on a fresh connection made for `restart_ice`: the client
    /// answers it on a new peer connection (`subscribe_offer.restart`).
    pub restart: bool,
}

/// How the shell delivers forwarded packets (the shard's connections in
/// production, a recorder in tests and benches).
pub trait LegSink {
    /// Whether the subscriber connection takes media now (connected, consent
    /// fresh, not dropped on purpose). Asked before the copy is made.
    fn admit(&mut self, conn: ConnId) -> Admit;
    /// Writes a rewritten packet to a sender; false if the connection refused it. The
    /// packet is lent: the room reuses it for the next leg.
    fn write(&mut self, conn: ConnId, sender: RTCRtpSenderId, packet: &Packet) -> bool;
    /// Writes a retransmission (RTX on the leg's RTX SSRC when `rtx`, which
    /// `write_rtp` would refuse; otherwise as [`write`](Self::write)).
    fn retransmit(&mut self, conn: ConnId, sender: RTCRtpSenderId, packet: Packet, rtx: bool) -> bool {
        !rtx && self.write(conn, sender, &packet)
    }
}

/// A [`LegSink`]'s verdict on one subscriber connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Not ready for media (not connected, or silent beyond consent): skipped, not counted.
    NotReady,
    /// Dropped on purpose (the loss test hook): counted as dropped.
    Drop,
    /// Lost on purpose after leaving the leg (the wire-loss test hook): recorded as
    /// sent, so a NACK for it is answered from the retransmission cache; counted as dropped.
    Lose,
}

/// Offer/answer bookkeeping for a subscriber connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiation {
    /// An offer was sent and its answer has not arrived.
    pub outstanding: bool,
    /// Tracks changed since the last offer was made.
    pub wanted: bool,
    /// The connection was replaced (`restart_ice`) and the client has not been
    /// offered the new one yet.
    pub restart: bool,
}

impl Negotiation {
    /// Something changed that the client must hear about.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// True if an offer should be made now (and records that it is).
    pub fn start_offer(&mut self) -> bool {
        if self.outstanding || !self.wanted {
            return false;
        }
        self.outstanding = true;
        self.wanted = false;
        true
    }

    /// The answer arrived. Returns false if no offer was outstanding.
    pub fn answered(&mut self) -> bool {
        std::mem::replace(&mut self.outstanding, false)
    }
}

/// One participant in the call.
#[derive(Debug)]
struct Member {
    id: ParticipantId,
    kind: ParticipantKind,
    may_present: bool,
    publisher: Option<ConnId>,
    subscriber: Option<ConnId>,
    /// The declaration that came with the latest publisher offer: which mid carries what.
    announced: Vec<PublishedTrack>,
    /// Candidates that arrived before their connection had a remote description.
    pending_candidates: Vec<(PeerRole, RTCIceCandidateInit)>,
    negotiation: Negotiation,
    /// When it entered the call, and whether any media has been written to it since.
    joined_at: Instant,
    received_media: bool,
    /// When RTCP last came from its subscriber connection (see [`RESUME_GAP`]).
    last_heard: Option<Instant>,
    /// Its subscriber connection is up (DTLS done): a keyframe asked for before then would
    /// arrive where nobody can receive it and hold the publisher's throttle against the
    /// request that matters, the one [`MediaRoom::subscriber_connected`] makes.
    subscriber_up: bool,
}

impl Member {
    fn conn(&self, role: PeerRole) -> Option<ConnId> {
        match role {
            PeerRole::Publisher => self.publisher,
            PeerRole::Subscriber => self.subscriber,
        }
    }
}

/// One subscriber's leg of a published track.
#[derive(Debug)]
struct Leg {
    id: LegId,
    subscriber: ParticipantId,
    /// The subscriber connection and its sender, once the shell added it.
    bound: Option<(ConnId, RTCRtpSenderId)>,
    /// Header rewriting for this leg; tables filled once the leg is negotiated.
    rewrite: DownLeg,
    /// The subscriber answered an offer containing this leg (its tables are valid).
    negotiated: bool,
    /// What the subscriber's side of this leg negotiated (from its last answer): the
    /// tables are made again from it when the track's publisher side changes.
    sent: Option<Negotiated>,
    /// Packets written to this leg (for the debug snapshot).
    forwarded: u64,
    /// What a video leg sent, for answering its NACKs (`retransmit`).
    history: Option<LegHistory>,
    /// Which of the track's layers it forwards, and which it wants (`set_subscription.quality`).
    layer: LayerSelector,
    /// When it last forwarded a packet: how far its timestamps move on when it switches layers.
    last_sent: Option<Instant>,
    /// The transport-wide sequence number extension's id on the subscriber's side (0: not
    /// negotiated): its copies are numbered for the connection's bandwidth estimate (`bwe`).
    twcc: u8,
    /// What its subscriber was last told of a video leg in `video_layer` (layer rank, layers,
    /// reduced); `None` until told on this binding.
    told_layer: Option<(u8, u8, bool)>,
}

/// One encoding of a published track: the whole track without simulcast, one rid
/// layer with it. Each has its own SSRC, sequence space, keyframes and cache.
#[derive(Debug)]
struct Layer {
    rid: Option<String>,
    rank: u8,
    ssrc: u32,
    throttle: KeyframeThrottle,
    /// RTP packets received on it (for the debug snapshot).
    packets: u64,
    /// When its last packet arrived (see [`RESUME_GAP`], [`LAYER_TIMEOUT`]).
    last_packet: Option<Instant>,
    /// The rate it arrives at: what a leg of it costs its subscriber's downlink (`bwe::fit`).
    rate: RateMeter,
    /// The rate of each of its VP8 temporal layers (a screen share's legs are capped by them).
    temporal: TemporalRates,
    /// A video layer's last packets, for its legs' retransmissions (`retransmit`); its
    /// epochs carry the layer's own top byte, so a leg's history names the cache.
    cache: Option<PacketCache>,
    /// What arrives of it, for its publisher's uplink quality (`quality`).
    reception: quality::Reception,
    /// The RTP timestamp of its newest frame. A keyframe older than that is no place to
    /// switch to: it is a resend (Chromium pads its bandwidth probes with copies of packets
    /// it sent up to seconds before, often a keyframe's), and the frames after it went by.
    newest_ts: Option<u32>,
}

impl Layer {
    fn new(kind: TrackKind, stream: &Stream, cache_id: u8) -> Self {
        Self {
            rid: stream.layer.as_ref().map(|l| l.rid.clone()),
            rank: stream.layer.as_ref().map_or(0, |l| l.rank),
            ssrc: stream.ssrc,
            throttle: KeyframeThrottle::new(KEYFRAME_INTERVAL),
            packets: 0,
            last_packet: None,
            rate: RateMeter::default(),
            temporal: TemporalRates::default(),
            cache: (kind == TrackKind::Video).then(|| PacketCache::default().with_epoch(u32::from(cache_id) << 24)),
            reception: quality::Reception::new(clock_rate_of(&stream.negotiated, &stream.mime_type)),
            newest_ts: None,
        }
    }

    /// Notes a packet's timestamp (before `last_packet` moves to `now`); true if its frame
    /// is older than the newest seen. After [`LAYER_TIMEOUT`] of silence (a layer paused
    /// for hours, whose timestamps may have run half their range since) it starts afresh.
    fn stale(&mut self, ts: u32, now: Instant) -> bool {
        let quiet = self
            .last_packet
            .is_none_or(|at| now.saturating_duration_since(at) >= LAYER_TIMEOUT);
        if !quiet && self.newest_ts.is_some_and(|n| (ts.wrapping_sub(n) as i32) < 0) {
            return true;
        }
        self.newest_ts = Some(ts);
        false
    }
}

/// A published track, where it comes from and who receives it.
#[derive(Debug)]
struct Track {
    info: TrackInfo,
    conn: ConnId,
    receiver: RTCRtpReceiverId,
    mid: String,
    mime_type: String,
    /// How its codec marks keyframes (where legs may switch layers).
    keyframes: KeyframeFormat,
    negotiated: Negotiated,
    /// Its encodings: one, or the simulcast layers (at most [`MAX_LAYERS`]) in arrival order.
    layers: Vec<Layer>,
    /// The next layer's cache id (see [`Layer::cache`]).
    next_cache_id: u8,
    legs: Vec<Leg>,
    /// Its owner came back on a new socket (a held seat resumed, a reload): its
    /// publisher connection is gone, and the track keeps its id, its legs and their
    /// senders until the owner's new publisher connection carries its source again
    /// ([`MediaRoom::stream_opened`] adopts it), a declaration leaves it out, or
    /// [`PARK_GRACE`] passes. Since when it is parked.
    parked: Option<Instant>,
    /// Audio whose publisher negotiated the audio-level extension: how loud it is (active speakers).
    level: Option<LevelMeter>,
    /// Which of its simulcast layers its publisher was told to send (`publisher_layers`).
    dynacast: Dynacast,
    /// Where the track comes from when its publisher is on another shard of the meeting
    /// (a mirror, see [`mirror`]): that shard's index. `None` for a local publisher's track.
    mirror: Option<usize>,
    /// A local track mirrored on other shards: the best layer rank each of those shards'
    /// subscribers wish (by shard), counted with the local legs' wishes (dynacast).
    remote_needs: Vec<(usize, Option<u8>)>,
    /// A mirrored track: the wish last told its publisher's shard (`Effect::RelayNeed`).
    told_need: Option<Option<u8>>,
    /// A local single-layer video track mirrored on other shards: the REMB shares of those
    /// shards' legs of it (by shard), counted with the local legs' ([`remb::track_limit`]).
    remote_shares: Vec<(usize, Vec<Option<u64>>)>,
    /// A mirrored single-layer video track: the shares last told its publisher's shard
    /// (`Effect::RelayShares`), sorted.
    told_shares: Vec<Option<u64>>,
}

/// The audio-level meter of an audio stream whose publisher leg negotiated RFC 6464.
fn level_meter(kind: TrackKind, mime_type: &str, negotiated: &Negotiated) -> Option<LevelMeter> {
    if kind != TrackKind::Audio {
        return None;
    }
    let (_, id) = negotiated
        .extensions
        .iter()
        .find(|(uri, _)| uri == rtc::sdp::extmap::AUDIO_LEVEL_URI)?;
    let id = u8::try_from(*id).ok().filter(|id| *id > 0)?;
    let clock_rate = negotiated
        .codecs
        .iter()
        .find(|c| c.mime_type.eq_ignore_ascii_case(mime_type))
        .map_or(48_000, |c| c.clock_rate);
    Some(LevelMeter::new(id, clock_rate))
}

/// A publisher connection's SSRC and the layer of the track it feeds: what
/// [`MediaRoom::forward`] looks a packet up by.
///
/// The routes sit in one small sorted array beside the tracks, 16 bytes each, so finding a
/// packet's layer reads a cache line or two; a walk of the tracks themselves reads every
/// earlier track's record and its first layer (cold lines at 30 calls on a core: about a
/// third of `forward`'s time in a profile; issue 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    conn: ConnId,
    ssrc: u32,
    /// The track's index times four plus the layer's ([`MAX_LAYERS`] is four), so that the
    /// routes sort as the tracks and their layers are ordered.
    slot: u32,
}

const _: () = assert!(MAX_LAYERS == 4, "Route::slot keeps the layer in two bits");

impl Route {
    fn at(&self) -> (usize, usize) {
        ((self.slot >> 2) as usize, (self.slot & 3) as usize)
    }
}

/// A meeting's media plane state. See the module documentation.
pub struct MediaRoom {
    meeting_id: String,
    stats: StatsPair,
    members: Vec<Member>,
    tracks: Vec<Track>,
    /// Where [`MediaRoom::forward`] finds a packet's track and layer ([`Route`]): made
    /// again ([`MediaRoom::reroute`]) whenever a track comes or goes, is parked or
    /// adopted, or its layers change.
    routes: Vec<Route>,
    next_leg: LegId,
    /// Who is speaking, from the tracks' level meters ([`MediaRoom::evaluate_speakers`]).
    speakers: speaker::Detector,
    /// The copy [`MediaRoom::forward`] rewrites for each leg in turn and lends the sink:
    /// its header's lists keep their capacity, so forwarding allocates nothing.
    scratch: Packet,
    /// Each subscriber connection's bandwidth estimate (made at its first numbered packet),
    /// sorted by connection (looked up for every numbered copy).
    bwe: Vec<(ConnId, Bwe)>,
    /// Reused by [`MediaRoom::congestion_feedback`].
    feedback_scratch: Vec<(Instant, u16, Duration)>,
    /// Each participant's connection quality ([`MediaRoom::evaluate_quality`]), and when
    /// it is next evaluated.
    quality: Vec<(ParticipantId, quality::Participant)>,
    quality_due: Option<Instant>,
    /// What each publisher connection without simulcast was told it may send (REMB,
    /// [`MediaRoom::evaluate_publisher_limits`]), by connection.
    remb: Vec<(ConnId, Remb)>,
    /// The connection quality last announced of the participants on the meeting's other
    /// shards (source shard, participant, verdict, the room's number of its change): told
    /// to this room's staff ([`mirror`]).
    remote_quality: Vec<(usize, ParticipantId, quality::Verdict, u64)>,
    /// Changes of announced quality verdicts so far, local and remote: each change's number,
    /// by which participants are told them in order ([`MediaRoom::evaluate_quality`]).
    quality_changes: u64,
}

/// Whether (and how) a video leg resends as RTX, from what its subscriber negotiated.
fn set_rtx(history: &mut Option<LegHistory>, ssrc: u32, sent: &Negotiated) {
    if let Some(history) = history {
        history.rtx = Rtx::negotiated(
            retransmit::rtx_ssrc(ssrc),
            sent.codecs
                .iter()
                .map(|c| (c.payload_type, c.mime_type.as_str(), c.fmtp.as_str())),
        );
    }
}

/// Numbers a leg's copy for its subscriber connection's bandwidth estimate: the
/// transport-wide sequence number extension under the subscriber's id, its two bytes
/// shared from a static table (no allocation). The one-byte header form carries ids up
/// to 14 only; a copy that cannot take the extension goes out unnumbered.
fn stamp(bwes: &mut Vec<(ConnId, Bwe)>, conn: ConnId, id: u8, copy: &mut Packet, size: u64, now: Instant) {
    use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension};
    let h = &mut copy.header;
    let profile = if h.extension {
        h.extension_profile
    } else {
        EXTENSION_PROFILE_ONE_BYTE
    };
    if !(profile == EXTENSION_PROFILE_TWO_BYTE || (profile == EXTENSION_PROFILE_ONE_BYTE && id <= 14)) {
        return;
    }
    // Sorted by connection: a binary search per copy, not a scan of every subscriber's.
    let i = match bwes.binary_search_by_key(&conn, |(c, _)| *c) {
        Ok(i) => i,
        Err(i) => {
            bwes.insert(i, (conn, Bwe::default()));
            i
        }
    };
    // The extension adds 4 bytes on the wire at most (its element and padding).
    let seq = bwes[i].1.stamp(size as usize + 4, now);
    h.extension = true;
    h.extension_profile = profile;
    h.extensions.push(Extension {
        id,
        payload: bytes::Bytes::from_static(&bwe::TWCC_BYTES[usize::from(seq)]),
    });
}

/// The clock rate of `mime_type` as a connection negotiated it (90 kHz when not found).
fn clock_rate_of(negotiated: &Negotiated, mime_type: &str) -> u32 {
    negotiated
        .codecs
        .iter()
        .find(|c| c.mime_type.eq_ignore_ascii_case(mime_type))
        .map_or(90_000, |c| c.clock_rate)
}

/// The transport-wide sequence number extension's id a subscriber leg negotiated (0: none).
fn twcc_id(sent: &Negotiated) -> u8 {
    sent.extensions
        .iter()
        .find(|(uri, _)| uri == rtc::sdp::extmap::TRANSPORT_CC_URI)
        .and_then(|(_, id)| u8::try_from(*id).ok())
        .unwrap_or(0)
}

fn err(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

fn not_in_call() -> Error {
    err(ErrorCode::NotInCall, "not in the call")
}

fn new_track_id() -> TrackId {
    format!("t_{:016x}", rand::random::<u64>()).into()
}

impl Track {
    /// A track published with its first stream: a local publisher's (`mirror` `None`), or
    /// a mirror of shard `mirror`'s ([`mirror`]).
    fn first(info: TrackInfo, stream: Stream, mirror: Option<usize>) -> Self {
        let level = level_meter(info.kind, &stream.mime_type, &stream.negotiated);
        Track {
            layers: vec![Layer::new(info.kind, &stream, 0)],
            info,
            conn: stream.conn,
            receiver: stream.receiver,
            next_cache_id: 1,
            mid: stream.mid,
            keyframes: KeyframeFormat::of(&stream.mime_type),
            mime_type: stream.mime_type,
            negotiated: stream.negotiated,
            legs: Vec::new(),
            parked: None,
            level,
            dynacast: Dynacast::default(),
            mirror,
            remote_needs: Vec::new(),
            told_need: None,
            remote_shares: Vec::new(),
            told_shares: Vec::new(),
        }
    }

    /// How many clock ticks of this track's codec passed since its last packet:
    /// how far a restarted source's timeline goes on past the old one on every leg
    /// (see [`super::forward::TsRewriter`]).
    fn restart_gap(&self, now: Instant) -> u32 {
        let last = self.layers.iter().filter_map(|l| l.last_packet).max();
        self.ticks_since(last, now)
    }

    /// Clock ticks of this track's codec from `since` to `now` (0 without `since`).
    fn ticks_since(&self, since: Option<Instant>, now: Instant) -> u32 {
        let clock_rate = self
            .negotiated
            .codecs
            .iter()
            .find(|c| c.mime_type.eq_ignore_ascii_case(&self.mime_type))
            .map_or(90_000, |c| c.clock_rate);
        let elapsed = since.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        // Capped at an hour of ticks: beyond that the exact gap means nothing to a receiver.
        let secs = elapsed.as_secs_f64().min(3600.0);
        (secs * f64::from(clock_rate)) as u32
    }
}

impl Track {
    /// The layers' ranks (up to [`MAX_LAYERS`]) and which of them sent within
    /// [`LAYER_TIMEOUT`] (bit i for layer i), without allocating.
    fn layer_view(&self, now: Instant) -> ([u8; MAX_LAYERS], usize, u32) {
        let mut ranks = [0u8; MAX_LAYERS];
        let mut available = 0u32;
        let n = self.layers.len().min(MAX_LAYERS);
        for (i, layer) in self.layers.iter().take(n).enumerate() {
            ranks[i] = layer.rank;
            if layer
                .last_packet
                .is_some_and(|at| now.saturating_duration_since(at) < LAYER_TIMEOUT)
            {
                available |= 1 << i;
            }
        }
        (ranks, n, available)
    }

    /// Per layer (up to [`MAX_LAYERS`]): its rank, the rate it arrives at, and whether it
    /// sent within [`LAYER_TIMEOUT`], as [`bwe::fit`] takes them.
    fn layer_rates(&self, now: Instant) -> ([(u8, u64, bool); MAX_LAYERS], usize) {
        let mut layers = [(0u8, 0u64, false); MAX_LAYERS];
        let n = self.layers.len().min(MAX_LAYERS);
        for (slot, layer) in layers.iter_mut().zip(&self.layers) {
            let sending = layer
                .last_packet
                .is_some_and(|at| now.saturating_duration_since(at) < LAYER_TIMEOUT);
            *slot = (layer.rank, layer.rate.bps(), sending);
        }
        (layers, n)
    }

    /// The layer a keyframe for leg `l` should come from: the one it waits for or
    /// forwards, else the one it would start with.
    fn keyframe_layer(&self, l: usize, now: Instant) -> usize {
        let leg = &self.legs[l];
        leg.layer.keyframe_layer().unwrap_or_else(|| {
            let (ranks, n, available) = self.layer_view(now);
            leg.layer.desired(&ranks[..n], available).unwrap_or(0)
        })
    }
}

fn kind_of(mime_type: &str) -> TrackKind {
    if mime_type.to_ascii_lowercase().starts_with("audio/") {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

impl MediaRoom {
    pub fn new(meeting_id: impl Into<String>, stats: StatsPair) -> Self {
        Self {
            meeting_id: meeting_id.into(),
            stats,
            members: Vec::new(),
            tracks: Vec::new(),
            routes: Vec::new(),
            next_leg: 1,
            speakers: speaker::Detector::default(),
            scratch: Packet::default(),
            bwe: Vec::new(),
            feedback_scratch: Vec::new(),
            quality: Vec::new(),
            quality_due: None,
            remb: Vec::new(),
            remote_quality: Vec::new(),
            quality_changes: 0,
        }
    }

    pub fn meeting_id(&self) -> &str {
        &self.meeting_id
    }

    pub fn stats(&self) -> &StatsPair {
        &self.stats
    }

    /// Nobody is in the call: the room can be forgotten.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, participant: &str) -> bool {
        self.member(participant).is_some()
    }

    /// The participants in the call, in order of arrival.
    pub fn participants(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.id.as_str())
    }

    /// Every published track.
    pub fn tracks(&self) -> Vec<TrackInfo> {
        self.tracks.iter().map(|t| t.info.clone()).collect()
    }

    /// A participant's publisher or subscriber connection.
    pub fn connection(&self, participant: &str, role: PeerRole) -> Option<ConnId> {
        self.member(participant)?.conn(role)
    }

    /// Every connection of the room's participants.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.members.iter().flat_map(|m| [m.publisher, m.subscriber]).flatten()
    }

    /// The shell made a connection for a participant.
    pub fn set_connection(&mut self, participant: &str, role: PeerRole, conn: Option<ConnId>) {
        if let Some(m) = self.member_mut(participant) {
            match role {
                PeerRole::Publisher => m.publisher = conn,
                PeerRole::Subscriber => {
                    if m.subscriber != conn {
                        m.subscriber_up = false;
                    }
                    m.subscriber = conn;
                }
            }
        }
        self.prune_bwe();
    }

    /// Forgets the estimates of connections no participant has any more.
    fn prune_bwe(&mut self) {
        let members = &self.members;
        self.bwe
            .retain(|(c, _)| members.iter().any(|m| m.subscriber == Some(*c)));
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn signal_all(&self, message: &ServerMessage, effects: &mut Vec<Effect>) {
        for m in &self.members {
            effects.push(Effect::Signal {
                to: m.id.clone(),
                message: message.clone(),
            });
        }
    }

    // ---- joining and leaving ----

    /// A participant entered the call. Everything already published becomes
    /// available to it. The same participant again (back on a new socket: a held
    /// seat resumed, a reload) gets fresh connections, but what it published stays
    /// published under the same ids: others see no `track_unpublished` and no new
    /// `track_published`, only the media pausing until the owner's new publisher
    /// connection carries it again (see [`Track::parked`]).
    pub fn add_participant(
        &mut self,
        id: &str,
        kind: ParticipantKind,
        may_present: bool,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        if self.contains(id) {
            self.rejoin(id, kind, may_present, now, effects);
            return;
        }
        self.members.push(Member {
            id: id.into(),
            kind,
            may_present,
            publisher: None,
            subscriber: None,
            announced: Vec::new(),
            pending_candidates: Vec::new(),
            negotiation: Negotiation::default(),
            joined_at: now,
            received_media: false,
            last_heard: None,
            subscriber_up: false,
        });
        for t in 0..self.tracks.len() {
            self.add_leg(t, id, effects);
        }
    }

    /// The participant `id` just entered (or came back) having been told `told` of the
    /// tracks (its `admitted`, a snapshot taken before it was a member here, perhaps by the
    /// room of another shard of the meeting): it hears what differs from this room now,
    /// before anything this room signals it later, so its list ends up as this room's.
    /// Others' tracks it was not told of are `track_published`, those it was told of and
    /// that are gone `track_unpublished` (published and unpublished meanwhile, or not yet
    /// mirrored here: the mirror is published to it when it comes), a mute that changed
    /// `track_muted`. Its own tracks are left out: it hears of them as its media arrives.
    pub fn tell_entering(&self, id: &str, told: &[TrackInfo], effects: &mut Vec<Effect>) {
        let signal =
            |message: ServerMessage, effects: &mut Vec<Effect>| effects.push(Effect::Signal { to: id.into(), message });
        for gone in told.iter().filter(|t| t.participant_id != id) {
            if !self.tracks.iter().any(|t| t.info.track_id == gone.track_id) {
                let message = ServerMessage::TrackUnpublished {
                    track_id: gone.track_id.clone(),
                    participant_id: gone.participant_id.clone(),
                };
                signal(message, effects);
            }
        }
        for t in self.tracks.iter().filter(|t| t.info.participant_id != id) {
            match told.iter().find(|k| k.track_id == t.info.track_id) {
                None => signal(ServerMessage::TrackPublished { track: t.info.clone() }, effects),
                Some(k) if k.muted != t.info.muted => {
                    let message = ServerMessage::TrackMuted {
                        track_id: t.info.track_id.clone(),
                        participant_id: t.info.participant_id.clone(),
                        muted: t.info.muted,
                    };
                    signal(message, effects);
                }
                Some(_) => {}
            }
        }
    }

    /// The participant `id`, in the call already, is back on a new socket: its old
    /// connections close, its legs of others' tracks start again on its next subscriber
    /// connection (fresh SSRCs, unpaused: a new page knows no pauses), and its own
    /// tracks are parked.
    fn rejoin(&mut self, id: &str, kind: ParticipantKind, may_present: bool, now: Instant, effects: &mut Vec<Effect>) {
        let Some(m) = self.member_mut(id) else {
            return;
        };
        for conn in [m.publisher.take(), m.subscriber.take()].into_iter().flatten() {
            effects.push(Effect::Close { conn });
        }
        m.kind = kind;
        m.may_present = may_present;
        m.announced.clear();
        m.pending_candidates.clear();
        m.negotiation = Negotiation::default();
        m.joined_at = now;
        m.received_media = false;
        m.last_heard = None;
        m.subscriber_up = false;
        for track in &mut self.tracks {
            track.legs.retain(|l| l.subscriber != id);
            if track.info.participant_id == id {
                track.parked = Some(now);
            }
        }
        self.reroute();
        for t in 0..self.tracks.len() {
            self.add_leg(t, id, effects);
        }
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %id, "back in the media room: its tracks are kept");
    }

    /// A participant left: its tracks are unpublished everywhere, its legs of
    /// other tracks vanish, its connections close.
    pub fn remove_participant(&mut self, id: &str, now: Instant, effects: &mut Vec<Effect>) {
        let Some(pos) = self.members.iter().position(|m| m.id == id) else {
            return;
        };
        let owned: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|t| t.info.participant_id == id)
            .map(|t| t.info.track_id.clone())
            .collect();
        for track_id in owned {
            self.unpublish(&track_id, now, effects);
        }
        // Its legs need no sender removal: their connection closes.
        for track in &mut self.tracks {
            track.legs.retain(|l| l.subscriber != id);
        }
        let member = self.members.remove(pos);
        for conn in [member.publisher, member.subscriber].into_iter().flatten() {
            effects.push(Effect::Close { conn });
        }
        self.prune_bwe();
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %id, "left the media room");
    }

    // ---- publishing ----

    /// Checks a publisher offer's declaration before the shell applies the SDP:
    /// screens only for those who may present, every mid announced once.
    pub fn check_publish(&self, participant: &str, tracks: &[PublishedTrack]) -> Result<(), Error> {
        let m = self.member(participant).ok_or_else(not_in_call)?;
        if !m.may_present && tracks.iter().any(|t| t.source == TrackSource::Screen) {
            return Err(err(
                ErrorCode::PresentingNotAllowed,
                "you may not present in this meeting",
            ));
        }
        for (i, t) in tracks.iter().enumerate() {
            if tracks[..i].iter().any(|o| o.mid == t.mid) {
                return Err(err(ErrorCode::BadRequest, format!("mid {} is announced twice", t.mid)));
            }
        }
        Ok(())
    }

    /// The publisher offer was applied: its declaration is the full set.
    /// Announced mids that vanished are unpublished, mute flags follow it for
    /// the rest. The shell then reports streams already arriving on announced
    /// mids with [`stream_opened`](Self::stream_opened).
    pub fn declare(&mut self, participant: &str, tracks: Vec<PublishedTrack>, now: Instant, effects: &mut Vec<Effect>) {
        let Some(m) = self.member_mut(participant) else {
            return;
        };
        m.announced = tracks;
        let announced = m.announced.clone();
        let mut gone = Vec::new();
        let mut muted = Vec::new();
        for t in self.tracks.iter_mut().filter(|t| t.info.participant_id == participant) {
            // A parked track's mid belonged to the old connection: it waits for its source.
            let found = if t.parked.is_some() {
                announced.iter().find(|a| a.source == t.info.source)
            } else {
                announced.iter().find(|a| a.mid == t.mid)
            };
            match found {
                None => gone.push(t.info.track_id.clone()),
                Some(a) if a.muted != t.info.muted => {
                    t.info.muted = a.muted;
                    muted.push((t.info.track_id.clone(), a.muted));
                }
                Some(_) => {}
            }
        }
        for (track_id, muted) in muted {
            self.signal_all(
                &ServerMessage::TrackMuted {
                    track_id,
                    participant_id: participant.into(),
                    muted,
                },
                effects,
            );
        }
        for track_id in gone {
            self.unpublish(&track_id, now, effects);
        }
    }

    /// Whether a publisher connection's mid is announced (streams on others are not forwarded).
    pub fn is_announced(&self, participant: &str, mid: &str) -> bool {
        self.member(participant)
            .is_some_and(|m| m.announced.iter().any(|a| a.mid == mid))
    }

    /// A stream arrived on a publisher connection of `participant`. It is
    /// published if its mid is announced with a source of its kind and nothing
    /// is published on that mid yet; on a published mid a restarted sender
    /// ([`Stream::replaces`]) is followed, keeping every leg's sequence numbers
    /// contiguous.
    pub fn stream_opened(&mut self, participant: &str, stream: Stream, now: Instant, effects: &mut Vec<Effect>) {
        let Some(m) = self.member(participant) else {
            return;
        };
        if m.publisher != Some(stream.conn) {
            return;
        }
        let Some(announced) = m.announced.iter().find(|a| a.mid == stream.mid).cloned() else {
            tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, mid = %stream.mid, "media on an unannounced mid is not forwarded");
            return;
        };
        if let Some(t) = self
            .tracks
            .iter()
            .position(|t| t.conn == stream.conn && t.mid == stream.mid)
        {
            self.stream_again(t, participant, stream, now, effects);
            return;
        }
        let kind = kind_of(&stream.mime_type);
        if kind != announced.source.kind() {
            tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, mid = %stream.mid, "announced source does not match the media kind");
            return;
        }
        if let Some(t) = self.tracks.iter().position(|t| {
            t.parked.is_some() && t.info.participant_id == participant && t.info.source == announced.source
        }) {
            self.adopt(t, stream, now, effects);
            return;
        }
        let info = TrackInfo {
            track_id: new_track_id(),
            participant_id: participant.into(),
            kind,
            source: announced.source,
            muted: announced.muted,
        };
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, track_id = %info.track_id, mid = %stream.mid, codec = %stream.mime_type, "track published");
        self.tracks.push(Track::first(info.clone(), stream, None));
        self.reroute();
        self.stats.add(|c| &c.tracks, 1);
        self.signal_all(&ServerMessage::TrackPublished { track: info }, effects);
        let t = self.tracks.len() - 1;
        let others: Vec<ParticipantId> = self
            .members
            .iter()
            .filter(|m| m.id != participant)
            .map(|m| m.id.clone())
            .collect();
        for other in others {
            self.add_leg(t, &other, effects);
        }
    }

    /// A parked track's owner publishes its source again on its new publisher
    /// connection: the track follows the new stream under its old id. Every leg keeps
    /// its sender and SSRC and continues its sequence numbers; its payload-type and
    /// extension tables are made again from what the subscriber negotiated. Only the
    /// owner hears `track_published` (how it learns the id, as on a first publish);
    /// the track's subscribers get a keyframe.
    fn adopt(&mut self, t: usize, stream: Stream, now: Instant, effects: &mut Vec<Effect>) {
        let track = &mut self.tracks[t];
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %track.info.participant_id, track_id = %track.info.track_id, mid = %stream.mid, "parked track published again");
        track.parked = None;
        track.conn = stream.conn;
        track.receiver = stream.receiver;
        // A new connection sends all its layers until told otherwise.
        track.dynacast.reset();
        let gap = track.restart_gap(now);
        track.layers = vec![Layer::new(track.info.kind, &stream, track.next_cache_id)];
        track.next_cache_id = track.next_cache_id.wrapping_add(1);
        track.mid = stream.mid;
        track.keyframes = KeyframeFormat::of(&stream.mime_type);
        track.mime_type = stream.mime_type;
        track.negotiated = stream.negotiated;
        track.level = level_meter(track.info.kind, &track.mime_type, &track.negotiated);
        for leg in &mut track.legs {
            leg.rewrite.restart(gap);
            // The old layers are gone: each leg starts again with what it wants of the new ones.
            leg.layer = LayerSelector::new(leg.layer.target());
            if let Some(sent) = &leg.sent {
                leg.rewrite.pt_map = PtMap::by_codec(
                    track.negotiated.codecs.iter().map(Codec::key),
                    sent.codecs.iter().map(Codec::key),
                );
                leg.rewrite.ext_map = ExtMap::by_uri(
                    track.negotiated.extensions.iter().map(|(uri, id)| (uri.as_str(), *id)),
                    sent.extensions.iter().map(|(uri, id)| (uri.as_str(), *id)),
                );
                set_rtx(&mut leg.history, leg.rewrite.ssrc, sent);
            }
        }
        effects.push(Effect::Signal {
            to: track.info.participant_id.clone(),
            message: ServerMessage::TrackPublished {
                track: track.info.clone(),
            },
        });
        self.reroute();
        self.request_layer_keyframe(t, 0, now, effects);
    }

    /// Another stream on the mid of published track `t`: a simulcast layer arriving (kept
    /// beside the others; legs move to it when they want it), a layer's sender restarted
    /// (a new SSRC for a known rid: the legs on it continue their sequence numbers and
    /// timestamps), or, without a rid, the client restarted its sender (the track follows
    /// the new stream alone, every leg continuing).
    fn stream_again(&mut self, t: usize, participant: &str, stream: Stream, now: Instant, effects: &mut Vec<Effect>) {
        let track = &mut self.tracks[t];
        if track.layers.iter().any(|l| l.ssrc == stream.ssrc) {
            return;
        }
        let Some(new) = stream.layer.clone() else {
            if !stream.replaces {
                return;
            }
            tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, mid = %stream.mid, new = stream.ssrc, "published track changes SSRC");
            let gap = track.restart_gap(now);
            track.layers = vec![Layer::new(track.info.kind, &stream, track.next_cache_id)];
            track.next_cache_id = track.next_cache_id.wrapping_add(1);
            track.dynacast.reset();
            track.receiver = stream.receiver;
            track.keyframes = KeyframeFormat::of(&stream.mime_type);
            track.mime_type = stream.mime_type;
            for leg in &mut track.legs {
                leg.rewrite.restart(gap);
                leg.layer = LayerSelector::new(leg.layer.target());
            }
            self.reroute();
            self.request_layer_keyframe(t, 0, now, effects);
            return;
        };
        if let Some(l) = track
            .layers
            .iter()
            .position(|l| l.rid.as_deref() == Some(new.rid.as_str()))
        {
            tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, mid = %stream.mid, rid = %new.rid, new = stream.ssrc, "simulcast layer changes SSRC");
            let since = track.layers[l].last_packet;
            let gap = track.ticks_since(since, now);
            let layer = &mut track.layers[l];
            layer.ssrc = stream.ssrc;
            layer.newest_ts = None;
            if let Some(cache) = &mut layer.cache {
                cache.restart();
            }
            for leg in track.legs.iter_mut().filter(|leg| leg.layer.layers().0 == Some(l)) {
                leg.rewrite.restart(gap);
            }
            self.reroute();
            self.request_layer_keyframe(t, l, now, effects);
            return;
        }
        if track.layers.len() >= MAX_LAYERS || track.layers.iter().any(|l| l.rid.is_none()) {
            tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, mid = %stream.mid, rid = %new.rid, "simulcast layer not forwarded");
            return;
        }
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, track_id = %track.info.track_id, rid = %new.rid, rank = new.rank, ssrc = stream.ssrc, "simulcast layer");
        let layer = Layer::new(track.info.kind, &stream, track.next_cache_id);
        track.next_cache_id = track.next_cache_id.wrapping_add(1);
        track.layers.push(layer);
        self.reroute();
    }

    /// Gives `subscriber` a leg of track `t` (the shell adds its sender) and
    /// schedules a renegotiation.
    fn add_leg(&mut self, t: usize, subscriber: &str, effects: &mut Vec<Effect>) {
        let Some(track) = self.tracks.get_mut(t) else {
            return;
        };
        if track.info.participant_id == subscriber || track.legs.iter().any(|l| l.subscriber == subscriber) {
            return;
        }
        let leg = self.next_leg;
        self.next_leg += 1;
        let ssrc = rand::random::<u32>();
        track.legs.push(Leg {
            id: leg,
            subscriber: subscriber.into(),
            bound: None,
            rewrite: DownLeg::new(ssrc),
            negotiated: false,
            sent: None,
            forwarded: 0,
            history: (track.info.kind == TrackKind::Video).then(LegHistory::default),
            layer: LayerSelector::default(),
            last_sent: None,
            twcc: 0,
            told_layer: None,
        });
        effects.push(Effect::AddSender {
            subscriber: subscriber.into(),
            leg,
            track: track.info.clone(),
            ssrc,
        });
        if let Some(m) = self.member_mut(subscriber) {
            m.negotiation.want();
        }
    }

    fn leg_mut(&mut self, leg: LegId) -> Option<&mut Leg> {
        self.tracks
            .iter_mut()
            .flat_map(|t| t.legs.iter_mut())
            .find(|l| l.id == leg)
    }

    /// The shell added the sender of [`Effect::AddSender`].
    pub fn leg_bound(&mut self, leg: LegId, conn: ConnId, sender: RTCRtpSenderId) {
        if let Some(l) = self.leg_mut(leg) {
            l.bound = Some((conn, sender));
            // A new subscriber connection: tell it its layers again.
            l.told_layer = None;
        }
    }

    /// The shell could not add the sender: the subscriber does without that track.
    pub fn leg_failed(&mut self, leg: LegId) {
        for t in &mut self.tracks {
            t.legs.retain(|l| l.id != leg);
        }
    }

    /// Removes a published track: every subscriber loses its leg (one
    /// renegotiation each, batched) and everyone hears `track_unpublished`.
    fn unpublish(&mut self, track_id: &str, _now: Instant, effects: &mut Vec<Effect>) {
        let Some(pos) = self.tracks.iter().position(|t| t.info.track_id == track_id) else {
            return;
        };
        let track = self.tracks.remove(pos);
        self.reroute();
        // A mirror is counted where its publisher is.
        if track.mirror.is_none() {
            self.stats.track_removed();
        }
        for leg in &track.legs {
            if let Some((conn, sender)) = leg.bound {
                effects.push(Effect::RemoveSender { conn, sender });
            }
            if let Some(m) = self.member_mut(&leg.subscriber) {
                m.negotiation.want();
            }
        }
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %track.info.participant_id, track_id, "track unpublished");
        self.signal_all(
            &ServerMessage::TrackUnpublished {
                track_id: track_id.into(),
                participant_id: track.info.participant_id,
            },
            effects,
        );
    }

    // ---- subscriber negotiation ----

    /// The offers to make now: one per subscriber connection that has changes
    /// and no offer outstanding. Every change since the last offer is in it.
    pub fn due_offers(&mut self, offers: &mut Vec<Offer>) {
        for m in &mut self.members {
            if let Some(conn) = m.subscriber
                && m.negotiation.start_offer()
            {
                offers.push(Offer {
                    participant: m.id.clone(),
                    conn,
                    restart: std::mem::take(&mut m.negotiation.restart),
                });
            }
        }
    }

    /// Whether any subscriber connection has changes waiting for an offer.
    pub fn wants_offers(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.subscriber.is_some() && m.negotiation.wanted && !m.negotiation.outstanding)
    }

    /// The client asked for a fresh subscriber connection (`restart_ice`): its
    /// path is gone or failing, and a new connection (new ICE credentials, new
    /// DTLS) is the subscriber-side ICE restart, since the server offers there and
    /// keeps one set of credentials per connection. The old connection closes; every
    /// leg stays (its SSRC, its sequence numbers, whether it is paused) and gets a
    /// sender on the new connection; the next offer is marked `restart`. An offer
    /// outstanding on the old connection is forgotten with it.
    pub fn restart_subscriber(&mut self, participant: &str, effects: &mut Vec<Effect>) -> Result<(), Error> {
        let m = self.member_mut(participant).ok_or_else(not_in_call)?;
        if let Some(conn) = m.subscriber.take() {
            effects.push(Effect::Close { conn });
        }
        m.pending_candidates.retain(|(role, _)| *role != PeerRole::Subscriber);
        m.negotiation = Negotiation {
            outstanding: false,
            wanted: true,
            restart: true,
        };
        for track in &mut self.tracks {
            for leg in track.legs.iter_mut().filter(|l| l.subscriber == participant) {
                leg.bound = None;
                leg.negotiated = false;
                effects.push(Effect::AddSender {
                    subscriber: leg.subscriber.clone(),
                    leg: leg.id,
                    track: track.info.clone(),
                    ssrc: leg.rewrite.ssrc,
                });
            }
        }
        Ok(())
    }

    /// Making the offer failed: nothing is outstanding.
    pub fn offer_failed(&mut self, participant: &str) {
        if let Some(m) = self.member_mut(participant) {
            m.negotiation.answered();
        }
    }

    /// The subscriber connection an answer is for, if an offer is outstanding on it.
    pub fn expecting_answer(&self, participant: &str) -> Result<ConnId, Error> {
        let m = self.member(participant).ok_or_else(not_in_call)?;
        m.subscriber.filter(|_| m.negotiation.outstanding).ok_or_else(|| {
            err(
                ErrorCode::MediaStateError,
                "no subscribe_offer is waiting for an answer",
            )
        })
    }

    /// The answer was applied. `negotiated` gives, for each sender the answer
    /// negotiated (direction send), what it negotiated; those legs get their
    /// rewrite tables. Legs negotiated for the first time want a keyframe when
    /// the connection is up (else [`subscriber_connected`](Self::subscriber_connected) asks).
    pub fn subscriber_answered(
        &mut self,
        participant: &str,
        negotiated: &[(RTCRtpSenderId, Negotiated)],
        connected: bool,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        let Some(m) = self.member_mut(participant) else {
            return;
        };
        m.negotiation.answered();
        let Some(conn) = m.subscriber else {
            return;
        };
        // A renegotiation of a connection that is up (the shell knows it is).
        m.subscriber_up |= connected;
        let mut fresh = Vec::new();
        for (t, track) in self.tracks.iter_mut().enumerate() {
            let Some(l) = track
                .legs
                .iter()
                .position(|l| l.subscriber == participant && l.bound.is_some_and(|(c, _)| c == conn))
            else {
                continue;
            };
            let leg = &mut track.legs[l];
            let Some((_, sent)) = negotiated.iter().find(|(s, _)| Some(*s) == leg.bound.map(|(_, s)| s)) else {
                // Added after the offer went out: it waits for the re-offer.
                continue;
            };
            leg.rewrite.pt_map = PtMap::by_codec(
                track.negotiated.codecs.iter().map(Codec::key),
                sent.codecs.iter().map(Codec::key),
            );
            leg.rewrite.ext_map = ExtMap::by_uri(
                track.negotiated.extensions.iter().map(|(uri, id)| (uri.as_str(), *id)),
                sent.extensions.iter().map(|(uri, id)| (uri.as_str(), *id)),
            );
            set_rtx(&mut leg.history, leg.rewrite.ssrc, sent);
            leg.twcc = twcc_id(sent);
            leg.sent = Some(sent.clone());
            if leg.rewrite.pt_map.is_empty() {
                tracing::debug!(meeting_id = %self.meeting_id, participant_id = %participant, track_id = %track.info.track_id, "no common codec: not forwarded");
            }
            if !leg.negotiated {
                leg.negotiated = true;
                fresh.push((t, l));
            }
        }
        if connected {
            for (t, l) in fresh {
                self.request_leg_keyframe(t, l, now, effects);
            }
        }
    }

    /// A subscriber connection came up: it needs a keyframe of everything it receives.
    pub fn subscriber_connected(&mut self, conn: ConnId, now: Instant, effects: &mut Vec<Effect>) {
        if let Some(m) = self.members.iter_mut().find(|m| m.subscriber == Some(conn)) {
            m.subscriber_up = true;
        }
        let wanted: Vec<(usize, usize)> = (0..self.tracks.len())
            .filter_map(|t| {
                let l = self.tracks[t]
                    .legs
                    .iter()
                    .position(|l| l.negotiated && l.bound.is_some_and(|(c, _)| c == conn))?;
                Some((t, l))
            })
            .collect();
        for (t, l) in wanted {
            self.request_leg_keyframe(t, l, now, effects);
        }
    }

    /// RTCP arrived on connection `conn`. A subscriber connection heard again after
    /// [`RESUME_GAP`] of silence is back from an outage: it needs a keyframe of
    /// everything it receives, as when it first connected.
    pub fn subscriber_heard(&mut self, conn: ConnId, now: Instant, effects: &mut Vec<Effect>) {
        let Some(m) = self.members.iter_mut().find(|m| m.subscriber == Some(conn)) else {
            return;
        };
        let resumed = m
            .last_heard
            .is_some_and(|at| now.saturating_duration_since(at) >= RESUME_GAP);
        m.last_heard = Some(now);
        if resumed {
            self.subscriber_connected(conn, now, effects);
        }
    }

    // ---- candidates ----

    /// Keeps a candidate until its connection has a remote description (bounded: a client has few).
    pub fn hold_candidate(
        &mut self,
        participant: &str,
        target: PeerRole,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), Error> {
        let m = self.member_mut(participant).ok_or_else(not_in_call)?;
        if m.pending_candidates.len() >= MAX_PENDING_CANDIDATES {
            return Err(err(
                ErrorCode::RateLimited,
                "too many candidates before the description",
            ));
        }
        m.pending_candidates.push((target, candidate));
        Ok(())
    }

    /// The candidates held for a connection that now has its remote description.
    pub fn take_candidates(&mut self, participant: &str, role: PeerRole) -> Vec<RTCIceCandidateInit> {
        let Some(m) = self.member_mut(participant) else {
            return Vec::new();
        };
        let (ready, later): (Vec<_>, Vec<_>) = m.pending_candidates.drain(..).partition(|(r, _)| *r == role);
        m.pending_candidates = later;
        ready.into_iter().map(|(_, c)| c).collect()
    }

    // ---- mute and subscriptions ----

    /// The owner muted or unmuted one of its tracks: everyone hears it.
    pub fn mute_track(
        &mut self,
        participant: &str,
        track_id: &str,
        muted: bool,
        effects: &mut Vec<Effect>,
    ) -> Result<(), Error> {
        if !self.contains(participant) {
            return Err(not_in_call());
        }
        let Some(track) = self
            .tracks
            .iter_mut()
            .find(|t| t.info.track_id == track_id && t.info.participant_id == participant)
        else {
            return Err(err(ErrorCode::NotFound, "no such track of yours"));
        };
        track.info.muted = muted;
        let mid = track.mid.clone();
        if let Some(a) = self
            .member_mut(participant)
            .and_then(|m| m.announced.iter_mut().find(|a| a.mid == mid))
        {
            a.muted = muted;
        }
        self.signal_all(
            &ServerMessage::TrackMuted {
                track_id: track_id.into(),
                participant_id: participant.into(),
                muted,
            },
            effects,
        );
        Ok(())
    }

    /// A subscriber pauses or resumes one track it receives, and says which quality
    /// it wants of it (`None` keeps the last; `Off` stops it as `paused` does). A
    /// resumed leg continues its sequence numbers where it stopped and asks for a
    /// keyframe; another quality moves the leg to that simulcast layer on the layer's
    /// next keyframe (asked for with the leg's next packet; see [`LayerSelector`]).
    pub fn set_subscription(
        &mut self,
        participant: &str,
        track_id: &str,
        paused: bool,
        quality: Option<Quality>,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) -> Result<(), Error> {
        if !self.contains(participant) {
            return Err(not_in_call());
        }
        let target = match quality {
            Some(Quality::High) => Some(Target::HIGH),
            Some(Quality::Medium) => Some(Target::MEDIUM),
            Some(Quality::Low) => Some(Target::LOW),
            Some(Quality::Off) | None => None,
        };
        let stop = paused || quality == Some(Quality::Off);
        let found = self.tracks.iter_mut().enumerate().find_map(|(t, track)| {
            if track.info.track_id != track_id {
                return None;
            }
            let l = track.legs.iter().position(|l| l.subscriber == participant)?;
            let leg = &mut track.legs[l];
            if let Some(target) = target {
                leg.layer.set_target(target);
            }
            Some((t, l, leg.rewrite.set_paused(stop)))
        });
        let Some((t, l, resumed)) = found else {
            return Err(err(ErrorCode::NotFound, "no such track to subscribe to"));
        };
        if resumed {
            self.request_leg_keyframe(t, l, now, effects);
        }
        Ok(())
    }

    // ---- keyframes ----

    /// A subscriber connection asked for a keyframe of the stream it receives as `ssrc`.
    pub fn keyframe_requested(&mut self, conn: ConnId, ssrc: u32, now: Instant, effects: &mut Vec<Effect>) {
        let found = self.tracks.iter().enumerate().find_map(|(t, track)| {
            let l = track
                .legs
                .iter()
                .position(|l| l.rewrite.ssrc == ssrc && l.bound.is_some_and(|(c, _)| c == conn))?;
            Some((t, l))
        });
        if let Some((t, l)) = found {
            self.request_leg_keyframe(t, l, now, effects);
        }
    }

    /// Asks for a keyframe of the layer leg `l` of track `t` forwards (or waits for, or
    /// would start with), once the leg's subscriber connection is up (until then nothing
    /// could receive it; coming up asks).
    fn request_leg_keyframe(&mut self, t: usize, l: usize, now: Instant, effects: &mut Vec<Effect>) {
        let Some(track) = self.tracks.get(t) else {
            return;
        };
        let Some(leg) = track.legs.get(l) else {
            return;
        };
        let up = self.members.iter().any(|m| {
            m.id == leg.subscriber && m.subscriber_up && leg.bound.is_some_and(|(c, _)| Some(c) == m.subscriber)
        });
        if !up {
            tracing::debug!(meeting_id = %self.meeting_id, track_id = %track.info.track_id, subscriber = %leg.subscriber, "keyframe for a subscriber not connected yet: asked when it is");
            return;
        }
        let layer = track.keyframe_layer(l, now);
        self.request_layer_keyframe(t, layer, now, effects);
    }

    /// Asks a video track's publisher for a keyframe of one layer, at most once per
    /// [`KEYFRAME_INTERVAL`]; a request inside the interval is sent when it has
    /// passed (with the layer's next packet).
    fn request_layer_keyframe(&mut self, t: usize, layer: usize, now: Instant, effects: &mut Vec<Effect>) {
        let Some(track) = self.tracks.get_mut(t) else {
            return;
        };
        let (conn, receiver) = (track.conn, track.receiver);
        // A parked track has no publisher to ask; adopting it asks.
        if track.info.kind == TrackKind::Video
            && track.parked.is_none()
            && let Some(layer) = track.layers.get_mut(layer)
        {
            let now_sent = layer.throttle.request(now);
            tracing::debug!(meeting_id = %self.meeting_id, track_id = %track.info.track_id, ssrc = layer.ssrc, deferred = !now_sent, "keyframe requested");
            if now_sent {
                effects.push(Effect::RequestKeyframe {
                    conn,
                    receiver,
                    ssrc: layer.ssrc,
                });
            }
        }
    }

    // ---- forwarding ----

    /// The track and layer a packet of `from` with `ssrc` feeds: the first track (in order)
    /// of that connection, not parked, with a layer of that SSRC among its first
    /// [`MAX_LAYERS`], and the first such layer. Read from [`MediaRoom::routes`]; debug
    /// builds check it against a scan of the tracks on every packet.
    fn route(&self, from: ConnId, ssrc: u32) -> Option<(usize, usize)> {
        let i = self.routes.partition_point(|r| (r.conn, r.ssrc) < (from, ssrc));
        let found = self
            .routes
            .get(i)
            .filter(|r| r.conn == from && r.ssrc == ssrc)
            .map(Route::at);
        debug_assert_eq!(found, self.route_by_scan(from, ssrc), "routes out of date");
        found
    }

    /// What [`MediaRoom::route`] answers, by walking the tracks.
    fn route_by_scan(&self, from: ConnId, ssrc: u32) -> Option<(usize, usize)> {
        self.tracks.iter().enumerate().find_map(|(t, track)| {
            if track.conn != from || track.parked.is_some() {
                return None;
            }
            let li = track.layers.iter().take(MAX_LAYERS).position(|l| l.ssrc == ssrc)?;
            Some((t, li))
        })
    }

    /// Makes [`MediaRoom::routes`] again from the tracks: every layer of every track not
    /// parked, sorted by connection and SSRC and then by track and layer, so that the first
    /// route of a connection's SSRC is what a scan of the tracks finds first.
    fn reroute(&mut self) {
        self.routes.clear();
        for (t, track) in self.tracks.iter().enumerate() {
            if track.parked.is_some() {
                continue;
            }
            // Four layers per track in a u32: a billion tracks would not fit in memory anyway.
            let Some(t) = t.checked_mul(4).and_then(|t| u32::try_from(t).ok()) else {
                break;
            };
            for (l, layer) in track.layers.iter().take(MAX_LAYERS).enumerate() {
                self.routes.push(Route {
                    conn: track.conn,
                    ssrc: layer.ssrc,
                    slot: t | l as u32,
                });
            }
        }
        self.routes.sort_unstable();
    }

    /// Forwards one RTP packet from a publisher connection to every leg of its
    /// track: each negotiated, unpaused leg whose connection the sink admits
    /// gets a copy with its own SSRC, payload type, sequence number and
    /// extensions. Packets of no published track (an unannounced mid, RTX, a
    /// track being removed) go nowhere. A deferred keyframe request that has
    /// come due goes out as an effect. Allocates nothing of ours.
    pub fn forward(
        &mut self,
        from: ConnId,
        packet: &Packet,
        now: Instant,
        sink: &mut impl LegSink,
        effects: &mut Vec<Effect>,
    ) {
        let ssrc = packet.header.ssrc;
        // (Routes always point at a track and layer that exist: `reroute` follows every
        // change. Checked anyway, so that a stale route would drop a packet, not panic.)
        let Some((track, li)) = self
            .route(from, ssrc)
            .and_then(|(t, li)| Some((self.tracks.get_mut(t)?, li)))
            .filter(|(track, li)| *li < track.layers.len())
        else {
            return;
        };
        let (conn, receiver, video) = (track.conn, track.receiver, track.info.kind == TrackKind::Video);
        // A VP8 packet's temporal layer: measured per layer, and each leg's temporal cap.
        let tinfo = match track.keyframes {
            KeyframeFormat::Vp8 => Temporal::parse(&packet.payload),
            _ => None,
        };
        let layer = &mut track.layers[li];
        if let Some(cache) = &mut layer.cache
            && cache.insert(packet, now) == Insert::Duplicate
        {
            self.stats.add(|c| &c.duplicate_packets, 1);
            return;
        }
        layer.packets += 1;
        let stale = layer.stale(packet.header.timestamp, now);
        layer
            .reception
            .packet(packet.header.sequence_number, packet.header.timestamp, now);
        let size = (rtc::shared::marshal::MarshalSize::marshal_size(&packet.header) + packet.payload.len()) as u64;
        layer.rate.add(size, now);
        if video {
            layer.temporal.add(tinfo.map(|t| t.tid), size, now);
        }
        let resumed = layer
            .last_packet
            .is_some_and(|at| now.saturating_duration_since(at) >= RESUME_GAP);
        layer.last_packet = Some(now);
        if (resumed && video && layer.throttle.request(now)) || layer.throttle.poll(now) {
            tracing::debug!(meeting_id = %self.meeting_id, ssrc, resumed, "keyframe request sent (resumed stream or deferred)");
            effects.push(Effect::RequestKeyframe { conn, receiver, ssrc });
        }
        let epoch = layer.cache.as_ref().map_or(0, |c| c.epoch());
        if let Some(meter) = &mut track.level
            && let Some(ext) = packet.header.extensions.iter().find(|e| e.id == meter.ext_id())
            && let Some(level) = speaker::parse_level(&ext.payload)
        {
            meter.observe(level, packet.header.timestamp, now, self.speakers.params());
        }
        // Padding only (the publisher probing its uplink): nothing for a subscriber to decode.
        let padding = packet.payload.is_empty();
        let (mut written, mut dropped) = (0u64, 0u64);
        let in_seq = packet.header.sequence_number;
        let (ranks, n, available) = track.layer_view(now);
        let format = track.keyframes;
        let mut keyframe: Option<bool> = None;
        let mut wanted = 0u32;
        let mut switches = 0u64;
        let mut temporal_drops = 0u64;
        for leg in &mut track.legs {
            let Some((conn, sender)) = leg.bound else { continue };
            if !leg.negotiated || leg.rewrite.accepts(&packet.header).is_err() {
                continue;
            }
            // A codec whose keyframes we cannot see stays on the layer it started with
            // (a switch would wait for ever and ask the publisher every second).
            let desired = match (format, leg.layer.layers().0) {
                (KeyframeFormat::Unknown, Some(current)) => Some(current),
                _ => leg.layer.desired(&ranks[..n], available),
            };
            let mut starts_keyframe =
                || !stale && *keyframe.get_or_insert_with(|| format.starts_keyframe(&packet.payload));
            let (pick, ask) = leg.layer.pick(li, in_seq, desired, &mut starts_keyframe, now);
            if let Some(l) = ask {
                wanted |= 1 << l;
            }
            match pick {
                Pick::Skip => continue,
                // Probes are the publisher's business: dropped, the leg's numbering closed up.
                Pick::Forward if padding && leg.rewrite.skip_padding(in_seq) => continue,
                Pick::Forward => {}
                Pick::Switch => {
                    // One continuous stream for the decoder: sequence numbers right after the
                    // last sent, timestamps as much later as time has passed since.
                    let clock = track
                        .negotiated
                        .codecs
                        .iter()
                        .find(|c| c.mime_type.eq_ignore_ascii_case(&track.mime_type))
                        .map_or(90_000, |c| c.clock_rate);
                    let elapsed = leg
                        .last_sent
                        .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
                    leg.rewrite.restart((elapsed.min(10.0) * f64::from(clock)) as u32);
                    switches += 1;
                }
            }
            // Frames above the leg's temporal cap are left out, its numbering closed up.
            if format == KeyframeFormat::Vp8
                && !leg
                    .rewrite
                    .temporal_pass(tinfo, tinfo.is_some() && starts_keyframe(), in_seq)
            {
                temporal_drops += 1;
                continue;
            }
            let lose = match sink.admit(conn) {
                Admit::Yes => false,
                Admit::NotReady => continue,
                Admit::Drop => {
                    dropped += 1;
                    continue;
                }
                Admit::Lose => true,
            };
            let copy = &mut self.scratch;
            leg.rewrite.copy_into(packet, copy);
            let vp8 = if format == KeyframeFormat::Vp8 {
                leg.rewrite.rewrite_vp8(&mut copy.payload)
            } else {
                Offsets::ZERO
            };
            if leg.twcc != 0 {
                stamp(&mut self.bwe, conn, leg.twcc, copy, size, now);
            }
            leg.last_sent = Some(now);
            if let Some(history) = &mut leg.history {
                let h = &copy.header;
                history.sent(h.sequence_number, h.timestamp, in_seq, epoch, vp8, now);
            }
            if lose {
                dropped += 1;
                continue;
            }
            if sink.write(conn, sender, copy) {
                if leg.forwarded == 0
                    && let Some(m) = self
                        .members
                        .iter_mut()
                        .find(|m| m.id == leg.subscriber && !m.received_media)
                {
                    // Its first media: how long entering the call took to show something.
                    m.received_media = true;
                    self.stats
                        .shard
                        .join_to_first_packet
                        .observe(now.saturating_duration_since(m.joined_at));
                }
                leg.forwarded += 1;
                written += 1;
            } else {
                dropped += 1;
            }
        }
        // The copy's payload and extensions share the opened packet's buffer (the shard's
        // receive pool, `srtp_gcm::Opener::open_owned`): let go of them with the packet, or the
        // room would keep that whole buffer until its next packet.
        self.scratch.payload = Default::default();
        self.scratch.header.extensions.clear();
        for l in 0..n {
            if wanted & (1 << l) != 0
                && let Some(layer) = track.layers.get_mut(l)
                && layer.throttle.request(now)
            {
                effects.push(Effect::RequestKeyframe {
                    conn,
                    receiver,
                    ssrc: layer.ssrc,
                });
            }
        }
        if switches > 0 {
            self.stats.add(|c| &c.layer_switches, switches);
        }
        if temporal_drops > 0 {
            self.stats.add(|c| &c.temporal_drops, temporal_drops);
        }
        if written > 0 {
            self.stats.add(|c| &c.forwarded_packets, written);
            self.stats.add(|c| &c.forwarded_bytes, written * size);
        }
        if dropped > 0 {
            self.stats.add(|c| &c.dropped_packets, dropped);
        }
    }

    // ---- congestion control toward subscribers ----

    /// A subscriber connection's transport-wide congestion control feedback: the estimate
    /// moves (`bwe::Bwe::feedback`) and the connection's video legs are fitted under it
    /// ([`MediaRoom::fit_legs`]). Feedback on packets this room never numbered changes nothing.
    pub fn congestion_feedback(&mut self, conn: ConnId, acks: impl IntoIterator<Item = Ack>, now: Instant) {
        let Ok(i) = self.bwe.binary_search_by_key(&conn, |(c, _)| *c) else {
            return;
        };
        let bwe = &mut self.bwe[i].1;
        let verdict = bwe.feedback(acks, now, &mut self.feedback_scratch);
        self.estimate_moved(conn, verdict, now);
    }

    /// Carries out what a subscriber connection's new estimate means for its legs.
    fn estimate_moved(&mut self, conn: ConnId, verdict: Verdict, now: Instant) {
        if verdict == Verdict::Down {
            self.stats.add(|c| &c.bwe_drops, 1);
        }
        match verdict {
            Verdict::Keep => {}
            Verdict::Probed { leg, rank } => self.probed(conn, leg, rank),
            _ => self.fit_legs(conn, verdict, now),
        }
    }

    /// A subscriber connection's REMB (`bps` it says it can receive). Taken as its estimate
    /// only where none of its legs negotiated transport-wide feedback (aiortc: receive-side
    /// estimation); otherwise the feedback is the better source and the REMB is ignored.
    /// Its video legs are then fitted as after feedback ([`Bwe::remb`]).
    pub fn remb_received(&mut self, conn: ConnId, bps: u64, now: Instant) {
        let legs = || {
            self.tracks
                .iter()
                .flat_map(|t| t.legs.iter())
                .filter(|l| l.negotiated && l.bound.is_some_and(|(c, _)| c == conn))
        };
        if legs().next().is_none() || legs().any(|l| l.twcc != 0) {
            return;
        }
        let sending = self.sending_bps(conn, now);
        let i = match self.bwe.binary_search_by_key(&conn, |(c, _)| *c) {
            Ok(i) => i,
            Err(i) => {
                self.bwe.insert(i, (conn, Bwe::default()));
                i
            }
        };
        let verdict = self.bwe[i].1.remb(bps, sending, now);
        self.estimate_moved(conn, verdict, now);
    }

    /// What subscriber connection `conn` is being sent, bit/s: each unpaused leg's layer
    /// (audio's one, a video leg's current layer) at the rate it arrives.
    fn sending_bps(&self, conn: ConnId, now: Instant) -> u64 {
        let mut sum = 0;
        for t in &self.tracks {
            let (layers, n) = t.layer_rates(now);
            for leg in t
                .legs
                .iter()
                .filter(|l| !l.rewrite.paused() && l.bound.is_some_and(|(c, _)| c == conn))
            {
                sum += match t.info.kind {
                    TrackKind::Audio => layers[..n].iter().map(|l| l.1).max().unwrap_or(0),
                    TrackKind::Video => leg.layer.layers().0.and_then(|i| layers[..n].get(i)).map_or(0, |l| l.1),
                };
            }
        }
        sum
    }

    /// A probe for leg `leg` on `conn` found room: the leg tries layer `rank` (its
    /// connection's `Bwe` has started the try).
    fn probed(&mut self, conn: ConnId, leg: LegId, rank: u8) {
        self.stats.add(|c| &c.bwe_probes_passed, 1);
        let found = self
            .tracks
            .iter_mut()
            .flat_map(|t| t.legs.iter_mut())
            .find(|l| l.id == leg && l.bound.is_some_and(|(c, _)| c == conn));
        if let Some(l) = found
            && l.layer.cap().0 < rank
        {
            l.layer.set_cap(Target(rank));
            tracing::debug!(meeting_id = %self.meeting_id, leg, rank, "bandwidth: the probe found room, trying the next layer");
        }
    }

    /// Whether a subscriber connection's path is being probed ([`MediaRoom::send_probes`]
    /// is then due on every turn).
    pub fn probing(&self) -> bool {
        self.bwe.iter().any(|(_, b)| b.probe.is_some())
    }

    /// Sends what the probes of this room's subscriber connections call for now (padding
    /// at their target rate: RTX copies of what a video leg on the connection recently
    /// sent, numbered for the estimate), and settles probes whose feedback never came.
    pub fn send_probes(&mut self, now: Instant, sink: &mut impl LegSink) {
        for i in 0..self.bwe.len() {
            let conn = self.bwe[i].0;
            if let Some(Verdict::Probed { leg, rank }) = self.bwe[i].1.probe_outcome(now) {
                self.probed(conn, leg, rank);
                continue;
            }
            let Some(probe) = self.bwe[i].1.probe.as_mut() else {
                continue;
            };
            let (mut due, probed) = (probe.due(now), probe.leg);
            if due == 0 || sink.admit(conn) != Admit::Yes {
                continue;
            }
            // The probed leg's copies if it has RTX, else another RTX leg's on the connection.
            let Some((t, l)) = self.probe_leg(conn, probed) else {
                continue;
            };
            let Track { layers, legs, .. } = &mut self.tracks[t];
            let leg = &mut legs[l];
            let (Some((conn, sender)), Some(history)) = (leg.bound, leg.history.as_mut()) else {
                continue;
            };
            let mut sent = 0;
            while due > 0 && sent < MAX_PROBE_PACKETS_PER_TURN {
                let cache_of = |epoch: u32| {
                    layers
                        .iter()
                        .filter_map(|l| l.cache.as_ref())
                        .find(|c| c.epoch() >> 24 == epoch >> 24)
                };
                let Some(mut packet) = history.probe_copy(cache_of, &leg.rewrite, now) else {
                    break;
                };
                let size = (12 + packet.payload.len()) as u64;
                stamp(&mut self.bwe, conn, leg.twcc, &mut packet, size, now);
                if !sink.retransmit(conn, sender, packet, true) {
                    break;
                }
                due = due.saturating_sub(size + 4);
                sent += 1;
            }
            self.stats.add(|c| &c.bwe_probe_packets, sent);
        }
    }

    /// The leg whose packets pad a probe of `conn`: `probed` if it can (RTX negotiated,
    /// numbered for the estimate), else another video leg on the connection that can.
    fn probe_leg(&self, conn: ConnId, probed: LegId) -> Option<(usize, usize)> {
        let can = |l: &Leg| {
            l.negotiated
                && l.twcc != 0
                && l.bound.is_some_and(|(c, _)| c == conn)
                && l.history.as_ref().is_some_and(|h| h.rtx.is_some())
        };
        let mut other = None;
        for (t, track) in self.tracks.iter().enumerate() {
            for (l, leg) in track.legs.iter().enumerate() {
                if can(leg) {
                    if leg.id == probed {
                        return Some((t, l));
                    }
                    other.get_or_insert((t, l));
                }
            }
        }
        other
    }

    /// Caps the layer of each video leg on `conn` under the connection's estimate. Audio
    /// comes first: the audio legs' rates are taken off the estimate; then screen shares
    /// take what they need, and the cameras share what is left equally ([`bwe::Budget`];
    /// paused legs take nothing); each gets the highest
    /// layer its share covers (`bwe::fit`, never below the lowest: video is reduced, not
    /// stopped). A drop lowers caps at once; otherwise caps rise only where the next layer
    /// fits with [`bwe::UP_HEADROOM`], or, when the connection may try
    /// (`Bwe::may_try`), one leg below its subscriber's wish tries its next layer.
    fn fit_legs(&mut self, conn: ConnId, verdict: Verdict, now: Instant) {
        let Ok(i) = self.bwe.binary_search_by_key(&conn, |(c, _)| *c) else {
            return;
        };
        let estimate = self.bwe[i].1.estimator.bps();
        let budget = self.budget(conn, estimate, now);
        if budget.screens + budget.cameras == 0 {
            return;
        }
        let on_conn = |l: &Leg| l.negotiated && !l.rewrite.paused() && l.bound.is_some_and(|(c, _)| c == conn);
        let mut try_leg: Option<(usize, usize, u8)> = None;
        // A screen share leg below its top temporal layer: (track, leg, the cap to try).
        let mut try_temporal: Option<(usize, usize, u8)> = None;
        // What the cameras send whatever their share (their lowest layer: video is reduced,
        // never stopped), each screen's part of it: its temporal layers fit in the rest.
        let camera_floor = self
            .tracks
            .iter()
            .filter(|t| t.info.kind == TrackKind::Video && t.info.source != TrackSource::Screen)
            .map(|t| {
                let (layers, n) = t.layer_rates(now);
                let lowest = layers[..n]
                    .iter()
                    .filter(|l| l.2)
                    .min_by_key(|l| l.0)
                    .map_or(0, |l| l.1);
                lowest * t.legs.iter().filter(|l| on_conn(l)).count() as u64
            })
            .sum::<u64>()
            / budget.screens.max(1);
        let mut changed = 0u64;
        for (t, track) in self.tracks.iter_mut().enumerate() {
            if track.info.kind != TrackKind::Video {
                continue;
            }
            let (layers, n) = track.layer_rates(now);
            let layers = &layers[..n];
            for (l, leg) in track.legs.iter_mut().enumerate() {
                if !on_conn(leg) {
                    continue;
                }
                let target = leg.layer.target().0;
                let share = match track.info.source {
                    TrackSource::Screen => budget.screen(bwe::need(layers, target)),
                    _ => budget.camera(),
                };
                let cap = leg.layer.cap().0;
                let new = match verdict {
                    Verdict::Down => bwe::fit(layers, target, share).map_or(cap, |f| f.min(cap)),
                    _ => {
                        let room = (share as f64 / bwe::UP_HEADROOM) as u64;
                        bwe::fit(layers, target, room).map_or(cap, |f| f.max(cap))
                    }
                };
                if new != cap {
                    leg.layer.set_cap(Target(new));
                    changed += 1;
                }
                // A screen share keeps its resolution and gives up frame rate: its temporal
                // layers above what its share carries, less the cameras' lowest layers, are
                // left out ([`temporal::cap_for`]).
                if track.info.source == TrackSource::Screen
                    && let Some(layer) = track.layers.get(leg.layer.layers().0.unwrap_or(0))
                {
                    let (rates, m) = layer.temporal.cumulative(now, LAYER_TIMEOUT);
                    let (current, _) = leg.rewrite.temporal_cap();
                    let room = share.saturating_sub(camera_floor);
                    let new = temporal::cap_for(&rates[..m], current, room, verdict == Verdict::Down);
                    if new != current {
                        leg.rewrite.set_temporal_cap(new);
                        changed += 1;
                    }
                    if new != temporal::ALL && try_temporal.is_none() {
                        let next = if usize::from(new) + 2 >= m {
                            temporal::ALL
                        } else {
                            new + 1
                        };
                        try_temporal = Some((t, l, next));
                    }
                }
                // The next layer up this leg could try: the lowest sending above its cap,
                // within its subscriber's wish.
                let next = layers
                    .iter()
                    .filter(|x| x.2 && x.0 > leg.layer.cap().0 && x.0 <= target)
                    .map(|x| x.0)
                    .min();
                if let Some(next) = next
                    && try_leg.is_none()
                {
                    try_leg = Some((t, l, next));
                }
            }
        }
        // A screen share's frame rate is tried back before a camera's next layer (a try of
        // the next temporal layer itself: a probe's success names a simulcast layer).
        if changed == 0
            && verdict != Verdict::Down
            && self.bwe[i].1.may_try(now)
            && let Some((t, l, next)) = try_temporal
        {
            let leg = &mut self.tracks[t].legs[l];
            leg.rewrite.set_temporal_cap(next);
            self.bwe[i].1.start_trial(leg.id, now);
            tracing::debug!(meeting_id = %self.meeting_id, leg = leg.id, temporal = next, estimate, "bandwidth: trying the next temporal layer");
        } else if changed == 0
            && verdict != Verdict::Down
            && self.bwe[i].1.may_try(now)
            && let Some((t, l, next)) = try_leg
        {
            // Probe first where the connection can carry padding (a leg with RTX); else
            // try the layer itself.
            let track = &self.tracks[t];
            let leg = &track.legs[l];
            let plan = self.probe_leg(conn, leg.id).map(|_| {
                let (layers, n) = track.layer_rates(now);
                let extra = bwe::need(&layers[..n], next).saturating_sub(bwe::need(&layers[..n], leg.layer.cap().0));
                let flowing = self.bwe[i].1.estimator.acked_bps().unwrap_or(estimate);
                let need = flowing + extra;
                (need, (need as f64 * bwe::UP_HEADROOM) as u64)
            });
            let id = leg.id;
            let bwe = &mut self.bwe[i].1;
            match plan {
                Some((need, target)) => {
                    bwe.start_probe(id, next, target, need, now);
                    self.stats.add(|c| &c.bwe_probes, 1);
                    tracing::debug!(meeting_id = %self.meeting_id, leg = id, rank = next, estimate, target, "bandwidth: probing for the next layer");
                }
                None => {
                    self.tracks[t].legs[l].layer.set_cap(Target(next));
                    bwe.start_trial(id, now);
                    tracing::debug!(meeting_id = %self.meeting_id, leg = id, rank = next, estimate, "bandwidth: trying the next layer");
                }
            }
        }
        if changed > 0 {
            tracing::debug!(meeting_id = %self.meeting_id, conn, estimate, ?verdict, changed, "bandwidth: layer caps changed");
        }
    }

    /// How subscriber connection `conn`'s `estimate` is split among its video legs
    /// ([`bwe::Budget`]): audio taken off first, screen shares next, cameras share the rest.
    fn budget(&self, conn: ConnId, estimate: u64, now: Instant) -> bwe::Budget {
        let on_conn = |l: &Leg| l.negotiated && !l.rewrite.paused() && l.bound.is_some_and(|(c, _)| c == conn);
        let (mut audio, mut budget) = (0u64, bwe::Budget::default());
        for t in &self.tracks {
            for leg in t.legs.iter().filter(|l| on_conn(l)) {
                match (t.info.kind, t.info.source) {
                    (TrackKind::Audio, _) => audio += t.layers.iter().map(|l| l.rate.bps()).max().unwrap_or(0),
                    (TrackKind::Video, TrackSource::Screen) => {
                        let (layers, n) = t.layer_rates(now);
                        budget.screens += 1;
                        budget.screens_need += bwe::need(&layers[..n], leg.layer.target().0);
                    }
                    (TrackKind::Video, _) => budget.cameras += 1,
                }
            }
        }
        budget.video = estimate.saturating_sub(audio);
        budget
    }

    /// The share of its estimate a video leg of `track` on subscriber connection `conn`
    /// gets ([`MediaRoom::budget`], as [`MediaRoom::fit_legs`] splits it), once its estimate
    /// has dropped; `None` while its path has never been found short.
    fn video_share(&self, conn: ConnId, track: &Track, leg: &Leg, now: Instant) -> Option<u64> {
        let i = self.bwe.binary_search_by_key(&conn, |(c, _)| *c).ok()?;
        let bwe = &self.bwe[i].1;
        if !bwe.capping {
            return None;
        }
        let budget = self.budget(conn, bwe.estimator.bps(), now);
        Some(match track.info.source {
            TrackSource::Screen => {
                let (layers, n) = track.layer_rates(now);
                budget.screen(bwe::need(&layers[..n], leg.layer.target().0))
            }
            _ => budget.camera(),
        })
    }

    /// Tells each publisher connection whose video is all single-layer the most its
    /// subscribers' paths carry (an RTCP REMB; the policy is [`remb`]'s), so its browser's
    /// encoder sends what fits instead of the gateway forwarding what gets lost. The shard
    /// calls this on its speaker tick. A connection with a simulcast track is never limited
    /// (its layers adapt per subscriber, and REMB would bound the whole connection).
    pub fn evaluate_publisher_limits(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let capping = self.bwe.iter().any(|(_, b)| b.capping);
        let crossing = self
            .tracks
            .iter()
            .any(|t| !t.remote_shares.is_empty() || !t.told_shares.is_empty());
        if self.remb.is_empty() && !capping && !crossing {
            return;
        }
        self.report_mirror_shares(now, effects);
        let mut publishers: Vec<ConnId> = self
            .tracks
            .iter()
            .filter(|t| t.parked.is_none() && t.mirror.is_none())
            .map(|t| t.conn)
            .collect();
        publishers.sort_unstable();
        publishers.dedup();
        let mut shares: Vec<Option<u64>> = Vec::new();
        for conn in publishers {
            let (mut sum, mut video, mut limited) = (0u64, false, true);
            let mut via: Option<(RTCRtpReceiverId, u32)> = None;
            for track in self.tracks.iter().filter(|t| t.conn == conn && t.parked.is_none()) {
                let rate = track.layers.iter().map(|l| l.rate.bps()).max().unwrap_or(0);
                match track.info.kind {
                    TrackKind::Audio => sum += rate,
                    TrackKind::Video if track.layers.len() > 1 => limited = false,
                    TrackKind::Video => {
                        video = true;
                        shares.clear();
                        shares.extend(
                            track
                                .legs
                                .iter()
                                .filter(|l| l.negotiated && !l.rewrite.paused())
                                .filter_map(|l| l.bound.map(|(c, _)| self.video_share(c, track, l, now))),
                        );
                        // Those of the other shards' subscribers, where the track is mirrored.
                        shares.extend(track.remote_shares.iter().flat_map(|(_, s)| s.iter().copied()));
                        match remb::track_limit(&mut shares) {
                            Some(bps) => sum += bps,
                            None => limited = false,
                        }
                        if let Some(layer) = track.layers.first() {
                            via.get_or_insert((track.receiver, layer.ssrc));
                        }
                    }
                }
            }
            let limit = (limited && video).then_some(sum);
            let state = match self.remb.binary_search_by_key(&conn, |(c, _)| *c) {
                Ok(i) => &mut self.remb[i].1,
                Err(_) if limit.is_none() => continue,
                Err(i) => {
                    self.remb.insert(i, (conn, Remb::default()));
                    &mut self.remb[i].1
                }
            };
            if let Some(bps) = state.evaluate(limit, now)
                && let Some((receiver, ssrc)) = via
            {
                tracing::debug!(meeting_id = %self.meeting_id, conn, bps, "publisher limited (REMB)");
                effects.push(Effect::LimitPublisher {
                    conn,
                    receiver,
                    ssrc,
                    bps,
                });
            }
        }
        let tracks = &self.tracks;
        self.remb.retain(|(c, _)| tracks.iter().any(|t| t.conn == *c));
    }

    // ---- connection quality ----

    /// A reception report from subscriber connection `conn` about its leg whose SSRC is
    /// `ssrc`: the share lost (1/256), the jitter (in the leg's clock ticks) and the
    /// round-trip time when it could be told (`quality::rtt_of`). Kept for the
    /// subscriber's next quality evaluation.
    pub fn reception_report(&mut self, conn: ConnId, ssrc: u32, fraction_lost: u8, jitter: u32, rtt: Option<Duration>) {
        let Some(clock_rate) = self.tracks.iter().find_map(|t| {
            t.legs
                .iter()
                .any(|l| l.rewrite.ssrc == ssrc && l.bound.is_some_and(|(c, _)| c == conn))
                .then(|| clock_rate_of(&t.negotiated, &t.mime_type))
        }) else {
            return;
        };
        let Some(m) = self.members.iter().find(|m| m.subscriber == Some(conn)) else {
            return;
        };
        let jitter_ms = f64::from(jitter) * 1000.0 / f64::from(clock_rate.max(1));
        // The member's id borrowed, not cloned: a report a second per subscriber.
        quality_in(&mut self.quality, &m.id, m.joined_at)
            .downlink
            .report(fraction_lost, jitter_ms, rtt);
    }

    /// The quality state of participant `id` (see [`quality_in`]).
    fn quality_of(&mut self, id: &ParticipantId, joined_at: Instant) -> &mut quality::Participant {
        quality_in(&mut self.quality, id, joined_at)
    }

    /// Evaluates every participant's connection quality, when due
    /// ([`quality::Params::evaluate_every`]; the shard calls this on its speaker tick).
    /// A change goes out as `connection_quality` to the participant and to staff in the
    /// call; someone who just entered (or came back) is told what is not the assumed
    /// `excellent`: about itself, and about everyone when it is staff.
    pub fn evaluate_quality(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let params = quality::Params::default();
        if self.quality_due.is_some_and(|at| now < at) {
            return;
        }
        self.quality_due = Some(now + params.evaluate_every);
        let members = &self.members;
        self.quality.retain(|(id, _)| members.iter().any(|m| &m.id == id));
        for mi in 0..self.members.len() {
            let (id, joined_at) = (self.members[mi].id.clone(), self.members[mi].joined_at);
            let sample = self.quality_sample(mi, now);
            let changes = self.quality_changes;
            let q = self.quality_of(&id, joined_at);
            q.catch_up_to.get_or_insert(changes);
            if let Some(verdict) = q.assessment.update(&sample, now, &params) {
                self.quality_changes += 1;
                let q = self.quality_of(&id, joined_at);
                q.changed_at = changes + 1;
                tracing::debug!(meeting_id = %self.meeting_id, participant_id = %id, ?verdict, ?sample, "connection quality");
            }
        }
        let message = |id: &ParticipantId, v: quality::Verdict| ServerMessage::ConnectionQuality {
            participant_id: id.clone(),
            quality: v.quality,
            video_reduced: v.video_reduced,
        };
        // Each participant hears the changes it has not heard, in order, a bounded number per
        // evaluation: about itself, and about everyone (here and on other shards) when staff.
        let mut news: Vec<(u64, &ParticipantId, quality::Verdict)> = Vec::new();
        let mut told: Vec<(usize, u64)> = Vec::new();
        for m in &self.members {
            let staff = m.kind == ParticipantKind::Staff;
            let Some(qi) = self.quality.iter().position(|(p, _)| *p == m.id) else {
                continue;
            };
            let (from, catch_up) = {
                let q = &self.quality[qi].1;
                (q.told_up_to, q.catch_up_to.unwrap_or(0))
            };
            news.clear();
            news.extend(
                self.quality
                    .iter()
                    .filter(|(id, q)| (staff || *id == m.id) && q.changed_at > from)
                    .map(|(id, q)| (q.changed_at, id, q.assessment.announced())),
            );
            if staff {
                news.extend(
                    self.remote_quality
                        .iter()
                        .filter(|(_, _, _, at)| *at > from)
                        .map(|(_, id, v, at)| (*at, id, *v)),
                );
            }
            news.sort_unstable_by_key(|(at, _, _)| *at);
            let (mut last, mut sent) = (from, 0);
            for (at, id, v) in &news {
                if sent == QUALITY_NEWS_PER_EVALUATION {
                    break;
                }
                last = *at;
                // What changed before it was first evaluated and is back to the assumed state
                // is what it assumes already.
                if *at <= catch_up && *v == quality::Verdict::ASSUMED {
                    continue;
                }
                effects.push(Effect::Signal {
                    to: m.id.clone(),
                    message: message(id, *v),
                });
                sent += 1;
            }
            told.push((qi, last));
        }
        for (qi, last) in told {
            self.quality[qi].1.told_up_to = last;
        }
        self.tell_received_layers(now, effects);
    }

    /// Tells each subscriber, when it changes, which layer of each video track it receives
    /// (`video_layer`): the rank forwarded, how many layers the track has, and whether the
    /// subscriber connection's bandwidth estimate holds the leg below its wish (in resolution,
    /// or a screen share's in frame rate: its temporal cap). Only settled
    /// states are told: nothing while the leg waits for a keyframe to switch, nor while it
    /// tries the next layer up (a try that falls back is no change to announce); nothing for
    /// a paused leg.
    fn tell_received_layers(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let bwe = &self.bwe;
        let trying = |conn: ConnId| {
            bwe.binary_search_by_key(&conn, |(c, _)| *c)
                .ok()
                .and_then(|i| bwe[i].1.trial)
                .map(|t| t.leg)
        };
        for t in &mut self.tracks {
            if t.info.kind != TrackKind::Video || t.parked.is_some() {
                continue;
            }
            let (ranks, n, available) = t.layer_view(now);
            for leg in &mut t.legs {
                let Some((conn, _)) = leg.bound else {
                    continue;
                };
                if !leg.negotiated || leg.rewrite.paused() || trying(conn) == Some(leg.id) {
                    continue;
                }
                let desired = leg.layer.desired(&ranks[..n], available);
                // Settled: forwarding the layer it should have, no switch waiting.
                let (Some(current), None) = leg.layer.layers() else {
                    continue;
                };
                if desired != Some(current) {
                    continue;
                }
                // Below its wish in resolution, or, a screen share, in frame rate (`temporal`).
                let reduced = leg
                    .layer
                    .wished(&ranks[..n], available)
                    .is_some_and(|wants| ranks[current] < ranks[wants])
                    || leg.rewrite.temporal_cap().0 != temporal::ALL;
                let told = (ranks[current], n as u8, reduced);
                if leg.told_layer == Some(told) {
                    continue;
                }
                leg.told_layer = Some(told);
                effects.push(Effect::Signal {
                    to: leg.subscriber.clone(),
                    message: ServerMessage::VideoLayer {
                        track_id: t.info.track_id.clone(),
                        layer: told.0,
                        layers: told.1,
                        reduced,
                    },
                });
            }
        }
    }

    /// One window of member `mi`'s links (see `quality::Sample`): the uplink from its
    /// tracks' receptions; the downlink from its congestion feedback (loss: the gateway's own
    /// numbering, so loss upstream of the gateway does not count against it) or, without
    /// any, its receiver reports; the video layers its legs are capped below its wish (a leg
    /// trying the next layer up counts as still on the one below); and
    /// how long its expected directions have been silent (media from a publisher with an
    /// unmuted track; RTCP from a subscriber receiving video, which browsers report on
    /// every second, where audio alone may be reported on every five).
    fn quality_sample(&mut self, mi: usize, now: Instant) -> quality::Sample {
        let params = quality::Params::default();
        let m = &self.members[mi];
        let (id, joined_at, publisher, subscriber) = (m.id.clone(), m.joined_at, m.publisher, m.subscriber);
        let heard = m.last_heard.unwrap_or(m.joined_at);
        let mut sample = quality::Sample::default();
        // Uplink.
        let (mut expected, mut lost) = (0u64, 0u64);
        let mut last_media: Option<Instant> = None;
        let mut publishing = false;
        for t in &mut self.tracks {
            if publisher != Some(t.conn) || t.parked.is_some() {
                continue;
            }
            for layer in &mut t.layers {
                if let Some(w) = layer.reception.take_window() {
                    expected += w.expected;
                    lost += w.lost;
                    sample.uplink_jitter_ms = Some(sample.uplink_jitter_ms.map_or(w.jitter_ms, |j| j.max(w.jitter_ms)));
                }
            }
            if !t.info.muted {
                publishing = true;
                last_media = last_media.max(t.layers.iter().filter_map(|l| l.last_packet).max());
            }
        }
        if expected > 0 {
            sample.uplink_loss = Some(lost as f64 / expected as f64);
        }
        // Downlink.
        let bwe = subscriber
            .and_then(|c| self.bwe.binary_search_by_key(&c, |(x, _)| *x).ok())
            .map(|i| &self.bwe[i].1);
        let twcc = bwe.map(|b| (b.reports, b.estimator.loss()));
        // A leg trying the next layer up is still reduced until the try is kept.
        let trying = bwe.and_then(|b| b.trial).map(|t| t.leg);
        let q = self.quality_of(&id, joined_at);
        let (rr_loss, rr_jitter, rtt) = q.downlink.take_window();
        let twcc_loss = match twcc {
            Some((reports, loss)) if reports > q.twcc_reports => {
                q.twcc_reports = reports;
                Some(loss)
            }
            _ => None,
        };
        sample.downlink_loss = twcc_loss.or(rr_loss);
        sample.downlink_jitter_ms = rr_jitter;
        sample.rtt_ms = rtt;
        // Video reduced, and whether it receives video at all.
        let mut receiving_video = false;
        for t in &self.tracks {
            if t.info.kind != TrackKind::Video || t.parked.is_some() {
                continue;
            }
            let (ranks, n, available) = t.layer_view(now);
            for leg in t
                .legs
                .iter()
                .filter(|l| l.subscriber == id && l.negotiated && l.bound.is_some())
            {
                receiving_video |= leg
                    .last_sent
                    .is_some_and(|at| now.saturating_duration_since(at) < params.lost_after);
                let (Some(has), Some(wants)) = (
                    leg.layer.desired(&ranks[..n], available),
                    leg.layer.wished(&ranks[..n], available),
                ) else {
                    continue;
                };
                let sending = (0..n).filter(|&i| available & (1 << i) != 0);
                let (mut has, wants) = (ranks[has], ranks[wants]);
                if trying == Some(leg.id) {
                    has = sending
                        .clone()
                        .map(|i| ranks[i])
                        .filter(|r| *r < has)
                        .max()
                        .unwrap_or(has);
                }
                if has >= wants {
                    continue;
                }
                let missed = sending.clone().filter(|&i| ranks[i] > has && ranks[i] <= wants).count();
                sample.layers_missed = sample.layers_missed.max(missed.min(usize::from(u8::MAX)) as u8);
                sample.smallest_layer |= sending.map(|i| ranks[i]).min() == Some(has);
            }
        }
        // Silence.
        let mut silences = Vec::with_capacity(2);
        if publishing && let Some(at) = last_media {
            silences.push(now.saturating_duration_since(at));
        }
        if receiving_video {
            silences.push(now.saturating_duration_since(heard));
        }
        sample.silent = silences.iter().min().zip(silences.iter().max()).map(|(a, b)| (*a, *b));
        sample
    }

    // ---- active speakers ----

    /// Evaluates who is speaking, when due ([`speaker::Params::evaluate_every`]; the shard
    /// calls this on its timer): a changed list goes to everyone in the call as
    /// `active_speakers`.
    pub fn evaluate_speakers(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if !self.speakers.due(now) {
            return;
        }
        let params = *self.speakers.params();
        let mut levels = Vec::new();
        for track in self.tracks.iter_mut().filter(|t| t.parked.is_none()) {
            if let Some(meter) = &mut track.level {
                levels.push((
                    &track.info.track_id,
                    &track.info.participant_id,
                    meter.level(now, &params),
                ));
            }
        }
        if levels.is_empty() && self.speakers.is_idle() {
            return;
        }
        if let Some(speakers) = self.speakers.evaluate(now, levels) {
            self.signal_all(&ServerMessage::ActiveSpeakers { speakers }, effects);
        }
    }

    /// Unpublishes the tracks parked for [`PARK_GRACE`] (the shard calls this on its
    /// speaker tick): their owner came back but has not published their sources again.
    pub fn expire_parked(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let expired: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|t| {
                t.parked
                    .is_some_and(|at| now.saturating_duration_since(at) >= PARK_GRACE)
            })
            .map(|t| t.info.track_id.clone())
            .collect();
        for track_id in expired {
            tracing::debug!(meeting_id = %self.meeting_id, track_id = %track_id, "parked track not published again: unpublished");
            self.unpublish(&track_id, now, effects);
        }
    }

    // ---- which layers publishers send ----

    /// Tells each publisher of a simulcast track which of its layers someone needs
    /// (`publisher_layers`; the shard calls this on its speaker tick). The need is the best
    /// layer any subscriber's leg would take if every layer were sending, from the quality
    /// its tile asks for; legs paused or `off` need nothing. See [`dynacast`] for when the
    /// publisher is told.
    pub fn evaluate_layers(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        for track in self.tracks.iter_mut() {
            if track.layers.len() < 2 || track.parked.is_some() {
                continue;
            }
            let (ranks, n, _) = track.layer_view(now);
            let ranks = &ranks[..n];
            let every = (1u32 << n) - 1;
            let needed = track
                .legs
                .iter()
                .filter(|l| !l.rewrite.paused())
                // The subscribers' wishes, not their bandwidth caps: a capped leg climbs
                // back by trying the next layer, which must be sending (`bwe`).
                .filter_map(|l| l.layer.wished(ranks, every))
                .map(|i| ranks[i])
                .max();
            if let Some(source) = track.mirror {
                // The publisher is on another shard: its dynacast decides, with this wish.
                if track.told_need != Some(needed) {
                    track.told_need = Some(needed);
                    effects.push(Effect::RelayNeed {
                        source,
                        track_id: track.info.track_id.clone(),
                        needed,
                    });
                }
                continue;
            }
            let needed = track.remote_needs.iter().filter_map(|(_, n)| *n).chain(needed).max();
            let (Some(&lowest), Some(&best)) = (ranks.iter().min(), ranks.iter().max()) else {
                continue;
            };
            let told = track.dynacast.told();
            let paused_layer_arriving = told.is_some_and(|top| {
                track.layers.iter().any(|l| {
                    l.rank > top
                        && l.last_packet
                            .is_some_and(|at| now.saturating_duration_since(at) < PAUSED_LAYER_QUIET)
                })
            });
            let need = dynacast::Need {
                needed,
                lowest,
                best,
                paused_layer_arriving,
            };
            let Some(top) = track.dynacast.evaluate(need, now) else {
                continue;
            };
            let layers: Vec<PublisherLayer> = track
                .layers
                .iter()
                .filter_map(|l| {
                    Some(PublisherLayer {
                        rid: l.rid.clone()?,
                        active: l.rank <= top,
                    })
                })
                .collect();
            tracing::debug!(meeting_id = %self.meeting_id, track_id = %track.info.track_id, top, ?needed, "publisher told which layers to send");
            effects.push(Effect::Signal {
                to: track.info.participant_id.clone(),
                message: ServerMessage::PublisherLayers {
                    track_id: track.info.track_id.clone(),
                    layers,
                },
            });
        }
    }

    // ---- retransmissions ----

    /// A subscriber connection NACKed `seqs` of the stream it receives as `ssrc`: each
    /// is answered from the track's cache (`retransmit`), once per resend guard, as RTX
    /// where the leg negotiated it. Unservable ones are counted, and a new one asks the
    /// publisher for a keyframe (throttled), since the subscriber cannot decode past it.
    pub fn nack_received(
        &mut self,
        conn: ConnId,
        ssrc: u32,
        seqs: impl IntoIterator<Item = u16>,
        now: Instant,
        sink: &mut impl LegSink,
        effects: &mut Vec<Effect>,
    ) {
        let found = self.tracks.iter().enumerate().find_map(|(t, track)| {
            let l = track
                .legs
                .iter()
                .position(|l| l.rewrite.ssrc == ssrc && l.bound.is_some_and(|(c, _)| c == conn))?;
            Some((t, l))
        });
        let Some((t, l)) = found else {
            return;
        };
        let Track { layers, legs, .. } = &mut self.tracks[t];
        let Leg {
            bound: Some((conn, sender)),
            rewrite,
            history,
            ..
        } = &mut legs[l]
        else {
            return;
        };
        let (mut asked, mut resent, mut rtx_sent, mut unservable, mut keyframe) = (0, 0, 0, 0, false);
        for seq in seqs {
            asked += 1;
            // A layer's cache owns the epochs with its top byte (see `Layer::cache`).
            let cache_of = |epoch: u32| {
                layers
                    .iter()
                    .filter_map(|l| l.cache.as_ref())
                    .find(|c| c.epoch() >> 24 == epoch >> 24)
            };
            let answer = match history.as_mut() {
                Some(history) => history.answer_in(seq, cache_of, rewrite, now),
                None => Answer::Unservable { fresh: false },
            };
            match answer {
                Answer::Resend { packet, rtx } => {
                    if sink.admit(*conn) == Admit::Yes && sink.retransmit(*conn, *sender, packet, rtx) {
                        resent += 1;
                        rtx_sent += u64::from(rtx);
                    }
                }
                Answer::Suppressed => {}
                Answer::Unservable { fresh } => {
                    unservable += 1;
                    keyframe |= fresh;
                }
            }
        }
        let stats = &self.stats;
        stats.add(|c| &c.nacked_packets, asked);
        stats.add(|c| &c.retransmitted_packets, resent);
        stats.add(|c| &c.retransmitted_rtx, rtx_sent);
        stats.add(|c| &c.unservable_nacks, unservable);
        if keyframe {
            self.request_leg_keyframe(t, l, now, effects);
        }
    }

    // ---- inspection ----

    /// A JSON picture of the room for the debug endpoint; `conn` describes a connection.
    pub fn debug_snapshot(&self, conn: impl Fn(Option<ConnId>) -> Option<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({
            "meeting_id": self.meeting_id,
            "counters": self.stats.meeting.snapshot(),
            "participants": self.members.iter().map(|m| serde_json::json!({
                "participant_id": m.id,
                "kind": m.kind,
                "may_present": m.may_present,
                "publisher": conn(m.publisher),
                "publisher_limit_bps": m.publisher.and_then(|c| self.remb.iter().find(|(x, _)| *x == c)).and_then(|(_, r)| r.limit()),
                "subscriber": conn(m.subscriber),
                "bandwidth": m.subscriber.and_then(|c| self.bwe.iter().find(|(x, _)| *x == c)).map(|(_, b)| serde_json::json!({
                    "estimate_bps": b.estimator.bps(),
                    "acked_bps": b.estimator.acked_bps(),
                    "loss": b.estimator.loss(),
                    "capping": b.capping,
                    "trying_leg": b.trial.map(|t| t.leg),
                    "hold_ms": b.hold.as_millis() as u64,
                    "reports": b.reports,
                    "reported_lost": b.lost,
                })),
                "announced": m.announced,
                "negotiation": { "outstanding": m.negotiation.outstanding, "wanted": m.negotiation.wanted },
                "receiving": self.tracks.iter().filter_map(|t| {
                    let leg = t.legs.iter().find(|l| l.subscriber == m.id)?;
                    Some(serde_json::json!({
                        "track_id": t.info.track_id,
                        "kind": t.info.kind,
                        "ssrc": leg.rewrite.ssrc,
                        "negotiated": leg.negotiated,
                        "paused": leg.rewrite.paused(),
                        "forwarded": leg.forwarded,
                        "target": leg.layer.target().0,
                        "cap": leg.layer.cap().0,
                        "layer": leg.layer.layers().0,
                        "layer_rank": leg.layer.layers().0.and_then(|i| t.layers.get(i)).map(|l| l.rank),
                        "pending_layer": leg.layer.layers().1,
                        "temporal_target": leg.rewrite.temporal_cap().0,
                        "temporal_cap": leg.rewrite.temporal_cap().1,
                    }))
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "tracks": self.tracks.iter().map(|t| serde_json::json!({
                "track": t.info,
                "mid": t.mid,
                "codec": t.mime_type,
                "layers_told": t.dynacast.told(),
                "layers": t.layers.iter().map(|l| serde_json::json!({
                    "rid": l.rid,
                    "rank": l.rank,
                    "ssrc": l.ssrc,
                    "packets": l.packets,
                    "bps": l.rate.bps(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The quality state of participant `id` in `quality` (made when missing; started again when
/// the participant came back on a new socket since).
fn quality_in<'q>(
    quality: &'q mut Vec<(ParticipantId, quality::Participant)>,
    id: &ParticipantId,
    joined_at: Instant,
) -> &'q mut quality::Participant {
    let i = match quality.iter().position(|(p, _)| p == id) {
        Some(i) => i,
        None => {
            quality.push((id.clone(), quality::Participant::new(joined_at)));
            quality.len() - 1
        }
    };
    let q = &mut quality[i].1;
    if q.joined_at != joined_at {
        // A new page knows nothing of what the old one was told.
        *q = quality::Participant::new(joined_at);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::Header;
    use std::sync::Arc;

    const A: &str = "p_a";
    const B: &str = "p_b";
    const C: &str = "p_c";
    // Connection ids: publisher 10 + n, subscriber 20 + n.
    const A_PUB: ConnId = 11;
    const B_SUB: ConnId = 22;
    const C_SUB: ConnId = 23;
    const A_SUB: ConnId = 21;
    /// A's publisher connection after it came back on a new socket.
    const A_PUB2: ConnId = 31;

    fn room() -> MediaRoom {
        MediaRoom::new(
            "m_test",
            StatsPair {
                meeting: Arc::default(),
                shard: Arc::default(),
            },
        )
    }

    fn codec(payload_type: u8, mime_type: &str, clock_rate: u32) -> Codec {
        Codec {
            payload_type,
            mime_type: mime_type.into(),
            clock_rate,
            fmtp: String::new(),
        }
    }

    /// What the publisher negotiated: VP8 on 96, Opus on 111, audio level on 1.
    fn publisher_side() -> Negotiated {
        Negotiated {
            codecs: vec![codec(96, "video/VP8", 90_000), codec(111, "audio/opus", 48_000)],
            extensions: vec![(rtc::sdp::extmap::AUDIO_LEVEL_URI.into(), 1)],
        }
    }

    /// What a subscriber negotiated: VP8 on 100, Opus on 109, audio level on 5.
    fn subscriber_side() -> Negotiated {
        Negotiated {
            codecs: vec![codec(100, "video/VP8", 90_000), codec(109, "audio/opus", 48_000)],
            extensions: vec![(rtc::sdp::extmap::AUDIO_LEVEL_URI.into(), 5)],
        }
    }

    fn announce(mid: &str, source: TrackSource) -> PublishedTrack {
        PublishedTrack {
            mid: mid.into(),
            source,
            muted: false,
        }
    }

    fn stream(mid: &str, ssrc: u32, mime_type: &str) -> Stream {
        Stream {
            conn: A_PUB,
            receiver: RTCRtpReceiverId::from(mid.parse::<usize>().expect("numeric mid")),
            mid: mid.into(),
            ssrc,
            mime_type: mime_type.into(),
            negotiated: publisher_side(),
            replaces: true,
            layer: None,
        }
    }

    fn packet(ssrc: u32, seq: u16, payload_type: u8) -> Packet {
        Packet {
            header: Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(b"payload"),
        }
    }

    /// Records what forwarding writes; some connections can be made unready or refusing.
    #[derive(Default)]
    struct Recorder {
        written: Vec<(ConnId, RTCRtpSenderId, Packet)>,
        /// Retransmissions written as RTX (NACK answers, probe padding).
        rtx: Vec<(ConnId, Packet)>,
        not_ready: Vec<ConnId>,
        refusing: Vec<ConnId>,
        dropping: Vec<ConnId>,
    }

    impl LegSink for Recorder {
        fn admit(&mut self, conn: ConnId) -> Admit {
            if self.not_ready.contains(&conn) {
                Admit::NotReady
            } else if self.dropping.contains(&conn) {
                Admit::Drop
            } else {
                Admit::Yes
            }
        }

        fn write(&mut self, conn: ConnId, sender: RTCRtpSenderId, packet: &Packet) -> bool {
            if self.refusing.contains(&conn) {
                return false;
            }
            self.written.push((conn, sender, packet.clone()));
            true
        }

        fn retransmit(&mut self, conn: ConnId, sender: RTCRtpSenderId, packet: Packet, rtx: bool) -> bool {
            if !rtx {
                return self.write(conn, sender, &packet);
            }
            if self.refusing.contains(&conn) {
                return false;
            }
            self.rtx.push((conn, packet));
            true
        }
    }

    fn signals(effects: &[Effect]) -> Vec<(ParticipantId, ServerMessage)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Signal { to, message } => Some((to.clone(), message.clone())),
                _ => None,
            })
            .collect()
    }

    /// Plays the shell for the effects that need an answer: binds every new leg
    /// on the subscriber's connection (sender id = leg id), as the shard does.
    fn bind_legs(room: &mut MediaRoom, effects: &[Effect]) {
        for e in effects {
            if let Effect::AddSender { subscriber, leg, .. } = e {
                let conn = room
                    .connection(subscriber, PeerRole::Subscriber)
                    .expect("test gives every subscriber a connection");
                room.leg_bound(*leg, conn, RTCRtpSenderId::from(*leg as usize));
            }
        }
    }

    /// The negotiated list an answer to the current offer gives: every bound leg of `participant`.
    fn answer_all(room: &MediaRoom, participant: &str) -> Vec<(RTCRtpSenderId, Negotiated)> {
        room.tracks
            .iter()
            .flat_map(|t| t.legs.iter())
            .filter(|l| l.subscriber == participant)
            .filter_map(|l| l.bound.map(|(_, s)| (s, subscriber_side())))
            .collect()
    }

    /// A and B in the call (C too with `three`), each with a subscriber connection,
    /// A publishing camera (mid 0, ssrc 1000) and microphone (mid 1, ssrc 2000),
    /// everything negotiated and answered.
    fn call(three: bool, now: Instant) -> (MediaRoom, Vec<Effect>) {
        call_with(three, &[stream("0", 1000, "video/VP8")], now)
    }

    /// As [`call`], the camera arriving as `camera` (several streams: simulcast layers).
    fn call_with(three: bool, camera: &[Stream], now: Instant) -> (MediaRoom, Vec<Effect>) {
        let mut room = room();
        let mut fx = Vec::new();
        let people: &[(&str, ConnId)] = if three {
            &[(A, A_SUB), (B, B_SUB), (C, C_SUB)]
        } else {
            &[(A, A_SUB), (B, B_SUB)]
        };
        for (p, sub) in people {
            room.add_participant(p, ParticipantKind::Staff, true, now, &mut fx);
            room.set_connection(p, PeerRole::Subscriber, Some(*sub));
        }
        room.set_connection(A, PeerRole::Publisher, Some(A_PUB));
        room.check_publish(
            A,
            &[
                announce("0", TrackSource::Camera),
                announce("1", TrackSource::Microphone),
            ],
        )
        .expect("allowed");
        room.declare(
            A,
            vec![
                announce("0", TrackSource::Camera),
                announce("1", TrackSource::Microphone),
            ],
            now,
            &mut fx,
        );
        for cam in camera {
            room.stream_opened(A, cam.clone(), now, &mut fx);
        }
        room.stream_opened(A, stream("1", 2000, "audio/opus"), now, &mut fx);
        bind_legs(&mut room, &fx);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        for (p, _) in people.iter().skip(1) {
            let answer = answer_all(&room, p);
            room.subscriber_answered(p, &answer, false, now, &mut fx);
        }
        // Every subscriber connection up (DTLS done), without the keyframe requests coming
        // up makes, so each test starts with the publisher's throttle clear.
        for m in &mut room.members {
            m.subscriber_up = m.subscriber.is_some();
        }
        (room, fx)
    }

    #[test]
    fn no_keyframe_is_asked_for_a_subscriber_before_its_connection_is_up() {
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let camera = track_id(&room, TrackSource::Camera);
        // B back on a new socket: a new subscriber connection, negotiated, not up yet.
        const B_SUB2: ConnId = 32;
        let mut fx = Vec::new();
        room.add_participant(B, ParticipantKind::Guest, false, now, &mut fx);
        room.set_connection(B, PeerRole::Subscriber, Some(B_SUB2));
        bind_legs(&mut room, &fx);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        let answer = answer_all(&room, B);
        fx.clear();
        room.subscriber_answered(B, &answer, false, now, &mut fx);
        // Its page shows the tile (a quality set, a pause lifted) and its browser asks for a
        // keyframe before DTLS is done: nothing goes to the publisher, whose throttle stays clear.
        room.set_subscription(B, &camera, true, None, now, &mut fx).unwrap();
        room.set_subscription(B, &camera, false, Some(Quality::High), now, &mut fx)
            .unwrap();
        let b_ssrc = room.tracks[0]
            .legs
            .iter()
            .find(|l| l.subscriber == B)
            .unwrap()
            .rewrite
            .ssrc;
        room.keyframe_requested(B_SUB2, b_ssrc, now, &mut fx);
        assert_eq!(keyframe_requests(&fx), 0, "{fx:?}");
        // Coming up asks at once, not deferred behind an earlier request.
        let up = now + Duration::from_millis(90);
        room.subscriber_connected(B_SUB2, up, &mut fx);
        assert_eq!(
            fx.iter()
                .filter_map(|e| match e {
                    Effect::RequestKeyframe { conn, ssrc, .. } => Some((*conn, *ssrc)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            vec![(A_PUB, 1000)]
        );
        // From then on its requests are relayed (throttled as ever).
        fx.clear();
        room.keyframe_requested(B_SUB2, b_ssrc, up + KEYFRAME_INTERVAL, &mut fx);
        assert_eq!(keyframe_requests(&fx), 1);
    }

    #[test]
    fn one_entering_hears_how_the_room_differs_from_what_it_was_told() {
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let camera = room
            .tracks()
            .into_iter()
            .find(|t| t.source == TrackSource::Camera)
            .unwrap();
        let mic = room
            .tracks()
            .into_iter()
            .find(|t| t.source == TrackSource::Microphone)
            .unwrap();
        let gone = TrackInfo {
            track_id: "t_gone".into(),
            participant_id: B.into(),
            ..camera.clone()
        };
        // Told of the camera and of a track unpublished since; not of the microphone, muted since.
        room.mute_track(A, &mic.track_id, true, &mut Vec::new()).unwrap();
        let mut fx = Vec::new();
        room.add_participant(C, ParticipantKind::Guest, false, now, &mut fx);
        fx.clear();
        room.tell_entering(C, &[camera.clone(), gone.clone()], &mut fx);
        let heard = signals(&fx);
        assert!(heard.iter().all(|(to, _)| to == C), "{heard:?}");
        let heard: Vec<ServerMessage> = heard.into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            heard,
            [
                ServerMessage::TrackUnpublished {
                    track_id: gone.track_id.clone(),
                    participant_id: B.into()
                },
                ServerMessage::TrackPublished {
                    track: TrackInfo {
                        muted: true,
                        ..mic.clone()
                    }
                },
            ]
        );
        // Told of both as they are: nothing. A muted one told unmuted: the mute.
        let muted_mic = TrackInfo {
            muted: true,
            ..mic.clone()
        };
        fx.clear();
        room.tell_entering(C, &[camera.clone(), muted_mic.clone()], &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
        room.tell_entering(C, &[camera.clone(), mic.clone()], &mut fx);
        assert_eq!(
            signals(&fx),
            [(
                ParticipantId::from(C),
                ServerMessage::TrackMuted {
                    track_id: mic.track_id.clone(),
                    participant_id: A.into(),
                    muted: true
                }
            )]
        );
        // Its own tracks are never in it: A, back, told nothing, hears only of nobody's.
        fx.clear();
        room.tell_entering(A, &[], &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
    }

    fn track_id(room: &MediaRoom, source: TrackSource) -> TrackId {
        room.tracks()
            .into_iter()
            .find(|t| t.source == source)
            .expect("published")
            .track_id
    }

    /// B asks for `quality` of A's camera.
    fn b_wants_camera(room: &mut MediaRoom, quality: Quality, at: Instant, fx: &mut Vec<Effect>) {
        let camera = track_id(room, TrackSource::Camera);
        room.set_subscription(B, &camera, false, Some(quality), at, fx)
            .expect("allowed");
    }

    fn keyframe_requests(effects: &[Effect]) -> usize {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::RequestKeyframe { .. }))
            .count()
    }

    #[test]
    fn publish_announces_to_everyone_and_gives_every_other_participant_a_leg() {
        let now = Instant::now();
        let (room, fx) = call(true, now);
        let published: Vec<(ParticipantId, TrackInfo)> = signals(&fx)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ServerMessage::TrackPublished { track } => Some((to, track)),
                _ => None,
            })
            .collect();
        // Two tracks, each announced to all three, the owner included.
        assert_eq!(published.len(), 6);
        for p in [A, B, C] {
            assert_eq!(published.iter().filter(|(to, _)| to == p).count(), 2, "{p}");
        }
        assert!(published.iter().all(|(_, t)| t.participant_id == A));
        let video = published
            .iter()
            .find(|(_, t)| t.kind == TrackKind::Video)
            .expect("video");
        assert_eq!(video.1.source, TrackSource::Camera);
        // Legs for B and C only, each with its own SSRC.
        let adds: Vec<(&str, u32)> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::AddSender { subscriber, ssrc, .. } => Some((subscriber.as_str(), *ssrc)),
                _ => None,
            })
            .collect();
        assert_eq!(adds.len(), 4);
        assert!(adds.iter().all(|(s, _)| *s != A), "never a leg of one's own track");
        let mut ssrcs: Vec<u32> = adds.iter().map(|(_, s)| *s).collect();
        ssrcs.dedup();
        assert_eq!(ssrcs.len(), 4);
        assert_eq!(room.tracks().len(), 2);
        assert_eq!(room.stats().meeting.snapshot().tracks, 2);
    }

    #[test]
    fn unannounced_or_mismatched_streams_are_not_published() {
        let now = Instant::now();
        let mut room = room();
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Guest, false, now, &mut fx);
        room.set_connection(A, PeerRole::Publisher, Some(A_PUB));
        room.declare(A, vec![announce("0", TrackSource::Microphone)], now, &mut fx);
        room.stream_opened(A, stream("1", 1, "video/VP8"), now, &mut fx);
        room.stream_opened(A, stream("0", 2, "video/VP8"), now, &mut fx);
        let mut other = stream("0", 3, "audio/opus");
        other.conn = 99;
        room.stream_opened(A, other, now, &mut fx);
        assert!(room.tracks().is_empty());
        assert!(fx.is_empty());
    }

    #[test]
    fn publishing_rules_screens_and_duplicate_mids() {
        let now = Instant::now();
        let mut room = room();
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Guest, false, now, &mut fx);
        let e = room
            .check_publish(A, &[announce("0", TrackSource::Screen)])
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PresentingNotAllowed);
        let e = room
            .check_publish(
                A,
                &[
                    announce("0", TrackSource::Camera),
                    announce("0", TrackSource::Microphone),
                ],
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(room.check_publish(A, &[announce("0", TrackSource::Camera)]).is_ok());
        assert_eq!(room.check_publish(B, &[]).unwrap_err().code, ErrorCode::NotInCall);
    }

    #[test]
    fn forwarding_rewrites_each_leg_and_skips_the_unready_and_the_unnegotiated() {
        let now = Instant::now();
        let (mut room, _) = call(true, now);
        let mut sink = Recorder {
            not_ready: vec![C_SUB],
            ..Default::default()
        };
        let mut fx = Vec::new();
        room.forward(A_PUB, &packet(1000, 7, 96), now, &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 1, "only B is ready");
        let (conn, _, out) = &sink.written[0];
        assert_eq!(*conn, B_SUB);
        assert_eq!(out.header.payload_type, 100, "VP8 under B's payload type");
        assert_ne!(out.header.ssrc, 1000, "the leg's own SSRC");
        assert_eq!(out.payload, Bytes::from_static(b"payload"));

        // An unknown SSRC, an unmapped payload type, another connection: nothing.
        room.forward(A_PUB, &packet(4242, 8, 96), now, &mut sink, &mut fx);
        room.forward(A_PUB, &packet(1000, 9, 97), now, &mut sink, &mut fx);
        room.forward(B_SUB, &packet(1000, 10, 96), now, &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 1);
        let stats = room.stats().meeting.snapshot();
        assert_eq!(stats.forwarded_packets, 1);
        assert_eq!(stats.forwarded_bytes, 12 + 7);
        assert_eq!(
            room.stats().shard.snapshot(),
            stats,
            "the shard counts what the meeting counts"
        );

        // A refused write and a deliberate drop are counted as dropped; the other leg still gets it.
        sink.not_ready.clear();
        sink.refusing = vec![B_SUB];
        room.forward(A_PUB, &packet(1000, 11, 96), now, &mut sink, &mut fx);
        sink.refusing.clear();
        sink.dropping = vec![C_SUB];
        room.forward(A_PUB, &packet(1000, 12, 96), now, &mut sink, &mut fx);
        let stats = room.stats().meeting.snapshot();
        assert_eq!((stats.forwarded_packets, stats.dropped_packets), (3, 2));
    }

    #[test]
    fn a_leg_added_after_the_offer_waits_for_the_reoffer() {
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let mut fx = Vec::new();
        // B's offer for the new screen track goes out, but B answers with the old set.
        room.declare(
            A,
            vec![
                announce("0", TrackSource::Camera),
                announce("1", TrackSource::Microphone),
                announce("2", TrackSource::Screen),
            ],
            now,
            &mut fx,
        );
        let before = answer_all(&room, B);
        room.stream_opened(A, stream("2", 3000, "video/VP8"), now, &mut fx);
        bind_legs(&mut room, &fx);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        assert_eq!(
            offers,
            vec![Offer {
                participant: B.into(),
                conn: B_SUB,
                restart: false,
            }]
        );
        room.subscriber_answered(B, &before, true, now, &mut fx);
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(3000, 1, 96), now, &mut sink, &mut fx);
        assert!(sink.written.is_empty(), "not negotiated yet");
        room.forward(A_PUB, &packet(1000, 1, 96), now, &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 1, "the camera is");
    }

    #[test]
    fn renegotiations_are_batched_one_offer_at_a_time() {
        let now = Instant::now();
        let mut room = room();
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Staff, true, now, &mut fx);
        room.add_participant(B, ParticipantKind::Staff, true, now, &mut fx);
        room.set_connection(A, PeerRole::Publisher, Some(A_PUB));
        room.set_connection(B, PeerRole::Subscriber, Some(B_SUB));
        room.declare(
            A,
            vec![
                announce("0", TrackSource::Camera),
                announce("1", TrackSource::Microphone),
            ],
            now,
            &mut fx,
        );
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        assert!(offers.is_empty(), "nothing to offer yet");
        assert!(!room.wants_offers());

        // Two tracks in one turn: one offer.
        room.stream_opened(A, stream("0", 1000, "video/VP8"), now, &mut fx);
        room.stream_opened(A, stream("1", 2000, "audio/opus"), now, &mut fx);
        bind_legs(&mut room, &fx);
        assert!(room.wants_offers());
        room.due_offers(&mut offers);
        assert_eq!(offers.len(), 1);

        // Changes while it is outstanding fold into one re-offer after the answer.
        room.declare(A, vec![announce("1", TrackSource::Microphone)], now, &mut fx);
        room.declare(A, vec![], now, &mut fx);
        offers.clear();
        room.due_offers(&mut offers);
        assert!(offers.is_empty(), "an offer is outstanding");
        assert!(room.expecting_answer(A).is_err(), "A has no subscriber offer out");
        assert_eq!(room.expecting_answer(B).expect("outstanding"), B_SUB);
        room.subscriber_answered(B, &[], false, now, &mut fx);
        assert_eq!(
            room.expecting_answer(B).unwrap_err().code,
            ErrorCode::MediaStateError,
            "answered"
        );
        room.due_offers(&mut offers);
        assert_eq!(offers.len(), 1, "one re-offer for both changes");
        offers.clear();
        room.due_offers(&mut offers);
        assert!(offers.is_empty());

        // A failed offer leaves nothing outstanding.
        room.offer_failed(B);
        assert!(room.expecting_answer(B).is_err());
    }

    #[test]
    fn unpublish_removes_every_leg_and_tells_everyone() {
        let now = Instant::now();
        let (mut room, _) = call(true, now);
        let camera = track_id(&room, TrackSource::Camera);
        let mut fx = Vec::new();
        room.declare(A, vec![announce("1", TrackSource::Microphone)], now, &mut fx);
        let removed: Vec<ConnId> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::RemoveSender { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect();
        assert_eq!(removed.len(), 2);
        assert!(removed.contains(&B_SUB) && removed.contains(&C_SUB));
        let told: Vec<ParticipantId> = signals(&fx)
            .into_iter()
            .filter(|(_, m)| matches!(m, ServerMessage::TrackUnpublished { track_id, .. } if *track_id == camera))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(told, [A, B, C]);
        assert_eq!(room.tracks().len(), 1);
        assert_eq!(room.stats().meeting.snapshot().tracks, 1);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        assert_eq!(offers.len(), 2, "B and C renegotiate");
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(1000, 1, 96), now, &mut sink, &mut fx);
        assert!(sink.written.is_empty());
    }

    #[test]
    fn mute_follows_the_owner_and_only_the_owner() {
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let mic = track_id(&room, TrackSource::Microphone);
        let mut fx = Vec::new();
        assert_eq!(
            room.mute_track(B, &mic, true, &mut fx).unwrap_err().code,
            ErrorCode::NotFound
        );
        room.mute_track(A, &mic, true, &mut fx).expect("owner");
        assert_eq!(signals(&fx).len(), 2, "both hear it");
        assert!(room.tracks().iter().any(|t| t.track_id == mic && t.muted));
        // A later offer's declaration keeps the flag (it was recorded for the mid).
        fx.clear();
        room.declare(
            A,
            vec![
                announce("0", TrackSource::Camera),
                PublishedTrack {
                    muted: true,
                    ..announce("1", TrackSource::Microphone)
                },
            ],
            now,
            &mut fx,
        );
        assert!(fx.is_empty(), "no change, no message");
    }

    #[test]
    fn pause_and_resume_keep_sequence_numbers_contiguous_and_ask_for_a_keyframe() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let camera = track_id(&room, TrackSource::Camera);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        let later = start + Duration::from_secs(5);
        for seq in 100..103 {
            room.forward(A_PUB, &packet(1000, seq, 96), later, &mut sink, &mut fx);
        }
        room.set_subscription(B, &camera, true, None, later, &mut fx)
            .expect("pause");
        assert_eq!(keyframe_requests(&fx), 0, "pausing asks for nothing");
        for seq in 103..110 {
            room.forward(A_PUB, &packet(1000, seq, 96), later, &mut sink, &mut fx);
        }
        room.set_subscription(B, &camera, false, None, later, &mut fx)
            .expect("resume");
        assert_eq!(
            fx,
            vec![Effect::RequestKeyframe {
                conn: A_PUB,
                receiver: RTCRtpReceiverId::from(0),
                ssrc: 1000
            }]
        );
        for seq in 110..113 {
            room.forward(A_PUB, &packet(1000, seq, 96), later, &mut sink, &mut fx);
        }
        let seqs: Vec<u16> = sink.written.iter().map(|(_, _, p)| p.header.sequence_number).collect();
        assert_eq!(seqs.len(), 6);
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "contiguous: {seqs:?}");
        }
        assert_eq!(
            room.set_subscription(B, "t_nope", true, None, later, &mut fx)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert_eq!(
            room.set_subscription(A, &camera, true, None, later, &mut fx)
                .unwrap_err()
                .code,
            ErrorCode::NotFound,
            "nobody receives their own track"
        );
    }

    /// What `track_published` / `track_unpublished` signals went to whom.
    fn track_signals(effects: &[Effect]) -> Vec<(ParticipantId, &'static str, TrackId)> {
        signals(effects)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ServerMessage::TrackPublished { track } => Some((to, "published", track.track_id)),
                ServerMessage::TrackUnpublished { track_id, .. } => Some((to, "unpublished", track_id)),
                _ => None,
            })
            .collect()
    }

    /// A, back on a new socket, on its new publisher connection `conn`: it declares the same
    /// sources on other mids than [`call`]'s (microphone "0", camera "1").
    fn declare_again_on(room: &mut MediaRoom, conn: ConnId, at: Instant, fx: &mut Vec<Effect>) {
        room.set_connection(A, PeerRole::Publisher, Some(conn));
        room.declare(
            A,
            vec![
                announce("0", TrackSource::Microphone),
                announce("1", TrackSource::Camera),
            ],
            at,
            fx,
        );
    }

    /// A's camera arriving on its new publisher connection `conn` (see [`declare_again_on`]).
    fn camera_again_on(conn: ConnId) -> Stream {
        Stream {
            conn,
            replaces: false,
            ..stream("1", 5000, "video/VP8")
        }
    }

    #[test]
    fn a_publisher_back_on_a_new_socket_keeps_its_track_ids_and_nobody_sees_churn() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let (camera, mic) = (
            track_id(&room, TrackSource::Camera),
            track_id(&room, TrackSource::Microphone),
        );
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        for seq in 100..103 {
            room.forward(A_PUB, &packet(1000, seq, 96), start, &mut sink, &mut fx);
        }

        // A's socket dropped and it is back (a held seat): its old connections close,
        // its tracks stay, nobody is told anything about them.
        fx.clear();
        room.add_participant(A, ParticipantKind::Staff, true, start, &mut fx);
        let closed: Vec<ConnId> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Close { conn } => Some(*conn),
                _ => None,
            })
            .collect();
        assert_eq!(closed, vec![A_PUB, A_SUB]);
        assert!(track_signals(&fx).is_empty(), "{:?}", track_signals(&fx));
        assert_eq!(room.tracks().len(), 2);
        assert_eq!(room.connection(A, PeerRole::Publisher), None);
        // A late packet of the old connection goes nowhere.
        room.forward(A_PUB, &packet(1000, 103, 96), start, &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 3);

        // The new publisher connection declares the same sources on other mids: nothing
        // is unpublished, and nobody is told.
        fx.clear();
        declare_again_on(&mut room, A_PUB2, start, &mut fx);
        assert!(track_signals(&fx).is_empty(), "{:?}", track_signals(&fx));

        // Its camera arrives on the new connection: the same track follows it. Only the
        // owner hears `track_published` (with the old id), and a keyframe is asked for.
        let later = start + Duration::from_secs(1);
        room.stream_opened(A, camera_again_on(A_PUB2), later, &mut fx);
        assert_eq!(
            track_signals(&fx),
            vec![(ParticipantId::from(A), "published", camera.clone())]
        );
        assert_eq!(
            fx.iter()
                .filter_map(|e| match e {
                    Effect::RequestKeyframe { conn, ssrc, .. } => Some((*conn, *ssrc)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            vec![(A_PUB2, 5000)]
        );
        assert_eq!(
            room.tracks().iter().map(|t| t.track_id.clone()).collect::<Vec<_>>(),
            vec![camera, mic]
        );

        // B receives it on the same sender and SSRC, its sequence numbers contiguous.
        for seq in 7..10 {
            room.forward(A_PUB2, &packet(5000, seq, 96), later, &mut sink, &mut fx);
        }
        assert_eq!(sink.written.len(), 6);
        let (senders, ssrcs): (Vec<_>, Vec<_>) = sink.written.iter().map(|(c, s, p)| ((*c, *s), p.header.ssrc)).unzip();
        assert!(senders.windows(2).all(|w| w[0] == w[1]), "{senders:?}");
        assert!(ssrcs.windows(2).all(|w| w[0] == w[1]), "{ssrcs:?}");
        let seqs: Vec<u16> = sink.written.iter().map(|(_, _, p)| p.header.sequence_number).collect();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "contiguous: {seqs:?}");
        }
        assert_eq!(sink.written[5].2.header.payload_type, 100, "B's payload type for VP8");
    }

    #[test]
    fn a_parked_track_not_published_again_within_the_grace_is_unpublished() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let (camera, mic) = (
            track_id(&room, TrackSource::Camera),
            track_id(&room, TrackSource::Microphone),
        );
        let mut fx = Vec::new();
        // A is back on a new socket and never publishes again (subscribe-only now, or its
        // new publisher connection never comes up): no declaration ever leaves anything out.
        let back = start + Duration::from_secs(3);
        room.add_participant(A, ParticipantKind::Staff, true, back, &mut fx);
        fx.clear();
        // Within the grace, counted from coming back, nothing changes.
        room.expire_parked(back + PARK_GRACE - Duration::from_millis(1), &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(room.tracks().len(), 2);
        // At the grace both go, and everyone is told.
        room.expire_parked(back + PARK_GRACE, &mut fx);
        let mut told: Vec<(String, TrackId)> = track_signals(&fx)
            .into_iter()
            .map(|(to, what, id)| {
                assert_eq!(what, "unpublished");
                (to.to_string(), id)
            })
            .collect();
        told.sort();
        let mut want = vec![
            (A.to_string(), camera.clone()),
            (A.to_string(), mic.clone()),
            (B.to_string(), camera),
            (B.to_string(), mic),
        ];
        want.sort();
        assert_eq!(told, want);
        assert!(
            fx.iter().any(|e| matches!(e, Effect::RemoveSender { conn: B_SUB, .. })),
            "B's legs go: {fx:?}"
        );
        assert!(room.tracks().is_empty());
        assert_eq!(room.stats().meeting.snapshot().tracks, 0);
        // Nothing more to expire.
        fx.clear();
        room.expire_parked(back + PARK_GRACE * 3, &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
    }

    #[test]
    fn a_parked_track_published_again_within_the_grace_stays() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let camera = track_id(&room, TrackSource::Camera);
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Staff, true, start, &mut fx);
        declare_again_on(&mut room, A_PUB2, start, &mut fx);
        room.stream_opened(A, camera_again_on(A_PUB2), start + Duration::from_secs(1), &mut fx);
        fx.clear();
        // The camera was adopted; the microphone, declared but not arriving, is still parked.
        room.expire_parked(start + PARK_GRACE, &mut fx);
        let told = track_signals(&fx);
        assert!(
            told.iter().all(|(_, what, id)| *what == "unpublished" && *id != camera),
            "{told:?}"
        );
        assert_eq!(told.len(), 2, "the microphone goes for A and B: {told:?}");
        assert_eq!(
            room.tracks().iter().map(|t| t.track_id.clone()).collect::<Vec<_>>(),
            vec![camera]
        );
    }

    #[test]
    fn a_parked_track_its_owner_no_longer_declares_is_unpublished() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let camera = track_id(&room, TrackSource::Camera);
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Staff, true, start, &mut fx);
        fx.clear();
        // Back without a camera this time.
        room.set_connection(A, PeerRole::Publisher, Some(31));
        room.declare(A, vec![announce("0", TrackSource::Microphone)], start, &mut fx);
        let told = track_signals(&fx);
        assert_eq!(told.len(), 2, "{told:?}");
        assert!(told.iter().all(|(_, what, id)| *what == "unpublished" && *id == camera));
        assert_eq!(room.tracks().len(), 1);
        // Leaving for good unpublishes the parked rest.
        fx.clear();
        room.remove_participant(A, start, &mut fx);
        assert_eq!(track_signals(&fx).len(), 2, "A and B hear the microphone go");
        assert!(room.tracks().is_empty());
    }

    #[test]
    fn a_subscriber_back_on_a_new_socket_gets_fresh_legs_of_everything() {
        const B_SUB2: ConnId = 32;
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let mut fx = Vec::new();
        room.add_participant(B, ParticipantKind::Guest, false, start, &mut fx);
        assert!(track_signals(&fx).is_empty(), "B's coming back changes nobody's tracks");
        let adds: Vec<&str> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::AddSender { subscriber, .. } => Some(subscriber.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(adds, vec![B, B], "a leg of each of A's tracks");
        room.set_connection(B, PeerRole::Subscriber, Some(B_SUB2));
        bind_legs(&mut room, &fx);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        assert_eq!(offers.len(), 1);
        assert_eq!(
            (offers[0].participant.as_str(), offers[0].conn, offers[0].restart),
            (B, B_SUB2, false)
        );
        let answer = answer_all(&room, B);
        assert_eq!(answer.len(), 2, "only the fresh legs");
        fx.clear();
        room.subscriber_answered(B, &answer, true, start, &mut fx);
        assert_eq!(keyframe_requests(&fx), 1, "its video wants a keyframe");
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(1000, 1, 96), start, &mut sink, &mut fx);
        assert_eq!(
            sink.written.iter().map(|(c, _, _)| *c).collect::<Vec<_>>(),
            vec![B_SUB2]
        );
    }

    #[test]
    fn a_stream_or_a_subscriber_back_from_silence_gets_a_keyframe_at_once() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        // Steady media: no requests.
        for (i, seq) in (1..5).enumerate() {
            let at = start + Duration::from_millis(33 * i as u64);
            room.forward(A_PUB, &packet(1000, seq, 96), at, &mut sink, &mut fx);
            room.subscriber_heard(B_SUB, at, &mut fx);
        }
        assert_eq!(keyframe_requests(&fx), 0);
        // The publisher's video comes back after an outage: a keyframe, once.
        let back = start + Duration::from_secs(5);
        room.forward(A_PUB, &packet(1000, 5, 96), back, &mut sink, &mut fx);
        room.forward(A_PUB, &packet(1000, 6, 96), back, &mut sink, &mut fx);
        assert_eq!(keyframe_requests(&fx), 1);
        // Audio back after a gap asks for nothing.
        fx.clear();
        room.forward(A_PUB, &packet(2000, 1, 111), back, &mut sink, &mut fx);
        room.forward(
            A_PUB,
            &packet(2000, 2, 111),
            back + Duration::from_secs(3),
            &mut sink,
            &mut fx,
        );
        assert_eq!(keyframe_requests(&fx), 0);
        // B's subscriber connection heard again after an outage: a keyframe of its video.
        let later = back + Duration::from_secs(2);
        room.subscriber_heard(B_SUB, later, &mut fx);
        assert_eq!(
            fx,
            vec![Effect::RequestKeyframe {
                conn: A_PUB,
                receiver: RTCRtpReceiverId::from(0),
                ssrc: 1000
            }]
        );
        // Heard again soon after: nothing more; a publisher connection is no subscriber.
        fx.clear();
        room.subscriber_heard(B_SUB, later + Duration::from_millis(100), &mut fx);
        room.subscriber_heard(A_PUB, later + Duration::from_secs(9), &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
    }

    #[test]
    fn a_restarted_sender_is_followed_without_a_gap() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        for seq in [10, 11] {
            room.forward(A_PUB, &packet(1000, seq, 96), start, &mut sink, &mut fx);
        }
        let mut restarted = stream("0", 5555, "video/VP8");
        restarted.replaces = true;
        room.stream_opened(A, restarted, start, &mut fx);
        room.forward(A_PUB, &packet(1000, 12, 96), start, &mut sink, &mut fx);
        room.forward(A_PUB, &packet(5555, 40_000, 96), start, &mut sink, &mut fx);
        let seqs: Vec<u16> = sink.written.iter().map(|(_, _, p)| p.header.sequence_number).collect();
        assert_eq!(
            seqs,
            [10, 11, 12],
            "the old SSRC is no longer forwarded, the new one continues"
        );
        assert_eq!(room.tracks().len(), 2, "the same camera track, no new one");

        // A simulcast layer (a rid: not a replacement) is ignored.
        let mut layer = stream("0", 7777, "video/VP8");
        layer.replaces = false;
        room.stream_opened(A, layer, start, &mut fx);
        room.forward(A_PUB, &packet(7777, 1, 96), start, &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 3);
    }

    #[test]
    fn keyframe_requests_are_relayed_throttled_and_never_for_audio() {
        let start = Instant::now();
        let (mut room, fx) = call(true, start);
        assert_eq!(keyframe_requests(&fx), 0, "nobody was connected when they answered");
        let mut fx = Vec::new();
        room.subscriber_connected(B_SUB, start, &mut fx);
        assert_eq!(
            keyframe_requests(&fx),
            1,
            "B connected: the video it receives, not the audio"
        );

        // C asks 100 ms later: inside the interval, deferred.
        let t1 = start + Duration::from_millis(100);
        let c_video_ssrc = room.tracks[0]
            .legs
            .iter()
            .find(|l| l.subscriber == C)
            .expect("leg")
            .rewrite
            .ssrc;
        let c_audio_ssrc = room.tracks[1]
            .legs
            .iter()
            .find(|l| l.subscriber == C)
            .expect("leg")
            .rewrite
            .ssrc;
        fx.clear();
        room.keyframe_requested(C_SUB, c_video_ssrc, t1, &mut fx);
        room.keyframe_requested(C_SUB, c_audio_ssrc, t1, &mut fx);
        room.keyframe_requested(C_SUB, 0xdead, t1, &mut fx);
        room.keyframe_requested(B_SUB, c_video_ssrc, t1, &mut fx);
        assert!(fx.is_empty());
        // Released with the track's next packet once the interval has passed.
        let mut sink = Recorder::default();
        room.forward(
            A_PUB,
            &packet(1000, 1, 96),
            start + Duration::from_millis(200),
            &mut sink,
            &mut fx,
        );
        assert!(fx.is_empty(), "still inside the interval");
        room.forward(
            A_PUB,
            &packet(1000, 2, 96),
            start + KEYFRAME_INTERVAL,
            &mut sink,
            &mut fx,
        );
        assert_eq!(keyframe_requests(&fx), 1);
        fx.clear();
        room.forward(
            A_PUB,
            &packet(1000, 3, 96),
            start + 3 * KEYFRAME_INTERVAL,
            &mut sink,
            &mut fx,
        );
        assert!(fx.is_empty(), "one request, one keyframe");
    }

    #[test]
    fn a_late_joiner_gets_legs_of_everything_and_a_keyframe_once_connected() {
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let mut fx = Vec::new();
        room.add_participant(C, ParticipantKind::Guest, false, now, &mut fx);
        room.set_connection(C, PeerRole::Subscriber, Some(C_SUB));
        let adds = fx.iter().filter(|e| matches!(e, Effect::AddSender { .. })).count();
        assert_eq!(adds, 2);
        bind_legs(&mut room, &fx);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        assert_eq!(
            offers,
            vec![Offer {
                participant: C.into(),
                conn: C_SUB,
                restart: false,
            }]
        );
        fx.clear();
        let answer = answer_all(&room, C);
        room.subscriber_answered(C, &answer, true, now, &mut fx);
        assert_eq!(keyframe_requests(&fx), 1);
    }

    #[test]
    fn a_restarted_subscriber_gets_a_fresh_connection_with_the_same_legs() {
        const B_SUB2: ConnId = 32;
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let mut fx = Vec::new();
        let camera = track_id(&room, TrackSource::Camera);
        room.set_subscription(B, &camera, true, None, now, &mut fx)
            .expect("B receives it");
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(2000, 1, 111), now, &mut sink, &mut fx);
        let ssrc_before = sink.written[0].2.header.ssrc;
        fx.clear();

        room.restart_subscriber(B, &mut fx).expect("B is in the call");
        assert_eq!(fx[0], Effect::Close { conn: B_SUB }, "the old connection goes first");
        let adds: Vec<u32> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::AddSender { subscriber, ssrc, .. } if subscriber == B => Some(*ssrc),
                _ => None,
            })
            .collect();
        assert_eq!(adds.len(), 2, "every leg gets a sender on the new connection");
        assert!(adds.contains(&ssrc_before), "legs keep their SSRC");
        assert_eq!(room.connection(B, PeerRole::Subscriber), None);
        // The shell makes the new connection on the first AddSender.
        room.set_connection(B, PeerRole::Subscriber, Some(B_SUB2));
        bind_legs(&mut room, &fx);
        let mut offers = Vec::new();
        room.due_offers(&mut offers);
        assert_eq!(
            offers,
            vec![Offer {
                participant: B.into(),
                conn: B_SUB2,
                restart: true,
            }]
        );
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(2000, 2, 111), now, &mut sink, &mut fx);
        assert!(
            sink.written.is_empty(),
            "nothing before the new connection is negotiated"
        );

        fx.clear();
        let answer = answer_all(&room, B);
        room.subscriber_answered(B, &answer, false, now, &mut fx);
        room.subscriber_connected(B_SUB2, now, &mut fx);
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(2000, 3, 111), now, &mut sink, &mut fx);
        room.forward(A_PUB, &packet(1000, 3, 96), now, &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 1, "audio flows again; the paused camera does not");
        assert_eq!(sink.written[0].0, B_SUB2);
        assert_eq!(sink.written[0].2.header.ssrc, ssrc_before);
        room.due_offers(&mut offers);
        assert_eq!(offers.len(), 1, "later offers are plain renegotiations");
        assert!(room.restart_subscriber("p_nobody", &mut fx).is_err());
    }

    #[test]
    fn removal_cleans_up_legs_tracks_connections_and_finally_the_room() {
        let now = Instant::now();
        let (mut room, _) = call(true, now);
        let mut fx = Vec::new();
        room.remove_participant(B, now, &mut fx);
        assert_eq!(
            fx,
            vec![Effect::Close { conn: B_SUB }],
            "B's legs go with its connection"
        );
        assert!(!room.contains(B));
        let mut sink = Recorder::default();
        room.forward(A_PUB, &packet(1000, 1, 96), now, &mut sink, &mut fx);
        assert_eq!(sink.written.iter().map(|w| w.0).collect::<Vec<_>>(), [C_SUB]);

        fx.clear();
        room.remove_participant(A, now, &mut fx);
        let closes: Vec<ConnId> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Close { conn } => Some(*conn),
                _ => None,
            })
            .collect();
        assert_eq!(closes, [A_PUB, A_SUB]);
        assert_eq!(
            fx.iter()
                .filter(|e| matches!(e, Effect::RemoveSender { conn: C_SUB, .. }))
                .count(),
            2
        );
        assert!(room.tracks().is_empty());
        assert_eq!(room.stats().meeting.snapshot().tracks, 0);
        room.remove_participant(A, now, &mut fx);
        room.remove_participant(C, now, &mut fx);
        assert!(room.is_empty());
        assert_eq!(room.connections().count(), 0);
    }

    #[test]
    fn the_same_participant_again_gets_fresh_connections_and_keeps_its_tracks() {
        let now = Instant::now();
        let (mut room, _) = call(false, now);
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Staff, true, now, &mut fx);
        assert!(fx.contains(&Effect::Close { conn: A_PUB }));
        assert_eq!(room.tracks().len(), 2, "its tracks are parked, not gone");
        assert_eq!(room.participants().collect::<Vec<_>>(), [A, B], "still in its place");
        assert_eq!(room.connection(A, PeerRole::Publisher), None);
    }

    #[test]
    fn early_candidates_are_held_per_role_and_bounded() {
        let now = Instant::now();
        let mut room = room();
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Guest, false, now, &mut fx);
        let candidate = |n: usize| RTCIceCandidateInit {
            candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {} typ host", 5000 + n),
            ..Default::default()
        };
        for n in 0..MAX_PENDING_CANDIDATES {
            let role = if n % 2 == 0 {
                PeerRole::Publisher
            } else {
                PeerRole::Subscriber
            };
            room.hold_candidate(A, role, candidate(n)).expect("room");
        }
        assert_eq!(
            room.hold_candidate(A, PeerRole::Publisher, candidate(99))
                .unwrap_err()
                .code,
            ErrorCode::RateLimited
        );
        let publisher = room.take_candidates(A, PeerRole::Publisher);
        assert_eq!(publisher.len(), MAX_PENDING_CANDIDATES / 2);
        assert_eq!(publisher[0].candidate, candidate(0).candidate);
        assert_eq!(
            room.take_candidates(A, PeerRole::Subscriber).len(),
            MAX_PENDING_CANDIDATES / 2
        );
        assert!(room.take_candidates(A, PeerRole::Subscriber).is_empty());
        assert_eq!(
            room.hold_candidate(B, PeerRole::Publisher, candidate(1))
                .unwrap_err()
                .code,
            ErrorCode::NotInCall
        );
    }

    #[test]
    fn audio_levels_make_active_speakers_for_everyone_and_a_speaker_leaving_ends_the_list() {
        let start = Instant::now();
        let (mut room, _) = call(false, start);
        let mic = track_id(&room, TrackSource::Microphone);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        let mut announced = Vec::new();
        let mut now = start;
        // One second of loud speech (-20 dBov) on A's microphone in 20 ms packets, and
        // video carrying the same extension id at full scale (no meter: never a speaker).
        for i in 0..50u16 {
            now = start + Duration::from_millis(u64::from(i) * 20);
            let mut audio = packet(2000, i, 111);
            audio.header.timestamp = u32::from(i) * 960;
            audio
                .header
                .set_extension(1, Bytes::from_static(&[0x80 | 20]))
                .expect("one-byte extension");
            room.forward(A_PUB, &audio, now, &mut sink, &mut fx);
            let mut video = packet(1000, i, 96);
            video
                .header
                .set_extension(1, Bytes::from_static(&[0]))
                .expect("extension");
            room.forward(A_PUB, &video, now, &mut sink, &mut fx);
            room.evaluate_speakers(now, &mut fx);
            announced.extend(signals(&fx));
            fx.clear();
        }
        let speakers = |message: &ServerMessage| match message {
            ServerMessage::ActiveSpeakers { speakers } => speakers.clone(),
            other => panic!("not active_speakers: {other:?}"),
        };
        let mut to: Vec<&str> = announced.iter().map(|(to, _)| to.as_str()).collect();
        to.sort();
        assert_eq!(to, [A, B], "once to everyone, the speaker included: {announced:?}");
        for (_, message) in &announced {
            let list = speakers(message);
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].participant_id.as_str(), A);
            assert_eq!(list[0].track_id.as_ref(), Some(&mic));
            assert!(list[0].level > 0.05 && list[0].level <= 0.1, "{list:?}");
        }
        // The forwarded audio still carries the level, under the subscriber's id.
        let forwarded = sink
            .written
            .iter()
            .rev()
            .find(|(_, _, p)| p.header.payload_type == 109)
            .expect("audio forwarded");
        assert_eq!(forwarded.2.header.get_extension(5).as_deref(), Some(&[0x80 | 20][..]));
        // A leaves: whoever is still there hears that nobody speaks.
        room.remove_participant(A, now, &mut fx);
        fx.clear();
        room.evaluate_speakers(now + Duration::from_millis(500), &mut fx);
        let after = signals(&fx);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0].0.as_str(), B);
        assert!(speakers(&after[0].1).is_empty());
        // Then nothing more to say.
        fx.clear();
        room.evaluate_speakers(now + Duration::from_secs(2), &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
    }

    #[test]
    fn a_failed_leg_is_forgotten() {
        let now = Instant::now();
        let mut room = room();
        let mut fx = Vec::new();
        room.add_participant(A, ParticipantKind::Staff, true, now, &mut fx);
        room.add_participant(B, ParticipantKind::Staff, true, now, &mut fx);
        room.set_connection(A, PeerRole::Publisher, Some(A_PUB));
        room.declare(A, vec![announce("0", TrackSource::Camera)], now, &mut fx);
        room.stream_opened(A, stream("0", 1000, "video/VP8"), now, &mut fx);
        let Some(Effect::AddSender { leg, .. }) = fx.iter().find(|e| matches!(e, Effect::AddSender { .. })).cloned()
        else {
            panic!("a leg for B");
        };
        room.leg_failed(leg);
        assert!(room.tracks[0].legs.is_empty());
        let snapshot = room.debug_snapshot(|_| None);
        assert_eq!(snapshot["participants"][1]["receiving"], serde_json::json!([]));
    }

    #[test]
    fn nacks_are_answered_from_the_cache_as_the_leg_sent_and_duplicates_go_nowhere() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (mut room, _) = call(false, t0);
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        for seq in 10..20 {
            room.forward(A_PUB, &packet(1000, seq, 96), t0, &mut sink, &mut fx);
        }
        let (conn, first) = (sink.written[0].0, sink.written[0].2.header.clone());
        let (leg_ssrc, base) = (first.ssrc, first.sequence_number);
        room.forward(A_PUB, &packet(1000, 15, 96), t0 + ms(5), &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 10, "a packet arriving twice is forwarded once");
        sink.written.clear();

        let asked = [base + 3, base + 3, base + 5];
        room.nack_received(conn, leg_ssrc, asked, t0 + ms(10), &mut sink, &mut fx);
        let resent: Vec<(u32, u8, u16, u32)> = sink
            .written
            .iter()
            .map(|(_, _, p)| {
                (
                    p.header.ssrc,
                    p.header.payload_type,
                    p.header.sequence_number,
                    p.header.timestamp,
                )
            })
            .collect();
        assert_eq!(
            resent,
            [
                (leg_ssrc, 100, base + 3, 13 * 3000),
                (leg_ssrc, 100, base + 5, 15 * 3000)
            ],
            "as the leg sent them, the repeat answered once"
        );
        assert_eq!(keyframe_requests(&fx), 0);
        let s = room.stats().meeting.snapshot();
        assert_eq!(
            (
                s.nacked_packets,
                s.retransmitted_packets,
                s.unservable_nacks,
                s.duplicate_packets
            ),
            (3, 2, 0, 1)
        );

        // Never sent on this leg (lost before the gateway; its repair is forwarded when it
        // comes): unservable, no keyframe. Sent but too old: the publisher is asked for one.
        room.nack_received(
            conn,
            leg_ssrc,
            [base + 200, base + 199],
            t0 + ms(20),
            &mut sink,
            &mut fx,
        );
        assert_eq!(keyframe_requests(&fx), 0);
        room.nack_received(conn, leg_ssrc, [base + 7], t0 + ms(2000), &mut sink, &mut fx);
        assert_eq!(sink.written.len(), 2);
        assert_eq!(keyframe_requests(&fx), 1);
        assert_eq!(room.stats().meeting.snapshot().unservable_nacks, 3);
        // Another connection's NACK for this SSRC, or an unknown SSRC, finds nothing.
        room.nack_received(A_SUB, leg_ssrc, [base], t0 + ms(30), &mut sink, &mut fx);
        room.nack_received(conn, 12345, [base], t0 + ms(30), &mut sink, &mut fx);
        assert_eq!(room.stats().meeting.snapshot().nacked_packets, 6);
        assert_eq!(sink.written.len(), 2);
    }

    // ---- simulcast ----

    /// A VP8 packet of one layer: the first packet of a keyframe or of a delta frame.
    fn vp8(ssrc: u32, seq: u16, ts: u32, key: bool) -> Packet {
        Packet {
            header: Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                marker: true,
                ..Default::default()
            },
            // S=1, partition 0, then the frame tag (P clear on a keyframe).
            payload: Bytes::from_static(if key { &[0x10, 0x00, 0x9d] } else { &[0x10, 0x01, 0x9d] }),
        }
    }

    /// Camera layers q (SSRC 1000), h (1001), f (1002), ranked 0, 1, 2.
    fn layers() -> Vec<Stream> {
        [("q", 1000, 0), ("h", 1001, 1), ("f", 1002, 2)]
            .into_iter()
            .map(|(rid, ssrc, rank)| Stream {
                layer: Some(SimulcastLayer { rid: rid.into(), rank }),
                replaces: false,
                ..stream("0", ssrc, "video/VP8")
            })
            .collect()
    }

    /// (sequence number, timestamp) of the video B received, in order.
    fn b_video(sink: &Recorder) -> Vec<(u16, u32)> {
        sink.written
            .iter()
            .filter(|(c, _, p)| *c == B_SUB && p.header.payload_type == 100)
            .map(|(_, _, p)| (p.header.sequence_number, p.header.timestamp))
            .collect()
    }

    fn keyframes_of(effects: &[Effect]) -> Vec<u32> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::RequestKeyframe { ssrc, .. } => Some(*ssrc),
                _ => None,
            })
            .collect()
    }

    fn contiguous(seen: &[(u16, u32)]) -> bool {
        seen.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1))
    }

    fn forward_ahead(seen: &[(u16, u32)]) -> bool {
        seen.windows(2).all(|w| (w[1].1.wrapping_sub(w[0].1) as i32) >= 0)
    }

    /// A padding-only packet (a publisher's bandwidth probe) on the SSRC a leg forwards.
    fn probe(ssrc: u32, seq: u16, ts: u32) -> Packet {
        let mut packet = vp8(ssrc, seq, ts, false);
        packet.header.padding = true;
        packet.header.marker = false;
        packet.payload = Bytes::new();
        packet
    }

    /// Chromium probes its uplink with padding-only packets on a layer's own SSRC (a
    /// simulcast layer has no RTX here): subscribers get none of them and no gap where
    /// they were, and a lost packet resent after a probe burst lands in its own slot.
    #[test]
    fn a_publishers_padding_probes_reach_no_subscriber_and_leave_no_gap() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        let frame = |seq: u16, key| vp8(1000, seq, u32::from(seq) * 3000, key);
        room.forward(A_PUB, &frame(100, true), t0, &mut sink, &mut fx);
        room.forward(A_PUB, &frame(101, false), t0, &mut sink, &mut fx);
        for seq in 102..110 {
            room.forward(A_PUB, &probe(1000, seq, 101 * 3000), t0, &mut sink, &mut fx);
        }
        room.forward(A_PUB, &frame(110, false), t0, &mut sink, &mut fx);
        // 111 is lost; another probe; 113 comes, then 111 resent.
        room.forward(A_PUB, &probe(1000, 112, 110 * 3000), t0, &mut sink, &mut fx);
        room.forward(A_PUB, &frame(113, false), t0, &mut sink, &mut fx);
        room.forward(A_PUB, &frame(111, false), t0, &mut sink, &mut fx);
        let seen = b_video(&sink);
        assert_eq!(seen.len(), 5, "no probe forwarded: {seen:?}");
        let first = seen[0].0;
        let slots: Vec<u16> = seen.iter().map(|(seq, _)| seq.wrapping_sub(first)).collect();
        assert_eq!(slots, [0, 1, 2, 4, 3], "contiguous, the resent packet in its own slot");
    }

    #[test]
    fn simulcast_layers_are_one_track_with_one_leg_per_subscriber() {
        let now = Instant::now();
        let (room, fx) = call_with(true, &layers(), now);
        assert_eq!(room.tracks().len(), 2, "camera and microphone, not a track per layer");
        let published = signals(&fx)
            .iter()
            .filter(|(to, m)| to == B && matches!(m, ServerMessage::TrackPublished { .. }))
            .count();
        assert_eq!(published, 2);
        let senders = |who: &str| {
            fx.iter()
                .filter(|e| matches!(e, Effect::AddSender { subscriber, track, .. } if subscriber == who && track.kind == TrackKind::Video))
                .count()
        };
        assert_eq!((senders(B), senders(C)), (1, 1), "one video leg each");
        assert_eq!(room.tracks[0].layers.len(), 3);
        // A layer's sender restarting (a known rid, a new SSRC) is the same layer again.
        let mut room = room;
        let mut fx = Vec::new();
        let mut again = layers().remove(1);
        again.ssrc = 1101;
        room.stream_opened(A, again, now, &mut fx);
        assert_eq!(room.tracks[0].layers.len(), 3);
        assert_eq!(room.tracks[0].layers[1].ssrc, 1101);
    }

    /// Every (connection, SSRC) a packet may come with, looked up through the routes and by
    /// a scan of the tracks: the same answer, whatever happened to the tracks.
    fn routes_agree(room: &MediaRoom, conns: &[ConnId], ssrcs: &[u32]) {
        for &conn in conns {
            for &ssrc in ssrcs {
                assert_eq!(
                    room.route(conn, ssrc),
                    room.route_by_scan(conn, ssrc),
                    "conn {conn} ssrc {ssrc}"
                );
            }
        }
    }

    #[test]
    fn routes_lead_each_publisher_packet_to_its_layer_through_every_change() {
        let now = Instant::now();
        let (mut room, _) = call_with(true, &layers(), now);
        let conns = [A_PUB, A_PUB2, A_SUB, B_SUB, 0];
        let ssrcs = [0, 1000, 1001, 1002, 1101, 2000, 5000, 6000];
        routes_agree(&room, &conns, &ssrcs);
        // Camera first (three layers in arrival order), then the microphone.
        assert_eq!(room.route(A_PUB, 1000), Some((0, 0)));
        assert_eq!(room.route(A_PUB, 1002), Some((0, 2)));
        assert_eq!(room.route(A_PUB, 2000), Some((1, 0)));
        assert_eq!(room.route(A_PUB, 5000), None, "an SSRC nobody published");
        assert_eq!(room.route(B_SUB, 1000), None, "another connection's packet");
        let mut fx = Vec::new();

        // A layer's sender restarts on a new SSRC: the old one leads nowhere.
        let mut again = layers().remove(1);
        again.ssrc = 1101;
        room.stream_opened(A, again, now, &mut fx);
        assert_eq!((room.route(A_PUB, 1001), room.route(A_PUB, 1101)), (None, Some((0, 1))));
        routes_agree(&room, &conns, &ssrcs);

        // A is back on a new socket: its tracks are parked, nothing of theirs is routed.
        room.add_participant(A, ParticipantKind::Staff, true, now, &mut fx);
        assert!(ssrcs.iter().all(|&ssrc| room.route(A_PUB, ssrc).is_none()));
        routes_agree(&room, &conns, &ssrcs);

        // Its camera again on the new connection: adopted, routed from there only.
        declare_again_on(&mut room, A_PUB2, now, &mut fx);
        room.stream_opened(A, camera_again_on(A_PUB2), now, &mut fx);
        assert_eq!(
            (room.route(A_PUB2, 5000), room.route(A_PUB, 5000)),
            (Some((0, 0)), None)
        );
        assert_eq!(room.route(A_PUB2, 2000), None, "the microphone is still parked");
        routes_agree(&room, &conns, &ssrcs);

        // A leaves: its tracks go, and with them every route.
        room.remove_participant(A, now, &mut fx);
        assert!(room.routes.is_empty());
        routes_agree(&room, &conns, &ssrcs);
    }

    #[test]
    fn a_leg_switches_layers_only_on_a_keyframe_of_the_target_with_one_continuous_stream() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        let frame = Duration::from_millis(33);
        // Each layer's own sequence and timestamp spaces, as a browser sends them.
        let (mut q, h, mut f) = (100u16, 20_000u16, 40_000u16);
        let ts = |base: u32, i: u32| base.wrapping_add(i * 3000);
        let mut at = t0;
        // The low layer arrives first: B starts with it at once (nothing to switch from).
        room.forward(A_PUB, &vp8(1000, q, ts(7, 0), false), at, &mut sink, &mut fx);
        q += 1;
        assert_eq!(b_video(&sink).len(), 1);
        // h and f appear (delta frames): B wants the best (high), asks for f's keyframe and stays on q.
        room.forward(A_PUB, &vp8(1001, h, ts(500_000, 0), false), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, f, ts(9_000_000, 0), false), at, &mut sink, &mut fx);
        f += 1;
        assert!(keyframes_of(&fx).contains(&1002), "{fx:?}");
        for i in 1..4 {
            at += frame;
            room.forward(A_PUB, &vp8(1000, q, ts(7, i), false), at, &mut sink, &mut fx);
            q += 1;
            room.forward(A_PUB, &vp8(1002, f, ts(9_000_000, i), false), at, &mut sink, &mut fx);
            f += 1;
        }
        assert_eq!(b_video(&sink).len(), 4, "still q: f sent no keyframe yet");
        // f's keyframe: the switch. Then only f reaches B.
        at += frame;
        room.forward(A_PUB, &vp8(1002, f, ts(9_000_000, 4), true), at, &mut sink, &mut fx);
        f += 1;
        room.forward(A_PUB, &vp8(1000, q, ts(7, 4), true), at, &mut sink, &mut fx);
        q += 1;
        room.forward(A_PUB, &vp8(1002, f, ts(9_000_000, 4), false), at, &mut sink, &mut fx);
        f += 1;
        // A late packet of f from before its keyframe is not sent (its number is taken).
        room.forward(
            A_PUB,
            &vp8(1002, f - 5, ts(9_000_000, 2), false),
            at,
            &mut sink,
            &mut fx,
        );
        let seen = b_video(&sink);
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert!(contiguous(&seen), "one sequence across the switch: {seen:?}");
        assert!(forward_ahead(&seen), "timestamps go on forward: {seen:?}");
        assert_eq!(seen[5].1, seen[4].1, "the same frame keeps its timestamp");
        assert_eq!(
            seen[4].1.wrapping_sub(seen[3].1),
            2970,
            "the new layer starts as much later as time passed (33 ms)"
        );
        assert_eq!(room.stats().meeting.snapshot().layer_switches, 1);

        // Down to low: f goes on until q's keyframe (asked for), then q.
        fx.clear();
        b_wants_camera(&mut room, Quality::Low, at, &mut fx);
        at += frame;
        room.forward(A_PUB, &vp8(1002, f, ts(9_000_000, 5), false), at, &mut sink, &mut fx);
        f += 1;
        room.forward(A_PUB, &vp8(1000, q, ts(7, 5), false), at, &mut sink, &mut fx);
        q += 1;
        assert!(keyframes_of(&fx).contains(&1000), "{fx:?}");
        assert_eq!(b_video(&sink).len(), 7, "f until q's keyframe");
        at += frame;
        room.forward(A_PUB, &vp8(1000, q, ts(7, 6), true), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, f, ts(9_000_000, 6), true), at, &mut sink, &mut fx);
        let seen = b_video(&sink);
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert!(contiguous(&seen) && forward_ahead(&seen), "{seen:?}");
        assert!(seen[7].1 > seen[6].1, "the switch moves time on: {seen:?}");
        assert_eq!(room.stats().meeting.snapshot().layer_switches, 2);
    }

    /// Chromium pads its bandwidth probes with copies of packets it sent up to seconds
    /// before, often the first of a keyframe's, and a copy older than the packet cache's
    /// memory is not known as a duplicate. A leg waiting to switch must not take such an
    /// old keyframe: the frames after it went by without it, so its decoder would drop
    /// everything until the next keyframe (a 1 s freeze in Chromium). It switches on the
    /// next keyframe of the layer's newest frame instead.
    #[test]
    fn a_leg_never_switches_on_a_resent_old_keyframe() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        let frame = Duration::from_millis(50);
        let ts = |base: u32, i: u32| base.wrapping_add(i * 4500);
        let mut at = t0;
        // B starts on f (its best) with f's keyframe; q runs beside it, its keyframe first.
        room.forward(A_PUB, &vp8(1000, 100, ts(7, 0), true), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, 500, ts(9_000, 0), true), at, &mut sink, &mut fx);
        for i in 1..40u16 {
            at += frame;
            room.forward(
                A_PUB,
                &vp8(1000, 100 + i, ts(7, u32::from(i)), false),
                at,
                &mut sink,
                &mut fx,
            );
            room.forward(
                A_PUB,
                &vp8(1002, 500 + i, ts(9_000, u32::from(i)), false),
                at,
                &mut sink,
                &mut fx,
            );
        }
        let on_f = b_video(&sink).len();
        let switches = |room: &MediaRoom| room.stats().meeting.snapshot().layer_switches;
        let before = switches(&room);
        // B's tile shrinks: it waits for a keyframe of q.
        b_wants_camera(&mut room, Quality::Low, at, &mut fx);
        // Two seconds on, a probe carries a copy of q's first keyframe packet (seq 100).
        at += frame;
        room.forward(A_PUB, &vp8(1000, 100, ts(7, 0), true), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, 540, ts(9_000, 40), false), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1000, 140, ts(7, 40), false), at, &mut sink, &mut fx);
        assert_eq!(switches(&room) - before, 0, "no switch on an old keyframe");
        let seen = b_video(&sink);
        assert_eq!(seen.len(), on_f + 1, "B stays on f meanwhile: {seen:?}");
        // q's next keyframe, of its newest frame: the switch.
        at += frame;
        room.forward(A_PUB, &vp8(1000, 141, ts(7, 41), true), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, 541, ts(9_000, 41), false), at, &mut sink, &mut fx);
        assert_eq!(switches(&room) - before, 1);
        let seen = b_video(&sink);
        assert_eq!(seen.len(), on_f + 2, "{seen:?}");
        assert!(contiguous(&seen) && forward_ahead(&seen), "{seen:?}");

        // f, paused for 7 hours, comes back: its clock ran 2.27e9 ticks since its last frame,
        // more than half the timestamp range, so its frames look older than that one. After a
        // silence its keyframe is a switch point all the same.
        b_wants_camera(&mut room, Quality::High, at, &mut fx);
        at += Duration::from_secs(7 * 3600);
        let later = ts(9_000, 41).wrapping_add(7 * 3600 * 90_000);
        room.forward(A_PUB, &vp8(1000, 142, ts(7, 42), false), at, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, 542, later, true), at, &mut sink, &mut fx);
        assert_eq!(switches(&room) - before, 2, "back on f");
    }

    /// What A (the publisher) was told of its camera's layers: (rid, active) per message.
    fn layers_told(effects: &[Effect]) -> Vec<Vec<(String, bool)>> {
        signals(effects)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ServerMessage::PublisherLayers { layers, .. } if to == A => {
                    Some(layers.into_iter().map(|l| (l.rid, l.active)).collect())
                }
                _ => None,
            })
            .collect()
    }

    fn told(active: [bool; 3]) -> Vec<(String, bool)> {
        ["q", "h", "f"].into_iter().map(String::from).zip(active).collect()
    }

    /// Dynacast: layers nobody needs are paused at the publisher once the need has been
    /// gone for the hold, the lowest never; a need coming back resumes at once; the
    /// subscribers' qualities decide, the best of them counts.
    #[test]
    fn publishers_are_told_to_pause_the_layers_nobody_needs_and_to_resume_them() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(true, &layers(), t0);
        let camera = track_id(&room, TrackSource::Camera);
        let mut fx = Vec::new();
        let tick = Duration::from_millis(100);
        // Everyone wants the best (the default): nothing to tell, ever.
        for i in 0..50 {
            room.evaluate_layers(t0 + tick * i, &mut fx);
        }
        assert_eq!(layers_told(&fx), Vec::<Vec<(String, bool)>>::new());
        // B wants the low layer, C the middle one: f is paused after the hold, h stays.
        let at = t0 + Duration::from_secs(5);
        room.set_subscription(B, &camera, false, Some(Quality::Low), at, &mut fx)
            .unwrap();
        room.set_subscription(C, &camera, false, Some(Quality::Medium), at, &mut fx)
            .unwrap();
        room.evaluate_layers(at, &mut fx);
        room.evaluate_layers(at + dynacast::HOLD - tick, &mut fx);
        assert!(layers_told(&fx).is_empty(), "not before the hold: {fx:?}");
        room.evaluate_layers(at + dynacast::HOLD, &mut fx);
        assert_eq!(layers_told(&fx), [told([true, true, false])]);
        // C hides its tile (`off`), B pauses the track: nobody needs anything; q stays.
        fx.clear();
        let at = at + dynacast::HOLD + tick;
        room.set_subscription(C, &camera, false, Some(Quality::Off), at, &mut fx)
            .unwrap();
        room.set_subscription(B, &camera, true, None, at, &mut fx).unwrap();
        room.evaluate_layers(at, &mut fx);
        room.evaluate_layers(at + dynacast::HOLD, &mut fx);
        assert_eq!(layers_told(&fx), [told([true, false, false])]);
        // C shows its tile large: everything resumes on the next evaluation.
        fx.clear();
        let at = at + dynacast::HOLD + tick;
        room.set_subscription(C, &camera, false, Some(Quality::High), at, &mut fx)
            .unwrap();
        room.evaluate_layers(at, &mut fx);
        assert_eq!(layers_told(&fx), [told([true, true, true])]);
        // The microphone (one layer) is never the subject; only A is told.
        assert!(
            signals(&fx)
                .iter()
                .all(|(to, m)| to == A || !matches!(m, ServerMessage::PublisherLayers { .. }))
        );
    }

    /// A layer still arriving 2 s after its publisher was told to pause it: told again
    /// (the client missed it, or reconnected and sends all its layers).
    #[test]
    fn a_paused_layer_that_keeps_arriving_is_told_again() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let camera = track_id(&room, TrackSource::Camera);
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        room.set_subscription(B, &camera, false, Some(Quality::Low), t0, &mut fx)
            .unwrap();
        room.evaluate_layers(t0, &mut fx);
        room.evaluate_layers(t0 + dynacast::HOLD, &mut fx);
        assert_eq!(layers_told(&fx), [told([true, false, false])]);
        fx.clear();
        let mut at = t0 + dynacast::HOLD;
        for seq in 0..30 {
            at += Duration::from_millis(100);
            room.forward(A_PUB, &vp8(1002, seq, 0, false), at, &mut sink, &mut fx);
            room.evaluate_layers(at, &mut fx);
        }
        assert_eq!(
            layers_told(&fx),
            [told([true, false, false])],
            "once in 3 s of f arriving"
        );
        // f stops arriving (the client applied it): nothing more.
        fx.clear();
        for i in 1..50 {
            room.evaluate_layers(at + Duration::from_millis(100) * i, &mut fx);
        }
        assert!(layers_told(&fx).is_empty(), "{fx:?}");
    }

    #[test]
    fn a_layer_that_stops_hands_its_legs_to_the_next_one_available() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        let mut at = t0;
        let mut seq = [0u16, 10_000, 20_000];
        let mut send =
            |room: &mut MediaRoom, layer: usize, key: bool, at: Instant, sink: &mut Recorder, fx: &mut Vec<Effect>| {
                let ssrc = 1000 + layer as u32;
                room.forward(A_PUB, &vp8(ssrc, seq[layer], 0, key), at, sink, fx);
                seq[layer] = seq[layer].wrapping_add(1);
            };
        // All three flow; B ends on f.
        for layer in [2, 0, 1] {
            send(&mut room, layer, true, at, &mut sink, &mut fx);
        }
        assert_eq!(room.tracks[0].legs[0].layer.layers(), (Some(2), None));
        // f stops (the publisher dropped it); q and h go on. Within the timeout B waits for f.
        for _ in 0..40 {
            at += Duration::from_millis(33);
            send(&mut room, 0, false, at, &mut sink, &mut fx);
            send(&mut room, 1, false, at, &mut sink, &mut fx);
        }
        assert_eq!(b_video(&sink).len(), 1, "nothing but f's one packet so far");
        assert!(keyframes_of(&fx).contains(&1001), "h's keyframe asked for: {fx:?}");
        assert_eq!(room.tracks[0].legs[0].layer.layers(), (Some(2), Some(1)));
        send(&mut room, 1, true, at, &mut sink, &mut fx);
        send(&mut room, 1, false, at, &mut sink, &mut fx);
        let seen = b_video(&sink);
        assert_eq!(seen.len(), 3, "h now: {seen:?}");
        assert!(contiguous(&seen));
        // f is back: B returns to it on its keyframe.
        at += Duration::from_millis(33);
        send(&mut room, 2, false, at, &mut sink, &mut fx);
        send(&mut room, 2, true, at, &mut sink, &mut fx);
        assert_eq!(room.tracks[0].legs[0].layer.layers(), (Some(2), None));
        assert!(contiguous(&b_video(&sink)));
    }

    #[test]
    fn quality_off_stops_a_track_for_one_subscriber_and_a_quality_resumes_it() {
        let now = Instant::now();
        let (mut room, _) = call_with(true, &layers(), now);
        let camera = track_id(&room, TrackSource::Camera);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        room.forward(A_PUB, &vp8(1000, 1, 0, true), now, &mut sink, &mut fx);
        room.set_subscription(B, &camera, false, Some(Quality::Off), now, &mut fx)
            .expect("off");
        room.forward(A_PUB, &vp8(1000, 2, 0, false), now, &mut sink, &mut fx);
        let to = |sink: &Recorder, c: ConnId| sink.written.iter().filter(|(conn, _, _)| *conn == c).count();
        assert_eq!(
            (to(&sink, B_SUB), to(&sink, C_SUB)),
            (1, 2),
            "B's tile is hidden, C's is not"
        );
        fx.clear();
        let later = now + Duration::from_secs(1);
        room.set_subscription(B, &camera, false, Some(Quality::Medium), later, &mut fx)
            .expect("medium");
        assert_eq!(
            keyframes_of(&fx),
            vec![1000],
            "resuming asks for a keyframe of its layer"
        );
        room.forward(A_PUB, &vp8(1000, 3, 0, false), later, &mut sink, &mut fx);
        assert_eq!(to(&sink, B_SUB), 2);
        assert_eq!(room.tracks[0].legs[0].layer.target(), Target::MEDIUM);
        // A pause without a quality keeps the quality; an old `paused: false` resumes at it.
        room.set_subscription(B, &camera, true, None, later, &mut fx)
            .expect("pause");
        room.set_subscription(B, &camera, false, None, later, &mut fx)
            .expect("resume");
        assert_eq!(room.tracks[0].legs[0].layer.target(), Target::MEDIUM);
    }

    #[test]
    fn nacks_after_a_layer_switch_are_answered_from_each_layers_cache() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        room.forward(A_PUB, &vp8(1000, 50, 0, true), t0, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, 50, 0, true), t0, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8(1002, 51, 0, false), t0, &mut sink, &mut fx);
        let seen = b_video(&sink);
        assert_eq!(seen.len(), 3);
        let leg_ssrc = room.tracks[0].legs[0].rewrite.ssrc;
        sink.written.clear();
        let nacked: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
        room.nack_received(
            B_SUB,
            leg_ssrc,
            nacked,
            t0 + Duration::from_millis(100),
            &mut sink,
            &mut fx,
        );
        let resent = b_video(&sink);
        assert_eq!(resent, seen, "each packet from the cache of the layer it came from");
        assert_eq!(room.stats().meeting.snapshot().unservable_nacks, 0);
    }

    /// A VP8 packet with a full descriptor: 15-bit picture id `pid`, TL0PICIDX `tl0`.
    fn vp8_numbered(ssrc: u32, seq: u16, pid: u16, tl0: u8, key: bool) -> Packet {
        let payload = vec![
            0x90,
            0xE0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            0x00,
            u8::from(!key),
            0x9d,
        ];
        Packet {
            payload: Bytes::from(payload),
            ..vp8(ssrc, seq, u32::from(seq) * 3000, key)
        }
    }

    /// B's video as (picture id, TL0PICIDX), read from what the room wrote.
    fn b_vp8_numbers(sink: &Recorder) -> Vec<(u16, u8)> {
        sink.written
            .iter()
            .filter(|(c, _, p)| *c == B_SUB && p.header.payload_type == 100)
            .map(|(_, _, p)| {
                let d = crate::sfu::vp8::Descriptor::parse(&p.payload).expect("descriptor");
                (d.picture_id.expect("pid").0, d.tl0.expect("tl0").0)
            })
            .collect()
    }

    /// Issue 12: each layer numbers its VP8 frames on its own; across a leg's switch the
    /// subscriber sees picture ids and TL0PICIDX run on from what it had (a decoder matching
    /// frames by them would otherwise wait for a keyframe), and a NACKed packet of the new
    /// layer comes back with the numbers it was first sent with.
    #[test]
    fn a_layer_switch_keeps_vp8_picture_ids_and_tl0picidx_continuous() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        // q starts B's leg (no switch: its numbers pass as they are, the payload shared).
        let first = vp8_numbered(1000, 10, 300, 40, true);
        room.forward(A_PUB, &first, t0, &mut sink, &mut fx);
        room.forward(A_PUB, &vp8_numbered(1000, 11, 301, 41, false), t0, &mut sink, &mut fx);
        assert_eq!(b_vp8_numbers(&sink), [(300, 40), (301, 41)]);
        assert_eq!(sink.written[0].2.payload.as_ptr(), first.payload.as_ptr(), "not copied");
        // f appears, far away in both counters; its keyframe switches B's leg.
        room.forward(
            A_PUB,
            &vp8_numbered(1002, 500, 20_000, 200, false),
            t0,
            &mut sink,
            &mut fx,
        );
        room.forward(
            A_PUB,
            &vp8_numbered(1002, 501, 20_001, 201, true),
            t0,
            &mut sink,
            &mut fx,
        );
        room.forward(
            A_PUB,
            &vp8_numbered(1002, 502, 20_002, 201, false),
            t0,
            &mut sink,
            &mut fx,
        );
        room.forward(A_PUB, &vp8_numbered(1000, 12, 302, 42, false), t0, &mut sink, &mut fx);
        room.forward(
            A_PUB,
            &vp8_numbered(1002, 503, 20_003, 202, false),
            t0,
            &mut sink,
            &mut fx,
        );
        assert_eq!(
            b_vp8_numbers(&sink),
            [(300, 40), (301, 41), (302, 42), (303, 42), (304, 43)]
        );
        assert_eq!(room.stats().meeting.snapshot().layer_switches, 1);
        let leg_ssrc = room.tracks[0].legs[0].rewrite.ssrc;
        let nacked = b_video(&sink)[3].0;
        sink.written.clear();
        room.nack_received(
            B_SUB,
            leg_ssrc,
            [nacked],
            t0 + Duration::from_millis(100),
            &mut sink,
            &mut fx,
        );
        // Built from the cache, which keeps the publisher's numbers: rewritten the same way again.
        assert_eq!(b_vp8_numbers(&sink), [(303, 42)], "resent as first sent");
    }

    /// The publisher limits (REMB) among `effects`: (connection, SSRC named, bit/s).
    fn limits_told(effects: &[Effect]) -> Vec<(ConnId, u32, u64)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::LimitPublisher { conn, ssrc, bps, .. } => Some((*conn, *ssrc, *bps)),
                _ => None,
            })
            .collect()
    }

    /// Sets subscriber connection `conn`'s estimate as if its feedback had brought it there.
    fn estimate(room: &mut MediaRoom, conn: ConnId, bps: Option<u64>) {
        let i = match room.bwe.binary_search_by_key(&conn, |(c, _)| *c) {
            Ok(i) => i,
            Err(i) => {
                // Made by the first packet sent on the connection; none forwarded here.
                room.bwe.insert(i, (conn, Bwe::default()));
                i
            }
        };
        let bwe = &mut room.bwe[i].1;
        bwe.capping = bps.is_some();
        bwe.estimator = bwe::Estimator::new(bps.unwrap_or(1_000_000));
    }

    /// Issue 12: a camera without simulcast cannot be fitted per subscriber, so its
    /// publisher is told (REMB) the most the slowest of up to three subscribers' paths
    /// carries, again as it changes, and told it is free once nobody's path is short. A
    /// simulcast publisher is never told: its layers adapt per subscriber.
    #[test]
    fn a_publisher_without_simulcast_is_told_what_its_subscribers_paths_carry() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(100);
        let (mut room, mut fx) = call_with(true, &[stream("0", 1000, "video/VP8")], t0);
        for p in [B, C] {
            let mut answer = answer_all(&room, p);
            for (_, n) in &mut answer {
                n.extensions.push((rtc::sdp::extmap::TRANSPORT_CC_URI.into(), 3));
            }
            room.subscriber_answered(p, &answer, true, t0, &mut fx);
        }
        fx.clear();
        room.evaluate_publisher_limits(t0, &mut fx);
        assert_eq!(limits_told(&fx), [], "nobody's path found short: nothing told");
        estimate(&mut room, B_SUB, Some(300_000));
        room.evaluate_publisher_limits(t0 + tick, &mut fx);
        assert_eq!(limits_told(&fx), [(A_PUB, 1000, 300_000)]);
        assert_eq!(
            room.debug_snapshot(|_| None)["participants"][0]["publisher_limit_bps"],
            300_000
        );
        fx.clear();
        room.evaluate_publisher_limits(t0 + tick * 2, &mut fx);
        assert_eq!(limits_told(&fx), [], "told once, refreshed each second");
        estimate(&mut room, C_SUB, Some(200_000));
        room.evaluate_publisher_limits(t0 + tick * 3, &mut fx);
        assert_eq!(limits_told(&fx), [(A_PUB, 1000, 200_000)], "the slowest of three");
        fx.clear();
        room.evaluate_publisher_limits(t0 + tick * 14, &mut fx);
        assert_eq!(limits_told(&fx), [(A_PUB, 1000, 200_000)], "refreshed");
        estimate(&mut room, B_SUB, None);
        estimate(&mut room, C_SUB, None);
        fx.clear();
        room.evaluate_publisher_limits(t0 + tick * 15, &mut fx);
        assert_eq!(limits_told(&fx), [(A_PUB, 1000, remb::LIFTED_BPS)], "free again");
        assert_eq!(
            room.stats().meeting.snapshot().rembs_sent,
            0,
            "the shard counts what it sends"
        );

        let (mut room, mut fx) = call_with(true, &layers(), t0);
        for p in [B, C] {
            let mut answer = answer_all(&room, p);
            for (_, n) in &mut answer {
                n.extensions.push((rtc::sdp::extmap::TRANSPORT_CC_URI.into(), 3));
            }
            room.subscriber_answered(p, &answer, true, t0, &mut fx);
        }
        estimate(&mut room, B_SUB, Some(300_000));
        fx.clear();
        room.evaluate_publisher_limits(t0 + tick, &mut fx);
        assert_eq!(limits_told(&fx), [], "simulcast adapts per subscriber instead");
    }

    /// A path for the congestion tests: a bottleneck of `bps` with a drop-tail queue of
    /// 300 ms and 20 ms of delay; returns each packet's arrival, or `None` when dropped.
    struct Bottleneck {
        bps: f64,
        free_at: Duration,
    }

    impl Bottleneck {
        fn carry(&mut self, sent: Duration, size: usize) -> Option<Duration> {
            let start = self.free_at.max(sent);
            if start.saturating_sub(sent) > Duration::from_millis(300) {
                return None;
            }
            self.free_at = start + Duration::from_secs_f64(size as f64 * 8.0 / self.bps);
            Some(self.free_at + Duration::from_millis(20))
        }
    }

    /// A VP8 packet of `size` bytes on `ssrc`, its layer readable from byte 3.
    fn sized_vp8(ssrc: u32, seq: u16, ts: u32, key: bool, size: usize) -> Packet {
        let mut payload = vec![0u8; size];
        payload[..3].copy_from_slice(if key { &[0x10, 0x00, 0x9d] } else { &[0x10, 0x01, 0x9d] });
        payload[3] = (ssrc - 1000) as u8;
        Packet {
            payload: Bytes::from(payload),
            ..vp8(ssrc, seq, ts, key)
        }
    }

    /// What [`congestion_run`] saw: per subscriber, the layer of each video packet it got
    /// and when; audio sent and audio B got; B's probe padding (when, RTX SSRC); the room.
    struct CongestionRun {
        room: MediaRoom,
        layer_at: Vec<(Duration, u8)>,
        layer_at_c: Vec<(Duration, u8)>,
        audio_sent: u32,
        audio_to_b: u32,
        padding_to_b: Vec<(Duration, u32)>,
    }

    impl CongestionRun {
        /// B on the top layer within 10 s of its path widening; every audio packet reached B
        /// (audio first); C on the top layer from its first keyframe on, the whole time B was
        /// capped.
        fn assert_recovered(&self) {
            let end = layer_after(&self.layer_at, Duration::from_secs(24));
            assert!(
                !end.is_empty() && end.iter().all(|l| *l == 2),
                "top layer again: {end:?}"
            );
            assert_eq!(self.audio_to_b, self.audio_sent);
            let c = layer_after(&self.layer_at_c, Duration::from_millis(500));
            assert!(!c.is_empty() && c.iter().all(|l| *l == 2), "C kept f: {c:?}");
        }
    }

    /// The layer of each packet of `layer_at` sent from `from` on.
    fn layer_after(layer_at: &[(Duration, u8)], from: Duration) -> Vec<u8> {
        layer_at.iter().filter(|(at, _)| *at >= from).map(|(_, l)| *l).collect()
    }

    /// Issue 12: B's downlink narrows to 300 kbit/s for 15 s while A sends three layers
    /// (about 150, 450 and 1 200 kbit/s) and audio, then widens for 10 s. B's and C's
    /// transport-wide feedback comes from simulated bottlenecks fed with exactly what the
    /// room wrote to each (C's wide all along); B's answer negotiated RTX when `rtx`
    /// (the room then probes before stepping up). Checks, 15 s in, that B's estimate
    /// dropped and its leg is on the lowest layer, mostly so from 5 s on.
    fn congestion_run(rtx: bool) -> CongestionRun {
        let t0 = Instant::now();
        let (mut room, mut fx) = call_with(true, &layers(), t0);
        // B's and C's answers negotiated transport-wide sequence numbers (id 3), and B's RTX
        // for VP8 (101) when `rtx`.
        for p in [B, C] {
            let mut answer = answer_all(&room, p);
            for (_, n) in &mut answer {
                n.extensions.push((rtc::sdp::extmap::TRANSPORT_CC_URI.into(), 3));
                if rtx && p == B {
                    n.codecs.push(Codec {
                        fmtp: "apt=100".into(),
                        ..codec(101, "video/rtx", 90_000)
                    });
                }
            }
            room.subscriber_answered(p, &answer, true, t0, &mut fx);
        }
        let mut sink = Recorder::default();
        let mut path = Bottleneck {
            bps: 300_000.0,
            free_at: Duration::ZERO,
        };
        let mut wide = Bottleneck {
            bps: 20_000_000.0,
            free_at: Duration::ZERO,
        };
        let (mut pending_c, mut layer_at_c) = (Vec::<Ack>::new(), Vec::<(Duration, u8)>::new());
        // Per layer: bytes per 10 ms tick, its sequence number, a keyframe asked for.
        let sizes = [190usize, 560, 1_500];
        let mut seqs = [100u16, 20_000, 40_000];
        let mut audio_seq = 7u16;
        let mut want_key = [true; 3];
        let (mut seen, mut seen_rtx, mut pending) = (0usize, 0usize, Vec::<Ack>::new());
        let (mut audio_sent, mut audio_to_b) = (0u32, 0u32);
        let mut layer_at = Vec::<(Duration, u8)>::new();
        let mut padding_to_b = Vec::new();
        for i in 0..2500u32 {
            if i == 1500 {
                // 15 s on the narrow path.
                let snap = room.debug_snapshot(|_| None);
                let b = &snap["participants"][1]["bandwidth"];
                assert!(b["capping"].as_bool().unwrap_or(false), "{snap:#}");
                let estimate = b["estimate_bps"].as_u64().expect("an estimate");
                assert!(estimate < 450_000, "below the middle layer: {estimate}");
                assert!(room.stats().meeting.snapshot().bwe_drops > 0);
                // From 5 s on the low layer, except for tries that overused and came back.
                let later = layer_after(&layer_at, Duration::from_secs(5));
                let low = later.iter().filter(|l| **l == 0).count();
                assert!(
                    low * 10 >= later.len() * 8,
                    "mostly q after 5 s: {low} of {}",
                    later.len()
                );
                assert_eq!(*later.last().expect("video kept"), 0, "back on q after any try");
                // The path widens.
                path.bps = 20_000_000.0;
            }
            let now = t0 + Duration::from_millis(10 * u64::from(i));
            let mut fx = Vec::new();
            for l in 0..3 {
                let key = std::mem::take(&mut want_key[l]);
                let p = sized_vp8(1000 + l as u32, seqs[l], i * 900, key, sizes[l]);
                seqs[l] = seqs[l].wrapping_add(1);
                room.forward(A_PUB, &p, now, &mut sink, &mut fx);
            }
            if i % 2 == 0 {
                let mut a = packet(2000, audio_seq, 111);
                a.payload = Bytes::from(vec![0u8; 120]);
                audio_seq = audio_seq.wrapping_add(1);
                audio_sent += 1;
                room.forward(A_PUB, &a, now, &mut sink, &mut fx);
            }
            if i % 10 == 0 {
                // The shard's tick: dynacast keeps what B wishes (f) sending while B is capped,
                // or B could never try it again.
                room.evaluate_layers(now, &mut fx);
            }
            for e in &fx {
                if let Effect::Signal {
                    message: ServerMessage::PublisherLayers { layers, .. },
                    ..
                } = e
                {
                    assert!(layers.iter().all(|l| l.active), "no layer paused: {layers:?}");
                }
            }
            for ssrc in keyframes_of(&fx) {
                want_key[(ssrc - 1000) as usize] = true;
            }
            // The end of the shard's turn.
            room.send_probes(now, &mut sink);
            let since = now.saturating_duration_since(t0);
            let numbered = |p: &Packet| {
                let ext = p
                    .header
                    .extensions
                    .iter()
                    .find(|e| e.id == 3)
                    .expect("every copy to B and C is numbered");
                u16::from_be_bytes([ext.payload[0], ext.payload[1]])
            };
            for (conn, p) in &sink.rtx[seen_rtx..] {
                assert_eq!(*conn, B_SUB, "only B has RTX, and nothing was NACKed");
                padding_to_b.push((since, p.header.ssrc));
                pending.push(Ack {
                    seq: numbered(p),
                    arrival: path.carry(since, p.payload.len() + 16),
                });
            }
            seen_rtx = sink.rtx.len();
            for (conn, _, p) in &sink.written[seen..] {
                let (path, pending, layer_at) = match *conn {
                    B_SUB => (&mut path, &mut pending, &mut layer_at),
                    C_SUB => (&mut wide, &mut pending_c, &mut layer_at_c),
                    _ => continue,
                };
                if p.header.payload_type == 109 {
                    audio_to_b += u32::from(*conn == B_SUB);
                } else {
                    layer_at.push((since, p.payload[3]));
                }
                pending.push(Ack {
                    seq: numbered(p),
                    arrival: path.carry(since, p.payload.len() + 16),
                });
            }
            seen = sink.written.len();
            if i % 5 == 0 {
                // Feedback every 50 ms on what has arrived by now (a lost one once later ones did).
                let (ready, later): (Vec<Ack>, Vec<Ack>) =
                    pending.drain(..).partition(|a| a.arrival.is_none_or(|at| at <= since));
                pending = later;
                room.congestion_feedback(B_SUB, ready, now);
                let (ready, later): (Vec<Ack>, Vec<Ack>) = pending_c
                    .drain(..)
                    .partition(|a| a.arrival.is_none_or(|at| at <= since));
                pending_c = later;
                room.congestion_feedback(C_SUB, ready, now);
            }
        }
        CongestionRun {
            room,
            layer_at,
            layer_at_c,
            audio_sent,
            audio_to_b,
            padding_to_b,
        }
    }

    /// Without RTX toward B there is no padding to probe with: once the path has narrowed,
    /// B's leg climbs back by tries of the next layer, and within 10 s of the path
    /// widening it has the top layer again. Audio first: every audio packet reached B. C,
    /// on a wide path, keeps the top layer throughout: one slow subscriber never degrades
    /// the others.
    #[test]
    fn a_subscribers_congestion_feedback_caps_its_layer_and_audio_keeps_flowing() {
        let run = congestion_run(false);
        assert_eq!(run.padding_to_b, [], "no probe without RTX");
        assert_eq!(run.room.stats().meeting.snapshot().bwe_probes, 0);
        run.assert_recovered();
        let snap = run.room.debug_snapshot(|_| None);
        assert_eq!(snap["participants"][2]["bandwidth"]["capping"], false, "{snap:#}");
    }

    /// With RTX toward B, the room probes before each step up (padding at the rate the
    /// next layer needs, RTX copies on B's RTX SSRC, numbered for the estimate): on the
    /// narrow path every probe finds no room, so from 5 s on B never gets a packet of a
    /// bigger layer (a try would have sent it into the full queue); once the path widens a
    /// probe finds room and B is on the top layer within 10 s. Audio still all arrives,
    /// and C keeps the top layer throughout.
    #[test]
    fn a_subscriber_with_rtx_is_probed_before_a_step_up_and_a_narrow_path_never_gets_a_bigger_layer() {
        let run = congestion_run(true);
        let stats = run.room.stats().meeting.snapshot();
        assert!(stats.bwe_probes >= 2, "{stats:?}");
        assert!(stats.bwe_probes_passed >= 1, "{stats:?}");
        assert!(
            stats.bwe_probes_passed < stats.bwe_probes,
            "the narrow path's failed: {stats:?}"
        );
        assert_eq!(stats.bwe_probe_packets, run.padding_to_b.len() as u64);
        let b_rtx = run.room.tracks[0]
            .legs
            .iter()
            .find(|l| l.subscriber == B)
            .and_then(|l| l.history.as_ref()?.rtx.as_ref().map(|r| r.ssrc))
            .expect("B's leg has RTX");
        assert!(run.padding_to_b.iter().all(|(_, ssrc)| *ssrc == b_rtx));
        let narrow = run
            .padding_to_b
            .iter()
            .filter(|(at, _)| *at < Duration::from_secs(15))
            .count();
        assert!(
            narrow >= super::super::probe::MIN_PACKETS as usize,
            "probed while narrow: {narrow} packets"
        );
        let mid = run
            .layer_at
            .iter()
            .filter(|(at, _)| (Duration::from_secs(5)..Duration::from_secs(15)).contains(at))
            .map(|(_, l)| *l)
            .collect::<Vec<u8>>();
        assert!(
            !mid.is_empty() && mid.iter().all(|l| *l == 0),
            "only q while narrow: {mid:?}"
        );
        run.assert_recovered();
    }

    /// A subscriber that sends REMB and no transport-wide feedback (aiortc) has its REMB
    /// taken as its estimate: one below what it is sent caps its leg to the layer that
    /// fits, one with room lifts it; a REMB that merely follows what arrives is no drop. A
    /// connection that negotiated transport-wide feedback has its REMBs ignored.
    #[test]
    fn a_subscriber_without_twcc_is_fitted_under_its_remb() {
        let t0 = Instant::now();
        let (mut room, mut fx) = call_with(true, &layers(), t0);
        // C negotiated transport-wide sequence numbers; B (no answer change) did not.
        let mut answer = answer_all(&room, C);
        for (_, n) in &mut answer {
            n.extensions.push((rtc::sdp::extmap::TRANSPORT_CC_URI.into(), 3));
        }
        room.subscriber_answered(C, &answer, true, t0, &mut fx);
        let mut sink = Recorder::default();
        // 2 s of the three layers (about 150, 450 and 1 200 kbit/s), a keyframe each first.
        let sizes = [190usize, 560, 1_500];
        let mut send = |room: &mut MediaRoom, from: u32, to: u32| {
            for i in from..to {
                let now = t0 + Duration::from_millis(10 * u64::from(i));
                for (l, size) in sizes.iter().enumerate() {
                    let p = sized_vp8(1000 + l as u32, i as u16, i * 900, i % 100 == 0, *size);
                    room.forward(A_PUB, &p, now, &mut sink, &mut Vec::new());
                }
            }
        };
        let cap = |room: &MediaRoom, who: &str| {
            room.tracks[0]
                .legs
                .iter()
                .find(|l| l.subscriber == who)
                .map(|l| l.layer.cap().0)
                .expect("leg")
        };
        send(&mut room, 0, 200);
        let at = t0 + Duration::from_secs(2);
        // B receives f (about 1.2 Mbit/s); its REMB follows what arrives: no drop.
        room.remb_received(B_SUB, 1_800_000, at);
        assert_eq!(room.stats().meeting.snapshot().bwe_drops, 0);
        assert!(cap(&room, B) >= 2, "uncapped");
        // Its downlink narrows: 300 kbit/s, below what it is sent. Capped to q.
        room.remb_received(B_SUB, 300_000, at);
        assert_eq!(room.stats().meeting.snapshot().bwe_drops, 1);
        assert_eq!(cap(&room, B), 0, "q fits 300 kbit/s");
        // C's REMB changes nothing: its feedback is the estimate.
        room.remb_received(C_SUB, 100_000, at);
        assert!(cap(&room, C) >= 2, "uncapped");
        assert_eq!(room.stats().meeting.snapshot().bwe_drops, 1);
        // Wide again: the next REMB has room for f with headroom.
        send(&mut room, 200, 300);
        room.remb_received(B_SUB, 3_000_000, t0 + Duration::from_secs(3));
        assert_eq!(cap(&room, B), 2, "f fits 3 Mbit/s");
    }

    // ---- connection quality ----

    use gatehouse_signaling::protocol::ConnectionQuality;

    /// The `connection_quality` frames of `effects`: (to, about, quality, video reduced).
    fn qualities(effects: &[Effect]) -> Vec<(String, String, ConnectionQuality, bool)> {
        signals(effects)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ServerMessage::ConnectionQuality {
                    participant_id,
                    quality,
                    video_reduced,
                } => Some((
                    to.as_str().to_owned(),
                    participant_id.as_str().to_owned(),
                    quality,
                    video_reduced,
                )),
                _ => None,
            })
            .collect()
    }

    /// One second of A's camera (30 packets from `*seq` on, every fifth missing when `lossy`),
    /// B's subscriber heard, then an evaluation; what it said.
    fn second_of_camera(
        room: &mut MediaRoom,
        seq: &mut u16,
        lossy: bool,
        at: Instant,
    ) -> Vec<(String, String, ConnectionQuality, bool)> {
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        for i in 0..30u64 {
            *seq = seq.wrapping_add(1);
            if lossy && *seq % 5 == 2 {
                continue;
            }
            let now = at + Duration::from_millis(33 * i);
            room.forward(
                A_PUB,
                &vp8(1000, *seq, u32::from(*seq) * 3000, i == 0),
                now,
                &mut sink,
                &mut fx,
            );
        }
        let now = at + Duration::from_secs(1);
        room.subscriber_heard(B_SUB, now, &mut fx);
        fx.clear();
        room.evaluate_quality(now, &mut fx);
        qualities(&fx)
    }

    /// Issue 12: 20 % of A's packets never reach the gateway: A's uplink is poor within
    /// three evaluations, told to A and to staff B, never to guest G (who is told nothing
    /// about anyone else); when the loss stops A climbs back to excellent, through good.
    #[test]
    fn uplink_loss_makes_a_publisher_poor_for_itself_and_staff_and_recovery_is_announced() {
        let t0 = Instant::now();
        let (mut room, _) = call(false, t0);
        let mut fx = Vec::new();
        room.add_participant("p_g", ParticipantKind::Guest, false, t0, &mut fx);
        let mut seq = 100u16;
        let mut said = Vec::new();
        for s in 0..3u64 {
            said.extend(second_of_camera(&mut room, &mut seq, true, t0 + Duration::from_secs(s)));
        }
        let poor: Vec<&(String, String, ConnectionQuality, bool)> =
            said.iter().filter(|q| q.2 == ConnectionQuality::Poor).collect();
        let to: Vec<&str> = poor.iter().map(|q| q.0.as_str()).collect();
        assert_eq!(to, [A, B], "A and staff B are told, guest G is not: {said:?}");
        assert!(poor.iter().all(|q| q.1 == A && !q.3), "{said:?}");
        assert!(said.iter().all(|q| q.1 == A && q.0 != "p_g"), "{said:?}");
        // Clean again: good, then excellent, each told once to A and B.
        let mut back = Vec::new();
        for s in 3..15u64 {
            back.extend(second_of_camera(
                &mut room,
                &mut seq,
                false,
                t0 + Duration::from_secs(s),
            ));
        }
        let levels: Vec<ConnectionQuality> = back.iter().filter(|q| q.0 == A).map(|q| q.2).collect();
        assert_eq!(
            levels,
            [ConnectionQuality::Good, ConnectionQuality::Excellent],
            "{back:?}"
        );
        assert_eq!(back.len(), 4, "the same to B: {back:?}");
    }

    /// A and B in the call, A publishing a three-layer camera, its microphone and a screen
    /// share (mid 2, ssrc 3000), every leg negotiated and B's answer applied.
    fn screen_beside_simulcast_camera(t0: Instant) -> (MediaRoom, Vec<Effect>) {
        let (mut room, _) = call_with(false, &layers(), t0);
        let mut fx = Vec::new();
        room.declare(
            A,
            vec![
                announce("0", TrackSource::Camera),
                announce("1", TrackSource::Microphone),
                announce("2", TrackSource::Screen),
            ],
            t0,
            &mut fx,
        );
        room.stream_opened(A, stream("2", 3000, "video/VP8"), t0, &mut fx);
        bind_legs(&mut room, &fx);
        room.due_offers(&mut Vec::new());
        let answer = answer_all(&room, B);
        room.subscriber_answered(B, &answer, false, t0, &mut fx);
        (room, fx)
    }

    /// Issue 12, "screen share is protected": A shares its screen (one layer, about
    /// 1 Mbit/s) beside its three-layer camera. B's path carries 1.3 Mbit/s: split equally
    /// (as before) the camera's 650 kbit/s would take its 500 kbit/s middle layer and the two
    /// together overrun the path; the screen share's need comes first, so the camera gets
    /// what is left (about 200 kbit/s with headers: its lowest layer), and B's screen share
    /// leg, the one layer, goes on. With room for both, the camera climbs back.
    #[test]
    fn under_congestion_a_screen_share_keeps_its_rate_and_the_camera_steps_down() {
        let t0 = Instant::now();
        let (mut room, mut fx) = screen_beside_simulcast_camera(t0);
        // Two seconds of media: per 100 ms, q 150, h 500, f 1 500 kbit/s, screen 1 000 kbit/s.
        let mut sink = Recorder::default();
        let mut at = t0;
        for i in 0..20u16 {
            at = t0 + Duration::from_millis(100 * u64::from(i));
            for (ssrc, bytes) in [(1000, 1875), (1001, 6250), (1002, 18750), (3000, 12500)] {
                let mut p = vp8(ssrc, i, u32::from(i) * 9000, i == 0);
                p.payload = Bytes::from(vec![0u8; bytes]);
                room.forward(A_PUB, &p, at, &mut sink, &mut fx);
            }
        }
        let cap = |room: &MediaRoom, source| {
            let track = room.tracks.iter().find(|t| t.info.source == source).expect("track");
            track
                .legs
                .iter()
                .find(|l| l.subscriber == B)
                .expect("B's leg")
                .layer
                .cap()
        };
        estimate(&mut room, B_SUB, Some(1_300_000));
        room.fit_legs(B_SUB, Verdict::Down, at);
        assert_eq!(cap(&room, TrackSource::Camera), Target(0), "the camera steps down to q");
        assert_eq!(cap(&room, TrackSource::Screen), Target(0), "the screen's one layer");
        let camera = room
            .tracks
            .iter()
            .find(|t| t.info.source == TrackSource::Camera)
            .expect("camera");
        let leg = camera.legs.iter().find(|l| l.subscriber == B).expect("leg");
        let share = room.video_share(B_SUB, camera, leg, at).expect("capping");
        assert!(
            (100_000..400_000).contains(&share),
            "what the screen leaves, not half: {share}"
        );
        // Room for the screen and the camera's middle layer (and headroom): up to h, not f.
        estimate(&mut room, B_SUB, Some(2_300_000));
        room.fit_legs(B_SUB, Verdict::Up, at);
        assert_eq!(cap(&room, TrackSource::Camera), Target(1));
    }

    /// A screen share frame of libwebrtc's L1T2 pattern, one packet of `bytes`: picture id
    /// `pid`, TID 0 on even ones, 1 on odd ones (with Y on every other), TL0PICIDX counting
    /// the base frames.
    fn l1t2_frame(seq: u16, pid: u16, key: bool, bytes: usize) -> Packet {
        let (tid, sync) = if pid.is_multiple_of(2) {
            (0u8, false)
        } else {
            (1, pid % 4 == 1)
        };
        let mut payload = vec![
            0x90,
            0xE0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            (pid / 2) as u8,
            tid << 6 | u8::from(sync) << 5,
            u8::from(!key),
            0x9d,
        ];
        payload.resize(bytes, 0);
        Packet {
            payload: Bytes::from(payload),
            ..vp8(3000, seq, u32::from(pid) * 4500, key)
        }
    }

    /// Issue 12, "screen share is protected", below the screen share's own rate: A shares
    /// its screen with two temporal layers (600 kbit/s in the base layer, 1 Mbit/s with the
    /// upper one) beside its camera. B's path carries 800 kbit/s: the camera gets its lowest
    /// layer and B's screen share leg the base layer only, every other frame, at full
    /// resolution; its sequence numbers and picture ids run on without a gap, TL0PICIDX as
    /// sent, and a NACK is answered with the numbers first sent. When the path may carry
    /// more, the screen share tries its full frame rate first, from the next sync frame.
    #[test]
    fn a_screen_share_under_its_rate_loses_frame_rate_not_resolution() {
        let t0 = Instant::now();
        let (mut room, mut fx) = screen_beside_simulcast_camera(t0);
        let mut sink = Recorder::default();
        // Two seconds: a frame every 50 ms (base and upper layer 10 each a second), 7 500
        // bytes a base frame and 5 000 an upper one; the camera's q at 150 kbit/s.
        let (mut seq, mut pid, mut at) = (0u16, 0u16, t0);
        let mut frames = |room: &mut MediaRoom, sink: &mut Recorder, n: u16, at: &mut Instant| {
            for _ in 0..n {
                *at += Duration::from_millis(50);
                let bytes = if pid.is_multiple_of(2) { 7500 } else { 5000 };
                room.forward(
                    A_PUB,
                    &l1t2_frame(seq, pid, pid == 0, bytes),
                    *at,
                    sink,
                    &mut Vec::new(),
                );
                let mut q = vp8(1000, seq, u32::from(seq) * 4500, seq == 0);
                q.payload = Bytes::from(vec![0x10; 940]);
                room.forward(A_PUB, &q, *at, sink, &mut Vec::new());
                seq += 1;
                pid += 1;
            }
        };
        frames(&mut room, &mut sink, 40, &mut at);
        let screen = |room: &MediaRoom| {
            let t = room
                .tracks
                .iter()
                .find(|t| t.info.source == TrackSource::Screen)
                .expect("screen");
            let leg = t.legs.iter().find(|l| l.subscriber == B).expect("B's leg");
            (leg.rewrite.ssrc, leg.rewrite.temporal_cap())
        };
        let (leg_ssrc, cap) = screen(&room);
        assert_eq!(cap, (temporal::ALL, temporal::ALL), "no cap while the path has room");
        let b_screen = |sink: &Recorder| -> Vec<(u16, u16, u8, u8)> {
            sink.written
                .iter()
                .filter(|(c, _, p)| *c == B_SUB && p.header.ssrc == leg_ssrc)
                .map(|(_, _, p)| {
                    let d = crate::sfu::vp8::Descriptor::parse(&p.payload).expect("descriptor");
                    let tid = Temporal::parse(&p.payload).expect("tid").tid;
                    (
                        p.header.sequence_number,
                        d.picture_id.expect("pid").0,
                        d.tl0.expect("tl0").0,
                        tid,
                    )
                })
                .collect()
        };
        assert_eq!(b_screen(&sink).len(), 40, "every frame");
        estimate(&mut room, B_SUB, Some(800_000));
        room.fit_legs(B_SUB, Verdict::Down, at);
        let camera = room
            .tracks
            .iter()
            .find(|t| t.info.source == TrackSource::Camera)
            .expect("camera");
        let camera_leg = camera.legs.iter().find(|l| l.subscriber == B).expect("leg");
        assert_eq!(camera_leg.layer.cap(), Target(0), "the camera steps down to q");
        assert_eq!(screen(&room).1.0, 0, "the screen's base layer");
        // Ten more frames: B gets the five base-layer frames, right after what it had.
        sink.written.clear();
        frames(&mut room, &mut sink, 10, &mut at);
        let got = b_screen(&sink);
        assert_eq!(
            got,
            (0..5u16)
                .map(|i| (40 + i, 40 + i, (40 + 2 * i) as u8 / 2, 0))
                .collect::<Vec<_>>(),
            "seq and picture id without a gap, TL0PICIDX as sent"
        );
        assert!(
            sink.written
                .iter()
                .all(|(_, _, p)| p.header.ssrc != leg_ssrc || p.payload.len() == 7500),
            "full-size (full-resolution) frames only"
        );
        assert_eq!(room.stats().meeting.snapshot().temporal_drops, 5);
        // B is told its screen share is reduced (its tile says so), the one layer it has.
        let screen_id = track_id(&room, TrackSource::Screen).as_str().to_owned();
        let mut told = Vec::new();
        room.evaluate_quality(at, &mut told);
        assert!(
            video_layers(&told).contains(&(B.to_owned(), screen_id.clone(), 0, 1, true)),
            "{:?}",
            video_layers(&told)
        );
        // A NACK for the third of them: resent as first sent.
        sink.written.clear();
        room.nack_received(B_SUB, leg_ssrc, [42], at, &mut sink, &mut fx);
        assert_eq!(b_screen(&sink), [(42, 42, 22, 0)]);
        // Room again: the screen share tries its upper layer first (the camera waits); B's
        // leg takes it from the next TL1 frame with Y (pid 53), still without a gap.
        estimate(&mut room, B_SUB, Some(2_300_000));
        room.fit_legs(B_SUB, Verdict::Up, at);
        assert_eq!(screen(&room).1, (temporal::ALL, 0), "asked for, not yet in force");
        assert_eq!(
            room.tracks
                .iter()
                .find(|t| t.info.source == TrackSource::Camera)
                .expect("camera")
                .legs[0]
                .layer
                .cap(),
            Target(0)
        );
        sink.written.clear();
        frames(&mut room, &mut sink, 6, &mut at);
        let got: Vec<(u16, u16)> = b_screen(&sink).iter().map(|g| (g.0, g.1)).collect();
        // pids 50 (TL0), 51 (TL1, no Y: dropped), 52, 53 (Y: up), 54, 55.
        assert_eq!(got, [(45, 45), (46, 46), (47, 47), (48, 48), (49, 49)]);
        assert_eq!(
            screen(&room).1,
            (temporal::ALL, 1),
            "in force: up to TL1, the top of two"
        );
        // Once the try is kept (no overuse for its time), no longer reduced.
        room.bwe.iter_mut().for_each(|(_, b)| b.trial = None);
        room.quality_due = None;
        let mut told = Vec::new();
        room.evaluate_quality(at, &mut told);
        assert!(
            video_layers(&told).contains(&(B.to_owned(), screen_id, 0, 1, false)),
            "{:?}",
            video_layers(&told)
        );
    }

    /// Issue 12: B's leg of a three-layer camera capped to the lowest layer by its bandwidth
    /// estimate is video reduced at once and poor soon after; a staff member entering
    /// afterwards is told at its first evaluation; the cap lifted, B is back to excellent.
    #[test]
    fn a_leg_capped_to_the_smallest_layer_is_video_reduced_and_poor_and_late_staff_hear_it() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let mut sink = Recorder::default();
        let mut fx = Vec::new();
        let mut seq = 0u16;
        let mut second = |room: &mut MediaRoom, s: u64| {
            let at = t0 + Duration::from_secs(s);
            for i in 0..10u64 {
                seq = seq.wrapping_add(1);
                for ssrc in [1000, 1001, 1002] {
                    let p = vp8(ssrc, seq, u32::from(seq) * 9000, i == 0);
                    room.forward(A_PUB, &p, at + Duration::from_millis(100 * i), &mut sink, &mut fx);
                }
            }
            let now = at + Duration::from_secs(1);
            room.subscriber_heard(B_SUB, now, &mut fx);
            fx.clear();
            room.evaluate_quality(now, &mut fx);
            qualities(&fx)
        };
        assert_eq!(second(&mut room, 0), [], "uncapped: nothing to say");
        let track = room
            .tracks
            .iter_mut()
            .find(|t| t.info.kind == TrackKind::Video)
            .expect("camera");
        let leg = track.legs.iter_mut().find(|l| l.subscriber == B).expect("B's leg");
        leg.layer.set_cap(Target::LOW);
        let said: Vec<_> = (1..4).flat_map(|s| second(&mut room, s)).collect();
        let about_b: Vec<_> = said.iter().filter(|q| q.0 == B).collect();
        assert_eq!(
            about_b.first(),
            Some(&&(B.to_owned(), B.to_owned(), ConnectionQuality::Good, true)),
            "reduced at the first evaluation: {said:?}"
        );
        assert!(
            said.iter().any(|q| q.0 == B && q.2 == ConnectionQuality::Poor && q.3),
            "poor within three evaluations: {said:?}"
        );
        assert!(
            said.iter().any(|q| q.0 == A && q.1 == B),
            "staff A hears of B: {said:?}"
        );
        // Staff C enters: its first evaluation tells it B's state.
        room.add_participant(
            C,
            ParticipantKind::Staff,
            true,
            t0 + Duration::from_secs(4),
            &mut Vec::new(),
        );
        let told = second(&mut room, 4);
        assert!(
            told.contains(&(C.to_owned(), B.to_owned(), ConnectionQuality::Poor, true)),
            "{told:?}"
        );
        // The cap lifted: reduced no more, and excellent within a few seconds.
        let track = room
            .tracks
            .iter_mut()
            .find(|t| t.info.kind == TrackKind::Video)
            .expect("camera");
        let leg = track.legs.iter_mut().find(|l| l.subscriber == B).expect("B's leg");
        leg.layer.set_cap(Target::HIGH);
        let said: Vec<_> = (5..12).flat_map(|s| second(&mut room, s)).collect();
        assert_eq!(
            said.iter().rfind(|q| q.0 == B),
            Some(&(B.to_owned(), B.to_owned(), ConnectionQuality::Excellent, false)),
            "{said:?}"
        );
    }

    /// Issue 12: a leg trying the next layer up (the bandwidth estimate's `Trial`) still
    /// counts as on the layer below until the try is kept: a try is no recovery to announce.
    #[test]
    fn a_leg_trying_the_next_layer_still_counts_as_reduced() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        for ssrc in [1000, 1001, 1002] {
            room.forward(A_PUB, &vp8(ssrc, 1, 9000, true), t0, &mut sink, &mut fx);
        }
        let b = room.members.iter().position(|m| m.id == B).expect("B");
        fn leg(room: &mut MediaRoom) -> &mut Leg {
            room.tracks
                .iter_mut()
                .find(|t| t.info.kind == TrackKind::Video)
                .and_then(|t| t.legs.iter_mut().find(|l| l.subscriber == B))
                .expect("B's leg")
        }
        leg(&mut room).layer.set_cap(Target::MEDIUM);
        let id = leg(&mut room).id;
        let sample = room.quality_sample(b, t0);
        assert_eq!((sample.layers_missed, sample.smallest_layer), (1, false), "capped to h");
        // Trying h from q: still on q as far as quality goes.
        room.bwe.push((
            B_SUB,
            Bwe {
                trial: Some(bwe::Trial { leg: id, since: t0 }),
                ..Bwe::default()
            },
        ));
        let sample = room.quality_sample(b, t0);
        assert_eq!((sample.layers_missed, sample.smallest_layer), (2, true), "trying h");
        // Trying f from h: one below the wish.
        leg(&mut room).layer.set_cap(Target::HIGH);
        let sample = room.quality_sample(b, t0);
        assert_eq!((sample.layers_missed, sample.smallest_layer), (1, false), "trying f");
        // The try kept: nothing missed.
        room.bwe[0].1.trial = None;
        let sample = room.quality_sample(b, t0);
        assert_eq!((sample.layers_missed, sample.smallest_layer), (0, false), "on f");
    }

    /// The `video_layer` frames of `effects`: (to, track, layer, layers, reduced).
    fn video_layers(effects: &[Effect]) -> Vec<(String, String, u8, u8, bool)> {
        signals(effects)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ServerMessage::VideoLayer {
                    track_id,
                    layer,
                    layers,
                    reduced,
                } => Some((
                    to.as_str().to_owned(),
                    track_id.as_str().to_owned(),
                    layer,
                    layers,
                    reduced,
                )),
                _ => None,
            })
            .collect()
    }

    /// Issue 12: a subscriber is told which layer of a video track it receives, when that
    /// settles on a new one: at first its wish (the top layer); capped by its bandwidth
    /// estimate, once the lower layer's keyframe switched it (reduced); not while it tries the
    /// next layer up, then once the try is kept; not reduced once it asks for no more; again
    /// on a new subscriber connection; never for a paused track.
    #[test]
    fn a_subscriber_is_told_the_layer_it_receives_when_it_settles() {
        let t0 = Instant::now();
        let (mut room, _) = call_with(false, &layers(), t0);
        let camera = track_id(&room, TrackSource::Camera);
        let cam = camera.as_str().to_owned();
        fn leg(room: &mut MediaRoom) -> &mut Leg {
            room.tracks
                .iter_mut()
                .find(|t| t.info.kind == TrackKind::Video)
                .and_then(|t| t.legs.iter_mut().find(|l| l.subscriber == B))
                .expect("B's leg")
        }
        let mut sink = Recorder::default();
        let mut seq = 1u16;
        // At second `s`, a packet of each layer (keyframes of `keys`), then B's leg capped to
        // `cap` if given, then an evaluation.
        let mut second = |room: &mut MediaRoom, s: u64, keys: [bool; 3], cap: Option<Target>| {
            let at = t0 + Duration::from_secs(s);
            let mut fx = Vec::new();
            seq += 1;
            for (i, ssrc) in [1000, 1001, 1002].into_iter().enumerate() {
                room.forward(
                    A_PUB,
                    &vp8(ssrc, seq, u32::from(seq) * 3000, keys[i]),
                    at,
                    &mut sink,
                    &mut fx,
                );
            }
            if let Some(cap) = cap {
                leg(room).layer.set_cap(cap);
            }
            fx.clear();
            room.evaluate_quality(at, &mut fx);
            video_layers(&fx)
        };
        let told = |layer, reduced| vec![(B.to_owned(), cam.clone(), layer, 3, reduced)];
        assert_eq!(
            second(&mut room, 0, [true; 3], None),
            told(2, false),
            "the top layer, as asked"
        );
        assert_eq!(
            second(&mut room, 1, [false; 3], None),
            vec![],
            "no change, nothing said"
        );
        let low = Some(Target::LOW);
        assert_eq!(
            second(&mut room, 2, [false; 3], low),
            vec![],
            "capped, no packet since: still on f"
        );
        assert_eq!(
            second(&mut room, 3, [false; 3], None),
            vec![],
            "still on f until q's keyframe"
        );
        assert_eq!(
            second(&mut room, 4, [true, false, false], None),
            told(0, true),
            "on q, reduced"
        );
        // Trying h: nothing said until the try is kept.
        let id = leg(&mut room).id;
        room.bwe.push((
            B_SUB,
            Bwe {
                trial: Some(bwe::Trial { leg: id, since: t0 }),
                ..Bwe::default()
            },
        ));
        let medium = Some(Target::MEDIUM);
        assert_eq!(second(&mut room, 5, [false; 3], medium), vec![], "trying h");
        assert_eq!(
            second(&mut room, 6, [false, true, false], None),
            vec![],
            "on h, still trying"
        );
        room.bwe[0].1.trial = None;
        assert_eq!(
            second(&mut room, 7, [false; 3], None),
            told(1, true),
            "h kept, still below the wish"
        );
        // B asks for h only: what it gets is what it asked for.
        let mut fx = Vec::new();
        room.set_subscription(B, &camera, false, Some(Quality::Medium), t0, &mut fx)
            .expect("B receives it");
        assert_eq!(second(&mut room, 8, [false; 3], None), told(1, false), "h as asked");
        // A new subscriber connection is told again.
        let (_, sender) = leg(&mut room).bound.expect("bound");
        room.leg_bound(id, B_SUB, sender);
        assert_eq!(
            second(&mut room, 9, [false; 3], None),
            told(1, false),
            "told the new connection"
        );
        // Down to q and the cap lifted again within one evaluation: on its way back to h, nothing said.
        leg(&mut room).layer.set_cap(Target::LOW);
        assert_eq!(
            second(&mut room, 10, [true, false, false], medium),
            vec![],
            "q, on its way back"
        );
        assert_eq!(second(&mut room, 11, [false, true, false], None), vec![], "h again");
        // Paused: nothing, even when the cap changes.
        room.set_subscription(B, &camera, true, None, t0, &mut fx)
            .expect("B receives it");
        assert_eq!(second(&mut room, 12, [true; 3], low), vec![], "paused");
    }

    /// Issue 12: B's receiver reports saying half of what it gets is lost make it poor (the
    /// report names the leg by its SSRC; a report about no leg of it is ignored); A whose
    /// camera stops arriving with nothing else expected of it is lost after 4 s, at once,
    /// and back with its first packets.
    #[test]
    fn receiver_reports_and_silence_feed_the_quality() {
        let t0 = Instant::now();
        let (mut room, _) = call(false, t0);
        let mut seq = 0u16;
        second_of_camera(&mut room, &mut seq, false, t0);
        let leg_ssrc = room
            .tracks
            .iter()
            .flat_map(|t| t.legs.iter())
            .find(|l| l.subscriber == B && l.bound.is_some())
            .map(|l| l.rewrite.ssrc)
            .expect("B's leg");
        // Nonsense first: an SSRC B does not receive, and A's publisher connection.
        room.reception_report(B_SUB, 0xdead, 255, 0, None);
        room.reception_report(A_PUB, leg_ssrc, 255, 0, None);
        assert_eq!(
            second_of_camera(&mut room, &mut seq, false, t0 + Duration::from_secs(1)),
            []
        );
        let mut said = Vec::new();
        for s in 2..5u64 {
            room.reception_report(B_SUB, leg_ssrc, 128, 90 * 5, Some(Duration::from_millis(40)));
            said.extend(second_of_camera(
                &mut room,
                &mut seq,
                false,
                t0 + Duration::from_secs(s),
            ));
        }
        assert!(
            said.iter()
                .any(|q| q.0 == B && q.1 == B && q.2 == ConnectionQuality::Poor),
            "{said:?}"
        );
        // A's camera stops (B's subscriber stays heard, but it receives no video any more).
        let quiet = t0 + Duration::from_secs(5);
        let mut fx = Vec::new();
        let mut lost_at = None;
        for s in 1..=6u64 {
            let now = quiet + Duration::from_secs(s);
            room.subscriber_heard(B_SUB, now, &mut fx);
            fx.clear();
            room.evaluate_quality(now, &mut fx);
            if qualities(&fx)
                .iter()
                .any(|q| q.0 == A && q.1 == A && q.2 == ConnectionQuality::Lost)
            {
                lost_at = Some(s);
                break;
            }
        }
        assert_eq!(lost_at, Some(4), "lost 4 s after its last packet");
        let back = second_of_camera(&mut room, &mut seq, false, quiet + Duration::from_secs(7));
        assert!(
            back.iter()
                .any(|q| q.0 == A && q.1 == A && q.2 != ConnectionQuality::Lost),
            "{back:?}"
        );
    }

    // ---- mirrors (a meeting across shards) ----

    const D: &str = "p_d";
    const D_SUB: ConnId = 41;
    /// The stand-in connection of what shard 0 relays (`relay::mirror_conn(0)`).
    const FROM_0: ConnId = u64::MAX;

    /// The meeting's room on a second shard: D alone, subscribed to what `home` publishes,
    /// every leg negotiated.
    fn satellite(home: &MediaRoom, now: Instant) -> (MediaRoom, Vec<Effect>) {
        let mut sat = room();
        let mut fx = Vec::new();
        sat.add_participant(D, ParticipantKind::Guest, false, now, &mut fx);
        sat.set_connection(D, PeerRole::Subscriber, Some(D_SUB));
        sat.apply_mirror(0, FROM_0, &home.mirror_view(), now, &mut fx);
        bind_legs(&mut sat, &fx);
        let mut offers = Vec::new();
        sat.due_offers(&mut offers);
        let answer = answer_all(&sat, D);
        sat.subscriber_answered(D, &answer, false, now, &mut fx);
        for m in &mut sat.members {
            m.subscriber_up = true;
        }
        (sat, fx)
    }

    #[test]
    fn a_mirror_is_published_under_its_publishers_id_and_forwards_what_is_relayed() {
        let now = Instant::now();
        let (home, _) = call(false, now);
        let (mut sat, fx) = satellite(&home, now);
        let ids = |r: &MediaRoom| {
            let mut ids: Vec<TrackId> = r.tracks().into_iter().map(|t| t.track_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&sat), ids(&home), "the same ids on both shards");
        let told: Vec<TrackInfo> = signals(&fx)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ServerMessage::TrackPublished { track } if to == D => Some(track),
                _ => None,
            })
            .collect();
        assert_eq!(told.len(), 2, "D hears of both: {fx:?}");
        assert!(told.iter().all(|t| t.participant_id == A));
        assert!(sat.tracks().iter().all(|t| sat.is_mirror(&t.track_id)));
        assert!(
            home.mirror_view().tracks.len() == 2 && sat.mirror_view().tracks.is_empty(),
            "a mirror is not mirrored back"
        );
        assert_eq!(
            sat.stats().meeting.snapshot().tracks,
            0,
            "counted where it is published"
        );
        // Relayed packets reach D's legs, rewritten for D's side; a local connection's are not taken as the mirror's.
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        sat.forward(FROM_0, &packet(1000, 7, 96), now, &mut sink, &mut fx);
        sat.forward(FROM_0, &packet(2000, 8, 111), now, &mut sink, &mut fx);
        sat.forward(A_PUB, &packet(1000, 9, 96), now, &mut sink, &mut fx);
        let got: Vec<(ConnId, u8)> = sink
            .written
            .iter()
            .map(|(c, _, p)| (*c, p.header.payload_type))
            .collect();
        assert_eq!(got, [(D_SUB, 100), (D_SUB, 109)]);
        assert!(
            sink.written
                .iter()
                .all(|(_, _, p)| p.header.ssrc != 1000 && p.header.ssrc != 2000)
        );
    }

    #[test]
    fn a_mirror_follows_mutes_new_ssrcs_and_unpublishing_in_the_view() {
        let now = Instant::now();
        let (mut home, _) = call(false, now);
        let (mut sat, _) = satellite(&home, now);
        let camera = track_id(&home, TrackSource::Camera);
        let mic = track_id(&home, TrackSource::Microphone);
        let (mut sink, mut fx) = (Recorder::default(), Vec::new());
        for seq in 1..=3 {
            sat.forward(FROM_0, &packet(1000, seq, 96), now, &mut sink, &mut fx);
        }
        // The microphone muted at home: D hears it once.
        home.mute_track(A, &mic, true, &mut fx).unwrap();
        fx.clear();
        sat.apply_mirror(0, FROM_0, &home.mirror_view(), now, &mut fx);
        sat.apply_mirror(0, FROM_0, &home.mirror_view(), now, &mut fx);
        let muted: Vec<_> = signals(&fx)
            .into_iter()
            .filter(|(_, m)| matches!(m, ServerMessage::TrackMuted { muted: true, .. }))
            .collect();
        assert_eq!(muted.len(), 1, "{fx:?}");
        assert!(sat.tracks().iter().any(|t| t.track_id == mic && t.muted));
        // The camera's sender restarted with a new SSRC: D's numbers go on.
        let mut fx = Vec::new();
        home.stream_opened(A, stream("0", 5000, "video/VP8"), now, &mut fx);
        sat.apply_mirror(0, FROM_0, &home.mirror_view(), now, &mut fx);
        sat.forward(FROM_0, &packet(5000, 900, 96), now, &mut sink, &mut fx);
        let seqs: Vec<u16> = sink.written.iter().map(|(_, _, p)| p.header.sequence_number).collect();
        assert_eq!(seqs.len(), 4);
        assert_eq!(
            seqs[3],
            seqs[2].wrapping_add(1),
            "contiguous over the restart: {seqs:?}"
        );
        // The microphone unpublished at home: gone here too, its sender removed.
        fx.clear();
        home.declare(A, vec![announce("0", TrackSource::Camera)], now, &mut fx);
        fx.clear();
        sat.apply_mirror(0, FROM_0, &home.mirror_view(), now, &mut fx);
        assert!(signals(&fx).iter().any(
            |(to, m)| to == D && matches!(m, ServerMessage::TrackUnpublished { track_id, .. } if *track_id == mic)
        ));
        assert_eq!(
            fx.iter().filter(|e| matches!(e, Effect::RemoveSender { .. })).count(),
            1
        );
        // Another shard's view cannot touch this source's mirrors; forgetting the source unpublishes all.
        fx.clear();
        sat.apply_mirror(1, u64::MAX - 1, &MirrorView::default(), now, &mut fx);
        assert_eq!(sat.tracks().len(), 1, "{fx:?}");
        sat.forget_mirror(0, now, &mut fx);
        assert!(sat.tracks().is_empty());
        assert!(
            signals(&fx)
                .iter()
                .any(|(_, m)| matches!(m, ServerMessage::TrackUnpublished { track_id, .. } if *track_id == camera))
        );
        assert!(!sat.is_empty(), "D is still in the call");
    }

    #[test]
    fn a_mirrors_keyframe_requests_go_to_its_shard_and_are_throttled_at_the_publisher() {
        let now = Instant::now();
        let (mut home, _) = call(false, now);
        let (mut sat, _) = satellite(&home, now);
        let d_ssrc = sat.tracks[0].legs[0].rewrite.ssrc;
        let mut fx = Vec::new();
        sat.keyframe_requested(D_SUB, d_ssrc, now, &mut fx);
        let asked: Vec<(ConnId, u32)> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::RequestKeyframe { conn, ssrc, .. } => Some((*conn, *ssrc)),
                _ => None,
            })
            .collect();
        assert_eq!(
            asked,
            [(FROM_0, 1000)],
            "asked of the mirror's stand-in, for the publisher's SSRC"
        );
        // At home: asked of A, once per interval whichever shard asks.
        fx.clear();
        home.relay_keyframe(1000, now, &mut fx);
        home.relay_keyframe(1000, now, &mut fx);
        home.relay_keyframe(2000, now, &mut fx);
        home.relay_keyframe(4242, now, &mut fx);
        assert_eq!(keyframes_of(&fx), [1000], "{fx:?}");
        assert!(
            fx.iter()
                .all(|e| matches!(e, Effect::RequestKeyframe { conn: A_PUB, .. }))
        );
    }

    #[test]
    fn a_mirrors_layer_wish_is_reported_and_counted_by_the_publishers_dynacast() {
        let t0 = Instant::now();
        let (mut home, _) = call_with(false, &layers(), t0);
        let (mut sat, _) = satellite(&home, t0);
        let camera = track_id(&home, TrackSource::Camera);
        let tick = Duration::from_millis(100);
        // The satellite reports D's wish (the best, by default) once, and again when it changes.
        let needs = |fx: &[Effect]| -> Vec<(usize, Option<u8>)> {
            fx.iter()
                .filter_map(|e| match e {
                    Effect::RelayNeed { source, needed, .. } => Some((*source, *needed)),
                    _ => None,
                })
                .collect()
        };
        let mut fx = Vec::new();
        sat.evaluate_layers(t0, &mut fx);
        sat.evaluate_layers(t0 + tick, &mut fx);
        assert_eq!(needs(&fx), [(0, Some(2))]);
        assert!(
            layers_told(&fx).is_empty(),
            "a mirror's publisher is not told from here"
        );
        fx.clear();
        sat.set_subscription(D, &camera, true, None, t0, &mut fx).unwrap();
        fx.clear();
        sat.evaluate_layers(t0 + tick * 2, &mut fx);
        assert_eq!(needs(&fx), [(0, None)]);
        // At home B wants only the low layer; D's wish (the best) keeps f and h sending.
        home.remote_need(1, &camera, Some(2));
        b_wants_camera(&mut home, Quality::Low, t0, &mut fx);
        fx.clear();
        for i in 0..=(dynacast::HOLD.as_millis() / 100 + 1) as u32 {
            home.evaluate_layers(t0 + tick * i, &mut fx);
        }
        assert!(layers_told(&fx).is_empty(), "{fx:?}");
        // D pauses: only B's wish is left, and f and h are paused after the hold.
        home.remote_need(1, &camera, None);
        let at = t0 + dynacast::HOLD * 2;
        home.evaluate_layers(at, &mut fx);
        home.evaluate_layers(at + dynacast::HOLD, &mut fx);
        assert_eq!(layers_told(&fx), [told([true, false, false])]);
        // The shard leaving forgets its wish with it.
        home.remote_need(1, &camera, Some(2));
        home.forget_mirror(1, at, &mut fx);
        assert!(home.tracks.iter().all(|t| t.remote_needs.is_empty()));
    }

    /// Staff member E on this room's shard, beside guest D.
    const E: &str = "p_e";

    /// A room on a second shard with guest D and staff member E in the call.
    fn guest_and_staff(now: Instant) -> (MediaRoom, Vec<Effect>) {
        let mut sat = room();
        let mut fx = Vec::new();
        sat.add_participant(D, ParticipantKind::Guest, false, now, &mut fx);
        sat.add_participant(E, ParticipantKind::Staff, true, now, &mut fx);
        (sat, fx)
    }

    #[test]
    fn staff_hear_the_quality_of_participants_on_other_shards() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let (mut sat, mut fx) = guest_and_staff(now);
        sat.evaluate_quality(now, &mut fx);
        let poor = quality::Verdict {
            quality: ConnectionQuality::Poor,
            video_reduced: true,
        };
        let view = |v: quality::Verdict| MirrorView {
            tracks: Vec::new(),
            quality: vec![(A.into(), v), (B.into(), quality::Verdict::ASSUMED)],
        };
        fx.clear();
        sat.apply_mirror(0, FROM_0, &view(poor), now, &mut fx);
        sat.apply_mirror(0, FROM_0, &view(poor), now, &mut fx);
        assert!(qualities(&fx).is_empty(), "told at the next evaluation");
        sat.evaluate_quality(now + second, &mut fx);
        sat.evaluate_quality(now + second * 2, &mut fx);
        assert_eq!(
            qualities(&fx),
            [(E.to_owned(), A.to_owned(), ConnectionQuality::Poor, true)],
            "staff only, once, and nothing of the assumed state"
        );
        // Staff entering later hear it with everything else they should know.
        const F: &str = "p_f";
        sat.add_participant(F, ParticipantKind::Staff, true, now, &mut fx);
        fx.clear();
        sat.evaluate_quality(now + second * 3, &mut fx);
        assert_eq!(
            qualities(&fx),
            [(F.to_owned(), A.to_owned(), ConnectionQuality::Poor, true)]
        );
        // Back to normal: told; the shard leaving takes its verdicts with it.
        fx.clear();
        sat.apply_mirror(0, FROM_0, &view(quality::Verdict::ASSUMED), now, &mut fx);
        sat.evaluate_quality(now + second * 4, &mut fx);
        assert_eq!(qualities(&fx).len(), 2, "E and F hear A is fine again: {fx:?}");
        sat.apply_mirror(0, FROM_0, &view(poor), now, &mut fx);
        sat.forget_mirror(0, now, &mut fx);
        assert!(sat.remote_quality.is_empty());
    }

    /// Staff entering a large meeting where many connections are poor (here, on another
    /// shard) hear of them a bounded number per evaluation, oldest change first, so their
    /// signaling outbox never fills; a guest hears only of itself.
    #[test]
    fn quality_news_is_paced_per_evaluation() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let (mut sat, mut fx) = guest_and_staff(now);
        let lost = quality::Verdict {
            quality: ConnectionQuality::Lost,
            video_reduced: false,
        };
        let many = QUALITY_NEWS_PER_EVALUATION + 36;
        let view = MirrorView {
            tracks: Vec::new(),
            quality: (0..many).map(|i| (format!("p_{i:03}").into(), lost)).collect(),
        };
        sat.apply_mirror(0, FROM_0, &view, now, &mut fx);
        fx.clear();
        sat.evaluate_quality(now, &mut fx);
        let first = qualities(&fx);
        assert_eq!(first.len(), QUALITY_NEWS_PER_EVALUATION);
        assert!(
            first
                .iter()
                .all(|(to, _, q, _)| to == E && *q == ConnectionQuality::Lost)
        );
        assert_eq!(first[0].1, "p_000", "oldest change first");
        fx.clear();
        sat.evaluate_quality(now + second, &mut fx);
        let rest = qualities(&fx);
        assert_eq!(rest.len(), 36);
        let mut all: Vec<String> = first.into_iter().chain(rest).map(|(_, about, _, _)| about).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), many, "each once");
        fx.clear();
        sat.evaluate_quality(now + second * 2, &mut fx);
        assert!(qualities(&fx).is_empty(), "nothing more to tell");
    }

    #[test]
    fn a_mirrors_remb_shares_count_in_the_publishers_limit() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(100);
        let (mut home, _) = call_with(false, &[stream("0", 1000, "video/VP8")], t0);
        let (mut sat, _) = satellite(&home, t0);
        let camera = track_id(&home, TrackSource::Camera);
        let shares_told = |fx: &[Effect]| -> Vec<(usize, TrackId, Vec<Option<u64>>)> {
            fx.iter()
                .filter_map(|e| match e {
                    Effect::RelayShares {
                        source,
                        track_id,
                        shares,
                    } => Some((*source, track_id.clone(), shares.clone())),
                    _ => None,
                })
                .collect()
        };
        let mut fx = Vec::new();
        sat.evaluate_publisher_limits(t0, &mut fx);
        assert_eq!(shares_told(&fx), [], "nobody's path is short: nothing to tell");
        // D's path (on the second shard) carries 300 kbit/s: its share goes to shard 0, once.
        estimate(&mut sat, D_SUB, Some(300_000));
        sat.evaluate_publisher_limits(t0 + tick, &mut fx);
        sat.evaluate_publisher_limits(t0 + tick * 2, &mut fx);
        let told = shares_told(&fx);
        assert_eq!(told, [(0, camera.clone(), vec![Some(300_000)])]);
        assert_eq!(limits_told(&fx), [], "a mirror's publisher is limited where it is");
        // The publisher's room limits A by it, though its own subscriber's path is fine.
        fx.clear();
        home.remote_shares(1, &camera, told[0].2.clone());
        home.evaluate_publisher_limits(t0 + tick, &mut fx);
        assert_eq!(limits_told(&fx), [(A_PUB, 1000, 300_000)]);
        // D's path is fine again: told as no shares at all, and A is free.
        estimate(&mut sat, D_SUB, None);
        fx.clear();
        sat.evaluate_publisher_limits(t0 + tick * 3, &mut fx);
        let told = shares_told(&fx);
        assert_eq!(told, [(0, camera.clone(), vec![])]);
        home.remote_shares(1, &camera, vec![]);
        fx.clear();
        home.evaluate_publisher_limits(t0 + tick * 4, &mut fx);
        assert_eq!(limits_told(&fx), [(A_PUB, 1000, remb::LIFTED_BPS)]);
        // A shard leaving takes its shares with it.
        home.remote_shares(1, &camera, vec![Some(200_000)]);
        home.forget_mirror(1, t0, &mut fx);
        assert!(home.tracks.iter().all(|t| t.remote_shares.is_empty()));
    }
}
