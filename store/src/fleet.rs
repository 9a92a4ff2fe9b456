//! Read queries behind the fleet dashboard and its JSON twin
//! (`GET /api/v1/hosts`): counters by backup health, one page of host rows
//! with their summary, and the raw material of the 30-day compliance strip.
//!
//! A host's *health* is derived in SQL (so filtering, counting and
//! paginating agree): `pending` (never enrolled), `offline`, `never` (no
//! backup yet), `failed` (last backup failed or was lost), `warning` (last
//! backup partial or cancelled), `ok`. Revoked hosts are not part of the
//! fleet view. Everything here reads indexed rows of the page's hosts only;
//! nothing scans `jobs`.

use sqlx::{FromRow, SqliteConnection};

use crate::Result;

/// The SQL expression of a host's health over `hosts h LEFT JOIN host_summary s`.
const HEALTH: &str = "CASE
    WHEN h.status = 'pending' THEN 'pending'
    WHEN h.status = 'offline' THEN 'offline'
    WHEN s.last_backup_status IS NULL THEN 'never'
    WHEN s.last_backup_status IN ('failed', 'lost') THEN 'failed'
    WHEN s.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
    ELSE 'ok' END";

/// The health values, in the order counters show them.
pub const HEALTHS: [&str; 6] = ["ok", "warning", "failed", "offline", "never", "pending"];

/// How many non-revoked hosts are in each health, plus running and open alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: i64,
    pub warning: i64,
    pub failed: i64,
    pub offline: i64,
    pub never: i64,
    pub pending: i64,
    pub running: i64,
    pub open_alerts: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.ok + self.warning + self.failed + self.offline + self.never + self.pending
    }
}

/// Open alerts of non-revoked hosts (`alerts_open` index, then each
/// alert's host by primary key).
const OPEN_ALERTS: &str = "SELECT COUNT(*) FROM alerts a JOIN hosts h ON h.id = a.host_id
     WHERE a.resolved_at IS NULL AND h.status != 'revoked'";

/// The counters: six rows of `fleet_counts`, which triggers keep current
/// in the same statement as every change to a host's status, summary or
/// existence (migration 21), plus the open alerts. Reads no host row.
pub async fn counts(conn: &mut SqliteConnection) -> Result<Counts> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT health, hosts, running FROM fleet_counts")
            .fetch_all(&mut *conn)
            .await?;
    let mut c = fill(rows);
    c.open_alerts = open_alerts(conn).await?;
    Ok(c)
}

/// The counters computed from the source rows (one grouped pass over every
/// host and its summary): what [`counts`] must always equal. For checks
/// and tests, not for pages.
pub async fn recount(conn: &mut SqliteConnection) -> Result<Counts> {
    let sql = format!(
        "SELECT {HEALTH} AS health, COUNT(*) AS n,
                SUM(CASE WHEN COALESCE(s.running_jobs, 0) > 0 THEN 1 ELSE 0 END) AS running
         FROM hosts h LEFT JOIN host_summary s ON s.host_id = h.id
         WHERE h.status != 'revoked' GROUP BY health"
    );
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    let mut c = fill(rows);
    c.open_alerts = open_alerts(conn).await?;
    Ok(c)
}

/// `(health, hosts, running)` rows into [`Counts`] (open alerts left at 0).
fn fill(rows: Vec<(String, i64, i64)>) -> Counts {
    let mut c = Counts::default();
    for (health, n, running) in rows {
        c.running += running;
        match health.as_str() {
            "ok" => c.ok = n,
            "warning" => c.warning = n,
            "failed" => c.failed = n,
            "offline" => c.offline = n,
            "never" => c.never = n,
            _ => c.pending += n,
        }
    }
    c
}

/// How many non-revoked hosts carry `tag` (`tag_counts`, one seek).
pub async fn tag_total(conn: &mut SqliteConnection, tag: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT hosts FROM tag_counts WHERE tag = ?")
            .bind(tag)
            .fetch_optional(conn)
            .await?
            .unwrap_or(0),
    )
}

