//! One participant in a call, as the media plane sees it: its two connections,
//! what it said it publishes, the tracks it receives, and the negotiation state
//! of its subscriber connection.
//!
//! The server is the only offerer on the subscriber connection and keeps at
//! most one offer outstanding there ([`Negotiation`]); changes that arrive
//! meanwhile are folded into one re-offer after the answer. No glare by design.

use gatehouse_signaling::protocol::{ParticipantKind, PeerRole, PublishedTrack, ServerMessage, TrackKind};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::RTCRtpSenderId;
use tokio::sync::mpsc;

use super::connection::ConnId;
use super::forward::DownLeg;

/// Offer/answer bookkeeping for the subscriber connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiation {
    /// An offer was sent and its answer has not arrived.
    pub outstanding: bool,
    /// Tracks changed since the last offer was made.
    pub wanted: bool,
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

/// A published track as one subscriber receives it.
#[derive(Debug)]
pub struct DownTrack {
    pub track_id: String,
    pub kind: TrackKind,
    /// The sender on the subscriber connection.
    pub sender: RTCRtpSenderId,
    /// Header rewriting for this leg; tables filled once the leg is negotiated.
    pub leg: DownLeg,
    /// The client has answered an offer containing this track (its tables are valid).
    pub negotiated: bool,
    /// Packets written to this leg (for the debug snapshot).
    pub forwarded: u64,
}

pub struct Participant {
    pub id: String,
    pub kind: ParticipantKind,
    pub may_present: bool,
    pub outbox: mpsc::UnboundedSender<ServerMessage>,
    pub publisher: Option<ConnId>,
    pub subscriber: Option<ConnId>,
    /// The client's declaration with its latest publisher offer: which mid carries what.
    pub announced: Vec<PublishedTrack>,
    /// Candidates that arrived before their connection had a remote description.
    pub pending_candidates: Vec<(PeerRole, RTCIceCandidateInit)>,
    pub negotiation: Negotiation,
    /// Everything this participant receives, one per published track of the others.
    pub down: Vec<DownTrack>,
}

impl Participant {
    pub fn new(
        id: String,
        kind: ParticipantKind,
        may_present: bool,
        outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> Self {
        Self {
            id,
            kind,
            may_present,
            outbox,
            publisher: None,
            subscriber: None,
            announced: Vec::new(),
            pending_candidates: Vec::new(),
            negotiation: Negotiation::default(),
            down: Vec::new(),
        }
    }

    /// Sends a message; a closed outbox means the socket is gone and the
    /// signaling layer will remove the participant shortly, so it is not an error here.
    pub fn send(&self, msg: ServerMessage) {
        let _ = self.outbox.send(msg);
    }

    pub fn conn(&self, role: PeerRole) -> Option<ConnId> {
        match role {
            PeerRole::Publisher => self.publisher,
            PeerRole::Subscriber => self.subscriber,
        }
    }

    pub fn down_mut(&mut self, track_id: &str) -> Option<&mut DownTrack> {
        self.down.iter_mut().find(|d| d.track_id == track_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_offer_at_a_time_and_changes_fold_into_one_reoffer() {
        let mut n = Negotiation::default();
        assert!(!n.start_offer(), "nothing to offer");
        n.want();
        assert!(n.start_offer());
        n.want();
        n.want();
        assert!(!n.start_offer(), "offer outstanding");
        assert!(n.answered());
        assert!(!n.answered(), "an answer without an offer is refused");
        assert!(n.start_offer(), "the changes made meanwhile");
        assert!(n.answered());
        assert!(!n.start_offer());
    }
}
