//! The REST API: meetings and links for staff, link lookup and redemption for guests.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::link::{DEFAULT_INVITE_TTL_SECS, Link, LinkKind, check_redeemable, clean_display_name};
use gatehouse_signaling::meeting::{Meeting, MeetingPatch, MeetingSettings};
use gatehouse_signaling::protocol::ParticipantKind;
use gatehouse_signaling::room::{EventKind, ParticipationEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::AppState;
use super::auth::{Staff, can_manage};
use super::body::{JsonBody, OptionalJsonBody};
use super::error::ApiError;
use super::live::Command;
use crate::ids::{link_code, new_id, now_ms};

type ApiResult<T> = Result<T, ApiError>;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/meetings", post(create_meeting).get(list_meetings))
        .route("/api/v1/meetings/{id}", get(get_meeting).patch(update_meeting))
        .route("/api/v1/meetings/{id}/end", post(end_meeting))
        .route("/api/v1/meetings/{id}/links", post(create_link).get(list_links))
        .route("/api/v1/meetings/{id}/links/{link_id}", delete(revoke_link))
        .route("/api/v1/meetings/{id}/events", get(meeting_events))
        .route("/api/v1/meetings/{id}/live", get(meeting_live))
        .route("/api/v1/queue", get(queue))
        .route("/api/v1/meetings/{id}/lobby/admit-all", post(queue_admit_all))
        .route("/api/v1/meetings/{id}/lobby/{participant_id}/admit", post(queue_admit))
        .route("/api/v1/meetings/{id}/lobby/{participant_id}/deny", post(queue_deny))
        .route("/api/v1/links/{code}", get(link_info))
        .route("/api/v1/links/{code}/redeem", post(redeem_link))
}

/// Where a meeting stands, as the staff console shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum MeetingState {
    /// Nobody is in it.
    Idle,
    /// People are in the call or lobby.
    Live,
    Ended,
}

/// A meeting as the API returns it.
#[derive(Debug, Serialize)]
pub struct MeetingView {
    #[serde(flatten)]
    pub meeting: Meeting,
    pub state: MeetingState,
    /// The public link, when there is one that works.
    pub public_link: Option<LinkView>,
}

/// A link as the API returns it.
#[derive(Debug, Serialize)]
pub struct LinkView {
    #[serde(flatten)]
    pub link: Link,
    /// What a guest opens in the browser.
    pub url: String,
}

fn link_view(state: &AppState, link: Link) -> LinkView {
    LinkView {
        url: format!("{}/j/{}", state.config.public_url(), link.code),
        link,
    }
}

async fn meeting_view(state: &AppState, meeting: Meeting) -> ApiResult<MeetingView> {
    let public_link = if meeting.settings.public_link_enabled {
        let id = meeting.meeting_id.clone();
        state
            .store
            .run(move |s| s.public_link(&id))
            .await?
            .map(|l| link_view(state, l))
    } else {
        None
    };
    let state = if meeting.is_ended() {
        MeetingState::Ended
    } else if state.live.is_live(&meeting.meeting_id) {
        MeetingState::Live
    } else {
        MeetingState::Idle
    };
    Ok(MeetingView {
        meeting,
        state,
        public_link,
    })
}

