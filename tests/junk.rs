//! Junk datagrams from a participant's own, established address: a real gateway process
//! (its log is what an operator reads), two SDK participants in a call with media
//! flowing, and a UDP relay between them and the gateway (the gateway advertises the
//! relay's address as its public IP, so every media datagram passes the relay). The
//! relay's socket for each client connection is that connection's address as the
//! gateway learned it; the test sends thousands of junk datagrams of every kind from
//! those sockets. The gateway drops and counts them, writes only a few lines about them,
//! and media keeps flowing.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse::loadtest::spawn::SpawnedGateway;
use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, ConnectOptions, Event, LobbyBypass, MediaOptions, NewMeeting, RestClient, TlsOptions};
use gatehouse_signaling::protocol::TrackSource;
use gatehouse_signaling::token::StaffRole;
use tokio::net::UdpSocket;

const PATIENCE: Duration = Duration::from_secs(20);
/// Where the relay listens: the gateway advertises this address (loopback: 127/8 is local).
const RELAY_IP: &str = "127.0.0.2";

/// Client address -> the relay's socket toward the gateway for it.
type Upstreams = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// Relays datagrams between clients (on `front`) and the gateway, one upstream socket per client.
async fn relay(front: Arc<UdpSocket>, gateway: SocketAddr, upstreams: Upstreams) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        let existing = upstreams.lock().unwrap().get(&client).cloned();
        let up = match existing {
            Some(up) => up,
            None => {
                let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
                upstreams.lock().unwrap().insert(client, up.clone());
                let (front, back) = (front.clone(), up.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    while let Ok((n, _)) = back.recv_from(&mut buf).await {
                        let _ = front.send_to(&buf[..n], client).await;
                    }
                });
                up
            }
        };
        let _ = up.send_to(&buf[..n], gateway).await;
    }
}

async fn metric(rest: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = rest
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    gatehouse::loadtest::gateway::parse(&text)
        .expect("exposition format")
        .get(name)
        .copied()
        .unwrap_or(0.0)
}

/// A tiny deterministic generator (no `rand` state shared with anything).
struct Bytes(u64);
impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// A Binding request signed with a key that is not the gateway's.
fn forged_check() -> Vec<u8> {
    gatehouse::sfu::fuzzing::signed_check("whoever:client", "not-the-gateways-password")
}

/// Junk datagram number `i`, and whether the gateway's screen catches it (the rest is
/// well-framed SRTP that fails authentication inside the connection).
fn junk(i: usize, rng: &mut Bytes, check: &[u8]) -> (Vec<u8>, bool) {
    let mut d = vec![0u8; 40 + i % 160];
    rng.fill(&mut d);
    match i % 8 {
        // Random bytes in the STUN range (no magic cookie).
        0 => {
            d[0] %= 4;
            d[4] = 0;
        }
        // A check cut short.
        1 => d = check[..check.len() - 1 - i % 20].to_vec(),
        // A whole check whose MESSAGE-INTEGRITY is not the gateway's.
        2 => d = forged_check(),
        // DTLS range, no DTLS version.
        3 => {
            d[0] = 20 + d[0] % 44;
            d[1] = 3;
        }
        // "RTP" shorter than its header.
        4 => d = vec![0x80, 96, 1, 2, 3],
        // Outside every range (RFC 7983).
        5 => d[0] = if i % 16 == 5 { 64 + d[0] % 64 } else { 192 + d[0] % 64 },
        // RTP/RTCP with a header and garbage where SRTP expects its ciphertext and tag.
        _ => {
            d[0] = 0x80;
            d[1] = 96;
            return (d, false);
        }
    }
    (d, true)
}

