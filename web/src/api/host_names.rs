//! `GET /api/v1/host-names`: a page of host names for a host filter's
//! suggestions (the jobs and alerts pages' search boxes), so no page has
//! to load every host of a large fleet. Walks the `hosts.name` index.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiQuery, Page, PageQuery, cursor_of_text, page_by};
use crate::AppState;
use crate::error::ApiError;

/// A host's id and display name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostName {
    pub id: String,
    pub name: String,
}

/// `?q=&cursor=&limit=`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostNameQuery {
    /// Text in the name (case-insensitive), or a host's exact id.
    pub q: String,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
}

/// Suggestions per page unless asked otherwise, and at most.
const DEFAULT: i64 = 20;
const MAX: i64 = 100;

/// Non-revoked hosts by name.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<HostNameQuery>,
) -> Result<Json<Page<HostName>>, ApiError> {
    let limit = match q.limit {
        None => DEFAULT,
        Some(n) if (1..=MAX).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX}"),
            ));
        }
    };
    if q.q.len() > 200 {
        return Err(ApiError::invalid(
            "q",
            "the text is longer than 200 characters",
        ));
    }
    let after = PageQuery {
        cursor: q.cursor.clone(),
        limit: None,
    }
    .cursor_text()?;
    let mut conn = state.store.read().await?;
    let rows = rm_store::hosts::search_names(&mut conn, &q.q, after.as_deref(), limit + 1).await?;
    Ok(Json(page_by(
        rows,
        limit,
        |(_, name)| cursor_of_text(name),
        |(id, name)| HostName { id, name },
    )))
}
