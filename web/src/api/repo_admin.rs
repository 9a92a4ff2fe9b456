//! Changing and removing repositories: update (rename; new URL, password
//! or environment, verified through a host first), detach a host, delete
//! the record (never the data). One function per change
//! ([`update_repo`], [`detach_host`], [`delete_repo`]) that the JSON
//! handlers here and the repository page's forms (`ui::repos`) both call,
//! and one error enum, [`RepoAdminError`], that says what was refused and
//! which input it was about.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::{SvcRole, Verb};
use rm_cp_api as cp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiQuery};
use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::svc::SvcCallError;

/// Why a repository change was refused.
#[derive(Debug, Clone)]
pub enum RepoAdminError {
    /// An input is missing or malformed.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The new password does not open the repository.
    WrongPassword(String),
    /// Nothing (or another repository) answers at the new URL.
    BadUrl(String),
    /// Opening the repository with the new values failed otherwise.
    VerifyFailed(String),
    /// Another repository has that name.
    NameTaken(String),
    /// The host has schedules on the repository.
    HasSchedules(String),
    /// The host is the repository's maintenance host.
    MaintenanceHost(String),
    /// Hosts are still attached to the repository.
    HostsAttached(String),
    /// Jobs on the repository have not ended.
    JobsRunning(String),
    /// No such repository, or the host is not attached.
    NotFound(String),
    /// Anything else (the control plane is down, a host is offline, ...).
    Other(ApiError),
}

impl RepoAdminError {
    /// The input the refusal is about, for a form to mark.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::WrongPassword(_) => Some("password"),
            Self::BadUrl(_) => Some("url"),
            Self::NameTaken(_) => Some("name"),
            Self::HasSchedules(_) => Some("delete_schedules"),
            Self::MaintenanceHost(_) => Some("new_maintenance_host"),
            Self::HostsAttached(_) => Some("detach_hosts"),
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. } => message,
            Self::WrongPassword(m)
            | Self::BadUrl(m)
            | Self::VerifyFailed(m)
            | Self::NameTaken(m)
            | Self::HasSchedules(m)
            | Self::MaintenanceHost(m)
            | Self::HostsAttached(m)
            | Self::JobsRunning(m)
            | Self::NotFound(m) => m,
            Self::Other(e) => &e.message,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid",
            Self::WrongPassword(_) => "wrong_password",
            Self::BadUrl(_) => "bad_url",
            Self::VerifyFailed(_) => "verify_failed",
            Self::NameTaken(_) => "name_taken",
            Self::HasSchedules(_) => "has_schedules",
            Self::MaintenanceHost(_) => "maintenance_host",
            Self::HostsAttached(_) => "hosts_attached",
            Self::JobsRunning(_) => "jobs_running",
            Self::NotFound(_) => "not_found",
            Self::Other(e) => e.code,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RepoAdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<SvcCallError> for RepoAdminError {
    fn from(e: SvcCallError) -> Self {
        let SvcCallError::Refused(err) = &e else {
            return Self::Other(e.into());
        };
        let m = err.message.clone();
        match err.code.as_str() {
            "wrong_password" => Self::WrongPassword(m),
            "repo_missing" | "unreachable" | "different_repository" => Self::BadUrl(m),
            "verify_failed" => Self::VerifyFailed(m),
            "name_taken" => Self::NameTaken(m),
            "has_schedules" => Self::HasSchedules(m),
            "maintenance_host" => Self::MaintenanceHost(m),
            "hosts_attached" => Self::HostsAttached(m),
            "jobs_running" => Self::JobsRunning(m),
            "not_found" => Self::NotFound(m),
            _ => Self::Other(e.into()),
        }
    }
}

impl From<RepoAdminError> for ApiError {
    fn from(e: RepoAdminError) -> Self {
        let status = match &e {
            RepoAdminError::Invalid { .. } => StatusCode::BAD_REQUEST,
            RepoAdminError::NotFound(_) => StatusCode::NOT_FOUND,
            RepoAdminError::Other(inner) => return inner.clone(),
            _ => StatusCode::CONFLICT,
        };
        ApiError {
            field: e.field().map(str::to_owned),
            ..ApiError::new(status, e.code(), e.message())
        }
    }
}

/// Verifying runs restic on a host: give it the host query's time and more.
const VERIFY_WAIT: Duration = Duration::from_secs(90);

async fn call<B: Serialize, R: DeserializeOwned>(
    state: &AppState,
    p: &Principal,
    verb: Verb,
    body: B,
    wait: Duration,
) -> Result<R, RepoAdminError> {
    Ok(crate::svc::call(
        &state.bus,
        SvcRole::Controlplane,
        verb,
        p.actor(),
        body,
        wait.max(state.svc_timeout),
    )
    .await?)
}

/// New values for a repository; absent ones stay as they are.
#[derive(Clone, Default, Deserialize, ToSchema)]
pub struct RepoPatchBody {
    pub name: Option<String>,
    /// A new `RESTIC_REPOSITORY` (e.g. the server moved).
    pub url: Option<String>,
    /// The repository's current password, when it was changed (restic
    /// `key passwd` run elsewhere); restic-manager never changes it itself.
    pub password: Option<String>,
    /// Replaces the extra environment (e.g. `AWS_ACCESS_KEY_ID`).
    pub env: Option<BTreeMap<String, String>>,
    /// The host that checks new credentials open the repository before
    /// anything is saved; default: the maintenance host, else an attached
    /// host with full access, else any attached host.
    pub verify_on_host: Option<String>,
}

