//! The SDK comes back by itself: a guest whose signaling socket is killed (by the
//! kernel, `ss -K`, as a network reset would) reconnects with its held seat, without
//! the lobby and unseen by the others, and its media (tracks, mutes) comes back on new
//! connections; a subscriber restart whose offer is lost does not wedge negotiation;
//! and an ICE restart after the TURN credentials expired still relays through a real
//! coturn, because the restart brings fresh ones.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, Event, Events, LocalTrack, MediaHealth};
use gatehouse_signaling::protocol::{
    IceServer, LobbyStatus, MediaConnectionState, MediaPath, PeerRole, TrackInfo, TrackSource,
};
use gatehouse_signaling::token::StaffRole;
use serde_json::json;
use support::TestServer;
use support::coturn::Coturn;
use tokio::sync::watch;

/// How long one milestone may take.
const T: Duration = Duration::from_secs(20);

/// A remote track as one client received it.
#[derive(Debug, Clone)]
struct Received {
    participant_id: String,
    source: Option<TrackSource>,
    packets: u64,
    /// When its first RTP packet arrived.
    first_packet: Option<Instant>,
    /// When each packet arrived.
    arrivals: Vec<Instant>,
    /// When it was handed over (`Event::RemoteTrack`).
    opened: Instant,
}

/// What one client's events showed so far, kept up to date by [`pump`].
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Every event, by name, in order.
    names: Vec<&'static str>,
    reconnecting: Vec<(u32, String)>,
    reconnected: Vec<String>,
    /// `participant_left` about anyone.
    departures: Vec<String>,
    /// Participant ids in any non-empty `lobby_update`.
    waiting: Vec<String>,
    /// Our lobby status events (`Event::Lobby`).
    lobby: Vec<LobbyStatus>,
    /// `admitted` count.
    admitted: u32,
    /// `ice_servers` of the latest `admitted`.
    ice_servers: Vec<IceServer>,
    published: Vec<TrackInfo>,
    /// Remote tracks by track id.
    remote: HashMap<String, Received>,
    media_errors: Vec<String>,
    health: MediaHealth,
    disconnected: Option<Option<String>>,
}

impl Seen {
    /// Packets from `participant`'s tracks of `source` that opened after `after`.
    fn packets_since(&self, participant: &str, source: TrackSource, after: Instant) -> u64 {
        self.remote
            .values()
            .filter(|r| r.participant_id == participant && r.source == Some(source) && r.opened >= after)
            .map(|r| r.packets)
            .sum()
    }

    /// Packets from `participant`'s tracks of `source` (old or new) that arrived after `after`.
    fn arrived_since(&self, participant: &str, source: TrackSource, after: Instant) -> u64 {
        self.arrivals(participant, source)
            .iter()
            .filter(|&&t| t > after)
            .count() as u64
    }

    fn arrivals(&self, participant: &str, source: TrackSource) -> Vec<Instant> {
        let mut all: Vec<Instant> = self
            .remote
            .values()
            .filter(|r| r.participant_id == participant && r.source == Some(source))
            .flat_map(|r| r.arrivals.iter().copied())
            .collect();
        all.sort();
        all
    }

    /// The longest pause in `participant`'s media of `source` that ended after `after`:
    /// (when it began, when media came back), or `None` if nothing arrived after it.
    fn longest_gap_after(&self, participant: &str, source: TrackSource, after: Instant) -> Option<(Instant, Instant)> {
        let all = self.arrivals(participant, source);
        all.windows(2)
            .filter(|w| w[1] > after)
            .map(|w| (w[0], w[1]))
            .max_by_key(|(a, b)| *b - *a)
    }

    /// The first packet of such a track.
    fn first_packet_since(&self, participant: &str, source: TrackSource, after: Instant) -> Option<Instant> {
        self.remote
            .values()
            .filter(|r| r.participant_id == participant && r.source == Some(source) && r.opened >= after)
            .filter_map(|r| r.first_packet)
            .min()
    }
}

