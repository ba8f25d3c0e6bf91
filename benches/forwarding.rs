//! Per-packet forwarding cost, pure (no sockets, no `rtc` connection).
//!
//! One inbound VP8 RTP packet (1100-byte payload, the load tester's size) carrying the three
//! header extensions a browser sends on video (abs-send-time, transport-cc, mid) is fanned out
//! to 1, 10 and 100 subscriber legs by the shard's own fan-out, `MediaRoom::forward`, on a room
//! built through its inputs (publish, legs, offers, answers): track lookup, per-leg checks,
//! `DownLeg` rewriting (SSRC, payload type, sequence number, extensions: abs-send-time kept
//! under the subscriber's id, transport-cc and mid stripped) and the counters. Throughput is
//! `Elements(fan_out)`, so criterion reports per forwarded packet.
//!
//! Three levels, each including the one before, by what the sink does with each copy (the
//! shard's sink hands it to `rtc`'s `write_rtp`):
//! - `forward/room`: nothing; what our code costs;
//! - `forward/room+marshal`: serialising the copy into a fresh buffer;
//! - `forward/room+marshal+srtp`: plus SRTP AES-128-GCM protection under each leg's own
//!   context (the cheapest thing `write_rtp` could possibly do with the copy).
//!
//! And once per inbound packet: `inbound/srtp_decrypt+parse` (SRTP unprotect and RTP parse).
//! And once per subscriber's RTCP datagram (TWCC feedback): `rtcp/rtc` (`rtc-srtp`, `rtc-rtcp`
//! and `convert_twcc`, as the shard read it before session 34) and `rtcp/own` (what it does now:
//! SRTCP opened in place, the compound read where it lies, `rtcp_view`).
//!
//! And the whole path, group `path` (fan-out 1 and 8): a shard with real `rtc` connections
//! (`gatehouse::sfu::benching::FanOut`: a publisher and N subscribers, `rtc` clients driven
//! in-process over loopback) takes one SRTP datagram from the publisher and ends its turn:
//! routing, SRTP decrypt and parse and the receive interceptors by the shard (`own_inbound`;
//! `path/shard_rtc_read` and the levels before it: `rtc`'s read pipeline), `MediaRoom::forward`, then per leg
//! marshal and SRTP encrypt by the shard (`own_srtp`; `path/shard_rtc_srtp` and the lever
//! levels: `write_rtp`, `rtc`'s write chain and its SRTP encrypt), queued for the socket. `path/shard`
//! drops the turn's datagrams instead of sending them, `path/shard+sendmmsg` sends them to
//! the subscribers' sockets. Only the shard's calls are timed (`iter_custom`): the
//! publisher's encryption before and the clients' upkeep after each batch of 64 packets
//! (reading what reached them, consent checks) are not. Per forwarded packet, as above.
//!
//! And `path_cold/shard` (fan-out 1 and 8): `path/shard` with the caches made cold before
//! each packet (4 MiB written between two packets, not timed; `EVICT_MB` sets another size),
//! as a call's state is when its next packet comes among many calls: what a packet costs by
//! the cache lines it touches. Its times vary with the host; the lines themselves are
//! counted exactly by callgrind's cache simulation (docs/BENCHMARKS.md §3, "Cache lines per
//! packet").
//!
//! The gateway process as a whole is measured with the load tester; docs/BENCHMARKS.md has
//! the figures and the commands.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gatehouse::sfu::benching::FanOut;
use gatehouse::sfu::bwe::Ack;
use gatehouse::sfu::media_room::{Admit, Codec, ConnId, Effect, LegSink, MediaRoom, Negotiated, Stream};
use gatehouse::sfu::own_rtcp::OwnRtcp;
use gatehouse::sfu::rtcp_view::{Report, Visit, visit_rtc};
use gatehouse::sfu::srtp_keys::{MasterKey, SrtpKeys};
use gatehouse::sfu::stats::StatsPair;
use gatehouse_signaling::protocol::{ParticipantKind, PeerRole, PublishedTrack, TrackSource};
use rtc::crypto::default_provider;
use rtc::rtp::Packet;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const FAN_OUTS: [usize; 3] = [1, 10, 100];
const PAYLOAD: usize = 1100;
const SSRC: u32 = 0x1234_5678;

