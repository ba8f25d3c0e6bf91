//! A live meeting: who is in the call, who waits in the lobby, and what
//! every action does to them.
//!
//! [`Room`] is a pure state machine. Each method takes `now` (Unix ms) and an
//! input and returns [`Effect`]s for the shell to carry out: frames to send,
//! sockets to close, media to start or stop, events to persist. The room never
//! trusts the client: every capability is checked here from the identity the
//! token gave and the room's own state.
//!
//! A guest in the call whose socket drops is *held*, not gone: it stays on the
//! roster, others are told nothing (but a `participant_media` saying its media is
//! disconnected), and a `join` with the same id within the seat hold resumes the
//! attendance as if nothing had happened. Only when the hold runs out do others get
//! `participant_left {reason: disconnected}`, once.

use serde::{Deserialize, Serialize};

use crate::admission::{Attendee, may_bypass_lobby};
use crate::chat::{chat_bucket, clean_chat_text};
use crate::error::{Error, ErrorCode};
use crate::lobby::{ConnId, Lobby, Waiting};
use crate::meeting::Meeting;
use crate::protocol::{
    ChatMessage, ClientMessage, ConnectionMedia, LeaveReason, LobbyStatus, MeetingId, MeetingSummary, PROTOCOL_VERSION,
    ParticipantId, ParticipantInfo, ParticipantKind, ServerMessage,
};
use crate::ratelimit::TokenBucket;

/// How long, by default, a guest in the call whose connection dropped keeps their seat
/// (see [`Room::with_seat_hold`]).
pub const REJOIN_GRACE_MS: u64 = 60_000;

/// Longest reason staff may give when denying or removing someone.
pub const MAX_REASON_CHARS: usize = 200;

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a frame on a connection.
    Send { conn: ConnId, msg: ServerMessage },
    /// Close a connection (after the frames queued before this).
    Close { conn: ConnId },
    /// The participant entered the call: start its media and send it
    /// `admitted` with these participants (the shell adds tracks and ICE servers).
    EnterCall {
        conn: ConnId,
        participant: ParticipantInfo,
        others: Vec<ParticipantInfo>,
        may_present: bool,
        /// It was in the call already (held after a drop, or replaced by a new socket):
        /// its old media connections are replaced by new ones for the new socket.
        /// Others were told nothing of the change of socket.
        resumed: bool,
    },
    /// The participant left the call: stop its media.
    LeaveCall { participant_id: ParticipantId },
    /// Persist a participation event.
    Record(ParticipationEvent),
    /// Persist that the meeting has ended.
    MeetingEnded,
}

/// What happened to a participant, for appointment analytics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipationEvent {
    pub meeting_id: MeetingId,
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub kind: ParticipantKind,
    pub at_ms: u64,
    pub event: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    LinkRedeemed { link_id: String },
    EnteredLobby,
    Admitted { wait_ms: u64, by: Option<ParticipantId> },
    Denied { wait_ms: u64, reason: Option<String> },
    LobbyTimeout { wait_ms: u64 },
    LeftLobby { wait_ms: u64 },
    Joined,
    Left { reason: LeaveReason, in_call_ms: u64 },
}

/// `media_status` frames a participant may send at once, and per second after that.
/// A client reports on change only (a few per reconnection), so this bounds a
/// misbehaving one without refusing a real one.
pub const MEDIA_STATUS_BURST: u32 = 10;
pub const MEDIA_STATUS_PER_SEC: f64 = 2.0;

/// Someone in the call.
#[derive(Debug, Clone)]
struct Member {
    /// Their current connection; while `held`, the one that dropped (never written to).
    conn: ConnId,
    info: ParticipantInfo,
    joined_at_ms: u64,
    /// Fixed on entering the call; a resumed attendance keeps it.
    may_present: bool,
    chat: TokenBucket,
    /// Their last `media_status` (publisher, subscriber): relayed on change, and
    /// told to whoever enters the call later.
    media: Option<(ConnectionMedia, ConnectionMedia)>,
    media_reports: TokenBucket,
    /// Set while their connection is gone and the seat is held for them.
    held: Option<Held>,
}

