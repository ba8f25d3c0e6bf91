//! The gateway's HTTP side: REST API, signaling WebSocket and the web client,
//! over one rustls port, with graceful shutdown.

pub mod api;
pub mod appointments;
pub mod assets;
pub mod auth;
pub mod body;
pub mod booking;
pub mod error;
pub mod headers;
pub mod limits;
pub mod live;
pub mod queue;
pub mod webhooks;
pub mod ws;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use gatehouse_signaling::ratelimit::TokenBucket;
use gatehouse_signaling::token::TokenKeys;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::GatewayMetrics;
use crate::sfu::{Sfu, SfuConfig};
use crate::store::Store;
use crate::turn::IceServers;
use live::{LiveMeetings, Services};

/// Everything a request handler may need.
pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    pub keys: TokenKeys,
    pub sfu: Sfu,
    /// The ICE servers handed out on entering the call (TURN credentials minted per participant).
    pub ice: Arc<IceServers>,
    pub live: Arc<LiveMeetings>,
    /// Where meetings live: this node alone, or the cluster through Redis (`--redis-url`).
    pub router: Arc<dyn crate::cluster::Router>,
    pub metrics: Arc<GatewayMetrics>,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// Flips to `true` once when the server begins to shut down.
    pub shutdown: watch::Receiver<bool>,
    /// Per-address pace of link redemptions.
    redeem_limits: Mutex<HashMap<IpAddr, TokenBucket>>,
    /// Signaling connections open now, in total and per address.
    pub connections: Arc<limits::ConnectionLimits>,
}

impl AppState {
    pub fn services(&self) -> Services {
        Services {
            store: self.store.clone(),
            sfu: self.sfu.clone(),
            ice: self.ice.clone(),
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            seat_hold_ms: self.config.seat_hold_secs() * 1000,
            router: self.router.clone(),
        }
    }

    /// Takes one redemption from this address's allowance.
    pub fn allow_redemption(&self, ip: IpAddr, now_ms: u64) -> bool {
        let per_minute = self.config.redeem_per_minute();
        let mut limits = self.redeem_limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.len() > 10_000 {
            limits.retain(|_, b| !b.is_idle(now_ms));
        }
        limits
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(per_minute, per_minute as f64 / 60.0, now_ms))
            .try_take(now_ms)
    }
}

/// `GET /metrics`: Prometheus text, behind a bearer token when one is configured.
async fn metrics_endpoint(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<String, error::ApiError> {
    if let Some(expected) = state.config.metrics_token() {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Constant time, so the token cannot be guessed byte by byte.
        let same = given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(error::ApiError::new(
                gatehouse_signaling::ErrorCode::Unauthorized,
                "metrics need the metrics token",
            ));
        }
    }
    Ok(state.metrics.render())
}

/// Reads the signing key from the data directory, making one on first run.
pub fn load_or_create_signing_key(data_dir: &std::path::Path) -> anyhow::Result<TokenKeys> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join("signing.key");
    let secret = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = vec![0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
            crate::tls::write_private(&path, &secret)?;
            tracing::info!(path = %path.display(), "generated a new token signing key");
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(TokenKeys::new(&secret, "gatehouse")?)
}

/// The name of the token-signing key in a shared store's `gatehouse_secrets`.
#[cfg(feature = "cluster")]
const SIGNING_KEY_SECRET: &str = "token_signing_key";

/// The token-signing key of a cluster, kept in its shared store so that every node verifies
/// every other node's tokens: the first node to start makes it (or brings the one in its
/// data directory, so tokens a single node issued before it joined PostgreSQL stay valid);
/// every later node reads it. Blocks: call it off the runtime's threads.
#[cfg(feature = "cluster")]
pub fn shared_signing_key(store: &Store, data_dir: &std::path::Path) -> anyhow::Result<TokenKeys> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let local = data_dir.join("signing.key");
    let from_file = match std::fs::read(&local) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", local.display())),
    };
    let offered = from_file.clone().unwrap_or_else(|| {
        let mut secret = vec![0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
        secret
    });
    let stored = store
        .shared_secret(SIGNING_KEY_SECRET, || b64.encode(&offered))
        .map_err(|e| anyhow::anyhow!("reading the signing key from the database: {}", e.message))?;
    let secret = b64
        .decode(stored.as_bytes())
        .context("the signing key in the database is not base64")?;
    if from_file.as_ref().is_some_and(|f| *f != secret) {
        tracing::warn!(
            path = %local.display(),
            "this data directory has a signing key of its own: the cluster's key from the database \
             is used instead (tokens signed with the local key are not accepted)"
        );
    }
    Ok(TokenKeys::new(&secret, "gatehouse")?)
}

