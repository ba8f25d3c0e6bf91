//! Browser scripts (`tests/browser/*.mjs`, real Chromium through playwright-core or Firefox
//! ESR through WebDriver BiDi, under Node) driven from a test: start one against a gateway,
//! follow its progress, tell it things, collect its results. The whole process tree ends when
//! the script is dropped, whether the test passed or panicked.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::process::ProcessTree;

/// How long a browser may take to start and reach its first step (a cold Firefox with a
/// fresh profile on a busy 2-core machine takes several seconds; this bounds a hang).
pub const BROWSER_START: Duration = Duration::from_secs(120);

/// How long one script may run before the test calls it hung.
pub const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

/// A browser script (`tests/browser/<script>`) running under Node: its progress lines as
/// they come, its result lines at the end. The whole process tree (Node, the browser,
/// its helpers) is ended when this is dropped, whether the test passed or panicked.
pub struct BrowserScript {
    pub tree: ProcessTree,
    /// Every JSON line the script prints on stdout, in order; closed at its exit.
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Scenario results seen so far (lines without `progress`).
    results: Vec<Value>,
    /// The script's stderr, for failure messages.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The script's stdin: what the test tells it ([`BrowserScript::tell`]).
    stdin: Option<std::process::ChildStdin>,
}

impl BrowserScript {
    /// Starts `script` (Chromium: scenarios.mjs; Firefox: firefox.mjs) with `scenarios`
    /// against the gateway at `base_url`, whose certificate `ca_file` signed (for Node's own
    /// requests; the browsers ignore certificate errors), `staff_token` in the config.
    /// `extra` adds to or overrides the config (see `readConfig` in harness.mjs).
    pub fn spawn(
        base_url: &str,
        staff_token: &str,
        ca_file: &Path,
        script: &str,
        scenarios: &str,
        extra: Value,
    ) -> BrowserScript {
        let root = env!("CARGO_MANIFEST_DIR");
        assert!(
            std::path::Path::new(root)
                .join("tests/browser/node_modules/playwright-core")
                .exists(),
            "run `npm ci` in tests/browser first (scripts/test.sh does)"
        );
        let shots = std::path::Path::new(root).join("tests/artifacts/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let mut config = serde_json::json!({
            "baseUrl": base_url,
            "staffToken": staff_token,
            "screenshotDir": shots,
            "requireMedia": true,
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
            c.extend(e);
        }
        let mut cmd = std::process::Command::new("node");
        cmd.arg(format!("{root}/tests/browser/{script}"))
            .arg(scenarios)
            .arg(config.to_string())
            .env("NODE_EXTRA_CA_CERTS", ca_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut tree = ProcessTree::spawn(cmd).expect("node runs (scripts/test.sh installs Node.js)");
        let stdin = tree.child_mut().stdin.take();
        let stdout = tree.child_mut().stdout.take().unwrap();
        let stderr_pipe = tree.child_mut().stderr.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let stdout = tokio::process::ChildStdout::from_std(stdout).unwrap();
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let pipe = tokio::process::ChildStderr::from_std(stderr_pipe).unwrap();
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        BrowserScript {
            tree,
            lines,
            results: Vec::new(),
            stderr,
            stdin,
        }
    }

    /// Tells the script something (one JSON line on its stdin; `toldByTest` in harness.mjs).
    pub fn tell(&mut self, message: Value) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("the script's stdin is open");
        writeln!(stdin, "{message}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("telling the script {message}: {e}; stderr:\n{}", self.stderr()));
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the script to report `what` (see `RunBase.progress` in harness.mjs).
    pub async fn progress(&mut self, what: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) if v["progress"] == what => return v,
                Ok(Some(v)) if v.get("progress").is_some() => continue,
                Ok(Some(v)) => self.results.push(v),
                Ok(None) => panic!(
                    "the script ended before `{what}`: {:#?}\nstderr:\n{}",
                    self.results,
                    self.stderr()
                ),
                Err(_) => panic!("no `{what}` within {within:?}; stderr:\n{}", self.stderr()),
            }
        }
    }

    /// [`progress`](Self::progress), or `None` if it does not come in time (the script goes on).
    pub async fn progress_within(&mut self, what: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) if v["progress"] == what => return Some(v),
                Ok(Some(v)) if v.get("progress").is_some() => continue,
                Ok(Some(v)) => self.results.push(v),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Waits for the script to end; every scenario must be ok with no page errors.
    pub async fn finish(mut self) -> Vec<Value> {
        self.stdin = None;
        let deadline = tokio::time::Instant::now() + SCRIPT_LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) if v.get("progress").is_some() => continue,
                Ok(Some(v)) => self.results.push(v),
                Ok(None) => break,
                Err(_) => panic!("the script ran over {SCRIPT_LIMIT:?}; stderr:\n{}", self.stderr()),
            }
        }
        let status = tokio::task::block_in_place(|| self.tree.wait()).expect("node exits");
        let results = std::mem::take(&mut self.results);
        assert!(!results.is_empty(), "no results ({status}); stderr:\n{}", self.stderr());
        for r in &results {
            assert_eq!(r["ok"], true, "scenario failed: {r:#}\nstderr:\n{}", self.stderr());
            assert_eq!(r["pageErrors"].as_array().map(Vec::len), Some(0), "page errors: {r:#}");
        }
        assert!(status.success(), "{status}; stderr:\n{}", self.stderr());
        results
    }
}

/// The facts scenario `scenario` reported (it must have run).
pub fn facts<'a>(results: &'a [Value], scenario: &str) -> &'a Value {
    &results
        .iter()
        .find(|r| r["scenario"] == scenario)
        .unwrap_or_else(|| panic!("{scenario} did not run"))["facts"]
}

/// Largest counter of an inbound stream of `kind` (and `source`) in a stats summary.
pub fn inbound(stats: &Value, kind: &str, source: &str, field: &str) -> u64 {
    stats["inbound"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == kind && s["source"] == source)
        .filter_map(|s| s[field].as_u64())
        .max()
        .unwrap_or(0)
}
