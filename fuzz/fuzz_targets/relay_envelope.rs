//! Envelopes from the signaling relay between nodes (issue 16): arbitrary pub/sub payloads
//! read by `Envelope::parse`, as a node's relay listener does with whatever arrives on its
//! channel, and the ones that parse routed (`Envelope::for_edge`) into one edge session and
//! one owner session, the pure ends of a relayed socket (`gatehouse::cluster::relay`).
//! Between envelopes the two ends also act on their own: the edge's client sends a frame or
//! hangs up, the edge loses its owner, the owner sends a server frame or ends the session.
//!
//! Input: steps separated by 0xFF. A step's first byte picks what happens; the rest is the
//! payload (an envelope's JSON, or a frame's text).
//!
//! Checked: parsing never panics and refuses what is too large; what parses serialises and
//! parses again; a session that is over stays over and ignores everything after; the edge is
//! joined at most once and only from `Joining`; the frames an end sends are numbered
//! 0, 1, 2, ... with no gap; the owner hands on only frames from its own edge.

#![no_main]

use gatehouse::cluster::relay::{
    BadEnvelope, Body, EdgeSession, EdgeState, EdgeStep, Envelope, MAX_ENVELOPE_BYTES, OwnerSession, OwnerStep};
use gatehouse_signaling::protocol::{ServerMessage, parse_client_message};
use libfuzzer_sys::fuzz_target;

const OWNER: &str = "n-owner";

struct Ends {
    edge: EdgeSession,
    /// The numbers the edge has sent so far (its `open` was 0).
    edge_sent: u64,
    owner: Option<OwnerSession>,
    owner_sent: u64,
    owner_broken: bool,
    joined: usize,
}

impl Ends {
    fn edge_sends(&mut self, sent: Option<(u64, Body)>) {
        if let Some((seq, _)) = sent {
            assert_eq!(seq, self.edge_sent, "the edge numbers what it sends without a gap");
            self.edge_sent += 1;
        }
    }

    fn owner_sends(&mut self, sent: Option<(u64, Body)>) {
        if let Some((seq, _)) = sent {
            assert_eq!(seq, self.owner_sent, "the owner numbers what it sends without a gap");
            self.owner_sent += 1;
        }
    }

    fn to_edge(&mut self, e: Envelope) {
        let before = self.edge.state;
        let step = self.edge.receive(&e.from, e.seq, e.body);
        let after = self.edge.state;
        if before == EdgeState::Over {
            assert_eq!(step, EdgeStep::Ignore, "an edge session that is over ignores everything");
        }
        match &step {
            EdgeStep::Joined(msg) => {
                assert_eq!(before, EdgeState::Joining, "joined only from joining");
                assert_eq!(after, EdgeState::Open);
                assert!(matches!(msg, ServerMessage::Joined { .. }));
                self.joined += 1;
                assert_eq!(self.joined, 1, "joined once");
            }
            EdgeStep::Refused(_) | EdgeStep::Close(_) => assert_eq!(after, EdgeState::Over),
            EdgeStep::Deliver(msg) => {
                assert_ne!(after, EdgeState::Over);
                // What the edge delivers goes out on the client's socket: it must serialise.
                serde_json::to_string(msg).expect("a delivered frame serialises");
            }
            EdgeStep::Ignore => assert_eq!(before, after, "an ignored envelope changes nothing"),
        }
    }

    fn to_owner(&mut self, e: Envelope) {
        if self.owner_broken {
            return; // the shell drops a broken session
        }
        let Some(owner) = self.owner.as_mut() else {
            let from_edge = e.from.clone();
            let conn = e.conn;
            let seq = e.seq;
            let is_open = matches!(e.body, Body::Open { .. });
            match OwnerSession::accept(e) {
                Some((s, _token, _meeting)) => {
                    assert!(is_open && seq == 0, "only an open numbered 0 starts a session");
                    assert_eq!((s.edge.as_str(), s.conn), (from_edge.as_str(), conn));
                    self.owner = Some(s);
                }
                None => assert!(!(is_open && seq == 0), "an open numbered 0 starts a session"),
            }
            return;
        };
        let was_over = owner.is_over();
        let from_own_edge = e.from == owner.edge;
        match owner.receive(&e.from, e.seq, e.body) {
            OwnerStep::Ignore => {}
            step => {
                assert!(!was_over, "an owner session that is over ignores everything");
                assert!(from_own_edge, "the owner acts only on its own edge's envelopes");
                match step {
                    OwnerStep::Frame(text) => {
                        // The owner's meeting reads it as a client frame.
                        let _ = parse_client_message(&text);
                    }
                    OwnerStep::Hangup => assert!(owner.is_over()),
                    OwnerStep::Broken(_) => self.owner_broken = true,
                    OwnerStep::Ignore => unreachable!(),
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (edge, first, _) = EdgeSession::open(OWNER, "token".into(), Some("m_fuzz".into()));
    assert_eq!(first, 0);
    let mut ends = Ends {
        edge,
        edge_sent: 1,
        owner: None,
        owner_sent: 0,
        owner_broken: false,
        joined: 0,
    };
    for step in data.split(|&b| b == 0xFF) {
        let Some((&what, rest)) = step.split_first() else {
            continue;
        };
        match what % 8 {
            0..=2 => match Envelope::parse(rest) {
                Ok(e) => {
                    assert!(rest.len() <= MAX_ENVELOPE_BYTES, "nothing too large is read");
                    let again = Envelope::parse(e.to_json().as_bytes()).expect("what parsed serialises and parses");
                    assert_eq!(again.for_edge(), e.for_edge());
                    if e.for_edge() {
                        ends.to_edge(e);
                    } else {
                        ends.to_owner(e);
                    }
                }
                Err(BadEnvelope::TooLarge(n)) => assert!(n == rest.len() && n > MAX_ENVELOPE_BYTES),
                Err(BadEnvelope::Malformed(_)) => assert!(rest.len() <= MAX_ENVELOPE_BYTES),
            },
            3 => {
                let open = ends.edge.state == EdgeState::Open;
                let sent = ends.edge.frame(String::from_utf8_lossy(rest).into_owned());
                assert_eq!(sent.is_some(), open, "the edge relays frames only once joined");
                ends.edge_sends(sent);
            }
            4 => {
                let over = ends.edge.state == EdgeState::Over;
                let sent = ends.edge.hangup();
                assert_eq!(sent.is_some(), !over, "a hangup is sent once");
                assert_eq!(ends.edge.state, EdgeState::Over);
                ends.edge_sends(sent);
            }
            5 => {
                let before = ends.edge.state;
                let step = ends.edge.broken("fuzz");
                assert_eq!(ends.edge.state, EdgeState::Over);
                assert_eq!(step == EdgeStep::Ignore, before == EdgeState::Over);
            }
            6 => {
                if let Some(owner) = ends.owner.as_mut() {
                    let over = owner.is_over();
                    let sent = owner.message(ServerMessage::Pong { nonce: rest.len() as u64 });
                    assert_eq!(sent.is_some(), !over, "an owner session that is over sends nothing");
                    ends.owner_sends(sent);
                }
            }
            _ => {
                if let Some(owner) = ends.owner.as_mut() {
                    let over = owner.is_over();
                    let sent = owner.end("fuzz");
                    assert_eq!(sent.is_some(), !over, "the end is sent once");
                    assert!(owner.is_over());
                    ends.owner_sends(sent);
                }
            }
        }
    }
});
