//! The fleet view: what the dashboard shows and `GET /api/v1/hosts` returns,
//! computed once here for both (the HTML page renders this struct, the API
//! serialises it).
//!
//! Per host: health (see `rm_store::fleet`), the running job, the last
//! backup with the reason it failed, the next scheduled run (the shared
//! cron module, so it agrees with the agent), repository size, snapshot
//! count, open alerts, and the 30-day compliance strip: one cell per UTC
//! day, judged against the host's own backup schedules — the day's last
//! backup result, `miss` when a scheduled slot (past its grace) had no
//! backup at all, `none` when nothing was due.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use rm_cron::CronSchedule;
use rm_store::fleet::{self, BackupRun, Counts, Query, Row, Sort};
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;
/// Days in the compliance strip.
pub const STRIP_DAYS: i64 = 30;
/// Hosts per page.
pub const PAGE_SIZE: i64 = 50;

/// Query-string filters of the dashboard and the host list.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct FleetFilter {
    /// Text in the host name or hostname.
    pub q: String,
    /// A health (`ok`, `warning`, `failed`, `offline`, `never`, `pending`) or `running`.
    pub state: String,
    /// Only hosts carrying this tag (exact).
    pub tag: String,
    /// `health` (default), `name` or `last_backup`.
    pub sort: String,
    /// 1-based page number.
    pub page: u32,
}

impl FleetFilter {
    /// Checks the values; an unknown state or sort is a field error.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.state.is_empty()
            && self.state != "running"
            && !fleet::HEALTHS.contains(&self.state.as_str())
        {
            return Err((
                "state",
                format!(
                    "unknown state {:?}: one of ok, warning, failed, offline, never, pending, running",
                    self.state
                ),
            ));
        }
        if !matches!(self.sort.as_str(), "" | "health" | "name" | "last_backup") {
            return Err((
                "sort",
                format!(
                    "unknown sort {:?}: one of health, name, last_backup",
                    self.sort
                ),
            ));
        }
        if self.q.len() > 200 {
            return Err(("q", "the filter text is longer than 200 characters".into()));
        }
        if self.tag.len() > 200 {
            return Err(("tag", "the tag is longer than 200 characters".into()));
        }
        Ok(())
    }

    pub(crate) fn page(&self) -> i64 {
        i64::from(self.page.max(1))
    }

    /// This filter's query string with `page` replaced (for pager links).
    pub fn query_for_page(&self, page: i64) -> String {
        let page = if page > 1 {
            page.to_string()
        } else {
            String::new()
        };
        crate::pages::query_string(&[
            ("q", &self.q),
            ("state", &self.state),
            ("tag", &self.tag),
            ("sort", &self.sort),
            ("page", &page),
        ])
    }
}

/// Percent-encodes a query value.
pub use crate::pages::percent_encode as urlencode;

/// Counters at the top of the dashboard.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Counters {
    pub ok: i64,
    pub warning: i64,
    pub failed: i64,
    pub offline: i64,
    pub never: i64,
    pub pending: i64,
    pub running: i64,
    pub open_alerts: i64,
    pub total: i64,
}

impl From<Counts> for Counters {
    fn from(c: Counts) -> Self {
        Self {
            total: c.total(),
            ok: c.ok,
            warning: c.warning,
            failed: c.failed,
            offline: c.offline,
            never: c.never,
            pending: c.pending,
            running: c.running,
            open_alerts: c.open_alerts,
        }
    }
}

/// One day of the compliance strip.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// `ok`, `warn`, `fail`, `running`, `miss` or `none`.
    pub state: &'static str,
    /// A mute or maintenance window covered part of the day: its alerts
    /// were recorded but nobody was told.
    pub muted: bool,
}

/// The running job of a host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RunningJob {
    pub id: String,
    pub kind: String,
}

/// One row of the fleet.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostRow {
    pub id: String,
    pub name: String,
    pub hostname: Option<String>,
    /// The operator's labels, sorted.
    pub tags: Vec<String>,
    /// Connection state: `pending`, `online` or `offline`.
    pub status: String,
    /// Backup health (see the module doc).
    pub health: String,
    pub last_seen_at: Option<i64>,
    pub running: Option<RunningJob>,
    pub last_backup_at: Option<i64>,
    pub last_backup_status: Option<String>,
    /// Why the last backup did not succeed, as classified by the agent.
    pub last_backup_reason: Option<String>,
    pub last_backup_job_id: Option<String>,
    pub next_run_at: Option<i64>,
    pub has_backup_schedule: bool,
    /// Latest known size of the host's repositories (bytes).
    pub repo_size: Option<i64>,
    pub snapshot_count: i64,
    pub open_alerts: i64,
    /// A mute or maintenance window covers this moment: its alerts are
    /// recorded but nobody is told.
    pub muted_now: bool,
    pub days: Vec<Day>,
}

