//! Filtered, cursor-paginated listings for the web API (read only).
//! A cursor is the `(created_at, id)` of the last row of the previous
//! page; rows come newest first.

use sqlx::SqliteConnection;

use crate::Result;
use crate::jobs::Job;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    pub host_id: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub status: Option<&'a str>,
    pub repo_id: Option<&'a str>,
    /// Only jobs created at or after this time (ms).
    pub since: Option<i64>,
    /// Rows strictly older than this `(created_at, id)`.
    pub before: Option<(i64, &'a str)>,
}

/// Up to `limit` jobs matching `f`, newest first. Only the filters given
/// appear in the statement (no `? IS NULL OR ...`), and the cursor is a
/// row value, so SQLite walks the matching index from the cursor on
/// (`jobs_host_created_id`, `jobs_created_id`, `jobs_status_created`)
/// instead of scanning the table from the newest job.
pub async fn jobs(conn: &mut SqliteConnection, f: &JobFilter<'_>, limit: i64) -> Result<Vec<Job>> {
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE 1 = 1"
    ));
    if let Some(h) = f.host_id {
        q.push(" AND host_id = ").push_bind(h);
    }
    if let Some(k) = f.kind {
        q.push(" AND kind = ").push_bind(k);
    }
    if let Some(s) = f.status {
        q.push(" AND status = ").push_bind(s);
    }
    if let Some(r) = f.repo_id {
        q.push(" AND repo_id = ").push_bind(r);
    }
    if let Some(since) = f.since {
        q.push(" AND created_at >= ").push_bind(since);
    }
    match f.before {
        Some((ts, id)) if !id.is_empty() => {
            q.push(" AND (created_at, id) < (")
                .push_bind(ts)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        Some((ts, _)) => {
            q.push(" AND created_at < ").push_bind(ts);
        }
        None => {}
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    Ok(q.build_query_as().fetch_all(conn).await?)
}

/// A job's log lines after `after_seq`, at most `limit`.
pub async fn job_logs(
    conn: &mut SqliteConnection,
    job_id: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<crate::jobs::LogLine>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        log_line_columns!(),
        " FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    ))
    .bind(job_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Which alerts to list (every field optional).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter<'a> {
    pub host_id: Option<&'a str>,
    /// `open` (not resolved: acknowledged or not), `unacknowledged` (open
    /// and not acknowledged), `acknowledged` (open and acknowledged),
    /// `resolved`; `None` for all.
    pub state: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub severity: Option<&'a str>,
    /// Rows strictly older than this `(raised_at, id)`.
    pub before: Option<(i64, &'a str)>,
}

/// The states [`AlertFilter::state`] accepts.
pub const ALERT_STATES: [&str; 4] = ["open", "unacknowledged", "acknowledged", "resolved"];

/// Up to `limit` alerts matching `f`, newest first.
pub async fn alerts(
    conn: &mut SqliteConnection,
    f: &AlertFilter<'_>,
    limit: i64,
) -> Result<Vec<crate::alerts::Alert>> {
    let (before_ts, before_id) = f.before.unwrap_or((i64::MAX, ""));
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts
         WHERE (?1 IS NULL OR host_id = ?1)
           AND (?2 IS NULL
                OR (?2 = 'open' AND resolved_at IS NULL)
                OR (?2 = 'unacknowledged' AND resolved_at IS NULL AND acknowledged_at IS NULL)
                OR (?2 = 'acknowledged' AND resolved_at IS NULL AND acknowledged_at IS NOT NULL)
                OR (?2 = 'resolved' AND resolved_at IS NOT NULL))
           AND (?6 IS NULL OR kind = ?6)
           AND (?7 IS NULL OR severity = ?7)
           AND (raised_at < ?3 OR (raised_at = ?3 AND ?4 <> '' AND id < ?4))
         ORDER BY raised_at DESC, id DESC LIMIT ?5"
    ))
    .bind(f.host_id)
    .bind(f.state)
    .bind(before_ts)
    .bind(before_id)
    .bind(limit)
    .bind(f.kind)
    .bind(f.severity)
    .fetch_all(conn)
    .await?)
}

/// When the latest alert was resolved (for the empty alerts page).
pub async fn last_resolved_at(conn: &mut SqliteConnection) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT MAX(resolved_at) FROM alerts")
        .fetch_one(conn)
        .await?)
}

