//! The lobby: who waits to enter a meeting's call, since when, and until when.
//!
//! A plain ordered list (first come, first listed); the room decides who
//! enters and when, the lobby only keeps the queue and its deadlines.

use crate::admission::Attendee;
use crate::protocol::{LobbyEntry, ParticipantInfo};

/// Identifies one signaling connection (a participant may reconnect on a new one).
pub type ConnId = u64;

/// One person waiting.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub conn: ConnId,
    pub info: ParticipantInfo,
    pub attendee: Attendee,
    pub invited: bool,
    /// Whether the bypass rule lets them in once a host is present.
    pub may_bypass: bool,
    pub since_ms: u64,
    pub deadline_ms: u64,
}

impl Waiting {
    pub fn entry(&self) -> LobbyEntry {
        LobbyEntry {
            participant_id: self.info.participant_id.clone(),
            display_name: self.info.display_name.clone(),
            kind: self.info.kind,
            invited: self.invited,
            waiting_since_ms: self.since_ms,
        }
    }
}

/// The queue of a meeting's lobby.
#[derive(Debug, Default)]
pub struct Lobby {
    waiting: Vec<Waiting>,
}

impl Lobby {
    pub fn push(&mut self, w: Waiting) {
        self.waiting.push(w);
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn get(&self, participant_id: &str) -> Option<&Waiting> {
        self.waiting.iter().find(|w| w.info.participant_id == participant_id)
    }

    pub fn remove(&mut self, participant_id: &str) -> Option<Waiting> {
        let i = self
            .waiting
            .iter()
            .position(|w| w.info.participant_id == participant_id)?;
        Some(self.waiting.remove(i))
    }

    /// Removes and returns everyone matching `pred`, in queue order.
    pub fn drain_where(&mut self, mut pred: impl FnMut(&Waiting) -> bool) -> Vec<Waiting> {
        let (out, keep) = std::mem::take(&mut self.waiting).into_iter().partition(|w| pred(w));
        self.waiting = keep;
        out
    }

    /// Everyone whose deadline has passed at `now_ms`.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<Waiting> {
        self.drain_where(|w| w.deadline_ms <= now_ms)
    }

    /// The earliest deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.waiting.iter().map(|w| w.deadline_ms).min()
    }

    /// What staff see.
    pub fn entries(&self) -> Vec<LobbyEntry> {
        self.waiting.iter().map(Waiting::entry).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Waiting> {
        self.waiting.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ParticipantKind;

    fn waiting(id: &str, since: u64, deadline: u64) -> Waiting {
        Waiting {
            conn: 1,
            info: ParticipantInfo {
                participant_id: id.into(),
                display_name: id.to_uppercase(),
                kind: ParticipantKind::Guest,
                organizer: false,
            },
            attendee: Attendee::Guest { invited: false },
            invited: false,
            may_bypass: false,
            since_ms: since,
            deadline_ms: deadline,
        }
    }

    #[test]
    fn queue_order_and_deadlines() {
        let mut lobby = Lobby::default();
        lobby.push(waiting("a", 0, 300));
        lobby.push(waiting("b", 10, 100));
        lobby.push(waiting("c", 20, 200));
        assert_eq!(lobby.next_deadline(), Some(100));
        let ids: Vec<_> = lobby.entries().into_iter().map(|e| e.participant_id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(lobby.take_expired(99).is_empty());
        let gone: Vec<_> = lobby
            .take_expired(200)
            .into_iter()
            .map(|w| w.info.participant_id)
            .collect();
        assert_eq!(gone, ["b", "c"]);
        assert_eq!(lobby.next_deadline(), Some(300));
        assert!(lobby.remove("a").is_some() && lobby.remove("a").is_none());
        assert!(lobby.is_empty() && lobby.next_deadline().is_none());
    }
}
