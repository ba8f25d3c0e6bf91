//! Live meetings: one task per meeting owns its [`Room`] state machine and
//! carries out its effects (frames, media, store writes).
//!
//! A meeting's task exists only while someone is in its call or lobby. It is
//! created on the first join and removes itself when the room empties, under
//! the registry lock, so a join can never reach a task that is going away.
//! After a crash, [`LiveMeetings::recover`] starts the tasks of the meetings whose
//! guests had a seat, before the server takes its first connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_signaling::lobby::ConnId;
use gatehouse_signaling::meeting::Meeting;
use gatehouse_signaling::protocol::LobbyEntry;
use gatehouse_signaling::protocol::{ClientMessage, MediaMessage, ParticipantId, ServerMessage};
use gatehouse_signaling::room::{Effect, EventKind, JoinRequest, LobbyAction, OpenAttendance, Room};
use gatehouse_signaling::{Error, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::ids::now_ms;
use crate::metrics::GatewayMetrics;
use crate::sfu::{MediaParticipant, Sfu};
use crate::store::Store;

/// Frames to one connection's writer.
pub use crate::outbox::Outbox;

/// What a connection or the REST API asks of a live meeting.
pub enum Command {
    Join {
        req: JoinRequest,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Frame {
        conn: ConnId,
        msg: ClientMessage,
    },
    Disconnected {
        conn: ConnId,
    },
    MeetingUpdated(Box<Meeting>),
    /// End the meeting for everyone; `message` says why in their `left`.
    End {
        message: Option<String>,
        reply: oneshot::Sender<()>,
    },
    Snapshot {
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// The staff queue: how many are in the call, and who waits.
    Queue {
        reply: oneshot::Sender<(usize, Vec<LobbyEntry>)>,
    },
    /// A frame for every guest waiting in the lobby (their place in the appointments queue).
    ToGuestsInLobby(ServerMessage),
    /// Staff act on the lobby from the queue, outside the call.
    LobbyAction {
        by: String,
        action: LobbyAction,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// Commands queued per meeting task before senders wait (see `LiveMeetings::deliver`).
pub const MEETING_QUEUE: usize = 256;

/// The registry of live meetings.
///
/// A `Mutex<HashMap>` rather than a `DashMap`: a meeting task removes itself only when
/// its channel is empty, and that check and the removal must be atomic with every
/// sender's lookup-and-send (see `send`). One short critical section per signaling frame
/// says that plainly; a sharded map would need its entry lock held across the check.
#[derive(Default)]
pub struct LiveMeetings {
    tasks: Mutex<HashMap<String, mpsc::Sender<Command>>>,
    /// Meeting tasks still running, their last cleanup included: shutdown waits for 0.
    running: tokio::sync::watch::Sender<usize>,
    /// Set when the node drains (`--drain`): it starts no new meeting task.
    draining: std::sync::atomic::AtomicBool,
}

/// Counts a meeting task as running until it is dropped, also when the task panics.
struct RunningTask(Arc<LiveMeetings>);

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What a meeting task needs from the rest of the server.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<Store>,
    pub sfu: Sfu,
    pub ice: Arc<crate::turn::IceServers>,
    pub live: Arc<LiveMeetings>,
    pub metrics: Arc<GatewayMetrics>,
    /// Set when the server stops: seats held for dropped participants no longer keep a meeting.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// How long a guest whose socket dropped keeps its seat, unseen by others (`seat_hold_secs`).
    pub seat_hold_ms: u64,
    /// Where meetings live: here (one node), or wherever the cluster placed them.
    pub router: Arc<dyn crate::cluster::Router>,
}

impl LiveMeetings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Command>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of live meetings: someone in the call or lobby, or a seat held for someone who dropped.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the meetings with someone in them.
    pub fn live_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether the meeting is live (someone in the call or lobby, or a seat held).
    pub fn is_live(&self, meeting_id: &str) -> bool {
        self.lock().contains_key(meeting_id)
    }

    /// From now on no new meeting starts here; those running go on (`--drain`).
    pub fn start_draining(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the node drains: it takes no new meeting.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until no meeting task runs here (a drain's end).
    pub async fn wait_idle(&self) {
        let mut running = self.running.subscribe();
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Waits until every meeting task has finished, at most `limit`; `false` on time-out.
    pub async fn wait_finished(&self, limit: std::time::Duration) -> bool {
        let mut running = self.running.subscribe();
        tokio::time::timeout(limit, running.wait_for(|n| *n == 0)).await.is_ok()
    }

    /// Sends to a live meeting; `false` if nobody is in it. Waits while its queue is full.
    pub async fn send_if_live(&self, meeting_id: &str, cmd: Command) -> bool {
        self.deliver(meeting_id, cmd, None).await
    }

    /// Sends to a meeting, starting its task if needed. Waits while its queue is full.
    ///
    /// The multi-node seam: a meeting not live here is placed first ([`Self::route`]) and
    /// refused if it runs on another node (`meeting_elsewhere`: callers that can relay
    /// signaling ask [`Self::route`] themselves and use [`Self::send_here`]) or cannot be
    /// placed (`server_busy`). A meeting live here asks nothing.
    pub async fn send(&self, services: &Services, meeting: &Meeting, cmd: Command) -> Result<(), Error> {
        match self.route(services, &meeting.meeting_id).await? {
            crate::cluster::Route::Here => {}
            crate::cluster::Route::Elsewhere { node_id, public_url } => {
                return Err(crate::cluster::Route::elsewhere_error(&node_id, &public_url));
            }
        }
        self.send_here(services, meeting, cmd).await;
        Ok(())
    }

    /// Where a meeting's task runs: here if it is live here (no question asked), else where
    /// the router places it ([`crate::cluster::Router`]); `server_busy` if it cannot be placed,
    /// or would start here on a draining node.
    pub async fn route(&self, services: &Services, meeting_id: &str) -> Result<crate::cluster::Route, Error> {
        if self.is_live(meeting_id) {
            return Ok(crate::cluster::Route::Here);
        }
        match services.router.place(meeting_id).await? {
            // A draining node keeps its meetings but starts none (placement skips it;
            // a placement naming it can outlive a meeting that just ended here).
            crate::cluster::Route::Here if self.is_draining() => Err(Error::new(
                ErrorCode::ServerBusy,
                "this node is draining for maintenance and takes no new meeting; retry shortly",
            )),
            route => Ok(route),
        }
    }

    /// Sends to a meeting routed here ([`Self::route`]), starting its task if needed.
    ///
    /// In a cluster, a meeting that starts here may have run on a node that died: it is taken
    /// over first ([`Self::take_over`]).
    pub async fn send_here(&self, services: &Services, meeting: &Meeting, cmd: Command) {
        if services.router.node_id().is_some() && !self.is_live(&meeting.meeting_id) {
            self.take_over(services, meeting).await;
        }
        self.deliver(&meeting.meeting_id, cmd, Some((services, meeting))).await;
    }

    /// A meeting placed here that still has open attendances in the store ran on a node that
    /// died (placement gives a meeting to a new node only when its owner is dead, and every
    /// clean end closes its attendances): it is recovered as after a crash ([`Room::recover`]),
    /// so the guests who were in its call get their seat held and come back without the lobby,
    /// and the rest is closed in the participation log (the interruption shows there).
    async fn take_over(&self, services: &Services, meeting: &Meeting) {
        let id = meeting.meeting_id.to_string();
        let open = match services.store.run(move |s| s.open_attendance_of(&id)).await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(meeting_id = %meeting.meeting_id, error = %e, "could not read open attendances; the meeting starts empty");
                return;
            }
        };
        if open.is_empty() {
            return;
        }
        let (room, first) = Room::recover(meeting.clone(), services.seat_hold_ms, now_ms(), open);
        tracing::info!(meeting_id = %meeting.meeting_id, held = room.held_len(), closed = first.len(),
            "meeting taken over from a node that died");
        if room.is_empty() {
            apply(&room, &mut HashMap::new(), services, first).await;
            return;
        }
        let mut tasks = self.lock();
        // A concurrent join may have started it meanwhile: that one took it over.
        if !tasks.contains_key(meeting.meeting_id.as_str()) {
            self.spawn(&mut tasks, services, room, first);
        }
    }

    /// The one way into a meeting task's queue ([`MEETING_QUEUE`] commands).
    ///
    /// A task removes itself from the registry only under the lock and with an
    /// empty queue, so a command is put into the queue under the lock too: at
    /// once when there is room, else after waiting for a slot outside the lock
    /// (backpressure on the sender, never a lost command) and checking that
    /// the task it reserved in is still the registered one.
    async fn deliver(&self, meeting_id: &str, mut cmd: Command, start: Option<(&Services, &Meeting)>) -> bool {
        loop {
            let tx = {
                let mut tasks = self.lock();
                if !tasks.contains_key(meeting_id) {
                    let Some((services, meeting)) = start else {
                        return false;
                    };
                    let room = Room::with_seat_hold(meeting.clone(), services.seat_hold_ms);
                    self.spawn(&mut tasks, services, room, Vec::new());
                }
                let tx = tasks.get(meeting_id).expect("present: checked or inserted above");
                match tx.try_send(cmd) {
                    Ok(()) => return true,
                    Err(mpsc::error::TrySendError::Full(c)) => {
                        cmd = c;
                        tx.clone()
                    }
                    Err(mpsc::error::TrySendError::Closed(c)) => {
                        // The task ended without deregistering (it panicked): replace it.
                        cmd = c;
                        tasks.remove(meeting_id);
                        continue;
                    }
                }
            };
            let Ok(permit) = tx.clone().reserve_owned().await else {
                continue;
            };
            let tasks = self.lock();
            if tasks.get(meeting_id).is_some_and(|t| t.same_channel(&tx)) {
                permit.send(cmd);
                return true;
            }
        }
    }
}

impl LiveMeetings {
    /// Starts the task of `room` and registers it (the caller holds the registry lock);
    /// the task carries out `first` before anything else.
    fn spawn(
        &self,
        tasks: &mut HashMap<String, mpsc::Sender<Command>>,
        services: &Services,
        room: Room,
        first: Vec<Effect>,
    ) {
        let meeting_id = room.meeting().meeting_id.to_string();
        let (tx, rx) = mpsc::channel(MEETING_QUEUE);
        let span = tracing::info_span!("meeting", meeting_id = %meeting_id);
        self.running.send_modify(|n| *n += 1);
        let running = RunningTask(services.live.clone());
        tokio::spawn(run(room, first, rx, services.clone(), running).instrument(span));
        tasks.insert(meeting_id, tx);
    }

    /// After a crash (the store still has open attendances: a clean stop closes them
    /// all): guests who were in a call get their seat held again for the seat hold,
    /// counted from now, and the rest is closed in the participation log
    /// ([`Room::recover`]). Call it once, before the server accepts connections.
    /// Returns the number of seats held.
    pub async fn recover(&self, services: &Services) -> Result<usize, Error> {
        let open = services.store.run(|s| s.open_attendance()).await?;
        let mut by_meeting: Vec<(String, Vec<OpenAttendance>)> = Vec::new();
        for (meeting_id, a) in open {
            match by_meeting.last_mut() {
                Some((m, list)) if *m == meeting_id => list.push(a),
                _ => by_meeting.push((meeting_id, vec![a])),
            }
        }
        let mut held = 0;
        for (meeting_id, open) in by_meeting {
            let id = meeting_id.clone();
            let Some(meeting) = services.store.run(move |s| s.meeting(&id)).await? else {
                tracing::warn!(%meeting_id, "open attendance of a meeting that does not exist; ignored");
                continue;
            };
            let (room, first) = Room::recover(meeting, services.seat_hold_ms, now_ms(), open);
            held += room.held_len();
            tracing::info!(%meeting_id, held = room.held_len(), closed = first.len(), "meeting recovered after a crash");
            if room.is_empty() {
                // Nobody to wait for: close the log here; a task would wait for a command.
                apply(&room, &mut HashMap::new(), services, first).await;
                continue;
            }
            let mut tasks = self.lock();
            self.spawn(&mut tasks, services, room, first);
        }
        Ok(held)
    }
}

async fn run(
    mut room: Room,
    first: Vec<Effect>,
    mut rx: mpsc::Receiver<Command>,
    services: Services,
    _running: RunningTask,
) {
    tracing::info!("meeting live");
    services.metrics.meetings_live.inc();
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::new();
    apply(&room, &mut outboxes, &services, first).await;
    // What this room last added to the process-wide gauges.
    let mut counted = (0i64, 0i64);
    let mut shutdown = services.shutdown.clone();
    let mut stopping = *shutdown.borrow();
    loop {
        let deadline = room.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep(std::time::Duration::from_millis(at.saturating_sub(now_ms()))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                handle(&mut room, &mut outboxes, &services, cmd).await;
            }
            () = sleep => {
                let effects = room.tick(now_ms());
                apply(&room, &mut outboxes, &services, effects).await;
            }
            // The server stops: its sockets close and their departures still come in (and
            // are logged); once nobody is connected the meeting ends even with seats held.
            _ = shutdown.changed(), if !stopping => stopping = true,
        }
        let now_counted = (room.call_len() as i64, room.lobby_len() as i64);
        services.metrics.participants_in_call.add(now_counted.0 - counted.0);
        services.metrics.participants_in_lobby.add(now_counted.1 - counted.1);
        counted = now_counted;
        let idle = if stopping {
            if room.call_len() == 0 && room.lobby_len() == 0 && room.held_len() > 0 {
                // Nobody is left to come back to a held seat: give them up, so their
                // departures are recorded and their media is released.
                let effects = room.give_up_holds();
                apply(&room, &mut outboxes, &services, effects).await;
            }
            room.call_len() == 0 && room.lobby_len() == 0
        } else {
            // Empty includes no seat held for someone who dropped: the room waits for them.
            room.is_empty()
        };
        if idle {
            let mut tasks = services.live.lock();
            if rx.is_empty() {
                tasks.remove(room.meeting().meeting_id.as_str());
                break;
            }
        }
    }
    services.metrics.participants_in_call.sub(counted.0);
    services.metrics.participants_in_lobby.sub(counted.1);
    services.metrics.meetings_live.dec();
    tracing::info!("meeting idle; task ends");
}

async fn handle(room: &mut Room, outboxes: &mut HashMap<ConnId, Outbox>, services: &Services, cmd: Command) {
    let now = now_ms();
    match cmd {
        Command::Join { req, outbox, reply } => {
            let conn = req.conn;
            match room.join(now, req) {
                Ok(effects) => {
                    outboxes.insert(conn, outbox);
                    let _ = reply.send(Ok(()));
                    apply(room, outboxes, services, effects).await;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        Command::Frame { conn, msg } => match msg.into_media() {
            Ok(msg) => media(room, outboxes, services, conn, msg).await,
            Err(ClientMessage::RefreshIceServers) => {
                if let Err(e) = fresh_ice_servers(room, outboxes, services, conn)
                    && let Some(outbox) = outboxes.get(&conn)
                {
                    let _ = outbox.send(ServerMessage::error(e.code, e.message));
                }
            }
            Err(msg) => {
                let effects = room.handle(now, conn, msg);
                apply(room, outboxes, services, effects).await;
            }
        },
        Command::Disconnected { conn } => {
            let effects = room.disconnected(now, conn);
            outboxes.remove(&conn);
            apply(room, outboxes, services, effects).await;
        }
        Command::MeetingUpdated(meeting) => room.update_meeting(*meeting),
        Command::End { message, reply } => {
            let mut effects = Vec::new();
            room.end_saying(now, message, &mut effects);
            apply(room, outboxes, services, effects).await;
            let _ = reply.send(());
        }
        Command::Queue { reply } => {
            let _ = reply.send((room.call_len(), room.lobby_entries()));
        }
        Command::ToGuestsInLobby(msg) => {
            let effects = room.to_guests_in_lobby(&msg);
            apply(room, outboxes, services, effects).await;
        }
        Command::LobbyAction { by, action, reply } => match room.lobby_action_from_queue(now, &by, action) {
            Ok(effects) => {
                let _ = reply.send(Ok(()));
                apply(room, outboxes, services, effects).await;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::Snapshot { reply } => {
            let media = services.sfu.debug_snapshot(&room.meeting().meeting_id).await;
            let _ = reply.send(serde_json::json!({
                "meeting_id": room.meeting().meeting_id,
                "participants": room.participants(),
                "lobby": room.lobby_len(),
                "media": media,
            }));
        }
    }
}

/// Media frames go to the SFU, but only from participants in the call.
async fn media(room: &Room, outboxes: &HashMap<ConnId, Outbox>, services: &Services, conn: ConnId, msg: MediaMessage) {
    let Some(outbox) = outboxes.get(&conn) else { return };
    let participant = room.participant_of(conn).map(str::to_owned);
    let result = match participant {
        Some(id) if room.in_call(&id) => {
            // A restart may need a relay, and the credentials handed out at admission may
            // have expired since: fresh ones go first, before the restart's offer.
            if matches!(msg, MediaMessage::RestartIce) {
                let _ = fresh_ice_servers(room, outboxes, services, conn);
            }
            services.sfu.handle(&room.meeting().meeting_id, &id, msg).await
        }
        _ => Err(Error::new(ErrorCode::NotInCall, "media is only available in the call")),
    };
    if let Err(e) = result {
        let _ = outbox.send(ServerMessage::error(e.code, e.message));
    }
}

/// Sends `conn`'s participant fresh ICE servers (`ice_servers`), TURN credentials minted
/// now: only to someone in the call, as at admission (docs/PROTOCOL.md §11.7).
fn fresh_ice_servers(
    room: &Room,
    outboxes: &HashMap<ConnId, Outbox>,
    services: &Services,
    conn: ConnId,
) -> Result<(), Error> {
    let outbox = outboxes
        .get(&conn)
        .ok_or_else(|| Error::new(ErrorCode::NotInCall, "media is only available in the call"))?;
    let participant = room
        .participant_of(conn)
        .filter(|id| room.in_call(id))
        .ok_or_else(|| Error::new(ErrorCode::NotInCall, "media is only available in the call"))?;
    let ice_servers = services
        .ice
        .for_participant(&ParticipantId::from(participant), crate::ids::now_ms() / 1000);
    let _ = outbox.send(ServerMessage::IceServers { ice_servers });
    Ok(())
}

async fn apply(room: &Room, outboxes: &mut HashMap<ConnId, Outbox>, services: &Services, effects: Vec<Effect>) {
    let meeting_id = room.meeting().meeting_id.clone();
    let mut effects = effects.into_iter().peekable();
    while let Some(effect) = effects.next() {
        match effect {
            Effect::Send { conn, msg } => {
                if let Some(outbox) = outboxes.get(&conn) {
                    let _ = outbox.send(msg);
                }
            }
            // The writer closes the socket itself right after the `left` frame it precedes.
            Effect::Close { conn } => {
                outboxes.remove(&conn);
            }
            Effect::EnterCall {
                conn,
                participant,
                others,
                may_present,
                resumed: _,
            } => {
                let Some(outbox) = outboxes.get(&conn).cloned() else {
                    continue;
                };
                // Back on a new socket (resumed), the client brings new peer connections:
                // the media plane closes the old ones but keeps the tracks it published,
                // under their ids, until its new publisher connection carries them again
                // (`MediaRoom::add_participant`), so others see no churn. Its own tracks
                // are not in its `admitted`: it hears `track_published` for each when its
                // media arrives, as on a first entry.
                // `admitted` first, so the client knows it is in the call before any media message.
                let mut tracks = services.sfu.tracks_for(&meeting_id, &participant.participant_id).await;
                tracks.retain(|t| t.participant_id != participant.participant_id);
                let _ = outbox.send(ServerMessage::Admitted {
                    participants: others,
                    tracks: tracks.clone(),
                    // TURN credentials for this participant only, and only now that it is
                    // in the call: nobody gets relay without a token and an admission.
                    ice_servers: services
                        .ice
                        .for_participant(&participant.participant_id, crate::ids::now_ms() / 1000),
                });
                let media = MediaParticipant {
                    meeting_id: meeting_id.clone(),
                    participant_id: participant.participant_id.clone(),
                    kind: participant.kind,
                    may_present,
                };
                // A track published, unpublished or muted between the snapshot and entering
                // the SFU's room (which, in a meeting spread over media shards, may be on
                // another shard than the snapshot's) is told first thing in the room.
                if let Err(e) = services.sfu.enter_call(media, outbox.clone(), tracks).await {
                    tracing::warn!(participant_id = %participant.participant_id, error = %e, "media could not start");
                    let _ = outbox.send(ServerMessage::error(e.code, e.message));
                    continue;
                }
            }
            Effect::LeaveCall { participant_id } => services.sfu.remove_participant(&meeting_id, &participant_id).await,
            Effect::Record(event) => {
                // Events in a row (`admitted` then `joined`) are one transaction: one fsync.
                let mut batch = vec![event];
                while let Some(Effect::Record(next)) = effects.next_if(|e| matches!(e, Effect::Record(_))) {
                    batch.push(next);
                }
                for event in &batch {
                    if let EventKind::Admitted { wait_ms, .. }
                    | EventKind::Denied { wait_ms, .. }
                    | EventKind::LobbyTimeout { wait_ms }
                    | EventKind::LeftLobby { wait_ms } = &event.event
                    {
                        services.metrics.lobby_wait_seconds.observe(*wait_ms as f64 / 1000.0);
                    }
                    tracing::info!(participant_id = %event.participant_id, event = ?event.event, "participation");
                }
                // Committed before the effects after it (an admission before `admitted`).
                if let Err(e) = services.store.run(move |s| s.record_all(&batch)).await {
                    tracing::error!(error = %e, "could not record participation events");
                }
            }
            Effect::MeetingEnded => {
                let meeting = room.meeting().clone();
                if let Err(e) = services.store.run(move |s| s.update_meeting(&meeting)).await {
                    tracing::error!(error = %e, "could not store the meeting's end");
                }
            }
        }
    }
}
