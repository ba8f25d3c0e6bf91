//! The Redis router: the node registry (a beat every second, a record with a TTL), the
//! placement of meetings (one Lua script, so racing nodes place a meeting once), and the
//! refresh of this node's placements. Redis holds nothing durable here: liveness,
//! placements, and later frames in flight (docs/ARCHITECTURE.md, "Several nodes").
//!
//! Keys: `gatehouse:nodes` (set of node ids), `gatehouse:node:<id>` (JSON [`NodeReport`],
//! TTL [`NODE_TTL_MS`]), `gatehouse:meeting:<id>:node` (owner's id, TTL [`PLACEMENT_TTL_MS`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_signaling::{Error, ErrorCode};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::load::LoadSampler;
use super::placement::{self, Load, NodeReport};
use super::{HEARTBEAT_MS, NODE_TTL_MS, PLACEMENT_TTL_MS, Route, Router};
use crate::ids::now_ms;
use crate::server::AppState;

const NODES: &str = "gatehouse:nodes";
const NODE_PREFIX: &str = "gatehouse:node:";

/// A Redis command that takes longer than this fails: a join waits no longer for a placement.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Places a meeting unless a live node has it: returns the owner. KEYS[1] the placement;
/// ARGV: the chosen node, the TTL in ms, the prefix of node keys. A placement naming a
/// node whose registry key is gone (dead) is taken over in the same step.
const PLACE: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Keeps this node's placements: each of KEYS that names ARGV[1], or names nobody (a
/// meeting recovered after a crash, or one whose placement expired while Redis was away),
/// gets the TTL ARGV[2] again. Returns how many names another node (a split to resolve
/// when re-placement exists; logged).
const REFRESH: &str = r"
local elsewhere = 0
for _, k in ipairs(KEYS) do
  local owner = redis.call('GET', k)
  if not owner or owner == ARGV[1] then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  else
    elsewhere = elsewhere + 1
  end
end
return elsewhere
";

fn placement_key(meeting_id: &str) -> String {
    format!("gatehouse:meeting:{meeting_id}:node")
}

fn node_key(node_id: &str) -> String {
    format!("{NODE_PREFIX}{node_id}")
}

fn unreachable(e: &redis::RedisError) -> Error {
    tracing::debug!(error = %e, "redis");
    Error::new(
        ErrorCode::ServerBusy,
        "the cluster's Redis cannot be reached; new meetings cannot be placed now, retry shortly",
    )
}

/// This node's membership of a cluster through one Redis.
pub struct RedisRouter {
    /// Drawn at start: a restarted node is a new node.
    pub node_id: String,
    public_url: String,
    media_addr: String,
    /// Reconnects by itself; a clone per call is cheap (a handle to one multiplexed connection).
    conn: ConnectionManager,
    place: redis::Script,
    refresh: redis::Script,
    /// Whether the last beat failed: the loss and the recovery are logged once each.
    lost: AtomicBool,
    /// Set by `drain`: every record from then on says so.
    draining: AtomicBool,
    /// The load of the last beat, for the record `drain` writes at once.
    last_load: std::sync::Mutex<Load>,
    /// The live nodes as the last beat read them (the cluster's gauges).
    view: std::sync::Mutex<Vec<NodeReport>>,
    /// The signaling relay to and from the other nodes.
    pub relay: Arc<super::relay_shell::Relay>,
}

