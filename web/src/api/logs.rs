//! The audit log (admin) and the notification delivery log (viewer), newest
//! first, by cursor.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiQuery, Page, PageQuery, json_col, page};
use crate::AppState;
use crate::auth::{Principal, RequireAdmin};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    /// session | api_token | system
    pub via: String,
    /// The role (process) that wrote it.
    pub role: String,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub detail: serde_json::Value,
    /// The client address the action came from (written by the web role;
    /// absent when the writing role did not know it).
    pub address: Option<String>,
}

/// `?actor=&action=&target_kind=&target_id=&since=&until=&cursor=&limit=`;
/// `action` ending in `.` matches every action it starts (`user.`);
/// `since`/`until` are Unix ms or a UTC date `YYYY-MM-DD` (`until` takes
/// the whole day).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

impl AuditQuery {
    /// True when any filter (not the cursor) is set.
    pub fn filtered(&self) -> bool {
        [
            &self.actor,
            &self.action,
            &self.target_kind,
            &self.target_id,
            &self.since,
            &self.until,
        ]
        .iter()
        .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
    }
}

/// A time bound: Unix ms, or a UTC date (its start; with `end_of_day`, the
/// start of the next day).
fn time_bound(field: &str, raw: &str, end_of_day: bool) -> Result<i64, ApiError> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    let date: jiff::civil::Date = raw.parse().map_err(|_| {
        ApiError::invalid(
            field,
            format!("{field} must be a date (YYYY-MM-DD) or Unix milliseconds, not {raw:?}"),
        )
    })?;
    let day = date
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|e| ApiError::invalid(field, e.to_string()))?;
    let day = if end_of_day {
        day.tomorrow()
            .map_err(|e| ApiError::invalid(field, e.to_string()))?
    } else {
        day
    };
    Ok(day.timestamp().as_millisecond())
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// One page of the audit log: the API's answer and the audit page's rows.
pub async fn audit_page(state: &AppState, q: &AuditQuery) -> Result<Page<AuditView>, ApiError> {
    let pq = PageQuery {
        cursor: non_empty(&q.cursor).map(str::to_owned),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let before = numeric_cursor(&pq)?;
    let since = non_empty(&q.since)
        .map(|s| time_bound("since", s, false))
        .transpose()?;
    let until = non_empty(&q.until)
        .map(|s| time_bound("until", s, true))
        .transpose()?;
    let filter = rm_store::listing::AuditFilter {
        actor: non_empty(&q.actor),
        action: non_empty(&q.action),
        target_kind: non_empty(&q.target_kind),
        target_id: non_empty(&q.target_id),
        since,
        until,
    };
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::audit(&mut conn, &filter, before, limit + 1).await?;
    Ok(page(
        rows,
        limit,
        |e| (e.ts, e.id.to_string()),
        |e| AuditView {
            detail: json_col(e.detail_json.as_deref()),
            id: e.id,
            ts: e.ts,
            actor: e.actor,
            via: e.via,
            role: e.role,
            action: e.action,
            target_kind: e.target_kind,
            target_id: e.target_id,
            address: e.address,
        },
    ))
}

fn numeric_cursor(pq: &PageQuery) -> Result<Option<(i64, i64)>, ApiError> {
    pq.cursor()?
        .map(|(ts, id)| {
            id.parse::<i64>()
                .map(|id| (ts, id))
                .map_err(|_| ApiError::invalid("cursor", "not a cursor this server handed out"))
        })
        .transpose()
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    _: RequireAdmin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    Ok(Json(audit_page(&state, &q).await?))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub ts: i64,
    pub alert_id: Option<String>,
    pub channel_id: String,
    /// raised | acknowledged | resolved | test
    pub event: String,
    pub attempt: i64,
    /// delivered | retryable | failed | no_responder | timeout ...
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeliveryQuery {
    pub alert: Option<String>,
    pub channel: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// One page of the delivery log: the API's answer and the channel page's rows.
pub async fn deliveries_page(
    state: &AppState,
    q: &DeliveryQuery,
) -> Result<Page<DeliveryView>, ApiError> {
    let pq = PageQuery {
        cursor: non_empty(&q.cursor).map(str::to_owned),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let before = numeric_cursor(&pq)?;
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::deliveries(
        &mut conn,
        non_empty(&q.alert),
        non_empty(&q.channel),
        before,
        limit + 1,
    )
    .await?;
    Ok(page(
        rows,
        limit,
        |d| (d.ts, d.id.to_string()),
        |d| DeliveryView {
            id: d.id,
            ts: d.ts,
            alert_id: d.alert_id,
            channel_id: d.channel_id,
            event: d.event,
            attempt: d.attempt,
            outcome: d.outcome,
            status_code: d.status_code,
            latency_ms: d.latency_ms,
            error: d.error,
        },
    ))
}

pub(crate) async fn deliveries(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    Ok(Json(deliveries_page(&state, &q).await?))
}
