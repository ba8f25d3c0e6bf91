//! The Gatehouse gateway: the runtime around the pure `gatehouse-signaling` crate
//! (HTTP, WebSocket, store), the SFU media plane (`rtc`, sans-IO, on sockets it owns)
//! and the load tester.
//!
//! The protocol and its rules live in `gatehouse-signaling`, never here twice. The load
//! tester's default engine is a staff application of `gatehouse-sdk`, the only place this
//! crate uses the SDK; its lean engine (`loadtest::lean`) drives `rtc` clients
//! (`sfu::rtc_client`) and the WebSocket directly, many connections per socket, as the
//! shards do. No server module is shared with the SDK, which must never depend on this crate.

pub mod appointments;
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
#[cfg(feature = "loadtest")]
pub mod loadtest;
pub mod metrics;
pub mod outbox;
pub mod server;
pub mod sfu;
pub mod store;
pub mod tls;
pub mod turn;
pub mod webhooks;
