//! The control plane's own backup: its repository setting (written by the
//! web role), its runs (written by `serve`'s control-plane backup task)
//! and the recovery-kit exports (web role and `restic-manager
//! recovery-kit`). [`Status`] is what the settings page, its JSON twin,
//! the banner and the server's warning all read, and [`next_run`] is the
//! one schedule computation the task and the page share.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// A daily backup.
pub const EVERY_MS: i64 = 24 * 3600 * 1000;
/// A failed run is tried again after this.
pub const RETRY_MS: i64 = 3600 * 1000;
/// The staging directory's name below the data directory.
pub const STAGING_DIR: &str = "controlplane-backup";
/// The restic tag of control-plane backups.
pub const TAG: &str = "restic-manager-controlplane";

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Settings {
    pub repo_id: Option<String>,
    pub run_requested_at: Option<i64>,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Run {
    pub id: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: String,
    pub repo_id: Option<String>,
    pub job_id: Option<String>,
    pub staging_dir: Option<String>,
    pub files: Option<i64>,
    pub bytes: Option<i64>,
    pub schema_version: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct KitExport {
    pub id: i64,
    pub exported_at: i64,
    pub actor: String,
    pub via: String,
    pub repo_id: Option<String>,
}

/// Everything the page, the banner and the warning need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub settings: Option<Settings>,
    pub last_run: Option<Run>,
    pub last_success: Option<Run>,
    pub last_kit: Option<KitExport>,
}

impl Status {
    /// The configured repository, if any.
    pub fn repo_id(&self) -> Option<&str> {
        self.settings.as_ref().and_then(|s| s.repo_id.as_deref())
    }

    /// A backup of the master key exists once a recovery kit was exported:
    /// a control-plane backup alone cannot be restored, since the password
    /// of its repository is stored encrypted by the master key inside it.
    pub fn master_key_backed_up(&self) -> bool {
        self.last_kit.is_some()
    }

    /// When the next run is due (ms), or `None` without a repository.
    pub fn next_run(&self) -> Option<i64> {
        let s = self.settings.as_ref()?;
        s.repo_id.as_ref()?;
        Some(next_run(self.last_run.as_ref(), s.run_requested_at))
    }
}

/// When the next run is due: at once if none ran or one was requested
/// since the last started; a day after the last success; an hour after a
/// failure (never later than a day after the last success).
pub fn next_run(last: Option<&Run>, requested_at: Option<i64>) -> i64 {
    let Some(last) = last else {
        return 0;
    };
    if requested_at.is_some_and(|r| r > last.started_at) {
        return requested_at.unwrap_or(0);
    }
    match last.status.as_str() {
        "succeeded" => last.started_at + EVERY_MS,
        // a run still going (or cut off by a restart) counts as failed
        _ => last.started_at + RETRY_MS,
    }
}

pub async fn status(c: &mut SqliteConnection) -> Result<Status> {
    Ok(Status {
        settings: settings(c).await?,
        last_run: sqlx::query_as(concat!(
            "SELECT ",
            cp_backup_run_columns!(),
            " FROM controlplane_backups ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&mut *c)
        .await?,
        last_success: sqlx::query_as(concat!(
            "SELECT ",
            cp_backup_run_columns!(),
            " FROM controlplane_backups WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&mut *c)
        .await?,
        last_kit: sqlx::query_as(concat!(
            "SELECT ",
            kit_export_columns!(),
            " FROM recovery_kit_exports ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&mut *c)
        .await?,
    })
}

pub async fn settings(c: &mut SqliteConnection) -> Result<Option<Settings>> {
    Ok(sqlx::query_as(
        "SELECT repo_id, run_requested_at, updated_at, updated_by FROM controlplane_backup_settings WHERE id = 1",
    )
    .fetch_optional(&mut *c)
    .await?)
}

/// Sets (or clears) the repository (web role).
pub async fn set_repo(
    c: &mut SqliteConnection,
    repo_id: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO controlplane_backup_settings (id, repo_id, updated_at, updated_by) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET repo_id = excluded.repo_id, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )
    .bind(repo_id)
    .bind(now)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Asks for a run now (web role); false without a repository.
pub async fn request_run(c: &mut SqliteConnection, actor: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE controlplane_backup_settings SET run_requested_at = ?, updated_at = ?, updated_by = ?
         WHERE id = 1 AND repo_id IS NOT NULL",
    )
    .bind(now)
    .bind(now)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A run begins (the backup task); returns its id.
pub async fn run_started(
    c: &mut SqliteConnection,
    repo_id: &str,
    staging_dir: &str,
    now: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO controlplane_backups (started_at, status, repo_id, staging_dir) VALUES (?, 'running', ?, ?) RETURNING id",
    )
    .bind(now)
    .bind(repo_id)
    .bind(staging_dir)
    .fetch_one(&mut *c)
    .await?)
}

/// What a run has learnt so far (the backup task).
#[derive(Debug, Clone, Default)]
pub struct RunUpdate<'a> {
    pub job_id: Option<&'a str>,
    pub files: Option<i64>,
    pub bytes: Option<i64>,
    pub schema_version: Option<i64>,
}

pub async fn run_progress(c: &mut SqliteConnection, id: i64, u: &RunUpdate<'_>) -> Result<()> {
    sqlx::query(
        "UPDATE controlplane_backups SET job_id = COALESCE(?, job_id), files = COALESCE(?, files),
         bytes = COALESCE(?, bytes), schema_version = COALESCE(?, schema_version) WHERE id = ?",
    )
    .bind(u.job_id)
    .bind(u.files)
    .bind(u.bytes)
    .bind(u.schema_version)
    .bind(id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A run ends: `error` `None` means it succeeded.
pub async fn run_finished(
    c: &mut SqliteConnection,
    id: i64,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE controlplane_backups SET finished_at = ?, status = ?, error = ? WHERE id = ?",
    )
    .bind(now)
    .bind(if error.is_some() {
        "failed"
    } else {
        "succeeded"
    })
    .bind(error)
    .bind(id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Runs still marked running from a process that ended end as failed.
pub async fn fail_unfinished(c: &mut SqliteConnection, now: i64) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE controlplane_backups SET finished_at = ?, status = 'failed',
         error = 'did not finish here: the server stopped during the run, or this database is a restored copy taken during it' WHERE status = 'running'",
    )
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(r.rows_affected())
}

pub async fn recent_runs(c: &mut SqliteConnection, limit: i64) -> Result<Vec<Run>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        cp_backup_run_columns!(),
        " FROM controlplane_backups ORDER BY id DESC LIMIT ?"
    ))
    .bind(limit)
    .fetch_all(&mut *c)
    .await?)
}

/// Records an export of the recovery kit.
pub async fn kit_exported(
    c: &mut SqliteConnection,
    actor: &str,
    via: &str,
    repo_id: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO recovery_kit_exports (exported_at, actor, via, repo_id) VALUES (?, ?, ?, ?)",
    )
    .bind(now)
    .bind(actor)
    .bind(via)
    .bind(repo_id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(started_at: i64, status: &str) -> Run {
        Run {
            id: 1,
            started_at,
            finished_at: None,
            status: status.into(),
            repo_id: None,
            job_id: None,
            staging_dir: None,
            files: None,
            bytes: None,
            schema_version: None,
            error: None,
        }
    }

    #[test]
    fn the_next_run_is_daily_an_hour_after_a_failure_and_at_once_when_asked() {
        assert_eq!(next_run(None, None), 0, "never ran: now");
        let ok = run(1_000, "succeeded");
        assert_eq!(next_run(Some(&ok), None), 1_000 + EVERY_MS);
        assert_eq!(
            next_run(Some(&ok), Some(500)),
            1_000 + EVERY_MS,
            "an older request is done"
        );
        assert_eq!(
            next_run(Some(&ok), Some(2_000)),
            2_000,
            "asked after the last run"
        );
        assert_eq!(
            next_run(Some(&run(1_000, "failed")), None),
            1_000 + RETRY_MS
        );
    }
}
