//! Repository state from job results: the snapshots cache and the health
//! history (sizes, dedup and compression, snapshot count, check results).
//!
//! Kept current without a second fleet of restic runs:
//! - a backup's own summary names its snapshot (id, and with restic ≥ 0.17
//!   its start time); the control plane adds that snapshot to the cache from
//!   the job's parameters (paths, tags, the host's restic host name) and
//!   counts it (the count is the cache's), without a `snapshots` job.
//!   Only a repository whose snapshots were never listed gets a full
//!   refresh after a backup (once).
//! - a full refresh (`snapshots`, both `stats` modes, `locks`) is queued
//!   per repository once every `Timings::health_every`, each repository
//!   at its own place in the period (a fleet's refreshes spread over it,
//!   not all at once), after a forget,
//!   prune or check, and when an operator asks (`repo-refresh`), on the
//!   maintenance host if online, else on any attached online host.
//! - checks are recorded whenever one runs (on its schedule or by hand).

use rm_bus::msg::{JobDone, JobOutcome, JobParams, StatsMode};
use rm_store::health::{self, Health};
use rm_store::jobs::{self, JobStatus, NewJob};
use rm_store::snapshots;
use serde_json::Value;

use crate::Cp;

/// Records what a finished job tells about its repository. Returns true
/// when the repository's state should be refreshed.
pub(crate) async fn record(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    job: &jobs::Job,
    done: &JobDone,
    settle: &mut crate::settle::Settle,
) -> anyhow::Result<bool> {
    let Some(repo) = &job.repo_id else {
        return Ok(false);
    };
    let ok = matches!(done.outcome, JobOutcome::Succeeded | JobOutcome::Warning);
    let now = cp.now();
    let summary = done.summary.as_ref();
    match (job.params()?, ok) {
        (JobParams::Backup { paths, tags, .. }, true) => {
            let Some(s) = summary else { return Ok(false) };
            let Some(id) = s.get("snapshot_id").and_then(Value::as_str) else {
                // no snapshot (a dry run, or restic said nothing): nothing
                // in the repository changed that a refresh would find
                return Ok(false);
            };
            let hostname = settle.restic_host(&mut *tx, &job.host_id).await?;
            // written with the run's other snapshots (`Settle::write_snapshots`)
            settle.snapshot(snapshots::Snapshot {
                repo_id: repo.clone(),
                snapshot_id: id.to_owned(),
                short_id: id.chars().take(8).collect(),
                hostname,
                time: backup_time(s, done.finished_ms),
                paths_json: serde_json::to_string(&paths)?,
                tags_json: serde_json::to_string(&tags)?,
                summary_json: Some(s.to_string()),
                seen_at: now,
            });
            // counted by the cache once the repository was listed; a
            // never-listed one is refreshed (once per repository and batch)
            settle.snapshot_added(repo, job);
            Ok(false)
        }
        (JobParams::Forget { .. } | JobParams::Prune {}, true) => Ok(true),
        (JobParams::Snapshots { host_name }, true) => {
            let Some(list) = summary.and_then(Value::as_array) else {
                return Ok(false);
            };
            let parsed: Vec<snapshots::Snapshot> = list
                .iter()
                .filter_map(|s| snapshot_of(repo, s, now))
                .collect();
            snapshots::replace_all(&mut *tx, repo, host_name.as_deref(), &parsed).await?;
            if host_name.is_none() {
                health::insert(
                    &mut *tx,
                    &Health {
                        repo_id: repo.clone(),
                        ts: now,
                        source_job_id: Some(job.id.clone()),
                        snapshot_count: i64::try_from(parsed.len()).ok(),
                        ..Health::default()
                    },
                )
                .await?;
                health::mark_listed(&mut *tx, repo, now).await?;
            }
            Ok(false)
        }
        (
            JobParams::Stats {
                mode,
                snapshot: None,
            },
            true,
        ) => {
            let Some(s) = summary else { return Ok(false) };
            let int = |k: &str| s.get(k).and_then(Value::as_i64);
            let mut h = Health {
                repo_id: repo.clone(),
                ts: now,
                source_job_id: Some(job.id.clone()),
                ..Health::default()
            };
            match mode {
                StatsMode::RestoreSize => h.total_size = int("total_size"),
                StatsMode::RawData => {
                    h.raw_size = int("total_size");
                    h.uncompressed_size = int("total_uncompressed_size");
                    h.compression_ratio = s.get("compression_ratio").and_then(Value::as_f64);
                }
                StatsMode::Unknown => return Ok(false),
            }
            health::insert(&mut *tx, &h).await?;
            Ok(false)
        }
        (JobParams::Locks {}, true) => {
            let Some(list) = summary.and_then(Value::as_array) else {
                return Ok(false);
            };
            health::insert(
                &mut *tx,
                &Health {
                    repo_id: repo.clone(),
                    ts: now,
                    source_job_id: Some(job.id.clone()),
                    lock_count: i64::try_from(list.len()).ok(),
                    ..Health::default()
                },
            )
            .await?;
            Ok(false)
        }
        (JobParams::Check { .. }, _) if done.outcome != JobOutcome::Cancelled => {
            health::insert(
                &mut *tx,
                &Health {
                    repo_id: repo.clone(),
                    ts: now,
                    source_job_id: Some(job.id.clone()),
                    check_ok: Some(done.outcome == JobOutcome::Succeeded),
                    check_at: Some(done.finished_ms),
                    detail_json: summary.map(ToString::to_string),
                    ..Health::default()
                },
            )
            .await?;
            // what a check found (or locks it left) shows at once
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn snapshot_of(repo: &str, s: &Value, now: i64) -> Option<snapshots::Snapshot> {
    let id = s.get("id").and_then(Value::as_str)?;
    let time = s
        .get("time")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_ms)?;
    Some(snapshots::Snapshot {
        repo_id: repo.to_owned(),
        snapshot_id: id.to_owned(),
        short_id: s
            .get("short_id")
            .and_then(Value::as_str)
            .map_or_else(|| id.chars().take(8).collect(), str::to_owned),
        hostname: s
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        time,
        paths_json: s
            .get("paths")
            .map_or_else(|| "[]".into(), ToString::to_string),
        tags_json: s
            .get("tags")
            .filter(|t| !t.is_null())
            .map_or_else(|| "[]".into(), ToString::to_string),
        summary_json: s.get("summary").map(ToString::to_string),
        seen_at: now,
    })
}

/// When the backup's snapshot was taken: restic ≥ 0.17 says so
/// (`backup_start`, the snapshot's own time); older ones give only the
/// duration, counted back from the agent's end of the job (close, not
/// exact: the next full refresh brings restic's own time).
fn backup_time(summary: &Value, finished_ms: i64) -> i64 {
    if let Some(t) = summary
        .get("backup_start")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_ms)
    {
        return t;
    }
    match summary.get("total_duration").and_then(Value::as_f64) {
        Some(d) if d.is_finite() && d >= 0.0 => {
            finished_ms.saturating_sub(std::time::Duration::from_secs_f64(d).as_millis() as i64)
        }
        _ => finished_ms,
    }
}

/// Parses restic's RFC 3339 times (`2026-11-25T17:48:30.977496123+01:00`,
/// `...Z`) to Unix milliseconds (sub-millisecond digits are truncated).
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_millisecond)
}