/// The statement of [`schedules`], with `$after` the condition on the
/// cursor `(?2, ?3)`: two statements, so a page after a cursor seeks the
/// host index instead of walking it from the first host.
macro_rules! schedules_sql {
    ($after:literal) => {
        concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE (?1 IS NULL OR host_id = ?1) AND ",
            $after,
            " ORDER BY host_id, id LIMIT ?4"
        )
    };
}

/// At most `limit` schedules (of one host with `host_id`) by host and id,
/// after the schedule `(host_id, id)` of `after` (`None`: from the first):
/// a page of the API's list.
pub async fn schedules(
    conn: &mut SqliteConnection,
    host_id: Option<&str>,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<crate::schedules::Schedule>> {
    let q = match after {
        Some(_) => sqlx::query_as(schedules_sql!("(host_id, id) > (?2, ?3)")),
        None => sqlx::query_as(schedules_sql!("?2 IS NULL AND ?3 IS NULL")),
    };
    Ok(q.bind(host_id)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// What the audit log is filtered by; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// The actor exactly (an account name, `name (token T)`, `system`).
    pub actor: Option<&'a str>,
    /// The action exactly (`user.update`), or a prefix ending in `.`
    /// (`user.`: every user action).
    pub action: Option<&'a str>,
    pub target_kind: Option<&'a str>,
    pub target_id: Option<&'a str>,
    /// Entries at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Entries before this time (Unix ms).
    pub until: Option<i64>,
}

/// Audit entries matching `f`, newest first, before the `(ts, id)` cursor.
pub async fn audit(
    conn: &mut SqliteConnection,
    f: &AuditFilter<'_>,
    before: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<crate::audit::Entry>> {
    let (before_ts, before_id) = before.unwrap_or((i64::MAX, i64::MAX));
    let (action_exact, action_prefix) = match f.action {
        Some(a) if a.ends_with('.') => (None, Some(format!("{}%", like_escape(a)))),
        Some(a) => (Some(a), None),
        None => (None, None),
    };
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        audit_entry_columns!(),
        " FROM audit_log
         WHERE (?1 IS NULL OR target_kind = ?1) AND (?2 IS NULL OR target_id = ?2)
           AND (?3 IS NULL OR actor = ?3)
           AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR action LIKE ?5 ESCAPE '\\')
           AND (?6 IS NULL OR ts >= ?6) AND (?7 IS NULL OR ts < ?7)
           AND (ts < ?8 OR (ts = ?8 AND id < ?9))
         ORDER BY ts DESC, id DESC LIMIT ?10"
    ))
    .bind(f.target_kind)
    .bind(f.target_id)
    .bind(f.actor)
    .bind(action_exact)
    .bind(action_prefix)
    .bind(f.since)
    .bind(f.until)
    .bind(before_ts)
    .bind(before_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// `s` with LIKE's wildcards and the escape character taken literally.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// One row of the delivery log with what it delivered.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub id: i64,
    pub outbox_id: String,
    pub attempt: i64,
    pub ts: i64,
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub alert_id: Option<String>,
    pub channel_id: String,
    pub event: String,
}

/// Delivery attempts, newest first, optionally of one alert or channel.
pub async fn deliveries(
    conn: &mut SqliteConnection,
    alert_id: Option<&str>,
    channel_id: Option<&str>,
    before: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<DeliveryAttempt>> {
    let (before_ts, before_id) = before.unwrap_or((i64::MAX, i64::MAX));
    Ok(sqlx::query_as(
        "SELECT l.id, l.outbox_id, l.attempt, l.ts, l.outcome, l.status_code, l.latency_ms, l.error,
                o.alert_id, o.channel_id, o.event
         FROM delivery_log l JOIN delivery_outbox o ON o.id = l.outbox_id
         WHERE (?1 IS NULL OR o.alert_id = ?1) AND (?2 IS NULL OR o.channel_id = ?2)
           AND (l.ts < ?3 OR (l.ts = ?3 AND l.id < ?4))
         ORDER BY l.ts DESC, l.id DESC LIMIT ?5",
    )
    .bind(alert_id)
    .bind(channel_id)
    .bind(before_ts)
    .bind(before_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
