//! A room rebuilt after the gateway stopped without a goodbye (a crash, `kill -9`).
//!
//! The store keeps, in the same transaction as each participation event, who is in
//! a meeting's call or lobby right now ([`OpenAttendance`]). A clean stop closes every
//! attendance, so rows left at start-up are exactly the people a crash cut off. Guests
//! who were in the call get their seat held again, from the restart, as after any drop:
//! their admission survives and a `join` with the same token within the seat hold puts
//! them straight back into the call. Everyone else's attendance is closed in the log:
//! staff (every staff join is a new participant, so nothing could resume the seat) and
//! people in the lobby (they are placed from scratch when they come back).

use super::{HELD_MEDIA, Held, MEDIA_STATUS_BURST, MEDIA_STATUS_PER_SEC, Member, Room};
use crate::chat::chat_bucket;
use crate::lobby::ConnId;
use crate::meeting::Meeting;
use crate::protocol::{LeaveReason, ParticipantInfo, ParticipantKind};
use crate::ratelimit::TokenBucket;
use crate::room::{Effect, EventKind};

/// The connection a recovered seat is held on: none. Real connections count from 1,
/// and a held member's connection is never written to nor matched (see `Room::participant_of`).
const NO_CONN: ConnId = 0;

/// Someone whose attendance was open when the gateway last stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAttendance {
    pub participant: ParticipantInfo,
    /// In the call (since `joined`), or else waiting in the lobby (since `entered_lobby`).
    pub in_call: bool,
    /// When they entered the call or the lobby (Unix ms).
    pub since_ms: u64,
}

