//! The media plane: an SFU that drives webrtc-rs's sans-IO core (`rtc`) from
//! one UDP port we own (see docs/ARCHITECTURE.md and the shared media-plane notes).
//!
//! INTERFACE STUB: the signatures below are the contract the signaling socket
//! (`server::ws`) is written against. The implementation fills them in.

use std::net::{IpAddr, SocketAddr};

use gatehouse_signaling::protocol::{
    ClientMessage, IceServer, ParticipantId, ParticipantKind, ServerMessage, TrackInfo,
};
use gatehouse_signaling::{Error, ErrorCode};
use tokio::sync::mpsc;

/// How the media plane binds and what it tells clients.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The one UDP address media uses, e.g. `0.0.0.0:3478` (tests: `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// The address advertised in our host candidate when behind 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// Extra STUN/TURN servers handed to clients on admission.
    pub ice_servers: Vec<IceServer>,
    /// Number of single-threaded shards (0 = one per core).
    pub shards: usize,
}

/// What the SFU needs to know about a participant entering the call.
#[derive(Debug, Clone)]
pub struct MediaParticipant {
    pub meeting_id: String,
    pub participant_id: ParticipantId,
    pub kind: ParticipantKind,
    /// Whether this participant may publish a `screen` track.
    pub may_present: bool,
}

/// Handle to the running media plane. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    _private: (),
}

impl Sfu {
    /// Binds the media socket(s) and starts the shard threads.
    pub fn start(_config: SfuConfig) -> anyhow::Result<Sfu> {
        Ok(Sfu { _private: () })
    }

    /// The bound media address (after resolving port 0).
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// ICE servers to hand to clients in `admitted`.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        Vec::new()
    }

    /// A participant entered the call. From now on the SFU sends it media
    /// messages (`subscribe_offer`, `publish_answer`, `ice_candidate`,
    /// `track_published`, ...) through `outbox`.
    pub async fn add_participant(
        &self,
        _participant: MediaParticipant,
        _outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// The tracks currently published in a meeting (for `admitted`).
    pub async fn tracks(&self, _meeting_id: &str) -> Vec<TrackInfo> {
        Vec::new()
    }

    /// A media message from a participant in the call: `publish_offer`,
    /// `subscribe_answer`, `ice_candidate`, `mute_track`, `set_subscription`.
    pub async fn handle(
        &self,
        _meeting_id: &str,
        _participant_id: &str,
        _message: ClientMessage,
    ) -> Result<(), Error> {
        Err(Error::new(
            ErrorCode::MediaStateError,
            "media is not available yet",
        ))
    }

    /// The participant left the call: close its connections, unpublish its tracks.
    pub async fn remove_participant(&self, _meeting_id: &str, _participant_id: &str) {}

    /// Live peer connections across all shards (tests check it returns to zero).
    pub fn live_connections(&self) -> usize {
        0
    }
}
