//! `gatehouse::loadtest::run` against a real gateway on loopback, in-process.
//!
//! Media runs through the real SFU; the drop-rate hook checks that reported loss is real.

mod support;

use std::time::{Duration, Instant};

use gatehouse::loadtest::report::Limit;
use gatehouse::loadtest::report::{EXIT_OK, EXIT_THRESHOLD, Verdict};
use gatehouse::loadtest::scenario::{Shape, StreamShape};
use gatehouse::loadtest::spawn::SpawnedGateway;
use gatehouse::loadtest::{Auth, Engine, Options, Report, Thresholds, run};
use gatehouse_sdk::TlsOptions;
use gatehouse_signaling::token::StaffRole;
use support::{TestServer, temp_dir, test_config};

fn shape(publishers: u32, secs: u64) -> Shape {
    Shape {
        meetings: 1,
        publishers,
        subscribers: 0,
        audio: Some(StreamShape { kbps: 32, fps: 50 }),
        video: Some(StreamShape { kbps: 300, fps: 30 }),
        ramp_per_sec: 20.0,
        duration: Duration::from_secs(secs),
        storm: None,
        idle: false,
    }
}

fn options(srv: &TestServer, auth: Auth, shape: Shape, thresholds: Thresholds) -> Options {
    let ca = srv.running.as_ref().unwrap().ca_file.as_ref().unwrap();
    Options {
        engine: Engine::Sdk,
        client_threads: 1,
        precise_sends: false,
        simulcast: true,
        url: srv.base.clone(),
        auth,
        tls: TlsOptions {
            ca_pem: Some(std::fs::read_to_string(ca).unwrap()),
            danger_accept_invalid_certs: false,
        },
        shape,
        thresholds,
        progress: false,
        scrape_interval: Duration::from_millis(500),
        metrics_token: srv.state().config.metrics_token().map(str::to_owned),
    }
}

/// The lean engine against a gateway process of its own (its data dir's keys and dev CA).
fn lean_options(gateway: &SpawnedGateway, shape: Shape, thresholds: Thresholds) -> Options {
    Options {
        engine: Engine::Lean,
        client_threads: 1,
        precise_sends: false,
        simulcast: false,
        url: gateway.url.clone(),
        auth: Auth::DataDir(gateway.data_dir.clone()),
        tls: TlsOptions {
            ca_pem: Some(std::fs::read_to_string(gateway.data_dir.join("tls").join("ca.pem")).expect("the dev CA")),
            danger_accept_invalid_certs: false,
        },
        shape,
        thresholds,
        progress: false,
        scrape_interval: Duration::from_millis(500),
        metrics_token: None,
    }
}

/// Runs with a hard bound so a hang fails the test instead of the suite.
async fn bounded_run(options: Options) -> Report {
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(60), run(options))
        .await
        .expect("the run ends on its own")
        .expect("the run completes");
    eprintln!("{}\n(in {:.1} s)", report.to_table(), started.elapsed().as_secs_f64());
    report
}

