//! Hosts: identity, enrollment state, liveness and vitals, config versions,
//! and the per-host summary the dashboard reads.

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result, StoreError};

/// Lifecycle and liveness of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Added, not enrolled yet.
    Pending,
    Online,
    Offline,
    Revoked,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "online" => Self::Online,
            "offline" => Self::Offline,
            "revoked" => Self::Revoked,
            other => {
                return Err(StoreError::Corrupt {
                    what: "host status",
                    detail: other.to_owned(),
                });
            }
        })
    }
}

/// A host row.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub status: String,
    pub restic_host: Option<String>,
    pub nkey: Option<String>,
    pub xkey: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub enrolled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub status_changed_at: Option<i64>,
    pub agent_version: Option<String>,
    pub restic_version: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub hostname: Option<String>,
    pub uptime_secs: Option<i64>,
    pub vitals_json: Option<String>,
    pub config_version: i64,
    pub applied_config_version: i64,
}

impl Host {
    pub fn status(&self) -> Result<HostStatus> {
        HostStatus::parse(&self.status)
    }
}

/// Adds a pending host and its (empty) summary row.
pub async fn insert(
    conn: &mut SqliteConnection,
    id: &str,
    name: &str,
    created_by: &str,
    now: i64,
) -> Result<()> {
    let res =
        sqlx::query("INSERT INTO hosts (id, name, created_at, created_by) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(now)
            .bind(created_by)
            .execute(&mut *conn)
            .await;
    if let Err(e) = res {
        let e = StoreError::from(e);
        if e.is_unique_violation() {
            return Err(StoreError::Conflict(format!(
                "a host named {name:?} already exists"
            )));
        }
        return Err(e);
    }
    sqlx::query("INSERT INTO host_summary (host_id) VALUES (?)")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Host> {
    sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("host", id)
}

pub async fn find_by_nkey(conn: &mut SqliteConnection, nkey: &str) -> Result<Option<Host>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts WHERE nkey = ?"
    ))
    .bind(nkey)
    .fetch_optional(conn)
    .await?)
}

pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<Host>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts ORDER BY name"
    ))
    .fetch_all(conn)
    .await?)
}

/// Every host's `(id, name)`, for labelling rows.
pub async fn names(conn: &mut SqliteConnection) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as("SELECT id, name FROM hosts")
        .fetch_all(conn)
        .await?)
}

/// A list of ids as the JSON array `json_each(?)` reads (a list of
/// strings always serialises).
fn json_list<T: serde::Serialize>(ids: &[T]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// `(id, name)` of these hosts only (a page of rows), in one query.
pub async fn names_of(conn: &mut SqliteConnection, ids: &[&str]) -> Result<Vec<(String, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_list(ids);
    Ok(
        sqlx::query_as("SELECT id, name FROM hosts WHERE id IN (SELECT value FROM json_each(?))")
            .bind(ids)
            .fetch_all(conn)
            .await?,
    )
}

/// `(id, (name, status))` of these hosts only, in one query.
pub async fn names_and_status_of(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<Vec<(String, (String, String))>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, name, status FROM hosts WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_list(ids))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, status)| (id, (name, status)))
        .collect())
}

