//! Prometheus metrics at `/metrics`: the control plane's gauges and histograms,
//! the media plane's counters (read from its atomics at scrape time), and the
//! process's CPU and memory.

use prometheus::{Counter, CounterVec, Encoder, Histogram, HistogramOpts, IntGauge, Opts, Registry, TextEncoder};

/// The gateway's metrics registry and the handles the server updates.
pub struct GatewayMetrics {
    registry: Registry,
    /// Meetings with someone in the call or lobby.
    pub meetings_live: IntGauge,
    /// Participants in a call, all meetings.
    pub participants_in_call: IntGauge,
    /// Participants waiting in a lobby, all meetings.
    pub participants_in_lobby: IntGauge,
    /// Open signaling WebSockets.
    pub signaling_connections: IntGauge,
    /// How long people waited in the lobby, whatever the outcome.
    pub lobby_wait_seconds: Histogram,
    /// Our CPU time at clock-tick resolution: `process_cpu_seconds_total` counts
    /// whole seconds only, too coarse for the load tester's CPU % over a short run.
    process_cpu_seconds: Counter,
    /// Each media shard thread's CPU time (a shard is one thread: at one core's worth it is
    /// saturated, whatever the process as a whole uses).
    shard_cpu_seconds: CounterVec,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric names are valid");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let meetings_live = gauge(
            "gatehouse_meetings_live",
            "Meetings with someone in the call or the lobby",
        );
        let participants_in_call = gauge("gatehouse_participants_in_call", "Participants in a call");
        let participants_in_lobby = gauge("gatehouse_participants_in_lobby", "Participants waiting in a lobby");
        let signaling_connections = gauge("gatehouse_signaling_connections", "Open signaling WebSockets");
        let lobby_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_lobby_wait_seconds",
                "Time spent in the lobby, by everyone who left it",
            )
            .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]),
        )
        .expect("static histogram is valid");
        registry
            .register(Box::new(lobby_wait_seconds.clone()))
            .expect("registered once");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("registered once");
        let process_cpu_seconds = Counter::new(
            "gatehouse_process_cpu_seconds_total",
            "User and system CPU time of the gateway process, seconds, at clock-tick resolution",
        )
        .expect("static metric names are valid");
        registry
            .register(Box::new(process_cpu_seconds.clone()))
            .expect("registered once");
        let shard_cpu_seconds = CounterVec::new(
            Opts::new(
                SHARD_CPU_SECONDS,
                "User and system CPU time of each media shard thread, seconds, at clock-tick resolution",
            ),
            &["shard"],
        )
        .expect("static metric names are valid");
        registry
            .register(Box::new(shard_cpu_seconds.clone()))
            .expect("registered once");
        Self {
            registry,
            meetings_live,
            participants_in_call,
            participants_in_lobby,
            signaling_connections,
            lobby_wait_seconds,
            process_cpu_seconds,
            shard_cpu_seconds,
        }
    }

    /// Adds a collector (the media plane registers its counters this way).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        if let Some(now) = process_cpu_seconds() {
            let past = self.process_cpu_seconds.get();
            if now > past {
                self.process_cpu_seconds.inc_by(now - past);
            }
        }
        for (shard, now) in shard_cpu_seconds() {
            let counter = self.shard_cpu_seconds.with_label_values(&[&shard.to_string()]);
            let past = counter.get();
            if now > past {
                counter.inc_by(now - past);
            }
        }
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// User plus system CPU time of this process in seconds, from `/proc/self/stat`.
#[cfg(target_os = "linux")]
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    None
}

/// The per-shard CPU counter (label `shard`).
pub const SHARD_CPU_SECONDS: &str = "gatehouse_sfu_shard_cpu_seconds_total";