/// Control plane and gateway figures: meetings created over REST with a token
/// minted from the gateway's data directory, every participant admitted
/// directly (lobby bypass `organization`), /metrics read, everything closed
/// and the meeting ended afterwards. Holds with or without media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_creates_meetings_joins_everyone_and_reads_the_gateway() {
    let srv = TestServer::start().await;
    let report = bounded_run(options(
        &srv,
        Auth::DataDir(srv.data_dir.clone()),
        Shape {
            subscribers: 1,
            ..shape(2, 2)
        },
        Thresholds::default(),
    ))
    .await;
    assert_eq!(report.meetings, 1);
    assert_eq!(report.participants.planned, 3);
    assert_eq!(report.participants.started, 3);
    assert_eq!(report.participants.joined, 3, "{:?}", report.errors);
    assert_eq!(report.admitted_ms.expect("join times").count, 3);
    assert_eq!(
        report.streams.expected,
        2 * 2 * 2,
        "2 publishers x 2 receivers x 2 tracks"
    );
    assert_ne!(report.verdict, Verdict::Failed);
    assert!(
        report.steady_secs.expect("a steady phase") >= 1.9,
        "{:?}",
        report.steady_secs
    );
    let gateway = &report.gateway;
    assert!(gateway.scrapes >= 2, "{gateway:?}");
    assert_eq!(gateway.scrape_errors, 0);
    #[cfg(target_os = "linux")]
    {
        assert!(gateway.rss_peak_bytes.expect("RSS from /metrics") > 1e6, "{gateway:?}");
        assert!(gateway.cpu_percent.expect("CPU over the steady phase") >= 0.0);
        assert_eq!(
            gateway.cpu_metric.as_deref(),
            Some("gatehouse_process_cpu_seconds_total"),
            "the clock-tick counter, not the whole-second one"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["participants"]["joined"], 3);

    // Every peer closed, the meeting ended.
    srv.wait_until("every participant is gone", |s| s.state().live.is_empty())
        .await;
    let admin = srv.staff_token("olga", StaffRole::Admin);
    let (_, meetings) = srv.call("GET", "/api/v1/meetings", Some(&admin), None).await;
    let ours: Vec<_> = meetings
        .as_array()
        .expect("a list")
        .iter()
        .filter(|m| {
            m["settings"]["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Load test"))
        })
        .collect();
    assert_eq!(ours.len(), 1, "{meetings}");
    assert_eq!(ours[0]["state"], "ended", "{meetings}");
}

/// A join storm (`--storm`, issue 13's shape in small): one call forwards, and 1 s into the
/// steady phase four more participants join within 1 s, in two meetings of their own. They
/// all get in with their media, the storm's meetings are created and ended with the run's,
/// and the report gives the call's latency before, during and after the storm apart from
/// the run's own figures. Then a leave storm (`--storm-leave-after`): 1 s after they all
/// settled they leave at once, cleanly, and the call's latency from then is reported apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_joins_in_meetings_of_its_own_leaves_at_once_and_splits_the_calls_latency() {
    let srv = TestServer::start().await;
    let report = bounded_run(options(
        &srv,
        Auth::DataDir(srv.data_dir.clone()),
        Shape {
            storm: Some(gatehouse::loadtest::scenario::Storm {
                participants: 4,
                within: Duration::from_secs(1),
                after: Duration::from_secs(1),
                leave_after: Some(Duration::from_secs(1)),
            }),
            ..shape(2, 8)
        },
        Thresholds::default(),
    ))
    .await;
    assert_eq!(report.meetings, 3, "the run's meeting and the storm's two");
    assert_eq!(report.participants.planned, 2, "the run's own figures are the call's");
    assert_eq!(report.participants.joined, 2, "{:?}", report.errors);
    let storm = report.storm.clone().expect("the storm's figures");
    assert_eq!(
        (storm.planned, storm.started, storm.joined, storm.failed),
        (4, 4, 4, 0),
        "{storm:?}"
    );
    assert!(
        (1.0..2.0).contains(&storm.started_after_secs),
        "1 s into the steady phase: {storm:?}"
    );
    assert!(
        storm.settled_in_secs.is_some(),
        "every storm participant settled: {storm:?}"
    );
    assert_eq!(storm.join_to_media_ms.expect("storm media").count, 4);
    assert!(
        storm.left_after_secs.is_some_and(|s| s >= 1.0),
        "they left 1 s after settling: {storm:?}"
    );
    for (window, p) in [
        ("before", storm.latency_before_ms),
        ("during", storm.latency_during_ms),
        ("after", storm.latency_after_ms),
        ("while leaving", storm.latency_leaving_ms),
    ] {
        assert!(
            p.is_some_and(|p| p.count > 0),
            "the call's latency {window} the storm: {storm:?}"
        );
    }
    let windows = [
        storm.latency_before_ms,
        storm.latency_during_ms,
        storm.latency_after_ms,
        storm.latency_leaving_ms,
    ];
    let total: u64 = windows.iter().map(|p| p.map_or(0, |p| p.count)).sum();
    // The leaving's window is 5 s or what is left of the run; after it, nothing is counted.
    assert!(
        total <= report.latency_ms.expect("the call's latency").count,
        "the windows are apart: {storm:?}"
    );
    assert!(storm.leaving_p99_rise_ms.is_some(), "{storm:?}");
    assert!(storm.p99_rise_ms.is_some());
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["storm"]["joined"], 4);
    srv.wait_until("every participant is gone", |s| s.state().live.is_empty())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_an_error_before_anything_starts() {
    let srv = TestServer::start().await;
    let err = run(options(
        &srv,
        Auth::Token("not-a-token".into()),
        shape(2, 1),
        Thresholds::default(),
    ))
    .await
    .expect_err("refused");
    assert!(format!("{err:#}").contains("unauthorized"), "{err:#}");
    let empty = temp_dir("no-key");
    let err = run(options(&srv, Auth::DataDir(empty), shape(2, 1), Thresholds::default()))
        .await
        .expect_err("no signing key");
    assert!(err.to_string().contains("no signing key"), "{err}");
}