impl RedisRouter {
    /// Connects to `url` (the node refuses to start without its Redis: it could place nothing).
    pub async fn connect(url: &str, public_url: String, media_addr: String) -> anyhow::Result<Arc<RedisRouter>> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(1))
            // One quick retry per request, not six with backoff: with Redis away a join is
            // refused at once rather than after seconds; the next request (or beat) tries again.
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Redis at the redis_url: {e}"))?;
        let node_id = super::new_node_id();
        let relay = super::relay_shell::Relay::new(node_id.clone(), client, conn.clone());
        Ok(Arc::new(RedisRouter {
            node_id,
            relay,
            public_url,
            media_addr,
            conn,
            place: redis::Script::new(PLACE),
            refresh: redis::Script::new(REFRESH),
            lost: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            last_load: std::sync::Mutex::new(Load::default()),
            view: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Writes this node's record (with its TTL) and keeps its meetings' placements.
    pub async fn beat(&self, load: Load, live_meetings: &[String]) -> redis::RedisResult<()> {
        *self.last_load.lock().unwrap_or_else(|p| p.into_inner()) = load;
        let report = NodeReport {
            node_id: self.node_id.clone(),
            public_url: self.public_url.clone(),
            media_addr: self.media_addr.clone(),
            load,
            draining: self.draining.load(Ordering::Relaxed),
            at_ms: now_ms(),
        };
        let json = serde_json::to_string(&report).expect("a report serialises");
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(node_key(&self.node_id))
            .arg(json)
            .arg("PX")
            .arg(NODE_TTL_MS)
            .ignore()
            .sadd(NODES, &self.node_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        if !live_meetings.is_empty() {
            let mut call = self.refresh.prepare_invoke();
            for id in live_meetings {
                call.key(placement_key(id));
            }
            let elsewhere: u64 = call
                .arg(&self.node_id)
                .arg(PLACEMENT_TTL_MS)
                .invoke_async(&mut conn)
                .await?;
            if elsewhere > 0 {
                tracing::warn!(elsewhere, "meetings live here are placed on another node");
            }
        }
        Ok(())
    }

    /// The live nodes as the last beat read them.
    pub fn view(&self) -> Vec<NodeReport> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the last beat reached Redis.
    pub fn redis_up(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
    }

    /// The node `meeting_id` is placed on, unless it is this one or none.
    async fn owner_elsewhere(&self, meeting_id: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = conn.get(placement_key(meeting_id)).await.map_err(|e| unreachable(&e))?;
        Ok(owner.filter(|o| *o != self.node_id))
    }

    async fn live_nodes(&self) -> redis::RedisResult<Vec<NodeReport>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(NODES).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let records: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, record) in ids.into_iter().zip(records) {
            match record.and_then(|r| serde_json::from_str::<NodeReport>(&r).ok()) {
                Some(report) => live.push(report),
                None => dead.push(id),
            }
        }
        if !dead.is_empty() {
            // Its key expired: the node is dead (or wrote something we cannot read).
            let _: redis::RedisResult<()> = conn.srem(NODES, &dead).await;
        }
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(live)
    }
}

impl Router for RedisRouter {
    fn place<'a>(&'a self, meeting_id: &'a str) -> BoxFuture<'a, Result<Route, Error>> {
        Box::pin(async move {
            let live = self.live_nodes().await.map_err(|e| unreachable(&e))?;
            let Some(choice) = placement::choose(&live) else {
                return Err(Error::new(
                    ErrorCode::ServerBusy,
                    "no node of the cluster takes new meetings now; retry shortly",
                ));
            };
            let mut conn = self.conn.clone();
            let owner: String = self
                .place
                .key(placement_key(meeting_id))
                .arg(&choice.node_id)
                .arg(PLACEMENT_TTL_MS)
                .arg(NODE_PREFIX)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unreachable(&e))?;
            if owner == self.node_id {
                return Ok(Route::Here);
            }
            let public_url = live
                .iter()
                .find(|n| n.node_id == owner)
                .map(|n| n.public_url.clone())
                .unwrap_or_default();
            tracing::info!(%meeting_id, %owner, "meeting placed on another node");
            Ok(Route::Elsewhere {
                node_id: owner,
                public_url,
            })
        })
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.node_id)
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeReport>, Error>> {
        Box::pin(async move { self.live_nodes().await.map_err(|e| unreachable(&e)) })
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.draining.store(true, Ordering::Relaxed);
            let load = *self.last_load.lock().unwrap_or_else(|p| p.into_inner());
            // The meetings' placements are kept by the next beat; this one is only the mark.
            match self.beat(load, &[]).await {
                Ok(()) => tracing::info!(node_id = %self.node_id, "draining: placement gives this node nothing new"),
                Err(e) => tracing::warn!(error = %e, "could not mark the node draining now; the next beat will"),
            }
        })
    }

    fn relay_open<'a>(
        &'a self,
        owner: &'a str,
        public_url: &'a str,
        conn: u64,
        token: String,
        meeting_id: Option<String>,
        outbox: crate::outbox::Outbox,
    ) -> BoxFuture<'a, Result<super::RelayFrames, Error>> {
        Box::pin(self.relay.open(owner, public_url, conn, token, meeting_id, outbox))
    }

    fn queue_row<'a>(&'a self, meeting_id: &'a str) -> BoxFuture<'a, Result<Option<super::relay::QueueRow>, Error>> {
        Box::pin(async move {
            match self.owner_elsewhere(meeting_id).await? {
                Some(owner) => self.relay.ask(&owner, meeting_id).await,
                None => Ok(None),
            }
        })
    }

    fn lobby_action<'a>(
        &'a self,
        meeting_id: &'a str,
        by: String,
        action: gatehouse_signaling::room::LobbyAction,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match self.owner_elsewhere(meeting_id).await? {
                Some(owner) => self.relay.act(&owner, meeting_id, by, action).await,
                None => Err(super::not_waiting()),
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let left: redis::RedisResult<()> = redis::pipe()
                .del(node_key(&self.node_id))
                .ignore()
                .srem(NODES, &self.node_id)
                .ignore()
                .query_async(&mut conn)
                .await;
            match left {
                Ok(()) => tracing::info!(node_id = %self.node_id, "left the cluster"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not leave the cluster; the registry forgets this node in 3 s")
                }
            }
        })
    }
}

/// Beats once now (the node is in the registry before it takes its first connection, so
/// it can place meetings on itself), then every [`HEARTBEAT_MS`] until the server stops.
pub async fn start_heartbeat(router: Arc<RedisRouter>, state: Arc<AppState>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut sampler = LoadSampler::new(cores);
    // Listening on its relay channel before its first beat: a node placement can pick
    // already hears relayed joins.
    router.relay.start(state.clone(), Duration::from_secs(5)).await;
    beat(&router, &state, &mut sampler).await;
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => beat(&router, &state, &mut sampler).await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    });
}

async fn beat(router: &RedisRouter, state: &AppState, sampler: &mut LoadSampler) {
    let participants = (state.metrics.participants_in_call.get() + state.metrics.participants_in_lobby.get()).max(0);
    let load = sampler.sample(
        now_ms(),
        participants as u64,
        state.sfu.stats().forwarded_packets,
        crate::metrics::process_cpu_seconds(),
    );
    let beaten = match router.beat(load, &state.live.live_ids()).await {
        Ok(()) => router.live_nodes().await,
        Err(e) => Err(e),
    };
    match beaten {
        Ok(nodes) => {
            let live: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
            router.relay.peers_alive(&live);
            *router.view.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
            if router.lost.swap(false, Ordering::Relaxed) {
                tracing::info!(node_id = %router.node_id, "Redis is back: beating and placing again");
            }
        }
        Err(e) => {
            if !router.lost.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    node_id = %router.node_id, error = %e,
                    "Redis cannot be reached: meetings here go on, new ones are refused until it is back"
                );
            }
        }
    }
}
