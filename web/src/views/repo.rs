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

/// The size-over-time chart, drawn on the server: both measured series
/// (stored and restore size) on one time axis from the first measurement
/// to the last, and one byte axis from 0 to a round value above the
/// largest measurement. Every drawn series has its legend entry, and the
/// axis labels are in binary units, so chart, caption and legend agree.
#[derive(Debug, Clone, Serialize)]
pub struct SizeChart {
    /// The series with at least one measurement, stored first.
    pub series: Vec<ChartSeries>,
    /// The byte axis' labels, top first: the top, its half, and `0 B`.
    pub y_labels: [String; 3],
    /// The time axis' ends (ms).
    pub from: i64,
    pub to: i64,
    /// Measurements drawn (all series).
    pub measurements: usize,
}

/// One line of [`SizeChart`].
#[derive(Debug, Clone, Serialize)]
pub struct ChartSeries {
    /// `stored` or `restore`: the CSS class of its line and legend key.
    pub key: &'static str,
    /// `Stored` or `Restore size`, as the health facts name them.
    pub label: &'static str,
    /// What it measures, for the legend.
    pub means: &'static str,
    /// SVG path of the line in a [`SizeChart::WIDTH`] × [`SizeChart::HEIGHT`] box.
    pub line: String,
    /// SVG path of a dot per measurement.
    pub dots: String,
    pub first: i64,
    pub last: i64,
    pub count: usize,
}

impl SizeChart {
    pub const WIDTH: i64 = 1000;
    pub const HEIGHT: i64 = 200;
}

/// The smallest round byte value at or above `max` (1, 1.5, 2, 3, 4, 5,
/// 6 or 8 times a power of ten in its binary unit, or 1 of the next unit),
/// so the axis reads `300.0 MiB`, not `288.0 MiB`.
fn round_top(max: i64) -> i64 {
    if max <= 0 {
        return 1024;
    }
    let mut unit: i64 = 1;
    while max / unit >= 1024 && unit < (1_i64 << 60) {
        unit <<= 10;
    }
    let m = max as f64 / unit as f64;
    let mut decade = 1.0_f64;
    while decade * 10.0 <= m {
        decade *= 10.0;
    }
    let step = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|f| f * decade)
        .find(|v| *v >= m)
        .unwrap_or(decade * 10.0);
    // 1000 of a unit reads better as 1 of the next: 1.0 GiB, not 1000.0 MiB
    let step = if step >= 1000.0 { 1024.0 } else { step };
    (step * unit as f64).ceil() as i64
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
    pub chart: Option<SizeChart>,
    pub locks: LocksView,
    /// When the next periodic refresh falls; `None` until a control plane
    /// has said its period.
    pub next_refresh: Option<NextRefresh>,
    pub now: i64,
}

/// The periodic full refresh of one repository: the control plane's
/// period and the repository's own place in it (`rm_store::refresh`).
/// Due already when `at` is not after now: the sweep queues it at its
/// next tick, or it waits for an online host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextRefresh {
    /// When the sweep finds it due (ms).
    pub at: i64,
    pub every_ms: i64,
    /// Its maintenance host or an attached host is online: a refresh due
    /// is queued at the control plane's next sweep, not held back.
    pub runnable: bool,
}

