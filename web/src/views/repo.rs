//! One repository (`/repositories/<id>`): its health (latest measurements
//! and size over time), the hosts attached with their access, the
//! maintenance host, and its locks as the newest `locks` job found them.
//! The JSON twins (`GET /api/v1/repos/<id>/locks`, `.../history`) return
//! the same [`LocksView`] and [`SizeView`]s, computed here once.

use std::collections::HashMap;

use rm_store::{health, hosts, listing, repos};
use serde::Serialize;
use utoipa::ToSchema;

use super::host::RepoHealth;

/// A lock older than this looks stale (restic's own rule: a running
/// restic refreshes its lock every 5 minutes; after 30 it is stale).
pub const STALE_AFTER_SECS: i64 = 30 * 60;
/// Size measurements kept for "size over time".
pub const HISTORY_POINTS: i64 = 60;

/// One lock in the repository.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LockView {
    pub id: String,
    pub short_id: String,
    /// When restic took (or last refreshed) it, ms.
    pub time: Option<i64>,
    /// Its age when the page was made, seconds.
    pub age_secs: Option<i64>,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: Option<i64>,
    /// Whether it looks stale: its process is gone (judged on its own
    /// host) or it is older than 30 minutes.
    pub stale: bool,
    /// Why it looks stale, in words.
    pub stale_reason: Option<String>,
}

/// A repository's locks, from the newest successful `locks` job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LocksView {
    pub repo_id: String,
    /// When the locks were listed (absent: never).
    pub checked_at: Option<i64>,
    /// The job that listed them.
    pub job_id: Option<String>,
    pub locks: Vec<LockView>,
    /// How many look stale (what a safe unlock would remove).
    pub stale: usize,
}

/// One size measurement.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SizeView {
    pub ts: i64,
    /// What the repository stores (`stats --mode raw-data`).
    pub stored: Option<i64>,
    /// What restoring every snapshot would write (`restore-size`).
    pub restore_size: Option<i64>,
}

/// A host attached to the repository.
#[derive(Debug, Clone, Serialize)]
pub struct AttachedHost {
    pub host_id: String,
    pub host_name: String,
    /// The host's state (`online`, `offline`, ...).
    pub host_status: String,
    /// `append_only` or `full`.
    pub access: String,
    pub maintenance: bool,
    pub attached_at: i64,
}

/// A small line chart of the stored size, drawn on the server.
#[derive(Debug, Clone, Serialize)]
pub struct Sparkline {
    /// SVG polyline points in a `WIDTH` × `HEIGHT` box.
    pub points: String,
    pub min: i64,
    pub max: i64,
    pub from: i64,
    pub to: i64,
    /// `stored` or `restore size`: which measurement is drawn.
    pub series: &'static str,
}

impl Sparkline {
    pub const WIDTH: i64 = 240;
    pub const HEIGHT: i64 = 48;
}

/// Everything the repository page shows.
#[derive(Debug, Clone, Serialize)]
pub struct RepoDetail {
    pub id: String,
    pub name: String,
    /// The URL with credentials removed.
    pub url: String,
    pub restic_repo_id: Option<String>,
    /// `unknown`, `ok` or `error` (from the last add, test or verification).
    pub status: String,
    pub status_detail: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub maintenance_host: Option<(String, String)>,
    pub hosts: Vec<AttachedHost>,
    pub health: Option<RepoHealth>,
    pub history: Vec<SizeView>,
    pub sparkline: Option<Sparkline>,
    pub locks: LocksView,
    pub now: i64,
}

impl RepoDetail {
    /// Hosts that may run an unlock or a lock listing: the maintenance
    /// host first, then the others.
    pub fn runners(&self) -> Vec<&AttachedHost> {
        let mut v: Vec<&AttachedHost> = self.hosts.iter().collect();
        v.sort_by_key(|h| !h.maintenance);
        v
    }

    /// Attached hosts with full access (maintenance host candidates).
    pub fn full_access(&self) -> Vec<&AttachedHost> {
        self.hosts.iter().filter(|h| h.access == "full").collect()
    }
}

