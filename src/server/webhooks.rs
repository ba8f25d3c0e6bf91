//! Webhook delivery: one worker per configured endpoint posts the outbox's due events
//! (`store::webhooks`) and records each attempt; and `GET /api/v1/webhooks/deliveries`
//! for admins to see what was delivered.
//!
//! A worker is alone with its endpoint: a slow or dead receiver delays only its own
//! deliveries (each request has a timeout, and the gateway never waits for a worker).
//! When the receiver looks down (no answer, 5xx, 429) the worker also pauses as a whole,
//! with the same backoff, so a dead endpoint gets one request per backoff step rather
//! than one per pending event; it logs the first failure and the recovery, not each retry.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::appointments::{instant, query_get, query_pairs, require_admin};
use super::auth::Staff;
use super::error::ApiError;
use crate::ids::now_ms;
use crate::store::webhooks::{DueDelivery, KEEP_DELIVERED_MS};
use crate::webhooks::Webhooks;
#[cfg(feature = "webhooks")]
use crate::{
    store::webhooks::Attempt,
    webhooks::{
        ATTEMPT_HEADER, EVENT_HEADER, Endpoint, IDEMPOTENCY_HEADER, RetryPolicy, SIGNATURE_HEADER, TIMESTAMP_HEADER,
        sign,
    },
};

/// Deliveries one worker takes from the store at a time.
#[cfg(feature = "webhooks")]
const BATCH: u32 = 32;
/// How often old, settled events are deleted.
const PRUNE_PERIOD: Duration = Duration::from_secs(3600);

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/webhooks/deliveries", get(list_deliveries))
}

/// Mirrors the configured endpoints in the store (before any event can be written).
pub async fn sync_endpoints(store: &Arc<crate::store::Store>, webhooks: &Webhooks) -> anyhow::Result<()> {
    let endpoints: Vec<(String, Option<String>)> = webhooks
        .endpoints
        .iter()
        .map(|e| (e.name.clone(), e.organization.clone()))
        .collect();
    store
        .run(move |s| s.sync_webhook_endpoints(&endpoints, now_ms()))
        .await
        .map_err(|e| anyhow::anyhow!("syncing webhook endpoints: {e}"))
}

/// Starts a worker per endpoint and the pruner; they stop at shutdown.
#[cfg(not(feature = "webhooks"))]
pub fn spawn(state: Arc<AppState>, webhooks: Webhooks) -> anyhow::Result<()> {
    anyhow::ensure!(
        webhooks.endpoints.is_empty(),
        "this gatehouse was built without webhook delivery (the `webhooks` feature)"
    );
    tokio::spawn(pruner(state));
    Ok(())
}

/// Starts a worker per endpoint and the pruner; they stop at shutdown.
#[cfg(feature = "webhooks")]
pub fn spawn(state: Arc<AppState>, webhooks: Webhooks) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(webhooks.retry.timeout_ms))
        .connect_timeout(Duration::from_millis(webhooks.retry.timeout_ms))
        // A receiver's redirect is not followed: the signature was made for its URL.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?;
    for endpoint in webhooks.endpoints {
        tracing::info!(endpoint = %endpoint.name, url = %endpoint.url, "webhook endpoint");
        tokio::spawn(worker(state.clone(), http.clone(), endpoint, webhooks.retry));
    }
    tokio::spawn(pruner(state));
    Ok(())
}

async fn pruner(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    let mut every = tokio::time::interval(PRUNE_PERIOD);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let before = now_ms().saturating_sub(KEEP_DELIVERED_MS);
        match state.store.run(move |s| s.prune_webhook_events(before)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "old webhook events pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning webhook events failed"),
        }
    }
}

/// Why an attempt failed, and whether the receiver as a whole looks down.
#[cfg(feature = "webhooks")]
struct Failure {
    error: String,
    endpoint_down: bool,
}

