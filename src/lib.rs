//! The Gatehouse gateway: the runtime around the pure `gatehouse-signaling`
//! crate (HTTP, WebSocket, store) and the SFU media plane.

pub mod sdk;
pub mod sfu;
