//! Configuration: command-line flags, then `GATEHOUSE_*` environment
//! variables, then a TOML file, then defaults; resolved and checked once at start.
//!
//! Every setting is declared once, as a field of [`Config`]: clap fills it from
//! its flag or environment variable, serde from the file key of the same name,
//! and its accessor applies the default. What was given wins field by field
//! (flags and environment over the file, see [`Config::resolve`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DATA_DIR: &str = "gatehouse-data";
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8443);
const DEFAULT_MEDIA_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 7882);

/// The longest `media_coalesce_us` accepted: 5 ms, a packet's longest wait in a pause.
const MAX_MEDIA_COALESCE: std::time::Duration = std::time::Duration::from_millis(5);

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The settings of `gatehouse serve`: each one a flag, an environment variable
/// and a key of the TOML file. Unset fields take the default their accessor names.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// TOML file with any of the settings below, under the same names with `_`
    /// (flags and env vars win over it).
    #[arg(long, env = "GATEHOUSE_CONFIG")]
    #[serde(skip)]
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
    /// UDP address of the media plane: media shard `i` binds this port + `i` (one port per
    /// shard; open the range in firewalls) [default: 0.0.0.0:7882].
    #[arg(long, env = "GATEHOUSE_MEDIA_BIND")]
    pub media_bind: Option<SocketAddr>,
    /// TCP address for ICE over TCP (RFC 6544), for guests whose networks block UDP: one
    /// port for every shard. Open it in firewalls beside the UDP range [default: the
    /// media bind address and port, over TCP].
    #[arg(long, env = "GATEHOUSE_MEDIA_TCP_BIND")]
    pub media_tcp_bind: Option<SocketAddr>,
    /// Public IP to advertise for media when the server sits behind 1:1 NAT.
    #[arg(long, env = "GATEHOUSE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// Extra STUN/TURN URLs handed to clients as they are, without credentials (repeatable), e.g.
    /// stun:stun.example.org:3478. For TURN with credentials per participant, see --turn-url.
    #[arg(long = "ice-server", env = "GATEHOUSE_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Option<Vec<String>>,
    /// TURN server URLs (repeatable) whose credentials the gateway mints per participant
    /// from --turn-secret, e.g. turn:turn.example.org:3478?transport=udp and
    /// turns:turn.example.org:443?transport=tcp (TURN over TLS for networks that let only
    /// TLS on 443 out). For coturn with `use-auth-secret`; see README, "TURN".
    #[arg(long = "turn-url", env = "GATEHOUSE_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Option<Vec<String>>,
    /// The TURN server's `static-auth-secret`, shared with it and nobody else (prefer the
    /// environment variable or the file to this flag: flags show in `ps`). Required with --turn-url.
    #[arg(long, env = "GATEHOUSE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// How long a participant's TURN credentials stay valid, seconds, 10 to 604800, counted from
    /// when they are minted (entering the call, an ICE restart). coturn accepts them for new relays
    /// until then (a relay set up before keeps working); every ICE restart and rejoin gets fresh
    /// ones [default: the guest-token lifetime].
    #[arg(long, env = "GATEHOUSE_TURN_TTL")]
    pub turn_ttl_secs: Option<u64>,
    /// Media shards (threads, one UDP port each); 0 means one per core [default: 0].
    #[arg(long, env = "GATEHOUSE_MEDIA_SHARDS")]
    pub media_shards: Option<usize>,
    /// Participants of one meeting a media shard takes before the meeting spreads over
    /// other shards too (its publishers' media relayed once to each), so one large webinar
    /// uses every core; at least 1. Only matters with more than one shard [default: 100].
    #[arg(long, env = "GATEHOUSE_MEDIA_SPLIT_AT")]
    pub media_split_at: Option<usize>,
    /// Receive coalescing, microseconds, 0 to 5000: a busy media shard (a few thousand
    /// datagrams a second) may pause up to this long after a turn, so the next turn reads
    /// several datagrams for one wake-up, as a network card's interrupt moderation does. It
    /// pauses only while pausing saves wake-ups (it keeps measuring both ways): with browsers
    /// sending independently, about 15 % less CPU in busy small calls, for at most this much
    /// latency (half of it on average). A quiet shard never pauses; 0 switches it off
    /// [default: 500].
    #[arg(long, env = "GATEHOUSE_MEDIA_COALESCE_US")]
    pub media_coalesce_us: Option<u64>,
    /// Lifetime of guest tokens, seconds, 60 to 604800 [default: 7200].
    #[arg(long, env = "GATEHOUSE_GUEST_TOKEN_TTL")]
    pub guest_token_ttl_secs: Option<u64>,
    /// How long a guest in the call whose signaling connection dropped keeps its seat, seconds,
    /// 1 to 3600: others see it stay (its media shown as disconnected) and a rejoin with the same
    /// token within this time resumes the call unseen; after it, others see it leave [default: 60].
    #[arg(long, env = "GATEHOUSE_SEAT_HOLD")]
    pub seat_hold_secs: Option<u64>,
    /// A signaling connection that sends nothing for this long, not even the pong a client's
    /// WebSocket library answers the server's ping with (sent every third of it), is taken as
    /// dropped (a closed laptop, a dead network), seconds, 3 to 600 [default: 30].
    #[arg(long, env = "GATEHOUSE_SIGNALING_SILENCE")]
    pub signaling_silence_secs: Option<u64>,
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
    /// Log format [default: text].
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Directory of the web client to serve instead of the built-in one (for development).
    #[arg(long, env = "GATEHOUSE_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Require `Authorization: Bearer <this>` on /metrics (Prometheus `bearer_token`). Unset: /metrics is open.
    #[arg(long, env = "GATEHOUSE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// TOML file of webhook endpoints that receive appointment events (`[[endpoint]]` with
    /// name, url, secret or secret_file, optional organization) and their retry policy
    /// (`[retry]`); see README, "Virtual appointments" [default: no webhooks].
    #[arg(long, env = "GATEHOUSE_WEBHOOKS_FILE")]
    pub webhooks_file: Option<PathBuf>,
    /// Redis of a cluster of nodes, e.g. redis://10.0.0.5:6379/0 (or unix:///run/redis.sock):
    /// the node joins its registry and places meetings through it (README, "Several nodes";
    /// a foundation: records are not shared yet). Unset: this node is the whole Gatehouse
    /// and no Redis is touched [default: unset].
    #[arg(long, env = "GATEHOUSE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PostgreSQL of a cluster of nodes, e.g. postgres://gatehouse:secret@10.0.0.6/gatehouse:
    /// meetings, links, admissions, the participation log, appointments, the webhook outbox
    /// and the token-signing key live there, shared by every node (README, "Several nodes").
    /// Unset: they live in SQLite in the data directory, and nothing else is needed
    /// [default: unset].
    #[arg(long, env = "GATEHOUSE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// On SIGTERM or SIGINT, drain instead of stopping at once: take no new meeting (in a
    /// cluster, the registry marks the node draining and placement skips it), let the
    /// meetings running here go on until they end, then stop. A second signal stops at once
    /// [default: false].
    #[arg(long, env = "GATEHOUSE_DRAIN", num_args = 0..=1, default_missing_value = "true")]
    pub drain: Option<bool>,
    /// Test hook, hidden from --help: share of forwarded media packets the SFU drops
    /// on purpose (0 to 1), so the load tester's loss figures can be checked.
    #[arg(long, env = "GATEHOUSE_MEDIA_DROP_RATE", hide = true)]
    pub media_drop_rate: Option<f64>,
}

