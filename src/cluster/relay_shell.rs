//! The signaling relay's async shell: one Redis pub/sub subscription per node (its channel),
//! one task per relayed session end, and `PUBLISH` to the peer's channel. The protocol and
//! every decision are in `relay.rs`; this moves envelopes and carries out the steps.
//!
//! Every queue is bounded: frames from a socket ([`FROM_SOCKET`]; the socket's reader waits
//! while the relay publishes), envelopes for one session end ([`INBOX`]; a session that lets
//! them pile up is broken, never waited for: the subscription serves every session), and the
//! owner's outbox as for a local socket. A session end is *broken* by removing it from its
//! table: its task sees its inbox close. That happens when the peer node leaves the registry
//! (checked at every beat), when this node's subscription drops (messages may have been lost
//! meanwhile), and when the inbox overflows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use gatehouse_signaling::protocol::{ServerMessage, parse_client_message};
use gatehouse_signaling::{Error, ErrorCode};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::relay::{self, Addressee, Body, EdgeSession, EdgeStep, Envelope, OwnerSession, OwnerStep, QueueRow};
use crate::outbox::{Next, Outbox};
use crate::server::AppState;
use crate::server::live::Command;
use gatehouse_signaling::room::LobbyAction;

/// Envelopes queued for one session end before it counts as broken.
pub const INBOX: usize = 256;
/// Client frames queued between a socket's reader and its relay task.
pub const FROM_SOCKET: usize = 64;
/// How long a node waits before subscribing again after its subscription dropped.
const RESUBSCRIBE: Duration = Duration::from_millis(500);
/// How long a staff view waits for a meeting's owner to answer `ask`.
pub const ASK_ANSWER: Duration = Duration::from_secs(2);

/// One end's entry: the peer node and the session task's inbox.
struct Peer {
    node: String,
    inbox: mpsc::Sender<Envelope>,
}

/// The relay of one node.
pub struct Relay {
    node_id: String,
    /// For the subscription (a connection of its own).
    client: redis::Client,
    /// For `PUBLISH` (the router's multiplexed connection).
    conn: ConnectionManager,
    /// Sockets here whose meeting runs elsewhere, by connection id.
    edges: Mutex<HashMap<u64, Peer>>,
    /// Sockets elsewhere whose meeting runs here, by (edge node, its connection id).
    owners: Mutex<HashMap<(String, u64), Peer>>,
    /// Whether the subscription is up: no session is opened without it.
    listening: AtomicBool,
    /// Questions asked of other nodes (`ask`, `act`), by number, waiting for their answer.
    asks: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Body>>>,
    /// The next question's number.
    next_ask: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    pub fn new(node_id: String, client: redis::Client, conn: ConnectionManager) -> Arc<Relay> {
        Arc::new(Relay {
            node_id,
            client,
            conn,
            edges: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
            asks: Mutex::new(HashMap::new()),
            next_ask: 0.into(),
        })
    }

    /// Relayed sessions open now: (sockets here, sockets elsewhere served here).
    pub fn sessions(&self) -> (usize, usize) {
        (lock(&self.edges).len(), lock(&self.owners).len())
    }

    async fn publish(&self, to: &str, seq: u64, conn: u64, body: Body) -> Result<(), String> {
        let envelope = Envelope {
            from: self.node_id.clone(),
            conn,
            seq,
            body,
        };
        let mut c = self.conn.clone();
        let heard: i64 = c
            .publish(relay::channel(to), envelope.to_json())
            .await
            .map_err(|e| e.to_string())?;
        if heard == 0 {
            return Err(format!("node {to} does not listen on its relay channel"));
        }
        Ok(())
    }

    /// Subscribes to this node's channel (waiting up to `first` for the first subscription,
    /// so the node listens before it takes connections), then keeps it up until shutdown.
    pub async fn start(self: &Arc<Self>, state: Arc<AppState>, first: Duration) {
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(self.clone().listen(state, up_tx));
        if tokio::time::timeout(first, up_rx).await.is_err() {
            tracing::warn!("the relay's subscription is not up yet; relayed sessions wait for it");
        }
    }