/// Each media shard thread's CPU time in seconds (user + system), by shard, from
/// `/proc/self/task/*/stat`: the threads the `Sfu` names `sfu-shard-N`.
#[cfg(target_os = "linux")]
fn shard_cpu_seconds() -> Vec<(usize, f64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let per_tick = clock_ticks_per_second();
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let shard = shard_of_thread(std::fs::read_to_string(path.join("comm")).ok()?.trim())?;
            let ticks = parse_cpu_ticks(&std::fs::read_to_string(path.join("stat")).ok()?)?;
            Some((shard, ticks as f64 / per_tick))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn shard_cpu_seconds() -> Vec<(usize, f64)> {
    Vec::new()
}

/// The shard a thread named `sfu-shard-N` runs.
fn shard_of_thread(name: &str) -> Option<usize> {
    name.strip_prefix("sfu-shard-")?.parse().ok()
}

#[cfg(target_os = "linux")]
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command
/// name in parentheses may hold spaces and parentheses, so count from the last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A Prometheus counter and the SFU counter it mirrors.
type MirroredCounter = (prometheus::IntCounter, fn(&crate::sfu::stats::CountersSnapshot) -> u64);

/// The media plane's counters, read from its atomics at scrape time.
pub struct SfuCollector {
    sfu: crate::sfu::Sfu,
    counters: Vec<MirroredCounter>,
    tracks: IntGauge,
    connections: IntGauge,
    /// The SFU's latency histograms: how each is described, and which one it is.
    histograms: Vec<(prometheus::core::Desc, PickHistogram)>,
}

/// Which of the SFU's latency histograms a metric shows.
type PickHistogram = fn(&crate::sfu::stats::Latencies) -> &HistogramSnapshot;

use crate::sfu::stats::HistogramSnapshot;

fn histogram_desc(name: &str, help: &str) -> prometheus::core::Desc {
    prometheus::core::Desc::new(name.into(), help.into(), Vec::new(), Default::default()).expect("static metric name")
}

/// A Prometheus histogram family from a snapshot of the SFU's bucket counts.
fn histogram_family(desc: &prometheus::core::Desc, h: &HistogramSnapshot) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
    let mut histogram = Histogram::default();
    histogram.set_sample_count(h.count);
    histogram.set_sample_sum(h.sum_seconds);
    histogram.set_bucket(
        h.cumulative()
            .map(|(le, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}

impl SfuCollector {
    pub fn new(sfu: crate::sfu::Sfu) -> Self {
        let counter = |name: &str, help: &str| prometheus::IntCounter::new(name, help).expect("static metric name");
        let counters: Vec<MirroredCounter> = vec![
            (
                counter(
                    "gatehouse_sfu_forwarded_packets_total",
                    "RTP packets written to subscribers",
                ),
                |s| s.forwarded_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_forwarded_bytes_total",
                    "RTP bytes written to subscribers",
                ),
                |s| s.forwarded_bytes,
            ),
            (
                counter(
                    "gatehouse_sfu_dropped_packets_total",
                    "Packets dropped (garbage, rejected writes, full socket buffer, test hook)",
                ),
                |s| s.dropped_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_garbage_datagrams_total",
                    "Datagrams on the media port from no known connection",
                ),
                |s| s.garbage_datagrams,
            ),
            (
                counter(
                    "gatehouse_sfu_junk_datagrams_total",
                    "Datagrams from a connection's own address that were not valid STUN, DTLS or RTP (dropped before the connection saw them)",
                ),
                |s| s.junk_datagrams,
            ),
            (
                counter("gatehouse_sfu_nacks_total", "NACKs received from subscribers"),
                |s| s.nacks,
            ),
            (
                counter(
                    "gatehouse_sfu_keyframe_requests_total",
                    "PLI/FIR received from subscribers",
                ),
                |s| s.keyframe_requests_received,
            ),
            (
                counter("gatehouse_sfu_plis_sent_total", "PLIs sent to publishers"),
                |s| s.plis_sent,
            ),
            (
                counter(
                    "gatehouse_sfu_rembs_sent_total",
                    "REMBs sent to publishers without simulcast (the most their subscribers' paths carry)",
                ),
                |s| s.rembs_sent,
            ),
            (
                counter(
                    "gatehouse_sfu_nacked_packets_total",
                    "Packets subscribers asked to have resent (sequence numbers in their NACKs)",
                ),
                |s| s.nacked_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_retransmitted_packets_total",
                    "Packets resent to subscribers from the retransmission cache (RTX or plain)",
                ),
                |s| s.retransmitted_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_retransmitted_rtx_packets_total",
                    "Packets resent to subscribers as RTX (a subset of the retransmitted packets)",
                ),
                |s| s.retransmitted_rtx,
            ),
            (
                counter(
                    "gatehouse_sfu_unservable_nacks_total",
                    "NACKed packets the retransmission cache could not serve (too old, overwritten, never sent)",
                ),
                |s| s.unservable_nacks,
            ),
            (
                counter("gatehouse_sfu_nacks_sent_total", "NACK packets sent to publishers"),
                |s| s.nacks_sent,
            ),
            (
                counter(
                    "gatehouse_sfu_nack_requests_sent_total",
                    "Packets asked of publishers in NACKs (each request counts)",
                ),
                |s| s.nack_requests_sent,
            ),
            (
                counter(
                    "gatehouse_sfu_duplicate_packets_total",
                    "Publisher packets received twice (not forwarded again)",
                ),
                |s| s.duplicate_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_missing_packets_total",
                    "Packets missing on arrival in publishers' streams (gaps in their sequence numbers)",
                ),
                |s| s.missing_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_layer_switches_total",
                    "Subscriber legs moved to another simulcast layer (on its keyframe)",
                ),
                |s| s.layer_switches,
            ),
            (
                counter(
                    "gatehouse_sfu_temporal_drops_total",
                    "Packets of frames above a subscriber leg's temporal layer cap, not sent to it",
                ),
                |s| s.temporal_drops,
            ),
            (
                counter(
                    "gatehouse_sfu_layer_rtx_repaired_packets_total",
                    "Retransmissions of simulcast layers received and turned back into their packets",
                ),
                |s| s.layer_rtx_repaired,
            ),
            (
                counter(
                    "gatehouse_sfu_bandwidth_estimate_drops_total",
                    "Drops of a subscriber connection's bandwidth estimate (overuse or loss in its TWCC feedback), each capping its video layers",
                ),
                |s| s.bwe_drops,
            ),
            (
                counter(
                    "gatehouse_sfu_bandwidth_probes_total",
                    "Probes of a subscriber's path (padding at the rate a step up needs) before a video leg steps up",
                ),
                |s| s.bwe_probes,
            ),
            (
                counter(
                    "gatehouse_sfu_bandwidth_probes_passed_total",
                    "Probes that found room for the step up (the leg then tries the layer)",
                ),
                |s| s.bwe_probes_passed,
            ),
            (
                counter(
                    "gatehouse_sfu_bandwidth_probe_packets_total",
                    "Padding packets sent in probes (RTX copies of packets already sent)",
                ),
                |s| s.bwe_probe_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_relayed_packets_total",
                    "Packets of a meeting's publishers handed to another media shard holding part of the meeting",
                ),
                |s| s.relayed_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_relay_drops_total",
                    "Relayed packets lost because the receiving shard's queue was full",
                ),
                |s| s.relay_drops,
            ),
            (
                counter(
                    "gatehouse_sfu_coalesce_pauses_total",
                    "Pauses a busy media shard took after a turn to let datagrams gather (--media-coalesce-us)",
                ),
                |s| s.coalesce_pauses,
            ),
            (
                counter(
                    "gatehouse_sfu_coalesced_datagrams_total",
                    "Datagrams read by the turns right after those pauses (divided by the pauses: what one gathered)",
                ),
                |s| s.coalesced_datagrams,
            ),
            (
                counter(
                    "gatehouse_sfu_opened_packets_total",
                    "Publishers' packets decrypted by the media shard itself, past the WebRTC stack's read pipeline",
                ),
                |s| s.opened_packets,
            ),
            (
                counter(
                    "gatehouse_sfu_twcc_feedback_received_total",
                    "Transport-wide congestion control feedback packets received from subscribers",
                ),
                |s| s.twcc_feedback_received,
            ),
            (
                counter(
                    "gatehouse_sfu_rtc_timeouts_total",
                    "Runs of the WebRTC stack's timers by the media shards (each a sweep of a connection's whole pipeline)",
                ),
                |s| s.rtc_timeouts,
            ),
        ];
        Self {
            sfu,
            counters,
            tracks: IntGauge::new("gatehouse_sfu_tracks", "Published tracks").expect("static metric name"),
            connections: IntGauge::new("gatehouse_sfu_peer_connections", "Live peer connections")
                .expect("static metric name"),
            histograms: vec![
                (
                    histogram_desc(
                        "gatehouse_sfu_ice_to_dtls_seconds",
                        "Per peer connection: ICE connected to DTLS connected (media keys ready)",
                    ),
                    |l| &l.ice_to_dtls,
                ),
                (
                    histogram_desc(
                        "gatehouse_sfu_join_to_first_media_seconds",
                        "Per participant: entering the call to the first media packet written to it",
                    ),
                    |l| &l.join_to_first_packet,
                ),
            ],
        }
    }
}

