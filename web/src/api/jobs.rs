//! Jobs: create any kind (`job-create` on the control plane), get, list
//! with filters and cursor pagination, cancel, log lines. A job and a
//! list row are the pages' views (`crate::views::job`), computed once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiQuery, Page, PageQuery, ask, page};
use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::views::job::{JobRow, JobView, Names};

/// `POST /api/v1/jobs`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct JobCreateBody {
    /// Whose job it is (its snapshots, its `--host`).
    pub host_id: String,
    pub repo_id: String,
    /// `{"kind": "backup", "paths": [...]}`, `{"kind": "restore", ...}`, ...
    #[schema(value_type = Object)]
    pub params: rm_bus::msg::JobParams,
    pub timeout_secs: Option<u64>,
    /// Restore onto another host.
    pub target_host_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobCreatedView {
    pub job_id: String,
    pub exec_host_id: String,
}

fn has_dotdot(path: &str) -> bool {
    path.split(['/', '\\']).any(|seg| seg == "..")
}

/// What the web can refuse before asking the owner.
fn check_params(params: &rm_bus::msg::JobParams) -> Result<(), ApiError> {
    use rm_bus::msg::{JobParams, RestoreTarget};
    match params {
        JobParams::Unknown => Err(ApiError::invalid("params.kind", "unknown job kind")),
        JobParams::Restore {
            include, target, ..
        } => {
            if include.iter().any(|p| has_dotdot(p)) {
                return Err(ApiError::invalid(
                    "params.include",
                    "a path may not contain `..`",
                ));
            }
            if let RestoreTarget::Path { path } = target
                && (has_dotdot(path) || path.is_empty())
            {
                return Err(ApiError::invalid(
                    "params.target.path",
                    "give an absolute target path without `..`",
                ));
            }
            Ok(())
        }
        JobParams::Backup { paths, .. } if paths.is_empty() => Err(ApiError::invalid(
            "params.paths",
            "a backup needs at least one path",
        )),
        _ => Ok(()),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireOperator,
    ApiJson(body): ApiJson<JobCreateBody>,
) -> Result<(StatusCode, Json<JobCreatedView>), ApiError> {
    check_params(&body.params)?;
    let created: cp::JobCreated = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::JOB_CREATE,
        cp::JobCreate {
            host_id: body.host_id,
            repo_id: body.repo_id,
            params: body.params,
            timeout_secs: body.timeout_secs,
            target_host_id: body.target_host_id,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(JobCreatedView {
            job_id: created.job_id,
            exec_host_id: created.exec_host_id,
        }),
    ))
}

/// `GET /api/v1/jobs/{id}`: the job page's view, from the one function
/// the page uses.
pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(Json(
        crate::views::job::load(&mut conn, &id, state.now()).await?,
    ))
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobListQuery {
    pub host: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub repo: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> Result<Json<Page<JobRow>>, ApiError> {
    let pq = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let cursor = pq.cursor()?;
    if let Some(s) = &q.status
        && rm_store::jobs::JobStatus::parse(s).is_err()
    {
        return Err(ApiError::invalid(
            "status",
            format!("unknown job status {s:?}"),
        ));
    }
    let filter = rm_store::listing::JobFilter {
        host_id: q.host.as_deref(),
        kind: q.kind.as_deref(),
        status: q.status.as_deref(),
        repo_id: q.repo.as_deref(),
        since: None,
        before: cursor.as_ref().map(|(t, id)| (*t, id.as_str())),
    };
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::jobs(&mut conn, &filter, limit + 1).await?;
    let names = Names::for_jobs(&mut conn, &rows).await?;
    Ok(Json(page(
        rows,
        limit,
        |j| (j.created_at, j.id.clone()),
        |j| JobRow::new(&j, &names),
    )))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobStateView {
    pub job_id: String,
    pub status: String,
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<Json<JobStateView>, ApiError> {
    let s: cp::JobState = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::JOB_CANCEL,
        cp::JobRef { job_id: id },
    )
    .await?;
    Ok(Json(JobStateView {
        job_id: s.job_id,
        status: s.status,
    }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLineView {
    pub seq: i64,
    pub ts: i64,
    /// stdout | stderr
    pub stream: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogPage {
    pub lines: Vec<LogLineView>,
    /// Pass as `after` to continue.
    pub last_seq: i64,
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogQuery {
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

pub(crate) async fn logs(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let limit = PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let after = q.after.unwrap_or(0);
    let mut conn = state.store.read().await?;
    let job = rm_store::jobs::get(&mut conn, &id).await?;
    let rows = rm_store::listing::job_logs(&mut conn, &id, after, limit).await?;
    let last_seq = rows.last().map_or(after, |l| l.seq);
    Ok(Json(LogPage {
        lines: rows
            .into_iter()
            .map(|l| LogLineView {
                seq: l.seq,
                ts: l.ts,
                stream: l.stream,
                text: l.text,
            })
            .collect(),
        last_seq,
        truncated: job.log_truncated,
    }))
}
