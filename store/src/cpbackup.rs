//! The control plane's own backup: its repository setting (written by the
//! web role), its runs (written by `serve`'s control-plane backup task)
//! and the recovery-kit exports (web role and `restic-manager
//! recovery-kit`). [`Status`] is what the settings page, its JSON twin,
//! the banner and the server's warning all read, and [`next_run`] is the
//! one schedule computation the task and the page share: daily at the
//! configured time of day ([`Settings::daily`]) in its time zone, through
//! `rm_cron` like every other schedule.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// The time of day of the backup unless an admin chose one: 02:00.
pub const DEFAULT_RUN_AT_MINUTE: i64 = 2 * 60;
/// A failed run is tried again after this.
pub const RETRY_MS: i64 = 3600 * 1000;
/// A run still marked running after this long is taken as cut off (its
/// process ended without recording an outcome): the task gives a run an
/// hour of restic and five minutes more before it gives up.
pub const RUN_STALE_MS: i64 = 2 * 3600 * 1000;
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
    /// Minutes after midnight (`None`: [`DEFAULT_RUN_AT_MINUTE`]).
    pub run_at_minute: Option<i64>,
    /// IANA zone of that time (`None`: the server's).
    pub time_zone: Option<String>,
}

impl Settings {
    /// Minutes after midnight the backup runs at.
    pub fn run_at_minute(&self) -> i64 {
        self.run_at_minute
            .filter(|m| (0..24 * 60).contains(m))
            .unwrap_or(DEFAULT_RUN_AT_MINUTE)
    }

    /// The zone the time of day is in: the chosen one, else the server's.
    pub fn zone(&self) -> String {
        self.time_zone
            .clone()
            .unwrap_or_else(rm_cron::system_zone_name)
    }

    /// The daily schedule; a zone this machine no longer knows falls back
    /// to UTC (the page shows which zone is used).
    pub fn daily(&self) -> rm_cron::CronSchedule {
        daily(self.run_at_minute(), &self.zone())
            .or_else(|_| daily(self.run_at_minute(), "UTC"))
            .unwrap_or_else(|_| utc_fallback())
    }
}

/// Every day at `minute` after midnight in `zone`.
pub fn daily(
    minute: i64,
    zone: &str,
) -> std::result::Result<rm_cron::CronSchedule, rm_cron::CronError> {
    let m = minute.clamp(0, 24 * 60 - 1);
    rm_cron::CronSchedule::parse(&format!("{} {} * * *", m % 60, m / 60), zone)
}

fn utc_fallback() -> rm_cron::CronSchedule {
    // a fixed valid expression in UTC: parse cannot fail
    #[allow(clippy::expect_used)]
    rm_cron::CronSchedule::parse("0 2 * * *", "UTC").expect("a valid schedule")
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

impl Run {
    /// Still going at `now`: marked running, and not for so long
    /// ([`RUN_STALE_MS`]) that its process must have ended without a word.
    pub fn in_progress(&self, now: i64) -> bool {
        self.status == "running" && now - self.started_at < RUN_STALE_MS
    }
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

    /// The run in progress at `now`, if any (a run marked running for
    /// longer than [`RUN_STALE_MS`] is not).
    pub fn running(&self, now: i64) -> Option<&Run> {
        self.last_run.as_ref().filter(|r| r.in_progress(now))
    }

    /// When the next run is due (ms), or `None` without a repository.
    pub fn next_run(&self) -> Option<i64> {
        let s = self.settings.as_ref()?;
        s.repo_id.as_ref()?;
        Some(next_run(
            self.last_run.as_ref(),
            s.run_requested_at,
            &s.daily(),
        ))
    }
}

/// When the next run is due: at once if none ran or one was requested
/// since the last started; else the first time of day of `daily` after
/// the last run started — a time missed while the server was down is
/// therefore due at once, and only once; an hour after a failure, unless
/// the time of day comes sooner.
pub fn next_run(
    last: Option<&Run>,
    requested_at: Option<i64>,
    daily: &rm_cron::CronSchedule,
) -> i64 {
    let Some(last) = last else {
        return 0;
    };
    if requested_at.is_some_and(|r| r > last.started_at) {
        return requested_at.unwrap_or(0);
    }
    // a daily expression always matches again; a day later if it did not
    let slot = daily
        .next_after_ms(last.started_at)
        .unwrap_or(last.started_at + 24 * 3600 * 1000);
    match last.status.as_str() {
        "succeeded" => slot,
        // a run still going (or cut off by a restart) counts as failed
        _ => slot.min(last.started_at + RETRY_MS),
    }
}

pub async fn status(c: &mut SqliteConnection) -> Result<Status> {
    Ok(Status {
        settings: settings(c).await?,
        last_run: last_run(c).await?,
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

/// The latest run, whatever its outcome.
async fn last_run(c: &mut SqliteConnection) -> Result<Option<Run>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        cp_backup_run_columns!(),
        " FROM controlplane_backups ORDER BY id DESC LIMIT 1"
    ))
    .fetch_optional(&mut *c)
    .await?)
}

