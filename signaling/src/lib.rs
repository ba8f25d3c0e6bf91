//! Gatehouse's control plane as pure logic: the wire protocol, tokens,
//! meetings, links, the lobby and its admission rules, and chat.
//!
//! Nothing here owns a socket, a clock or a database. Callers pass `now` and
//! an input, and get back a result or a list of effects to carry out; that is
//! what lets every rule be unit-tested without a network.

pub mod admission;
pub mod chat;
pub mod error;
pub mod link;
pub mod lobby;
pub mod meeting;
pub mod protocol;
pub mod ratelimit;
pub mod room;
pub mod token;

pub use error::{Error, ErrorCode};
