//! The Gatehouse gateway: the runtime around the pure `gatehouse-signaling`
//! crate (HTTP, WebSocket, store) and the SFU media plane.

pub mod config;
pub mod ids;
pub mod metrics;
pub mod server;
pub mod sfu;
pub mod store;
pub mod tls;
