//! Test support: a real gateway on loopback with real TLS, and thin clients; `sfu`:
//! SDK peers for an in-process media plane.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gatehouse::config::Config;
use gatehouse::server::Running;
use gatehouse_signaling::protocol::{ClientMessage, ServerMessage};
use gatehouse_signaling::token::StaffRole;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[cfg(target_os = "linux")]
pub mod browser;
#[cfg(target_os = "linux")]
pub mod coturn;
pub mod delay_relay;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod process;
pub mod sfu;

/// How long any single expected event may take.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Option<Running>,
    pub data_dir: std::path::PathBuf,
    pub base: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub http: reqwest::Client,
}

/// A TLS client configuration that trusts the CA certificates in `ca_pem`.
pub fn tls_trusting(ca_pem: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTPS client that trusts the CA certificates in `ca_pem`.
pub fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_trusting(ca_pem))
        .build()
        .unwrap()
}

/// A request to `base` with an optional bearer token and JSON body; returns (status, JSON,
/// or the text as a JSON string when the answer is not JSON).
pub async fn http_call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-test-{tag}-{}", gatehouse::ids::random_code(10)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    Config::resolve(Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        media_bind: Some("127.0.0.1:0".parse().unwrap()),
        media_shards: Some(1),
        data_dir: Some(data_dir.to_owned()),
        redeem_per_minute: Some(10_000),
        ..Config::default()
    })
    .unwrap()
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = temp_dir("srv");
        Self::start_with(test_config(&dir)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        // The gateway's logs in the test output, filtered by RUST_LOG (e.g. `gatehouse=debug`).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let data_dir = config.data_dir();
        let running = gatehouse::server::start(config).await.expect("server starts");
        let ca = std::fs::read(running.ca_file.as_ref().expect("dev CA")).unwrap();
        let tls = Arc::new(tls_trusting(&ca));
        let http = https_client(&ca);
        let base = format!("https://localhost:{}", running.addr.port());
        TestServer {
            running: Some(running),
            data_dir,
            base,
            tls,
            http,
        }
    }

    pub fn state(&self) -> &gatehouse::server::AppState {
        &self.running.as_ref().unwrap().state
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// SDK options for this server: its dev CA trusted, media on loopback.
    pub fn sdk_options(&self, token: &str) -> gatehouse_sdk::ConnectOptions {
        let mut o = gatehouse_sdk::ConnectOptions::new(self.base.clone(), token);
        o.ca_pem = Some(std::fs::read_to_string(self.running.as_ref().unwrap().ca_file.as_ref().unwrap()).unwrap());
        o.media = gatehouse_sdk::MediaOptions {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..Default::default()
        };
        o
    }

    pub fn staff_token(&self, sub: &str, role: StaffRole) -> String {
        self.staff_token_in(sub, "default", role)
    }

    pub fn staff_token_in(&self, sub: &str, org: &str, role: StaffRole) -> String {
        let now = gatehouse::ids::now_ms() / 1000;
        self.state()
            .keys
            .mint_staff(sub, &sub.to_uppercase(), org, role, now, 3600)
            .unwrap()
    }

    /// A request with an optional bearer token and JSON body; returns (status, JSON).
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        http_call(&self.http, &self.base, method, path, token, body).await
    }

    /// Creates a meeting as `token`'s staff member; returns its JSON.
    pub async fn create_meeting(&self, token: &str, settings: Value) -> Value {
        let (status, body) = self.call("POST", "/api/v1/meetings", Some(token), Some(settings)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn create_link(&self, token: &str, meeting_id: &str, body: Value) -> Value {
        let (status, body) = self
            .call(
                "POST",
                &format!("/api/v1/meetings/{meeting_id}/links"),
                Some(token),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Redeems a link; returns the guest token.
    pub async fn redeem(&self, code: &str, name: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                &format!("/api/v1/links/{code}/redeem"),
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn ws(&self) -> Ws {
        self.try_ws().await.expect("websocket connects")
    }

    /// Opens the signaling socket; a refusal gives its HTTP status and JSON body.
    pub async fn try_ws(&self) -> Result<Ws, (u16, Value)> {
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        match tokio_tungstenite::connect_async_tls_with_config(
            format!("wss://localhost:{}/ws", self.base.rsplit(':').next().unwrap()),
            None,
            false,
            Some(connector),
        )
        .await
        {
            Ok((stream, _)) => Ok(Ws {
                stream,
                close_code: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err((
                    response.status().as_u16(),
                    serde_json::from_slice(body).unwrap_or(Value::Null),
                ))
            }
            Err(e) => panic!("websocket connects or is refused over HTTP: {e}"),
        }
    }

    /// Connects and sends `join`; returns the socket and the `joined` frame.
    pub async fn join(&self, token: &str, meeting_id: Option<&str>) -> Ws {
        let mut ws = self.ws().await;
        ws.send(&ClientMessage::Join {
            protocol: 1,
            token: token.into(),
            meeting_id: meeting_id.map(Into::into),
        })
        .await;
        ws
    }

    /// Waits until `cond` holds, checking every 20 ms, for at most `EVENT_TIMEOUT`.
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while !cond(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// SDK events: the next lobby snapshot with someone in it (staff side).
pub async fn next_waiting(events: &mut gatehouse_sdk::Events) -> Vec<gatehouse_signaling::protocol::LobbyEntry> {
    events
        .wait_for(EVENT_TIMEOUT, |e| match e {
            gatehouse_sdk::Event::LobbyChanged { entries } if !entries.is_empty() => Some(entries),
            _ => None,
        })
        .await
        .expect("someone waits in the lobby")
}

/// SDK events: waits for `admitted`.
pub async fn sdk_admitted(events: &mut gatehouse_sdk::Events) {
    events
        .wait_for(EVENT_TIMEOUT, |e| {
            matches!(e, gatehouse_sdk::Event::Admitted { .. }).then_some(())
        })
        .await
        .expect("admitted");
}

pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// The code of the server's close frame, once one has been read.
    pub close_code: Option<u16>,
}

impl Ws {
    pub async fn send(&mut self, msg: &ClientMessage) {
        self.send_raw(&serde_json::to_string(msg).unwrap()).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("frame sent");
    }

    /// Sends a frame; `false` if the server has already closed the connection.
    pub async fn try_send_raw(&mut self, text: &str) -> bool {
        self.stream.send(Message::text(text)).await.is_ok()
    }

    /// The next server frame, or `None` when the server closed the socket.
    pub async fn next(&mut self) -> Option<ServerMessage> {
        loop {
            let msg = tokio::time::timeout(EVENT_TIMEOUT, self.stream.next())
                .await
                .expect("a frame or close in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server frames are protocol messages"));
                }
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = frame.map(|f| f.code.into());
                    return None;
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Skips frames until one matches; panics on close or timeout.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        loop {
            match self.next().await {
                Some(m) if pred(&m) => return m,
                Some(_) => continue,
                None => panic!("socket closed while waiting for {what}"),
            }
        }
    }

    /// The next `error` frame's code (skipping other frames).
    pub async fn expect_error(&mut self) -> gatehouse_signaling::ErrorCode {
        match self
            .expect("an error frame", |m| matches!(m, ServerMessage::Error { .. }))
            .await
        {
            ServerMessage::Error { code, .. } => code,
            _ => unreachable!(),
        }
    }

    /// Reads until the server closes the socket; returns every frame seen.
    pub async fn until_closed(&mut self) -> Vec<ServerMessage> {
        let mut seen = Vec::new();
        while let Some(m) = self.next().await {
            seen.push(m);
        }
        seen
    }

    /// Closes from the client side, abruptly (no `leave`).
    pub async fn drop_connection(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// The connection dies as a network failure would end it: the TCP connection is
    /// closed under the WebSocket, with no `leave`, no Close frame and no TLS close_notify.
    pub fn cut(self) {
        drop(self.stream);
    }
}
