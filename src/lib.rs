//! The Gatehouse gateway: the runtime around the pure `gatehouse-signaling`
//! crate (HTTP, WebSocket, store), the SFU media plane, and the Rust SDK.

pub mod config;
pub mod ids;
pub mod loadtest;
pub mod metrics;
pub mod sdk;
pub mod server;
pub mod sfu;
pub mod store;
pub mod tls;
