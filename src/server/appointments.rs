//! The appointments REST API for staff: departments and their members, working hours,
//! appointment types, appointments (create, cancel, reschedule) and the day's queue;
//! and the clock that lets start times and no-show deadlines act.
//!
//! Membership of departments is managed here by admins, not read from token claims:
//! the booking page must know a department's staff when no staff token is present, and
//! a change must apply at once rather than when tokens are next issued
//! (docs/ARCHITECTURE.md, "Appointments").

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::appointment::{CancelledBy, Input};
use gatehouse_signaling::link::{Link, LinkKind, clean_display_name};
use gatehouse_signaling::meeting::{Meeting, MeetingSettings};
use gatehouse_signaling::token::{StaffClaims, StaffRole};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Staff;
use super::body::JsonBody;
use super::error::ApiError;
use crate::appointments::slots::{WorkingHours, WorkingHoursSpec};
use crate::appointments::{AppointmentRecord, AppointmentType, Department, PrivateLink, TypeSettings, clean_name};
use crate::ids::{link_code, new_id, now_ms};
use crate::store::appointments::NewBooking;

type ApiResult<T> = Result<T, ApiError>;

/// How often the clock looks for passed starts and no-show deadlines. Transitions are
/// stamped with the deadline itself, not with the moment the clock saw it.
const CLOCK_PERIOD: Duration = Duration::from_secs(5);
/// Clock ticks between two sweeps for guest contacts past their retention (an hour).
const CONTACT_SWEEP_TICKS: u64 = 720;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/departments", post(create_department).get(list_departments))
        .route(
            "/api/v1/departments/{id}",
            delete(delete_department).patch(rename_department),
        )
        .route(
            "/api/v1/departments/{id}/staff/{sub}",
            put(add_member).delete(remove_member),
        )
        .route(
            "/api/v1/staff/{sub}/working-hours",
            put(put_working_hours).get(get_working_hours),
        )
        .route("/api/v1/appointment-types", post(create_type).get(list_types))
        .route(
            "/api/v1/appointment-types/{id}",
            get(get_type).patch(patch_type).delete(archive_type),
        )
        .route("/api/v1/appointment-types/{id}/private-link", post(new_private_link))
        .route("/api/v1/appointments", post(create_appointment).get(list_appointments))
        .route("/api/v1/appointments/{id}", get(get_appointment))
        .route("/api/v1/appointments/{id}/cancel", post(cancel_appointment))
        .route("/api/v1/appointments/{id}/reschedule", post(reschedule_appointment))
        .route("/api/v1/appointments/{id}/remind", post(remind_appointment))
        .route("/api/v1/analytics/appointments", get(analytics))
}

/// Runs the appointments' clock until shutdown.
pub fn spawn_clock(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CLOCK_PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Contacts past their retention: at start, then hourly (a day is the shortest).
            if ticks.is_multiple_of(CONTACT_SWEEP_TICKS) {
                match state.store.run(|s| s.erase_expired_contacts(now_ms())).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(erased = n, "guest contacts past their retention erased"),
                    Err(e) => tracing::warn!(error = %e, "erasing guest contacts failed"),
                }
            }
            ticks += 1;
            match state.store.run(|s| s.tick_appointments(now_ms())).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(transitions = n, "appointment clock"),
                Err(e) => tracing::warn!(error = %e, "appointment clock failed"),
            }
        }
    })
}

pub(crate) fn require_admin(staff: &StaffClaims) -> ApiResult<()> {
    if staff.role == StaffRole::Admin {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, "only an admin may do this"))
    }
}

/// Parses an RFC 3339 instant (`2026-12-07T09:00:00+01:00` or `…Z`) to Unix ms.
pub(crate) fn parse_instant(what: &str, s: &str) -> ApiResult<u64> {
    let t: Timestamp = s.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{what} must be an RFC 3339 time such as 2026-12-07T09:00:00Z"),
        )
    })?;
    u64::try_from(t.as_millisecond())
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("{what} is before 1970")))
}

/// RFC 3339 in UTC.
pub(crate) fn instant(ms: u64) -> String {
    Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The query string as pairs.
pub(crate) fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

// ---- departments ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDepartment {
    name: String,
}

