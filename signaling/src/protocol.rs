//! The signaling wire protocol, defined once.
//!
//! Every frame on the signaling WebSocket is a JSON object with a `type` field
//! naming one variant of [`ClientMessage`] (client to server) or
//! [`ServerMessage`] (server to client). `docs/PROTOCOL.md` documents each with
//! an example; `protocol_md_is_in_step` below parses every example there and checks
//! that every message type has one.

use serde::{Deserialize, Serialize};

use crate::appointment::{AppointmentView, Transition};
use crate::error::ErrorCode;

/// The protocol version this crate speaks. A client names it in `join`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest text frame the server reads, in bytes. SDP with many tracks
/// stays well under this.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Declares an opaque string id: its own type (a participant id is never passed
/// where a track id belongs), a plain string on the wire, and usable as a `&str`.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id (no check: ids are opaque).
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

string_id! {
    /// Opaque participant id, unique per meeting attendance (`p_...`).
    ParticipantId
}
string_id! {
    /// Opaque meeting id (`m_...`).
    MeetingId
}
string_id! {
    /// Opaque track id, unique per published track (`t_...`).
    TrackId
}

/// Whether a participant is a member of staff or an external guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    Staff,
    Guest,
}

/// What everyone in a call learns about another participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub kind: ParticipantKind,
    /// True for the meeting's organiser.
    #[serde(default)]
    pub organizer: bool,
}

/// One guest (or staff member) waiting in the lobby, as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyEntry {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub kind: ParticipantKind,
    /// Whether the person holds a private invitation (guests) or is on the invite list (staff).
    pub invited: bool,
    /// When they started waiting, Unix milliseconds (server clock).
    pub waiting_since_ms: u64,
}

/// Why a participant waits in the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LobbyStatus {
    /// Staff are in the meeting and can let the participant in.
    WaitingForAdmission,
    /// No staff member is in the meeting yet.
    WaitingForHost,
}

/// Why a participant left the call or the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The participant chose to leave.
    Left,
    /// The connection dropped.
    Disconnected,
    /// Staff denied entry from the lobby.
    Denied,
    /// The lobby timeout passed before anyone admitted them.
    LobbyTimeout,
    /// Staff removed them from the call.
    Removed,
    /// The meeting ended for everyone.
    MeetingEnded,
    /// The same identity joined again from another connection.
    Replaced,
}

/// Where media comes from; staff UIs lay out `screen` differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackSource {
    /// The kind of media a source produces.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone => TrackKind::Audio,
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
        }
    }
}

/// A published track, as its subscribers learn of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
}

/// One entry of `active_speakers`: a participant speaking, on which audio track, how loud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSpeaker {
    pub participant_id: ParticipantId,
    /// The audio track the speech is on (a participant may publish more than one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<TrackId>,
    /// Smoothed loudness, linear from 0 (silence) to 1 (full scale), three decimals.
    pub level: f32,
}

/// How well a participant's media gets through, in `connection_quality` (docs/PROTOCOL.md §11.4):
/// from the loss, jitter and round-trip time of its links, the gap between the video it
/// wants and the video its downlink can take, and whether it is heard at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionQuality {
    /// Nothing heard from it for seconds while media should flow.
    Lost,
    /// Loss or delay a person notices, or video reduced to its smallest layer.
    Poor,
    /// Some loss or delay, or video one layer below what it asked for.
    Good,
    /// Nothing to notice.
    Excellent,
}

/// One simulcast layer of a published track in `publisher_layers`: its rid (as the
/// publisher's offer named it) and whether the publisher should send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherLayer {
    pub rid: String,
    pub active: bool,
}

/// How much of a video track a subscriber needs (`set_subscription.quality`). The
/// server forwards the publisher's simulcast layer that fits: `high` its best,
/// `medium` the middle one, `low` its smallest; a track sent without simulcast has
/// one layer, forwarded for any of them. `off` stops the track, as `paused` does.
/// A quality rather than a resolution: the server knows a publisher's layers only
/// by their order (rids), not their sizes, and a tile's size maps to these three
/// steps on the client, as in LiveKit's `VideoQuality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    High,
    Medium,
    Low,
    Off,
}

