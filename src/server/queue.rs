//! The live queue, pushed: staff subscriptions over the signaling WebSocket
//! (`subscribe_queue`) and waiting guests' places (`queue_position`).
//!
//! Nothing here polls. The store publishes every committed change the queue shows (a
//! participation event, an appointment transition; `Store::queue_changes`), and two kinds
//! of listener turn them into frames: each staff subscription sends what it covers
//! (`queue_meeting`, `queue_appointment`), and one task for the whole gateway
//! ([`spawn_places`]) recomputes the guest's queue whose appointment changed and tells
//! every guest waiting in it their place and estimated wait (the pure rules are in
//! [`gatehouse_signaling::queue`]).
//!
//! In a cluster the queue is the organisation's, whatever node a meeting runs on: the store
//! republishes the other nodes' committed changes here (`store::listen`), and a meeting's
//! row is asked of the node that runs it (`Router::queue_row`, through the relay).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use gatehouse_signaling::protocol::{
    ClientMessage, MeetingId, PROTOCOL_VERSION, QueuedMeeting, ServerMessage, parse_client_message,
};
use gatehouse_signaling::queue::{QueueScope, places};
use gatehouse_signaling::ratelimit::TokenBucket;
use gatehouse_signaling::token::{Identity, StaffClaims};
use gatehouse_signaling::{Error, ErrorCode};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

use super::AppState;
use super::appointments::{appointment_view, day_window, scope};
use super::auth::can_manage;
use super::live::{Command, Outbox};
use crate::ids::now_ms;
use crate::store::appointments::{ChangedAppointment, QueueChange};

/// A `subscribe_queue` frame, read as a connection's first.
pub struct Subscribe {
    pub token: String,
    pub department_id: Option<String>,
    pub tz: Option<String>,
}

impl Subscribe {
    /// The subscription in `msg`, checking its protocol version.
    pub fn from_frame(msg: ClientMessage) -> Result<Option<Subscribe>, Error> {
        let ClientMessage::SubscribeQueue {
            protocol,
            token,
            department_id,
            tz,
        } = msg
        else {
            return Ok(None);
        };
        if protocol != PROTOCOL_VERSION {
            return Err(Error::new(
                ErrorCode::UnsupportedProtocol,
                format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
            ));
        }
        Ok(Some(Subscribe {
            token,
            department_id,
            tz,
        }))
    }
}

/// A staff member's subscription, once checked.
struct Subscription {
    staff: StaffClaims,
    scope: QueueScope,
    from_ms: u64,
    to_ms: u64,
}

/// A meeting's row of the queue, as a staff member may see it.
pub(crate) enum Row {
    /// Live (someone in its call or lobby, or a seat held), and theirs to manage.
    Shown(QueuedMeeting),
    /// Not live, unknown, or not theirs to manage.
    Hidden,
    /// Live on another node of the cluster, which could not be asked now: the view keeps
    /// what it showed.
    Unknown,
}

/// One live meeting as the queue shows it, if `staff` may manage it. Who is in the call and
/// who waits are asked of the meeting's task: here if it runs here, else (in a cluster) on
/// the node it is placed on, through the relay (`Router::queue_row`).
pub(crate) async fn queued_meeting(state: &AppState, staff: &StaffClaims, meeting_id: &str) -> Result<Row, Error> {
    let Some(meeting) = ({
        let id = meeting_id.to_owned();
        state.store.run(move |s| s.meeting(&id)).await?
    }) else {
        return Ok(Row::Hidden);
    };
    if meeting.organization != staff.org || can_manage(staff, &meeting).is_err() {
        return Ok(Row::Hidden);
    }
    let (reply, answer) = oneshot::channel();
    let rows = if state.live.send_if_live(meeting_id, Command::Queue { reply }).await {
        answer.await.ok()
    } else {
        match state.router.queue_row(meeting_id).await {
            Ok(row) => row.map(|r| (r.in_call, r.lobby)),
            Err(e) => {
                tracing::info!(%meeting_id, error = %e.message, "a meeting's queue row could not be asked of its node");
                return Ok(Row::Unknown);
            }
        }
    };
    Ok(match rows {
        Some((in_call, lobby)) => Row::Shown(QueuedMeeting {
            meeting_id: meeting_id.to_owned(),
            title: meeting.settings.title,
            in_call,
            lobby,
        }),
        None => Row::Hidden,
    })
}

