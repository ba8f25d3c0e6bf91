//! The SDK's media health against a real gateway: two SDK clients publish synthetic
//! audio to each other, one restarts ICE on both of its connections by the path a
//! lost connection takes (`Client::restart_ice`: publisher re-offer, subscriber
//! `restart_ice` answered on a fresh connection), and media keeps flowing both ways
//! while the other side sees no departure and learns our media path from
//! `participant_media`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, Event, Events, MediaHealth};
use gatehouse_signaling::protocol::{ConnectionMedia, MediaConnectionState, MediaPath, ParticipantId, TrackSource};
use gatehouse_signaling::token::StaffRole;
use support::TestServer;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(20);

/// What one client's events showed, kept up to date by [`pump`].
#[derive(Default)]
struct Seen {
    /// RTP packets received on every remote track so far.
    packets: AtomicU64,
    /// Remote tracks handed over (`Event::RemoteTrack`), re-announcements included.
    remote_tracks: AtomicU64,
    /// `ParticipantLeft` events.
    departures: AtomicU64,
    /// `MediaFailed` and `MediaLost` events.
    media_errors: AtomicU64,
    /// `error` frames from the server (a refused `media_status` would be one).
    server_errors: AtomicU64,
}

struct Observed {
    seen: Arc<Seen>,
    /// Our own health, every change.
    health: watch::Receiver<MediaHealth>,
    /// The last `participant_media` about someone else.
    others: watch::Receiver<Option<(ParticipantId, ConnectionMedia, ConnectionMedia)>>,
}

