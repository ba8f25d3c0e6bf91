//! A webhook receiver for Gatehouse's appointment events: verifies each request's
//! signature and freshness, drops repeats by their idempotency key, and prints the event.
//! Where an e-mail or SMS provider would be called, this prints.
//!
//! ```text
//! GATEHOUSE_WEBHOOK_SECRET=... cargo run --example webhook_receiver -- --listen 127.0.0.1:9000
//! ```
//! with, in the gateway's webhooks file:
//! ```toml
//! [[endpoint]]
//! name = "printer"
//! url = "http://127.0.0.1:9000/"
//! secret = "..."   # the same secret, at least 16 bytes
//! ```
//!
//! The rules (docs/PROTOCOL.md §15.5): refuse (401) a request whose `Gatehouse-Signature`
//! is not `v1=` HMAC-SHA256 of `"{Gatehouse-Timestamp}.{raw body}"` under the secret, or
//! whose timestamp is more than 5 minutes from now (a replay); answer 2xx only once the
//! event is safely handled, since anything else is retried; the same `Idempotency-Key`
//! can arrive again (at-least-once), so handle each key once.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use gatehouse::webhooks::{DEFAULT_TOLERANCE, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};

#[derive(Parser)]
struct Args {
    /// Address to listen on (plain HTTP: put it behind TLS, or keep it on the gateway's host).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The endpoint's shared secret.
    #[arg(long, env = "GATEHOUSE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
}

/// Keys seen lately (a real receiver keeps them in its database, as long as retries last).
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

const REMEMBERED: usize = 100_000;

struct Receiver {
    secret: Vec<u8>,
    seen: Mutex<Seen>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if let Err(e) = verify(
        &r.secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now,
        DEFAULT_TOLERANCE,
    ) {
        eprintln!("refused: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let key = header(IDEMPOTENCY_HEADER).to_owned();
    {
        let mut seen = r.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.set.insert(key.clone()) {
            eprintln!("repeat of {key}: already handled");
            return StatusCode::OK;
        }
        seen.order.push_back(key);
        if seen.order.len() > REMEMBERED
            && let Some(old) = seen.order.pop_front()
        {
            seen.set.remove(&old);
        }
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let data = &event["data"];
    println!(
        "{} {} {} guest={:?} contact={:?} starts_at={} join_url={}",
        event["created_at"].as_str().unwrap_or("?"),
        event["type"].as_str().unwrap_or("?"),
        data["appointment_id"].as_str().unwrap_or("?"),
        data["guest_name"].as_str().unwrap_or(""),
        data["guest_contact"].as_str().unwrap_or(""),
        data["starts_at"].as_str().unwrap_or("on demand"),
        data["join_url"].as_str().unwrap_or("-"),
    );
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.secret.len() >= 16, "the secret must be at least 16 bytes");
    let state = Arc::new(Receiver {
        secret: args.secret.into_bytes(),
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route("/", post(receive))
        .route("/hook", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("listening on http://{}/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
