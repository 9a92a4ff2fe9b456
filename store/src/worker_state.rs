//! Saved positions of background workers (such as the alerts worker's cursor
//! over finished jobs), as small JSON values by name.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::SqliteConnection;

use crate::Result;

/// The saved value of `name`, if any.
pub async fn get<T: DeserializeOwned>(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<T>> {
    let text: Option<String> = sqlx::query_scalar("SELECT value FROM worker_state WHERE name = ?")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    text.map(|t| crate::from_json("worker state", &t))
        .transpose()
}

/// Saves `value` under `name`.
pub async fn put<T: Serialize>(
    conn: &mut SqliteConnection,
    name: &str,
    value: &T,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO worker_state (name, value, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(crate::to_json(value))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
