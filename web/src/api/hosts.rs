//! Hosts: get one (the host page's view), add (→ the enrollment command),
//! a new enrollment token, revoke. The list with the dashboard summary is
//! the dashboard's (`GET /api/v1/hosts`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ask};
use crate::AppState;
use crate::auth::{Principal, RequireAdmin, RequireOperator};
use crate::error::ApiError;
use crate::views::host::HostView;

/// `GET /api/v1/hosts/{id}`: the host page's view ([`crate::views::host`]),
/// computed by the one function the page uses.
pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(Json(
        crate::views::host::load(&mut conn, &id, state.now()).await?,
    ))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HostAddBody {
    /// A name for the host (shown in the UI).
    pub name: String,
}

/// What an endpoint needs to enroll: run `command` there.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollmentView {
    pub host_id: String,
    /// The one-time token (also inside `command`).
    pub token: String,
    pub expires_at: i64,
    pub command: String,
}

impl From<cp::HostEnrollment> for EnrollmentView {
    fn from(e: cp::HostEnrollment) -> Self {
        Self {
            host_id: e.host_id,
            token: e.token,
            expires_at: e.expires_at,
            command: e.command,
        }
    }
}

/// Opens the control plane's reply to host-add / host-token: the token
/// travels sealed to the key this request made, never in clear on the bus.
pub(crate) fn open_enrollment(
    e: &cp::SealedEnrollment,
    key: &cp::XKey,
) -> Result<cp::HostEnrollment, ApiError> {
    e.open(key)
        .map_err(|err| ApiError::internal(format!("the enrollment reply did not open: {err}")))
}

pub(crate) async fn add(
    State(state): State<AppState>,
    p: RequireOperator,
    ApiJson(body): ApiJson<HostAddBody>,
) -> Result<(StatusCode, Json<EnrollmentView>), ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "a host needs a name"));
    }
    let (req, key) = cp::HostAdd::new(body.name);
    let e: cp::SealedEnrollment = ask(&state, &p, SvcRole::Controlplane, cp::HOST_ADD, req).await?;
    Ok((StatusCode::CREATED, Json(open_enrollment(&e, &key)?.into())))
}

pub(crate) async fn token(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<Json<EnrollmentView>, ApiError> {
    let (req, key) = cp::HostTokenRequest::new(id);
    let e: cp::SealedEnrollment =
        ask(&state, &p, SvcRole::Controlplane, cp::HOST_TOKEN, req).await?;
    Ok(Json(open_enrollment(&e, &key)?.into()))
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _: cp::Done = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::HOST_REVOKE,
        cp::HostRef { host_id: id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A host's tags: the list replaces the old one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HostTagsBody {
    /// At most 16 tags of at most 40 characters, no commas.
    pub tags: Vec<String>,
}

/// The tags as stored (trimmed, deduplicated, sorted).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostTagsView {
    pub tags: Vec<String>,
}

/// Asks the control plane to replace a host's tags; a bad tag is a
/// `tags` field error before anything is sent. Shared by the API and the
/// host page's form.
pub(crate) async fn save_tags(
    state: &AppState,
    p: &Principal,
    host_id: String,
    tags: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    let tags = rm_store::tags::parse(&tags).map_err(|m| ApiError::invalid("tags", m))?;
    let saved: cp::HostTagsSaved = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::HOST_TAGS,
        cp::HostTags { host_id, tags },
    )
    .await?;
    Ok(saved.tags)
}

pub(crate) async fn set_tags(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostTagsBody>,
) -> Result<Json<HostTagsView>, ApiError> {
    let tags = save_tags(&state, &p, id, body.tags).await?;
    Ok(Json(HostTagsView { tags }))
}
