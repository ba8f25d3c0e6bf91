//! REST request bodies, read as the server reads them (`gatehouse::fuzzing::rest_body`:
//! the handler's own extractor, then the field checks the handler makes before it
//! touches the store) for every body the API takes: meeting settings, a settings
//! patch, a new link, a redemption, a deny reason.
//!
//! Input: a selector byte (which body, and whether the request says
//! `Content-Type: application/json`), then the body's bytes.
//!
//! Checked: a refusal is a 4xx whose body is `{"code", "message"}` with the code's own
//! status (never a 5xx, never an empty or non-JSON body), and any body the server takes
//! is a JSON object (arrays and scalars are refused, whatever fields they would fill).

#![no_main]

use gatehouse::fuzzing::{Body, rest_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let body = Body::ALL[usize::from(selector) % Body::ALL.len()];
    let content_type = match selector >> 6 {
        0 | 1 => Some("application/json"),
        2 => Some("text/plain"),
        _ => None,
    };
    match rest_body(body, content_type, bytes) {
        Ok(()) => {
            if !(body == Body::Deny && bytes.is_empty()) {
                let value: serde_json::Value = serde_json::from_slice(bytes).expect("a body the server took is JSON");
                assert!(value.is_object(), "a body that is not a JSON object was taken: {value}");
            }
        }
        Err(refusal) => {
            assert!(
                (400..500).contains(&refusal.status),
                "a body was answered {}",
                refusal.status
            );
            let error: serde_json::Value = serde_json::from_slice(&refusal.body).expect("an error response is JSON");
            let code = error["code"].as_str().expect("an error has a string code");
            assert!(error["message"].is_string(), "an error has a message");
            let typed: gatehouse_signaling::ErrorCode =
                serde_json::from_value(error["code"].clone()).expect("the code is one of ours");
            assert_eq!(
                typed.http_status(),
                refusal.status,
                "{code} answered with another status"
            );
        }
    }
});
