//! The signaling relay between nodes, its protocol (pure: no Redis, no tokio).
//!
//! A participant's WebSocket stays on the node it reached (the *edge*). When its meeting is
//! placed on another node (the *owner*), the edge opens a *relayed session*: it sends the
//! client's `join` and then every frame to the owner, which runs the session as if its
//! socket were local and sends every server frame back. Each node listens on one Redis
//! pub/sub channel (`gatehouse:relay:<node>`), and every message is an [`Envelope`]: who
//! sent it, the edge's connection id (with the edge's node id, the session's name), a
//! sequence number per direction, and a [`Body`].
//!
//! Pub/sub keeps one publisher's messages to one channel in order, and each direction of a
//! session has one publishing task, so a gap in the sequence means a message was lost (Redis
//! dropped a subscriber, or a queue overflowed): the session is then broken on both ends, as a
//! dropped socket is, which clients already survive (reconnect, held seat). [`EdgeSession`]
//! and [`OwnerSession`] are the two ends' state machines; the async shell (`relay_shell.rs`)
//! only moves envelopes and carries out their steps.

use gatehouse_signaling::protocol::{LobbyEntry, ServerMessage};
use gatehouse_signaling::room::LobbyAction;
use gatehouse_signaling::{Error, ErrorCode};
use serde::{Deserialize, Serialize};

/// Envelopes longer than this are not read (a frame is at most 1 MiB at the socket; a server
/// frame listing a large meeting's participants and tracks stays far below the rest).
pub const MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;

/// How long the edge waits for the owner's answer to a relayed `join`.
pub const JOIN_ANSWER_MS: u64 = 5000;

/// The pub/sub channel a node listens on.
pub fn channel(node_id: &str) -> String {
    format!("gatehouse:relay:{node_id}")
}

/// One relay message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that sent it.
    pub from: String,
    /// The socket's connection id on the edge: with the edge's node id, the session's name.
    pub conn: u64,
    /// Per session and direction, from 0: the receiver sees a loss as a gap.
    pub seq: u64,
    pub body: Body,
}

/// What an envelope carries. `open`, `frame` and `hangup` go from the edge to the owner;
/// `message` and `end` from the owner to the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// The socket's `join`, as the client sent it: the owner verifies the token itself.
    Open { token: String, meeting_id: Option<String> },
    /// A client frame, its JSON text (the edge has parsed it once, to refuse bad ones there).
    Frame { text: String },
    /// The socket is gone (the client left or dropped, or the edge stops).
    Hangup,
    /// A server frame for the socket.
    Message { msg: ServerMessage },
    /// The owner ended the session (after `left`, a refused join, a too-slow session, or the
    /// meeting's end): the edge closes the socket.
    End { reason: String },
    /// Not a session's: a staff view here asks the meeting's owner for its row of the live
    /// queue (`conn` numbers the question on the asking node; `seq` is 0).
    Ask { meeting_id: String },
    /// The owner's answer to `ask` (its `conn`): `None` when the meeting is not live there.
    Answer { row: Option<QueueRow> },
    /// Not a session's: staff act on a meeting's lobby from the queue on this node (REST),
    /// the meeting runs on the owner (`conn` numbers the question; `seq` is 0). `by` names
    /// them as the log will (`staff:<subject>`); the asking node checked that they may.
    Act {
        meeting_id: String,
        by: String,
        action: QueueAction,
    },
    /// The owner's answer to `act`: `None` once done, else why not.
    Acted { error: Option<Error> },
}

/// A lobby action from the queue, as the relay carries it (`room::LobbyAction`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum QueueAction {
    Admit {
        participant_id: String,
    },
    AdmitAll,
    Deny {
        participant_id: String,
        reason: Option<String>,
    },
}

impl From<LobbyAction> for QueueAction {
    fn from(a: LobbyAction) -> Self {
        match a {
            LobbyAction::Admit(p) => QueueAction::Admit {
                participant_id: p.to_string(),
            },
            LobbyAction::AdmitAll => QueueAction::AdmitAll,
            LobbyAction::Deny(p, reason) => QueueAction::Deny {
                participant_id: p.to_string(),
                reason,
            },
        }
    }
}

impl From<QueueAction> for LobbyAction {
    fn from(a: QueueAction) -> Self {
        match a {
            QueueAction::Admit { participant_id } => LobbyAction::Admit(participant_id.into()),
            QueueAction::AdmitAll => LobbyAction::AdmitAll,
            QueueAction::Deny { participant_id, reason } => LobbyAction::Deny(participant_id.into(), reason),
        }
    }
}

