//! Set-based statements for a batch of job results: the control plane's
//! ingest reads every job of a batch, and writes every phase row, every
//! finished job and every host summary, in one statement each (the ids
//! and values travel as one JSON array, read with `json_each`), instead of
//! a few statements per result. Each statement is a round trip to the
//! connection's worker thread; per result, those round trips cost more
//! than SQLite's own work.
//!
//! The caller decides per result from what [`jobs_by_id`] and
//! [`phases_recorded`] returned, inside the same write transaction (the
//! only writer of these rows), so nothing it read can change before its
//! writes; [`finish_rows`] still guards each row as `finish_row` does and
//! reports a disagreement as an error.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::SqliteConnection;

use crate::jobs::{Finish, Finished, Job, JobStatus, Phase};
use crate::{Result, StoreError};

/// The statuses a result may still finish (a `lost` job takes a late
/// result); the same set as `jobs::finish_row`'s guard.
pub const FINISHABLE: [&str; 4] = ["queued", "dispatched", "running", "lost"];

fn json_array<T: serde::Serialize>(v: &[T]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// The job rows of `ids` (missing ones are absent), in one statement.
pub async fn jobs_by_id(conn: &mut SqliteConnection, ids: &[&str]) -> Result<HashMap<String, Job>> {
    let rows: Vec<Job> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
    ))
    .bind(json_array(ids))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|j| (j.id.clone(), j)).collect())
}

/// Which of `ids` already have `phase` recorded (`jobs::record_phase`).
pub async fn phases_recorded(
    conn: &mut SqliteConnection,
    ids: &[&str],
    phase: Phase,
) -> Result<HashSet<String>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT job_id FROM job_ingest WHERE phase = ? AND job_id IN (SELECT value FROM json_each(?))",
    )
    .bind(phase.as_str())
    .bind(json_array(ids))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Records `phase` for every one of `ids` (already recorded ones are left
/// as they are); returns how many were new.
pub async fn record_phases(
    conn: &mut SqliteConnection,
    ids: &[&str],
    phase: Phase,
    now: i64,
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "INSERT INTO job_ingest (job_id, phase, received_at)
         SELECT value, ?, ? FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
    )
    .bind(phase.as_str())
    .bind(now)
    .bind(json_array(ids))
    .execute(conn)
    .await?
    .rows_affected())
}

/// One job a batch finishes.
pub struct FinishRow<'a> {
    pub id: &'a str,
    pub status: JobStatus,
    pub finish: &'a Finish,
}

/// [`finish_rows`]' statement. Each job is found by its primary key, one
/// per value: the unary `+` keeps SQLite from the status index, which it
/// otherwise preferred, running the `json_each` scan again for every
/// active job (12 s for 256 results among 20,000 running jobs).
pub const FINISH_SQL: &str =
    "UPDATE jobs SET status = v.status, exit_code = v.exit_code, error_kind = v.error_kind,
         error = v.error, summary_json = v.summary_json, stderr_tail = v.stderr_tail,
         restic_version = COALESCE(v.restic_version, jobs.restic_version),
         started_at = COALESCE(jobs.started_at, v.started_at), finished_at = v.finished_at
     FROM (SELECT value ->> '$.id' AS id, value ->> '$.status' AS status,
                  value ->> '$.exit_code' AS exit_code, value ->> '$.error_kind' AS error_kind,
                  value ->> '$.error' AS error, value ->> '$.summary_json' AS summary_json,
                  value ->> '$.stderr_tail' AS stderr_tail,
                  value ->> '$.restic_version' AS restic_version,
                  value ->> '$.started_at' AS started_at, value ->> '$.finished_at' AS finished_at
             FROM json_each(?)) AS v
     WHERE jobs.id = v.id AND +jobs.status IN ('queued', 'dispatched', 'running', 'lost')";

