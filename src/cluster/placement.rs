//! Which node a new meeting goes to: the least loaded live node that takes new meetings.
//!
//! Pure: the registry's reports in, a node id out. Every node that reads the same registry
//! picks the same node (ties are broken by the id), so two nodes placing one meeting at
//! once usually agree even before the atomic write settles it (`redis::PLACE`).

use serde::{Deserialize, Serialize};

/// CPU use is compared in steps of this many per mille (10 %): finer differences are the
/// noise of one second's sample, and would make placement flap between idle nodes.
pub const CPU_STEP_PERMILLE: u32 = 100;

/// What a node says about itself every beat (the JSON of its registry key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id, drawn at start (`n-` and 12 characters): a restarted node is a new node.
    pub node_id: String,
    /// The base URL clients use to reach this node (its `public_url`).
    pub public_url: String,
    /// The node's media address as clients see it (UDP, first shard).
    pub media_addr: String,
    /// What the node carries now.
    pub load: Load,
    /// Set while the node drains for maintenance: it takes no new meeting.
    pub draining: bool,
    /// The node's wall clock at this beat, ms since the epoch (for operators; liveness is the key's TTL).
    pub at_ms: u64,
}

/// A node's load, as placement compares it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Participants in its calls and lobbies.
    pub participants: u64,
    /// Media packets forwarded per second over the last beat.
    pub packets_per_sec: u64,
    /// CPU used over the last beat, per mille of all the node's cores (1000: every core busy).
    pub cpu_permille: u32,
}

impl Load {
    /// The order placement compares loads in: CPU in 10 % steps, then participants, then
    /// packets per second (lower is less loaded).
    pub fn key(&self) -> (u32, u64, u64) {
        (
            self.cpu_permille.min(1000) / CPU_STEP_PERMILLE,
            self.participants,
            self.packets_per_sec,
        )
    }
}

/// The node a new meeting should go to: among live nodes not draining, the least loaded
/// ([`Load::key`]), ties broken by the smaller node id. `None` if no node takes meetings.
/// `live` is what the registry holds now: a node whose key expired is not in it.
pub fn choose(live: &[NodeReport]) -> Option<&NodeReport> {
    live.iter()
        .filter(|n| !n.draining)
        .min_by(|a, b| (a.load.key(), &a.node_id).cmp(&(b.load.key(), &b.node_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cpu_permille: u32, participants: u64, packets_per_sec: u64, draining: bool) -> NodeReport {
        NodeReport {
            node_id: id.to_owned(),
            public_url: format!("https://{id}.example"),
            media_addr: "192.0.2.1:7882".to_owned(),
            load: Load {
                participants,
                packets_per_sec,
                cpu_permille,
            },
            draining,
            at_ms: 0,
        }
    }

    fn chosen(nodes: &[NodeReport]) -> Option<&str> {
        choose(nodes).map(|n| n.node_id.as_str())
    }

    #[test]
    fn nobody_live_or_everybody_draining_places_nothing() {
        assert_eq!(chosen(&[]), None);
        assert_eq!(chosen(&[node("a", 0, 0, 0, true), node("b", 0, 0, 0, true)]), None);
    }

    #[test]
    fn a_draining_node_takes_nothing_however_idle() {
        assert_eq!(
            chosen(&[node("a", 0, 0, 0, true), node("b", 900, 500, 90_000, false)]),
            Some("b")
        );
    }

    #[test]
    fn cpu_first_in_ten_percent_steps() {
        // 12 % against 35 %: the busier CPU loses even with fewer participants.
        assert_eq!(
            chosen(&[node("a", 350, 0, 0, false), node("b", 120, 40, 4000, false)]),
            Some("b")
        );
        // 31 % and 39 % are one step: participants decide.
        assert_eq!(
            chosen(&[node("a", 310, 7, 0, false), node("b", 390, 3, 0, false)]),
            Some("b")
        );
    }

    #[test]
    fn then_participants_then_packets_then_the_id() {
        assert_eq!(
            chosen(&[node("a", 0, 5, 0, false), node("b", 0, 4, 9000, false)]),
            Some("b")
        );
        assert_eq!(
            chosen(&[node("a", 0, 4, 800, false), node("b", 0, 4, 700, false)]),
            Some("b")
        );
        assert_eq!(
            chosen(&[node("b", 0, 4, 700, false), node("a", 0, 4, 700, false)]),
            Some("a")
        );
    }

    #[test]
    fn cpu_over_a_full_machine_counts_as_full() {
        assert_eq!(
            Load {
                cpu_permille: 5000,
                ..Load::default()
            }
            .key()
            .0,
            10
        );
        assert_eq!(
            chosen(&[node("a", 5000, 2, 0, false), node("b", 1000, 1, 0, false)]),
            Some("b"),
            "over 100 % is the same step as 100 %: participants decide"
        );
    }

    /// Every small registry: the choice is a live, non-draining node no other such node
    /// beats, the same whatever the order the registry lists them in.
    #[test]
    fn exhaustively_the_least_loaded_and_independent_of_order() {
        let cpus = [0, 150, 990, 1000];
        let counts = [0, 1, 2];
        let mut variants = Vec::new();
        for cpu in cpus {
            for participants in counts {
                for packets in counts {
                    for draining in [false, true] {
                        variants.push((cpu, participants, packets * 100, draining));
                    }
                }
            }
        }
        let mut checked = 0;
        for (i, a) in variants.iter().enumerate() {
            for b in variants.iter().skip(i) {
                for c in [None, Some(variants[(i * 7 + 3) % variants.len()])] {
                    let mut nodes = vec![node("n1", a.0, a.1, a.2, a.3), node("n2", b.0, b.1, b.2, b.3)];
                    if let Some(c) = c {
                        nodes.push(node("n0", c.0, c.1, c.2, c.3));
                    }
                    let pick = choose(&nodes).cloned();
                    let takers: Vec<&NodeReport> = nodes.iter().filter(|n| !n.draining).collect();
                    match &pick {
                        None => assert!(takers.is_empty(), "{nodes:?}"),
                        Some(p) => {
                            assert!(!p.draining);
                            for t in &takers {
                                assert!((p.load.key(), &p.node_id) <= (t.load.key(), &t.node_id), "{nodes:?}");
                            }
                        }
                    }
                    nodes.reverse();
                    assert_eq!(choose(&nodes).cloned(), pick, "order of the registry changes nothing");
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked,
            72 * 73,
            "every pair of 72 kinds of node, with and without a third"
        );
    }

    #[test]
    fn reports_round_trip_as_json() {
        let n = node("n-abc", 120, 3, 450, false);
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<NodeReport>(&json).unwrap(), n);
        assert!(json.contains("\"cpu_permille\":120"), "{json}");
    }
}
