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
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditQuery {
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
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
    let pq = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let before = numeric_cursor(&pq)?;
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::audit(
        &mut conn,
        q.target_kind.as_deref(),
        q.target_id.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    Ok(Json(page(
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
        },
    )))
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
pub struct DeliveryQuery {
    pub alert: Option<String>,
    pub channel: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

pub(crate) async fn deliveries(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    let pq = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let before = numeric_cursor(&pq)?;
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::deliveries(
        &mut conn,
        q.alert.as_deref(),
        q.channel.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    Ok(Json(page(
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
    )))
}
