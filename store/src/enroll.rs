//! One-time enrollment tokens, stored as SHA-256 hashes.

use sqlx::SqliteConnection;

use crate::Result;

/// Why a token was refused. The agent gets one message for all of them
/// (no oracle), the log and audit get the precise reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("unknown enrollment token")]
    Unknown,
    #[error("enrollment token expired")]
    Expired,
    #[error("enrollment token already used")]
    Used,
    #[error("host was revoked")]
    HostRevoked,
}

pub async fn insert(
    conn: &mut SqliteConnection,
    token_hash: &str,
    host_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO enrollment_tokens (token_hash, host_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
        .bind(token_hash)
        .bind(host_id)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Consumes a token: single use, before expiry. Returns the host id.
pub async fn take(
    conn: &mut SqliteConnection,
    token_hash: &str,
    now: i64,
) -> Result<Result<String, TokenRefusal>> {
    let row: Option<(String, i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT t.host_id, t.expires_at, t.used_at, h.status
         FROM enrollment_tokens t JOIN hosts h ON h.id = t.host_id WHERE t.token_hash = ?",
    )
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((host_id, expires_at, used_at, status)) = row else {
        return Ok(Err(TokenRefusal::Unknown));
    };
    if used_at.is_some() {
        return Ok(Err(TokenRefusal::Used));
    }
    if now >= expires_at {
        return Ok(Err(TokenRefusal::Expired));
    }
    if status == "revoked" {
        return Ok(Err(TokenRefusal::HostRevoked));
    }
    let n = sqlx::query(
        "UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
    )
    .bind(now)
    .bind(token_hash)
    .execute(conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(Err(TokenRefusal::Used));
    }
    Ok(Ok(host_id))
}

/// Drops unused tokens of a host (a new token supersedes older ones).
pub async fn invalidate_for_host(
    conn: &mut SqliteConnection,
    host_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE enrollment_tokens SET expires_at = MIN(expires_at, ?) WHERE host_id = ? AND used_at IS NULL")
        .bind(now)
        .bind(host_id)
        .execute(conn)
        .await?;
    Ok(())
}