/// The store and the token-signing key: SQLite and a key file in the data directory, or,
/// with `database_url`, the cluster's PostgreSQL and the key kept there.
async fn open_store(config: &Config, data_dir: &std::path::Path) -> anyhow::Result<(Store, TokenKeys)> {
    let Some(url) = config.database_url() else {
        let keys = load_or_create_signing_key(data_dir)?;
        let store = Store::open(&data_dir.join("gatehouse.db"))?;
        return Ok((store, keys));
    };
    #[cfg(feature = "cluster")]
    {
        let (url, data_dir) = (url.to_owned(), data_dir.to_owned());
        tokio::task::spawn_blocking(move || {
            let store = Store::open_postgres(&url)?;
            let keys = shared_signing_key(&store, &data_dir)?;
            Ok((store, keys))
        })
        .await?
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = url;
        anyhow::bail!("database_url is set, but this gateway was built without the `cluster` feature")
    }
}

/// The address to advertise for media bound to a wildcard with no public IP
/// configured: the source address of the default route (no packet is sent),
/// else loopback.
fn advertised_media_ip(bind: SocketAddr) -> Option<IpAddr> {
    if !bind.ip().is_unspecified() {
        return None;
    }
    let probe = |local: &str, remote: &str| {
        let socket = std::net::UdpSocket::bind(local).ok()?;
        socket.connect(remote).ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    };
    let ip = if bind.is_ipv4() {
        probe("0.0.0.0:0", "192.0.2.1:9")
    } else {
        probe("[::]:0", "[2001:db8::1]:9")
    };
    let ip = ip.unwrap_or(if bind.is_ipv4() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
    });
    tracing::info!(%ip, "media bound to a wildcard; advertising this address (set public_ip to override)");
    Some(ip)
}

/// The Redis router behind `--redis-url` (also returned as itself, for its heartbeat), else
/// the local one.
#[cfg(feature = "cluster")]
async fn cluster_router(
    config: &Config,
    media_addr: SocketAddr,
) -> anyhow::Result<(
    Arc<dyn crate::cluster::Router>,
    Option<Arc<crate::cluster::redis::RedisRouter>>,
)> {
    let Some(url) = config.redis_url() else {
        return Ok((Arc::new(crate::cluster::LocalRouter), None));
    };
    let router = crate::cluster::redis::RedisRouter::connect(url, config.public_url(), media_addr.to_string()).await?;
    let node_id = router.node_id.clone();
    if config.database_url().is_none() {
        tracing::warn!(
            %node_id,
            "cluster mode without database_url: this node joins the registry, places meetings and \
             relays signaling, but meetings, links and admissions stay in its own SQLite database, \
             which nodes on other machines cannot read: set database_url to the cluster's \
             PostgreSQL (README, \"Several nodes\")"
        );
    }
    Ok((router.clone(), Some(router)))
}

#[cfg(not(feature = "cluster"))]
async fn cluster_router(
    config: &Config,
    _media_addr: SocketAddr,
) -> anyhow::Result<(Arc<dyn crate::cluster::Router>, ())> {
    anyhow::ensure!(
        config.redis_url().is_none(),
        "redis_url is set, but this gateway was built without the `cluster` feature"
    );
    Ok((Arc::new(crate::cluster::LocalRouter), ()))
}

/// A running gateway.
pub struct Running {
    /// The bound HTTPS address.
    pub addr: SocketAddr,
    /// The bound media address.
    pub media_addr: SocketAddr,
    /// CA file clients can trust when the certificate was generated.
    pub ca_file: Option<PathBuf>,
    pub state: Arc<AppState>,
    handle: axum_server::Handle<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, tells every socket, and waits (up to 10 s) for them to finish.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.shutdown_tx.send(true);
        self.handle.graceful_shutdown(Some(Duration::from_secs(10)));
        let _ = self.task.await;
        // Each closed socket made its meeting release its media and log the departure;
        // every meeting task ends once nobody is connected (held seats do not count now).
        if !self.state.live.wait_finished(Duration::from_secs(5)).await {
            tracing::warn!(
                live = self.state.live.len(),
                "meeting tasks still running after 5 s; stopping anyway"
            );
        }
        self.state.sfu.shutdown().await;
        self.state.router.stop().await;
        tracing::info!("stopped");
    }

    /// Drains (`--drain`): no new meeting starts here (the cluster's registry marks the node
    /// draining, so placement skips it) and this returns once every meeting running here
    /// has ended. Then call [`Running::shutdown`].
    pub async fn drain(&self) {
        self.state.live.start_draining();
        self.state.router.drain().await;
        tracing::info!(
            live = self.state.live.len(),
            "draining: waiting for the meetings here to end"
        );
        self.state.live.wait_idle().await;
        tracing::info!("drained: no meeting left");
    }

    /// Waits for the server to stop on its own (it does not, short of an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await??;
        Ok(())
    }
}

