//! The jobs list behind `/jobs` and `GET /api/v1/jobs`: filters by host,
//! kind, status and creation time, newest first, keyset-paginated on
//! `(created_at, id)` so a page costs the same at any depth.

use sqlx::SqliteConnection;

use crate::Result;
use crate::jobs::Job;

/// Which jobs.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub host_id: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Strictly older than this `(created_at, id)` (the cursor).
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// One page, newest first.
pub async fn list(conn: &mut SqliteConnection, f: &Filter) -> Result<Vec<Job>> {
    let (before_at, before_id) = f
        .before
        .clone()
        .map_or((None, None), |(at, id)| (Some(at), Some(id)));
    Ok(sqlx::query_as(
        "SELECT * FROM jobs
         WHERE (?1 IS NULL OR host_id = ?1)
           AND (?2 IS NULL OR kind = ?2)
           AND (?3 IS NULL OR status = ?3)
           AND (?4 IS NULL OR created_at >= ?4)
           AND (?5 IS NULL OR created_at < ?5 OR (created_at = ?5 AND id < ?6))
         ORDER BY created_at DESC, id DESC LIMIT ?7",
    )
    .bind(&f.host_id)
    .bind(&f.kind)
    .bind(&f.status)
    .bind(f.since)
    .bind(before_at)
    .bind(before_id)
    .bind(f.limit)
    .fetch_all(conn)
    .await?)
}
