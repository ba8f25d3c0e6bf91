//! The verdict of a churn soak: the gateway's resources sampled over the run, their
//! start, peak and end, and whether any of them grew beyond its limit. Pure: the
//! runner ([`super::churn`]) hands over the samples and counts; the tests here use
//! synthetic ones, leaks included.
//!
//! Counts (file descriptors, UDP sockets, threads, peer connections, signaling
//! connections) are judged end against start: the run starts on an idle gateway and
//! ends on one again, after every participant left and held seats expired, so
//! anything still open is a leak. Memory cannot be judged that way, because an
//! allocator keeps what it freed: resident memory is judged by its highest value in
//! the last quarter of the churn against its highest in the second quarter (the
//! first is warm-up), the same load half a run apart, so only growth that continues
//! through the run counts.

use std::fmt::Write as _;

use serde::Serialize;

use super::report::{EXIT_FAILED, EXIT_OK, EXIT_THRESHOLD};

/// Where in the run a sample was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplePhase {
    /// Before any participant: the idle gateway.
    Baseline,
    /// While participants come and go.
    Churn,
    /// After everyone left, while held seats expire and connections close.
    Settle,
}

/// One reading of the gateway; `None` where it could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub at_secs: f64,
    pub phase: SamplePhase,
    /// Resident memory, bytes (`/proc/<pid>/status` or `process_resident_memory_bytes`).
    pub rss_bytes: Option<f64>,
    /// Open file descriptors (`/proc/<pid>/fd` or `process_open_fds`).
    pub fds: Option<f64>,
    /// OS threads (`/proc/<pid>/status` or `process_threads`).
    pub threads: Option<f64>,
    /// UDP sockets (`/proc/<pid>/fd` against `net/udp`): only with a pid.
    pub udp_sockets: Option<f64>,
    /// Live peer connections (`gatehouse_sfu_peer_connections`).
    pub peer_connections: Option<f64>,
    /// Open signaling WebSockets (`gatehouse_signaling_connections`).
    pub signaling_connections: Option<f64>,
    /// Meetings with someone in them (`gatehouse_meetings_live`).
    pub meetings_live: Option<f64>,
}

/// What is judged, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Rss,
    Fds,
    Threads,
    UdpSockets,
    PeerConnections,
    SignalingConnections,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Rss,
        Resource::Fds,
        Resource::Threads,
        Resource::UdpSockets,
        Resource::PeerConnections,
        Resource::SignalingConnections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Rss => "rss_bytes",
            Resource::Fds => "fds",
            Resource::Threads => "threads",
            Resource::UdpSockets => "udp_sockets",
            Resource::PeerConnections => "peer_connections",
            Resource::SignalingConnections => "signaling_connections",
        }
    }

    fn of(self, s: &Sample) -> Option<f64> {
        match self {
            Resource::Rss => s.rss_bytes,
            Resource::Fds => s.fds,
            Resource::Threads => s.threads,
            Resource::UdpSockets => s.udp_sockets,
            Resource::PeerConnections => s.peer_connections,
            Resource::SignalingConnections => s.signaling_connections,
        }
    }
}

/// Growth allowed before the run fails (flags `--max-*-growth`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// Resident memory, MB (late-quarter peak over second-quarter peak).
    pub rss_mb: f64,
    /// File descriptors, end over start.
    pub fds: f64,
    /// Threads, end over start.
    pub threads: f64,
    /// UDP sockets, end over start.
    pub udp_sockets: f64,
    /// Peer connections, end over start.
    pub peer_connections: f64,
    /// Signaling connections, end over start.
    pub signaling_connections: f64,
    /// Share of churn cycles that may fail (join refused, no media, timeout), percent.
    pub failed_percent: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rss_mb: 32.0,
            fds: 8.0,
            threads: 4.0,
            udp_sockets: 2.0,
            peer_connections: 0.0,
            signaling_connections: 0.0,
            failed_percent: 10.0,
        }
    }
}

impl Limits {
    fn of(&self, r: Resource) -> f64 {
        match r {
            Resource::Rss => self.rss_mb * 1e6,
            Resource::Fds => self.fds,
            Resource::Threads => self.threads,
            Resource::UdpSockets => self.udp_sockets,
            Resource::PeerConnections => self.peer_connections,
            Resource::SignalingConnections => self.signaling_connections,
        }
    }
}