/// Open (unresolved) alerts across the fleet, for the top bar.
pub async fn open_alerts(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(OPEN_ALERTS).fetch_one(conn).await?)
}

/// Order of the host list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Worst first (failed, offline, warning, never, pending, ok), then name.
    #[default]
    Health,
    Name,
    /// Oldest last backup first (never backed up first of all).
    LastBackup,
}

/// Which hosts, which page.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this host (one row, for a host page or a live row refresh).
    pub id: Option<String>,
    /// Case-insensitive substring of the name or the endpoint's hostname.
    pub text: Option<String>,
    /// One of [`HEALTHS`].
    pub health: Option<String>,
    /// Only hosts carrying this tag.
    pub tag: Option<String>,
    /// Only hosts with a running job.
    pub running: bool,
    pub sort: Sort,
    pub limit: i64,
    pub offset: i64,
}

/// One host row of the dashboard.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub hostname: Option<String>,
    pub restic_host: Option<String>,
    pub status: String,
    pub health: String,
    pub last_seen_at: Option<i64>,
    pub enrolled_at: Option<i64>,
    pub created_at: i64,
    pub last_backup_status: Option<String>,
    pub last_backup_at: Option<i64>,
    pub last_backup_success_at: Option<i64>,
    pub running_jobs: i64,
    pub open_alerts: i64,
    pub repo_size: Option<i64>,
    pub snapshot_count: i64,
}

/// The filter of [`Query`] over `hosts h LEFT JOIN host_summary s` (binds ?1..?3, ?6, ?7).
const FILTER: &str = "h.status != 'revoked'
      AND (?1 IS NULL OR h.name LIKE ?1 ESCAPE '\\' OR h.hostname LIKE ?1 ESCAPE '\\')
      AND (?2 IS NULL OR health = ?2)
      AND (?3 = 0 OR COALESCE(s.running_jobs, 0) > 0)
      AND (?6 IS NULL OR h.id = ?6)";

/// [`FILTER`] plus the tag, when there is one: the tagged hosts are read
/// from the `host_tags_tag` index and each looked up by id, rather than
/// every host probed for the tag.
fn filter(q: &Query) -> String {
    if q.tag.is_some() {
        format!("{FILTER} AND h.id IN (SELECT host_id FROM host_tags WHERE tag = ?7)")
    } else {
        format!("{FILTER} AND ?7 IS NULL")
    }
}

/// `%text%` for `LIKE ... ESCAPE '\'` (its wildcards escaped); `None`
/// for no text.
pub(crate) fn like_pattern(text: Option<&str>) -> Option<String> {
    text.map(str::trim).filter(|t| !t.is_empty()).map(|t| {
        format!(
            "%{}%",
            t.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    })
}

/// Whether the number of hosts matching `q` is one of the [`Counts`]
/// (no text, tag or id filter), so the page need not count again.
pub fn total_from_counts(q: &Query, c: &Counts) -> Option<i64> {
    if q.id.is_some() || q.tag.is_some() || like_pattern(q.text.as_deref()).is_some() {
        return None;
    }
    match (q.health.as_deref(), q.running) {
        (None, false) => Some(c.total()),
        (None, true) => Some(c.running),
        (Some("ok"), false) => Some(c.ok),
        (Some("warning"), false) => Some(c.warning),
        (Some("failed"), false) => Some(c.failed),
        (Some("offline"), false) => Some(c.offline),
        (Some("never"), false) => Some(c.never),
        (Some("pending"), false) => Some(c.pending),
        _ => None,
    }
}

/// The number of hosts matching `q`: from the maintained counters when
/// the filter is only a health or running, from `tag_counts` when it is
/// only a tag, else counted ([`count`]).
pub async fn total(conn: &mut SqliteConnection, q: &Query, c: &Counts) -> Result<i64> {
    if let Some(n) = total_from_counts(q, c) {
        return Ok(n);
    }
    if let Some(tag) = &q.tag
        && q.id.is_none()
        && q.health.is_none()
        && !q.running
        && like_pattern(q.text.as_deref()).is_none()
    {
        return tag_total(conn, tag).await;
    }
    count(conn, q).await
}

/// The number of non-revoked hosts whose name or hostname matches `?1`
/// (NULL: all): a scan of the covering `hosts_text` index (migration 25),
/// no host row read, no join.
pub const TEXT_COUNT: &str = "SELECT COUNT(*) FROM hosts h WHERE h.status != 'revoked'
      AND (?1 IS NULL OR h.name LIKE ?1 ESCAPE '\\' OR h.hostname LIKE ?1 ESCAPE '\\')";

/// The number of hosts matching the filter: a text-only filter from the
/// narrow `hosts_text` index ([`TEXT_COUNT`]), any other from the hosts
/// and their summaries.
pub async fn count(conn: &mut SqliteConnection, q: &Query) -> Result<i64> {
    if q.id.is_none() && q.tag.is_none() && q.health.is_none() && !q.running {
        return Ok(sqlx::query_scalar(TEXT_COUNT)
            .bind(like_pattern(q.text.as_deref()))
            .fetch_one(&mut *conn)
            .await?);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT h.*, {HEALTH} AS health FROM hosts h LEFT JOIN host_summary s ON s.host_id = h.id) h
         LEFT JOIN host_summary s ON s.host_id = h.id WHERE {filter}",
        filter = filter(q)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(like_pattern(q.text.as_deref()))
        .bind(&q.health)
        .bind(i64::from(q.running))
        .bind(0_i64)
        .bind(0_i64)
        .bind(&q.id)
        .bind(&q.tag)
        .fetch_one(&mut *conn)
        .await?)
}

