//! RTP forwarding and header rewriting (`MediaRoom::forward`, `forward::DownLeg`,
//! `ExtMap`, `PtMap`): a meeting where A publishes a camera and a microphone and B
//! receives both, with payload types and header-extension ids that the fuzzer
//! negotiates on each side, then any RTP packets from A's connection.
//!
//! Input: 12 bytes of negotiation (publisher and subscriber payload types for VP8 and
//! Opus, publisher and subscriber ids for four header extensions), then packets, each
//! a selector byte (which SSRC it carries), a length byte and that many bytes of RTP.
//!
//! Checked on every copy the room writes: it carries the leg's SSRC and a payload type
//! the subscriber negotiated for the same codec, only extension ids the subscriber
//! negotiated (one-byte ids stay in 1..=14), and it marshals and parses back to the
//! same header, as `rtc`'s sender will marshal it; per leg, the sequence number keeps
//! one offset from the publisher's, moved on by no more than the padding-only packets
//! (the publisher's probes) the leg left out and closed up: nothing is paused or
//! restarted here, so the rewriting must not open gaps.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::sfu::media_room::{Admit, Codec, ConnId, Effect, LegSink, MediaRoom, Negotiated, Stream};
use gatehouse::sfu::stats::StatsPair;
use gatehouse_signaling::protocol::{ParticipantKind, PeerRole, PublishedTrack, TrackSource};
use libfuzzer_sys::fuzz_target;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::shared::marshal::{Marshal, Unmarshal};

const A_PUB: ConnId = 11;
const A_SUB: ConnId = 21;
const B_SUB: ConnId = 22;
const VIDEO_SSRC: u32 = 1000;
const AUDIO_SSRC: u32 = 2000;
const URIS: [&str; 4] = [
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:3gpp:video-orientation",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "urn:ietf:params:rtp-hdrext:sdes:mid",
];

fn codec(payload_type: u8, mime_type: &str, clock_rate: u32) -> Codec {
    Codec {
        payload_type,
        mime_type: mime_type.into(),
        clock_rate,
        fmtp: String::new(),
    }
}

fn negotiated(video_pt: u8, audio_pt: u8, ext_ids: &[u8]) -> Negotiated {
    Negotiated {
        codecs: vec![
            codec(video_pt, "video/VP8", 90_000),
            codec(audio_pt, "audio/opus", 48_000),
        ],
        extensions: URIS
            .iter()
            .zip(ext_ids)
            .map(|(uri, id)| ((*uri).to_owned(), u16::from(*id)))
            .collect(),
    }
}

/// Checks every copy as it is written.
struct Checker {
    sub: Negotiated,
    pub_side: Negotiated,
    leg_ssrcs: Vec<u32>,
    /// The sequence number of the packet being forwarded.
    input_seq: u16,
    /// Per leg (by its SSRC): input minus output sequence number of its first copy.
    first_offset: HashMap<u32, u16>,
    /// Per leg: how many padding-only packets of its track it wrote no copy of, each of
    /// which may close the leg's numbering up by one.
    padding_left_out: HashMap<u32, u16>,
    /// The leg that carries each published SSRC (known from its first copy).
    leg_of: HashMap<u32, u32>,
    /// The published SSRC of the packet being forwarded.
    input_ssrc: u32,
    written: usize,
}

impl LegSink for Checker {
    fn admit(&mut self, conn: ConnId) -> Admit {
        assert_eq!(conn, B_SUB, "media for a connection that subscribes to nothing");
        Admit::Yes
    }

    fn write(&mut self, conn: ConnId, _sender: RTCRtpSenderId, packet: &Packet) -> bool {
        assert_eq!(conn, B_SUB);
        let h = &packet.header;
        assert!(self.leg_ssrcs.contains(&h.ssrc), "copy with a foreign SSRC {}", h.ssrc);
        let codec = self
            .sub
            .codecs
            .iter()
            .find(|c| c.payload_type == h.payload_type)
            .unwrap_or_else(|| panic!("payload type {} not negotiated by the subscriber", h.payload_type));
        assert!(
            self.pub_side.codecs.iter().any(|c| c.mime_type == codec.mime_type),
            "codec changed on the way"
        );
        for ext in &h.extensions {
            assert!(
                self.sub.extensions.iter().any(|(_, id)| *id == u16::from(ext.id)),
                "extension id {} the subscriber did not negotiate",
                ext.id
            );
            if h.extension_profile == 0xBEDE {
                assert!((1..=14).contains(&ext.id), "one-byte extension id {}", ext.id);
            }
        }
        let wire = packet.marshal().expect("a rewritten packet marshals");
        let back = Packet::unmarshal(&mut &wire[..]).expect("a rewritten packet parses back");
        assert_eq!(back.header.ssrc, h.ssrc);
        assert_eq!(back.header.payload_type, h.payload_type);
        assert_eq!(back.header.sequence_number, h.sequence_number);
        assert_eq!(back.header.extensions.len(), h.extensions.len());
        assert_eq!(back.payload, packet.payload);
        self.leg_of.insert(self.input_ssrc, h.ssrc);
        let offset = self.input_seq.wrapping_sub(h.sequence_number);
        let first = *self.first_offset.entry(h.ssrc).or_insert(offset);
        let closed_up = self.padding_left_out.get(&h.ssrc).copied().unwrap_or(0);
        assert!(
            offset.wrapping_sub(first) <= closed_up,
            "a leg's sequence numbers moved against the publisher's by {} with {closed_up} padding packets left out",
            offset.wrapping_sub(first) as i16
        );
        self.written += 1;
        true
    }
}

