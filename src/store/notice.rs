//! Change notices between the nodes of a cluster (pure: no database, no threads).
//!
//! Every committed change the live queue shows (`Store::queue_changes`) is published on the
//! node that made it; in a cluster it is also announced to the other nodes, in the same
//! transaction as the change (PostgreSQL `NOTIFY`, delivered only if and when the
//! transaction commits). The [`Notice`] names the change: its meeting, its appointment if
//! it is one's, and the appointment's transitions; the listener reads the record back and
//! republishes the change into its own node's queue. [`Heard`] drops a node's own notices
//! (it published them already) and any heard twice; [`coalesce`] folds a burst into one
//! notice per meeting, so each is read back once.

use std::collections::{HashMap, VecDeque};

use gatehouse_signaling::appointment::Transition;
use serde::{Deserialize, Serialize};

/// The PostgreSQL channel the notices go on.
pub const CHANNEL: &str = "gatehouse_queue";

/// PostgreSQL refuses a `NOTIFY` payload of 8000 bytes or more; a notice keeps below this.
pub const MAX_PAYLOAD: usize = 7900;

/// Nodes whose numbering [`Heard`] keeps (the least recently heard is forgotten beyond:
/// a restarted node is a new origin, so old ones stop talking).
const ORIGINS: usize = 64;

/// How far behind the highest number heard from a node a notice may arrive and still be
/// taken. A node numbers its notices as its transactions write them and PostgreSQL delivers
/// them in commit order, so they may arrive out of order by at most the transactions under
/// way on that node at once (its pool has 8 connections).
pub const WINDOW: u64 = 64;

/// One committed change, as announced to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The node's store that made the change (drawn at every start).
    #[serde(rename = "o")]
    pub origin: String,
    /// Numbered from 0 per origin, in the order its transactions wrote them.
    #[serde(rename = "s")]
    pub seq: u64,
    /// The meeting whose lobby or call changed.
    #[serde(rename = "m")]
    pub meeting_id: String,
    /// The appointment whose meeting it is, if it is one's: the listener reads it back.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub appointment_id: Option<String>,
    /// The appointment's transitions this change made (none when only presence changed).
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
}

/// Why a payload is not a notice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadNotice {
    #[error("a notice of {0} bytes, more than PostgreSQL carries")]
    TooLarge(usize),
    #[error("an unreadable notice: {0}")]
    Malformed(String),
}

impl Notice {
    /// Reads a notice from a `NOTIFY` payload; never panics on junk.
    pub fn parse(payload: &str) -> Result<Notice, BadNotice> {
        if payload.len() > MAX_PAYLOAD {
            return Err(BadNotice::TooLarge(payload.len()));
        }
        serde_json::from_str(payload).map_err(|e| BadNotice::Malformed(e.to_string()))
    }

    /// The payload, below [`MAX_PAYLOAD`]: transitions that would not fit are left out,
    /// oldest first (the record read back has the state they led to; ~60 fit, and one
    /// change makes a handful).
    pub fn to_payload(&self) -> String {
        let mut json = serde_json::to_string(self).expect("a notice serialises");
        let mut n = self.clone();
        while json.len() > MAX_PAYLOAD && !n.transitions.is_empty() {
            let drop = n.transitions.len().div_ceil(2);
            n.transitions.drain(..drop);
            json = serde_json::to_string(&n).expect("a notice serialises");
        }
        json
    }
}

/// What to do with a notice heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Another node's change, first heard: republish it here.
    New,
    /// This node's own: it published it when it committed.
    Own,
    /// Heard already.
    Duplicate,
    /// Too far behind its origin's numbering to tell whether it was heard ([`WINDOW`]).
    TooLate,
}

/// The numbers heard from one origin: the highest, and which of the [`WINDOW`] below it.
#[derive(Debug, Clone, Copy)]
struct Window {
    top: u64,
    /// Bit `i`: `top - i` was heard.
    seen: u64,
}

impl Window {
    fn hear(&mut self, seq: u64) -> Verdict {
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq;
            return Verdict::New;
        }
        let behind = self.top - seq;
        if behind >= WINDOW {
            return Verdict::TooLate;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            Verdict::Duplicate
        } else {
            self.seen |= bit;
            Verdict::New
        }
    }
}