/// The dashboard page and `GET /api/v1/hosts`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetPage {
    pub counters: Counters,
    pub hosts: Vec<HostRow>,
    /// Hosts matching the filter.
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
    pub filter: FleetFilter,
    /// Tags in use (for the tag filter), by name, with their host count.
    pub tags: Vec<TagCount>,
    /// When this was computed (ms).
    pub now: i64,
}

/// A tag in use and how many hosts carry it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TagCount {
    pub tag: String,
    pub hosts: i64,
}

/// Most tags offered by the dashboard's tag filter.
const TAGS_OFFERED: i64 = 500;

impl FleetPage {
    /// Whether `tag` is among the tags in use.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.tag == tag)
    }
    /// This page's own query string (filter, sort and page).
    pub fn query(&self) -> String {
        self.filter.query_for_page(self.page)
    }
    pub fn pages(&self) -> i64 {
        ((self.total + self.page_size - 1) / self.page_size).max(1)
    }
    pub fn first_index(&self) -> i64 {
        if self.total == 0 {
            0
        } else {
            (self.page - 1) * self.page_size + 1
        }
    }
    pub fn last_index(&self) -> i64 {
        // The rows a page of `total` holds (the live fragment carries only
        // the rows it re-renders, so not `hosts.len()`).
        (self.page * self.page_size).min(self.total)
    }
}

/// Loads one page of the fleet.
pub async fn load(
    conn: &mut rm_store::Conn,
    filter: &FleetFilter,
    now_ms: i64,
) -> rm_store::Result<FleetPage> {
    let counts = fleet::counts(&mut *conn).await?;
    let (total, ids) = page_order(&mut *conn, filter, &counts).await?;
    let rows = fleet::rows(&mut *conn, &ids).await?;
    let hosts = host_rows(&mut *conn, rows, now_ms).await?;
    let known = rm_store::tags::known(&mut *conn, TAGS_OFFERED)
        .await?
        .into_iter()
        .map(|(tag, hosts)| TagCount { tag, hosts })
        .collect();
    Ok(FleetPage {
        counters: counts.into(),
        hosts,
        total,
        page: filter.page(),
        page_size: PAGE_SIZE,
        filter: filter.clone(),
        tags: known,
        now: now_ms,
    })
}

/// The number of hosts matching `filter` and the ids of its page, in the
/// page's order: what the dashboard lists, and what its live fragment
/// reconciles the shown rows against (so a row that left the filter goes
/// and one that entered it comes, in the page's sort).
pub async fn page_order(
    conn: &mut rm_store::Conn,
    filter: &FleetFilter,
    counts: &Counts,
) -> rm_store::Result<(i64, Vec<String>)> {
    let (health, running) = match filter.state.as_str() {
        "" => (None, false),
        "running" => (None, true),
        s => (Some(s.to_owned()), false),
    };
    let sort = match filter.sort.as_str() {
        "name" => Sort::Name,
        "last_backup" => Sort::LastBackup,
        _ => Sort::Health,
    };
    let query = Query {
        id: None,
        text: Some(filter.q.clone()),
        health,
        tag: Some(filter.tag.clone()).filter(|t| !t.is_empty()),
        running,
        sort,
        limit: PAGE_SIZE,
        offset: (filter.page() - 1) * PAGE_SIZE,
    };
    let total = fleet::total(&mut *conn, &query, counts).await?;
    let ids = fleet::page_ids(&mut *conn, &query).await?;
    Ok((total, ids))
}

/// One host's row (the host page).
pub async fn host_row(
    conn: &mut rm_store::Conn,
    row: Row,
    now_ms: i64,
) -> rm_store::Result<HostRow> {
    let mut rows = host_rows(conn, vec![row], now_ms).await?;
    rows.pop()
        .ok_or_else(|| rm_store::StoreError::not_found("host", ""))
}

