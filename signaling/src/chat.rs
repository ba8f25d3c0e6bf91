//! Chat rules: what a message may contain and how fast one may send.
//!
//! Who may chat (only participants in the call) is decided by the room; this
//! module checks the message itself and paces each sender.

use crate::error::{Error, ErrorCode};
use crate::ratelimit::TokenBucket;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Messages a participant may send at once.
pub const CHAT_BURST: u32 = 5;
/// Messages a participant may send per second, sustained.
pub const CHAT_PER_SEC: f64 = 1.0;

/// Trims a message and checks its length and characters (newlines and tabs are fine).
pub fn clean_chat_text(raw: &str) -> Result<String, Error> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(Error::new(ErrorCode::MessageTooLong, "chat messages must not be empty"));
    }
    if text.chars().count() > MAX_CHAT_CHARS {
        return Err(Error::new(
            ErrorCode::MessageTooLong,
            format!("chat messages are limited to {MAX_CHAT_CHARS} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::new(
            ErrorCode::BadRequest,
            "chat messages must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

/// The pace one participant's chat is held to.
pub fn chat_bucket(now_ms: u64) -> TokenBucket {
    TokenBucket::new(CHAT_BURST, CHAT_PER_SEC, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(clean_chat_text("  hi\nthere ").unwrap(), "hi\nthere");
        assert_eq!(clean_chat_text("  ").unwrap_err().code, ErrorCode::MessageTooLong);
        assert_eq!(
            clean_chat_text(&"a".repeat(MAX_CHAT_CHARS + 1)).unwrap_err().code,
            ErrorCode::MessageTooLong
        );
        assert!(clean_chat_text(&"a".repeat(MAX_CHAT_CHARS)).is_ok());
        assert_eq!(clean_chat_text("bell\u{7}").unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn pace() {
        let mut b = chat_bucket(0);
        for _ in 0..CHAT_BURST {
            assert!(b.try_take(0));
        }
        assert!(!b.try_take(0));
        assert!(b.try_take(1000));
    }
}
