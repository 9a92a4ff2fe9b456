//! Schedules: list (optionally of one host), create, edit, delete — the
//! changes through the control plane (`schedule-put`, `schedule-delete`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiJson, ApiQuery, Page, PageQuery, ask, bad_cursor, cursor_of_text, json_col, page_by,
};
use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub host_id: String,
    pub repo_id: String,
    pub kind: String,
    pub cron: String,
    pub timezone: String,
    #[schema(value_type = Option<Object>)]
    pub params: serde_json::Value,
    pub enabled: bool,
    pub jitter_secs: i64,
    pub timeout_secs: i64,
    pub grace_secs: i64,
    pub exec_host_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn view(s: rm_store::schedules::Schedule) -> ScheduleView {
    ScheduleView {
        params: json_col(Some(&s.params_json)),
        id: s.id,
        host_id: s.host_id,
        repo_id: s.repo_id,
        kind: s.kind,
        cron: s.cron,
        timezone: s.timezone,
        enabled: s.enabled,
        jitter_secs: s.jitter_secs,
        timeout_secs: s.timeout_secs,
        grace_secs: s.grace_secs,
        exec_host_id: s.exec_host_id,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

/// `?host=&cursor=&limit=` of the list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScheduleQuery {
    pub host: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 50).
    pub limit: Option<i64>,
}

/// A page of schedules by host and id (of one host with `?host=`).
pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<ScheduleQuery>,
) -> Result<Json<Page<ScheduleView>>, ApiError> {
    let pq = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = pq.limit()?;
    // the cursor is the last row's host and id, a line feed between
    // (neither is ever empty nor holds one)
    let after = pq.cursor_text()?;
    let after = match after.as_deref() {
        None => None,
        Some(text) => Some(
            text.split_once('\n')
                .filter(|(h, i)| !h.is_empty() && !i.is_empty())
                .ok_or_else(bad_cursor)?,
        ),
    };
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::schedules(&mut conn, q.host.as_deref(), after, limit + 1).await?;
    Ok(Json(page_by(
        rows,
        limit,
        |s| cursor_of_text(&format!("{}\n{}", s.host_id, s.id)),
        view,
    )))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(Json(view(rm_store::schedules::get(&mut conn, &id).await?)))
}

/// A schedule to create or edit.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ScheduleBody {
    pub host_id: String,
    pub repo_id: String,
    /// Five-field cron expression.
    pub cron: String,
    /// IANA zone, e.g. `Europe/Berlin`.
    pub timezone: String,
    #[schema(value_type = Object)]
    pub params: rm_bus::msg::JobParams,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub jitter_secs: u64,
    pub timeout_secs: Option<u64>,
    pub grace_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleSavedView {
    pub schedule_id: String,
    pub config_version: i64,
}

async fn put(
    state: &AppState,
    p: &crate::auth::Principal,
    id: Option<String>,
    b: ScheduleBody,
) -> Result<ScheduleSavedView, ApiError> {
    if let Err(e) = rm_cron::CronSchedule::parse(&b.cron, &b.timezone) {
        return Err(match e {
            rm_cron::CronError::TimeZone(_) => ApiError::invalid("timezone", e.to_string()),
            rm_cron::CronError::Expression { .. } => ApiError::invalid("cron", e.to_string()),
        });
    }
    let saved: cp::ScheduleSaved = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::SCHEDULE_PUT,
        cp::SchedulePut {
            schedule_id: id,
            host_id: b.host_id,
            repo_id: b.repo_id,
            cron: b.cron,
            timezone: b.timezone,
            params: b.params,
            enabled: b.enabled,
            jitter_secs: b.jitter_secs,
            timeout_secs: b.timeout_secs,
            grace_secs: b.grace_secs,
        },
    )
    .await?;
    Ok(ScheduleSavedView {
        schedule_id: saved.schedule_id,
        config_version: saved.config_version,
    })
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireOperator,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<(StatusCode, Json<ScheduleSavedView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(put(&state, &p, None, body).await?),
    ))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<Json<ScheduleSavedView>, ApiError> {
    {
        let mut conn = state.store.read().await?;
        rm_store::schedules::get(&mut conn, &id).await?;
    }
    Ok(Json(put(&state, &p, Some(id), body).await?))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _: cp::Done = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::SCHEDULE_DELETE,
        cp::ScheduleRef { schedule_id: id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