/// Loads a meeting the caller may manage.
async fn managed_meeting(state: &AppState, staff: &Staff, id: &str) -> ApiResult<Meeting> {
    let id = id.to_owned();
    let meeting = state
        .store
        .run(move |s| s.meeting(&id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such meeting"))?;
    // Outsiders learn nothing, not even that the meeting exists.
    if staff.0.org != meeting.organization {
        return Err(ApiError::new(ErrorCode::NotFound, "no such meeting"));
    }
    can_manage(&staff.0, &meeting)?;
    Ok(meeting)
}

async fn create_meeting(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    JsonBody(settings): JsonBody<MeetingSettings>,
) -> ApiResult<(StatusCode, Json<MeetingView>)> {
    let settings = settings.validate()?;
    let now = now_ms();
    let meeting = Meeting {
        meeting_id: new_id("m").into(),
        organization: staff.0.org.clone(),
        organizer: staff.0.sub.clone(),
        settings,
        created_at_ms: now,
        ended_at_ms: None,
    };
    let public = Link {
        link_id: new_id("l"),
        meeting_id: meeting.meeting_id.clone(),
        code: link_code(),
        kind: LinkKind::Public,
        invitee: None,
        created_at_ms: now,
        expires_at_ms: None,
        revoked_at_ms: None,
        redemptions: 0,
    };
    {
        let (meeting, public) = (meeting.clone(), public);
        state
            .store
            .run(move |s| {
                s.insert_meeting(&meeting)?;
                s.insert_link(&public)
            })
            .await?;
    }
    tracing::info!(meeting_id = %meeting.meeting_id, organizer = %meeting.organizer, "meeting created");
    Ok((StatusCode::CREATED, Json(meeting_view(&state, meeting).await?)))
}

async fn list_meetings(State(state): State<Arc<AppState>>, staff: Staff) -> ApiResult<Json<Vec<MeetingView>>> {
    let org = staff.0.org.clone();
    let meetings = state.store.run(move |s| s.meetings(&org, 200)).await?;
    let mut views = Vec::new();
    for meeting in meetings.into_iter().filter(|m| can_manage(&staff.0, m).is_ok()) {
        views.push(meeting_view(&state, meeting).await?);
    }
    Ok(Json(views))
}

async fn get_meeting(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<MeetingView>> {
    let meeting = managed_meeting(&state, &staff, &id).await?;
    Ok(Json(meeting_view(&state, meeting).await?))
}

async fn update_meeting(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<MeetingPatch>,
) -> ApiResult<Json<MeetingView>> {
    let mut meeting = managed_meeting(&state, &staff, &id).await?;
    if meeting.is_ended() {
        return Err(ApiError::new(
            ErrorCode::MeetingEnded,
            "an ended meeting cannot be changed",
        ));
    }
    meeting.settings = patch.apply(meeting.settings)?;
    {
        let meeting = meeting.clone();
        state.store.run(move |s| s.update_meeting(&meeting)).await?;
    }
    state
        .live
        .send_if_live(&id, Command::MeetingUpdated(Box::new(meeting.clone())))
        .await;
    Ok(Json(meeting_view(&state, meeting).await?))
}

async fn end_meeting(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<MeetingView>> {
    let meeting = managed_meeting(&state, &staff, &id).await?;
    if !meeting.is_ended() {
        let (reply, done) = oneshot::channel();
        if state
            .live
            .send_if_live(&id, Command::End { message: None, reply })
            .await
        {
            // The meeting task tells everyone and stores the end.
            let _ = done.await;
        } else {
            let mut ended = meeting.clone();
            ended.ended_at_ms = Some(now_ms());
            state.store.run(move |s| s.update_meeting(&ended)).await?;
        }
    }
    let meeting = managed_meeting(&state, &staff, &id).await?;
    Ok(Json(meeting_view(&state, meeting).await?))
}

/// Body of `POST /meetings/{id}/links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewLink {
    pub(crate) kind: LinkKind,
    #[serde(default)]
    pub(crate) invitee: Option<String>,
    /// Defaults to 90 days for invitations; single-use links may also expire.
    #[serde(default)]
    pub(crate) expires_in_secs: Option<u64>,
}

async fn create_link(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewLink>,
) -> ApiResult<(StatusCode, Json<LinkView>)> {
    let meeting = managed_meeting(&state, &staff, &id).await?;
    if meeting.is_ended() {
        return Err(ApiError::new(ErrorCode::MeetingEnded, "this meeting has ended"));
    }
    if body.kind == LinkKind::Public {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "a meeting has one public link, made with the meeting",
        ));
    }
    let invitee = body.invitee.map(|n| clean_display_name(&n)).transpose()?;
    let now = now_ms();
    let ttl = match (body.kind, body.expires_in_secs) {
        (_, Some(0)) => return Err(ApiError::new(ErrorCode::BadRequest, "expires_in_secs must be positive")),
        (_, Some(secs)) => Some(secs.min(10 * 365 * 24 * 3600)),
        (LinkKind::Invite, None) => Some(DEFAULT_INVITE_TTL_SECS),
        _ => None,
    };
    let link = Link {
        link_id: new_id("l"),
        meeting_id: meeting.meeting_id,
        code: link_code(),
        kind: body.kind,
        invitee,
        created_at_ms: now,
        expires_at_ms: ttl.map(|s| now + s * 1000),
        revoked_at_ms: None,
        redemptions: 0,
    };
    {
        let link = link.clone();
        state.store.run(move |s| s.insert_link(&link)).await?;
    }
    Ok((StatusCode::CREATED, Json(link_view(&state, link))))
}

async fn list_links(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<LinkView>>> {
    managed_meeting(&state, &staff, &id).await?;
    let links = state.store.run(move |s| s.links_of(&id)).await?;
    Ok(Json(links.into_iter().map(|l| link_view(&state, l)).collect()))
}

async fn revoke_link(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path((id, link_id)): Path<(String, String)>,
) -> ApiResult<Json<LinkView>> {
    managed_meeting(&state, &staff, &id).await?;
    let link = state
        .store
        .run(move |s| {
            if s.link(&link_id)?.filter(|l| l.meeting_id == id).is_none() {
                return Ok(None);
            }
            s.revoke_link(&link_id, now_ms())?;
            s.link(&link_id)
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such link"))?;
    Ok(Json(link_view(&state, link)))
}

async fn meeting_events(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ParticipationEvent>>> {
    managed_meeting(&state, &staff, &id).await?;
    Ok(Json(state.store.run(move |s| s.events_of(&id)).await?))
}

/// Debug view: participants, lobby size and the SFU's tracks of a live meeting.
async fn meeting_live(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    managed_meeting(&state, &staff, &id).await?;
    let (reply, answer) = oneshot::channel();
    if !state.live.send_if_live(&id, Command::Snapshot { reply }).await {
        return Ok(Json(
            serde_json::json!({ "meeting_id": id, "participants": [], "lobby": 0, "media": null }),
        ));
    }
    Ok(Json(answer.await.unwrap_or_default()))
}

/// What a guest's join page learns about a link before redeeming it.
#[derive(Debug, Serialize)]
struct LinkInfo {
    meeting_title: String,
    kind: LinkKind,
    invitee: Option<String>,
    allow_anonymous: bool,
}

async fn redeemable_link(state: &AppState, code: &str) -> ApiResult<(Link, Meeting)> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "this link does not exist");
    if code.len() > 64 {
        return Err(not_found());
    }
    let code = code.to_owned();
    let found = state
        .store
        .run(move |s| {
            let Some(link) = s.link_by_code(&code)? else {
                return Ok(None);
            };
            Ok(s.meeting(&link.meeting_id)?.map(|meeting| (link, meeting)))
        })
        .await?;
    let (link, meeting) = found.ok_or_else(not_found)?;
    check_redeemable(&link, &meeting, now_ms())?;
    Ok((link, meeting))
}

async fn link_info(State(state): State<Arc<AppState>>, Path(code): Path<String>) -> ApiResult<Json<LinkInfo>> {
    let (link, meeting) = redeemable_link(&state, &code).await?;
    Ok(Json(LinkInfo {
        meeting_title: meeting.settings.title,
        kind: link.kind,
        invitee: link.invitee,
        allow_anonymous: meeting.settings.allow_anonymous,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redeem {
    pub(crate) display_name: String,
}

/// What redeeming a link gives a guest.
#[derive(Debug, Serialize)]
struct Redeemed {
    token: String,
    meeting_id: String,
    participant_id: String,
    display_name: String,
    expires_at_ms: u64,
}

async fn redeem_link(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<Redeem>,
) -> ApiResult<Json<Redeemed>> {
    let now = now_ms();
    if !state.allow_redemption(peer.ip(), now) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many attempts from your address; wait a minute",
        ));
    }
    let display_name = clean_display_name(&body.display_name)?;
    let (link, meeting) = redeemable_link(&state, &code).await?;
    // The store's conditional update is the real single-use guard.
    {
        let link_id = link.link_id.clone();
        state.store.run(move |s| s.count_redemption(&link_id)).await?;
    }
    let participant_id = new_id("p");
    let ttl = state.config.guest_token_ttl_secs();
    let token = state.keys.mint_guest(
        &participant_id,
        &meeting.meeting_id,
        &display_name,
        link.grants_invited(),
        now / 1000,
        ttl,
    )?;
    let event = ParticipationEvent {
        meeting_id: meeting.meeting_id.clone(),
        participant_id: participant_id.clone().into(),
        display_name: display_name.clone(),
        kind: ParticipantKind::Guest,
        at_ms: now,
        event: EventKind::LinkRedeemed {
            link_id: link.link_id.clone(),
        },
    };
    if let Err(e) = state.store.run(move |s| s.record(&event)).await {
        tracing::error!(error = %e, "could not record redemption");
    }
    tracing::info!(meeting_id = %meeting.meeting_id, %participant_id, link_id = %link.link_id, "link redeemed");
    Ok(Json(Redeemed {
        token,
        meeting_id: meeting.meeting_id.into(),
        participant_id,
        display_name,
        expires_at_ms: (now / 1000 + ttl) * 1000,
    }))
}

/// The staff queue: every live meeting this staff member may manage, with its lobby.
#[derive(Debug, Serialize)]
struct Queue {
    /// The server's clock, so waiting times can be shown without clock skew.
    now_ms: u64,
    meetings: Vec<gatehouse_signaling::protocol::QueuedMeeting>,
}

/// `GET /api/v1/queue`: who waits where, without joining any call (Teams' virtual-appointment queue).
async fn queue(State(state): State<Arc<AppState>>, staff: Staff) -> ApiResult<Json<Queue>> {
    Ok(Json(Queue {
        meetings: super::queue::live_queue(&state, &staff.0).await?,
        now_ms: now_ms(),
    }))
}

/// Sends a lobby action to a live meeting the caller may manage.
async fn lobby_action(
    state: &AppState,
    staff: &Staff,
    meeting_id: &str,
    action: gatehouse_signaling::room::LobbyAction,
) -> ApiResult<StatusCode> {
    managed_meeting(state, staff, meeting_id).await?;
    let (reply, answer) = oneshot::channel();
    let by = format!("staff:{}", staff.0.sub);
    let (by_there, action_there) = (by.clone(), action.clone());
    if !state
        .live
        .send_if_live(meeting_id, Command::LobbyAction { by, action, reply })
        .await
    {
        // Not live here: in a cluster it may run on another node, whose task acts (a node on
        // its own answers `not_found`: nobody waits).
        state.router.lobby_action(meeting_id, by_there, action_there).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    answer
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the meeting stopped"))??;
    Ok(StatusCode::NO_CONTENT)
}

async fn queue_admit(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path((id, participant_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    lobby_action(
        &state,
        &staff,
        &id,
        gatehouse_signaling::room::LobbyAction::Admit(participant_id.into()),
    )
    .await
}

async fn queue_admit_all(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    lobby_action(&state, &staff, &id, gatehouse_signaling::room::LobbyAction::AdmitAll).await
}

/// Body of a deny from the queue.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DenyBody {
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

async fn queue_deny(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path((id, participant_id)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<DenyBody>,
) -> ApiResult<StatusCode> {
    // The body is optional: no body means no reason.
    let reason = body.and_then(|b| b.reason);
    lobby_action(
        &state,
        &staff,
        &id,
        gatehouse_signaling::room::LobbyAction::Deny(participant_id.into(), reason),
    )
    .await
}
