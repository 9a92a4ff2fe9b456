//! Alerts (owned by the alerts role; mutes are in [`crate::mutes`]).
//!
//! At most one unresolved alert per `(host, kind, subject)`: the partial
//! unique index `alerts_one_open` enforces it, [`raise`] is an upsert on that
//! index and every state change is a conditional `UPDATE ... RETURNING`, so
//! of two workers evaluating the same condition exactly one raises,
//! acknowledges or resolves — the other sees a bump or no row.
//!
//! `cause` names what raised an alert (a job id, a missed cron slot, an
//! offline transition); [`cause_seen`] tells the rule engine a condition was
//! already alerted on, so a condition resolved by hand is not raised again.

use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result};

/// One alert row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Alert {
    pub id: String,
    pub host_id: String,
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    pub job_id: Option<String>,
    pub raised_at: i64,
    pub last_seen_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    /// False while the host was muted when it was raised (nobody was told).
    pub notified: bool,
    pub cause: String,
}

impl Alert {
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }
}

/// An alert to raise (or to confirm, when one is already open).
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub id: &'a str,
    pub host_id: &'a str,
    pub kind: &'a str,
    /// `""` for no subject.
    pub subject: &'a str,
    pub severity: &'a str,
    pub message: &'a str,
    pub job_id: Option<&'a str>,
    pub cause: &'a str,
    pub now: i64,
    pub notified: bool,
}

/// What [`raise`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raised {
    /// A new alert: notify.
    New(Alert),
    /// An open alert for the same (host, kind, subject) was confirmed:
    /// `last_seen_at`, message, job and cause updated; nobody is notified.
    Bumped(Alert),
}

/// Raises an alert, or bumps the open one with the same key.
pub async fn raise(conn: &mut SqliteConnection, a: &NewAlert<'_>) -> Result<Raised> {
    let row: Alert = sqlx::query_as(
        concat!("INSERT INTO alerts (id, host_id, kind, subject, severity, message, job_id, raised_at, last_seen_at,
                             notified, cause)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (host_id, kind, subject) WHERE resolved_at IS NULL DO UPDATE SET
             last_seen_at = MAX(last_seen_at, excluded.last_seen_at),
             message = excluded.message,
             job_id = COALESCE(excluded.job_id, job_id),
             cause = excluded.cause
         RETURNING ", alert_columns!(), ""),
    )
    .bind(a.id)
    .bind(a.host_id)
    .bind(a.kind)
    .bind(a.subject)
    .bind(a.severity)
    .bind(a.message)
    .bind(a.job_id)
    .bind(a.now)
    .bind(a.now)
    .bind(a.notified)
    .bind(a.cause)
    .fetch_one(conn)
    .await?;
    Ok(if row.id == a.id {
        Raised::New(row)
    } else {
        Raised::Bumped(row)
    })
}

/// Whether an alert (open or not) was already raised for this cause.
pub async fn cause_seen(
    conn: &mut SqliteConnection,
    host_id: &str,
    kind: &str,
    subject: &str,
    cause: &str,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM alerts WHERE host_id = ? AND kind = ? AND subject = ? AND cause = ?",
    )
    .bind(host_id)
    .bind(kind)
    .bind(subject)
    .bind(cause)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// The open alert for a key, if any.
pub async fn open_for(
    conn: &mut SqliteConnection,
    host_id: &str,
    kind: &str,
    subject: &str,
) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts WHERE host_id = ? AND kind = ? AND subject = ? AND resolved_at IS NULL"
    ))
    .bind(host_id)
    .bind(kind)
    .bind(subject)
    .fetch_optional(conn)
    .await?)
}

/// Resolves the open alert for a key; `None` if there was none (or another
/// worker resolved it first).
pub async fn resolve_open(
    conn: &mut SqliteConnection,
    host_id: &str,
    kind: &str,
    subject: &str,
    by: &str,
    now: i64,
) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(concat!(
        "UPDATE alerts SET resolved_at = ?, resolved_by = ?
         WHERE host_id = ? AND kind = ? AND subject = ? AND resolved_at IS NULL RETURNING ",
        alert_columns!(),
        ""
    ))
    .bind(now)
    .bind(by)
    .bind(host_id)
    .bind(kind)
    .bind(subject)
    .fetch_optional(conn)
    .await?)
}

