//! Meetings across shards: a meeting whose participants are spread over several shards
//! has a [`MediaRoom`] on each of them, holding that shard's participants. Each room
//! publishes its own participants' tracks as usual; the tracks of participants on the
//! other shards appear in it as *mirrors*, fed with the packets their publisher's shard
//! relays to it (one copy per track and shard, not per subscriber), so the local
//! subscribers' legs of them work as any other leg: their own rewriting, layer choice,
//! retransmissions from the mirror's own cache, bandwidth estimate.
//!
//! What crosses between the rooms (the shard carries it, `shard.rs`):
//! - a room's *view* of its local tracks ([`MediaRoom::mirror_view`]), sent whenever it
//!   changes; the other rooms reconcile their mirrors of that shard with it
//!   ([`MediaRoom::apply_mirror`]): publish, new simulcast layers, SSRC changes, mutes,
//!   unpublish, all under the publisher's own track id;
//! - keyframe requests for a mirror, throttled here and again at the publisher's room
//!   ([`MediaRoom::relay_keyframe`]);
//! - the best layer this room's legs of a mirror wish ([`Effect::RelayNeed`]), which the
//!   publisher's room counts beside its own legs' wishes when it tells the publisher
//!   which simulcast layers to send ([`MediaRoom::remote_need`]);
//! - the REMB shares of this room's legs of a single-layer video mirror
//!   ([`Effect::RelayShares`]), which the publisher's room counts with its own legs' when it
//!   limits the publisher ([`MediaRoom::remote_shares`], `remb`).
//!
//! A mirror has no member behind it: the publisher is a member of its own shard's room
//! only, so nothing is signalled to it from here, and its publisher connection is a
//! stand-in id ([`MediaRoom::apply_mirror`]'s `conn`) that no connection of the shard
//! has, so effects on it (a REMB, a close) find nothing to act on.

use std::time::Instant;

use gatehouse_signaling::protocol::{ParticipantId, ServerMessage, TrackInfo, TrackKind};

use super::quality::Verdict;
use super::remb;
use super::{ConnId, Effect, MediaRoom, Negotiated, SimulcastLayer, Stream, Track};

/// What the meeting's rooms on other shards are told of this one: its local tracks, and
/// the connection quality last announced of each of its participants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorView {
    pub tracks: Vec<MirrorTrack>,
    pub quality: Vec<(ParticipantId, Verdict)>,
}

/// One local track as the meeting's rooms on other shards mirror it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTrack {
    pub info: TrackInfo,
    pub mime_type: String,
    /// What its publisher negotiated: the mirrors' legs map payload types and
    /// header extensions from it.
    pub negotiated: Negotiated,
    /// Its encodings: SSRC and simulcast layer (none without simulcast).
    pub layers: Vec<(u32, Option<SimulcastLayer>)>,
}

impl MediaRoom {
    /// The tracks of this room's own participants, as the other shards mirror them.
    /// Parked tracks (their owner reconnecting) are in it: their mirrors stay, and follow
    /// the new SSRCs when the owner publishes again.
    pub fn mirror_view(&self) -> MirrorView {
        let tracks = self
            .tracks
            .iter()
            .filter(|t| t.mirror.is_none())
            .map(|t| MirrorTrack {
                info: t.info.clone(),
                mime_type: t.mime_type.clone(),
                negotiated: t.negotiated.clone(),
                layers: t
                    .layers
                    .iter()
                    .map(|l| {
                        let layer = l.rid.as_ref().map(|rid| SimulcastLayer {
                            rid: rid.clone(),
                            rank: l.rank,
                        });
                        (l.ssrc, layer)
                    })
                    .collect(),
            })
            .collect();
        let quality = self
            .quality
            .iter()
            .map(|(id, q)| (id.clone(), q.assessment.announced()))
            .collect();
        MirrorView { tracks, quality }
    }

