//! The web client in real headless Chromium (fake camera, microphone and screen)
//! against a real gateway: the scenarios in tests/browser/scenarios.mjs drive the
//! pages through playwright-core, and this test checks the facts they measured.

mod support;

use std::time::Duration;

use gatehouse::sdk::synthetic::SyntheticConfig;
use gatehouse::sdk::{Client, Event};
use gatehouse_signaling::protocol::{TrackKind, TrackSource};
use gatehouse_signaling::token::StaffRole;
use serde_json::Value;
use support::TestServer;

/// Runs scenarios in one Node process; returns each scenario's JSON line.
async fn run_scenarios(srv: &TestServer, scenarios: &str, shots: &std::path::Path, extra: Value) -> Vec<Value> {
    run_script(srv, "scenarios.mjs", scenarios, shots, extra).await
}

/// Runs `tests/browser/<script>` (Chromium: scenarios.mjs; Firefox: firefox.mjs).
async fn run_script(
    srv: &TestServer,
    script: &str,
    scenarios: &str,
    shots: &std::path::Path,
    extra: Value,
) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(root)
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "run `npm ci` in tests/browser first (scripts/test.sh does)"
    );
    let token = srv.staff_token("olga", StaffRole::Admin);
    let mut config = serde_json::json!({
        "baseUrl": srv.base,
        "staffToken": token,
        "screenshotDir": shots,
        "requireMedia": true,
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
        c.extend(e);
    }
    let ca = srv.running.as_ref().unwrap().ca_file.clone().unwrap();
    let out = tokio::process::Command::new("node")
        .arg(format!("{root}/tests/browser/{script}"))
        .arg(scenarios)
        .arg(config.to_string())
        .env("NODE_EXTRA_CA_CERTS", ca)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        !results.is_empty(),
        "no results; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for r in &results {
        assert_eq!(
            r["ok"],
            true,
            "scenario failed: {r:#}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(r["pageErrors"].as_array().map(Vec::len), Some(0), "page errors: {r:#}");
    }
    results
}

fn facts<'a>(results: &'a [Value], scenario: &str) -> &'a Value {
    &results
        .iter()
        .find(|r| r["scenario"] == scenario)
        .unwrap_or_else(|| panic!("{scenario} did not run"))["facts"]
}

