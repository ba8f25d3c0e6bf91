//! TURN with a real coturn (`turnserver`, Debian package `coturn`): the credentials the
//! gateway mints are the ones coturn's TURN REST API mode accepts, over UDP, TCP and TLS;
//! expired or forged ones are refused; and a guest whose media may only be relayed
//! reaches the call through coturn.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse::turn::{TurnRest, password, username};
use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, Event};
use gatehouse_signaling::protocol::{IceServer, LobbyStatus, ParticipantId, TrackSource};
use gatehouse_signaling::token::StaffRole;
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client as TurnClient, ClientConfig as TurnClientConfig, Event as TurnEvent};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use support::TestServer;
use support::coturn::Coturn;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one allocation, one event or one media milestone may take.
const T: Duration = Duration::from_secs(20);

/// How a test client reaches coturn.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

fn unix_now() -> u64 {
    gatehouse::ids::now_ms() / 1000
}

/// A gateway's dev certificate (for `localhost`) and its CA, made in `dir`, for coturn's TLS listener.
fn dev_certificate(dir: &std::path::Path) -> gatehouse::tls::TlsFiles {
    gatehouse::tls::ensure_dev_certificate(&dir.join("tls"), &[]).expect("dev certificate")
}

/// One TURN Allocate with these credentials, as a TURN client does first: the relayed
/// address, or coturn's refusal. The rtc crate's sans-IO TURN client does the protocol
/// (the unauthenticated attempt, then the request with the realm and nonce coturn sent
/// back and MESSAGE-INTEGRITY from the long-term key); this drives it over a socket.
async fn allocate(
    coturn: &Coturn,
    transport: Transport,
    ca: &std::path::Path,
    username: &str,
    password: &str,
) -> Result<SocketAddr, String> {
    let server = match transport {
        Transport::Udp | Transport::Tcp => coturn.addr(),
        Transport::Tls => coturn.tls_addr(),
    };
    match transport {
        Transport::Udp => {
            let (mut client, socket) = udp_turn_client(server, username, password).await;
            client.allocate(Instant::now()).unwrap();
            drive_udp(&mut client, &socket, allocation_event).await
        }
        Transport::Tcp => {
            let stream = tokio::net::TcpStream::connect(server).await.unwrap();
            let local = stream.local_addr().unwrap();
            let client = turn_client(server, local, TransportProtocol::TCP, username, password);
            allocate_over_stream(client, stream, local, server).await
        }
        Transport::Tls => {
            let stream = tokio::net::TcpStream::connect(server).await.unwrap();
            let local = stream.local_addr().unwrap();
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect("localhost".try_into().unwrap(), stream)
                .await
                .expect("coturn's TLS listener presents the certificate for localhost");
            let client = turn_client(server, local, TransportProtocol::TCP, username, password);
            allocate_over_stream(client, stream, local, server).await
        }
    }
}

async fn udp_turn_client(server: SocketAddr, username: &str, password: &str) -> (TurnClient, tokio::net::UdpSocket) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    (
        turn_client(server, local, TransportProtocol::UDP, username, password),
        socket,
    )
}

/// Carries a TURN client's datagrams and timers until `pick` takes one of its events.
async fn drive_udp<T>(
    client: &mut TurnClient,
    socket: &tokio::net::UdpSocket,
    mut pick: impl FnMut(TurnEvent) -> Option<T>,
) -> T {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(out) = client.poll_write() {
            socket.send_to(&out.message, out.transport.peer_addr).await.unwrap();
        }
        while let Some(event) = client.poll_event() {
            if let Some(picked) = pick(event) {
                return picked;
            }
        }
        let deadline = client.poll_timeout().unwrap_or_else(|| Instant::now() + T);
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let (n, from) = got.unwrap();
                let _ = client.handle_read(inbound(local, from, TransportProtocol::UDP, &buf[..n]));
            }
            // The client's own retransmission timer, not a wait for something to happen.
            _ = tokio::time::sleep_until(deadline.into()) => client.handle_timeout(Instant::now()).unwrap(),
        }
    }
}