/// A publisher's video packet as Chrome sends it: one-byte extensions, VP8 payload descriptor.
fn inbound_packet(seq: u16) -> Packet {
    let mut payload = vec![0u8; PAYLOAD];
    // VP8 payload descriptor (X=1, S=1, PID=0; I=1, 15-bit picture id) then payload bytes.
    payload[..4].copy_from_slice(&[0x90, 0x80, 0x81, 0x23]);
    for (i, b) in payload.iter_mut().enumerate().skip(4) {
        *b = (i * 31) as u8;
    }
    Packet {
        header: Header {
            version: 2,
            padding: false,
            extension: true,
            marker: false,
            payload_type: 96,
            sequence_number: seq,
            timestamp: 90_000,
            ssrc: SSRC,
            csrc: vec![],
            extension_profile: EXTENSION_PROFILE_ONE_BYTE,
            extensions: vec![
                Extension {
                    id: 2,
                    payload: Bytes::from_static(&[0x12, 0x34, 0x56]),
                },
                Extension {
                    id: 3,
                    payload: Bytes::from_static(&[0x01, 0x02]),
                },
                Extension {
                    id: 4,
                    payload: Bytes::from_static(b"0"),
                },
            ],
            extensions_padding: 0,
        },
        payload: Bytes::from(payload),
    }
}

const PUBLISHER: ConnId = 1;

/// What one connection negotiated: VP8 (and a second profile), abs-send-time, transport-cc, mid.
fn negotiated(vp8: u8, other: u8, ids: [(&str, u16); 3]) -> Negotiated {
    let codec = |payload_type| Codec {
        payload_type,
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        fmtp: String::new(),
    };
    Negotiated {
        codecs: vec![codec(vp8), codec(other)],
        extensions: ids.iter().map(|(uri, id)| ((*uri).to_owned(), *id)).collect(),
    }
}

/// A meeting as the shard holds it: one publisher whose camera track has `n` subscriber legs,
/// each negotiated with the subscriber connection's own ids (Chrome's on the publisher side),
/// built through the room's own inputs. Subscriber connection `100 + i` has sender `i`.
fn meeting(n: usize) -> MediaRoom {
    let now = Instant::now();
    let stats = StatsPair {
        meeting: Arc::default(),
        shard: Arc::default(),
    };
    let mut room = MediaRoom::new("m_bench", stats);
    let mut effects = Vec::new();
    room.add_participant("p_pub", ParticipantKind::Staff, true, now, &mut effects);
    room.set_connection("p_pub", PeerRole::Publisher, Some(PUBLISHER));
    for i in 0..n {
        let id = format!("p_{i}");
        room.add_participant(&id, ParticipantKind::Guest, false, now, &mut effects);
        room.set_connection(&id, PeerRole::Subscriber, Some(100 + i as ConnId));
    }
    let camera = PublishedTrack {
        mid: "0".into(),
        source: TrackSource::Camera,
        muted: false,
    };
    room.declare("p_pub", vec![camera], now, &mut effects);
    effects.clear();
    room.stream_opened(
        "p_pub",
        Stream {
            conn: PUBLISHER,
            receiver: RTCRtpReceiverId::from(0),
            mid: "0".into(),
            ssrc: SSRC,
            mime_type: "video/VP8".into(),
            negotiated: negotiated(96, 97, [(ABS_SEND_TIME, 2), (TWCC, 3), (MID, 4)]),
            replaces: true,
            layer: None,
        },
        now,
        &mut effects,
    );
    for effect in effects.drain(..) {
        if let Effect::AddSender { subscriber, leg, .. } = effect {
            let i: usize = subscriber[2..].parse().expect("p_<i>");
            room.leg_bound(leg, 100 + i as ConnId, RTCRtpSenderId::from(i));
        }
    }
    let mut offers = Vec::new();
    room.due_offers(&mut offers);
    assert_eq!(offers.len(), n);
    for i in 0..n {
        let answer = [(
            RTCRtpSenderId::from(i),
            negotiated(96, 98, [(MID, 1), (ABS_SEND_TIME, 3), (TWCC, 5)]),
        )];
        room.subscriber_answered(&format!("p_{i}"), &answer, true, now, &mut effects);
    }
    effects.clear();
    room
}