/// `(id, restic host name)` of these hosts, in one query.
pub async fn restic_names_of(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<Vec<(String, Option<String>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_list(ids);
    Ok(sqlx::query_as(
        "SELECT id, restic_host FROM hosts WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// What an agent told us at enrollment.
#[derive(Debug, Clone)]
pub struct Enrollment<'a> {
    pub nkey: &'a str,
    pub xkey: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub arch: &'a str,
    pub agent_version: &'a str,
}

/// Records the agent's keys; replaces earlier keys on re-enrollment.
/// Returns the previous nkey, which the caller must revoke.
pub async fn set_enrolled(
    conn: &mut SqliteConnection,
    id: &str,
    e: &Enrollment<'_>,
    now: i64,
) -> Result<Option<String>> {
    let previous: Option<Option<String>> =
        sqlx::query_scalar("SELECT nkey FROM hosts WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let previous = previous.found("host", id)?;
    sqlx::query(
        "UPDATE hosts SET nkey = ?, xkey = ?, hostname = ?, restic_host = COALESCE(restic_host, ?),
             os = ?, arch = ?, agent_version = ?, enrolled_at = ?, revoked_at = NULL,
             status = 'offline', status_changed_at = ?
         WHERE id = ?",
    )
    .bind(e.nkey)
    .bind(e.xkey)
    .bind(e.hostname)
    // restic's `--host`: the host id, unique and stable (never the
    // reported hostname, which cloned machines share)
    .bind(id)
    .bind(e.os)
    .bind(e.arch)
    .bind(e.agent_version)
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(previous.filter(|p| p != e.nkey))
}

/// Marks a host revoked; returns its nkey (to revoke on the bus).
pub async fn set_revoked(
    conn: &mut SqliteConnection,
    id: &str,
    now: i64,
) -> Result<Option<String>> {
    let host = get(&mut *conn, id).await?;
    sqlx::query(
        "UPDATE hosts SET status = 'revoked', revoked_at = ?, status_changed_at = ? WHERE id = ?",
    )
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(host.nkey)
}

/// Vitals from a heartbeat or hello.
#[derive(Debug, Clone, Default)]
pub struct Vitals {
    pub agent_version: Option<String>,
    pub restic_version: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub uptime_secs: Option<i64>,
    pub vitals_json: Option<String>,
}

/// Records that a host was heard from: last-seen, vitals, and online.
/// Returns true when this brought the host back online (it was offline).
pub async fn record_seen(
    conn: &mut SqliteConnection,
    id: &str,
    seen_at: i64,
    vitals: &Vitals,
) -> Result<bool> {
    let was: Option<String> = sqlx::query_scalar("SELECT status FROM hosts WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let was = HostStatus::parse(&was.found("host", id)?)?;
    if was == HostStatus::Revoked {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE hosts SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?),
             agent_version = COALESCE(?, agent_version), restic_version = COALESCE(?, restic_version),
             os = COALESCE(?, os), arch = COALESCE(?, arch), uptime_secs = COALESCE(?, uptime_secs),
             vitals_json = COALESCE(?, vitals_json),
             status = 'online',
             status_changed_at = CASE WHEN status = 'online' THEN status_changed_at ELSE ? END
         WHERE id = ?",
    )
    .bind(seen_at)
    .bind(&vitals.agent_version)
    .bind(&vitals.restic_version)
    .bind(&vitals.os)
    .bind(&vitals.arch)
    .bind(vitals.uptime_secs)
    .bind(&vitals.vitals_json)
    .bind(seen_at)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(was != HostStatus::Online)
}

/// One host's heartbeats since the last flush: last-seen, uptime, and the
/// vitals only when they changed.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    pub id: &'a str,
    pub seen_at: i64,
    pub uptime_secs: Option<i64>,
    pub vitals: Option<&'a Vitals>,
}

/// What [`record_beats`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BeatsRecorded {
    /// Hosts this brought online (they were pending or offline).
    pub came_online: Vec<String>,
    /// Ids with no host row (deleted since): nothing written for them.
    pub unknown: Vec<String>,
    /// Each known host's rowid: where its row is in the table. A flush of
    /// many hosts in parts touches each page once when every part holds
    /// neighbouring rows; in any other order each part rewrites pages all
    /// over the table (at 50,000 hosts, parts of 1,000 in hash order wrote
    /// 252 MB of WAL against 22 MB in one write, docs/benchmarks.md).
    pub rowids: Vec<(String, i64)>,
}

/// [`record_beats`]' write for hosts already online: last-seen (never
/// backwards) and uptime, each row found by its key. Nothing else is set:
/// a column in the SET list makes SQLite rewrite every index holding it
/// (and fire the status triggers' checks) whether or not its value changes,
/// and this is nearly every row of every flush.
pub const BEATS_SQL: &str =
    "UPDATE hosts SET last_seen_at = MAX(COALESCE(hosts.last_seen_at, 0), v.seen),
         uptime_secs = COALESCE(v.uptime, hosts.uptime_secs)
     FROM (SELECT value ->> '$.id' AS id, value ->> '$.seen' AS seen,
                  value ->> '$.uptime' AS uptime FROM json_each(?)) AS v
     WHERE hosts.id = v.id AND +hosts.status = 'online'";

/// [`record_beats`]' write for hosts that come online with these beats
/// (pending or offline): last-seen, uptime, online, and when it changed.
pub const BACK_ONLINE_SQL: &str =
    "UPDATE hosts SET last_seen_at = MAX(COALESCE(hosts.last_seen_at, 0), v.seen),
         uptime_secs = COALESCE(v.uptime, hosts.uptime_secs), status = 'online',
         status_changed_at = v.seen
     FROM (SELECT value ->> '$.id' AS id, value ->> '$.seen' AS seen,
                  value ->> '$.uptime' AS uptime FROM json_each(?)) AS v
     WHERE hosts.id = v.id AND +hosts.status IN ('pending', 'offline')";

/// [`record_beats`]' write of the vitals that changed (each only when
/// given).
pub const VITALS_SQL: &str =
    "UPDATE hosts SET agent_version = COALESCE(v.agent_version, hosts.agent_version),
         restic_version = COALESCE(v.restic_version, hosts.restic_version),
         os = COALESCE(v.os, hosts.os), arch = COALESCE(v.arch, hosts.arch),
         vitals_json = COALESCE(v.vitals_json, hosts.vitals_json)
     FROM (SELECT value ->> '$.id' AS id, value ->> '$.agent_version' AS agent_version,
                  value ->> '$.restic_version' AS restic_version, value ->> '$.os' AS os,
                  value ->> '$.arch' AS arch, value ->> '$.vitals_json' AS vitals_json
             FROM json_each(?)) AS v
     WHERE hosts.id = v.id AND +hosts.status != 'revoked'";

/// Flushes what heartbeats said since the last flush for many hosts, in
/// at most four statements whatever their number (the statuses read, the
/// vitals that changed, the beats of hosts online and of hosts back)
/// instead of two or three per host: each statement is a round trip to
/// the connection's worker thread, and a flush of a large fleet was
/// thousands of them while hellos and results waited for the writer. A
/// revoked or unknown host is left alone.
pub async fn record_beats(
    conn: &mut SqliteConnection,
    beats: &[Beat<'_>],
) -> Result<BeatsRecorded> {
    let mut out = BeatsRecorded::default();
    if beats.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = beats.iter().map(|b| b.id).collect();
    let ids = json_list(&ids);
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT rowid, id, status FROM hosts WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut was = std::collections::HashMap::with_capacity(rows.len());
    for (rowid, id, status) in rows {
        let status = HostStatus::parse(&status)?;
        out.rowids.push((id.clone(), rowid));
        was.insert(id, status);
    }
    for b in beats {
        match was.get(b.id) {
            None => out.unknown.push(b.id.to_owned()),
            Some(HostStatus::Pending | HostStatus::Offline) => {
                out.came_online.push(b.id.to_owned());
            }
            Some(HostStatus::Online | HostStatus::Revoked) => {}
        }
    }
    let vitals: Vec<serde_json::Value> = beats
        .iter()
        .filter_map(|b| {
            let v = b.vitals?;
            Some(serde_json::json!({
                "id": b.id, "agent_version": v.agent_version, "restic_version": v.restic_version,
                "os": v.os, "arch": v.arch, "vitals_json": v.vitals_json,
            }))
        })
        .collect();
    if !vitals.is_empty() {
        sqlx::query(VITALS_SQL)
            .bind(serde_json::Value::Array(vitals).to_string())
            .execute(&mut *conn)
            .await?;
    }
    let (back, online): (Vec<&Beat<'_>>, Vec<&Beat<'_>>) = beats
        .iter()
        .filter(|b| matches!(was.get(b.id), Some(s) if *s != HostStatus::Revoked))
        .partition(|b| was.get(b.id) != Some(&HostStatus::Online));
    for (sql, rows) in [(BEATS_SQL, online), (BACK_ONLINE_SQL, back)] {
        if rows.is_empty() {
            continue;
        }
        let seen: Vec<serde_json::Value> = rows
            .iter()
            .map(|b| serde_json::json!({"id": b.id, "seen": b.seen_at, "uptime": b.uptime_secs}))
            .collect();
        sqlx::query(sql)
            .bind(serde_json::Value::Array(seen).to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(out)
}

/// Offline hosts whose status changed at or after `after`, oldest change
/// first (found by status: offline hosts are few beside a fleet's online
/// ones, most of which came online within the same minutes after a
/// restart).
pub async fn offline_changed_since(
    conn: &mut SqliteConnection,
    after: i64,
) -> Result<Vec<StatusChange>> {
    Ok(sqlx::query_as(
        "SELECT id, name, status, last_seen_at, status_changed_at
           FROM hosts WHERE status = 'offline' AND +status_changed_at >= ?
          ORDER BY status_changed_at",
    )
    .bind(after)
    .fetch_all(conn)
    .await?)
}

/// Hosts whose status changed at or after `after` (indexed), oldest
/// change first.
pub async fn status_changed_since(
    conn: &mut SqliteConnection,
    after: i64,
) -> Result<Vec<StatusChange>> {
    Ok(sqlx::query_as(
        "SELECT id, name, status, last_seen_at, status_changed_at
           FROM hosts WHERE status_changed_at >= ? ORDER BY status_changed_at",
    )
    .bind(after)
    .fetch_all(conn)
    .await?)
}

/// What a host's status change is judged by (the alerts role's
/// `agent_offline` rule): a narrow read, without the vitals and keys a
/// whole [`Host`] row carries.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StatusChange {
    pub id: String,
    pub name: String,
    pub status: String,
    pub last_seen_at: Option<i64>,
    pub status_changed_at: Option<i64>,
}

impl StatusChange {
    pub fn status(&self) -> Result<HostStatus> {
        HostStatus::parse(&self.status)
    }
}

impl From<Host> for StatusChange {
    fn from(h: Host) -> Self {
        Self {
            id: h.id,
            name: h.name,
            status: h.status,
            last_seen_at: h.last_seen_at,
            status_changed_at: h.status_changed_at,
        }
    }
}

/// Every online host's id: the offline sweep's first look, answered by
/// the `hosts_status` index alone (no row of the table is read).
pub const ONLINE_IDS_SQL: &str = "SELECT id FROM hosts WHERE status = 'online'";

/// Every online host's id, for the offline sweep: [`ONLINE_IDS_SQL`].
pub async fn online_ids(conn: &mut SqliteConnection) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(ONLINE_IDS_SQL).fetch_all(conn).await?)
}

/// [`stale_among`]'s statement. The list is the outer loop, each host
/// found by its key (`CROSS JOIN` fixes the order): with a plain `JOIN`
/// SQLite chose every online host from `hosts_status` as the outer loop
/// and scanned the whole list for each, 100,000 × thousands of ids, and
/// at 100,000 agents one sweep ran for minutes: no killed agent was
/// detected (docs/benchmarks.md, stop 41).
pub const STALE_AMONG_SQL: &str =
    "SELECT h.id FROM json_each(?) AS j CROSS JOIN hosts AS h ON h.id = j.value
     WHERE h.status = 'online' AND COALESCE(h.last_seen_at, 0) < ?";

/// Of `ids`, the hosts still online whose stored last-seen is before
/// `before` (offline candidates: the caller has already left out those
/// its memory heard since). Each row found by its key.
pub async fn stale_among(
    conn: &mut SqliteConnection,
    ids: &[String],
    before: i64,
) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_list(ids);
    Ok(sqlx::query_scalar(STALE_AMONG_SQL)
        .bind(ids)
        .bind(before)
        .fetch_all(conn)
        .await?)
}

/// [`mark_offline_if_stale`]'s statement (`+hosts.status`: no index on
/// the status, each host found by its key).
pub const MARK_OFFLINE_IF_STALE_SQL: &str =
    "UPDATE hosts SET status = 'offline', status_changed_at = ?
     FROM (SELECT value AS id FROM json_each(?)) AS v
     WHERE hosts.id = v.id AND +hosts.status = 'online'
       AND COALESCE(hosts.last_seen_at, 0) < ?
     RETURNING hosts.id";

/// Marks the hosts of `ids` offline that are online and whose stored
/// last-seen is still before `before`, in one statement however many they
/// are (a bus node's restart silences thousands at once). Returns those
/// it changed.
pub async fn mark_offline_if_stale(
    conn: &mut SqliteConnection,
    ids: &[String],
    before: i64,
    now: i64,
) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_list(ids);
    Ok(sqlx::query_scalar(MARK_OFFLINE_IF_STALE_SQL)
        .bind(now)
        .bind(ids)
        .bind(before)
        .fetch_all(conn)
        .await?)
}

