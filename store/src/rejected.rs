//! Results the control plane refused (an unknown job, a run of a schedule
//! deleted while its host was offline, another host's job, a malformed
//! message): recorded so they are visible, not only in the agent's
//! `rejected/` directory.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// The most of a refused message kept.
pub const EXCERPT_MAX: usize = 4096;

/// One refused result.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Rejected {
    pub host_id: String,
    pub job_id: String,
    pub phase: String,
    pub reason: String,
    pub excerpt: String,
    pub received_at: i64,
    pub times: i64,
}

fn excerpt(payload: &[u8]) -> String {
    let mut end = payload.len().min(EXCERPT_MAX);
    // cut on a character boundary
    while end > 0 && std::str::from_utf8(&payload[..end]).is_err() {
        end -= 1;
    }
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Records a refusal; a re-send of the same (host, job, phase) updates it.
pub async fn record(
    conn: &mut SqliteConnection,
    host_id: &str,
    job_id: &str,
    phase: &str,
    reason: &str,
    payload: &[u8],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rejected_results (host_id, job_id, phase, reason, excerpt, received_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (host_id, job_id, phase) DO UPDATE SET
             reason = excluded.reason, excerpt = excluded.excerpt,
             received_at = excluded.received_at, times = times + 1",
    )
    .bind(host_id)
    .bind(job_id)
    .bind(phase)
    .bind(reason)
    .bind(excerpt(payload))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Refused results, newest first; of one host if `host_id` is given.
pub async fn list(
    conn: &mut SqliteConnection,
    host_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Rejected>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        rejected_columns!(),
        " FROM rejected_results WHERE (?1 IS NULL OR host_id = ?1)
         ORDER BY received_at DESC, job_id LIMIT ?2"
    ))
    .bind(host_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
