//! The media socket's input: any datagram from any address into a shard hosting a live
//! meeting (`gatehouse::sfu::fuzzing::MediaHarness`: A's publisher connection connected
//! through ICE-lite, DTLS and SRTP, audio and video published, B subscribed), through
//! `Shard::on_datagram` as the socket loop calls it: the demultiplexer, the ICE-lite
//! check handling, `rtc`'s DTLS, SRTP and SRTCP paths, RTP forwarding and the RTCP tap.
//!
//! Input: a mode byte, then its data.
//! - 0, 1: a raw datagram from A's established address (what a connected client, or
//!   anyone spoofing it, can send: DTLS records, SRTP/SRTCP, STUN, junk);
//! - 2: 4 bytes of IPv4 address and 2 of port, then a raw datagram from there;
//! - 3: 16 bytes of IPv6 address and 2 of port, then a raw datagram;
//! - 4: an RTP packet that A's client encrypts (audio or video sender by the mode's
//!   high bit): it passes SRTP and reaches forwarding;
//! - 5: RTCP packets that A's client encrypts (SRTCP): the RTCP tap, keyframe requests;
//! - 6, 7: a connectivity check signed with A's credentials carrying the given extra
//!   attributes, from A's address or (7) from the address in the next 6 bytes, 7 with
//!   USE-CANDIDATE: a nomination that moves A's path.
//!
//! With `GATEHOUSE_FUZZ_SEEDS=<dir>` set, the datagrams A's client sent while the
//! meeting was built (checks, its DTLS flight, SRTP, SRTCP) are written there as
//! inputs (mode 0): the seed corpus's real traffic.
//!
//! Any panic, including one `rtc` raises inside the shard's guards, aborts the run
//! (libFuzzer's panic hook): the guard keeps the server up, but it is still a bug. A
//! connection the input closed (a DTLS alert, say) is rebuilt for the next input.

#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gatehouse::sfu::fuzzing::MediaHarness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: RefCell<Option<MediaHarness>> = const { RefCell::new(None) };
}

fn v4(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (addr, rest) = bytes.split_at_checked(6)?;
    let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
    Some((
        SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([addr[4], addr[5]])),
        rest,
    ))
}

fn v6(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (addr, rest) = bytes.split_at_checked(18)?;
    let ip: [u8; 16] = addr[..16].try_into().ok()?;
    Some((
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16::from_be_bytes([addr[16], addr[17]])),
        rest,
    ))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = cell.get_or_insert_with(|| {
            let h = MediaHarness::new().expect("the live meeting comes up");
            if let Some(dir) = std::env::var_os("GATEHOUSE_FUZZ_SEEDS") {
                for (i, datagram) in h.recorded().iter().enumerate() {
                    let seed = [&[0u8][..], datagram].concat();
                    std::fs::write(std::path::Path::new(&dir).join(format!("client-{i:02}")), seed)
                        .expect("seed written");
                }
            }
            h
        });
        let established = h.client_addr();
        match mode & 0x07 {
            0 | 1 => h.datagram(established, rest),
            2 => {
                if let Some((from, datagram)) = v4(rest) {
                    h.datagram(from, datagram);
                }
            }
            3 => {
                if let Some((from, datagram)) = v6(rest) {
                    h.datagram(from, datagram);
                }
            }
            4 => {
                std::hint::black_box(h.client_rtp(mode & 0x80 != 0, rest));
            }
            5 => {
                std::hint::black_box(h.client_rtcp(rest));
            }
            6 => h.signed_check(established, rest, false),
            _ => {
                if let Some((from, attributes)) = v4(rest) {
                    h.signed_check(from, attributes, true);
                }
            }
        }
        // What can close A's connection: anything from its address, or a path moved away.
        if matches!(mode & 0x07, 0 | 1 | 7) && !h.live() {
            *cell = None;
        }
    });
});