/// Resolves an alert by id; `None` if it is already resolved.
pub async fn resolve(
    conn: &mut SqliteConnection,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(
        concat!("UPDATE alerts SET resolved_at = ?, resolved_by = ? WHERE id = ? AND resolved_at IS NULL RETURNING ", alert_columns!(), ""),
    )
    .bind(now)
    .bind(by)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Acknowledges an open alert; `None` if it is resolved or already
/// acknowledged.
pub async fn acknowledge(
    conn: &mut SqliteConnection,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(concat!(
        "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?
         WHERE id = ? AND resolved_at IS NULL AND acknowledged_at IS NULL RETURNING ",
        alert_columns!(),
        ""
    ))
    .bind(now)
    .bind(by)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Records that an open alert's condition still holds.
pub async fn touch(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE alerts SET last_seen_at = MAX(last_seen_at, ?) WHERE id = ? AND resolved_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Marks an open alert as notified (raised while muted, the mute is over);
/// false if another worker did it first.
pub async fn mark_notified(conn: &mut SqliteConnection, id: &str) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(
        concat!("UPDATE alerts SET notified = 1 WHERE id = ? AND notified = 0 AND resolved_at IS NULL RETURNING ", alert_columns!(), ""),
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Alert> {
    sqlx::query_as(concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("alert", id)
}

/// Every unresolved alert, newest first.
pub async fn list_open(conn: &mut SqliteConnection) -> Result<Vec<Alert>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts WHERE resolved_at IS NULL ORDER BY raised_at DESC, id"
    ))
    .fetch_all(conn)
    .await?)
}

/// A host's alerts, newest first.
pub async fn list_for_host(
    conn: &mut SqliteConnection,
    host_id: &str,
    limit: i64,
) -> Result<Vec<Alert>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts WHERE host_id = ? ORDER BY raised_at DESC, id LIMIT ?"
    ))
    .bind(host_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

// ---------------------------------------------------------------- rule inputs
// Read-only views of tables other roles write (jobs, job_ingest,
// repositories), shaped for the rule engine.

/// Job kinds that have a `<kind>_failed` rule.
pub const RULE_JOB_KINDS: [&str; 4] = ["backup", "forget", "prune", "check"];

/// A (host, kind, repository) with a result recorded after a watermark, and
/// the largest mark (finished or ingested time) among those results.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ResultKey {
    pub host_id: String,
    pub kind: String,
    /// `""` when the job has no repository (any more).
    pub repo_id: String,
    pub mark: i64,
    /// How many results (finishes and ingests) the key has after `after`:
    /// with `mark`, what tells a key that changed from one that did not.
    pub results: i64,
}

/// [`results_since`]' statement. The unary `+` keeps SQLite off the
/// status and kind indexes: with the time bound unknown when it plans, it
/// preferred them and read every finished job ever stored. Both sides read
/// their time index's window (migration 26), the jobs side from the index
/// alone.
pub const RESULTS_SINCE_SQL: &str = "SELECT host_id, kind, repo_id, MAX(mark) AS mark, COUNT(*) AS results FROM (
     SELECT host_id, kind, COALESCE(repo_id, '') AS repo_id, finished_at AS mark FROM jobs
     WHERE finished_at > ?1 AND +kind IN ('backup', 'forget', 'prune', 'check')
       AND +status IN ('succeeded', 'warning', 'failed', 'lost')
     UNION ALL
     SELECT j.host_id, j.kind, COALESCE(j.repo_id, ''), i.received_at FROM job_ingest i
     JOIN jobs j ON j.id = i.job_id
     WHERE i.received_at > ?1 AND i.phase = 'done' AND +j.kind IN ('backup', 'forget', 'prune', 'check')
       AND +j.status IN ('succeeded', 'warning', 'failed', 'lost'))
 GROUP BY host_id, kind, repo_id";

/// Keys whose jobs finished — or whose results were ingested — after
/// `after`. A result ingested late (an agent replaying its outbox) carries
/// an old `finished_at` but a new ingest time, so it is found too.
pub async fn results_since(conn: &mut SqliteConnection, after: i64) -> Result<Vec<ResultKey>> {
    Ok(sqlx::query_as(RESULTS_SINCE_SQL)
        .bind(after)
        .fetch_all(conn)
        .await?)
}

/// [`latest_result`]'s statement: the newest rows of the key, in the
/// order of `jobs_key_finished` (migration 26), so it reads what it
/// returns and sorts nothing, however long the host's history.
pub const LATEST_RESULT_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE host_id = ? AND kind = ? AND COALESCE(repo_id, '') = ?
       AND status IN ('succeeded', 'warning', 'failed', 'lost') AND finished_at IS NOT NULL
     ORDER BY finished_at DESC, id DESC LIMIT 1"
);

/// The latest decisive result (succeeded, warning, failed or lost — not
/// cancelled) of a kind for a host and repository (`""` = none).
pub async fn latest_result(
    conn: &mut SqliteConnection,
    host_id: &str,
    kind: &str,
    repo_id: &str,
) -> Result<Option<crate::jobs::Job>> {
    Ok(sqlx::query_as(LATEST_RESULT_SQL)
        .bind(host_id)
        .bind(kind)
        .bind(repo_id)
        .fetch_optional(conn)
        .await?)
}

