//! What the gateway itself says while it is under load: its `/metrics`, scraped
//! every second and reduced to CPU, memory and forwarding figures.
//!
//! The Prometheus text format needs only a small reader here (a name, optional
//! labels, a value per line), so this module has its own, tested below, rather
//! than a crate: `prometheus-parse`, the one candidate, pulls in regex and
//! chrono and has not had a release since 2023. Everything but [`Scraper`] is pure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use gatehouse_sdk::tls::{TlsOptions, client_config, install_crypto_provider};

/// The gateway's CPU counter at clock-tick resolution (seconds, user + system).
pub const CPU_SECONDS_FINE: &str = "gatehouse_process_cpu_seconds_total";
/// The standard process CPU counter (whole seconds only): the fallback for
/// gateways that do not export [`CPU_SECONDS_FINE`].
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
/// The process resident memory gauge the gateway exports (bytes).
pub const RSS_BYTES: &str = "process_resident_memory_bytes";
/// Prefix of the media plane's metrics.
pub const SFU_PREFIX: &str = "gatehouse_sfu_";
/// Each media shard thread's CPU seconds (label `shard`): kept per label set, as
/// `name{labels}`, besides the sum.
pub const SHARD_CPU_SECONDS: &str = crate::metrics::SHARD_CPU_SECONDS;

/// One scrape: every sample's value summed over its label sets, by metric name
/// (a counter split per shard adds up to the process total).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When it was taken, since the run started.
    pub at: Duration,
    /// Metric name to value.
    pub values: BTreeMap<String, f64>,
}

impl Snapshot {
    /// A metric's value, if the gateway exports it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The media plane's forwarded-packets counter, under whichever name it has.
    pub fn forwarded_packets(&self) -> Option<f64> {
        forwarded_packets_name(self.values.keys().map(String::as_str)).and_then(|name| self.get(name))
    }
}

/// Picks the forwarded-packets counter: the expected name first, then any media
/// plane metric that names forwarded packets (and is not a drop counter).
fn forwarded_packets_name<'a>(mut names: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    const PREFERRED: [&str; 2] = [
        "gatehouse_sfu_forwarded_packets_total",
        "gatehouse_sfu_forwarded_packets",
    ];
    if let Some(name) = names.clone().find(|n| PREFERRED.contains(n)) {
        return Some(name);
    }
    names.find(|n| n.starts_with(SFU_PREFIX) && n.contains("forwarded") && n.contains("packets") && !n.contains("drop"))
}

/// Why a line of the exposition format could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// Reads the Prometheus text exposition format: comments and blank lines are
/// skipped, label sets summed per name, `NaN` samples ignored. Histogram series
/// keep their `_bucket`/`_sum`/`_count` names (and so sum to nonsense across
/// buckets; nothing here reads them).
pub fn parse(text: &str) -> Result<BTreeMap<String, f64>, ParseError> {
    let mut values = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ParseError {
            line: index + 1,
            reason,
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') || name.is_empty() {
            return Err(err("bad metric name"));
        }
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            rest = skip_labels(rest).ok_or_else(|| err("unterminated labels"))?;
        }
        // Value, then an optional timestamp.
        let value = rest.split_whitespace().next().ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        if !value.is_nan() {
            *values.entry(name.to_owned()).or_insert(0.0) += value;
            let labels = &line[name_end..line.len() - rest.len()];
            if name == SHARD_CPU_SECONDS && !labels.is_empty() {
                values.insert(format!("{name}{labels}"), value);
            }
        }
    }
    Ok(values)
}

/// Skips a `{...}` label set, honouring quoted values with escapes; returns what follows.
fn skip_labels(s: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (in_quotes, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_quotes = false,
            (false, _, '"') => in_quotes = true,
            (false, _, '}') => return Some(&s[i + 1..]),
            _ => {}
        }
    }
    None
}

