//! Client frames into a live meeting: arbitrary bytes become WebSocket text frames,
//! parsed by `parse_client_message` exactly as `server::ws` does, and every frame
//! that parses is handled by the pure `Room` of a meeting with four participants
//! (the organiser and an invited staff member in the call, an invited guest in the
//! call, an anonymous guest in the lobby), as the meeting task does. Drops, rejoins
//! and the clock passing are interleaved.
//!
//! Input: steps separated by 0xFF (a byte no UTF-8 text contains). A step's first
//! byte picks what happens (low 3 bits) and how much time passes first (high 5 bits,
//! in seconds); the rest is the frame.
//!
//! Checked after every step: every frame the room sends serialises (the writer
//! would send it), every effect names a connection the room was given, the roster has
//! no duplicate, nobody is both in the call and in the lobby, an ended meeting is
//! empty, and a deadline the room names is honoured by `tick`.

#![no_main]

use std::collections::HashSet;

use gatehouse_signaling::admission::Attendee;
use gatehouse_signaling::lobby::ConnId;
use gatehouse_signaling::meeting::{LobbyBypass, Meeting, MeetingSettings};
use gatehouse_signaling::protocol::parse_client_message;
use gatehouse_signaling::room::{Effect, JoinRequest, Room};
use libfuzzer_sys::fuzz_target;

/// Who joins at the start: (participant id, staff subject or guest, invited).
const PEOPLE: [(&str, Option<&str>, bool); 4] = [
    ("p_olga", Some("olga"), true),
    ("p_ivan", Some("ivan"), true),
    ("g_invited", None, true),
    ("g_anon", None, false),
];

fn meeting() -> Meeting {
    Meeting {
        meeting_id: "m_fuzz".into(),
        organization: "acme".into(),
        organizer: "olga".into(),
        settings: MeetingSettings {
            title: "Clinic".into(),
            lobby_bypass: LobbyBypass::Invited,
            invited_staff: vec!["ivan".into()],
            lobby_timeout_secs: 120,
            ..Default::default()
        },
        created_at_ms: 0,
        ended_at_ms: None,
    }
}

fn request(who: usize, conn: ConnId) -> JoinRequest {
    let (id, staff, invited) = PEOPLE[who % PEOPLE.len()];
    JoinRequest {
        conn,
        participant_id: id.into(),
        display_name: id.to_uppercase(),
        attendee: match staff {
            Some(subject) => Attendee::Staff {
                subject: subject.into(),
                organization: "acme".into(),
            },
            None => Attendee::Guest { invited },
        },
    }
}

struct Call {
    room: Room,
    now: u64,
    /// Every connection the room was given (and one it never was, for frames from a
    /// socket that is not joined).
    known: HashSet<ConnId>,
    /// Current connection of each of `PEOPLE`.
    conns: [ConnId; 4],
    next_conn: ConnId,
}

impl Call {
    fn check(&self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::Send { conn, msg } => {
                    assert!(self.known.contains(conn), "frame to unknown connection {conn}");
                    serde_json::to_string(msg).expect("every server frame serialises");
                }
                Effect::Close { conn } | Effect::EnterCall { conn, .. } => {
                    assert!(self.known.contains(conn), "effect on unknown connection {conn}");
                }
                Effect::Record(event) => {
                    serde_json::to_string(event).expect("every event serialises");
                }
                Effect::LeaveCall { .. } | Effect::MeetingEnded => {}
            }
        }
        let roster = self.room.participants();
        let ids: HashSet<_> = roster.iter().map(|p| p.participant_id.as_str()).collect();
        assert_eq!(ids.len(), roster.len(), "a participant is on the roster twice");
        assert_eq!(roster.len(), self.room.call_len() + self.room.held_len());
        for entry in self.room.lobby_entries() {
            assert!(
                !ids.contains(entry.participant_id.as_str()),
                "{} is both in the call and in the lobby",
                entry.participant_id
            );
        }
        if self.room.meeting().is_ended() {
            assert!(self.room.is_empty(), "an ended meeting keeps people");
        }
    }

    fn step(&mut self, op: u8, frame: &[u8]) {
        let effects = match op {
            // A frame from one of the four, or from a socket that never joined.
            0..=4 => {
                let conn = self.conns.get(usize::from(op)).copied().unwrap_or(0);
                let Ok(text) = std::str::from_utf8(frame) else {
                    return; // a binary frame: refused by the socket before the room
                };
                let Ok(msg) = parse_client_message(text) else {
                    return;
                };
                match msg.into_media() {
                    // The meeting task checks the sender is in the call before the SFU.
                    Ok(_) => {
                        let who = self.room.participant_of(conn).map(str::to_owned);
                        std::hint::black_box(who.is_some_and(|p| self.room.in_call(&p)));
                        return;
                    }
                    Err(msg) => self.room.handle(self.now, conn, msg),
                }
            }
            // A socket drops.
            5 => {
                let who = usize::from(frame.first().copied().unwrap_or(0)) % PEOPLE.len();
                self.room.disconnected(self.now, self.conns[who])
            }
            // The shell's timer.
            6 => self.room.tick(self.now),
            // Someone joins again on a new socket (a reload, a rejoin after a drop).
            _ => {
                let who = usize::from(frame.first().copied().unwrap_or(0)) % PEOPLE.len();
                let conn = self.next_conn;
                self.next_conn += 1;
                self.known.insert(conn);
                self.conns[who] = conn;
                self.room.join(self.now, request(who, conn)).unwrap_or_default()
            }
        };
        self.check(&effects);
        if op == 6 {
            assert!(
                self.room.next_deadline().is_none_or(|d| d > self.now),
                "tick left a deadline that was due"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut call = Call {
        room: Room::with_seat_hold(meeting(), 30_000),
        now: 1_700_000_000_000,
        known: HashSet::from([0]),
        conns: [1, 2, 3, 4],
        next_conn: 5,
    };
    for who in 0..PEOPLE.len() {
        let conn = call.conns[who];
        call.known.insert(conn);
        let effects = call
            .room
            .join(call.now, request(who, conn))
            .expect("a fresh meeting admits");
        call.check(&effects);
    }
    for step in data.split(|&b| b == 0xFF).take(64) {
        let Some((&control, frame)) = step.split_first() else {
            continue;
        };
        call.now += u64::from(control >> 3) * 1000;
        call.step(control & 0x07, frame);
    }
    std::hint::black_box(call.room.participants());
});
