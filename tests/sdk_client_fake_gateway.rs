//! The signaling `Client` against a scripted stand-in for the gateway on a
//! plain `ws://` socket: join, lobby, admission, publishing over the socket
//! (the stand-in answers with the SDK's own `Subscriber`), own-track id claim,
//! mute, chat and leave. It pins the frame order the client expects.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gatehouse::sdk::media::{MediaOptions, Subscriber};
use gatehouse::sdk::synthetic::{ReceiverStats, SyntheticConfig};
use gatehouse::sdk::{Client, ConnectOptions, Event, now_us};
use gatehouse_signaling::protocol::{
    ChatMessage, ClientMessage, LeaveReason, LobbyStatus, MeetingSummary, ParticipantInfo,
    ParticipantKind, PeerRole, ServerMessage, TrackInfo, TrackKind, TrackSource,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

fn text(message: &ServerMessage) -> Message {
    Message::text(serde_json::to_string(message).unwrap())
}

/// The stand-in gateway: serves one connection, then reports how many synthetic
/// audio packets its media side received intact.
async fn gateway(listener: TcpListener) -> u64 {
    let (tcp, _) = listener.accept().await.unwrap();
    let socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let (mut sink, mut stream) = socket.split();
    let mut next = async || -> ClientMessage {
        loop {
            match stream.next().await.expect("client frame").unwrap() {
                Message::Text(t) => {
                    return gatehouse_signaling::protocol::parse_client_message(&t).unwrap();
                }
                _ => continue,
            }
        }
    };

    let join = next().await;
    assert_eq!(
        join,
        ClientMessage::Join {
            protocol: 1,
            token: "staff-token".into(),
            meeting_id: Some("m_1".into())
        }
    );
    let you = ParticipantInfo {
        participant_id: "p_me".into(),
        display_name: "Desk".into(),
        kind: ParticipantKind::Staff,
        organizer: false,
    };
    let meeting = MeetingSummary {
        meeting_id: "m_1".into(),
        title: "Front desk".into(),
        chat_enabled: true,
        guests_may_present: false,
    };
    sink.send(text(&ServerMessage::Joined {
        protocol: 1,
        you,
        meeting,
    }))
    .await
    .unwrap();
    sink.send(text(&ServerMessage::Lobby {
        status: LobbyStatus::WaitingForHost,
        timeout_secs: 60,
    }))
    .await
    .unwrap();
    sink.send(text(&ServerMessage::Admitted {
        participants: vec![],
        tracks: vec![],
        ice_servers: vec![],
    }))
    .await
    .unwrap();

    // Media side of the stand-in: the SDK's own answering code.
    let (media_tx, mut media_rx) = mpsc::unbounded_channel();
    let options = MediaOptions {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..MediaOptions::default()
    };
    let (sfu, mut incoming) = Subscriber::new(options, media_tx);
    let mut received = None;
    loop {
        tokio::select! {
            Some(out) = media_rx.recv() => {
                let frame = match out {
                    ClientMessage::SubscribeAnswer { sdp } => ServerMessage::PublishAnswer { sdp },
                    ClientMessage::IceCandidate { candidate, .. } => {
                        ServerMessage::IceCandidate { target: PeerRole::Publisher, candidate }
                    }
                    other => panic!("unexpected {other:?}"),
                };
                sink.send(text(&frame)).await.unwrap();
            }
            Some(track) = incoming.recv(), if received.is_none() => {
                // Count 50 audio packets, then announce the track as the gateway would.
                let mut stats = ReceiverStats::new(track.synthetic_codec().unwrap(), now_us());
                while stats.summary().received < 50 {
                    let packet = timeout(WAIT, track.recv_rtp()).await.unwrap().unwrap();
                    stats.on_payload(now_us(), &packet.payload).unwrap();
                }
                received = Some(stats.summary().received);
                let track = TrackInfo {
                    track_id: "t_1".into(),
                    participant_id: "p_me".into(),
                    kind: TrackKind::Audio,
                    source: TrackSource::Microphone,
                    muted: false,
                };
                sink.send(text(&ServerMessage::TrackPublished { track })).await.unwrap();
            }
            message = next() => match message {
                ClientMessage::PublishOffer { sdp, tracks } => {
                    assert_eq!(tracks.len(), 1);
                    assert_eq!(tracks[0].source, TrackSource::Microphone);
                    sfu.on_offer(sdp).await.unwrap();
                }
                ClientMessage::IceCandidate { target, candidate } => {
                    assert_eq!(target, PeerRole::Publisher);
                    sfu.add_remote_candidate(candidate).await.unwrap();
                }
                ClientMessage::MuteTrack { track_id, muted } => {
                    assert_eq!((track_id.as_str(), muted), ("t_1", true));
                    let muted = ServerMessage::TrackMuted { track_id, participant_id: "p_me".into(), muted };
                    sink.send(text(&muted)).await.unwrap();
                }
                ClientMessage::Chat { text: said } => {
                    let message = ChatMessage {
                        seq: 1,
                        participant_id: "p_me".into(),
                        display_name: "Desk".into(),
                        text: said,
                        sent_at_ms: 0,
                    };
                    sink.send(text(&ServerMessage::Chat { message })).await.unwrap();
                }
                ClientMessage::Leave => {
                    sink.send(text(&ServerMessage::Left { reason: LeaveReason::Left, message: None })).await.unwrap();
                    let _ = sink.close().await;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            },
        }
    }
    sfu.close().await;
    received.expect("media arrived before leave")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_joins_publishes_chats_and_leaves_over_the_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let gateway = tokio::spawn(gateway(listener));

    let mut options = ConnectOptions::new(url, "staff-token").meeting("m_1");
    options.media.udp_addrs = vec!["127.0.0.1:0".into()];
    let (client, mut events) = timeout(WAIT, Client::connect(options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.me().participant_id, "p_me");
    assert!(matches!(events.recv().await, Some(Event::Joined { .. })));
    assert!(matches!(
        events.recv().await,
        Some(Event::Lobby {
            status: LobbyStatus::WaitingForHost,
            ..
        })
    ));
    assert!(matches!(events.recv().await, Some(Event::Admitted { .. })));
    assert!(client.is_admitted());

    let mic = timeout(WAIT, client.publish(TrackSource::Microphone))
        .await
        .unwrap()
        .unwrap();
    assert!(
        client.mute_track(&mic, true).is_err(),
        "no server id before track_published"
    );
    let sender = mic.start_synthetic(SyntheticConfig::audio()).unwrap();

    let published = events
        .wait_for(WAIT, |e| {
            if let Event::TrackPublished(t) = e {
                Some(t)
            } else {
                None
            }
        })
        .await
        .unwrap();
    assert_eq!(published.track_id, "t_1");
    assert_eq!(
        mic.server_track_id().as_deref(),
        Some("t_1"),
        "own track claimed"
    );
    client.mute_track(&mic, true).unwrap();
    let muted = events
        .wait_for(WAIT, |e| {
            matches!(e, Event::TrackMuted { muted: true, .. }).then_some(())
        })
        .await;
    assert!(muted.is_ok());

    client.chat("hello").unwrap();
    let chat = events
        .wait_for(WAIT, |e| {
            if let Event::Chat(m) = e {
                Some(m)
            } else {
                None
            }
        })
        .await
        .unwrap();
    assert_eq!(chat.text, "hello");

    sender.stop().await.unwrap();
    client.leave().unwrap();
    let left = events
        .wait_for(WAIT, |e| {
            if let Event::Left { reason, .. } = e {
                Some(reason)
            } else {
                None
            }
        })
        .await;
    assert_eq!(left.unwrap(), LeaveReason::Left);
    assert!(
        timeout(WAIT, events.recv()).await.unwrap().is_none(),
        "events end after left"
    );
    assert_eq!(timeout(WAIT, gateway).await.unwrap().unwrap(), 50);
}
