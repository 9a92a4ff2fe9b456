//! Snapshots: the cached list per repository (optionally of one host), and
//! one directory level of a snapshot (the control plane's `ls`, answered by
//! a host that can read the repository).

use axum::Json;
use axum::extract::{Path, State};
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiQuery, Page, PageQuery, ask, json_col, page};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotView {
    pub repo_id: String,
    pub snapshot_id: String,
    pub short_id: String,
    /// restic's host name (the host's `restic_host`).
    pub hostname: String,
    pub time: i64,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub summary: serde_json::Value,
}

/// `?repo=&host=&cursor=&limit=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SnapshotQuery {
    pub repo: Option<String>,
    pub host: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 50).
    pub limit: Option<i64>,
}

/// A page of snapshots, newest first: `next` is the cursor of the
/// following page (none on the last); `total` counts every snapshot the
/// pages walk through.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotPage {
    pub items: Vec<SnapshotView>,
    pub next: Option<String>,
    pub total: i64,
}

/// `GET /api/v1/snapshots`: a repository's cached snapshots (of one host
/// with `host=`), newest first, paged by the cursor `(time, snapshot_id)`
/// like the other paged lists.
pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> Result<Json<SnapshotPage>, ApiError> {
    let repo = q
        .repo
        .clone()
        .ok_or_else(|| ApiError::invalid("repo", "give the repository id (`repo=`)"))?;
    let pq = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let cursor = pq.cursor()?;
    let mut conn = state.store.read().await?;
    rm_store::repos::get(&mut conn, &repo).await?;
    let hostname = match &q.host {
        Some(h) => {
            let host = rm_store::hosts::get(&mut conn, h).await?;
            Some(host.restic_host.unwrap_or(host.id))
        }
        None => None,
    };
    let total = rm_store::snapshots::count_any(&mut conn, &repo, hostname.as_deref()).await?;
    let rows = rm_store::snapshots::page_any(
        &mut conn,
        &repo,
        hostname.as_deref(),
        cursor.as_ref().map(|(t, id)| (*t, id.as_str())),
        limit + 1,
    )
    .await?;
    let Page { items, next } = page(
        rows,
        limit,
        |s| (s.time, s.snapshot_id.clone()),
        |s| SnapshotView {
            paths: serde_json::from_str(&s.paths_json).unwrap_or_default(),
            tags: serde_json::from_str(&s.tags_json).unwrap_or_default(),
            summary: json_col(s.summary_json.as_deref()),
            repo_id: s.repo_id,
            snapshot_id: s.snapshot_id,
            short_id: s.short_id,
            hostname: s.hostname,
            time: s.time,
        },
    );
    Ok(Json(SnapshotPage { items, next, total }))
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LsQuery {
    pub host: Option<String>,
    pub repo: Option<String>,
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LsEntryView {
    pub name: String,
    /// file | dir | symlink | ...
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    pub size: Option<u64>,
    pub mtime: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LsView {
    pub dir: String,
    pub entries: Vec<LsEntryView>,
}

pub(crate) async fn ls(
    State(state): State<AppState>,
    p: Principal,
    Path(snapshot): Path<String>,
    ApiQuery(q): ApiQuery<LsQuery>,
) -> Result<Json<LsView>, ApiError> {
    let host_id = q.host.ok_or_else(|| {
        ApiError::invalid("host", "give the host that reads the repository (`host=`)")
    })?;
    let repo_id = q
        .repo
        .ok_or_else(|| ApiError::invalid("repo", "give the repository id (`repo=`)"))?;
    let dir = q.dir.unwrap_or_else(|| "/".to_owned());
    if dir.split('/').any(|seg| seg == "..") {
        return Err(ApiError::invalid("dir", "a path may not contain `..`"));
    }
    let reply: cp::LsReply = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::LS,
        cp::LsRequest {
            host_id,
            repo_id,
            snapshot,
            dir: dir.clone(),
        },
    )
    .await?;
    if !reply.ok {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "restic_failed",
            reply
                .error
                .unwrap_or_else(|| "listing the snapshot failed".into()),
        ));
    }
    Ok(Json(LsView {
        dir,
        entries: reply
            .entries
            .into_iter()
            .map(|e| LsEntryView {
                name: e.name,
                kind: e.kind,
                path: e.path,
                size: e.size,
                mtime: e.mtime,
            })
            .collect(),
    }))
}
