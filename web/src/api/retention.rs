//! The retention preview: what a forget policy would remove on the real
//! repository and why each kept snapshot is kept. One service call shared
//! by the API (`POST /api/v1/hosts/{id}/retention-preview`,
//! `GET /api/v1/jobs/{id}/retention-plan`) and the schedule form: it
//! creates a `forget_preview` job through the control plane (which runs it
//! where the real forget would, with the host's `--host`), waits a bounded
//! time for it to finish (woken by the job's `finished` event, re-reading
//! the store now and then in case an event was missed), and reads the
//! stored [`RetentionPlan`].

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use rm_bus::msg::{JobParams, Retention, RetentionPlan};
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ask};
use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;

/// How long a preview may run on the agent.
pub const PREVIEW_TIMEOUT_SECS: u64 = 300;
/// How long a request waits for the answer when it does not say.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// The longest a request may wait.
pub const MAX_WAIT_SECS: u64 = 120;

/// A retention policy (`keep_*` counts; `keep_within` as a restic duration).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RetentionBody {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// e.g. `1y6m`, `30d`.
    pub keep_within: Option<String>,
}

impl From<RetentionBody> for Retention {
    fn from(b: RetentionBody) -> Self {
        Retention {
            keep_last: b.keep_last,
            keep_hourly: b.keep_hourly,
            keep_daily: b.keep_daily,
            keep_weekly: b.keep_weekly,
            keep_monthly: b.keep_monthly,
            keep_yearly: b.keep_yearly,
            keep_within: b.keep_within,
        }
    }
}

/// `POST /api/v1/hosts/{id}/retention-preview`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PreviewBody {
    pub repo_id: String,
    pub retention: RetentionBody,
    /// Seconds to wait for the result (default 30, at most 120); `0`
    /// answers at once with the job id to fetch the plan from later.
    pub wait_secs: Option<u64>,
}

/// One snapshot of the plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedSnapshotView {
    pub id: String,
    pub short_id: String,
    /// RFC 3339, as restic recorded it.
    pub time: String,
    /// Unix milliseconds.
    pub time_ms: Option<i64>,
    pub hostname: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// `keep` or `remove`.
    pub action: String,
    /// Why a kept snapshot is kept (restic's words); empty when removed.
    pub reasons: Vec<String>,
}

/// A retention preview: its job, and once it finished, the plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewView {
    pub job_id: String,
    pub host_id: String,
    /// Where restic ran (the maintenance host, else the host itself).
    pub exec_host_id: String,
    /// The job's state: queued | dispatched | running | succeeded | failed | ...
    pub status: String,
    /// The job finished (the plan or the error is final).
    pub done: bool,
    /// Why the preview failed, in words.
    pub error: Option<String>,
    pub error_kind: Option<String>,
    /// Snapshots the policy keeps.
    pub kept: usize,
    /// Snapshots the policy removes.
    pub removed: usize,
    /// Newest first.
    pub snapshots: Vec<PlannedSnapshotView>,
}

impl PreviewView {
    /// The view of a stored job (a plan only once it succeeded).
    pub fn of(j: &rm_store::jobs::Job) -> Self {
        let status = j.status().ok();
        let plan: RetentionPlan = j
            .summary_json
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        Self {
            job_id: j.id.clone(),
            host_id: j.host_id.clone(),
            exec_host_id: j.exec_host_id.clone(),
            status: j.status.clone(),
            done: status.is_some_and(|s| s.is_terminal()),
            error: j.error.clone(),
            error_kind: j.error_kind.clone(),
            kept: plan.kept(),
            removed: plan.removed(),
            snapshots: plan
                .snapshots
                .into_iter()
                .map(|s| PlannedSnapshotView {
                    action: if s.keep { "keep" } else { "remove" }.into(),
                    id: s.id,
                    short_id: s.short_id,
                    time: s.time,
                    time_ms: s.time_ms,
                    hostname: s.hostname,
                    paths: s.paths,
                    tags: s.tags,
                    reasons: s.reasons,
                })
                .collect(),
        }
    }
}

/// Creates a preview job for `host_id` on `repo_id` and waits up to `wait`
/// for its plan. The policy is checked by the control plane (the field in
/// the error is `retention`).
pub async fn run(
    state: &AppState,
    p: &Principal,
    host_id: &str,
    repo_id: &str,
    retention: Retention,
    wait: Duration,
) -> Result<PreviewView, ApiError> {
    // subscribe before creating, so the finished event cannot slip past
    let mut events = state.events.subscribe();
    let created: cp::JobCreated = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::JOB_CREATE,
        cp::JobCreate {
            host_id: host_id.to_owned(),
            repo_id: repo_id.to_owned(),
            params: JobParams::ForgetPreview {
                retention,
                host_name: String::new(),
            },
            timeout_secs: Some(PREVIEW_TIMEOUT_SECS),
            target_host_id: None,
        },
    )
    .await
    .map_err(|e| match e.code {
        "invalid" => ApiError {
            field: Some("retention".into()),
            ..e
        },
        _ => e,
    })?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let job = {
            let mut conn = state.store.read().await?;
            rm_store::jobs::get(&mut conn, &created.job_id).await?
        };
        let view = PreviewView::of(&job);
        if view.done || tokio::time::Instant::now() >= deadline {
            return Ok(view);
        }
        // wake on this job's finished event, or re-read within a second
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until, events.recv()).await {
            if is_finished_event(&ev, &created.job_id) {
                break;
            }
        }
    }
}

fn is_finished_event(ev: &crate::events::LiveEvent, job_id: &str) -> bool {
    ev.name == "job"
        && serde_json::from_str::<serde_json::Value>(&ev.data)
            .is_ok_and(|d| d["type"] == "finished" && d["job_id"].as_str() == Some(job_id))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(host_id): Path<String>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<PreviewView>, ApiError> {
    let wait = body.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::invalid(
            "wait_secs",
            format!(
                "wait at most {MAX_WAIT_SECS} seconds; fetch the plan later from /api/v1/jobs/{{id}}/retention-plan"
            ),
        ));
    }
    {
        let mut conn = state.store.read().await?;
        rm_store::hosts::get(&mut conn, &host_id).await?;
    }
    let view = run(
        &state,
        &p,
        &host_id,
        &body.repo_id,
        body.retention.into(),
        Duration::from_secs(wait),
    )
    .await?;
    Ok(Json(view))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<PreviewView>, ApiError> {
    let mut conn = state.store.read().await?;
    let job = rm_store::jobs::get(&mut conn, &id).await?;
    if job.kind != "forget_preview" {
        return Err(ApiError::not_found(format!(
            "job {id} is a {}, not a retention preview",
            job.kind
        )));
    }
    Ok(Json(PreviewView::of(&job)))
}
