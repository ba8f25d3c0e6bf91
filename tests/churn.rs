//! `gatehouse loadtest --churn --spawn-gateway` for two minutes, as an operator runs it:
//! the load tester starts its own gateway process, participants come and go (staff
//! publishers that leave or drop, guests admitted or denied in the lobby, chat), the
//! gateway's /proc and /metrics are sampled, and the run passes: nothing grew.
//! Both processes are one marked tree, ended when the test ends, also when it fails.
#![cfg(target_os = "linux")]

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::process::ProcessTree;

/// Two minutes of churn, up to 75 s of settling, start-up and teardown, on a loaded box.
const BOUND: Duration = Duration::from_secs(8 * 60);

#[test]
fn a_two_minute_churn_passes_and_reports_every_resource() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    // Three at a time with light media: the suite shares two cores.
    cmd.args([
        "loadtest",
        "--churn",
        "--spawn-gateway",
        "--duration",
        "120",
        "--churn-slots",
        "3",
        "--sample-secs",
        "2",
        "--settle-secs",
        "40",
        "--json",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut tree = ProcessTree::spawn(cmd).expect("the load tester starts");
    let mut stdout = tree.child_mut().stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    // The report comes when the load tester exits (end of its stdout).
    let out = rx.recv_timeout(BOUND).expect("the churn run ends within its bound");
    let status = tree.wait().expect("exit status");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("a JSON report ({e}):\n{out}"));
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert_eq!(status.code(), Some(0), "{report:#}");

    let counts = &report["counts"];
    let n = |key: &str| counts[key].as_u64().unwrap_or_else(|| panic!("{key} in {counts}"));
    assert!(n("cycles") >= 20, "{counts}");
    assert_eq!(n("failed"), 0, "{counts}");
    for key in [
        "admitted",
        "denied",
        "published",
        "received_media",
        "chats",
        "left",
        "dropped",
    ] {
        assert!(n(key) > 0, "no {key}: {counts}");
    }

    // Every resource sampled at the start, at its peak and at the end.
    let resources = report["resources"].as_array().expect("resources");
    for name in [
        "rss_bytes",
        "fds",
        "threads",
        "udp_sockets",
        "peer_connections",
        "signaling_connections",
    ] {
        let r = resources
            .iter()
            .find(|r| r["resource"] == name)
            .unwrap_or_else(|| panic!("{name} in {resources:?}"));
        for key in ["start", "peak", "end", "growth"] {
            assert!(r[key].is_number(), "{name}.{key}: {r}");
        }
        assert_eq!(r["ok"], true, "{r}");
    }
    let peak = |name: &str| {
        resources.iter().find(|r| r["resource"] == name).expect("listed")["peak"]
            .as_f64()
            .expect("a number")
    };
    assert!(peak("peer_connections") >= 2.0, "media was up during the churn");
    assert!(peak("rss_bytes") > 1e6);
    let samples = report["samples"].as_array().expect("samples");
    let churn = samples.iter().filter(|s| s["phase"] == "churn").count();
    assert!(churn >= 30, "a sample about every 2 s of the 120 s: {churn}");
    assert!(samples.iter().any(|s| s["phase"] == "baseline"));
    assert!(samples.iter().any(|s| s["phase"] == "settle"));
    assert!(report["gateway_log_lines"].as_u64().expect("log lines") > 0);
}
