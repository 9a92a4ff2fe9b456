//! The repository refresh cadence: when a full refresh (snapshot list,
//! sizes, locks) was last queued per repository, so the periodic sweep
//! queues one only where it is due.

use sqlx::SqliteConnection;

use crate::Result;

/// Records that a full refresh of `repo_id` was queued at `now`.
pub async fn mark_queued(conn: &mut SqliteConnection, repo_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO repo_refresh (repo_id, queued_at) VALUES (?, ?)
         ON CONFLICT (repo_id) DO UPDATE SET queued_at = excluded.queued_at",
    )
    .bind(repo_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The statement of [`due`]. The online hosts and their repositories are
/// each read once (`IN` lists), not per repository: with the correlated
/// `EXISTS` form SQLite planned the hosts' status index as the outer loop
/// and read every online host for every repository, 36–92 s at 19,000
/// (issue 14, stop 59).
pub const DUE_SQL: &str = "SELECT r.id FROM repositories r LEFT JOIN repo_refresh f ON f.repo_id = r.id
     WHERE COALESCE(f.queued_at, r.created_at) <= ?
       AND (r.maintenance_host_id IN (SELECT id FROM hosts WHERE status = 'online')
            OR r.id IN (SELECT hr.repo_id FROM host_repositories hr JOIN hosts h ON h.id = hr.host_id
                         WHERE h.status = 'online'))
     ORDER BY COALESCE(f.queued_at, r.created_at), r.id
     LIMIT ?";

/// At most `limit` repositories whose last refresh (or, never refreshed,
/// their creation) is at or before `before`, oldest first, of those a
/// refresh can run for now: their maintenance host or an attached host is
/// online ([`runner`] finds one). (A due repository whose hosts are all
/// offline stays due; left in, enough of them would take every place
/// under the limit, tick after tick, from repositories that could be
/// refreshed.)
pub async fn due(conn: &mut SqliteConnection, before: i64, limit: usize) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(DUE_SQL)
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?)
}

/// The statement of [`runner`]: the rule of [`DUE_SQL`]'s filter for one
/// repository, its maintenance host first. `+h.status` keeps the hosts'
/// status index out of the plan: with it SQLite read every online host
/// and looked each up among the repository's (5.6 ms a call on a store
/// of 18,900 online hosts, against 0.01 ms from the repository's hosts;
/// the sweep asks up to 256 times a tick).
pub const RUNNER_SQL: &str = "SELECT id FROM (
         SELECT h.id, 0 AS pick FROM repositories r JOIN hosts h ON h.id = r.maintenance_host_id
          WHERE r.id = ?1 AND +h.status = 'online'
         UNION ALL
         SELECT h.id, 1 AS pick FROM host_repositories hr JOIN hosts h ON h.id = hr.host_id
          WHERE hr.repo_id = ?1 AND +h.status = 'online')
     ORDER BY pick, id
     LIMIT 1";

/// Where a refresh of `repo_id` runs now: its maintenance host if online,
/// else the first attached host (by id) that is online; `None` when none
/// is. The same rule [`due`] applies to every repository at once (a test
/// holds the two to it): a repository is due only where this finds a host.
pub async fn runner(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(RUNNER_SQL)
        .bind(repo_id)
        .fetch_optional(conn)
        .await?)
}

/// When a full refresh of `repo_id` was last queued.
pub async fn last_queued(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT queued_at FROM repo_refresh WHERE repo_id = ?")
            .bind(repo_id)
            .fetch_optional(conn)
            .await?,
    )
}
