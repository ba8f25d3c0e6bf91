//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from the docs, and
//! nothing in the server uses them). Each one runs the server's own code on fuzzed
//! input, no copy of it: the REST bodies here, the media plane in
//! [`crate::sfu::fuzzing`].

use axum::extract::FromRequest;
use axum::http::{Method, Request, header};
use axum::response::IntoResponse;
use futures_util::FutureExt;
use gatehouse_signaling::link::clean_display_name;
use gatehouse_signaling::meeting::{MeetingPatch, MeetingSettings};

use crate::server::api::{DenyBody, NewLink, Redeem};
use crate::server::body::{JsonBody, OptionalJsonBody};
use crate::server::error::ApiError;

/// The request bodies the REST API takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `POST /api/v1/meetings`: meeting settings.
    CreateMeeting,
    /// `PATCH /api/v1/meetings/{id}`: a settings patch.
    UpdateMeeting,
    /// `POST /api/v1/meetings/{id}/links`: a new link.
    CreateLink,
    /// `POST /api/v1/links/{code}/redeem`: a guest's display name.
    Redeem,
    /// `POST /api/v1/meetings/{id}/lobby/{participant_id}/deny`: an optional reason.
    Deny,
}

impl Body {
    pub const ALL: [Body; 5] = [
        Body::CreateMeeting,
        Body::UpdateMeeting,
        Body::CreateLink,
        Body::Redeem,
        Body::Deny,
    ];
}

/// The error response a refused body gets.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Reads `bytes` as the body of `body`'s request (with `content_type`, if any) through
/// the extractor its handler uses, then checks the fields as the handler does before it
/// touches the store: the settings' and patch's validation, display names. `Ok` when the
/// handler would go on; otherwise the response the client gets.
pub fn rest_body(body: Body, content_type: Option<&str>, bytes: &[u8]) -> Result<(), Refusal> {
    let mut request = Request::builder().method(Method::POST).uri("/api/v1/fuzz");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let Ok(request) = request.body(axum::body::Body::from(bytes.to_vec())) else {
        return Ok(()); // a header value no HTTP client can send
    };
    let checked = match body {
        Body::CreateMeeting => extract::<JsonBody<MeetingSettings>>(request)
            .and_then(|JsonBody(settings)| settings.validate().map(drop).map_err(ApiError::from)),
        Body::UpdateMeeting => extract::<JsonBody<MeetingPatch>>(request).and_then(|JsonBody(patch)| {
            patch
                .apply(MeetingSettings::default())
                .map(drop)
                .map_err(ApiError::from)
        }),
        Body::CreateLink => extract::<JsonBody<NewLink>>(request).and_then(|JsonBody(link)| {
            std::hint::black_box((link.kind, link.expires_in_secs));
            match link.invitee {
                Some(name) => clean_display_name(&name).map(drop).map_err(ApiError::from),
                None => Ok(()),
            }
        }),
        Body::Redeem => extract::<JsonBody<Redeem>>(request).and_then(|JsonBody(redeem)| {
            clean_display_name(&redeem.display_name)
                .map(drop)
                .map_err(ApiError::from)
        }),
        Body::Deny => extract::<OptionalJsonBody<DenyBody>>(request)
            .map(|OptionalJsonBody(deny)| drop(std::hint::black_box(deny.and_then(|d| d.reason)))),
    };
    checked.map_err(|e| {
        let response = e.into_response();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .now_or_never()
            .and_then(Result::ok)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Refusal { status, body }
    })
}

/// Runs an extractor on a request whose body is in memory (it never waits).
fn extract<T: FromRequest<(), Rejection = ApiError>>(request: Request<axum::body::Body>) -> Result<T, ApiError> {
    T::from_request(request, &())
        .now_or_never()
        .expect("a body in memory is read without waiting")
}