/// Queues `snapshots`, both `stats` modes and `locks` for `repo` on `exec_host`,
/// unless such a refresh is already waiting. A refresh still queued on a
/// host that went offline is cancelled first, so it does not block this
/// one (a stuck running one is ended by the deadline sweeper). Returns the
/// jobs queued.
pub(crate) async fn queue_refresh(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    repo: &str,
    exec_host: &str,
) -> anyhow::Result<Refresh> {
    let superseded = jobs::supersede_stale_refreshes(&mut *tx, repo, cp.now()).await?;
    for (job, host) in &superseded {
        tracing::info!(job = %job, host = %host, repo = %repo, "stale repository refresh cancelled");
    }
    if jobs::system_refresh_pending(&mut *tx, repo).await? {
        return Ok(Refresh {
            queued: Vec::new(),
            superseded,
        });
    }
    let now = cp.now();
    let mut queued = Vec::new();
    for params in [
        JobParams::Snapshots { host_name: None },
        JobParams::Stats {
            mode: StatsMode::RestoreSize,
            snapshot: None,
        },
        JobParams::Stats {
            mode: StatsMode::RawData,
            snapshot: None,
        },
        JobParams::Locks {},
    ] {
        let id = rm_bus::JobId::generate();
        jobs::insert(
            &mut *tx,
            &NewJob {
                id: id.as_str(),
                host_id: exec_host,
                exec_host_id: exec_host,
                repo_id: Some(repo),
                params: &params,
                origin: "system",
                schedule_id: None,
                status: JobStatus::Queued,
                timeout_secs: i64::try_from(cp.t.refresh_timeout.as_secs()).unwrap_or(i64::MAX),
                created_by: "system",
                created_at: now,
                started_at: None,
            },
        )
        .await?;
        queued.push(id.to_string());
    }
    rm_store::refresh::mark_queued(&mut *tx, repo, now).await?;
    Ok(Refresh { queued, superseded })
}

