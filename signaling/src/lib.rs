//! Gatehouse's control plane as pure logic: the wire protocol, tokens,
//! meetings, links, the lobby and its admission rules, chat, and the state of an
//! appointment.
//!
//! Nothing here owns a socket, a clock or a database. Callers pass `now` and
//! an input, and get back a result or a list of effects to carry out; that is
//! what lets every rule be unit-tested without a network.
//!
//! Both sides build on it, the gateway (`gatehouse`) and the client SDK
//! (`gatehouse-sdk`), so it depends on neither, nor on tokio, webrtc-rs or any IO crate.

pub mod admission;
pub mod appointment;
pub mod chat;
pub mod error;
pub mod link;
pub mod lobby;
pub mod meeting;
pub mod protocol;
pub mod queue;
pub mod ratelimit;
pub mod room;
pub mod token;

pub use error::{Error, ErrorCode};
