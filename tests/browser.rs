//! The web client in real headless Chromium (fake camera, microphone and screen)
//! against a real gateway: the scenarios in tests/browser/scenarios.mjs drive the
//! pages through playwright-core, and this test checks the facts they measured.

mod support;

use std::time::Duration;

use support::browser::{BROWSER_START, BrowserScript, facts, inbound};
use support::process;

use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, Event};
use gatehouse_signaling::protocol::{TrackKind, TrackSource};
use gatehouse_signaling::token::StaffRole;
use serde_json::Value;
use support::TestServer;

/// One browser at a time in this binary: two cold browsers starting together on a
/// 2-core machine make each other's waits meaningless. Held for a whole test, and by a
/// test with a guest network from before that net is made until it is gone (declare the
/// guard first: locals drop in reverse order): making or removing a veth pair is a
/// network change to every running Chromium, whose navigation then fails with
/// `ERR_NETWORK_CHANGED` (CI run of 2026-12-03).
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl BrowserScript {
    /// Starts `script` with `scenarios` against `srv` (Chromium: scenarios.mjs; Firefox: firefox.mjs).
    fn start(srv: &TestServer, script: &str, scenarios: &str, extra: Value) -> BrowserScript {
        let token = srv.staff_token("olga", StaffRole::Admin);
        let ca = srv.running.as_ref().unwrap().ca_file.clone().unwrap();
        BrowserScript::spawn(&srv.base, &token, &ca, script, scenarios, extra)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_in_chromium() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/screenshots");
    let scenarios =
        "guest-lobby-admit-chat,screen-share,deny-with-reason,expired-link,guest-leaves,reconnect,staff-queue";
    let results = BrowserScript::start(&srv, "scenarios.mjs", scenarios, Value::Null)
        .finish()
        .await;

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

    // The gateway's sender reports of the staff's video reach the guest's Chromium, which reads
    // them: two at least, so the second report's SRTCP index follows the first's.
    assert!(
        f["guestVideoSenderReports"].as_u64().is_some_and(|n| n >= 2),
        "{:#}",
        f["guestVideoSenderReports"]
    );

    // Screen share: a `screen` track decoded at the staff side, gone when stopped.
    let f = facts(&results, "screen-share");
    assert_eq!(f["staffSawScreenTile"], true);
    assert!(
        inbound(&f["staffScreenMedia"]["after"], "video", "screen", "framesDecoded") > 0,
        "{f:#}"
    );
    assert_eq!(f["screenTileRemoved"], true);
    // Text stays sharp: the guest's browser is told to keep the screen's resolution.
    assert_eq!(f["guestLocalScreenTrack"]["contentHint"], "detail", "{f:#}");
    // And to send it with temporal layers (this Chromium takes L1T3), so the gateway can give
    // a subscriber short of bandwidth fewer frames instead of lost packets; the encoder says so.
    assert_eq!(f["guestLocalScreenTrack"]["scalabilityMode"], "L1T3", "{f:#}");
    assert_eq!(f["guestScreenOutbound"]["scalabilityMode"], "L1T3", "{f:#}");

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
    assert_eq!(f["queueRestRequests"], 0, "pushed, never polled: {f:#}");
    assert_eq!(f["queueBackAfterCall"], true, "{f:#}");

    for name in ["join-page.png", "lobby.png", "call-staff.png", "staff-queue.png"] {
        let meta = std::fs::metadata(shots.join(name)).unwrap_or_else(|_| panic!("screenshot {name} saved"));
        assert!(meta.len() > 10_000, "{name} is a real picture");
    }
}

/// Simulcast with real peers (issue 12): a Chromium guest sends its camera as three layers;
/// staff (the console, in a second context of the same browser) gets the layer its tile
/// needs: a small tile the low one, a large tile the full one, a hidden tile nothing; the
/// picture keeps decoding across the switches, and the gateway counts them. With the tile
/// hidden nobody needs the guest's top layers, and its browser is told to stop them
/// (dynacast); shown again, they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_subscriber_gets_the_simulcast_layer_its_tile_needs() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let before = srv.state().sfu.stats();
    let results = BrowserScript::start(&srv, "scenarios.mjs", "simulcast-layers", Value::Null)
        .finish()
        .await;
    let after = srv.state().sfu.stats();
    let f = facts(&results, "simulcast-layers");
    eprintln!(
        "REACH simulcast-layers {}",
        serde_json::json!({
            "layers": f["layers"], "start_width": f["startWidth"], "low_width": f["lowWidth"],
            "low_ms": f["lowMs"], "high_width": f["highWidth"], "high_ms": f["highMs"],
            "freeze": f["freeze"], "off_ms": f["offMs"], "packets_while_off": f["packetsWhileOff"],
            "packets_after_on": f["packetsAfterOn"], "paused_ms": f["pausedMs"],
            "resumed_ms": f["resumedMs"], "top_again_ms": f["topAgainMs"],
            "layer_switches": after.layer_switches - before.layer_switches,
        })
    );
    let n = |key: &str| f[key].as_u64().unwrap_or_else(|| panic!("{key} measured: {f:#}"));
    let rids: Vec<&str> = f["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["rid"].as_str())
        .collect();
    assert_eq!(rids, ["f", "h", "q"], "the camera goes out as three layers: {f:#}");
    assert!(n("layersSending") >= 2, "at least two of them sending: {f:#}");
    assert_eq!(
        (f["saidLow"].as_bool(), f["saidHigh"].as_bool(), f["saidOff"].as_bool()),
        (Some(true), Some(true), Some(true)),
        "the tile says what it needs: {f:#}"
    );
    assert!(
        n("lowWidth") * 2 <= n("startWidth"),
        "a small tile gets the low layer: {f:#}"
    );
    assert!(n("highWidth") >= n("startWidth"), "a large tile the full one: {f:#}");
    assert!(
        f["freeze"]["longestMs"].as_u64().is_some_and(|ms| ms < 1000),
        "frames keep decoding across the switches: {f:#}"
    );
    assert!(n("packetsWhileOff") <= 2, "a hidden tile gets no packets: {f:#}");
    assert!(n("packetsAfterOn") > 20, "shown again, it gets them again: {f:#}");
    // Dynacast: the scenario waited for the guest's h and f to go inactive while nobody
    // needed them (q active), then for f to be active again and decoded at full size.
    let paused = f["layersWhileOff"].as_array().expect("layers while off");
    assert!(
        paused.iter().any(|l| l["rid"] == "q" && l["active"] == true)
            && paused.iter().filter(|l| l["rid"] != "q").all(|l| l["active"] == false),
        "with the tile hidden the guest sends its lowest layer only: {f:#}"
    );
    assert!(
        n("pausedMs") > 0 && n("resumedMs") > 0 && n("topAgainMs") >= n("resumedMs"),
        "{f:#}"
    );
    assert!(
        after.layer_switches - before.layer_switches >= 2,
        "the gateway switched down and up: {before:?} {after:?}"
    );
}

/// The web client's pure modules (`web-client/media-status.js`) pass their unit tests
/// (`tests/browser/*.test.mjs`, `node --test`): no browser, so no lock.
#[test]
fn web_client_pure_modules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/browser")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "unit tests in {}", dir.display());
    let out = std::process::Command::new("node")
        .arg("--test")
        .args(&files)
        .output()
        .expect("node runs (scripts/test.sh installs Node.js)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Chromium (a guest on the web client, fake camera and microphone) and a staff
/// member on the Rust SDK exchange media both ways through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_and_sdk_staff_exchange_media() {
    let f = guest_and_sdk_staff_exchange_media("scenarios.mjs", "127.0.0.1:0", None, false).await;
    for role in ["publisher", "subscriber"] {
        assert_eq!(
            f["guestMedia"]["after"]["media"][role]["path"], "udp",
            "on an open network the guest's {role} connection goes over UDP: {f:#}"
        );
    }
    // The SDK's loud audio reached the guest's page as `active_speakers`: the staff tile rings.
    let speaking = &f["speakingTile"];
    assert!(
        speaking["participantId"]
            .as_str()
            .is_some_and(|p| p != f["guestParticipantId"]),
        "the SDK participant's tile is the speaking one: {f:#}"
    );
    assert_eq!(speaking["label"], "speaking", "{f:#}");
    assert!(
        speaking["classes"].as_str().is_some_and(|c| c.contains("speaking")),
        "{f:#}"
    );
}

/// A guest whose network drops every UDP datagram (a hospital or corporate firewall),
/// in a network namespace of its own: Chromium reaches the gateway's passive ICE-TCP
/// candidate, with no TURN server, and media flows both ways over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_behind_a_udp_block_gets_media_over_ice_tcp() {
    // Held before the net is made and until it is gone (see `ONE_BROWSER`).
    let one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let guest = InNamespace {
        net: &net,
        configure: Box::new(|_| {}),
        restrict: Box::new(|_| net.block_udp()),
    };
    let f = guest_and_sdk_staff_exchange_media("scenarios.mjs", "", Some((guest, &one_browser)), false).await;
    for role in ["publisher", "subscriber"] {
        assert_eq!(
            f["guestMedia"]["after"]["media"][role]["path"], "tcp",
            "the guest's {role} connection goes over ICE-TCP: {f:#}"
        );
    }
}

/// A guest whose network lets only TCP 443 out (and the gateway's HTTPS port: in a real
/// deployment that is 443 too, on the gateway's own address): neither UDP nor ICE-TCP
/// reaches the gateway, so Chromium relays through a real coturn over TLS on 443, with
/// the credentials the gateway minted for this guest, and media flows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_allowed_only_tcp_443_gets_media_through_turn_over_tls() {
    // Held before the net is made and until it is gone (see `ONE_BROWSER`).
    let one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let dir = support::temp_dir("turn-tls");
    let tls = gatehouse::tls::ensure_dev_certificate(&dir.join("tls"), &["localhost".to_owned()]).expect("certificate");
    let coturn =
        support::coturn::Coturn::start_on(&dir.join("coturn"), &tls.cert, &tls.key, net.host_ip.into(), Some(443))
            .await;
    let turn_url = format!("turns:{}:443?transport=tcp", net.host_ip);
    let guest = InNamespace {
        net: &net,
        configure: Box::new(|config| {
            config.turn_urls = Some(vec![turn_url.clone()]);
            config.turn_secret = Some(coturn.secret.clone());
        }),
        restrict: Box::new(|srv| {
            let https = srv.running.as_ref().unwrap().addr.port();
            net.nft(&format!(
                "table inet gatehouse_test {{
                   chain out {{ type filter hook output priority 0; policy accept;
                     meta l4proto udp drop; tcp dport != {{ 443, {https} }} drop; }}
                   chain in {{ type filter hook input priority 0; policy accept; meta l4proto udp drop; }}
                 }}"
            ));
        }),
    };
    let f = guest_and_sdk_staff_exchange_media("scenarios.mjs", "", Some((guest, &one_browser)), false).await;
    for role in ["publisher", "subscriber"] {
        assert_eq!(
            f["guestMedia"]["after"]["media"][role]["path"], "relay",
            "the guest's {role} connection goes through TURN: {f:#}"
        );
        assert_eq!(
            f["guestMedia"]["after"]["media"][role]["pair"]["local"]["type"], "relay",
            "{f:#}"
        );
    }
    // coturn really carried it, over its TLS listener: the allocation for this guest's
    // username (`<expiry>:<participant id>`) succeeded, in a session coturn logs as TLS.
    let guest = f["guestParticipantId"].as_str().expect("the guest's participant id");
    let allocation = coturn
        .wait_for_log("the guest's allocation", Duration::from_secs(5), |l| {
            l.contains(&format!(":{guest}>")) && l.contains("ALLOCATE") && l.contains("success")
        })
        .await;
    let session = allocation
        .split("session ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("a session id in {allocation:?}"))
        .to_owned();
    let log = coturn.log();
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("session {session}:")) && l.contains("TLS")),
        "coturn's session {session} (the guest's allocation) is over TLS: {}",
        log.join("\n")
    );
}

/// Firefox ESR (driven over WebDriver BiDi) as the guest. Firefox gathers no loopback
/// candidate, so media is bound to the wildcard and the gateway advertises the host's
/// own address (the default route's source address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_guest_and_sdk_staff_exchange_media() {
    guest_and_sdk_staff_exchange_media("firefox.mjs", "0.0.0.0:0", None, false).await;
}

/// The same with the meeting spread over two media shards (`--media-split-at 1`): the SDK
/// staff member on one, the Chromium guest on the other, media relayed between them both
/// ways, the staff member's audio level lighting the guest's speaking tile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_and_sdk_staff_on_two_media_shards_exchange_media() {
    let f = guest_and_sdk_staff_exchange_media("scenarios.mjs", "127.0.0.1:0", None, true).await;
    assert_eq!(f["speakingTile"]["label"], "speaking", "{f:#}");
}

