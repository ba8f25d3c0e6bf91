//! Our own media health: each connection's state and path, what the server is told
//! about it, and when a connection is restarted.
//!
//! The decisions are plain state machines that take `now` and return what to do, so
//! they are tested without a network: [`path_of`] names a path from the selected
//! pair's local candidate, [`ReportPacer`] coalesces `media_status` reports and keeps
//! them under the server's rate limit, [`Recovery`] decides when to restart ICE and
//! when to give up. The client's health task (see [`Client`](crate::Client)) is the
//! thin shell that feeds them connection states and timers (docs/PROTOCOL.md §11.6).

use std::time::{Duration, Instant};

use gatehouse_signaling::protocol::{ConnectionMedia, MediaConnectionState, MediaPath, PeerRole};
use webrtc::peer_connection::{RTCIceCandidateType, RTCPeerConnectionState, RTCStatsReport, RTCStatsReportEntry};

/// Changes of media state within this long go to the server as one `media_status`
/// (as the web client does).
pub const REPORT_DELAY: Duration = Duration::from_millis(200);
/// `media_status` reports we allow ourselves at once: below the server's burst of
/// 10 (`MEDIA_STATUS_BURST`), so frames bunched up in transit still fit.
pub const REPORT_BURST: f64 = 8.0;
/// Reports per second after the burst: below the server's 2 per second.
pub const REPORTS_PER_SEC: f64 = 1.5;
/// An ICE restart that has not connected in this long is followed by another.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(6);
/// A connection still connecting this long after it started is treated as blocked
/// (a firewall that drops its media): restart ICE rather than wait for webrtc-rs to
/// call it failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// ICE restarts per connection, since it was last connected, before we give up.
pub const MAX_RESTARTS: u32 = 3;
/// A `restart_ice` whose `restart` offer has not come in this long is asked for again
/// (the server answers one at once: the request or its offer was lost or refused).
pub const RESTART_OFFER_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a lost `restart_ice` is asked for again before the SDK stops waiting.
pub const RESTART_OFFER_RETRIES: u32 = 2;

/// One of our connections as we see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnHealth {
    /// The connection state (`New` also for a connection not made yet).
    pub state: MediaConnectionState,
    /// While connected: the selected pair's path (`udp`, `tcp` or `relay`).
    pub path: Option<MediaPath>,
    /// ICE restarts since the connection was last connected.
    pub attempts: u32,
    /// Every restart failed: media on this connection is lost until the app acts
    /// (reconnect, another network). Cleared when the connection comes back.
    pub gave_up: bool,
}

impl ConnHealth {
    /// A connection not made yet.
    pub const NEW: ConnHealth = ConnHealth {
        state: MediaConnectionState::New,
        path: None,
        attempts: 0,
        gave_up: false,
    };

    /// What `media_status` says about it: a path only while connected.
    pub fn report(&self) -> ConnectionMedia {
        ConnectionMedia {
            state: self.state,
            path: self.path.filter(|_| self.state == MediaConnectionState::Connected),
        }
    }
}

impl Default for ConnHealth {
    fn default() -> Self {
        ConnHealth::NEW
    }
}

/// Both of our media connections ([`Client::media_health`](crate::Client::media_health)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaHealth {
    /// What we send.
    pub publisher: ConnHealth,
    /// What we receive.
    pub subscriber: ConnHealth,
}

impl MediaHealth {
    /// One connection's health.
    pub fn get(&self, role: PeerRole) -> &ConnHealth {
        match role {
            PeerRole::Publisher => &self.publisher,
            PeerRole::Subscriber => &self.subscriber,
        }
    }

    /// One connection's health, to change.
    pub fn get_mut(&mut self, role: PeerRole) -> &mut ConnHealth {
        match role {
            PeerRole::Publisher => &mut self.publisher,
            PeerRole::Subscriber => &mut self.subscriber,
        }
    }

    /// The `media_status` body: (publisher, subscriber).
    pub fn report(&self) -> (ConnectionMedia, ConnectionMedia) {
        (self.publisher.report(), self.subscriber.report())
    }
}

