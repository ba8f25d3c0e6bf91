//! The Rust client SDK for Gatehouse.
pub mod error;
pub mod media;
pub mod synthetic;

pub use error::{Result, SdkError};

/// The wall clock in microseconds since the UNIX epoch (what synthetic send times use).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