async fn create_department(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    JsonBody(body): JsonBody<NewDepartment>,
) -> ApiResult<(StatusCode, Json<Department>)> {
    require_admin(&staff)?;
    let d = Department {
        department_id: new_id("d"),
        organization: staff.org.clone(),
        name: clean_name("name", &body.name)?,
        staff: Vec::new(),
        created_at_ms: now_ms(),
    };
    {
        let d = d.clone();
        state.store.run(move |s| s.insert_department(&d)).await?;
    }
    Ok((StatusCode::CREATED, Json(d)))
}

async fn list_departments(State(state): State<Arc<AppState>>, Staff(staff): Staff) -> ApiResult<Json<Vec<Department>>> {
    let org = staff.org.clone();
    Ok(Json(state.store.run(move |s| s.departments(&org)).await?))
}

async fn department_of(state: &AppState, org: &str, id: &str) -> ApiResult<Department> {
    let (org, id) = (org.to_owned(), id.to_owned());
    state
        .store
        .run(move |s| s.department(&org, &id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such department"))
}

/// `PATCH /departments/{id}` (admins): a new name, unique in the organisation.
async fn rename_department(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewDepartment>,
) -> ApiResult<Json<Department>> {
    require_admin(&staff)?;
    let name = clean_name("name", &body.name)?;
    let d = department_of(&state, &staff.org, &id).await?;
    if d.name != name {
        let (org, id, name) = (staff.org.clone(), id.clone(), name.clone());
        if !state.store.run(move |s| s.rename_department(&org, &id, &name)).await? {
            return Err(ApiError::new(ErrorCode::BadRequest, "a department of that name exists"));
        }
    }
    Ok(Json(department_of(&state, &staff.org, &id).await?))
}

async fn delete_department(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&staff)?;
    let org = staff.org.clone();
    if state.store.run(move |s| s.delete_department(&org, &id)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, "no such department"))
    }
}

async fn set_member(
    state: &AppState,
    staff: &StaffClaims,
    id: String,
    sub: String,
    member: bool,
) -> ApiResult<Json<Department>> {
    require_admin(staff)?;
    department_of(state, &staff.org, &id).await?;
    let sub = clean_name("a staff subject", &sub)?;
    {
        let id = id.clone();
        state.store.run(move |s| s.set_member(&id, &sub, member)).await?;
    }
    Ok(Json(department_of(state, &staff.org, &id).await?))
}

async fn add_member(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path((id, sub)): Path<(String, String)>,
) -> ApiResult<Json<Department>> {
    set_member(&state, &staff, id, sub, true).await
}

async fn remove_member(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path((id, sub)): Path<(String, String)>,
) -> ApiResult<Json<Department>> {
    set_member(&state, &staff, id, sub, false).await
}

// ---- working hours ----

async fn put_working_hours(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(sub): Path<String>,
    JsonBody(spec): JsonBody<WorkingHoursSpec>,
) -> ApiResult<Json<WorkingHoursSpec>> {
    if sub != staff.sub {
        require_admin(&staff)?;
    }
    WorkingHours::parse(&spec)?;
    let org = staff.org.clone();
    {
        let spec = spec.clone();
        state
            .store
            .run(move |s| s.put_working_hours(&org, &sub, &spec, now_ms()))
            .await?;
    }
    Ok(Json(spec))
}

async fn get_working_hours(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(sub): Path<String>,
) -> ApiResult<Json<WorkingHoursSpec>> {
    let org = staff.org.clone();
    state
        .store
        .run(move |s| s.working_hours(&org, &sub))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no working hours set"))
}

// ---- appointment types ----

/// A type as staff see it: with its private booking page when it has one.
#[derive(Debug, Serialize)]
pub(crate) struct TypeView {
    #[serde(flatten)]
    pub(crate) appointment_type: AppointmentType,
    /// The private booking page (private types).
    pub(crate) private_url: Option<String>,
}

fn type_view(state: &AppState, t: AppointmentType) -> TypeView {
    TypeView {
        private_url: t
            .private_link
            .as_ref()
            .map(|l| format!("{}/book/t/{}", state.config.public_url(), l.code)),
        appointment_type: t,
    }
}

pub(crate) fn make_private_link(days: u32, now: u64) -> PrivateLink {
    PrivateLink {
        code: link_code(),
        expires_at_ms: now + u64::from(days) * 24 * 3600 * 1000,
        used_at_ms: None,
    }
}

