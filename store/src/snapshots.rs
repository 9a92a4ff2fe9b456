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

/// [`upsert`] for many snapshots in one statement, in order.
pub async fn upsert_many(conn: &mut SqliteConnection, list: &[Snapshot]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let values: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            serde_json::json!({
                "repo_id": s.repo_id, "snapshot_id": s.snapshot_id, "short_id": s.short_id,
                "hostname": s.hostname, "time": s.time, "paths_json": s.paths_json,
                "tags_json": s.tags_json, "summary_json": s.summary_json, "seen_at": s.seen_at,
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO snapshots (repo_id, snapshot_id, short_id, hostname, time, paths_json, tags_json, summary_json, seen_at)
         SELECT value ->> '$.repo_id', value ->> '$.snapshot_id', value ->> '$.short_id',
                value ->> '$.hostname', value ->> '$.time', value ->> '$.paths_json',
                value ->> '$.tags_json', value ->> '$.summary_json', value ->> '$.seen_at'
           FROM json_each(?) WHERE true ORDER BY key
         ON CONFLICT (repo_id, snapshot_id) DO UPDATE SET seen_at = excluded.seen_at,
             summary_json = COALESCE(excluded.summary_json, snapshots.summary_json)",
    )
    .bind(serde_json::to_string(&values).unwrap_or_else(|_| "[]".into()))
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

/// How many snapshots of one restic host a repository's cache holds (a
/// range of the `snapshots_repo_host_time` index, no row read).
pub async fn count_of_host(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: &str,
) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE repo_id = ? AND hostname = ?")
            .bind(repo_id)
            .bind(hostname)
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
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        snapshot_columns!(),
        " FROM snapshots WHERE repo_id = ? AND (? IS NULL OR hostname = ?) ORDER BY time DESC"
    ))
    .bind(repo_id)
    .bind(hostname)
    .bind(hostname)
    .fetch_all(conn)
    .await?)
}

/// Filters of [`page`]: a time span (ms, `until` exclusive), a tag and a
/// substring of a path.
#[derive(Debug, Clone, Default)]
pub struct PageFilter<'a> {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub tag: Option<&'a str>,
    pub path: Option<&'a str>,
}

/// One page of a repository's snapshots of one restic host, newest first,
/// after the cursor `(time, snapshot_id)`: at most `limit` rows. Seeks the
/// `(repo_id, hostname, time DESC)` index (snapshots of the same time are
/// sorted by id among themselves, migration 34); filters are
/// applied in SQL (a path matches as a case-sensitive substring), so a
/// page is full however few snapshots match.
pub async fn page(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: &str,
    f: &PageFilter<'_>,
    before: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<Snapshot>> {
    Ok(sqlx::query_as(
        concat!("SELECT ", snapshot_columns!(), " FROM snapshots
         WHERE repo_id = ?1 AND hostname = ?2
           AND (?3 IS NULL OR time < ?3 OR (time = ?3 AND snapshot_id < ?4))
           AND (?5 IS NULL OR time >= ?5) AND (?6 IS NULL OR time < ?6)
           AND (?7 IS NULL OR EXISTS (SELECT 1 FROM json_each(tags_json) WHERE value = ?7))
           AND (?8 IS NULL OR EXISTS (SELECT 1 FROM json_each(paths_json) WHERE instr(value, ?8) > 0))
         ORDER BY time DESC, snapshot_id DESC LIMIT ?9"),
    )
    .bind(repo_id)
    .bind(hostname)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(f.since)
    .bind(f.until)
    .bind(f.tag)
    .bind(f.path)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// One page of a repository's snapshots (of one restic host, or of all),
/// newest first, after the cursor `(time, snapshot_id)`: at most `limit`
/// rows (`GET /api/v1/snapshots`). Seeks `(repo_id, hostname, time DESC)`
/// with a host, `(repo_id, time DESC)` without (migrations 21 and 34):
/// only snapshots of the same time are sorted, by id, among themselves.
pub async fn page_any(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: Option<&str>,
    before: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<Snapshot>> {
    let host = if hostname.is_some() {
        "AND hostname = ?2"
    } else {
        "AND ?2 IS NULL"
    };
    let sql = format!(
        "SELECT * FROM snapshots WHERE repo_id = ?1 {host}
           AND (?3 IS NULL OR time < ?3 OR (time = ?3 AND snapshot_id < ?4))
         ORDER BY time DESC, snapshot_id DESC LIMIT ?5"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(repo_id)
        .bind(hostname)
        .bind(before.map(|b| b.0))
        .bind(before.map(|b| b.1))
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// How many snapshots [`page_any`] walks through in all (a count over the
/// same index range).
pub async fn count_any(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: Option<&str>,
) -> Result<i64> {
    let sql = if hostname.is_some() {
        "SELECT COUNT(*) FROM snapshots WHERE repo_id = ?1 AND hostname = ?2"
    } else {
        "SELECT COUNT(*) FROM snapshots WHERE repo_id = ?1 AND ?2 IS NULL"
    };
    Ok(sqlx::query_scalar(sql)
        .bind(repo_id)
        .bind(hostname)
        .fetch_one(conn)
        .await?)
}

/// One snapshot of a repository by its full id.
pub async fn get(
    conn: &mut SqliteConnection,
    repo_id: &str,
    snapshot_id: &str,
) -> Result<Option<Snapshot>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        snapshot_columns!(),
        " FROM snapshots WHERE repo_id = ? AND snapshot_id = ?"
    ))
    .bind(repo_id)
    .bind(snapshot_id)
    .fetch_optional(conn)
    .await?)
}

/// A snapshot of a host in a repository by its full or short id.
pub async fn find(
    conn: &mut SqliteConnection,
    repo_id: &str,
    hostname: &str,
    id: &str,
) -> Result<Option<Snapshot>> {
    if let Some(s) = get(&mut *conn, repo_id, id).await? {
        return Ok(Some(s));
    }
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        snapshot_columns!(),
        " FROM snapshots WHERE repo_id = ? AND hostname = ? AND short_id = ? LIMIT 1"
    ))
    .bind(repo_id)
    .bind(hostname)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}