pub async fn settings(c: &mut SqliteConnection) -> Result<Option<Settings>> {
    Ok(sqlx::query_as(
        "SELECT repo_id, run_requested_at, updated_at, updated_by, run_at_minute, time_zone FROM controlplane_backup_settings WHERE id = 1",
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

/// Sets the time of day (minutes after midnight) and its zone (`None`:
/// the server's) of the daily run (web role); the caller checked both.
pub async fn set_schedule(
    c: &mut SqliteConnection,
    run_at_minute: i64,
    time_zone: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO controlplane_backup_settings (id, run_at_minute, time_zone, updated_at, updated_by) VALUES (1, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET run_at_minute = excluded.run_at_minute, time_zone = excluded.time_zone,
         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )
    .bind(run_at_minute)
    .bind(time_zone)
    .bind(now)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// What asking for a run now did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRequest {
    /// Recorded: the task starts a run at its next look.
    Requested,
    /// No repository chosen: nothing to back up to.
    NoRepository,
    /// A run is in progress (started at this ms): it is the run asked
    /// for, and no second one is queued behind it.
    AlreadyRunning(i64),
}

/// Asks for a run now (web role) unless one is in progress.
pub async fn request_run(c: &mut SqliteConnection, actor: &str, now: i64) -> Result<RunRequest> {
    if let Some(run) = last_run(c).await?.filter(|r| r.in_progress(now)) {
        return Ok(RunRequest::AlreadyRunning(run.started_at));
    }
    let done = sqlx::query(
        "UPDATE controlplane_backup_settings SET run_requested_at = ?, updated_at = ?, updated_by = ?
         WHERE id = 1 AND repo_id IS NOT NULL",
    )
    .bind(now)
    .bind(now)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(if done.rows_affected() == 1 {
        RunRequest::Requested
    } else {
        RunRequest::NoRepository
    })
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

    /// `YYYY-MM-DDTHH:MM` in `zone` as Unix ms (the manual clock).
    fn at(local: &str, zone: &str) -> i64 {
        let tz = jiff::tz::TimeZone::get(zone).unwrap();
        let dt: jiff::civil::DateTime = local.parse().unwrap();
        dt.to_zoned(tz).unwrap().timestamp().as_millisecond()
    }

    #[test]
    fn the_next_run_is_at_the_time_of_day_an_hour_after_a_failure_and_at_once_when_asked() {
        let z = "Europe/Berlin";
        let daily = daily(2 * 60 + 30, z).unwrap();
        assert_eq!(next_run(None, None, &daily), 0, "never ran: now");
        // ran at today's 02:30: next at tomorrow's, whenever it finished
        let ok = run(at("2026-03-10T02:30:00.2", z), "succeeded");
        assert_eq!(next_run(Some(&ok), None, &daily), at("2026-03-11T02:30", z));
        // a run asked for at 18:00 does not move the daily time
        let asked = run(at("2026-03-10T18:00", z), "succeeded");
        assert_eq!(
            next_run(Some(&asked), None, &daily),
            at("2026-03-11T02:30", z)
        );
        assert_eq!(
            next_run(Some(&ok), Some(at("2026-03-10T01:00", z)), &daily),
            at("2026-03-11T02:30", z),
            "an older request is done"
        );
        let req = at("2026-03-10T09:00", z);
        assert_eq!(
            next_run(Some(&ok), Some(req), &daily),
            req,
            "asked after the last run"
        );
        // a failure: an hour later, or the time of day if that is sooner
        let failed = run(at("2026-03-10T02:30", z), "failed");
        assert_eq!(
            next_run(Some(&failed), None, &daily),
            at("2026-03-10T03:30", z)
        );
        let late = run(at("2026-03-11T02:00", z), "failed");
        assert_eq!(
            next_run(Some(&late), None, &daily),
            at("2026-03-11T02:30", z)
        );
    }

    #[test]
    fn runs_missed_while_the_server_was_down_are_made_up_once() {
        let z = "UTC";
        let daily = daily(4 * 60, z).unwrap();
        // the last run three days ago: its next time is long past, so the
        // task finds it due at start ...
        let old = run(at("2026-05-01T04:00", z), "succeeded");
        let now = at("2026-05-04T12:00", z);
        let due = next_run(Some(&old), None, &daily);
        assert_eq!(due, at("2026-05-02T04:00", z));
        assert!(due <= now, "due at start");
        // ... runs once, and then the next is tomorrow's, not the other
        // two missed days
        let caught_up = run(now + 1, "succeeded");
        assert_eq!(
            next_run(Some(&caught_up), None, &daily),
            at("2026-05-05T04:00", z)
        );
    }

    #[test]
    fn the_time_of_day_follows_its_zone_across_daylight_saving() {
        let z = "Europe/Berlin";
        let daily = daily(2 * 60 + 30, z).unwrap();
        // 2026-03-29 02:30 does not exist in Berlin (02:00 -> 03:00): the
        // run is at the first instant after the gap, then back to 02:30
        let before = run(at("2026-03-28T02:30", z), "succeeded");
        let gap = next_run(Some(&before), None, &daily);
        assert_eq!(gap, at("2026-03-29T03:00", z));
        let after = run(gap, "succeeded");
        assert_eq!(
            next_run(Some(&after), None, &daily),
            at("2026-03-30T02:30", z)
        );
        // the same setting in another zone is another instant
        let ny = daily_ny();
        assert_eq!(
            next_run(Some(&before), None, &ny),
            at("2026-03-28T02:30", "America/New_York")
        );
    }

    fn daily_ny() -> rm_cron::CronSchedule {
        daily(2 * 60 + 30, "America/New_York").unwrap()
    }

    #[test]
    fn settings_default_to_two_oclock_in_the_servers_zone() {
        let s = Settings {
            repo_id: Some("r".into()),
            run_requested_at: None,
            updated_at: 0,
            updated_by: "ops".into(),
            run_at_minute: None,
            time_zone: None,
        };
        assert_eq!(s.run_at_minute(), DEFAULT_RUN_AT_MINUTE);
        assert_eq!(s.zone(), rm_cron::system_zone_name());
        let gone = Settings {
            time_zone: Some("Nowhere/Atlantis".into()),
            run_at_minute: Some(23 * 60 + 59),
            ..s
        };
        assert_eq!(
            gone.daily().timezone(),
            "UTC",
            "an unknown zone falls back to UTC"
        );
        assert_eq!(gone.daily().expr(), "59 23 * * *");
        assert!(daily(60, "Nowhere/Atlantis").is_err());
    }
}
