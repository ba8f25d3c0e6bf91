//! Crash recovery: `kill -9` of a real `gatehouse serve` in the middle of a call, a restart
//! on the same data directory and ports, and SDK participants coming back with what they
//! hold; and a store that opens cleanly from a copy taken mid-transaction or a torn WAL.

#![cfg(target_os = "linux")]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, ConnectOptions, Event, Events, MediaOptions};
use gatehouse_signaling::protocol::{LeaveReason, TrackSource};
use gatehouse_signaling::token::StaffRole;
use serde_json::{Value, json};
use support::EVENT_TIMEOUT as T;
use support::process::{ProcessTree, first_line_with};

/// How long a gateway may take to print its banner (a loaded CI machine, a cold cache).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `gatehouse serve` child process on loopback; killed (SIGKILL) with its tree on drop.
struct Gateway {
    tree: ProcessTree,
    /// `https://localhost:PORT`.
    base: String,
    /// The HTTPS and media addresses it bound, for a restart on the same ports.
    listen: String,
    media: String,
    ca_pem: String,
    http: reqwest::Client,
}

impl Gateway {
    /// Starts `gatehouse serve` on `data_dir` and waits for its banner.
    /// `listen`/`media` are `127.0.0.1:0` the first time, the bound ones after.
    fn start(data_dir: &Path, listen: &str, media: &str) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen, "--media-bind", media])
            .args(["--media-tcp-bind", "127.0.0.1:0", "--media-shards", "1"])
            .args(["--seat-hold-secs", "60", "--redeem-per-minute", "1000"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut tree = ProcessTree::spawn(cmd).expect("gatehouse serve starts");
        // Logs and the banner are on stderr: a thread drains it into a file (kept for a
        // failure's post-mortem) and hands over the banner's line.
        let stderr = tree.child_mut().stderr.take().expect("piped");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("gateway.log"))
            .expect("log file");
        let banner = first_line_with(stderr, log, "Gatehouse is listening on", START_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no banner from gatehouse serve; log in {}",
                data_dir.join("gateway.log").display()
            )
        });
        let word_after = |marker: &str| -> String {
            let rest = &banner[banner.find(marker).expect("banner format") + marker.len()..];
            rest.split([' ', ',']).next().unwrap().to_owned()
        };
        let listen = word_after("listening on https://");
        let media = word_after("media on udp ");
        let port = listen.rsplit(':').next().unwrap();
        let ca_pem = std::fs::read_to_string(data_dir.join("tls/ca.pem")).expect("dev CA");
        gatehouse::tls::install_crypto_provider();
        let http = support::https_client(ca_pem.as_bytes());
        Gateway {
            tree,
            base: format!("https://localhost:{port}"),
            listen,
            media,
            ca_pem,
            http,
        }
    }

    /// `kill -9` of the gateway (and anything it started); returns once it is gone.
    fn kill(mut self) -> (String, String) {
        let killed = self.tree.end();
        assert!(killed.iter().any(|p| p.comm == "gatehouse"), "{killed:?}");
        (self.listen.clone(), self.media.clone())
    }

    fn sdk(&self, token: &str) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.base.clone(), token);
        o.ca_pem = Some(self.ca_pem.clone());
        o.media = MediaOptions {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..Default::default()
        };
        // This test comes back by hand (`Client::reconnect`) at moments it chooses; the
        // SDK's own reconnecting would race it (tests/sdk_reconnect.rs covers that path).
        o.reconnect = gatehouse_sdk::ReconnectPolicy::never();
        o
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        support::http_call(&self.http, &self.base, method, path, token, body).await
    }

    async fn redeem(&self, code: &str, name: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/api/v1/links/{code}/redeem"),
            None,
            Some(json!({ "display_name": name })),
        )
        .await
    }
}

/// Waits until the client is placed: `true` for the call, `false` for the lobby.
async fn placed(events: &mut Events) -> bool {
    events
        .wait_for(T, |e| match e {
            Event::Admitted { .. } => Some(true),
            Event::Lobby { .. } => Some(false),
            _ => None,
        })
        .await
        .expect("placed in the call or the lobby")
}

