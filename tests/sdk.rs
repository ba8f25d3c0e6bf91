//! The staff SDK against a real gateway: lobby, admission, chat.

mod support;

use std::time::Duration;

use gatehouse::sdk::{Client, Event, LobbyBypass, NewMeeting, RestClient};
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
    staff_events
        .wait_for(T, |e| matches!(e, Event::Admitted { .. }).then_some(()))
        .await
        .unwrap();
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
    let waiting = staff_events
        .wait_for(T, |e| match e {
            Event::LobbyChanged { entries } if !entries.is_empty() => Some(entries),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(waiting[0].display_name, "Walk-in Wanda");
    staff.admit(waiting[0].participant_id.clone()).unwrap();
    wanda_events
        .wait_for(T, |e| matches!(e, Event::Admitted { .. }).then_some(()))
        .await
        .unwrap();
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