/// A browser guest in a network namespace of its own: the gateway's settings for it, and
/// what the guest's network lets through, set once the gateway's ports are known.
struct InNamespace<'a> {
    net: &'a support::netns::GuestNet,
    configure: Box<dyn FnOnce(&mut gatehouse::config::Config) + 'a>,
    restrict: Box<dyn FnOnce(&TestServer) + 'a>,
}

/// The same in a browser of each family: the guest page's script, the SDK on the other
/// side. With `guest`, the browser runs in that namespace and the gateway (HTTPS, media
/// over UDP and TCP) listens on the host end of its link. Returns the scenario's facts.
/// A guest in a namespace comes with the caller's hold on [`ONE_BROWSER`], taken before its
/// net was made; without one, the browser lock is taken here.
/// With `spread`, the gateway has two media shards and spreads a meeting from its second
/// participant on (`media_split_at` 1): the guest and the staff member are on different shards.
async fn guest_and_sdk_staff_exchange_media(
    script: &str,
    media_bind: &str,
    guest: Option<(InNamespace<'_>, &tokio::sync::MutexGuard<'static, ()>)>,
    spread: bool,
) -> Value {
    let _one_browser = match guest {
        Some(_) => None,
        None => Some(ONE_BROWSER.lock().await),
    };
    let guest = guest.map(|(g, _)| g);
    let (srv, dir, net) = match guest {
        // The SDK reaches HTTPS as localhost (the name in the dev certificate), the guest by
        // the link's address.
        Some(InNamespace {
            net,
            configure,
            restrict,
        }) => {
            let (srv, dir) = namespace_gateway(net, configure, restrict).await;
            (srv, dir, Some(net))
        }
        None => {
            let dir = support::temp_dir("browser");
            let mut config = support::test_config(&dir);
            config.media_bind = Some(media_bind.parse().unwrap());
            if spread {
                config.media_shards = Some(2);
                config.media_split_at = Some(1);
            }
            (TestServer::start_with(config).await, dir, None)
        }
    };
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

    let mut options = srv.sdk_options(&olga).meeting(mid.clone());
    // Gather on every interface, loopback included, whichever address the gateway advertises.
    options.media.udp_addrs = vec!["0.0.0.0:0".into(), "127.0.0.1:0".into()];
    if let Some(net) = net {
        options.media.udp_addrs = vec![format!("{}:0", net.host_ip)];
    }
    let (staff, mut events) = Client::connect(options).await.unwrap();
    let t = Duration::from_secs(30);
    support::sdk_admitted(&mut events).await;
    let mic = staff.publish(TrackSource::Microphone).await.unwrap();
    let cam = staff.publish(TrackSource::Camera).await.unwrap();
    let audio = mic.start_synthetic(SyntheticConfig::audio()).unwrap();
    let video = cam.start_synthetic(SyntheticConfig::video()).unwrap();

    // The browser guest runs alongside; the SDK side admits it and measures its media.
    // Its clock starts when the guest has pressed Join, not when the browser was started.
    let mut extra = match net {
        Some(net) => guest_in_namespace(&srv, net, &dir, "Browser Bea"),
        None if script == "scenarios.mjs" => {
            serde_json::json!({ "guestName": "Browser Bea", "mediaTimeoutMs": 25000, "checkSpeaking": true })
        }
        None => serde_json::json!({ "guestName": "Browser Bea", "mediaTimeoutMs": 25000 }),
    };
    extra["linkCode"] = code.into();
    let mut browser = BrowserScript::start(&srv, script, "guest-meets-sdk", extra);
    browser.progress("join-sent", BROWSER_START).await;
    let counts = async {
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
        if spread {
            // Two shards hold the meeting, one participant each, and packets crossed.
            let snapshot = srv.state().sfu.debug_snapshot(&mid).await.expect("in the call");
            let shards: Vec<u64> = std::iter::once(&snapshot)
                .chain(snapshot["spread"].as_array().into_iter().flatten())
                .map(|s| s["shard"].as_u64().expect("shard"))
                .collect();
            assert_eq!(shards.len(), 2, "spread over both shards: {snapshot:#}");
            assert!(srv.state().sfu.stats().relayed_packets > 0);
        }
        staff.chat("measured").unwrap();
        counts
    }
    .await;
    let results = browser.finish().await;
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
    f.clone()
}

/// What the namespace scenarios share: a gateway reachable from the guest's namespace
/// (HTTPS on every address, media on the host end of the link) and a staff member on
/// the SDK in a meeting there, publishing synthetic video.
struct NamespaceCall {
    srv: TestServer,
    staff: Client,
    events: gatehouse_sdk::Events,
    video: gatehouse_sdk::SyntheticSender,
    /// The guest script's config: the meeting's link, the gateway's address on the
    /// guest's link, Chromium inside the namespace.
    guest: Value,
    _dir: std::path::PathBuf,
}

impl NamespaceCall {
    /// `restrict` sets the guest's network once the gateway's ports are known.
    async fn start(net: &support::netns::GuestNet, guest_name: &str, restrict: impl FnOnce(&TestServer)) -> Self {
        let (srv, dir) = namespace_gateway(net, |_| {}, restrict).await;
        let olga = srv.staff_token("olga", StaffRole::Staff);
        let meeting = srv
            .create_meeting(
                &olga,
                serde_json::json!({ "title": "Video visit", "lobby_bypass": "organizer_only" }),
            )
            .await;
        let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
        let mut options = srv.sdk_options(&olga).meeting(mid);
        options.media.udp_addrs = vec![format!("{}:0", net.host_ip)];
        let (staff, mut events) = Client::connect(options).await.unwrap();
        support::sdk_admitted(&mut events).await;
        let cam = staff.publish(TrackSource::Camera).await.unwrap();
        let video = cam.start_synthetic(SyntheticConfig::video()).unwrap();
        let mut guest = guest_in_namespace(&srv, net, &dir, guest_name);
        guest["linkCode"] = meeting["public_link"]["code"].clone();
        NamespaceCall {
            srv,
            staff,
            events,
            video,
            guest,
            _dir: dir,
        }
    }

    async fn end(self) {
        self.video.stop().await.unwrap();
        self.staff.close().await;
        self.srv
            .wait_until("every media connection closed", |s| {
                s.state().sfu.live_connections() == 0
            })
            .await;
    }
}

/// A gateway reachable from a guest's namespace: HTTPS on every address, media (UDP and
/// ICE-TCP) on the host end of the link, then `configure`'s settings; `restrict` sets the
/// guest's network once the gateway's ports are known. Returns the server and its temporary directory.
async fn namespace_gateway(
    net: &support::netns::GuestNet,
    configure: impl FnOnce(&mut gatehouse::config::Config),
    restrict: impl FnOnce(&TestServer),
) -> (TestServer, std::path::PathBuf) {
    let dir = support::temp_dir("netns");
    let mut config = support::test_config(&dir);
    config.listen = Some("0.0.0.0:0".parse().unwrap());
    config.media_bind = Some((net.host_ip, 0).into());
    config.media_tcp_bind = Some((net.host_ip, 0).into());
    configure(&mut config);
    let srv = TestServer::start_with(config).await;
    restrict(&srv);
    (srv, dir)
}

/// The browser script's config for a guest in `net`: the gateway's address on the guest's
/// link, Chromium inside the namespace (a staff browser the script starts runs outside it).
fn guest_in_namespace(srv: &TestServer, net: &support::netns::GuestNet, dir: &std::path::Path, name: &str) -> Value {
    let port = srv.running.as_ref().unwrap().addr.port();
    serde_json::json!({
        "guestName": name,
        "mediaTimeoutMs": 25000,
        "baseUrl": format!("https://{}:{port}", net.host_ip),
        "chromiumPath": net.wrapper(dir, "/usr/bin/chromium").display().to_string(),
    })
}

/// Wall-clock milliseconds, the clock the page's `Date.now()` reads too.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A guest whose network drops everything for 3 s (a train tunnel, a Wi-Fi hand-over)
/// stays in the call: media flows again both ways once the network is back, the staff
/// member never sees the guest leave, and the guest never sees the lobby. How soon
/// media is back is measured here and reported (docs/BENCHMARKS.md), not asserted
/// beyond a bound that tells "recovered" from "lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_keeps_the_call_through_a_3_s_network_outage() {
    guest_keeps_the_call_through(Disruption::Cut(Duration::from_secs(3))).await;
}

/// The same for 10 s: long enough for the browser to call its connections
/// disconnected and for the web client to restart ICE while the network is still down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_keeps_the_call_through_a_10_s_network_outage() {
    guest_keeps_the_call_through(Disruption::Cut(Duration::from_secs(10))).await;
}

/// A guest whose address changes mid-call (Wi-Fi to mobile data: its old address is
/// gone, with every socket bound to it, signaling's included) gets media back both ways
/// on the new one (ICE restart, and a reconnect of the signaling socket with its held
/// seat), and nobody sees it leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_keeps_the_call_when_its_address_changes() {
    guest_keeps_the_call_through(Disruption::Move).await;
}

/// Video comes back soon after the guest's network drops everything for 3 s (a train
/// tunnel, a Wi-Fi hand-over), counted as decoded frames rising again on both sides: a
/// guest in Chromium in its own namespace and a staff member in the console (a second
/// Chromium outside it), both sending their fake camera. Issue 11's goal is 1 s after the
/// network is back (figures in docs/BENCHMARKS.md §5, `scripts/bench/reach.sh`); the bound
/// asserted, [`VIDEO_BACK_BOUND_MS`], tells "resumed" from "renegotiated or lost" and is no
/// benchmark. Nobody sees the guest leave; the guest never leaves the call view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_video_decodes_again_soon_after_a_3_s_outage() {
    video_decodes_again_after(Disruption::Cut(Duration::from_secs(3))).await;
}

/// The same when the guest's address changes (its old address and every socket on it are
/// gone, signaling's included), counted from the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_video_decodes_again_soon_after_an_address_change() {
    video_decodes_again_after(Disruption::Move).await;
}

/// How soon after the network is back decoded video must rise again on both sides: well
/// above what a 2-core CI box shared with other tests takes (an address change: 2.1 to 2.6 s
/// here), well below a renegotiation after ICE failure (15 s and more) or "never".
const VIDEO_BACK_BOUND_MS: u64 = 4000;

/// Cuts or moves the guest's network; returns when (wall clock, ms) it works again.
async fn disrupt(net: &mut support::netns::GuestNet, disruption: Disruption) -> u64 {
    match disruption {
        Disruption::Cut(outage) => {
            net.nft(
                "table inet gatehouse_outage {
                   chain out { type filter hook output priority -10; policy drop; }
                   chain in { type filter hook input priority -10; policy drop; }
                 }",
            );
            // The outage itself, not a wait for anything.
            tokio::time::sleep(outage).await;
            net.nft("delete table inet gatehouse_outage");
        }
        Disruption::Move => net.move_guest(),
    }
    epoch_ms()
}

async fn video_decodes_again_after(disruption: Disruption) {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(mut net) = support::netns::GuestNet::create() else {
        return;
    };
    let (srv, dir) = namespace_gateway(&net, |_| {}, |_| {}).await;
    let guest = guest_in_namespace(&srv, &net, &dir, "Travelling Tom");
    let mut browser = BrowserScript::start(&srv, "scenarios.mjs", "outage-frames", guest);
    // Two browsers start, one after the other, before media flows.
    browser.progress("media-flowing", BROWSER_START).await;
    let restored_at = disrupt(&mut net, disruption).await;
    browser.tell(serde_json::json!({ "told": "restored", "at": restored_at }));
    let results = browser.finish().await;
    let f = facts(&results, "outage-frames");
    let label = match disruption {
        Disruption::Cut(d) => format!("frames-outage-{}s", d.as_secs()),
        Disruption::Move => "frames-address-change".to_owned(),
    };
    // One line for scripts/bench/reach.sh (docs/BENCHMARKS.md §5).
    eprintln!(
        "REACH {label} {}",
        serde_json::json!({
            "frames_to_guest_ms": f["toGuest"]["ms"],
            "frames_to_staff_ms": f["toStaff"]["ms"],
            "guest_timeline": f["guestTimeline"],
            "staff_timeline": f["staffTimeline"],
            "staff_track_events": f["staffTrackEvents"],
        })
    );
    for side in ["toGuest", "toStaff"] {
        let ms = f[side]["ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("{side}: video decoded again: {f:#}"));
        assert!(
            ms < VIDEO_BACK_BOUND_MS,
            "{side}: video decoded again {ms} ms after the network was back (bound {VIDEO_BACK_BOUND_MS} ms): {f:#}"
        );
    }
    assert_eq!(
        f["guestViews"],
        serde_json::json!(["call"]),
        "the guest stayed in the call: {f:#}"
    );
    assert_eq!(
        f["staffSawLeft"],
        serde_json::json!([]),
        "nobody saw the guest leave: {f:#}"
    );
    srv.wait_until("every media connection closed", |s| {
        s.state().sfu.live_connections() == 0
    })
    .await;
}

/// How long the loss test impairs the guest's network.
const LOSS_IMPAIRMENT: Duration = Duration::from_secs(15);

/// Issue 12, loss repair both ways: 5 % of the UDP datagrams into and out of a Chromium
/// guest's network namespace are dropped (nftables `numgen random`) for
/// [`LOSS_IMPAIRMENT`], while the guest and a staff member in the console (a second
/// Chromium outside it) send each other their fake camera. The gateway answers the guest's
/// NACKs from its retransmission cache (counted on the server, seen by the guest as RTX),
/// video keeps decoding both ways (no stretch over 1 s without a new frame, read from the
/// frame counts), little loss is left after repair, and the guest's camera resends at most
/// twice what the gateway found missing from it (the gateway asks with RTT pacing and a
/// retry limit, and learns RTX repairs). Both cameras send one layer here: the simulcast
/// variant below is not yet reliable enough for every CI run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_video_survives_5_percent_loss_both_ways() {
    loss_both_ways(false).await;
}

/// The same with both cameras simulcast (the web client's default): the guest's resends come
/// as RTX of its layers, which the gateway turns back into the layers' packets (`layer_rtx`).
/// Toward the guest the packet count of what stayed lost is no measure, since Chromium gives
/// up repairing packets of non-reference frames of VP8's temporal layers once a later frame
/// decodes without them (ARCHITECTURE, Simulcast), so only freezes are judged in that
/// direction. (Until a leg stopped switching layers on old keyframes that Chromium resends
/// as probe padding, about 2 runs in 11 froze staff's view for about 3 s; 10 of 10 after, the
/// longest gap 262 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_simulcast_video_survives_5_percent_loss_both_ways() {
    loss_both_ways(true).await;
}