/// `jobs::finish_row` for every row, in one statement. Each must still be
/// finishable ([`FINISHABLE`]): the caller read so in this transaction, so
/// a row that was not is an error (the transaction is unusable).
pub async fn finish_rows(conn: &mut SqliteConnection, rows: &[FinishRow<'_>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            debug_assert!(r.status.is_terminal());
            let f = r.finish;
            json!({
                "id": r.id, "status": r.status.as_str(), "exit_code": f.exit_code,
                "error_kind": f.error_kind, "error": f.error, "summary_json": f.summary_json,
                "stderr_tail": f.stderr_tail, "restic_version": f.restic_version,
                "started_at": f.started_at, "finished_at": f.finished_at,
            })
        })
        .collect();
    let n = sqlx::query(FINISH_SQL)
        .bind(json_array(&values))
        .execute(conn)
        .await?
        .rows_affected();
    if n != rows.len() as u64 {
        return Err(StoreError::Conflict(format!(
            "{} of {} finished jobs were written: a job changed within its batch",
            n,
            rows.len()
        )));
    }
    Ok(())
}

/// What one host's summary takes from the jobs a batch finished for it.
fn host_values(host: &str, done: &[Finished]) -> serde_json::Value {
    let Some(last) = done.last() else {
        return json!({ "host": host });
    };
    let failed = done
        .iter()
        .filter(|d| d.status == JobStatus::Failed)
        .count();
    let backups = || done.iter().rev().filter(|d| d.kind == "backup");
    let last_backup = backups().next();
    let last_success = backups()
        .find(|d| matches!(d.status, JobStatus::Succeeded | JobStatus::Warning))
        .map(|d| d.finished_at);
    let last_snapshot = backups().find_map(|d| d.snapshot_id.clone());
    json!({
        "host": host, "last_id": last.id, "last_kind": last.kind,
        "last_status": last.status.as_str(), "last_at": last.finished_at, "failed": failed,
        "backup_status": last_backup.map(|d| d.status.as_str()),
        "backup_at": last_backup.map(|d| d.finished_at),
        "success_at": last_success, "snapshot": last_snapshot,
    })
}

/// [`summarize_hosts`]' statement: each host's row found by its key.
pub const SUMMARY_SQL: &str = "UPDATE host_summary SET
             last_job_id = COALESCE(v.last_id, last_job_id),
             last_job_kind = COALESCE(v.last_kind, last_job_kind),
             last_job_status = COALESCE(v.last_status, last_job_status),
             last_job_finished_at = COALESCE(v.last_at, last_job_finished_at),
             failed_jobs_total = failed_jobs_total + COALESCE(v.failed, 0),
             last_backup_status = COALESCE(v.backup_status, last_backup_status),
             last_backup_at = COALESCE(v.backup_at, last_backup_at),
             last_backup_success_at = COALESCE(v.success_at, last_backup_success_at),
             last_snapshot_id = COALESCE(v.snapshot, last_snapshot_id),
             running_jobs = (SELECT COUNT(*) FROM jobs WHERE host_id = v.host AND status IN ('dispatched', 'running')
                               AND status IN ('queued', 'dispatched', 'running')),
             queued_jobs = (SELECT COUNT(*) FROM jobs WHERE host_id = v.host AND status = 'queued'
                              AND status IN ('queued', 'dispatched', 'running'))
         FROM (SELECT value ->> '$.host' AS host, value ->> '$.last_id' AS last_id,
                      value ->> '$.last_kind' AS last_kind, value ->> '$.last_status' AS last_status,
                      value ->> '$.last_at' AS last_at, value ->> '$.failed' AS failed,
                      value ->> '$.backup_status' AS backup_status, value ->> '$.backup_at' AS backup_at,
                      value ->> '$.success_at' AS success_at, value ->> '$.snapshot' AS snapshot
                 FROM json_each(?)) AS v
         WHERE host_summary.host_id = v.host";

/// Every listed host's summary in one statement: its last job, failures,
/// last backup and snapshot from the jobs the batch finished for it (in
/// the order they finished; none: counts only), and its running and
/// queued counts recounted.
pub async fn summarize_hosts(
    conn: &mut SqliteConnection,
    hosts: &[(&str, &[Finished])],
) -> Result<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let values: Vec<serde_json::Value> = hosts.iter().map(|(h, d)| host_values(h, d)).collect();
    sqlx::query(SUMMARY_SQL)
        .bind(json_array(&values))
        .execute(conn)
        .await?;
    Ok(())
}