    async fn listen(self: Arc<Self>, state: Arc<AppState>, up: tokio::sync::oneshot::Sender<()>) {
        let mut up = Some(up);
        let mut shutdown = state.shutdown.clone();
        let mut logged_loss = false;
        loop {
            match self.subscribe().await {
                Ok((_sink, mut stream)) => {
                    self.listening.store(true, Ordering::Relaxed);
                    if let Some(up) = up.take() {
                        let _ = up.send(());
                    }
                    if logged_loss {
                        tracing::info!("relay subscription is back");
                    }
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) => self.dispatch(&state, msg.get_payload_bytes()),
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                    self.listening.store(false, Ordering::Relaxed);
                    tracing::warn!("relay subscription dropped; relayed sessions are refused until it is back");
                    self.break_all("the relay's Redis subscription dropped");
                    logged_loss = true;
                }
                Err(e) => {
                    if !logged_loss {
                        tracing::warn!(error = %e, "relay subscription cannot be made; relayed sessions are refused until it is");
                        logged_loss = true;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn subscribe(&self) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(relay::channel(&self.node_id)).await?;
        Ok(pubsub.split())
    }

    /// Routes one envelope to its session end's task, never waiting.
    fn dispatch(self: &Arc<Self>, state: &Arc<AppState>, payload: &[u8]) {
        let envelope = match Envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = ?e, "unreadable relay envelope; ignored");
                return;
            }
        };
        match envelope.addressee() {
            Addressee::Edge | Addressee::Owner => {}
            Addressee::Asked => {
                tokio::spawn(
                    self.clone()
                        .answer(state.clone(), envelope.from, envelope.conn, envelope.body),
                );
                return;
            }
            Addressee::Asker => {
                if let Some(waiting) = lock(&self.asks).remove(&envelope.conn) {
                    let _ = waiting.send(envelope.body);
                }
                return;
            }
        }
        if envelope.for_edge() {
            let mut edges = lock(&self.edges);
            let conn = envelope.conn;
            if let Some(peer) = edges.get(&conn)
                && peer.inbox.try_send(envelope).is_err()
            {
                tracing::info!(conn, "relayed session too slow or gone: broken");
                edges.remove(&conn);
            }
            return;
        }
        let key = (envelope.from.clone(), envelope.conn);
        let mut owners = lock(&self.owners);
        if let Some(peer) = owners.get(&key) {
            if peer.inbox.try_send(envelope).is_err() {
                tracing::info!(edge = %key.0, edge_conn = key.1, "relayed session too slow or gone: broken");
                owners.remove(&key);
            }
            return;
        }
        if let Some((session, token, meeting_id)) = OwnerSession::accept(envelope) {
            let (tx, rx) = mpsc::channel(INBOX);
            owners.insert(
                key,
                Peer {
                    node: session.edge.clone(),
                    inbox: tx,
                },
            );
            let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("relayed", conn, edge = %session.edge, edge_conn = session.conn,
                meeting_id = tracing::field::Empty);
            tokio::spawn(
                owner_session(self.clone(), state.clone(), conn, session, token, meeting_id, rx).instrument(span),
            );
        }
    }

    /// Breaks the sessions whose peer node is not live (the registry at a beat).
    pub fn peers_alive(&self, live: &[String]) {
        let mut edges = lock(&self.edges);
        for conn in relay::dead_peers(edges.iter().map(|(k, p)| (k, p.node.as_str())), live) {
            tracing::info!(conn, "the meeting's node left the registry: relayed session broken");
            edges.remove(&conn);
        }
        drop(edges);
        let mut owners = lock(&self.owners);
        for key in relay::dead_peers(owners.iter().map(|(k, p)| (k, p.node.as_str())), live) {
            tracing::info!(edge = %key.0, edge_conn = key.1, "the socket's node left the registry: relayed session broken");
            owners.remove(&key);
        }
    }

    fn break_all(&self, why: &str) {
        let (e, o) = {
            let mut edges = lock(&self.edges);
            let mut owners = lock(&self.owners);
            let n = (edges.len(), owners.len());
            edges.clear();
            owners.clear();
            n
        };
        if e + o > 0 {
            tracing::warn!(
                edges = e,
                owned = o,
                "{why}: relayed sessions broken (their clients reconnect)"
            );
        }
    }