/// Allocates over UDP, then asks coturn to let each of `peers` talk to the relay (what ICE
/// does before its first check through a relay): coturn's answer for each.
async fn permissions(coturn: &Coturn, username: &str, password: &str, peers: &[SocketAddr]) -> Vec<Result<(), String>> {
    let (mut client, socket) = udp_turn_client(coturn.addr(), username, password).await;
    client.allocate(Instant::now()).unwrap();
    let relayed = drive_udp(&mut client, &socket, allocation_event)
        .await
        .expect("an allocation");
    let mut answers = Vec::new();
    for &peer in peers {
        let asked = client
            .relay(relayed)
            .unwrap()
            .create_permission(Instant::now(), peer)
            .unwrap();
        assert!(asked.is_some(), "a new permission");
        answers.push(
            drive_udp(&mut client, &socket, |event| match event {
                TurnEvent::CreatePermissionResponse(..) => Some(Ok(())),
                TurnEvent::CreatePermissionError(_, e) => Some(Err(e.to_string())),
                TurnEvent::TransactionTimeout(_) => Some(Err("no answer from coturn".into())),
                _ => None,
            })
            .await,
        );
    }
    answers
}

fn turn_client(
    server: SocketAddr,
    local: SocketAddr,
    protocol: TransportProtocol,
    username: &str,
    password: &str,
) -> TurnClient {
    TurnClient::new(
        TurnClientConfig {
            turn_serv_addr: server.to_string(),
            local_addr: local,
            transport_protocol: protocol,
            username: username.to_owned(),
            password: password.to_owned(),
            ..Default::default()
        },
        rtc::crypto::default_provider().expect("a crypto provider"),
    )
    .expect("TURN client")
}

fn inbound(local: SocketAddr, from: SocketAddr, protocol: TransportProtocol, data: &[u8]) -> TaggedBytesMut {
    TaggedBytesMut {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: local,
            peer_addr: from,
            transport_protocol: protocol,
            ecn: None,
        },
        message: BytesMut::from(data),
    }
}

/// The allocation's outcome, if `event` is it.
fn allocation_event(event: TurnEvent) -> Option<Result<SocketAddr, String>> {
    match event {
        TurnEvent::AllocateResponse(_, relayed) => Some(Ok(relayed)),
        TurnEvent::AllocateError(_, e) => Some(Err(e.to_string())),
        TurnEvent::TransactionTimeout(_) => Some(Err("no answer from coturn".into())),
        _ => None,
    }
}