/// A live meeting's row of the staff queue, as its owner's task has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    /// Participants connected in the call (held seats not counted).
    pub in_call: usize,
    /// Who waits, oldest first.
    pub lobby: Vec<LobbyEntry>,
}

/// Who handles an arriving envelope on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressee {
    /// The edge's end of a session (`message`, `end`).
    Edge,
    /// The owner's end of a session, or a new one (`open`, `frame`, `hangup`).
    Owner,
    /// The relay itself, as a meeting's owner: a question to answer (`ask`, `act`).
    Asked,
    /// The relay itself, as the asker: the answer it waits for (`answer`, `acted`).
    Asker,
}

/// Why an envelope could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BadEnvelope {
    TooLarge(usize),
    Malformed(String),
}

impl Envelope {
    /// Reads an envelope from a pub/sub payload; never panics on junk.
    pub fn parse(payload: &[u8]) -> Result<Envelope, BadEnvelope> {
        if payload.len() > MAX_ENVELOPE_BYTES {
            return Err(BadEnvelope::TooLarge(payload.len()));
        }
        serde_json::from_slice(payload).map_err(|e| BadEnvelope::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope serialises")
    }

    /// Which end of a session receives it (or the relay itself, for a question).
    pub fn addressee(&self) -> Addressee {
        match self.body {
            Body::Message { .. } | Body::End { .. } => Addressee::Edge,
            Body::Open { .. } | Body::Frame { .. } | Body::Hangup => Addressee::Owner,
            Body::Ask { .. } | Body::Act { .. } => Addressee::Asked,
            Body::Answer { .. } | Body::Acted { .. } => Addressee::Asker,
        }
    }

    /// Whether the edge's end of a session receives it.
    pub fn for_edge(&self) -> bool {
        self.addressee() == Addressee::Edge
    }
}

/// How an arriving sequence number fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one expected.
    InOrder,
    /// Seen already (a duplicate): ignored.
    Stale,
    /// Some were lost: the session is broken.
    Gap { expected: u64, got: u64 },
}

/// The sequence numbers of one session end: those it sends, and those it expects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sequence {
    next_out: u64,
    next_in: u64,
}

impl Sequence {
    /// The number of the next envelope sent.
    pub fn take_out(&mut self) -> u64 {
        let n = self.next_out;
        self.next_out += 1;
        n
    }

    pub fn arrive(&mut self, seq: u64) -> Arrival {
        use std::cmp::Ordering::*;
        match seq.cmp(&self.next_in) {
            Equal => {
                self.next_in += 1;
                Arrival::InOrder
            }
            Less => Arrival::Stale,
            Greater => Arrival::Gap {
                expected: self.next_in,
                got: seq,
            },
        }
    }
}

/// Where the edge's end of a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeState {
    /// `open` sent; no `joined` yet.
    Joining,
    /// Joined: frames go both ways.
    Open,
    /// Over: nothing more is sent or delivered.
    Over,
}

/// The edge's end: a socket here whose meeting runs on `owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSession {
    pub owner: String,
    pub state: EdgeState,
    seq: Sequence,
}

/// What the edge does with an arrival (or an event of its own).
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeStep {
    /// The owner let the socket in (`joined`, to be delivered): the socket's reader starts.
    Joined(ServerMessage),
    /// The owner refused the join: the socket gets this error and closes.
    Refused(Error),
    /// A server frame for the socket.
    Deliver(ServerMessage),
    /// The session is over: close the socket (the owner is not told; it ended or is gone).
    Close(String),
    /// Nothing to do.
    Ignore,
}

impl EdgeSession {
    /// A new session and its first envelope's body (`open`, sequence 0).
    pub fn open(owner: &str, token: String, meeting_id: Option<String>) -> (EdgeSession, u64, Body) {
        let mut s = EdgeSession {
            owner: owner.to_owned(),
            state: EdgeState::Joining,
            seq: Sequence::default(),
        };
        let seq = s.seq.take_out();
        (s, seq, Body::Open { token, meeting_id })
    }

    /// A client frame for the owner; `None` unless joined.
    pub fn frame(&mut self, text: String) -> Option<(u64, Body)> {
        (self.state == EdgeState::Open).then(|| (self.seq.take_out(), Body::Frame { text }))
    }