fn srtp_context(seed: u8) -> Context {
    let provider = default_provider().expect("rtc's default crypto provider");
    let key = [seed; 16];
    let salt = [seed ^ 0x5a; 12];
    Context::new(
        &key,
        &salt,
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
        provider.crypto(),
    )
    .expect("SRTP context")
}

/// The sink the bench hands to `MediaRoom::forward`: what happens to each rewritten copy.
enum Sink {
    /// Nothing: the room's own work (`forward/room`).
    Keep,
    /// Serialised into a fresh buffer.
    Marshal,
    /// Serialised and SRTP-protected under the leg's own context.
    Srtp(Vec<Context>),
}

impl LegSink for Sink {
    fn admit(&mut self, _conn: ConnId) -> Admit {
        Admit::Yes
    }

    fn write(&mut self, conn: ConnId, _sender: RTCRtpSenderId, packet: &Packet) -> bool {
        match self {
            Sink::Keep => {
                black_box(packet);
            }
            Sink::Marshal => {
                black_box(packet.marshal().expect("marshal"));
            }
            Sink::Srtp(contexts) => {
                let plain = packet.marshal().expect("marshal");
                let ctx = &mut contexts[(conn - 100) as usize];
                black_box(ctx.encrypt_rtp_with_header(&plain, &packet.header).expect("SRTP"));
            }
        }
        true
    }
}

fn forwarding(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    let now = Instant::now();
    for &n in &FAN_OUTS {
        group.throughput(Throughput::Elements(n as u64));
        type MakeSink = fn(usize) -> Sink;
        let sinks: [(&str, MakeSink); 3] = [
            ("room", |_| Sink::Keep),
            ("room+marshal", |_| Sink::Marshal),
            ("room+marshal+srtp", |n| {
                Sink::Srtp((0..n).map(|i| srtp_context(i as u8)).collect())
            }),
        ];
        for (name, make) in sinks {
            let mut room = meeting(n);
            let mut sink = make(n);
            let mut effects = Vec::new();
            let mut packet = inbound_packet(0);
            // The clock moves 20 us per packet, so a sequence number comes round again only
            // after 1.3 s: the retransmission cache then takes it for a new packet, not a
            // duplicate (it would be one within a second).
            let mut now = now;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    packet.header.sequence_number = packet.header.sequence_number.wrapping_add(1);
                    now += Duration::from_micros(20);
                    room.forward(PUBLISHER, black_box(&packet), now, &mut sink, &mut effects);
                })
            });
            assert!(effects.is_empty(), "no keyframe was asked for");
            let forwarded = room.stats().meeting.snapshot().forwarded_packets;
            // (Zero when a filter left this bench out.)
            assert!(forwarded.is_multiple_of(n as u64), "every leg got every packet");
        }
    }
    group.finish();

    // Once per inbound packet, whatever the fan-out: SRTP unprotect and parse.
    let mut group = c.benchmark_group("inbound");
    group.throughput(Throughput::Elements(1));
    let mut sender = srtp_context(200);
    let mut receiver = srtp_context(200);
    let encrypted: Vec<Bytes> = (0..4096u16)
        .map(|s| {
            let p = inbound_packet(s);
            let plain = p.marshal().expect("marshal");
            sender
                .encrypt_rtp_with_header(&plain, &p.header)
                .expect("SRTP")
                .freeze()
        })
        .collect();
    let mut i = 0usize;
    group.bench_function("srtp_decrypt+parse", |b| {
        b.iter(|| {
            // Replay protection would refuse a repeat: past the list, use a fresh receiver.
            if i == encrypted.len() {
                i = 0;
                receiver = srtp_context(200);
            }
            let plain = receiver.decrypt_rtp(&encrypted[i]).expect("SRTP");
            i += 1;
            let mut buf = &plain[..];
            black_box(Packet::unmarshal(&mut buf).expect("RTP"))
        })
    });
    group.finish();
}

