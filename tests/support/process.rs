//! Processes a test starts (Node, and the browser Node launches) end with the test,
//! also when the test fails or panics.
//!
//! A browser driver launches its browser detached, in a process group of its own, so
//! killing the driver, or the driver's group, leaves the browser running. Every process
//! of a tree is therefore marked instead: the first child gets `GATEHOUSE_TEST_TREE=<mark>`
//! in its environment, and the driver, the browser and the browser's helpers all inherit
//! it. Ending the tree kills every process whose environment carries the mark until none
//! is left, then waits until each is gone from the process table: Node is reaped here,
//! the rest by their parents or, once orphaned, by init.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The environment variable that marks every process of one tree.
pub const MARK_VAR: &str = "GATEHOUSE_TEST_TREE";

/// How long ending a tree may take before the test is told that something survived
/// (init reaps orphans every few seconds on these machines, not at once).
const END_WITHIN: Duration = Duration::from_secs(30);

/// A child process and everything it starts; all of it is ended on drop.
pub struct ProcessTree {
    /// The value of `MARK_VAR` in this tree.
    mark: String,
    /// The first process (Node), reaped through this handle.
    child: Child,
}

/// A process of a tree, as seen in /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// The kernel's short name (`node`, `chromium`, `firefox-esr`, ...).
    pub comm: String,
}

impl ProcessTree {
    /// Spawns `cmd` as the root of a new marked tree.
    pub fn spawn(mut cmd: Command) -> std::io::Result<ProcessTree> {
        let mark = format!("{}-{}", std::process::id(), gatehouse::ids::random_code(12));
        cmd.env(MARK_VAR, &mark);
        let child = cmd.spawn()?;
        Ok(ProcessTree { mark, child })
    }

    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// The root's handle, to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Every live process of the tree now.
    pub fn processes(&self) -> Vec<Proc> {
        marked(&self.mark)
    }

    /// Waits for the root to exit by itself (the tree's other processes are ended on drop).
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    /// Kills every process of the tree and waits until all are gone, zombies included;
    /// returns what was killed. Panics (unless already unwinding) if anything survives.
    pub fn end(&mut self) -> Vec<Proc> {
        let deadline = Instant::now() + END_WITHIN;
        let mut killed: Vec<Proc> = Vec::new();
        let mut seen = BTreeSet::new();
        // A process may fork while we kill its parent; its child inherits the mark, so
        // scanning until the scan comes back empty catches it. A dying process stops
        // showing its environment once it is a zombie, which ends the loop.
        loop {
            let live = marked(&self.mark);
            if live.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in live {
                // SAFETY: kill(2) with a pid read from /proc and a constant signal.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
                if seen.insert(p.pid) {
                    killed.push(p);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Polls the process table, bounded: there is no event for "init reaped an orphan".
        while killed.iter().any(|p| exists(p.pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<_> = killed.iter().filter(|p| exists(p.pid)).collect();
        if !std::thread::panicking() {
            assert!(left.is_empty(), "processes of tree {} survived: {left:?}", self.mark);
        }
        killed
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.end();
    }
}

/// Live processes whose environment carries `MARK_VAR=mark` (zombies show none).
pub fn marked(mark: &str) -> Vec<Proc> {
    let needle = format!("{MARK_VAR}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|var| var == needle.as_bytes()) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            out.push(Proc {
                pid,
                comm: comm.trim_end().to_owned(),
            });
        }
    }
    out
}

/// Whether any process with this pid exists, zombies included.
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Reads a child's piped output line by line on a thread of its own, copying every line
/// to `log` (kept for a failure's post-mortem; `std::io::sink()` for none), and returns
/// the first line containing `marker` (a server's "ready" banner), or `None` if none
/// came within `timeout`. The thread keeps draining after that, so the child never
/// blocks on a full pipe.
pub fn first_line_with(
    output: impl std::io::Read + Send + 'static,
    mut log: impl std::io::Write + Send + 'static,
    marker: &'static str,
    timeout: Duration,
) -> Option<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if line.contains(marker) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}
