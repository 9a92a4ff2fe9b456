//! The delivery outbox and log (owned by the alerts role).
//!
//! An alert change writes one outbox row per enabled channel in the same
//! transaction. Senders claim a due row with a conditional update (the
//! attempt counter they saw must still be current), which both counts the
//! attempt and leases the row, so two alerts workers never send the same
//! attempt. Every attempt's outcome is appended to the log. Rows of one
//! alert to one channel go out in order: a row waits while an older one is
//! pending.

use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result};

/// Outbox row states.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// One outbox row: one event to one channel.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Delivery {
    pub id: String,
    /// Stable across every attempt: the receiver's idempotency key.
    pub webhook_id: String,
    pub alert_id: Option<String>,
    pub channel_id: String,
    /// raised | acknowledged | resolved | test
    pub event: String,
    /// The `rm_bus::notify::NotificationEvent` as it was at the change.
    pub payload_json: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A row to add.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub id: &'a str,
    pub webhook_id: &'a str,
    pub alert_id: Option<&'a str>,
    pub channel_id: &'a str,
    pub event: &'a str,
    pub payload_json: &'a str,
    pub now: i64,
}

pub async fn enqueue(conn: &mut SqliteConnection, d: &NewDelivery<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO delivery_outbox (id, webhook_id, alert_id, channel_id, event, payload_json, state, attempts,
                                      next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
    )
    .bind(d.id)
    .bind(d.webhook_id)
    .bind(d.alert_id)
    .bind(d.channel_id)
    .bind(d.event)
    .bind(d.payload_json)
    .bind(d.now)
    .bind(d.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pending rows due at `now`, oldest first, that no older pending row of
/// the same alert and channel is waiting before.
pub async fn due(conn: &mut SqliteConnection, now: i64, limit: i64) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(
        "SELECT * FROM delivery_outbox o
         WHERE o.state = 'pending' AND o.next_attempt_at <= ?
           AND NOT EXISTS (
               SELECT 1 FROM delivery_outbox p
               WHERE p.state = 'pending' AND p.alert_id = o.alert_id AND p.channel_id = o.channel_id
                 AND (p.created_at < o.created_at OR (p.created_at = o.created_at AND p.rowid < o.rowid)))
         ORDER BY o.next_attempt_at, o.created_at, o.rowid
         LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// When the next pending row falls due, if any.
pub async fn next_due_at(conn: &mut SqliteConnection) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(next_attempt_at) FROM delivery_outbox WHERE state = 'pending'",
    )
    .fetch_one(conn)
    .await?)
}

/// Claims the next attempt of a due row: counts it and leases the row until
/// `lease_until`. False if another sender claimed it first.
pub async fn claim(
    conn: &mut SqliteConnection,
    id: &str,
    attempts_seen: i64,
    now: i64,
    lease_until: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE delivery_outbox SET attempts = attempts + 1, next_attempt_at = ?
         WHERE id = ? AND state = 'pending' AND attempts = ? AND next_attempt_at <= ?",
    )
    .bind(lease_until)
    .bind(id)
    .bind(attempts_seen)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Ends a row: delivered or failed for good.
pub async fn finish(
    conn: &mut SqliteConnection,
    id: &str,
    state: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE delivery_outbox SET state = ?, last_error = ?, finished_at = ? WHERE id = ? AND state = 'pending'",
    )
    .bind(state)
    .bind(error)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Schedules the next attempt of a pending row.
pub async fn retry_at(
    conn: &mut SqliteConnection,
    id: &str,
    at: i64,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE delivery_outbox SET next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
    )
    .bind(at)
    .bind(error)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Delivery> {
    sqlx::query_as("SELECT * FROM delivery_outbox WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .found("delivery", id)
}

/// Every row of an alert, oldest first.
pub async fn for_alert(conn: &mut SqliteConnection, alert_id: &str) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(
        "SELECT * FROM delivery_outbox WHERE alert_id = ? ORDER BY created_at, rowid",
    )
    .bind(alert_id)
    .fetch_all(conn)
    .await?)
}

/// Every row, oldest first (diagnostics and tests).
pub async fn all(conn: &mut SqliteConnection) -> Result<Vec<Delivery>> {
    Ok(
        sqlx::query_as("SELECT * FROM delivery_outbox ORDER BY created_at, rowid")
            .fetch_all(conn)
            .await?,
    )
}

// ---------------------------------------------------------------- log

/// One logged attempt.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LogEntry {
    pub id: i64,
    pub outbox_id: String,
    pub attempt: i64,
    pub ts: i64,
    /// delivered | retryable | failed | no_responder | timeout
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
}

/// An attempt to log.
#[derive(Debug, Clone)]
pub struct NewLogEntry<'a> {
    pub outbox_id: &'a str,
    pub attempt: i64,
    pub ts: i64,
    pub outcome: &'a str,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<&'a str>,
}

pub async fn log(conn: &mut SqliteConnection, e: &NewLogEntry<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO delivery_log (outbox_id, attempt, ts, outcome, status_code, latency_ms, error)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.outbox_id)
    .bind(e.attempt)
    .bind(e.ts)
    .bind(e.outcome)
    .bind(e.status_code)
    .bind(e.latency_ms)
    .bind(e.error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The attempts of one row, in order.
pub async fn log_of(conn: &mut SqliteConnection, outbox_id: &str) -> Result<Vec<LogEntry>> {
    Ok(
        sqlx::query_as("SELECT * FROM delivery_log WHERE outbox_id = ? ORDER BY attempt, id")
            .bind(outbox_id)
            .fetch_all(conn)
            .await?,
    )
}