    /// Shard `source`'s view: this room's mirrors of its tracks follow it, and this room's
    /// staff hear the connection quality of its participants as they would of their own
    /// (a change, or anything but the assumed state once known).
    /// Packets relayed from `source` are forwarded as coming from `conn`, a connection id
    /// no connection of this shard has. A new track is published to everyone here (legs,
    /// `track_published`); a track no longer in the view is unpublished; a mute change is
    /// told; a new simulcast layer or a new SSRC is followed as from a publisher connection
    /// (legs continue their sequence numbers).
    pub fn apply_mirror(
        &mut self,
        source: usize,
        conn: ConnId,
        view: &MirrorView,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        self.remote_quality_from(source, &view.quality);
        let view = &view.tracks;
        let gone: Vec<_> = self
            .tracks
            .iter()
            .filter(|t| t.mirror == Some(source) && !view.iter().any(|v| v.info.track_id == t.info.track_id))
            .map(|t| t.info.track_id.clone())
            .collect();
        for track_id in gone {
            self.unpublish(&track_id, now, effects);
        }
        for mirrored in view {
            let stream = |ssrc: u32, layer: &Option<SimulcastLayer>| Stream {
                conn,
                receiver: Default::default(),
                mid: String::new(),
                ssrc,
                mime_type: mirrored.mime_type.clone(),
                negotiated: mirrored.negotiated.clone(),
                replaces: layer.is_none(),
                layer: layer.clone(),
            };
            let Some(t) = self
                .tracks
                .iter()
                .position(|t| t.info.track_id == mirrored.info.track_id)
            else {
                let Some((ssrc, layer)) = mirrored.layers.first() else {
                    continue;
                };
                self.publish_mirror(source, mirrored, stream(*ssrc, layer), now, effects);
                for (ssrc, layer) in &mirrored.layers[1..] {
                    let t = self.tracks.len() - 1;
                    let owner = mirrored.info.participant_id.clone();
                    self.stream_again(t, &owner, stream(*ssrc, layer), now, effects);
                }
                continue;
            };
            if self.tracks[t].mirror != Some(source) {
                // A track id of a local track or another shard's: not this source's to change.
                continue;
            }
            let owner = mirrored.info.participant_id.clone();
            for (ssrc, layer) in &mirrored.layers {
                if !self.tracks[t].layers.iter().any(|l| l.ssrc == *ssrc) {
                    self.stream_again(t, &owner, stream(*ssrc, layer), now, effects);
                }
            }
            let track = &mut self.tracks[t];
            if track.info.muted != mirrored.info.muted {
                track.info.muted = mirrored.info.muted;
                let message = ServerMessage::TrackMuted {
                    track_id: track.info.track_id.clone(),
                    participant_id: owner,
                    muted: mirrored.info.muted,
                };
                self.signal_all(&message, effects);
            }
        }
    }

    /// The quality of shard `source`'s participants: a verdict that changed (or is new and
    /// not the assumed one) is numbered as a change, and this room's staff hear it at the
    /// next quality evaluation ([`MediaRoom::evaluate_quality`], paced as local news is).
    fn remote_quality_from(&mut self, source: usize, verdicts: &[(ParticipantId, Verdict)]) {
        let mut fresh = Vec::with_capacity(verdicts.len());
        for (id, verdict) in verdicts {
            let before = self
                .remote_quality
                .iter()
                .find(|(s, p, _, _)| *s == source && p == id)
                .map(|(_, _, v, at)| (*v, *at));
            let at = match before {
                Some((v, at)) if v == *verdict => at,
                None if *verdict == Verdict::ASSUMED => 0,
                _ => {
                    self.quality_changes += 1;
                    self.quality_changes
                }
            };
            fresh.push((source, id.clone(), *verdict, at));
        }
        self.remote_quality.retain(|(s, _, _, _)| *s != source);
        self.remote_quality.extend(fresh);
    }

    /// A mirror of a track this room had not seen: published under its publisher's id.
    fn publish_mirror(
        &mut self,
        source: usize,
        mirrored: &MirrorTrack,
        stream: Stream,
        _now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        let info = mirrored.info.clone();
        tracing::debug!(meeting_id = %self.meeting_id, participant_id = %info.participant_id, track_id = %info.track_id, source, "mirrored track published");
        self.tracks.push(Track::first(info.clone(), stream, Some(source)));
        self.reroute();
        self.signal_all(&ServerMessage::TrackPublished { track: info }, effects);
        let t = self.tracks.len() - 1;
        let members: Vec<_> = self.members.iter().map(|m| m.id.clone()).collect();
        for member in members {
            self.add_leg(t, &member, effects);
        }
    }

