//! What the shards holding one meeting send each other (docs/ARCHITECTURE.md, "Meetings
//! across shards"): the packets of their local publishers' tracks, their views of those
//! tracks, keyframe requests and layer wishes for them (see `media_room::mirror`).
//!
//! Each shard has one inbound queue of [`Batch`]es. A shard collects what it relays during a
//! turn per destination ([`Outgoing`]) and hands each destination one batch when the turn
//! ends, so the cost that crosses threads is one queue operation per destination and turn,
//! and one packet copy per track and destination, whatever the number of subscribers there.
//! The queue is bounded: a destination that falls that far behind loses packets (counted,
//! as a full socket buffer would lose them; its subscribers NACK or ask for a keyframe),
//! while views, keyframe requests and wishes wait for the next turn and are never lost.

use gatehouse_signaling::protocol::TrackId;
use rtc::rtp::Packet;
use tokio::sync::mpsc;

use super::media_room::{ConnId, MirrorView};

/// A meeting's number, the same on every shard (given by the `Sfu` with its placement).
pub type MeetingKey = u64;

/// Batches queued toward one shard.
pub const QUEUE: usize = 1024;

/// Shards a process may have (the stand-in connection ids below leave room for them).
const MAX_SHARDS: u64 = 1 << 16;

/// One thing for the meeting `meeting` on the receiving shard.
#[derive(Debug)]
pub enum Item {
    /// An RTP packet of a local publisher's track, as read from its connection.
    Packet { meeting: MeetingKey, packet: Packet },
    /// The sender's local tracks and its participants' connection quality, whole (sent
    /// when they change, and on a `Sync`).
    View { meeting: MeetingKey, view: MirrorView },
    /// The sender now holds part of the meeting: send it your view.
    Sync { meeting: MeetingKey },
    /// A keyframe of the receiver's local layer `ssrc`, for the sender's subscribers.
    Keyframe { meeting: MeetingKey, ssrc: u32 },
    /// The best layer the sender's subscribers of the receiver's track wish.
    Need {
        meeting: MeetingKey,
        track_id: TrackId,
        needed: Option<u8>,
    },
    /// The REMB shares of the sender's legs of the receiver's single-layer video track.
    Shares {
        meeting: MeetingKey,
        track_id: TrackId,
        shares: Vec<Option<u64>>,
    },
}

impl Item {
    fn is_packet(&self) -> bool {
        matches!(self, Item::Packet { .. })
    }
}

/// What one shard relayed to another in one turn.
#[derive(Debug)]
pub struct Batch {
    pub from: usize,
    pub items: Vec<Item>,
}

/// The connection id under which a room forwards what shard `source` relays to it: no
/// connection of a shard has it (those count up from 1).
pub fn mirror_conn(source: usize) -> ConnId {
    u64::MAX - source as u64
}

/// The shard a stand-in connection id stands for ([`mirror_conn`]).
pub fn mirror_source(conn: ConnId) -> Option<usize> {
    let source = u64::MAX - conn;
    (source < MAX_SHARDS).then_some(source as usize)
}

/// How one flush went: packets handed over, and packets dropped for a full queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub packets: u64,
    pub dropped: u64,
}

/// One shard's outgoing side: a queue per destination shard, filled during a turn.
pub struct Outgoing {
    me: usize,
    senders: Vec<mpsc::Sender<Batch>>,
    pending: Vec<Vec<Item>>,
}

impl Outgoing {
    /// `senders[i]` reaches shard `i` (this shard's own is never used).
    pub fn new(me: usize, senders: Vec<mpsc::Sender<Batch>>) -> Self {
        let pending = senders.iter().map(|_| Vec::new()).collect();
        Self { me, senders, pending }
    }

    /// A shard with no peers (benches, a single shard).
    pub fn none(me: usize) -> Self {
        Self::new(me, Vec::new())
    }

    pub fn push(&mut self, to: usize, item: Item) {
        if to != self.me
            && let Some(queue) = self.pending.get_mut(to)
        {
            queue.push(item);
        }
    }

    /// Whether anything waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(Vec::is_empty)
    }

    /// Hands each destination what the turn relayed to it, in one batch. A full queue drops
    /// the batch's packets and keeps the rest for the next flush; a stopped shard's share is
    /// dropped.
    pub fn flush(&mut self) -> Flushed {
        let mut flushed = Flushed::default();
        for (to, queue) in self.pending.iter_mut().enumerate() {
            if queue.is_empty() {
                continue;
            }
            let items = std::mem::take(queue);
            let packets = items.iter().filter(|i| i.is_packet()).count() as u64;
            match self.senders[to].try_send(Batch { from: self.me, items }) {
                Ok(()) => flushed.packets += packets,
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    flushed.dropped += packets;
                    queue.extend(batch.items.into_iter().filter(|i| !i.is_packet()));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> Item {
        let mut packet = Packet::default();
        packet.header.sequence_number = seq;
        Item::Packet { meeting: 1, packet }
    }

    #[test]
    fn stand_in_connections_name_their_shard_and_no_real_connection() {
        assert_eq!(mirror_source(mirror_conn(0)), Some(0));
        assert_eq!(mirror_source(mirror_conn(7)), Some(7));
        assert_eq!(mirror_source(1), None);
        assert_eq!(mirror_source(1 << 40), None);
    }

    #[test]
    fn a_turn_goes_out_as_one_batch_per_destination_and_never_to_itself() {
        let (tx0, mut rx0) = mpsc::channel(4);
        let (tx1, mut rx1) = mpsc::channel(4);
        let mut out = Outgoing::new(0, vec![tx0, tx1]);
        out.push(1, packet(1));
        out.push(1, Item::Sync { meeting: 1 });
        out.push(1, packet(2));
        out.push(0, packet(3));
        assert!(!out.is_empty());
        assert_eq!(out.flush(), Flushed { packets: 2, dropped: 0 });
        assert!(out.is_empty());
        let batch = rx1.try_recv().expect("one batch");
        assert_eq!(batch.from, 0);
        assert_eq!(batch.items.len(), 3);
        assert!(rx1.try_recv().is_err(), "one batch for the turn");
        assert!(rx0.try_recv().is_err(), "nothing to itself");
        assert_eq!(out.flush(), Flushed::default());
    }

    #[test]
    fn a_full_queue_loses_packets_but_keeps_control_for_the_next_turn() {
        let (tx, mut rx) = mpsc::channel(1);
        let (own, _own_rx) = mpsc::channel(1);
        let mut out = Outgoing::new(1, vec![tx, own]);
        out.push(0, packet(1));
        assert_eq!(out.flush().packets, 1);
        out.push(0, packet(2));
        out.push(0, Item::Keyframe { meeting: 1, ssrc: 9 });
        assert_eq!(out.flush(), Flushed { packets: 0, dropped: 1 });
        assert!(!out.is_empty(), "the keyframe request waits");
        rx.try_recv().expect("the first batch");
        assert_eq!(out.flush(), Flushed::default());
        let batch = rx.try_recv().expect("the kept request");
        assert!(matches!(batch.items[..], [Item::Keyframe { ssrc: 9, .. }]));
    }

    #[test]
    fn a_stopped_shard_is_skipped() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut out = Outgoing::new(1, vec![tx]);
        out.push(0, Item::Sync { meeting: 1 });
        assert_eq!(out.flush(), Flushed::default());
        assert!(out.is_empty());
    }
}