/// (a) Two publishers for ~3 s: everyone gets the other's audio and video,
/// nothing is lost, latency and join times are measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_receive_each_other_without_loss() {
    // The gateway protects /metrics here: the load tester must scrape with the token.
    let dir = support::temp_dir("lt-token");
    let mut config = support::test_config(&dir);
    config.metrics_token = Some("scrape-secret".into());
    let srv = TestServer::start_with(config).await;
    let token = srv.staff_token("loadtester", StaffRole::Staff);
    let report = bounded_run(options(
        &srv,
        Auth::Token(token),
        shape(2, 3),
        Thresholds {
            max_loss_percent: Some(1.0),
            max_p99_ms: Some(1000.0),
        },
    ))
    .await;
    assert_eq!(report.participants.joined, 2, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.streams.received, 4, "2 publishers x 1 other x 2 tracks");
    assert!(report.packets.received > 100, "{:?}", report.packets);
    assert!(
        report.packets.sent >= report.packets.received / 2,
        "{:?}",
        report.packets
    );
    assert_eq!(report.packets.lost, 0, "{:?}", report.packets);
    assert_eq!(report.packets.loss_percent, 0.0);
    assert_eq!(report.packets.corrupt, 0);
    // Measured and live (a bound only a defect breaks; the figure itself is for BENCHMARKS.md).
    assert!(report.latency_ms.expect("latency").p99 < 1000.0);
    assert_eq!(report.join_to_media_ms.expect("join times").count, 2);
    assert!(
        report.bitrate.video_stream_kbps.expect("video") > 100.0,
        "{:?}",
        report.bitrate
    );
    assert!(report.gateway.rss_peak_bytes.expect("RSS") > 0.0);
    assert_eq!(report.gateway.scrape_errors, 0, "every scrape carried the token");
    // Simulcast cameras: the gateway opens every layer and forwards each subscriber one.
    let (opened, forwarded) = opened_and_forwarded(&report);
    assert!(report.client.simulcast);
    assert!(
        opened > forwarded * 1.3,
        "three layers in, one out: {opened} / {forwarded}"
    );
    let (status, body) = srv.call("GET", "/metrics", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "no token, no metrics"
    );
    let (status, _) = srv.call("GET", "/metrics", Some("wrong-secret!"), None).await;
    assert_eq!(status, 401);
    let (status, _) = srv.call("GET", "/metrics", Some("scrape-secret"), None).await;
    assert_eq!(status, 200);
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.breaches);
    assert_eq!(report.exit_code(), EXIT_OK);
}

