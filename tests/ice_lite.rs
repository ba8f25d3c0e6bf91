//! ICE-lite as advertised, checked on the wire with hand-made STUN (no ICE agent on
//! the client side that would hide the server's behaviour): a valid check is
//! answered at once, a nominating one completes ICE at once (the server, DTLS
//! client on publisher connections, then starts its handshake), the server never
//! sends a check of its own, and a check with a wrong MESSAGE-INTEGRITY gets nothing.
//! The same over ICE-TCP (RFC 6544, RFC 4571 framing): a guest whose UDP is blocked
//! reaches the passive TCP candidate, and ICE and then DTLS run over that link.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatehouse::outbox::Next;
use gatehouse::sfu::{MediaParticipant, Sfu, SfuConfig};
use gatehouse_signaling::protocol::{MediaMessage, ParticipantKind, PublishedTrack, ServerMessage, TrackSource};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::Username;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long any single datagram may take to arrive before the test gives up (a bound
/// for a hung server, not a measurement).
const PATIENCE: Duration = Duration::from_secs(10);

fn sdp_attr(sdp: &str, name: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("a={name}:")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no a={name} in\n{sdp}"))
}

/// The address of the server's (only) host candidate.
fn candidate_addr(sdp: &str) -> SocketAddr {
    let line = sdp_attr(sdp, "candidate");
    let fields: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", fields[4], fields[5])
        .parse()
        .expect("candidate address")
}

/// A publisher offer with one audio m-line, made by `rtc` (never driven: only its SDP, its
/// ICE credentials and DTLS fingerprint are used; no media will flow).
fn client_offer() -> String {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().expect("codecs");
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .build(Instant::now())
        .expect("peer connection");
    pc.add_transceiver_from_kind(
        RtpCodecKind::Audio,
        Some(RTCRtpTransceiverInit {
            direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .expect("transceiver");
    let offer = pc.create_offer(None).expect("offer");
    pc.set_local_description(Instant::now(), offer)
        .expect("local description");
    pc.local_description().expect("local").sdp
}

/// A connectivity check as a controlling client sends it.
fn check(server_ufrag: &str, client_ufrag: &str, key: &str, nominate: bool) -> Message {
    let provider = rtc::crypto::default_provider().expect("crypto");
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, format!("{server_ufrag}:{client_ufrag}"))),
        Box::new(rtc::ice::attributes::control::AttrControlling(42)),
        Box::new(rtc::ice::attributes::priority::PriorityAttr(2_130_706_431)),
    ];
    if nominate {
        setters.push(Box::new(rtc::ice::attributes::use_candidate::UseCandidateAttr::new()));
    }
    setters.push(Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
        key.to_owned(),
        provider.crypto(),
    )));
    setters.push(Box::new(FINGERPRINT));
    m.build(&setters).expect("check");
    m
}

/// What arrived: a STUN message (parsed) or something else (its first byte).
enum Arrived {
    Stun(Message),
    Other(u8),
}

async fn next(socket: &UdpSocket) -> Arrived {
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
        .await
        .expect("the server answers")
        .expect("recv");
    let mut m = Message::new();
    if buf[0] < 4 && m.unmarshal_binary(&buf[..n]).is_ok() {
        Arrived::Stun(m)
    } else {
        Arrived::Other(buf[0])
    }
}