impl std::fmt::Debug for RepoPatchBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoPatchBody")
            .field("name", &self.name)
            .field("verify_on_host", &self.verify_on_host)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepoUpdatedView {
    /// The host the new credentials were verified on.
    pub verified_on: Option<String>,
    /// Hosts whose credential followed the change (their agents get it).
    pub hosts_updated: Vec<String>,
    /// Hosts with credentials of their own (another URL or password),
    /// left as they were: re-attach them if they must change too.
    pub hosts_kept: Vec<String>,
}

/// Renames a repository and/or changes its credentials.
pub(crate) async fn update_repo(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    body: RepoPatchBody,
) -> Result<RepoUpdatedView, RepoAdminError> {
    if body.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(RepoAdminError::invalid("name", "a repository needs a name"));
    }
    if body.url.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(RepoAdminError::invalid(
            "url",
            "give the new repository URL, or leave it out to keep the current one",
        ));
    }
    if body.password.as_deref().is_some_and(str::is_empty) {
        return Err(RepoAdminError::invalid(
            "password",
            "give the new password, or leave it out to keep the current one",
        ));
    }
    let changes_secrets = body.url.is_some() || body.password.is_some() || body.env.is_some();
    if body.name.is_none() && !changes_secrets {
        return Err(RepoAdminError::invalid(
            "name",
            "nothing to change: give a new name, URL, password or environment",
        ));
    }
    let secrets = if changes_secrets {
        let key: cp::PubKey = call(
            state,
            p,
            cp::PUBKEY,
            serde_json::json!({}),
            state.svc_timeout,
        )
        .await?;
        let patch = cp::RepoSecretsPatch {
            url: body.url,
            password: body.password,
            env: body.env,
        };
        Some(
            cp::SealedSecretsPatch::seal(&patch, &key.xkey).map_err(|e| {
                RepoAdminError::Other(ApiError::internal(format!("sealing the credentials: {e}")))
            })?,
        )
    } else {
        None
    };
    let done: cp::RepoUpdated = call(
        state,
        p,
        cp::REPO_UPDATE,
        cp::RepoUpdate {
            repo_id,
            name: body.name,
            secrets,
            verify_on_host: body.verify_on_host.filter(|h| !h.trim().is_empty()),
        },
        VERIFY_WAIT,
    )
    .await?;
    Ok(RepoUpdatedView {
        verified_on: done.verified_on,
        hosts_updated: done.hosts_updated,
        hosts_kept: done.hosts_kept,
    })
}

/// `PATCH /api/v1/repos/{id}`.
pub(crate) async fn patch(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RepoPatchBody>,
) -> Result<Json<RepoUpdatedView>, ApiError> {
    Ok(Json(update_repo(&state, &p, id, body).await?))
}

/// How to detach a host.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DetachQuery {
    /// Delete the host's schedules on this repository with it (else a
    /// host with schedules there is refused, and they are listed).
    #[serde(default)]
    pub delete_schedules: bool,
    /// For the maintenance host: the host (with full access) that takes
    /// over forget and prune ...
    pub new_maintenance_host: Option<String>,
    /// ... or confirm the repository keeps none.
    #[serde(default)]
    pub no_maintenance_host: bool,
}

/// Removes `host_id`'s credential for the repository.
pub(crate) async fn detach_host(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    host_id: String,
    q: DetachQuery,
) -> Result<(), RepoAdminError> {
    let _: cp::Done = call(
        state,
        p,
        cp::REPO_DETACH,
        cp::RepoDetach {
            repo_id,
            host_id,
            delete_schedules: q.delete_schedules,
            new_maintenance_host: q.new_maintenance_host.filter(|h| !h.trim().is_empty()),
            no_maintenance_host: q.no_maintenance_host,
        },
        state.svc_timeout,
    )
    .await?;
    Ok(())
}

/// `DELETE /api/v1/repos/{id}/hosts/{host}`.
pub(crate) async fn detach(
    State(state): State<AppState>,
    p: RequireOperator,
    Path((id, host)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<DetachQuery>,
) -> Result<StatusCode, ApiError> {
    detach_host(&state, &p, id, host, q).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DeleteQuery {
    /// Detach every attached host (and delete their schedules on it) too;
    /// else a repository with hosts attached is refused, naming them.
    #[serde(default)]
    pub detach_hosts: bool,
}

/// Deletes the repository's record; the data in it is not touched.
pub(crate) async fn delete_repo(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    detach_hosts: bool,
) -> Result<(), RepoAdminError> {
    let _: cp::Done = call(
        state,
        p,
        cp::REPO_DELETE,
        cp::RepoDelete {
            repo_id,
            detach_hosts,
        },
        state.svc_timeout,
    )
    .await?;
    Ok(())
}

/// `DELETE /api/v1/repos/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    delete_repo(&state, &p, id, q.detach_hosts).await?;
    Ok(StatusCode::NO_CONTENT)
}