async fn create_type(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    JsonBody(settings): JsonBody<TypeSettings>,
) -> ApiResult<(StatusCode, Json<TypeView>)> {
    require_admin(&staff)?;
    let settings = settings.validate()?;
    if let Some(d) = &settings.department_id {
        department_of(&state, &staff.org, d).await?;
    }
    let now = now_ms();
    let t = AppointmentType {
        type_id: new_id("at"),
        organization: staff.org.clone(),
        private_link: (!settings.public).then(|| make_private_link(settings.private_link_days, now)),
        settings,
        created_at_ms: now,
        archived_at_ms: None,
    };
    {
        let t = t.clone();
        state.store.run(move |s| s.insert_type(&t)).await?;
    }
    Ok((StatusCode::CREATED, Json(type_view(&state, t))))
}

async fn list_types(State(state): State<Arc<AppState>>, Staff(staff): Staff) -> ApiResult<Json<Vec<TypeView>>> {
    let org = staff.org.clone();
    let types = state.store.run(move |s| s.types(&org)).await?;
    Ok(Json(types.into_iter().map(|t| type_view(&state, t)).collect()))
}

pub(crate) async fn type_of(state: &AppState, org: &str, id: &str) -> ApiResult<AppointmentType> {
    let id = id.to_owned();
    state
        .store
        .run(move |s| s.appointment_type(&id))
        .await?
        .filter(|t| t.organization == org)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such appointment type"))
}

