//! One host: posture, repositories with health and snapshots, schedules,
//! recent jobs and alerts. One view for the page (`/hosts/<id>`) and its
//! JSON twin (`GET /api/v1/hosts/<id>`), loaded once by [`load`].

use rm_cron::CronSchedule;
use rm_store::{alerts, fleet as store_fleet, health, hosts, jobs, repos, schedules, snapshots};
use serde::Serialize;

use super::fleet::{self, HostRow};
use super::job::JobRow;

/// Snapshots listed per repository on the host page.
const SNAPSHOTS_SHOWN: i64 = 20;
/// Recent jobs on the host page.
const JOBS_SHOWN: i64 = 15;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Disk {
    pub path: String,
    pub free_bytes: i64,
    pub total_bytes: Option<i64>,
}

/// What the agent reports about itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Posture {
    pub os: Option<String>,
    pub arch: Option<String>,
    pub hostname: Option<String>,
    /// The name restic records as the snapshot host (`--host`).
    pub restic_host: Option<String>,
    pub agent_version: Option<String>,
    pub restic_version: Option<String>,
    pub uptime_secs: Option<i64>,
    pub enrolled_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub disks: Vec<Disk>,
    /// The agent confirmed the newest configuration.
    pub config_current: bool,
    /// Every repository credential of this host is append-only.
    pub append_only: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepoHealth {
    pub ts: i64,
    pub total_size: Option<i64>,
    pub raw_size: Option<i64>,
    pub dedup_ratio: Option<f64>,
    pub compression_ratio: Option<f64>,
    pub snapshot_count: Option<i64>,
    pub lock_count: Option<i64>,
    pub check_ok: Option<bool>,
    pub check_at: Option<i64>,
}

impl From<&health::Health> for RepoHealth {
    fn from(h: &health::Health) -> Self {
        Self {
            ts: h.ts,
            total_size: h.total_size,
            raw_size: h.raw_size,
            dedup_ratio: h.dedup_ratio,
            compression_ratio: h.compression_ratio,
            snapshot_count: h.snapshot_count,
            lock_count: h.lock_count,
            check_ok: h.check_ok,
            check_at: h.check_at,
        }
    }
}