    /// Shard `source` no longer holds any of the meeting: its mirrors are unpublished,
    /// and what its subscribers wished of this room's tracks is forgotten.
    pub fn forget_mirror(&mut self, source: usize, now: Instant, effects: &mut Vec<Effect>) {
        self.apply_mirror(source, 0, &MirrorView::default(), now, effects);
        for track in &mut self.tracks {
            track.remote_needs.retain(|(s, _)| *s != source);
            track.remote_shares.retain(|(s, _)| *s != source);
        }
    }

    /// Another shard's legs of local single-layer video track `track_id` have these REMB
    /// shares (empty: none of them is limited).
    pub fn remote_shares(&mut self, source: usize, track_id: &str, shares: Vec<Option<u64>>) {
        let Some(track) = self.local_track_mut(track_id) else {
            return;
        };
        track.remote_shares.retain(|(s, _)| *s != source);
        if !shares.is_empty() {
            track.remote_shares.push((source, shares));
        }
    }

    /// Tells the publishers' shards the REMB shares of this room's legs of their single-layer
    /// video mirrors, when they changed (a leg limited or not any more, a share moved by more
    /// than `remb::CHANGE`); shares none of which limits are told as none at all.
    pub(super) fn report_mirror_shares(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let mut reports = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            if track.mirror.is_none() || track.info.kind != TrackKind::Video || track.layers.len() != 1 {
                continue;
            }
            let mut shares: Vec<Option<u64>> = track
                .legs
                .iter()
                .filter(|l| l.negotiated && !l.rewrite.paused())
                .filter_map(|l| l.bound.map(|(c, _)| self.video_share(c, track, l, now)))
                .collect();
            if shares.iter().all(Option::is_none) {
                shares.clear();
            }
            shares.sort_unstable_by_key(|s| s.unwrap_or(u64::MAX));
            if moved(&track.told_shares, &shares) {
                reports.push((t, shares));
            }
        }
        for (t, shares) in reports {
            let track = &mut self.tracks[t];
            track.told_shares = shares.clone();
            if let Some(source) = track.mirror {
                effects.push(Effect::RelayShares {
                    source,
                    track_id: track.info.track_id.clone(),
                    shares,
                });
            }
        }
    }

    /// A local publisher's track (not a mirror) by id.
    fn local_track_mut(&mut self, track_id: &str) -> Option<&mut Track> {
        self.tracks
            .iter_mut()
            .find(|t| t.mirror.is_none() && t.info.track_id == track_id)
    }

    /// Another shard's subscribers of local track `track_id` wish layers up to rank
    /// `needed` (`None`: none of them wants it now).
    pub fn remote_need(&mut self, source: usize, track_id: &str, needed: Option<u8>) {
        let Some(track) = self.local_track_mut(track_id) else {
            return;
        };
        match track.remote_needs.iter_mut().find(|(s, _)| *s == source) {
            Some(entry) => entry.1 = needed,
            None => track.remote_needs.push((source, needed)),
        }
    }

    /// Another shard needs a keyframe of the local layer whose SSRC is `ssrc` (for a
    /// subscriber of its mirror): asked of the publisher, throttled as every request is.
    pub fn relay_keyframe(&mut self, ssrc: u32, now: Instant, effects: &mut Vec<Effect>) {
        let found = self.tracks.iter().enumerate().find_map(|(t, track)| {
            if track.mirror.is_some() || track.info.kind != TrackKind::Video {
                return None;
            }
            Some((t, track.layers.iter().position(|l| l.ssrc == ssrc)?))
        });
        if let Some((t, l)) = found {
            self.request_layer_keyframe(t, l, now, effects);
        }
    }

    /// Whether a track of this room is a mirror of another shard's (tests, debug).
    pub fn is_mirror(&self, track_id: &str) -> bool {
        self.tracks
            .iter()
            .any(|t| t.info.track_id == track_id && t.mirror.is_some())
    }
}

/// Whether sorted shares changed enough to be told again: another number of legs, a leg
/// limited or not any more, or a share moved by more than [`remb::CHANGE`].
fn moved(told: &[Option<u64>], now: &[Option<u64>]) -> bool {
    told.len() != now.len()
        || told.iter().zip(now).any(|pair| match pair {
            (Some(a), Some(b)) => (*a as f64 - *b as f64).abs() > *a as f64 * remb::CHANGE,
            (a, b) => a.is_some() != b.is_some(),
        })
}
