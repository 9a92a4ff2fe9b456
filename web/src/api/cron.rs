//! `GET /api/v1/cron/preview?expr=&tz=&count=`: the next run times of a
//! cron expression in a time zone, computed by `rm-cron` (the same code the
//! agent's scheduler and the stale-schedule rule use).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiQuery;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Debug, Clone, Deserialize)]
pub struct PreviewQuery {
    pub expr: Option<String>,
    pub tz: Option<String>,
    pub count: Option<usize>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Preview {
    pub expr: String,
    pub tz: String,
    /// Unix milliseconds.
    pub next_ms: Vec<i64>,
    /// The same times as RFC 3339 in the zone.
    pub next: Vec<String>,
    /// The expression in words ("every day at 03:00").
    pub reading: String,
}

pub(crate) async fn preview(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    let expr = q
        .expr
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("expr", "give a cron expression, e.g. `0 3 * * *`"))?;
    let tz = q.tz.unwrap_or_else(|| "UTC".to_owned());
    let count = q.count.unwrap_or(5);
    if !(1..=50).contains(&count) {
        return Err(ApiError::invalid("count", "count must be between 1 and 50"));
    }
    let schedule = rm_cron::CronSchedule::parse(&expr, &tz).map_err(|e| match e {
        rm_cron::CronError::TimeZone(_) => ApiError::invalid("tz", e.to_string()),
        rm_cron::CronError::Expression { .. } => ApiError::invalid("expr", e.to_string()),
    })?;
    let next_ms = schedule.upcoming_ms(state.now(), count);
    Ok(Json(Preview {
        next: next_ms.iter().map(|m| schedule.format_ms(*m)).collect(),
        next_ms,
        reading: crate::ui::cron_words::describe(&expr),
        expr,
        tz,
    }))
}
