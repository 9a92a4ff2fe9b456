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

const DUE_SQL: &str = concat!("SELECT ", delivery_columns!(), " FROM delivery_outbox o
     WHERE o.state = 'pending' AND o.next_attempt_at <= ?
       AND NOT EXISTS (
           SELECT 1 FROM delivery_outbox p INDEXED BY delivery_outbox_pending_order
           WHERE p.state = 'pending' AND p.alert_id = o.alert_id AND p.channel_id = o.channel_id
             AND (p.created_at < o.created_at OR (p.created_at = o.created_at AND p.rowid < o.rowid)))
     ORDER BY o.next_attempt_at, o.created_at, o.rowid
     LIMIT ?");

/// Pending rows due at `now`, oldest first, that no older pending row of
/// the same alert and channel is waiting before.
///
/// Indexed both ways (migration 3): due rows come off
/// `delivery_outbox_due`, and the "older pending row first" check is one
/// lookup in the partial index `delivery_outbox_pending_order` (named with
/// `INDEXED BY`: without statistics the planner may otherwise walk every
/// pending row through the state index), so the query does not grow with
/// the square of the backlog.
pub async fn due(conn: &mut SqliteConnection, now: i64, limit: i64) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(DUE_SQL)
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

/// Records a finished test send of a saved channel: an outbox row with
/// event `test`, already delivered or failed (so the sender never picks it
/// up), and its one attempt in the log, so the channel's delivery log
/// shows it. `log.outbox_id` must be `d.id`.
pub async fn record_test(
    conn: &mut SqliteConnection,
    d: &NewDelivery<'_>,
    log_entry: &NewLogEntry<'_>,
) -> Result<()> {
    let state = if log_entry.outcome == DELIVERED {
        DELIVERED
    } else {
        FAILED
    };
    sqlx::query(
        "INSERT INTO delivery_outbox (id, webhook_id, alert_id, channel_id, event, payload_json, state, attempts,
                                      next_attempt_at, last_error, created_at, finished_at)
         VALUES (?, ?, NULL, ?, 'test', ?, ?, 1, ?, ?, ?, ?)",
    )
    .bind(d.id)
    .bind(d.webhook_id)
    .bind(d.channel_id)
    .bind(d.payload_json)
    .bind(state)
    .bind(d.now)
    .bind(log_entry.error)
    .bind(d.now)
    .bind(log_entry.ts)
    .execute(&mut *conn)
    .await?;
    log(conn, log_entry).await
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

/// Deletes delivered and failed rows that finished before `before`, with
/// their log (cascade). Pending rows are never purged. The alerts role's
/// retention.
pub async fn purge_finished(conn: &mut SqliteConnection, before: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM delivery_outbox WHERE state != 'pending' AND finished_at < ?")
            .bind(before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Delivery> {
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM delivery_outbox WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("delivery", id)
}

/// Every row of an alert, oldest first.
pub async fn for_alert(conn: &mut SqliteConnection, alert_id: &str) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM delivery_outbox WHERE alert_id = ? ORDER BY created_at, rowid"
    ))
    .bind(alert_id)
    .fetch_all(conn)
    .await?)
}

/// Every row, oldest first (diagnostics and tests).
pub async fn all(conn: &mut SqliteConnection) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM delivery_outbox ORDER BY created_at, rowid"
    ))
    .fetch_all(conn)
    .await?)
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
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        delivery_log_columns!(),
        " FROM delivery_log WHERE outbox_id = ? ORDER BY attempt, id"
    ))
    .bind(outbox_id)
    .fetch_all(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for [`due`], one line per step.
    async fn due_plan() -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(&dir.path().join("rm.db")).await.unwrap();
        let mut c = store.read().await.unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {DUE_SQL}");
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(0_i64)
            .bind(10_i64)
            .fetch_all(&mut *c)
            .await
            .unwrap();
        drop(c);
        store.close().await;
        rows.into_iter().map(|r| r.3).collect()
    }

    #[tokio::test]
    async fn due_looks_up_older_pending_rows_in_an_index_not_a_scan_of_the_backlog() {
        let plan = due_plan().await;
        let inner: Vec<&String> = plan.iter().filter(|l| l.contains(" p ")).collect();
        assert!(!inner.is_empty(), "{plan:#?}");
        for l in &inner {
            assert!(
                l.contains("delivery_outbox_pending_order") && l.contains("alert_id=?"),
                "the older-row check is not an indexed lookup: {plan:#?}"
            );
        }
        assert!(
            plan.iter()
                .any(|l| l.contains("SEARCH o USING INDEX delivery_outbox_due")),
            "{plan:#?}"
        );
    }
}
