//! The public booking API (no account): an organisation's public appointment types, a
//! type's free slots, booking one, and the guest's own appointment page (view, `.ics`,
//! cancel, reschedule) reached through the code in their confirmation.
//!
//! A guest waiting for an appointment (or about to join it) holds no manage code on the
//! join page, only the guest token it redeemed: `/api/v1/guest/appointment` lets that
//! token see and cancel its own appointment, the one whose own link it was redeemed from.
//!
//! A type is named by its id when it is public, or by its private link's code (and only
//! so) when it is private. Bookings share the redemption pace per address with link
//! redemption, so the page cannot be used to fill a calendar from one machine.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::appointment::{AppointmentState, CancelledBy, Input};
use gatehouse_signaling::link::clean_display_name;
use gatehouse_signaling::room::EventKind;
use gatehouse_signaling::token::{GuestClaims, Identity};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::appointments::{
    AppointmentView, Reschedule, appointment_view, booking, candidates, clean_contact, instant, parse_instant,
    query_get, query_pairs,
};
use super::body::JsonBody;
use super::error::ApiError;
use crate::appointments::slots::{WorkingHours, free_slots};
use crate::appointments::{AppointmentRecord, AppointmentType, MAX_SLOT_RANGE_MS, ics};
use crate::ids::now_ms;

type ApiResult<T> = Result<T, ApiError>;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/book/orgs/{org}/types", get(public_types))
        .route("/api/v1/book/types/{key}", get(get_type))
        .route("/api/v1/book/types/{key}/slots", get(slots))
        .route("/api/v1/book/types/{key}/appointments", post(book))
        .route("/api/v1/book/appointments/{code}", get(my_appointment))
        .route("/api/v1/book/appointments/{code}/ics", get(my_ics))
        .route("/api/v1/book/appointments/{code}/cancel", post(cancel))
        .route("/api/v1/book/appointments/{code}/reschedule", post(reschedule))
        .route("/api/v1/guest/appointment", get(guest_appointment))
        .route("/api/v1/guest/appointment/cancel", post(guest_cancel))
}

/// The booking page (`web-client/book.html`): an organisation's types at `/book/{org}`, a
/// private type at `/book/t/{code}`, the guest's appointment at `/book/a/{code}`.
pub fn pages(config: &crate::config::Config) -> Router<Arc<AppState>> {
    use axum::routing::get_service;
    use tower_http::services::ServeFile;
    let page = config
        .web_dir
        .clone()
        .unwrap_or_else(super::assets::default_web_dir)
        .join("book.html");
    Router::new()
        .route("/book/{org}", get_service(ServeFile::new(&page)))
        .route("/book/t/{code}", get_service(ServeFile::new(&page)))
        .route("/book/a/{code}", get_service(ServeFile::new(&page)))
}

/// A type as the booking page shows it.
#[derive(Debug, Serialize)]
struct PublicType {
    /// What the booking calls use: the type id, or the private link's code.
    key: String,
    title: String,
    duration_minutes: u32,
    public: bool,
}

