//! The control plane's retention: old finished jobs (with their logs),
//! refused results and audit rows are deleted after a configurable age. The delivery outbox and
//! log belong to the alerts role, which purges them itself
//! ([`crate::delivery::purge_finished`]): each owner purges its own tables.

use sqlx::SqliteConnection;

use crate::Result;

/// How long to keep things, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub jobs_ms: i64,
    pub audit_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: i64 = 24 * 3600 * 1000;
        Self {
            jobs_ms: 90 * DAY,
            audit_ms: 365 * DAY,
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    pub audit: u64,
}

/// Deletes rows older than the retention. Jobs that are not finished are
/// never deleted; the newest job of each host is kept whatever its age so
/// the dashboard still shows a last result.
pub async fn purge(conn: &mut SqliteConnection, now: i64, r: Retention) -> Result<Purged> {
    let jobs = sqlx::query(
        "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?
             AND id NOT IN (SELECT last_job_id FROM host_summary WHERE last_job_id IS NOT NULL)",
    )
    .bind(now - r.jobs_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM job_ingest WHERE received_at < ? AND job_id NOT IN (SELECT id FROM jobs)",
    )
    .bind(now - r.jobs_ms)
    .execute(&mut *conn)
    .await?;
    // refused results age like the jobs they would have been
    sqlx::query("DELETE FROM rejected_results WHERE received_at < ?")
        .bind(now - r.jobs_ms)
        .execute(&mut *conn)
        .await?;
    let audit = sqlx::query("DELETE FROM audit_log WHERE ts < ?")
        .bind(now - r.audit_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(Purged { jobs, audit })
}