/// The gateway's figures for a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayFigures {
    /// Scrapes that worked.
    pub scrapes: usize,
    /// Scrapes that failed (unreachable, bad status, unreadable).
    pub scrape_errors: usize,
    /// Process CPU over the steady phase, percent of one core (200 = two cores busy).
    pub cpu_percent: Option<f64>,
    /// The counter it came from (`process_cpu_seconds_total` counts whole
    /// seconds: only long steady phases give a meaningful figure from it).
    pub cpu_metric: Option<String>,
    /// Highest resident memory seen during the run, bytes.
    pub rss_peak_bytes: Option<f64>,
    /// The busiest media shard thread's CPU over the steady phase, percent of one core
    /// (a shard is one thread), and how many shards reported.
    pub busiest_shard_percent: Option<f64>,
    pub shards: Option<usize>,
    /// Forwarded packets per second over the steady phase, if the media plane exports it.
    pub forwarded_per_sec: Option<f64>,
    /// Every `gatehouse_sfu_*` counter's rate over the steady phase, per second.
    pub sfu_rates: BTreeMap<String, f64>,
    /// Datagrams the kernel dropped on the gateway's media sockets because their receive
    /// buffer was full during the steady phase (a gateway on this machine, lean engine:
    /// `/proc/net/udp` by the port its media comes from; the whole run when no steady phase
    /// began). What judges the limit.
    pub socket_drops: Option<u64>,
    /// The same over the sockets' whole life until the end of the teardown (the joins and the
    /// leaves of every participant at once included).
    pub socket_drops_run: Option<u64>,
}

/// The rate of `name` between the first snapshot at or after `from` and the
/// last at or before `to` (needs two distinct snapshots that both have it).
pub fn rate(snapshots: &[Snapshot], name: &str, from: Duration, to: Duration) -> Option<f64> {
    let with = |s: &&Snapshot| s.values.contains_key(name);
    let first = snapshots.iter().filter(with).find(|s| s.at >= from)?;
    let last = snapshots.iter().filter(with).rev().find(|s| s.at <= to)?;
    let dt = last.at.checked_sub(first.at)?.as_secs_f64();
    if dt <= 0.0 {
        return None;
    }
    Some((last.get(name)? - first.get(name)?).max(0.0) / dt)
}

/// Reduces the scrapes of a run to its figures; `steady` is the steady phase
/// (start, end) since the run started, if it began at all.
pub fn figures(snapshots: &[Snapshot], scrape_errors: usize, steady: Option<(Duration, Duration)>) -> GatewayFigures {
    let rss_peak_bytes = snapshots
        .iter()
        .filter_map(|s| s.get(RSS_BYTES))
        .fold(None, |peak: Option<f64>, v| Some(peak.map_or(v, |p| p.max(v))));
    let mut out = GatewayFigures {
        scrapes: snapshots.len(),
        scrape_errors,
        rss_peak_bytes,
        ..GatewayFigures::default()
    };
    let Some((from, to)) = steady else {
        return out;
    };
    for name in [CPU_SECONDS_FINE, CPU_SECONDS] {
        if let Some(r) = rate(snapshots, name, from, to) {
            out.cpu_percent = Some(r * 100.0);
            out.cpu_metric = Some(name.to_owned());
            break;
        }
    }
    let sfu_names: std::collections::BTreeSet<&str> = snapshots
        .iter()
        .flat_map(|s| s.values.keys())
        .map(String::as_str)
        .filter(|n| n.starts_with(SFU_PREFIX) && !n.contains('{'))
        .collect();
    let shard_names: std::collections::BTreeSet<&str> = snapshots
        .iter()
        .flat_map(|s| s.values.keys())
        .map(String::as_str)
        .filter(|n| n.starts_with(SHARD_CPU_SECONDS) && n.contains('{'))
        .collect();
    let shard_percents: Vec<f64> = shard_names
        .iter()
        .filter_map(|name| rate(snapshots, name, from, to))
        .map(|r| r * 100.0)
        .collect();
    if !shard_percents.is_empty() {
        out.busiest_shard_percent = shard_percents.iter().copied().reduce(f64::max);
        out.shards = Some(shard_percents.len());
    }
    for name in &sfu_names {
        if let Some(r) = rate(snapshots, name, from, to) {
            out.sfu_rates.insert((*name).to_owned(), r);
        }
    }
    out.forwarded_per_sec =
        forwarded_packets_name(sfu_names.iter().copied()).and_then(|name| out.sfu_rates.get(name).copied());
    out
}

/// Fetches `/metrics` from the gateway.
#[derive(Debug, Clone)]
pub struct Scraper {
    http: reqwest::Client,
    url: url::Url,
    /// Sent as a bearer token when the gateway protects /metrics.
    token: Option<String>,
}

