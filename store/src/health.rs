//! Repository health history: sizes, dedup and compression, snapshot
//! count, locks and check results, one row per measurement.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

#[derive(Debug, Clone, Default, PartialEq, FromRow)]
pub struct Health {
    pub id: i64,
    pub repo_id: String,
    pub ts: i64,
    pub source_job_id: Option<String>,
    pub total_size: Option<i64>,
    pub raw_size: Option<i64>,
    pub uncompressed_size: Option<i64>,
    pub dedup_ratio: Option<f64>,
    pub compression_ratio: Option<f64>,
    pub snapshot_count: Option<i64>,
    pub lock_count: Option<i64>,
    pub check_ok: Option<bool>,
    pub check_at: Option<i64>,
    pub detail_json: Option<String>,
}

pub async fn insert(conn: &mut SqliteConnection, h: &Health) -> Result<()> {
    sqlx::query(
        "INSERT INTO repo_health (repo_id, ts, source_job_id, total_size, raw_size, uncompressed_size, dedup_ratio,
                                  compression_ratio, snapshot_count, lock_count, check_ok, check_at, detail_json)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&h.repo_id)
    .bind(h.ts)
    .bind(&h.source_job_id)
    .bind(h.total_size)
    .bind(h.raw_size)
    .bind(h.uncompressed_size)
    .bind(h.dedup_ratio)
    .bind(h.compression_ratio)
    .bind(h.snapshot_count)
    .bind(h.lock_count)
    .bind(h.check_ok)
    .bind(h.check_at)
    .bind(&h.detail_json)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `repo_id`'s snapshots were listed in full at `ts`: from
/// then on the cache holds every snapshot, and its count is the
/// repository's snapshot count (backups add theirs to the cache).
pub async fn mark_listed(conn: &mut SqliteConnection, repo_id: &str, ts: i64) -> Result<()> {
    sqlx::query("UPDATE repositories SET snapshots_listed_at = ? WHERE id = ?")
        .bind(ts)
        .bind(repo_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Those of `repos` whose snapshots were ever listed in full
/// ([`mark_listed`]), in one query.
pub async fn snapshots_counted_among(
    conn: &mut SqliteConnection,
    repos: &[&str],
) -> Result<std::collections::HashSet<String>> {
    if repos.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM repositories
          WHERE id IN (SELECT value FROM json_each(?)) AND snapshots_listed_at IS NOT NULL",
    )
    .bind(serde_json::to_string(repos).unwrap_or_else(|_| "[]".into()))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The latest value of each measurement for a repository (measurements
/// arrive from different jobs, so each column is taken from its newest
/// row). The snapshot count is the cache's once the repository was listed
/// in full ([`mark_listed`]); before that, the newest one recorded.
pub async fn latest(conn: &mut SqliteConnection, repo_id: &str) -> Result<Health> {
    let rows: Vec<Health> = sqlx::query_as(concat!(
        "SELECT ",
        health_columns!(),
        " FROM repo_health WHERE repo_id = ? ORDER BY ts DESC, id DESC LIMIT 200"
    ))
    .bind(repo_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Health {
        repo_id: repo_id.to_owned(),
        ..Health::default()
    };
    if let Some(first) = rows.first() {
        out.id = first.id;
        out.ts = first.ts;
    }
    for r in &rows {
        out.total_size = out.total_size.or(r.total_size);
        out.raw_size = out.raw_size.or(r.raw_size);
        out.uncompressed_size = out.uncompressed_size.or(r.uncompressed_size);
        out.dedup_ratio = out.dedup_ratio.or(r.dedup_ratio);
        out.compression_ratio = out.compression_ratio.or(r.compression_ratio);
        out.snapshot_count = out.snapshot_count.or(r.snapshot_count);
        out.lock_count = out.lock_count.or(r.lock_count);
        if out.check_at.is_none() && r.check_at.is_some() {
            out.check_at = r.check_at;
            out.check_ok = r.check_ok;
        }
    }
    if out.dedup_ratio.is_none()
        && let (Some(total), Some(raw)) = (out.total_size, out.raw_size)
        && raw > 0
    {
        out.dedup_ratio = Some(total as f64 / raw as f64);
    }
    if let Some(n) = cached_count(&mut *conn, repo_id).await? {
        out.snapshot_count = Some(n);
    }
    Ok(out)
}

/// The cache's snapshot count of a repository listed in full
/// ([`mark_listed`]); `None` for one never listed (its cache holds only
/// what backups added). One statement.
async fn cached_count(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM snapshots WHERE repo_id = r.id)
           FROM repositories r WHERE r.id = ? AND r.snapshots_listed_at IS NOT NULL",
    )
    .bind(repo_id)
    .fetch_optional(conn)
    .await?)
}

/// One size measurement of a repository: what it stores (`raw-data`
/// stats) and what a restore of everything would write (`restore-size`).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SizePoint {
    pub ts: i64,
    pub raw_size: Option<i64>,
    pub total_size: Option<i64>,
}

/// The newest `limit` size measurements, oldest first (for "size over
/// time"). Uses the `(repo_id, ts DESC)` index.
pub async fn size_history(
    conn: &mut SqliteConnection,
    repo_id: &str,
    limit: i64,
) -> Result<Vec<SizePoint>> {
    let mut rows: Vec<SizePoint> = sqlx::query_as(
        "SELECT ts, raw_size, total_size FROM repo_health
         WHERE repo_id = ? AND (raw_size IS NOT NULL OR total_size IS NOT NULL)
         ORDER BY ts DESC, id DESC LIMIT ?",
    )
    .bind(repo_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.reverse();
    Ok(rows)
}
