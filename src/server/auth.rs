//! Authentication extractors: a staff bearer token, checked on every request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gatehouse_signaling::token::StaffClaims;
use gatehouse_signaling::{Error, ErrorCode};
use std::sync::Arc;

use super::AppState;
use super::error::ApiError;

/// A verified staff identity from `Authorization: Bearer <token>`.
pub struct Staff(pub StaffClaims);

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<Arc<AppState>> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        let identity = state.keys.verify(token, crate::ids::now_ms() / 1000)?;
        Ok(Staff(identity.require_staff()?.clone()))
    }
}

/// Whether this staff member may manage `meeting`: same organisation, and an
/// admin, the organiser or on the invite list.
pub fn can_manage(staff: &StaffClaims, meeting: &gatehouse_signaling::meeting::Meeting) -> Result<(), Error> {
    use gatehouse_signaling::token::StaffRole;
    let same_org = staff.org == meeting.organization;
    let involved = staff.role == StaffRole::Admin
        || staff.sub == meeting.organizer
        || meeting.settings.invited_staff.contains(&staff.sub);
    if same_org && involved {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::Forbidden, "you may not manage this meeting"))
    }
}
