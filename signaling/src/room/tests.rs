//! The room state machine, driven by hand: no IO, time passed in.

use super::*;
use crate::meeting::{LobbyBypass, MeetingSettings};

fn meeting(rule: LobbyBypass) -> Meeting {
    Meeting {
        meeting_id: "m_1".into(),
        organization: "acme".into(),
        organizer: "olga".into(),
        settings: MeetingSettings {
            title: "Clinic".into(),
            lobby_bypass: rule,
            invited_staff: vec!["ivan".into()],
            lobby_timeout_secs: 60,
            ..Default::default()
        },
        created_at_ms: 0,
        ended_at_ms: None,
    }
}

fn staff(conn: ConnId, subject: &str) -> JoinRequest {
    JoinRequest {
        conn,
        participant_id: format!("p_{subject}").into(),
        display_name: subject.to_uppercase(),
        attendee: Attendee::Staff {
            subject: subject.into(),
            organization: "acme".into(),
        },
    }
}

fn guest(conn: ConnId, id: &str, invited: bool) -> JoinRequest {
    JoinRequest {
        conn,
        participant_id: id.into(),
        display_name: format!("Guest {id}"),
        attendee: Attendee::Guest { invited },
    }
}

/// Frames sent to `conn`, in order.
fn sent(effects: &[Effect], conn: ConnId) -> Vec<ServerMessage> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { conn: c, msg } if *c == conn => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn entered(effects: &[Effect]) -> Vec<ParticipantId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::EnterCall { participant, .. } => Some(participant.participant_id.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(effects: &[Effect], conn: ConnId) -> Option<ErrorCode> {
    sent(effects, conn).into_iter().find_map(|m| match m {
        ServerMessage::Error { code, .. } => Some(code),
        _ => None,
    })
}

fn events(effects: &[Effect]) -> Vec<EventKind> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(ev) => Some(ev.event.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn organiser_enters_and_guest_waits_then_is_admitted() {
    let mut room = Room::new(meeting(LobbyBypass::Invited));
    let fx = room.join(0, staff(1, "olga")).unwrap();
    assert_eq!(entered(&fx), ["p_olga"]);
    assert!(matches!(&sent(&fx, 1)[0], ServerMessage::Joined { you, .. } if you.organizer));

    let fx = room.join(1000, guest(2, "p_g", false)).unwrap();
    assert!(entered(&fx).is_empty());
    assert!(sent(&fx, 2).contains(&ServerMessage::Lobby {
        status: LobbyStatus::WaitingForAdmission,
        timeout_secs: 60
    }));
    let to_staff = sent(&fx, 1);
    assert!(
        matches!(&to_staff[..], [ServerMessage::LobbyUpdate { entries }] if entries.len() == 1 && entries[0].waiting_since_ms == 1000 && !entries[0].invited)
    );

    let fx = room.handle(
        4000,
        1,
        ClientMessage::Admit {
            participant_id: "p_g".into(),
        },
    );
    assert_eq!(entered(&fx), ["p_g"]);
    assert!(events(&fx).contains(&EventKind::Admitted {
        wait_ms: 3000,
        by: Some("p_olga".into())
    }));
    assert!(
        sent(&fx, 1).iter().any(
            |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.participant_id == "p_g")
        )
    );
    assert!(sent(&fx, 1).contains(&ServerMessage::LobbyUpdate { entries: vec![] }));
    assert!(room.in_call("p_g"));
}

#[test]
fn guests_wait_for_the_host_then_bypass_when_the_host_arrives() {
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    let fx = room.join(0, guest(2, "p_a", false)).unwrap();
    assert!(sent(&fx, 2).contains(&ServerMessage::Lobby {
        status: LobbyStatus::WaitingForHost,
        timeout_secs: 60
    }));
    room.join(0, guest(3, "p_b", true)).unwrap();
    let fx = room.join(500, staff(1, "sam")).unwrap();
    assert_eq!(entered(&fx), ["p_sam", "p_a", "p_b"]);
    assert_eq!(room.lobby_len(), 0);
}

#[test]
fn host_arrival_switches_waiters_to_admission_and_departure_back() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, guest(2, "p_a", true)).unwrap();
    let fx = room.join(0, staff(1, "olga")).unwrap();
    assert!(entered(&fx) == ["p_olga"]);
    assert!(sent(&fx, 2).contains(&ServerMessage::Lobby {
        status: LobbyStatus::WaitingForAdmission,
        timeout_secs: 60
    }));
    let fx = room.handle(10, 1, ClientMessage::Leave);
    assert!(sent(&fx, 2).contains(&ServerMessage::Lobby {
        status: LobbyStatus::WaitingForHost,
        timeout_secs: 60
    }));
    assert!(sent(&fx, 1).contains(&ServerMessage::Left {
        reason: LeaveReason::Left,
        message: None
    }));
    assert!(fx.contains(&Effect::Close { conn: 1 }));
}