/// A seat held for a guest whose connection dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// When the connection dropped: the end of the attendance if they do not come back.
    since_ms: u64,
    /// When the seat is given up and others are told they left.
    until_ms: u64,
}

/// What others are told of a held participant's media: both connections lost.
const HELD_MEDIA: ConnectionMedia = ConnectionMedia {
    state: crate::protocol::MediaConnectionState::Disconnected,
    path: None,
};

/// What staff may do to someone waiting in the lobby.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobbyAction {
    Admit(ParticipantId),
    AdmitAll,
    /// Turn away, with an optional reason the person sees.
    Deny(ParticipantId, Option<String>),
}

/// A join request, already authenticated by the shell.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub conn: ConnId,
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub attendee: Attendee,
}

/// The live state of one meeting.
#[derive(Debug)]
pub struct Room {
    meeting: Meeting,
    members: Vec<Member>,
    lobby: Lobby,
    chat_seq: u64,
    /// How long a dropped guest's seat is held (ms).
    seat_hold_ms: u64,
}

impl Room {
    pub fn new(meeting: Meeting) -> Self {
        Self::with_seat_hold(meeting, REJOIN_GRACE_MS)
    }

    /// A room that holds a dropped guest's seat for `seat_hold_ms` (the `seat_hold_secs`
    /// setting); 0 gives the seat up at once, as an explicit `leave` does.
    pub fn with_seat_hold(meeting: Meeting, seat_hold_ms: u64) -> Self {
        Self {
            meeting,
            members: Vec::new(),
            lobby: Lobby::default(),
            chat_seq: 0,
            seat_hold_ms,
        }
    }

    pub fn meeting(&self) -> &Meeting {
        &self.meeting
    }

    /// Takes new settings (e.g. after a REST update); people already waiting keep waiting.
    pub fn update_meeting(&mut self, meeting: Meeting) {
        self.meeting = meeting;
    }