/// A health's rank in the "worst first" order: `host_summary.health_rank`
/// (migration 21) holds the same for each host.
fn health_rank(health: &str) -> i64 {
    match health {
        "failed" => 0,
        "offline" => 1,
        "warning" => 2,
        "never" => 3,
        "pending" => 4,
        _ => 5,
    }
}

/// The ids of one page of hosts, in order. Walks one of the partial
/// indexes of `host_summary` in the sort's order (`host_summary_by_health`,
/// `_by_name`, `_by_last_backup`: migration 21) and stops after the page;
/// a host's own row is read only for a text filter that its name (copied
/// into the summary) does not match, so neither the first nor a deep page
/// computes or sorts the health of every host.
pub async fn page_ids(conn: &mut SqliteConnection, q: &Query) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(page_ids_sql(q)))
        .bind(like_pattern(q.text.as_deref()))
        .bind(q.health.as_deref().map(health_rank))
        .bind(i64::from(q.running))
        .bind(q.limit)
        .bind(q.offset)
        .bind(&q.id)
        .bind(&q.tag)
        .fetch_all(&mut *conn)
        .await?)
}

/// The statement of [`page_ids`] for `q`'s sort and tag (binds ?1..?7),
/// public so a test can check its plan.
pub fn page_ids_sql(q: &Query) -> String {
    let order = match q.sort {
        Sort::Health => "s.health_rank, s.host_name, s.host_id",
        Sort::Name => "s.host_name, s.host_id",
        Sort::LastBackup => "COALESCE(s.last_backup_at, 0), s.host_name, s.host_id",
    };
    let tag = if q.tag.is_some() {
        "AND s.host_id IN (SELECT host_id FROM host_tags WHERE tag = ?7)"
    } else {
        "AND ?7 IS NULL"
    };
    format!(
        "SELECT s.host_id FROM host_summary s
         WHERE s.health_rank IS NOT NULL
           AND (?1 IS NULL OR s.host_name LIKE ?1 ESCAPE '\\'
                OR EXISTS (SELECT 1 FROM hosts h WHERE h.id = s.host_id AND h.hostname LIKE ?1 ESCAPE '\\'))
           AND (?2 IS NULL OR s.health_rank = ?2)
           AND (?3 = 0 OR s.running_jobs > 0)
           AND (?6 IS NULL OR s.host_id = ?6)
           {tag}
         ORDER BY {order} LIMIT ?4 OFFSET ?5"
    )
}