/// The gateway's RTP packets opened and forwarded a second over the steady phase.
fn opened_and_forwarded(report: &Report) -> (f64, f64) {
    let rate = |name: &str| {
        *report
            .gateway
            .sfu_rates
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {:?}", report.gateway.sfu_rates))
    };
    (
        rate("gatehouse_sfu_opened_packets_total"),
        rate("gatehouse_sfu_forwarded_packets_total"),
    )
}

/// `--no-simulcast`: cameras published as one layer, so in a 1:1 call every packet the
/// gateway opens is forwarded (the issue 13 shape: audio 50 and video about 60 packets/s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_cameras_have_every_packet_forwarded() {
    let srv = TestServer::start().await;
    let token = srv.staff_token("loadtester", StaffRole::Staff);
    let mut options = options(&srv, Auth::Token(token), shape(2, 3), Thresholds::default());
    options.simulcast = false;
    let report = bounded_run(options).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.streams.received, 4, "2 publishers x 1 other x 2 tracks");
    assert_eq!(report.packets.lost, 0, "{:?}", report.packets);
    assert!(!report.client.simulcast);
    let (opened, forwarded) = opened_and_forwarded(&report);
    assert!(forwarded > 100.0, "{forwarded}");
    assert!(
        opened < forwarded * 1.1,
        "one layer in, the same out: {opened} / {forwarded}"
    );
}

/// (b) and (c): with the SFU dropping 10 % of forwarded packets, the reported
/// loss is about 10 %, and `--max-loss 1` turns that into the breach verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_packets_show_as_loss_and_breach_max_loss() {
    let mut config = test_config(&temp_dir("drop"));
    config.media_drop_rate = Some(0.10);
    let srv = TestServer::start_with(config).await;
    let report = bounded_run(options(
        &srv,
        Auth::DataDir(srv.data_dir.clone()),
        shape(2, 4),
        Thresholds {
            max_loss_percent: Some(1.0),
            max_p99_ms: None,
        },
    ))
    .await;
    assert_eq!(report.participants.joined, 2, "{:?}", report.errors);
    assert_eq!(report.streams.received, 4);
    let loss = report.packets.loss_percent;
    assert!(
        (5.0..=15.0).contains(&loss),
        "loss {loss} % with a 10 % drop: {:?}",
        report.packets
    );
    assert_eq!(report.verdict, Verdict::ThresholdBreached);
    assert!(report.breaches[0].contains("--max-loss"), "{:?}", report.breaches);
    assert_eq!(report.exit_code(), EXIT_THRESHOLD);
}