/// Marks one host offline (clean goodbye). Returns true if it was online.
pub async fn mark_offline(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<bool> {
    let n = sqlx::query("UPDATE hosts SET status = 'offline', status_changed_at = ? WHERE id = ? AND status = 'online'")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Bumps the desired config version; returns the new version.
pub async fn bump_config_version(conn: &mut SqliteConnection, id: &str) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar(
        "UPDATE hosts SET config_version = config_version + 1 WHERE id = ? RETURNING config_version",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    v.found("host", id)
}

/// The config resync sweep's read of online hosts whose agent has not
/// confirmed their desired config: from the partial index of such hosts
/// alone (migration 0031), never every online host.
pub const CONFIG_UNCONFIRMED_ONLINE_SQL: &str =
    "SELECT id, config_version FROM hosts INDEXED BY hosts_config_unconfirmed
     WHERE applied_config_version < config_version AND status = 'online'";

/// (id, desired config version) of every online host whose confirmed
/// version is behind: [`CONFIG_UNCONFIRMED_ONLINE_SQL`].
pub async fn config_unconfirmed_online(conn: &mut SqliteConnection) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(CONFIG_UNCONFIRMED_ONLINE_SQL)
        .fetch_all(conn)
        .await?)
}

/// [`config_versions_among`]'s statement: the list is the outer loop and
/// each host is found by its key (as [`STALE_AMONG_SQL`]).
pub const CONFIG_VERSIONS_AMONG_SQL: &str = "SELECT h.id, h.config_version, h.status = 'online'
     FROM json_each(?) AS j CROSS JOIN hosts AS h ON h.id = j.value";

