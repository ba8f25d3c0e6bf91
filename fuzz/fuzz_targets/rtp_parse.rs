//! The shard's own RTP parser (`gatehouse::sfu::rtp_parse::parse_into`, which opened
//! publishers' packets go through) against `rtc`'s (`Packet::unmarshal`, which a stream's
//! first packets go through): on any input both refuse, or both parse to the same packet.
//! Parsed into a packet whose lists hold stale entries, as a recycled one does.
//!
//! Input: the bytes of one (decrypted) RTP packet.

#![no_main]

use bytes::Bytes;
use gatehouse::sfu::rtp_parse::parse_into;
use libfuzzer_sys::fuzz_target;
use rtc::rtp::Packet;
use rtc::rtp::header::Extension;
use rtc::shared::marshal::Unmarshal;

fuzz_target!(|data: &[u8]| {
    let theirs = Packet::unmarshal(&mut Bytes::copy_from_slice(data));
    let mut ours = Packet::default();
    ours.header.extensions = vec![
        Extension {
            id: 1,
            payload: Bytes::from_static(b"stale"),
        };
        2
    ];
    ours.header.csrc = vec![1, 2];
    let result = parse_into(Bytes::copy_from_slice(data), &mut ours);
    match (theirs, result) {
        (Ok(theirs), Ok(())) => assert_eq!(theirs, ours),
        (Err(_), Err(_)) => {}
        (theirs, result) => panic!("rtc: {theirs:?}, ours: {result:?}"),
    }
});