#[test]
fn staff_who_may_not_bypass_wait_too_and_cannot_manage_from_the_lobby() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(3, "p_g", false)).unwrap();
    let fx = room.join(0, staff(2, "sam")).unwrap();
    assert!(entered(&fx).is_empty());
    let fx = room.handle(
        1,
        2,
        ClientMessage::Admit {
            participant_id: "p_g".into(),
        },
    );
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::NotInCall));
    let fx = room.handle(
        1,
        1,
        ClientMessage::Admit {
            participant_id: "p_sam".into(),
        },
    );
    assert_eq!(entered(&fx), ["p_sam"]);
    // Now in the call, sam sees the lobby and may admit.
    assert!(
        sent(&fx, 2)
            .iter()
            .any(|m| matches!(m, ServerMessage::LobbyUpdate { entries } if entries.len() == 1))
    );
}

#[test]
fn admission_matrix_through_the_room() {
    use LobbyBypass::*;
    // (rule, who, enters directly with the organiser present)
    let cases = [
        (OrganizerOnly, [false, false, false, false]),
        (Invited, [true, false, true, false]),
        (Organization, [true, true, false, false]),
        (Everyone, [true, true, true, true]),
    ];
    for (rule, expected) in cases {
        let mut room = Room::new(meeting(rule));
        assert_eq!(
            entered(&room.join(0, staff(1, "olga")).unwrap()),
            ["p_olga"],
            "{rule:?}: organiser"
        );
        let who = [
            staff(2, "ivan"),
            staff(3, "sam"),
            guest(4, "p_inv", true),
            guest(5, "p_anon", false),
        ];
        for (req, want) in who.into_iter().zip(expected) {
            let id = req.participant_id.clone();
            let fx = room.join(0, req).unwrap();
            assert_eq!(!entered(&fx).is_empty(), want, "{rule:?}: {id}");
        }
    }
}

#[test]
fn only_staff_in_call_manage_and_guests_cannot() {
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_a", false)).unwrap();
    room.join(0, guest(3, "p_b", false)).unwrap();
    for msg in [
        ClientMessage::Admit {
            participant_id: "p_b".into(),
        },
        ClientMessage::AdmitAll,
        ClientMessage::Deny {
            participant_id: "p_b".into(),
            reason: None,
        },
        ClientMessage::Remove {
            participant_id: "p_b".into(),
            reason: None,
        },
        ClientMessage::EndMeeting,
    ] {
        let fx = room.handle(0, 2, msg.clone());
        assert_eq!(error_code(&fx, 2), Some(ErrorCode::Forbidden), "{msg:?}");
    }
    let fx = room.handle(
        0,
        1,
        ClientMessage::Remove {
            participant_id: "p_olga".into(),
            reason: None,
        },
    );
    assert_eq!(error_code(&fx, 1), Some(ErrorCode::BadRequest));
    let fx = room.handle(
        0,
        1,
        ClientMessage::Admit {
            participant_id: "p_nobody".into(),
        },
    );
    assert_eq!(error_code(&fx, 1), Some(ErrorCode::NotFound));
}

#[test]
fn deny_with_reason_reaches_the_guest_and_is_recorded() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(100, guest(2, "p_g", false)).unwrap();
    let fx = room.handle(
        600,
        1,
        ClientMessage::Deny {
            participant_id: "p_g".into(),
            reason: Some(" Wrong clinic ".into()),
        },
    );
    assert_eq!(
        sent(&fx, 2),
        [ServerMessage::Left {
            reason: LeaveReason::Denied,
            message: Some("Wrong clinic".into())
        }]
    );
    assert!(fx.contains(&Effect::Close { conn: 2 }));
    assert!(events(&fx).contains(&EventKind::Denied {
        wait_ms: 500,
        reason: Some("Wrong clinic".into())
    }));
    assert_eq!(sent(&fx, 1), [ServerMessage::LobbyUpdate { entries: vec![] }]);
    let fx = room.handle(
        700,
        1,
        ClientMessage::Deny {
            participant_id: "p_x".into(),
            reason: Some("x".repeat(201)),
        },
    );
    assert_eq!(error_code(&fx, 1), Some(ErrorCode::BadRequest));
}

#[test]
fn lobby_timeout_removes_and_explains() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, guest(2, "p_g", false)).unwrap();
    assert_eq!(room.next_deadline(), Some(60_000));
    assert!(room.tick(59_999).is_empty());
    let fx = room.tick(60_000);
    assert!(
        matches!(&sent(&fx, 2)[..], [ServerMessage::Left { reason: LeaveReason::LobbyTimeout, message: Some(m) }] if m.contains("1 minute"))
    );
    assert!(events(&fx).contains(&EventKind::LobbyTimeout { wait_ms: 60_000 }));
    assert!(room.is_empty());
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn chat_only_in_call_with_sender_and_server_time() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    let fx = room.handle(5, 2, ClientMessage::Chat { text: "hello?".into() });
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::NotInCall));
    assert!(sent(&fx, 1).is_empty(), "staff never see lobby chat");
    room.handle(
        6,
        1,
        ClientMessage::Admit {
            participant_id: "p_g".into(),
        },
    );
    let fx = room.handle(7, 2, ClientMessage::Chat { text: " hi ".into() });
    for conn in [1, 2] {
        assert!(matches!(&sent(&fx, conn)[..], [ServerMessage::Chat { message }]
            if message.text == "hi" && message.participant_id == "p_g" && message.display_name == "Guest p_g" && message.sent_at_ms == 7 && message.seq == 1));
    }
    let fx = room.handle(8, 2, ClientMessage::Leave);
    assert!(sent(&fx, 1).iter().any(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Left } if participant_id == "p_g")));
    let fx = room.handle(
        9,
        2,
        ClientMessage::Chat {
            text: "still here?".into(),
        },
    );
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::NotInCall));
    assert!(sent(&fx, 1).is_empty(), "messages after leaving go nowhere");
}