/// Packets the publisher sends between two rounds of upkeep (a video frame's worth).
const PATH_BATCH: usize = 64;

/// The whole path through a shard with real connections (see the module documentation).
fn whole_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("path");
    // `PATH_SETTLE_TICK_MS`: how long a connection that only moved media may put off completing
    // its settling (10 ms in production). Under callgrind the bench runs some fifty times
    // slower, so a tick passes every few packets and the counts would depend on the machine's
    // speed: 0 (never put off) and a long tick (always, as at high native rates) are exact.
    let settle_tick = std::env::var("PATH_SETTLE_TICK_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    for n in [1usize, 8] {
        group.throughput(Throughput::Elements(n as u64));
        // The levers into `rtc` of issue 13, each off, then both on; then the copies
        // encrypted by the shard past `rtc`'s write chain (`own_srtp`); then the publisher's
        // packets opened by the shard past `rtc`'s read (`own_inbound`, as in production).
        let levels = [
            ("shard_no_levers", false, false, false, false, false),
            ("shard_direct_only", false, true, false, false, false),
            ("shard_drain_once_only", false, false, true, false, false),
            ("shard_rtc_srtp", false, true, true, false, false),
            ("shard_rtc_read", false, true, true, true, false),
            ("shard", false, true, true, true, true),
            ("shard+sendmmsg", true, true, true, true, true),
        ];
        for (name, send, direct, drain_once, own_srtp, own_inbound) in levels {
            // A meeting per level: the clients' connections stay up for the minute one level
            // takes, but not for all of them (a client's consent failed after about 40 s).
            let mut h = FanOut::with_own_paths(n, own_srtp, own_inbound).expect("the bench meeting comes up");
            h.set_send(send);
            h.set_levers(direct, drain_once);
            if let Some(tick) = settle_tick {
                h.set_settle_tick(tick);
            }
            let (forwarded, dropped) = (h.forwarded(), h.dropped());
            let mut fed = 0u64;
            let mut batch = Vec::with_capacity(PATH_BATCH);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| time_path(&mut h, iters, &mut batch, &mut fed, None))
            });
            assert_eq!(h.forwarded() - forwarded, fed * n as u64, "every leg got every packet");
            assert_eq!(h.dropped(), dropped, "nothing dropped");
        }
    }
    group.finish();
}

/// What `path_cold` writes between two timed packets: twice the machine's per-core L2 (2 MiB
/// on the EPYC this is measured on), so that the shard's state comes from L3. `EVICT_MB`
/// sets another size (64: past this machine's 32 MiB L3, so from memory, at a far noisier
/// figure that depends on what else the host runs).
const EVICT_BYTES: usize = 4 << 20;

