//! Repositories: list, get (with the hosts attached), add, test a host's
//! connection, attach a host (append-only or full access), set the
//! maintenance host. Secrets arrive over HTTPS and are sealed to the
//! control plane's xkey before they touch the bus; no answer ever
//! contains them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::SvcRole;
use rm_controlplane::api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ask};
use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepoView {
    pub id: String,
    pub name: String,
    /// The repository URL with credentials removed.
    pub url: String,
    pub maintenance_host_id: Option<String>,
    pub restic_repo_id: Option<String>,
    pub status: String,
    pub status_detail: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    /// Hosts attached and their access (`append_only` | `full`); in `get` only.
    pub hosts: Option<Vec<AttachedView>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachedView {
    pub host_id: String,
    pub access: String,
    pub created_at: i64,
}

fn view(r: rm_store::repos::Repo, hosts: Option<Vec<AttachedView>>) -> RepoView {
    RepoView {
        id: r.id,
        name: r.name,
        url: r.url_display,
        maintenance_host_id: r.maintenance_host_id,
        restic_repo_id: r.restic_repo_id,
        status: r.status,
        status_detail: r.status_detail,
        created_at: r.created_at,
        created_by: r.created_by,
        hosts,
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
) -> Result<Json<Vec<RepoView>>, ApiError> {
    let mut conn = state.store.read().await?;
    let rows = rm_store::repos::list(&mut conn).await?;
    Ok(Json(rows.into_iter().map(|r| view(r, None)).collect()))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<RepoView>, ApiError> {
    let mut conn = state.store.read().await?;
    let repo = rm_store::repos::get(&mut conn, &id).await?;
    let hosts = rm_store::repos::hosts_of_repo(&mut conn, &id)
        .await?
        .into_iter()
        .map(|h| AttachedView {
            host_id: h.host_id,
            access: h.access,
            created_at: h.created_at,
        })
        .collect();
    Ok(Json(view(repo, Some(hosts))))
}

/// Repository credentials in the clear (over HTTPS only).
#[derive(Clone, Deserialize, ToSchema)]
pub struct SecretsBody {
    /// `RESTIC_REPOSITORY`, e.g. `rest:https://user:pass@host/repo`.
    pub url: String,
    pub password: String,
    /// Extra environment (e.g. `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretsBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsBody(<redacted>)")
    }
}

/// Seals credentials to the control plane's public xkey.
async fn seal(
    state: &AppState,
    p: &Principal,
    field: &str,
    s: SecretsBody,
) -> Result<cp::SealedSecrets, ApiError> {
    if s.url.trim().is_empty() {
        return Err(ApiError::invalid(
            &format!("{field}.url"),
            "give the repository URL",
        ));
    }
    if s.password.is_empty() {
        return Err(ApiError::invalid(
            &format!("{field}.password"),
            "give the repository password",
        ));
    }
    let key: cp::PubKey = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::PUBKEY,
        serde_json::json!({}),
    )
    .await?;
    let input = cp::RepoSecretsInput {
        url: s.url,
        password: s.password,
        env: s.env,
    };
    cp::SealedSecrets::seal(&input, &key.xkey)
        .map_err(|e| ApiError::internal(format!("sealing the credentials: {e}")))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RepoAddBody {
    pub name: String,
    /// Full-access credentials (used by the maintenance host).
    pub secrets: SecretsBody,
    /// Run `restic init` on this host (a new repository).
    pub init_on_host: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepoAddedView {
    pub repo_id: String,
}

pub(crate) async fn add(
    State(state): State<AppState>,
    p: RequireOperator,
    ApiJson(body): ApiJson<RepoAddBody>,
) -> Result<(StatusCode, Json<RepoAddedView>), ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "a repository needs a name"));
    }
    let secrets = seal(&state, &p, "secrets", body.secrets).await?;
    let added: cp::RepoAdded = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::REPO_ADD,
        cp::RepoAdd {
            name: body.name,
            secrets,
            init_on_host: body.init_on_host,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RepoAddedView {
            repo_id: added.repo_id,
        }),
    ))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HostBody {
    pub host_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepoTestView {
    pub ok: bool,
    pub restic_repo_id: Option<String>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

pub(crate) async fn test(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostBody>,
) -> Result<Json<RepoTestView>, ApiError> {
    let r: cp::RepoTestResult = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::REPO_TEST,
        cp::RepoTest {
            repo_id: id,
            host_id: body.host_id,
        },
    )
    .await?;
    Ok(Json(RepoTestView {
        ok: r.ok,
        restic_repo_id: r.restic_repo_id,
        error: r.error,
        error_kind: r
            .error_kind
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
    }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AttachBody {
    pub host_id: String,
    /// `append_only` (with the host's own credentials) or `full`.
    #[schema(value_type = String)]
    pub access: cp::AccessInput,
    /// The host's own credentials; absent: the repository's (full only).
    pub secrets: Option<SecretsBody>,
}

pub(crate) async fn attach(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AttachBody>,
) -> Result<StatusCode, ApiError> {
    let secrets = match body.secrets {
        Some(s) => Some(seal(&state, &p, "secrets", s).await?),
        None => None,
    };
    let _: cp::Done = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::REPO_ATTACH,
        cp::RepoAttach {
            repo_id: id,
            host_id: body.host_id,
            access: body.access,
            secrets,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MaintenanceBody {
    /// The host that runs forget/prune with full credentials; `null` clears it.
    pub host_id: Option<String>,
}

pub(crate) async fn maintenance(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MaintenanceBody>,
) -> Result<StatusCode, ApiError> {
    let _: cp::Done = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::REPO_MAINTENANCE,
        cp::RepoMaintenance {
            repo_id: id,
            host_id: body.host_id,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A repository's latest health record (from the periodic refresh and the
/// last `check`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthView {
    pub repo_id: String,
    /// When it was recorded.
    pub ts: i64,
    pub source_job_id: Option<String>,
    pub total_size: Option<i64>,
    pub raw_size: Option<i64>,
    pub uncompressed_size: Option<i64>,
    pub dedup_ratio: Option<f64>,
    pub compression_ratio: Option<f64>,
    pub snapshot_count: Option<i64>,
    pub lock_count: Option<i64>,
    pub check_ok: Option<bool>,
    pub check_at: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub detail: serde_json::Value,
}

pub(crate) async fn health(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<HealthView>, ApiError> {
    let mut conn = state.store.read().await?;
    rm_store::repos::get(&mut conn, &id).await?;
    let h = rm_store::health::latest(&mut conn, &id).await?;
    Ok(Json(HealthView {
        detail: super::json_col(h.detail_json.as_deref()),
        repo_id: h.repo_id,
        ts: h.ts,
        source_job_id: h.source_job_id,
        total_size: h.total_size,
        raw_size: h.raw_size,
        uncompressed_size: h.uncompressed_size,
        dedup_ratio: h.dedup_ratio,
        compression_ratio: h.compression_ratio,
        snapshot_count: h.snapshot_count,
        lock_count: h.lock_count,
        check_ok: h.check_ok,
        check_at: h.check_at,
    }))
}
