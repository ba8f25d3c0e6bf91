//! Several gateway nodes as one (issue 16): where a meeting lives, and which nodes exist.
//!
//! The [`Router`] is the multi-node seam of [`crate::server::live::LiveMeetings`]: before a
//! node starts a meeting's task it asks the router whether the meeting is placed here.
//! [`LocalRouter`] (no `--redis-url`) always answers "here", touching nothing; the Redis
//! router (`redis.rs`) keeps a registry of live nodes with their load and places each
//! meeting once, on the least loaded node (`placement.rs`). docs/ARCHITECTURE.md, "Several
//! nodes", has the design and what is not built yet.

pub mod api;
pub mod load;
pub mod metrics;
pub mod placement;
#[cfg(feature = "cluster")]
pub mod redis;
pub mod relay;
#[cfg(feature = "cluster")]
pub mod relay_shell;

use futures_util::future::BoxFuture;
use gatehouse_signaling::{Error, ErrorCode};

pub use placement::{Load, NodeReport};

/// How often a node writes its registry record.
pub const HEARTBEAT_MS: u64 = 1000;
/// How long a node's registry record lives without a new beat: a node that stops beating
/// is dead this long after its last beat, at most.
pub const NODE_TTL_MS: u64 = 3000;
/// How long a meeting's placement lives unless its owner refreshes it (every beat, for
/// each meeting it runs): an ended meeting's placement is forgotten after this.
pub const PLACEMENT_TTL_MS: u64 = 60_000;

/// Where a meeting's task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// On this node.
    Here,
    /// On another node, which clients reach at `public_url` (empty if it just died).
    Elsewhere { node_id: String, public_url: String },
}

impl Route {
    /// The refusal a join gets on a node that does not own the meeting when its signaling
    /// cannot be relayed there (the relay's Redis subscription is down).
    pub fn elsewhere_error(node_id: &str, public_url: &str) -> Error {
        let at = if public_url.is_empty() {
            String::new()
        } else {
            format!(" ({public_url})")
        };
        Error::new(
            ErrorCode::MeetingElsewhere,
            format!("this meeting runs on node {node_id}{at}, which cannot be reached from here now; connect there"),
        )
    }
}

/// The edge's end of a relayed session, for the socket's reader: client frames (their JSON
/// text) go in, in order (bounded: a send waits while the relay publishes); it closes once the
/// session is over, and dropping it hangs the session up.
pub type RelayFrames = tokio::sync::mpsc::Sender<String>;

/// Where meetings live, and which nodes exist.
///
/// A boxed future rather than an `async fn`: the server holds the router as `dyn Router`.
pub trait Router: Send + Sync + 'static {
    /// Where `meeting_id`'s task must run, placing the meeting if no live node has it.
    /// Asked only when the meeting is not already live on this node.
    fn place<'a>(&'a self, meeting_id: &'a str) -> BoxFuture<'a, Result<Route, Error>>;

    /// This node's id in the cluster; `None` for a node on its own.
    fn node_id(&self) -> Option<&str>;

    /// The live nodes, as the registry has them now (empty for a node on its own).
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeReport>, Error>>;

    /// Marks this node draining in the registry at once: placement gives it nothing new.
    fn drain(&self) -> BoxFuture<'_, ()>;

    /// Leaves the cluster at a clean stop: the registry forgets this node at once.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// Opens a relayed session (docs/ARCHITECTURE.md, "Signaling relay") for socket `conn` of
    /// this node, whose meeting runs on `owner`: sends its `join` (`token`, `meeting_id` as the
    /// client sent them) and waits for the owner's answer. On `joined` (already queued to
    /// `outbox`, as every later server frame will be) returns where the socket's frames go;
    /// the owner's refusal comes back as its error. Without a relay: `meeting_elsewhere`.
    #[allow(clippy::too_many_arguments)]
    fn relay_open<'a>(
        &'a self,
        owner: &'a str,
        public_url: &'a str,
        conn: u64,
        token: String,
        meeting_id: Option<String>,
        outbox: crate::outbox::Outbox,
    ) -> BoxFuture<'a, Result<RelayFrames, Error>> {
        let _ = (conn, token, meeting_id, outbox);
        Box::pin(std::future::ready(Err(Route::elsewhere_error(owner, public_url))))
    }

    /// The live queue's row of `meeting_id` (who is in the call, who waits in the lobby),
    /// asked of the node it is placed on, for a staff view here: `None` when it is placed
    /// nowhere, here (the caller asks the task here itself), or is not live on its node. A
    /// node on its own has no other node to ask: always `None`.
    fn queue_row<'a>(&'a self, meeting_id: &'a str) -> BoxFuture<'a, Result<Option<relay::QueueRow>, Error>> {
        let _ = meeting_id;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// A lobby action from the queue (REST, staff `by`, already checked here) for a meeting
    /// not live on this node, carried out by the node it is placed on, through the relay:
    /// that meeting task's answer. `not_found` when no other node runs it (always, for a node
    /// on its own: the meeting is not live).
    fn lobby_action<'a>(
        &'a self,
        meeting_id: &'a str,
        by: String,
        action: gatehouse_signaling::room::LobbyAction,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let _ = (meeting_id, by, action);
        Box::pin(std::future::ready(Err(not_waiting())))
    }
}

/// The refusal of a lobby action for a meeting live on no node.
pub fn not_waiting() -> Error {
    Error::new(ErrorCode::NotFound, "nobody is waiting in this meeting")
}

/// One node is the whole Gatehouse: every meeting is here, and no Redis is touched.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRouter;

impl Router for LocalRouter {
    fn place<'a>(&'a self, _meeting_id: &'a str) -> BoxFuture<'a, Result<Route, Error>> {
        Box::pin(std::future::ready(Ok(Route::Here)))
    }

    fn node_id(&self) -> Option<&str> {
        None
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeReport>, Error>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A fresh node id: `n-` and 12 random characters, drawn at every start.
pub fn new_node_id() -> String {
    format!("n-{}", crate::ids::random_code(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_on_its_own_runs_every_meeting_and_knows_no_cluster() {
        let r = LocalRouter;
        assert_eq!(r.place("m-1").await.unwrap(), Route::Here);
        assert_eq!(r.node_id(), None);
        assert!(r.nodes().await.unwrap().is_empty());
        assert_eq!(r.queue_row("m-1").await.unwrap(), None, "no other node to ask");
        let e = r
            .lobby_action(
                "m-1",
                "staff:olga".into(),
                gatehouse_signaling::room::LobbyAction::AdmitAll,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "nobody waits anywhere else");
        r.drain().await;
        r.stop().await;
    }

    #[test]
    fn node_ids_differ_at_every_start() {
        let (a, b) = (new_node_id(), new_node_id());
        assert!(a.starts_with("n-") && a.len() == 14, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_refusal_names_the_owner_and_where_to_reach_it() {
        let e = Route::elsewhere_error("n-abc", "https://b.example");
        assert_eq!(e.code, ErrorCode::MeetingElsewhere);
        assert!(
            e.message.contains("n-abc") && e.message.contains("https://b.example"),
            "{}",
            e.message
        );
        assert!(!Route::elsewhere_error("n-abc", "").message.contains("()"));
    }
}
