//! The one way errors leave the HTTP API: a status and `{"code", "message"}`.

use axum::Json;
use axum::extract::OriginalUri;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_signaling::{Error, ErrorCode};

/// An API error; converts from the protocol crate's [`Error`].
#[derive(Debug)]
pub struct ApiError(pub Error);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Error::new(code, message))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match r {
            JsonRejection::JsonSyntaxError(_) | JsonRejection::MissingJsonContentType(_) => ErrorCode::MalformedJson,
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(code, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

/// The answer to a path nothing serves (the router's fallback): 404 `not_found`.
pub async fn unknown_path(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("nothing is served at {}", uri.path()))
}

/// The answer to a known path asked with a method it does not take: 405 `method_not_allowed`.
pub async fn wrong_method(method: axum::http::Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
    )
}