    /// The socket is gone: the owner is told, unless the session is already over (or was
    /// never let in: the owner dropped a refused session itself).
    pub fn hangup(&mut self) -> Option<(u64, Body)> {
        let was = std::mem::replace(&mut self.state, EdgeState::Over);
        (was != EdgeState::Over).then(|| (self.seq.take_out(), Body::Hangup))
    }

    /// An envelope from the owner.
    pub fn receive(&mut self, from: &str, seq: u64, body: Body) -> EdgeStep {
        if self.state == EdgeState::Over || from != self.owner {
            return EdgeStep::Ignore;
        }
        match self.seq.arrive(seq) {
            Arrival::InOrder => {}
            Arrival::Stale => return EdgeStep::Ignore,
            Arrival::Gap { expected, got } => {
                return self.over(format!(
                    "relay lost messages from the owner (expected {expected}, got {got})"
                ));
            }
        }
        match (self.state, body) {
            (
                EdgeState::Joining,
                Body::Message {
                    msg: msg @ ServerMessage::Joined { .. },
                },
            ) => {
                self.state = EdgeState::Open;
                EdgeStep::Joined(msg)
            }
            (
                EdgeState::Joining,
                Body::Message {
                    msg: ServerMessage::Error { code, message },
                },
            ) => {
                self.state = EdgeState::Over;
                EdgeStep::Refused(Error::new(code, message))
            }
            (_, Body::Message { msg }) => EdgeStep::Deliver(msg),
            (EdgeState::Joining, Body::End { reason }) => {
                self.state = EdgeState::Over;
                EdgeStep::Refused(Error::new(
                    ErrorCode::Internal,
                    format!("the meeting's node ended the join: {reason}"),
                ))
            }
            (_, Body::End { reason }) => self.over(reason),
            // Bodies for an owner, or for the relay itself, never come to an edge
            // (`Envelope::addressee` routes them).
            (
                _,
                Body::Open { .. }
                | Body::Frame { .. }
                | Body::Hangup
                | Body::Ask { .. }
                | Body::Answer { .. }
                | Body::Act { .. }
                | Body::Acted { .. },
            ) => EdgeStep::Ignore,
        }
    }

    /// The owner's node left the registry, or this node's subscription dropped (messages may
    /// have been lost), or the owner's answer to `open` did not come in time.
    pub fn broken(&mut self, why: &str) -> EdgeStep {
        match self.state {
            EdgeState::Over => EdgeStep::Ignore,
            EdgeState::Joining => {
                self.state = EdgeState::Over;
                EdgeStep::Refused(Error::new(
                    ErrorCode::ServerBusy,
                    format!("the meeting's node could not be reached ({why}); retry shortly"),
                ))
            }
            EdgeState::Open => self.over(why.to_owned()),
        }
    }

    fn over(&mut self, why: String) -> EdgeStep {
        self.state = EdgeState::Over;
        EdgeStep::Close(why)
    }
}

/// The owner's end: a socket on the node `edge` whose meeting runs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSession {
    pub edge: String,
    pub conn: u64,
    over: bool,
    seq: Sequence,
}

/// What the owner does with an arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerStep {
    /// A client frame for the meeting, as if from a local socket.
    Frame(String),
    /// The socket is gone: the meeting hears `disconnected`.
    Hangup,
    /// Messages were lost or the edge is gone: the meeting hears `disconnected`, and the edge
    /// (if it still listens) is told to close the socket.
    Broken(String),
    Ignore,
}

impl OwnerSession {
    /// A session for an `open` (sequence 0) from `edge`; anything else opens nothing.
    pub fn accept(envelope: Envelope) -> Option<(OwnerSession, String, Option<String>)> {
        match envelope.body {
            Body::Open { token, meeting_id } if envelope.seq == 0 => {
                let mut seq = Sequence::default();
                seq.arrive(0);
                Some((
                    OwnerSession {
                        edge: envelope.from,
                        conn: envelope.conn,
                        over: false,
                        seq,
                    },
                    token,
                    meeting_id,
                ))
            }
            _ => None,
        }
    }

    /// A server frame for the socket; `None` once over.
    pub fn message(&mut self, msg: ServerMessage) -> Option<(u64, Body)> {
        (!self.over).then(|| (self.seq.take_out(), Body::Message { msg }))
    }