impl Config {
    /// The settings given as flags and environment variables (`given`) over
    /// those of the file it names, checked. Defaults stay implicit (the accessors).
    pub fn resolve(given: Config) -> anyhow::Result<Config> {
        let resolved = match &given.config {
            Some(path) => load_file(path)?.overlaid_by(given),
            None => given,
        };
        resolved.check()?;
        Ok(resolved)
    }

    /// `self` with every field `over` sets replaced by `over`'s value.
    fn overlaid_by(self, over: Config) -> Config {
        let config = over.config.clone();
        let (serde_json::Value::Object(mut base), serde_json::Value::Object(over)) = (
            serde_json::to_value(&self).expect("settings serialise"),
            serde_json::to_value(&over).expect("settings serialise"),
        ) else {
            unreachable!("a struct serialises to an object");
        };
        base.extend(over.into_iter().filter(|(_, v)| !v.is_null()));
        let mut merged: Config =
            serde_json::from_value(serde_json::Value::Object(base)).expect("settings round-trip through JSON");
        merged.config = config;
        merged
    }

    fn check(&self) -> anyhow::Result<()> {
        let public_url = self.public_url();
        url::Url::parse(&public_url).with_context(|| format!("public URL `{public_url}` is not a URL"))?;
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "set both tls_cert and tls_key, or neither"
        );
        for url in self.ice_servers() {
            anyhow::ensure!(
                ["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| url.starts_with(p)),
                "ICE server `{url}` must start with stun:, stuns:, turn: or turns:"
            );
        }
        anyhow::ensure!(
            (60..=7 * 24 * 3600).contains(&self.guest_token_ttl_secs()),
            "guest token TTL must be 60 s to 7 days"
        );
        for url in self.turn_urls() {
            anyhow::ensure!(
                url.starts_with("turn:") || url.starts_with("turns:"),
                "TURN URL `{url}` must start with turn: or turns: (STUN-only servers go in ice_servers)"
            );
        }
        let has_secret = self.turn_secret.as_deref().is_some_and(|s| !s.is_empty());
        anyhow::ensure!(
            self.turn_urls().is_empty() || has_secret,
            "turn_urls needs turn_secret: the TURN server's static-auth-secret, from which each \
             participant's credentials are minted"
        );
        anyhow::ensure!(
            !self.turn_urls().is_empty() || !has_secret,
            "turn_secret is set but turn_urls is empty: name the TURN server's URLs too"
        );
        anyhow::ensure!(
            (10..=7 * 24 * 3600).contains(&self.turn_ttl_secs()),
            "TURN credential TTL must be 10 s to 7 days"
        );
        anyhow::ensure!(
            self.media_coalesce() <= MAX_MEDIA_COALESCE,
            "media_coalesce_us must be 0 to 5000 (microseconds)"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.seat_hold_secs()),
            "seat hold must be 1 s to 1 hour"
        );
        anyhow::ensure!(
            (3..=600).contains(&self.signaling_silence_secs()),
            "signaling silence must be 3 s to 10 minutes"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.media_drop_rate()),
            "media drop rate must be between 0 and 1"
        );
        self.webhooks()?;
        if let Some(redis) = self.redis_url() {
            let url = url::Url::parse(redis).with_context(|| "redis_url is not a URL".to_owned())?;
            anyhow::ensure!(
                ["redis", "unix", "redis+unix"].contains(&url.scheme()),
                "redis_url must start with redis://, unix:// or redis+unix:// (rediss:// is not \
                 built in: reach Redis over a private network or a local TLS tunnel)"
            );
        }
        if let Some(db) = self.database_url() {
            // The URL is only parsed here: it may hold a password, which no message repeats.
            let url = url::Url::parse(db).map_err(|_| anyhow::anyhow!("database_url is not a URL"))?;
            anyhow::ensure!(
                ["postgres", "postgresql"].contains(&url.scheme()),
                "database_url must start with postgres:// or postgresql:// (SQLite needs no URL: \
                 leave database_url unset)"
            );
        }
        Ok(())
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or(DEFAULT_LISTEN)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// Without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("https://localhost:{}", self.listen().port()))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn media_bind(&self) -> SocketAddr {
        self.media_bind.unwrap_or(DEFAULT_MEDIA_BIND)
    }

    pub fn media_tcp_bind(&self) -> SocketAddr {
        self.media_tcp_bind.unwrap_or_else(|| self.media_bind())
    }

    pub fn ice_servers(&self) -> &[String] {
        self.ice_servers.as_deref().unwrap_or_default()
    }

    pub fn turn_urls(&self) -> &[String] {
        self.turn_urls.as_deref().unwrap_or_default()
    }

    /// The TURN server clients are handed per-participant credentials for, if configured.
    pub fn turn(&self) -> Option<crate::turn::TurnRest> {
        let secret = self.turn_secret.as_deref().filter(|s| !s.is_empty())?;
        (!self.turn_urls().is_empty())
            .then(|| crate::turn::TurnRest::new(self.turn_urls().to_vec(), secret, self.turn_ttl_secs()))
    }

    /// Defaults to the guest-token lifetime: credentials minted on entering the call then
    /// outlive the token that let the participant in.
    pub fn turn_ttl_secs(&self) -> u64 {
        self.turn_ttl_secs.unwrap_or_else(|| self.guest_token_ttl_secs())
    }

    pub fn media_shards(&self) -> usize {
        self.media_shards.unwrap_or(0)
    }

    pub fn media_split_at(&self) -> usize {
        self.media_split_at.unwrap_or(crate::sfu::DEFAULT_SPLIT_AT).max(1)
    }

    /// A busy shard's longest pause (`media_coalesce_us`) is at most this: a packet waits up to it.
    pub fn media_coalesce(&self) -> std::time::Duration {
        self.media_coalesce_us
            .map_or(crate::sfu::coalesce::DEFAULT_WINDOW, std::time::Duration::from_micros)
    }

    pub fn guest_token_ttl_secs(&self) -> u64 {
        self.guest_token_ttl_secs.unwrap_or(7200)
    }

    pub fn seat_hold_secs(&self) -> u64 {
        self.seat_hold_secs
            .unwrap_or(gatehouse_signaling::room::REJOIN_GRACE_MS / 1000)
    }

    pub fn signaling_silence_secs(&self) -> u64 {
        self.signaling_silence_secs.unwrap_or(30)
    }

    pub fn redeem_per_minute(&self) -> u32 {
        self.redeem_per_minute.unwrap_or(20).max(1)
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(10_000).max(1)
    }

    pub fn max_connections_per_ip(&self) -> usize {
        self.max_connections_per_ip.unwrap_or(50).max(1)
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or_default()
    }

    /// The bearer token /metrics requires, if any (an empty one counts as none).
    pub fn metrics_token(&self) -> Option<&str> {
        self.metrics_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The webhook endpoints and retry policy (none without a webhooks file), read and checked.
    pub fn webhooks(&self) -> anyhow::Result<crate::webhooks::Webhooks> {
        match &self.webhooks_file {
            Some(path) => crate::webhooks::Webhooks::load(path),
            None => Ok(crate::webhooks::Webhooks::default()),
        }
    }

    /// Whether a stop signal drains the node first (`--drain`).
    pub fn drain(&self) -> bool {
        self.drain.unwrap_or(false)
    }

    /// The Redis of this node's cluster, if it is one (an empty setting counts as none).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }

    /// The PostgreSQL of this node's cluster, if its records are shared (an empty setting
    /// counts as none).
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref().filter(|u| !u.is_empty())
    }

    /// Share of forwarded media packets the SFU drops on purpose, in [0, 1]; 0 in production.
    pub fn media_drop_rate(&self) -> f64 {
        self.media_drop_rate.unwrap_or(0.0)
    }
}