/// Starts the gateway: store, keys, TLS, media plane, and the HTTPS listener.
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    crate::tls::install_crypto_provider();
    // Bound first, so that with port 0 the default public URL (in links and the banner)
    // names the port actually taken.
    let listener = std::net::TcpListener::bind(config.listen())
        .with_context(|| format!("binding the HTTPS address {}", config.listen()))?;
    listener.set_nonblocking(true)?;
    if config.public_url.is_none() {
        config.listen = Some(listener.local_addr()?);
    }
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let (store, keys) = open_store(&config, &data_dir).await?;
    let store = Arc::new(store);
    // Before anything can write an event: which endpoints its deliveries go to.
    let webhook_settings = config.webhooks()?;
    webhooks::sync_endpoints(&store, &webhook_settings).await?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        },
        _ => {
            let host = url::Url::parse(&config.public_url())?.host_str().map(str::to_owned);
            crate::tls::ensure_dev_certificate(&data_dir.join("tls"), &host.into_iter().collect::<Vec<_>>())?
        }
    };
    // HSTS only for the operator's own certificate (a generated one comes with its CA).
    let security_headers = Arc::new(headers::SecurityHeaders::new(&config.public_url(), tls.ca.is_none()));
    let rustls_config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .with_context(|| format!("loading TLS certificate {}", tls.cert.display()))?;

    let sfu = Sfu::start(SfuConfig {
        bind: config.media_bind(),
        tcp_bind: Some(config.media_tcp_bind()),
        public_ip: config.public_ip.or_else(|| advertised_media_ip(config.media_bind())),
        shards: config.media_shards(),
        drop_probability: config.media_drop_rate(),
        split_at: config.media_split_at(),
        coalesce: config.media_coalesce(),
    })
    .context("starting the media plane")?;
    let media_addr = sfu.local_addr();

    let (router, redis_router) = cluster_router(&config, media_addr).await?;

    let metrics = Arc::new(GatewayMetrics::new());
    metrics
        .register(Box::new(crate::metrics::SfuCollector::new(sfu.clone())))
        .context("registering the media metrics")?;
    #[cfg(feature = "cluster")]
    if let Some(redis_router) = &redis_router {
        metrics
            .register(Box::new(crate::cluster::metrics::ClusterCollector::new(
                redis_router.clone(),
            )))
            .context("registering the cluster metrics")?;
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        config: config.clone(),
        store,
        keys,
        sfu,
        ice: Arc::new(IceServers::new(config.ice_servers(), config.turn())),
        live: Arc::new(LiveMeetings::default()),
        router,
        metrics,
        next_conn: AtomicU64::new(1),
        shutdown: shutdown_rx,
        redeem_limits: Mutex::new(HashMap::new()),
        connections: limits::ConnectionLimits::new(config.max_connections(), config.max_connections_per_ip()),
    });

    // Before the first connection: a guest who comes back must find its held seat. Not in a
    // cluster: there the store's open attendances are those of meetings live on other nodes
    // (recovering them here would close their staff's attendances under them); a meeting
    // whose node died is taken over where it is placed next (`LiveMeetings::take_over`).
    let held = if state.router.node_id().is_some() {
        0
    } else {
        state
            .live
            .recover(&state.services())
            .await
            .context("recovering meetings from the store")?
    };
    if held > 0 {
        tracing::info!(held, "seats held after a crash for the guests who were in a call");
    }

    // In the registry before the first connection, so a join can place its meeting here.
    #[cfg(feature = "cluster")]
    if let Some(redis_router) = redis_router {
        // Staff views show the whole cluster: this node's queue changes go to the others,
        // theirs come here (only with the shared PostgreSQL store).
        let (store, shutdown) = (state.store.clone(), state.shutdown.clone());
        if tokio::task::spawn_blocking(move || store.share_queue_changes(shutdown))
            .await
            .unwrap_or(false)
        {
            tracing::info!("sharing queue changes with the other nodes (PostgreSQL LISTEN/NOTIFY)");
        }
        crate::cluster::redis::start_heartbeat(redis_router, state.clone()).await;
    }
    #[cfg(not(feature = "cluster"))]
    let () = redis_router;

    // Starts and no-show deadlines that passed while the gateway was down act now.
    appointments::spawn_clock(state.clone());
    queue::spawn_places(state.clone());
    // Events left undelivered by a crash or a stop are sent now.
    webhooks::spawn(state.clone(), webhook_settings).context("starting webhook delivery")?;

    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_endpoint))
        .route("/ws", get(ws::upgrade))
        .merge(api::router())
        .merge(appointments::router())
        .merge(webhooks::router())
        .merge(booking::router())
        .merge(crate::cluster::api::router())
        .merge(booking::pages(&config))
        .merge(assets::router(&config))
        // Routing failures answer like every other error: a status and `{code, message}`.
        .fallback(error::unknown_path)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(axum::middleware::from_fn_with_state(security_headers, headers::add))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state.clone());

    let handle = axum_server::Handle::new();
    // TCP_NODELAY: signaling is small frames in bursts (`joined`, `admitted` and
    // `subscribe_offer` leave within 2 ms); with Nagle the second waits for the client's
    // delayed ACK, 40 ms on Linux, on every join.
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, rustls_config)?
        .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()))
        .handle(handle.clone())
        .serve(app.into_make_service_with_connect_info::<SocketAddr>());
    let task = tokio::spawn(server);
    let addr = handle.listening().await.context("the HTTPS listener did not start")?;
    tracing::info!(%addr, %media_addr, public_url = %config.public_url(), "gateway listening");
    Ok(Running {
        addr,
        media_addr,
        ca_file: tls.ca,
        state,
        handle,
        shutdown_tx,
        task,
    })
}
