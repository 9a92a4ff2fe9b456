//! Repositories: list, get (with the hosts attached), add, test a host's
//! connection, attach a host (append-only or full access), set the
//! maintenance host, health, size over time, locks and a safe unlock.
//! Secrets arrive over HTTPS and are sealed to the control plane's xkey
//! before they touch the bus; no answer ever contains them.
//!
//! Each change is one function here (`add_repo`, `test_connection`,
//! `attach_host`, `set_maintenance`, `unlock`, `list_locks`) that both the
//! JSON handler and the repository pages' forms (`ui::repos`) call.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::jobs::JobCreatedView;
use super::{ApiJson, ApiQuery, Page, PageQuery, ask, cursor_of_text, page_by};
use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::views::repo::{LocksView, SizeView};

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
    /// Hosts attached, and how many of them append-only.
    pub host_count: i64,
    pub append_only_host_count: i64,
    /// Hosts attached and their access (`append_only` | `full`); in `get` only.
    pub hosts: Option<Vec<AttachedView>>,
    /// When the periodic full refresh (snapshot list, sizes, locks) is
    /// next due (ms): each repository at its own time in the control
    /// plane's period; in `get` only, once a control plane said its period.
    pub next_refresh_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachedView {
    pub host_id: String,
    pub access: String,
    pub created_at: i64,
}

/// `?q=&cursor=&limit=` of the list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RepoQuery {
    /// Text in the name or URL (case-insensitive).
    pub q: String,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 50).
    pub limit: Option<i64>,
}

/// A page of repositories by name (`?q=` filters by name or URL), each
/// with its hosts counted; `next` walks on by name.
pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<RepoQuery>,
) -> Result<Json<Page<RepoView>>, ApiError> {
    let pq = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let after = pq.cursor_text()?;
    if q.q.len() > 200 {
        return Err(ApiError::invalid(
            "q",
            "the filter text is longer than 200 characters",
        ));
    }
    let mut conn = state.store.read().await?;
    let rows = rm_store::repos::after(&mut conn, &q.q, after.as_deref(), limit + 1).await?;
    Ok(Json(page_by(
        rows,
        limit,
        |r| cursor_of_text(&r.name),
        RepoView::from,
    )))
}

impl From<rm_store::repos::Listed> for RepoView {
    fn from(r: rm_store::repos::Listed) -> Self {
        Self {
            id: r.id,
            name: r.name,
            url: r.url_display,
            maintenance_host_id: r.maintenance_host_id,
            restic_repo_id: r.restic_repo_id,
            status: r.status,
            status_detail: r.status_detail,
            created_at: r.created_at,
            created_by: r.created_by,
            host_count: r.hosts,
            append_only_host_count: r.append_only_hosts,
            hosts: None,
            next_refresh_at: None,
        }
    }
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<RepoView>, ApiError> {
    let mut conn = state.store.read().await?;
    let mut view = RepoView::from(rm_store::repos::listed_one(&mut conn, &id).await?);
    view.hosts = Some(
        rm_store::repos::hosts_of_repo(&mut conn, &id)
            .await?
            .into_iter()
            .map(|h| AttachedView {
                host_id: h.host_id,
                access: h.access,
                created_at: h.created_at,
            })
            .collect(),
    );
    view.next_refresh_at = rm_store::refresh::next(&mut conn, &id)
        .await?
        .map(|(at, _)| at);
    Ok(Json(view))
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
    /// Or: check on this host that an existing repository opens with these
    /// credentials before saving it.
    #[serde(default)]
    pub verify_on_host: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepoAddedView {
    pub repo_id: String,
}

/// Adds a repository (initialising or verifying it through a host first).
pub(crate) async fn add_repo(
    state: &AppState,
    p: &Principal,
    body: RepoAddBody,
) -> Result<RepoAddedView, ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "a repository needs a name"));
    }
    let secrets = seal(state, p, "secrets", body.secrets).await?;
    let added: cp::RepoAdded = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::REPO_ADD,
        cp::RepoAdd {
            name: body.name,
            secrets,
            init_on_host: body.init_on_host,
            verify_on_host: body.verify_on_host,
        },
    )
    .await?;
    Ok(RepoAddedView {
        repo_id: added.repo_id,
    })
}

pub(crate) async fn add(
    State(state): State<AppState>,
    p: RequireOperator,
    ApiJson(body): ApiJson<RepoAddBody>,
) -> Result<(StatusCode, Json<RepoAddedView>), ApiError> {
    let added = add_repo(&state, &p, body).await?;
    Ok((StatusCode::CREATED, Json(added)))
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

/// Tests `host_id`'s connection to the repository with its credential.
pub(crate) async fn test_connection(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    host_id: String,
) -> Result<RepoTestView, ApiError> {
    if host_id.trim().is_empty() {
        return Err(ApiError::invalid("host_id", "choose the host to test from"));
    }
    let r: cp::RepoTestResult = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::REPO_TEST,
        cp::RepoTest { repo_id, host_id },
    )
    .await?;
    Ok(RepoTestView {
        ok: r.ok,
        restic_repo_id: r.restic_repo_id,
        error: r.error,
        error_kind: r
            .error_kind
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
    })
}

