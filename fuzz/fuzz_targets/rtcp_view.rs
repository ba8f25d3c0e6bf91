//! The shard's own reading of RTCP (`gatehouse::sfu::rtcp_view::View`, which opened
//! feedback goes through) against `rtc-rtcp`'s (`rtcp::packet::unmarshal`, which reads what
//! `View` declines): whatever `View` reads, `rtc-rtcp` reads too, and both hand the room the
//! same keyframe requests, TWCC acknowledgements, REMB, report blocks and NACKs, and the
//! receipts the same sender reports (`agrees_with_rtc` panics otherwise).
//!
//! Input: the bytes of one (decrypted) compound RTCP packet.

#![no_main]

use gatehouse::sfu::rtcp_view::agrees_with_rtc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agrees_with_rtc(data);
});