fn public_view(t: &AppointmentType, key: String) -> PublicType {
    PublicType {
        key,
        title: t.settings.title.clone(),
        duration_minutes: t.settings.duration_minutes,
        public: t.settings.public,
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such appointment type")
}

async fn public_types(State(state): State<Arc<AppState>>, Path(org): Path<String>) -> ApiResult<Json<Vec<PublicType>>> {
    if org.len() > 200 {
        return Err(not_found());
    }
    let types = state.store.run(move |s| s.types(&org)).await?;
    Ok(Json(
        types
            .iter()
            .filter(|t| t.settings.public && t.archived_at_ms.is_none())
            .map(|t| public_view(t, t.type_id.clone()))
            .collect(),
    ))
}

/// The type `key` names, if it may be booked now; with the private code used, if any.
async fn bookable(state: &AppState, key: &str) -> ApiResult<(AppointmentType, Option<String>)> {
    if key.len() > 64 {
        return Err(not_found());
    }
    let k = key.to_owned();
    let (by_id, by_code) = state
        .store
        .run(move |s| Ok((s.appointment_type(&k)?, s.type_by_private_code(&k)?)))
        .await?;
    let found = match (by_id, by_code) {
        // A private type is never reachable by its id.
        (Some(t), _) if t.settings.public => (t, None),
        (_, Some(t)) => (t, Some(key.to_owned())),
        _ => return Err(not_found()),
    };
    if found.0.archived_at_ms.is_some() {
        return Err(not_found());
    }
    if found.1.is_some() {
        let link = found.0.private_link.as_ref().ok_or_else(not_found)?;
        link.check(found.0.settings.single_use_link, now_ms())?;
    }
    Ok(found)
}

async fn get_type(State(state): State<Arc<AppState>>, Path(key): Path<String>) -> ApiResult<Json<PublicType>> {
    let (t, _) = bookable(&state, &key).await?;
    Ok(Json(public_view(&t, key)))
}

/// Free slots of a type.
#[derive(Debug, Serialize)]
struct Slots {
    duration_minutes: u32,
    slots: Vec<Slot>,
}

#[derive(Debug, Serialize)]
struct Slot {
    starts_at: String,
    starts_at_ms: u64,
}

/// Free slot starts for `t` in `[from, to)`, over all its staff.
async fn free_for(state: &AppState, t: &AppointmentType, from_ms: u64, to_ms: u64) -> ApiResult<Vec<u64>> {
    let staff = candidates(state, t).await?;
    let org = t.organization.clone();
    let duration = t.settings.duration_ms();
    let now = now_ms();
    let slots = state
        .store
        .run(move |s| {
            let mut all = Vec::new();
            for member in staff {
                let Some(spec) = s.working_hours(&org, &member)? else {
                    continue;
                };
                let Ok(hours) = WorkingHours::parse(&spec) else {
                    continue;
                };
                let busy = s.busy(
                    &org,
                    &member,
                    from_ms.saturating_sub(duration),
                    to_ms.saturating_add(duration),
                )?;
                all.extend(free_slots(&hours, duration, &busy, from_ms, to_ms, now));
            }
            all.sort_unstable();
            all.dedup();
            Ok(all)
        })
        .await?;
    Ok(slots)
}

async fn slots(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Slots>> {
    let (t, _) = bookable(&state, &key).await?;
    let q = query_pairs(&q);
    let (Some(from), Some(to)) = (query_get(&q, "from"), query_get(&q, "to")) else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "from and to are required (RFC 3339 times)",
        ));
    };
    let (from_ms, to_ms) = (parse_instant("from", from)?, parse_instant("to", to)?);
    if to_ms <= from_ms || to_ms - from_ms > MAX_SLOT_RANGE_MS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "to must be after from, and at most 62 days later",
        ));
    }
    let slots = free_for(&state, &t, from_ms, to_ms).await?;
    Ok(Json(Slots {
        duration_minutes: t.settings.duration_minutes,
        slots: slots
            .into_iter()
            .map(|ms| Slot {
                starts_at: instant(ms),
                starts_at_ms: ms,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookBody {
    starts_at: String,
    display_name: String,
    #[serde(default)]
    contact: Option<String>,
}

/// What a guest gets for a booking: the appointment, the link to join it, and their own page.
#[derive(Debug, Serialize)]
struct Booked {
    appointment: AppointmentView,
    join_url: String,
    /// The code of the guest's own appointment page (cancel, reschedule, `.ics`).
    manage_code: String,
    manage_url: String,
    ics_url: String,
}

fn booked(state: &AppState, a: AppointmentView, code: String) -> Booked {
    let base = state.config.public_url();
    Booked {
        join_url: a.join_url.clone(),
        manage_url: format!("{base}/book/a/{code}"),
        ics_url: format!("{base}/api/v1/book/appointments/{code}/ics"),
        manage_code: code,
        appointment: a,
    }
}

async fn book(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<BookBody>,
) -> ApiResult<(StatusCode, Json<Booked>)> {
    if !state.allow_redemption(peer.ip(), now_ms()) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many attempts from your address; wait a minute",
        ));
    }
    let (t, code) = bookable(&state, &key).await?;
    let starts_at_ms = parse_instant("starts_at", &body.starts_at)?;
    if starts_at_ms <= now_ms() {
        return Err(ApiError::new(ErrorCode::BadRequest, "this time has passed"));
    }
    let name = clean_display_name(&body.display_name)?;
    let contact = clean_contact(body.contact)?;
    let staff = candidates(&state, &t).await?;
    // Re-checked in the booking's transaction: in a staff member's hours, overlapping nothing.
    let b = booking(t, staff, Some(starts_at_ms), name, contact, code, true);
    let record = state.store.run(move |s| s.book(b)).await?;
    tracing::info!(appointment_id = %record.appointment_id, meeting_id = %record.meeting_id, staff = %record.staff, "appointment booked by a guest");
    let code = record.manage_code.clone();
    let view = appointment_view(&state, record, false, false).await?;
    Ok((StatusCode::CREATED, Json(booked(&state, view, code))))
}

async fn by_code(state: &AppState, code: &str) -> ApiResult<AppointmentRecord> {
    if code.len() > 64 {
        return Err(ApiError::new(ErrorCode::NotFound, "no such appointment"));
    }
    let code = code.to_owned();
    state
        .store
        .run(move |s| s.appointment_by_manage_code(&code))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such appointment"))
}

async fn my_appointment(State(state): State<Arc<AppState>>, Path(code): Path<String>) -> ApiResult<Json<Booked>> {
    let a = by_code(&state, &code).await?;
    let view = appointment_view(&state, a, false, false).await?;
    Ok(Json(booked(&state, view, code)))
}

async fn my_ics(State(state): State<Arc<AppState>>, Path(code): Path<String>) -> ApiResult<Response> {
    let a = by_code(&state, &code).await?;
    let (Some(start), Some(end)) = (a.machine.starts_at_ms, a.machine.ends_at_ms()) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "an on-demand appointment has no time",
        ));
    };
    let id = a.appointment_id.clone();
    let reschedules = state
        .store
        .run(move |s| s.transitions(&id))
        .await?
        .iter()
        .filter(|t| {
            matches!(
                t.cause,
                gatehouse_signaling::appointment::Cause::Rescheduled
                    | gatehouse_signaling::appointment::Cause::CancelledByGuest
                    | gatehouse_signaling::appointment::Cause::CancelledByStaff
            )
        })
        .count();
    let view = appointment_view(&state, a.clone(), false, false).await?;
    let manage_url = format!("{}/book/a/{code}", state.config.public_url());
    let uid = format!("{}@gatehouse", a.appointment_id);
    let text = ics::calendar(&ics::IcsEvent {
        uid: &uid,
        title: &view.title,
        starts_at_ms: start,
        ends_at_ms: end,
        join_url: &view.join_url,
        manage_url: &manage_url,
        sequence: u32::try_from(reschedules).unwrap_or(u32::MAX),
        cancelled: a.state() == AppointmentState::Cancelled,
        now_ms: now_ms(),
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"appointment.ics\""),
        ],
        text,
    )
        .into_response())
}

