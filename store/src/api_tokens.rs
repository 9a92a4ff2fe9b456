//! API tokens (written by the web role only): stored as SHA-256 hashes,
//! each with its own role, an optional expiry, a last-used time and a
//! revocation time.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The secret's first characters (`rmt_AbCd1234`); absent on tokens
    /// made before it was kept.
    pub prefix: Option<String>,
    /// The creator's account name.
    pub username: String,
}

/// A token found by its hash, with its creator's account state.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub role: String,
    pub user_id: String,
    pub username: String,
    pub user_role: String,
    pub user_disabled: bool,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// What to insert.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub user_id: &'a str,
    pub role: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
    /// The secret's first characters, for telling tokens apart.
    pub prefix: &'a str,
}

pub async fn insert(conn: &mut SqliteConnection, t: &NewToken<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, name, token_hash, user_id, role, created_at, expires_at, prefix)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id)
    .bind(t.name)
    .bind(t.token_hash)
    .bind(t.user_id)
    .bind(t.role)
    .bind(t.now)
    .bind(t.expires_at)
    .bind(t.prefix)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_hash(conn: &mut SqliteConnection, token_hash: &str) -> Result<Option<Found>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.name, t.role, t.user_id, u.username, u.role AS user_role,
                u.disabled AS user_disabled, t.expires_at, t.revoked_at, t.last_used_at
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?)
}

/// Records a use.
pub async fn touch(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes a token; false if unknown or revoked already.
pub async fn revoke(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<bool> {
    Ok(
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Every token, newest first.
pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<Token>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.name, t.user_id, t.role, t.created_at, t.expires_at, t.last_used_at,
                t.revoked_at, t.prefix, u.username
         FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.created_at DESC, t.id",
    )
    .fetch_all(conn)
    .await?)
}