#[test]
fn chat_rate_size_and_switch() {
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    room.join(0, staff(1, "olga")).unwrap();
    for _ in 0..crate::chat::CHAT_BURST {
        assert_eq!(
            error_code(&room.handle(0, 1, ClientMessage::Chat { text: "x".into() }), 1),
            None
        );
    }
    assert_eq!(
        error_code(&room.handle(0, 1, ClientMessage::Chat { text: "x".into() }), 1),
        Some(ErrorCode::RateLimited)
    );
    assert_eq!(
        error_code(&room.handle(5000, 1, ClientMessage::Chat { text: "x".repeat(5000) }), 1),
        Some(ErrorCode::MessageTooLong)
    );
    let mut m = room.meeting().clone();
    m.settings.chat_enabled = false;
    room.update_meeting(m);
    assert_eq!(
        error_code(&room.handle(9000, 1, ClientMessage::Chat { text: "x".into() }), 1),
        Some(ErrorCode::ChatDisabled)
    );
}

#[test]
fn disconnect_cleans_up_call_and_lobby() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    let fx = room.disconnected(10, 2);
    assert!(sent(&fx, 2).is_empty(), "a dropped socket is not written to");
    assert_eq!(sent(&fx, 1), [ServerMessage::LobbyUpdate { entries: vec![] }]);
    assert!(events(&fx).contains(&EventKind::LeftLobby { wait_ms: 10 }));
    let fx = room.disconnected(20, 1);
    assert!(fx.contains(&Effect::LeaveCall {
        participant_id: "p_olga".into()
    }));
    assert_eq!((room.call_len(), room.lobby_len()), (0, 0));
    // Staff get a new participant id on every join: no seat is held for them.
    assert!(room.is_empty(), "no seat held for staff");
    assert!(room.disconnected(30, 1).is_empty(), "a second disconnect is a no-op");
}

#[test]
fn rejoin_replaces_the_old_connection() {
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    let fx = room.join(5, guest(3, "p_g", false)).unwrap();
    assert!(sent(&fx, 2).contains(&ServerMessage::Left {
        reason: LeaveReason::Replaced,
        message: None
    }));
    assert!(fx.contains(&Effect::Close { conn: 2 }));
    assert_eq!(entered(&fx), ["p_g"]);
    assert!(sent(&fx, 1).is_empty(), "others see no leave and rejoin: {fx:?}");
    assert!(events(&fx).is_empty(), "the attendance goes on");
    // The stale connection's late disconnect does not remove the new one.
    assert!(room.disconnected(6, 2).is_empty());
    assert!(room.in_call("p_g"));
}

#[test]
fn remove_and_end_meeting() {
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, staff(2, "sam")).unwrap();
    room.join(0, guest(3, "p_g", false)).unwrap();
    let fx = room.handle(
        1,
        2,
        ClientMessage::Remove {
            participant_id: "p_olga".into(),
            reason: None,
        },
    );
    assert_eq!(
        error_code(&fx, 2),
        Some(ErrorCode::Forbidden),
        "organiser cannot be removed"
    );
    let fx = room.handle(
        1,
        1,
        ClientMessage::Remove {
            participant_id: "p_g".into(),
            reason: Some("bye".into()),
        },
    );
    assert_eq!(
        sent(&fx, 3)[0],
        ServerMessage::Left {
            reason: LeaveReason::Removed,
            message: Some("bye".into())
        }
    );
    assert!(fx.contains(&Effect::LeaveCall {
        participant_id: "p_g".into()
    }));
    room.join(2, guest(4, "p_h", false)).unwrap();
    let mut m = room.meeting().clone();
    m.settings.lobby_bypass = LobbyBypass::OrganizerOnly;
    room.update_meeting(m);
    room.join(2, guest(5, "p_lobby", false)).unwrap();
    let fx = room.handle(3, 2, ClientMessage::EndMeeting);
    for conn in [1, 2, 4, 5] {
        assert!(
            sent(&fx, conn).contains(&ServerMessage::Left {
                reason: LeaveReason::MeetingEnded,
                message: None
            }),
            "conn {conn}"
        );
        assert!(fx.contains(&Effect::Close { conn }));
    }
    assert!(fx.contains(&Effect::MeetingEnded));
    assert!(room.is_empty());
    assert_eq!(
        room.join(4, guest(6, "p_late", false)).unwrap_err().code,
        ErrorCode::MeetingEnded
    );
}