#[cfg(feature = "webhooks")]
async fn worker(state: Arc<AppState>, http: reqwest::Client, endpoint: Endpoint, retry: RetryPolicy) {
    let mut shutdown = state.shutdown.clone();
    let poll = Duration::from_millis(retry.poll_ms);
    let public_url = state.config.public_url();
    // Failures in a row while the endpoint looks down; 0 when it is healthy.
    let mut down_streak: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let name = endpoint.name.clone();
        let due = match state.store.run(move |s| s.due_deliveries(&name, now_ms(), BATCH)).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.name, error = %e, "reading webhook deliveries failed");
                Vec::new()
            }
        };
        let mut pause = poll;
        for d in due {
            let outcome = tokio::select! {
                r = attempt(&http, &endpoint, &public_url, &d) => r,
                _ = shutdown.changed() => return,
            };
            let now = now_ms();
            let failures = d.attempts.saturating_add(1);
            let record = match &outcome {
                Ok(()) => Attempt::Delivered,
                Err(f) => {
                    let age = now.saturating_sub(d.created_at_ms);
                    if age < retry.give_up_after_secs.saturating_mul(1000) {
                        let delay = retry.delay(failures, rand::random::<f64>());
                        Attempt::Retry {
                            error: f.error.clone(),
                            next_at_ms: now + delay.as_millis() as u64,
                        }
                    } else {
                        tracing::warn!(endpoint = %endpoint.name, event_id = %d.event_id, attempts = failures, error = %f.error, "webhook event given up");
                        Attempt::GiveUp { error: f.error.clone() }
                    }
                }
            };
            let (name, seq) = (endpoint.name.clone(), d.seq);
            if let Err(e) = state
                .store
                .run(move |s| s.delivery_attempted(&name, seq, &record, now))
                .await
            {
                tracing::warn!(endpoint = %endpoint.name, event_id = %d.event_id, error = %e, "recording a webhook attempt failed");
            }
            match outcome {
                Ok(()) => {
                    if down_streak > 0 {
                        tracing::info!(endpoint = %endpoint.name, "webhook endpoint answers again");
                    }
                    down_streak = 0;
                }
                Err(f) if f.endpoint_down => {
                    if down_streak == 0 {
                        tracing::warn!(endpoint = %endpoint.name, event_id = %d.event_id, error = %f.error, "webhook endpoint failing; retrying with backoff");
                    }
                    down_streak = down_streak.saturating_add(1);
                    pause = retry.delay(down_streak, rand::random::<f64>()).max(poll);
                    break;
                }
                Err(f) => {
                    tracing::debug!(endpoint = %endpoint.name, event_id = %d.event_id, error = %f.error, "webhook refused by its receiver");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The body sent for `d`: the stored event with `data.join_url` while the guest's link works.
pub fn body_of(d: &DueDelivery, public_url: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    if let (Some(code), Some(data)) = (&d.join_code, body.get_mut("data").and_then(Value::as_object_mut)) {
        data.insert("join_url".into(), Value::String(format!("{public_url}/j/{code}")));
    }
    serde_json::to_vec(&body).expect("a JSON value serialises")
}

#[cfg(feature = "webhooks")]
async fn attempt(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    public_url: &str,
    d: &DueDelivery,
) -> Result<(), Failure> {
    let body = body_of(d, public_url);
    let ts = now_ms() / 1000;
    let resp = http
        .post(endpoint.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, sign(&endpoint.secret, ts, &body))
        .header(IDEMPOTENCY_HEADER, &d.event_id)
        .header(EVENT_HEADER, &d.event_type)
        .header(ATTEMPT_HEADER, (d.attempts + 1).to_string())
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status().as_u16();
            Err(Failure {
                error: format!("HTTP {status}"),
                endpoint_down: status >= 500 || status == 429,
            })
        }
        Err(e) => Err(Failure {
            // Without the URL (it is logged once at start; it may carry a token).
            error: e.without_url().to_string(),
            endpoint_down: true,
        }),
    }
}

/// One delivery, as `GET /api/v1/webhooks/deliveries` lists it.
#[derive(Debug, Serialize)]
struct DeliveryView {
    endpoint: String,
    event_id: String,
    event_type: String,
    attempts: u32,
    /// `pending`, `delivered` or `failed` (given up).
    status: &'static str,
    delivered_at: Option<String>,
    failed_at: Option<String>,
    last_error: Option<String>,
}

/// The organisation's latest deliveries (admins; `?limit=`, default 100, at most 1000).
async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    require_admin(&staff)?;
    let q = query_pairs(&q);
    let limit = query_get(&q, "limit")
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let org = staff.org.clone();
    let rows = state.store.run(move |s| s.webhook_deliveries(&org, limit)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| DeliveryView {
                status: match (r.delivered_at_ms, r.failed_at_ms) {
                    (Some(_), _) => "delivered",
                    (None, Some(_)) => "failed",
                    (None, None) => "pending",
                },
                delivered_at: r.delivered_at_ms.map(instant),
                failed_at: r.failed_at_ms.map(instant),
                endpoint: r.endpoint,
                event_id: r.event_id,
                event_type: r.event_type,
                attempts: r.attempts,
                last_error: r.last_error,
            })
            .collect(),
    ))
}