/// The rows of one page of hosts: their backups of the strip's days,
/// schedules and tags in one query each for the whole page; only a host
/// with no finished backup in the window, or a running job, costs one
/// more query.
pub async fn host_rows(
    conn: &mut rm_store::Conn,
    rows: Vec<Row>,
    now_ms: i64,
) -> rm_store::Result<Vec<HostRow>> {
    let today_start = now_ms - now_ms.rem_euclid(DAY_MS);
    let since = today_start - (STRIP_DAYS - 1) * DAY_MS;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut runs_of = fleet::backups_since_many(&mut *conn, &ids, since).await?;
    let mut schedules_of = fleet::backup_schedules_many(&mut *conn, &ids).await?;
    let mut tags_of = rm_store::tags::of_hosts(&mut *conn, &ids).await?;
    let mut windows_of =
        rm_store::mutes::windows_of_many(&mut *conn, &ids, since, now_ms + 1).await?;
    // Hosts of a fleet share a few schedules: each distinct cron and time
    // zone is evaluated once per day of the process (`cached_slots`), not
    // once per host and day, nor once per page.
    let mut crons: std::collections::HashMap<(String, String), Option<Arc<Slots>>> =
        Default::default();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let runs = runs_of.remove(&row.id).unwrap_or_default();
        let last = match runs.iter().find(|r| is_finished(&r.status)) {
            Some(r) => Some(r.clone()),
            None if row.last_backup_status.is_some() => {
                fleet::last_backup(&mut *conn, &row.id).await?
            }
            None => None,
        };
        let running = if row.running_jobs > 0 {
            fleet::running_job(&mut *conn, &row.id)
                .await?
                .map(|(id, kind)| RunningJob { id, kind })
        } else {
            None
        };
        let host_schedules = schedules_of.remove(&row.id).unwrap_or_default();
        for s in &host_schedules {
            crons
                .entry((s.cron.clone(), s.timezone.clone()))
                .or_insert_with(|| cached_slots(&s.cron, &s.timezone, since));
        }
        let schedules: Vec<(&Slots, i64, i64)> = host_schedules
            .iter()
            .filter_map(|s| {
                crons
                    .get(&(s.cron.clone(), s.timezone.clone()))
                    .and_then(Option::as_deref)
                    .map(|c| (c, s.created_at, s.grace_secs))
            })
            .collect();
        let next_run_at = schedules
            .iter()
            .filter_map(|(c, _, _)| c.next_after(now_ms))
            .min();
        let active_since = row.enrolled_at.unwrap_or(row.created_at);
        let mut days = strip(now_ms, since, &runs, &schedules, active_since);
        let windows = windows_of.remove(&row.id).unwrap_or_default();
        let muted_now = !windows.is_empty() && windows.overlaps(now_ms, now_ms + 1);
        if !windows.is_empty() {
            for (i, day) in (0_i64..).zip(days.iter_mut()) {
                let start = since + i * DAY_MS;
                day.muted = windows.overlaps(start, (start + DAY_MS).min(now_ms + 1));
            }
        }
        out.push(HostRow {
            last_backup_reason: last
                .as_ref()
                .filter(|r| r.status != "succeeded")
                .and_then(|r| r.error.clone().or_else(|| r.error_kind.clone())),
            last_backup_job_id: last.as_ref().map(|r| r.id.clone()),
            tags: tags_of.remove(&row.id).unwrap_or_default(),
            id: row.id,
            name: row.name,
            hostname: row.hostname,
            status: row.status,
            health: row.health,
            last_seen_at: row.last_seen_at,
            running,
            last_backup_at: row.last_backup_at,
            last_backup_status: row.last_backup_status,
            next_run_at,
            has_backup_schedule: !schedules.is_empty(),
            repo_size: row.repo_size,
            snapshot_count: row.snapshot_count,
            open_alerts: row.open_alerts,
            muted_now,
            days,
        });
    }
    Ok(out)
}

fn is_finished(status: &str) -> bool {
    !matches!(status, "queued" | "dispatched" | "running")
}

/// A backup schedule's slots over the strip's window, computed once per
/// distinct cron and time zone.
struct Slots {
    cron: CronSchedule,
    /// The slots in `[since, until]`, ascending; `None` for a schedule too
    /// dense to list (then each day asks the cron itself).
    listed: Option<Vec<i64>>,
    /// The end of the listed span.
    until: i64,
}

/// Parsed schedules and their slots from the strip's first day to the end
/// of tomorrow, by cron and time zone, for the strip's first day: shared
/// by every page until the day turns (a cron's slots never change).
type SlotCache = HashMap<(String, String), (i64, Option<Arc<Slots>>)>;
static SLOT_CACHE: LazyLock<Mutex<SlotCache>> = LazyLock::new(Default::default);
/// Most distinct schedules cached; beyond, the cache starts again.
const SLOTS_CACHED: usize = 20_000;