async fn cancel(State(state): State<Arc<AppState>>, Path(code): Path<String>) -> ApiResult<Json<Booked>> {
    let a = by_code(&state, &code).await?;
    let id = a.appointment_id.clone();
    let (a, _) = state
        .store
        .run(move |s| s.apply_to_appointment(&id, Input::Cancel(CancelledBy::Guest), false, now_ms()))
        .await?;
    tracing::info!(appointment_id = %a.appointment_id, "appointment cancelled by the guest");
    super::appointments::end_cancelled_meeting(&state, &a.meeting_id, CancelledBy::Guest).await?;
    let view = appointment_view(&state, a, false, false).await?;
    Ok(Json(booked(&state, view, code)))
}

async fn reschedule(
    State(state): State<Arc<AppState>>,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<Reschedule>,
) -> ApiResult<Json<Booked>> {
    let a = by_code(&state, &code).await?;
    let input = Input::Reschedule {
        starts_at_ms: parse_instant("starts_at", &body.starts_at)?,
        duration_ms: a.machine.duration_ms,
    };
    let id = a.appointment_id.clone();
    // A guest moves within the same staff member's working hours.
    let (a, _) = state
        .store
        .run(move |s| s.apply_to_appointment(&id, input, true, now_ms()))
        .await?;
    let view = appointment_view(&state, a, false, false).await?;
    Ok(Json(booked(&state, view, code)))
}

