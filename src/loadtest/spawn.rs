//! A gateway the load tester starts itself (`--spawn-gateway`): this same binary's
//! `serve`, on loopback with ephemeral ports and a fresh data directory, so a soak
//! can read its `/proc/<pid>` and nothing else shares the process.
//!
//! Its stderr (the log) is copied to `gateway.log` in the data directory and its
//! lines counted; the process is killed when the handle is dropped, panics included.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;

/// How long the gateway may take to print that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The banner line `serve` prints once it listens.
const BANNER: &str = "Gatehouse is listening on https://";

/// A running gateway process, killed on drop.
pub struct SpawnedGateway {
    child: Child,
    /// Its process id, for `/proc/<pid>`.
    pub pid: u32,
    /// `https://localhost:<port>` (the development certificate names localhost).
    pub url: String,
    /// Its data directory (signing key, development CA, database, `gateway.log`).
    pub data_dir: PathBuf,
    /// The media addresses it advertises (one per shard), from its banner.
    pub media: Vec<std::net::SocketAddr>,
    /// Lines it has written to stderr so far.
    log_lines: Arc<AtomicU64>,
}

impl SpawnedGateway {
    /// Starts `exe serve` on loopback in `data_dir` with `extra` arguments after the
    /// defaults (`--listen 127.0.0.1:0 --media-bind 127.0.0.1:0 --media-shards 1`),
    /// and waits until it listens.
    pub fn start(exe: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<SpawnedGateway> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--media-bind",
                "127.0.0.1:0",
                "--media-shards",
                "1",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_path = data_dir.join("gateway.log");
        let mut log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_lines = Arc::new(AtomicU64::new(0));
        let (banner_tx, banner_rx) = std::sync::mpsc::channel();
        let counted = log_lines.clone();
        std::thread::Builder::new().name("gateway-log".into()).spawn(move || {
            let mut banner_tx = Some(banner_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split(BANNER).nth(1)
                    && let Some(tx) = banner_tx.take()
                {
                    let _ = tx.send(rest.to_owned());
                }
                counted.fetch_add(1, Ordering::Relaxed);
                let _ = writeln!(log, "{line}");
            }
        })?;
        let mut gateway = SpawnedGateway {
            child,
            pid,
            url: String::new(),
            data_dir: data_dir.to_owned(),
            media: Vec::new(),
            log_lines,
        };
        let banner = match banner_rx.recv_timeout(START_TIMEOUT) {
            Ok(banner) => banner,
            Err(_) => {
                // Its stderr closed (it exited) or it is still not listening: either way it goes.
                let _ = gateway.child.kill();
                let status = gateway.child.wait().ok();
                anyhow::bail!(
                    "the gateway exited before listening or took over {} s (status {status:?}); its log is {}",
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                );
            }
        };
        // `<addr> (public URL <url>), media on udp <addr>, <addr> (one port per shard, ...)`
        let addr = banner.split_whitespace().next().unwrap_or_default();
        gateway.media = banner
            .split("media on udp ")
            .nth(1)
            .and_then(|rest| rest.split(" (").next())
            .map(|list| list.split(", ").filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .with_context(|| format!("reading the gateway's address from {addr:?}"))?;
        gateway.url = format!("https://localhost:{port}");
        Ok(gateway)
    }

    /// The log file (everything the gateway wrote to stderr).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("gateway.log")
    }

    /// Lines the gateway has logged so far.
    pub fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it: SIGTERM (a clean shutdown), then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        #[cfg(target_os = "linux")]
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SpawnedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