fn load_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let c = Config::resolve(Config::default()).unwrap();
        assert_eq!(c.listen().port(), 8443);
        assert_eq!(c.public_url(), "https://localhost:8443");
        let path = std::env::temp_dir().join(format!("gatehouse-cfg-{}.toml", crate::ids::random_code(8)));
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\nice_servers = [\"stun:stun.example.org\"]\n",
        )
        .unwrap();
        let c = Config::resolve(Config {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (c.listen().port(), c.log_format(), c.ice_servers().len()),
            (9000, LogFormat::Json, 1)
        );
        assert_eq!(
            c.public_url(),
            "https://localhost:9000",
            "the default follows the file's listen"
        );
        let c = Config::resolve(Config {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen().port(), 9100, "flags win over the file");
        assert_eq!(
            c.log_format(),
            LogFormat::Json,
            "the file still fills what flags leave unset"
        );
        std::fs::write(&path, "lisen = 1\n").unwrap();
        assert!(
            Config::resolve(Config {
                config: Some(path.clone()),
                ..Default::default()
            })
            .is_err(),
            "typos are errors"
        );
        let _ = std::fs::remove_file(path);
        assert_eq!(c.media_drop_rate(), 0.0, "the drop hook is off unless asked for");
        assert_eq!(c.seat_hold_secs(), 60, "a dropped guest's seat is held for a minute");
        for (secs, ok) in [(0, false), (1, true), (3600, true), (3601, false)] {
            let c = Config::resolve(Config {
                seat_hold_secs: Some(secs),
                ..Default::default()
            });
            assert_eq!(c.is_ok(), ok, "seat_hold_secs = {secs}");
        }
        assert_eq!(Config::resolve(Config::default()).unwrap().signaling_silence_secs(), 30);
        for (secs, ok) in [(2, false), (3, true), (600, true), (601, false)] {
            let c = Config::resolve(Config {
                signaling_silence_secs: Some(secs),
                ..Default::default()
            });
            assert_eq!(c.is_ok(), ok, "signaling_silence_secs = {secs}");
        }
        let c = Config::resolve(Config {
            media_drop_rate: Some(0.1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.media_drop_rate(), 0.1);
        assert!(
            Config::resolve(Config {
                media_drop_rate: Some(1.5),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Config::resolve(Config {
                ice_servers: Some(vec!["http://x".into()]),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn turn_needs_turn_urls_and_a_secret_together() {
        let turn = |urls: &[&str], secret: Option<&str>| {
            Config::resolve(Config {
                turn_urls: Some(urls.iter().map(|u| u.to_string()).collect()),
                turn_secret: secret.map(str::to_owned),
                ..Default::default()
            })
        };
        let c = turn(
            &[
                "turn:turn.example.org:3478?transport=udp",
                "turns:turn.example.org:443?transport=tcp",
            ],
            Some("s3cret"),
        )
        .unwrap();
        assert_eq!(c.turn_ttl_secs(), c.guest_token_ttl_secs(), "the default TTL");
        let minted = c.turn().expect("configured").mint(&"p_x".into(), 1000);
        assert_eq!(minted.urls.len(), 2);
        assert_eq!(minted.username.as_deref(), Some("8200:p_x"));
        let err = turn(&["turn:turn.example.org:3478"], None).unwrap_err().to_string();
        assert!(err.contains("turn_secret"), "{err}");
        assert!(
            turn(&["turn:turn.example.org:3478"], Some("")).is_err(),
            "an empty secret is none"
        );
        assert!(turn(&["stun:stun.example.org"], Some("s")).is_err(), "STUN is not TURN");
        assert!(turn(&[], Some("s")).is_err(), "a secret alone does nothing");
        assert!(
            Config::resolve(Config::default()).unwrap().turn().is_none(),
            "off unless configured"
        );
        // 10 s at least: every ICE restart brings fresh credentials, so short ones are usable.
        for (ttl, ok) in [
            (9, false),
            (10, true),
            (7 * 24 * 3600, true),
            (7 * 24 * 3600 + 1, false),
        ] {
            let resolved = Config::resolve(Config {
                turn_ttl_secs: Some(ttl),
                ..Default::default()
            });
            assert_eq!(resolved.is_ok(), ok, "turn_ttl_secs = {ttl}");
        }
    }

    #[test]
    fn media_coalescing_defaults_to_half_a_millisecond_and_is_bounded() {
        let c = Config::resolve(Config::default()).unwrap();
        assert_eq!(c.media_coalesce(), std::time::Duration::from_micros(500));
        for (us, ok) in [(0, true), (5000, true), (5001, false)] {
            let resolved = Config::resolve(Config {
                media_coalesce_us: Some(us),
                ..Default::default()
            });
            assert_eq!(resolved.is_ok(), ok, "media_coalesce_us = {us}");
        }
        let c: Config = toml::from_str("media_coalesce_us = 0").unwrap();
        assert_eq!(c.media_coalesce(), std::time::Duration::ZERO);
    }

    #[test]
    fn redis_url_off_unless_given_and_checked() {
        assert_eq!(Config::resolve(Config::default()).unwrap().redis_url(), None);
        let with = |u: &str| {
            Config::resolve(Config {
                redis_url: Some(u.to_owned()),
                ..Default::default()
            })
        };
        assert_eq!(with("").unwrap().redis_url(), None, "empty is unset");
        for ok in [
            "redis://127.0.0.1:6379/0",
            "redis://:secret@10.0.0.5",
            "unix:///run/redis.sock",
        ] {
            assert_eq!(with(ok).unwrap().redis_url(), Some(ok));
        }
        for bad in ["rediss://10.0.0.5", "http://10.0.0.5:6379", "10.0.0.5:6379"] {
            assert!(with(bad).is_err(), "{bad}");
        }
        let path = std::env::temp_dir().join(format!("gatehouse-cfg-{}.toml", crate::ids::random_code(8)));
        std::fs::write(&path, "redis_url = \"redis://127.0.0.1:6390\"\n").unwrap();
        let c = Config::resolve(Config {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.redis_url(), Some("redis://127.0.0.1:6390"), "from the file");
    }

    #[test]
    fn database_url_off_unless_given_and_checked_without_repeating_it() {
        assert_eq!(Config::resolve(Config::default()).unwrap().database_url(), None);
        let with = |u: &str| {
            Config::resolve(Config {
                database_url: Some(u.to_owned()),
                ..Default::default()
            })
        };
        assert_eq!(with("").unwrap().database_url(), None, "empty is unset");
        for ok in [
            "postgres://gatehouse:secret@10.0.0.6/gatehouse",
            "postgresql://localhost:5433/gh?sslmode=disable",
        ] {
            assert_eq!(with(ok).unwrap().database_url(), Some(ok));
        }
        for bad in ["mysql://u:hunter2@db/gh", "sqlite:///tmp/x.db", "u:hunter2@db"] {
            let err = format!("{:#}", with(bad).expect_err(bad));
            assert!(err.contains("database_url"), "{err}");
            assert!(!err.contains("hunter2"), "the password is not repeated: {err}");
        }
        let path = std::env::temp_dir().join(format!("gatehouse-cfg-{}.toml", crate::ids::random_code(8)));
        std::fs::write(&path, "database_url = \"postgres://db.internal/gh\"\n").unwrap();
        let c = Config::resolve(Config {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.database_url(), Some("postgres://db.internal/gh"), "from the file");
    }

    #[test]
    fn drain_is_a_bare_flag_an_env_var_and_a_file_key() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        assert!(!Config::resolve(Config::default()).unwrap().drain());
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.config.drain());
        assert!(parse(&["serve", "--drain"]).unwrap(), "the flag alone");
        assert!(!parse(&["serve", "--drain", "false"]).unwrap());
        assert!(!parse(&["serve"]).unwrap());
        let c: Config = toml::from_str("drain = true").unwrap();
        assert!(c.drain());
    }

    /// The one declaration holds: every setting (but the file itself) has a flag, an
    /// environment variable `GATEHOUSE_*`, and a file key of its own name.
    #[test]
    fn every_setting_is_a_flag_an_env_var_and_a_file_key() {
        use clap::{Args as _, Command};
        let command = Config::augment_args(Command::new("serve"));
        let serde_json::Value::Object(keys) = serde_json::to_value(Config::default()).unwrap() else {
            panic!("an object");
        };
        let mut flags = 0;
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" {
                continue;
            }
            flags += 1;
            assert!(arg.get_long().is_some(), "{id} has a flag");
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(env.starts_with("GATEHOUSE_"), "{id} has an env var");
            assert!(keys.contains_key(id), "{id} is a file key");
        }
        assert_eq!(flags, keys.len(), "no file key without a flag");
    }
}
