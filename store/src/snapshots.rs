//! The snapshots cache: what restic last reported per repository.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Snapshot {
    pub repo_id: String,
    pub snapshot_id: String,
    pub short_id: String,
    pub hostname: String,
    pub time: i64,
    pub paths_json: String,
    pub tags_json: String,
    pub summary_json: Option<String>,
    pub seen_at: i64,
}

/// Inserts or refreshes one snapshot.
pub async fn upsert(conn: &mut SqliteConnection, s: &Snapshot) -> Result<()> {
    sqlx::query(
        "INSERT INTO snapshots (repo_id, snapshot_id, short_id, hostname, time, paths_json, tags_json, summary_json, seen_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (repo_id, snapshot_id) DO UPDATE SET seen_at = excluded.seen_at,
             summary_json = COALESCE(excluded.summary_json, snapshots.summary_json)",
    )
    .bind(&s.repo_id)
    .bind(&s.snapshot_id)
    .bind(&s.short_id)
    .bind(&s.hostname)
    .bind(s.time)
    .bind(&s.paths_json)
    .bind(&s.tags_json)
    .bind(&s.summary_json)
    .bind(s.seen_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many snapshots of a repository the cache holds.
pub async fn count(conn: &mut SqliteConnection, repo_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE repo_id = ?")
            .bind(repo_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Replaces the cached list for one repository (and optionally one host)
/// with a full listing: snapshots not in it were forgotten.
pub async fn replace_all(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: Option<&str>,
    list: &[Snapshot],
) -> Result<()> {
    match hostname {
        Some(h) => {
            sqlx::query("DELETE FROM snapshots WHERE repo_id = ? AND hostname = ?")
                .bind(repo_id)
                .bind(h)
                .execute(&mut *conn)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM snapshots WHERE repo_id = ?")
                .bind(repo_id)
                .execute(&mut *conn)
                .await?
        }
    };
    for s in list {
        upsert(&mut *conn, s).await?;
    }
    Ok(())
}

pub async fn list(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: Option<&str>,
) -> Result<Vec<Snapshot>> {
    Ok(sqlx::query_as(
        "SELECT * FROM snapshots WHERE repo_id = ? AND (? IS NULL OR hostname = ?) ORDER BY time DESC",
    )
    .bind(repo_id)
    .bind(hostname)
    .bind(hostname)
    .fetch_all(conn)
    .await?)
}