/// The wire state for a webrtc-rs connection state.
pub fn conn_state(state: RTCPeerConnectionState) -> MediaConnectionState {
    match state {
        RTCPeerConnectionState::Connecting => MediaConnectionState::Connecting,
        RTCPeerConnectionState::Connected => MediaConnectionState::Connected,
        RTCPeerConnectionState::Disconnected => MediaConnectionState::Disconnected,
        RTCPeerConnectionState::Failed => MediaConnectionState::Failed,
        RTCPeerConnectionState::Closed => MediaConnectionState::Closed,
        _ => MediaConnectionState::New,
    }
}

/// The path of a selected pair's local candidate: `relay` for a TURN candidate,
/// otherwise its transport protocol.
pub fn path_of(candidate_type: RTCIceCandidateType, protocol: &str) -> MediaPath {
    if candidate_type == RTCIceCandidateType::Relay {
        MediaPath::Relay
    } else if protocol.eq_ignore_ascii_case("tcp") {
        MediaPath::Tcp
    } else {
        MediaPath::Udp
    }
}

/// The path of the selected candidate pair in a `get_stats` report: the transport's
/// `selected_candidate_pair_id`, else a nominated, succeeded pair; `None` when
/// nothing is selected.
pub fn selected_path(report: &RTCStatsReport) -> Option<MediaPath> {
    let selected = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.as_str())
        .filter(|id| !id.is_empty());
    let pair = selected
        .and_then(|id| report.candidate_pairs().find(|p| p.stats.id == id))
        .or_else(|| {
            report.candidate_pairs().find(|p| {
                p.nominated
                    && p.state == rtc::statistics::stats::ice_candidate_pair::RTCStatsIceCandidatePairState::Succeeded
            })
        })?;
    // webrtc-rs 0.21.1 names the pair's local candidate by the ICE agent's id, but keys
    // the candidate's own entry `RTCLocalIceCandidate_<id>`: look under both.
    let id = &pair.local_candidate_id;
    let entry = report
        .get(id)
        .or_else(|| report.get(&format!("RTCLocalIceCandidate_{id}")))?;
    match entry {
        RTCStatsReportEntry::LocalCandidate(local) => Some(path_of(local.candidate_type, &local.protocol)),
        _ => None,
    }
}

/// What [`ReportPacer::flush`] says to do with the current report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Send it now.
    Send((ConnectionMedia, ConnectionMedia)),
    /// The server already has exactly this: send nothing.
    Unchanged,
    /// Nothing due before this instant (coalescing, or the rate budget is spent).
    Later(Instant),
    /// Nothing waits to be reported.
    Idle,
}

/// Coalesces `media_status` reports: a change is reported [`REPORT_DELAY`] after it
/// (with whatever else changed meanwhile), never twice the same, and never faster
/// than a token bucket stricter than the server's ([`REPORT_BURST`],
/// [`REPORTS_PER_SEC`]), so the SDK never earns a `rate_limited`.
#[derive(Debug, Clone)]
pub struct ReportPacer {
    /// What the server was last told (`None` before the first report).
    last_sent: Option<(ConnectionMedia, ConnectionMedia)>,
    /// When the oldest unreported change happened.
    pending_since: Option<Instant>,
    /// Reports we may send now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled_at: Instant,
}

impl ReportPacer {
    /// A pacer with a full budget.
    pub fn new(now: Instant) -> ReportPacer {
        ReportPacer {
            last_sent: None,
            pending_since: None,
            tokens: REPORT_BURST,
            refilled_at: now,
        }
    }

    /// Something changed: a report is due [`REPORT_DELAY`] after the first unreported change.
    pub fn changed(&mut self, now: Instant) {
        self.pending_since.get_or_insert(now);
    }