/// A verified guest token from `Authorization: Bearer <token>` (a staff token is 403).
struct GuestBearer(GuestClaims);

impl axum::extract::FromRequestParts<Arc<AppState>> for GuestBearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token =
            super::auth::bearer(parts).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        match state.keys.verify(token, now_ms() / 1000)? {
            Identity::Guest(g) => Ok(GuestBearer(g)),
            Identity::Staff(_) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this is for the guest of an appointment; staff use /api/v1/appointments",
            )),
        }
    }
}

/// The appointment `guest` came for: the one whose meeting their token is for, if they
/// redeemed that appointment's own link (not another link staff made for its meeting,
/// such as an interpreter's). 404 otherwise, saying nothing of other guests' appointments.
async fn appointment_of_guest(state: &AppState, guest: &GuestClaims) -> ApiResult<AppointmentRecord> {
    let (meeting_id, participant_id) = (guest.mtg.clone(), guest.sub.clone());
    let found = state
        .store
        .run(move |s| {
            let Some(a) = s.appointment_by_meeting(&meeting_id)? else {
                return Ok(None);
            };
            let redeemed_own_link = s.events_of(&meeting_id)?.iter().any(|e| {
                e.participant_id.as_str() == participant_id
                    && matches!(&e.event, EventKind::LinkRedeemed { link_id } if *link_id == a.link_id)
            });
            Ok(redeemed_own_link.then_some(a))
        })
        .await?;
    found.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no appointment for this guest"))
}

/// What the guest of an appointment sees of it from the join page.
#[derive(Debug, Serialize)]
struct GuestAppointment {
    appointment: AppointmentView,
    /// Whether it can still be cancelled (`scheduled`, `waiting` or `late`).
    may_cancel: bool,
}

fn guest_view(view: AppointmentView) -> GuestAppointment {
    GuestAppointment {
        may_cancel: matches!(
            view.state,
            AppointmentState::Scheduled | AppointmentState::Waiting | AppointmentState::Late
        ),
        appointment: view,
    }
}

/// `GET /api/v1/guest/appointment`: the caller's own appointment (guest token).
async fn guest_appointment(
    State(state): State<Arc<AppState>>,
    GuestBearer(guest): GuestBearer,
) -> ApiResult<Json<GuestAppointment>> {
    let a = appointment_of_guest(&state, &guest).await?;
    Ok(Json(guest_view(appointment_view(&state, a, false, false).await?)))
}

/// `POST /api/v1/guest/appointment/cancel`: the guest cancels their own appointment from
/// the lobby (as through their manage link: `cancelled_by_guest`, the link revoked).
async fn guest_cancel(
    State(state): State<Arc<AppState>>,
    GuestBearer(guest): GuestBearer,
) -> ApiResult<Json<GuestAppointment>> {
    let a = appointment_of_guest(&state, &guest).await?;
    let id = a.appointment_id.clone();
    let (a, _) = state
        .store
        .run(move |s| s.apply_to_appointment(&id, Input::Cancel(CancelledBy::Guest), false, now_ms()))
        .await?;
    tracing::info!(appointment_id = %a.appointment_id, meeting_id = %a.meeting_id, participant_id = %guest.sub, "appointment cancelled by the guest from the join page");
    super::appointments::end_cancelled_meeting(&state, &a.meeting_id, CancelledBy::Guest).await?;
    Ok(Json(guest_view(appointment_view(&state, a, false, false).await?)))
}