/// Figures for docs/BENCHMARKS.md §6 come from the `LOSS` line (`scripts/bench/loss.sh`).
async fn loss_both_ways(simulcast: bool) {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let (srv, dir) = namespace_gateway(&net, |_| {}, |_| {}).await;
    let mut guest = guest_in_namespace(&srv, &net, &dir, "Lossy Lou");
    guest["simulcast"] = simulcast.into();
    let mut browser = BrowserScript::start(&srv, "scenarios.mjs", "loss-both-ways", guest);
    browser.progress("media-flowing", BROWSER_START).await;
    let before = srv.state().sfu.stats();
    // Down: dropped as it arrives in the guest's namespace. Up: dropped as it arrives on
    // this side of the link (see `lose_from_guest`).
    net.nft(
        "table inet gatehouse_loss {
           chain in { type filter hook input priority -10; policy accept; meta l4proto udp numgen random mod 100 < 5 counter drop; }
         }",
    );
    let up = net.lose_from_guest(5);
    browser.tell(serde_json::json!({ "told": "impaired", "at": epoch_ms() }));
    // The impairment itself, not a wait for anything.
    tokio::time::sleep(LOSS_IMPAIRMENT).await;
    // The drop rules' counters: datagrams dropped from the guest (up), then to it (down).
    let mut dropped = up.counted();
    dropped.extend(support::netns::packet_counts(
        &net.nft_list("table inet gatehouse_loss"),
    ));
    drop(up);
    net.nft("delete table inet gatehouse_loss");
    browser.tell(serde_json::json!({ "told": "restored", "at": epoch_ms() }));
    let after = srv.state().sfu.stats();
    let results = browser.finish().await;
    let f = facts(&results, "loss-both-ways");
    let delta = |pick: fn(&gatehouse::sfu::stats::CountersSnapshot) -> u64| pick(&after) - pick(&before);
    let side = |who: &str, dir: &str, field: &str| {
        f[who]["after"][dir][field].as_f64().unwrap_or(0.0) - f[who]["before"][dir][field].as_f64().unwrap_or(0.0)
    };
    let server = serde_json::json!({
        "nacked_packets": delta(|s| s.nacked_packets),
        "retransmitted_packets": delta(|s| s.retransmitted_packets),
        "retransmitted_rtx": delta(|s| s.retransmitted_rtx),
        "unservable_nacks": delta(|s| s.unservable_nacks),
        "nacks_sent": delta(|s| s.nacks_sent),
        "nack_requests_sent": delta(|s| s.nack_requests_sent),
        "missing_packets": delta(|s| s.missing_packets),
        "duplicate_packets": delta(|s| s.duplicate_packets),
        "plis_sent": delta(|s| s.plis_sent),
        "layer_rtx_repaired": delta(|s| s.layer_rtx_repaired),
    });
    let received = side("guest", "inbound", "packetsReceived");
    // Chrome counts a packet repaired by RTX as lost all the same (packetsLost does not
    // go down when its RTX arrives), so what stayed lost is the difference.
    let lost =
        (side("guest", "inbound", "packetsLost") - side("guest", "inbound", "retransmittedPacketsReceived")).max(0.0);
    let residual_loss = lost / (received + lost).max(1.0);
    let resent_by_guest = side("guest", "outbound", "retransmittedPacketsSent");
    let missing = delta(|s| s.missing_packets) as f64;
    // One line for scripts/bench/loss.sh (docs/BENCHMARKS.md §6).
    eprintln!(
        "LOSS {}",
        serde_json::json!({
            "impaired_ms": f["impairedMs"],
            "server": server,
            "nft_dropped_up_down": dropped,
            "to_guest": {
                "packets": received, "lost": side("guest", "inbound", "packetsLost"),
                "lost_after_repair": lost, "residual_loss": residual_loss,
                "rtx_received": side("guest", "inbound", "retransmittedPacketsReceived"),
                "nacks": side("guest", "inbound", "nackCount"), "plis": side("guest", "inbound", "pliCount"),
                "freeze": f["guest"]["freeze"],
                "freeze_count": side("guest", "inbound", "freezeCount"),
                "freezes_s": side("guest", "inbound", "totalFreezesDuration"),
            },
            "to_staff": {
                "packets": side("staff", "inbound", "packetsReceived"),
                "lost_after_repair": side("staff", "inbound", "packetsLost"),
                "freeze": f["staff"]["freeze"],
                "freeze_count": side("staff", "inbound", "freezeCount"),
                "freezes_s": side("staff", "inbound", "totalFreezesDuration"),
            },
            "guest_camera": {
                "sent": side("guest", "outbound", "packetsSent"), "resent": resent_by_guest,
                "nacks": side("guest", "outbound", "nackCount"), "bytes": side("guest", "outbound", "bytesSent"),
            },
        })
    );
    assert!(
        delta(|s| s.retransmitted_packets) > 0 && side("guest", "inbound", "nackCount") > 0.0,
        "the guest's NACKs were answered from the cache: {server} {f:#}"
    );
    assert!(
        side("guest", "inbound", "retransmittedPacketsReceived") > 0.0,
        "as RTX, which the guest negotiated: {f:#}"
    );
    assert!(
        simulcast || residual_loss < 0.005,
        "loss after repair toward the guest under 0.5 %: {lost} of {received} ({f:#})"
    );
    for who in ["guest", "staff"] {
        let longest = f[who]["freeze"]["longestMs"]
            .as_u64()
            .unwrap_or_else(|| panic!("{who}: frame rises sampled: {f:#}"));
        assert!(
            longest < 1000,
            "{who}: video decoded with no gap over 1 s ({longest} ms): {f:#}"
        );
    }
    assert!(
        missing > 0.0,
        "the gateway found packets missing from the guest: {server}"
    );
    assert!(
        resent_by_guest <= 2.0 * missing,
        "the guest's camera resent {resent_by_guest} packets for {missing} missing: {server} {f:#}"
    );
    // A simulcast camera's resends come as RTX of its layers, which `rtc` alone would drop.
    assert!(
        !simulcast || delta(|s| s.layer_rtx_repaired) > 0,
        "the layers' RTX reached the gateway as the layers' packets: {server}"
    );
    srv.wait_until("every media connection closed", |s| {
        s.state().sfu.live_connections() == 0
    })
    .await;
}

/// Congestion control toward a subscriber (issue 12), in the default suite: the guest's
/// downlink (Chromium in a network namespace) is capped at 300 kbit/s while staff's Chromium
/// publishes simulcast, and within 5 s the guest receives the lowest layer (its decoded
/// width, and the layer the server's debug view shows on its leg), the server's estimate
/// dropped, its audio never stopped, and its page said its connection was weak and its video
/// reduced (`connection_quality`: its tile's badge, by name, and the notice), as staff's page
/// did on the guest's tile, and staff's tile on the guest's page showed "Low quality: your
/// connection" whenever its video was reduced (`video_layer`). About 21-24 s; the whole scenario (loss, freezes, the cap lifted)
/// is `chromium_guest_on_a_300_kbits_downlink_adapts_and_recovers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_on_a_300_kbits_downlink_gets_the_low_layer() {
    downlink_cap(true, false).await;
}

/// The whole capped-downlink scenario of issue 12: 15 s capped at 300 kbit/s (within 5 s
/// the low layer, then under 2 % of packets lost over 10 s, no freeze over 1 s, audio never
/// interrupted), then the cap lifted (the top layer again within 10 s, the low-quality label
/// gone). Figures for
/// docs/BENCHMARKS.md §6 come from its `DOWNLINK` line (`scripts/bench/downlink.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: about 40 s with two Chromiums; scripts/bench/downlink.sh"]
async fn chromium_guest_on_a_300_kbits_downlink_adapts_and_recovers() {
    downlink_cap(true, true).await;
}