    /// When the next [`flush`](Self::flush) may do something (`None`: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        let due = self.pending_since? + REPORT_DELAY;
        let budget = if self.tokens >= 1.0 {
            self.refilled_at
        } else {
            self.refilled_at + Duration::from_secs_f64((1.0 - self.tokens) / REPORTS_PER_SEC)
        };
        Some(due.max(budget))
    }

    /// Decides about `report` (the current health) at `now`.
    pub fn flush(&mut self, now: Instant, report: (ConnectionMedia, ConnectionMedia)) -> Flush {
        let Some(since) = self.pending_since else {
            return Flush::Idle;
        };
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * REPORTS_PER_SEC).min(REPORT_BURST);
        self.refilled_at = now;
        if now < since + REPORT_DELAY || self.tokens < 1.0 {
            return Flush::Later(self.deadline().unwrap_or(now));
        }
        self.pending_since = None;
        if self.last_sent == Some(report) {
            return Flush::Unchanged;
        }
        self.tokens -= 1.0;
        self.last_sent = Some(report);
        Flush::Send(report)
    }
}

/// The subscriber's `restart_ice` in flight: while it waits for its `restart` offer,
/// offers made for the old connection are ignored; this makes sure that wait ends.
/// Asked again after [`RESTART_OFFER_TIMEOUT`], at most [`RESTART_OFFER_RETRIES`]
/// times; then the wait is given up and the server's offers are taken as they come.
#[derive(Debug, Clone, Default)]
pub struct PendingRestart {
    /// When the `restart` offer is overdue; `None` with no restart in flight.
    deadline: Option<Instant>,
    /// Times asked again for this restart.
    retries: u32,
}

/// What to do about a `restart` offer that has not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartTimeout {
    /// Send `restart_ice` again.
    AskAgain,
    /// Stop waiting: offers without `restart` are taken again.
    GiveUp,
}

impl PendingRestart {
    /// `restart_ice` was sent (a new restart supersedes one in flight).
    pub fn requested(&mut self, now: Instant) {
        *self = PendingRestart {
            deadline: Some(now + RESTART_OFFER_TIMEOUT),
            retries: 0,
        };
    }

    /// The `restart` offer came.
    pub fn offer_arrived(&mut self) {
        *self = PendingRestart::default();
    }

    /// Whether offers for the old connection are to be ignored.
    pub fn pending(&self) -> bool {
        self.deadline.is_some()
    }

    /// When [`on_timer`](Self::on_timer) is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time passed.
    pub fn on_timer(&mut self, now: Instant) -> Option<RestartTimeout> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                if self.retries >= RESTART_OFFER_RETRIES {
                    *self = PendingRestart::default();
                    Some(RestartTimeout::GiveUp)
                } else {
                    self.retries += 1;
                    self.deadline = Some(now + RESTART_OFFER_TIMEOUT);
                    Some(RestartTimeout::AskAgain)
                }
            }
            _ => None,
        }
    }
}

/// What [`Recovery`] wants done to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Restart ICE (the `attempt`th time since the connection was last connected).
    Restart {
        /// 1 for the first restart.
        attempt: u32,
    },
    /// Every attempt failed: stop, and tell the application.
    GiveUp {
        /// How many restarts were tried.
        attempts: u32,
    },
}

/// When to restart one connection's ICE: on `disconnected` or `failed`, or when it is
/// still connecting [`CONNECT_TIMEOUT`] after it started; again if a restart has not
/// connected within [`RESTART_TIMEOUT`]; at most [`MAX_RESTARTS`] times in a row; and
/// once more whenever asked ([`request`](Self::request)).
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Restarts since last connected.
    attempts: u32,
    /// If the connection is not connected by then: the next restart.
    deadline: Option<Instant>,
    /// `deadline` belongs to a restart in flight (not to a first connection attempt):
    /// a failure meanwhile waits for it.
    restarting: bool,
    /// Gave up: no more automatic restarts until the connection comes back or is asked.
    gave_up: bool,
}

impl Recovery {
    /// Restarts since the connection was last connected.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether every attempt failed.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// When [`on_timer`](Self::on_timer) is due (a restart in flight).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The connection's state changed.
    pub fn on_state(&mut self, now: Instant, state: MediaConnectionState) -> Option<RecoveryAction> {
        match state {
            MediaConnectionState::Connected => {
                *self = Recovery::default();
                None
            }
            MediaConnectionState::Disconnected | MediaConnectionState::Failed if !self.restarting => self.next(now),
            MediaConnectionState::Connecting if self.deadline.is_none() && !self.gave_up => {
                self.deadline = Some(now + CONNECT_TIMEOUT);
                None
            }
            _ => None,
        }
    }

