//! The Rust client SDK for Gatehouse.
pub mod synthetic;
