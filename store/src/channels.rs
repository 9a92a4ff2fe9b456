//! Notification channels (owned by the alerts role): ntfy and webhook, global
//! scope. `config_json` holds only a redacted summary for display; the whole
//! definition (URLs, topics, tokens, webhook secret, headers) is in
//! `secrets_enc`, encrypted with the master key and bound to the row.

use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result, StoreError};

/// One channel row.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub config_json: String,
    pub secrets_enc: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("enabled", &self.enabled)
            .field("config_json", &self.config_json)
            .field(
                "secrets_enc",
                &self
                    .secrets_enc
                    .as_ref()
                    .map(|b| format!("<{} bytes>", b.len())),
            )
            .finish_non_exhaustive()
    }
}

fn conflict(e: sqlx::Error, name: &str) -> StoreError {
    let e = StoreError::from(e);
    if e.is_unique_violation() {
        StoreError::Conflict(format!("a channel named {name:?} already exists"))
    } else {
        e
    }
}

pub async fn insert(conn: &mut SqliteConnection, c: &Channel) -> Result<()> {
    sqlx::query(
        "INSERT INTO notification_channels (id, name, kind, enabled, config_json, secrets_enc, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.kind)
    .bind(c.enabled)
    .bind(&c.config_json)
    .bind(&c.secrets_enc)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(conn)
    .await
    .map_err(|e| conflict(e, &c.name))?;
    Ok(())
}

/// Replaces every field but `id` and `created_at`.
pub async fn update(conn: &mut SqliteConnection, c: &Channel) -> Result<()> {
    let n = sqlx::query(
        "UPDATE notification_channels SET name = ?, kind = ?, enabled = ?, config_json = ?, secrets_enc = ?,
             updated_at = ? WHERE id = ?",
    )
    .bind(&c.name)
    .bind(&c.kind)
    .bind(c.enabled)
    .bind(&c.config_json)
    .bind(&c.secrets_enc)
    .bind(c.updated_at)
    .bind(&c.id)
    .execute(conn)
    .await
    .map_err(|e| conflict(e, &c.name))?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found("channel", &c.id));
    }
    Ok(())
}

pub async fn delete(conn: &mut SqliteConnection, id: &str) -> Result<()> {
    let n = sqlx::query("DELETE FROM notification_channels WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found("channel", id));
    }
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Channel> {
    sqlx::query_as(concat!(
        "SELECT ",
        channel_columns!(),
        " FROM notification_channels WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("channel", id)
}

pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<Channel>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        channel_columns!(),
        " FROM notification_channels ORDER BY name"
    ))
    .fetch_all(conn)
    .await?)
}

/// How many channels are enabled and how many disabled.
pub async fn counts(conn: &mut SqliteConnection) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(SUM(enabled = 1), 0), COALESCE(SUM(enabled = 0), 0) FROM notification_channels",
    )
    .fetch_one(conn)
    .await?)
}

/// Ids of enabled channels: each alert change is delivered to every one.
pub async fn enabled_ids(conn: &mut SqliteConnection) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM notification_channels WHERE enabled = 1 ORDER BY id")
            .fetch_all(conn)
            .await?,
    )
}
