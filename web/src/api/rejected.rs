//! `GET /api/v1/rejected`: results the control plane refused from agents
//! (the same listing the host page shows).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::{ApiQuery, PageQuery};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::views::rejected::{self, RejectedRow};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RejectedQuery {
    pub host: Option<String>,
    pub limit: Option<i64>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<RejectedQuery>,
) -> Result<Json<Vec<RejectedRow>>, ApiError> {
    let limit = PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let mut conn = state.store.read().await?;
    if let Some(h) = &q.host {
        rm_store::hosts::get(&mut conn, h).await?;
    }
    Ok(Json(
        rejected::list(&mut conn, q.host.as_deref(), limit).await?,
    ))
}