fn announce(mid: &str, source: TrackSource) -> PublishedTrack {
    PublishedTrack {
        mid: mid.into(),
        source,
        muted: false,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let (config, mut packets) = data.split_at(12);
    let pub_side = negotiated(config[0] & 0x7F, config[1] & 0x7F, &config[4..8]);
    let sub = negotiated(config[2] & 0x7F, config[3] & 0x7F, &config[8..12]);
    if pub_side.codecs[0].payload_type == pub_side.codecs[1].payload_type
        || sub.codecs[0].payload_type == sub.codecs[1].payload_type
    {
        return; // one payload type for two codecs: no SDP negotiates that
    }
    let now = Instant::now();
    let mut room = MediaRoom::new(
        "m_fuzz",
        StatsPair {
            meeting: Arc::default(),
            shard: Arc::default(),
        },
    );
    let mut fx: Vec<Effect> = Vec::new();
    for (p, sub_conn) in [("p_a", A_SUB), ("p_b", B_SUB)] {
        room.add_participant(p, ParticipantKind::Staff, true, now, &mut fx);
        room.set_connection(p, PeerRole::Subscriber, Some(sub_conn));
    }
    room.set_connection("p_a", PeerRole::Publisher, Some(A_PUB));
    let tracks = vec![
        announce("0", TrackSource::Camera),
        announce("1", TrackSource::Microphone),
    ];
    room.check_publish("p_a", &tracks).expect("A may publish both");
    room.declare("p_a", tracks, now, &mut fx);
    for (mid, ssrc, mime) in [("0", VIDEO_SSRC, "video/VP8"), ("1", AUDIO_SSRC, "audio/opus")] {
        let stream = Stream {
            conn: A_PUB,
            receiver: RTCRtpReceiverId::from(mid.parse::<usize>().expect("numeric mid")),
            mid: mid.into(),
            ssrc,
            mime_type: mime.into(),
            negotiated: pub_side.clone(),
            replaces: true,
            layer: None,
        };
        room.stream_opened("p_a", stream, now, &mut fx);
    }
    // The shell's part: bind each leg to a sender on B's subscriber connection.
    let mut leg_ssrcs = Vec::new();
    let mut senders = Vec::new();
    for effect in &fx {
        if let Effect::AddSender {
            subscriber, leg, ssrc, ..
        } = effect
        {
            assert_eq!(subscriber, "p_b", "a publisher never receives its own track");
            let sender = RTCRtpSenderId::from(*leg as usize);
            room.leg_bound(*leg, B_SUB, sender);
            leg_ssrcs.push(*ssrc);
            senders.push((sender, sub.clone()));
        }
    }
    assert_eq!(leg_ssrcs.len(), 2, "B gets a leg of each track");
    let mut offers = Vec::new();
    room.due_offers(&mut offers);
    room.subscriber_answered("p_b", &senders, true, now, &mut fx);
    room.subscriber_connected(B_SUB, now, &mut fx);
    let mut checker = Checker {
        sub,
        pub_side,
        leg_ssrcs,
        input_seq: 0,
        first_offset: HashMap::new(),
        padding_left_out: HashMap::new(),
        leg_of: HashMap::new(),
        input_ssrc: 0,
        written: 0,
    };
    let mut at = now;
    while let [selector, len, rest @ ..] = packets {
        let len = usize::from(*len).min(rest.len());
        let (raw, tail) = rest.split_at(len);
        packets = tail;
        let Ok(mut packet) = Packet::unmarshal(&mut &raw[..]) else {
            continue;
        };
        match selector % 4 {
            0 => packet.header.ssrc = VIDEO_SSRC,
            1 => packet.header.ssrc = AUDIO_SSRC,
            _ => {}
        }
        at += Duration::from_millis(u64::from(selector >> 2) * 10);
        fx.clear();
        checker.input_seq = packet.header.sequence_number;
        checker.input_ssrc = packet.header.ssrc;
        let written = checker.written;
        room.forward(A_PUB, &packet, at, &mut checker, &mut fx);
        if packet.payload.is_empty()
            && checker.written == written
            && let Some(leg) = checker.leg_of.get(&packet.header.ssrc)
        {
            let n = checker.padding_left_out.entry(*leg).or_insert(0);
            *n = n.saturating_add(1);
        }
    }
    std::hint::black_box(checker.written);
});