fn name(event: &Event) -> &'static str {
    match event {
        Event::Joined { .. } => "joined",
        Event::Lobby { .. } => "lobby",
        Event::Admitted { .. } => "admitted",
        Event::LobbyChanged { .. } => "lobby_changed",
        Event::ParticipantJoined(_) => "participant_joined",
        Event::ParticipantLeft { .. } => "participant_left",
        Event::TrackPublished(_) => "track_published",
        Event::TrackUnpublished { .. } => "track_unpublished",
        Event::TrackMuted { .. } => "track_muted",
        Event::RemoteTrack(_) => "remote_track",
        Event::Reconnecting { .. } => "reconnecting",
        Event::Reconnected { .. } => "reconnected",
        Event::Disconnected { .. } => "disconnected",
        Event::MediaHealth(_) => "media_health",
        Event::MediaFailed { .. } => "media_failed",
        Event::MediaLost { .. } => "media_lost",
        Event::Left { .. } => "left",
        Event::Error { .. } => "error",
        _ => "other",
    }
}

/// Reads a client's events for the rest of the test; counts what arrives on remote tracks.
fn pump(mut events: Events) -> watch::Receiver<Seen> {
    let (tx, rx) = watch::channel(Seen::default());
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let event_name = name(&event);
            tx.send_modify(|s| s.names.push(event_name));
            match event {
                Event::Reconnecting { attempt, reason } => tx.send_modify(|s| s.reconnecting.push((attempt, reason))),
                Event::Reconnected { you } => tx.send_modify(|s| s.reconnected.push(you.participant_id.to_string())),
                Event::ParticipantLeft { participant_id, .. } => {
                    tx.send_modify(|s| s.departures.push(participant_id.to_string()))
                }
                Event::LobbyChanged { entries } => {
                    tx.send_modify(|s| s.waiting.extend(entries.iter().map(|e| e.participant_id.to_string())))
                }
                Event::Lobby { status, .. } => tx.send_modify(|s| s.lobby.push(status)),
                Event::Admitted { ice_servers, .. } => tx.send_modify(|s| {
                    s.admitted += 1;
                    s.ice_servers = ice_servers;
                }),
                Event::TrackPublished(track) => tx.send_modify(|s| s.published.push(track)),
                Event::MediaFailed { role, error } => {
                    eprintln!("media failed on {role:?}: {error}");
                    tx.send_modify(|s| s.media_errors.push(error));
                }
                Event::MediaHealth(health) => tx.send_modify(|s| s.health = health),
                Event::Disconnected { error } => tx.send_modify(|s| s.disconnected = Some(error)),
                Event::RemoteTrack(track) => {
                    let id = track.track_id().to_owned();
                    let received = Received {
                        participant_id: track.participant_id().to_owned(),
                        source: track.info().map(|i| i.source),
                        packets: 0,
                        first_packet: None,
                        arrivals: Vec::new(),
                        opened: Instant::now(),
                    };
                    tx.send_modify(|s| {
                        s.remote.insert(id.clone(), received);
                    });
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while track.recv_rtp().await.is_some() {
                            let now = Instant::now();
                            tx.send_modify(|s| {
                                if let Some(r) = s.remote.get_mut(&id) {
                                    r.packets += 1;
                                    r.first_packet.get_or_insert(now);
                                    r.arrivals.push(now);
                                }
                            });
                        }
                    });
                }
                _ => {}
            }
        }
    });
    rx
}

/// Waits until what `seen` shows satisfies `pred`; every change is looked at.
async fn until(seen: &mut watch::Receiver<Seen>, what: &str, pred: impl FnMut(&Seen) -> bool) -> Seen {
    let reached = tokio::time::timeout(T, async { seen.wait_for(pred).await.map(|s| s.clone()) }).await;
    match reached {
        Ok(Ok(s)) => s,
        _ => panic!("{what}: not within {T:?}; seen {:#?}", *seen.borrow()),
    }
}