/// The same over a byte stream (TCP, or TLS over TCP): STUN messages framed by their own
/// length field (RFC 8489 §6.2.2: 20-byte header, then the length it states).
async fn allocate_over_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: TurnClient,
    mut stream: S,
    local: SocketAddr,
    server: SocketAddr,
) -> Result<SocketAddr, String> {
    client.allocate(Instant::now()).unwrap();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(out) = client.poll_write() {
            stream.write_all(&out.message).await.unwrap();
        }
        while let Some(event) = client.poll_event() {
            if let Some(result) = allocation_event(event) {
                return result;
            }
        }
        let deadline = client.poll_timeout().unwrap_or_else(|| Instant::now() + T);
        tokio::select! {
            got = stream.read(&mut buf) => {
                let n = got.unwrap();
                assert!(n > 0, "coturn closed the connection; pending {pending:?}");
                pending.extend_from_slice(&buf[..n]);
                while pending.len() >= 20 {
                    let len = 20 + u16::from_be_bytes([pending[2], pending[3]]) as usize;
                    if pending.len() < len {
                        break;
                    }
                    let message: Vec<u8> = pending.drain(..len).collect();
                    let _ = client.handle_read(inbound(local, server, TransportProtocol::TCP, &message));
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => client.handle_timeout(Instant::now()).unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_relays_for_minted_credentials_over_udp_tcp_and_tls_and_refuses_expired_or_forged_ones() {
    let dir = support::temp_dir("turn-auth");
    let tls = dev_certificate(&dir);
    let coturn = Coturn::start(&dir.join("coturn"), &tls.cert, &tls.key).await;
    let ca = tls.ca.clone().expect("dev CA");
    let turn = TurnRest::new(vec![], coturn.secret.clone(), 3600);
    let grace = ParticipantId::from("p_Gr4ceH0pp3rXy12Z");

    // What the gateway hands a participant on entering the call, now: allocations work over
    // every transport coturn listens on.
    let minted = turn.mint(&grace, unix_now());
    let (user, pass) = (minted.username.unwrap(), minted.credential.unwrap());
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let relayed = allocate(&coturn, transport, &ca, &user, &pass).await;
        let relayed = relayed.unwrap_or_else(|e| panic!("{transport:?}: coturn refused fresh credentials: {e}"));
        assert_eq!(
            relayed.ip().to_string(),
            "127.0.0.1",
            "{transport:?}: the relay address"
        );
    }
    // coturn's log names the participant (the username carries its id).
    coturn
        .wait_for_log("a session for the minted username", T, |l| {
            l.contains(&format!("username <{user}>")) || l.contains(&format!("user <{user}>"))
        })
        .await;

    // The relay reaches the gateway's media address and nothing else (README's coturn
    // configuration: every peer denied but the gateway): no open relay for a participant.
    let gateway = SocketAddr::from(([127, 0, 0, 1], 7882));
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 7882));
    let answers = permissions(&coturn, &user, &pass, &[gateway, elsewhere]).await;
    assert!(answers[0].is_ok(), "to the gateway: {:?}", answers[0]);
    let refused = answers[1].as_ref().expect_err("anywhere else is refused");
    assert!(refused.contains("403"), "as forbidden: {refused}");

    // Minted for someone who entered two hours ago with a one-hour TTL: expired.
    let expired = TurnRest::new(vec![], coturn.secret.clone(), 3600).mint(&grace, unix_now() - 7200);
    let refused = allocate(
        &coturn,
        Transport::Udp,
        &ca,
        expired.username.as_deref().unwrap(),
        expired.credential.as_deref().unwrap(),
    )
    .await;
    assert!(refused.is_err(), "an expired credential is refused: {refused:?}");
    assert!(refused.unwrap_err().contains("401"), "as unauthorized");

    // A valid-looking username with a password from another secret, or with another
    // participant's password, or a later expiry under the old password: all refused.
    let name = username(unix_now() + 3600, &grace);
    let forged = [
        (name.clone(), password("not-the-secret", &name)),
        (
            name.clone(),
            password(&coturn.secret, &username(unix_now() + 3600, &"p_other".into())),
        ),
        (username(unix_now() + 86_400, &grace), password(&coturn.secret, &name)),
    ];
    for (user, pass) in forged {
        let refused = allocate(&coturn, Transport::Udp, &ca, &user, &pass).await;
        assert!(
            refused.is_err(),
            "{user} with a forged password is refused: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_guest_exchanges_media_with_staff_through_coturn() {
    let dir = support::temp_dir("turn-media");
    let tls = dev_certificate(&dir);
    let coturn = Coturn::start(&dir.join("coturn"), &tls.cert, &tls.key).await;
    let mut config = support::test_config(&dir.join("gateway"));
    config.turn_urls = Some(vec![
        format!("turn:127.0.0.1:{}?transport=udp", coturn.port),
        format!("turns:localhost:{}?transport=tcp", coturn.tls_port),
    ]);
    config.turn_secret = Some(coturn.secret.clone());
    let srv = TestServer::start_with(gatehouse::config::Config::resolve(config).expect("valid")).await;

    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            json!({ "title": "Skin check", "lobby_bypass": "organizer_only" }),
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

    // The guest gathers relay candidates only: if media flows at all, coturn carried it.
    let guest_token = srv.redeem(&code, "Grace Hopper").await;
    let mut options = srv.sdk_options(&guest_token);
    options.media.relay_only = true;
    let (guest, mut guest_events) = Client::connect(options).await.unwrap();
    let guest_id = guest.me().participant_id.clone();
    // No credentials in the lobby: the guest learns ICE servers only from `admitted`.
    guest_events
        .wait_for(T, |e| match e {
            Event::Lobby {
                status: LobbyStatus::WaitingForAdmission,
                ..
            } => Some(()),
            Event::Admitted { .. } => panic!("admitted without anyone admitting"),
            _ => None,
        })
        .await
        .unwrap();
    let waiting = support::next_waiting(&mut staff_events).await;
    staff.admit(waiting[0].participant_id.clone()).unwrap();
    let ice_servers: Vec<IceServer> = guest_events
        .wait_for(T, |e| match e {
            Event::Admitted { ice_servers, .. } => Some(ice_servers),
            _ => None,
        })
        .await
        .expect("admitted");

    // Credentials of the guest's own, expiring after the TTL (the guest-token lifetime by default).
    let turn = ice_servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn")))
        .expect("a TURN entry");
    assert_eq!(turn.urls.len(), 2, "{turn:?}");
    let user = turn.username.clone().expect("a username");
    let (expiry, who) = user.split_once(':').expect("<expiry>:<participant_id>");
    assert_eq!(who, guest_id.as_str());
    let expires_in = expiry.parse::<u64>().unwrap() - unix_now();
    assert!((7100..=7200).contains(&expires_in), "expires in {expires_in} s");
    assert_eq!(
        turn.credential.as_deref(),
        Some(password(&coturn.secret, &user).as_str())
    );

    // Media both ways: the guest publishes and receives through its relay.
    let guest_mic = guest.publish(TrackSource::Microphone).await.expect("guest publishes");
    let guest_cam = guest.publish(TrackSource::Camera).await.expect("guest publishes");
    let staff_mic = staff.publish(TrackSource::Microphone).await.expect("staff publishes");
    for track in [&guest_mic, &guest_cam, &staff_mic] {
        track.wait_connected(T).await.expect("publisher connected");
    }
    let senders = vec![
        guest_mic.start_synthetic(SyntheticConfig::audio()).unwrap(),
        guest_cam.start_synthetic(SyntheticConfig::video()).unwrap(),
        staff_mic.start_synthetic(SyntheticConfig::audio()).unwrap(),
    ];
    let mut received = Vec::new();
    for (events, from, count) in [
        (&mut staff_events, &guest_id, 2),
        (&mut guest_events, &staff.me().participant_id, 1),
    ] {
        for _ in 0..count {
            let track = events
                .wait_for(T, |e| match e {
                    Event::RemoteTrack(t) => Some(t),
                    _ => None,
                })
                .await
                .expect("a remote track");
            assert_eq!(track.participant_id(), from.as_str());
            received.push(tokio::spawn(async move {
                let mut packets = 0;
                // Enough packets to be a stream, not a lucky datagram: a second of audio.
                while packets < 50 {
                    tokio::time::timeout(T, track.recv_rtp())
                        .await
                        .expect("media keeps arriving")
                        .expect("the track is open");
                    packets += 1;
                }
                track.mime_type().to_owned()
            }));
        }
    }
    let mut kinds: Vec<String> = Vec::new();
    for r in received {
        kinds.push(r.await.expect("50 packets arrived"));
    }
    kinds.sort();
    assert_eq!(kinds, ["audio/opus", "audio/opus", "video/VP8"]);

    // coturn's side: the guest's relays (one per connection, publisher and subscriber) carried
    // its media up and the staff's down. coturn reports a session's traffic when it ends.
    for sender in senders {
        sender.stop().await.expect("sender ran cleanly");
    }
    guest.leave().unwrap();
    guest.close().await;
    let sessions = coturn
        .wait_for_lines("usage of the guest's two relays", T, |lines| {
            let usage: Vec<Usage> = lines.iter().filter_map(|l| Usage::parse(l, &user)).collect();
            (usage.len() >= 2).then_some(usage)
        })
        .await;
    eprintln!("coturn relayed for the guest: {sessions:?}");
    let from_guest: u64 = sessions.iter().map(|u| u.received_packets).sum();
    let to_guest: u64 = sessions.iter().map(|u| u.sent_packets).sum();
    assert!(
        from_guest >= 100 && to_guest >= 50,
        "relayed {from_guest} packets from the guest, {to_guest} to it: {sessions:?}"
    );
    staff.leave().unwrap();
    staff.close().await;
}

/// What coturn logs when a session ends: `session <id>: usage: realm=<..>, username=<..>,
/// rp=<packets received from the client>, rb=<bytes>, sp=<packets sent to the client>, sb=<bytes>`.
#[derive(Debug)]
struct Usage {
    received_packets: u64,
    sent_packets: u64,
}

impl Usage {
    fn parse(line: &str, username: &str) -> Option<Usage> {
        let (_, rest) = line.split_once(": usage: ")?;
        if !rest.contains(&format!("username=<{username}>")) {
            return None;
        }
        let field = |name: &str| {
            rest.split(", ")
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        Some(Usage {
            received_packets: field("rp")?,
            sent_packets: field("sp")?,
        })
    }
}