/// The slots of `cron` in `tz` from `since` (the strip's first day) to the
/// end of the day after the strip's last, from the cache when a page of
/// the same day asked before. `None` for a cron or zone that does not parse.
fn cached_slots(cron: &str, tz: &str, since: i64) -> Option<Arc<Slots>> {
    let key = (cron.to_owned(), tz.to_owned());
    if let Ok(cache) = SLOT_CACHE.lock()
        && let Some((day, slots)) = cache.get(&key)
        && *day == since
    {
        return slots.clone();
    }
    // computed outside the lock: concurrent pages do not wait on each other
    let slots = Slots::new(cron, tz, since, since + (STRIP_DAYS + 1) * DAY_MS).map(Arc::new);
    if let Ok(mut cache) = SLOT_CACHE.lock() {
        if cache.len() >= SLOTS_CACHED {
            cache.clear();
        }
        cache.insert(key, (since, slots.clone()));
    }
    slots
}

/// Most slots listed per schedule (hourly over 30 days is 720).
const SLOTS_LISTED: usize = 2000;

impl Slots {
    /// The slots of `cron` in `tz` in `[since, until]`.
    fn new(cron: &str, tz: &str, since: i64, until: i64) -> Option<Self> {
        let cron = CronSchedule::parse(cron, tz).ok()?;
        let mut listed = Some(Vec::new());
        let mut at = since - 1;
        while let Some(slot) = cron.next_after_ms(at).filter(|s| *s <= until) {
            match listed.as_mut() {
                Some(v) if v.len() < SLOTS_LISTED => v.push(slot),
                _ => {
                    listed = None;
                    break;
                }
            }
            at = slot;
        }
        Some(Self {
            cron,
            listed,
            until,
        })
    }

    /// The first slot after `now` (`now` at or after the listed span's start).
    fn next_after(&self, now: i64) -> Option<i64> {
        match &self.listed {
            Some(v) if now < self.until => match v.get(v.partition_point(|s| *s <= now)) {
                Some(slot) => Some(*slot),
                // every slot up to `until` is listed: the next is beyond it
                None => self.cron.next_after_ms(self.until),
            },
            _ => self.cron.next_after_ms(now),
        }
    }

    /// The first slot at or after `from` (as `next_after_ms(from - 1)`),
    /// when it is at or before `until` (a listed schedule) — a slot after
    /// now is never missed, so the strip asks for no more.
    fn first_from(&self, from: i64) -> Option<i64> {
        match &self.listed {
            Some(v) => v.get(v.partition_point(|s| *s < from)).copied(),
            None => self.cron.next_after_ms(from - 1),
        }
    }
}

/// The strip's cells from `since` (a UTC midnight) to today.
fn strip(
    now_ms: i64,
    since: i64,
    runs: &[BackupRun],
    schedules: &[(&Slots, i64, i64)],
    active_since: i64,
) -> Vec<Day> {
    (0..STRIP_DAYS)
        .map(|i| {
            let start = since + i * DAY_MS;
            let end = start + DAY_MS;
            let date = jiff::Timestamp::from_millisecond(start)
                .map(|t| t.strftime("%Y-%m-%d").to_string())
                .unwrap_or_default();
            // Runs are newest first: the first in the day is its last.
            let state = match runs
                .iter()
                .find(|r| r.created_at >= start && r.created_at < end)
            {
                Some(r) => match r.status.as_str() {
                    "succeeded" => "ok",
                    "warning" | "cancelled" => "warn",
                    "failed" | "lost" => "fail",
                    _ => "running",
                },
                None if missed(start, end, now_ms, schedules, active_since) => "miss",
                None => "none",
            };
            Day {
                date,
                state,
                muted: false,
            }
        })
        .collect()
}

/// Whether a schedule had a slot in [start, end), after the host and the
/// schedule existed, whose grace has passed by now.
fn missed(
    start: i64,
    end: i64,
    now_ms: i64,
    schedules: &[(&Slots, i64, i64)],
    active_since: i64,
) -> bool {
    schedules.iter().any(|(slots, created_at, grace_secs)| {
        let from = start.max(*created_at).max(active_since);
        if from >= end {
            return false;
        }
        slots
            .first_from(from)
            .is_some_and(|slot| slot < end && slot + grace_secs * 1000 < now_ms)
    })
}

