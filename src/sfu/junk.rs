//! Junk from a connection's own address: counted, and logged at most once per
//! connection per [`JUNK_LOG_INTERVAL`] with the number of datagrams the
//! previous lines left unsaid.
//!
//! An admitted participant can send anything from the address its connection
//! learned. The demultiplexer's screen ([`super::demux::screen`]) drops it before
//! `rtc` sees it; this is what remains: a count per connection (the debug
//! snapshot shows it, the shard's counters sum it for `/metrics`) and a log that
//! stays a few lines long whatever the rate. Pure: the caller passes `now`.

use std::time::{Duration, Instant};

use super::demux::Junk;

/// At most one log line per connection per this interval.
pub const JUNK_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One connection's junk: how much, and when it was last logged.
#[derive(Debug, Clone, Default)]
pub struct JunkLog {
    /// Junk datagrams seen in the connection's life.
    pub total: u64,
    /// Junk since the last line (not yet told).
    unsaid: u64,
    /// When the last line was written.
    last_line: Option<Instant>,
}

/// What to write now: the kind of this datagram, the total, and how many datagrams
/// went untold since the previous line (this one excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JunkLine {
    pub kind: Junk,
    pub total: u64,
    pub suppressed: u64,
}

impl JunkLog {
    /// Counts one junk datagram; `Some` when a line is due (the first one, then at
    /// most once per [`JUNK_LOG_INTERVAL`]).
    pub fn note(&mut self, kind: Junk, now: Instant) -> Option<JunkLine> {
        self.total += 1;
        let due = self
            .last_line
            .is_none_or(|at| now.saturating_duration_since(at) >= JUNK_LOG_INTERVAL);
        if !due {
            self.unsaid += 1;
            return None;
        }
        self.last_line = Some(now);
        let suppressed = std::mem::take(&mut self.unsaid);
        Some(JunkLine {
            kind,
            total: self.total,
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_per_interval_with_what_was_left_unsaid() {
        let mut log = JunkLog::default();
        let t0 = Instant::now();
        let first = log.note(Junk::MalformedStun, t0).expect("the first is told");
        assert_eq!((first.total, first.suppressed), (1, 0));
        let mut lines = 0;
        // 3 000 datagrams over 25 s: lines at 0 s (above), 10 s and 20 s only.
        for i in 1..3_000u64 {
            let at = t0 + Duration::from_micros(i * 25_000_000 / 3_000);
            if let Some(line) = log.note(Junk::MalformedRtp, at) {
                lines += 1;
                assert_eq!(line.kind, Junk::MalformedRtp);
                assert_eq!(line.total, i + 1);
                assert!(line.suppressed > 1000, "{line:?}");
            }
        }
        assert_eq!(lines, 2);
        assert_eq!(log.total, 3_000);
        // Quiet for an interval: the next one is told at once, with the rest of the flood.
        let later = log.note(Junk::NotWebRtc, t0 + Duration::from_secs(40)).expect("due");
        assert_eq!(later.total, 3_001);
        assert!(later.suppressed > 0);
    }
}