async fn get_type(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<TypeView>> {
    let t = type_of(&state, &staff.org, &id).await?;
    Ok(Json(type_view(&state, t)))
}

/// `PATCH /appointment-types/{id}` (admins): the settings named in the body change, the
/// others stay; the result is checked whole, as at creation. A type made private gets its
/// private link (if it never had one). Appointments already booked keep their time,
/// duration, staff, lobby rule and no-show deadline; reminders follow the type's schedule
/// for bookings and reschedules from now on; contact retention applies to all of the
/// type's appointments at the next sweep. An archived type is not changed.
async fn patch_type(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Json<TypeView>> {
    require_admin(&staff)?;
    let t = type_of(&state, &staff.org, &id).await?;
    if t.archived_at_ms.is_some() {
        return Err(ApiError::new(ErrorCode::NotFound, "this appointment type is archived"));
    }
    let settings = t.settings.patched(body)?;
    if let Some(d) = &settings.department_id
        && settings.department_id != t.settings.department_id
    {
        department_of(&state, &staff.org, d).await?;
    }
    let link =
        (!settings.public && t.private_link.is_none()).then(|| make_private_link(settings.private_link_days, now_ms()));
    {
        let id = id.clone();
        state
            .store
            .run(move |s| s.update_type(&id, &settings, link.as_ref()))
            .await?;
    }
    Ok(Json(type_view(&state, type_of(&state, &staff.org, &id).await?)))
}

async fn archive_type(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<TypeView>> {
    require_admin(&staff)?;
    type_of(&state, &staff.org, &id).await?;
    {
        let id = id.clone();
        state.store.run(move |s| s.archive_type(&id, now_ms())).await?;
    }
    Ok(Json(type_view(&state, type_of(&state, &staff.org, &id).await?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateLinkBody {
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// A new private booking link for a type (the old one stops working).
async fn new_private_link_handler(
    state: &AppState,
    staff: &StaffClaims,
    id: &str,
    days: Option<u32>,
) -> ApiResult<TypeView> {
    require_admin(staff)?;
    let t = type_of(state, &staff.org, id).await?;
    let days = days.unwrap_or(t.settings.private_link_days);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "expires_in_days must be between 1 and 3650",
        ));
    }
    let link = make_private_link(days, now_ms());
    {
        let id = id.to_owned();
        state.store.run(move |s| s.set_private_link(&id, &link)).await?;
    }
    Ok(type_view(state, type_of(state, &staff.org, id).await?))
}

async fn new_private_link(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    super::body::OptionalJsonBody(body): super::body::OptionalJsonBody<PrivateLinkBody>,
) -> ApiResult<(StatusCode, Json<TypeView>)> {
    let days = body.and_then(|b| b.expires_in_days);
    Ok((
        StatusCode::CREATED,
        Json(new_private_link_handler(&state, &staff, &id, days).await?),
    ))
}

// ---- appointments ----

/// An appointment as the API shows it (the queue subscription's frames carry the same).
pub(crate) use gatehouse_signaling::appointment::AppointmentView;

pub(crate) async fn appointment_view(
    state: &AppState,
    a: AppointmentRecord,
    for_staff: bool,
    with_transitions: bool,
) -> ApiResult<AppointmentView> {
    let (type_id, link_id, id) = (a.type_id.clone(), a.link_id.clone(), a.appointment_id.clone());
    let (t, link, transitions) = state
        .store
        .run(move |s| {
            let transitions = if with_transitions {
                Some(s.transitions(&id)?)
            } else {
                None
            };
            Ok((s.appointment_type(&type_id)?, s.link(&link_id)?, transitions))
        })
        .await?;
    let now = now_ms();
    Ok(AppointmentView {
        title: t.map(|t| t.settings.title).unwrap_or_default(),
        join_url: link
            .map(|l| format!("{}/j/{}", state.config.public_url(), l.code))
            .unwrap_or_default(),
        on_demand: a.machine.starts_at_ms.is_none(),
        starts_at: a.machine.starts_at_ms.map(instant),
        starts_at_ms: a.machine.starts_at_ms,
        ends_at_ms: a.machine.ends_at_ms(),
        duration_minutes: a.machine.duration_ms / 60_000,
        state: a.machine.state,
        state_since_ms: a.machine.state_since_ms,
        lobby_wait_ms: a.machine.lobby_wait_ms(now),
        first_arrived_ms: a.machine.first_arrived_ms,
        no_show_at_ms: a.machine.no_show_at_ms,
        guest_contact: if for_staff { a.guest_contact } else { None },
        appointment_id: a.appointment_id,
        type_id: a.type_id,
        department_id: a.department_id,
        staff: a.staff,
        meeting_id: a.meeting_id,
        guest_name: a.guest_name,
        transitions,
    })
}

/// The staff who may take appointments of `t`, in order.
pub(crate) async fn candidates(state: &AppState, t: &AppointmentType) -> ApiResult<Vec<String>> {
    if !t.settings.staff.is_empty() {
        return Ok(t.settings.staff.clone());
    }
    let Some(d) = &t.settings.department_id else {
        return Ok(Vec::new());
    };
    Ok(department_of(state, &t.organization, d)
        .await
        .map(|d| d.staff)
        .unwrap_or_default())
}

/// Cleans a guest's contact (an e-mail address or a phone number, as typed).
pub(crate) fn clean_contact(contact: Option<String>) -> ApiResult<Option<String>> {
    contact
        .filter(|c| !c.trim().is_empty())
        .map(|c| clean_name("contact", &c).map_err(ApiError::from))
        .transpose()
}

/// Everything but the choice of staff for a booking: a meeting whose lobby rule and
/// presenting rights are the type's, and the guest's single-use join link.
pub(crate) fn booking(
    t: AppointmentType,
    candidates: Vec<String>,
    starts_at_ms: Option<u64>,
    guest_name: String,
    guest_contact: Option<String>,
    via_private_code: Option<String>,
    within_hours: bool,
) -> NewBooking {
    let now = now_ms();
    let meeting_id = new_id("m");
    let end = starts_at_ms.map(|s| s + t.settings.duration_ms());
    let meeting = Meeting {
        meeting_id: meeting_id.clone().into(),
        organization: t.organization.clone(),
        // Filled with the staff member chosen in the booking's transaction.
        organizer: String::new(),
        settings: MeetingSettings {
            title: format!("{}: {}", t.settings.title, guest_name),
            lobby_bypass: t.settings.lobby_bypass,
            // Only the appointment's own link lets anyone in.
            allow_anonymous: false,
            public_link_enabled: false,
            guests_may_present: t.settings.guests_may_present,
            max_participants: 10,
            scheduled_start_ms: starts_at_ms,
            scheduled_end_ms: end,
            ..MeetingSettings::default()
        },
        created_at_ms: now,
        ended_at_ms: None,
    };
    let link = Link {
        link_id: new_id("l"),
        meeting_id: meeting_id.into(),
        code: link_code(),
        kind: LinkKind::SingleUse,
        invitee: Some(guest_name.clone()),
        created_at_ms: now,
        // A day after the end (or after booking, on demand).
        expires_at_ms: Some(end.unwrap_or(now) + 24 * 3600 * 1000),
        revoked_at_ms: None,
        redemptions: 0,
    };
    NewBooking {
        appointment_id: new_id("a"),
        appointment_type: t,
        via_private_code,
        candidates,
        within_hours,
        starts_at_ms,
        guest_name,
        guest_contact,
        manage_code: link_code(),
        meeting,
        link,
        now_ms: now,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAppointment {
    type_id: String,
    /// RFC 3339; absent with `on_demand: true`.
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    on_demand: bool,
    /// One of the type's staff; default: the caller if they are one, else the first free.
    #[serde(default)]
    staff: Option<String>,
    guest_name: String,
    #[serde(default)]
    guest_contact: Option<String>,
}

async fn create_appointment(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    JsonBody(body): JsonBody<NewAppointment>,
) -> ApiResult<(StatusCode, Json<AppointmentView>)> {
    let t = type_of(&state, &staff.org, &body.type_id).await?;
    if t.archived_at_ms.is_some() {
        return Err(ApiError::new(ErrorCode::NotFound, "this appointment type is archived"));
    }
    let starts_at_ms = match (body.starts_at.as_deref(), body.on_demand) {
        (Some(s), false) => Some(parse_instant("starts_at", s)?),
        (None, true) => None,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "give either starts_at or on_demand: true",
            ));
        }
    };
    let guest_name = clean_display_name(&body.guest_name)?;
    let guest_contact = clean_contact(body.guest_contact)?;
    let mut candidates = candidates(&state, &t).await?;
    match &body.staff {
        Some(s) if candidates.contains(s) => candidates = vec![s.clone()],
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "staff must be one of the type's staff or its department's",
            ));
        }
        None => {
            if let Some(i) = candidates.iter().position(|c| *c == staff.sub) {
                let me = candidates.remove(i);
                candidates.insert(0, me);
            }
        }
    }
    if candidates.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "this appointment type has no staff",
        ));
    }
    let b = booking(t, candidates, starts_at_ms, guest_name, guest_contact, None, false);
    let record = state.store.run(move |s| s.book(b)).await?;
    tracing::info!(appointment_id = %record.appointment_id, meeting_id = %record.meeting_id, staff = %record.staff, "appointment created by staff");
    Ok((
        StatusCode::CREATED,
        Json(appointment_view(&state, record, true, true).await?),
    ))
}