pub(crate) async fn test(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostBody>,
) -> Result<Json<RepoTestView>, ApiError> {
    Ok(Json(test_connection(&state, &p, id, body.host_id).await?))
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

/// Attaches a host (or replaces its credential).
pub(crate) async fn attach_host(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    body: AttachBody,
) -> Result<(), ApiError> {
    if body.host_id.trim().is_empty() {
        return Err(ApiError::invalid("host_id", "choose the host to attach"));
    }
    let secrets = match body.secrets {
        Some(s) => Some(seal(state, p, "secrets", s).await?),
        None => None,
    };
    let _: cp::Done = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::REPO_ATTACH,
        cp::RepoAttach {
            repo_id,
            host_id: body.host_id,
            access: body.access,
            secrets,
        },
    )
    .await?;
    Ok(())
}

pub(crate) async fn attach(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AttachBody>,
) -> Result<StatusCode, ApiError> {
    attach_host(&state, &p, id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MaintenanceBody {
    /// The host that runs forget/prune with full credentials; `null` clears it.
    pub host_id: Option<String>,
}

/// Sets (or clears) the maintenance host.
pub(crate) async fn set_maintenance(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    host_id: Option<String>,
) -> Result<(), ApiError> {
    let _: cp::Done = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::REPO_MAINTENANCE,
        cp::RepoMaintenance { repo_id, host_id },
    )
    .await?;
    Ok(())
}

pub(crate) async fn maintenance(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MaintenanceBody>,
) -> Result<StatusCode, ApiError> {
    set_maintenance(&state, &p, id, body.host_id).await?;
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

/// `GET /api/v1/repos/{id}/history`: size over time, oldest first.
pub(crate) async fn history(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<SizeView>>, ApiError> {
    let mut conn = state.store.read().await?;
    rm_store::repos::get(&mut conn, &id).await?;
    Ok(Json(crate::views::repo::history(&mut conn, &id).await?))
}

/// `GET /api/v1/repos/{id}/locks`: the locks the newest lock listing found.
pub(crate) async fn locks(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<LocksView>, ApiError> {
    let mut conn = state.store.read().await?;
    rm_store::repos::get(&mut conn, &id).await?;
    Ok(Json(
        crate::views::repo::locks(&mut conn, &id, state.now()).await?,
    ))
}

/// A repository-wide job (`unlock`, `locks`) on one of its hosts.
async fn repo_job(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    host_id: String,
    params: rm_bus::msg::JobParams,
) -> Result<JobCreatedView, ApiError> {
    if host_id.trim().is_empty() {
        return Err(ApiError::invalid(
            "host_id",
            "choose the host that runs it (one attached to this repository)",
        ));
    }
    let created: cp::JobCreated = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::JOB_CREATE,
        cp::JobCreate {
            host_id,
            repo_id,
            params,
            timeout_secs: None,
            target_host_id: None,
        },
    )
    .await?;
    Ok(JobCreatedView {
        job_id: created.job_id,
        exec_host_id: created.exec_host_id,
    })
}

/// A safe unlock: `restic unlock` removes stale locks only; never
/// `--remove-all`, so locks of running restic processes stay.
pub(crate) async fn unlock_repo(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    host_id: String,
) -> Result<JobCreatedView, ApiError> {
    repo_job(
        state,
        p,
        repo_id,
        host_id,
        rm_bus::msg::JobParams::Unlock { remove_all: false },
    )
    .await
}

/// Lists the repository's locks now (a `locks` job).
pub(crate) async fn list_locks(
    state: &AppState,
    p: &Principal,
    repo_id: String,
    host_id: String,
) -> Result<JobCreatedView, ApiError> {
    repo_job(state, p, repo_id, host_id, rm_bus::msg::JobParams::Locks {}).await
}

/// `POST /api/v1/repos/{id}/unlock`.
pub(crate) async fn unlock(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostBody>,
) -> Result<(StatusCode, Json<JobCreatedView>), ApiError> {
    let created = unlock_repo(&state, &p, id, body.host_id).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A refresh of a repository's state that was asked for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefreshView {
    /// The host that runs it (the maintenance host if online).
    pub host_id: String,
    /// The jobs queued (snapshots, both stats modes, locks); empty when a
    /// refresh was already waiting.
    pub job_ids: Vec<String>,
}

/// Refreshes the repository's snapshot list, sizes and locks now.
pub(crate) async fn refresh_repo(
    state: &AppState,
    p: &Principal,
    repo_id: String,
) -> Result<RefreshView, ApiError> {
    let r: cp::RepoRefreshed = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::REPO_REFRESH,
        cp::RepoRefresh { repo_id },
    )
    .await?;
    Ok(RefreshView {
        host_id: r.host_id,
        job_ids: r.job_ids,
    })
}

/// `POST /api/v1/repos/{id}/refresh`.
pub(crate) async fn refresh(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RefreshView>), ApiError> {
    let r = refresh_repo(&state, &p, id).await?;
    Ok((StatusCode::ACCEPTED, Json(r)))
}

/// `POST /api/v1/repos/{id}/locks`.
pub(crate) async fn refresh_locks(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostBody>,
) -> Result<(StatusCode, Json<JobCreatedView>), ApiError> {
    let created = list_locks(&state, &p, id, body.host_id).await?;
    Ok((StatusCode::CREATED, Json(created)))
}