#[test]
fn capacity_counts_call_and_lobby() {
    let mut m = meeting(LobbyBypass::OrganizerOnly);
    m.settings.max_participants = 2;
    let mut room = Room::new(m);
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_a", false)).unwrap();
    assert_eq!(
        room.join(0, guest(3, "p_b", false)).unwrap_err().code,
        ErrorCode::MeetingFull
    );
}

#[test]
fn media_and_repeated_join_frames_are_refused_outside_the_call() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, guest(2, "p_g", false)).unwrap();
    let fx = room.handle(0, 2, ClientMessage::SubscribeAnswer { sdp: "v=0".into() });
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::NotInCall));
    let fx = room.handle(
        0,
        2,
        ClientMessage::Join {
            protocol: 1,
            token: "t".into(),
            meeting_id: None,
        },
    );
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::AlreadyJoined));
    let fx = room.handle(0, 99, ClientMessage::Ping { nonce: 1 });
    assert_eq!(error_code(&fx, 99), Some(ErrorCode::NotInCall), "unknown connection");
    let fx = room.handle(0, 2, ClientMessage::Ping { nonce: 7 });
    assert_eq!(sent(&fx, 2), [ServerMessage::Pong { nonce: 7 }]);
}

#[test]
fn the_organiser_is_never_locked_out_by_a_full_lobby() {
    let mut m = meeting(LobbyBypass::OrganizerOnly);
    m.settings.max_participants = 2;
    let mut room = Room::new(m);
    room.join(0, guest(2, "p_a", false)).unwrap();
    room.join(0, guest(3, "p_b", false)).unwrap();
    assert_eq!(entered(&room.join(0, staff(1, "olga")).unwrap()), ["p_olga"]);
}

#[test]
fn ending_tells_the_lobby_only_that_the_meeting_ended() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    let fx = room.handle(1, 1, ClientMessage::EndMeeting);
    assert_eq!(
        sent(&fx, 2),
        [ServerMessage::Left {
            reason: LeaveReason::MeetingEnded,
            message: None
        }]
    );
}

#[test]
fn a_dropped_guest_keeps_the_seat_for_the_grace_period() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    room.handle(
        10,
        1,
        ClientMessage::Admit {
            participant_id: "p_g".into(),
        },
    );
    room.disconnected(20, 2);
    assert!(room.in_call("p_g") && room.is_held("p_g"));
    // Back within the grace period: straight into the call.
    let fx = room.join(20 + REJOIN_GRACE_MS - 1, guest(3, "p_g", false)).unwrap();
    assert_eq!(entered(&fx), ["p_g"]);
    // Dropped again, back too late: the lobby, like anyone else.
    room.disconnected(100_000, 3);
    let fx = room.join(100_000 + REJOIN_GRACE_MS, guest(4, "p_g", false)).unwrap();
    assert!(entered(&fx).is_empty());
    assert!(sent(&fx, 4).iter().any(|m| matches!(m, ServerMessage::Lobby { .. })));
}

#[test]
fn a_held_seat_keeps_the_room_when_the_last_person_drops() {
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    assert!(room.in_call("p_g"));
    room.handle(500, 1, ClientMessage::Leave);
    // The guest is alone in the call now; their network blips.
    room.disconnected(1_000, 2);
    // Nobody is connected, but the seat is held: the room must stay.
    assert!(!room.is_empty());
    assert_eq!(room.next_deadline(), Some(1_000 + REJOIN_GRACE_MS));
    // Nothing expires before the deadline.
    room.tick(1_000 + REJOIN_GRACE_MS - 1);
    assert!(!room.is_empty());
    // At the deadline the seat is given up and the room may go.
    room.tick(1_000 + REJOIN_GRACE_MS);
    assert!(room.is_empty());
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn a_guest_alone_in_the_call_comes_back_from_a_drop_without_the_lobby() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    room.handle(
        10,
        1,
        ClientMessage::Admit {
            participant_id: "p_g".into(),
        },
    );
    room.handle(20, 1, ClientMessage::Leave);
    room.disconnected(30, 2);
    assert!(!room.is_empty());
    // No host is there to admit anyone, yet the guest goes straight back in.
    let fx = room.join(40, guest(3, "p_g", false)).unwrap();
    assert_eq!(entered(&fx), ["p_g"]);
}