/// Kills the TCP connection whose local end is `addr` as the kernel would on a reset
/// (`ss -K`: both ends see it die).
fn kill_socket(addr: std::net::SocketAddr) {
    let out = Command::new("ss")
        .args([
            "-K",
            "-t",
            "src",
            &addr.ip().to_string(),
            "sport",
            "=",
            &format!(":{}", addr.port()),
        ])
        .output()
        .expect("ss runs (iproute2)");
    assert!(out.status.success(), "ss -K: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(":{}", addr.port())),
        "ss -K found and killed the socket (needs root and CONFIG_INET_DIAG_DESTROY): {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits until `track` has the server's id for it.
async fn server_id(track: &LocalTrack) -> String {
    let waited = tokio::time::timeout(T, async {
        loop {
            if let Some(id) = track.server_track_id() {
                return id.to_string();
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.expect("the server names our track")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_socket_dies_reconnects_by_itself_keeping_seat_tracks_and_mutes() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            json!({ "title": "Follow-up", "lobby_bypass": "organizer_only", "guests_may_present": true }),
        )
        .await;
    let meeting_id = meeting["meeting_id"].as_str().unwrap().to_owned();
    let code = meeting["public_link"]["code"]
        .as_str()
        .expect("a public link")
        .to_owned();
    let (staff, mut staff_events) = Client::connect(srv.sdk_options(&olga).meeting(meeting_id))
        .await
        .unwrap();
    support::sdk_admitted(&mut staff_events).await;

    // The guest waits in the lobby until staff admit it: a lobby the reconnect must not repeat.
    let guest_token = srv.redeem(&code, "Grace Hopper").await;
    let (guest, mut guest_events) = Client::connect(srv.sdk_options(&guest_token)).await.unwrap();
    let guest_id = guest.me().participant_id.to_string();
    let waiting = support::next_waiting(&mut staff_events).await;
    staff.admit(waiting[0].participant_id.clone()).unwrap();
    support::sdk_admitted(&mut guest_events).await;
    let mut staff_seen = pump(staff_events);
    let mut guest_seen = pump(guest_events);
    let staff_id = staff.me().participant_id.to_string();

    // Media both ways: the guest's microphone and (muted) camera, the staff's microphone.
    let guest_mic = guest.publish(TrackSource::Microphone).await.expect("guest publishes");
    let guest_cam = guest.publish(TrackSource::Camera).await.expect("guest publishes");
    let staff_mic = staff.publish(TrackSource::Microphone).await.expect("staff publishes");
    for track in [&guest_mic, &guest_cam, &staff_mic] {
        track.wait_connected(T).await.expect("publisher connected");
    }
    let senders = [
        guest_mic.start_synthetic(SyntheticConfig::audio()).unwrap(),
        guest_cam.start_synthetic(SyntheticConfig::video()).unwrap(),
        staff_mic.start_synthetic(SyntheticConfig::audio()).unwrap(),
    ];
    let old_cam_id = server_id(&guest_cam).await;
    let old_mic_id = server_id(&guest_mic).await;
    guest.mute_track(&guest_cam, true).expect("mute");
    let start = Instant::now() - Duration::from_secs(3600);
    until(&mut staff_seen, "staff hears the guest", |s| {
        s.packets_since(&guest_id, TrackSource::Microphone, start) >= 50
    })
    .await;
    until(&mut guest_seen, "the guest hears staff", |s| {
        s.packets_since(&staff_id, TrackSource::Microphone, start) >= 50
    })
    .await;
    until(&mut staff_seen, "staff sees the camera muted", |s| {
        s.names.contains(&"track_muted")
    })
    .await;

    // The socket dies under the guest.
    let addr = guest.local_addr().expect("the socket's address");
    let killed = Instant::now();
    kill_socket(addr);

    // The SDK comes back by itself, with the same client and event stream.
    let back = until(&mut guest_seen, "the guest back in the call", |s| {
        !s.reconnected.is_empty() && s.admitted >= 1
    })
    .await;
    let (attempt, reason) = back.reconnecting.first().cloned().expect("a Reconnecting event");
    assert_eq!(attempt, 1, "the first attempt made it");
    eprintln!("reconnecting because: {reason}");
    assert_eq!(
        back.reconnected,
        std::slice::from_ref(&guest_id),
        "the same participant"
    );
    assert_eq!(guest.me().participant_id.as_str(), guest_id);
    let order: Vec<_> = back
        .names
        .iter()
        .filter(|n| ["reconnecting", "reconnected", "admitted", "lobby", "disconnected"].contains(n))
        .collect();
    assert_eq!(
        order,
        [&"reconnecting", &"reconnected", &"admitted"],
        "straight back into the call"
    );
    assert!(
        back.lobby.is_empty(),
        "the lobby was not entered again: {:?}",
        back.lobby
    );
    assert_ne!(guest.local_addr(), Some(addr), "a new socket");

    // Media back both ways on new connections: the guest's tracks published again (the
    // camera still muted), staff's arriving at the guest again.
    let reconnected_at = Instant::now();
    let staff_got = until(&mut staff_seen, "staff hears the guest again", |s| {
        s.arrived_since(&guest_id, TrackSource::Microphone, reconnected_at) >= 50
    })
    .await;
    let guest_got = until(&mut guest_seen, "the guest hears staff again", |s| {
        s.arrived_since(&staff_id, TrackSource::Microphone, reconnected_at) >= 50
    })
    .await;
    for (what, seen, from) in [
        ("guest -> staff", &staff_got, &guest_id),
        ("staff -> guest", &guest_got, &staff_id),
    ] {
        match seen.longest_gap_after(from, TrackSource::Microphone, killed) {
            Some((stopped, back)) => eprintln!(
                "MEASURED {what}: socket killed -> audio back {:?} (longest pause {:?}, from {:?} after the kill)",
                back.saturating_duration_since(killed),
                back - stopped,
                stopped.saturating_duration_since(killed)
            ),
            None => eprintln!("MEASURED {what}: no packets around the kill"),
        }
    }
    assert!(guest_mic.server_track_id().is_some() && guest_cam.server_track_id().is_some());
    eprintln!(
        "track ids: camera {old_cam_id} -> {:?}, microphone {old_mic_id} -> {:?}",
        guest_cam.server_track_id(),
        guest_mic.server_track_id()
    );
    assert!(guest_cam.is_muted());
    let cam_now = server_id(&guest_cam).await;
    let camera = staff
        .remote_tracks()
        .into_iter()
        .find(|t| t.track_id.as_str() == cam_now)
        .expect("staff knows the guest's camera");
    assert!(camera.muted, "the mute survived the reconnect: {camera:?}");

    // Nobody saw the guest leave or wait.
    let staff_now = staff_seen.borrow().clone();
    assert!(
        staff_now.departures.is_empty(),
        "no participant_left: {:?}",
        staff_now.departures
    );
    assert!(
        staff_now.waiting.is_empty(),
        "nobody waited again: {:?}",
        staff_now.waiting
    );
    assert!(staff_now.reconnecting.is_empty(), "staff's own socket untouched");
    let guest_now = guest_seen.borrow().clone();
    assert!(guest_now.media_errors.is_empty(), "{:?}", guest_now.media_errors);
    assert!(guest_now.disconnected.is_none());
    assert!(guest.is_admitted());

    // The application's senders ran through it all.
    for sender in senders {
        let sent = sender.stop().await.expect("a sender that kept going");
        assert!(sent.packets > 100, "{sent:?}");
    }
    guest.leave().unwrap();
    until(&mut staff_seen, "the guest's real departure", |s| {
        s.departures == [guest_id.clone()]
    })
    .await;
    staff.close().await;
    guest.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_restart_offer_does_not_wedge_subscriber_negotiation() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let ben = srv.staff_token("ben", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Lost offer", "lobby_bypass": "organization" }))
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let (alice, mut alice_events) = Client::connect(srv.sdk_options(&olga).meeting(mid.clone()))
        .await
        .unwrap();
    support::sdk_admitted(&mut alice_events).await;
    let (bob, mut bob_events) = Client::connect(srv.sdk_options(&ben).meeting(mid)).await.unwrap();
    support::sdk_admitted(&mut bob_events).await;
    let mut alice_seen = pump(alice_events);
    let _bob_seen = pump(bob_events);
    let bob_id = bob.me().participant_id.to_string();

    let bob_mic = bob.publish(TrackSource::Microphone).await.expect("publish");
    bob_mic.wait_connected(T).await.expect("connected");
    let mut senders = vec![bob_mic.start_synthetic(SyntheticConfig::audio()).unwrap()];
    let start = Instant::now() - Duration::from_secs(3600);
    until(&mut alice_seen, "alice hears bob", |s| {
        s.packets_since(&bob_id, TrackSource::Microphone, start) >= 50
    })
    .await;

    // Alice restarts her subscriber connection and the server's `restart` offer is lost.
    alice.drop_next_restart_offer();
    let restarted = Instant::now();
    alice.restart_ice(Some(PeerRole::Subscriber)).expect("in the call");
    // Meanwhile bob publishes more: an offer the server makes for alice's new connection.
    let bob_cam = bob.publish(TrackSource::Camera).await.expect("publish");
    senders.push(bob_cam.start_synthetic(SyntheticConfig::video()).unwrap());

    // The lost restart is asked for again: alice gets a fresh connection with both of
    // bob's tracks, and media on each.
    let got = until(
        &mut alice_seen,
        "alice gets bob's camera and microphone after the lost restart",
        |s| {
            s.packets_since(&bob_id, TrackSource::Camera, restarted) >= 20
                && s.packets_since(&bob_id, TrackSource::Microphone, restarted) >= 20
        },
    )
    .await;
    eprintln!(
        "MEASURED lost restart offer -> bob's audio at alice again: {:?}",
        got.first_packet_since(&bob_id, TrackSource::Microphone, restarted)
            .map(|t| t - restarted)
    );

    // And later restarts work as ever.
    let again = Instant::now();
    alice.restart_ice(Some(PeerRole::Subscriber)).expect("in the call");
    until(&mut alice_seen, "alice's next restart", |s| {
        s.packets_since(&bob_id, TrackSource::Camera, again) >= 20
            && s.health.subscriber.state == MediaConnectionState::Connected
    })
    .await;
    let seen = alice_seen.borrow().clone();
    assert!(seen.departures.is_empty());
    for sender in senders {
        sender.stop().await.expect("sender ran cleanly");
    }
    alice.close().await;
    bob.close().await;
}

fn unix_now() -> u64 {
    gatehouse::ids::now_ms() / 1000
}

/// The expiry (Unix seconds) of the TURN credential among `servers`.
fn turn_expiry(servers: &[IceServer]) -> u64 {
    let turn = servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn")))
        .expect("a TURN entry");
    let user = turn.username.as_deref().expect("a username");
    user.split_once(':').expect("<expiry>:<participant>").0.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_after_the_turn_credentials_expired_relays_with_fresh_ones() {
    let dir = support::temp_dir("turn-refresh");
    let tls = gatehouse::tls::ensure_dev_certificate(&dir.join("tls"), &[]).expect("dev certificate");
    let coturn = Coturn::start(&dir.join("coturn"), &tls.cert, &tls.key).await;
    let mut config = support::test_config(&dir.join("gateway"));
    config.turn_urls = Some(vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)]);
    config.turn_secret = Some(coturn.secret.clone());
    // The shortest lifetime the gateway allows: the restart comes after it.
    config.turn_ttl_secs = Some(10);
    let srv = TestServer::start_with(gatehouse::config::Config::resolve(config).expect("valid")).await;

    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(&olga, json!({ "title": "Long call", "lobby_bypass": "everyone" }))
        .await;
    let meeting_id = meeting["meeting_id"].as_str().unwrap().to_owned();
    let code = meeting["public_link"]["code"]
        .as_str()
        .expect("a public link")
        .to_owned();
    let (staff, mut staff_events) = Client::connect(srv.sdk_options(&olga).meeting(meeting_id))
        .await
        .unwrap();
    support::sdk_admitted(&mut staff_events).await;
    let guest_token = srv.redeem(&code, "Grace Hopper").await;
    let mut options = srv.sdk_options(&guest_token);
    // Relay candidates only: every connection of the guest needs a TURN allocation.
    options.media.relay_only = true;
    let (guest, guest_events) = Client::connect(options).await.unwrap();
    let guest_id = guest.me().participant_id.to_string();
    let staff_id = staff.me().participant_id.to_string();
    let mut guest_seen = pump(guest_events);
    let mut staff_seen = pump(staff_events);
    let admitted = until(&mut guest_seen, "the guest in the call", |s| s.admitted == 1).await;
    let expiry = turn_expiry(&admitted.ice_servers);

    let guest_mic = guest.publish(TrackSource::Microphone).await.expect("guest publishes");
    let staff_mic = staff.publish(TrackSource::Microphone).await.expect("staff publishes");
    for track in [&guest_mic, &staff_mic] {
        track.wait_connected(T).await.expect("publisher connected");
    }
    let senders = [
        guest_mic.start_synthetic(SyntheticConfig::audio()).unwrap(),
        staff_mic.start_synthetic(SyntheticConfig::audio()).unwrap(),
    ];
    let start = Instant::now() - Duration::from_secs(3600);
    until(&mut guest_seen, "the guest hears staff through its relay", |s| {
        s.packets_since(&staff_id, TrackSource::Microphone, start) >= 50
            && s.health.subscriber.path == Some(MediaPath::Relay)
            && s.health.publisher.path == Some(MediaPath::Relay)
    })
    .await;

    // The credentials the guest entered with expire (coturn refuses them for new relays).
    let expired = tokio::time::timeout(Duration::from_secs(30), async {
        while unix_now() <= expiry {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(expired.is_ok(), "the clock passes the expiry {expiry}");

    // A restart of both connections needs new relays: it asks for and gets fresh credentials.
    let restarted = Instant::now();
    guest.restart_ice(None).expect("in the call");
    let got = until(
        &mut guest_seen,
        "the guest hears staff again through a new relay",
        |s| {
            s.packets_since(&staff_id, TrackSource::Microphone, restarted) >= 50
                && s.health.subscriber.state == MediaConnectionState::Connected
                && s.health.subscriber.path == Some(MediaPath::Relay)
                && s.health.publisher.state == MediaConnectionState::Connected
                && s.health.subscriber.attempts == 0
        },
    )
    .await;
    eprintln!(
        "MEASURED restart with fresh TURN credentials -> staff's audio at the guest again: {:?}",
        got.first_packet_since(&staff_id, TrackSource::Microphone, restarted)
            .map(|t| t - restarted)
    );
    // coturn saw the guest authenticate with a credential minted after the expiry.
    coturn
        .wait_for_log("an allocation with fresh credentials", T, |l| {
            l.split("username <")
                .nth(1)
                .or_else(|| l.split("user <").nth(1))
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(exp, rest)| {
                    rest.starts_with(guest_id.as_str()) && exp.parse::<u64>().is_ok_and(|e| e > expiry)
                })
        })
        .await;
    let seen = guest_seen.borrow().clone();
    assert!(seen.media_errors.is_empty(), "{:?}", seen.media_errors);
    let before = staff_seen
        .borrow()
        .packets_since(&guest_id, TrackSource::Microphone, start);
    until(&mut staff_seen, "staff still hears the guest", |s| {
        s.packets_since(&guest_id, TrackSource::Microphone, start) >= before + 50
    })
    .await;

    for sender in senders {
        sender.stop().await.expect("sender ran cleanly");
    }
    guest.leave().unwrap();
    guest.close().await;
    staff.close().await;
}