/// Issue 12, "screen share is protected": staff shares its screen (Chromium sends it with
/// temporal layers, L1T3) to a guest whose downlink is then capped below the screen share's
/// rate but above its base layer's. The gateway caps the guest's screen leg to a lower temporal
/// layer (server debug view: its `temporal_target`), leaves out the upper frames (counted), and the guest keeps
/// decoding the screen at the width it had, at a lower frame rate. The cap lifted, the leg
/// is back to every frame within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_screen_share_to_a_capped_guest_keeps_its_resolution_and_drops_frame_rate() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let (srv, dir) = namespace_gateway(&net, |_| {}, |_| {}).await;
    let guest = guest_in_namespace(&srv, &net, &dir, "Narrow Nora");
    let mut browser = BrowserScript::start(&srv, "scenarios.mjs", "screen-cap", guest);
    let sharing = browser.progress("sharing", BROWSER_START).await;
    let meeting = sharing["meetingId"].as_str().expect("the meeting").to_owned();
    // The screen share's rate as it arrives, and its leg toward the guest, from the debug view.
    let screen_of = |snap: &Value| -> (Option<u64>, Option<u64>) {
        let track = snap["tracks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["track"]["source"] == "screen"));
        let bps = track.and_then(|t| t["layers"][0]["bps"].as_u64());
        let id = track.map(|t| t["track"]["track_id"].clone());
        let cap = snap["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["kind"] == "guest"))
            .and_then(|g| g["receiving"].as_array())
            .and_then(|ls| ls.iter().find(|l| Some(&l["track_id"]) == id.as_ref()))
            .and_then(|l| l["temporal_target"].as_u64());
        (bps, cap)
    };
    // One full window of the rate meter after the guest decodes the screen, and 4 s of frames
    // to compare with.
    let (mut screen_bps, sharing_at) = (0, epoch_ms());
    let deadline = sharing_at + 10_000;
    while epoch_ms() < deadline {
        let snap = srv
            .state()
            .sfu
            .debug_snapshot(&meeting)
            .await
            .expect("the meeting's room");
        screen_bps = screen_of(&snap).0.unwrap_or(0);
        if screen_bps > 0 && epoch_ms() >= sharing_at + 4000 {
            break;
        }
        // Polling the server's view until the rate is measured (bounded by the deadline).
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(screen_bps > 0, "the screen share's rate is measured");
    let before = srv.state().sfu.stats();
    // Half the screen's rate plus room for audio and the camera's lowest layer: the base
    // layer (about 40 % of it with L1T3) fits, the whole screen share does not.
    let cap_kbit = (screen_bps / 2 / 1000 + 250) as u32;
    net.cap_to_guest(cap_kbit, 250);
    let capped_at = epoch_ms();
    browser.tell(serde_json::json!({ "told": "capped", "at": capped_at }));
    let mut caps: Vec<(u64, Option<u64>)> = Vec::new();
    while epoch_ms() < capped_at + 15_000 {
        if let Some(snap) = srv.state().sfu.debug_snapshot(&meeting).await {
            caps.push((epoch_ms() - capped_at, screen_of(&snap).1));
        }
        // The sampling period of a measurement that lasts a fixed time, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = srv.state().sfu.stats();
    // The cap lifted: the leg tries its upper layers back (a try, then the next).
    net.uncap_to_guest();
    let uncapped_at = epoch_ms();
    while epoch_ms() < uncapped_at + 12_000 {
        if let Some(snap) = srv.state().sfu.debug_snapshot(&meeting).await {
            caps.push((epoch_ms() - capped_at, screen_of(&snap).1));
        }
        // The sampling period of a measurement that lasts a fixed time, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    browser.tell(serde_json::json!({ "told": "done" }));
    let results = browser.finish().await;
    let f = facts(&results, "screen-cap");
    let rows: Vec<Vec<f64>> = f["screen"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r.as_array().map(|r| r.iter().filter_map(Value::as_f64).collect()))
                .collect()
        })
        .unwrap_or_default();
    // Frames per second and the widths decoded over [from, to] (ms since the cap).
    let span = |from: i64, to: i64| {
        let w: Vec<&Vec<f64>> = rows
            .iter()
            .filter(|r| {
                let ms = r[0] as i64 - capped_at as i64;
                ms >= from && ms <= to
            })
            .collect();
        let (a, b) = (w.first(), w.last());
        let fps = match (a, b) {
            (Some(a), Some(b)) if b[0] > a[0] => (b[2] - a[2]) * 1000.0 / (b[0] - a[0]),
            _ => 0.0,
        };
        let widths: Vec<u64> = w.iter().map(|r| r[1] as u64).collect();
        // Lost, freezes, PLIs, NACKs over the span.
        let d = |i: usize| match (a, b) {
            (Some(a), Some(b)) => b[i] - a[i],
            _ => 0.0,
        };
        (fps, widths, [d(4), d(5), d(6), d(7)])
    };
    let (fps_before, widths_before, _) = span(-4000, 0);
    let (fps_capped, widths_capped, repair) = span(7000, 15_000);
    let width = widths_before.last().copied().unwrap_or(0);
    let lifted = uncapped_at - capped_at;
    let capped_legs = caps
        .iter()
        .filter(|(ms, c)| *ms < lifted && c.is_some_and(|c| c < 255))
        .count();
    // Back to every frame, to stay: the start of the last run of uncapped samples, counted
    // from the lift. A run that began before it (the leg's try of its upper layers happened to
    // fall just before the lift, and held) counts as back at once.
    let back_ms = caps
        .iter()
        .rposition(|(_, c)| *c != Some(255))
        .and_then(|i| caps.get(i + 1))
        .map(|(ms, _)| ms.saturating_sub(lifted));
    let (fps_after, _, _) = span(lifted as i64 + 10_000, lifted as i64 + 12_000);
    // The guest's screen tile says its video is reduced while capped.
    let labelled = rows
        .iter()
        .filter(|r| r[0] as u64 >= capped_at && (r[0] as u64) < uncapped_at && r.get(9) == Some(&1.0))
        .count();
    let drops = after.temporal_drops - before.temporal_drops;
    println!(
        "SCREEN_CAP samples={} screen_bps={screen_bps} cap_kbit={cap_kbit} width={width} fps_before={fps_before:.1} \
         fps_capped={fps_capped:.1} back_ms={back_ms:?} fps_after={fps_after:.1} labelled={labelled} lost/freezes/plis/nacks={repair:?} temporal_drops={drops} \
         capped_samples={capped_legs}/{} outbound={} {} caps={caps:?}",
        rows.iter()
            .map(|r| format!("{}:{}/{}/{}/{}", r[0] as i64 - capped_at as i64, r[2], r[8], r[4], r[6]))
            .collect::<Vec<_>>()
            .join(","),
        caps.len(),
        f["staffScreenOutbound"],
        f["staffScreenOutboundAtEnd"],
    );
    assert_eq!(f["staffScreenOutbound"]["scalabilityMode"], "L1T3", "{f:#}");
    assert!(
        width > 0 && fps_before >= 4.0,
        "the guest decodes the screen first: {rows:?}"
    );
    assert!(
        capped_legs > 0,
        "the guest's screen leg is capped to a lower temporal layer: {caps:?}"
    );
    assert!(drops > 0, "frames above the cap are left out");
    assert!(
        !widths_capped.is_empty() && widths_capped.iter().all(|w| *w == width),
        "the screen keeps its resolution ({width}) while capped: {widths_capped:?}"
    );
    assert!(
        fps_capped > 0.5 && fps_capped < 0.8 * fps_before,
        "the screen goes on at a lower frame rate: {fps_before:.1} -> {fps_capped:.1} fps"
    );
    assert!(labelled > 0, "the screen tile says 'Low quality' while capped");
    assert!(
        back_ms.is_some_and(|ms| ms <= 10_000),
        "every frame again within 10 s of the cap lifted: {back_ms:?}"
    );
    assert!(
        fps_after > 0.8 * fps_before,
        "and the frame rate with them: {fps_before:.1} -> {fps_after:.1} fps"
    );
}

/// The same with both cameras one layer (`?simulcast=0`): no layer to choose, so the gateway
/// tells staff's browser with RTCP REMB what the guest's path carries, and its encoder fits
/// (REMBs sent, no freeze over 1 s and under 2 % lost after repair while capped, audio kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: comparison run for docs/BENCHMARKS.md §6; SIMULCAST=0 scripts/bench/downlink.sh"]
async fn chromium_guest_on_a_300_kbits_downlink_without_simulcast() {
    downlink_cap(false, true).await;
}

/// Issue 12's "one slow subscriber never degrades the others": four subscribers of staff's
/// simulcast camera (staff's Chromium in the console), the guest's Chromium behind a
/// 300 kbit/s downlink and three SDK staff on clean loopback, each asking for the camera at its
/// best. While the guest is capped for 10 s, its leg steps down to the low layer and the other
/// three legs never step down (the server's debug view, every 250 ms: at the top layer when the
/// cap came, or higher once staff's browser resumes its best), keep receiving, and staff's
/// browser keeps sending its top layer (dynacast: they need it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: two Chromiums and three SDK subscribers, about 25 s; BENCHMARKS §6"]
async fn chromium_one_capped_subscriber_of_four_leaves_the_others_on_the_top_layer() {
    // A leg of staff's camera: (subscriber kind, layer rank, packets forwarded, whether the
    // subscriber's own estimate caps its legs).
    type Leg = (String, Option<u64>, u64, bool);
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let (srv, dir) = namespace_gateway(&net, |_| {}, |_| {}).await;
    let mut guest = guest_in_namespace(&srv, &net, &dir, "Narrow Nora");
    guest["simulcast"] = true.into();
    // A screen of twice the density: its tile of staff, one of five, still needs the top layer.
    guest["guestScale"] = 2.into();
    let mut browser = BrowserScript::start(&srv, "scenarios.mjs", "downlink-cap", guest);
    let top = browser.progress("top", BROWSER_START).await;
    let meeting = top["meetingId"]
        .as_str()
        .expect("the script says the meeting")
        .to_owned();
    let snapshot = || async {
        srv.state()
            .sfu
            .debug_snapshot(&meeting)
            .await
            .expect("the meeting is live")
    };
    // Staff's camera: the video track of the participant who is not the guest.
    let snap = snapshot().await;
    let guest_id = snap["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["kind"] == "guest"))
        .map(|p| p["id"].clone())
        .expect("the guest is in the call");
    let camera = snap["tracks"]
        .as_array()
        .and_then(|ts| {
            ts.iter()
                .find(|t| t["track"]["kind"] == "video" && t["track"]["participant_id"] != guest_id)
        })
        .map(|t| t["track"]["track_id"].as_str().unwrap().to_owned())
        .expect("staff's camera");
    // Three staff members on the SDK; the meeting lets only its organiser skip the lobby, so an
    // administrator admits each from the queue (REST) once it waits.
    let admin = srv.staff_token("ada", StaffRole::Admin);
    let mut others = Vec::new();
    for name in ["bo", "cy", "di"] {
        let token = srv.staff_token(name, StaffRole::Staff);
        let (client, mut events) = Client::connect(srv.sdk_options(&token).meeting(meeting.clone()))
            .await
            .unwrap();
        events
            .wait_for(Duration::from_secs(10), |e| {
                matches!(e, Event::Lobby { .. }).then_some(())
            })
            .await
            .expect("the SDK staff member waits in the lobby");
        let admit = format!("/api/v1/meetings/{meeting}/lobby/{}/admit", client.me().participant_id);
        let (status, body) = srv.call("POST", &admit, Some(&admin), None).await;
        assert_eq!(status, 204, "{body}");
        support::sdk_admitted(&mut events).await;
        client
            .set_quality(camera.clone(), gatehouse_sdk::Quality::High)
            .unwrap();
        others.push((client, events));
    }
    // Each leg of the camera as the server forwards it: (subscriber kind, layer rank, packets
    // forwarded, whether the subscriber's own estimate caps its legs).
    let legs = |snap: &Value| -> Vec<Leg> {
        snap["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let leg = p["receiving"]
                    .as_array()?
                    .iter()
                    .find(|l| l["track_id"] == camera.as_str())?;
                Some((
                    p["kind"].as_str().unwrap_or("").to_owned(),
                    leg["layer_rank"].as_u64(),
                    leg["forwarded"].as_u64().unwrap_or(0),
                    p["bandwidth"]["capping"].as_bool().unwrap_or(false),
                ))
            })
            .collect()
    };
    // The top rank: the camera's best layer arrived so far, once the three SDK legs forward it;
    // wait (polling the debug view) until then, and until the guest's leg is above the lowest
    // (what its tile needs and its path allows, uncapped), so that it has a step down to take.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let top_rank = loop {
        let snap = snapshot().await;
        let now = legs(&snap);
        let guest_rank = now.iter().find(|l| l.0 == "guest").and_then(|l| l.1);
        let staff: Vec<_> = now.iter().filter(|l| l.0 == "staff").collect();
        // The camera's best layer (staff's browser resumes it once the SDK legs ask for it).
        let best = snap["tracks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["track"]["track_id"] == camera.as_str()))
            .and_then(|t| t["layers"].as_array())
            .and_then(|ls| ls.iter().filter_map(|l| l["rank"].as_u64()).max());
        if let Some(rank) = staff.first().and_then(|l| l.1)
            && rank > 0
            && Some(rank) == best
            && staff.len() == 3
            && staff.iter().all(|l| l.1 == Some(rank))
            && guest_rank.is_some_and(|g| g > 0)
        {
            break rank;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the SDK legs on one top layer, the guest's above the lowest: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let before = legs(&snapshot().await);
    net.cap_to_guest(300, 250);
    let capped_at = epoch_ms();
    browser.tell(serde_json::json!({ "told": "capped", "at": capped_at }));
    let mut samples: Vec<(u64, Vec<Leg>)> = Vec::new();
    while epoch_ms() < capped_at + 10_000 {
        samples.push((epoch_ms() - capped_at, legs(&snapshot().await)));
        // The sampling period of a measurement that lasts a fixed time, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = legs(&snapshot().await);
    let tc = net.cap_stats();
    browser.tell(serde_json::json!({ "told": "done" }));
    let results = browser.finish().await;
    let f = facts(&results, "downlink-cap");
    for (client, _) in &others {
        client.close().await;
    }
    let guest_low_ms = samples
        .iter()
        .find(|(_, ls)| ls.iter().any(|l| l.0 == "guest" && l.1 == Some(0)))
        .map(|s| s.0);
    // Samples where a clean subscriber's leg is below the rank it had when the cap came, or
    // below one it had reached since (staff's browser may resume its best layer meanwhile, for
    // them: they may go up, never down), unless its own path's estimate caps it (two Chromiums,
    // three SDK peers and the gateway on 2 cores can delay even loopback).
    let mut reached = [top_rank; 3];
    let staff_off_top: Vec<_> = samples
        .iter()
        .filter(|(_, ls)| {
            let mut down = false;
            for (i, l) in ls.iter().filter(|l| l.0 == "staff").enumerate() {
                let rank = l.1.unwrap_or(0);
                down |= rank < reached[i.min(2)] && !l.3;
                reached[i.min(2)] = reached[i.min(2)].max(rank);
            }
            down
        })
        .collect();
    let at_top = sent_widths(&f["staffLayersAtTop"]);
    let at_end = sent_widths(&f["staffLayers"]);
    eprintln!(
        "FOUR {}",
        serde_json::json!({
            "top_rank": top_rank,
            "guest_low_ms": guest_low_ms,
            "staff_samples_off_top": staff_off_top.len(),
            "staff_samples_own_estimate_capping": samples.iter().filter(|(_, ls)| ls.iter().any(|l| l.0 == "staff" && l.3)).count(),
            "samples": samples.len(),
            "staff_widths_at_top": at_top,
            "staff_widths_at_end": at_end,
            "before": before,
            "after": after,
            "tc": tc.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    );
    assert!(
        guest_low_ms.is_some_and(|ms| ms <= 5000),
        "the capped guest's leg on the low layer within 5 s: {samples:?}"
    );
    assert!(
        staff_off_top.is_empty(),
        "the three clean subscribers never below the top layer (rank {top_rank}) or one reached since: {staff_off_top:?}"
    );
    for (b, a) in before.iter().zip(&after).filter(|(b, _)| b.0 == "staff") {
        assert!(
            a.2 >= b.2 + 200,
            "a clean subscriber kept receiving while the guest was capped: {before:?} -> {after:?}"
        );
    }
    assert!(
        at_end.iter().max() >= at_top.iter().max(),
        "staff's browser still sends its top layer: {at_top:?} -> {at_end:?}"
    );
    srv.wait_until("every media connection closed", |s| {
        s.state().sfu.live_connections() == 0
    })
    .await;
}

/// One row of the guest page's samples: `[t, frameWidth, framesDecoded, packetsReceived,
/// packetsLost, freezeCount, totalFreezesDuration, audioPacketsReceived, retransmittedPacketsReceived]`.
fn sample_rows(f: &Value) -> Vec<Vec<f64>> {
    f["samples"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    r.as_array()
                        .map(|r| r.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The frame widths staff sends (its layers' outbound-rtp), from a facts field.
fn sent_widths(layers: &Value) -> Vec<u64> {
    layers
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["frameWidth"].as_u64())
                .filter(|w| *w > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// The server's view of the guest until `until` (epoch ms): its estimate and the rank of the
/// layer its leg of staff's camera forwards, every 250 ms, as (ms since `since`, estimate, rank).
async fn watch_guest_leg(
    srv: &TestServer,
    meeting: &str,
    since: u64,
    until: u64,
    view: &mut Vec<(u64, Option<u64>, Option<u64>)>,
) {
    while epoch_ms() < until {
        if let Some(snap) = srv.state().sfu.debug_snapshot(meeting).await
            && let Some(g) = snap["participants"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["kind"] == "guest"))
        {
            let estimate = g["bandwidth"]["estimate_bps"].as_u64();
            let rank = g["receiving"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["kind"] == "video"))
                .and_then(|l| l["layer_rank"].as_u64());
            view.push((epoch_ms().saturating_sub(since), estimate, rank));
        }
        // The sampling period of a measurement that lasts a fixed time, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a tile says while our downlink holds its video below what it asked for
/// (web-client/media-status.js `LOW_QUALITY_TEXT`).
const LOW_QUALITY_LABEL: &str = "Low quality: your connection";

/// The delay toward the guest in the whole capped-downlink scenario (issue 12: "with 40 ms of
/// delay where the relay provides it"), on top of the bottleneck's queue.
const DOWNLINK_DELAY: Duration = Duration::from_millis(40);

async fn downlink_cap(simulcast: bool, lift: bool) {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    // The whole scenario (`lift`) also delays the guest's media by DOWNLINK_DELAY: the gateway
    // advertises a relay's address, the relay holds what goes to the guest.
    let relay_ip = lift.then(|| net.add_host_address());
    let (srv, dir) = namespace_gateway(&net, |c| c.public_ip = relay_ip.map(Into::into), |_| {}).await;
    let relay = match relay_ip {
        Some(ip) => {
            let port = srv.state().sfu.media_addrs()[0].port();
            let guest_ip = std::net::IpAddr::V4(net.guest_ip);
            let delays = support::delay_relay::Delays {
                to_client: DOWNLINK_DELAY,
                to_gateway: Duration::ZERO,
            };
            let relay = support::delay_relay::DelayRelay::start(
                (ip, port).into(),
                (net.host_ip, port).into(),
                delays,
                move |c| c == guest_ip,
            )
            .await
            .expect("the delaying relay");
            Some(relay)
        }
        None => None,
    };
    let mut guest = guest_in_namespace(&srv, &net, &dir, "Narrow Nora");
    guest["simulcast"] = simulcast.into();
    let mut browser = BrowserScript::start(&srv, "scenarios.mjs", "downlink-cap", guest);
    let top = browser.progress("top", BROWSER_START).await;
    let meeting = top["meetingId"]
        .as_str()
        .expect("the script says the meeting")
        .to_owned();
    let before = srv.state().sfu.stats();
    // 300 kbit/s toward the guest, a router queue of 250 ms.
    net.cap_to_guest(300, 250);
    let capped_at = epoch_ms();
    browser.tell(serde_json::json!({ "told": "capped", "at": capped_at }));
    // The server's view while capped (and after).
    let mut server_view: Vec<(u64, Option<u64>, Option<u64>)> = Vec::new();
    let capped_for = if lift { 15_000 } else { 8_000 };
    watch_guest_leg(&srv, &meeting, capped_at, capped_at + capped_for, &mut server_view).await;
    let tc = net.cap_stats();
    let mut uncapped_at = None;
    if lift {
        net.uncap_to_guest();
        let at = epoch_ms();
        uncapped_at = Some(at);
        browser.tell(serde_json::json!({ "told": "uncapped", "at": at }));
        watch_guest_leg(&srv, &meeting, capped_at, at + 12_000, &mut server_view).await;
    }
    browser.tell(serde_json::json!({ "told": "done" }));
    let after = srv.state().sfu.stats();
    let results = browser.finish().await;
    let f = facts(&results, "downlink-cap");
    let rows = sample_rows(f);
    let at_top = sent_widths(&f["staffLayersAtTop"]);
    let (low_width, top_width) = (
        at_top.iter().copied().min().unwrap_or(0),
        at_top.iter().copied().max().unwrap_or(0),
    );
    let t = |r: &Vec<f64>| r[0] as u64;
    let capped = |r: &&Vec<f64>| t(r) >= capped_at && uncapped_at.is_none_or(|u| t(r) < u);
    // The first sample decoding the lowest layer's width after the cap.
    let low_ms = rows
        .iter()
        .filter(capped)
        .find(|r| r[1] > 0.0 && r[1] as u64 <= low_width)
        .map(|r| t(r) - capped_at);
    // Loss over the next 10 s (or what is left of the capped time).
    let window: Vec<&Vec<f64>> = match low_ms {
        Some(ms) => rows
            .iter()
            .filter(capped)
            .filter(|r| t(r) >= capped_at + ms && t(r) <= capped_at + ms + 10_000)
            .collect(),
        None => Vec::new(),
    };
    let d = |i: usize| match (window.first(), window.last()) {
        (Some(a), Some(b)) => b[i] - a[i],
        _ => 0.0,
    };
    let (received, lost, rtx) = (d(3), d(4), d(8));
    let loss = lost / (received + lost).max(1.0);
    let residual = (lost - rtx).max(0.0) / (received + lost).max(1.0);
    // The longest stretch without a newly decoded frame, and without an audio packet, while capped.
    let cap_end = uncapped_at.unwrap_or(capped_at + capped_for);
    let rises: Vec<u64> = f["rises"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    // The longest gap between `times` in [from, to], and when it began (ms since the cap).
    let longest_gap = |times: &[u64], from: u64, to: u64| {
        let mut last = from;
        let (mut longest, mut began) = (0, from);
        for &x in times
            .iter()
            .filter(|x| **x >= from && **x <= to)
            .chain(std::iter::once(&to))
        {
            if x - last > longest {
                (longest, began) = (x - last, last);
            }
            last = x;
        }
        (longest, began.saturating_sub(capped_at))
    };
    let (freeze_ms, freeze_began_ms) = longest_gap(&rises, capped_at + low_ms.unwrap_or(0), cap_end);
    let audio_rises: Vec<u64> = rows
        .windows(2)
        .filter(|w| w[1][7] > w[0][7])
        .map(|w| t(&w[1]))
        .collect();
    let (audio_gap_ms, _) = longest_gap(&audio_rises, capped_at, cap_end);
    let freeze_count = match (
        rows.iter().find(|r| t(r) >= capped_at),
        rows.iter().rfind(|r| t(r) <= cap_end),
    ) {
        (Some(a), Some(b)) => b[5] - a[5],
        _ => 0.0,
    };
    // Back on top, to stay: the start of the last stretch, after the cap was lifted, in which
    // the guest decodes the width it decoded before the cap (on the server: its leg forwards the
    // rank it forwarded then) until the end, at least 1 s long (a try that falls back is no return).
    let top_ms = uncapped_at.and_then(|u| {
        let before_cap = f["topWidth"].as_u64().unwrap_or(top_width).max(1);
        let after: Vec<&Vec<f64>> = rows.iter().filter(|r| t(r) >= u).collect();
        let start = after
            .iter()
            .rposition(|r| (r[1] as u64) < before_cap)
            .map_or(0, |i| i + 1);
        let (first, last) = (after.get(start)?, after.last()?);
        (t(last) - t(first) >= 1000).then(|| t(first) - u)
    });
    let rank_at_cap = server_view.first().and_then(|(_, _, rank)| *rank);
    let server_top_ms = uncapped_at.and_then(|u| {
        let lifted = u - capped_at;
        let after: Vec<_> = server_view.iter().filter(|(ms, _, _)| *ms >= lifted).collect();
        let start = after
            .iter()
            .rposition(|(_, _, rank)| rank.is_none() || *rank < rank_at_cap)
            .map_or(0, |i| i + 1);
        let (first, last) = (after.get(start)?, after.last()?);
        (last.0 - first.0 >= 1000).then(|| first.0 - lifted)
    });
    let server_low_ms = server_view
        .iter()
        .find(|(ms, _, rank)| *ms < capped_for && *rank == Some(0))
        .map(|(ms, _, _)| *ms);
    let estimates: Vec<u64> = server_view
        .iter()
        .filter(|(ms, _, _)| *ms < capped_for)
        .filter_map(|(_, e, _)| *e)
        .collect();
    let drops = after.bwe_drops - before.bwe_drops;
    let rembs = after.rembs_sent - before.rembs_sent;
    // What the bottleneck dropped while capped (`tc -s`: "dropped N,").
    let tbf_dropped: u64 = tc
        .split("dropped ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    // Connection quality as the pages showed it (`qualityProbe` rows): the guest its own, on
    // its tile and in the notice; staff the guest's, on the guest's tile. (ms since the cap,
    // badge, video reduced, the badge's accessible name, the notice's words) at each change.
    let shown = |rows: &Value| -> Vec<(i64, String, bool, String, String)> {
        rows.as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r[0].as_i64().unwrap_or(0) - capped_at as i64,
                            r[1].as_str().unwrap_or("").to_owned(),
                            r[2].as_bool().unwrap_or(false),
                            r[3].as_str().unwrap_or("").to_owned(),
                            r[4].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (quality, staff_quality) = (shown(&f["quality"]), shown(&f["staffQuality"]));
    // When, after the cap, the guest's page first said (badge, its name, the notice) that its
    // link was weak and its video reduced; and staff's page said so on the guest's tile.
    let weak_ms = quality
        .iter()
        .find(|(ms, badge, reduced, name, notice)| {
            *ms >= 0
                && badge == "poor"
                && *reduced
                && name == "Connection weak, receiving reduced video"
                && notice.contains("video was reduced to keep audio clear")
        })
        .map(|q| q.0);
    let staff_weak_ms = staff_quality
        .iter()
        .find(|(ms, badge, _, name, _)| *ms >= 0 && badge == "poor" && name.starts_with("Connection weak"))
        .map(|q| q.0);
    // The layer of staff's camera the guest's page was told it receives (`video_layer`): (ms
    // since the cap, data-layer, data-reduced) at each change.
    let mut layers_told: Vec<(i64, String, bool)> = f["quality"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_i64().unwrap_or(0) - capped_at as i64,
                        r[5].as_str().unwrap_or("").to_owned(),
                        r[6].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    layers_told.dedup_by(|b, a| (&a.1, a.2) == (&b.1, b.2));
    // The low-quality label on staff's tile in the guest's page (issue 12): (ms since the cap,
    // data-reduced, the label's words, '' while it does not show) at each change.
    let mut labels_shown: Vec<(i64, bool, String)> = f["quality"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_i64().unwrap_or(0) - capped_at as i64,
                        r[6].as_bool().unwrap_or(false),
                        r[7].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    labels_shown.dedup_by(|b, a| (a.1, &a.2) == (b.1, &b.2));
    let label_ms = labels_shown
        .iter()
        .find(|(ms, _, words)| *ms >= 0 && words == LOW_QUALITY_LABEL)
        .map(|r| r.0);
    // When, after the cap, the guest's page first said it receives the smallest layer, reduced.
    let told_low_ms = layers_told
        .iter()
        .find(|(ms, layer, reduced)| *ms >= 0 && layer == "0" && *reduced)
        .map(|r| r.0);
    eprintln!(
        "DOWNLINK {}",
        serde_json::json!({
            "simulcast": simulcast,
            "delay_ms": relay_ip.map(|_| DOWNLINK_DELAY.as_millis() as u64),
            "delayed_datagrams": relay.as_ref().map(|r| r.delayed()),
            "sent_widths_at_top": at_top,
            "top_width_before": f["topWidth"],
            "low_ms": low_ms,
            "server_low_ms": server_low_ms,
            "window_packets": received, "window_lost": lost, "window_rtx": rtx,
            "loss": loss, "residual_loss": residual,
            "longest_freeze_ms": freeze_ms, "longest_freeze_began_ms": freeze_began_ms, "freeze_count": freeze_count,
            "audio_gap_ms": audio_gap_ms,
            "top_ms_after_lift": top_ms,
            "server_top_ms_after_lift": server_top_ms,
            "staff_widths_at_end": sent_widths(&f["staffLayers"]),
            "estimate_bps_min_max_last": [estimates.iter().min(), estimates.iter().max(), estimates.last()],
            "estimate_drops": drops,
            "weak_notice_ms": weak_ms,
            "staff_sees_weak_ms": staff_weak_ms,
            "quality_shown": quality,
            "staff_quality_shown": staff_quality,
            "video_layer_shown": layers_told,
            "told_low_ms": told_low_ms,
            "low_quality_label_ms": label_ms,
            "low_quality_label_shown": labels_shown,
            "layer_switches": after.layer_switches - before.layer_switches,
            "probes_passed_sent_packets": [
                after.bwe_probes_passed - before.bwe_probes_passed,
                after.bwe_probes - before.bwe_probes,
                after.bwe_probe_packets - before.bwe_probe_packets,
            ],
            "rembs_sent": rembs,
            "server_view": server_view,
            "tc": tc.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    );
    assert!(rows.len() > 10, "the guest sampled what it received: {f:#}");
    if let Some(relay) = &relay {
        let (to_guest, from_guest) = relay.delayed();
        assert!(
            to_guest > 1000 && from_guest > 100,
            "the guest's media went through the delaying relay: {to_guest} to it, {from_guest} from it"
        );
    }
    assert!(
        audio_gap_ms < 1000,
        "audio never interrupted: longest gap {audio_gap_ms} ms"
    );
    if !simulcast {
        // One layer: only staff's encoder can fit it, told by REMB what the guest's path carries.
        assert!(
            rembs > 0,
            "staff's browser was told what the guest's path carries (REMB)"
        );
        assert!(freeze_ms < 1000, "no freeze over 1 s while capped: {freeze_ms} ms");
        assert!(
            residual < 0.02,
            "under 2 % lost after repair over 10 s: {residual} ({tc})"
        );
        return;
    }
    assert!(at_top.len() >= 2, "staff sent at least two layers: {at_top:?}");
    assert!(drops > 0, "the guest's estimate dropped: {estimates:?}");
    let low_ms = low_ms.unwrap_or_else(|| panic!("the guest never decoded the low layer ({low_width} wide): {rows:?}"));
    // Within 5 s, unless the layer it had fitted the path until then: a leg already capped to
    // a middle layer of a little over 300 kbit/s fills the 250 ms queue slowly, and the trend
    // calls overuse only later (seen in 2 of 18 runs, 3.6 and 5.1 s, the bottleneck dropping
    // at most one packet; BENCHMARKS §6).
    assert!(
        low_ms <= 5000 || tbf_dropped <= 2,
        "the low layer within 5 s: {low_ms} ms, the bottleneck dropped {tbf_dropped}"
    );
    assert!(
        server_low_ms.is_some_and(|ms| ms <= 5000 || tbf_dropped <= 2),
        "the server's leg forwards the low layer within 5 s: {server_view:?}"
    );
    // Connection quality (issue 12): the capped guest is told, on its own tile and in words.
    assert!(
        weak_ms.is_some_and(|ms| ms < capped_for as i64),
        "the guest's page says its connection is weak and its video reduced while capped: {quality:?}"
    );
    assert!(
        staff_weak_ms.is_some_and(|ms| ms < capped_for as i64),
        "staff's page shows the guest's connection weak on its tile while capped: {staff_quality:?}"
    );
    assert!(
        layers_told
            .iter()
            .any(|(ms, layer, _)| *ms < 0 && layer != "0" && !layer.is_empty()),
        "before the cap the guest's page was told it receives more than the smallest layer: {layers_told:?}"
    );
    assert!(
        told_low_ms.is_some_and(|ms| ms < capped_for as i64),
        "the guest's page is told it receives the smallest layer, reduced, while capped: {layers_told:?}"
    );
    // The tile says so in words whenever its video is reduced (the label may outlast it a little).
    assert!(
        label_ms.is_some_and(|ms| ms < capped_for as i64),
        "staff's tile in the guest's page shows '{LOW_QUALITY_LABEL}' while capped: {labels_shown:?}"
    );
    assert!(
        labels_shown
            .iter()
            .all(|(_, reduced, words)| !*reduced || words == LOW_QUALITY_LABEL),
        "the low-quality label shows whenever the tile's video is reduced: {labels_shown:?}"
    );
    if !lift {
        return;
    }
    assert!(
        loss < 0.02,
        "under 2 % lost over the 10 s on the low layer: {lost} of {received}"
    );
    assert!(freeze_ms < 1000, "no freeze over 1 s while capped: {freeze_ms} ms");
    let top_ms = top_ms.unwrap_or_else(|| panic!("never the top layer again: {rows:?}"));
    assert!(
        quality
            .last()
            .is_some_and(|(_, badge, _, _, notice)| badge != "poor" && notice.is_empty()),
        "the weak-connection notice gone once the cap was lifted: {quality:?}"
    );
    assert!(
        layers_told
            .last()
            .is_some_and(|(_, layer, reduced)| layer != "0" && !layer.is_empty() && !*reduced),
        "the guest's page is told it receives more than the smallest layer again, not reduced: {layers_told:?}"
    );
    assert!(
        labels_shown
            .last()
            .is_some_and(|(ms, reduced, words)| *ms > 0 && !*reduced && words.is_empty()),
        "the low-quality label gone once the layer came back: {labels_shown:?}"
    );
    assert!(
        top_ms <= 10_000,
        "the top layer within 10 s of the cap lifted: {top_ms} ms"
    );
    assert!(
        server_top_ms.is_some_and(|ms| ms <= 10_000),
        "the server's leg back on its rank of before the cap within 10 s: {server_view:?}"
    );
}

/// What happens to the guest's network once media flows.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// Everything in and out is dropped for this long, then the network is back as it was.
    Cut(Duration),
    /// The guest moves to another address at once.
    Move,
}

async fn guest_keeps_the_call_through(disruption: Disruption) {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(mut net) = support::netns::GuestNet::create() else {
        return;
    };
    let mut call = NamespaceCall::start(&net, "Travelling Tom", |_| {}).await;
    let (staff, events) = (&call.staff, &mut call.events);
    let mut browser = BrowserScript::start(&call.srv, "scenarios.mjs", "guest-outage", call.guest.clone());
    browser.progress("join-sent", BROWSER_START).await;
    let waiting = support::next_waiting(events).await;
    let guest_id = waiting[0].participant_id.clone();
    staff.admit(guest_id.clone()).unwrap();
    let t = Duration::from_secs(30);
    let track = loop {
        let track = events
            .wait_for(t, |e| match e {
                Event::RemoteTrack(track) => Some(track),
                _ => None,
            })
            .await
            .unwrap();
        if track.kind() == TrackKind::Video {
            break track;
        }
    };
    // The guest's video reaches the SDK, and the SDK's reaches the guest.
    for _ in 0..20 {
        tokio::time::timeout(t, track.recv_rtp())
            .await
            .expect("guest video flows")
            .expect("track open");
    }
    browser.progress("media-flowing", t).await;

    let cut_at = epoch_ms();
    match disruption {
        // The outage: everything into and out of the guest's namespace is dropped.
        Disruption::Cut(_) => net.nft(
            "table inet gatehouse_outage {
               chain out { type filter hook output priority -10; policy drop; }
               chain in { type filter hook input priority -10; policy drop; }
             }",
        ),
        Disruption::Move => net.move_guest(),
    }
    // Packets already in flight when the network went are not recovery.
    let drained = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < drained
        && tokio::time::timeout(Duration::from_millis(500), track.recv_rtp())
            .await
            .is_ok()
    {}
    if let Disruption::Cut(outage) = disruption {
        tokio::time::sleep(outage.saturating_sub(Duration::from_millis(epoch_ms() - cut_at))).await;
        net.nft("delete table inet gatehouse_outage");
    }
    // A move has no outage of its own: recovery counts from the move.
    let restored_at = match disruption {
        Disruption::Cut(_) => epoch_ms(),
        Disruption::Move => cut_at,
    };

    // Guest to staff: the first packet after the network is back, on the track as it
    // was or on the one that replaces it (a guest whose signaling socket died publishes
    // again). Meanwhile the staff member must never see the guest leave and come back
    // (until the guest leaves for real below).
    let bound = Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + bound;
    let mut track = track;
    let mut seen = Vec::new();
    let to_staff_ms = loop {
        tokio::select! {
            packet = track.recv_rtp() => {
                if packet.is_some() {
                    break Some(epoch_ms() - restored_at);
                }
                // That track ended: wait for its successor.
                tokio::time::sleep_until(deadline).await;
            }
            event = events.recv() => {
                let event = event.expect("the staff client runs");
                if let Event::ParticipantLeft { participant_id, .. } = &event {
                    assert_ne!(participant_id, &guest_id, "the guest was seen leaving during the disruption");
                }
                seen.push(format!("{event:?}").chars().take(160).collect::<String>());
                if let Event::RemoteTrack(new) = event
                    && new.kind() == TrackKind::Video
                    && new.participant_id() == guest_id
                {
                    track = new;
                }
            }
            () = tokio::time::sleep_until(deadline) => break None,
        }
    };
    // Staff to guest: the page says when its packets rose again.
    let back = browser.progress_within("media-back", bound).await;
    let to_guest_ms = back.map(|back| back["at"].as_u64().expect("at").saturating_sub(restored_at));
    staff.chat("measured").unwrap();
    let results = browser.finish().await;
    let f = facts(&results, "guest-outage");
    // One line for scripts/bench/reach.sh (docs/BENCHMARKS.md).
    let label = match disruption {
        Disruption::Cut(d) => format!("outage-{}s", d.as_secs()),
        Disruption::Move => "address-change".to_owned(),
    };
    eprintln!(
        "REACH {label} {}",
        serde_json::json!({
            "network_back_after_ms": restored_at - cut_at,
            "media_to_staff_ms": to_staff_ms,
            "media_to_guest_ms": to_guest_ms,
            "timeline": f["timeline"],
        })
    );
    assert!(
        to_staff_ms.is_some(),
        "the guest's video came back to staff within {bound:?}: {seen:#?}\n{f:#}"
    );
    assert!(
        to_guest_ms.is_some(),
        "the staff's video came back to the guest within {bound:?}: {f:#}"
    );

    let views: Vec<&str> = f["viewsSeen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(views, vec!["call"], "the guest stayed in the call throughout: {f:#}");
    call.end().await;
}

/// A guest whose network lets the page and its signaling through but no media path
/// (UDP and the media TCP port blocked, no TURN): the guest is told at once that its
/// network blocks the call's media, then what to try once every attempt failed; the
/// staff member (SDK) is told that guest has no media. Times are reported, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_with_no_media_path_is_told_and_staff_see_no_media() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let mut call = NamespaceCall::start(&net, "Firewalled Fay", |srv| block_media_paths(&net, srv)).await;
    let (staff, events) = (&call.staff, &mut call.events);
    let mut browser = BrowserScript::start(&call.srv, "scenarios.mjs", "guest-no-path", call.guest.clone());
    browser.progress("join-sent", BROWSER_START).await;
    let waiting = support::next_waiting(events).await;
    let guest_id = waiting[0].participant_id.clone();
    staff.admit(guest_id.clone()).unwrap();
    browser.progress("gave-up", Duration::from_secs(150)).await;
    // Staff are told this guest has no media, and that it failed.
    use gatehouse_signaling::protocol::MediaConnectionState as State;
    let (publisher, subscriber) = events
        .wait_for(Duration::from_secs(30), |e| match e {
            Event::ParticipantMedia {
                participant_id,
                publisher,
                subscriber,
            } if participant_id == guest_id
                && (publisher.state == State::Failed || subscriber.state == State::Failed) =>
            {
                Some((publisher, subscriber))
            }
            _ => None,
        })
        .await
        .expect("staff are told the guest's media failed");
    assert!(
        publisher.state != State::Connected && subscriber.state != State::Connected,
        "no media at all: {publisher:?} {subscriber:?}"
    );
    staff.chat("measured").unwrap();
    let results = browser.finish().await;
    let f = facts(&results, "guest-no-path");
    eprintln!(
        "REACH no-media-path {}",
        serde_json::json!({
            "first_message_ms": f["firstProblemMs"],
            "first_phase": f["firstProblemPhase"],
            "final_message_ms": f["finalProblemMs"],
            "final_phase": f["finalProblemPhase"],
        })
    );
    assert_eq!(f["firstProblemPhase"], "blocked", "{f:#}");
    assert!(
        f["firstProblemText"].as_str().unwrap().contains("blocking"),
        "the guest is told what is happening: {f:#}"
    );
    assert_eq!(f["finalProblemPhase"], "failed", "{f:#}");
    assert_eq!(f["alertRole"], "alert", "{f:#}");
    assert_eq!(f["view"], "call", "signaling and chat go on: {f:#}");
    call.end().await;
}

/// The guest's network lets the page and its signaling through but no media path: UDP
/// and the gateway's media TCP port blocked (and no TURN server configured).
fn block_media_paths(net: &support::netns::GuestNet, srv: &TestServer) {
    let tcp = srv.state().sfu.tcp_addr().expect("ICE-TCP on");
    net.nft(&format!(
        "table inet gatehouse_test {{
           chain out {{ type filter hook output priority 0; policy accept; meta l4proto udp drop; tcp dport {} drop; }}
           chain in {{ type filter hook input priority 0; policy accept; meta l4proto udp drop; }}
         }}",
        tcp.port()
    ));
}

/// Never silent, in the console: a guest whose media cannot connect on any path (in its own
/// namespace, UDP and the media TCP port blocked, no TURN) is told on its page within a few
/// seconds of its connections failing to come up, and the staff member who admitted it from
/// the console (a second Chromium outside that network) sees it as "no media" in the
/// participant list and on its tile, then the guest reads what to try. Screenshot
/// `console-no-media.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_a_guest_with_no_media_path_as_no_media() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(net) = support::netns::GuestNet::create() else {
        return;
    };
    let (srv, dir) = namespace_gateway(&net, |_| {}, |srv| block_media_paths(&net, srv)).await;
    let guest = guest_in_namespace(&srv, &net, &dir, "Firewalled Fay");
    let results = BrowserScript::start(&srv, "scenarios.mjs", "console-no-media", guest)
        .finish()
        .await;
    let f = facts(&results, "console-no-media");
    eprintln!(
        "REACH console-no-media {}",
        serde_json::json!({
            "guest_told_ms": f["guestToldMs"],
            "console_no_media_ms": f["consoleNoMediaMs"],
            "guest_final_ms": f["guestFinalMs"],
        })
    );
    let ms = |key: &str| f[key].as_u64().unwrap_or_else(|| panic!("{key} measured: {f:#}"));
    // Times from the guest's call view; its connections are known not to work 4 s after
    // they were negotiated (the web client's connect timer).
    assert_eq!(f["guestPhase"], "blocked", "{f:#}");
    assert!(f["guestText"].as_str().unwrap_or("").contains("blocking"), "{f:#}");
    assert!(ms("guestToldMs") < 10_000, "the guest is told within seconds: {f:#}");
    assert!(
        ms("consoleNoMediaMs") < ms("guestToldMs") + 5_000,
        "the console says \"no media\" as the guest is told: {f:#}"
    );
    assert!(f["consolePill"].as_str().unwrap_or("").starts_with("no media"), "{f:#}");
    assert_eq!(
        (f["consoleTile"]["state"].as_str(), f["consoleTile"]["shown"].as_bool()),
        (Some("no-media"), Some(true)),
        "{f:#}"
    );
    assert_eq!(f["guestFinalPhase"], "failed", "{f:#}");
    assert_eq!(f["consolePillFinal"]["state"], "no-media", "{f:#}");
    assert_eq!(f["guestView"], "call", "signaling and chat go on: {f:#}");
    srv.wait_until("every media connection closed", |s| {
        s.state().sfu.live_connections() == 0
    })
    .await;
}

/// A test that fails while its browser runs leaves no process behind: not Node, not the
/// browser (which its driver launched detached), not a helper, not even a zombie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failing_mid_browser_leaves_no_process() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = std::sync::Arc::new(TestServer::start().await);
    for (script, browser_comm) in [("scenarios.mjs", "chromium"), ("firefox.mjs", "firefox-esr")] {
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let srv = srv.clone();
        let failing = tokio::spawn(async move {
            let mut browser = BrowserScript::start(&srv, script, "hold", Value::Null);
            browser.progress("holding", BROWSER_START).await;
            seen_tx
                .send((browser.tree.mark().to_owned(), browser.tree.processes()))
                .unwrap();
            panic!("a deliberate failure while {script}'s browser shows a page");
        });
        let failure = failing.await.expect_err("the test task fails");
        assert!(failure.is_panic(), "{failure}");
        let (mark, seen) = seen_rx.await.expect("the browser was running when the test failed");
        assert!(
            seen.iter().any(|p| p.comm == "node") && seen.iter().any(|p| p.comm == browser_comm),
            "{script}: Node and {browser_comm} were both running: {seen:?}"
        );
        assert_eq!(
            process::marked(&mark),
            vec![],
            "{script}: no process of the tree is left"
        );
        let zombies: Vec<_> = seen.iter().filter(|p| process::exists(p.pid)).collect();
        assert!(zombies.is_empty(), "{script}: every process was reaped: {zombies:?}");
    }
}

/// A guest books an appointment on the booking page in Chromium (`/book/default`: the
/// organisation's public types, a week of free times, a name, Book) and gets a
/// confirmation with its join link, `.ics` and manage link; the gateway has the booking
/// for the slot picked, under the guest's name. Screenshots `book-slots.png`,
/// `book-confirmation.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_guest_books_a_free_time_on_the_booking_page() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let results = BrowserScript::start(&srv, "scenarios.mjs", "book-slot", Value::Null)
        .finish()
        .await;
    let f = facts(&results, "book-slot");
    assert_eq!(f["typeTitle"], "Skin check", "{f:#}");
    assert!(f["slotsShown"].as_u64() > Some(2), "free times listed: {f:#}");
    assert_eq!(
        f["bookDisabledBefore"], true,
        "nothing to book before a time is picked: {f:#}"
    );
    assert_eq!(f["bookedTitle"], "Skin check", "{f:#}");
    assert!(!f["bookedTime"].as_str().unwrap_or("").is_empty(), "{f:#}");
    let join = f["joinLink"].as_str().unwrap_or_else(|| panic!("a join link: {f:#}"));
    assert!(join.contains("/j/"), "the guest's join link: {f:#}");
    assert!(f["icsLink"].as_str().is_some_and(|l| l.ends_with("/ics")), "{f:#}");
    let manage = f["manageLink"]
        .as_str()
        .unwrap_or_else(|| panic!("a manage link: {f:#}"));
    let code = manage.trim_end_matches('/').rsplit('/').next().unwrap();
    // The gateway has it: the slot picked, the guest's name, scheduled.
    let (status, a) = srv
        .call("GET", &format!("/api/v1/book/appointments/{code}"), None, None)
        .await;
    assert_eq!(status, 200, "{a}");
    let a = &a["appointment"];
    assert_eq!(a["guest_name"], "Bea Booker", "{a}");
    assert_eq!(a["state"], "scheduled", "{a}");
    let chosen: jiff::Timestamp = f["chosenSlot"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        a["starts_at_ms"].as_i64(),
        Some(chosen.as_millisecond()),
        "the time picked: {a} {f:#}"
    );
}

/// The console's appointments report in Chromium: three appointments made over REST, two
/// two days ago (no-shows once the gateway's sweep has seen them) and one a minute ago
/// (cancelled); the console's report (the last 30 days, by day) shows the
/// same totals as the REST report for its query, a bar for each of the 30 days (stacked
/// where there were appointments, empty elsewhere), one table row per day with
/// appointments, a chart label with the total; by week the bars sum to the same total; Download
/// CSV saves the CSV report (header, a row per period, the total). Screenshot `analytics.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_the_appointments_report_with_a_chart_and_csv() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let results = BrowserScript::start(&srv, "scenarios.mjs", "analytics-report", Value::Null)
        .finish()
        .await;
    let f = facts(&results, "analytics-report");
    let total = &f["rest"]["total"];
    assert_eq!(
        (total["appointments"].as_u64(), total["cancelled"].as_u64()),
        (Some(3), Some(1)),
        "the REST report counts what was made: {f:#}"
    );
    let shown = &f["shown"];
    for (key, field) in [
        ("appointments", "appointments"),
        ("completed", "completed"),
        ("cancelled", "cancelled"),
    ] {
        assert_eq!(
            shown[key].as_str(),
            Some(total[field].to_string().as_str()),
            "{key}: {f:#}"
        );
    }
    assert!(
        shown["noShows"]
            .as_str()
            .is_some_and(|t| t.starts_with(&total["no_shows"].to_string())),
        "{f:#}"
    );
    let periods: Vec<&str> = f["rest"]["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods.len(), 2, "two days with appointments: {f:#}");
    // A bar for every day of the 30, in order; the days without appointments empty.
    let bars = f["bars"].as_array().unwrap();
    assert_eq!(bars.len(), 30, "a bar per day of the range: {f:#}");
    let from: jiff::civil::Date = f["query"]["from"].as_str().unwrap().parse().unwrap();
    for (i, b) in bars.iter().enumerate() {
        let day = from.checked_add(jiff::Span::new().days(i as i64)).unwrap();
        assert_eq!(b["period"].as_str(), Some(day.to_string().as_str()), "{f:#}");
    }
    let filled: Vec<&Value> = bars.iter().filter(|b| b["total"].as_u64() > Some(0)).collect();
    let bar_periods: Vec<&str> = filled.iter().map(|b| b["period"].as_str().unwrap()).collect();
    assert_eq!(bar_periods, periods, "the days with appointments: {f:#}");
    let totals: Vec<u64> = filled.iter().map(|b| b["total"].as_u64().unwrap()).collect();
    assert_eq!(totals, [2, 1], "{f:#}");
    assert!(filled.iter().all(|b| b["segments"].as_u64() >= Some(1)), "{f:#}");
    assert!(
        bars.iter().filter(|b| b["total"] == 0).all(|b| b["segments"] == 0),
        "empty days are empty bars: {f:#}"
    );
    let rows = f["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{f:#}");
    assert_eq!(
        (rows[0][0].as_str(), rows[0][1].as_str()),
        (Some(periods[0]), Some("2")),
        "{f:#}"
    );
    assert!(
        f["chartLabel"].as_str().is_some_and(|l| l.contains("3 in all")),
        "the chart says what it shows: {f:#}"
    );
    let weeks = f["weekBars"].as_array().unwrap();
    assert!(
        weeks
            .iter()
            .all(|b| b["period"].as_str().is_some_and(|p| p.contains("-W"))),
        "{f:#}"
    );
    assert_eq!(
        weeks.iter().map(|b| b["total"].as_u64().unwrap()).sum::<u64>(),
        3,
        "{f:#}"
    );
    assert!(f["csvName"].as_str().is_some_and(|n| n.ends_with(".csv")), "{f:#}");
    let csv = f["csv"].as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("period,appointments,"), "{csv}");
    assert!(lines.iter().any(|l| l.starts_with("total,3,")), "{csv}");
}

/// The virtual-appointment journey (issue 14) in one Chromium (scenario
/// `appointment-journey`): a guest books on the booking page, follows the confirmation's
/// join link and waits in the lobby with their queue position shown; the console, open
/// before, has them pushed into its queue (no GET of the queue) and knocks (a
/// notification); staff admit and join from the queue, media flows both ways, the guest
/// leaves. The appointment is then `completed` with its lobby wait, a second appointment
/// whose guest never came is marked `no_show` by the gateway's clock (its type's no-show
/// time is 1 minute and it started 61 s before). A third guest waits and cancels their
/// appointment with the lobby's Cancel button (two steps; the page then says it is
/// cancelled and offers no rejoin; the queue drops them). The analytics report counts all
/// three. Screenshots `journey-lobby.png`, `journey-queue.png`, `journey-lobby-cancel.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_appointment_journey_book_wait_admit_talk_complete_and_a_no_show() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let results = BrowserScript::start(&srv, "scenarios.mjs", "appointment-journey", Value::Null)
        .finish()
        .await;
    let f = facts(&results, "appointment-journey");
    assert!(f["joinLink"].as_str().is_some_and(|l| l.contains("/j/")), "{f:#}");
    assert_eq!(f["joinNamePrefilled"], "Grace Booker", "the link is the guest's: {f:#}");
    assert_eq!(f["queuePosition"], "1", "the guest's place is shown: {f:#}");
    assert!(
        f["queuePositionText"]
            .as_str()
            .is_some_and(|t| t.contains("number 1 in the queue")),
        "{f:#}"
    );
    assert_eq!(f["queueEntryName"], "Grace Booker", "{f:#}");
    assert_eq!(f["knocks"], 1, "one knock for one guest: {f:#}");
    let notes = f["notifications"].as_array().unwrap();
    assert!(
        notes.len() == 1 && notes[0]["body"].as_str().is_some_and(|b| b.contains("Grace Booker")),
        "the knock's notification names the guest: {f:#}"
    );
    assert_eq!(
        f["queueRestRequests"].as_array().map(Vec::len),
        Some(0),
        "the queue is pushed, never read over REST: {f:#}"
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

    let token = srv.staff_token("olga", StaffRole::Admin);
    let get = |id: String| {
        let (srv, token) = (&srv, &token);
        async move {
            let (status, a) = srv
                .call("GET", &format!("/api/v1/appointments/{id}"), Some(token), None)
                .await;
            assert_eq!(status, 200, "{a}");
            a
        }
    };
    let done = get(f["appointmentId"].as_str().unwrap().to_owned()).await;
    assert_eq!(done["state"], "completed", "{done:#}");
    let states: Vec<&str> = done["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert_eq!(states, ["scheduled", "waiting", "in_progress", "completed"], "{done:#}");
    assert!(done["lobby_wait_ms"].as_u64() > Some(0), "{done:#}");

    // The clock looks every 5 s; the deadline passed before the browser started.
    let absent_id = f["absentId"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let absent = loop {
        let a = get(absent_id.clone()).await;
        if a["state"] == "no_show" || tokio::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(absent["state"], "no_show", "{absent:#}");
    assert_eq!(absent["transitions"][1]["cause"], "clock", "{absent:#}");

    // The console's list of today's appointments, pushed: rows, buttons, states.
    assert_eq!(f["absentRowGuest"], "Nils Absent", "from the snapshot: {f:#}");
    assert_eq!(f["rowGuest"], "Grace Booker", "the booking, pushed: {f:#}");
    assert_eq!(
        f["rowButtonsScheduled"],
        serde_json::json!(["today-join-button", "today-remind-button", "today-cancel-button"]),
        "{f:#}"
    );
    assert!(
        f["remindInfo"]
            .as_str()
            .is_some_and(|t| t.contains("No webhook endpoint")),
        "no endpoint here, and the console says so: {f:#}"
    );
    assert!(
        f["rowWait"].as_str().is_some_and(|t| t.starts_with("waiting ")),
        "{f:#}"
    );
    assert!(
        f["rowWaitCompleted"].as_str().is_some_and(|t| t.starts_with("waited ")),
        "{f:#}"
    );
    assert_eq!(f["rowButtonsCompleted"], serde_json::json!([]), "{f:#}");
    assert_eq!(f["absentRowState"], "No-show", "{f:#}");
    assert_eq!(f["cancelAsks"], "Confirm cancel", "{f:#}");
    let on_demand = get(f["onDemandId"].as_str().unwrap().to_owned()).await;
    assert_eq!(on_demand["state"], "cancelled", "{on_demand:#}");
    assert_eq!(
        on_demand["transitions"][1]["cause"], "cancelled_by_staff",
        "{on_demand:#}"
    );

    // Cancelled by its guest from the lobby: the button, the page after, the record.
    assert_eq!(f["cancelOffered"], true, "the booked guest is offered Cancel: {f:#}");
    assert_eq!(f["focusOnConfirm"], "lobby-cancel-confirm", "{f:#}");
    assert_eq!(f["cancelLeftTitle"], "Your appointment is cancelled", "{f:#}");
    assert_eq!(
        (f["cancelLeftFlag"].as_str(), f["cancelRejoinOffered"].as_bool()),
        (Some("true"), Some(false)),
        "{f:#}"
    );
    let cancelled = get(f["cancelId"].as_str().unwrap().to_owned()).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled:#}");
    let last = cancelled["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["from"].as_str(), last["cause"].as_str()),
        (Some("waiting"), Some("cancelled_by_guest")),
        "{cancelled:#}"
    );

    // Yesterday to tomorrow (UTC): the cancelled one may start tomorrow after 22:00.
    let today = jiff::tz::TimeZone::UTC.to_datetime(jiff::Timestamp::now()).date();
    let query = format!(
        "/api/v1/analytics/appointments?from={}&to={}",
        today.yesterday().unwrap(),
        today.tomorrow().unwrap()
    );
    let (status, report) = srv.call("GET", &query, Some(&token), None).await;
    assert_eq!(status, 200, "{report}");
    let total = &report["total"];
    assert_eq!(
        (
            total["appointments"].as_u64(),
            total["completed"].as_u64(),
            total["no_shows"].as_u64(),
            total["cancelled"].as_u64()
        ),
        (Some(4), Some(1), Some(1), Some(2)),
        "{report:#}"
    );
    assert_eq!(
        total["lobby_wait_avg_ms"].as_u64(),
        done["lobby_wait_ms"].as_u64(),
        "the one served appointment's wait: {report:#}"
    );
}

/// Media health in Chromium: the guest's call shows its path (UDP on loopback) and
/// staff see it; an ICE restart on both of the guest's connections (the debug hook,
/// the code path a failed connection takes) brings new ICE credentials on both, media
/// keeps flowing both ways (frames decoded keep rising), and staff never see the guest
/// leave. Screenshots `media-status-guest.png`, `media-status-staff.png`, `media-restart-guest.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_path_shown_and_ice_restart_keeps_media_in_chromium() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let results = BrowserScript::start(&srv, "scenarios.mjs", "media-restart", Value::Null)
        .finish()
        .await;
    let f = facts(&results, "media-restart");
    assert_eq!(f["statusPath"], "udp", "{f:#}");
    assert_eq!(f["statusText"], "Connected over UDP", "{f:#}");
    assert_eq!(
        (f["statusLive"].as_str(), f["alertRole"].as_str()),
        (Some("polite"), Some("alert"))
    );
    assert_eq!(f["staffSeesGuestMedia"], "media over UDP", "{f:#}");
    for role in ["publisher", "subscriber"] {
        assert_eq!(f["pathsBefore"][role], "udp", "{f:#}");
        assert_eq!(f["pathsAfter"][role], "udp", "{f:#}");
        assert_ne!(
            f["ufragsBefore"][role], f["ufragsAfter"][role],
            "{role}: new ICE credentials: {f:#}"
        );
        assert!(f["restarts"][role].as_u64() >= Some(1), "{f:#}");
    }
    assert!(
        f["iceServersFrames"].as_u64() >= Some(2),
        "fresh ICE servers before each connection's restart: {f:#}"
    );
    for side in ["staffMediaBefore", "staffMediaAfter", "guestMediaAfter"] {
        let (before, after) = (&f[side]["before"], &f[side]["after"]);
        assert!(
            inbound(after, "video", "camera", "framesDecoded") > inbound(before, "video", "camera", "framesDecoded"),
            "{side}: video frames decoded must rise: {:#}",
            f[side]
        );
    }
    assert_eq!(
        f["staffSawLeft"],
        serde_json::json!([]),
        "nobody saw the guest leave: {f:#}"
    );
    assert_eq!(
        (f["guestView"].as_str(), f["staffTileStill"].as_u64()),
        (Some("call"), Some(1))
    );
    assert_eq!(f["alertAfter"], "", "no trouble shown once media is back: {f:#}");
    assert_eq!(f["mediaErrors"], serde_json::json!([]), "{f:#}");
}

/// Join time in Chromium (docs/BENCHMARKS.md §4, `scripts/bench/join-chromium.sh`):
/// guests join a meeting whose staff member (Chromium, fake camera) already publishes,
/// straight in (Join click to the first remote frame decoded) and through the lobby
/// (the staff's Admit click to the guest's first frame). Frames must arrive; the
/// times are printed (`JOIN-TIME` lines), never asserted: performance is not judged
/// by a timed test on a shared machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_join_time_to_first_frame() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let repeats: u64 = std::env::var("GATEHOUSE_JOIN_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let results = BrowserScript::start(
        &srv,
        "scenarios.mjs",
        "join-time,join-time-admit",
        serde_json::json!({ "joinRepeats": repeats }),
    )
    .finish()
    .await;
    for (scenario, clock) in [
        ("join-time", "joinToFirstFrameMs"),
        ("join-time-admit", "admitToFirstFrameMs"),
    ] {
        let joins = facts(&results, scenario)["joins"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            joins.len() as u64,
            repeats,
            "{scenario}: every guest decoded a frame: {joins:#?}"
        );
        for join in &joins {
            assert!(join[clock].as_f64().is_some(), "{scenario}: {clock} measured: {join:#}");
            println!("JOIN-TIME {scenario} {join}");
        }
    }
}

/// The defects outside testing found in the web client (issue 15), in Chromium:
/// - `link-list-live`: a single-use link a guest redeems shows as used in the console's
///   open list without a reload (the 2 s queue poll reads the open lists), with no Copy
///   or Revoke; with the queue's requests cut off, Refresh shows a link made and used
///   behind the console's back, used.
/// - `join-early`: Join pressed before the camera has started (getUserMedia made 1.5 s
///   slow) waits for the devices: the guest sends audio and video and staff receive
///   them; focus goes to the lobby status, the call's first control, the "You left" heading.
/// - `devices-denied`: camera and microphone refused: the page says so in a live region
///   with what to do and Try again; the guest still joins, and the call says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_link_state_early_join_devices_and_focus() {
    let _one_browser = ONE_BROWSER.lock().await;
    let srv = TestServer::start().await;
    let results = BrowserScript::start(
        &srv,
        "scenarios.mjs",
        "link-list-live,join-early,devices-denied",
        Value::Null,
    )
    .finish()
    .await;

    let f = facts(&results, "link-list-live");
    assert_eq!(
        (f["statusBefore"].as_str(), f["copyBefore"].as_u64()),
        (Some("active"), Some(1)),
        "{f:#}"
    );
    assert_eq!(f["statusAfterUse"], "used", "pushed to the open list: {f:#}");
    assert_eq!(
        (f["copyAfterUse"].as_u64(), f["revokeAfterUse"].as_u64()),
        (Some(0), Some(0)),
        "a used link offers nothing to send on: {f:#}"
    );
    assert!(
        f["usedNote"]
            .as_str()
            .unwrap_or("")
            .contains("cannot let anyone else in"),
        "{f:#}"
    );
    let banner = f["bannerAfterUse"].as_str().unwrap_or("");
    assert!(
        banner.contains("has been used") && !banner.contains("/j/"),
        "the banner no longer offers the used link: {f:#}"
    );
    assert_eq!(f["secondShownBeforeRefresh"], 0, "{f:#}");
    assert_eq!(
        (f["statusAfterRefresh"].as_str(), f["firstAfterRefresh"].as_str()),
        (Some("used"), Some("used")),
        "{f:#}"
    );
    assert_eq!(f["sameDocument"], true, "no reload: {f:#}");

    let f = facts(&results, "join-early");
    assert_eq!(f["previewStartedAtClick"], false, "{f:#}");
    assert_eq!(f["joinButtonAtClick"], "Starting camera…", "{f:#}");
    assert_eq!(f["focusInLobby"], "lobby-status", "{f:#}");
    assert_eq!(f["focusInCall"], "mic-toggle", "{f:#}");
    assert_eq!(
        f["guestLocalTracks"],
        serde_json::json!(["camera", "microphone"]),
        "{f:#}"
    );
    assert_eq!(
        (f["micState"].as_str(), f["cameraState"].as_str()),
        (Some("on"), Some("on")),
        "{f:#}"
    );
    for kind in ["audio", "video"] {
        assert!(
            f["guestOutbound"]["after"][kind].as_u64() > f["guestOutbound"]["before"][kind].as_u64(),
            "the guest sends {kind}: {f:#}"
        );
    }
    let staff = &f["staffMedia"];
    assert!(
        inbound(&staff["after"], "video", "camera", "framesDecoded")
            > inbound(&staff["before"], "video", "camera", "framesDecoded"),
        "staff decode the guest's video: {staff:#}"
    );
    assert!(
        inbound(&staff["after"], "audio", "microphone", "packetsReceived")
            > inbound(&staff["before"], "audio", "microphone", "packetsReceived"),
        "staff receive the guest's audio: {staff:#}"
    );
    assert_eq!(f["focusAfterLeave"], "left-title", "{f:#}");

    let f = facts(&results, "devices-denied");
    let notice = f["noticeText"].as_str().unwrap_or("");
    assert!(
        notice.contains("blocking") && notice.contains("Allow") && notice.contains("Try again"),
        "{f:#}"
    );
    assert_eq!(f["noticeFailures"], "microphone:denied camera:denied", "{f:#}");
    assert_eq!(f["noticeInLiveRegion"], "device-status", "{f:#}");
    assert_eq!(f["retryShown"], true, "{f:#}");
    assert!(
        f["retryAttempts"][1].as_u64() > f["retryAttempts"][0].as_u64(),
        "Try again asked again: {f:#}"
    );
    assert_eq!(f["retryStillDenied"], "microphone:denied camera:denied", "{f:#}");
    let e = &f["explanations"];
    let (denied, absent, busy) = (
        e["denied"].as_str().unwrap_or(""),
        e["absent"].as_str().unwrap_or(""),
        e["busy"].as_str().unwrap_or(""),
    );
    assert!(denied.contains("blocking"), "{e:#}");
    assert!(absent.contains("No camera was found"), "{e:#}");
    assert!(busy.contains("in use by another program"), "{e:#}");
    assert!(denied != absent && absent != busy && denied != busy, "{e:#}");
    assert_eq!(f["joinedView"], "call", "{f:#}");
    assert!(
        f["callNotice"].as_str().unwrap_or("").contains("leave and join again"),
        "{f:#}"
    );
    assert_eq!(
        (f["micState"].as_str(), f["cameraState"].as_str()),
        (Some("unavailable"), Some("unavailable")),
        "{f:#}"
    );
    assert_eq!(f["focusInCall"], "leave-button", "{f:#}");
}
