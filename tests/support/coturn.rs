//! A real coturn (`turnserver`, the Debian package `coturn`) for the TURN tests, set up
//! as README's "TURN" section tells an operator: TURN REST API credentials
//! (`use-auth-secret`), a plain listener (UDP and TCP) and a TLS one. It runs on loopback
//! ports of its own, with its own configuration file and database in a temporary
//! directory (never /etc/turnserver.conf, never the system database), and is killed
//! with the test, failure or not.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::watch;

use super::process::ProcessTree;

/// How long coturn may take to open its listeners.
const START_WITHIN: Duration = Duration::from_secs(15);

pub struct Coturn {
    /// The `turnserver` process (killed on drop).
    _tree: ProcessTree,
    /// UDP and TCP port of the plain listener.
    pub port: u16,
    /// TCP port of the TLS listener.
    pub tls_port: u16,
    /// The `static-auth-secret` shared with the gateway.
    pub secret: String,
    /// The realm coturn answers with (credentials are checked against it).
    pub realm: String,
    /// The address it listens and relays on (and the only peer it relays to).
    pub ip: IpAddr,
    /// Every line coturn logged so far.
    log: watch::Receiver<Vec<String>>,
    /// Configuration, database and pid file.
    pub dir: PathBuf,
}

impl Coturn {
    /// Starts coturn on loopback with a certificate for `localhost` (its key beside it,
    /// PEM) and waits until its UDP, TCP and TLS listeners are open.
    pub async fn start(dir: &Path, cert: &Path, key: &Path) -> Coturn {
        Self::start_on(dir, cert, key, IpAddr::from([127, 0, 0, 1]), None).await
    }

    /// The same on `ip`, which is also the only peer it relays to (the gateway's media
    /// address), with TURN over TLS on `tls_port` if given (443, as on a real network).
    pub async fn start_on(dir: &Path, cert: &Path, key: &Path, ip: IpAddr, tls_port: Option<u16>) -> Coturn {
        let turnserver = "turnserver";
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {turnserver}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "`turnserver` is not installed: run ./scripts/install-deps.sh (Debian package coturn)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let secret = gatehouse::ids::random_code(32);
        let realm = "gatehouse.test".to_owned();
        let (port, tls_port) = (free_port(ip), tls_port.unwrap_or_else(|| free_port(ip)));
        let config = dir.join("turnserver.conf");
        std::fs::write(
            &config,
            format!(
                "listening-ip={ip}\n\
                 relay-ip={ip}\n\
                 listening-port={port}\n\
                 tls-listening-port={tls_port}\n\
                 cert={cert}\n\
                 pkey={key}\n\
                 realm={realm}\n\
                 use-auth-secret\n\
                 static-auth-secret={secret}\n\
                 # The gateway's media port is on loopback here; coturn refuses loopback peers by default.\n\
                 allow-loopback-peers\n\
                 # As README advises: relay to the gateway's media address and nowhere else.\n\
                 denied-peer-ip=0.0.0.0-255.255.255.255\n\
                 denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n\
                 allowed-peer-ip={ip}\n\
                 user-quota=12\n\
                 total-quota=1200\n\
                 no-dtls\n\
                 # One relay thread: with one per core, each binds its own UDP socket on the port\n\
                 # (SO_REUSEPORT) and a client's next datagram may reach another thread than its\n\
                 # first, which knows no nonce (438) while the threads start.\n\
                 relay-threads=1\n\
                 no-cli\n\
                 no-multicast-peers\n\
                 fingerprint\n\
                 no-software-attribute\n\
                 log-file=stdout\n\
                 simple-log\n\
                 verbose\n\
                 userdb={db}\n\
                 pidfile={pid}\n",
                cert = cert.display(),
                key = key.display(),
                db = dir.join("turndb").display(),
                pid = dir.join("turnserver.pid").display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(turnserver);
        cmd.arg("-c").arg(&config).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut tree = ProcessTree::spawn(cmd).expect("turnserver starts");
        let stdout = tree.child_mut().stdout.take().expect("piped stdout");
        let (tx, log) = watch::channel(Vec::new());
        // A thread, not a task: it blocks on the pipe and ends when coturn does.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                tx.send_modify(|lines| lines.push(line));
            }
        });
        let coturn = Coturn {
            _tree: tree,
            port,
            tls_port,
            secret,
            realm,
            ip,
            log,
            dir: dir.to_owned(),
        };
        for listener in [
            format!("UDP listener opened on: {ip}:{port}"),
            format!("TCP listener opened on : {ip}:{port}"),
            format!("TLS/TCP listener opened on : {ip}:{tls_port}"),
        ] {
            coturn
                .wait_for_log(&listener, START_WITHIN, |l| l.contains(&listener))
                .await;
        }
        coturn
    }

    /// The plain listener (UDP or TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The TLS listener.
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.tls_port)
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    /// Waits until a logged line satisfies `pred`; returns it. Panics with the log after `within`.
    pub async fn wait_for_log(&self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_lines(what, within, |lines| lines.iter().find(|l| pred(l)).cloned())
            .await
    }

    /// Waits until `pick` finds what it wants in the whole log so far; returns that. Panics
    /// with the log after `within`.
    pub async fn wait_for_lines<T>(&self, what: &str, within: Duration, pick: impl Fn(&[String]) -> Option<T>) -> T {
        let mut log = self.log.clone();
        let found = tokio::time::timeout(within, log.wait_for(|lines| pick(lines).is_some())).await;
        match found {
            Ok(Ok(lines)) => pick(&lines).expect("just matched"),
            _ => panic!(
                "coturn logged no {what} within {within:?}; its log:\n{}",
                self.log().join("\n")
            ),
        }
    }
}

/// A port on `ip` free for both UDP and TCP now (coturn takes both on its plain port).
fn free_port(ip: IpAddr) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}