#[test]
fn the_earliest_of_lobby_timeout_and_held_seat_is_the_next_deadline() {
    let mut room = Room::with_seat_hold(meeting(LobbyBypass::OrganizerOnly), 30_000);
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_in", true)).unwrap();
    room.handle(0, 1, ClientMessage::AdmitAll);
    room.disconnected(10, 2);
    // The seat ends at 10 + 30 s; a guest who waits from 0 times out at 60 s.
    room.join(0, guest(3, "p_g", false)).unwrap();
    assert_eq!(room.next_deadline(), Some(30_010));
    room.tick(30_010);
    assert_eq!(room.next_deadline(), Some(60_000));
    // An ended meeting holds no seat.
    let mut out = Vec::new();
    room.end(20, &mut out);
    assert!(room.is_empty());
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn only_a_dropped_connection_keeps_a_seat() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_left", false)).unwrap();
    room.join(0, guest(3, "p_removed", false)).unwrap();
    room.handle(1, 1, ClientMessage::AdmitAll);
    room.handle(2, 2, ClientMessage::Leave);
    room.handle(
        2,
        1,
        ClientMessage::Remove {
            participant_id: "p_removed".into(),
            reason: None,
        },
    );
    assert!(
        entered(&room.join(3, guest(4, "p_left", false)).unwrap()).is_empty(),
        "left on purpose"
    );
    assert!(
        entered(&room.join(3, guest(5, "p_removed", false)).unwrap()).is_empty(),
        "removed by staff"
    );
    // A second tab while still in the call keeps the seat too.
    room.join(4, guest(6, "p_tab", false)).unwrap();
    room.handle(
        5,
        1,
        ClientMessage::Admit {
            participant_id: "p_tab".into(),
        },
    );
    assert_eq!(entered(&room.join(6, guest(7, "p_tab", false)).unwrap()), ["p_tab"]);
}

#[test]
fn staff_admit_and_deny_from_the_queue_without_joining() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, guest(2, "p_a", false)).unwrap();
    room.join(0, guest(3, "p_b", false)).unwrap();
    assert_eq!(room.lobby_entries().len(), 2);
    let fx = room
        .lobby_action_from_queue(500, "staff:olga", LobbyAction::Admit("p_a".into()))
        .unwrap();
    assert_eq!(entered(&fx), ["p_a"], "admitted with no host in the call");
    assert!(events(&fx).contains(&EventKind::Admitted {
        wait_ms: 500,
        by: Some("staff:olga".into())
    }));
    let fx = room
        .lobby_action_from_queue(
            600,
            "staff:olga",
            LobbyAction::Deny("p_b".into(), Some("Wrong day".into())),
        )
        .unwrap();
    assert_eq!(
        sent(&fx, 3),
        [ServerMessage::Left {
            reason: LeaveReason::Denied,
            message: Some("Wrong day".into())
        }]
    );
    assert_eq!(
        room.lobby_action_from_queue(700, "staff:olga", LobbyAction::Admit("p_b".into()))
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert!(room.lobby_entries().is_empty());
}

fn media(state: crate::protocol::MediaConnectionState, path: Option<crate::protocol::MediaPath>) -> ConnectionMedia {
    ConnectionMedia { state, path }
}

#[test]
fn media_status_is_relayed_on_change_told_to_newcomers_and_bounded() {
    use crate::protocol::{MediaConnectionState as S, MediaPath};
    let mut room = Room::new(meeting(LobbyBypass::Everyone));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    assert!(room.in_call("p_g"));
    let failed = ClientMessage::MediaStatus {
        publisher: media(S::Failed, None),
        subscriber: media(S::Connected, Some(MediaPath::Tcp)),
    };
    let fx = room.handle(100, 2, failed.clone());
    let expected = ServerMessage::ParticipantMedia {
        participant_id: "p_g".into(),
        publisher: media(S::Failed, None),
        subscriber: media(S::Connected, Some(MediaPath::Tcp)),
    };
    assert_eq!(sent(&fx, 1), std::slice::from_ref(&expected), "the others hear it");
    assert!(sent(&fx, 2).is_empty(), "not echoed to the sender");
    // The same again is coalesced: nothing relayed.
    assert!(room.handle(200, 2, failed.clone()).is_empty());

    // Someone entering later hears it after `admitted` (EnterCall).
    let fx = room.join(300, staff(3, "ivan")).unwrap();
    let enter = fx.iter().position(|e| matches!(e, Effect::EnterCall { .. })).unwrap();
    let told = fx
        .iter()
        .position(|e| matches!(e, Effect::Send { conn: 3, msg } if *msg == expected))
        .expect("the newcomer is told");
    assert!(told > enter);

    // A flood is refused with a typed error, and a lobby participant may not report.
    let mut refused = 0;
    for i in 0..30u64 {
        let state = if i % 2 == 0 { S::Connecting } else { S::Connected };
        let fx = room.handle(
            400,
            2,
            ClientMessage::MediaStatus {
                publisher: media(state, None),
                subscriber: media(S::New, None),
            },
        );
        if error_code(&fx, 2) == Some(ErrorCode::RateLimited) {
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused}");
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_w", false)).unwrap();
    assert!(!room.in_call("p_w"));
    assert_eq!(error_code(&room.handle(10, 2, failed), 2), Some(ErrorCode::NotInCall));
}

// ---- a guest's dropped connection: held, resumed, expired ----

const HOLD: u64 = 10_000;

/// Olga (staff, conn 1) and guest p_g (conn 2) in the call; p_g entered at 10.
fn call_with_guest() -> Room {
    let mut room = Room::with_seat_hold(meeting(LobbyBypass::OrganizerOnly), HOLD);
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    room.handle(
        10,
        1,
        ClientMessage::Admit {
            participant_id: "p_g".into(),
        },
    );
    assert!(room.in_call("p_g"));
    room
}

const DROPPED: ConnectionMedia = ConnectionMedia {
    state: crate::protocol::MediaConnectionState::Disconnected,
    path: None,
};

fn left_frames(effects: &[Effect], conn: ConnId) -> Vec<(ParticipantId, LeaveReason)> {
    sent(effects, conn)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::ParticipantLeft { participant_id, reason } => Some((participant_id, reason)),
            _ => None,
        })
        .collect()
}