    /// Time passed; `state` is the connection's state now.
    pub fn on_timer(&mut self, now: Instant, state: MediaConnectionState) -> Option<RecoveryAction> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                self.deadline = None;
                self.restarting = false;
                if state == MediaConnectionState::Connected {
                    // Connected throughout (a restart asked for on a working connection).
                    *self = Recovery::default();
                    None
                } else {
                    self.next(now)
                }
            }
            _ => None,
        }
    }

    /// Restart now because the application (or a test) asks: always a restart,
    /// even after giving up.
    pub fn request(&mut self, now: Instant) -> RecoveryAction {
        self.gave_up = false;
        self.restart(now)
    }

    fn next(&mut self, now: Instant) -> Option<RecoveryAction> {
        if self.gave_up {
            return None;
        }
        if self.attempts >= MAX_RESTARTS {
            self.gave_up = true;
            return Some(RecoveryAction::GiveUp {
                attempts: self.attempts,
            });
        }
        Some(self.restart(now))
    }

    fn restart(&mut self, now: Instant) -> RecoveryAction {
        self.attempts += 1;
        self.deadline = Some(now + RESTART_TIMEOUT);
        self.restarting = true;
        RecoveryAction::Restart { attempt: self.attempts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECTED: MediaConnectionState = MediaConnectionState::Connected;
    const DISCONNECTED: MediaConnectionState = MediaConnectionState::Disconnected;
    const FAILED: MediaConnectionState = MediaConnectionState::Failed;

    fn media(state: MediaConnectionState, path: Option<MediaPath>) -> ConnectionMedia {
        ConnectionMedia { state, path }
    }

    #[test]
    fn the_path_is_relay_for_turn_else_the_protocol() {
        assert_eq!(path_of(RTCIceCandidateType::Host, "udp"), MediaPath::Udp);
        assert_eq!(path_of(RTCIceCandidateType::Srflx, "UDP"), MediaPath::Udp);
        assert_eq!(path_of(RTCIceCandidateType::Host, "tcp"), MediaPath::Tcp);
        assert_eq!(path_of(RTCIceCandidateType::Prflx, "TCP"), MediaPath::Tcp);
        assert_eq!(path_of(RTCIceCandidateType::Relay, "udp"), MediaPath::Relay);
        assert_eq!(path_of(RTCIceCandidateType::Relay, "tcp"), MediaPath::Relay);
    }

    #[test]
    fn states_map_to_the_wire_and_a_path_is_reported_only_while_connected() {
        assert_eq!(
            conn_state(RTCPeerConnectionState::Unspecified),
            MediaConnectionState::New
        );
        assert_eq!(conn_state(RTCPeerConnectionState::Connected), CONNECTED);
        assert_eq!(conn_state(RTCPeerConnectionState::Failed), FAILED);
        let health = MediaHealth {
            publisher: ConnHealth {
                state: CONNECTED,
                path: Some(MediaPath::Tcp),
                ..ConnHealth::NEW
            },
            subscriber: ConnHealth {
                state: DISCONNECTED,
                path: Some(MediaPath::Udp),
                ..ConnHealth::NEW
            },
        };
        assert_eq!(
            health.report(),
            (media(CONNECTED, Some(MediaPath::Tcp)), media(DISCONNECTED, None))
        );
    }

    #[test]
    fn reports_are_coalesced_deduplicated_and_paced() {
        let t0 = Instant::now();
        let mut pacer = ReportPacer::new(t0);
        let a = (media(CONNECTED, Some(MediaPath::Udp)), ConnectionMedia::NEW);
        let b = (media(DISCONNECTED, None), ConnectionMedia::NEW);
        assert_eq!(pacer.flush(t0, a), Flush::Idle);
        assert_eq!(pacer.deadline(), None);

        pacer.changed(t0);
        pacer.changed(t0 + Duration::from_millis(150));
        assert_eq!(pacer.deadline(), Some(t0 + REPORT_DELAY), "from the first change");
        assert_eq!(
            pacer.flush(t0 + Duration::from_millis(100), a),
            Flush::Later(t0 + REPORT_DELAY)
        );
        assert_eq!(pacer.flush(t0 + REPORT_DELAY, a), Flush::Send(a));
        assert_eq!(pacer.deadline(), None);

        // The same report again is not sent.
        pacer.changed(t0 + Duration::from_secs(1));
        assert_eq!(pacer.flush(t0 + Duration::from_secs(2), a), Flush::Unchanged);

        // A flapping connection: never more than the budget, whatever the clock says.
        let mut sent = Vec::new();
        let mut now = t0 + Duration::from_secs(3);
        let end = now + Duration::from_secs(20);
        let mut flip = false;
        while now < end {
            pacer.changed(now);
            flip = !flip;
            if let Flush::Send(_) = pacer.flush(now, if flip { b } else { a }) {
                sent.push(now);
            }
            now += Duration::from_millis(10);
        }
        // The server's bucket (10 at once, 2 a second) must accept every one of them.
        let mut tokens = 10.0_f64;
        let mut at = sent[0];
        for &t in &sent {
            tokens = (tokens + (t - at).as_secs_f64() * 2.0).min(10.0);
            at = t;
            assert!(tokens >= 1.0, "a report the server would refuse at {:?}", t - sent[0]);
            tokens -= 1.0;
        }
        assert!(sent.len() >= 20, "still reporting: {} reports in 20 s", sent.len());
        assert!(sent.len() <= 40, "{} reports in 20 s", sent.len());
    }

    #[test]
    fn a_lost_connection_is_restarted_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let mut recovery = Recovery::default();
        assert_eq!(recovery.on_state(t0, MediaConnectionState::Connecting), None);
        assert_eq!(recovery.on_state(t0, CONNECTED), None);
        assert_eq!(
            recovery.on_state(t0, DISCONNECTED),
            Some(RecoveryAction::Restart { attempt: 1 })
        );
        // Failed while the restart is in flight: wait for it.
        assert_eq!(recovery.on_state(t0, FAILED), None);
        assert_eq!(recovery.deadline(), Some(t0 + RESTART_TIMEOUT));
        assert_eq!(recovery.on_timer(t0 + Duration::from_secs(1), FAILED), None, "not yet");
        let mut now = t0 + RESTART_TIMEOUT;
        assert_eq!(
            recovery.on_timer(now, FAILED),
            Some(RecoveryAction::Restart { attempt: 2 })
        );
        now += RESTART_TIMEOUT;
        assert_eq!(
            recovery.on_timer(now, FAILED),
            Some(RecoveryAction::Restart { attempt: 3 })
        );
        now += RESTART_TIMEOUT;
        assert_eq!(
            recovery.on_timer(now, FAILED),
            Some(RecoveryAction::GiveUp { attempts: 3 })
        );
        assert!(recovery.gave_up());
        assert_eq!(recovery.on_state(now, FAILED), None, "given up: quiet");
        assert_eq!(recovery.on_timer(now + RESTART_TIMEOUT, FAILED), None);
        // Asked to, it tries again; back up, everything is forgotten.
        assert_eq!(recovery.request(now), RecoveryAction::Restart { attempt: 4 });
        assert!(!recovery.gave_up());
        assert_eq!(recovery.on_state(now, CONNECTED), None);
        assert_eq!(recovery.attempts(), 0);
        assert_eq!(recovery.deadline(), None);
        assert_eq!(
            recovery.on_state(now, FAILED),
            Some(RecoveryAction::Restart { attempt: 1 })
        );
    }

    #[test]
    fn a_connection_that_does_not_come_up_in_time_is_restarted() {
        let t0 = Instant::now();
        let mut recovery = Recovery::default();
        assert_eq!(recovery.on_state(t0, MediaConnectionState::New), None);
        assert_eq!(recovery.deadline(), None, "nothing to wait for yet");
        assert_eq!(recovery.on_state(t0, MediaConnectionState::Connecting), None);
        assert_eq!(recovery.deadline(), Some(t0 + CONNECT_TIMEOUT));
        assert_eq!(recovery.attempts(), 0, "waiting is not a restart");
        assert_eq!(
            recovery.on_timer(t0 + CONNECT_TIMEOUT, MediaConnectionState::Connecting),
            Some(RecoveryAction::Restart { attempt: 1 })
        );
        assert_eq!(recovery.deadline(), Some(t0 + CONNECT_TIMEOUT + RESTART_TIMEOUT));

        // A failure while the first attempt is still connecting restarts at once.
        let mut recovery = Recovery::default();
        assert_eq!(recovery.on_state(t0, MediaConnectionState::Connecting), None);
        assert_eq!(
            recovery.on_state(t0 + Duration::from_secs(1), FAILED),
            Some(RecoveryAction::Restart { attempt: 1 })
        );
        // Up in time: nothing more.
        let mut recovery = Recovery::default();
        assert_eq!(recovery.on_state(t0, MediaConnectionState::Connecting), None);
        assert_eq!(recovery.on_state(t0, CONNECTED), None);
        assert_eq!(recovery.on_timer(t0 + CONNECT_TIMEOUT, CONNECTED), None);
        assert_eq!(recovery.attempts(), 0);
    }

    #[test]
    fn a_restart_that_connects_in_time_needs_no_other() {
        let t0 = Instant::now();
        let mut recovery = Recovery::default();
        assert_eq!(recovery.request(t0), RecoveryAction::Restart { attempt: 1 });
        // Still connected throughout (a restart asked for on a healthy connection).
        assert_eq!(recovery.attempts(), 1);
        assert_eq!(recovery.on_timer(t0 + RESTART_TIMEOUT, CONNECTED), None);
        assert_eq!(recovery.deadline(), None);
        assert_eq!(recovery.attempts(), 0, "it worked: the count starts again");
    }

    #[test]
    fn a_lost_restart_offer_is_asked_for_again_then_no_longer_waited_for() {
        let t0 = Instant::now();
        let mut pending = PendingRestart::default();
        assert!(!pending.pending());
        assert_eq!(pending.on_timer(t0), None, "nothing in flight");
        pending.requested(t0);
        assert!(pending.pending());
        assert_eq!(pending.deadline(), Some(t0 + RESTART_OFFER_TIMEOUT));
        assert_eq!(
            pending.on_timer(t0 + RESTART_OFFER_TIMEOUT / 2),
            None,
            "not overdue yet"
        );
        let mut now = t0;
        for _ in 0..RESTART_OFFER_RETRIES {
            now += RESTART_OFFER_TIMEOUT;
            assert_eq!(pending.on_timer(now), Some(RestartTimeout::AskAgain));
            assert!(pending.pending(), "still waiting for the offer");
        }
        now += RESTART_OFFER_TIMEOUT;
        assert_eq!(pending.on_timer(now), Some(RestartTimeout::GiveUp));
        assert!(!pending.pending(), "the server's offers are taken again");
        assert_eq!(pending.deadline(), None);
        assert_eq!(pending.on_timer(now + RESTART_OFFER_TIMEOUT), None, "once");
    }

    #[test]
    fn the_restart_offer_ends_the_wait_and_a_new_restart_starts_it_afresh() {
        let t0 = Instant::now();
        let mut pending = PendingRestart::default();
        pending.requested(t0);
        assert_eq!(
            pending.on_timer(t0 + RESTART_OFFER_TIMEOUT),
            Some(RestartTimeout::AskAgain)
        );
        // A new restart supersedes the one in flight, retries and all.
        let t1 = t0 + RESTART_OFFER_TIMEOUT + Duration::from_millis(500);
        pending.requested(t1);
        assert_eq!(pending.deadline(), Some(t1 + RESTART_OFFER_TIMEOUT));
        for i in 1..=RESTART_OFFER_RETRIES {
            assert_eq!(
                pending.on_timer(t1 + RESTART_OFFER_TIMEOUT * i),
                Some(RestartTimeout::AskAgain)
            );
        }
        pending.offer_arrived();
        assert!(!pending.pending());
        assert_eq!(pending.on_timer(t1 + RESTART_OFFER_TIMEOUT * 10), None);
    }
}