/// The meetings that may be live: those with a task here, and in a cluster those with
/// someone's attendance open in the shared store (live on whichever node runs them).
async fn maybe_live(state: &AppState, org: &str) -> Result<Vec<String>, Error> {
    let mut ids = state.live.live_ids();
    if state.router.node_id().is_some() {
        let org = org.to_owned();
        for id in state.store.run(move |s| s.attended_meetings(&org)).await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// Every live meeting `staff` may manage, longest wait first (`GET /api/v1/queue`, `queue_snapshot`),
/// whatever node of a cluster it runs on (one whose node cannot be asked now is left out).
pub(crate) async fn live_queue(state: &AppState, staff: &StaffClaims) -> Result<Vec<QueuedMeeting>, Error> {
    let mut meetings = Vec::new();
    for id in maybe_live(state, &staff.org).await? {
        if let Row::Shown(m) = queued_meeting(state, staff, &id).await? {
            meetings.push(m);
        }
    }
    // Longest wait first: the queue is worked from the top.
    meetings.sort_by_key(|m| m.lobby.first().map_or(u64::MAX, |e| e.waiting_since_ms));
    Ok(meetings)
}

async fn snapshot(state: &AppState, sub: &Subscription) -> Result<ServerMessage, Error> {
    let meetings = live_queue(state, &sub.staff).await?;
    let (org, d, s, from, to) = (
        sub.scope.organization.clone(),
        sub.scope.department_id.clone(),
        sub.scope.staff.clone(),
        sub.from_ms,
        sub.to_ms,
    );
    let list = state
        .store
        .run(move |st| st.appointments_between(&org, d.as_deref(), s.as_deref(), from, to))
        .await?;
    let mut appointments = Vec::with_capacity(list.len());
    for a in list {
        appointments.push(appointment_view(state, a, true, false).await.map_err(|e| e.0)?);
    }
    Ok(ServerMessage::QueueSnapshot {
        now_ms: now_ms(),
        from_ms: sub.from_ms,
        to_ms: sub.to_ms,
        meetings,
        appointments,
    })
}

/// Checks a subscription: staff only, a department they are in (admins any).
async fn check(state: &AppState, s: Subscribe) -> Result<Subscription, Error> {
    let staff = match state.keys.verify(&s.token, now_ms() / 1000)? {
        Identity::Staff(staff) => staff,
        Identity::Guest(_) => {
            return Err(Error::new(
                ErrorCode::Forbidden,
                "only staff may subscribe to the queue",
            ));
        }
    };
    let mut q = Vec::new();
    if let Some(d) = &s.department_id {
        q.push(("department_id".to_owned(), d.clone()));
    }
    let (department_id, only_staff) = scope(state, &staff, &q).await.map_err(|e| e.0)?;
    let (from_ms, to_ms) = day_window(s.tz.as_deref(), None, now_ms()).map_err(|e| e.0)?;
    Ok(Subscription {
        scope: QueueScope {
            organization: staff.org.clone(),
            department_id,
            staff: only_staff,
        },
        staff,
        from_ms,
        to_ms,
    })
}

/// What one change means to a subscriber: up to two frames, `queue_appointment` before
/// `queue_meeting`.
async fn frames_for(state: &AppState, sub: &Subscription, change: QueueChange) -> Result<Vec<ServerMessage>, Error> {
    // The appointment first, then its meeting: one order a client can rely on.
    let mut out = Vec::new();
    if let Some(ChangedAppointment { record, transitions }) = change.appointment {
        let at = record.machine.starts_at_ms.unwrap_or(record.created_at_ms);
        let covered = sub
            .scope
            .covers(&record.organization, record.department_id.as_deref(), &record.staff)
            && (sub.from_ms..sub.to_ms).contains(&at);
        if covered {
            let view = appointment_view(state, record, true, false).await.map_err(|e| e.0)?;
            out.push(ServerMessage::QueueAppointment {
                now_ms: now_ms(),
                appointment: Box::new(view),
                transitions,
            });
        }
    }
    // A meeting still live for a moment after its last person left is shown as gone.
    let meeting = match queued_meeting(state, &sub.staff, &change.meeting_id).await? {
        Row::Shown(m) => Some(m).filter(|m| m.in_call > 0 || !m.lobby.is_empty()),
        Row::Hidden => None,
        // Its node could not be asked: the console keeps the row it has (the next change,
        // or a snapshot, brings it up to date).
        Row::Unknown => return Ok(out),
    };
    // A meeting the subscriber may not manage is not named; one it may, even when it went idle.
    let manages = match &meeting {
        Some(_) => true,
        None => {
            let id = change.meeting_id.clone();
            state
                .store
                .run(move |s| s.meeting(&id))
                .await?
                .is_some_and(|m| m.organization == sub.staff.org && can_manage(&sub.staff, &m).is_ok())
        }
    };
    if manages {
        out.push(ServerMessage::QueueMeeting {
            now_ms: now_ms(),
            meeting_id: MeetingId::new(change.meeting_id),
            meeting,
        });
    }
    Ok(out)
}

/// Serves a queue subscription until the client goes or the server stops: the snapshot,
/// then every change it covers. Only `ping` is read after `subscribe_queue`. A subscriber
/// that sends nothing (no frame, no pong to the writer's pings) for `silence` is taken as
/// gone, as a meeting's socket is: its console shows a stale queue otherwise.
pub async fn serve_subscription(
    state: &Arc<AppState>,
    s: Subscribe,
    outbox: &Outbox,
    stream: &mut SplitStream<WebSocket>,
    silence: std::time::Duration,
) -> Result<(), Error> {
    let sub = check(state, s).await?;
    tracing::info!(staff = %sub.staff.sub, department_id = ?sub.scope.department_id, "queue subscription");
    // Listening before the snapshot is read: nothing committed in between is missed.
    let mut changes = state.store.queue_changes();
    // In a cluster: the other nodes' changes may have been missed; the whole queue again.
    let mut resyncs = state.store.queue_resyncs();
    send(outbox, snapshot(state, &sub).await?)?;
    let mut pace = TokenBucket::new(20, 5.0, now_ms());
    let mut shutdown = state.shutdown.clone();
    // When the subscriber last sent anything (pushed changes do not count).
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => {
                    for f in frames_for(state, &sub, change).await? {
                        send(outbox, f)?;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "queue subscriber fell behind; sending a snapshot");
                    send(outbox, snapshot(state, &sub).await?)?;
                }
                Err(RecvError::Closed) => return Ok(()),
            },
            Ok(()) = resyncs.changed() => {
                tracing::info!("the other nodes' queue changes may have been missed; sending a snapshot");
                send(outbox, snapshot(state, &sub).await?)?;
            }
            () = tokio::time::sleep_until(heard + silence) => {
                tracing::info!(silence_secs = silence.as_secs(), "queue subscriber silent (no frame, no pong): taken as gone");
                return Ok(());
            }
            msg = stream.next() => {
                heard = tokio::time::Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => continue,
                };
                if !pace.try_take(now_ms()) {
                    return Err(Error::new(ErrorCode::RateLimited, "too many frames; disconnecting"));
                }
                match parse_client_message(&text) {
                    Ok(ClientMessage::Ping { nonce }) => send(outbox, ServerMessage::Pong { nonce })?,
                    Ok(_) => send(outbox, ServerMessage::error(
                        ErrorCode::BadRequest,
                        "a queue subscription takes only `ping`",
                    ))?,
                    Err(e) => send(outbox, ServerMessage::error(e.code, e.message))?,
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Queues a frame; a subscriber whose writer is gone or overflowed ends the subscription.
fn send(outbox: &Outbox, msg: ServerMessage) -> Result<(), Error> {
    if outbox.send(msg) {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::Internal, "the subscriber is gone"))
    }
}

/// Runs until shutdown: after each change of an appointment, every guest waiting in its
/// queue (its department's, or its staff member's) is told their place.
pub fn spawn_places(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let mut changes = state.store.queue_changes();
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = shutdown.changed() => return,
            };
            let a = match change {
                Ok(QueueChange {
                    appointment: Some(a), ..
                }) => a.record,
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    // The next change of each queue tells its guests again.
                    tracing::warn!(missed = n, "queue places fell behind");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if let Err(e) = tell_places(&state, a.organization, a.department_id, a.staff).await {
                tracing::warn!(error = %e, "queue places not sent");
            }
        }
    })
}

async fn tell_places(state: &AppState, org: String, department_id: Option<String>, staff: String) -> Result<(), Error> {
    let now = now_ms();
    let (queue, service) = state
        .store
        .run(move |s| s.queue_of(&org, department_id.as_deref(), &staff, now))
        .await?;
    for (i, place) in places(&queue, &service, now) {
        let msg = ServerMessage::QueuePosition {
            position: place.position,
            estimated_wait_secs: place.estimated_wait_secs,
        };
        state
            .live
            .send_if_live(&queue[i].meeting_id, Command::ToGuestsInLobby(msg))
            .await;
    }
    Ok(())
}