/// The whole path as `path/shard`, with the caches made cold before each packet: the shard's
/// state for a call is no longer in L1 or L2 when the call's next packet comes, as at 30 calls
/// in the load tester, where some sixty other packets and the kernel's socket buffers for them
/// pass in between (docs/BENCHMARKS.md §3, "A vCPU that halts"). What it costs beyond
/// `path/shard` is the number of distinct cache lines a packet touches, times a miss.
fn cold_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("path_cold");
    // Each timed packet costs an untimed write of EVICT_BYTES: keep criterion's counts small.
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_millis(500));
    let evict_bytes = std::env::var("EVICT_MB")
        .ok()
        .and_then(|m| m.parse::<usize>().ok())
        .filter(|&m| m > 0)
        .map_or(EVICT_BYTES, |m| m << 20);
    let mut evict = vec![0u8; evict_bytes];
    // Small pages, as the kernel's and other processes' memory mostly is: the writes evict
    // address translations as well as lines.
    #[cfg(target_os = "linux")]
    {
        let start = (evict.as_mut_ptr() as usize).next_multiple_of(4096);
        // SAFETY: advice on pages inside the vector's allocation; it does not change its contents.
        unsafe { libc::madvise(start as *mut libc::c_void, evict_bytes - 4096, libc::MADV_NOHUGEPAGE) };
    }
    let mut round = 0u8;
    for n in [1usize, 8] {
        group.throughput(Throughput::Elements(n as u64));
        let mut h = FanOut::new(n).expect("the bench meeting comes up");
        h.set_send(false);
        let (forwarded, dropped) = (h.forwarded(), h.dropped());
        let mut fed = 0u64;
        let mut batch = Vec::with_capacity(PATH_BATCH);
        group.bench_function(BenchmarkId::new("shard", n), |b| {
            b.iter_custom(|iters| time_path(&mut h, iters, &mut batch, &mut fed, Some((&mut evict, &mut round))))
        });
        assert_eq!(h.forwarded() - forwarded, fed * n as u64, "every leg got every packet");
        assert_eq!(h.dropped(), dropped, "nothing dropped");
    }
    group.finish();
}

/// `iters` of the publisher's datagrams through the shard, in batches of [`PATH_BATCH`] with
/// the clients' upkeep after each; what the shard's calls took (the datagrams' making and the
/// upkeep not timed). `fed` counts the datagrams. With `evict` (a buffer and the byte last
/// written to it), every line of the buffer is written before each datagram, untimed, and each
/// call is timed by itself.
fn time_path(
    h: &mut FanOut,
    iters: u64,
    batch: &mut Vec<bytes::BytesMut>,
    fed: &mut u64,
    mut evict: Option<(&mut Vec<u8>, &mut u8)>,
) -> Duration {
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(PATH_BATCH as u64) as usize;
        batch.clear();
        h.datagrams(k, batch);
        *fed += batch.len() as u64;
        match &mut evict {
            None => {
                let start = Instant::now();
                for datagram in batch.drain(..) {
                    h.timed_forward(datagram);
                }
                timed += start.elapsed();
            }
            Some((buffer, round)) => {
                for datagram in batch.drain(..) {
                    // A write to every line: the lines the shard's state was in go back to L3
                    // or to memory.
                    **round = round.wrapping_add(1);
                    for line in buffer.chunks_mut(64) {
                        line[0] = **round;
                    }
                    black_box(&buffer);
                    let start = Instant::now();
                    h.timed_forward(datagram);
                    timed += start.elapsed();
                }
            }
        }
        h.maintain().expect("the clients stay up");
        left -= k as u64;
    }
    timed
}

/// A subscriber's TWCC feedback as the SDK sends it ten times a second: 12 packets, two of
/// them lost, in a two-bit status vector and a run, with their receive deltas.
fn twcc_feedback(base: u16) -> Vec<u8> {
    let mut p = vec![0x8f, 205, 0, 0];
    p.extend_from_slice(&0x5eed_u32.to_be_bytes());
    p.extend_from_slice(&0x000b_1de0_u32.to_be_bytes());
    p.extend_from_slice(&base.to_be_bytes());
    p.extend_from_slice(&12u16.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x2c, base as u8]);
    // small, small, large, lost, small, small, lost; then a run of 5 small.
    p.extend_from_slice(&(0xc000u16 | 0b01_01_10_00_01_01_00).to_be_bytes());
    p.extend_from_slice(&0x2005u16.to_be_bytes());
    p.extend_from_slice(&[20, 4]);
    p.extend_from_slice(&(-12i16).to_be_bytes());
    p.extend_from_slice(&[40, 8, 30, 4, 4, 4, 12]);
    while p.len() % 4 != 0 {
        p.push(0);
    }
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

