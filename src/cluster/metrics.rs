//! Cluster-wide gauges on every node's `/metrics`, from the registry as this node last read
//! it (once a beat): scrape any one node for the whole cluster's figures, or every node and
//! sum its own `gatehouse_*` series (README, "Several nodes").

use super::NodeReport;

/// What the registry says about the whole cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Live nodes, draining ones included.
    pub nodes: u64,
    /// Live nodes that take no new meeting.
    pub draining: u64,
    /// Participants in the calls and lobbies of every live node.
    pub participants: u64,
    /// Media packets every live node forwarded per second over its last beat.
    pub packets_per_sec: u64,
}

/// Sums the live nodes' reports.
pub fn totals(nodes: &[NodeReport]) -> Totals {
    nodes.iter().fold(Totals::default(), |t, n| Totals {
        nodes: t.nodes + 1,
        draining: t.draining + u64::from(n.draining),
        participants: t.participants.saturating_add(n.load.participants),
        packets_per_sec: t.packets_per_sec.saturating_add(n.load.packets_per_sec),
    })
}

#[cfg(feature = "cluster")]
pub use collector::ClusterCollector;

#[cfg(feature = "cluster")]
mod collector {
    use std::sync::Arc;

    use prometheus::IntGauge;
    use prometheus::core::Collector;

    use super::totals;
    use crate::cluster::redis::RedisRouter;

    /// The cluster's gauges, read from the router's last view of the registry at scrape time.
    pub struct ClusterCollector {
        router: Arc<RedisRouter>,
        redis_up: IntGauge,
        nodes: IntGauge,
        draining: IntGauge,
        participants: IntGauge,
        packets_per_sec: IntGauge,
        relayed_sockets: IntGauge,
        relayed_served: IntGauge,
    }

    impl ClusterCollector {
        pub fn new(router: Arc<RedisRouter>) -> Self {
            let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("static metric name");
            ClusterCollector {
                router,
                redis_up: gauge(
                    "gatehouse_cluster_redis_up",
                    "1 while this node's last beat reached the cluster's Redis, else 0",
                ),
                nodes: gauge("gatehouse_cluster_nodes", "Live nodes in the cluster's registry"),
                draining: gauge(
                    "gatehouse_cluster_nodes_draining",
                    "Live nodes that take no new meeting (draining)",
                ),
                participants: gauge(
                    "gatehouse_cluster_participants",
                    "Participants in the calls and lobbies of every live node",
                ),
                packets_per_sec: gauge(
                    "gatehouse_cluster_forwarded_packets_per_second",
                    "Media packets all live nodes forwarded per second over their last beat",
                ),
                relayed_sockets: gauge(
                    "gatehouse_relayed_sockets",
                    "Signaling sockets on this node whose meeting runs on another node (relayed there)",
                ),
                relayed_served: gauge(
                    "gatehouse_relayed_sessions_served",
                    "Participants of this node's meetings whose signaling socket is on another node",
                ),
            }
        }

        fn gauges(&self) -> [&IntGauge; 7] {
            [
                &self.redis_up,
                &self.nodes,
                &self.draining,
                &self.participants,
                &self.packets_per_sec,
                &self.relayed_sockets,
                &self.relayed_served,
            ]
        }
    }

    impl Collector for ClusterCollector {
        fn desc(&self) -> Vec<&prometheus::core::Desc> {
            self.gauges().into_iter().flat_map(|g| g.desc()).collect()
        }

        fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
            let t = totals(&self.router.view());
            self.redis_up.set(i64::from(self.router.redis_up()));
            self.nodes.set(t.nodes as i64);
            self.draining.set(t.draining as i64);
            self.participants.set(t.participants as i64);
            self.packets_per_sec.set(t.packets_per_sec as i64);
            let (edges, served) = self.router.relay.sessions();
            self.relayed_sockets.set(edges as i64);
            self.relayed_served.set(served as i64);
            self.gauges().into_iter().flat_map(|g| g.collect()).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Load;

    fn node(id: &str, participants: u64, packets_per_sec: u64, draining: bool) -> NodeReport {
        NodeReport {
            node_id: id.into(),
            public_url: String::new(),
            media_addr: String::new(),
            load: Load {
                participants,
                packets_per_sec,
                cpu_permille: 0,
            },
            draining,
            at_ms: 0,
        }
    }

    #[test]
    fn sums_every_live_node_draining_ones_included() {
        assert_eq!(totals(&[]), Totals::default());
        let t = totals(&[
            node("a", 3, 100, false),
            node("b", 5, 900, true),
            node("c", 0, 0, false),
        ]);
        assert_eq!(
            t,
            Totals {
                nodes: 3,
                draining: 1,
                participants: 8,
                packets_per_sec: 1000
            }
        );
        let huge = totals(&[node("a", u64::MAX, u64::MAX, false), node("b", 1, 1, false)]);
        assert_eq!(
            (huge.participants, huge.packets_per_sec),
            (u64::MAX, u64::MAX),
            "saturates"
        );
    }
}