/// Which of a participant's two peer connections a message is about.
///
/// The client offers on `publisher` (its outgoing media); the server offers on
/// `subscriber` (everyone else's media). One offerer per connection means no glare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    Publisher,
    Subscriber,
}

/// The state of one of a participant's peer connections, as its client sees it
/// (the browser's `RTCPeerConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// The path media takes, read off the selected ICE candidate pair's local candidate:
/// `relay` for a TURN candidate, otherwise its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaPath {
    Udp,
    Tcp,
    Relay,
}

/// One peer connection's state and, once connected, its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionMedia {
    pub state: MediaConnectionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<MediaPath>,
}

impl ConnectionMedia {
    /// A connection not made yet.
    pub const NEW: ConnectionMedia = ConnectionMedia {
        state: MediaConnectionState::New,
        path: None,
    };
}

/// An ICE candidate, in the shape of the browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
}

/// A STUN or TURN server, in the shape of the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A track the client announces with its publisher offer: which `mid` in the
/// offer carries which source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrack {
    pub mid: String,
    pub source: TrackSource,
    #[serde(default)]
    pub muted: bool,
}

/// What the meeting looks like to someone joining it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingSummary {
    pub meeting_id: MeetingId,
    pub title: String,
    pub chat_enabled: bool,
    pub guests_may_present: bool,
}

/// A chat message as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Per-meeting sequence number, increasing.
    pub seq: u64,
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub text: String,
    /// Server receive time, Unix milliseconds.
    pub sent_at_ms: u64,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Must be the first frame. Guests' tokens name their meeting; staff name it here.
    Join {
        protocol: u32,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meeting_id: Option<MeetingId>,
    },
    /// Leave the lobby or the call. The server answers `left` and closes.
    Leave,
    /// Staff: let one lobby participant in.
    Admit { participant_id: ParticipantId },
    /// Staff: let everyone in the lobby in.
    AdmitAll,
    /// Staff: turn a lobby participant away, with a reason they will see.
    Deny {
        participant_id: ParticipantId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Staff: remove a participant from the call.
    Remove {
        participant_id: ParticipantId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Staff: end the meeting for everyone.
    EndMeeting,
    /// Send a chat message to everyone in the call.
    Chat { text: String },
    /// Keep-alive; answered with `pong`.
    Ping {
        #[serde(default)]
        nonce: u64,
    },
    /// Offer for the publisher connection, with the source of each sending `mid`.
    PublishOffer { sdp: String, tracks: Vec<PublishedTrack> },
    /// Answer to the server's `subscribe_offer`.
    SubscribeAnswer { sdp: String },
    /// A trickled ICE candidate for one of the two connections.
    IceCandidate { target: PeerRole, candidate: IceCandidate },
    /// Mute or unmute one of the client's own published tracks.
    MuteTrack { track_id: TrackId, muted: bool },
    /// Stop or resume receiving a track this client does not need, and say which
    /// quality of it it needs (PROTOCOL §11.3): `paused` (default false) stops it, as
    /// `quality: "off"` does; `quality` absent keeps the last one asked for.
    SetSubscription {
        track_id: TrackId,
        #[serde(default)]
        paused: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quality: Option<Quality>,
    },
    /// Ask for a fresh subscriber connection (new ICE credentials, new DTLS): the
    /// subscriber-side ICE restart. Answered with `ice_servers` (fresh TURN
    /// credentials), then a `subscribe_offer` marked `restart`.
    RestartIce,
    /// Ask for fresh ICE servers (TURN credentials expire): answered with
    /// `ice_servers`. A client sends it before restarting its publisher's ICE.
    RefreshIceServers,
    /// The client's view of its two connections, sent when either changes; relayed to
    /// the others in the call as `participant_media`.
    MediaStatus {
        publisher: ConnectionMedia,
        subscriber: ConnectionMedia,
    },
    /// Instead of `join`, as the first frame: staff subscribe to their live queue (today's
    /// appointments and every live meeting they may manage). Answered with
    /// `queue_snapshot`, then `queue_meeting` and `queue_appointment` on every change.
    /// `department_id`: one department's appointments (staff must be in it); default,
    /// staff their own, admins the organisation's. `tz`: the IANA zone whose day is "today".
    SubscribeQueue {
        protocol: u32,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        department_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tz: Option<String>,
    },
}

/// The client frames that belong to the media plane (the SFU) rather than to the
/// meeting: the one place that says which frames those are. The meeting routes them
/// to the SFU for participants in the call and refuses them for everyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaMessage {
    /// `publish_offer`.
    PublishOffer { sdp: String, tracks: Vec<PublishedTrack> },
    /// `subscribe_answer`.
    SubscribeAnswer { sdp: String },
    /// `ice_candidate`.
    IceCandidate { target: PeerRole, candidate: IceCandidate },
    /// `mute_track`.
    MuteTrack { track_id: TrackId, muted: bool },
    /// `set_subscription`.
    SetSubscription {
        track_id: TrackId,
        paused: bool,
        quality: Option<Quality>,
    },
    /// `restart_ice`.
    RestartIce,
}