/// Who waits in the lobby, by display name, at the next lobby update matching `want`.
async fn lobby_becomes(events: &mut Events, want: &[&str]) {
    events
        .wait_for(T, |e| match e {
            Event::LobbyChanged { entries } => {
                let names: Vec<_> = entries.iter().map(|e| e.display_name.clone()).collect();
                (names == want).then_some(())
            }
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("the lobby never became {want:?}: {e}"));
}

/// Publishes a synthetic camera from `from` and waits for `to` to receive its RTP.
async fn media_flows(from: &Client, to: &mut Events) -> gatehouse_sdk::SyntheticSender {
    let cam = from.publish(TrackSource::Camera).await.expect("camera published");
    let sender = cam.start_synthetic(SyntheticConfig::video()).expect("synthetic video");
    let me = from.me().participant_id.clone();
    let track = to
        .wait_for(T, |e| match e {
            Event::RemoteTrack(t) if t.participant_id() == me.as_str() => Some(t),
            Event::ParticipantLeft { participant_id, .. } if participant_id == me => {
                panic!("{me} was seen to leave")
            }
            _ => None,
        })
        .await
        .expect("the remote track arrives");
    assert!(
        tokio::time::timeout(T, track.recv_rtp())
            .await
            .expect("RTP in time")
            .is_some(),
        "media flows from {me}"
    );
    sender
}

fn event_names(log: &Value, participant_id: &str) -> Vec<String> {
    log.as_array()
        .expect("a list of events")
        .iter()
        .filter(|e| e["participant_id"] == participant_id)
        .map(|e| e["event"]["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_then_restart_loses_nothing() {
    let dir = support::temp_dir("crash");
    let gw = Gateway::start(&dir, "127.0.0.1:0", "127.0.0.1:0");
    let keys = gatehouse::server::load_or_create_signing_key(&dir).unwrap();
    let now = gatehouse::ids::now_ms() / 1000;
    let olga = keys
        .mint_staff("olga", "Olga", "default", StaffRole::Staff, now, 3600)
        .unwrap();

    // A meeting where every guest waits for admission; a single-use link for one guest,
    // the public link for two more.
    let (status, meeting) = gw
        .call(
            "POST",
            "/api/v1/meetings",
            Some(&olga),
            Some(json!({ "title": "Crash", "lobby_bypass": "organizer_only" })),
        )
        .await;
    assert_eq!(status, 201, "{meeting}");
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let public = meeting["public_link"]["code"].as_str().unwrap().to_owned();
    let (status, single) = gw
        .call(
            "POST",
            &format!("/api/v1/meetings/{mid}/links"),
            Some(&olga),
            Some(json!({ "kind": "single_use" })),
        )
        .await;
    assert_eq!(status, 201, "{single}");
    let single_code = single["code"].as_str().unwrap().to_owned();
    let (status, redeemed) = gw.redeem(&single_code, "Gina").await;
    assert_eq!(status, 200, "{redeemed}");
    let gina_token = redeemed["token"].as_str().unwrap().to_owned();
    let wendy_token = gw.redeem(&public, "Wendy").await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dora_token = gw.redeem(&public, "Dora").await.1["token"].as_str().unwrap().to_owned();

    // Staff in the call; Gina admitted from the lobby; media both ways.
    let (staff, mut staff_events) = Client::connect(gw.sdk(&olga).meeting(mid.clone())).await.unwrap();
    assert!(placed(&mut staff_events).await, "the organiser enters");
    let (gina, mut gina_events) = Client::connect(gw.sdk(&gina_token)).await.unwrap();
    assert!(!placed(&mut gina_events).await, "a guest waits");
    lobby_becomes(&mut staff_events, &["Gina"]).await;
    staff.admit(gina.me().participant_id.clone()).unwrap();
    assert!(placed(&mut gina_events).await, "admitted");
    let gina_video = media_flows(&gina, &mut staff_events).await;
    let staff_video = media_flows(&staff, &mut gina_events).await;

    // Wendy waits in the lobby; Dora is denied. Each lobby update reaches staff after the
    // event that caused it is committed, so the log holds them before the kill.
    let (wendy, mut wendy_events) = Client::connect(gw.sdk(&wendy_token)).await.unwrap();
    assert!(!placed(&mut wendy_events).await);
    lobby_becomes(&mut staff_events, &["Wendy"]).await;
    let (dora, mut dora_events) = Client::connect(gw.sdk(&dora_token)).await.unwrap();
    assert!(!placed(&mut dora_events).await);
    lobby_becomes(&mut staff_events, &["Wendy", "Dora"]).await;
    staff.deny(dora.me().participant_id.clone(), None).unwrap();
    dora_events
        .wait_for(T, |e| match e {
            Event::Left { reason, .. } => Some(reason),
            _ => None,
        })
        .await
        .map(|reason| assert_eq!(reason, LeaveReason::Denied))
        .unwrap();
    lobby_becomes(&mut staff_events, &["Wendy"]).await;
    let gina_id = gina.me().participant_id.to_string();
    let staff_id = staff.me().participant_id.to_string();
    let wendy_id = wendy.me().participant_id.to_string();
    let dora_id = dora.me().participant_id.to_string();

    // kill -9 in the middle of the call, and a restart on the same data and ports.
    let (listen, media) = gw.kill();
    let gw = Gateway::start(&dir, &listen, &media);
    assert_eq!(
        (gw.listen.as_str(), gw.media.as_str()),
        (listen.as_str(), media.as_str())
    );
    // The senders' peer connections died with the gateway.
    let _ = gina_video.stop().await;
    let _ = staff_video.stop().await;

    // Gina comes back with her token: straight into the call, with no host there yet.
    let (gina, mut gina_events) = gina.reconnect(5, Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        gina.me().participant_id.as_str(),
        gina_id,
        "same token, same participant"
    );
    assert!(
        placed(&mut gina_events).await,
        "the admission survived the crash: no lobby"
    );
    // Staff come back with theirs (a new participant, as on any staff join).
    let (staff, mut staff_events) = staff.reconnect(5, Duration::from_millis(200)).await.unwrap();
    let in_call = staff_events
        .wait_for(T, |e| match e {
            Event::Admitted { participants, .. } => Some(participants),
            Event::Lobby { .. } => panic!("the organiser enters"),
            _ => None,
        })
        .await
        .unwrap();
    assert!(
        in_call.iter().any(|p| p.participant_id.as_str() == gina_id),
        "Gina is in the call: {in_call:?}"
    );
    let gina_video = media_flows(&gina, &mut staff_events).await;
    let staff_video = media_flows(&staff, &mut gina_events).await;

    // Wendy, who only waited, waits again; Dora, denied, is placed by the normal rules
    // (a denial ends an attendance, it revokes nothing: PROTOCOL.md §9.7): the lobby.
    let (_wendy, mut wendy_events) = wendy.reconnect(5, Duration::from_millis(200)).await.unwrap();
    assert!(
        !placed(&mut wendy_events).await,
        "a waiting guest goes back to the lobby"
    );
    let (_dora, mut dora_events) = dora.reconnect(5, Duration::from_millis(200)).await.unwrap();
    assert!(
        !placed(&mut dora_events).await,
        "a denied guest is not let in by a crash"
    );
    lobby_becomes(&mut staff_events, &["Wendy", "Dora"]).await;

    // The single-use link stays used.
    let (status, again) = gw.redeem(&single_code, "Mallory").await;
    assert_eq!((status, again["code"].as_str()), (410, Some("link_used")), "{again}");
    let (_, links) = gw
        .call("GET", &format!("/api/v1/meetings/{mid}/links"), Some(&olga), None)
        .await;
    let used = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["code"] == single_code.as_str())
        .expect("the single-use link is listed");
    assert_eq!(used["redemptions"], 1, "{used}");

    // The participation log has everything from before the crash, and the attendances
    // the crash cut off are closed (staff and the waiting guest), not left open.
    let (status, log) = gw
        .call("GET", &format!("/api/v1/meetings/{mid}/events"), Some(&olga), None)
        .await;
    assert_eq!(status, 200, "{log}");
    let names = |id: &str| event_names(&log, id);
    assert_eq!(
        names(&gina_id)[..4],
        ["link_redeemed", "entered_lobby", "admitted", "joined"],
        "{log}"
    );
    assert!(!names(&gina_id).contains(&"left".to_owned()), "Gina never left: {log}");
    assert_eq!(names(&staff_id), ["joined", "left"], "{log}");
    assert_eq!(
        names(&wendy_id)[..3],
        ["link_redeemed", "entered_lobby", "left_lobby"],
        "{log}"
    );
    assert_eq!(
        names(&dora_id)[..3],
        ["link_redeemed", "entered_lobby", "denied"],
        "{log}"
    );

    gina_video.stop().await.expect("the sender stops");
    staff_video.stop().await.expect("the sender stops");
    gina.close().await;
    staff.close().await;
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies the database's files (`gatehouse.db`, `-wal`, `-shm`, `-journal`) that exist.
fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let src = from.join(format!("gatehouse.db{suffix}"));
        if src.exists() {
            std::fs::copy(&src, to.join(format!("gatehouse.db{suffix}"))).unwrap();
        }
    }
}

fn test_meeting(i: usize) -> gatehouse_signaling::meeting::Meeting {
    gatehouse_signaling::meeting::Meeting {
        meeting_id: format!("m_{i:04}").into(),
        organization: "acme".into(),
        organizer: "olga".into(),
        settings: gatehouse_signaling::meeting::MeetingSettings {
            title: format!("Meeting {i} {}", "x".repeat(200)),
            ..Default::default()
        },
        created_at_ms: i as u64,
        ended_at_ms: None,
    }
}

fn meeting_ids(store: &gatehouse::store::Store) -> Vec<String> {
    let mut ids: Vec<_> = store
        .meetings("acme", 100_000)
        .unwrap()
        .into_iter()
        .map(|m| m.meeting_id.to_string())
        .collect();
    ids.sort();
    ids
}

/// A writer holds an open transaction whose pages have spilled into the WAL (more than
/// its page cache holds) when the files are copied: the copy opens with the committed
/// meetings only, and the gateway starts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_taken_mid_transaction_opens_with_the_committed_data() {
    let live = support::temp_dir("torn-live");
    let store = gatehouse::store::Store::open(&live.join("gatehouse.db")).unwrap();
    for i in 0..20 {
        store.insert_meeting(&test_meeting(i)).unwrap();
    }
    let writer = rusqlite::Connection::open(live.join("gatehouse.db")).unwrap();
    // A tiny cache, so the transaction's pages are written to the WAL before it commits.
    writer.pragma_update(None, "cache_size", 2).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 20..600 {
        let m = test_meeting(i);
        writer
            .execute(
                "INSERT INTO meetings (meeting_id, organization, organizer, settings, created_at) VALUES (?1, 'acme', 'olga', ?2, ?3)",
                rusqlite::params![m.meeting_id.as_str(), serde_json::to_string(&m.settings).unwrap(), i as i64],
            )
            .unwrap();
    }
    let wal = std::fs::metadata(live.join("gatehouse.db-wal")).unwrap().len();
    assert!(wal > 64 * 1024, "the open transaction reached the WAL ({wal} bytes)");
    let copy = support::temp_dir("torn-copy");
    copy_db(&live, &copy);
    writer.execute_batch("ROLLBACK").unwrap();
    drop((writer, store));

    let expected: Vec<String> = (0..20).map(|i| test_meeting(i).meeting_id.to_string()).collect();
    {
        let opened = gatehouse::store::Store::open(&copy.join("gatehouse.db")).expect("the copy opens");
        assert_eq!(meeting_ids(&opened), expected);
        // And it takes writes again.
        opened.insert_meeting(&test_meeting(20)).unwrap();
    }

    // The real gateway starts on the copy and serves what was committed.
    let gw = Gateway::start(&copy, "127.0.0.1:0", "127.0.0.1:0");
    let keys = gatehouse::server::load_or_create_signing_key(&copy).unwrap();
    let now = gatehouse::ids::now_ms() / 1000;
    let admin = keys
        .mint_staff("olga", "Olga", "acme", StaffRole::Admin, now, 3600)
        .unwrap();
    let (status, body) = gw.call("GET", "/api/v1/meetings/m_0005", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["settings"]["title"].as_str().unwrap().starts_with("Meeting 5 "),
        "{body}"
    );
    let (status, _) = gw.call("GET", "/api/v1/meetings/m_0300", Some(&admin), None).await;
    assert_eq!(status, 404, "an uncommitted meeting is not there");
    drop(gw);
    let _ = std::fs::remove_dir_all(&live);
    let _ = std::fs::remove_dir_all(&copy);
}

