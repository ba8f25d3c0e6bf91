//! A meeting's media: who is in the call, which tracks are published, and the
//! signaling that changes them (publisher offers, subscriber answers, trickled
//! candidates, mute and subscription changes, joins and leaves).
//!
//! Every participant has two connections (like LiveKit): a publisher connection
//! the client offers, and a subscriber connection the server offers. A track is
//! published when its first RTP packet arrives on a mid the client announced;
//! every other participant then gets a sender for it on their subscriber
//! connection (msid `<participant_id> <track_id>`). `track_published`,
//! `track_unpublished` and `track_muted` go to everyone in the call, the owner
//! included: that is how a client learns the server's id of its own tracks.

use std::time::Instant;

use gatehouse_signaling::protocol::{
    IceCandidate, MediaMessage, PeerRole, PublishedTrack, ServerMessage, TrackInfo, TrackKind, TrackSource,
};
use gatehouse_signaling::{Error, ErrorCode};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::RTCTrackEventInit;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverDirection};
use std::sync::Arc;
use tokio::sync::mpsc;

use super::MediaParticipant;
use super::connection::{self, Conn, ConnId, RoomId};
use super::forward::{CodecKey, DownLeg, ExtMap, KeyframeThrottle, PtMap};
use super::participant::{DownTrack, Participant};
use super::rtcp as tap;
use super::shard::{KEYFRAME_INTERVAL, Shard};
use super::stats::{Counters, StatsPair};

/// A published track and what forwarding needs to know about its publisher leg.
pub struct PubTrack {
    pub info: TrackInfo,
    /// The publisher connection it arrives on.
    pub conn: ConnId,
    pub receiver: RTCRtpReceiverId,
    pub mid: String,
    pub ssrc: u32,
    pub codec: RTCRtpCodec,
    /// The publisher leg's negotiated codecs: (payload type, mime, clock rate, fmtp).
    pub codecs: Vec<(u8, String, u32, String)>,
    /// The publisher leg's negotiated header extensions: (uri, id).
    pub extensions: Vec<(String, u16)>,
    pub throttle: KeyframeThrottle,
    /// RTP packets received on it (for the debug snapshot).
    pub packets: u64,
}

pub struct Room {
    pub meeting_id: String,
    pub stats: StatsPair,
    pub participants: Vec<Participant>,
    pub tracks: Vec<PubTrack>,
}

