//! Configuration: command-line flags, then `GATEHOUSE_*` environment
//! variables, then a TOML file, then defaults; resolved and checked once at start.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

/// Flags of `gatehouse serve` (each also readable from the environment).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and env vars win over it).
    #[arg(long, env = "GATEHOUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTPS and WSS address [default: 0.0.0.0:8443].
    #[arg(long, env = "GATEHOUSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database, signing key and generated certificates [default: ./gatehouse-data].
    #[arg(long, env = "GATEHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base URL guests open, used in links [default: https://localhost:<port>].
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain to present (with --tls-key). Without it a development certificate is made.
    #[arg(long, env = "GATEHOUSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "GATEHOUSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The one UDP address all media uses [default: 0.0.0.0:7882].
    #[arg(long, env = "GATEHOUSE_MEDIA_BIND")]
    pub media_bind: Option<SocketAddr>,
    /// Public IP to advertise for media when the server sits behind 1:1 NAT.
    #[arg(long, env = "GATEHOUSE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// Extra STUN/TURN URLs handed to clients (repeatable), e.g. stun:stun.example.org:3478.
    #[arg(long = "ice-server", env = "GATEHOUSE_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// Media shards (threads); 0 means one per core [default: 0].
    #[arg(long, env = "GATEHOUSE_MEDIA_SHARDS")]
    pub media_shards: Option<usize>,
    /// Lifetime of guest tokens, seconds [default: 7200].
    #[arg(long, env = "GATEHOUSE_GUEST_TOKEN_TTL")]
    pub guest_token_ttl_secs: Option<u64>,
    /// Link redemptions allowed per client address per minute [default: 20].
    #[arg(long, env = "GATEHOUSE_REDEEM_PER_MINUTE")]
    pub redeem_per_minute: Option<u32>,
    /// Signaling connections held at once; more are refused with 503 `server_busy` [default: 10000].
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Signaling connections held at once from one client address; more are refused with
    /// 429 `rate_limited` [default: 50].
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Directory of the web client to serve instead of the built-in one (for development).
    #[arg(long, env = "GATEHOUSE_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Require `Authorization: Bearer <this>` on /metrics (Prometheus `bearer_token`). Unset: /metrics is open.
    #[arg(long, env = "GATEHOUSE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Test hook, hidden from --help: share of forwarded media packets the SFU drops
    /// on purpose (0 to 1), so the load tester's loss figures can be checked.
    #[arg(long, env = "GATEHOUSE_MEDIA_DROP_RATE", hide = true)]
    pub media_drop_rate: Option<f64>,
}

/// The same settings as they may appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    media_bind: Option<SocketAddr>,
    public_ip: Option<IpAddr>,
    ice_servers: Option<Vec<String>>,
    media_shards: Option<usize>,
    guest_token_ttl_secs: Option<u64>,
    redeem_per_minute: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    log_format: Option<String>,
    web_dir: Option<PathBuf>,
    media_drop_rate: Option<f64>,
    metrics_token: Option<String>,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_url: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub media_bind: SocketAddr,
    pub public_ip: Option<IpAddr>,
    pub ice_servers: Vec<String>,
    pub media_shards: usize,
    pub guest_token_ttl_secs: u64,
    pub redeem_per_minute: u32,
    /// Signaling connections held at once, in total and per client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub json_logs: bool,
    pub web_dir: Option<PathBuf>,
    /// Bearer token /metrics requires, if any.
    pub metrics_token: Option<String>,
    /// Share of forwarded media packets the SFU drops on purpose, in [0, 1]: a test
    /// hook for loss measurements (the load tester's tests); 0 in production.
    pub media_drop_rate: f64,
}

pub const DEFAULT_DATA_DIR: &str = "gatehouse-data";

impl Config {
    /// Flags over env (clap does both) over file over defaults.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443)));
        let log_format = args.log_format.or(file.log_format).unwrap_or_else(|| "text".into());
        let json_logs = match log_format.as_str() {
            "json" => true,
            "text" => false,
            other => anyhow::bail!("log format must be `text` or `json`, not `{other}`"),
        };
        let public_url = args
            .public_url
            .or(file.public_url)
            .unwrap_or_else(|| format!("https://localhost:{}", listen.port()))
            .trim_end_matches('/')
            .to_owned();
        url::Url::parse(&public_url).with_context(|| format!("public URL `{public_url}` is not a URL"))?;
        let tls_cert = args.tls_cert.or(file.tls_cert);
        let tls_key = args.tls_key.or(file.tls_key);
        anyhow::ensure!(
            tls_cert.is_some() == tls_key.is_some(),
            "set both tls_cert and tls_key, or neither"
        );
        let ice_servers = if args.ice_servers.is_empty() {
            file.ice_servers.unwrap_or_default()
        } else {
            args.ice_servers
        };
        for url in &ice_servers {
            anyhow::ensure!(
                ["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| url.starts_with(p)),
                "ICE server `{url}` must start with stun:, stuns:, turn: or turns:"
            );
        }
        let guest_token_ttl_secs = args.guest_token_ttl_secs.or(file.guest_token_ttl_secs).unwrap_or(7200);
        anyhow::ensure!(
            (60..=7 * 24 * 3600).contains(&guest_token_ttl_secs),
            "guest token TTL must be 60 s to 7 days"
        );
        let media_drop_rate = args.media_drop_rate.or(file.media_drop_rate).unwrap_or(0.0);
        anyhow::ensure!(
            (0.0..=1.0).contains(&media_drop_rate),
            "media drop rate must be between 0 and 1"
        );
        Ok(Config {
            listen,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            public_url,
            tls_cert,
            tls_key,
            media_bind: args
                .media_bind
                .or(file.media_bind)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7882))),
            public_ip: args.public_ip.or(file.public_ip),
            ice_servers,
            media_shards: args.media_shards.or(file.media_shards).unwrap_or(0),
            guest_token_ttl_secs,
            redeem_per_minute: args.redeem_per_minute.or(file.redeem_per_minute).unwrap_or(20).max(1),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(10_000).max(1),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(50)
                .max(1),
            json_logs,
            web_dir: args.web_dir.or(file.web_dir),
            media_drop_rate,
            metrics_token: args.metrics_token.or(file.metrics_token).filter(|t| !t.is_empty()),
        })
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let c = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.public_url, "https://localhost:8443");
        let path = std::env::temp_dir().join(format!("gatehouse-cfg-{}.toml", crate::ids::random_code(8)));
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\nice_servers = [\"stun:stun.example.org\"]\n",
        )
        .unwrap();
        let c = Config::resolve(ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.listen.port(), c.json_logs, c.ice_servers.len()), (9000, true, 1));
        let c = Config::resolve(ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9100, "flags win over the file");
        std::fs::write(&path, "lisen = 1\n").unwrap();
        assert!(
            Config::resolve(ServeArgs {
                config: Some(path.clone()),
                ..Default::default()
            })
            .is_err(),
            "typos are errors"
        );
        let _ = std::fs::remove_file(path);
        assert_eq!(c.media_drop_rate, 0.0, "the drop hook is off unless asked for");
        let c = Config::resolve(ServeArgs {
            media_drop_rate: Some(0.1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.media_drop_rate, 0.1);
        assert!(
            Config::resolve(ServeArgs {
                media_drop_rate: Some(1.5),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Config::resolve(ServeArgs {
                ice_servers: vec!["http://x".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