impl prometheus::core::Collector for SfuCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs: Vec<_> = self.counters.iter().flat_map(|(c, _)| c.desc()).collect();
        descs.extend(self.tracks.desc());
        descs.extend(self.connections.desc());
        descs.extend(self.histograms.iter().map(|(d, _)| d));
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let snapshot = self.sfu.stats();
        let mut families = Vec::new();
        for (counter, read) in &self.counters {
            // The SFU's counters only grow; catch the Prometheus counter up to them.
            counter.inc_by(read(&snapshot).saturating_sub(counter.get()));
            families.extend(counter.collect());
        }
        self.tracks.set(snapshot.tracks as i64);
        self.connections.set(self.sfu.live_connections() as i64);
        families.extend(self.tracks.collect());
        families.extend(self.connections.collect());
        let latencies = self.sfu.latencies();
        families.extend(
            self.histograms
                .iter()
                .map(|(desc, pick)| histogram_family(desc, pick(&latencies))),
        );
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_histograms_and_process() {
        let m = GatewayMetrics::new();
        m.participants_in_call.set(3);
        m.lobby_wait_seconds.observe(12.0);
        let text = m.render();
        assert!(text.contains("gatehouse_participants_in_call 3"), "{text}");
        assert!(
            text.contains("gatehouse_lobby_wait_seconds_bucket{le=\"15\"} 1"),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("gatehouse_process_cpu_seconds_total"), "{text}");
    }

    /// A thread named as the `Sfu` names its shards, busy for a while: the scrape has its
    /// CPU time under its shard's label, and the next scrape never less.
    #[cfg(target_os = "linux")]
    #[test]
    fn each_media_shard_threads_cpu_time_is_rendered_by_shard() {
        let (started, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("sfu-shard-7".into())
            .spawn(move || {
                // Busy until its CPU time shows in whole clock ticks.
                let ticks = || parse_cpu_ticks(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default());
                let mut x = 0u64;
                while ticks().unwrap_or(0) < 2 {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
                started.send(x).expect("the test waits");
                let _ = stopped.recv();
            })
            .expect("thread");
        ready.recv().expect("the thread ran");
        let m = GatewayMetrics::new();
        let value = |text: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{SHARD_CPU_SECONDS}{{shard=\"7\"}}")))
                .unwrap_or_else(|| panic!("shard 7 in {text}"));
            line.rsplit(' ').next().unwrap().parse().expect("a number")
        };
        let first = value(&m.render());
        assert!(first > 0.0, "{first}");
        assert!(value(&m.render()) >= first);
        stop.send(()).expect("the thread waits");
        spinner.join().expect("joined");
        assert_eq!(shard_of_thread("sfu-shard-12"), Some(12));
        assert_eq!(shard_of_thread("sfu-shard-"), None);
        assert_eq!(shard_of_thread("tokio-runtime-w"), None);
    }

    #[tokio::test]
    async fn the_sfu_latency_histograms_are_rendered() {
        let sfu = crate::sfu::Sfu::start(crate::sfu::SfuConfig::loopback()).expect("sfu");
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(SfuCollector::new(sfu.clone())))
            .expect("register");
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .expect("encode");
        for name in [
            "gatehouse_sfu_ice_to_dtls_seconds",
            "gatehouse_sfu_join_to_first_media_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
            assert!(text.contains(&format!("{name}_bucket{{le=\"0.1\"}} 0")), "{text}");
            assert!(text.contains(&format!("{name}_count 0")), "{text}");
        }
        sfu.shutdown().await;
    }

    #[test]
    fn cpu_ticks_come_from_after_the_command_name() {
        let stat = "4242 (gate (house) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1234 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_time_is_finer_than_whole_seconds() {
        let start = process_cpu_seconds().expect("readable on Linux");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut spins = 0u64;
        while process_cpu_seconds().expect("readable") - start < 0.05 {
            assert!(std::time::Instant::now() < deadline, "no CPU time seen in 5 s");
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        // Well under a second of burning was visible: tick resolution, not whole seconds.
        assert!(process_cpu_seconds().expect("readable") - start < 1.0);
    }
}
