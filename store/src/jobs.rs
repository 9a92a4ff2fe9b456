//! Jobs: lifecycle (queued → dispatched → running → finished), idempotent
//! ingest by (job, phase), capped logs, and the host summary they feed.

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result, StoreError};

/// Job lifecycle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    /// The agent acknowledged the dispatch (it persisted the job).
    Dispatched,
    Running,
    Succeeded,
    /// Finished but incomplete (e.g. a partial backup).
    Warning,
    Failed,
    Cancelled,
    /// The agent does not know it any more; its result will never come.
    Lost,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        Self::Queued,
        Self::Dispatched,
        Self::Running,
        Self::Succeeded,
        Self::Warning,
        Self::Failed,
        Self::Cancelled,
        Self::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Warning => "warning",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt {
                what: "job status",
                detail: s.to_owned(),
            })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Warning | Self::Failed | Self::Cancelled | Self::Lost
        )
    }

    pub fn from_outcome(o: rm_bus::msg::JobOutcome) -> Self {
        use rm_bus::msg::JobOutcome as O;
        match o {
            O::Succeeded => Self::Succeeded,
            O::Warning => Self::Warning,
            O::Cancelled => Self::Cancelled,
            O::Failed | O::Unknown => Self::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Job {
    pub id: String,
    pub host_id: String,
    pub exec_host_id: String,
    pub repo_id: Option<String>,
    pub kind: String,
    pub params_json: String,
    pub origin: String,
    pub schedule_id: Option<String>,
    pub status: String,
    pub cancel_requested: bool,
    pub timeout_secs: i64,
    pub created_by: String,
    pub created_at: i64,
    pub dispatched_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub summary_json: Option<String>,
    pub stderr_tail: Option<String>,
    pub restic_version: Option<String>,
    pub log_lines: i64,
    pub log_truncated: bool,
}

impl Job {
    pub fn status(&self) -> Result<JobStatus> {
        JobStatus::parse(&self.status)
    }

    pub fn params(&self) -> Result<rm_bus::msg::JobParams> {
        crate::from_json("job parameters", &self.params_json)
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub host_id: &'a str,
    pub exec_host_id: &'a str,
    pub repo_id: Option<&'a str>,
    pub params: &'a rm_bus::msg::JobParams,
    pub origin: &'a str,
    pub schedule_id: Option<&'a str>,
    pub status: JobStatus,
    pub timeout_secs: i64,
    pub created_by: &'a str,
    pub created_at: i64,
    pub started_at: Option<i64>,
}

fn kind_str(p: &rm_bus::msg::JobParams) -> String {
    serde_json::to_value(p.kind())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

pub async fn insert(conn: &mut SqliteConnection, j: &NewJob<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, schedule_id, status,
                           timeout_secs, created_by, created_at, started_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(j.id)
    .bind(j.host_id)
    .bind(j.exec_host_id)
    .bind(j.repo_id)
    .bind(kind_str(j.params))
    .bind(crate::to_json(j.params))
    .bind(j.origin)
    .bind(j.schedule_id)
    .bind(j.status.as_str())
    .bind(j.timeout_secs)
    .bind(j.created_by)
    .bind(j.created_at)
    .bind(j.started_at)
    .execute(&mut *conn)
    .await?;
    refresh_counts(conn, j.host_id).await
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Job> {
    find(conn, id).await?.found("job", id)
}

pub async fn find(conn: &mut SqliteConnection, id: &str) -> Result<Option<Job>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// queued → dispatched. False if the job is no longer queued.
pub async fn set_dispatched(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<bool> {
    let n = sqlx::query("UPDATE jobs SET status = 'dispatched', dispatched_at = ?, active_since = ?, error = NULL, claimed_at = NULL
         WHERE id = ? AND status = 'queued'")
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Kinds that need their repository to themselves: while one of them is
/// active on a repository no other job runs there, and while any job is
/// active none of them starts.
pub const EXCLUSIVE_KINDS: [&str; 3] = ["forget", "prune", "check"];

/// Is `kind` one of [`EXCLUSIVE_KINDS`]?
pub fn is_exclusive(kind: &str) -> bool {
    EXCLUSIVE_KINDS.contains(&kind)
}

/// SQL true when job `j` (an alias) may not start on its repository now:
/// another job there is active (dispatched, running, or queued with a
/// claim) and one of the two is exclusive. One expression, used by every
/// statement that claims a repository, so they cannot disagree.
pub const REPO_CONFLICT: &str = "EXISTS (SELECT 1 FROM jobs o
     WHERE o.repo_id = j.repo_id AND o.id <> j.id AND o.status IN ('queued', 'dispatched', 'running')
       AND (o.status IN ('dispatched', 'running') OR (o.status = 'queued' AND o.claimed_at IS NOT NULL))
       AND (j.kind IN ('forget', 'prune', 'check') OR o.kind IN ('forget', 'prune', 'check')))";

/// Claims `id`'s repository for a dispatch, atomically: one conditional
/// UPDATE, so two dispatchers (or a dispatcher and an agent's scheduled
/// run) can never both pass the "repository busy" check. False when the
/// job is no longer queued or its repository is busy; it stays queued.
pub async fn claim_for_dispatch(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<bool> {
    let sql = format!(
        "UPDATE jobs AS j SET claimed_at = ? WHERE j.id = ? AND j.status = 'queued'
           AND (j.repo_id IS NULL OR NOT {REPO_CONFLICT})"
    );
    let n = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Gives up a dispatch claim (the send failed or was refused). A no-op for
/// a job that left `queued` meanwhile. True when a claim was dropped, so
/// jobs that waited for the repository may go now.
pub async fn release_claim(conn: &mut SqliteConnection, id: &str) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET claimed_at = NULL WHERE id = ? AND status = 'queued' AND claimed_at IS NOT NULL",
    )
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// [`release_all_claims`]' statement. A claim is set on a queued job
/// only and read on one only (`REPO_CONFLICT`), so only queued jobs are
/// looked at: found by their status, not by reading every job ever stored
/// (a full scan of 1.9 million rows at every start, stop 57).
pub const RELEASE_ALL_CLAIMS_SQL: &str =
    "UPDATE jobs SET claimed_at = NULL WHERE status = 'queued' AND claimed_at IS NOT NULL";

/// Clears every dispatch claim: the control plane starting, so no dispatch
/// of an earlier process is still in flight.
pub async fn release_all_claims(conn: &mut SqliteConnection) -> Result<u64> {
    Ok(sqlx::query(RELEASE_ALL_CLAIMS_SQL)
        .execute(conn)
        .await?
        .rows_affected())
}

/// The job that holds a repository a scheduled exclusive job may not run
/// on now: searched among the repository's active jobs (`+created_at`:
/// ordered by the created time, SQLite walked the repository's whole
/// history in `jobs_repo_created` instead, stop 57).
pub const SCHEDULED_BUSY_SQL: &str =
    "SELECT id, kind FROM jobs WHERE repo_id = ? AND id <> ? AND status IN ('queued', 'dispatched', 'running')
       AND (status IN ('dispatched', 'running') OR (status = 'queued' AND claimed_at IS NOT NULL))
     ORDER BY +created_at LIMIT 1";

/// The answer to an agent asking to run a scheduled exclusive job.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduledClaim {
    /// Recorded as dispatched now (or it already was): run it.
    Granted,
    /// Another job holds the repository: ask again later.
    Busy {
        other_id: String,
        other_kind: String,
    },
    /// This job id is already finished: do not run it.
    Finished,
}

/// An agent asks to start scheduled job `j` (status ignored: it becomes
/// `dispatched`). Inserted only when its repository is free, in the same
/// statement that checks, so the job then counts as active for every
/// other claim and dispatch. A repeated ask for a job already recorded
/// active is granted again.
pub async fn claim_scheduled(
    conn: &mut SqliteConnection,
    j: &NewJob<'_>,
) -> Result<ScheduledClaim> {
    if let Some(existing) = find(&mut *conn, j.id).await? {
        return Ok(match existing.status()? {
            s if s.is_terminal() => ScheduledClaim::Finished,
            JobStatus::Queued => ScheduledClaim::Busy {
                other_id: existing.id,
                other_kind: existing.kind,
            },
            _ => ScheduledClaim::Granted,
        });
    }
    let sql = format!(
        "INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, schedule_id, status,
                           timeout_secs, created_by, created_at, dispatched_at, active_since)
         SELECT j.id, ?, ?, j.repo_id, j.kind, ?, ?, ?, 'dispatched', ?, ?, ?, ?, ?
         FROM (SELECT ? AS id, ? AS repo_id, ? AS kind) AS j
         WHERE NOT {REPO_CONFLICT}"
    );
    let n = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(j.host_id)
        .bind(j.exec_host_id)
        .bind(crate::to_json(j.params))
        .bind(j.origin)
        .bind(j.schedule_id)
        .bind(j.timeout_secs)
        .bind(j.created_by)
        .bind(j.created_at)
        .bind(j.created_at)
        .bind(j.created_at)
        .bind(j.id)
        .bind(j.repo_id)
        .bind(kind_str(j.params))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n > 0 {
        refresh_counts(conn, j.host_id).await?;
        return Ok(ScheduledClaim::Granted);
    }
    let other: Option<(String, String)> = sqlx::query_as(SCHEDULED_BUSY_SQL)
        .bind(j.repo_id)
        .bind(j.id)
        .fetch_optional(conn)
        .await?;
    let (other_id, other_kind) = other.unwrap_or_default();
    Ok(ScheduledClaim::Busy {
        other_id,
        other_kind,
    })
}

/// queued/dispatched → running. False if the job already moved on.
pub async fn set_running(conn: &mut SqliteConnection, id: &str, started_at: i64) -> Result<bool> {
    match set_running_row(&mut *conn, id, started_at).await? {
        Some(h) => {
            refresh_counts(conn, &h).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The job row only of [`set_running`]: its host (whose counts the caller
/// refreshes, e.g. once per batch with [`summarize_finished`]), or `None`
/// if the job was not queued or dispatched.
pub async fn set_running_row(
    conn: &mut SqliteConnection,
    id: &str,
    started_at: i64,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET status = 'running', started_at = ?, dispatched_at = COALESCE(dispatched_at, ?)
         WHERE id = ? AND status IN ('queued', 'dispatched') RETURNING host_id",
    )
    .bind(started_at)
    .bind(started_at)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The result of a job.
#[derive(Debug, Clone, Default)]
pub struct Finish {
    pub exit_code: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub summary_json: Option<String>,
    pub stderr_tail: Option<String>,
    pub restic_version: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: i64,
}

/// Any non-terminal state → `status` (terminal). Updates the host summary.
/// A job marked `lost` still takes a real result that arrives late.
/// False if the job had already finished (the first result wins).
pub async fn finish(
    conn: &mut SqliteConnection,
    id: &str,
    status: JobStatus,
    f: &Finish,
) -> Result<bool> {
    let Some(done) = finish_row(&mut *conn, id, status, f).await? else {
        return Ok(false);
    };
    let host = done.host_id.clone();
    summarize_finished(conn, &host, std::slice::from_ref(&done)).await?;
    Ok(true)
}

/// A job [`finish_row`] ended: what its host's summary needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub id: String,
    pub host_id: String,
    pub kind: String,
    pub status: JobStatus,
    pub finished_at: i64,
    /// The snapshot a backup's summary names.
    pub snapshot_id: Option<String>,
}

/// The job row only of [`finish`]: the host summary is left to
/// [`summarize_finished`], so a batch of results updates each host once.
/// `None` if the job had already finished.
pub async fn finish_row(
    conn: &mut SqliteConnection,
    id: &str,
    status: JobStatus,
    f: &Finish,
) -> Result<Option<Finished>> {
    debug_assert!(status.is_terminal());
    let row: Option<(String, String)> = sqlx::query_as(
        "UPDATE jobs SET status = ?, exit_code = ?, error_kind = ?, error = ?, summary_json = ?, stderr_tail = ?,
             restic_version = COALESCE(?, restic_version), started_at = COALESCE(started_at, ?), finished_at = ?
         WHERE id = ? AND status IN ('queued', 'dispatched', 'running', 'lost') RETURNING host_id, kind",
    )
    .bind(status.as_str())
    .bind(f.exit_code)
    .bind(&f.error_kind)
    .bind(&f.error)
    .bind(&f.summary_json)
    .bind(&f.stderr_tail)
    .bind(&f.restic_version)
    .bind(f.started_at)
    .bind(f.finished_at)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((host_id, kind)) = row else {
        return Ok(None);
    };
    let snapshot_id = f
        .summary_json
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| {
            v.get("snapshot_id")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        });
    Ok(Some(Finished {
        id: id.to_owned(),
        host_id,
        kind,
        status,
        finished_at: f.finished_at,
        snapshot_id,
    }))
}

/// Brings `host`'s summary up to date after `done` (its jobs, in the
/// order they finished) in ONE statement: the last job, failures counted,
/// the last backup, its last successful backup and snapshot, and the
/// running/queued counts. The same as applying them one by one.
pub async fn summarize_finished(
    conn: &mut SqliteConnection,
    host: &str,
    done: &[Finished],
) -> Result<()> {
    crate::results::summarize_hosts(conn, &[(host, done)]).await
}

/// Flags a job for cancellation. A queued job is cancelled at once (it
/// never reached an agent); returns the job as it is now.
pub async fn request_cancel(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<Job> {
    let job = get(&mut *conn, id).await?;
    match job.status()? {
        JobStatus::Queued => {
            finish(
                &mut *conn,
                id,
                JobStatus::Cancelled,
                &Finish {
                    error: Some("cancelled before it was dispatched".into()),
                    finished_at: now,
                    ..Finish::default()
                },
            )
            .await?;
        }
        s if s.is_terminal() => {}
        _ => {
            sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    get(conn, id).await
}

/// [`queued_for`]'s statement. Each statement that looks for active jobs
/// writes `status IN ('queued', 'dispatched', 'running')` (migration 27's
/// partial indexes are used only then), even beside a narrower status.
pub const QUEUED_FOR_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE exec_host_id = ? AND status = 'queued' AND status IN ('queued', 'dispatched', 'running')
     ORDER BY created_at, id"
);

/// Jobs to run on `exec_host` that wait for dispatch, oldest first.
pub async fn queued_for(conn: &mut SqliteConnection, exec_host: &str) -> Result<Vec<Job>> {
    Ok(sqlx::query_as(QUEUED_FOR_SQL)
        .bind(exec_host)
        .fetch_all(conn)
        .await?)
}

/// [`dispatchable_for`]'s statement.
pub const DISPATCHABLE_FOR_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE exec_host_id = ? AND status = 'queued' AND status IN ('queued', 'dispatched', 'running')
       AND COALESCE(not_before, 0) <= ?
     ORDER BY created_at, id"
);

/// Queued jobs of `exec_host` that may be sent now (none refused for now
/// with a wait not yet over), oldest first.
pub async fn dispatchable_for(
    conn: &mut SqliteConnection,
    exec_host: &str,
    now: i64,
) -> Result<Vec<Job>> {
    Ok(sqlx::query_as(DISPATCHABLE_FOR_SQL)
        .bind(exec_host)
        .bind(now)
        .fetch_all(conn)
        .await?)
}

/// The agent refused `id` for a reason that may pass: it stays queued, is
/// not sent again for `first_wait_ms` doubled per earlier refusal (at most
/// `max_wait_ms`), and shows the reason in `error`. Returns the refusals so
/// far and the time it may go again; `None` if it is no longer queued.
pub async fn requeue(
    conn: &mut SqliteConnection,
    id: &str,
    reason: &str,
    now: i64,
    first_wait_ms: i64,
    max_wait_ms: i64,
) -> Result<Option<(i64, i64)>> {
    let refusals: Option<i64> =
        sqlx::query_scalar("SELECT refusals FROM jobs WHERE id = ? AND status = 'queued'")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(earlier) = refusals else {
        return Ok(None);
    };
    let n = earlier + 1;
    let factor = 1_i64
        .checked_shl(u32::try_from(earlier.min(30)).unwrap_or(30))
        .unwrap_or(i64::MAX);
    let wait = first_wait_ms.saturating_mul(factor).min(max_wait_ms);
    let not_before = now.saturating_add(wait);
    sqlx::query("UPDATE jobs SET refusals = ?, not_before = ?, error = ? WHERE id = ? AND status = 'queued'")
        .bind(n)
        .bind(not_before)
        .bind(format!("{reason} (refused {n} time(s); sent again after a wait)"))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(Some((n, not_before)))
}

/// [`active_for`]'s statement.
pub const ACTIVE_FOR_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE exec_host_id = ? AND status IN ('dispatched', 'running')
       AND status IN ('queued', 'dispatched', 'running')
     ORDER BY created_at, id"
);

/// Jobs the agent on `exec_host` should know about (dispatched or running).
pub async fn active_for(conn: &mut SqliteConnection, exec_host: &str) -> Result<Vec<Job>> {
    Ok(sqlx::query_as(ACTIVE_FOR_SQL)
        .bind(exec_host)
        .fetch_all(conn)
        .await?)
}

/// [`unfinished_on_repo`]'s statement. The `+` keeps SQLite from reading
/// every job of the repository in `created_at` order rather than the
/// active ones from their partial index.
pub const UNFINISHED_ON_REPO_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE repo_id = ? AND status IN ('queued', 'dispatched', 'running') ORDER BY +created_at, id"
);

/// Jobs on `repo_id` that have not ended (queued, dispatched or running).
pub async fn unfinished_on_repo(conn: &mut SqliteConnection, repo_id: &str) -> Result<Vec<Job>> {
    Ok(sqlx::query_as(UNFINISHED_ON_REPO_SQL)
        .bind(repo_id)
        .fetch_all(conn)
        .await?)
}

/// Exec hosts that have queued jobs (for the dispatcher's sweep).
pub async fn hosts_with_queued(conn: &mut SqliteConnection) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT exec_host_id FROM jobs WHERE status = 'queued'")
            .fetch_all(conn)
            .await?,
    )
}

/// A host's jobs, newest first (keyset pagination on created_at).
pub async fn list_for_host(
    conn: &mut SqliteConnection,
    host_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Job>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE host_id = ? AND created_at < ? ORDER BY created_at DESC, id DESC LIMIT ?"
    ))
    .bind(host_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// All jobs, newest first.
pub async fn list_recent(
    conn: &mut SqliteConnection,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Job>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE created_at < ? ORDER BY created_at DESC, id DESC LIMIT ?"
    ))
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Ends the queued system refreshes of `repo_id` whose host is not online
/// (they would block every later refresh of the repository until that
/// host came back) as cancelled, with the reason. Returns (job, host) of
/// each, for events.
pub async fn supersede_stale_refreshes(
    conn: &mut SqliteConnection,
    repo_id: &str,
    now: i64,
) -> Result<Vec<(String, String)>> {
    let stale: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT j.id, j.host_id, h.name FROM jobs j JOIN hosts h ON h.id = j.exec_host_id
         WHERE j.repo_id = ? AND j.origin = 'system' AND j.status = 'queued'
           AND j.status IN ('queued', 'dispatched', 'running') AND h.status <> 'online'",
    )
    .bind(repo_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(stale.len());
    for (id, host, name) in stale {
        let f = Finish {
            error: Some(format!(
                "superseded: host {name} went offline before this refresh reached it; a newer refresh replaces it"
            )),
            finished_at: now,
            ..Finish::default()
        };
        if finish(&mut *conn, &id, JobStatus::Cancelled, &f).await? {
            out.push((id, host));
        }
    }
    Ok(out)
}

/// Is a system refresh (snapshots/stats) of `repo_id` waiting or running?
pub async fn system_refresh_pending(conn: &mut SqliteConnection, repo_id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE repo_id = ? AND origin = 'system' AND status IN ('queued', 'dispatched', 'running')",
    )
    .bind(repo_id)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// Records that the control plane saw `id` become active at `now` (its
/// own clock): the deadline sweeper counts the job's timeout from here.
pub async fn touch_active(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET active_since = ? WHERE id = ? AND status IN ('dispatched', 'running')",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A job the deadline sweeper must end, with what it needs to say why.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Overdue {
    pub id: String,
    pub host_id: String,
    pub exec_host_id: String,
    pub repo_id: Option<String>,
    pub status: String,
    pub cancel_requested: bool,
    pub timeout_secs: i64,
    pub host_name: String,
    pub host_status: String,
    /// Dispatched (never started) on a host offline for the grace: the
    /// job is taken not to run, so its repository is given back now
    /// rather than at the job's timeout.
    pub offline_before_start: bool,
}

/// [`overdue`]'s statement (`?1` now, `?2` the grace, `?3` the default
/// timeout, all ms). Its first term confines it to active jobs. Without
/// it, on a store with statistics (after an `ANALYZE`), SQLite walked
/// every job ever stored in `created_at` order on every sweep (5.5 s on a
/// store of 1,000,000 jobs, every heartbeat interval); without statistics
/// it searched the status index.
pub const OVERDUE_SQL: &str = "SELECT j.id, j.host_id, j.exec_host_id, j.repo_id, j.status, j.cancel_requested, j.timeout_secs,
            h.name AS host_name, h.status AS host_status,
            (j.status = 'dispatched' AND h.status = 'offline'
             AND COALESCE(h.last_seen_at, 0) + ?2 < ?1) AS offline_before_start
     FROM jobs j JOIN hosts h ON h.id = j.exec_host_id
     WHERE j.status IN ('queued', 'dispatched', 'running')
       AND ((j.status = 'queued' AND h.status = 'revoked')
         OR (j.status IN ('dispatched', 'running') AND (
               h.status = 'revoked'
            OR COALESCE(j.active_since, j.dispatched_at, j.created_at)
               + (CASE WHEN j.timeout_secs > 0 THEN j.timeout_secs * 1000 ELSE ?3 END) + ?2 < ?1
            OR (j.cancel_requested AND h.status <> 'online' AND COALESCE(h.last_seen_at, 0) + ?2 < ?1)
            OR (j.status = 'dispatched' AND h.status = 'offline' AND COALESCE(h.last_seen_at, 0) + ?2 < ?1))))
     ORDER BY j.created_at, j.id";

/// Jobs that will never end on their own: queued or active jobs of a
/// revoked executing host; active jobs past their timeout (`default_ms`
/// when they have none) plus `grace_ms`, counted from when the control
/// plane saw them become active; and active jobs an operator cancelled
/// whose host has been silent for `grace_ms`; and dispatched jobs that
/// never started on a host offline (silent) for `grace_ms`, which would
/// otherwise hold their repository until their timeout.
pub async fn overdue(
    conn: &mut SqliteConnection,
    now: i64,
    grace_ms: i64,
    default_ms: i64,
) -> Result<Vec<Overdue>> {
    Ok(sqlx::query_as(OVERDUE_SQL)
        .bind(now)
        .bind(grace_ms)
        .bind(default_ms)
        .fetch_all(conn)
        .await?)
}

/// Of `ids`, those this store holds as cancelled (an agent that still
/// holds one must be told to stop it).
pub async fn cancelled_among(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for id in ids {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if status.as_deref() == Some("cancelled") {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// Phase of an at-least-once agent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Started,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Done => "done",
        }
    }
}

/// Records that (job, phase) was ingested. False if it already was: the
/// message is a replay and must not be applied again.
pub async fn record_phase(
    conn: &mut SqliteConnection,
    job_id: &str,
    phase: Phase,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query("INSERT INTO job_ingest (job_id, phase, received_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
        .bind(job_id)
        .bind(phase.as_str())
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct LogLine {
    pub job_id: String,
    pub seq: i64,
    pub ts: i64,
    pub stream: String,
    pub text: String,
}

/// Appends lines, keeping at most `cap` per job; lines past the cap are
/// counted and the job flagged as truncated. Duplicate seqs are ignored.
pub async fn append_logs(
    conn: &mut SqliteConnection,
    job_id: &str,
    first_seq: i64,
    lines: &[(i64, &str, &str)],
    cap: i64,
) -> Result<()> {
    let count: Option<i64> = sqlx::query_scalar("SELECT log_lines FROM jobs WHERE id = ?")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(mut count) = count else {
        return Err(StoreError::not_found("job", job_id));
    };
    let mut truncated = false;
    for (i, (ts, stream, text)) in lines.iter().enumerate() {
        if count >= cap {
            truncated = true;
            break;
        }
        let n = sqlx::query("INSERT INTO job_logs (job_id, seq, ts, stream, text) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(job_id)
            .bind(first_seq + i as i64)
            .bind(ts)
            .bind(stream)
            .bind(text)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        count += n as i64;
    }
    sqlx::query("UPDATE jobs SET log_lines = ?, log_truncated = log_truncated OR ? WHERE id = ?")
        .bind(count)
        .bind(truncated)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn logs(conn: &mut SqliteConnection, job_id: &str) -> Result<Vec<LogLine>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        log_line_columns!(),
        " FROM job_logs WHERE job_id = ? ORDER BY seq"
    ))
    .bind(job_id)
    .fetch_all(conn)
    .await?)
}

/// Recomputes a host's running/queued counts from its active jobs (an
/// indexed lookup of the few non-terminal rows, done on write).
async fn refresh_counts(conn: &mut SqliteConnection, host_id: &str) -> Result<()> {
    crate::results::summarize_hosts(conn, &[(host_id, &[])]).await
}
