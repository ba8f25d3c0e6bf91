//! Chromium against the SFU: two headless browsers with fake camera and
//! microphone join one meeting, publish, subscribe to each other, and report
//! their `getStats()` here; the test passes when each decodes the other's video
//! and plays its audio with no loss.
//!
//! The signaling here is a minimal stand-in for `server::ws` (one WebSocket per
//! participant speaking the protocol's JSON, `Sfu::handle` behind it).
//! Ignored by default because it launches Chromium (set `CHROMIUM` to its path
//! if it is not `chromium`): `cargo test --test sfu_browser -- --ignored`.

#[path = "sfu_support/mod.rs"]
mod support;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use gatehouse::sfu::{MediaParticipant, Sfu, SfuConfig};
use gatehouse_signaling::protocol::{ParticipantKind, ServerMessage, parse_client_message};

#[derive(Clone)]
struct App {
    sfu: Sfu,
    reports: Arc<Mutex<HashMap<String, serde_json::Value>>>,
}

const PAGE: &str = r#"<!doctype html><body><script>
const id = new URLSearchParams(location.search).get('id');
const log = (...a) => { fetch('/log?id='+id, {method:'POST', body: a.join(' ')}); };
const ws = new WebSocket(`ws://${location.host}/ws?id=${id}`);
const send = (m) => ws.send(JSON.stringify(m));
const pub = new RTCPeerConnection(); const sub = new RTCPeerConnection();
pub.onicecandidate = e => e.candidate && send({type:'ice_candidate', target:'publisher', candidate:e.candidate.toJSON()});
sub.onicecandidate = e => e.candidate && send({type:'ice_candidate', target:'subscriber', candidate:e.candidate.toJSON()});
pub.onconnectionstatechange = () => log('pub', pub.connectionState);
sub.onconnectionstatechange = () => log('sub', sub.connectionState);
const owners = {};
sub.ontrack = e => { owners[e.track.id] = e.streams[0] && e.streams[0].id; const el = document.createElement(e.track.kind); el.srcObject = new MediaStream([e.track]); el.muted = true; el.autoplay = true; document.body.appendChild(el); el.play().catch(()=>{}); };
let chain = Promise.resolve();
ws.onmessage = (m) => { chain = chain.then(async () => { const msg = JSON.parse(m.data); log('msg', msg.type, msg.code || '', msg.message || '');
  if (msg.type==='publish_answer') await pub.setRemoteDescription({type:'answer', sdp: msg.sdp});
  if (msg.type==='subscribe_offer') { await sub.setRemoteDescription({type:'offer', sdp: msg.sdp}); const a = await sub.createAnswer(); await sub.setLocalDescription(a); send({type:'subscribe_answer', sdp: a.sdp}); }
}).catch(e => log('error', e.toString())); };
ws.onopen = async () => {
  try {
  const stream = await navigator.mediaDevices.getUserMedia({audio:true, video:{width:640,height:480}});
  const ta = pub.addTransceiver(stream.getAudioTracks()[0], {direction:'sendonly'});
  const tv = pub.addTransceiver(stream.getVideoTracks()[0], {direction:'sendonly'});
  const offer = await pub.createOffer(); await pub.setLocalDescription(offer);
  send({type:'publish_offer', sdp: offer.sdp, tracks:[{mid: ta.mid, source:'microphone'}, {mid: tv.mid, source:'camera'}]});
  } catch (e) { log('error', e.toString()); }
};
setInterval(async () => {
  const out = {inbound: [], outbound: []};
  (await sub.getStats()).forEach(s => { if (s.type === 'inbound-rtp') out.inbound.push({kind: s.kind, framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded, packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, nackCount: s.nackCount, pliCount: s.pliCount, trackIdentifier: s.trackIdentifier, owner: owners[s.trackIdentifier], codec: s.codecId, frameWidth: s.frameWidth}); });
  (await pub.getStats()).forEach(s => { if (s.type === 'outbound-rtp') out.outbound.push({kind: s.kind, packetsSent: s.packetsSent, pliCount: s.pliCount, nackCount: s.nackCount, framesEncoded: s.framesEncoded, targetBitrate: s.targetBitrate}); if (s.type === 'candidate-pair' && s.nominated) out.availableOutgoingBitrate = s.availableOutgoingBitrate; });
  fetch('/report?id='+id, {method:'POST', body: JSON.stringify(out)});
}, 1000);
</script></body>"#;

