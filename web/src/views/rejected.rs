//! Results the control plane refused from an agent (`rejected_results`):
//! one listing for the host page and `GET /api/v1/rejected`.

use serde::Serialize;

/// Rows on the host page.
pub const ON_HOST_PAGE: i64 = 10;

/// One refused result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RejectedRow {
    pub host_id: String,
    pub job_id: String,
    /// `started`, `done`, `part` or `claim`.
    pub phase: String,
    /// Why the control plane refused it.
    pub reason: String,
    /// The start of the message as received (at most 4 KiB).
    pub excerpt: String,
    /// When it was last received (ms since the epoch).
    pub received_at: i64,
    /// How many times it was received.
    pub times: i64,
}

/// Refused results, newest first; of one host if given.
pub async fn list(
    conn: &mut rm_store::Conn,
    host_id: Option<&str>,
    limit: i64,
) -> rm_store::Result<Vec<RejectedRow>> {
    Ok(rm_store::rejected::list(conn, host_id, limit)
        .await?
        .into_iter()
        .map(|r| RejectedRow {
            host_id: r.host_id,
            job_id: r.job_id,
            phase: r.phase,
            reason: r.reason,
            excerpt: r.excerpt,
            received_at: r.received_at,
            times: r.times,
        })
        .collect())
}
