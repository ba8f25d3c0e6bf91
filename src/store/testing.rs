//! A throwaway PostgreSQL for tests (the store's own and `tests/cluster.rs`): `initdb` in a
//! temporary directory, `postgres` on a free loopback port, stopped and removed on drop,
//! also when the test fails. Not used by the gateway itself.
//!
//! PostgreSQL refuses to run as root, so as root (CI) the cluster runs as the `postgres`
//! user the Debian package creates (else `nobody`). The server is also told to die with the
//! thread that started it (`PR_SET_PDEATHSIG`), so a test process killed outright leaves no
//! server behind.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that turns "PostgreSQL is not installed" from a skip into a
/// failure (scripts/test.sh sets it).
pub const REQUIRE_VAR: &str = "GATEHOUSE_REQUIRE_POSTGRES";

/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running throwaway cluster.
pub struct TestPostgres {
    dir: PathBuf,
    child: Child,
    port: u16,
    /// Where `postgres` is, and whom it runs as (for a restart).
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// Whether it also speaks TLS (its certificate and key in `dir`).
    tls: bool,
}

/// Where `initdb` and `postgres` are: on `PATH`, or in Debian's versioned directory
/// (the `postgresql` package does not put them on `PATH`).
fn bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

/// The user to run the server as: ourselves, unless we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: a NUL-terminated name; the returned record is read at once, before any
        // other passwd call on this thread.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null, as getpwnam returned it.
            let pw = unsafe { &*pw };
            return Some((pw.pw_uid, pw.pw_gid));
        }
    }
    panic!("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn command(bin: &Path, name: &str, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join(name));
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Starts `postgres` on `dir/data`, logging to `dir/postgres.log` (appended).
fn spawn_server(bin: &Path, user: Option<(u32, u32)>, dir: &Path, port: u16, tls: bool) -> Child {
    let log_path = dir.join("postgres.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("a log file");
    if let Some((uid, gid)) = user {
        let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
    }
    let mut cmd = command(bin, "postgres", user);
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        // A throwaway cluster: nothing in it must survive a crash of the machine.
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]);
    if tls {
        cmd.args(["-c", "ssl=on", "-c"])
            .arg(format!("ssl_cert_file={}", dir.join("server.crt").display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("postgres starts")
}

impl TestPostgres {
    /// Starts a cluster; `None`, after saying so, when PostgreSQL is not installed and
    /// [`REQUIRE_VAR`] is unset (with it set, its absence fails the test).
    pub fn start() -> Option<TestPostgres> {
        TestPostgres::start_with(None)
    }

    /// [`start`](Self::start), the server also speaking TLS with `cert` (a PEM chain) and
    /// `key` (copied into its directory, the key readable by the server's user only, as
    /// PostgreSQL demands). Plaintext connections are still accepted.
    pub fn start_with_tls(cert: &Path, key: &Path) -> Option<TestPostgres> {
        TestPostgres::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Option<TestPostgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os(REQUIRE_VAR).is_none(),
                "{REQUIRE_VAR} is set but PostgreSQL (initdb, postgres) is not installed: run ./scripts/install-deps.sh"
            );
            eprintln!("SKIPPED: PostgreSQL is not installed (./scripts/install-deps.sh installs it)");
            return None;
        };
        let user = run_as();
        let dir = std::env::temp_dir().join(format!("gatehouse-pg-{}", crate::ids::random_code(12)));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("the directory given to the server's user");
        }
        let data = dir.join("data");
        let initdb = command(&bin, "initdb", user)
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "gatehouse",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        if !initdb.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        }
        let port = free_port();
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            for (from, to, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
                let to = dir.join(to);
                std::fs::copy(from, &to).expect("the server's certificate or key copied");
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("its mode set");
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid)).expect("given to the server's user");
                }
            }
        }
        let child = spawn_server(&bin, user, &dir, port, tls.is_some());
        let pg = TestPostgres {
            dir,
            child,
            port,
            bin,
            user,
            tls: tls.is_some(),
        };
        pg.wait_ready();
        Some(pg)
    }

    /// Stops the server (fast shutdown: its clients' connections are cut) and starts it again
    /// on the same port and data, as an operator's restart would.
    pub fn restart(&mut self) {
        self.stop(libc::SIGINT);
        self.child = spawn_server(&self.bin, self.user, &self.dir, self.port, self.tls);
        self.wait_ready();
    }

    /// Signals the server and waits for it to exit (killed if it takes over 10 s).
    fn stop(&mut self, signal: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, signal) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Waits until the server accepts a connection (from a thread of its own: the blocking
    /// client must not run inside a test's async runtime).
    fn wait_ready(&self) {
        let url = self.url();
        let deadline = Instant::now() + READY_WITHIN;
        let ready = std::thread::scope(|s| {
            s.spawn(|| {
                loop {
                    match postgres::Client::connect(&url, postgres::NoTls) {
                        Ok(_) => return Ok(()),
                        Err(e) if Instant::now() > deadline => return Err(e),
                        Err(_) => std::thread::sleep(Duration::from_millis(25)),
                    }
                }
            })
            .join()
            .expect("the readiness probe does not panic")
        });
        if let Err(e) = ready {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            panic!("PostgreSQL did not accept connections within {READY_WITHIN:?}: {e}\n{log}");
        }
    }

    /// A URL of the cluster's `postgres` database, as user `gatehouse` (trusted).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A URL of database `name` of the cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://gatehouse@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster ends its backends and exits; nothing to keep.
        self.stop(libc::SIGQUIT);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