impl ClientMessage {
    /// The media frame this is, or the frame back when it is the meeting's business.
    pub fn into_media(self) -> Result<MediaMessage, ClientMessage> {
        Ok(match self {
            ClientMessage::PublishOffer { sdp, tracks } => MediaMessage::PublishOffer { sdp, tracks },
            ClientMessage::SubscribeAnswer { sdp } => MediaMessage::SubscribeAnswer { sdp },
            ClientMessage::IceCandidate { target, candidate } => MediaMessage::IceCandidate { target, candidate },
            ClientMessage::MuteTrack { track_id, muted } => MediaMessage::MuteTrack { track_id, muted },
            ClientMessage::SetSubscription {
                track_id,
                paused,
                quality,
            } => MediaMessage::SetSubscription {
                track_id,
                paused,
                quality,
            },
            ClientMessage::RestartIce => MediaMessage::RestartIce,
            other => return Err(other),
        })
    }
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`: who you are and where you are (lobby or call).
    Joined {
        protocol: u32,
        you: ParticipantInfo,
        meeting: MeetingSummary,
    },
    /// You are (still) in the lobby.
    Lobby {
        status: LobbyStatus,
        /// How long you may wait before the lobby gives up, in seconds.
        timeout_secs: u64,
    },
    /// You are in the call: who else is there, their tracks, and the ICE servers to use.
    Admitted {
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
        ice_servers: Vec<IceServer>,
    },
    /// Staff only: the whole lobby, sent on every change.
    LobbyUpdate { entries: Vec<LobbyEntry> },
    /// Someone entered the call.
    ParticipantJoined { participant: ParticipantInfo },
    /// Someone left the call.
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    /// A chat message from someone in the call (your own included).
    Chat { message: ChatMessage },
    /// You are out of the meeting; the server closes the socket after this.
    Left {
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Answer to `ping`.
    Pong { nonce: u64 },
    /// Answer to `publish_offer`.
    PublishAnswer { sdp: String },
    /// Fresh ICE servers and TURN credentials for both connections (answer to
    /// `restart_ice` and `refresh_ice_servers`): apply them before restarting ICE.
    IceServers { ice_servers: Vec<IceServer> },
    /// The server's offer for the subscriber connection (initial or renegotiation).
    /// `restart`: the offer is for a fresh subscriber connection (after `restart_ice`):
    /// answer it on a new peer connection and close the old one.
    SubscribeOffer {
        sdp: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// A trickled server ICE candidate.
    IceCandidate { target: PeerRole, candidate: IceCandidate },
    /// A track is available to subscribe to (its media arrives on the subscriber connection).
    TrackPublished { track: TrackInfo },
    /// A track is gone.
    TrackUnpublished {
        track_id: TrackId,
        participant_id: ParticipantId,
    },
    /// A track was muted or unmuted by its owner.
    TrackMuted {
        track_id: TrackId,
        participant_id: ParticipantId,
        muted: bool,
    },
    /// Another participant's media connections, as their client reported them
    /// (`media_status`); also sent on entering the call for everyone who reported.
    ParticipantMedia {
        participant_id: ParticipantId,
        publisher: ConnectionMedia,
        subscriber: ConnectionMedia,
    },
    /// Who is speaking now, the dominant speaker first, then loudest first; empty when
    /// nobody is. Sent to everyone in the call when the speakers or the dominant one
    /// change (not for level changes alone), at most every 300 ms.
    ActiveSpeakers { speakers: Vec<ActiveSpeaker> },
    /// A participant's connection quality changed: sent to that participant and to staff in
    /// the call, a change for the worse at once, one for the better at least 2 s after the
    /// previous one about that participant. `video_reduced`: the video it receives is below
    /// what it asked for because its downlink cannot take more (audio is kept).
    ConnectionQuality {
        participant_id: ParticipantId,
        quality: ConnectionQuality,
        video_reduced: bool,
    },
    /// To a publisher of a simulcast track: which of its layers someone in the call
    /// needs. Send the `active` ones and pause the others (`RTCRtpEncodingParameters.active`);
    /// layers not listed stay as they are. Sent when the need changes: at once for a layer
    /// that becomes needed, after 3 s for one no longer needed; the lowest layer is always
    /// needed. Sent again when a paused layer still arrives 2 s later.
    PublisherLayers {
        track_id: TrackId,
        layers: Vec<PublisherLayer>,
    },
    /// To a subscriber: the layer of a video track it receives now, when that changes.
    /// `layer` is its rank among the publisher's `layers` (0 the smallest, `layers - 1` the
    /// best; a track without simulcast is layer 0 of 1), `reduced` whether its own downlink's
    /// bandwidth estimate holds it below the quality it asked for. A layer being tried counts
    /// once the try is kept; nothing is said for a paused track.
    VideoLayer {
        track_id: TrackId,
        layer: u8,
        layers: u8,
        reduced: bool,
    },
    /// Something the client sent was refused. The connection goes on unless a `left` follows.
    Error { code: ErrorCode, message: String },
    /// Answer to `subscribe_queue` (and again after the subscriber fell behind): every live
    /// meeting the staff member may manage with its lobby, and the day's appointments of
    /// the subscription's scope, by start.
    QueueSnapshot {
        now_ms: u64,
        from_ms: u64,
        to_ms: u64,
        meetings: Vec<QueuedMeeting>,
        appointments: Vec<AppointmentView>,
    },
    /// A live meeting of the queue changed (someone entered or left its lobby or call);
    /// `meeting` is `null` when nobody is in it any more.
    QueueMeeting {
        now_ms: u64,
        meeting_id: MeetingId,
        meeting: Option<QueuedMeeting>,
    },
    /// An appointment of the queue changed: its state (with the transitions that did it),
    /// or who is present.
    QueueAppointment {
        now_ms: u64,
        appointment: Box<AppointmentView>,
        transitions: Vec<Transition>,
    },
    /// To a guest waiting in an appointment's lobby: their place in the department's (or
    /// staff member's) queue and an estimated wait, sent when either changes.
    QueuePosition {
        position: u32,
        /// `null` until the department has enough completed appointments to estimate from.
        estimated_wait_secs: Option<u64>,
    },
}

/// One live meeting in the staff queue (`GET /api/v1/queue`, `queue_snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMeeting {
    pub meeting_id: String,
    pub title: String,
    /// Participants in the call now.
    pub in_call: usize,
    /// Who waits, oldest first.
    pub lobby: Vec<LobbyEntry>,
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// Why a text frame could not become a [`ClientMessage`].
pub fn parse_client_message(text: &str) -> Result<ClientMessage, crate::Error> {
    use crate::Error;
    if text.len() > MAX_FRAME_BYTES {
        return Err(Error::new(
            ErrorCode::FrameTooLarge,
            format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::new(ErrorCode::MalformedJson, format!("not JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(Error::new(
            ErrorCode::MalformedJson,
            "a frame must be an object with a string `type`",
        ));
    };
    if !CLIENT_TYPES.contains(&kind) {
        return Err(Error::new(
            ErrorCode::UnknownType,
            format!("unknown message type `{kind}`"),
        ));
    }
    let kind = kind.to_owned();
    serde_json::from_value(value)
        .map_err(|e| Error::new(ErrorCode::MalformedJson, format!("invalid `{kind}` message: {e}")))
}

/// Every `type` a client may send.
pub const CLIENT_TYPES: &[&str] = &[
    "join",
    "leave",
    "admit",
    "admit_all",
    "deny",
    "remove",
    "end_meeting",
    "chat",
    "ping",
    "publish_offer",
    "subscribe_answer",
    "ice_candidate",
    "mute_track",
    "set_subscription",
    "restart_ice",
    "refresh_ice_servers",
    "media_status",
    "subscribe_queue",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip_with_snake_case_tags() {
        let msg = ClientMessage::Deny {
            participant_id: "p_1".into(),
            reason: Some("wrong room".into()),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(json, r#"{"type":"deny","participant_id":"p_1","reason":"wrong room"}"#);
        assert_eq!(parse_client_message(&json).unwrap(), msg);
        assert_eq!(
            parse_client_message(r#"{"type":"admit_all"}"#).unwrap(),
            ClientMessage::AdmitAll
        );
    }

    #[test]
    fn set_subscription_takes_paused_or_a_quality_and_old_frames_parse_as_before() {
        let sub = |json: &str| match parse_client_message(json) {
            Ok(ClientMessage::SetSubscription { paused, quality, .. }) => (paused, quality),
            other => panic!("{json}: {other:?}"),
        };
        assert_eq!(
            sub(r#"{"type":"set_subscription","track_id":"t","paused":true}"#),
            (true, None)
        );
        assert_eq!(
            sub(r#"{"type":"set_subscription","track_id":"t","quality":"low"}"#),
            (false, Some(Quality::Low))
        );
        assert_eq!(
            sub(r#"{"type":"set_subscription","track_id":"t","paused":false,"quality":"off"}"#),
            (false, Some(Quality::Off))
        );
        assert!(parse_client_message(r#"{"type":"set_subscription","track_id":"t","quality":"ultra"}"#).is_err());
        // Without a quality the frame is what it always was.
        let old = ClientMessage::SetSubscription {
            track_id: "t".into(),
            paused: true,
            quality: None,
        };
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"type":"set_subscription","track_id":"t","paused":true}"#
        );
    }

    #[test]
    fn every_listed_type_parses_and_every_variant_is_listed() {
        let samples = [
            r#"{"type":"join","protocol":1,"token":"t"}"#,
            r#"{"type":"leave"}"#,
            r#"{"type":"admit","participant_id":"p"}"#,
            r#"{"type":"admit_all"}"#,
            r#"{"type":"deny","participant_id":"p"}"#,
            r#"{"type":"remove","participant_id":"p"}"#,
            r#"{"type":"end_meeting"}"#,
            r#"{"type":"chat","text":"hi"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"publish_offer","sdp":"v=0","tracks":[{"mid":"0","source":"camera"}]}"#,
            r#"{"type":"subscribe_answer","sdp":"v=0"}"#,
            r#"{"type":"ice_candidate","target":"publisher","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}"#,
            r#"{"type":"mute_track","track_id":"t","muted":true}"#,
            r#"{"type":"set_subscription","track_id":"t","paused":true}"#,
            r#"{"type":"restart_ice"}"#,
            r#"{"type":"refresh_ice_servers"}"#,
            r#"{"type":"media_status","publisher":{"state":"connected","path":"udp"},"subscriber":{"state":"failed"}}"#,
            r#"{"type":"subscribe_queue","protocol":1,"token":"t","department_id":"d_1","tz":"Europe/Berlin"}"#,
        ];
        assert_eq!(samples.len(), CLIENT_TYPES.len());
        for sample in samples {
            let msg = parse_client_message(sample).unwrap_or_else(|e| panic!("{sample}: {e}"));
            let again = serde_json::to_string(&msg).unwrap();
            assert_eq!(parse_client_message(&again).unwrap(), msg);
        }
    }

    /// Every JSON example in docs/PROTOCOL.md that has a `type` is a real frame of this
    /// crate, and every frame type, each way, has an example there.
    #[test]
    fn protocol_md_is_in_step() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let mut examples = Vec::new();
        for block in doc.split("```").skip(1).step_by(2) {
            let body = block.split_once('\n').map_or("", |(_, rest)| rest);
            match serde_json::from_str::<serde_json::Value>(body) {
                Ok(v) => examples.push((body.to_owned(), v)),
                // A block of one frame per line (or prose with some frames in it).
                Err(_) => examples.extend(body.lines().filter_map(|l| {
                    let l = l.trim();
                    serde_json::from_str(l).ok().map(|v| (l.to_owned(), v))
                })),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (text, value) in &examples {
            let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
                continue;
            };
            // Webhook event bodies (§15.5) are no signaling frames: their types are dotted
            // (`appointment.reminder`), which no frame type is.
            if kind.contains('.') {
                continue;
            }
            // `ice_candidate` goes both ways with the same shape.
            let client = CLIENT_TYPES.contains(&kind) && parse_client_message(text).is_ok();
            let server = serde_json::from_value::<ServerMessage>(value.clone());
            assert!(
                client || server.is_ok(),
                "PROTOCOL.md example is no frame: {text}: {server:?}"
            );
            if client {
                seen.insert(("client", kind.to_owned()));
            }
            if server.is_ok() {
                seen.insert(("server", kind.to_owned()));
            }
        }
        for kind in CLIENT_TYPES {
            assert!(
                seen.contains(&("client", kind.to_string())),
                "no example of client `{kind}`"
            );
        }
        // The server's types, read off the enum's variants in this very file.
        let source = include_str!("protocol.rs");
        let body = source.split("pub enum ServerMessage {").nth(1).unwrap();
        let body = &body[..body.find("\n}\n").unwrap()];
        let variants: Vec<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|l| {
                let name: String = l.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                let mut snake = String::new();
                for (i, c) in name.chars().enumerate() {
                    if c.is_ascii_uppercase() && i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                }
                snake
            })
            .collect();
        assert!(variants.len() >= 15, "{variants:?}");
        for kind in variants {
            assert!(
                seen.contains(&("server", kind.clone())),
                "no example of server `{kind}`"
            );
        }
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        assert_eq!(
            parse_client_message("{nope").unwrap_err().code,
            ErrorCode::MalformedJson
        );
        assert_eq!(
            parse_client_message("[1,2]").unwrap_err().code,
            ErrorCode::MalformedJson
        );
        assert_eq!(
            parse_client_message(r#"{"type":"fly"}"#).unwrap_err().code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse_client_message(r#"{"type":"chat"}"#).unwrap_err().code,
            ErrorCode::MalformedJson
        );
        assert_eq!(
            parse_client_message(r#"{"type":"chat","text":"x","admin":true}"#)
                .unwrap_err()
                .code,
            ErrorCode::MalformedJson
        );
        let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "a".repeat(MAX_FRAME_BYTES));
        assert_eq!(parse_client_message(&huge).unwrap_err().code, ErrorCode::FrameTooLarge);
    }

    #[test]
    fn media_status_round_trips_and_refuses_garbage() {
        let msg = ClientMessage::MediaStatus {
            publisher: ConnectionMedia {
                state: MediaConnectionState::Connected,
                path: Some(MediaPath::Relay),
            },
            subscriber: ConnectionMedia::NEW,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"type":"media_status","publisher":{"state":"connected","path":"relay"},"subscriber":{"state":"new"}}"#
        );
        assert_eq!(parse_client_message(&json).unwrap(), msg);
        for bad in [
            r#"{"type":"media_status","publisher":{"state":"great"},"subscriber":{"state":"new"}}"#,
            r#"{"type":"media_status","publisher":{"state":"connected","path":"carrier-pigeon"},"subscriber":{"state":"new"}}"#,
            r#"{"type":"media_status","publisher":{"state":"connected","rtt":3},"subscriber":{"state":"new"}}"#,
            r#"{"type":"media_status","publisher":{"state":"connected"}}"#,
            r#"{"type":"media_status","publisher":"connected","subscriber":"connected"}"#,
        ] {
            assert_eq!(
                parse_client_message(bad).unwrap_err().code,
                ErrorCode::MalformedJson,
                "{bad}"
            );
        }
        assert_eq!(
            parse_client_message(r#"{"type":"restart_ice"}"#).unwrap().into_media(),
            Ok(MediaMessage::RestartIce)
        );
    }

    #[test]
    fn participant_media_and_restart_offers_serialise_plainly() {
        let msg = ServerMessage::ParticipantMedia {
            participant_id: "p_1".into(),
            publisher: ConnectionMedia {
                state: MediaConnectionState::Failed,
                path: None,
            },
            subscriber: ConnectionMedia {
                state: MediaConnectionState::Connected,
                path: Some(MediaPath::Udp),
            },
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"type":"participant_media","participant_id":"p_1","publisher":{"state":"failed"},"subscriber":{"state":"connected","path":"udp"}}"#
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&json).unwrap(), msg);
        // `restart` is only on the wire when true; an old-style offer still parses.
        let plain = ServerMessage::SubscribeOffer {
            sdp: "v=0".into(),
            restart: false,
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"type":"subscribe_offer","sdp":"v=0"}"#
        );
        let restart: ServerMessage =
            serde_json::from_str(r#"{"type":"subscribe_offer","sdp":"v=0","restart":true}"#).unwrap();
        assert_eq!(
            restart,
            ServerMessage::SubscribeOffer {
                sdp: "v=0".into(),
                restart: true
            }
        );
    }

    #[test]
    fn server_errors_carry_code() {
        let json = serde_json::to_string(&ServerMessage::error(ErrorCode::NotInCall, "join the call first")).unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"not_in_call","message":"join the call first"}"#
        );
    }
}

/// Hostile input: mutated and random frames never panic and always get a typed error or a valid message.
#[cfg(test)]
mod robustness {
    use super::*;
    use rand::{Rng, SeedableRng};

    const SEEDS: &[&str] = &[
        r#"{"type":"join","protocol":1,"token":"t","meeting_id":"m"}"#,
        r#"{"type":"deny","participant_id":"p","reason":"r"}"#,
        r#"{"type":"publish_offer","sdp":"v=0","tracks":[{"mid":"0","source":"camera","muted":false}]}"#,
        r#"{"type":"ice_candidate","target":"subscriber","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#,
        r#"{"type":"chat","text":"héllo \u0000 \ud83d\ude00"}"#,
    ];

    #[test]
    fn mutated_frames_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a7e);
        let alphabet = br#"{}[]":,\ 0123456789abcdefghijklmnopqrstuvwxyz_-.eE+nulltruefalse"#;
        for round in 0..20_000 {
            let seed = SEEDS[round % SEEDS.len()].as_bytes();
            let mut bytes = seed.to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..bytes.len().max(1));
                match rng.random_range(0..4) {
                    0 if !bytes.is_empty() => {
                        bytes.remove(at.min(bytes.len() - 1));
                    }
                    1 => bytes.insert(at.min(bytes.len()), alphabet[rng.random_range(0..alphabet.len())]),
                    2 if !bytes.is_empty() => {
                        let last = bytes.len() - 1;
                        bytes[at.min(last)] = rng.random();
                    }
                    _ => bytes.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            match parse_client_message(&text) {
                Ok(msg) => {
                    // Whatever parses must survive a round trip unchanged.
                    let again = serde_json::to_string(&msg).expect("serialises");
                    assert_eq!(parse_client_message(&again).expect("reparses"), msg, "{text}");
                }
                Err(e) => assert!(
                    matches!(
                        e.code,
                        ErrorCode::MalformedJson | ErrorCode::UnknownType | ErrorCode::FrameTooLarge
                    ),
                    "{text}: {e:?}"
                ),
            }
        }
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_refused_cleanly() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse_client_message(&deep).unwrap_err().code, ErrorCode::MalformedJson);
        let big = r#"{"type":"ping","nonce":1e400}"#;
        assert_eq!(parse_client_message(big).unwrap_err().code, ErrorCode::MalformedJson);
        let negative = r#"{"type":"ping","nonce":-1}"#;
        assert_eq!(
            parse_client_message(negative).unwrap_err().code,
            ErrorCode::MalformedJson
        );
    }
}