fn roster_frames(effects: &[Effect], conn: ConnId) -> usize {
    sent(effects, conn)
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::ParticipantLeft { .. } | ServerMessage::ParticipantJoined { .. }
            )
        })
        .count()
}

fn media_stopped(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::LeaveCall { .. }))
}

#[test]
fn a_dropped_guest_is_held_and_others_see_only_its_media_go() {
    let mut room = call_with_guest();
    let fx = room.disconnected(100, 2);
    assert_eq!(
        sent(&fx, 1),
        [ServerMessage::ParticipantMedia {
            participant_id: "p_g".into(),
            publisher: DROPPED,
            subscriber: DROPPED,
        }],
        "no participant_left, only its media state"
    );
    assert!(sent(&fx, 2).is_empty(), "a dropped socket is not written to");
    assert!(!media_stopped(&fx), "its media is kept while held");
    assert!(events(&fx).is_empty(), "nothing recorded yet");
    assert!(room.in_call("p_g") && room.is_held("p_g"));
    assert_eq!(room.participant_of(2), None, "the dropped connection speaks for nobody");
    assert_eq!((room.call_len(), room.held_len()), (1, 1));
    assert_eq!(room.participants().len(), 2, "still on the roster");
    assert_eq!(room.next_deadline(), Some(100 + HOLD));
    assert!(!room.is_empty());
    // Frames from the dead connection (none should come) are refused.
    let fx = room.handle(101, 2, ClientMessage::Chat { text: "ghost".into() });
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::NotInCall));
    // Broadcasts skip the held guest.
    let fx = room.handle(
        102,
        1,
        ClientMessage::Chat {
            text: "still there?".into(),
        },
    );
    assert!(sent(&fx, 2).is_empty());
    assert_eq!(sent(&fx, 1).len(), 1);
}

#[test]
fn a_guest_back_within_the_hold_resumes_and_others_see_nothing() {
    let mut room = call_with_guest();
    room.disconnected(100, 2);
    let fx = room.join(100 + HOLD - 1, guest(4, "p_g", false)).unwrap();
    // The new socket gets what any entry into the call gets.
    assert!(matches!(&sent(&fx, 4)[0], ServerMessage::Joined { you, .. } if you.participant_id == "p_g"));
    let enter: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::EnterCall {
                conn,
                others,
                resumed,
                may_present,
                ..
            } => Some((*conn, others.len(), *resumed, *may_present)),
            _ => None,
        })
        .collect();
    assert_eq!(enter, [(4, 1, true, false)], "admitted with olga, media replaced");
    // Others: nothing at all. The dead socket: nothing either.
    assert!(sent(&fx, 1).is_empty(), "{fx:?}");
    assert!(sent(&fx, 2).is_empty());
    assert!(!fx.contains(&Effect::Close { conn: 2 }));
    assert!(!media_stopped(&fx) && events(&fx).is_empty());
    assert!(room.in_call("p_g") && !room.is_held("p_g"));
    assert_eq!(room.participant_of(4), Some("p_g"));
    assert_eq!(room.next_deadline(), None, "no hold left to expire");
    assert!(room.tick(100 + HOLD * 5).is_empty());
    // And the attendance simply goes on.
    let fx = room.handle(200 + HOLD, 4, ClientMessage::Chat { text: "back".into() });
    assert_eq!(sent(&fx, 1).len(), 1);
    let fx = room.handle(
        201 + HOLD,
        4,
        ClientMessage::MediaStatus {
            publisher: ConnectionMedia::NEW,
            subscriber: ConnectionMedia::NEW,
        },
    );
    assert_eq!(sent(&fx, 1).len(), 1, "its new media state replaces the dropped one");
}