/// What queueing a refresh did.
pub(crate) struct Refresh {
    /// The jobs queued (none if a refresh was already waiting).
    pub queued: Vec<String>,
    /// (job, owner host) of stale refreshes cancelled: publish
    /// `job.finished` for them after the commit.
    pub superseded: Vec<(String, String)>,
}

/// Where a refresh of `repo` runs: its maintenance host if online, else
/// an attached host that is online (`rm_store::refresh::runner`, the rule
/// the periodic sweep's choice of due repositories applies too).
pub(crate) async fn refresh_host(
    tx: &mut rm_store::Conn,
    repo: &str,
) -> anyhow::Result<Option<String>> {
    Ok(rm_store::refresh::runner(&mut *tx, repo).await?)
}

/// Repositories whose refresh one write of [`refresh_due`] queues at most:
/// the writer takes other writes (a burst's results, an operator's click)
/// between two of them. Queuing a refresh reads the repository and its
/// hosts and writes four jobs: all 18,900 repositories of a fleet in one
/// write held the writer 29 s (issue 14, stop 59).
const REFRESHES_PER_WRITE: usize = 32;

/// The periodic sweep (every sweeper tick): a refresh of each repository
/// due (`rm_store::refresh::due`: once every `health_every`, at the
/// repository's own place in that period, a place less than half a period
/// after its last refresh skipped; never refreshed: counted from its
/// creation), the longest unrefreshed first, at most
/// `Timings::health_refresh_per_tick` a tick (a fleet whose repositories
/// all fall due at once, after an upgrade or a restore, gets its refreshes
/// spread over ticks instead of a storm of restic runs), in writes of
/// [`REFRESHES_PER_WRITE`]. A repository with no online host waits for a
/// tick when it has one.
pub(crate) async fn refresh_due(cp: &std::sync::Arc<Cp>) -> anyhow::Result<usize> {
    let period = i64::try_from(cp.t.health_every.as_millis()).unwrap_or(i64::MAX);
    let due = {
        let mut c = cp.store.read().await?;
        rm_store::refresh::due(&mut c, cp.now(), period, cp.t.health_refresh_per_tick).await?
    };
    let mut n = 0;
    let mut ended = Vec::new();
    for part in due.chunks(REFRESHES_PER_WRITE) {
        let part = part.to_vec();
        let c = cp.clone();
        let (queued, stale) = cp
            .writer
            .run(move |tx| {
                Box::pin(async move {
                    let mut n = 0;
                    let mut ended = Vec::new();
                    for repo in part {
                        if let Some(h) = refresh_host(&mut *tx, &repo).await? {
                            let r = queue_refresh(&c, &mut *tx, &repo, &h).await?;
                            if r.queued.is_empty() {
                                // one is still waiting (a busy host): to the
                                // back of the line, or the oldest of these
                                // would take the tick's places every tick
                                rm_store::refresh::mark_queued(&mut *tx, &repo, c.now()).await?;
                            }
                            n += usize::from(!r.queued.is_empty());
                            ended.extend(
                                r.superseded.into_iter().map(|(j, h)| (j, h, repo.clone())),
                            );
                        }
                    }
                    Ok::<_, anyhow::Error>((n, ended))
                })
            })
            .await?;
        n += queued;
        ended.extend(stale);
    }
    for (job, host, repo) in ended {
        cp.job_event(
            rm_bus::subject::Event::JobFinished,
            &host,
            &job,
            Some(&repo),
        )
        .await;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_ms;

    #[test]
    fn parses_restic_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T17:48:30.977496123+01:00"),
            Some(1_795_625_310_977)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T16:48:30.977Z"),
            Some(1_795_625_310_977)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T12:00:00-05:30"),
            Some(951_845_400_000)
        );
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        assert_eq!(parse_rfc3339_ms("2026-13-01T00:00:00Z"), None);
    }
}