/// Whether `staff` may see and change `a`: an admin, its staff member, or a member of its department.
async fn may_see(state: &AppState, staff: &StaffClaims, a: &AppointmentRecord) -> ApiResult<bool> {
    if a.organization != staff.org {
        return Ok(false);
    }
    if staff.role == StaffRole::Admin || a.staff == staff.sub {
        return Ok(true);
    }
    let Some(d) = &a.department_id else { return Ok(false) };
    Ok(department_of(state, &staff.org, d)
        .await
        .is_ok_and(|d| d.staff.contains(&staff.sub)))
}

async fn visible_appointment(state: &AppState, staff: &StaffClaims, id: &str) -> ApiResult<AppointmentRecord> {
    let id = id.to_owned();
    let a = state.store.run(move |s| s.appointment(&id)).await?;
    match a {
        Some(a) if may_see(state, staff, &a).await? => Ok(a),
        _ => Err(ApiError::new(ErrorCode::NotFound, "no such appointment")),
    }
}

async fn get_appointment(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<AppointmentView>> {
    let a = visible_appointment(&state, &staff, &id).await?;
    Ok(Json(appointment_view(&state, a, true, true).await?))
}

async fn cancel_appointment(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<AppointmentView>> {
    visible_appointment(&state, &staff, &id).await?;
    let (a, _) = state
        .store
        .run(move |s| s.apply_to_appointment(&id, Input::Cancel(CancelledBy::Staff), false, now_ms()))
        .await?;
    tracing::info!(appointment_id = %a.appointment_id, by = %staff.sub, "appointment cancelled by staff");
    end_cancelled_meeting(&state, &a.meeting_id, CancelledBy::Staff).await?;
    Ok(Json(appointment_view(&state, a, true, true).await?))
}

/// A cancelled appointment's meeting is over: whoever waits in its lobby (or sits in its
/// call) is told why and leaves, and nobody enters it again. Its link is already revoked
/// by the cancel; this ends the meeting itself, live or not.
pub(crate) async fn end_cancelled_meeting(state: &AppState, meeting_id: &str, by: CancelledBy) -> ApiResult<()> {
    let message = match by {
        CancelledBy::Staff => "The appointment was cancelled.",
        CancelledBy::Guest => "The guest cancelled the appointment.",
    };
    let (reply, done) = tokio::sync::oneshot::channel();
    let end = super::live::Command::End {
        message: Some(message.to_owned()),
        reply,
    };
    if state.live.send_if_live(meeting_id, end).await {
        // The meeting task tells everyone and stores the end.
        let _ = done.await;
        return Ok(());
    }
    let id = meeting_id.to_owned();
    state
        .store
        .run(move |s| {
            if let Some(mut m) = s.meeting(&id)?
                && !m.is_ended()
            {
                m.ended_at_ms = Some(now_ms());
                s.update_meeting(&m)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// What `POST /appointments/{id}/remind` answers.
#[derive(Debug, Serialize)]
struct Reminded {
    /// The `appointment.reminder` event's id (its `Idempotency-Key`).
    event_id: String,
    /// How many webhook endpoints it goes to; 0 when none is configured.
    endpoints: u64,
}

/// Staff send the guest a reminder now (the queue's "Send reminder"): an
/// `appointment.reminder` webhook event with the join link, `data.reminder: "manual"`.
async fn remind_appointment(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Reminded>)> {
    visible_appointment(&state, &staff, &id).await?;
    let (event_id, endpoints) = state.store.run(move |s| s.send_reminder_now(&id, now_ms())).await?;
    tracing::info!(%event_id, endpoints, by = %staff.sub, "reminder sent by staff");
    Ok((StatusCode::ACCEPTED, Json(Reminded { event_id, endpoints })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reschedule {
    pub(crate) starts_at: String,
}

async fn reschedule_appointment(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Reschedule>,
) -> ApiResult<Json<AppointmentView>> {
    let a = visible_appointment(&state, &staff, &id).await?;
    let starts_at_ms = parse_instant("starts_at", &body.starts_at)?;
    let input = Input::Reschedule {
        starts_at_ms,
        duration_ms: a.machine.duration_ms,
    };
    let (a, _) = state
        .store
        .run(move |s| s.apply_to_appointment(&id, input, false, now_ms()))
        .await?;
    Ok(Json(appointment_view(&state, a, true, true).await?))
}

/// Which appointments a list or report covers (`department_id`, `staff` in the query): an
/// admin any; staff their own (the default) or a department they are in.
pub(crate) async fn scope(
    state: &AppState,
    staff: &StaffClaims,
    q: &[(String, String)],
) -> ApiResult<(Option<String>, Option<String>)> {
    let department = query_get(q, "department_id").map(str::to_owned);
    let mut only_staff = query_get(q, "staff").map(str::to_owned);
    if staff.role != StaffRole::Admin {
        if let Some(d) = &department {
            let d = department_of(state, &staff.org, d).await?;
            if !d.staff.contains(&staff.sub) {
                return Err(ApiError::new(ErrorCode::Forbidden, "you are not in this department"));
            }
        } else if only_staff.as_ref().is_some_and(|s| *s != staff.sub) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "staff see their own appointments and their departments'",
            ));
        } else {
            only_staff = Some(staff.sub.clone());
        }
    }
    Ok((department, only_staff))
}

/// Local midnight of `d` in `tz`, Unix ms.
fn local_midnight(d: jiff::civil::Date, tz: &jiff::tz::TimeZone) -> ApiResult<u64> {
    let ts = d
        .to_zoned_datetime(tz.clone())
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "date out of range"))?
        .timestamp()
        .as_millisecond();
    u64::try_from(ts).map_err(|_| ApiError::new(ErrorCode::BadRequest, "date out of range"))
}

/// Longest analytics range, in days.
const MAX_REPORT_DAYS: i64 = 400;

/// The analytics report as JSON.
#[derive(Debug, Serialize)]
struct Report {
    from: String,
    to: String,
    tz: String,
    group: crate::appointments::analytics::Group,
    department_id: Option<String>,
    staff: Option<String>,
    total: crate::appointments::analytics::Figures,
    periods: Vec<crate::appointments::analytics::Period>,
}

/// `GET /api/v1/analytics/appointments?from=YYYY-MM-DD&to=YYYY-MM-DD&tz=&group=day|week
/// &department_id=&staff=&format=csv`: counts, durations and lobby waits per local day or
/// ISO week over `[from, to]` (both included; default the last 30 days), JSON or CSV.
async fn analytics(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<axum::response::Response> {
    use crate::appointments::analytics::{Group, csv, report};
    use axum::response::IntoResponse;
    let q = query_pairs(&q);
    let tz_name = query_get(&q, "tz").unwrap_or("UTC").to_owned();
    let tz = jiff::tz::TimeZone::get(&tz_name)
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("{tz_name:?} is not an IANA time zone")))?;
    let group = match query_get(&q, "group").unwrap_or("day") {
        "day" => Group::Day,
        "week" => Group::Week,
        _ => return Err(ApiError::new(ErrorCode::BadRequest, "group must be day or week")),
    };
    let date = |key: &str| -> ApiResult<Option<jiff::civil::Date>> {
        query_get(&q, key)
            .map(|d| {
                d.parse()
                    .map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("{key} must be YYYY-MM-DD")))
            })
            .transpose()
    };
    let today = tz
        .to_datetime(Timestamp::from_millisecond(now_ms() as i64).unwrap_or_default())
        .date();
    let to = date("to")?.unwrap_or(today);
    let from = match date("from")? {
        Some(d) => d,
        None => to
            .checked_sub(jiff::Span::new().days(29))
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "date out of range"))?,
    };
    let days = (to - from).get_days();
    if !(0..MAX_REPORT_DAYS).contains(&i64::from(days)) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("from must be on or before to, at most {MAX_REPORT_DAYS} days apart"),
        ));
    }
    let from_ms = local_midnight(from, &tz)?;
    let to_ms = local_midnight(
        to.tomorrow()
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "date out of range"))?,
        &tz,
    )?;
    let (department, only_staff) = scope(&state, &staff, &q).await?;
    let org = staff.org.clone();
    let (d, s) = (department.clone(), only_staff.clone());
    let facts = state
        .store
        .run(move |st| st.analytics_facts(&org, d.as_deref(), s.as_deref(), from_ms, to_ms))
        .await?;
    let (periods, total) = report(&facts, &tz, group);
    let wants_csv = query_get(&q, "format") == Some("csv")
        || headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let name = format!("attachment; filename=\"appointments-{from}-{to}.csv\"");
        return Ok((
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (axum::http::header::CONTENT_DISPOSITION, name),
            ],
            csv(&periods, &total),
        )
            .into_response());
    }
    Ok(Json(Report {
        from: from.to_string(),
        to: to.to_string(),
        tz: tz_name,
        group,
        department_id: department,
        staff: only_staff,
        total,
        periods,
    })
    .into_response())
}