    /// Nobody in the call or the lobby, held seats included: the shell may drop the
    /// room. A held seat keeps the room (and so the seat) until it expires, even when
    /// the one who dropped was the last person there.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.lobby.is_empty()
    }

    /// On the call's roster: connected, or held after a drop.
    pub fn in_call(&self, participant_id: &str) -> bool {
        self.member(participant_id).is_some()
    }

    /// In the call, but its connection dropped and its seat is held.
    pub fn is_held(&self, participant_id: &str) -> bool {
        self.member(participant_id).is_some_and(|m| m.held.is_some())
    }

    fn connected(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.held.is_none())
    }

    /// The participant id a connection speaks for, if it is still current
    /// (a held participant's dropped connection is not).
    pub fn participant_of(&self, conn: ConnId) -> Option<&str> {
        self.connected()
            .map(|m| (m.conn, &m.info.participant_id))
            .chain(self.lobby.iter().map(|w| (w.conn, &w.info.participant_id)))
            .find(|(c, _)| *c == conn)
            .map(|(_, id)| id.as_str())
    }

    /// The call's roster, held participants included, in the order they entered.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.members.iter().map(|m| m.info.clone()).collect()
    }

    /// How many are connected in the call (held seats not counted).
    pub fn call_len(&self) -> usize {
        self.connected().count()
    }

    /// How many seats are held for guests whose connection dropped.
    pub fn held_len(&self) -> usize {
        self.members.len() - self.call_len()
    }

    pub fn lobby_len(&self) -> usize {
        self.lobby.len()
    }

    /// When the shell should call [`Room::tick`] next: a lobby timeout or a held seat's end.
    pub fn next_deadline(&self) -> Option<u64> {
        let seats = self.members.iter().filter_map(|m| m.held).map(|h| h.until_ms).min();
        match (self.lobby.next_deadline(), seats) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn member(&self, participant_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.info.participant_id == participant_id)
    }

    fn staff_present(&self) -> bool {
        self.members.iter().any(|m| m.info.kind == ParticipantKind::Staff)
    }

    fn lobby_status(&self) -> LobbyStatus {
        if self.staff_present() {
            LobbyStatus::WaitingForAdmission
        } else {
            LobbyStatus::WaitingForHost
        }
    }

    fn summary(&self) -> MeetingSummary {
        MeetingSummary {
            meeting_id: self.meeting.meeting_id.clone(),
            title: self.meeting.settings.title.clone(),
            chat_enabled: self.meeting.settings.chat_enabled,
            guests_may_present: self.meeting.settings.guests_may_present,
        }
    }

    fn record(&self, out: &mut Vec<Effect>, info: &ParticipantInfo, now: u64, event: EventKind) {
        out.push(Effect::Record(ParticipationEvent {
            meeting_id: self.meeting.meeting_id.clone(),
            participant_id: info.participant_id.clone(),
            display_name: info.display_name.clone(),
            kind: info.kind,
            at_ms: now,
            event,
        }));
    }

    /// To everyone connected in the call (a held participant has no socket to write to).
    fn broadcast(&self, out: &mut Vec<Effect>, msg: &ServerMessage, except: Option<&str>) {
        for m in self.connected() {
            if Some(m.info.participant_id.as_str()) != except {
                out.push(Effect::Send {
                    conn: m.conn,
                    msg: msg.clone(),
                });
            }
        }
    }

    /// Tells every staff member in the call what the lobby looks like now.
    fn lobby_changed(&self, out: &mut Vec<Effect>) {
        let msg = ServerMessage::LobbyUpdate {
            entries: self.lobby.entries(),
        };
        for m in self.connected().filter(|m| m.info.kind == ParticipantKind::Staff) {
            out.push(Effect::Send {
                conn: m.conn,
                msg: msg.clone(),
            });
        }
    }

    fn say_left(out: &mut Vec<Effect>, conn: ConnId, reason: LeaveReason, message: Option<String>) {
        out.push(Effect::Send {
            conn,
            msg: ServerMessage::Left { reason, message },
        });
        out.push(Effect::Close { conn });
    }

    /// An authenticated participant joins on a new connection.
    pub fn join(&mut self, now: u64, req: JoinRequest) -> Result<Vec<Effect>, Error> {
        if self.meeting.is_ended() {
            return Err(Error::new(ErrorCode::MeetingEnded, "this meeting has ended"));
        }
        let mut out = Vec::new();
        // A hold that ran out before the shell's timer fired ends now, before anything else.
        self.expire_holds(now, &mut out);
        // Someone in the call (held after a drop, or still connected: a reload, a second
        // tab, a socket the server has not yet seen die) comes back to the call on the new
        // connection, not to the lobby, and nobody else sees them leave and rejoin.
        if let Some(i) = self
            .members
            .iter()
            .position(|m| m.info.participant_id == req.participant_id)
        {
            self.resume(i, req.conn, &mut out);
            return Ok(out);
        }
        // Someone waiting on another connection is placed from scratch.
        if self.lobby.get(&req.participant_id).is_some() {
            self.depart(now, &req.participant_id, LeaveReason::Replaced, None, &mut out);
        }
        let occupancy = self.members.len() + self.lobby.len();
        // The organiser is never locked out of their own meeting by people waiting.
        if occupancy >= self.meeting.settings.max_participants as usize && !req.attendee.is_organizer(&self.meeting) {
            return Err(Error::new(ErrorCode::MeetingFull, "this meeting is full"));
        }
        let kind = match req.attendee {
            Attendee::Staff { .. } => ParticipantKind::Staff,
            Attendee::Guest { .. } => ParticipantKind::Guest,
        };
        let organizer = req.attendee.is_organizer(&self.meeting);
        let info = ParticipantInfo {
            participant_id: req.participant_id.clone(),
            display_name: req.display_name.clone(),
            kind,
            organizer,
        };
        out.push(Effect::Send {
            conn: req.conn,
            msg: ServerMessage::Joined {
                protocol: PROTOCOL_VERSION,
                you: info.clone(),
                meeting: self.summary(),
            },
        });
        let may_bypass = may_bypass_lobby(&self.meeting, &req.attendee);
        // Guests wait for a host even when the rule would let them in; staff are hosts.
        let enters = organizer || (may_bypass && (kind == ParticipantKind::Staff || self.staff_present()));
        if enters {
            self.record(&mut out, &info, now, EventKind::Joined);
            self.enter_call(now, req.conn, info, &mut out);
        } else {
            let status = self.lobby_status();
            let timeout_secs = self.meeting.settings.lobby_timeout_secs;
            self.lobby.push(Waiting {
                conn: req.conn,
                invited: req.attendee.is_invited(&self.meeting),
                attendee: req.attendee,
                info: info.clone(),
                may_bypass,
                since_ms: now,
                deadline_ms: now + timeout_secs * 1000,
            });
            out.push(Effect::Send {
                conn: req.conn,
                msg: ServerMessage::Lobby { status, timeout_secs },
            });
            self.record(&mut out, &info, now, EventKind::EnteredLobby);
            self.lobby_changed(&mut out);
        }
        Ok(out)
    }

    /// After `admitted` (the shell sends it for EnterCall): the media state of the
    /// others in the call, so someone entering sees at once who has none.
    fn tell_media_of_others(&self, conn: ConnId, me: &str, out: &mut Vec<Effect>) {
        for m in self.members.iter().filter(|m| m.info.participant_id != me) {
            if let Some((publisher, subscriber)) = m.media {
                out.push(Effect::Send {
                    conn,
                    msg: ServerMessage::ParticipantMedia {
                        participant_id: m.info.participant_id.clone(),
                        publisher,
                        subscriber,
                    },
                });
            }
        }
    }

    fn enter_call(&mut self, now: u64, conn: ConnId, info: ParticipantInfo, out: &mut Vec<Effect>) {
        let first_host = info.kind == ParticipantKind::Staff && !self.staff_present();
        let others = self.participants();
        let may_present = info.kind == ParticipantKind::Staff || self.meeting.settings.guests_may_present;
        out.push(Effect::EnterCall {
            conn,
            participant: info.clone(),
            others,
            may_present,
            resumed: false,
        });
        self.broadcast(
            out,
            &ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
            None,
        );
        self.tell_media_of_others(conn, &info.participant_id, out);
        let is_staff = info.kind == ParticipantKind::Staff;
        self.members.push(Member {
            conn,
            info,
            joined_at_ms: now,
            may_present,
            chat: chat_bucket(now),
            media: None,
            media_reports: TokenBucket::new(MEDIA_STATUS_BURST, MEDIA_STATUS_PER_SEC, now),
            held: None,
        });
        if is_staff {
            out.push(Effect::Send {
                conn,
                msg: ServerMessage::LobbyUpdate {
                    entries: self.lobby.entries(),
                },
            });
        }
        if first_host {
            // The host has arrived: those the rule lets in go in, the rest now wait for admission.
            for w in self.lobby.drain_where(|w| w.may_bypass) {
                self.admit_waiting(now, w, None, out);
            }
            let timeout_secs = self.meeting.settings.lobby_timeout_secs;
            for w in self.lobby.iter() {
                let msg = ServerMessage::Lobby {
                    status: LobbyStatus::WaitingForAdmission,
                    timeout_secs,
                };
                out.push(Effect::Send { conn: w.conn, msg });
            }
            self.lobby_changed(out);
        }
    }

    /// Member `i` carries on in the call on connection `conn`: the one it had is told
    /// `left {replaced}` if it is still there, the new one gets `joined` and `admitted`
    /// with the room as it is now. Others are told nothing: for them it never left.
    fn resume(&mut self, i: usize, conn: ConnId, out: &mut Vec<Effect>) {
        let m = &mut self.members[i];
        if m.held.take().is_none() {
            Self::say_left(out, m.conn, LeaveReason::Replaced, None);
        }
        m.conn = conn;
        let (info, may_present) = (m.info.clone(), m.may_present);
        out.push(Effect::Send {
            conn,
            msg: ServerMessage::Joined {
                protocol: PROTOCOL_VERSION,
                you: info.clone(),
                meeting: self.summary(),
            },
        });
        let others = self
            .members
            .iter()
            .filter(|m| m.info.participant_id != info.participant_id)
            .map(|m| m.info.clone())
            .collect();
        out.push(Effect::EnterCall {
            conn,
            participant: info.clone(),
            others,
            may_present,
            resumed: true,
        });
        self.tell_media_of_others(conn, &info.participant_id, out);
        if info.kind == ParticipantKind::Staff {
            out.push(Effect::Send {
                conn,
                msg: ServerMessage::LobbyUpdate {
                    entries: self.lobby.entries(),
                },
            });
        }
    }

    fn admit_waiting(&mut self, now: u64, w: Waiting, by: Option<ParticipantId>, out: &mut Vec<Effect>) {
        let wait_ms = now.saturating_sub(w.since_ms);
        self.record(out, &w.info, now, EventKind::Admitted { wait_ms, by });
        self.record(out, &w.info, now, EventKind::Joined);
        self.enter_call(now, w.conn, w.info, out);
    }

    /// Removes a participant from the call or the lobby, telling everyone who should know.
    /// `notify` says whether the departing connection is still there to be told.
    fn depart(
        &mut self,
        now: u64,
        participant_id: &str,
        reason: LeaveReason,
        message: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let notify = reason != LeaveReason::Disconnected;
        if let Some(i) = self
            .members
            .iter()
            .position(|m| m.info.participant_id == participant_id)
        {
            let m = self.members.remove(i);
            let was_host = m.info.kind == ParticipantKind::Staff;
            // A held participant has no connection left to tell.
            if notify && m.held.is_none() {
                Self::say_left(out, m.conn, reason, message);
            }
            out.push(Effect::LeaveCall {
                participant_id: m.info.participant_id.clone(),
            });
            // A held participant's attendance ended when its connection dropped.
            let left_at = m.held.map_or(now, |h| h.since_ms);
            let in_call_ms = left_at.saturating_sub(m.joined_at_ms);
            self.record(out, &m.info, left_at, EventKind::Left { reason, in_call_ms });
            let left = ServerMessage::ParticipantLeft {
                participant_id: m.info.participant_id.clone(),
                reason,
            };
            self.broadcast(out, &left, None);
            if was_host && !self.staff_present() {
                // No host any more: whoever waits now waits for the host again.
                let timeout_secs = self.meeting.settings.lobby_timeout_secs;
                for w in self.lobby.iter() {
                    let msg = ServerMessage::Lobby {
                        status: LobbyStatus::WaitingForHost,
                        timeout_secs,
                    };
                    out.push(Effect::Send { conn: w.conn, msg });
                }
            }
        } else if let Some(w) = self.lobby.remove(participant_id) {
            if notify {
                Self::say_left(out, w.conn, reason, message.clone());
            }
            let wait_ms = now.saturating_sub(w.since_ms);
            let event = match reason {
                LeaveReason::Denied => EventKind::Denied {
                    wait_ms,
                    reason: message,
                },
                LeaveReason::LobbyTimeout => EventKind::LobbyTimeout { wait_ms },
                _ => EventKind::LeftLobby { wait_ms },
            };
            self.record(out, &w.info, now, event);
            self.lobby_changed(out);
        }
    }

    /// The connection dropped. Ignored if that connection was already replaced (or
    /// already dropped).
    ///
    /// A guest in the call is held: it stays on the roster for the seat hold, and others
    /// learn only that its media is disconnected (`participant_media`). Staff get a new
    /// participant id on every join, so nothing could resume their seat: they leave at
    /// once, as does everyone in the lobby.
    pub fn disconnected(&mut self, now: u64, conn: ConnId) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(id) = self.participant_of(conn).map(str::to_owned) else {
            return out;
        };
        let hold = self.seat_hold_ms;
        match self.members.iter_mut().find(|m| m.info.participant_id == id) {
            Some(m) if m.info.kind == ParticipantKind::Guest && hold > 0 => {
                m.held = Some(Held {
                    since_ms: now,
                    until_ms: now.saturating_add(hold),
                });
                let changed = m.media != Some((HELD_MEDIA, HELD_MEDIA));
                m.media = Some((HELD_MEDIA, HELD_MEDIA));
                let msg = ServerMessage::ParticipantMedia {
                    participant_id: m.info.participant_id.clone(),
                    publisher: HELD_MEDIA,
                    subscriber: HELD_MEDIA,
                };
                if changed {
                    self.broadcast(&mut out, &msg, Some(&id));
                }
            }
            _ => self.depart(now, &id, LeaveReason::Disconnected, None, &mut out),
        }
        out
    }

    /// Held seats whose hold has run out are given up: others are told now that the
    /// participant left (`disconnected`).
    fn expire_holds(&mut self, now: u64, out: &mut Vec<Effect>) {
        let expired: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.held.is_some_and(|h| h.until_ms <= now))
            .map(|m| m.info.participant_id.clone())
            .collect();
        for id in expired {
            self.depart(now, &id, LeaveReason::Disconnected, None, out);
        }
    }

    /// The server is stopping and nobody is connected: held seats are given up now,
    /// so their departures are recorded (nobody is left to tell).
    /// (Each departure is recorded at the time of its drop.)
    pub fn give_up_holds(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        self.expire_holds(u64::MAX, &mut out);
        out
    }

    /// Lobby timeouts, and held seats given up.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.expire_holds(now, &mut out);
        let expired: Vec<_> = self
            .lobby
            .iter()
            .filter(|w| w.deadline_ms <= now)
            .map(|w| w.info.participant_id.clone())
            .collect();
        let minutes = self.meeting.settings.lobby_timeout_secs.div_ceil(60);
        for id in expired {
            let message =
                format!("Nobody let you in within {minutes} minute(s). You can open the link again to retry.");
            self.depart(now, &id, LeaveReason::LobbyTimeout, Some(message), &mut out);
        }
        out
    }

    /// A frame from a joined connection. Media frames are not the room's
    /// business: the shell routes them after checking [`Room::in_call`].
    pub fn handle(&mut self, now: u64, conn: ConnId, msg: ClientMessage) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(me) = self.participant_of(conn).map(str::to_owned) else {
            out.push(Effect::Send {
                conn,
                msg: ServerMessage::error(ErrorCode::NotInCall, "you are no longer in this meeting"),
            });
            return out;
        };
        if let Err(e) = self.apply(now, conn, &me, msg, &mut out) {
            out.push(Effect::Send {
                conn,
                msg: ServerMessage::error(e.code, e.message),
            });
        }
        out
    }

    /// Staff act on the lobby from outside the call (the console's queue). The
    /// shell has already checked that `by` may manage this meeting. A guest admitted
    /// this way enters the call even if no staff member is in it yet.
    pub fn lobby_action_from_queue(&mut self, now: u64, by: &str, action: LobbyAction) -> Result<Vec<Effect>, Error> {
        let mut out = Vec::new();
        self.lobby_action(now, by, action, &mut out)?;
        Ok(out)
    }

    fn lobby_action(&mut self, now: u64, by: &str, action: LobbyAction, out: &mut Vec<Effect>) -> Result<(), Error> {
        let nobody = || Error::new(ErrorCode::NotFound, "nobody with that id is waiting in the lobby");
        match action {
            LobbyAction::Admit(participant_id) => {
                let w = self.lobby.remove(&participant_id).ok_or_else(nobody)?;
                self.admit_waiting(now, w, Some(by.into()), out);
                self.lobby_changed(out);
            }
            LobbyAction::AdmitAll => {
                for w in self.lobby.drain_where(|_| true) {
                    self.admit_waiting(now, w, Some(by.into()), out);
                }
                self.lobby_changed(out);
            }
            LobbyAction::Deny(participant_id, reason) => {
                let reason = clean_reason(reason)?;
                if self.lobby.get(&participant_id).is_none() {
                    return Err(nobody());
                }
                self.depart(now, &participant_id, LeaveReason::Denied, reason, out);
            }
        }
        Ok(())
    }

    /// What the queue shows of this meeting: the lobby, oldest first.
    pub fn lobby_entries(&self) -> Vec<crate::protocol::LobbyEntry> {
        self.lobby.entries()
    }

    /// `msg` to every guest waiting in the lobby (staff waiting there are not told: a
    /// guest's place in the appointments queue is theirs alone).
    pub fn to_guests_in_lobby(&self, msg: &ServerMessage) -> Vec<Effect> {
        self.lobby
            .iter()
            .filter(|w| w.info.kind == ParticipantKind::Guest)
            .map(|w| Effect::Send {
                conn: w.conn,
                msg: msg.clone(),
            })
            .collect()
    }

    fn require_staff_in_call(&self, me: &str) -> Result<(), Error> {
        match self.member(me) {
            Some(m) if m.info.kind == ParticipantKind::Staff => Ok(()),
            Some(_) => Err(Error::new(ErrorCode::Forbidden, "only staff may do this")),
            None if self
                .lobby
                .get(me)
                .is_some_and(|w| w.info.kind == ParticipantKind::Staff) =>
            {
                Err(Error::new(ErrorCode::NotInCall, "enter the call before managing it"))
            }
            None => Err(Error::new(ErrorCode::Forbidden, "only staff may do this")),
        }
    }

    fn apply(
        &mut self,
        now: u64,
        conn: ConnId,
        me: &str,
        msg: ClientMessage,
        out: &mut Vec<Effect>,
    ) -> Result<(), Error> {
        match msg {
            ClientMessage::Join { .. } | ClientMessage::SubscribeQueue { .. } => Err(Error::new(
                ErrorCode::AlreadyJoined,
                "this connection has already joined",
            )),
            ClientMessage::Leave => {
                self.depart(now, me, LeaveReason::Left, None, out);
                Ok(())
            }
            ClientMessage::Ping { nonce } => {
                out.push(Effect::Send {
                    conn,
                    msg: ServerMessage::Pong { nonce },
                });
                Ok(())
            }
            ClientMessage::Admit { participant_id } => {
                self.require_staff_in_call(me)?;
                self.lobby_action(now, me, LobbyAction::Admit(participant_id), out)
            }
            ClientMessage::AdmitAll => {
                self.require_staff_in_call(me)?;
                self.lobby_action(now, me, LobbyAction::AdmitAll, out)
            }
            ClientMessage::Deny { participant_id, reason } => {
                self.require_staff_in_call(me)?;
                self.lobby_action(now, me, LobbyAction::Deny(participant_id, reason), out)
            }
            ClientMessage::Remove { participant_id, reason } => {
                self.require_staff_in_call(me)?;
                let reason = clean_reason(reason)?;
                if participant_id == me {
                    return Err(Error::new(ErrorCode::BadRequest, "use `leave` to leave"));
                }
                let target = self
                    .member(&participant_id)
                    .ok_or_else(|| Error::new(ErrorCode::NotFound, "nobody with that id is in the call"))?;
                if target.info.organizer {
                    return Err(Error::new(ErrorCode::Forbidden, "the organiser cannot be removed"));
                }
                self.depart(now, &participant_id, LeaveReason::Removed, reason, out);
                Ok(())
            }
            ClientMessage::EndMeeting => {
                self.require_staff_in_call(me)?;
                self.end(now, out);
                Ok(())
            }
            ClientMessage::Chat { text } => {
                let sender = self
                    .members
                    .iter_mut()
                    .find(|m| m.info.participant_id == me)
                    .ok_or_else(|| Error::new(ErrorCode::NotInCall, "chat is only available in the call"))?;
                if !self.meeting.settings.chat_enabled {
                    return Err(Error::new(
                        ErrorCode::ChatDisabled,
                        "chat is turned off for this meeting",
                    ));
                }
                let text = clean_chat_text(&text)?;
                if !sender.chat.try_take(now) {
                    return Err(Error::new(ErrorCode::RateLimited, "you are sending messages too fast"));
                }
                let info = sender.info.clone();
                self.chat_seq += 1;
                let message = ChatMessage {
                    seq: self.chat_seq,
                    participant_id: info.participant_id,
                    display_name: info.display_name,
                    text,
                    sent_at_ms: now,
                };
                self.broadcast(out, &ServerMessage::Chat { message }, None);
                Ok(())
            }
            ClientMessage::MediaStatus { publisher, subscriber } => {
                let member = self
                    .members
                    .iter_mut()
                    .find(|m| m.info.participant_id == me)
                    .ok_or_else(|| Error::new(ErrorCode::NotInCall, "media is only available in the call"))?;
                if !member.media_reports.try_take(now) {
                    return Err(Error::new(ErrorCode::RateLimited, "media_status is sent too often"));
                }
                // Coalesced: only a change is relayed.
                if member.media == Some((publisher, subscriber)) {
                    return Ok(());
                }
                member.media = Some((publisher, subscriber));
                let msg = ServerMessage::ParticipantMedia {
                    participant_id: member.info.participant_id.clone(),
                    publisher,
                    subscriber,
                };
                self.broadcast(out, &msg, Some(me));
                Ok(())
            }
            ClientMessage::PublishOffer { .. }
            | ClientMessage::SubscribeAnswer { .. }
            | ClientMessage::RestartIce
            | ClientMessage::RefreshIceServers
            | ClientMessage::IceCandidate { .. }
            | ClientMessage::MuteTrack { .. }
            | ClientMessage::SetSubscription { .. } => {
                Err(Error::new(ErrorCode::NotInCall, "media is only available in the call"))
            }
        }
    }

    /// Ends the meeting for everyone in the call and the lobby.
    pub fn end(&mut self, now: u64, out: &mut Vec<Effect>) {
        self.end_saying(now, None, out);
    }

    /// Ends the meeting as [`Room::end`] does, with `message` (why) in everyone's `left`:
    /// an appointment's meeting ends when the appointment is cancelled.
    pub fn end_saying(&mut self, now: u64, message: Option<String>, out: &mut Vec<Effect>) {
        // The lobby first, so nobody waiting is told "waiting for host" as the hosts leave.
        let ids: Vec<_> = self
            .lobby
            .iter()
            .map(|w| w.info.participant_id.clone())
            .chain(self.members.iter().map(|m| m.info.participant_id.clone()))
            .collect();
        // Held seats too: nobody comes back to an ended meeting.
        for id in ids {
            self.depart(now, &id, LeaveReason::MeetingEnded, message.clone(), out);
        }
        self.meeting.ended_at_ms = Some(now);
        out.push(Effect::MeetingEnded);
    }
}

fn clean_reason(reason: Option<String>) -> Result<Option<String>, Error> {
    let Some(r) = reason else { return Ok(None) };
    let r = r.trim();
    if r.is_empty() {
        return Ok(None);
    }
    if r.chars().count() > MAX_REASON_CHARS || r.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorCode::BadRequest,
            "a reason is at most 200 characters, without control characters",
        ));
    }
    Ok(Some(r.to_owned()))
}

mod recovery;
pub use recovery::OpenAttendance;

#[cfg(test)]
mod tests;