/// The notices a node has heard: its own are told apart, others' are taken once each.
#[derive(Debug)]
pub struct Heard {
    me: String,
    origins: HashMap<String, Window>,
    /// Origins, least recently heard first (to forget beyond [`ORIGINS`]).
    recency: VecDeque<String>,
}

impl Heard {
    /// For the node whose own notices carry `me`.
    pub fn new(me: impl Into<String>) -> Heard {
        Heard {
            me: me.into(),
            origins: HashMap::new(),
            recency: VecDeque::new(),
        }
    }

    pub fn hear(&mut self, n: &Notice) -> Verdict {
        if n.origin == self.me {
            return Verdict::Own;
        }
        if let Some(w) = self.origins.get_mut(&n.origin) {
            let verdict = w.hear(n.seq);
            if let Some(i) = self.recency.iter().position(|o| *o == n.origin) {
                let o = self.recency.remove(i).expect("the position is in range");
                self.recency.push_back(o);
            }
            return verdict;
        }
        if self.origins.len() >= ORIGINS
            && let Some(oldest) = self.recency.pop_front()
        {
            self.origins.remove(&oldest);
        }
        self.origins.insert(n.origin.clone(), Window { top: n.seq, seen: 1 });
        self.recency.push_back(n.origin.clone());
        Verdict::New
    }
}

