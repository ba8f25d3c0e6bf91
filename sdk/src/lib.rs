//! The Rust client SDK for Gatehouse (`gatehouse-sdk`): join a meeting, handle the
//! lobby, chat, and send and receive media, from staff applications, bots, the load
//! tester and tests.
//!
//! It owns the client side only: the signaling socket, the REST calls, the two WebRTC
//! peer connections (webrtc-rs, async) and TLS. The wire protocol comes from
//! `gatehouse-signaling`, the one definition both sides share. It must never depend on
//! the gateway (`gatehouse`): a staff application compiles no HTTP server, database or
//! metrics code. Features: `synthetic` adds `synthetic`, the self-checking payload
//! format that load tests and media tests send and measure (its module is documented
//! when the feature is on: `cargo doc -p gatehouse-sdk --features synthetic`).
//!
//! - [`Client::connect`] opens the signaling WebSocket and joins; the returned
//!   [`Events`] stream carries every server frame as a typed [`Event`].
//! - [`Client::publish`] sends our media on the publisher connection;
//!   [`Event::RemoteTrack`] hands over everyone else's, from the subscriber connection.
//! - [`RestClient`] calls the REST API (meetings, links, redemption).
//!
//! Simulcast: a camera is published as three layers by default, as browsers publish
//! theirs ([`MediaOptions::simulcast`]; rids `q`, `h`, `f`, about a quarter, a half and the
//! full resolution, see [`LocalTrack`]). The gateway forwards each subscriber the layer it
//! needs ([`Client::set_quality`], told by [`Event::VideoLayer`]) and tells us which layers
//! nobody needs, so they can be paused (dynacast: [`LocalTrack::is_layer_active`],
//! [`Event::PublisherLayers`]). Screen shares and audio are one layer; `simulcast: false`
//! publishes the camera as one layer too.
//! - `synthetic` (feature) is the payload format and statistics for synthetic media.
//!
//! Media health ([`health`]): the SDK watches both of its connections, as the web
//! client does (docs/PROTOCOL.md §11.6). [`Client::media_health`] gives each one's
//! state and, while connected, its path (`udp`, `tcp` or `relay`, from the selected
//! ICE candidate pair), and [`Event::MediaHealth`] each change; the server is told with
//! `media_status` (coalesced over 200 ms, under its rate limit), so the others get
//! [`Event::ParticipantMedia`]. A connection that goes `disconnected` or `failed`, or
//! is still connecting 4 s after it started, gets an ICE restart without leaving the
//! call: the publisher re-offers with new credentials, the subscriber asks for a fresh
//! connection (`restart_ice`) and its remote tracks come again as new
//! [`Event::RemoteTrack`]s. Each restart first takes fresh ICE servers from the server
//! (TURN credentials expire). At most 3 restarts in a row, 6 s apart; then
//! [`Event::MediaLost`] says the media is gone. [`Client::restart_ice`] forces one.
//!
//! Reconnecting ([`reconnect`]): the [`Client`] is a handle to a supervisor task that
//! owns the signaling socket. When the socket dies (an error, a Close without `left`,
//! or 15 s of silence despite pings) it reconnects with the same token, at once and
//! then with a jittered backoff ([`ConnectOptions::reconnect`], 10 attempts by
//! default), and says so with [`Event::Reconnecting`] and [`Event::Reconnected`] on the
//! same [`Events`] stream. A guest who was in the call keeps its seat for the server's
//! seat hold (60 s by default) and goes straight back in: nobody else sees it leave or
//! rejoin. Media comes back on new connections by itself: the application's
//! [`LocalTrack`]s are published again (same handles, mutes kept; writes meanwhile are
//! dropped, not errors), paused subscriptions are paused again, and remote tracks
//! arrive as new [`Event::RemoteTrack`]s. `left` (leave, removal, denial, meeting end)
//! is never reconnected; when the SDK gives up, [`Event::Disconnected`] ends the
//! events and [`Client::reconnect`] can still try by hand.
//!
//! ```no_run
//! use gatehouse_sdk::{Client, ConnectOptions, Event};
//! # async fn run() -> gatehouse_sdk::Result<()> {
//! let options = ConnectOptions::new("https://127.0.0.1:8443", "staff-token").meeting("m_123");
//! let (client, mut events) = Client::connect(options).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::LobbyChanged { entries } = event {
//!         for entry in entries.iter().filter(|e| e.invited) {
//!             client.admit(entry.participant_id.clone())?;
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod health;
pub mod media;
pub mod nack;
pub mod reconnect;
pub mod rest;
mod rtcp;
#[cfg(feature = "synthetic")]
pub mod synthetic;
pub mod tls;

pub use client::{Client, ConnectOptions, Event, Events, websocket_url};
pub use error::{Result, SdkError};
pub use gatehouse_signaling::protocol::{ConnectionQuality, Quality};
pub use health::{ConnHealth, MediaHealth};
pub use media::{LocalTrack, MediaOptions, RemoteTrack, RtpPacket, SIMULCAST_RIDS, TrackLayer, VideoCodec};
pub use reconnect::ReconnectPolicy;
pub use rest::{Link, LinkKind, LobbyBypass, Meeting, NewLink, NewMeeting, PublicLink, Redeemed, RestClient};
#[cfg(feature = "synthetic")]
pub use synthetic::{SyntheticLayerSent, SyntheticSender, SyntheticSent};
pub use tls::TlsOptions;

/// The wall clock in microseconds since the UNIX epoch (what synthetic send times use).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