fn lock_view(v: &serde_json::Value, now_ms: i64) -> Option<LockView> {
    let id = v.get("id")?.as_str()?.to_owned();
    let time = v
        .get("time")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(jiff::Timestamp::as_millisecond);
    let age_secs = time.map(|t| ((now_ms - t) / 1000).max(0));
    let dead = v
        .get("stale")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let old = age_secs.is_some_and(|a| a > STALE_AFTER_SECS);
    let stale_reason = match (dead, old) {
        (true, _) => Some("its process is gone".to_owned()),
        (false, true) => Some("older than 30 minutes and not refreshed".to_owned()),
        _ => None,
    };
    let s = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(LockView {
        short_id: id.chars().take(8).collect(),
        id,
        time,
        age_secs,
        exclusive: v
            .get("exclusive")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        hostname: s("hostname"),
        username: s("username"),
        pid: v.get("pid").and_then(serde_json::Value::as_i64),
        stale: stale_reason.is_some(),
        stale_reason,
    })
}

/// The repository's locks as its newest successful `locks` job listed them.
pub async fn locks(
    conn: &mut rm_store::Conn,
    repo_id: &str,
    now_ms: i64,
) -> rm_store::Result<LocksView> {
    let filter = listing::JobFilter {
        host_id: None,
        kind: Some("locks"),
        status: Some("succeeded"),
        repo_id: Some(repo_id),
        since: None,
        before: None,
    };
    let newest = listing::jobs(&mut *conn, &filter, 1)
        .await?
        .into_iter()
        .next();
    let locks: Vec<LockView> = newest
        .as_ref()
        .and_then(|j| j.summary_json.as_deref())
        .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(s).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| lock_view(v, now_ms))
        .collect();
    Ok(LocksView {
        repo_id: repo_id.to_owned(),
        checked_at: newest.as_ref().and_then(|j| j.finished_at),
        job_id: newest.map(|j| j.id),
        stale: locks.iter().filter(|l| l.stale).count(),
        locks,
    })
}

/// Size over time, oldest first.
pub async fn history(conn: &mut rm_store::Conn, repo_id: &str) -> rm_store::Result<Vec<SizeView>> {
    Ok(health::size_history(conn, repo_id, HISTORY_POINTS)
        .await?
        .into_iter()
        .map(|p| SizeView {
            ts: p.ts,
            stored: p.raw_size,
            restore_size: p.total_size,
        })
        .collect())
}

/// The stored size over time as SVG points (restore size when the stored
/// size was never measured); `None` with fewer than two measurements.
pub fn sparkline(history: &[SizeView]) -> Option<Sparkline> {
    let stored: Vec<(i64, i64)> = history
        .iter()
        .filter_map(|p| p.stored.map(|s| (p.ts, s)))
        .collect();
    let (series, pts) = if stored.len() >= 2 {
        ("stored", stored)
    } else {
        (
            "restore size",
            history
                .iter()
                .filter_map(|p| p.restore_size.map(|s| (p.ts, s)))
                .collect(),
        )
    };
    let (first, last) = (pts.first()?, pts.last()?);
    if pts.len() < 2 {
        return None;
    }
    let min = pts.iter().map(|p| p.1).min()?;
    let max = pts.iter().map(|p| p.1).max()?;
    let (w, h) = (Sparkline::WIDTH as f64, Sparkline::HEIGHT as f64);
    let n = (pts.len() - 1) as f64;
    let span = (max - min) as f64;
    let points = pts
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            let x = i as f64 / n * (w - 4.0) + 2.0;
            let y = if span > 0.0 {
                (h - 4.0) - ((*v - min) as f64 / span) * (h - 8.0)
            } else {
                h / 2.0
            };
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(Sparkline {
        points,
        min,
        max,
        from: first.0,
        to: last.0,
        series,
    })
}

