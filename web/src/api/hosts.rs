//! Hosts: get one (with its summary), add (→ the enrollment command), a
//! new enrollment token, revoke. The list with the dashboard summary is
//! the dashboard's (`GET /api/v1/hosts`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::SvcRole;
use rm_controlplane::api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ask, json_col};
use crate::AppState;
use crate::auth::{Principal, RequireAdmin, RequireOperator};
use crate::error::ApiError;

/// A host with its summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostView {
    pub id: String,
    pub name: String,
    /// The operator's labels, sorted.
    pub tags: Vec<String>,
    /// pending | online | offline | revoked
    pub status: String,
    pub restic_host: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub enrolled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub status_changed_at: Option<i64>,
    pub agent_version: Option<String>,
    pub restic_version: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub hostname: Option<String>,
    pub uptime_secs: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub vitals: serde_json::Value,
    pub config_version: i64,
    pub applied_config_version: i64,
    #[schema(value_type = Option<Object>)]
    pub summary: serde_json::Value,
}

pub fn view(
    h: rm_store::hosts::Host,
    summary: Option<&rm_store::hosts::Summary>,
    tags: Vec<String>,
) -> HostView {
    let summary = summary.map_or(serde_json::Value::Null, |s| {
        serde_json::json!({
            "last_job_id": s.last_job_id,
            "last_job_kind": s.last_job_kind,
            "last_job_status": s.last_job_status,
            "last_job_finished_at": s.last_job_finished_at,
            "last_backup_status": s.last_backup_status,
            "last_backup_at": s.last_backup_at,
            "last_backup_success_at": s.last_backup_success_at,
            "last_snapshot_id": s.last_snapshot_id,
            "running_jobs": s.running_jobs,
            "queued_jobs": s.queued_jobs,
            "failed_jobs_total": s.failed_jobs_total,
        })
    });
    HostView {
        vitals: json_col(h.vitals_json.as_deref()),
        id: h.id,
        name: h.name,
        tags,
        status: h.status,
        restic_host: h.restic_host,
        created_at: h.created_at,
        created_by: h.created_by,
        enrolled_at: h.enrolled_at,
        revoked_at: h.revoked_at,
        last_seen_at: h.last_seen_at,
        status_changed_at: h.status_changed_at,
        agent_version: h.agent_version,
        restic_version: h.restic_version,
        os: h.os,
        arch: h.arch,
        hostname: h.hostname,
        uptime_secs: h.uptime_secs,
        config_version: h.config_version,
        applied_config_version: h.applied_config_version,
        summary,
    }
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    let mut conn = state.store.read().await?;
    let host = rm_store::hosts::get(&mut conn, &id).await?;
    let summary = rm_store::hosts::summary(&mut conn, &id).await.ok();
    let tags = rm_store::tags::of_host(&mut conn, &id).await?;
    Ok(Json(view(host, summary.as_ref(), tags)))
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

pub(crate) async fn add(
    State(state): State<AppState>,
    p: RequireOperator,
    ApiJson(body): ApiJson<HostAddBody>,
) -> Result<(StatusCode, Json<EnrollmentView>), ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "a host needs a name"));
    }
    let e: cp::HostEnrollment = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::HOST_ADD,
        cp::HostAdd { name: body.name },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(e.into())))
}

pub(crate) async fn token(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<Json<EnrollmentView>, ApiError> {
    let e: cp::HostEnrollment = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::HOST_TOKEN,
        cp::HostRef { host_id: id },
    )
    .await?;
    Ok(Json(e.into()))
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