/// The lean engine (`--engine lean`) against a gateway process of its own (this binary's
/// `serve`): 2 meetings x 2 publishers with audio and video, every connection of the load
/// tester on one UDP socket, real signaling, ICE, DTLS and SRTP. Every stream arrives,
/// nothing is lost or corrupted, and the report states the gateway's CPU per forwarded
/// packet and the load tester's own CPU and socket drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_engine_loads_a_spawned_gateway_end_to_end() {
    let dir = temp_dir("lean");
    let gateway = SpawnedGateway::start(std::path::Path::new(env!("CARGO_BIN_EXE_gatehouse")), &dir, &[])
        .expect("the gateway starts");
    let options = lean_options(
        &gateway,
        Shape {
            meetings: 2,
            ..shape(2, 3)
        },
        Thresholds {
            max_loss_percent: Some(1.0),
            max_p99_ms: None,
        },
    );
    let report = bounded_run(options).await;
    assert_eq!(report.participants.joined, 4, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.streams.expected, 8,
        "2 meetings x 2 publishers x 1 other x 2 tracks"
    );
    assert_eq!(report.streams.received, 8, "{:?}", report.streams);
    // ~110 packets/s per publisher for 3 s, each to one receiver.
    assert!(report.packets.received > 500, "{:?}", report.packets);
    assert!(report.packets.loss_percent < 1.0, "{:?}", report.packets);
    assert_eq!(report.packets.corrupt, 0);
    assert!(report.latency_ms.expect("latency measured").p50 < 100.0);
    let forwarded = report.gateway.forwarded_per_sec.expect("the gateway's forwarding rate");
    assert!(forwarded > 200.0, "{forwarded}");
    let us = report.server_us_per_forwarded_packet.expect("CPU per forwarded packet");
    assert!(us > 0.0 && us.is_finite(), "{us}");
    let client = &report.client;
    assert_eq!(client.engine, "lean");
    assert!(client.cpu_percent.expect("the load tester's CPU") > 0.0, "{client:?}");
    assert!(
        client.busiest_thread_percent.expect("the engine thread's CPU") > 0.0,
        "{client:?}"
    );
    assert_eq!(client.socket_drops, Some(0), "{client:?}");
    assert_eq!(
        report.gateway.socket_drops,
        Some(0),
        "the gateway's media socket, found by its port"
    );
    // Its one media shard thread, from its own CPU counter.
    assert_eq!(report.gateway.shards, Some(1), "{:?}", report.gateway);
    let shard = report.gateway.busiest_shard_percent.expect("the shard's CPU");
    assert!(shard > 0.0 && shard <= 100.0 + 1.0, "{shard}");
    assert!(report.to_table().contains("busiest media shard"));
    let first_frame = report.join_to_first_frame_ms.expect("first frames");
    assert_eq!(first_frame.count, 4, "every participant saw a remote keyframe");
    assert_ne!(report.limit, Limit::Unknown, "{}", report.limit_reason);
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.breaches);
    drop(gateway);
}

/// An idle run (`--idle`) with the lean engine against a gateway process of its own: 2
/// meetings x 2 publishers send audio and video until everyone receives everything, then go
/// quiet and stay connected for 8 s, longer than the client's 5 s without hearing the gateway
/// before it calls a connection disconnected: with no media and no receiver reports, only the
/// gateway's answers to its consent checks keep it up. Every participant is counted with both
/// its connections still up at the end, nothing is forwarded in the measured window, and the
/// report states the
/// gateway's CPU per idle participant (no figure is asserted: it is measured in
/// docs/BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_holds_connected_participants_without_media_and_states_their_cost() {
    let dir = temp_dir("lean-idle");
    let gateway = SpawnedGateway::start(std::path::Path::new(env!("CARGO_BIN_EXE_gatehouse")), &dir, &[])
        .expect("the gateway starts");
    let options = lean_options(
        &gateway,
        Shape {
            meetings: 2,
            idle: true,
            ..shape(2, 8)
        },
        Thresholds::default(),
    );
    let report = bounded_run(options).await;
    assert_eq!(report.participants.joined, 4, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.streams.received, 8, "every track arrived before the quiet");
    let idle = report.idle.expect("an idle run's figures");
    assert_eq!((idle.participants, idle.connected), (4, 4), "{idle:?}");
    assert_eq!(
        (idle.connections_up, idle.connections),
        (8, 8),
        "a publisher and a subscriber connection each, all up at the end: {idle:?}"
    );
    assert_eq!(
        idle.forwarded_per_sec,
        Some(0.0),
        "no media in the measured window: {idle:?}"
    );
    let ms = idle
        .gateway_cpu_ms_per_participant_per_sec
        .expect("the gateway's CPU per idle participant");
    assert!(ms.is_finite() && ms >= 0.0, "{ms}");
    let cpu = idle.gateway_cpu_percent.expect("the gateway's CPU");
    assert!(
        (ms - cpu * 10.0 / 4.0).abs() < 1e-9,
        "whole process CPU / participants: {idle:?}"
    );
    assert!(report.to_table().contains("CPU per participant"));
    assert!(report.to_json().contains("\"gateway_cpu_ms_per_participant_per_sec\""));
    drop(gateway);
}