/// The full rows of these hosts (revoked ones left out), in the order of `ids`.
pub async fn rows(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<Row>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT h.id, h.name, h.hostname, h.restic_host, h.status, {HEALTH} AS health, h.last_seen_at,
                h.enrolled_at, h.created_at,
                s.last_backup_status, s.last_backup_at, s.last_backup_success_at,
                COALESCE(s.running_jobs, 0) AS running_jobs,
                (SELECT COUNT(*) FROM alerts a WHERE a.host_id = h.id AND a.resolved_at IS NULL) AS open_alerts,
                s.repo_size, COALESCE(s.snapshot_count, 0) AS snapshot_count
         FROM hosts h LEFT JOIN host_summary s ON s.host_id = h.id
         WHERE h.id IN (SELECT value FROM json_each(?1)) AND h.status != 'revoked'"
    );
    let mut rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(json_ids(ids))
        .fetch_all(&mut *conn)
        .await?;
    rows.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    Ok(rows)
}

/// A host's snapshot count and repository size recomputed from the source
/// rows: what `host_summary.snapshot_count` and `.repo_size` (kept by the
/// triggers of migration 25) must equal. One correlated pass per host.
const RECOUNT_STATS: &str = "SELECT h.id,
        (SELECT COUNT(*) FROM host_repositories hr JOIN snapshots sn
           ON sn.repo_id = hr.repo_id AND sn.hostname = h.restic_host
           WHERE hr.host_id = h.id) AS snapshot_count,
        (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                     WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                     ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
           FROM host_repositories hr WHERE hr.host_id = h.id) AS repo_size
     FROM hosts h";

/// A host whose stored snapshot count or repository size differs from a
/// recount: `(host, stored count, recounted count, stored size,
/// recounted size)`; a host without a summary row has stored `(0, None)`.
pub type StatsDrift = (String, i64, i64, Option<i64>, Option<i64>);

/// The hosts whose stored snapshot count or repository size differs
/// from a recount from the source rows. For checks and tests, not for
/// pages (it reads every host's snapshots).
pub async fn stats_drift(conn: &mut SqliteConnection) -> Result<Vec<StatsDrift>> {
    let sql = format!(
        "SELECT r.id, COALESCE(s.snapshot_count, 0), r.snapshot_count, s.repo_size, r.repo_size
         FROM ({RECOUNT_STATS}) r LEFT JOIN host_summary s ON s.host_id = r.id
         WHERE COALESCE(s.snapshot_count, 0) != r.snapshot_count OR s.repo_size IS NOT r.repo_size
         ORDER BY r.id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?)
}

/// One page of hosts and the number of hosts matching the filter.
pub async fn page(conn: &mut SqliteConnection, q: &Query) -> Result<(Vec<Row>, i64)> {
    let total = count(&mut *conn, q).await?;
    let ids = page_ids(&mut *conn, q).await?;
    Ok((rows(&mut *conn, &ids).await?, total))
}

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn json_ids(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// One host's row, revoked or not found → `None`.
pub async fn row(conn: &mut SqliteConnection, host_id: &str) -> Result<Option<Row>> {
    Ok(rows(conn, &[host_id.to_owned()]).await?.into_iter().next())
}

/// One backup job of a host, for the compliance strip and the reason of
/// the last result.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct BackupRun {
    pub id: String,
    pub status: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// The host's backup jobs created at or after `since_ms`, newest first.
pub async fn backups_since(
    conn: &mut SqliteConnection,
    host_id: &str,
    since_ms: i64,
) -> Result<Vec<BackupRun>> {
    Ok(sqlx::query_as(
        "SELECT id, status, created_at, finished_at, error_kind, error FROM jobs
         WHERE host_id = ? AND created_at >= ? AND kind = 'backup'
         ORDER BY created_at DESC LIMIT 2000",
    )
    .bind(host_id)
    .bind(since_ms)
    .fetch_all(conn)
    .await?)
}

/// `(host_id, id, status, created_at, finished_at, error_kind, error)`.
type RunOfHost = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// [`backups_since`] for several hosts in one query: each host's runs,
/// newest first.
pub async fn backups_since_many(
    conn: &mut SqliteConnection,
    host_ids: &[String],
    since_ms: i64,
) -> Result<std::collections::HashMap<String, Vec<BackupRun>>> {
    let mut out: std::collections::HashMap<String, Vec<BackupRun>> = Default::default();
    if host_ids.is_empty() {
        return Ok(out);
    }
    // A page's hosts have about 1,500 runs in the window: they come back
    // as one JSON array in one row, because each row of a result costs a
    // hand-over from the database thread, which cost more than the query.
    let json: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(host_id, id, status, created_at, finished_at, error_kind, error))
         FROM jobs
         WHERE host_id IN (SELECT value FROM json_each(?)) AND created_at >= ? AND kind = 'backup'",
    )
    .bind(json_ids(host_ids))
    .bind(since_ms)
    .fetch_one(conn)
    .await?;
    let mut rows: Vec<RunOfHost> =
        serde_json::from_str(&json).map_err(|e| crate::StoreError::Corrupt {
            what: "backup runs",
            detail: e.to_string(),
        })?;
    // each host's newest first (ties by id, newest first too)
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.3.cmp(&a.3)).then(b.1.cmp(&a.1)));
    for (host, id, status, created_at, finished_at, error_kind, error) in rows {
        let runs = out.entry(host).or_default();
        if runs.len() < 2000 {
            runs.push(BackupRun {
                id,
                status,
                created_at,
                finished_at,
                error_kind,
                error,
            });
        }
    }
    Ok(out)
}

