//! Per-packet forwarding cost, pure (no sockets, no `rtc` connection).
//!
//! One inbound VP8 RTP packet (1100-byte payload, the load tester's size) carrying the three
//! header extensions a browser sends on video (abs-send-time, transport-cc, mid) is fanned out
//! to 1, 10 and 100 subscriber legs exactly as the shard's `forward` does it:
//! `DownLeg::accepts`, then `DownLeg::copy` (SSRC, payload type via `PtMap`, sequence number,
//! extensions via `ExtMap`: abs-send-time kept under the subscriber's id, transport-cc and mid
//! stripped). Throughput is `Elements(fan_out)`, so criterion reports per forwarded packet.
//!
//! Three levels, each including the one before, to bound what the shard pays per copy outside
//! `rtc`'s own bookkeeping:
//! - `forward/rewrite`: our decisions and the header copy (what `forward.rs` costs);
//! - `forward/rewrite+marshal`: plus serialising the copy into a fresh buffer;
//! - `forward/rewrite+marshal+srtp`: plus SRTP AES-128-GCM protection under each leg's own
//!   context (the cheapest thing `write_rtp` could possibly do with the copy).
//!
//! And once per inbound packet: `inbound/srtp_decrypt+parse` (SRTP unprotect and RTP parse).
//!
//! The whole server path (interceptors, SRTP, `sendto`) is measured with the load tester;
//! docs/BENCHMARKS.md has the figures and the commands.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gatehouse::sfu::forward::{CodecKey, DownLeg, ExtMap, PtMap};
use rtc::crypto::default_provider;
use rtc::rtp::Packet;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::hint::black_box;

const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const FAN_OUTS: [usize; 3] = [1, 10, 100];
const PAYLOAD: usize = 1100;

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
            ssrc: 0x1234_5678,
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

fn codec(pt: u8) -> CodecKey<'static> {
    CodecKey {
        payload_type: pt,
        mime_type: "video/VP8",
        clock_rate: 90_000,
        fmtp: "",
    }
}

/// Subscriber legs with tables built the way `room.rs` builds them after negotiation: the
/// publisher's (Chrome's) ids on one side, the subscriber connection's ids on the other.
fn legs(n: usize) -> Vec<DownLeg> {
    (0..n)
        .map(|i| {
            let mut leg = DownLeg::new(0x4000_0000 + i as u32);
            leg.pt_map = PtMap::by_codec([codec(96), codec(97)], [codec(96), codec(98)]);
            leg.ext_map = ExtMap::by_uri(
                [(ABS_SEND_TIME, 2), (TWCC, 3), (MID, 4)],
                [(MID, 1), (ABS_SEND_TIME, 3), (TWCC, 5)],
            );
            leg
        })
        .collect()
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

fn forwarding(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    for &n in &FAN_OUTS {
        group.throughput(Throughput::Elements(n as u64));

        let mut legs_a = legs(n);
        let mut seq = 0u16;
        group.bench_with_input(BenchmarkId::new("rewrite", n), &n, |b, _| {
            let packet = inbound_packet(0);
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let mut packet = black_box(&packet).clone();
                packet.header.sequence_number = seq;
                for leg in legs_a.iter_mut() {
                    if leg.accepts(&packet.header).is_err() {
                        continue;
                    }
                    black_box(leg.copy(&packet));
                }
            })
        });

        let mut legs_b = legs(n);
        group.bench_with_input(BenchmarkId::new("rewrite+marshal", n), &n, |b, _| {
            let packet = inbound_packet(0);
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let mut packet = black_box(&packet).clone();
                packet.header.sequence_number = seq;
                for leg in legs_b.iter_mut() {
                    if leg.accepts(&packet.header).is_err() {
                        continue;
                    }
                    let copy = leg.copy(&packet);
                    black_box(copy.marshal().expect("marshal"));
                }
            })
        });

        let mut legs_c: Vec<(DownLeg, Context)> = legs(n)
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, srtp_context(i as u8)))
            .collect();
        group.bench_with_input(BenchmarkId::new("rewrite+marshal+srtp", n), &n, |b, _| {
            let packet = inbound_packet(0);
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let mut packet = black_box(&packet).clone();
                packet.header.sequence_number = seq;
                for (leg, ctx) in legs_c.iter_mut() {
                    if leg.accepts(&packet.header).is_err() {
                        continue;
                    }
                    let copy = leg.copy(&packet);
                    let plain = copy.marshal().expect("marshal");
                    black_box(ctx.encrypt_rtp_with_header(&plain, &copy.header).expect("SRTP"));
                }
            })
        });
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

criterion_group!(benches, forwarding);
criterion_main!(benches);