/// Largest counter of an inbound stream of `kind` (and `source`) in a stats summary.
fn inbound(stats: &Value, kind: &str, source: &str, field: &str) -> u64 {
    stats["inbound"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == kind && s["source"] == source)
        .filter_map(|s| s[field].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_in_chromium() {
    let srv = TestServer::start().await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let scenarios =
        "guest-lobby-admit-chat,screen-share,deny-with-reason,expired-link,guest-leaves,reconnect,staff-queue";
    let results = run_scenarios(&srv, scenarios, &shots, Value::Null).await;

    // Guest journey: lobby, admission with a click, chat, and media both ways.
    let f = facts(&results, "guest-lobby-admit-chat");
    assert_eq!(f["lobbyTextBeforeHost"], "Waiting for the host to join");
    assert_eq!(f["lobbyTextWithHost"], "Waiting for someone to let you in");
    assert_eq!(
        (
            f["admitted"].as_bool(),
            f["chatGuestToStaff"].as_bool(),
            f["chatStaffToGuest"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
    for side in ["guestMedia", "staffMedia"] {
        let (before, after) = (&f[side]["before"], &f[side]["after"]);
        assert!(
            inbound(after, "video", "camera", "framesDecoded") > inbound(before, "video", "camera", "framesDecoded"),
            "{side}: video frames decoded must rise: {:#}",
            f[side]
        );
        assert!(
            inbound(after, "audio", "microphone", "packetsReceived")
                > inbound(before, "audio", "microphone", "packetsReceived"),
            "{side}: audio packets received must rise: {:#}",
            f[side]
        );
    }

    // Screen share: a `screen` track decoded at the staff side, gone when stopped.
    let f = facts(&results, "screen-share");
    assert_eq!(f["staffSawScreenTile"], true);
    assert!(
        inbound(&f["staffScreenMedia"]["after"], "video", "screen", "framesDecoded") > 0,
        "{f:#}"
    );
    assert_eq!(f["screenTileRemoved"], true);

    let f = facts(&results, "deny-with-reason");
    assert_eq!(f["reasonShown"], true);
    let f = facts(&results, "expired-link");
    assert_eq!(f["errorCode"], "link_expired");
    let f = facts(&results, "guest-leaves");
    assert_eq!(
        (f["tileRemoved"].as_bool(), f["listEntryRemoved"].as_bool()),
        (Some(true), Some(true))
    );

    // A dropped connection: back in the call without a second admission, media again.
    let f = facts(&results, "reconnect");
    assert_eq!(
        (f["backInCall"].as_bool(), f["staffLobbyCount"].as_u64()),
        (Some(true), Some(0)),
        "{f:#}"
    );
    assert_eq!(f["mediaAfterReconnect"]["flowing"], true, "{f:#}");

    // The console's queue: admit and deny without joining the call.
    let f = facts(&results, "staff-queue");
    assert_eq!(f["queueShowedGuest"], true, "{f:#}");
    assert_eq!(f["guestAdmittedFromQueue"], true, "{f:#}");
    assert_eq!(f["queueEmptiedAfterAdmit"], true, "{f:#}");
    assert_eq!(f["deniedFromQueueReasonShown"], true, "{f:#}");
    assert_eq!(f["queuePollsWhileInCall"], 0, "{f:#}");

    for name in ["join-page.png", "lobby.png", "call-staff.png", "staff-queue.png"] {
        let meta = std::fs::metadata(shots.join(name)).unwrap_or_else(|_| panic!("screenshot {name} saved"));
        assert!(meta.len() > 10_000, "{name} is a real picture");
    }
}

/// Chromium (a guest on the web client, fake camera and microphone) and a staff
/// member on the Rust SDK exchange media both ways through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_and_sdk_staff_exchange_media() {
    guest_and_sdk_staff_exchange_media("scenarios.mjs", "127.0.0.1:0").await;
}

/// Firefox ESR (driven over WebDriver BiDi) as the guest. Firefox gathers no loopback
/// candidate, so media is bound to the wildcard and the gateway advertises the host's
/// own address (the default route's source address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_guest_and_sdk_staff_exchange_media() {
    guest_and_sdk_staff_exchange_media("firefox.mjs", "0.0.0.0:0").await;
}

/// The same in a browser of each family: the guest page's script, the SDK on the other side.
async fn guest_and_sdk_staff_exchange_media(script: &str, media_bind: &str) {
    let dir = support::temp_dir("browser");
    let mut config = support::test_config(&dir);
    config.media_bind = media_bind.parse().unwrap();
    let srv = TestServer::start_with(config).await;
    if media_bind.starts_with("0.0.0.0") {
        let advertised = srv.state().sfu.media_addrs()[0];
        assert!(
            !advertised.ip().is_loopback(),
            "Firefox needs a non-loopback media address, got {advertised}"
        );
    }
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv
        .create_meeting(
            &olga,
            serde_json::json!({ "title": "Video visit", "lobby_bypass": "organizer_only" }),
        )
        .await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let code = meeting["public_link"]["code"].as_str().unwrap().to_owned();

    let mut options = srv.sdk_options(&olga).meeting(mid);
    // Gather on every interface, loopback included, whichever address the gateway advertises.
    options.media.udp_addrs = vec!["0.0.0.0:0".into(), "127.0.0.1:0".into()];
    let (staff, mut events) = Client::connect(options).await.unwrap();
    let t = Duration::from_secs(30);
    support::sdk_admitted(&mut events).await;
    let mic = staff.publish(TrackSource::Microphone).await.unwrap();
    let cam = staff.publish(TrackSource::Camera).await.unwrap();
    let audio = mic.start_synthetic(SyntheticConfig::audio()).unwrap();
    let video = cam.start_synthetic(SyntheticConfig::video()).unwrap();

    // The browser guest runs alongside; the SDK side admits it and measures its media.
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/screenshots");
    let extra = serde_json::json!({ "linkCode": code, "guestName": "Browser Bea", "mediaTimeoutMs": 25000 });
    let browser = run_script(&srv, script, "guest-meets-sdk", &shots, extra);
    let sdk_side = async {
        let waiting = support::next_waiting(&mut events).await;
        assert_eq!(waiting[0].display_name, "Browser Bea");
        staff.admit(waiting[0].participant_id.clone()).unwrap();
        // Count the browser's RTP per kind until both have a steady flow.
        let mut counts = std::collections::HashMap::new();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let track = events
                .wait_for(t, |e| match e {
                    Event::RemoteTrack(track) => Some(track),
                    _ => None,
                })
                .await
                .unwrap();
            assert_eq!(track.participant_id(), waiting[0].participant_id);
            tasks.push(tokio::spawn(async move {
                let mut packets = 0u64;
                while packets < 100 {
                    match tokio::time::timeout(Duration::from_secs(20), track.recv_rtp()).await {
                        Ok(Some(_)) => packets += 1,
                        _ => break,
                    }
                }
                (track.kind(), packets)
            }));
        }
        for task in tasks {
            let (kind, packets) = task.await.unwrap();
            counts.insert(kind, packets);
        }
        staff.chat("measured").unwrap();
        counts
    };
    let (results, counts) = tokio::join!(browser, sdk_side);
    assert_eq!(
        counts.get(&TrackKind::Audio),
        Some(&100),
        "SDK got the browser's audio: {counts:?}"
    );
    assert_eq!(
        counts.get(&TrackKind::Video),
        Some(&100),
        "SDK got the browser's video: {counts:?}"
    );
    let f = facts(&results, "guest-meets-sdk");
    let (before, after) = (&f["guestMedia"]["before"], &f["guestMedia"]["after"]);
    assert!(
        inbound(after, "video", "camera", "packetsReceived") > inbound(before, "video", "camera", "packetsReceived"),
        "browser receives the SDK's video: {f:#}"
    );
    assert!(
        inbound(after, "audio", "microphone", "packetsReceived")
            > inbound(before, "audio", "microphone", "packetsReceived"),
        "browser receives the SDK's audio: {f:#}"
    );
    assert_eq!(f["left"], true);
    audio.stop().await.unwrap();
    video.stop().await.unwrap();
    staff.close().await;
    srv.wait_until("every media connection closed", |s| {
        s.state().sfu.live_connections() == 0
    })
    .await;
}