/// A successful backup for the `backup_anomaly` rule: its place in the
/// host's order (`finished_at`, then id), when its result reached us
/// (`mark`: the later of its finish and its `done` ingest; for a backup
/// finished after the pass's `after`, its finish) and restic's summary.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BackupSuccess {
    pub id: String,
    pub finished_at: i64,
    pub mark: i64,
    pub summary_json: Option<String>,
}

/// [`backup_successes`]' statement. Through `jobs_key_finished`
/// (migration 26) the `LIMIT` stops the scan; through the host's status
/// index it read every successful backup the host ever made, and sorted
/// them. The ingest time is looked up only for backups finished before
/// `after` (`?3`): one finished after it is new by its finish alone.
pub const BACKUP_SUCCESSES_SQL: &str = "SELECT j.id, j.finished_at,
        CASE WHEN j.finished_at > ?3 THEN j.finished_at
             ELSE MAX(j.finished_at, COALESCE((SELECT MAX(i.received_at) FROM job_ingest i
                                              WHERE i.job_id = j.id AND i.phase = 'done'), j.finished_at))
        END AS mark,
        j.summary_json
 FROM jobs j WHERE j.host_id = ?1 AND j.kind = 'backup' AND COALESCE(j.repo_id, '') = ?2
   AND j.status IN ('succeeded', 'warning') AND j.finished_at IS NOT NULL
 ORDER BY j.finished_at DESC, j.id DESC LIMIT ?4";

/// The newest `limit` successful backups (succeeded or warning) of a host
/// to a repository, newest first, with their marks as far as they matter
/// to a pass that looks at results after `after` (see [`BackupSuccess`]).
pub async fn backup_successes(
    conn: &mut SqliteConnection,
    host_id: &str,
    repo_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<BackupSuccess>> {
    Ok(sqlx::query_as(BACKUP_SUCCESSES_SQL)
        .bind(host_id)
        .bind(repo_id)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// [`backup_successes_after`]' statement: [`BACKUP_SUCCESSES_SQL`] for
/// the backups after a place (`finished_at`, job id) only, from the same
/// index range.
pub const BACKUP_SUCCESSES_AFTER_SQL: &str = "SELECT j.id, j.finished_at,
        CASE WHEN j.finished_at > ?3 THEN j.finished_at
             ELSE MAX(j.finished_at, COALESCE((SELECT MAX(i.received_at) FROM job_ingest i
                                              WHERE i.job_id = j.id AND i.phase = 'done'), j.finished_at))
        END AS mark,
        j.summary_json
 FROM jobs j WHERE j.host_id = ?1 AND j.kind = 'backup' AND COALESCE(j.repo_id, '') = ?2
   AND j.status IN ('succeeded', 'warning') AND j.finished_at IS NOT NULL
   AND (j.finished_at, j.id) > (?5, ?6)
 ORDER BY j.finished_at DESC, j.id DESC LIMIT ?4";

/// [`backup_successes`], only those after `place` (`finished_at`, job id):
/// what a caller that holds the key's earlier backups still needs.
pub async fn backup_successes_after(
    conn: &mut SqliteConnection,
    host_id: &str,
    repo_id: &str,
    after: i64,
    place: (i64, &str),
    limit: i64,
) -> Result<Vec<BackupSuccess>> {
    Ok(sqlx::query_as(BACKUP_SUCCESSES_AFTER_SQL)
        .bind(host_id)
        .bind(repo_id)
        .bind(after)
        .bind(limit)
        .bind(place.0)
        .bind(place.1)
        .fetch_all(conn)
        .await?)
}

/// The place (`finished_at`, job id) of the newest backup any
/// `backup_anomaly` alert (open or not) of a host and repository names:
/// every backup up to it was judged already.
pub async fn last_anomaly_judged(
    conn: &mut SqliteConnection,
    host_id: &str,
    repo_id: &str,
) -> Result<Option<(i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT j.finished_at, j.id FROM alerts a JOIN jobs j ON j.id = a.job_id
         WHERE a.host_id = ? AND a.kind = 'backup_anomaly' AND a.subject = ? AND j.finished_at IS NOT NULL
         ORDER BY j.finished_at DESC, j.id DESC LIMIT 1",
    )
    .bind(host_id)
    .bind(repo_id)
    .fetch_optional(conn)
    .await?)
}

/// When a schedule's latest successful run (succeeded or warning) finished.
pub async fn last_schedule_success(
    conn: &mut SqliteConnection,
    schedule_id: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MAX(finished_at) FROM jobs WHERE schedule_id = ? AND status IN ('succeeded', 'warning')",
    )
    .bind(schedule_id)
    .fetch_one(conn)
    .await?)
}

/// A repository's display name, if it exists.
pub async fn repo_name(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM repositories WHERE id = ?")
            .bind(repo_id)
            .fetch_optional(conn)
            .await?,
    )
}
