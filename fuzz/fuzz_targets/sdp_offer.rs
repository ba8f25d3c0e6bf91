//! SDP into the media room: arbitrary text as B's publisher offer (`publish_offer`) or
//! as B's answer to the shard's subscriber offer (`subscribe_answer`), handed to the
//! shard of a live meeting exactly as the meeting task hands a client's frame
//! (`gatehouse::sfu::fuzzing::MediaHarness`): the ICE password scan, `rtc`'s SDP parser
//! and offer/answer machinery, our answer building and the media room's declarations.
//!
//! Input: a mode byte (even: offer, odd: answer), then the SDP as UTF-8 (a WebSocket
//! text frame is UTF-8; anything else never reaches the shard).
//!
//! An answer that is taken is followed by B's `restart_ice`, so the next input has a
//! fresh subscriber offer to answer.
//!
//! Checked: a refusal is one of the codes a client can act on (`invalid_sdp`, or the
//! media state codes), never `internal`; and the meeting's other connection (A's,
//! connected) survives whatever B sent.

#![no_main]

use std::cell::RefCell;

use gatehouse::sfu::fuzzing::MediaHarness;
use gatehouse_signaling::ErrorCode;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: RefCell<Option<MediaHarness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(rest) else {
        return;
    };
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = cell.get_or_insert_with(|| MediaHarness::new().expect("the live meeting comes up"));
        let result = if mode % 2 == 0 {
            h.publish_offer(sdp)
        } else {
            let answered = h.subscribe_answer(sdp);
            if answered.is_ok() {
                // Nothing more to answer: a fresh subscriber offer for the next input.
                h.restart_subscriber();
            }
            answered
        };
        if let Err(e) = result {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::InvalidSdp
                        | ErrorCode::MediaStateError
                        | ErrorCode::BadRequest
                        | ErrorCode::PresentingNotAllowed
                ),
                "refused with {:?}: {}",
                e.code,
                e.message
            );
        }
        assert!(h.live(), "B's SDP broke A's connection");
    });
});