impl Room {
    /// The room of `meeting` as a crash left it, at `now` (the restart), and the
    /// participation events that close what cannot resume. Guests in the call are held
    /// until `now + seat_hold_ms`; the shell runs the room like any other from here
    /// (its timer gives the seats up at the hold's end, a `join` resumes one).
    pub fn recover(meeting: Meeting, seat_hold_ms: u64, now: u64, open: Vec<OpenAttendance>) -> (Room, Vec<Effect>) {
        let mut room = Room::with_seat_hold(meeting, seat_hold_ms);
        let mut out = Vec::new();
        let holds = seat_hold_ms > 0 && !room.meeting.is_ended();
        for a in open {
            let info = a.participant;
            if !a.in_call {
                let wait_ms = now.saturating_sub(a.since_ms);
                room.record(&mut out, &info, now, EventKind::LeftLobby { wait_ms });
            } else if info.kind == ParticipantKind::Guest && holds && room.member(&info.participant_id).is_none() {
                room.members.push(Member {
                    conn: NO_CONN,
                    may_present: room.meeting.settings.guests_may_present,
                    joined_at_ms: a.since_ms,
                    chat: chat_bucket(now),
                    media: Some((HELD_MEDIA, HELD_MEDIA)),
                    media_reports: TokenBucket::new(MEDIA_STATUS_BURST, MEDIA_STATUS_PER_SEC, now),
                    // The crash's moment is unknown: the hold counts from the restart,
                    // and a seat given up ends the attendance there.
                    held: Some(Held {
                        since_ms: now,
                        until_ms: now.saturating_add(seat_hold_ms),
                    }),
                    info,
                });
            } else {
                let in_call_ms = now.saturating_sub(a.since_ms);
                let reason = LeaveReason::Disconnected;
                room.record(&mut out, &info, now, EventKind::Left { reason, in_call_ms });
            }
        }
        (room, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Attendee;
    use crate::meeting::{LobbyBypass, MeetingSettings};
    use crate::protocol::ServerMessage;
    use crate::room::JoinRequest;

    const HOLD: u64 = 60_000;

    fn meeting() -> Meeting {
        Meeting {
            meeting_id: "m_1".into(),
            organization: "acme".into(),
            organizer: "olga".into(),
            settings: MeetingSettings {
                title: "Clinic".into(),
                lobby_bypass: LobbyBypass::OrganizerOnly,
                ..Default::default()
            },
            created_at_ms: 0,
            ended_at_ms: None,
        }
    }

    fn open(id: &str, kind: ParticipantKind, in_call: bool, since_ms: u64) -> OpenAttendance {
        OpenAttendance {
            participant: ParticipantInfo {
                participant_id: id.into(),
                display_name: id.to_uppercase(),
                kind,
                organizer: kind == ParticipantKind::Staff,
            },
            in_call,
            since_ms,
        }
    }

    fn guest(conn: ConnId, id: &str) -> JoinRequest {
        JoinRequest {
            conn,
            participant_id: id.into(),
            display_name: id.to_uppercase(),
            attendee: Attendee::Guest { invited: false },
        }
    }

    fn crash_state() -> Vec<OpenAttendance> {
        vec![
            open("p_staff", ParticipantKind::Staff, true, 1_000),
            open("p_guest", ParticipantKind::Guest, true, 2_000),
            open("p_wait", ParticipantKind::Guest, false, 3_000),
        ]
    }

    fn records(effects: &[Effect]) -> Vec<(String, u64, EventKind)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Record(ev) => Some((ev.participant_id.to_string(), ev.at_ms, ev.event.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn guests_in_the_call_are_held_and_the_rest_is_closed_in_the_log() {
        let (room, out) = Room::recover(meeting(), HOLD, 10_000, crash_state());
        assert!(room.is_held("p_guest"));
        assert_eq!((room.call_len(), room.held_len(), room.lobby_len()), (0, 1, 0));
        assert_eq!(room.next_deadline(), Some(10_000 + HOLD));
        let left = EventKind::Left {
            reason: LeaveReason::Disconnected,
            in_call_ms: 9_000,
        };
        assert_eq!(
            records(&out),
            vec![
                ("p_staff".into(), 10_000, left),
                ("p_wait".into(), 10_000, EventKind::LeftLobby { wait_ms: 7_000 }),
            ]
        );
        assert!(
            out.iter().all(|e| matches!(e, Effect::Record(_))),
            "nobody to send to: {out:?}"
        );
    }

    #[test]
    fn a_held_guest_goes_straight_back_into_the_call() {
        let (mut room, _) = Room::recover(meeting(), HOLD, 10_000, crash_state());
        let out = room.join(20_000, guest(7, "p_guest")).unwrap();
        let entered: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Effect::EnterCall {
                    participant, resumed, ..
                } => Some((participant.participant_id.clone(), *resumed)),
                _ => None,
            })
            .collect();
        assert_eq!(entered, vec![("p_guest".into(), true)]);
        assert!(
            !out.iter().any(|e| matches!(e, Effect::Record(_))),
            "the attendance goes on"
        );
        assert!(!room.is_held("p_guest") && room.in_call("p_guest"));
        assert_eq!(room.next_deadline(), None);
    }

    #[test]
    fn a_guest_who_waited_in_the_lobby_waits_again() {
        let (mut room, _) = Room::recover(meeting(), HOLD, 10_000, crash_state());
        let out = room.join(20_000, guest(7, "p_wait")).unwrap();
        assert!(out.iter().any(|e| matches!(
            e,
            Effect::Send {
                conn: 7,
                msg: ServerMessage::Lobby { .. }
            }
        )));
        assert!(!room.in_call("p_wait"));
        assert_eq!(room.lobby_len(), 1);
    }

    #[test]
    fn a_seat_nobody_comes_back_to_ends_at_the_restart() {
        let (mut room, _) = Room::recover(meeting(), HOLD, 10_000, crash_state());
        let out = room.tick(10_000 + HOLD);
        let left = EventKind::Left {
            reason: LeaveReason::Disconnected,
            in_call_ms: 8_000,
        };
        assert_eq!(records(&out), vec![("p_guest".into(), 10_000, left)]);
        assert!(room.is_empty());
        // Too late now: the lobby rules apply again.
        room.join(10_001 + HOLD, guest(8, "p_guest")).unwrap();
        assert!(!room.in_call("p_guest"));
    }

    #[test]
    fn without_a_seat_hold_or_in_an_ended_meeting_nothing_is_held() {
        let (room, out) = Room::recover(meeting(), 0, 10_000, crash_state());
        assert!(room.is_empty());
        assert_eq!(records(&out).len(), 3);
        let mut ended = meeting();
        ended.ended_at_ms = Some(5_000);
        let (room, out) = Room::recover(ended, HOLD, 10_000, crash_state());
        assert!(room.is_empty());
        assert_eq!(records(&out).len(), 3);
    }
}