impl RepoHealth {
    /// The stored size (raw data when known, else the restore size).
    pub fn size(&self) -> Option<i64> {
        self.raw_size.or(self.total_size)
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotRow {
    pub id: String,
    pub short_id: String,
    pub time: i64,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Bytes added by the backup that made it, when known.
    pub data_added: Option<i64>,
    pub total_size: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostRepoView {
    pub id: String,
    pub name: String,
    pub url: String,
    /// `append_only` or `full`.
    pub access: String,
    /// This host runs the repository's forget and prune.
    pub maintenance: bool,
    pub status: String,
    pub status_detail: Option<String>,
    pub health: Option<RepoHealth>,
    pub snapshots: Vec<SnapshotRow>,
    pub snapshot_total: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleRow {
    pub id: String,
    pub kind: String,
    pub repo_id: String,
    pub repo_name: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub next_run_at: Option<i64>,
    /// What the cron expression means, in words.
    pub reading: String,
    /// Why this schedule cannot run, when it cannot: a forget or prune of
    /// a host with an append-only credential, on a repository without a
    /// maintenance host (nothing may delete there).
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertRow {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub message: String,
    pub job_id: Option<String>,
    pub raised_at: i64,
    pub last_seen_at: i64,
    pub acknowledged_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostView {
    pub id: String,
    pub name: String,
    /// `pending`, `online`, `offline` or `revoked`.
    pub status: String,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub status_changed_at: Option<i64>,
    /// The configuration version the control plane holds for the host ...
    pub config_version: i64,
    /// ... and the one its agent confirmed.
    pub applied_config_version: i64,
    /// The operator's labels, sorted.
    pub tags: Vec<String>,
    /// The dashboard row (absent for a revoked host).
    pub summary: Option<HostRow>,
    pub posture: Posture,
    pub repositories: Vec<HostRepoView>,
    pub schedules: Vec<ScheduleRow>,
    pub jobs: Vec<JobRow>,
    pub alerts: Vec<AlertRow>,
    /// Results from this host the control plane refused, newest first.
    pub rejected: Vec<super::rejected::RejectedRow>,
    pub now: i64,
}

fn disks(vitals_json: Option<&str>) -> Vec<Disk> {
    #[derive(serde::Deserialize)]
    struct V {
        #[serde(default)]
        disks: Vec<rm_bus::msg::DiskFree>,
    }
    vitals_json
        .and_then(|j| serde_json::from_str::<V>(j).ok())
        .map(|v| {
            v.disks
                .into_iter()
                .map(|d| Disk {
                    path: d.path,
                    free_bytes: i64::try_from(d.free_bytes).unwrap_or(i64::MAX),
                    total_bytes: d.total_bytes.and_then(|t| i64::try_from(t).ok()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn summary_sizes(summary_json: Option<&str>) -> (Option<i64>, Option<i64>) {
    let v: Option<serde_json::Value> = summary_json.and_then(|s| serde_json::from_str(s).ok());
    let get = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(serde_json::Value::as_i64)
    };
    (get("data_added"), get("total_bytes_processed"))
}

fn strings(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Loads a host; `NotFound` for an unknown id.
pub async fn load(conn: &mut rm_store::Conn, id: &str, now_ms: i64) -> rm_store::Result<HostView> {
    let host = hosts::get(&mut *conn, id).await?;
    let tags = rm_store::tags::of_host(&mut *conn, id).await?;
    let summary = match store_fleet::row(&mut *conn, id).await? {
        Some(row) => Some(fleet::host_row(&mut *conn, row, now_ms).await?),
        None => None,
    };
    let creds = repos::credentials_of_host(&mut *conn, id).await?;
    let host_schedules = schedules::for_host(&mut *conn, id).await?;
    // only the repositories this page names (its credentials' and its
    // schedules'), not every repository of the installation
    let mut repo_ids: Vec<&str> = creds
        .iter()
        .map(|c| c.repo_id.as_str())
        .chain(host_schedules.iter().map(|s| s.repo_id.as_str()))
        .collect();
    repo_ids.sort_unstable();
    repo_ids.dedup();
    let all_repos = repos::of_ids(&mut *conn, &repo_ids).await?;
    let mut repositories = Vec::new();
    for cred in &creds {
        let Some(repo) = all_repos.iter().find(|r| r.id == cred.repo_id) else {
            continue;
        };
        let health = health::latest(&mut *conn, &repo.id)
            .await
            .ok()
            .map(|h| RepoHealth::from(&h));
        // the newest few, and the count from the index: not every snapshot
        let (snaps, snapshot_total) = match host.restic_host.as_deref() {
            Some(rh) => (
                snapshots::page(
                    &mut *conn,
                    &repo.id,
                    rh,
                    &snapshots::PageFilter::default(),
                    None,
                    SNAPSHOTS_SHOWN,
                )
                .await?,
                snapshots::count_of_host(&mut *conn, &repo.id, rh).await?,
            ),
            None => (Vec::new(), 0),
        };
        let snapshot_total = usize::try_from(snapshot_total).unwrap_or(0);
        let snapshots = snaps
            .into_iter()
            .map(|s| {
                let (data_added, total_size) = summary_sizes(s.summary_json.as_deref());
                SnapshotRow {
                    paths: strings(&s.paths_json),
                    tags: strings(&s.tags_json),
                    id: s.snapshot_id,
                    short_id: s.short_id,
                    time: s.time,
                    data_added,
                    total_size,
                }
            })
            .collect();
        repositories.push(HostRepoView {
            id: repo.id.clone(),
            name: repo.name.clone(),
            url: repo.url_display.clone(),
            access: cred.access.clone(),
            maintenance: repo.maintenance_host_id.as_deref() == Some(id),
            status: repo.status.clone(),
            status_detail: repo.status_detail.clone(),
            health,
            snapshots,
            snapshot_total,
        });
    }
    let schedules = host_schedules
        .into_iter()
        .map(|s| {
            let cron = CronSchedule::parse(&s.cron, &s.timezone).ok();
            let repo = all_repos.iter().find(|r| r.id == s.repo_id);
            let append_only = creds
                .iter()
                .find(|c| c.repo_id == s.repo_id)
                .is_some_and(|c| matches!(c.access(), Ok(repos::Access::AppendOnly)));
            let blocked = (matches!(s.kind.as_str(), "forget" | "prune")
                && append_only
                && repo.is_some_and(|r| r.maintenance_host_id.is_none()))
            .then(|| {
                format!(
                    "Cannot run: this host's credential for {} is append-only and the repository has no maintenance host to run {} for it. Choose a maintenance host with full access on the repository's page.",
                    repo.map_or(s.repo_id.as_str(), |r| r.name.as_str()),
                    s.kind
                )
            });
            ScheduleRow {
                blocked,
                repo_name: repo.map_or_else(|| s.repo_id.clone(), |r| r.name.clone()),
                next_run_at: cron
                    .as_ref()
                    .filter(|_| s.enabled)
                    .and_then(|c| c.next_after_ms(now_ms)),
                reading: crate::ui::cron_words::describe(&s.cron),
                id: s.id,
                kind: s.kind,
                repo_id: s.repo_id,
                cron: s.cron,
                timezone: s.timezone,
                enabled: s.enabled,
            }
        })
        .collect();
    let recent = jobs::list_for_host(&mut *conn, id, None, JOBS_SHOWN).await?;
    let names = super::job::Names::for_jobs(&mut *conn, &recent).await?;
    let jobs = recent.iter().map(|j| JobRow::new(j, &names)).collect();
    let alerts = alerts::list_for_host(&mut *conn, id, 50)
        .await?
        .into_iter()
        .filter(alerts::Alert::is_open)
        .map(|a| AlertRow {
            id: a.id,
            kind: a.kind,
            severity: a.severity,
            message: a.message,
            job_id: a.job_id,
            raised_at: a.raised_at,
            last_seen_at: a.last_seen_at,
            acknowledged_by: a.acknowledged_by,
        })
        .collect();
    let rejected =
        super::rejected::list(&mut *conn, Some(id), super::rejected::ON_HOST_PAGE).await?;
    let posture = Posture {
        os: host.os.clone(),
        arch: host.arch.clone(),
        hostname: host.hostname.clone(),
        restic_host: host.restic_host.clone(),
        agent_version: host.agent_version.clone(),
        restic_version: host.restic_version.clone(),
        uptime_secs: host.uptime_secs,
        enrolled_at: host.enrolled_at,
        last_seen_at: host.last_seen_at,
        disks: disks(host.vitals_json.as_deref()),
        config_current: host.applied_config_version >= host.config_version,
        append_only: !creds.is_empty() && creds.iter().all(|c| c.access == "append_only"),
    };
    Ok(HostView {
        id: host.id,
        name: host.name,
        status: host.status,
        revoked_at: host.revoked_at,
        created_at: host.created_at,
        created_by: host.created_by,
        status_changed_at: host.status_changed_at,
        config_version: host.config_version,
        applied_config_version: host.applied_config_version,
        tags,
        summary,
        posture,
        repositories,
        schedules,
        jobs,
        alerts,
        rejected,
        now: now_ms,
    })
}
