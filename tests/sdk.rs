//! The staff SDK against a real gateway: lobby, admission, chat.

mod support;

use std::time::Duration;

use gatehouse_sdk::{Client, Event, LobbyBypass, NewMeeting, RestClient};
use gatehouse_signaling::protocol::{LeaveReason, LobbyStatus};
use gatehouse_signaling::token::StaffRole;
use support::TestServer;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_lobby_admit_chat_and_leave() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let opts = srv.sdk_options(&olga);

    // REST through the SDK: a meeting and an invitation, redeemed as a guest would.
    let rest = RestClient::new(&srv.base, &opts.tls())
        .unwrap()
        .with_token(olga.clone());
    let meeting = rest
        .create_meeting(&NewMeeting {
            title: "Front desk".into(),
            lobby_bypass: Some(LobbyBypass::OrganizerOnly),
            ..Default::default()
        })
        .await
        .unwrap();
    let guest = RestClient::new(&srv.base, &opts.tls()).unwrap();
    let public_code = meeting.public_link.as_ref().expect("public link").code.clone();
    let redeemed = guest.redeem_link(&public_code, "Walk-in Wanda").await.unwrap();

    let (staff, mut staff_events) = Client::connect(opts.clone().meeting(meeting.meeting_id.clone()))
        .await
        .unwrap();
    support::sdk_admitted(&mut staff_events).await;
    assert!(staff.me().organizer);

    let (wanda, mut wanda_events) = Client::connect(srv.sdk_options(&redeemed.token)).await.unwrap();
    wanda_events
        .wait_for(T, |e| {
            matches!(
                e,
                Event::Lobby {
                    status: LobbyStatus::WaitingForAdmission,
                    ..
                }
            )
            .then_some(())
        })
        .await
        .unwrap();
    let waiting = support::next_waiting(&mut staff_events).await;
    assert_eq!(waiting[0].display_name, "Walk-in Wanda");
    staff.admit(waiting[0].participant_id.clone()).unwrap();
    support::sdk_admitted(&mut wanda_events).await;
    assert!(wanda.is_admitted());

    staff.chat("Welcome, Wanda").unwrap();
    let got = wanda_events
        .wait_for(T, |e| match e {
            Event::Chat(m) => Some(m),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        (got.text.as_str(), got.display_name.as_str()),
        ("Welcome, Wanda", "OLGA")
    );

    wanda.leave().unwrap();
    wanda_events
        .wait_for(T, |e| {
            matches!(
                e,
                Event::Left {
                    reason: LeaveReason::Left,
                    ..
                }
            )
            .then_some(())
        })
        .await
        .unwrap();
    staff_events
        .wait_for(T, |e| {
            matches!(
                e,
                Event::ParticipantLeft {
                    reason: LeaveReason::Left,
                    ..
                }
            )
            .then_some(())
        })
        .await
        .unwrap();
    staff.leave().unwrap();
    staff.close().await;
    srv.wait_until("the meeting empties", |s| s.state().live.is_empty())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_reports_server_errors_with_codes() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let err = Client::connect(srv.sdk_options(&olga).meeting("m_nope"))
        .await
        .expect_err("unknown meeting refused");
    assert_eq!(err.code(), Some(gatehouse_signaling::ErrorCode::NotFound), "{err}");
    let opts = srv.sdk_options("garbage");
    let err = RestClient::new(&srv.base, &opts.tls())
        .unwrap()
        .with_token("garbage")
        .get_meeting("m_x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(gatehouse_signaling::ErrorCode::Unauthorized), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_reconnects_after_a_drop_and_keeps_its_seat() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            serde_json::json!({ "title": "Reconnect", "lobby_bypass": "organizer_only" }),
        )
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let (staff, mut staff_events) = Client::connect(srv.sdk_options(&olga).meeting(mid)).await.unwrap();
    support::sdk_admitted(&mut staff_events).await;
    let token = srv
        .redeem(meeting["public_link"]["code"].as_str().unwrap(), "Flaky Fay")
        .await;
    let (guest, mut guest_events) = Client::connect(srv.sdk_options(&token)).await.unwrap();
    let waiting = support::next_waiting(&mut staff_events).await;
    staff.admit(waiting[0].participant_id.clone()).unwrap();
    support::sdk_admitted(&mut guest_events).await;

    // The connection drops (no `leave`): the seat is held, so staff do not see the guest
    // leave, only its media go down.
    guest.close().await;
    staff_events
        .wait_for(T, |e| match e {
            Event::ParticipantMedia { publisher, .. } => {
                (publisher.state == gatehouse_signaling::protocol::MediaConnectionState::Disconnected).then_some(())
            }
            Event::ParticipantLeft { .. } => panic!("a held guest is not seen to leave"),
            _ => None,
        })
        .await
        .unwrap();
    let (guest, mut guest_events) = guest.reconnect(3, Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        guest.me().participant_id,
        waiting[0].participant_id,
        "same token, same participant"
    );
    // Straight back into the call: admitted without anyone admitting again.
    let placed = guest_events
        .wait_for(T, |e| match e {
            Event::Admitted { .. } => Some(true),
            Event::Lobby { .. } => Some(false),
            _ => None,
        })
        .await
        .unwrap();
    assert!(placed, "the seat was kept");
    // Media starts again on the new connection.
    let cam = guest
        .publish(gatehouse_signaling::protocol::TrackSource::Camera)
        .await
        .unwrap();
    let sender = cam
        .start_synthetic(gatehouse_sdk::synthetic::SyntheticConfig::video())
        .unwrap();
    let track = staff_events
        .wait_for(T, |e| match e {
            Event::RemoteTrack(t) => Some(t),
            Event::ParticipantLeft { .. } | Event::ParticipantJoined(_) => {
                panic!("nobody else sees the guest leave and rejoin: {e:?}")
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(track.participant_id(), guest.me().participant_id);
    assert!(
        tokio::time::timeout(T, track.recv_rtp()).await.unwrap().is_some(),
        "media flows after the reconnect"
    );
    sender.stop().await.unwrap();
    guest.close().await;
    staff.close().await;

    // A refused rejoin ends the attempts at once with the server's code.
    let (gone, _events) = Client::connect(srv.sdk_options(&token)).await.unwrap();
    let (_, end) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{}/end", meeting["meeting_id"].as_str().unwrap()),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(end["state"], "ended");
    let err = gone
        .reconnect(5, Duration::from_secs(5))
        .await
        .expect_err("the meeting has ended");
    assert_eq!(err.code(), Some(gatehouse_signaling::ErrorCode::MeetingEnded), "{err}");
}