/// One resource over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceFigures {
    pub resource: &'static str,
    /// The last baseline value (the idle gateway).
    pub start: Option<f64>,
    /// The highest value seen.
    pub peak: Option<f64>,
    /// The last value (idle again, after the settle).
    pub end: Option<f64>,
    /// What is judged: `end - start`, or for memory the late-quarter peak over the
    /// second-quarter peak.
    pub growth: Option<f64>,
    pub limit: f64,
    /// `Some(false)` when the growth is over the limit; `None` when it could not be judged.
    pub ok: Option<bool>,
}

/// Judges every resource over the samples.
pub fn judge(samples: &[Sample], limits: &Limits) -> Vec<ResourceFigures> {
    Resource::ALL
        .iter()
        .map(|&r| {
            let values = || samples.iter().filter_map(move |s| r.of(s).map(|v| (s.phase, v)));
            let start = values().rfind(|(p, _)| *p == SamplePhase::Baseline).map(|(_, v)| v);
            let peak = values()
                .map(|(_, v)| v)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            let end = values().next_back().map(|(_, v)| v);
            let growth = match r {
                Resource::Rss => {
                    let churn: Vec<f64> = values()
                        .filter(|(p, _)| *p == SamplePhase::Churn)
                        .map(|(_, v)| v)
                        .collect();
                    let n = churn.len();
                    let max = |part: &[f64]| part.iter().copied().fold(f64::MIN, f64::max);
                    (n >= 4).then(|| max(&churn[3 * n / 4..]) - max(&churn[n / 4..n / 2]))
                }
                _ => start.zip(end).map(|(s, e)| e - s),
            };
            let limit = limits.of(r);
            ResourceFigures {
                resource: r.name(),
                start,
                peak,
                end,
                growth,
                limit,
                ok: growth.map(|g| g <= limit),
            }
        })
        .collect()
}

/// What the churn did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChurnCounts {
    /// Participant lifetimes started.
    pub cycles: u64,
    /// ... that ended as planned.
    pub completed: u64,
    /// ... that failed (see `errors`).
    pub failed: u64,
    /// In the call (staff directly, guests once admitted).
    pub joined: u64,
    /// Guests admitted from the lobby by the host.
    pub admitted: u64,
    /// Guests denied in the lobby by the host.
    pub denied: u64,
    /// Tracks published.
    pub published: u64,
    /// Participants that received at least one remote track's media.
    pub received_media: u64,
    /// Chat messages sent.
    pub chats: u64,
    /// Left with `leave`.
    pub left: u64,
    /// Dropped their connection without `leave`.
    pub dropped: u64,
    /// The first few errors, as they happened.
    pub errors: Vec<String>,
}

/// Pass or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SoakVerdict {
    Pass,
    /// A resource grew beyond its limit, or too many cycles failed.
    ThresholdBreached,
    /// No cycle completed: nothing was measured.
    Failed,
}

/// The soak's report.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub verdict: SoakVerdict,
    /// What was sampled: `spawned gateway (pid N)`, `pid N`, or `/metrics only`.
    pub gateway: String,
    pub duration_secs: f64,
    pub slots: u32,
    pub counts: ChurnCounts,
    pub resources: Vec<ResourceFigures>,
    pub limits: Limits,
    /// Sentences for what breached.
    pub breaches: Vec<String>,
    /// Lines the gateway logged (a spawned gateway only).
    pub gateway_log_lines: Option<u64>,
    pub samples: Vec<Sample>,
}