    /// The edge's end: sends the socket's `join` to `owner` and waits for its answer. On
    /// `joined` (delivered to `outbox`), returns where the socket's reader sends client frames;
    /// dropping it hangs the session up.
    pub async fn open(
        self: &Arc<Self>,
        owner: &str,
        public_url: &str,
        conn: u64,
        token: String,
        meeting_id: Option<String>,
        outbox: Outbox,
    ) -> Result<mpsc::Sender<String>, Error> {
        if !self.listening.load(Ordering::Relaxed) {
            // The relay cannot work now (its Redis subscription is down).
            return Err(super::Route::elsewhere_error(owner, public_url));
        }
        let (mut session, seq, body) = EdgeSession::open(owner, token, meeting_id);
        let (tx, mut inbox) = mpsc::channel(INBOX);
        lock(&self.edges).insert(
            conn,
            Peer {
                node: owner.to_owned(),
                inbox: tx,
            },
        );
        let unreachable = |why: &str| {
            Error::new(
                ErrorCode::ServerBusy,
                format!("the meeting's node could not be reached ({why}); retry shortly"),
            )
        };
        if let Err(why) = self.publish(owner, seq, conn, body).await {
            self.forget_edge(conn);
            return Err(unreachable(&why));
        }
        let answer = tokio::time::sleep(Duration::from_millis(relay::JOIN_ANSWER_MS));
        tokio::pin!(answer);
        loop {
            let step = tokio::select! {
                envelope = inbox.recv() => match envelope {
                    Some(e) => session.receive(&e.from, e.seq, e.body),
                    None => session.broken("relay broken"),
                },
                () = &mut answer => {
                    // The owner may still let it in: hang up so it does not keep a ghost.
                    if let Some((seq, body)) = session.hangup() {
                        let _ = self.publish(owner, seq, conn, body).await;
                    }
                    self.forget_edge(conn);
                    return Err(unreachable("no answer in time"));
                }
            };
            match step {
                EdgeStep::Joined(msg) => {
                    outbox.send(msg);
                    break;
                }
                EdgeStep::Deliver(msg) => {
                    outbox.send(msg);
                }
                EdgeStep::Refused(e) => {
                    self.forget_edge(conn);
                    return Err(e);
                }
                EdgeStep::Close(_) | EdgeStep::Ignore => {}
            }
        }
        let (frames, from_socket) = mpsc::channel(FROM_SOCKET);
        tokio::spawn(
            edge_session(self.clone(), session, conn, inbox, from_socket, outbox).instrument(tracing::Span::current()),
        );
        Ok(frames)
    }

    fn forget_edge(&self, conn: u64) {
        lock(&self.edges).remove(&conn);
    }

    /// Asks `owner` for the live queue's row of `meeting_id` (who is in the call, who waits),
    /// as its meeting task has it: `None` when the meeting is not live there. Fails with
    /// `server_busy` when the owner cannot be reached or does not answer within [`ASK_ANSWER`].
    pub async fn ask(&self, owner: &str, meeting_id: &str) -> Result<Option<QueueRow>, Error> {
        let body = Body::Ask {
            meeting_id: meeting_id.to_owned(),
        };
        match self.question(owner, body).await? {
            Body::Answer { row } => Ok(row),
            other => Err(confused(&other)),
        }
    }

    /// Has `owner`'s task of `meeting_id` carry out a lobby action from the queue here: the
    /// task's own refusal comes back as it is (`not_found` when the meeting is not live
    /// there); `server_busy` when the owner cannot be reached or does not answer in time.
    pub async fn act(&self, owner: &str, meeting_id: &str, by: String, action: LobbyAction) -> Result<(), Error> {
        let body = Body::Act {
            meeting_id: meeting_id.to_owned(),
            by,
            action: action.into(),
        };
        match self.question(owner, body).await? {
            Body::Acted { error: None } => Ok(()),
            Body::Acted { error: Some(e) } => Err(e),
            other => Err(confused(&other)),
        }
    }

    /// Sends a question outside any session to `owner` and waits for its answer.
    async fn question(&self, owner: &str, body: Body) -> Result<Body, Error> {
        let unreachable = |why: &str| {
            Error::new(
                ErrorCode::ServerBusy,
                format!("the meeting's node could not be asked ({why}); retry shortly"),
            )
        };
        if !self.listening.load(Ordering::Relaxed) {
            return Err(unreachable("this node's relay subscription is down"));
        }
        let id = self.next_ask.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.asks).insert(id, tx);
        let answer = match self.publish(owner, 0, id, body).await {
            Ok(()) => tokio::time::timeout(ASK_ANSWER, rx)
                .await
                .map_err(|_| unreachable("no answer in time"))
                .and_then(|a| a.map_err(|_| unreachable("the relay stopped"))),
            Err(why) => Err(unreachable(&why)),
        };
        lock(&self.asks).remove(&id);
        answer
    }

    /// Answers another node's question (`ask`, `act`) from the meeting's task here.
    async fn answer(self: Arc<Self>, state: Arc<AppState>, to: String, id: u64, question: Body) {
        let answer = match question {
            Body::Ask { meeting_id } => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let row = if state.live.send_if_live(&meeting_id, Command::Queue { reply }).await {
                    answer.await.ok().map(|(in_call, lobby)| QueueRow { in_call, lobby })
                } else {
                    None
                };
                Body::Answer { row }
            }
            Body::Act { meeting_id, by, action } => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let action = action.into();
                let sent = state
                    .live
                    .send_if_live(&meeting_id, Command::LobbyAction { by, action, reply })
                    .await;
                let error = if sent {
                    match answer.await {
                        Ok(result) => result.err(),
                        Err(_) => Some(Error::new(ErrorCode::Internal, "the meeting stopped")),
                    }
                } else {
                    Some(super::not_waiting())
                };
                Body::Acted { error }
            }
            _ => return,
        };
        if let Err(why) = self.publish(&to, 0, id, answer).await {
            tracing::debug!(%why, "an answer to another node's question not delivered");
        }
    }
}