impl NextRefresh {
    /// `6 h`, `90 m`: the period as an operator set it.
    pub fn every(&self) -> String {
        let secs = self.every_ms / 1000;
        match secs {
            s if s > 0 && s % 3600 == 0 => format!("{} h", s / 3600),
            s if s > 0 && s % 60 == 0 => format!("{} m", s / 60),
            s => crate::ui::fmt::duration_secs(s),
        }
    }
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

/// The size chart; `None` with fewer than two measurements.
pub fn size_chart(history: &[SizeView]) -> Option<SizeChart> {
    let series_of = |pick: fn(&SizeView) -> Option<i64>| -> Vec<(i64, i64)> {
        history
            .iter()
            .filter_map(|p| pick(p).map(|v| (p.ts, v)))
            .collect()
    };
    let stored = series_of(|p| p.stored);
    let restore = series_of(|p| p.restore_size);
    let measurements = stored.len() + restore.len();
    if measurements < 2 {
        return None;
    }
    let all = stored.iter().chain(restore.iter());
    let from = all.clone().map(|p| p.0).min()?;
    let to = all.clone().map(|p| p.0).max()?;
    let top = round_top(all.map(|p| p.1).max()?);
    let (w, h) = (SizeChart::WIDTH as f64, SizeChart::HEIGHT as f64);
    let xy = |(ts, v): (i64, i64)| {
        let x = if to > from {
            (ts - from) as f64 / (to - from) as f64 * w
        } else {
            w / 2.0
        };
        let y = h - (v.max(0) as f64 / top as f64) * h;
        (x, y)
    };
    let draw = |key, label, means, pts: Vec<(i64, i64)>| -> Option<ChartSeries> {
        let (first, last) = (pts.first()?.1, pts.last()?.1);
        let coords: Vec<(f64, f64)> = pts.iter().copied().map(xy).collect();
        let line = coords
            .iter()
            .enumerate()
            .map(|(i, (x, y))| format!("{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" }))
            .collect::<Vec<_>>()
            .join(" ");
        // a zero-length segment with round caps draws a dot
        let dots = coords
            .iter()
            .map(|(x, y)| format!("M{x:.1} {y:.1}h0"))
            .collect::<Vec<_>>()
            .join(" ");
        Some(ChartSeries {
            key,
            label,
            means,
            line,
            dots,
            first,
            last,
            count: pts.len(),
        })
    };
    let series = [
        draw(
            "stored",
            "Stored",
            "what the repository holds, after deduplication and compression",
            stored,
        ),
        draw(
            "restore",
            "Restore size",
            "what restoring every snapshot would write",
            restore,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    use crate::ui::fmt::bytes;
    Some(SizeChart {
        series,
        y_labels: [bytes(top), bytes(top / 2), bytes(0_i64)],
        from,
        to,
        measurements,
    })
}

/// Loads a repository's page; `NotFound` for an unknown id.
pub async fn load(
    conn: &mut rm_store::Conn,
    id: &str,
    now_ms: i64,
) -> rm_store::Result<RepoDetail> {
    let repo = repos::get(&mut *conn, id).await?;
    let attached = repos::hosts_of_repo(&mut *conn, id).await?;
    // the names of the hosts this page shows, not the whole fleet's
    let shown: Vec<&str> = attached
        .iter()
        .map(|c| c.host_id.as_str())
        .chain(repo.maintenance_host_id.as_deref())
        .collect();
    let names: HashMap<String, (String, String)> = hosts::names_and_status_of(&mut *conn, &shown)
        .await?
        .into_iter()
        .collect();
    let name_of = |h: &str| {
        names
            .get(h)
            .map_or_else(|| (h.to_owned(), "unknown".to_owned()), Clone::clone)
    };
    let hosts: Vec<AttachedHost> = attached
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
    let runnable = hosts
        .iter()
        .any(|h: &AttachedHost| h.host_status == "online")
        || repo
            .maintenance_host_id
            .as_deref()
            .is_some_and(|h| name_of(h).1 == "online");
    let next_refresh = rm_store::refresh::next(&mut *conn, id)
        .await?
        .map(|(at, every_ms)| NextRefresh {
            at,
            every_ms,
            runnable,
        });
    Ok(RepoDetail {
        next_refresh,
        maintenance_host: repo
            .maintenance_host_id
            .as_ref()
            .map(|h| (h.clone(), name_of(h).0)),
        chart: size_chart(&history),
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
    fn the_size_chart_draws_each_measured_series_with_its_own_label() {
        let p = |ts, stored, restore| SizeView {
            ts,
            stored,
            restore_size: restore,
        };
        assert!(size_chart(&[p(1, Some(10), None)]).is_none());
        // stats runs measure one series each: stored rises, restore size stays
        let mib = 1 << 20;
        let c = size_chart(&[
            p(0, Some(100 * mib), None),
            p(500, None, Some(288 * mib)),
            p(1000, Some(200 * mib), None),
            p(2000, None, Some(288 * mib)),
        ])
        .unwrap();
        let keys: Vec<_> = c
            .series
            .iter()
            .map(|s| (s.key, s.label, s.first, s.last, s.count))
            .collect();
        assert_eq!(
            keys,
            [
                ("stored", "Stored", 100 * mib, 200 * mib, 2),
                ("restore", "Restore size", 288 * mib, 288 * mib, 2)
            ]
        );
        assert_eq!(c.y_labels, ["300.0 MiB", "150.0 MiB", "0 B"]);
        assert_eq!((c.from, c.to, c.measurements), (0, 2000, 4));
        // x by time, y from 0 at the bottom to the axis' top
        let h = SizeChart::HEIGHT as f64;
        let y = |v: i64| h - v as f64 / (300 * mib) as f64 * h;
        assert_eq!(
            c.series[0].line,
            format!("M0.0 {:.1} L500.0 {:.1}", y(100 * mib), y(200 * mib))
        );
        assert_eq!(
            c.series[1].line,
            format!("M250.0 {0:.1} L1000.0 {0:.1}", y(288 * mib))
        );
        assert_eq!(
            c.series[1].dots,
            format!("M250.0 {0:.1}h0 M1000.0 {0:.1}h0", y(288 * mib))
        );
        // one measurement of each: both drawn as dots at the axis' middle
        let one = size_chart(&[p(7, Some(5), None), p(7, None, Some(9))]).unwrap();
        assert_eq!(one.series.len(), 2);
        assert!(one.series[0].dots.starts_with("M500.0 "));
    }

    #[test]
    fn the_size_axis_ends_on_a_round_value() {
        assert_eq!(round_top(0), 1024);
        assert_eq!(round_top(800), 800);
        assert_eq!(round_top(1000), 1024, "1.0 KiB, not 1000 B");
        assert_eq!(round_top(864 << 20), 1 << 30, "1.0 GiB, not 1000.0 MiB");
        assert_eq!(round_top(1024), 1024);
        assert_eq!(round_top(288 << 20), 300 << 20);
        assert_eq!(round_top(1_503_238_553), 3 << 29); // 1.4 GiB -> 1.5 GiB
    }
}
