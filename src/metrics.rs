//! Prometheus metrics at `/metrics`: the control plane's gauges and histograms,
//! the media plane's counters (read from its atomics at scrape time), and the
//! process's CPU and memory.

use prometheus::{Encoder, Histogram, HistogramOpts, IntGauge, Registry, TextEncoder};

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
        Self {
            registry,
            meetings_live,
            participants_in_call,
            participants_in_lobby,
            signaling_connections,
            lobby_wait_seconds,
        }
    }

    /// Adds a collector (the media plane registers its counters this way).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
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
    }
}
