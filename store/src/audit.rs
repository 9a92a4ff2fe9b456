//! The audit log: every role appends who did what to which object.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Entry {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub via: String,
    pub role: String,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub detail_json: Option<String>,
    /// The client address the action came from, when the writer knew it.
    pub address: Option<String>,
}

/// What to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub ts: i64,
    pub actor: &'a str,
    pub via: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub target_kind: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub detail: Option<serde_json::Value>,
}

pub async fn append(conn: &mut SqliteConnection, e: &NewEntry<'_>) -> Result<()> {
    append_from(conn, e, None).await
}

/// [`append`], recording the client address the action came from.
pub async fn append_from(
    conn: &mut SqliteConnection,
    e: &NewEntry<'_>,
    address: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (ts, actor, via, role, action, target_kind, target_id, detail_json, address)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.ts)
    .bind(e.actor)
    .bind(e.via)
    .bind(e.role)
    .bind(e.action)
    .bind(e.target_kind)
    .bind(e.target_id)
    .bind(e.detail.as_ref().map(crate::to_json))
    .bind(address)
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first.
pub async fn recent(conn: &mut SqliteConnection, limit: i64) -> Result<Vec<Entry>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        audit_entry_columns!(),
        " FROM audit_log ORDER BY ts DESC, id DESC LIMIT ?"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
