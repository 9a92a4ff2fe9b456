//! Fleet-wide counts for the metrics endpoint (read only): small GROUP BY
//! queries over indexed tables, run at scrape time.

use sqlx::SqliteConnection;

use crate::Result;

/// `(status, count)` of hosts.
pub async fn hosts_by_status(conn: &mut SqliteConnection) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT status, COUNT(*) FROM hosts GROUP BY status")
            .fetch_all(conn)
            .await?,
    )
}

/// `(kind, status, count)` of jobs.
pub async fn jobs_by_kind_and_status(
    conn: &mut SqliteConnection,
) -> Result<Vec<(String, String, i64)>> {
    Ok(
        sqlx::query_as("SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status")
            .fetch_all(conn)
            .await?,
    )
}

/// `(host_id, repo_id, finished_at)` of the last successful backup per host
/// and repository.
pub async fn last_backup_success(
    conn: &mut SqliteConnection,
) -> Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT host_id, repo_id, MAX(finished_at) FROM jobs
         WHERE kind = 'backup' AND status IN ('succeeded', 'warning')
           AND repo_id IS NOT NULL AND finished_at IS NOT NULL
         GROUP BY host_id, repo_id",
    )
    .fetch_all(conn)
    .await?)
}

/// `(kind, severity, count)` of unresolved alerts.
pub async fn open_alerts(conn: &mut SqliteConnection) -> Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT kind, severity, COUNT(*) FROM alerts WHERE resolved_at IS NULL GROUP BY kind, severity",
    )
    .fetch_all(conn)
    .await?)
}

/// `(outcome, count)` of notification delivery attempts.
pub async fn deliveries_by_outcome(conn: &mut SqliteConnection) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT outcome, COUNT(*) FROM delivery_log GROUP BY outcome")
            .fetch_all(conn)
            .await?,
    )
}