/// Every `junk` count in a debug view (one per connection).
fn collect_junk(v: &serde_json::Value, out: &mut Vec<u64>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_u64()) {
                    ("junk", Some(n)) => out.push(n),
                    _ => collect_junk(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_junk(i, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_from_a_participants_address_is_counted_and_barely_logged_and_media_flows_on() {
    gatehouse_sdk::tls::install_crypto_provider();
    let dir = support::temp_dir("junk");
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gatehouse"));
    let args = ["--public-ip".to_owned(), RELAY_IP.to_owned()];
    let dir2 = dir.clone();
    let gateway = tokio::task::spawn_blocking(move || SpawnedGateway::start(&exe, &dir2, &args))
        .await
        .expect("join")
        .expect("the gateway starts");
    let advertised = *gateway.media.first().expect("a media address in the banner");
    assert_eq!(advertised.ip().to_string(), RELAY_IP);
    let real = SocketAddr::from(([127, 0, 0, 1], advertised.port()));
    let front = Arc::new(
        UdpSocket::bind(advertised)
            .await
            .expect("the relay binds the advertised address"),
    );
    let upstreams: Upstreams = Arc::default();
    let relay_task = tokio::spawn(relay(front, real, upstreams.clone()));

    let ca = std::fs::read_to_string(dir.join("tls/ca.pem")).expect("dev CA");
    let tls = TlsOptions {
        ca_pem: Some(ca.clone()),
        danger_accept_invalid_certs: false,
    };
    let keys = gatehouse::server::load_or_create_signing_key(&dir).expect("signing key");
    let token = |sub: &str| {
        keys.mint_staff(
            sub,
            sub,
            "default",
            StaffRole::Staff,
            gatehouse::ids::now_ms() / 1000,
            3600,
        )
        .expect("token")
    };
    let rest = RestClient::new(&gateway.url, &tls)
        .expect("rest")
        .with_token(token("alice"));
    let meeting = rest
        .create_meeting(&NewMeeting {
            title: "junk".into(),
            lobby_bypass: Some(LobbyBypass::Organization),
            ..NewMeeting::default()
        })
        .await
        .expect("meeting");
    let connect = |sub: &str| {
        let mut o = ConnectOptions::new(gateway.url.clone(), token(sub)).meeting(meeting.meeting_id.clone());
        o.ca_pem = Some(ca.clone());
        o.media = MediaOptions {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..MediaOptions::default()
        };
        o
    };
    let admitted = |e: Event| matches!(e, Event::Admitted { .. }).then_some(());
    let (alice, mut alice_events) = Client::connect(connect("alice")).await.expect("alice joins");
    alice_events.wait_for(PATIENCE, admitted).await.expect("alice admitted");
    let (bob, mut bob_events) = Client::connect(connect("bob")).await.expect("bob joins");
    bob_events.wait_for(PATIENCE, admitted).await.expect("bob admitted");
    let _sender = alice
        .publish(TrackSource::Microphone)
        .await
        .expect("publish")
        .start_synthetic(SyntheticConfig::audio())
        .expect("synthetic audio");
    let track = bob_events
        .wait_for(PATIENCE, |e| match e {
            Event::RemoteTrack(t) => Some(t),
            _ => None,
        })
        .await
        .expect("bob gets alice's track");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let receiver = tokio::spawn(async move {
        while track.recv_rtp().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let flowing = |at_least: u64| {
        let received = received.clone();
        async move {
            tokio::time::timeout(PATIENCE, async {
                while received.load(Ordering::Relaxed) < at_least {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .is_ok()
        }
    };
    assert!(flowing(50).await, "media flows through the relay before the junk");

    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(gatehouse_sdk::tls::client_config(&tls).expect("tls").expect("a config"))
        .build()
        .expect("http");
    let junk_before = metric(&http, &gateway.url, "gatehouse_sfu_junk_datagrams_total").await;
    let lines_before = gateway.log_lines();
    // Every relay socket is some connection's learned address (alice's publisher and
    // subscriber, bob's subscriber): junk goes out from each in turn.
    let sockets: Vec<Arc<UdpSocket>> = upstreams.lock().unwrap().values().cloned().collect();
    assert!(sockets.len() >= 2, "{} relayed connections", sockets.len());
    let check = forged_check();
    let mut rng = Bytes(0x5eed_1234_abcd_0042);
    let (mut screened, mut sent) = (0u64, 0u64);
    for i in 0..3_000 {
        let (datagram, caught) = junk(i, &mut rng, &check);
        sockets[i % sockets.len()].send_to(&datagram, real).await.expect("send");
        sent += 1;
        screened += u64::from(caught);
        if i % 100 == 99 {
            // Paced a little: the point is the log, not the socket buffer.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Counted: every datagram the screen is meant to catch, exactly (legitimate traffic
    // counted as junk would make it more).
    let counted = tokio::time::timeout(PATIENCE, async {
        loop {
            let now = metric(&http, &gateway.url, "gatehouse_sfu_junk_datagrams_total").await - junk_before;
            if now >= screened as f64 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the junk is counted");
    assert_eq!(counted, screened as f64, "{sent} sent, {screened} of them screenable");

    // Per connection too: the meeting's debug view names each connection's junk.
    let live: serde_json::Value = http
        .get(format!("{}/api/v1/meetings/{}/live", gateway.url, meeting.meeting_id))
        .bearer_auth(token("alice"))
        .send()
        .await
        .expect("live view")
        .json()
        .await
        .expect("json");
    let mut per_connection = Vec::new();
    collect_junk(&live, &mut per_connection);
    assert_eq!(per_connection.len(), sockets.len(), "{live:#}");
    assert_eq!(per_connection.iter().sum::<u64>(), screened, "{live:#}");
    assert!(per_connection.iter().all(|&n| n > 0), "{live:#}");

    // Media flows on, after all of it.
    let before = received.load(Ordering::Relaxed);
    assert!(flowing(before + 50).await, "media still flows after the junk");
    assert_eq!(
        alice.media_health().publisher.state,
        gatehouse_signaling::protocol::MediaConnectionState::Connected,
        "{:?}",
        alice.media_health()
    );

    // Barely logged: at most a line per connection (they all fell within one interval),
    // none of them from rtc.
    let log = std::fs::read_to_string(gateway.log_path()).expect("log");
    let during: Vec<&str> = log.lines().skip(lines_before as usize).collect();
    let junk_lines = during.iter().filter(|l| l.contains("junk datagrams")).count();
    assert!(
        (1..=sockets.len()).contains(&junk_lines),
        "{junk_lines} junk lines for {} connections:\n{}",
        sockets.len(),
        during.join("\n")
    );
    eprintln!(
        "JUNK sent {sent}, screenable {screened}, counted {counted}, connections {}, log lines meanwhile {} ({junk_lines} about junk)",
        sockets.len(),
        during.len()
    );
    assert!(
        during.len() <= 20,
        "{} lines during the junk:\n{}",
        during.len(),
        during.join("\n")
    );
    assert!(!during.iter().any(|l| l.contains("rtc_ice")), "{}", during.join("\n"));
    assert!(during.iter().all(|l| !l.contains("panicked")));

    receiver.abort();
    relay_task.abort();
    let _ = alice.leave();
    let _ = bob.leave();
    alice.close().await;
    bob.close().await;
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