    /// The session ends here: the edge closes the socket. `None` if already over.
    pub fn end(&mut self, reason: &str) -> Option<(u64, Body)> {
        let was = std::mem::replace(&mut self.over, true);
        (!was).then(|| {
            (
                self.seq.take_out(),
                Body::End {
                    reason: reason.to_owned(),
                },
            )
        })
    }

    pub fn is_over(&self) -> bool {
        self.over
    }

    /// An envelope from the edge.
    pub fn receive(&mut self, from: &str, seq: u64, body: Body) -> OwnerStep {
        if self.over || from != self.edge {
            return OwnerStep::Ignore;
        }
        match self.seq.arrive(seq) {
            Arrival::InOrder => {}
            Arrival::Stale => return OwnerStep::Ignore,
            Arrival::Gap { expected, got } => {
                return OwnerStep::Broken(format!(
                    "relay lost messages from the edge (expected {expected}, got {got})"
                ));
            }
        }
        match body {
            Body::Frame { text } => OwnerStep::Frame(text),
            Body::Hangup => {
                self.over = true;
                OwnerStep::Hangup
            }
            // A second `open` on a live session, or bodies meant for an edge: a confused
            // peer; the session cannot be trusted to be in step any more.
            Body::Open { .. }
            | Body::Message { .. }
            | Body::End { .. }
            | Body::Ask { .. }
            | Body::Answer { .. }
            | Body::Act { .. }
            | Body::Acted { .. } => OwnerStep::Broken("unexpected relay message from the edge".into()),
        }
    }
}

