//! Login sessions (written by the web role only), stored by the SHA-256
//! of the cookie value, with their CSRF token, an absolute expiry and the
//! last-seen time the idle expiry is measured from.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// A session joined with its account.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Session {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub disabled: bool,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// A session as its owner sees it in the list of their sessions.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Listed {
    pub id_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
    /// The client address it signed in from.
    pub address: Option<String>,
}

pub async fn insert(
    conn: &mut SqliteConnection,
    id_hash: &str,
    user_id: &str,
    csrf_token: &str,
    now: i64,
    expires_at: i64,
    address: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at, last_seen_at, address)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id_hash)
    .bind(user_id)
    .bind(csrf_token)
    .bind(now)
    .bind(expires_at)
    .bind(now)
    .bind(address)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id_hash: &str) -> Result<Option<Session>> {
    Ok(sqlx::query_as(
        "SELECT s.user_id, u.username, u.role, u.disabled, s.csrf_token, s.created_at, s.expires_at,
                s.last_seen_at
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
    )
    .bind(id_hash)
    .fetch_optional(conn)
    .await?)
}

/// Records activity (the idle expiry restarts).
pub async fn touch(conn: &mut SqliteConnection, id_hash: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?")
        .bind(now)
        .bind(id_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends one session; true if it existed.
pub async fn delete(conn: &mut SqliteConnection, id_hash: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
        .bind(id_hash)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// Ends every session of an account; returns how many.
pub async fn delete_for_user(conn: &mut SqliteConnection, user_id: &str) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM sessions WHERE user_id = ?")
        .bind(user_id)
        .execute(conn)
        .await?
        .rows_affected())
}

/// An account's sessions, most recently used first.
pub async fn list_for_user(conn: &mut SqliteConnection, user_id: &str) -> Result<Vec<Listed>> {
    Ok(sqlx::query_as(
        "SELECT id_hash, created_at, expires_at, last_seen_at, address FROM sessions
         WHERE user_id = ? ORDER BY last_seen_at DESC, created_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

/// Ends one session of an account (only that account's); true if it existed.
pub async fn delete_of_user(
    conn: &mut SqliteConnection,
    user_id: &str,
    id_hash: &str,
) -> Result<bool> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id_hash = ?")
            .bind(user_id)
            .bind(id_hash)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Ends every session of an account but `keep`; returns how many.
pub async fn delete_others(conn: &mut SqliteConnection, user_id: &str, keep: &str) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id_hash <> ?")
            .bind(user_id)
            .bind(keep)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// Sessions of an account still stored (expired ones included until swept).
pub async fn count_for_user(conn: &mut SqliteConnection, user_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Deletes sessions past their absolute expiry or idle since before
/// `idle_before`; returns how many.
pub async fn sweep(conn: &mut SqliteConnection, now: i64, idle_before: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at < ?")
            .bind(now)
            .bind(idle_before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