impl SoakReport {
    /// Judges a run.
    pub fn new(
        gateway: String,
        duration_secs: f64,
        slots: u32,
        counts: ChurnCounts,
        samples: Vec<Sample>,
        limits: Limits,
        gateway_log_lines: Option<u64>,
    ) -> SoakReport {
        let resources = judge(&samples, &limits);
        let mut breaches: Vec<String> = resources
            .iter()
            .filter(|f| f.ok == Some(false))
            .map(|f| {
                format!(
                    "{} grew by {} (limit {})",
                    f.resource,
                    show(f.resource, f.growth),
                    show(f.resource, Some(f.limit))
                )
            })
            .collect();
        if counts.cycles > 0 {
            let failed = counts.failed as f64 * 100.0 / counts.cycles as f64;
            if failed > limits.failed_percent {
                breaches.push(format!(
                    "{failed:.1} % of cycles failed (limit {} %)",
                    limits.failed_percent
                ));
            }
        }
        let verdict = if counts.completed == 0 {
            SoakVerdict::Failed
        } else if breaches.is_empty() {
            SoakVerdict::Pass
        } else {
            SoakVerdict::ThresholdBreached
        };
        SoakReport {
            verdict,
            gateway,
            duration_secs,
            slots,
            counts,
            resources,
            limits,
            breaches,
            gateway_log_lines,
            samples,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            SoakVerdict::Pass => EXIT_OK,
            SoakVerdict::ThresholdBreached => EXIT_THRESHOLD,
            SoakVerdict::Failed => EXIT_FAILED,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let c = &self.counts;
        let _ = writeln!(
            out,
            "\nChurn soak: {:.0} s, {} participants at a time, sampled: {}",
            self.duration_secs, self.slots, self.gateway
        );
        let _ = writeln!(
            out,
            "cycles {} (completed {}, failed {}) | joined {} | lobby: admitted {}, denied {} | published {} tracks | received media {} | chat {} | left {} | dropped {}",
            c.cycles,
            c.completed,
            c.failed,
            c.joined,
            c.admitted,
            c.denied,
            c.published,
            c.received_media,
            c.chats,
            c.left,
            c.dropped
        );
        let _ = writeln!(
            out,
            "\n{:<22} {:>10} {:>10} {:>10} {:>10} {:>10}  ok",
            "resource", "start", "peak", "end", "growth", "limit"
        );
        for f in &self.resources {
            let _ = writeln!(
                out,
                "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
                f.resource,
                show(f.resource, f.start),
                show(f.resource, f.peak),
                show(f.resource, f.end),
                show(f.resource, f.growth),
                show(f.resource, Some(f.limit)),
                match f.ok {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "n/a",
                }
            );
        }
        let _ = writeln!(
            out,
            "(memory: highest in the last quarter of the churn against the second quarter; the rest: end against start)"
        );
        if let Some(lines) = self.gateway_log_lines {
            let _ = writeln!(out, "gateway log: {lines} lines");
        }
        for e in &c.errors {
            let _ = writeln!(out, "error: {e}");
        }
        for b in &self.breaches {
            let _ = writeln!(out, "BREACH: {b}");
        }
        let _ = writeln!(
            out,
            "verdict: {}",
            match self.verdict {
                SoakVerdict::Pass => "pass",
                SoakVerdict::ThresholdBreached => "threshold breached",
                SoakVerdict::Failed => "failed (no cycle completed)",
            }
        );
        out
    }
}

/// A value for the table: memory in MB, counts as integers, `n/a` when unknown.
fn show(resource: &str, v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if resource == "rss_bytes" => format!("{:.1} MB", v / 1e6),
        Some(v) => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `n` churn samples between a baseline and a settle; `f(i)` fills sample i
    /// (0 = baseline, n + 1 = settle).
    fn run(n: usize, f: impl Fn(usize, &mut Sample)) -> Vec<Sample> {
        (0..n + 2)
            .map(|i| {
                let phase = match i {
                    0 => SamplePhase::Baseline,
                    i if i == n + 1 => SamplePhase::Settle,
                    _ => SamplePhase::Churn,
                };
                let mut s = Sample {
                    at_secs: i as f64,
                    phase,
                    rss_bytes: Some(50e6),
                    fds: Some(30.0),
                    threads: Some(8.0),
                    udp_sockets: Some(2.0),
                    peer_connections: Some(0.0),
                    signaling_connections: Some(0.0),
                    meetings_live: Some(0.0),
                };
                if phase == SamplePhase::Churn {
                    s.fds = Some(60.0);
                    s.peer_connections = Some(12.0);
                    s.signaling_connections = Some(6.0);
                    s.rss_bytes = Some(80e6);
                }
                f(i, &mut s);
                s
            })
            .collect()
    }

    fn counts() -> ChurnCounts {
        ChurnCounts {
            cycles: 100,
            completed: 98,
            failed: 2,
            ..ChurnCounts::default()
        }
    }

    fn report(samples: Vec<Sample>) -> SoakReport {
        SoakReport::new("test".into(), 60.0, 4, counts(), samples, Limits::default(), None)
    }

    #[test]
    fn flat_resources_pass_with_start_peak_and_end() {
        let r = report(run(40, |_, _| {}));
        assert_eq!(r.verdict, SoakVerdict::Pass, "{}", r.to_table());
        assert_eq!(r.exit_code(), EXIT_OK);
        let fds = r.resources.iter().find(|f| f.resource == "fds").unwrap();
        assert_eq!(
            (fds.start, fds.peak, fds.end, fds.growth),
            (Some(30.0), Some(60.0), Some(30.0), Some(0.0))
        );
        let rss = r.resources.iter().find(|f| f.resource == "rss_bytes").unwrap();
        assert_eq!(rss.growth, Some(0.0), "the same load half a run apart");
        assert!(r.to_table().contains("peer_connections"));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["samples"].as_array().unwrap().len(), 42);
    }