/// The sessions whose peer node is not among the live ones (the registry, at a beat).
pub fn dead_peers<'a, K: Clone + 'a>(sessions: impl IntoIterator<Item = (&'a K, &'a str)>, live: &[String]) -> Vec<K> {
    sessions
        .into_iter()
        .filter(|(_, peer)| !live.iter().any(|n| n == peer))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_signaling::protocol::LeaveReason;

    fn joined() -> ServerMessage {
        serde_json::from_value(serde_json::json!({
            "type": "joined", "protocol": 1,
            "you": {"participant_id": "p-1", "display_name": "Wanda", "kind": "guest"},
            "meeting": {"meeting_id": "m-1", "title": "t", "chat_enabled": true, "guests_may_present": false}
        }))
        .expect("a joined frame")
    }

    fn pong(n: u64) -> ServerMessage {
        ServerMessage::Pong { nonce: n }
    }

    fn env(from: &str, conn: u64, seq: u64, body: Body) -> Envelope {
        Envelope {
            from: from.into(),
            conn,
            seq,
            body,
        }
    }

    /// An edge session already joined.
    fn open_edge() -> EdgeSession {
        let (mut s, _, _) = EdgeSession::open("n-own", "tok".into(), None);
        s.state = EdgeState::Open;
        s.seq.next_in = 1;
        s
    }

    #[test]
    fn envelopes_round_trip_and_name_their_receiver() {
        let bodies = [
            Body::Open {
                token: "t".into(),
                meeting_id: Some("m".into()),
            },
            Body::Frame {
                text: r#"{"type":"ping","nonce":1}"#.into(),
            },
            Body::Hangup,
            Body::Message { msg: pong(3) },
            Body::End { reason: "left".into() },
            Body::Ask { meeting_id: "m".into() },
            Body::Answer { row: None },
            Body::Answer {
                row: Some(QueueRow {
                    in_call: 2,
                    lobby: vec![LobbyEntry {
                        participant_id: "p-9".into(),
                        display_name: "Rita".into(),
                        kind: gatehouse_signaling::protocol::ParticipantKind::Guest,
                        invited: true,
                        waiting_since_ms: 42,
                    }],
                }),
            },
            Body::Act {
                meeting_id: "m".into(),
                by: "staff:olga".into(),
                action: QueueAction::Deny {
                    participant_id: "p-9".into(),
                    reason: Some("full".into()),
                },
            },
            Body::Acted { error: None },
            Body::Acted {
                error: Some(Error::new(ErrorCode::NotFound, "nobody")),
            },
        ];
        use Addressee::*;
        let to = [
            Owner, Owner, Owner, Edge, Edge, Asked, Asker, Asker, Asked, Asker, Asker,
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let e = env("n-a", 7, i as u64, body);
            let back = Envelope::parse(e.to_json().as_bytes()).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.addressee(), to[i], "{back:?}");
            assert_eq!(back.for_edge(), to[i] == Edge, "{back:?}");
        }
    }

    #[test]
    fn every_lobby_action_crosses_the_relay_unchanged() {
        for a in [
            LobbyAction::Admit("p-1".into()),
            LobbyAction::AdmitAll,
            LobbyAction::Deny("p-2".into(), None),
            LobbyAction::Deny("p-3".into(), Some("not today".into())),
        ] {
            let wire = QueueAction::from(a.clone());
            let json = serde_json::to_string(&wire).unwrap();
            let back: QueueAction = serde_json::from_str(&json).unwrap();
            assert_eq!(LobbyAction::from(back), a, "{json}");
        }
    }

    #[test]
    fn a_question_reaching_a_session_is_ignored_by_an_edge_and_breaks_an_owner() {
        let ask = || Body::Ask { meeting_id: "m".into() };
        let mut edge = open_edge();
        assert_eq!(edge.receive("n-own", 1, ask()), EdgeStep::Ignore);
        assert_eq!(edge.receive("n-own", 2, Body::Answer { row: None }), EdgeStep::Ignore);
        assert_eq!(edge.state, EdgeState::Open);
        let open = Body::Open {
            token: "t".into(),
            meeting_id: None,
        };
        let (mut owner, _, _) = OwnerSession::accept(env("n-edge", 3, 0, open)).expect("an open opens");
        assert!(matches!(owner.receive("n-edge", 1, ask()), OwnerStep::Broken(_)));
        // A question is never a session's first envelope either.
        assert!(OwnerSession::accept(env("n-edge", 4, 0, ask())).is_none());
    }

    #[test]
    fn a_lobby_action_reaching_a_session_is_ignored_by_an_edge_and_breaks_an_owner() {
        let act = || Body::Act {
            meeting_id: "m".into(),
            by: "staff:olga".into(),
            action: QueueAction::AdmitAll,
        };
        let acted = || Body::Acted { error: None };
        let mut edge = open_edge();
        assert_eq!(edge.receive("n-own", 1, act()), EdgeStep::Ignore);
        assert_eq!(edge.receive("n-own", 2, acted()), EdgeStep::Ignore);
        assert_eq!(
            edge.state,
            EdgeState::Open,
            "a stray question leaves the session as it was"
        );
        for stray in [act(), acted()] {
            let open = Body::Open {
                token: "t".into(),
                meeting_id: None,
            };
            let (mut owner, _, _) = OwnerSession::accept(env("n-edge", 3, 0, open)).expect("an open opens");
            assert!(matches!(
                owner.receive("n-edge", 1, stray.clone()),
                OwnerStep::Broken(_)
            ));
            assert!(
                OwnerSession::accept(env("n-edge", 4, 0, stray)).is_none(),
                "a question or answer opens no session"
            );
        }
    }

    #[test]
    fn a_lobby_action_envelope_is_the_documented_json() {
        let e = env(
            "n-a",
            7,
            0,
            Body::Act {
                meeting_id: "m-1".into(),
                by: "staff:olga".into(),
                action: QueueAction::Deny {
                    participant_id: "p-9".into(),
                    reason: None,
                },
            },
        );
        let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"from": "n-a", "conn": 7, "seq": 0, "body": {"kind": "act", "meeting_id": "m-1",
                "by": "staff:olga", "action": {"action": "deny", "participant_id": "p-9", "reason": null}}})
        );
        // An owner of another build that sends an action this one does not know is refused whole.
        let unknown = br#"{"from":"n-a","conn":7,"seq":0,"body":{"kind":"act","meeting_id":"m","by":"staff:o","action":{"action":"kick","participant_id":"p"}}}"#;
        assert!(matches!(Envelope::parse(unknown), Err(BadEnvelope::Malformed(_))));
    }

    #[test]
    fn junk_and_oversized_envelopes_are_refused_without_panic() {
        for junk in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"from\":1}",
            b"{\"from\":\"a\",\"conn\":-1,\"seq\":0,\"body\":{\"kind\":\"hangup\"}}",
            b"{\"from\":\"a\",\"conn\":1,\"seq\":0,\"body\":{\"kind\":\"nope\"}}",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(Envelope::parse(junk), Err(BadEnvelope::Malformed(_))),
                "{junk:?}"
            );
        }
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            Envelope::parse(&big),
            Err(BadEnvelope::TooLarge(MAX_ENVELOPE_BYTES + 1))
        );
    }

    #[test]
    fn sequences_accept_in_order_ignore_duplicates_and_see_gaps() {
        let mut s = Sequence::default();
        assert_eq!((s.take_out(), s.take_out()), (0, 1));
        assert_eq!(s.arrive(0), Arrival::InOrder);
        assert_eq!(s.arrive(0), Arrival::Stale);
        assert_eq!(s.arrive(1), Arrival::InOrder);
        assert_eq!(s.arrive(3), Arrival::Gap { expected: 2, got: 3 });
        assert_eq!(s.arrive(2), Arrival::InOrder, "a gap does not move the expectation");
    }

    #[test]
    fn the_edge_opens_joins_relays_in_order_and_hangs_up_once() {
        let (mut s, seq, body) = EdgeSession::open("n-own", "tok".into(), Some("m-1".into()));
        assert_eq!(seq, 0);
        assert_eq!(
            body,
            Body::Open {
                token: "tok".into(),
                meeting_id: Some("m-1".into())
            }
        );
        assert_eq!(s.frame("early".into()), None, "nothing is sent before joined");
        // A frame before `joined` (none is sent today) is delivered as it comes.
        assert_eq!(
            s.receive("n-own", 0, Body::Message { msg: pong(1) }),
            EdgeStep::Deliver(pong(1))
        );
        let j = joined();
        assert_eq!(
            s.receive("n-own", 1, Body::Message { msg: j.clone() }),
            EdgeStep::Joined(j)
        );
        assert_eq!(s.state, EdgeState::Open);
        assert_eq!(s.frame("a".into()), Some((1, Body::Frame { text: "a".into() })));
        assert_eq!(s.frame("b".into()), Some((2, Body::Frame { text: "b".into() })));
        assert_eq!(
            s.receive("n-own", 2, Body::Message { msg: pong(2) }),
            EdgeStep::Deliver(pong(2))
        );
        assert_eq!(
            s.receive("n-own", 2, Body::Message { msg: pong(2) }),
            EdgeStep::Ignore,
            "duplicate"
        );
        assert_eq!(
            s.receive("n-other", 3, Body::Message { msg: pong(3) }),
            EdgeStep::Ignore,
            "not the owner"
        );
        assert_eq!(s.hangup(), Some((3, Body::Hangup)));
        assert_eq!(s.hangup(), None);
        assert_eq!(s.frame("c".into()), None);
        assert_eq!(
            s.receive("n-own", 3, Body::Message { msg: pong(3) }),
            EdgeStep::Ignore,
            "over"
        );
    }

    #[test]
    fn the_edge_reports_a_refusal_an_end_a_gap_and_a_lost_owner() {
        // Refused: the error frame the owner sends first.
        let (mut s, _, _) = EdgeSession::open("n-own", "t".into(), None);
        let refusal = ServerMessage::error(ErrorCode::LinkExpired, "gone");
        assert_eq!(
            s.receive("n-own", 0, Body::Message { msg: refusal }),
            EdgeStep::Refused(Error::new(ErrorCode::LinkExpired, "gone"))
        );
        assert_eq!(s.state, EdgeState::Over);
        assert_eq!(s.hangup(), None, "a refused session is dropped by the owner already");
        // An end before joined is a refusal too.
        let (mut s, _, _) = EdgeSession::open("n-own", "t".into(), None);
        assert!(matches!(
            s.receive("n-own", 0, Body::End { reason: "x".into() }),
            EdgeStep::Refused(e) if e.code == ErrorCode::Internal
        ));
        // An end once open closes the socket.
        let mut s = open_edge();
        assert_eq!(
            s.receive("n-own", 1, Body::End { reason: "left".into() }),
            EdgeStep::Close("left".into())
        );
        assert_eq!(s.hangup(), None);
        // A gap closes the socket.
        let mut s = open_edge();
        assert!(matches!(
            s.receive("n-own", 5, Body::Message { msg: pong(5) }),
            EdgeStep::Close(why) if why.contains("expected 1, got 5")
        ));
        assert_eq!(s.state, EdgeState::Over);
        // Bodies meant for an owner deliver nothing.
        let mut s = open_edge();
        assert_eq!(s.receive("n-own", 1, Body::Hangup), EdgeStep::Ignore);
        // The owner gone: while joining, a refusal the client may retry; once open, a close.
        let (mut s, _, _) = EdgeSession::open("n-own", "t".into(), None);
        assert!(matches!(s.broken("node gone"), EdgeStep::Refused(e) if e.code == ErrorCode::ServerBusy));
        assert_eq!(s.broken("again"), EdgeStep::Ignore);
        let mut s = open_edge();
        assert_eq!(s.broken("node gone"), EdgeStep::Close("node gone".into()));
        assert_eq!(s.broken("node gone"), EdgeStep::Ignore);
        assert_eq!(s.hangup(), None);
    }

    #[test]
    fn the_owner_accepts_only_a_first_open_and_runs_the_session() {
        for bad in [
            env(
                "n-edge",
                4,
                1,
                Body::Open {
                    token: "t".into(),
                    meeting_id: None,
                },
            ),
            env("n-edge", 4, 0, Body::Hangup),
            env("n-edge", 4, 0, Body::Frame { text: "x".into() }),
            env("n-edge", 4, 0, Body::Message { msg: pong(0) }),
        ] {
            assert!(OwnerSession::accept(bad).is_none());
        }
        let (mut s, token, meeting) = OwnerSession::accept(env(
            "n-edge",
            4,
            0,
            Body::Open {
                token: "t".into(),
                meeting_id: Some("m".into()),
            },
        ))
        .unwrap();
        assert_eq!(
            (token.as_str(), meeting.as_deref(), s.conn, s.edge.as_str()),
            ("t", Some("m"), 4, "n-edge")
        );
        assert_eq!(s.message(pong(0)), Some((0, Body::Message { msg: pong(0) })));
        assert_eq!(
            s.receive("n-edge", 1, Body::Frame { text: "a".into() }),
            OwnerStep::Frame("a".into())
        );
        assert_eq!(
            s.receive("n-edge", 1, Body::Frame { text: "a".into() }),
            OwnerStep::Ignore
        );
        assert_eq!(s.receive("n-x", 2, Body::Frame { text: "b".into() }), OwnerStep::Ignore);
        assert_eq!(
            s.receive("n-edge", 2, Body::Frame { text: "b".into() }),
            OwnerStep::Frame("b".into())
        );
        assert_eq!(s.message(pong(1)), Some((1, Body::Message { msg: pong(1) })));
        assert_eq!(s.receive("n-edge", 3, Body::Hangup), OwnerStep::Hangup);
        assert!(s.is_over());
        assert_eq!(s.message(pong(2)), None, "nothing goes to a socket that hung up");
        assert_eq!(s.end("x"), None);
        assert_eq!(
            s.receive("n-edge", 4, Body::Frame { text: "c".into() }),
            OwnerStep::Ignore
        );
    }

    #[test]
    fn the_owner_ends_once_and_breaks_on_a_gap_or_a_confused_edge() {
        let open = || {
            OwnerSession::accept(env(
                "n-edge",
                1,
                0,
                Body::Open {
                    token: "t".into(),
                    meeting_id: None,
                },
            ))
            .unwrap()
            .0
        };
        let mut s = open();
        let left = ServerMessage::Left {
            reason: LeaveReason::Left,
            message: None,
        };
        assert!(s.message(left).is_some());
        assert_eq!(s.end("left"), Some((1, Body::End { reason: "left".into() })));
        assert_eq!(s.end("left"), None);
        assert_eq!(s.receive("n-edge", 1, Body::Hangup), OwnerStep::Ignore, "over");
        let mut s = open();
        assert!(matches!(
            s.receive("n-edge", 2, Body::Frame { text: "x".into() }),
            OwnerStep::Broken(why) if why.contains("expected 1, got 2")
        ));
        for confused in [
            Body::Open {
                token: "t".into(),
                meeting_id: None,
            },
            Body::Message { msg: pong(1) },
            Body::End { reason: "x".into() },
        ] {
            let mut s = open();
            assert!(matches!(s.receive("n-edge", 1, confused), OwnerStep::Broken(_)));
        }
    }

    #[test]
    fn sessions_of_nodes_gone_from_the_registry_are_found() {
        let sessions = [(1u64, "n-a".to_owned()), (2, "n-b".to_owned()), (3, "n-a".to_owned())];
        let live = vec!["n-b".to_owned(), "n-c".to_owned()];
        let mut dead = dead_peers(sessions.iter().map(|(k, p)| (k, p.as_str())), &live);
        dead.sort();
        assert_eq!(dead, vec![1, 3]);
        assert!(
            dead_peers(
                sessions.iter().map(|(k, p)| (k, p.as_str())),
                &["n-a".into(), "n-b".into()]
            )
            .is_empty()
        );
    }
}