/// Byte offsets in a WAL file just past each commit frame (`0` page-count field
/// means "not a commit").
fn commit_ends(wal: &[u8]) -> Vec<usize> {
    let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let frame = 24 + page_size;
    let mut ends = Vec::new();
    let mut at = 32;
    while at + frame <= wal.len() {
        let db_pages = u32::from_be_bytes(wal[at + 4..at + 8].try_into().unwrap());
        if db_pages != 0 {
            ends.push(at + frame);
        }
        at += frame;
    }
    ends
}

/// A WAL cut at any offset (a torn write) opens with exactly the transactions whose
/// commit frame is whole, in order, and nothing else.
#[test]
fn a_wal_torn_at_any_offset_keeps_every_whole_commit() {
    let live = support::temp_dir("wal-live");
    let path = live.join("gatehouse.db");
    let store = gatehouse::store::Store::open(&path).unwrap();
    // A reader holding a snapshot keeps SQLite from checkpointing the WAL away.
    let pin = rusqlite::Connection::open(&path).unwrap();
    pin.execute_batch("BEGIN; SELECT count(*) FROM meetings;").unwrap();
    let n = 12;
    for i in 0..n {
        store.insert_meeting(&test_meeting(i)).unwrap();
    }
    let wal = std::fs::read(live.join("gatehouse.db-wal")).unwrap();
    let db = std::fs::read(&path).unwrap();
    drop((pin, store));
    let ends = commit_ends(&wal);
    // The schema's own transaction(s) come first, then one per meeting.
    assert!(ends.len() >= n, "{} commits for {n} inserts", ends.len());
    let first_meeting = ends.len() - n;

    let page = 24 + u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    // Cut inside frame headers, inside pages and exactly at frame boundaries.
    let mut offsets: Vec<usize> = vec![0, 7, 31, 32, 33];
    for k in (0..wal.len() / page).step_by(3) {
        offsets.extend([32 + k * page + 5, 32 + k * page + 24 + 100, 32 + (k + 1) * page]);
    }
    offsets.push(wal.len() - 1);
    offsets.push(wal.len());
    for cut in offsets.into_iter().filter(|&c| c <= wal.len()) {
        let dir = support::temp_dir("wal-cut");
        std::fs::write(dir.join("gatehouse.db"), &db).unwrap();
        std::fs::write(dir.join("gatehouse.db-wal"), &wal[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let expected: Vec<String> = (0..whole.saturating_sub(first_meeting))
            .map(|i| test_meeting(i).meeting_id.to_string())
            .collect();
        let opened = gatehouse::store::Store::open(&dir.join("gatehouse.db"))
            .unwrap_or_else(|e| panic!("a WAL cut at {cut} of {} opens: {e:#}", wal.len()));
        assert_eq!(meeting_ids(&opened), expected, "WAL cut at {cut} of {}", wal.len());
        drop(opened);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&live);
}
