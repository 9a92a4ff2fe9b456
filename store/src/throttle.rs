//! Failed-login counters (written by the web role only), per key
//! (`account:<name>`, `addr:<client address>`), so every web process
//! sharing the database throttles alike.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Entry {
    pub key: String,
    pub failures: i64,
    pub last_failure_at: i64,
    pub blocked_until: i64,
}

pub async fn get(conn: &mut SqliteConnection, key: &str) -> Result<Option<Entry>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        throttle_columns!(),
        " FROM login_throttle WHERE key = ?"
    ))
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// Stores a key's counter after a failure.
pub async fn put(conn: &mut SqliteConnection, e: &Entry) -> Result<()> {
    sqlx::query(
        "INSERT INTO login_throttle (key, failures, last_failure_at, blocked_until) VALUES (?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
             last_failure_at = excluded.last_failure_at, blocked_until = excluded.blocked_until",
    )
    .bind(&e.key)
    .bind(e.failures)
    .bind(e.last_failure_at)
    .bind(e.blocked_until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a key (after a successful login).
pub async fn clear(conn: &mut SqliteConnection, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM login_throttle WHERE key = ?")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets keys quiet since before `before`.
pub async fn sweep(conn: &mut SqliteConnection, before: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM login_throttle WHERE last_failure_at < ?")
            .bind(before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