/// [`backup_schedules`] for several hosts in one query.
pub async fn backup_schedules_many(
    conn: &mut SqliteConnection,
    host_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<BackupSchedule>>> {
    let mut out: std::collections::HashMap<String, Vec<BackupSchedule>> = Default::default();
    if host_ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT host_id, id, cron, timezone, grace_secs, created_at FROM schedules
         WHERE host_id IN (SELECT value FROM json_each(?)) AND kind = 'backup' AND enabled = 1",
    )
    .bind(json_ids(host_ids))
    .fetch_all(conn)
    .await?;
    for (host, id, cron, timezone, grace_secs, created_at) in rows {
        out.entry(host).or_default().push(BackupSchedule {
            id,
            cron,
            timezone,
            grace_secs,
            created_at,
        });
    }
    Ok(out)
}

/// The host's newest backup job (any age), for the reason of its result.
pub async fn last_backup(conn: &mut SqliteConnection, host_id: &str) -> Result<Option<BackupRun>> {
    Ok(sqlx::query_as(
        "SELECT id, status, created_at, finished_at, error_kind, error FROM jobs
         WHERE host_id = ? AND kind = 'backup' AND status NOT IN ('queued', 'dispatched', 'running')
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(host_id)
    .fetch_optional(conn)
    .await?)
}

/// [`running_job`]'s statement. The second status term lets SQLite use
/// the partial index of active jobs (migration 27); the `+` keeps it from
/// walking the host's whole history in `created_at` order instead, which
/// for a host with no running job meant reading all of it.
pub const RUNNING_JOB_SQL: &str =
    "SELECT id, kind FROM jobs WHERE host_id = ? AND status IN ('running', 'dispatched')
       AND status IN ('queued', 'dispatched', 'running')
     ORDER BY +created_at DESC LIMIT 1";

/// The host's running (or dispatched) job, newest first.
pub async fn running_job(
    conn: &mut SqliteConnection,
    host_id: &str,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(RUNNING_JOB_SQL)
        .bind(host_id)
        .fetch_optional(conn)
        .await?)
}

/// A host's enabled backup schedule, for next-run and missed-slot judgement.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct BackupSchedule {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub grace_secs: i64,
    pub created_at: i64,
}

pub async fn backup_schedules(
    conn: &mut SqliteConnection,
    host_id: &str,
) -> Result<Vec<BackupSchedule>> {
    Ok(sqlx::query_as(
        "SELECT id, cron, timezone, grace_secs, created_at FROM schedules
         WHERE host_id = ? AND kind = 'backup' AND enabled = 1",
    )
    .bind(host_id)
    .fetch_all(conn)
    .await?)
}
