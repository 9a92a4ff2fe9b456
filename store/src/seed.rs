//! Fills a database with a made-up fleet, for the UI at scale (the
//! benchmark seeding command) and for UI tests: hosts in every state,
//! their summaries, daily backup schedules, a history of jobs, snapshots,
//! repository health and open alerts. Rows are written exactly as the
//! owning roles write them, so every page reads them as real.
//!
//! Seeded repositories carry placeholder credentials that open nowhere: a
//! seeded database is for looking at and measuring, never for running jobs.

use sqlx::SqliteConnection;

use crate::{Result, Store};

const DAY_MS: i64 = 86_400_000;

/// What to make.
#[derive(Debug, Clone)]
pub struct Spec {
    pub hosts: usize,
    /// Backup jobs per host, one a day going back from `now_ms`.
    pub jobs_per_host: usize,
    /// Snapshot rows per host (from the newest successful backups).
    pub snapshots_per_host: usize,
    pub hosts_per_repo: usize,
    pub now_ms: i64,
    /// Varies the made-up data deterministically.
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            hosts: 20,
            jobs_per_host: 30,
            snapshots_per_host: 10,
            hosts_per_repo: 100,
            now_ms: 0,
            seed: 1,
        }
    }
}

/// What was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub hosts: usize,
    pub jobs: usize,
    pub snapshots: usize,
    pub repositories: usize,
    pub alerts: usize,
}

/// A tiny deterministic generator (SplitMix64): no dependency, same data
/// for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn hex(rng: &mut Rng) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    )
}