impl Room {
    fn participant_mut(&mut self, id: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    /// Sends a message to everyone in the call. Track announcements go to the
    /// owner too: that is how a client learns the server's id of its own tracks
    /// (which `mute_track` names), see docs/PROTOCOL.md §11.1.
    fn broadcast(&self, msg: &ServerMessage) {
        for p in &self.participants {
            p.send(msg.clone());
        }
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

fn new_track_id() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

fn kind_of(codec: &RTCRtpCodec) -> TrackKind {
    if codec.mime_type.to_ascii_lowercase().starts_with("audio/") {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

impl Shard {
    fn room_of(&self, meeting_id: &str) -> Option<RoomId> {
        self.room_ids.get(meeting_id).copied()
    }

    pub(super) fn add_participant(
        &mut self,
        participant: MediaParticipant,
        outbox: mpsc::UnboundedSender<ServerMessage>,
        meeting_stats: Arc<Counters>,
        now: Instant,
    ) -> Result<(), Error> {
        let room_id = match self.room_of(&participant.meeting_id) {
            Some(id) => id,
            None => {
                let id = self.new_room_id();
                let stats = StatsPair {
                    meeting: meeting_stats.clone(),
                    process: self.process.clone(),
                };
                self.rooms.insert(
                    id,
                    Room {
                        meeting_id: participant.meeting_id.clone(),
                        stats,
                        participants: Vec::new(),
                        tracks: Vec::new(),
                    },
                );
                self.room_ids.insert(participant.meeting_id.clone(), id);
                id
            }
        };
        // The same participant again (a reconnect that raced its own removal): start clean.
        if self.rooms[&room_id]
            .participants
            .iter()
            .any(|p| p.id == participant.participant_id)
        {
            self.remove_participant(&participant.meeting_id, &participant.participant_id, now);
            return self.add_participant(participant, outbox, meeting_stats, now);
        }
        let room = self.rooms.get_mut(&room_id).expect("room exists: just found or made");
        room.participants.push(Participant::new(
            participant.participant_id.clone(),
            participant.kind,
            participant.may_present,
            outbox,
        ));
        // Everything already published becomes available to the newcomer.
        let existing: Vec<usize> = (0..room.tracks.len()).collect();
        for t in existing {
            self.add_down_track(room_id, &participant.participant_id, t, now);
        }
        Ok(())
    }

    pub(super) fn handle(
        &mut self,
        meeting_id: &str,
        participant_id: &str,
        message: MediaMessage,
        now: Instant,
    ) -> Result<(), Error> {
        let room_id = self
            .room_of(meeting_id)
            .ok_or_else(|| err(ErrorCode::NotInCall, "not in the call"))?;
        let Some(p) = self.rooms[&room_id]
            .participants
            .iter()
            .find(|p| p.id == participant_id)
        else {
            return Err(err(ErrorCode::NotInCall, "not in the call"));
        };
        if [p.publisher, p.subscriber]
            .into_iter()
            .flatten()
            .any(|id| self.conns.get(&id).is_some_and(|c| c.broken))
        {
            return Err(err(
                ErrorCode::MediaStateError,
                "a media connection failed; leave and rejoin the call",
            ));
        }
        match message {
            MediaMessage::PublishOffer { sdp, tracks } => self.publish_offer(room_id, participant_id, sdp, tracks, now),
            MediaMessage::SubscribeAnswer { sdp } => self.subscribe_answer(room_id, participant_id, sdp, now),
            MediaMessage::IceCandidate { target, candidate } => {
                self.ice_candidate(room_id, participant_id, target, candidate)
            }
            MediaMessage::MuteTrack { track_id, muted } => self.mute_track(room_id, participant_id, &track_id, muted),
            MediaMessage::SetSubscription { track_id, paused } => {
                self.set_subscription(room_id, participant_id, &track_id, paused, now)
            }
        }
    }

    fn new_conn(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        role: PeerRole,
        now: Instant,
    ) -> Result<ConnId, Error> {
        let (mut ufrag, pwd) = connection::ice_credentials();
        while self.ufrag_in_use(&ufrag) {
            ufrag = connection::ice_credentials().0;
        }
        let stats = self
            .stats_for(room_id)
            .ok_or_else(|| err(ErrorCode::Internal, "room vanished"))?;
        let pc = connection::build(now, &ufrag, &pwd, self.advertised, stats)
            .map_err(|e| err(ErrorCode::Internal, format!("could not create a peer connection: {e}")))?;
        let id = self.insert_conn(Conn {
            pc,
            room: room_id,
            participant: participant_id.to_owned(),
            role,
            ufrag,
            deadline: None,
            connected: false,
            has_remote: false,
            state: Default::default(),
            nominated: None,
            pending_nomination: None,
            broken: false,
            last_seen: now,
        });
        let room = self.rooms.get_mut(&room_id).expect("checked above");
        if let Some(p) = room.participant_mut(participant_id) {
            match role {
                PeerRole::Publisher => p.publisher = Some(id),
                PeerRole::Subscriber => p.subscriber = Some(id),
            }
        }
        Ok(id)
    }

    fn publish_offer(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        sdp: String,
        tracks: Vec<PublishedTrack>,
        now: Instant,
    ) -> Result<(), Error> {
        let room = &self.rooms[&room_id];
        let p = room
            .participants
            .iter()
            .find(|p| p.id == participant_id)
            .expect("checked by handle");
        if !p.may_present && tracks.iter().any(|t| t.source == TrackSource::Screen) {
            return Err(err(
                ErrorCode::PresentingNotAllowed,
                "you may not present in this meeting",
            ));
        }
        for (i, t) in tracks.iter().enumerate() {
            if tracks[..i].iter().any(|o| o.mid == t.mid) {
                return Err(err(ErrorCode::BadRequest, format!("mid {} is announced twice", t.mid)));
            }
        }
        let offer =
            RTCSessionDescription::offer(sdp).map_err(|e| err(ErrorCode::InvalidSdp, format!("invalid offer: {e}")))?;
        let existing = p.publisher;
        let id = match existing {
            Some(id) => id,
            None => self.new_conn(room_id, participant_id, PeerRole::Publisher, now)?,
        };
        let conn = self.conns.get_mut(&id).expect("just made or known");
        let answer = conn
            .pc
            .set_remote_description(now, offer)
            .and_then(|()| conn.pc.create_answer(None))
            .and_then(|answer| conn.pc.set_local_description(now, answer));
        if let Err(e) = answer {
            if existing.is_none() {
                // A connection that never negotiated is useless: do not keep it.
                self.drop_conn_of(room_id, participant_id, PeerRole::Publisher);
            }
            return Err(err(ErrorCode::InvalidSdp, format!("could not apply the offer: {e}")));
        }
        conn.has_remote = true;
        let Some(local) = conn.pc.local_description() else {
            return Err(err(ErrorCode::Internal, "no local description after answering"));
        };
        self.apply_pending_candidates(room_id, participant_id, PeerRole::Publisher);

        let room = self.rooms.get_mut(&room_id).expect("exists");
        let p = room.participant_mut(participant_id).expect("exists");
        p.send(ServerMessage::PublishAnswer { sdp: local.sdp });
        // The declaration is the full set: announced mids that vanished are unpublished,
        // mute flags follow it for the rest.
        p.announced = tracks;
        let announced = p.announced.clone();
        let mut gone = Vec::new();
        let mut mute_changes = Vec::new();
        for t in room
            .tracks
            .iter_mut()
            .filter(|t| t.info.participant_id == participant_id)
        {
            match announced.iter().find(|a| a.mid == t.mid) {
                None => gone.push(t.info.track_id.clone()),
                Some(a) if a.muted != t.info.muted => {
                    t.info.muted = a.muted;
                    mute_changes.push((t.info.track_id.clone(), a.muted));
                }
                Some(_) => {}
            }
        }
        for (track_id, muted) in mute_changes {
            room.broadcast(&ServerMessage::TrackMuted {
                track_id,
                participant_id: participant_id.to_owned(),
                muted,
            });
        }
        for track_id in gone {
            self.unpublish(room_id, &track_id, now);
        }
        // Streams that started before their mid was announced are published now.
        let waiting: Vec<(RTCRtpReceiverId, u32)> = match self.conns.get_mut(&id) {
            Some(conn) => {
                let transceivers: Vec<_> = conn.pc.get_transceivers().collect();
                transceivers
                    .into_iter()
                    .filter_map(|t| {
                        let transceiver = conn.pc.rtp_transceiver(t)?;
                        let mid = transceiver.mid().clone()?;
                        let receiver = transceiver.receiver()?;
                        announced.iter().any(|a| a.mid == mid).then_some(receiver)
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .filter_map(|receiver| {
                        let ssrc = conn.pc.rtp_receiver(receiver)?.track().ssrcs().next()?;
                        Some((receiver, ssrc))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        for (receiver, ssrc) in waiting {
            self.try_publish(id, receiver, ssrc, false, now);
        }
        self.drive(id, now);
        Ok(())
    }

    fn drop_conn_of(&mut self, room_id: RoomId, participant_id: &str, role: PeerRole) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(p) = room.participant_mut(participant_id) else {
            return;
        };
        let id = match role {
            PeerRole::Publisher => p.publisher.take(),
            PeerRole::Subscriber => p.subscriber.take(),
        };
        if let Some(id) = id {
            self.close_conn(id);
        }
    }

    fn subscribe_answer(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        sdp: String,
        now: Instant,
    ) -> Result<(), Error> {
        let room = self.rooms.get_mut(&room_id).expect("checked by handle");
        let Room {
            participants, tracks, ..
        } = room;
        let p = participants
            .iter_mut()
            .find(|p| p.id == participant_id)
            .expect("checked by handle");
        let Some(id) = p.subscriber.filter(|_| p.negotiation.outstanding) else {
            return Err(err(
                ErrorCode::MediaStateError,
                "no subscribe_offer is waiting for an answer",
            ));
        };
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| err(ErrorCode::InvalidSdp, format!("invalid answer: {e}")))?;
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or_else(|| err(ErrorCode::Internal, "subscriber connection vanished"))?;
        conn.pc
            .set_remote_description(now, answer)
            .map_err(|e| err(ErrorCode::InvalidSdp, format!("could not apply the answer: {e}")))?;
        conn.has_remote = true;
        let connected = conn.connected;
        p.negotiation.answered();
        if p.negotiation.wanted {
            self.negotiation_pending = true;
        }

        // Fill the rewrite tables of every leg this answer negotiated.
        let mut fresh = Vec::new();
        for down in p.down.iter_mut() {
            // A sender added after the offer went out is not in this answer: it waits for the re-offer.
            let transceiver: rtc::rtp_transceiver::RTCRtpTransceiverId = down.sender.into();
            if !conn
                .pc
                .rtp_transceiver(transceiver)
                .is_some_and(|t| t.current_direction().has_send())
            {
                continue;
            }
            let Some(mut sender) = conn.pc.rtp_sender(down.sender) else {
                continue;
            };
            let params = sender.get_parameters();
            let Some(track) = tracks.iter().find(|t| t.info.track_id == down.track_id) else {
                continue;
            };
            down.leg.pt_map = PtMap::by_codec(
                track.codecs.iter().map(|(pt, mime, clock, fmtp)| CodecKey {
                    payload_type: *pt,
                    mime_type: mime,
                    clock_rate: *clock,
                    fmtp,
                }),
                params.rtp_parameters.codecs.iter().map(|c| CodecKey {
                    payload_type: c.payload_type,
                    mime_type: &c.rtp_codec.mime_type,
                    clock_rate: c.rtp_codec.clock_rate,
                    fmtp: &c.rtp_codec.sdp_fmtp_line,
                }),
            );
            down.leg.ext_map = ExtMap::by_uri(
                track.extensions.iter().map(|(uri, id)| (uri.as_str(), *id)),
                params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .map(|h| (h.uri.as_str(), h.id)),
            );
            if down.leg.pt_map.is_empty() {
                tracing::debug!(participant = %participant_id, track = %down.track_id, "no common codec: not forwarded");
            }
            if !down.negotiated {
                down.negotiated = true;
                fresh.push(down.track_id.clone());
            }
        }
        self.apply_pending_candidates(room_id, participant_id, PeerRole::Subscriber);
        if connected {
            for track_id in fresh {
                self.request_keyframe(room_id, &track_id, now);
            }
        }
        self.drive(id, now);
        Ok(())
    }

    fn ice_candidate(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        target: PeerRole,
        candidate: IceCandidate,
    ) -> Result<(), Error> {
        connection::validate_candidate(&candidate.candidate)
            .map_err(|e| err(ErrorCode::InvalidCandidate, format!("invalid candidate: {e}")))?;
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            ..Default::default()
        };
        let room = self.rooms.get_mut(&room_id).expect("checked by handle");
        let p = room.participant_mut(participant_id).expect("checked by handle");
        match p
            .conn(target)
            .and_then(|id| self.conns.get_mut(&id))
            .filter(|c| c.has_remote)
        {
            Some(conn) => conn
                .pc
                .add_remote_candidate(init)
                .map_err(|e| err(ErrorCode::InvalidCandidate, format!("candidate refused: {e}"))),
            None => {
                // Early candidates wait for their description (bounded: a client has few).
                if p.pending_candidates.len() >= 64 {
                    return Err(err(
                        ErrorCode::RateLimited,
                        "too many candidates before the description",
                    ));
                }
                p.pending_candidates.push((target, init));
                Ok(())
            }
        }
    }

    fn apply_pending_candidates(&mut self, room_id: RoomId, participant_id: &str, role: PeerRole) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(p) = room.participant_mut(participant_id) else {
            return;
        };
        let Some(conn) = p.conn(role).and_then(|id| self.conns.get_mut(&id)) else {
            return;
        };
        let (now_ready, later): (Vec<_>, Vec<_>) = p.pending_candidates.drain(..).partition(|(r, _)| *r == role);
        p.pending_candidates = later;
        for (_, init) in now_ready {
            if let Err(e) = conn.pc.add_remote_candidate(init) {
                tracing::debug!(participant = participant_id, "pending candidate refused: {e}");
            }
        }
    }

    fn mute_track(&mut self, room_id: RoomId, participant_id: &str, track_id: &str, muted: bool) -> Result<(), Error> {
        let room = self.rooms.get_mut(&room_id).expect("checked by handle");
        let Some(track) = room
            .tracks
            .iter_mut()
            .find(|t| t.info.track_id == track_id && t.info.participant_id == participant_id)
        else {
            return Err(err(ErrorCode::NotFound, "no such track of yours"));
        };
        track.info.muted = muted;
        let mid = track.mid.clone();
        if let Some(a) = room
            .participant_mut(participant_id)
            .and_then(|p| p.announced.iter_mut().find(|a| a.mid == mid))
        {
            a.muted = muted;
        }
        room.broadcast(&ServerMessage::TrackMuted {
            track_id: track_id.to_owned(),
            participant_id: participant_id.to_owned(),
            muted,
        });
        Ok(())
    }

    fn set_subscription(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        track_id: &str,
        paused: bool,
        now: Instant,
    ) -> Result<(), Error> {
        let room = self.rooms.get_mut(&room_id).expect("checked by handle");
        let p = room.participant_mut(participant_id).expect("checked by handle");
        let Some(down) = p.down_mut(track_id) else {
            return Err(err(ErrorCode::NotFound, "no such track to subscribe to"));
        };
        if down.leg.set_paused(paused) {
            self.request_keyframe(room_id, track_id, now);
        }
        Ok(())
    }

    pub(super) fn remove_participant(&mut self, meeting_id: &str, participant_id: &str, now: Instant) {
        let Some(room_id) = self.room_of(meeting_id) else {
            return;
        };
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let owned: Vec<String> = room
            .tracks
            .iter()
            .filter(|t| t.info.participant_id == participant_id)
            .map(|t| t.info.track_id.clone())
            .collect();
        for track_id in owned {
            self.unpublish(room_id, &track_id, now);
        }
        let room = self.rooms.get_mut(&room_id).expect("exists");
        let Some(pos) = room.participants.iter().position(|p| p.id == participant_id) else {
            return;
        };
        let p = room.participants.remove(pos);
        let empty = room.participants.is_empty();
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            self.close_conn(id);
        }
        if empty {
            // Every track had an owner in the room, so all were unpublished above.
            self.rooms.remove(&room_id);
            self.room_ids.remove(meeting_id);
        }
    }

    /// The participant a subscriber connection belongs to (`None` for publisher connections).
    fn subscriber_owner(&self, id: ConnId) -> Option<(RoomId, &Participant)> {
        let conn = self.conns.get(&id).filter(|c| c.role == PeerRole::Subscriber)?;
        let owner = self
            .rooms
            .get(&conn.room)?
            .participants
            .iter()
            .find(|p| p.id == conn.participant)?;
        Some((conn.room, owner))
    }

    /// A connection reached Connected: a subscriber needs keyframes for everything it receives.
    pub(super) fn on_connected(&mut self, id: ConnId, now: Instant) {
        let Some((room_id, p)) = self.subscriber_owner(id) else {
            return;
        };
        let wanted: Vec<String> = p
            .down
            .iter()
            .filter(|d| d.negotiated)
            .map(|d| d.track_id.clone())
            .collect();
        for track_id in wanted {
            self.request_keyframe(room_id, &track_id, now);
        }
    }

    /// The first RTP packet of a stream arrived on a publisher connection.
    pub(super) fn on_track_open(&mut self, id: ConnId, init: RTCTrackEventInit, now: Instant) {
        self.try_publish(id, init.receiver_id, init.ssrc, init.rid.is_none(), now);
    }

    /// Publishes the stream `ssrc` of a publisher connection's receiver, if its
    /// mid is announced and nothing is published on that mid yet. With `replace`
    /// (a new stream without a rid on an already published mid: the client
    /// restarted its sender) the published track follows the new SSRC instead.
    fn try_publish(&mut self, id: ConnId, receiver_id: RTCRtpReceiverId, ssrc: u32, replace: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.role != PeerRole::Publisher {
            return;
        }
        let (room_id, participant_id) = (conn.room, conn.participant.clone());
        let transceiver: rtc::rtp_transceiver::RTCRtpTransceiverId = receiver_id.into();
        let Some(mid) = conn.pc.rtp_transceiver(transceiver).and_then(|t| t.mid().clone()) else {
            return;
        };
        let Some(mut receiver) = conn.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let Some(codec) = receiver.track().codec(ssrc).cloned() else {
            return;
        };
        let params = receiver.get_parameters().rtp_parameters.clone();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(p) = room.participants.iter().find(|p| p.id == participant_id) else {
            return;
        };
        let Some(announced) = p.announced.iter().find(|a| a.mid == mid) else {
            tracing::debug!(participant = %participant_id, %mid, "media on an unannounced mid is not forwarded");
            return;
        };
        if let Some(track) = room.tracks.iter_mut().find(|t| t.conn == id && t.mid == mid) {
            // A second SSRC on one mid. A simulcast layer (it has a rid): only the first
            // layer is forwarded. Otherwise the sender restarted: follow it, keeping each
            // leg's sequence numbers contiguous, and ask for a keyframe.
            if !replace || track.ssrc == ssrc {
                return;
            }
            tracing::debug!(participant = %participant_id, %mid, old = track.ssrc, new = ssrc, "published track changes SSRC");
            track.ssrc = ssrc;
            track.receiver = receiver_id;
            track.codec = codec;
            let track_id = track.info.track_id.clone();
            for p in room.participants.iter_mut() {
                if let Some(down) = p.down_mut(&track_id) {
                    down.leg.restart();
                }
            }
            self.request_keyframe(room_id, &track_id, now);
            return;
        }
        let kind = kind_of(&codec);
        if kind != announced.source.kind() {
            tracing::debug!(participant = %participant_id, %mid, "announced source does not match the media kind");
            return;
        }
        let info = TrackInfo {
            track_id: new_track_id(),
            participant_id: participant_id.clone(),
            kind,
            source: announced.source,
            muted: announced.muted,
        };
        tracing::debug!(participant = %participant_id, track = %info.track_id, %mid, codec = %codec.mime_type, "track published");
        room.tracks.push(PubTrack {
            info: info.clone(),
            conn: id,
            receiver: receiver_id,
            mid,
            ssrc,
            codec,
            codecs: params
                .codecs
                .iter()
                .map(|c| {
                    (
                        c.payload_type,
                        c.rtp_codec.mime_type.clone(),
                        c.rtp_codec.clock_rate,
                        c.rtp_codec.sdp_fmtp_line.clone(),
                    )
                })
                .collect(),
            extensions: params.header_extensions.iter().map(|h| (h.uri.clone(), h.id)).collect(),
            throttle: KeyframeThrottle::new(KEYFRAME_INTERVAL),
            packets: 0,
        });
        room.stats.add(|c| &c.tracks, 1);
        room.broadcast(&ServerMessage::TrackPublished { track: info });
        let t = room.tracks.len() - 1;
        let others: Vec<String> = room
            .participants
            .iter()
            .filter(|p| p.id != participant_id)
            .map(|p| p.id.clone())
            .collect();
        for other in others {
            self.add_down_track(room_id, &other, t, now);
        }
    }

    /// Gives `subscriber` a sender for published track `t` and schedules a renegotiation.
    fn add_down_track(&mut self, room_id: RoomId, subscriber: &str, t: usize, now: Instant) {
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(track) = room.tracks.get(t) else {
            return;
        };
        if track.info.participant_id == subscriber {
            return;
        }
        let info = track.info.clone();
        let Some(p) = room.participants.iter().find(|p| p.id == subscriber) else {
            return;
        };
        let sub = match p.subscriber {
            Some(id) => id,
            None => match self.new_conn(room_id, subscriber, PeerRole::Subscriber, now) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(participant = subscriber, "no subscriber connection: {e}");
                    return;
                }
            },
        };
        let ssrc = rand::random::<u32>();
        let kind = match info.kind {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        };
        // No codec on the encoding, on purpose: `rtc` turns a codec there into the
        // transceiver's codec preferences, the m-line then offers only that codec, and
        // since 0.21.1 negotiates codecs once per connection (first m-line of a kind), a
        // later track with another codec could not be added to this connection at all.
        // Offering the full list keeps every codec the client accepts available.
        let local = MediaStreamTrack::new(
            info.participant_id.clone(),
            info.track_id.clone(),
            format!("{:?}", info.source).to_lowercase(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                ..Default::default()
            }],
        );
        let Some(conn) = self.conns.get_mut(&sub).filter(|c| !c.broken) else {
            return;
        };
        let sender = match conn.pc.add_track(local) {
            Ok(sender) => sender,
            Err(e) => {
                tracing::warn!(participant = subscriber, track = %info.track_id, "add_track: {e}");
                return;
            }
        };
        // `add_track` makes (or recycles) a sendrecv transceiver; the subscriber
        // connection only ever sends, and an unpublished track's m-line then goes
        // inactive rather than recvonly.
        let transceiver: rtc::rtp_transceiver::RTCRtpTransceiverId = sender.into();
        if let Some(mut t) = conn.pc.rtp_transceiver(transceiver) {
            t.set_direction(RTCRtpTransceiverDirection::Sendonly);
        }
        let room = self.rooms.get_mut(&room_id).expect("exists");
        let p = room.participant_mut(subscriber).expect("exists");
        p.down.push(DownTrack {
            track_id: info.track_id,
            kind: info.kind,
            sender,
            leg: DownLeg::new(ssrc),
            negotiated: false,
            forwarded: 0,
        });
        p.negotiation.want();
        self.negotiation_pending = true;
    }

    /// Removes a published track: every subscriber loses its sender (one
    /// renegotiation each, batched at the end of the turn) and hears `track_unpublished`.
    fn unpublish(&mut self, room_id: RoomId, track_id: &str, _now: Instant) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(pos) = room.tracks.iter().position(|t| t.info.track_id == track_id) else {
            return;
        };
        let track = room.tracks.remove(pos);
        room.stats.track_removed();
        let owner = track.info.participant_id.clone();
        let msg = ServerMessage::TrackUnpublished {
            track_id: track_id.to_owned(),
            participant_id: owner.clone(),
        };
        for p in room.participants.iter_mut() {
            if let Some(i) = p.down.iter().position(|d| d.track_id == track_id) {
                let down = p.down.remove(i);
                if let Some(conn) = p
                    .subscriber
                    .and_then(|id| self.conns.get_mut(&id))
                    .filter(|c| !c.broken)
                    && let Err(e) = conn.pc.remove_track(down.sender)
                {
                    tracing::debug!(participant = %p.id, "remove_track: {e}");
                }
                p.negotiation.want();
                self.negotiation_pending = true;
            }
            p.send(msg.clone());
        }
    }

    /// Sends a subscriber offer to everyone who needs one and has none outstanding.
    pub(super) fn run_negotiations(&mut self, now: Instant) {
        self.negotiation_pending = false;
        let mut offers: Vec<(RoomId, String, ConnId)> = Vec::new();
        for (&room_id, room) in self.rooms.iter_mut() {
            for p in room.participants.iter_mut() {
                if let Some(sub) = p.subscriber
                    && p.negotiation.start_offer()
                {
                    offers.push((room_id, p.id.clone(), sub));
                }
            }
        }
        for (room_id, participant_id, id) in offers {
            let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.broken) else {
                continue;
            };
            let offer = conn
                .pc
                .create_offer(None)
                .and_then(|offer| conn.pc.set_local_description(now, offer));
            let sdp = match offer {
                Ok(()) => conn.pc.local_description().map(|d| d.sdp),
                Err(e) => {
                    tracing::warn!(participant = %participant_id, "subscriber offer failed: {e}");
                    None
                }
            };
            let Some(room) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            let Some(p) = room.participant_mut(&participant_id) else {
                continue;
            };
            match sdp {
                Some(sdp) => p.send(ServerMessage::SubscribeOffer { sdp }),
                None => {
                    p.negotiation.answered();
                }
            }
            self.flush_conn(id);
        }
    }

    /// Keyframe requests from a subscriber connection, relayed to the publishers (throttled).
    pub(super) fn on_feedback(&mut self, id: ConnId, packets: &[Box<dyn rtcp::Packet>], now: Instant) {
        let Some((room_id, p)) = self.subscriber_owner(id) else {
            return;
        };
        let mut wanted: Vec<String> = Vec::new();
        for packet in packets {
            tap::keyframe_request_ssrcs(packet.as_ref(), |ssrc| {
                if let Some(d) = p.down.iter().find(|d| d.leg.ssrc == ssrc)
                    && !wanted.contains(&d.track_id)
                {
                    wanted.push(d.track_id.clone());
                }
            });
        }
        for track_id in wanted {
            self.request_keyframe(room_id, &track_id, now);
        }
    }

    /// Asks a video track's publisher for a keyframe, at most once per throttle interval.
    pub(super) fn request_keyframe(&mut self, room_id: RoomId, track_id: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(t) = room.tracks.iter().position(|t| t.info.track_id == track_id) else {
            return;
        };
        if room.tracks[t].info.kind != TrackKind::Video {
            return;
        }
        if room.tracks[t].throttle.request(now) {
            self.send_pli(room_id, t, now);
        }
    }

    pub(super) fn send_pli(&mut self, room_id: RoomId, t: usize, now: Instant) {
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(track) = room.tracks.get(t) else {
            return;
        };
        let (conn_id, receiver, ssrc) = (track.conn, track.receiver, track.ssrc);
        let stats = room.stats.clone();
        let Some(conn) = self.conns.get_mut(&conn_id).filter(|c| !c.broken) else {
            return;
        };
        let Some(mut rx) = conn.pc.rtp_receiver(receiver) else {
            return;
        };
        match rx.write_rtcp(now, tap::pli(ssrc)) {
            Ok(()) => stats.add(|c| &c.plis_sent, 1),
            Err(e) => tracing::debug!("PLI to publisher: {e}"),
        }
        self.flush_conn(conn_id);
    }
}