/// A participant in `meeting` with a publisher offer taken: the server's answer and
/// the client's ufrag.
async fn publishing(sfu: &Sfu, meeting: &str) -> (String, String) {
    let (outbox, mut inbox) = gatehouse::outbox::outbox();
    sfu.add_participant(
        MediaParticipant {
            meeting_id: meeting.into(),
            participant_id: "p_raw".into(),
            kind: ParticipantKind::Guest,
            may_present: false,
        },
        outbox,
    )
    .await
    .expect("in the call");
    let offer = client_offer();
    let client_ufrag = sdp_attr(&offer, "ice-ufrag");
    sfu.handle(
        meeting,
        "p_raw",
        MediaMessage::PublishOffer {
            sdp: offer,
            tracks: vec![PublishedTrack {
                mid: "0".into(),
                source: TrackSource::Microphone,
                muted: false,
            }],
        },
    )
    .await
    .expect("offer taken");
    let answer = loop {
        match tokio::time::timeout(PATIENCE, inbox.next()).await.expect("an answer") {
            Next::Message(ServerMessage::PublishAnswer { sdp }) => break sdp,
            Next::Message(_) => continue,
            other => panic!("outbox ended: {other:?}"),
        }
    };
    (answer, client_ufrag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_answered_at_once_and_the_server_sends_none() {
    let sfu = Sfu::start(SfuConfig::loopback()).expect("sfu starts");
    let (answer, client_ufrag) = publishing(&sfu, "m_lite").await;
    let (server_ufrag, server_pwd, server) = (
        sdp_attr(&answer, "ice-ufrag"),
        sdp_attr(&answer, "ice-pwd"),
        candidate_addr(&answer),
    );
    let provider = rtc::crypto::default_provider().expect("crypto");

    // A check with a wrong MESSAGE-INTEGRITY, then a valid one, from a second address:
    // the first answer on that socket is the valid check's (nothing for the forged one).
    let intruder = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let forged = check(&server_ufrag, &client_ufrag, "not-the-servers-password-000", true);
    intruder.send_to(&forged.raw, server).await.expect("send");
    let probe = check(&server_ufrag, &client_ufrag, &server_pwd, false);
    intruder.send_to(&probe.raw, server).await.expect("send");
    match next(&intruder).await {
        Arrived::Stun(m) => {
            assert_eq!(
                m.typ, BINDING_SUCCESS,
                "a valid check gets a success, not a check of the server's"
            );
            assert_eq!(
                m.transaction_id, probe.transaction_id,
                "nothing answers the forged check"
            );
        }
        Arrived::Other(b) => panic!("expected STUN, got a datagram starting {b}"),
    }
    // That valid check is the connection's first: its path is used at once (DTLS starts
    // there, the server being DTLS client here) without waiting for a nomination.
    match next(&intruder).await {
        Arrived::Other(first) => assert!(
            (20..=63).contains(&first),
            "DTLS on the first checked path (first byte {first})"
        ),
        Arrived::Stun(m) => panic!("expected DTLS on the first valid check's path, got STUN {:?}", m.typ),
    }

    // The client's nominating check: answered at once, and ICE completes on it at once,
    // so the server (DTLS client on a publisher connection) starts its handshake, all
    // without the client ever answering a check, and without the server ever sending one.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let nominating = check(&server_ufrag, &client_ufrag, &server_pwd, true);
    assert!(nominating.contains(ATTR_USE_CANDIDATE));
    client.send_to(&nominating.raw, server).await.expect("send");
    let mut answered = false;
    loop {
        match next(&client).await {
            Arrived::Stun(mut m) => {
                assert_ne!(m.typ, BINDING_REQUEST, "a lite server sends no checks");
                assert_eq!(m.typ, BINDING_SUCCESS);
                assert_eq!(m.transaction_id, nominating.transaction_id);
                MessageIntegrity::check(&mut m, server_pwd.as_bytes(), provider.crypto())
                    .expect("signed with the server's password");
                answered = true;
            }
            Arrived::Other(first) => {
                assert!(answered, "the check was answered before anything else");
                assert!((20..=63).contains(&first), "DTLS follows (first byte {first})");
                break;
            }
        }
    }

    // Nothing unauthenticated moves the media: a nominating check with a wrong
    // MESSAGE-INTEGRITY, and a DTLS-looking datagram, both from an address that never
    // passed a check. The server's next datagram (its DTLS retransmission: the client
    // never answers) still goes to the client, and the intruder has been sent nothing.
    let intruder = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let forged = check(&server_ufrag, &client_ufrag, "not-the-servers-password-000", true);
    intruder.send_to(&forged.raw, server).await.expect("send");
    intruder
        .send_to(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], server)
        .await
        .expect("send");
    match next(&client).await {
        Arrived::Other(first) => assert!((20..=63).contains(&first), "DTLS again (first byte {first})"),
        Arrived::Stun(m) => panic!("expected the DTLS retransmission, got STUN {:?}", m.typ),
    }
    let mut buf = [0u8; 2048];
    assert!(
        intruder.try_recv_from(&mut buf).is_err(),
        "the intruder was sent nothing"
    );
    sfu.remove_participant("m_lite", "p_raw").await;
    assert_eq!(sfu.live_connections(), 0);
}

/// One RFC 4571 frame.
fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(packet.len()).expect("short").to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

async fn next_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut data = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut data).await.ok()?;
        Some(data)
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server answers or closes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_and_dtls_run_over_the_passive_tcp_candidate() {
    let sfu = Sfu::start(SfuConfig::loopback()).expect("sfu starts");
    let (answer, client_ufrag) = publishing(&sfu, "m_tcp").await;
    let (server_ufrag, server_pwd) = (sdp_attr(&answer, "ice-ufrag"), sdp_attr(&answer, "ice-pwd"));
    let tcp_line = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains(" tcp "))
        .unwrap_or_else(|| panic!("a TCP candidate in\n{answer}"));
    assert!(tcp_line.trim_end().ends_with("typ host tcptype passive"), "{tcp_line}");
    let fields: Vec<&str> = tcp_line.split_whitespace().collect();
    let server: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().expect("address");
    assert_eq!(Some(server), sfu.tcp_addr());

    // A connection whose first frame is not a check for a known connection is closed.
    let mut stranger = TcpStream::connect(server).await.expect("connect");
    stranger
        .write_all(&framed(&check("nobody-here", &client_ufrag, &server_pwd, true).raw))
        .await
        .expect("send");
    assert!(next_frame(&mut stranger).await.is_none(), "closed without an answer");

    // The client's nominating check over TCP: answered on the link, then DTLS on it.
    let provider = rtc::crypto::default_provider().expect("crypto");
    let mut link = TcpStream::connect(server).await.expect("connect");
    let nominating = check(&server_ufrag, &client_ufrag, &server_pwd, true);
    link.write_all(&framed(&nominating.raw)).await.expect("send");
    let first = next_frame(&mut link).await.expect("a success response");
    let mut m = Message::new();
    m.unmarshal_binary(&first).expect("STUN");
    assert_eq!(m.typ, BINDING_SUCCESS, "answered at once, no check of the server's");
    assert_eq!(m.transaction_id, nominating.transaction_id);
    MessageIntegrity::check(&mut m, server_pwd.as_bytes(), provider.crypto())
        .expect("signed with the server's password");
    let dtls = next_frame(&mut link).await.expect("DTLS follows on the link");
    assert!((20..=63).contains(&dtls[0]), "a DTLS record (first byte {})", dtls[0]);
    let snapshot = sfu.debug_snapshot("m_tcp").await.expect("placed");
    assert!(snapshot.to_string().contains(r#""transport":"tcp""#), "{snapshot}");

    sfu.remove_participant("m_tcp", "p_raw").await;
    assert_eq!(sfu.live_connections(), 0);
    // Whatever the connection said last (a DTLS alert), then the end of the link.
    let mut last_words = 0;
    while next_frame(&mut link).await.is_some() {
        last_words += 1;
        assert!(last_words < 100, "the link closes with its connection");
    }
}
