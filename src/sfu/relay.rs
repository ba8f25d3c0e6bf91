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

/// The number of a meeting's set of shards: the `Sfu` counts up at every change of who holds
/// the meeting, so a shard told two sets knows which is the newer, whatever order they came in.
pub type PeersVersion = u64;

/// `view` to each of `peers`.
fn push_view(out: &mut Outgoing, meeting: MeetingKey, peers: impl Iterator<Item = usize>, view: &MirrorView) {
    for peer in peers {
        out.push(
            peer,
            Item::View {
                meeting,
                view: view.clone(),
            },
        );
    }
}

/// The other shards holding part of one meeting, and the view of this shard's local tracks
/// they were last told (`Item::View`).
#[derive(Debug, Default)]
pub struct Spread {
    peers: Vec<usize>,
    told: MirrorView,
    /// The number of the set `peers` came from (0: none yet).
    version: PeersVersion,
}

impl Spread {
    pub fn peers(&self) -> &[usize] {
        &self.peers
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The meeting is now held by `peers` (this shard left out), the set numbered `version`,
    /// and its local tracks look like `view`. Shards that came get a `Sync` and the whole
    /// view; shards that stay get the view if it changed since they were last told (a change
    /// earlier in this turn, not yet told). Returns the shards that no longer hold the
    /// meeting. A set older than the one already applied is ignored: the `Sfu` tells a dead
    /// shard's departure outside the meeting's membership lock, so it may overtake the set of
    /// a change made just before, which would otherwise bring the dead shard back for good
    /// (its mirrors frozen, packets relayed to nobody).
    pub fn set(
        &mut self,
        meeting: MeetingKey,
        version: PeersVersion,
        peers: Vec<usize>,
        view: MirrorView,
        out: &mut Outgoing,
    ) -> Vec<usize> {
        if version <= self.version {
            return Vec::new();
        }
        self.version = version;
        let old = std::mem::replace(&mut self.peers, peers);
        let changed = view != self.told;
        for &peer in self.peers.iter().filter(|p| !old.contains(p)) {
            out.push(peer, Item::Sync { meeting });
        }
        let told = self.peers.iter().copied().filter(|p| changed || !old.contains(p));
        push_view(out, meeting, told, &view);
        self.told = view;
        old.into_iter().filter(|p| !self.peers.contains(p)).collect()
    }

    /// The local tracks may have changed: every peer hears `view` if it differs from what
    /// they were told.
    pub fn tell(&mut self, meeting: MeetingKey, view: MirrorView, out: &mut Outgoing) {
        if view == self.told {
            return;
        }
        push_view(out, meeting, self.peers.iter().copied(), &view);
        self.told = view;
    }

    /// The meeting leaves this shard: the peers unpublish what it relayed.
    pub fn leave(&mut self, meeting: MeetingKey, out: &mut Outgoing) {
        self.tell(meeting, MirrorView::default(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_signaling::protocol::ParticipantId;

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

    /// A view told apart by one participant's name.
    fn view(name: &str) -> MirrorView {
        MirrorView {
            tracks: Vec::new(),
            quality: vec![(ParticipantId::new(name), crate::sfu::quality::Verdict::ASSUMED)],
        }
    }

    /// Three shards' queues, as shard 0 sees them; `told` reads what shards 1 and 2 got.
    fn shards() -> (Outgoing, [mpsc::Receiver<Batch>; 2]) {
        let (tx0, _) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let (tx2, rx2) = mpsc::channel(4);
        (Outgoing::new(0, vec![tx0, tx1, tx2]), [rx1, rx2])
    }

    /// What one shard got in the last flush: "sync", or the view's participant names.
    fn told(rx: &mut mpsc::Receiver<Batch>) -> Vec<String> {
        let Ok(batch) = rx.try_recv() else {
            return Vec::new();
        };
        batch
            .items
            .iter()
            .map(|item| match item {
                Item::Sync { .. } => "sync".to_string(),
                Item::View { view, .. } => view
                    .quality
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_shard_that_comes_is_synced_and_one_that_goes_is_returned() {
        let (mut out, [mut one, mut two]) = shards();
        let mut spread = Spread::default();
        assert!(spread.set(7, 1, vec![1], view("a"), &mut out).is_empty());
        out.flush();
        assert_eq!(told(&mut one), ["sync", "a"]);
        let gone = spread.set(7, 2, vec![2], view("a"), &mut out);
        assert_eq!(gone, [1]);
        assert_eq!(spread.peers(), [2]);
        out.flush();
        assert_eq!(told(&mut one), Vec::<String>::new());
        assert_eq!(told(&mut two), ["sync", "a"]);
    }

    #[test]
    fn a_change_of_the_turn_reaches_the_shards_that_stay_when_another_comes() {
        let (mut out, [mut one, mut two]) = shards();
        let mut spread = Spread::default();
        spread.set(7, 3, vec![1], view("a"), &mut out);
        out.flush();
        told(&mut one);
        // The tracks change, then shard 2 comes, before the turn's end tells the change.
        spread.set(7, 4, vec![1, 2], view("b"), &mut out);
        spread.tell(7, view("b"), &mut out);
        out.flush();
        assert_eq!(told(&mut one), ["b"], "the shard that stays hears the change");
        assert_eq!(told(&mut two), ["sync", "b"]);
        // Unchanged: nothing more.
        spread.tell(7, view("b"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn changes_made_while_alone_are_not_mistaken_for_what_peers_know() {
        let (mut out, [mut one, _]) = shards();
        let mut spread = Spread::default();
        spread.set(7, 5, vec![1], view("a"), &mut out);
        spread.set(7, 6, Vec::new(), view("a"), &mut out);
        assert!(spread.is_empty());
        // Alone, the tracks became "b"; shard 1 comes back, then they return to "a".
        spread.set(7, 7, vec![1], view("b"), &mut out);
        spread.tell(7, view("a"), &mut out);
        out.flush();
        assert_eq!(told(&mut one), ["sync", "a", "sync", "b", "a"]);
    }

    #[test]
    fn an_older_set_of_shards_arriving_late_is_ignored() {
        let (mut out, [mut one, mut two]) = shards();
        let mut spread = Spread::default();
        spread.set(7, 1, vec![1], view("a"), &mut out);
        out.flush();
        told(&mut one);
        // Shard 2 came (set 2) and died: its departure (set 3) overtakes set 2.
        assert!(spread.set(7, 3, vec![1], view("a"), &mut out).is_empty());
        assert!(spread.set(7, 2, vec![1, 2], view("a"), &mut out).is_empty());
        assert_eq!(spread.peers(), [1], "the dead shard is not brought back");
        out.flush();
        assert!(told(&mut two).is_empty(), "nothing for the dead shard");
        assert!(told(&mut one).is_empty());
        // The same set twice changes nothing either.
        assert!(spread.set(7, 3, vec![1, 2], view("b"), &mut out).is_empty());
        assert_eq!(spread.peers(), [1]);
        // A newer one applies.
        assert_eq!(spread.set(7, 4, vec![2], view("a"), &mut out), [1]);
        out.flush();
        assert_eq!(told(&mut two), ["sync", "a"]);
    }

    #[test]
    fn leaving_unpublishes_everything_once() {
        let (mut out, [mut one, mut two]) = shards();
        let mut spread = Spread::default();
        spread.set(7, 8, vec![1, 2], view("a"), &mut out);
        out.flush();
        told(&mut one);
        told(&mut two);
        spread.leave(7, &mut out);
        spread.leave(7, &mut out);
        out.flush();
        assert_eq!(told(&mut one), [""]);
        assert_eq!(told(&mut two), [""]);
    }
}