/// An answer of the wrong kind (a peer of another build, or a confused one).
fn confused(body: &Body) -> Error {
    tracing::warn!(?body, "a relay answer of the wrong kind");
    Error::new(ErrorCode::Internal, "the meeting's node answered something else")
}

/// The edge's end once joined: client frames out, server frames in, until either side ends.
async fn edge_session(
    relay: Arc<Relay>,
    mut session: EdgeSession,
    conn: u64,
    mut inbox: mpsc::Receiver<Envelope>,
    mut from_socket: mpsc::Receiver<String>,
    outbox: Outbox,
) {
    let owner = session.owner.clone();
    loop {
        tokio::select! {
            frame = from_socket.recv() => match frame {
                Some(text) => {
                    if let Some((seq, body)) = session.frame(text)
                        && let Err(why) = relay.publish(&owner, seq, conn, body).await
                    {
                        tracing::info!(%why, "relayed session broken");
                        break;
                    }
                }
                None => {
                    if let Some((seq, body)) = session.hangup() {
                        let _ = relay.publish(&owner, seq, conn, body).await;
                    }
                    break;
                }
            },
            envelope = inbox.recv() => {
                let step = match envelope {
                    Some(e) => session.receive(&e.from, e.seq, e.body),
                    None => session.broken("relay broken"),
                };
                match step {
                    EdgeStep::Joined(msg) | EdgeStep::Deliver(msg) => {
                        // Full: the socket's writer closes it as too slow (outbox.rs).
                        outbox.send(msg);
                    }
                    EdgeStep::Close(why) => {
                        tracing::info!(%why, "relayed session over");
                        break;
                    }
                    EdgeStep::Refused(_) | EdgeStep::Ignore => {}
                }
            }
        }
    }
    relay.forget_edge(conn);
}

/// The owner's end: the session runs here as if its socket were local.
async fn owner_session(
    relay: Arc<Relay>,
    state: Arc<AppState>,
    conn: u64,
    mut session: OwnerSession,
    token: String,
    meeting_id: Option<String>,
    mut inbox: mpsc::Receiver<Envelope>,
) {
    let key = (session.edge.clone(), session.conn);
    let edge = session.edge.clone();
    let edge_conn = session.conn;
    let (outbox, mut outbox_rx) = crate::outbox::outbox();
    let meeting_id = match crate::server::ws::join_relayed(&state, conn, token, meeting_id, &outbox).await {
        Ok(id) => id,
        Err(e) => {
            tracing::info!(code = ?e.code, "relayed join refused");
            if let Some((seq, body)) = session.message(ServerMessage::error(e.code, e.message)) {
                let _ = relay.publish(&edge, seq, edge_conn, body).await;
            }
            lock(&relay.owners).remove(&key);
            return;
        }
    };
    tracing::Span::current().record("meeting_id", meeting_id.as_str());
    tracing::info!("relayed session joined");
    drop(outbox);
    let ended = loop {
        tokio::select! {
            next = outbox_rx.next() => match next {
                Next::Message(msg) => {
                    if let Some((seq, body)) = session.message(msg)
                        && let Err(why) = relay.publish(&edge, seq, edge_conn, body).await
                    {
                        break why;
                    }
                }
                Next::Closed => break "the meeting closed the session".to_owned(),
                Next::Overflowed => break "too slow: outbox full".to_owned(),
            },
            envelope = inbox.recv() => {
                let step = match envelope {
                    Some(e) => session.receive(&e.from, e.seq, e.body),
                    None => OwnerStep::Broken("relay broken".into()),
                };
                match step {
                    OwnerStep::Frame(text) => match parse_client_message(&text) {
                        Ok(msg) => {
                            if !state.live.send_if_live(&meeting_id, Command::Frame { conn, msg }).await {
                                break "the meeting is over".to_owned();
                            }
                        }
                        Err(e) => {
                            // The edge parsed it already; a different build could disagree.
                            if let Some((seq, body)) = session.message(ServerMessage::error(e.code, e.message)) {
                                let _ = relay.publish(&edge, seq, edge_conn, body).await;
                            }
                        }
                    },
                    OwnerStep::Hangup => break "hung up".to_owned(),
                    OwnerStep::Broken(why) => break why,
                    OwnerStep::Ignore => {}
                }
            }
        }
    };
    tracing::info!(why = %ended, "relayed session ends");
    if let Some((seq, body)) = session.end(&ended) {
        let _ = relay.publish(&edge, seq, edge_conn, body).await;
    }
    state
        .live
        .send_if_live(&meeting_id, Command::Disconnected { conn })
        .await;
    lock(&relay.owners).remove(&key);
}
