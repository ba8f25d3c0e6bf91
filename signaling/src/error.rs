//! Error codes shared by the REST API and the signaling WebSocket.
//!
//! A code is a stable, machine-readable name (`snake_case` on the wire); the
//! message beside it is for humans and may change. HTTP maps each code to one
//! status, so a client can branch on the code alone.

use serde::{Deserialize, Serialize};

/// Every error a client can see, over HTTP or in a WebSocket `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request or frame is well-formed JSON but not valid for this endpoint.
    BadRequest,
    /// The frame or body is not JSON, or does not match any message shape.
    MalformedJson,
    /// The frame names a `type` this server does not know.
    UnknownType,
    /// The frame is larger than the server accepts.
    FrameTooLarge,
    /// The client speaks a protocol version this server does not.
    UnsupportedProtocol,
    /// No token, or a token that fails verification (signature, algorithm, issuer, audience).
    Unauthorized,
    /// The token was valid once but has expired.
    TokenExpired,
    /// The token is valid but for another meeting.
    WrongMeeting,
    /// Authenticated, but this identity may not do this.
    Forbidden,
    /// The meeting, link or participant does not exist; over HTTP also any unknown path.
    NotFound,
    /// The path exists but not with this HTTP method (HTTP only).
    MethodNotAllowed,
    /// The link existed but its expiry has passed.
    LinkExpired,
    /// The link was revoked by staff.
    LinkRevoked,
    /// The single-use link has already been redeemed.
    LinkUsed,
    /// The meeting's public link is turned off.
    LinkDisabled,
    /// The meeting does not admit anonymous guests.
    AnonymousJoinDisabled,
    /// The display name is empty, too long, or has control characters.
    InvalidDisplayName,
    /// Too many requests or messages; slow down.
    RateLimited,
    /// The action needs the participant to be in the call (not in the lobby, not gone).
    NotInCall,
    /// The first frame on a socket must be `join`.
    NotJoined,
    /// `join` was sent twice on one socket.
    AlreadyJoined,
    /// The meeting has ended.
    MeetingEnded,
    /// The meeting has reached its maximum number of participants.
    MeetingFull,
    /// Chat is turned off for this meeting.
    ChatDisabled,
    /// The chat message is empty or longer than the limit.
    MessageTooLong,
    /// Guests may not present (screen share) in this meeting.
    PresentingNotAllowed,
    /// The SDP offer or answer could not be parsed or applied.
    InvalidSdp,
    /// The ICE candidate could not be parsed or applied.
    InvalidCandidate,
    /// A media action arrived in a state that does not allow it (e.g. an answer with no offer pending).
    MediaStateError,
    /// The server holds as many connections as it is set to; retry shortly.
    ServerBusy,
    /// The meeting runs on another node of the cluster, which the message names (signaling
    /// is not relayed between nodes yet): connect there.
    MeetingElsewhere,
    /// The appointment slot asked for is not free (booked by someone else, or outside working hours).
    SlotTaken,
    /// The appointment's state does not allow this (e.g. cancelling one that is in progress).
    WrongAppointmentState,
    /// The server failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// The HTTP status for this code; the WebSocket uses the code alone.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest | MalformedJson | UnknownType | InvalidDisplayName | MessageTooLong | InvalidSdp
            | InvalidCandidate | UnsupportedProtocol => 400,
            Unauthorized | TokenExpired => 401,
            WrongMeeting | Forbidden | AnonymousJoinDisabled | PresentingNotAllowed | NotInCall | ChatDisabled => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            NotJoined | AlreadyJoined | MediaStateError | SlotTaken | WrongAppointmentState => 409,
            LinkExpired | LinkRevoked | LinkUsed | LinkDisabled | MeetingEnded => 410,
            FrameTooLarge => 413,
            MeetingFull => 409,
            RateLimited => 429,
            Internal => 500,
            ServerBusy => 503,
            // Misdirected Request: the right server is another one.
            MeetingElsewhere => 421,
        }
    }
}

/// An error with its code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code:?}: {message}")]
pub struct Error {
    /// What went wrong, for machines.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_on_the_wire() {
        assert_eq!(serde_json::to_string(&ErrorCode::NotInCall).unwrap(), "\"not_in_call\"");
        assert_eq!(serde_json::to_string(&ErrorCode::LinkUsed).unwrap(), "\"link_used\"");
    }

    #[test]
    fn statuses_are_client_or_server_errors() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
        ] {
            assert!((400..600).contains(&code.http_status()));
        }
        assert_eq!(ErrorCode::LinkUsed.http_status(), 410);
    }
}