/// Reads a client's events for the rest of the test; counts what arrives on remote tracks.
fn pump(mut events: Events) -> Observed {
    let seen = Arc::new(Seen::default());
    let (health_tx, health) = watch::channel(MediaHealth::default());
    let (others_tx, others) = watch::channel(None);
    let counters = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::RemoteTrack(track) => {
                    counters.remote_tracks.fetch_add(1, Ordering::Relaxed);
                    let counters = counters.clone();
                    tokio::spawn(async move {
                        while track.recv_rtp().await.is_some() {
                            counters.packets.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                Event::ParticipantLeft { .. } => {
                    counters.departures.fetch_add(1, Ordering::Relaxed);
                }
                Event::MediaFailed { role, error } => {
                    eprintln!("media failed on {role:?}: {error}");
                    counters.media_errors.fetch_add(1, Ordering::Relaxed);
                }
                Event::MediaLost { role, attempts } => {
                    eprintln!("media lost on {role:?} after {attempts} restarts");
                    counters.media_errors.fetch_add(1, Ordering::Relaxed);
                }
                Event::Error { code, message } => {
                    eprintln!("server error {code:?}: {message}");
                    counters.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                Event::MediaHealth(health) => {
                    health_tx.send_replace(health);
                }
                Event::ParticipantMedia {
                    participant_id,
                    publisher,
                    subscriber,
                } => {
                    others_tx.send_replace(Some((participant_id, publisher, subscriber)));
                }
                _ => {}
            }
        }
    });
    Observed { seen, health, others }
}

/// Waits until `count` has grown by `more` from `from`.
async fn grows(what: &str, count: &AtomicU64, from: u64, more: u64) {
    let waited = tokio::time::timeout(T, async {
        while count.load(Ordering::Relaxed) < from + more {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what}: {} after {T:?}, wanted {}",
        count.load(Ordering::Relaxed),
        from + more
    );
}

/// Waits until our health satisfies `pred` (every change is looked at).
async fn health_reaches(health: &mut watch::Receiver<MediaHealth>, what: &str, pred: impl FnMut(&MediaHealth) -> bool) {
    let reached = matches!(tokio::time::timeout(T, health.wait_for(pred)).await, Ok(Ok(_)));
    assert!(reached, "{what}: not within {T:?}; now {:?}", *health.borrow());
}

fn both_on_udp(health: &MediaHealth) -> bool {
    [health.publisher, health.subscriber]
        .iter()
        .all(|c| c.state == MediaConnectionState::Connected && c.path == Some(MediaPath::Udp) && c.attempts == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_of_both_connections_keeps_media_flowing_and_the_seat() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let ben = srv.staff_token("ben", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            serde_json::json!({ "title": "Restart", "lobby_bypass": "organization" }),
        )
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();

    let (alice, mut alice_events) = Client::connect(srv.sdk_options(&olga).meeting(mid.clone()))
        .await
        .unwrap();
    support::sdk_admitted(&mut alice_events).await;
    let (bob, mut bob_events) = Client::connect(srv.sdk_options(&ben).meeting(mid)).await.unwrap();
    support::sdk_admitted(&mut bob_events).await;
    let mut alice_seen = pump(alice_events);
    let mut bob_seen = pump(bob_events);

    // Each sends synthetic audio to the other.
    let mut senders = Vec::new();
    for client in [&alice, &bob] {
        let mic = client.publish(TrackSource::Microphone).await.expect("publish");
        mic.wait_connected(T).await.expect("publisher connected");
        senders.push(mic.start_synthetic(SyntheticConfig::audio()).expect("sender"));
    }
    grows("alice receives bob", &alice_seen.seen.packets, 0, 50).await;
    grows("bob receives alice", &bob_seen.seen.packets, 0, 50).await;

    // Our own health: both connections up, over UDP on loopback.
    health_reaches(&mut alice_seen.health, "alice's connections up over udp", both_on_udp).await;
    assert!(both_on_udp(&alice.media_health()), "{:?}", alice.media_health());

    // The restart, by the path a lost connection takes.
    let tracks_before = alice_seen.seen.remote_tracks.load(Ordering::Relaxed);
    let alice_got = alice_seen.seen.packets.load(Ordering::Relaxed);
    let bob_got = bob_seen.seen.packets.load(Ordering::Relaxed);
    alice.restart_ice(None).expect("in the call");
    health_reaches(&mut alice_seen.health, "both restarts under way", |h| {
        h.publisher.attempts == 1 && h.subscriber.attempts == 1
    })
    .await;
    // The subscriber's restart is a fresh connection: it is new, then connects.
    health_reaches(&mut alice_seen.health, "the old subscriber connection replaced", |h| {
        h.subscriber.state != MediaConnectionState::Connected
    })
    .await;
    // Back to health; a restart on a connection that stayed up is settled after its timeout.
    health_reaches(&mut alice_seen.health, "alice's connections back over udp", both_on_udp).await;

    // Media on: bob still gets alice's (publisher restarted), alice gets bob's on the
    // fresh subscriber connection, where his track is announced again.
    grows(
        "bob receives alice after the restart",
        &bob_seen.seen.packets,
        bob_got,
        100,
    )
    .await;
    grows(
        "bob's track re-announced to alice",
        &alice_seen.seen.remote_tracks,
        tracks_before,
        1,
    )
    .await;
    grows(
        "alice receives bob after the restart",
        &alice_seen.seen.packets,
        alice_got,
        100,
    )
    .await;

    // Bob saw alice's media as she reported it: connected over UDP, and never saw her leave.
    let alice_id = alice.me().participant_id.clone();
    let report = tokio::time::timeout(
        T,
        bob_seen.others.wait_for(|m| {
            m.as_ref().is_some_and(|(id, publisher, subscriber)| {
                *id == alice_id && publisher.path == Some(MediaPath::Udp) && subscriber.path == Some(MediaPath::Udp)
            })
        }),
    )
    .await
    .expect("bob hears of alice's media over udp")
    .unwrap()
    .clone();
    assert_eq!(report.map(|(_, p, _)| p.state), Some(MediaConnectionState::Connected));
    assert_eq!(
        bob_seen.seen.departures.load(Ordering::Relaxed),
        0,
        "no participant_left"
    );
    assert_eq!(alice_seen.seen.departures.load(Ordering::Relaxed), 0);
    assert_eq!(
        alice_seen.seen.media_errors.load(Ordering::Relaxed),
        0,
        "no media error"
    );
    assert_eq!(bob_seen.seen.media_errors.load(Ordering::Relaxed), 0);
    for seen in [&alice_seen.seen, &bob_seen.seen] {
        assert_eq!(
            seen.server_errors.load(Ordering::Relaxed),
            0,
            "every media_status and restart accepted"
        );
    }
    assert!(alice.is_admitted() && bob.is_admitted());
    assert_eq!(
        bob.media_health().publisher.state,
        MediaConnectionState::Connected,
        "bob's own media untouched"
    );

    for sender in senders {
        sender.stop().await.expect("sender ran cleanly");
    }
    alice.close().await;
    bob.close().await;
}