/// What the room is handed, consumed.
#[derive(Default)]
struct Feedback(u64);

impl Visit for Feedback {
    fn keyframe_request(&mut self, ssrcs: impl Iterator<Item = u32>) {
        self.0 += ssrcs.map(u64::from).sum::<u64>();
    }
    fn twcc(&mut self, acks: impl Iterator<Item = Ack>) {
        self.0 += acks.map(|a| a.arrival.map_or(1, |t| t.as_micros() as u64)).sum::<u64>();
    }
    fn remb(&mut self, bps: Option<u64>) {
        self.0 += bps.unwrap_or(0);
    }
    fn reports(&mut self, blocks: impl Iterator<Item = Report>) {
        self.0 += blocks.map(|b| u64::from(b.jitter)).sum::<u64>();
    }
    fn nack(&mut self, media_ssrc: u32, seqs: impl Iterator<Item = u16>) {
        self.0 += u64::from(media_ssrc) + seqs.map(u64::from).sum::<u64>();
    }
}

/// Once per subscriber's RTCP datagram (TWCC feedback, the most frequent): SRTCP opened and
/// the compound read and handed on. `rtcp/rtc`: `rtc-srtp`'s context into a new buffer,
/// `rtc-rtcp`'s parser and `convert_twcc` (before session 34); `rtcp/own`: what the shard does
/// now (`own_rtcp::OwnRtcp`: `srtp_gcm::RtcpOpener` in place, `rtcp_view::View`).
fn rtcp_feedback(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtcp");
    let key = |seed: u8| MasterKey {
        key: vec![seed; 16],
        salt: vec![seed ^ 0x5a; 12],
    };
    let keys = SrtpKeys {
        profile: ProtectionProfile::AeadAes128Gcm,
        local: key(1),
        remote: key(2),
    };
    let stats = || StatsPair {
        meeting: Arc::default(),
        shard: Arc::default(),
    };
    // The client's side: it protects with its local key, our remote one.
    let mut client = SrtpKeys {
        profile: keys.profile,
        local: keys.remote.clone(),
        remote: keys.local.clone(),
    }
    .local_context()
    .expect("client");
    let datagrams: Vec<Bytes> = (0..4096u16)
        .map(|i| {
            client
                .encrypt_rtcp(&twcc_feedback(i.wrapping_mul(12)))
                .expect("SRTCP")
                .freeze()
        })
        .collect();
    let mut sink = Feedback::default();
    let mut i = 0usize;
    let mut theirs = keys.remote_context().expect("context");
    let tap_stats = stats();
    group.bench_function("rtc", |b| {
        b.iter(|| {
            // Replay protection would refuse a repeat: past the list, a fresh context.
            if i == datagrams.len() {
                i = 0;
                theirs = keys.remote_context().expect("context");
            }
            let plain = theirs.decrypt_rtcp(&datagrams[i]).expect("SRTCP");
            i += 1;
            let packets = rtc::rtcp::packet::unmarshal(&mut plain.freeze()).expect("RTCP");
            if gatehouse::sfu::rtcp::tap(&tap_stats, &packets) {
                visit_rtc(&packets, &mut sink);
            }
        })
    });
    let mut own = OwnRtcp::new(&keys, stats()).expect("keys");
    i = 0;
    group.bench_function("own", |b| {
        b.iter(|| {
            if i == datagrams.len() {
                i = 0;
                own = OwnRtcp::new(&keys, stats()).expect("keys");
            }
            let opened = own
                .open(&datagrams[i], |_, _| {})
                .expect("SRTCP")
                .expect("for the room");
            i += 1;
            opened.feedback().visit(&mut sink);
            own.give_back(opened);
        })
    });
    black_box(sink.0);
    group.finish();
}

criterion_group!(benches, forwarding, whole_path, cold_path, rtcp_feedback);
criterion_main!(benches);