/// Writes the fleet in batches of transactions; returns what it made.
pub async fn fleet(store: &Store, spec: &Spec) -> Result<Report> {
    let mut rng = Rng(spec.seed);
    let mut report = Report::default();
    let repos = spec.hosts.div_ceil(spec.hosts_per_repo.max(1)).max(1);
    {
        let mut tx = store.write().await?;
        for r in 0..repos {
            let id = format!("seed-repo-{r:04}");
            sqlx::query(
                "INSERT INTO repositories (id, name, url_display, secrets_enc, status, created_at, created_by, refresh_phase)
                 VALUES (?, ?, ?, X'00', 'ok', ?, 'seed', ?)",
            )
            .bind(&id)
            .bind(format!("repo-{r:04}"))
            .bind(format!("rest:https://backup-{r}.example.internal/fleet"))
            .bind(spec.now_ms - 400 * DAY_MS)
            .bind(crate::refresh::phase_of(&id))
            .execute(&mut *tx)
            .await?;
            let size = i64::try_from(rng.below(4 << 40)).unwrap_or(0) + (1 << 30);
            sqlx::query(
                "INSERT INTO repo_health (repo_id, ts, total_size, raw_size, dedup_ratio, snapshot_count, lock_count, check_ok, check_at)
                 VALUES (?, ?, ?, ?, 2.4, ?, 0, 1, ?)",
            )
            .bind(&id)
            .bind(spec.now_ms - 3_600_000)
            .bind(size * 3)
            .bind(size)
            .bind(i64::try_from(spec.hosts_per_repo * spec.snapshots_per_host).unwrap_or(0))
            .bind(spec.now_ms - DAY_MS)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        report.repositories = repos;
    }
    // Hosts in batches so a big seed never holds one huge transaction.
    for chunk_start in (0..spec.hosts).step_by(200) {
        let mut tx = store.write().await?;
        for i in chunk_start..(chunk_start + 200).min(spec.hosts) {
            let r = seed_host(&mut tx, spec, &mut rng, i).await?;
            report.hosts += 1;
            report.jobs += r.jobs;
            report.snapshots += r.snapshots;
            report.alerts += r.alerts;
        }
        tx.commit().await?;
    }
    Ok(report)
}

async fn seed_host(
    conn: &mut SqliteConnection,
    spec: &Spec,
    rng: &mut Rng,
    i: usize,
) -> Result<Report> {
    let now = spec.now_ms;
    let id = format!("seed-h{i:06}");
    let name = format!("host-{i:05}");
    let repo = format!("seed-repo-{:04}", i / spec.hosts_per_repo.max(1));
    let roll = rng.below(100);
    let status = match roll {
        0 => "revoked",
        1..=2 => "pending",
        3..=7 => "offline",
        _ => "online",
    };
    let enrolled = (status != "pending").then_some(now - 400 * DAY_MS);
    let last_seen = match status {
        "online" => Some(now - i64::try_from(rng.below(15_000)).unwrap_or(0)),
        "offline" => {
            Some(now - i64::try_from(rng.below(3 * DAY_MS as u64)).unwrap_or(0) - 3_600_000)
        }
        _ => None,
    };
    let os = if rng.chance(20) { "windows" } else { "linux" };
    sqlx::query(
        "INSERT INTO hosts (id, name, status, restic_host, created_at, created_by, enrolled_at, last_seen_at,
                            status_changed_at, agent_version, restic_version, os, arch, hostname, uptime_secs,
                            vitals_json, config_version, applied_config_version)
         VALUES (?, ?, ?, ?, ?, 'seed', ?, ?, ?, '0.1.0', '0.18.0', ?, 'x86_64', ?, 86400, ?, 1, 1)",
    )
    .bind(&id)
    .bind(&name)
    .bind(status)
    .bind(&id)
    .bind(now - 401 * DAY_MS)
    .bind(enrolled)
    .bind(last_seen)
    .bind(last_seen)
    .bind(os)
    .bind(format!("{name}.example.internal"))
    .bind(r#"{"disks":[{"path":"/","free_bytes":53687091200,"total_bytes":107374182400}],"running_jobs":[],"next_runs":[]}"#)
    .execute(&mut *conn)
    .await?;
    // Tags: a site for every host, a role for most, `prod` for a third.
    let mut tags = vec![format!("site-{}", i % 12)];
    tags.push(["web", "db", "file", "mail", "build"][(i / 12) % 5].to_owned());
    if i.is_multiple_of(3) {
        tags.push("prod".to_owned());
    }
    crate::tags::set(&mut *conn, &id, &tags).await?;
    if status == "pending" {
        sqlx::query("INSERT INTO host_summary (host_id) VALUES (?)")
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        return Ok(Report::default());
    }
    sqlx::query(
        "INSERT INTO host_repositories (host_id, repo_id, access, secrets_enc, created_at) VALUES (?, ?, 'append_only', X'00', ?)",
    )
    .bind(&id)
    .bind(&repo)
    .bind(now - 400 * DAY_MS)
    .execute(&mut *conn)
    .await?;
    let minute = rng.below(60);
    let hour = rng.below(6);
    let schedule_id = format!("seed-s{i:06}");
    sqlx::query(
        "INSERT INTO schedules (id, host_id, repo_id, kind, cron, timezone, params_json, enabled, timeout_secs,
                                grace_secs, exec_host_id, config_version, created_at, updated_at)
         VALUES (?, ?, ?, 'backup', ?, 'UTC', ?, 1, 14400, 3600, ?, 1, ?, ?)",
    )
    .bind(&schedule_id)
    .bind(&id)
    .bind(&repo)
    .bind(format!("{minute} {hour} * * *"))
    .bind(r#"{"kind":"backup","paths":["/etc","/home","/srv"],"excludes":["*.tmp"],"tags":["daily"],"host_name":null}"#)
    .bind(&id)
    .bind(now - 400 * DAY_MS)
    .bind(now - 400 * DAY_MS)
    .execute(&mut *conn)
    .await?;

    // A broken host fails every day from some point; a flaky one now and then.
    let failing_since = rng.chance(4).then(|| rng.below(5));
    let flaky = rng.chance(10);
    let today = now - now.rem_euclid(DAY_MS);
    let mut report = Report::default();
    let mut last: Option<(String, &str, i64)> = None;
    let mut last_success: Option<i64> = None;
    let mut snapshots = 0;
    for d in 0..spec.jobs_per_host {
        let day = today - i64::try_from(d).unwrap_or(0) * DAY_MS;
        let at = day + i64::try_from(hour * 3_600_000 + minute * 60_000).unwrap_or(0);
        if at > now || (status == "offline" && d == 0) {
            continue;
        }
        if rng.chance(2) {
            continue; // a missed day
        }
        let outcome = match failing_since {
            Some(n) if (d as u64) <= n => "failed",
            _ if flaky && rng.chance(15) => "warning",
            _ if rng.chance(1) => "failed",
            _ => "succeeded",
        };
        let job_id = format!("seed-j{i:06}-{d:05}");
        let duration = i64::try_from(60_000 + rng.below(1_800_000)).unwrap_or(60_000);
        let (error_kind, error) = match outcome {
            "failed" => (
                Some("wrong_password"),
                Some("wrong password or no key found"),
            ),
            "warning" => (Some("partial"), Some("3 files could not be read")),
            _ => (None, None),
        };
        let snap = hex(rng);
        let added = i64::try_from(rng.below(2 << 30)).unwrap_or(0);
        let summary = (outcome != "failed").then(|| {
            format!(
                r#"{{"snapshot_id":"{snap}","files_new":{},"files_changed":{},"files_unmodified":{},"data_added":{added},"total_bytes_processed":{},"total_files_processed":{}}}"#,
                rng.below(2000),
                rng.below(500),
                100_000 + rng.below(50_000),
                (40_u64 << 30) + rng.below(1 << 30),
                120_000 + rng.below(10_000)
            )
        });
        sqlx::query(
            "INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, schedule_id, status,
                               timeout_secs, created_by, created_at, dispatched_at, started_at, finished_at,
                               exit_code, error_kind, error, summary_json, restic_version)
             VALUES (?, ?, ?, ?, 'backup', ?, 'schedule', ?, ?, 14400, 'schedule', ?, ?, ?, ?, ?, ?, ?, ?, '0.18.0')",
        )
        .bind(&job_id)
        .bind(&id)
        .bind(&id)
        .bind(&repo)
        .bind(r#"{"kind":"backup","paths":["/etc","/home","/srv"],"excludes":["*.tmp"],"tags":["daily"],"host_name":null}"#)
        .bind(&schedule_id)
        .bind(outcome)
        .bind(at)
        .bind(at + 200)
        .bind(at + 1_000)
        .bind(at + duration)
        .bind(match outcome {
            "failed" => 12,
            "warning" => 3,
            _ => 0,
        })
        .bind(error_kind)
        .bind(error)
        .bind(&summary)
        .execute(&mut *conn)
        .await?;
        report.jobs += 1;
        if last.is_none() {
            last = Some((job_id.clone(), outcome, at + duration));
        }
        if outcome != "failed" {
            last_success = last_success.or(Some(at + duration));
            if snapshots < spec.snapshots_per_host {
                sqlx::query(
                    "INSERT INTO snapshots (repo_id, snapshot_id, short_id, hostname, time, paths_json, tags_json, summary_json, seen_at)
                     VALUES (?, ?, ?, ?, ?, '[\"/etc\",\"/home\",\"/srv\"]', '[\"daily\"]', ?, ?)",
                )
                .bind(&repo)
                .bind(&snap)
                .bind(&snap[..8])
                .bind(&id)
                .bind(at + 1_000)
                .bind(&summary)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                snapshots += 1;
            }
        }
    }
    report.snapshots = snapshots;
    let (last_id, last_status, last_at) =
        last.map_or((None, None, None), |(j, s, a)| (Some(j), Some(s), Some(a)));
    sqlx::query(
        "INSERT INTO host_summary (host_id, last_job_id, last_job_kind, last_job_status, last_job_finished_at,
                                  last_backup_status, last_backup_at, last_backup_success_at, running_jobs, queued_jobs)
         VALUES (?, ?, 'backup', ?, ?, ?, ?, ?, 0, 0)",
    )
    .bind(&id)
    .bind(&last_id)
    .bind(last_status)
    .bind(last_at)
    .bind(last_status)
    .bind(last_at)
    .bind(last_success)
    .execute(&mut *conn)
    .await?;
    if last_status == Some("failed") && status != "revoked" {
        sqlx::query(
            "INSERT INTO alerts (id, host_id, kind, subject, severity, message, job_id, raised_at, last_seen_at, cause)
             VALUES (?, ?, 'backup_failed', ?, 'critical', ?, ?, ?, ?, ?)",
        )
        .bind(format!("seed-a{i:06}"))
        .bind(&id)
        .bind(&schedule_id)
        .bind(format!("backup of {name} failed: wrong password or no key found"))
        .bind(&last_id)
        .bind(last_at)
        .bind(now)
        .bind(&last_id)
        .execute(&mut *conn)
        .await?;
        report.alerts += 1;
    }
    Ok(report)
}