async fn ws_handler(
    ws: WebSocketUpgrade,
    Query(q): Query<HashMap<String, String>>,
    State(app): State<App>,
) -> axum::response::Response {
    let id = q.get("id").cloned().unwrap_or_default();
    ws.on_upgrade(move |socket| session(socket, id, app))
}

async fn session(socket: WebSocket, id: String, app: App) {
    let (mut tx, mut rx) = socket.split();
    let (outbox, mut inbox) = tokio::sync::mpsc::unbounded_channel::<ServerMessage>();
    app.sfu
        .add_participant(
            MediaParticipant {
                meeting_id: "m".into(),
                participant_id: id.clone(),
                kind: ParticipantKind::Staff,
                may_present: true,
            },
            outbox.clone(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(m) = inbox.recv().await {
            if tx
                .send(Message::Text(serde_json::to_string(&m).unwrap().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    while let Some(Ok(Message::Text(text))) = rx.next().await {
        match parse_client_message(&text) {
            Ok(msg) => {
                if let Err(e) = app.sfu.handle("m", &id, msg).await {
                    let _ = outbox.send(ServerMessage::error(e.code, e.message));
                }
            }
            Err(e) => {
                let _ = outbox.send(ServerMessage::error(e.code, e.message));
            }
        }
    }
    app.sfu.remove_participant("m", &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "launches Chromium: cargo test --test sfu_browser -- --ignored"]
async fn two_chromiums_exchange_audio_and_video() {
    support::init_logging();
    let sfu = Sfu::start(SfuConfig::loopback()).unwrap();
    let app = App {
        sfu: sfu.clone(),
        reports: Arc::default(),
    };
    let router = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(ws_handler))
        .route(
            "/report",
            post(
                |Query(q): Query<HashMap<String, String>>, State(app): State<App>, body: String| async move {
                    if let Ok(v) = serde_json::from_str(&body) {
                        app.reports.lock().unwrap().insert(q["id"].clone(), v);
                    }
                },
            ),
        )
        .route(
            "/log",
            post(|Query(q): Query<HashMap<String, String>>, body: String| async move {
                eprintln!("[{}] {body}", q["id"]);
            }),
        )
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut browsers = Vec::new();
    for id in ["p_1", "p_2"] {
        let profile = std::env::temp_dir().join(format!("gatehouse-sfu-browser-{}-{id}", std::process::id()));
        let child = tokio::process::Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()))
            .args([
                "--headless=new",
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-gpu",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                &format!("http://{addr}/?id={id}"),
            ])
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        browsers.push(child);
    }
    let ok = support::eventually(Duration::from_secs(60), || {
        let r = app.reports.lock().unwrap();
        ["p_1", "p_2"].iter().all(|id| {
            r.get(*id).is_some_and(|v| {
                let inb = v["inbound"].as_array().cloned().unwrap_or_default();
                inb.iter()
                    .any(|s| s["kind"] == "video" && s["framesDecoded"].as_u64().unwrap_or(0) > 300)
                    && inb
                        .iter()
                        .any(|s| s["kind"] == "audio" && s["packetsReceived"].as_u64().unwrap_or(0) > 400)
            })
        })
    })
    .await;
    let reports = serde_json::to_value(&*app.reports.lock().unwrap()).expect("json");
    let snapshot = sfu.debug_snapshot("m").await.unwrap_or_default();
    assert!(ok, "{reports:#}\n{:?}\n{snapshot:#}", sfu.stats());
    for (me, other) in [("p_1", "p_2"), ("p_2", "p_1")] {
        for s in reports[me]["inbound"].as_array().expect("inbound") {
            assert_eq!(s["owner"], other, "{me}: streams[0].id names the owner: {s}");
            assert!(s["packetsLost"].as_i64().unwrap_or(1) <= 0, "{me}: no loss: {s}");
            if s["kind"] == "video" {
                assert!(s["keyFramesDecoded"].as_u64().unwrap_or(0) >= 1, "{me}: {s}");
                assert_eq!(s["frameWidth"], 640, "{me}: {s}");
            }
        }
    }
    drop(browsers);
    // The browsers' WebSockets close with them, and the sessions remove their participants.
    assert!(support::eventually(Duration::from_secs(10), || sfu.live_connections() == 0).await);
    for id in ["p_1", "p_2"] {
        let profile = std::env::temp_dir().join(format!("gatehouse-sfu-browser-{}-{id}", std::process::id()));
        let _ = std::fs::remove_dir_all(profile);
    }
}
