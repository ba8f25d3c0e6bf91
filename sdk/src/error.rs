//! The one error type of the SDK.

use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::LeaveReason;

/// Everything that can go wrong in the SDK.
///
/// Errors the server reports carry its stable [`ErrorCode`]; [`SdkError::code`]
/// returns it, so callers can branch on the code alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The URL is not a usable `https://`/`wss://` server address.
    #[error("invalid url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS options could not be turned into a client configuration (e.g. a bad PEM).
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The WebSocket could not be opened or failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// An HTTP request failed before a response arrived (connect, TLS, body).
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The REST API answered with an error status.
    #[error("api error {status} {code_text}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code, when the server sent one this SDK knows.
        code: Option<ErrorCode>,
        /// The `code` field as sent (empty when the body was not the usual error JSON).
        code_text: String,
        /// The server's message, or the raw body.
        message: String,
    },
    /// The server sent an `error` frame in answer to something this call sent.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server put us out (`left`) before the call could complete (e.g. denied at join).
    #[error("left the meeting ({reason:?}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Left {
        /// Why.
        reason: LeaveReason,
        /// What the server said, if anything.
        message: Option<String>,
    },
    /// The server sent something this client did not expect at this point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// webrtc-rs reported an error.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// Waiting for something took longer than allowed.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The action needs the call (admission) and we are not in it.
    #[error("not in the call")]
    NotInCall,
    /// A track cannot send before its connection has negotiated it.
    #[error("track not negotiated yet")]
    NotNegotiated,
    /// A write named a layer the track does not have (a track of one layer has layer 0
    /// only; a simulcast camera has 0, 1 and 2).
    #[error("no layer {layer}: the track has {layers}")]
    NoSuchLayer {
        /// The layer asked for.
        layer: usize,
        /// How many the track has.
        layers: usize,
    },
    /// The connection to the server is closed.
    #[error("connection closed")]
    Closed,
    /// The signaling socket is down and the SDK is reconnecting
    /// ([`Event::Reconnecting`](crate::Event::Reconnecting)): try again after
    /// [`Event::Reconnected`](crate::Event::Reconnected).
    #[error("reconnecting to the server")]
    Reconnecting,
}

impl SdkError {
    /// The server's error code, for errors that came from the server.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Api { code, .. } => *code,
            SdkError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for SdkError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        SdkError::WebSocket(Box::new(e))
    }
}

/// Shorthand for SDK results.
pub type Result<T, E = SdkError> = std::result::Result<T, E>;