/// Loads a repository's page; `NotFound` for an unknown id.
pub async fn load(
    conn: &mut rm_store::Conn,
    id: &str,
    now_ms: i64,
) -> rm_store::Result<RepoDetail> {
    let repo = repos::get(&mut *conn, id).await?;
    let names: HashMap<String, (String, String)> = hosts::list(&mut *conn)
        .await?
        .into_iter()
        .map(|h| (h.id.clone(), (h.name, h.status)))
        .collect();
    let name_of = |h: &str| {
        names
            .get(h)
            .map_or_else(|| (h.to_owned(), "unknown".to_owned()), Clone::clone)
    };
    let hosts = repos::hosts_of_repo(&mut *conn, id)
        .await?
        .into_iter()
        .map(|c| {
            let (host_name, host_status) = name_of(&c.host_id);
            AttachedHost {
                maintenance: repo.maintenance_host_id.as_deref() == Some(c.host_id.as_str()),
                host_id: c.host_id,
                host_name,
                host_status,
                access: c.access,
                attached_at: c.created_at,
            }
        })
        .collect();
    let latest = health::latest(&mut *conn, id).await?;
    let health = (latest.id != 0).then(|| RepoHealth::from(&latest));
    let history = history(&mut *conn, id).await?;
    Ok(RepoDetail {
        maintenance_host: repo
            .maintenance_host_id
            .as_ref()
            .map(|h| (h.clone(), name_of(h).0)),
        sparkline: sparkline(&history),
        history,
        health,
        hosts,
        locks: locks(&mut *conn, id, now_ms).await?,
        id: repo.id,
        name: repo.name,
        url: repo.url_display,
        restic_repo_id: repo.restic_repo_id,
        status: repo.status,
        status_detail: repo.status_detail,
        created_at: repo.created_at,
        created_by: repo.created_by,
        now: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_lock_looks_stale_when_its_process_is_gone_or_it_is_old() {
        let at = |mins: i64| {
            jiff::Timestamp::from_millisecond(NOW - mins * 60_000)
                .unwrap()
                .to_string()
        };
        let fresh = serde_json::json!({"id": "a".repeat(64), "time": at(2), "exclusive": true, "hostname": "web-1", "username": "root", "pid": 42, "stale": false});
        let dead = serde_json::json!({"id": "b".repeat(64), "time": at(2), "hostname": "web-1", "pid": 43, "stale": true});
        let old = serde_json::json!({"id": "c".repeat(64), "time": at(31), "hostname": "db-1", "pid": 44, "stale": false});
        let f = lock_view(&fresh, NOW).unwrap();
        assert_eq!(
            (f.stale, f.age_secs, f.exclusive, f.short_id.as_str()),
            (false, Some(120), true, "aaaaaaaa")
        );
        let d = lock_view(&dead, NOW).unwrap();
        assert_eq!(d.stale_reason.as_deref(), Some("its process is gone"));
        let o = lock_view(&old, NOW).unwrap();
        assert!(o.stale && o.stale_reason.unwrap().contains("30 minutes"));
        assert!(lock_view(&serde_json::json!({"time": at(1)}), NOW).is_none());
    }

    #[test]
    fn the_sparkline_draws_the_stored_size_and_needs_two_points() {
        let p = |ts, stored, restore| SizeView {
            ts,
            stored,
            restore_size: restore,
        };
        assert!(sparkline(&[p(1, Some(10), None)]).is_none());
        let s = sparkline(&[
            p(1, Some(10), None),
            p(2, None, Some(99)),
            p(3, Some(30), None),
        ])
        .unwrap();
        assert_eq!(
            (s.series, s.min, s.max, s.from, s.to),
            ("stored", 10, 30, 1, 3)
        );
        assert_eq!(s.points, "2.0,44.0 238.0,4.0");
        let r = sparkline(&[p(1, None, Some(5)), p(2, None, Some(5))]).unwrap();
        assert_eq!(
            (r.series, r.points.as_str()),
            ("restore size", "2.0,24.0 238.0,24.0")
        );
    }
}