    #[test]
    fn a_descriptor_or_connection_left_open_fails_the_run() {
        let r = report(run(40, |i, s| {
            if i == 41 {
                s.fds = Some(45.0);
                s.peer_connections = Some(2.0);
            }
        }));
        assert_eq!(r.verdict, SoakVerdict::ThresholdBreached);
        assert_eq!(r.exit_code(), EXIT_THRESHOLD);
        assert_eq!(r.breaches.len(), 2, "{:?}", r.breaches);
        assert!(r.breaches[0].contains("fds grew by 15 (limit 8)"), "{:?}", r.breaches);
        assert!(r.to_table().contains("NO"));
    }

    #[test]
    fn memory_that_keeps_growing_fails_but_a_warm_up_does_not() {
        // Warm-up: a jump in the first quarter, flat after.
        let warm = report(run(40, |i, s| {
            if (1..=40).contains(&i) {
                s.rss_bytes = Some(if i < 8 { 60e6 + i as f64 * 5e6 } else { 110e6 });
            }
        }));
        assert_eq!(warm.verdict, SoakVerdict::Pass, "{}", warm.to_table());
        // A leak: 2 MB per sample all through the churn (about 40 MB between the quarters).
        let leak = report(run(40, |i, s| {
            if (1..=40).contains(&i) {
                s.rss_bytes = Some(60e6 + i as f64 * 2e6);
            }
        }));
        assert_eq!(leak.verdict, SoakVerdict::ThresholdBreached, "{}", leak.to_table());
        assert!(
            leak.breaches[0].starts_with("rss_bytes grew by 4"),
            "{:?}",
            leak.breaches
        );
    }

    #[test]
    fn unknown_values_are_not_judged_and_failures_count() {
        let r = report(run(2, |_, s| {
            s.udp_sockets = None;
        }));
        let udp = r.resources.iter().find(|f| f.resource == "udp_sockets").unwrap();
        assert_eq!((udp.start, udp.ok), (None, None));
        let rss = r.resources.iter().find(|f| f.resource == "rss_bytes").unwrap();
        assert_eq!(rss.ok, None, "too few churn samples to judge memory");
        assert_eq!(r.verdict, SoakVerdict::Pass);
        let failing = SoakReport::new(
            "test".into(),
            60.0,
            4,
            ChurnCounts {
                cycles: 10,
                completed: 8,
                failed: 2,
                ..ChurnCounts::default()
            },
            run(8, |_, _| {}),
            Limits::default(),
            None,
        );
        assert_eq!(failing.verdict, SoakVerdict::ThresholdBreached);
        assert!(failing.breaches[0].contains("20.0 % of cycles failed"));
        let nothing = SoakReport::new(
            "test".into(),
            60.0,
            4,
            ChurnCounts::default(),
            run(8, |_, _| {}),
            Limits::default(),
            None,
        );
        assert_eq!(nothing.exit_code(), EXIT_FAILED);
    }
}