#[test]
fn a_hold_that_runs_out_tells_others_once() {
    let mut room = call_with_guest();
    room.disconnected(100, 2);
    assert!(room.tick(100 + HOLD - 1).is_empty());
    let fx = room.tick(100 + HOLD);
    assert_eq!(left_frames(&fx, 1), [("p_g".into(), LeaveReason::Disconnected)]);
    assert_eq!(sent(&fx, 1).len(), 1);
    assert!(sent(&fx, 2).is_empty());
    assert!(fx.contains(&Effect::LeaveCall {
        participant_id: "p_g".into()
    }));
    // Recorded as having left when the connection dropped.
    let rec: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Record(ev) => Some((ev.at_ms, ev.event.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        rec,
        [(
            100,
            EventKind::Left {
                reason: LeaveReason::Disconnected,
                in_call_ms: 90
            }
        )]
    );
    assert!(!room.in_call("p_g"));
    assert_eq!(room.next_deadline(), None);
    assert!(room.tick(100 + HOLD * 2).is_empty(), "exactly once");
    assert!(room.disconnected(100 + HOLD * 2, 2).is_empty());
    // Too late: the lobby, like anyone else.
    let fx = room.join(100 + HOLD * 3, guest(5, "p_g", false)).unwrap();
    assert!(entered(&fx).is_empty());
    assert_eq!(roster_frames(&fx, 1), 0);
}

#[test]
fn a_join_after_the_hold_but_before_the_timer_ends_the_hold_first() {
    let mut room = call_with_guest();
    room.disconnected(100, 2);
    // The shell's timer is late: the join itself gives the seat up, then places them.
    let fx = room.join(100 + HOLD, guest(4, "p_g", false)).unwrap();
    assert_eq!(left_frames(&fx, 1), [("p_g".into(), LeaveReason::Disconnected)]);
    assert!(media_stopped(&fx));
    assert!(entered(&fx).is_empty());
    assert!(sent(&fx, 4).iter().any(|m| matches!(m, ServerMessage::Lobby { .. })));
    assert!(room.tick(100 + HOLD * 2).is_empty());
}

#[test]
fn a_drop_then_a_leave_from_the_new_socket_is_one_departure() {
    let mut room = call_with_guest();
    let mut to_olga = Vec::new();
    to_olga.extend(room.disconnected(100, 2));
    to_olga.extend(room.join(200, guest(4, "p_g", false)).unwrap());
    let fx = room.handle(300, 4, ClientMessage::Leave);
    assert_eq!(
        sent(&fx, 4),
        [ServerMessage::Left {
            reason: LeaveReason::Left,
            message: None
        }]
    );
    to_olga.extend(fx);
    assert_eq!(left_frames(&to_olga, 1), [("p_g".into(), LeaveReason::Left)]);
    assert_eq!(
        roster_frames(&to_olga, 1),
        1,
        "no participant_joined, one participant_left"
    );
    assert_eq!(
        events(&to_olga),
        [EventKind::Left {
            reason: LeaveReason::Left,
            in_call_ms: 290
        }],
        "one attendance, the outage inside it"
    );
    assert!(room.tick(100 + HOLD * 2).is_empty(), "the old hold is gone");
}

#[test]
fn a_double_drop_holds_once_and_a_late_drop_of_the_old_socket_is_ignored() {
    let mut room = call_with_guest();
    assert!(!room.disconnected(100, 2).is_empty());
    assert!(room.disconnected(150, 2).is_empty(), "the second drop is a no-op");
    assert_eq!(room.next_deadline(), Some(100 + HOLD), "the hold does not move");
    room.join(200, guest(4, "p_g", false)).unwrap();
    assert!(room.disconnected(250, 2).is_empty(), "the old socket's late drop");
    assert!(!room.is_held("p_g"));
    // Dropped again on the new socket: held again, from this drop; others already
    // know its media is down, so they are told nothing new.
    let fx = room.disconnected(300, 4);
    assert!(sent(&fx, 1).is_empty(), "{fx:?}");
    assert_eq!(room.next_deadline(), Some(300 + HOLD));
    let fx = room.tick(300 + HOLD);
    assert_eq!(left_frames(&fx, 1), [("p_g".into(), LeaveReason::Disconnected)]);
}

#[test]
fn a_held_guest_removed_by_staff_leaves_at_once_without_a_frame_to_its_dead_socket() {
    let mut room = call_with_guest();
    room.disconnected(100, 2);
    let fx = room.handle(
        200,
        1,
        ClientMessage::Remove {
            participant_id: "p_g".into(),
            reason: Some("gone quiet".into()),
        },
    );
    assert_eq!(left_frames(&fx, 1), [("p_g".into(), LeaveReason::Removed)]);
    assert!(sent(&fx, 2).is_empty() && !fx.contains(&Effect::Close { conn: 2 }));
    assert!(media_stopped(&fx));
    assert!(events(&fx).contains(&EventKind::Left {
        reason: LeaveReason::Removed,
        in_call_ms: 90
    }));
    assert!(!room.in_call("p_g") && room.next_deadline().is_none());
    assert!(
        room.tick(100 + HOLD).is_empty(),
        "no second departure at the old deadline"
    );
    // Removed means the lobby on the way back.
    assert!(entered(&room.join(300, guest(4, "p_g", false)).unwrap()).is_empty());
}

#[test]
fn ending_the_meeting_gives_up_held_seats() {
    let mut room = call_with_guest();
    room.disconnected(100, 2);
    let fx = room.handle(200, 1, ClientMessage::EndMeeting);
    assert_eq!(
        sent(&fx, 1),
        [ServerMessage::Left {
            reason: LeaveReason::MeetingEnded,
            message: None
        }]
    );
    assert!(sent(&fx, 2).is_empty() && !fx.contains(&Effect::Close { conn: 2 }));
    assert!(fx.contains(&Effect::LeaveCall {
        participant_id: "p_g".into()
    }));
    assert!(events(&fx).contains(&EventKind::Left {
        reason: LeaveReason::MeetingEnded,
        in_call_ms: 90
    }));
    assert!(room.is_empty() && room.next_deadline().is_none());
    assert_eq!(
        room.join(300, guest(4, "p_g", false)).unwrap_err().code,
        ErrorCode::MeetingEnded
    );
}

#[test]
fn lobby_and_staff_drops_keep_todays_behaviour() {
    let mut room = Room::with_seat_hold(meeting(LobbyBypass::OrganizerOnly), HOLD);
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, staff(2, "sam")).unwrap();
    room.handle(0, 1, ClientMessage::AdmitAll);
    room.join(5, guest(3, "p_w", false)).unwrap();
    // Someone waiting who drops is gone from the lobby at once, with no seat.
    let fx = room.disconnected(10, 3);
    assert!(sent(&fx, 1).contains(&ServerMessage::LobbyUpdate { entries: vec![] }));
    assert!(events(&fx).contains(&EventKind::LeftLobby { wait_ms: 5 }));
    assert!(!room.in_call("p_w") && !room.is_held("p_w"));
    assert_eq!(room.next_deadline(), None);
    // Staff: a new participant id on every join, so nothing could resume the seat.
    let fx = room.disconnected(20, 2);
    assert_eq!(left_frames(&fx, 1), [("p_sam".into(), LeaveReason::Disconnected)]);
    assert!(media_stopped(&fx));
    assert!(!room.in_call("p_sam") && room.next_deadline().is_none());
}