/// The local day `date` (`YYYY-MM-DD`; default today at `now`) in the IANA zone `tz`
/// (default UTC), as Unix ms `[from, to)`.
pub(crate) fn day_window(tz: Option<&str>, date: Option<&str>, now: u64) -> ApiResult<(u64, u64)> {
    let tz_name = tz.unwrap_or("UTC");
    let tz = jiff::tz::TimeZone::get(tz_name)
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("{tz_name:?} is not an IANA time zone")))?;
    let date: jiff::civil::Date = match date {
        Some(d) => d
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "date must be YYYY-MM-DD"))?,
        None => tz
            .to_datetime(Timestamp::from_millisecond(now as i64).unwrap_or_default())
            .date(),
    };
    let from_ms = local_midnight(date, &tz)?;
    let to_ms = local_midnight(
        date.tomorrow()
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "date out of range"))?,
        &tz,
    )?;
    Ok((from_ms, to_ms))
}

/// `GET /api/v1/appointments`: one day's appointments (the queue), by start.
#[derive(Debug, Serialize)]
struct DayList {
    /// The server's clock, so waiting times can be shown without clock skew.
    now_ms: u64,
    from_ms: u64,
    to_ms: u64,
    appointments: Vec<AppointmentView>,
}

async fn list_appointments(
    State(state): State<Arc<AppState>>,
    Staff(staff): Staff,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<DayList>> {
    let q = query_pairs(&q);
    let now = now_ms();
    let (from_ms, to_ms) = day_window(query_get(&q, "tz"), query_get(&q, "date"), now)?;
    let (department, only_staff) = scope(&state, &staff, &q).await?;
    let org = staff.org.clone();
    let list = state
        .store
        .run(move |s| s.appointments_between(&org, department.as_deref(), only_staff.as_deref(), from_ms, to_ms))
        .await?;
    let mut appointments = Vec::with_capacity(list.len());
    for a in list {
        appointments.push(appointment_view(&state, a, true, false).await?);
    }
    Ok(Json(DayList {
        now_ms: now,
        from_ms,
        to_ms,
        appointments,
    }))
}