impl Scraper {
    /// A scraper for the gateway at `base_url` (`https://host:port`).
    pub fn new(base_url: &str, tls: &TlsOptions, token: Option<String>) -> anyhow::Result<Scraper> {
        install_crypto_provider();
        let url = url::Url::parse(base_url)?.join("/metrics")?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(3));
        if let Some(config) = client_config(tls)? {
            builder = builder.tls_backend_preconfigured(config);
        }
        Ok(Scraper {
            http: builder.build()?,
            url,
            token,
        })
    }

    /// One scrape, stamped `at`.
    pub async fn scrape(&self, at: Duration) -> anyhow::Result<Snapshot> {
        let mut request = self.http.get(self.url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {} answered {}",
            self.url,
            response.status()
        );
        let text = response.text().await?;
        Ok(Snapshot {
            at,
            values: parse(&text)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.2e+07

gatehouse_sfu_forwarded_packets_total{shard="0"} 1000
gatehouse_sfu_forwarded_packets_total{shard="1",note="a \"}\" b"} 500 1700000000000
gatehouse_lobby_wait_seconds_bucket{le="+Inf"} 3
weird_nan NaN
up +Inf
"#;

    #[test]
    fn parses_the_exposition_format() {
        let v = parse(TEXT).unwrap();
        assert_eq!(v[CPU_SECONDS], 12.5);
        assert_eq!(v[RSS_BYTES], 42_000_000.0);
        assert_eq!(
            v["gatehouse_sfu_forwarded_packets_total"], 1500.0,
            "label sets sum; quoted braces skipped"
        );
        assert_eq!(v["gatehouse_lobby_wait_seconds_bucket"], 3.0);
        assert!(!v.contains_key("weird_nan"));
        assert_eq!(v["up"], f64::INFINITY);
    }

    #[test]
    fn parses_what_our_own_gateway_renders() {
        let m = crate::metrics::GatewayMetrics::new();
        m.participants_in_call.set(7);
        let v = parse(&m.render()).unwrap();
        assert_eq!(v["gatehouse_participants_in_call"], 7.0);
        #[cfg(target_os = "linux")]
        assert!(v[RSS_BYTES] > 0.0);
    }

    #[test]
    fn refuses_broken_lines() {
        assert_eq!(parse("novalue").unwrap_err().reason, "no value");
        assert_eq!(parse("a{b=\"c\" 1").unwrap_err().reason, "unterminated labels");
        assert_eq!(
            parse("ok 1\nbad x").unwrap_err(),
            ParseError {
                line: 2,
                reason: "bad value"
            }
        );
        assert_eq!(parse("b-d 1").unwrap_err().reason, "bad metric name");
    }

    fn snap(at_ms: u64, pairs: &[(&str, f64)]) -> Snapshot {
        Snapshot {
            at: Duration::from_millis(at_ms),
            values: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn figures_take_cpu_over_the_steady_phase_and_the_rss_peak_over_the_run() {
        let s = [
            snap(0, &[(CPU_SECONDS, 1.0), (RSS_BYTES, 10e6)]),
            // Steady from 1 s to 3 s: 1.5 CPU seconds in 2 s = 75 %.
            snap(
                1_000,
                &[
                    (CPU_SECONDS, 2.0),
                    (RSS_BYTES, 30e6),
                    ("gatehouse_sfu_forwarded_packets_total", 100.0),
                ],
            ),
            snap(
                2_000,
                &[
                    (CPU_SECONDS, 2.7),
                    (RSS_BYTES, 50e6),
                    ("gatehouse_sfu_forwarded_packets_total", 1100.0),
                ],
            ),
            snap(
                3_000,
                &[
                    (CPU_SECONDS, 3.5),
                    (RSS_BYTES, 40e6),
                    ("gatehouse_sfu_forwarded_packets_total", 4100.0),
                ],
            ),
            snap(4_000, &[(CPU_SECONDS, 9.0), (RSS_BYTES, 20e6)]),
        ];
        let steady = Some((Duration::from_secs(1), Duration::from_secs(3)));
        let f = figures(&s, 2, steady);
        assert_eq!((f.scrapes, f.scrape_errors), (5, 2));
        assert!((f.cpu_percent.unwrap() - 75.0).abs() < 1e-9, "{f:?}");
        assert_eq!(f.cpu_metric.as_deref(), Some(CPU_SECONDS));
        assert_eq!(f.rss_peak_bytes, Some(50e6));
        assert_eq!(f.forwarded_per_sec, Some(2000.0));
        assert_eq!(f.sfu_rates["gatehouse_sfu_forwarded_packets_total"], 2000.0);
        // No steady phase, or only one scrape in it: no rates, still the peak.
        let f = figures(&s, 0, None);
        assert_eq!((f.cpu_percent, f.rss_peak_bytes), (None, Some(50e6)));
        let f = figures(&s, 0, Some((Duration::from_millis(1500), Duration::from_millis(2500))));
        assert_eq!(f.cpu_percent, None);
        // A gateway without media metrics: n/a.
        let bare = [snap(0, &[(CPU_SECONDS, 1.0)]), snap(1_000, &[(CPU_SECONDS, 1.1)])];
        let f = figures(&bare, 0, Some((Duration::ZERO, Duration::from_secs(1))));
        assert_eq!(f.forwarded_per_sec, None);
        assert!(f.rss_peak_bytes.is_none() && f.sfu_rates.is_empty());
        assert!((f.cpu_percent.unwrap() - 10.0).abs() < 1e-9);
        // The fine-grained counter wins when the gateway has it.
        let both = [
            snap(0, &[(CPU_SECONDS, 1.0), (CPU_SECONDS_FINE, 1.25)]),
            snap(1_000, &[(CPU_SECONDS, 1.0), (CPU_SECONDS_FINE, 1.5)]),
        ];
        let f = figures(&both, 0, Some((Duration::ZERO, Duration::from_secs(1))));
        assert_eq!(
            (f.cpu_percent, f.cpu_metric.as_deref()),
            (Some(25.0), Some(CPU_SECONDS_FINE))
        );
    }

    /// Each shard's CPU is kept apart as well as summed: the busiest shard over the steady
    /// phase is the figure, and it stays out of the media plane's rates.
    #[test]
    fn the_busiest_shard_is_found_from_the_per_shard_cpu_counter() {
        let text = |a: f64, b: f64| {
            format!(
                "# TYPE {SHARD_CPU_SECONDS} counter\n{SHARD_CPU_SECONDS}{{shard=\"0\"}} {a}\n{SHARD_CPU_SECONDS}{{shard=\"1\"}} {b}\n"
            )
        };
        let at = |ms: u64, a: f64, b: f64| Snapshot {
            at: Duration::from_millis(ms),
            values: parse(&text(a, b)).expect("parses"),
        };
        let first = at(0, 1.0, 2.0);
        assert_eq!(first.get(SHARD_CPU_SECONDS), Some(3.0), "summed");
        assert_eq!(
            first.get(&format!("{SHARD_CPU_SECONDS}{{shard=\"1\"}}")),
            Some(2.0),
            "and apart"
        );
        // 2 s: shard 0 busy 0.5 s (25 %), shard 1 busy 1.8 s (90 %).
        let f = figures(
            &[first, at(2_000, 1.5, 3.8)],
            0,
            Some((Duration::ZERO, Duration::from_secs(2))),
        );
        assert_eq!(f.shards, Some(2));
        assert!((f.busiest_shard_percent.unwrap() - 90.0).abs() < 1e-9, "{f:?}");
        assert!(f.sfu_rates.keys().all(|k| !k.contains('{')), "{:?}", f.sfu_rates);
        // A gateway without the counter: unknown.
        let bare = [snap(0, &[(CPU_SECONDS, 1.0)]), snap(1_000, &[(CPU_SECONDS, 1.1)])];
        let f = figures(&bare, 0, Some((Duration::ZERO, Duration::from_secs(1))));
        assert_eq!((f.busiest_shard_percent, f.shards), (None, None));
    }

    #[test]
    fn forwarded_counter_is_found_under_other_names() {
        let names = [
            "gatehouse_sfu_dropped_forwarded_packets_total",
            "gatehouse_sfu_packets_forwarded_total",
        ];
        assert_eq!(
            forwarded_packets_name(names.into_iter()),
            Some("gatehouse_sfu_packets_forwarded_total")
        );
        assert_eq!(forwarded_packets_name(["gatehouse_sfu_tracks"].into_iter()), None);
    }
}