/// Words and classes of the status vocabulary (UI.md): colour and word.
impl HostRow {
    /// The status class (`s-ok`, `s-running`, ...).
    pub fn state_class(&self) -> &'static str {
        if self.running.is_some() && self.status == "online" {
            return "s-running";
        }
        health_class(&self.health)
    }

    /// The word beside the colour.
    pub fn state_word(&self) -> String {
        if let Some(job) = self.running.as_ref().filter(|_| self.status == "online") {
            return running_word(&job.kind);
        }
        health_word(&self.health).to_owned()
    }

    /// The last backup's result as a class and a short word.
    pub fn result_class(&self) -> &'static str {
        self.last_backup_status
            .as_deref()
            .map_or("s-unknown", job_status_class)
    }

    pub fn result_word(&self) -> String {
        match (&self.last_backup_status, &self.last_backup_reason) {
            (Some(s), _) if s == "succeeded" => "ok".into(),
            (Some(_), Some(reason)) => reason.clone(),
            (Some(s), None) => job_status_word(s).into(),
            (None, _) => "no backup yet".into(),
        }
    }

    /// The strip's summary for assistive technology: "27 ok, 1 missed, 2 failed".
    pub fn strip_label(&self) -> String {
        let count = |s: &str| self.days.iter().filter(|d| d.state == s).count();
        let parts: Vec<String> = [
            ("ok", "ok"),
            ("warn", "partial"),
            ("fail", "failed"),
            ("miss", "missed"),
            ("running", "running"),
        ]
        .iter()
        .filter_map(|(s, w)| {
            let n = count(s);
            (n > 0).then(|| format!("{n} {w}"))
        })
        .collect();
        let muted = self.days.iter().filter(|d| d.muted).count();
        let mut parts = parts;
        if muted > 0 {
            parts.push(format!("{muted} muted"));
        }
        if parts.is_empty() {
            "last 30 days: nothing due".into()
        } else {
            format!("last 30 days: {}", parts.join(", "))
        }
    }
}

/// `s-…` class of a backup health.
pub fn health_class(health: &str) -> &'static str {
    match health {
        "ok" => "s-ok",
        "warning" => "s-warn",
        "failed" | "offline" => "s-fail",
        _ => "s-unknown",
    }
}

pub fn health_word(health: &str) -> &'static str {
    match health {
        "ok" => "ok",
        "warning" => "partial",
        "failed" => "failed",
        "offline" => "offline",
        "never" => "never backed up",
        "pending" => "awaiting enrollment",
        _ => "unknown",
    }
}

/// `s-…` class of a job status.
pub fn job_status_class(status: &str) -> &'static str {
    match status {
        "succeeded" => "s-ok",
        "warning" | "cancelled" => "s-warn",
        "failed" | "lost" => "s-fail",
        "running" | "dispatched" => "s-running",
        _ => "s-unknown",
    }
}

pub fn job_status_word(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "warning" => "partial",
        "failed" => "failed",
        "lost" => "lost",
        "cancelled" => "cancelled",
        "running" => "running",
        "dispatched" => "starting",
        "queued" => "queued",
        _ => "unknown",
    }
}

