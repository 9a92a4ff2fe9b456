//! Parts of job results too large for one bus message: stored as they
//! arrive (idempotently by job, what and index), reassembled when the
//! message that names their total arrives, then deleted.

use sqlx::SqliteConnection;

use crate::Result;

/// Stores one part; a re-sent part replaces the earlier copy.
pub async fn put(
    conn: &mut SqliteConnection,
    job_id: &str,
    of: &str,
    idx: u32,
    total: u32,
    data: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_parts (job_id, of, idx, total, data, received_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (job_id, of, idx) DO UPDATE SET total = excluded.total, data = excluded.data,
             received_at = excluded.received_at",
    )
    .bind(job_id)
    .bind(of)
    .bind(idx)
    .bind(total)
    .bind(data)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why parts did not reassemble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    #[error("{got} of {total} parts arrived")]
    Missing { got: u32, total: u32 },
    #[error("the parts hold {got} bytes, not {expected}")]
    Length { got: u64, expected: u64 },
}

/// Reassembles parts `0..total` of `job_id`'s `of` (all sent with this
/// total) and deletes every stored part of it, whatever the outcome.
pub async fn take(
    conn: &mut SqliteConnection,
    job_id: &str,
    of: &str,
    total: u32,
    bytes: u64,
) -> Result<std::result::Result<String, Incomplete>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT data FROM job_parts WHERE job_id = ? AND of = ? AND idx < ? AND total = ? ORDER BY idx",
    )
    .bind(job_id)
    .bind(of)
    .bind(total)
    .bind(total)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM job_parts WHERE job_id = ? AND of = ?")
        .bind(job_id)
        .bind(of)
        .execute(&mut *conn)
        .await?;
    let got = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    if got != total {
        return Ok(Err(Incomplete::Missing { got, total }));
    }
    let text: String = rows.into_iter().map(|r| r.0).collect();
    if text.len() as u64 != bytes {
        return Ok(Err(Incomplete::Length {
            got: text.len() as u64,
            expected: bytes,
        }));
    }
    Ok(Ok(text))
}

/// Parts stored and not yet reassembled, over all jobs.
pub async fn count(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM job_parts")
        .fetch_one(conn)
        .await?)
}