#[test]
fn a_hold_of_zero_lets_a_dropped_guest_go_at_once() {
    let mut room = Room::with_seat_hold(meeting(LobbyBypass::Everyone), 0);
    room.join(0, staff(1, "olga")).unwrap();
    room.join(0, guest(2, "p_g", false)).unwrap();
    let fx = room.disconnected(10, 2);
    assert_eq!(left_frames(&fx, 1), [("p_g".into(), LeaveReason::Disconnected)]);
    assert!(!room.in_call("p_g"));
}

#[test]
fn a_newcomer_sees_a_held_guest_on_the_roster_with_its_media_down() {
    let mut room = call_with_guest();
    room.disconnected(100, 2);
    room.join(110, guest(4, "p_new", false)).unwrap();
    let fx = room.handle(
        120,
        1,
        ClientMessage::Admit {
            participant_id: "p_new".into(),
        },
    );
    let others: Vec<_> = fx
        .iter()
        .find_map(|e| match e {
            Effect::EnterCall { others, .. } => Some(others.iter().map(|p| p.participant_id.clone()).collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(others, ["p_olga", "p_g"]);
    assert!(sent(&fx, 4).contains(&ServerMessage::ParticipantMedia {
        participant_id: "p_g".into(),
        publisher: DROPPED,
        subscriber: DROPPED,
    }));
    assert!(
        sent(&fx, 2).is_empty(),
        "participant_joined is not sent to the held guest"
    );
    // When the guest comes back, its roster has the newcomer.
    let fx = room.join(130, guest(5, "p_g", false)).unwrap();
    let others: Vec<_> = fx
        .iter()
        .find_map(|e| match e {
            Effect::EnterCall { others, .. } => Some(others.iter().map(|p| p.participant_id.clone()).collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(others, ["p_olga", "p_new"]);
    assert_eq!(roster_frames(&fx, 1) + roster_frames(&fx, 4), 0);
}

#[test]
fn giving_up_holds_at_shutdown_records_each_departure_at_its_drop() {
    let mut room = call_with_guest();
    room.handle(50, 1, ClientMessage::Leave);
    room.disconnected(100, 2);
    assert_eq!(room.call_len(), 0);
    assert!(!room.is_empty(), "the held seat keeps the room");
    let fx = room.give_up_holds();
    assert!(media_stopped(&fx));
    assert_eq!(
        events(&fx),
        [EventKind::Left {
            reason: LeaveReason::Disconnected,
            in_call_ms: 90
        }]
    );
    assert!(room.is_empty());
}

#[test]
fn a_queue_position_goes_to_the_guests_in_the_lobby_only() {
    let mut room = Room::new(meeting(LobbyBypass::OrganizerOnly));
    room.join(0, guest(2, "p_a", false)).unwrap();
    room.join(0, guest(3, "p_b", false)).unwrap();
    room.join(0, staff(4, "zed")).unwrap();
    assert!(
        room.lobby_entries().iter().any(|e| e.kind == ParticipantKind::Staff),
        "a staff member waits too"
    );
    let msg = ServerMessage::QueuePosition {
        position: 1,
        estimated_wait_secs: Some(60),
    };
    let fx = room.to_guests_in_lobby(&msg);
    assert_eq!(sent(&fx, 2), std::slice::from_ref(&msg));
    assert_eq!(sent(&fx, 3), std::slice::from_ref(&msg));
    assert!(sent(&fx, 4).is_empty(), "not to staff");
    assert_eq!(fx.len(), 2);
    room.lobby_action_from_queue(1, "staff:olga", LobbyAction::Admit("p_a".into()))
        .unwrap();
    let fx = room.to_guests_in_lobby(&msg);
    assert_eq!(
        (sent(&fx, 2).len(), sent(&fx, 3).len()),
        (0, 1),
        "not to the admitted guest"
    );
}