/// "backing up", "pruning", ...
pub fn running_word(kind: &str) -> String {
    match kind {
        "backup" => "backing up".into(),
        "restore" => "restoring".into(),
        "prune" => "pruning".into(),
        "check" => "checking".into(),
        "forget" => "forgetting".into(),
        "forget_preview" => "previewing retention".into(),
        other => format!("running {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, at: i64) -> BackupRun {
        BackupRun {
            id: format!("j{at}"),
            status: status.into(),
            created_at: at,
            finished_at: Some(at + 1000),
            error_kind: None,
            error: None,
        }
    }

    #[test]
    fn strip_judges_each_day_against_the_schedule() {
        // 2026-12-01T12:00Z; a daily 02:00 UTC schedule since long before.
        let now: i64 = 1_796_126_400_000;
        let today = now - now.rem_euclid(DAY_MS);
        let since = today - (STRIP_DAYS - 1) * DAY_MS;
        let daily = Slots::new("0 2 * * *", "UTC", since, now).unwrap();
        let schedules = vec![(&daily, 0, 3600)];
        let runs = vec![
            run("failed", today + 2 * 3_600_000),
            run("succeeded", today - DAY_MS + 2 * 3_600_000 + 60_000),
            run("failed", today - DAY_MS + 2 * 3_600_000),
            run("warning", today - 2 * DAY_MS + 7_200_000),
        ];
        let days = strip(now, since, &runs, &schedules, 0);
        assert_eq!(days.len(), 30);
        assert_eq!(days[29].state, "fail", "today's only run failed");
        assert_eq!(days[28].state, "ok", "yesterday's last run succeeded");
        assert_eq!(days[27].state, "warn");
        assert_eq!(days[26].state, "miss", "a due slot without any backup");
        assert_eq!(days[29].date, "2026-12-01");
    }

    #[test]
    fn strip_is_empty_before_the_host_existed_and_without_schedules() {
        let now: i64 = 1_796_126_400_000;
        let today = now - now.rem_euclid(DAY_MS);
        let since = today - (STRIP_DAYS - 1) * DAY_MS;
        let daily = Slots::new("0 2 * * *", "UTC", since, now).unwrap();
        let days = strip(now, since, &[], &[(&daily, 0, 3600)], today - DAY_MS);
        assert!(days[..28].iter().all(|d| d.state == "none"));
        assert_eq!(days[28].state, "miss");
        assert_eq!(days[29].state, "miss");
        let days = strip(now, since, &[], &[], 0);
        assert!(days.iter().all(|d| d.state == "none"));
    }

    #[test]
    fn a_slot_still_inside_its_grace_is_not_missed() {
        // now = 02:30 on the day of a 02:00 slot with one hour of grace.
        let day = 1_796_083_200_000; // 2026-12-01T00:00Z
        let now = day + 2 * 3_600_000 + 30 * 60_000;
        let daily = Slots::new("0 2 * * *", "UTC", day - 29 * DAY_MS, now).unwrap();
        assert!(!missed(day, day + DAY_MS, now, &[(&daily, 0, 3600)], 0));
    }

    #[test]
    fn listed_slots_judge_every_day_as_the_cron_itself_does() {
        // The slots are listed once per distinct cron; a cron too dense to
        // list asks itself per day. Both agree with the cron's own answer.
        let now: i64 = 1_796_126_400_000 + 17 * 60_000;
        let today = now - now.rem_euclid(DAY_MS);
        let since = today - (STRIP_DAYS - 1) * DAY_MS;
        for (cron, tz) in [
            ("0 2 * * *", "UTC"),
            ("30 */6 * * *", "Europe/Berlin"),
            ("0 3 * * 1", "America/New_York"),
            ("*/1 * * * *", "UTC"),
        ] {
            let slots = Slots::new(cron, tz, since, now).unwrap();
            assert_eq!(slots.listed.is_none(), cron == "*/1 * * * *", "{cron}");
            let direct = CronSchedule::parse(cron, tz).unwrap();
            assert_eq!(slots.next_after(now), direct.next_after_ms(now), "{cron}");
            // the cached span reaches past now: the same answers
            let cached = cached_slots(cron, tz, since).unwrap();
            assert_eq!(cached.next_after(now), direct.next_after_ms(now), "{cron}");
            for created in [0, since + 5 * DAY_MS + 7_200_000, today - 3_600_000] {
                for grace in [0, 3600, 86_400] {
                    for i in 0..STRIP_DAYS {
                        let (start, end) = (since + i * DAY_MS, since + (i + 1) * DAY_MS);
                        let from = start.max(created);
                        let want = from < end
                            && direct
                                .next_after_ms(from - 1)
                                .is_some_and(|s| s < end && s + grace * 1000 < now);
                        let got = missed(start, end, now, &[(&slots, created, grace)], 0);
                        assert_eq!(
                            got, want,
                            "{cron} {tz} day {i} created {created} grace {grace}"
                        );
                        let got = missed(start, end, now, &[(&*cached, created, grace)], 0);
                        assert_eq!(
                            got, want,
                            "cached {cron} {tz} day {i} created {created} grace {grace}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn filter_rejects_unknown_state_and_sort() {
        let f = FleetFilter {
            state: "bogus".into(),
            ..FleetFilter::default()
        };
        assert_eq!(f.validate().unwrap_err().0, "state");
        let f = FleetFilter {
            sort: "size".into(),
            ..FleetFilter::default()
        };
        assert_eq!(f.validate().unwrap_err().0, "sort");
        let f = FleetFilter {
            q: "a b&c".into(),
            page: 2,
            ..FleetFilter::default()
        };
        assert_eq!(f.query_for_page(3), "?q=a%20b%26c&page=3");
    }
}