/// Of `ids`, the hosts that exist: (id, desired config version, online).
/// Ids of no host are left out.
pub async fn config_versions_among(
    conn: &mut SqliteConnection,
    ids: &[String],
) -> Result<Vec<(String, i64, bool)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_list(ids);
    Ok(sqlx::query_as(CONFIG_VERSIONS_AMONG_SQL)
        .bind(ids)
        .fetch_all(conn)
        .await?)
}

/// Records the config version the agent confirmed (never moves backwards).
pub async fn set_applied_config(conn: &mut SqliteConnection, id: &str, version: i64) -> Result<()> {
    sqlx::query(
        "UPDATE hosts SET applied_config_version = MAX(applied_config_version, ?) WHERE id = ?",
    )
    .bind(version)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The per-host dashboard summary.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Summary {
    pub host_id: String,
    pub last_job_id: Option<String>,
    pub last_job_kind: Option<String>,
    pub last_job_status: Option<String>,
    pub last_job_finished_at: Option<i64>,
    pub last_backup_status: Option<String>,
    pub last_backup_at: Option<i64>,
    pub last_backup_success_at: Option<i64>,
    pub last_snapshot_id: Option<String>,
    pub running_jobs: i64,
    pub queued_jobs: i64,
    pub failed_jobs_total: i64,
}

pub async fn summary(conn: &mut SqliteConnection, id: &str) -> Result<Summary> {
    sqlx::query_as(concat!(
        "SELECT ",
        host_summary_columns!(),
        " FROM host_summary WHERE host_id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("host summary", id)
}

/// Every host with its summary, for the dashboard: one indexed join, no
/// scan of jobs.
pub async fn list_with_summary(conn: &mut SqliteConnection) -> Result<Vec<(Host, Summary)>> {
    let hosts = list(&mut *conn).await?;
    let summaries: Vec<Summary> = sqlx::query_as(concat!(
        "SELECT ",
        host_summary_columns!(),
        " FROM host_summary"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id: std::collections::HashMap<String, Summary> = summaries
        .into_iter()
        .map(|s| (s.host_id.clone(), s))
        .collect();
    Ok(hosts
        .into_iter()
        .filter_map(|h| by_id.remove(&h.id).map(|s| (h, s)))
        .collect())
}

/// One page of non-revoked hosts' `(id, name)` by name, for a host filter's
/// suggestions: names containing `text` (case-insensitive) or the exact
/// id, after the name `after`, at most `limit`. Walks the `name` index.
pub async fn search_names(
    conn: &mut SqliteConnection,
    text: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let text = text.trim();
    let like = format!(
        "%{}%",
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    Ok(sqlx::query_as(
        "SELECT id, name FROM hosts
         WHERE status != 'revoked' AND (?1 = '' OR name LIKE ?2 ESCAPE '\\' OR id = ?1)
           AND (?3 IS NULL OR name > ?3)
         ORDER BY name LIMIT ?4",
    )
    .bind(text)
    .bind(like)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The first `limit` enrolled, not revoked hosts' `(id, name)` by name:
/// the suggestions a host picker starts with (it asks
/// `GET /api/v1/host-names` for more as the operator types), so a page
/// never lists a whole fleet. Walks the `name` index.
pub async fn enrolled_names(
    conn: &mut SqliteConnection,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, name FROM hosts
          WHERE restic_host IS NOT NULL AND status != 'revoked'
          ORDER BY name LIMIT ?",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The id of the host with this exact id or, failing that, this exact
/// name (a host filter typed by name).
pub async fn resolve(conn: &mut SqliteConnection, id_or_name: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM hosts WHERE id = ?1
         UNION ALL SELECT id FROM hosts WHERE name = ?1 LIMIT 1",
    )
    .bind(id_or_name)
    .fetch_optional(conn)
    .await?)
}
