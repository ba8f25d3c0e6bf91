//! The control plane against a real gateway: real TLS, real WebSockets, real store.

mod support;

use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{ClientMessage, LeaveReason, LobbyStatus, ParticipantKind, ServerMessage};
use gatehouse_signaling::token::StaffRole;
use serde_json::json;
use support::{TestServer, Ws};

fn is_admitted(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::Admitted { .. })
}

/// Reads `joined` and then the next placement frame: `admitted` or `lobby`.
async fn placement(ws: &mut Ws) -> ServerMessage {
    ws.expect("joined", |m| matches!(m, ServerMessage::Joined { .. })).await;
    ws.expect("admitted or lobby", |m| {
        matches!(m, ServerMessage::Admitted { .. } | ServerMessage::Lobby { .. })
    })
    .await
}

fn public_code(meeting: &serde_json::Value) -> String {
    meeting["public_link"]["code"].as_str().expect("public link").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_guest_journey() {
    let mut srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Dermatology follow-up" }))
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    assert_eq!(meeting["state"], "idle");

    // The guest checks the link, redeems it and waits for the host.
    let code = public_code(&meeting);
    let port = srv.running.as_ref().expect("running").addr.port();
    assert_eq!(
        meeting["public_link"]["url"].as_str(),
        Some(format!("https://localhost:{port}/j/{code}").as_str()),
        "with port 0 and no public URL set, links name the port actually bound"
    );
    let (status, info) = srv.call("GET", &format!("/api/v1/links/{code}"), None, None).await;
    assert_eq!(
        (status, info["meeting_title"].as_str()),
        (200, Some("Dermatology follow-up"))
    );
    let guest_token = srv.redeem(&code, "  Grace  Hopper ").await;
    let mut guest = srv.join(&guest_token, None).await;
    let joined = guest
        .expect("joined", |m| matches!(m, ServerMessage::Joined { .. }))
        .await;
    let ServerMessage::Joined {
        you, meeting: summary, ..
    } = joined
    else {
        unreachable!()
    };
    assert_eq!(
        (you.display_name.as_str(), you.kind),
        ("Grace Hopper", ParticipantKind::Guest)
    );
    assert_eq!(summary.title, "Dermatology follow-up");
    let lobby = guest
        .expect("lobby", |m| matches!(m, ServerMessage::Lobby { .. }))
        .await;
    assert!(matches!(
        lobby,
        ServerMessage::Lobby {
            status: LobbyStatus::WaitingForHost,
            ..
        }
    ));
    let (_, live) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}"), Some(&olga), None)
        .await;
    assert_eq!(live["state"], "live");

    // The organiser arrives and sees the lobby live.
    let mut staff = srv.join(&olga, Some(&mid)).await;
    assert!(is_admitted(&placement(&mut staff).await));
    let update = staff
        .expect(
            "lobby update",
            |m| matches!(m, ServerMessage::LobbyUpdate { entries } if !entries.is_empty()),
        )
        .await;
    let ServerMessage::LobbyUpdate { entries } = update else {
        unreachable!()
    };
    assert_eq!(entries[0].display_name, "Grace Hopper");
    assert!(!entries[0].invited);
    assert!(entries[0].waiting_since_ms > 0);
    guest
        .expect("waiting for admission", |m| {
            matches!(
                m,
                ServerMessage::Lobby {
                    status: LobbyStatus::WaitingForAdmission,
                    ..
                }
            )
        })
        .await;

    // Admit: both are in the call and know of each other.
    staff
        .send(&ClientMessage::Admit {
            participant_id: entries[0].participant_id.clone(),
        })
        .await;
    let admitted = guest.expect("admitted", is_admitted).await;
    let ServerMessage::Admitted { participants, .. } = admitted else {
        unreachable!()
    };
    assert!(
        participants
            .iter()
            .any(|p| p.display_name == "OLGA" && p.kind == ParticipantKind::Staff && p.organizer)
    );
    staff
        .expect("guest joined", |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.display_name == "Grace Hopper"))
        .await;

    // The metrics endpoint sees the same call.
    let (status, metrics) = srv.call("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert_eq!(status, 200);
    for line in [
        "gatehouse_participants_in_call 2",
        "gatehouse_participants_in_lobby 0",
        "gatehouse_meetings_live 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("gatehouse_lobby_wait_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("process_resident_memory_bytes"), "{metrics}");

    // Chat both ways, with sender and server time.
    guest
        .send(&ClientMessage::Chat {
            text: "Hello doctor".into(),
        })
        .await;
    let got = staff.expect("chat", |m| matches!(m, ServerMessage::Chat { .. })).await;
    let ServerMessage::Chat { message } = got else {
        unreachable!()
    };
    assert_eq!(
        (message.text.as_str(), message.display_name.as_str()),
        ("Hello doctor", "Grace Hopper")
    );
    assert!(message.sent_at_ms > 0);
    staff
        .send(&ClientMessage::Chat {
            text: "Hello Grace".into(),
        })
        .await;
    guest
        .expect(
            "staff chat",
            |m| matches!(m, ServerMessage::Chat { message } if message.text == "Hello Grace"),
        )
        .await;

    // The guest leaves; staff are told; the socket closes.
    guest.send(&ClientMessage::Leave).await;
    let rest = guest.until_closed().await;
    assert!(rest.iter().any(|m| matches!(
        m,
        ServerMessage::Left {
            reason: LeaveReason::Left,
            ..
        }
    )));
    staff
        .expect("guest left", |m| {
            matches!(
                m,
                ServerMessage::ParticipantLeft {
                    reason: LeaveReason::Left,
                    ..
                }
            )
        })
        .await;
    staff.send(&ClientMessage::Leave).await;
    staff.until_closed().await;
    srv.wait_until("the meeting task is gone", |s| s.state().live.is_empty())
        .await;

    // The participation log has the whole story.
    let (status, events) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}/events"), Some(&olga), None)
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event"].as_str().unwrap())
        .collect();
    for want in ["link_redeemed", "entered_lobby", "admitted", "joined", "left"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_matrix() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let rules = [
        ("organizer_only", [false, false, false, false]),
        ("invited", [true, false, true, false]),
        ("organization", [true, true, false, false]),
        ("everyone", [true, true, true, true]),
    ];
    for (rule, expected) in rules {
        let meeting = srv
            .create_meeting(
                &olga,
                json!({ "title": format!("rule {rule}"), "lobby_bypass": rule, "invited_staff": ["ivan"] }),
            )
            .await;
        let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
        let mut organiser = srv.join(&olga, Some(&mid)).await;
        assert!(
            is_admitted(&placement(&mut organiser).await),
            "{rule}: organiser always enters"
        );

        let invite = srv
            .create_link(&olga, &mid, json!({ "kind": "invite", "invitee": "Ina" }))
            .await;
        let invited_guest = srv.redeem(invite["code"].as_str().unwrap(), "Ina").await;
        let anonymous_guest = srv.redeem(&public_code(&meeting), "Anon").await;
        let people = [
            (
                "invited staff",
                srv.staff_token("ivan", StaffRole::Staff),
                Some(mid.clone()),
            ),
            (
                "other staff",
                srv.staff_token("sam", StaffRole::Staff),
                Some(mid.clone()),
            ),
            ("invited guest", invited_guest, None),
            ("anonymous guest", anonymous_guest, None),
        ];
        let mut sockets = Vec::new();
        for ((who, token, meeting_id), want) in people.into_iter().zip(expected) {
            let mut ws = srv.join(&token, meeting_id.as_deref()).await;
            let placed = placement(&mut ws).await;
            assert_eq!(is_admitted(&placed), want, "{rule}: {who} got {placed:?}");
            sockets.push(ws);
        }
        organiser.send(&ClientMessage::EndMeeting).await;
        for ws in &mut sockets {
            ws.expect("meeting ended", |m| {
                matches!(
                    m,
                    ServerMessage::Left {
                        reason: LeaveReason::MeetingEnded,
                        ..
                    }
                )
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_link_under_concurrency_and_dead_links() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Interview" })).await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let link = srv
        .create_link(&olga, &mid, json!({ "kind": "single_use", "invitee": "Candidate" }))
        .await;
    let code = link["code"].as_str().unwrap().to_owned();

    let attempts = (0..20).map(|i| {
        let srv = &srv;
        let code = code.clone();
        async move {
            srv.call(
                "POST",
                &format!("/api/v1/links/{code}/redeem"),
                None,
                Some(json!({ "display_name": format!("G{i}") })),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let used = results
        .iter()
        .filter(|(s, b)| *s == 410 && b["code"] == "link_used")
        .count();
    assert_eq!((ok, used), (1, 19), "{results:?}");

    // Revoked.
    let invite = srv.create_link(&olga, &mid, json!({ "kind": "invite" })).await;
    let link_id = invite["link_id"].as_str().unwrap();
    let (status, revoked) = srv
        .call(
            "DELETE",
            &format!("/api/v1/meetings/{mid}/links/{link_id}"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at_ms"].as_u64().is_some());
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/links/{}/redeem", invite["code"].as_str().unwrap()),
            None,
            Some(json!({ "display_name": "X" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (410, Some("link_revoked")));

    // Expired: a link whose expiry has passed, stored as the gateway stores it.
    let expired = gatehouse_signaling::link::Link {
        link_id: "l_expired".into(),
        meeting_id: mid.clone().into(),
        code: "expiredcode".into(),
        kind: gatehouse_signaling::link::LinkKind::Invite,
        invitee: None,
        created_at_ms: 1,
        expires_at_ms: Some(gatehouse::ids::now_ms() - 1),
        revoked_at_ms: None,
        redemptions: 0,
    };
    srv.state().store.insert_link(&expired).unwrap();
    let (status, body) = srv.call("GET", "/api/v1/links/expiredcode", None, None).await;
    assert_eq!((status, body["code"].as_str()), (410, Some("link_expired")));
    let (status, body) = srv
        .call(
            "POST",
            "/api/v1/links/expiredcode/redeem",
            None,
            Some(json!({ "display_name": "X" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (410, Some("link_expired")));

    // Unknown, public link turned off, and a bad display name.
    let (status, body) = srv
        .call(
            "POST",
            "/api/v1/links/nope/redeem",
            None,
            Some(json!({ "display_name": "X" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/links/{}/redeem", public_code(&meeting)),
            None,
            Some(json!({ "display_name": "\u{0007}" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_display_name")));
    let (status, _) = srv
        .call(
            "PATCH",
            &format!("/api/v1/meetings/{mid}"),
            Some(&olga),
            Some(json!({ "public_link_enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/links/{}/redeem", public_code(&meeting)),
            None,
            Some(json!({ "display_name": "X" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (410, Some("link_disabled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redemption_is_rate_limited_per_address() {
    let dir = support::temp_dir("rate");
    let mut config = support::test_config(&dir);
    config.redeem_per_minute = Some(3);
    let srv = TestServer::start_with(config).await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Busy" })).await;
    let path = format!("/api/v1/links/{}/redeem", public_code(&meeting));
    for _ in 0..3 {
        assert_eq!(
            srv.call("POST", &path, None, Some(json!({ "display_name": "G" })))
                .await
                .0,
            200
        );
    }
    let (status, body) = srv
        .call("POST", &path, None, Some(json!({ "display_name": "G" })))
        .await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_attacks_are_refused() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let m1 = srv.create_meeting(&olga, json!({ "title": "One" })).await;
    let m2 = srv.create_meeting(&olga, json!({ "title": "Two" })).await;
    let m1_id = m1["meeting_id"].as_str().unwrap();
    let m2_id = m2["meeting_id"].as_str().unwrap();

    // Tampered signature: flip a character of the signature.
    let mut tampered = olga.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // `alg: none` with the same claims.
    let claims = olga.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    // Expired an hour ago.
    let now = gatehouse::ids::now_ms() / 1000;
    let expired = srv
        .state()
        .keys
        .mint_staff("olga", "Olga", "default", StaffRole::Staff, now - 7200, 3600)
        .unwrap();
    for (what, token, code) in [
        ("tampered", tampered.as_str(), "unauthorized"),
        ("alg none", none.as_str(), "unauthorized"),
        ("expired", expired.as_str(), "token_expired"),
        ("garbage", "not-a-token", "unauthorized"),
    ] {
        let (status, body) = srv.call("GET", "/api/v1/meetings", Some(token), None).await;
        assert_eq!((status, body["code"].as_str()), (401, Some(code)), "{what}");
        let mut ws = srv.join(token, Some(m1_id)).await;
        assert_eq!(ws.expect_error().await, code_of(code), "{what} over ws");
        assert!(ws.until_closed().await.is_empty(), "{what}: nothing after the error");
    }
    let (status, body) = srv.call("GET", "/api/v1/meetings", None, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    // A guest token: wrong meeting over the socket, forbidden on staff endpoints.
    let guest = srv.redeem(&public_code(&m1), "Guest").await;
    let mut ws = srv.join(&guest, Some(m2_id)).await;
    assert_eq!(ws.expect_error().await, ErrorCode::WrongMeeting);
    for (method, path) in [
        ("GET", "/api/v1/meetings".to_owned()),
        ("POST", format!("/api/v1/meetings/{m1_id}/end")),
        ("GET", format!("/api/v1/meetings/{m1_id}/links")),
    ] {
        let (status, body) = srv.call(method, &path, Some(&guest), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}"
        );
    }
    // Staff of another organisation see nothing of this one.
    let outsider = srv.staff_token_in("eve", "other-org", StaffRole::Admin);
    let (status, _) = srv
        .call("GET", &format!("/api/v1/meetings/{m1_id}"), Some(&outsider), None)
        .await;
    assert_eq!(status, 404);
    let mut ws = srv.join(&outsider, Some(m1_id)).await;
    assert_eq!(ws.expect_error().await, ErrorCode::Forbidden);
}

/// The `ErrorCode` for a wire name.
fn code_of(name: &str) -> ErrorCode {
    serde_json::from_value(json!(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_lobby_timeout_deny_and_disconnect_cleanup() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            json!({ "title": "Clinic", "lobby_bypass": "organizer_only", "lobby_timeout_secs": 5 }),
        )
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let code = public_code(&meeting);
    let mut staff = srv.join(&olga, Some(&mid)).await;
    assert!(is_admitted(&placement(&mut staff).await));

    // Chat from the lobby is refused and never reaches staff.
    let mut waiting = srv.join(&srv.redeem(&code, "Waiting Wendy").await, None).await;
    assert!(matches!(placement(&mut waiting).await, ServerMessage::Lobby { .. }));
    waiting
        .send(&ClientMessage::Chat {
            text: "let me in".into(),
        })
        .await;
    assert_eq!(waiting.expect_error().await, ErrorCode::NotInCall);

    // Deny with a reason.
    let mut denied = srv.join(&srv.redeem(&code, "Denied Dan").await, None).await;
    assert!(matches!(placement(&mut denied).await, ServerMessage::Lobby { .. }));
    let update = staff
        .expect("Dan in lobby", |m| matches!(m, ServerMessage::LobbyUpdate { entries } if entries.iter().any(|e| e.display_name == "Denied Dan")))
        .await;
    let ServerMessage::LobbyUpdate { entries } = update else {
        unreachable!()
    };
    let dan = entries
        .iter()
        .find(|e| e.display_name == "Denied Dan")
        .unwrap()
        .participant_id
        .clone();
    staff
        .send(&ClientMessage::Deny {
            participant_id: dan,
            reason: Some("Please use your invitation".into()),
        })
        .await;
    let frames = denied.until_closed().await;
    assert!(
        frames.iter().any(|m| matches!(m, ServerMessage::Left { reason: LeaveReason::Denied, message: Some(r) } if r == "Please use your invitation")),
        "{frames:?}"
    );

    // Disconnect cleanup: a guest who drops out of the lobby disappears from it.
    let mut dropper = srv.join(&srv.redeem(&code, "Dropping Dora").await, None).await;
    assert!(matches!(placement(&mut dropper).await, ServerMessage::Lobby { .. }));
    staff
        .expect("Dora in lobby", |m| matches!(m, ServerMessage::LobbyUpdate { entries } if entries.iter().any(|e| e.display_name == "Dropping Dora")))
        .await;
    dropper.drop_connection().await;
    staff
        .expect("Dora gone", |m| matches!(m, ServerMessage::LobbyUpdate { entries } if !entries.iter().any(|e| e.display_name == "Dropping Dora")))
        .await;

    // Lobby timeout: Wendy, still waiting, is turned away and told why.
    let frames = waiting.until_closed().await;
    assert!(
        frames.iter().any(|m| matches!(m, ServerMessage::Left { reason: LeaveReason::LobbyTimeout, message: Some(t) } if t.contains("minute"))),
        "{frames:?}"
    );

    // A guest who was in the call and left gets not_in_call when back in the lobby.
    let token = srv.redeem(&code, "Returning Ray").await;
    let mut ray = srv.join(&token, None).await;
    placement(&mut ray).await;
    staff.send(&ClientMessage::AdmitAll).await;
    ray.expect("admitted", is_admitted).await;
    ray.send(&ClientMessage::Chat { text: "hi".into() }).await;
    staff
        .expect(
            "ray's chat",
            |m| matches!(m, ServerMessage::Chat { message } if message.text == "hi"),
        )
        .await;
    ray.send(&ClientMessage::Leave).await;
    ray.until_closed().await;
    let mut ray = srv.join(&token, None).await;
    assert!(matches!(placement(&mut ray).await, ServerMessage::Lobby { .. }));
    ray.send(&ClientMessage::Chat {
        text: "after leaving".into(),
    })
    .await;
    assert_eq!(ray.expect_error().await, ErrorCode::NotInCall);
    ray.drop_connection().await;

    // When everyone is gone the meeting task and its sockets are gone too.
    staff.send(&ClientMessage::Leave).await;
    staff.until_closed().await;
    srv.wait_until("no live meeting", |s| s.state().live.is_empty()).await;
    srv.wait_until("no open socket", |s| s.state().metrics.signaling_connections.get() == 0)
        .await;
}

/// The last person in a call drops (a network blip on a 1:1 call where the host has
/// already gone): the meeting is empty, yet the seat is held, so they come straight back
/// into the call rather than into a lobby with nobody to admit them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_is_held_when_the_last_person_drops() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Follow-up", "lobby_bypass": "organizer_only" }))
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let mut staff = srv.join(&olga, Some(&mid)).await;
    assert!(is_admitted(&placement(&mut staff).await));
    let token = srv.redeem(&public_code(&meeting), "Blip Bo").await;
    let mut guest = srv.join(&token, None).await;
    assert!(matches!(placement(&mut guest).await, ServerMessage::Lobby { .. }));
    staff.send(&ClientMessage::AdmitAll).await;
    guest.expect("admitted", is_admitted).await;
    staff.send(&ClientMessage::Leave).await;
    staff.until_closed().await;

    guest.drop_connection().await;
    srv.wait_until("nobody connected, nobody in the call", |s| {
        s.state().metrics.signaling_connections.get() == 0 && s.state().metrics.participants_in_call.get() == 0
    })
    .await;
    assert!(srv.state().live.is_live(&mid), "the held seat keeps the meeting");
    let mut guest = srv.join(&token, None).await;
    assert!(
        is_admitted(&placement(&mut guest).await),
        "back in the call, not in a lobby with no host"
    );
    guest.send(&ClientMessage::Leave).await;
    guest.until_closed().await;
    srv.wait_until("no live meeting", |s| s.state().live.is_empty()).await;
}

/// Signaling connections are limited per address and in total, refused before the
/// upgrade with a typed HTTP error, and a closed connection gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_connections_are_limited_per_address_and_in_total() {
    let dir = support::temp_dir("limits");
    let mut config = support::test_config(&dir);
    config.max_connections_per_ip = Some(2);
    let srv = TestServer::start_with(config).await;
    let first = srv.ws().await;
    let _second = srv.ws().await;
    let (status, body) = srv
        .try_ws()
        .await
        .err()
        .expect("a third socket from one address is refused");
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("per address"), "{body}");
    first.drop_connection().await;
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    srv.wait_until("the closed socket's place is free", |s| {
        s.state().connections.open_now(localhost).1 == 1
    })
    .await;
    let _third = srv.ws().await;

    let dir = support::temp_dir("limits-total");
    let mut config = support::test_config(&dir);
    config.max_connections = Some(1);
    let busy = TestServer::start_with(config).await;
    let _only = busy.ws().await;
    let (status, body) = busy.try_ws().await.err().expect("past the total, refused");
    assert_eq!((status, body["code"].as_str()), (503, Some("server_busy")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_participant_and_end_meeting() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Panel", "lobby_bypass": "everyone" }))
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let mut staff = srv.join(&olga, Some(&mid)).await;
    placement(&mut staff).await;
    let mut g1 = srv.join(&srv.redeem(&public_code(&meeting), "One").await, None).await;
    assert!(is_admitted(&placement(&mut g1).await));
    let mut g2 = srv.join(&srv.redeem(&public_code(&meeting), "Two").await, None).await;
    assert!(is_admitted(&placement(&mut g2).await));
    let joined = staff
        .expect(
            "One joined",
            |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.display_name == "One"),
        )
        .await;
    let ServerMessage::ParticipantJoined { participant: one } = joined else {
        unreachable!()
    };

    // A guest may not remove anyone.
    g2.send(&ClientMessage::Remove {
        participant_id: one.participant_id.clone(),
        reason: None,
    })
    .await;
    assert_eq!(g2.expect_error().await, ErrorCode::Forbidden);

    staff
        .send(&ClientMessage::Remove {
            participant_id: one.participant_id.clone(),
            reason: Some("Disruptive".into()),
        })
        .await;
    let frames = g1.until_closed().await;
    assert!(frames.iter().any(|m| matches!(
        m,
        ServerMessage::Left {
            reason: LeaveReason::Removed,
            ..
        }
    )));
    g2.expect("One removed", |m| {
        matches!(
            m,
            ServerMessage::ParticipantLeft {
                reason: LeaveReason::Removed,
                ..
            }
        )
    })
    .await;

    // Ending over REST reaches everyone in the call.
    let (status, body) = srv
        .call("POST", &format!("/api/v1/meetings/{mid}/end"), Some(&olga), None)
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("ended")));
    for ws in [&mut staff, &mut g2] {
        let frames = ws.until_closed().await;
        assert!(frames.iter().any(|m| matches!(
            m,
            ServerMessage::Left {
                reason: LeaveReason::MeetingEnded,
                ..
            }
        )));
    }
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/links/{}/redeem", public_code(&meeting)),
            None,
            Some(json!({ "display_name": "Late" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (410, Some("meeting_ended")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_typed_errors_and_floods_are_cut() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Robustness" })).await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();

    // The first frame must be join.
    let mut ws = srv.ws().await;
    ws.send(&ClientMessage::Chat { text: "hi".into() }).await;
    assert_eq!(ws.expect_error().await, ErrorCode::NotJoined);
    assert!(ws.until_closed().await.is_empty());
    // Wrong protocol version.
    let mut ws = srv.ws().await;
    ws.send(&ClientMessage::Join {
        protocol: 99,
        token: olga.clone(),
        meeting_id: Some(mid.clone().into()),
    })
    .await;
    assert_eq!(ws.expect_error().await, ErrorCode::UnsupportedProtocol);

    let mut ws = srv.join(&olga, Some(&mid)).await;
    placement(&mut ws).await;
    for (frame, code) in [
        ("{not json".to_owned(), ErrorCode::MalformedJson),
        (r#"{"type":"teleport"}"#.to_owned(), ErrorCode::UnknownType),
        (r#"{"type":"admit"}"#.to_owned(), ErrorCode::MalformedJson),
        (
            format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(70_000)),
            ErrorCode::FrameTooLarge,
        ),
        (
            r#"{"type":"join","protocol":1,"token":"x"}"#.to_owned(),
            ErrorCode::AlreadyJoined,
        ),
        (
            r#"{"type":"subscribe_answer","sdp":"v=0"}"#.to_owned(),
            ErrorCode::MediaStateError,
        ),
    ] {
        ws.send_raw(&frame).await;
        let got = ws.expect_error().await;
        assert!(
            got == code || (code == ErrorCode::MediaStateError && got == ErrorCode::InvalidSdp),
            "{frame:.40}: {got:?}"
        );
    }
    // The connection goes on.
    ws.send(&ClientMessage::Ping { nonce: 42 }).await;
    ws.expect("pong", |m| matches!(m, ServerMessage::Pong { nonce: 42 }))
        .await;

    // A flood is cut off: the server says why and closes with 1008. It reads on until our
    // close (or a second), so the error arrives even though we are still sending.
    for _ in 0..400 {
        assert!(
            ws.try_send_raw(r#"{"type":"ping"}"#).await,
            "the server reads on after cutting a flood off"
        );
    }
    let frames = ws.until_closed().await;
    assert!(
        frames.iter().any(|m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        )),
        "the flooding socket was not told why: {frames:?}"
    );
    assert_eq!(ws.close_code, Some(1008), "closed as a policy violation");
    // Cut, not departed: out of the call (its seat is held, as for any dropped connection).
    srv.wait_until("the flooder is out of the call", |s| {
        s.state().metrics.participants_in_call.get() == 0 && s.state().metrics.signaling_connections.get() == 0
    })
    .await;

    // HTTP bodies get typed errors too.
    let resp = srv
        .http
        .post(format!("{}/api/v1/meetings", srv.base))
        .bearer_auth(&olga)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "malformed_json");
    let (status, body) = srv
        .call("POST", "/api/v1/meetings", Some(&olga), Some(json!({ "title": "" })))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_meetings_links_and_keys() {
    let dir = support::temp_dir("restart");
    let mut srv = TestServer::start_with(support::test_config(&dir)).await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Survives", "chat_enabled": false }))
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let single = srv.create_link(&olga, &mid, json!({ "kind": "single_use" })).await;
    let invite = srv
        .create_link(&olga, &mid, json!({ "kind": "invite", "invitee": "Ina" }))
        .await;
    srv.redeem(single["code"].as_str().unwrap(), "First").await;
    // Graceful shutdown tells a connected participant and closes its socket.
    let mut connected = srv.join(&olga, Some(&mid)).await;
    assert!(is_admitted(&placement(&mut connected).await));
    srv.stop().await;
    // `until_closed` returns only once the server has closed the socket (it panics on a silent one).
    let frames = connected.until_closed().await;
    assert!(
        frames.iter().all(|m| matches!(m, ServerMessage::LobbyUpdate { .. })),
        "{frames:?}"
    );
    // Keep the data directory: the next server owns it.
    let data_dir = std::mem::replace(&mut srv.data_dir, support::temp_dir("unused"));
    drop(srv);

    let srv = TestServer::start_with(support::test_config(&data_dir)).await;
    let (status, again) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}"), Some(&olga), None)
        .await;
    assert_eq!(status, 200, "the old staff token still verifies: the key survived");
    assert_eq!(
        (
            again["settings"]["title"].as_str(),
            again["settings"]["chat_enabled"].as_bool()
        ),
        (Some("Survives"), Some(false))
    );
    assert_eq!(again["public_link"]["code"], meeting["public_link"]["code"]);
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/links/{}/redeem", single["code"].as_str().unwrap()),
            None,
            Some(json!({ "display_name": "Second" })),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("link_used")),
        "single-use state survived"
    );
    srv.redeem(invite["code"].as_str().unwrap(), "Ina").await;
    let (_, events) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}/events"), Some(&olga), None)
        .await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "link_redeemed").count(),
        2,
        "both redemptions logged: {events}"
    );
    assert!(kinds.contains(&"left"), "the shutdown's departure was logged: {events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_work_the_queue_without_joining() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            json!({ "title": "Walk-in clinic", "lobby_bypass": "organizer_only" }),
        )
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let (status, empty) = srv.call("GET", "/api/v1/queue", Some(&olga), None).await;
    assert_eq!(
        (status, empty["meetings"].as_array().map(Vec::len)),
        (200, Some(0)),
        "nobody live yet"
    );

    let mut ann = srv.join(&srv.redeem(&public_code(&meeting), "Ann").await, None).await;
    assert!(matches!(placement(&mut ann).await, ServerMessage::Lobby { .. }));
    let mut bob = srv.join(&srv.redeem(&public_code(&meeting), "Bob").await, None).await;
    assert!(matches!(placement(&mut bob).await, ServerMessage::Lobby { .. }));

    let (status, queue) = srv.call("GET", "/api/v1/queue", Some(&olga), None).await;
    assert_eq!(status, 200);
    let m = &queue["meetings"][0];
    assert_eq!(
        (m["meeting_id"].as_str(), m["title"].as_str(), m["in_call"].as_u64()),
        (Some(mid.as_str()), Some("Walk-in clinic"), Some(0))
    );
    let names: Vec<_> = m["lobby"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ann", "Bob"], "oldest first");
    assert!(queue["now_ms"].as_u64().unwrap() >= m["lobby"][0]["waiting_since_ms"].as_u64().unwrap());
    let ann_id = m["lobby"][0]["participant_id"].as_str().unwrap().to_owned();
    let bob_id = m["lobby"][1]["participant_id"].as_str().unwrap().to_owned();

    // Other organisations and guests see nothing and can do nothing.
    let outsider = srv.staff_token_in("eve", "other-org", StaffRole::Admin);
    let (_, theirs) = srv.call("GET", "/api/v1/queue", Some(&outsider), None).await;
    assert_eq!(theirs["meetings"].as_array().map(Vec::len), Some(0));
    let (status, _) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{mid}/lobby/{ann_id}/admit"),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Admit Ann and deny Bob from the queue.
    let (status, _) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{mid}/lobby/{ann_id}/admit"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 204);
    ann.expect("admitted from the queue", |m| {
        matches!(m, ServerMessage::Admitted { .. })
    })
    .await;
    let (status, _) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{mid}/lobby/{bob_id}/deny"),
            Some(&olga),
            Some(json!({ "reason": "Please book a slot" })),
        )
        .await;
    assert_eq!(status, 204);
    let frames = bob.until_closed().await;
    assert!(frames.iter().any(|m| matches!(m, ServerMessage::Left { reason: LeaveReason::Denied, message: Some(r) } if r == "Please book a slot")));
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{mid}/lobby/{bob_id}/admit"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "Bob is gone");

    let (_, queue) = srv.call("GET", "/api/v1/queue", Some(&olga), None).await;
    assert_eq!(
        (
            queue["meetings"][0]["in_call"].as_u64(),
            queue["meetings"][0]["lobby"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );
    let (_, events) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}/events"), Some(&olga), None)
        .await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["event"] == "admitted" && e["event"]["by"] == "staff:olga")
    );
}

/// A participant's `media_status` reaches the others as `participant_media` (and
/// someone entering later hears it); garbage is refused with a typed error frame
/// and the socket goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_status_is_relayed_and_garbage_refused() {
    use gatehouse_signaling::protocol::{ConnectionMedia, MediaConnectionState, MediaPath};
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Clinic", "lobby_bypass": "everyone" }))
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let mut staff = srv.join(&olga, Some(&mid)).await;
    placement(&mut staff).await;
    let mut guest = srv.join(&srv.redeem(&public_code(&meeting), "Guest").await, None).await;
    assert!(is_admitted(&placement(&mut guest).await));
    let ServerMessage::ParticipantJoined { participant } = staff
        .expect("the guest joined", |m| {
            matches!(m, ServerMessage::ParticipantJoined { .. })
        })
        .await
    else {
        unreachable!()
    };

    let failed = ConnectionMedia {
        state: MediaConnectionState::Failed,
        path: None,
    };
    let tcp = ConnectionMedia {
        state: MediaConnectionState::Connected,
        path: Some(MediaPath::Tcp),
    };
    guest
        .send(&ClientMessage::MediaStatus {
            publisher: failed,
            subscriber: tcp,
        })
        .await;
    let relayed = staff
        .expect("participant_media", |m| {
            matches!(m, ServerMessage::ParticipantMedia { .. })
        })
        .await;
    assert_eq!(
        relayed,
        ServerMessage::ParticipantMedia {
            participant_id: participant.participant_id.clone(),
            publisher: failed,
            subscriber: tcp,
        }
    );

    for garbage in [
        r#"{"type":"media_status","publisher":{"state":"splendid"},"subscriber":{"state":"new"}}"#,
        r#"{"type":"media_status","publisher":{"state":"connected","path":"smoke-signals"},"subscriber":{"state":"new"}}"#,
        r#"{"type":"media_status","publisher":{"state":"connected"}}"#,
    ] {
        guest.send_raw(garbage).await;
        assert_eq!(guest.expect_error().await, ErrorCode::MalformedJson, "{garbage}");
    }

    // Someone entering now is told the guest's last status right after `admitted`.
    let ivan = srv.staff_token("ivan", StaffRole::Staff);
    let mut late = srv.join(&ivan, Some(&mid)).await;
    assert!(is_admitted(&placement(&mut late).await));
    let told = late
        .expect("participant_media", |m| {
            matches!(m, ServerMessage::ParticipantMedia { .. })
        })
        .await;
    assert_eq!(told, relayed);

    // The socket goes on: a ping still gets its pong.
    guest.send(&ClientMessage::Ping { nonce: 7 }).await;
    guest
        .expect("pong", |m| matches!(m, ServerMessage::Pong { nonce: 7 }))
        .await;
}

/// Staff and an admitted guest in a call (`organizer_only`), with the staff socket past
/// the guest's `participant_joined`. Returns (staff, guest, guest token, guest id, meeting id).
async fn staff_and_admitted_guest(srv: &TestServer, olga: &str) -> (Ws, Ws, String, String, String) {
    let meeting = srv
        .create_meeting(
            olga,
            json!({ "title": "Video visit", "lobby_bypass": "organizer_only" }),
        )
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let mut staff = srv.join(olga, Some(&mid)).await;
    assert!(is_admitted(&placement(&mut staff).await));
    let token = srv.redeem(&public_code(&meeting), "Travelling Tom").await;
    let mut guest = srv.join(&token, None).await;
    assert!(matches!(placement(&mut guest).await, ServerMessage::Lobby { .. }));
    staff.send(&ClientMessage::AdmitAll).await;
    guest.expect("admitted", is_admitted).await;
    let joined = staff
        .expect("the guest joins", |m| {
            matches!(m, ServerMessage::ParticipantJoined { .. })
        })
        .await;
    let ServerMessage::ParticipantJoined { participant } = joined else {
        unreachable!()
    };
    (staff, guest, token, participant.participant_id.into_string(), mid)
}

/// Reads staff frames up to the answer to a ping: everything the meeting sent it before
/// handling the ping (one socket's frames are in order, and the meeting handles one
/// command at a time), so "not among these" means "not sent".
async fn frames_until_pong(ws: &mut Ws, nonce: u64) -> Vec<ServerMessage> {
    ws.send(&ClientMessage::Ping { nonce }).await;
    let mut seen = Vec::new();
    loop {
        match ws.next().await {
            Some(ServerMessage::Pong { nonce: n }) if n == nonce => return seen,
            Some(m) => seen.push(m),
            None => panic!("socket closed before pong; saw {seen:?}"),
        }
    }
}

fn roster_changes_of(frames: &[ServerMessage], id: &str) -> Vec<ServerMessage> {
    frames
        .iter()
        .filter(|m| match m {
            ServerMessage::ParticipantLeft { participant_id, .. } => participant_id == id,
            ServerMessage::ParticipantJoined { participant } => participant.participant_id == id,
            _ => false,
        })
        .cloned()
        .collect()
}

/// Reads staff frames up to the one that shows `id`'s media down; returns them all.
async fn until_media_down(staff: &mut Ws, id: &str) -> Vec<ServerMessage> {
    let mut seen = Vec::new();
    loop {
        let m = staff.next().await.expect("staff socket open");
        let down = media_down(&m, id);
        seen.push(m);
        if down {
            return seen;
        }
    }
}

fn media_down(m: &ServerMessage, id: &str) -> bool {
    use gatehouse_signaling::protocol::MediaConnectionState::Disconnected;
    matches!(m, ServerMessage::ParticipantMedia { participant_id, publisher, subscriber }
        if participant_id == id && publisher.state == Disconnected && subscriber.state == Disconnected)
}

/// A guest's TCP connection dies under its socket (no `leave`, no Close frame) and it
/// comes back with its token within the seat hold: straight into the call, and the other
/// participant never sees it leave or rejoin, only its media marked disconnected meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_socket_dies_comes_back_unseen_within_the_hold() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let (mut staff, guest, token, guest_id, _mid) = staff_and_admitted_guest(&srv, &olga).await;

    guest.cut();
    // The gateway notices the drop: staff learn only that the guest's media is down.
    let mut seen = until_media_down(&mut staff, &guest_id).await;
    srv.wait_until("the drop is seen", |s| {
        s.state().metrics.participants_in_call.get() == 1 && s.state().metrics.signaling_connections.get() == 1
    })
    .await;

    let mut guest = srv.join(&token, None).await;
    let joined = guest
        .expect("joined", |m| matches!(m, ServerMessage::Joined { .. }))
        .await;
    assert!(matches!(joined, ServerMessage::Joined { you, .. } if you.participant_id == guest_id));
    let placed = guest
        .expect("placement", |m| {
            matches!(m, ServerMessage::Admitted { .. } | ServerMessage::Lobby { .. })
        })
        .await;
    let ServerMessage::Admitted { participants, .. } = placed else {
        panic!("back in the lobby: {placed:?}");
    };
    assert_eq!(participants.len(), 1, "the roster as it is now: the staff member");
    guest.send(&ClientMessage::Chat { text: "back".into() }).await;
    staff
        .expect(
            "the guest's chat",
            |m| matches!(m, ServerMessage::Chat { message } if message.text == "back"),
        )
        .await;
    seen.extend(frames_until_pong(&mut staff, 7).await);
    assert_eq!(
        roster_changes_of(&seen, &guest_id),
        [],
        "no participant_left or participant_joined for the guest: {seen:?}"
    );

    // Its attendance goes on: one leave, seen once.
    guest.send(&ClientMessage::Leave).await;
    guest.until_closed().await;
    let left = staff
        .expect("the guest leaves", |m| {
            matches!(m, ServerMessage::ParticipantLeft { .. })
        })
        .await;
    assert_eq!(
        left,
        ServerMessage::ParticipantLeft {
            participant_id: guest_id.clone().into(),
            reason: LeaveReason::Left
        }
    );
}

/// The same drop, and the guest does not come back: after the hold (1 s here, the
/// `seat_hold_secs` setting) the other participant gets one `participant_left`
/// (`disconnected`), and the log records one departure, at the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_who_does_not_come_back_leaves_once_when_the_hold_ends() {
    let dir = support::temp_dir("hold");
    let mut config = support::test_config(&dir);
    config.seat_hold_secs = Some(1);
    let srv = TestServer::start_with(config).await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let (mut staff, guest, token, guest_id, mid) = staff_and_admitted_guest(&srv, &olga).await;

    guest.cut();
    let seen = until_media_down(&mut staff, &guest_id).await;
    let down_at = std::time::Instant::now();
    assert_eq!(roster_changes_of(&seen, &guest_id), [], "nothing yet: {seen:?}");
    let left = staff
        .expect("the hold ends", |m| matches!(m, ServerMessage::ParticipantLeft { .. }))
        .await;
    assert!(
        down_at.elapsed() >= std::time::Duration::from_millis(900),
        "told after the hold, not at the drop ({:?})",
        down_at.elapsed()
    );
    assert_eq!(
        left,
        ServerMessage::ParticipantLeft {
            participant_id: guest_id.clone().into(),
            reason: LeaveReason::Disconnected
        }
    );
    // Exactly once, also after a second hold's worth of time.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let later = frames_until_pong(&mut staff, 9).await;
    assert_eq!(roster_changes_of(&later, &guest_id), [], "{later:?}");
    let (_, events) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}/events"), Some(&olga), None)
        .await;
    let lefts: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["participant_id"] == guest_id.as_str() && e["event"]["event"] == "left")
        .collect();
    assert_eq!(lefts.len(), 1, "{events}");
    assert_eq!(lefts[0]["event"]["reason"], "disconnected");

    // Too late for the seat: back through the lobby.
    let mut guest = srv.join(&token, None).await;
    assert!(matches!(placement(&mut guest).await, ServerMessage::Lobby { .. }));
}

/// A guest whose socket goes silent without closing (a closed laptop, a dead network:
/// no FIN, no RST, nothing) is taken as dropped once it has sent nothing for the
/// `signaling_silence_secs` setting (3 s here), not even the pong its WebSocket library
/// answers the server's pings with: others see its media down, then, after the hold,
/// `participant_left` (`disconnected`), and the server closes its socket. A participant
/// that says nothing but answers pings (the staff socket, read throughout) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_taken_as_dropped_and_a_pinged_one_stays() {
    let dir = support::temp_dir("silence");
    let mut config = support::test_config(&dir);
    config.signaling_silence_secs = Some(3);
    config.seat_hold_secs = Some(1);
    let srv = TestServer::start_with(config).await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let (mut staff, mut guest, _token, guest_id, _mid) = staff_and_admitted_guest(&srv, &olga).await;

    // From here the guest's socket is never read, so its library answers no ping. The
    // staff socket is read (its library answers every ping) and sends nothing itself.
    let quiet_since = std::time::Instant::now();
    until_media_down(&mut staff, &guest_id).await;
    assert!(
        quiet_since.elapsed() >= std::time::Duration::from_millis(2500),
        "taken as dropped only after the silence limit ({:?})",
        quiet_since.elapsed()
    );
    let left = staff
        .expect("the hold ends", |m| matches!(m, ServerMessage::ParticipantLeft { .. }))
        .await;
    assert_eq!(
        left,
        ServerMessage::ParticipantLeft {
            participant_id: guest_id.clone().into(),
            reason: LeaveReason::Disconnected
        }
    );
    // The staff socket has been silent itself for longer than the limit, answering pings:
    // still in the call.
    assert!(quiet_since.elapsed() >= std::time::Duration::from_secs(3));
    let later = frames_until_pong(&mut staff, 11).await;
    assert_eq!(roster_changes_of(&later, &guest_id), [], "{later:?}");
    // The server closed the silent socket: what was queued, then the end.
    let rest = guest.until_closed().await;
    assert!(
        !rest.iter().any(|m| matches!(m, ServerMessage::Left { .. })),
        "a dropped socket is not told it left: {rest:?}"
    );
}