/// One notice per meeting, in the order each meeting was first named: a meeting's later
/// notices fold into its first (the appointment named last, every transition in order).
/// Each change is then read back once, at its latest state.
pub fn coalesce(notices: Vec<Notice>) -> Vec<Notice> {
    let mut out: Vec<Notice> = Vec::with_capacity(notices.len());
    for n in notices {
        match out.iter_mut().find(|o| o.meeting_id == n.meeting_id) {
            Some(o) => {
                if n.appointment_id.is_some() {
                    o.appointment_id = n.appointment_id;
                }
                o.transitions.extend(n.transitions);
            }
            None => out.push(n),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_signaling::appointment::{AppointmentState, Cause};

    fn notice(origin: &str, seq: u64, meeting: &str) -> Notice {
        Notice {
            origin: origin.into(),
            seq,
            meeting_id: meeting.into(),
            appointment_id: None,
            transitions: Vec::new(),
        }
    }

    fn transition(at_ms: u64) -> Transition {
        Transition {
            from: Some(AppointmentState::Scheduled),
            to: AppointmentState::Waiting,
            at_ms,
            cause: Cause::Presence,
        }
    }

    #[test]
    fn a_notice_survives_its_payload() {
        let mut n = notice("s-1", 7, "m-1");
        n.appointment_id = Some("a-1".into());
        n.transitions = vec![transition(5), transition(6)];
        assert_eq!(Notice::parse(&n.to_payload()).unwrap(), n);
        // Without an appointment the payload is short, and reads back the same.
        let bare = notice("s-1", 8, "m-2");
        assert!(!bare.to_payload().contains("\"a\""), "{}", bare.to_payload());
        assert_eq!(Notice::parse(&bare.to_payload()).unwrap(), bare);
    }

    #[test]
    fn junk_is_a_typed_refusal_never_a_panic() {
        for junk in [
            "",
            "{",
            "null",
            "[]",
            "{\"o\":1}",
            "{\"o\":\"x\",\"s\":-1,\"m\":\"m\"}",
            "\u{0}",
        ] {
            assert!(matches!(Notice::parse(junk), Err(BadNotice::Malformed(_))), "{junk:?}");
        }
        let long = "x".repeat(MAX_PAYLOAD + 1);
        assert_eq!(Notice::parse(&long), Err(BadNotice::TooLarge(MAX_PAYLOAD + 1)));
    }

    #[test]
    fn a_payload_too_long_for_postgres_drops_the_oldest_transitions() {
        let mut n = notice("s-1", 1, "m-1");
        n.appointment_id = Some("a-1".into());
        n.transitions = (0..500).map(transition).collect();
        let payload = n.to_payload();
        assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
        let back = Notice::parse(&payload).unwrap();
        assert!(!back.transitions.is_empty() && back.transitions.len() < 500);
        assert_eq!(back.transitions.last(), n.transitions.last(), "the latest are kept");
        assert_eq!(back.appointment_id, n.appointment_id);
    }

    #[test]
    fn a_node_skips_its_own_notices_and_takes_the_others_once() {
        let mut heard = Heard::new("s-me");
        assert_eq!(heard.hear(&notice("s-me", 0, "m")), Verdict::Own);
        assert_eq!(heard.hear(&notice("s-b", 0, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-b", 0, "m")), Verdict::Duplicate);
        assert_eq!(heard.hear(&notice("s-c", 0, "m")), Verdict::New, "origins are apart");
        assert_eq!(heard.hear(&notice("s-b", 1, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-me", 1, "m")), Verdict::Own);
    }

    #[test]
    fn notices_out_of_commit_order_are_each_taken_once() {
        // Every order of 0..6 as they could arrive: each number is taken exactly once.
        let mut orders = vec![vec![]];
        for n in 0..6u64 {
            orders = orders
                .into_iter()
                .flat_map(|o: Vec<u64>| {
                    (0..=o.len()).map(move |i| {
                        let mut o = o.clone();
                        o.insert(i, n);
                        o
                    })
                })
                .collect();
        }
        assert_eq!(orders.len(), 720);
        for order in orders {
            let mut heard = Heard::new("s-me");
            for &s in &order {
                assert_eq!(heard.hear(&notice("s-b", s, "m")), Verdict::New, "{order:?}");
            }
            for &s in &order {
                assert_eq!(heard.hear(&notice("s-b", s, "m")), Verdict::Duplicate, "{order:?}");
            }
        }
    }

    #[test]
    fn the_window_reaches_back_64_and_a_jump_clears_it() {
        let mut heard = Heard::new("s-me");
        assert_eq!(heard.hear(&notice("s-b", 100, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-b", 100 - WINDOW + 1, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-b", 100 - WINDOW + 1, "m")), Verdict::Duplicate);
        assert_eq!(heard.hear(&notice("s-b", 100 - WINDOW, "m")), Verdict::TooLate);
        // A jump of a whole window forgets what was below; the new top is heard.
        assert_eq!(heard.hear(&notice("s-b", 100 + WINDOW, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-b", 100 + WINDOW, "m")), Verdict::Duplicate);
        assert_eq!(heard.hear(&notice("s-b", 101, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-b", 100, "m")), Verdict::TooLate);
        // A jump of less than a window keeps what it still covers.
        assert_eq!(heard.hear(&notice("s-b", 100 + WINDOW + 10, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-b", 100 + WINDOW, "m")), Verdict::Duplicate);
        assert_eq!(heard.hear(&notice("s-b", 100 + WINDOW + 5, "m")), Verdict::New);
    }

    #[test]
    fn the_least_recently_heard_origin_is_forgotten_beyond_the_bound() {
        let mut heard = Heard::new("s-me");
        for i in 0..ORIGINS {
            assert_eq!(heard.hear(&notice(&format!("s-{i}"), 5, "m")), Verdict::New);
        }
        // s-0 heard again: s-1 is now the least recent.
        assert_eq!(heard.hear(&notice("s-0", 6, "m")), Verdict::New);
        assert_eq!(heard.hear(&notice("s-new", 0, "m")), Verdict::New);
        assert_eq!(heard.origins.len(), ORIGINS);
        assert_eq!(heard.hear(&notice("s-0", 6, "m")), Verdict::Duplicate, "kept");
        // s-1 was forgotten: its numbering starts afresh (a notice of a node gone quiet).
        assert_eq!(heard.hear(&notice("s-1", 5, "m")), Verdict::New);
    }

    #[test]
    fn a_burst_becomes_one_notice_per_meeting_in_first_order() {
        let mut a1 = notice("s-b", 0, "m-1");
        a1.appointment_id = Some("a-1".into());
        a1.transitions = vec![transition(1)];
        let b = notice("s-b", 1, "m-2");
        let mut a2 = notice("s-c", 0, "m-1");
        a2.transitions = vec![transition(2)];
        let mut a3 = notice("s-b", 2, "m-1");
        a3.appointment_id = Some("a-1".into());
        a3.transitions = vec![transition(3)];
        let out = coalesce(vec![a1.clone(), b.clone(), a2, a3]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].meeting_id, "m-1");
        assert_eq!(
            out[0].appointment_id.as_deref(),
            Some("a-1"),
            "a later notice without one keeps it"
        );
        assert_eq!(
            out[0].transitions.iter().map(|t| t.at_ms).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(out[1], b);
        assert!(coalesce(Vec::new()).is_empty());
        assert_eq!(coalesce(vec![a1.clone()]), vec![a1]);
    }
}
