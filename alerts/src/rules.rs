//! The rule engine: seven rules evaluated from SQLite.
//!
//! - `backup_failed`, `forget_failed`, `prune_failed`, `check_failed`: the
//!   latest decisive result (succeeded, warning, failed, lost; cancelled
//!   runs are ignored) of that kind for a host and repository is a failure.
//!   Subject: the repository id. Resolved by a later success of that kind
//!   for the same host and repository.
//! - `stale_schedule`: an enabled schedule's first cron slot (rm-cron, in
//!   the schedule's time zone) after its last success — or after it was
//!   last saved — plus its grace has passed. Subject: the schedule id.
//!   Not raised while the host that runs it is not online. Resolved by a
//!   success, or when the schedule is disabled or deleted.
//! - `backup_anomaly`: a successful backup of a host to a repository is
//!   far from the host's usual (see `anomaly`). Every backup finished since
//!   the job cursor is judged, oldest first, each against the backups
//!   before it (at most [`ANOMALY_PER_PASS`] per host and repository in one
//!   pass). Subject: the repository id. Resolved by the next usual backup.
//! - `agent_offline`: the host is offline (and was ever seen), for longer
//!   than the grace (`Timings::offline_grace`): a host back sooner raises
//!   nothing. Resolved when it is online again (or revoked).
//!
//! Evaluation: a saved watermark (`worker_state` `alerts.jobs`) over job
//! results — finished or ingested after it, minus an overlap — selects the
//! (host, kind, repository) keys to re-evaluate; each is decided from its
//! latest result, so the pass is idempotent and order-independent. A
//! second watermark (`alerts.hosts`) over hosts' status changes selects
//! the hosts to re-evaluate (offline hosts looking back the overlap plus
//! the offline grace, so a host whose grace ends is evaluated again). A
//! pass woken by an event reads results and status changes back only
//! `Timings::event_lookback` before the last completed pass; the ticker's
//! pass reads the whole overlap. Enabled
//! schedules (time-driven) and open alerts are read whole. Events only
//! wake a pass; the ticker runs one at least every tick and bumps
//! `last_seen_at` of every alert it confirms.
//! Each condition is raised once: `cause` (the job, the missed slot, the
//! offline transition) is remembered, so an alert resolved by hand is not
//! raised again for the same cause.
//!
//! A pass runs twice over what it selected: first on a read-only
//! connection as a dry run that only notes which items would write, then —
//! only if any would, or a watermark moved — those items again, for real,
//! in one write of the role's writer task. A pass over a fleet where
//! nothing changed opens no write transaction at all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Result;
use rm_bus::ids::random_token;
use rm_bus::notify::{AlertKind, EventType, Severity};
use rm_cron::CronSchedule;
use rm_store::alerts::{self, Alert, NewAlert, Raised};
use rm_store::hosts::{self, Host, HostStatus};
use rm_store::{Conn, schedules, worker_state};
use serde::{Deserialize, Serialize};

use crate::Ctx;
use crate::anomaly::{self, Figures};
use crate::change::{self, Change};

/// The name of the job cursor in `worker_state`.
const CURSOR: &str = "alerts.jobs";
/// The name of the host-status cursor in `worker_state`.
const HOST_CURSOR: &str = "alerts.hosts";

/// Most backups of one host to one repository the `backup_anomaly` rule
/// judges in one pass (the newest; older ones beyond it are logged and
/// skipped). Between two passes a host finishes one or two.
pub(crate) const ANOMALY_PER_PASS: usize = 32;

/// Who resolves automatically.
pub(crate) const SYSTEM: &str = "system";

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Cursor {
    /// The largest finished/ingested time evaluated so far.
    watermark: Option<i64>,
}

/// How bad each rule is.
pub(crate) fn severity(kind: &AlertKind) -> Severity {
    match kind {
        AlertKind::BackupFailed | AlertKind::CheckFailed => Severity::Critical,
        AlertKind::ForgetFailed
        | AlertKind::PruneFailed
        | AlertKind::StaleSchedule
        | AlertKind::AgentOffline
        | AlertKind::BackupAnomaly => Severity::Warning,
        AlertKind::Test | AlertKind::Other(_) => Severity::Info,
    }
}

fn rule_for_job(kind: &str) -> Option<AlertKind> {
    Some(match kind {
        "backup" => AlertKind::BackupFailed,
        "forget" => AlertKind::ForgetFailed,
        "prune" => AlertKind::PruneFailed,
        "check" => AlertKind::CheckFailed,
        _ => return None,
    })
}

fn job_kind_of(rule: &str) -> Option<&'static str> {
    Some(match rule {
        "backup_failed" => "backup",
        "forget_failed" => "forget",
        "prune_failed" => "prune",
        "check_failed" => "check",
        _ => return None,
    })
}

fn is_success(status: &str) -> bool {
    matches!(status, "succeeded" | "warning")
}

/// Runs a pass on every tick and whenever an event wakes it.
pub(crate) async fn serve(ctx: Arc<Ctx>) -> Result<()> {
    let mut tick = tokio::time::interval(ctx.t.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let confirm = tokio::select! {
            _ = tick.tick() => true,
            () = ctx.wake.notified() => {
                tokio::time::sleep(ctx.t.wake_debounce).await;
                false
            }
        };
        match evaluate(&ctx, confirm).await {
            Ok(changes) => change::announce(&ctx, &changes).await,
            // A busy or briefly unavailable database: the next pass retries.
            Err(e) => {
                ctx.metrics.pass_failed();
                tracing::warn!(error = %format!("{e:#}"), "alert evaluation failed");
            }
        }
    }
}

/// What one pass needs.
struct Pass<'a> {
    ctx: &'a Ctx,
    now: i64,
    /// Job results after this mark are new to this pass (the job cursor
    /// less its overlap).
    after: i64,
    /// Bump `last_seen_at` of confirmed alerts (ticker passes).
    confirm: bool,
    /// Dry run (read-only connection): write nothing, set `wants` when
    /// the item evaluated would write.
    dry: bool,
    wants: bool,
    changes: Vec<Change>,
    /// Dry run: whether an alert is open, per (host, kind, subject), as
    /// read once in this pass (a dry run writes nothing, so it holds). A
    /// burst judges many backups of one host in one pass, and each usual
    /// one asks to resolve: one read instead of one per backup.
    open_seen: HashMap<(String, String, String), bool>,
    /// The newest backup per host and repository the last completed pass
    /// judged: backups up to it are not judged again.
    anomaly_before: &'a AnomalyJudged,
    /// The newest backup per host and repository this pass judged.
    anomaly_seen: AnomalyJudged,
}

impl Pass<'_> {
    /// Raises (or confirms) an alert unless `cause` was already alerted on.
    #[allow(clippy::too_many_arguments)]
    async fn raise(
        &mut self,
        conn: &mut Conn,
        host_id: &str,
        kind: &AlertKind,
        subject: &str,
        message: &str,
        job_id: Option<&str>,
        cause: &str,
    ) -> Result<()> {
        if alerts::cause_seen(conn, host_id, kind.as_str(), subject, cause).await? {
            if self.confirm
                && let Some(open) = alerts::open_for(conn, host_id, kind.as_str(), subject).await?
            {
                if self.dry {
                    self.wants = true;
                } else {
                    alerts::touch(conn, &open.id, self.now).await?;
                }
            }
            return Ok(());
        }
        if self.dry {
            self.wants = true;
            return Ok(());
        }
        let muted = rm_store::mutes::is_muted(conn, host_id, self.now).await?;
        let id = format!("a{}", random_token(10));
        let raised = alerts::raise(
            conn,
            &NewAlert {
                id: &id,
                host_id,
                kind: kind.as_str(),
                subject,
                severity: severity(kind).as_str(),
                message,
                job_id,
                cause,
                now: self.now,
                notified: !muted,
            },
        )
        .await?;
        match raised {
            Raised::New(alert) => {
                let c = change::record(self.ctx, conn, &alert, EventType::Raised, self.now).await?;
                self.changes.push(c);
            }
            Raised::Bumped(alert) => {
                tracing::info!(
                    alert_id = %alert.id,
                    host_id,
                    kind = %kind,
                    subject,
                    cause,
                    "alert confirmed again"
                );
            }
        }
        Ok(())
    }

    async fn resolve(
        &mut self,
        conn: &mut Conn,
        host_id: &str,
        kind: &str,
        subject: &str,
    ) -> Result<()> {
        if self.dry {
            let key = (host_id.to_owned(), kind.to_owned(), subject.to_owned());
            let open = match self.open_seen.get(&key) {
                Some(open) => *open,
                None => {
                    let open = alerts::open_for(conn, host_id, kind, subject)
                        .await?
                        .is_some();
                    self.open_seen.insert(key, open);
                    open
                }
            };
            if open {
                self.wants = true;
            }
            return Ok(());
        }
        if let Some(alert) =
            alerts::resolve_open(conn, host_id, kind, subject, SYSTEM, self.now).await?
        {
            let c = change::record(self.ctx, conn, &alert, EventType::Resolved, self.now).await?;
            self.changes.push(c);
        }
        Ok(())
    }
}

/// Job keys (host, kind, repository) with the signature (`mark`,
/// `results`) they had when a pass last evaluated them.
pub(crate) type Judged = HashMap<(String, String, String), (i64, i64)>;

/// Hosts with the status and change time they had when a pass last
/// evaluated them, and whether their offline grace had ended.
pub(crate) type HostsJudged = HashMap<String, (String, Option<i64>, bool)>;

fn hosts_judged(ctx: &Ctx) -> std::sync::MutexGuard<'_, HostsJudged> {
    ctx.hosts_judged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn last_pass(ctx: &Ctx) -> std::sync::MutexGuard<'_, Option<i64>> {
    ctx.last_pass
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn judged(ctx: &Ctx) -> std::sync::MutexGuard<'_, Judged> {
    ctx.judged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the passes so far know of one host's successful backups to one
/// repository, for `backup_anomaly`.
#[derive(Debug, Clone)]
pub(crate) struct AnomalyMemo {
    /// The newest backup a completed pass judged (`finished_at`, job id):
    /// backups up to it are not judged again.
    place: (i64, String),
    /// The figures of that backup and of those before it, newest first,
    /// as many as a judgement's history takes (fewer when the key has no
    /// more): the next pass reads only the backups after `place`. `None`
    /// when the pass did not read them all (the next one reads them).
    /// About 0.5 KiB per host and repository with the default history of
    /// 20.
    window: Option<Arc<[Packed]>>,
}

/// A backup's [`Figures`] in 24 bytes (an `Option<Figures>` takes 56): the
/// memo holds twenty per host and repository. A figure restic did not
/// report is `i64::MIN`; a backup without a summary has none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packed([i64; 3]);

impl Packed {
    const NONE: i64 = i64::MIN;

    fn pack(f: Option<Figures>) -> Self {
        let f = f.unwrap_or_default();
        let v = |x: Option<i64>| x.unwrap_or(Self::NONE);
        Self([v(f.added_bytes), v(f.changed_files), v(f.total_bytes)])
    }

    /// As judged: a backup with no figure at all counts as none.
    fn unpack(self) -> Option<Figures> {
        let v = |x: i64| (x != Self::NONE).then_some(x);
        let f = Figures {
            added_bytes: v(self.0[0]),
            changed_files: v(self.0[1]),
            total_bytes: v(self.0[2]),
        };
        (f != Figures::default()).then_some(f)
    }
}

/// Per (host, repository): what a completed pass judged.
pub(crate) type AnomalyJudged = HashMap<(String, String), AnomalyMemo>;

fn anomaly_judged(ctx: &Ctx) -> std::sync::MutexGuard<'_, AnomalyJudged> {
    ctx.anomaly_judged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records `memo` for `key` unless a newer backup is judged there.
fn note_judged(map: &mut AnomalyJudged, key: (String, String), memo: AnomalyMemo) {
    match map.get(&key) {
        Some(old) if old.place >= memo.place => {}
        _ => {
            map.insert(key, memo);
        }
    }
}

/// The anomaly memo after a completed pass: what it judged over what the
/// passes before it had. One entry per host and repository with a backup
/// judged since the role started; the pass's copy of the memo is reused
/// once the pass has let go of it, so a pass copies nothing.
fn next_anomaly_memo(before: Arc<AnomalyJudged>, seen: AnomalyJudged) -> AnomalyJudged {
    let mut memo = Arc::unwrap_or_clone(before);
    for (key, judged) in seen {
        note_judged(&mut memo, key, judged);
    }
    memo
}

/// The items a dry run found would write, and where the cursors move.
#[derive(Default)]
struct Plan {
    /// Every job key of this pass, for the next pass once this one is
    /// done.
    judged: Judged,
    /// Every host of this pass, likewise.
    hosts_judged: HostsJudged,
    /// Job keys that would write, with their count of new results.
    job_keys: Vec<(String, String, String, i64)>,
    hosts: Vec<String>,
    schedules: Vec<String>,
    alerts: Vec<Alert>,
    enabled: HashSet<String>,
    jobs_cursor: Option<Cursor>,
    hosts_cursor: Option<Cursor>,
    /// The job cursor (less its overlap) the dry run read.
    jobs_after: i64,
    /// The anomaly memo the dry run read (the real run reads the same).
    anomaly_before: Arc<AnomalyJudged>,
    /// The newest backups the dry run judged.
    anomaly_seen: AnomalyJudged,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.job_keys.is_empty()
            && self.hosts.is_empty()
            && self.schedules.is_empty()
            && self.alerts.is_empty()
            && self.jobs_cursor.is_none()
            && self.hosts_cursor.is_none()
    }
}

/// Moves a watermark forward to `mark`, never past our own clock: an
/// agent whose clock runs ahead reports times in the future, which must
/// not skip later changes (such an item is simply evaluated again until
/// its time has come).
fn advance(watermark: &mut Option<i64>, mark: i64, now: i64) {
    let mark = mark.min(now);
    *watermark = Some(watermark.map_or(mark, |w| w.max(mark)));
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn after(cursor: Cursor, overlap: i64) -> i64 {
    cursor
        .watermark
        .map_or(i64::MIN, |w| w.saturating_sub(overlap))
}

/// One evaluation pass: a dry run on a read connection, then the items
/// that would write, in one write of the writer task. Returns the
/// committed changes to announce.
pub(crate) async fn evaluate(ctx: &Arc<Ctx>, confirm: bool) -> Result<Vec<Change>> {
    let now = ctx.now();
    let mut plan = {
        let mut conn = ctx.store.read().await?;
        plan(ctx, &mut conn, now, confirm).await?
    };
    let seen = std::mem::take(&mut plan.judged);
    let hosts_seen = std::mem::take(&mut plan.hosts_judged);
    let anomaly_seen = std::mem::take(&mut plan.anomaly_seen);
    if plan.is_empty() {
        *judged(ctx) = seen;
        *hosts_judged(ctx) = hosts_seen;
        let before = std::mem::take(&mut plan.anomaly_before);
        *anomaly_judged(ctx) = next_anomaly_memo(before, anomaly_seen);
        *last_pass(ctx) = Some(now);
        ctx.metrics.pass(false);
        return Ok(Vec::new());
    }
    let before = Arc::clone(&plan.anomaly_before);
    let c = ctx.clone();
    let changes = ctx
        .writer
        .run(move |tx| Box::pin(async move { apply(&c, tx, now, confirm, plan).await }))
        .await?;
    // only a pass that wrote what it decided vouches for its keys
    *judged(ctx) = seen;
    *hosts_judged(ctx) = hosts_seen;
    *anomaly_judged(ctx) = next_anomaly_memo(before, anomaly_seen);
    *last_pass(ctx) = Some(now);
    ctx.metrics.pass(true);
    Ok(changes)
}

/// The dry run: what changed since the cursors, and which of it writes.
async fn plan(ctx: &Ctx, conn: &mut Conn, now: i64, confirm: bool) -> Result<Plan> {
    let overlap = crate::ms(ctx.t.cursor_overlap);
    // A pass woken by an event reads back `event_lookback` before the last
    // completed pass, not the whole overlap: what the overlap holds beyond
    // that was read by that pass (or waits for the tick, if committed that
    // long after its time stamp).
    let recent = (*last_pass(ctx))
        .filter(|_| !confirm)
        .map(|t| t.saturating_sub(crate::ms(ctx.t.event_lookback)));
    let read_from = |bound: i64| recent.map_or(bound, |r| r.max(bound));
    let cursor: Cursor = worker_state::get(conn, CURSOR).await?.unwrap_or_default();
    // taken: a pass that fails leaves no memo, and the next judges afresh
    let anomaly_before = std::mem::take(&mut *anomaly_judged(ctx));
    let mut pass = Pass {
        ctx,
        now,
        after: after(cursor, overlap),
        confirm,
        dry: true,
        wants: false,
        changes: Vec::new(),
        open_seen: HashMap::new(),
        anomaly_before: &anomaly_before,
        anomaly_seen: AnomalyJudged::new(),
    };
    let mut plan = Plan {
        jobs_after: pass.after,
        ..Plan::default()
    };

    // Job results since the cursor. A key whose results are those the
    // last completed pass evaluated would decide the same again, so an
    // event-woken pass skips it (the cursor's overlap brings every key of
    // the last minutes back each pass: at fleet scale, most of the work);
    // a ticker pass evaluates every key.
    let mut watermark = cursor.watermark;
    let before = std::mem::take(&mut *judged(ctx));
    for key in alerts::results_since(conn, read_from(after(cursor, overlap))).await? {
        advance(&mut watermark, key.mark, now);
        let k = (key.host_id.clone(), key.kind.clone(), key.repo_id.clone());
        let signature = (key.mark, key.results);
        let unchanged = !confirm && before.get(&k) == Some(&signature);
        plan.judged.insert(k, signature);
        if unchanged {
            continue;
        }
        pass.wants = false;
        eval_job_key(
            &mut pass,
            conn,
            &key.host_id,
            &key.kind,
            &key.repo_id,
            key.results,
        )
        .await?;
        if pass.wants {
            plan.job_keys
                .push((key.host_id, key.kind, key.repo_id, key.results));
        }
    }
    if watermark != cursor.watermark {
        plan.jobs_cursor = Some(Cursor { watermark });
    }

    // Hosts whose status changed since the cursor.
    let cursor: Cursor = worker_state::get(conn, HOST_CURSOR)
        .await?
        .unwrap_or_default();
    // As with job keys: a host whose status and change time are those the
    // last completed pass evaluated would decide the same again (a
    // reconnect storm brings tens of thousands back every pass).
    let grace = crate::ms(ctx.t.offline_grace);
    let mut watermark = cursor.watermark;
    let before = std::mem::take(&mut *hosts_judged(ctx));
    // Offline hosts are read back over the overlap and the grace as well,
    // whatever woke the pass: one whose grace ends is judged again.
    let mut changed = hosts::status_changed_since(conn, read_from(after(cursor, overlap))).await?;
    let read: HashSet<String> = changed.iter().map(|h| h.id.clone()).collect();
    let in_grace =
        hosts::offline_changed_since(conn, after(cursor, overlap.saturating_add(grace))).await?;
    changed.extend(in_grace.into_iter().filter(|h| !read.contains(&h.id)));
    for host in changed {
        if let Some(at) = host.status_changed_at {
            advance(&mut watermark, at, now);
        }
        let signature = (
            host.status.clone(),
            host.status_changed_at,
            offline_past_grace(&host, now, grace),
        );
        let unchanged = !confirm && before.get(&host.id) == Some(&signature);
        plan.hosts_judged.insert(host.id.clone(), signature);
        if unchanged {
            continue;
        }
        pass.wants = false;
        eval_host(&mut pass, conn, &host).await?;
        if pass.wants {
            plan.hosts.push(host.id.clone());
        }
    }
    if watermark != cursor.watermark {
        plan.hosts_cursor = Some(Cursor { watermark });
    }

    // Schedules (time-driven: every enabled one is looked at).
    let enabled = schedules::all_enabled(conn).await?;
    let exec_hosts = exec_hosts(conn, &enabled).await?;
    for s in &enabled {
        pass.wants = false;
        eval_schedule(&mut pass, conn, s, &exec_hosts).await?;
        if pass.wants {
            plan.schedules.push(s.id.clone());
        }
    }
    plan.enabled = enabled.into_iter().map(|s| s.id).collect();

    // Open alerts the passes above may not decide.
    for alert in alerts::list_open(conn).await? {
        pass.wants = false;
        sweep(&mut pass, conn, &alert, &plan.enabled).await?;
        if pass.wants {
            plan.alerts.push(alert);
        }
    }
    plan.anomaly_seen = std::mem::take(&mut pass.anomaly_seen);
    plan.anomaly_before = Arc::new(anomaly_before);
    Ok(plan)
}

/// The hosts that run `schedules`, by id.
async fn exec_hosts(
    conn: &mut Conn,
    schedules: &[schedules::Schedule],
) -> Result<HashMap<String, Host>> {
    let mut by_id = HashMap::new();
    for s in schedules {
        if !by_id.contains_key(&s.exec_host_id)
            && let Ok(h) = hosts::get(conn, &s.exec_host_id).await
        {
            by_id.insert(h.id.clone(), h);
        }
    }
    Ok(by_id)
}

/// The planned items, for real, inside the writer's transaction; each
/// re-reads what it decides on.
async fn apply(
    ctx: &Ctx,
    conn: &mut Conn,
    now: i64,
    confirm: bool,
    plan: Plan,
) -> Result<Vec<Change>> {
    let mut pass = Pass {
        ctx,
        now,
        after: plan.jobs_after,
        confirm,
        dry: false,
        wants: false,
        changes: Vec::new(),
        open_seen: HashMap::new(),
        anomaly_before: &plan.anomaly_before,
        anomaly_seen: AnomalyJudged::new(),
    };
    for (host, kind, repo, results) in &plan.job_keys {
        eval_job_key(&mut pass, conn, host, kind, repo, *results).await?;
    }
    if let Some(c) = &plan.jobs_cursor {
        worker_state::put(conn, CURSOR, c, now).await?;
    }
    for id in &plan.hosts {
        let host = hosts::get(conn, id).await?.into();
        eval_host(&mut pass, conn, &host).await?;
    }
    if let Some(c) = &plan.hosts_cursor {
        worker_state::put(conn, HOST_CURSOR, c, now).await?;
    }
    let mut planned = Vec::new();
    for id in &plan.schedules {
        if let Ok(s) = schedules::get(conn, id).await {
            planned.push(s);
        }
    }
    let exec = exec_hosts(conn, &planned).await?;
    for s in planned.iter().filter(|s| s.enabled) {
        eval_schedule(&mut pass, conn, s, &exec).await?;
    }
    for alert in &plan.alerts {
        sweep(&mut pass, conn, alert, &plan.enabled).await?;
    }
    Ok(pass.changes)
}

async fn eval_job_key(
    pass: &mut Pass<'_>,
    conn: &mut Conn,
    host_id: &str,
    kind: &str,
    repo_id: &str,
    results: i64,
) -> Result<()> {
    let Some(rule) = rule_for_job(kind) else {
        return Ok(());
    };
    if kind == "backup" {
        eval_anomaly(pass, conn, host_id, repo_id, results).await?;
    }
    let Some(job) = alerts::latest_result(conn, host_id, kind, repo_id).await? else {
        return Ok(());
    };
    if is_success(&job.status) {
        return pass.resolve(conn, host_id, rule.as_str(), repo_id).await;
    }
    let repo = match repo_id {
        "" => "no repository".to_owned(),
        id => alerts::repo_name(conn, id)
            .await?
            .map_or_else(|| format!("repository {id}"), |n| format!("repository {n}")),
    };
    let reason = job
        .error
        .clone()
        .or_else(|| job.error_kind.clone())
        .or_else(|| job.exit_code.map(|c| format!("exit code {c}")))
        .unwrap_or_else(|| {
            if job.status == "lost" {
                "the agent lost the job; its result never came".into()
            } else {
                "no reason reported".into()
            }
        });
    let message = format!("{kind} of {repo} failed: {reason}");
    pass.raise(
        conn,
        host_id,
        &rule,
        repo_id,
        &message,
        Some(&job.id),
        &job.id,
    )
    .await
}

/// `backup_anomaly`: every successful backup of a host to a repository
/// whose result is new to this pass (its mark is after the cursor), oldest
/// first, each against the backups finished before it. Subject: the
/// repository id; cause: the job. An anomaly raises (or bumps the open
/// alert); a usual backup resolves it.
///
/// Idempotent: backups up to the newest one an anomaly alert of this host
/// and repository names (open or resolved) were judged already and are
/// skipped, so a re-run over the cursor's overlap — or after a restart —
/// neither raises twice nor lets an older usual backup resolve an alert a
/// newer backup raised. Within the process, backups up to the newest one
/// a completed pass judged are skipped too (`Ctx::anomaly_judged`): the
/// overlap brings a busy host's last minutes of backups back every pass,
/// and judging each again (against its history) was most of a pass's work
/// in a burst. So a backup that arrives late, older than one judged
/// already, is not judged after it, as when an alert names the newer one.
///
/// The memo also keeps the figures of the newest judged backup and of the
/// history before it ([`AnomalyMemo::window`]): a pass woken by an event
/// reads only the backups after it and judges them against that, instead
/// of reading and parsing the key's last twenty backups again for each new
/// one. A ticker pass reads the history whole, so a late backup older than
/// the memo's newest joins the history by the next tick at the latest.
async fn eval_anomaly(
    pass: &mut Pass<'_>,
    conn: &mut Conn,
    host_id: &str,
    repo_id: &str,
    results: i64,
) -> Result<()> {
    let cfg = &pass.ctx.anomaly;
    let kind = AlertKind::BackupAnomaly;
    let judged = alerts::last_anomaly_judged(conn, host_id, repo_id).await?;
    let key = (host_id.to_owned(), repo_id.to_owned());
    let memo = pass.anomaly_before.get(&key);
    let place = memo.map(|m| &m.place);
    let is_new = |b: &alerts::BackupSuccess| {
        let after = |place: Option<&(i64, String)>| {
            place.is_none_or(|(at, id)| (b.finished_at, &b.id) > (*at, id))
        };
        b.mark > pass.after && after(judged.as_ref()) && after(place)
    };
    // Newest first: at most as many new backups as the key has new
    // results (each new backup is one at least), and the history the
    // oldest of them is judged against.
    let new_at_most = usize::try_from(results)
        .unwrap_or(usize::MAX)
        .min(ANOMALY_PER_PASS);
    let limit = to_i64(new_at_most.saturating_add(cfg.history));
    // An event-woken pass reads only the backups after the memo's place
    // and takes the history from its window; a ticker pass reads it all
    // (and so takes in a backup that came late, older than the place).
    let window = memo
        .filter(|_| !pass.confirm)
        .and_then(|m| m.window.clone().map(|w| (&m.place, w)));
    let recent = match &window {
        Some(((at, id), _)) => {
            alerts::backup_successes_after(conn, host_id, repo_id, pass.after, (*at, id), limit)
                .await?
        }
        None => alerts::backup_successes(conn, host_id, repo_id, pass.after, limit).await?,
    };
    // fewer than asked for: nothing between them and the window (or the
    // key's first backup) was left out
    let to_the_end = to_i64(recent.len()) < limit;
    let fresh: Vec<usize> = (0..recent.len()).filter(|&i| is_new(&recent[i])).collect();
    if fresh.len() > ANOMALY_PER_PASS {
        tracing::warn!(
            host_id,
            repo_id,
            new_backups = fresh.len(),
            judged = ANOMALY_PER_PASS,
            "more new backups than one pass judges; the oldest are skipped"
        );
    }
    let Some(&newest) = fresh.first() else {
        return Ok(());
    };
    // each summary parsed once, however many judgements it takes part in;
    // the window's backups (none of them new) follow the ones read
    let figures: Vec<Option<Figures>> = recent
        .iter()
        .map(|b| {
            b.summary_json
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .map(|v| Figures::from_summary(&v))
        })
        .chain(
            window
                .iter()
                .filter(|_| to_the_end)
                .flat_map(|(_, w)| w.iter().map(|p| p.unpack())),
        )
        .collect();
    let b = &recent[newest];
    // the next pass's window: the newest judged backup and the history a
    // backup after it is judged against, when all of it is at hand
    let rest = &figures[newest..];
    let whole = to_the_end || rest.len() >= cfg.history;
    note_judged(
        &mut pass.anomaly_seen,
        key,
        AnomalyMemo {
            place: (b.finished_at, b.id.clone()),
            window: whole.then(|| {
                rest.iter()
                    .take(cfg.history)
                    .map(|f| Packed::pack(*f))
                    .collect()
            }),
        },
    );
    // Oldest first, so each judgement sees the alert state the one before
    // it left.
    for &i in fresh.iter().take(ANOMALY_PER_PASS).rev() {
        let backup = &recent[i];
        let Some(latest) = &figures[i] else {
            continue;
        };
        let history: Vec<Figures> = figures
            .iter()
            .skip(i + 1)
            .take(cfg.history)
            .flatten()
            .copied()
            .collect();
        match anomaly::judge(latest, &history, cfg) {
            None => {
                pass.resolve(conn, host_id, kind.as_str(), repo_id).await?;
            }
            Some(finding) => {
                let repo = alerts::repo_name(conn, repo_id)
                    .await?
                    .unwrap_or_else(|| repo_id.to_owned());
                let message = finding.message(&repo);
                pass.raise(
                    conn,
                    host_id,
                    &kind,
                    repo_id,
                    &message,
                    Some(&backup.id),
                    &backup.id,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// When a host went offline (its status change, else its last sight).
fn offline_since(host: &hosts::StatusChange) -> i64 {
    host.status_changed_at.or(host.last_seen_at).unwrap_or(0)
}

/// Whether `host` is offline and has been for at least `grace_ms`.
fn offline_past_grace(host: &hosts::StatusChange, now: i64, grace_ms: i64) -> bool {
    matches!(host.status(), Ok(HostStatus::Offline))
        && now.saturating_sub(offline_since(host)) >= grace_ms
}

async fn eval_host(pass: &mut Pass<'_>, conn: &mut Conn, host: &hosts::StatusChange) -> Result<()> {
    let kind = AlertKind::AgentOffline;
    let grace = crate::ms(pass.ctx.t.offline_grace);
    match host.status() {
        // A host never seen is new, not offline; one offline for less than
        // the grace may be back before it ends (a bus restart): nothing yet.
        Ok(HostStatus::Offline)
            if host.last_seen_at.is_some() && offline_past_grace(host, pass.now, grace) =>
        {
            let since = offline_since(host);
            let message = format!(
                "agent on {} is offline (last seen {})",
                host.name,
                rm_bus::notify::rfc3339_utc(host.last_seen_at.unwrap_or(since))
            );
            let cause = format!("offline:{since}");
            pass.raise(conn, &host.id, &kind, "", &message, None, &cause)
                .await
        }
        Ok(HostStatus::Online | HostStatus::Revoked) => {
            pass.resolve(conn, &host.id, kind.as_str(), "").await
        }
        _ => Ok(()),
    }
}

async fn eval_schedule(
    pass: &mut Pass<'_>,
    conn: &mut Conn,
    s: &schedules::Schedule,
    hosts_by_id: &HashMap<String, Host>,
) -> Result<()> {
    let kind = AlertKind::StaleSchedule;
    let cron = match CronSchedule::parse(&s.cron, &s.timezone) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(schedule_id = %s.id, error = %e, "schedule cron does not parse; not checked");
            return Ok(());
        }
    };
    let last_success = alerts::last_schedule_success(conn, &s.id).await?;
    let base = last_success.map_or(s.updated_at, |t| t.max(s.updated_at));
    let Some(expected) = cron.next_after_ms(base) else {
        return Ok(());
    };
    let grace = s.grace_secs.max(0).saturating_mul(1000);
    if expected.saturating_add(grace) > pass.now {
        // Not late (any more).
        return pass.resolve(conn, &s.host_id, kind.as_str(), &s.id).await;
    }
    let exec_online = hosts_by_id
        .get(&s.exec_host_id)
        .is_some_and(|h| matches!(h.status(), Ok(HostStatus::Online)));
    if !exec_online {
        // An offline host cannot run its schedules: agent_offline says it.
        return Ok(());
    }
    let repo = alerts::repo_name(conn, &s.repo_id)
        .await?
        .unwrap_or_else(|| s.repo_id.clone());
    let message = format!(
        "{} schedule \"{}\" ({}) to repository {} has not succeeded since its run due at {} (grace {} s)",
        s.kind,
        s.cron,
        s.timezone,
        repo,
        cron.format_ms(expected),
        s.grace_secs
    );
    let cause = format!("slot:{expected}");
    pass.raise(conn, &s.host_id, &kind, &s.id, &message, None, &cause)
        .await
}

/// Re-checks an open alert: resolves it when its condition is gone,
/// confirms it on ticker passes, and notifies it when the host's mute
/// window has ended.
async fn sweep(
    pass: &mut Pass<'_>,
    conn: &mut Conn,
    alert: &Alert,
    enabled_schedules: &HashSet<String>,
) -> Result<()> {
    // Re-read: this pass may have changed it.
    let Some(alert) = alerts::open_for(conn, &alert.host_id, &alert.kind, &alert.subject).await?
    else {
        return Ok(());
    };
    if let Some(job_kind) = job_kind_of(&alert.kind) {
        match alerts::latest_result(conn, &alert.host_id, job_kind, &alert.subject).await? {
            Some(job) if is_success(&job.status) => {
                return pass
                    .resolve(conn, &alert.host_id, &alert.kind, &alert.subject)
                    .await;
            }
            Some(_) if pass.confirm => {
                if pass.dry {
                    pass.wants = true;
                } else {
                    alerts::touch(conn, &alert.id, pass.now).await?;
                }
            }
            _ => {}
        }
    } else if alert.kind == AlertKind::StaleSchedule.as_str()
        && !enabled_schedules.contains(&alert.subject)
    {
        return pass
            .resolve(conn, &alert.host_id, &alert.kind, &alert.subject)
            .await;
    }
    // Raised while muted, the mute is over, still open: tell them now.
    if !alert.notified && !rm_store::mutes::is_muted(conn, &alert.host_id, pass.now).await? {
        if pass.dry {
            pass.wants = true;
            return Ok(());
        }
        let Some(alert) = alerts::mark_notified(conn, &alert.id).await? else {
            return Ok(());
        };
        let c = change::record(pass.ctx, conn, &alert, EventType::Raised, pass.now).await?;
        pass.changes.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_figures_unpack_to_what_was_packed_and_a_backup_without_figures_to_none() {
        let some = Figures {
            added_bytes: Some(0),
            changed_files: None,
            total_bytes: Some(i64::MAX),
        };
        assert_eq!(Packed::pack(Some(some)).unpack(), Some(some));
        assert_eq!(Packed::pack(None).unpack(), None);
        // judged alike: neither gives the history a figure
        assert_eq!(Packed::pack(Some(Figures::default())).unpack(), None);
        assert_eq!(std::mem::size_of::<Packed>(), 24);
    }

    #[test]
    fn every_rule_has_a_severity_and_job_rules_map_both_ways() {
        assert_eq!(severity(&AlertKind::BackupFailed), Severity::Critical);
        assert_eq!(severity(&AlertKind::CheckFailed), Severity::Critical);
        assert_eq!(severity(&AlertKind::ForgetFailed), Severity::Warning);
        assert_eq!(severity(&AlertKind::PruneFailed), Severity::Warning);
        assert_eq!(severity(&AlertKind::StaleSchedule), Severity::Warning);
        assert_eq!(severity(&AlertKind::AgentOffline), Severity::Warning);
        for kind in rm_store::alerts::RULE_JOB_KINDS {
            let rule = rule_for_job(kind).map(|r| r.as_str().to_owned());
            assert_eq!(rule.as_deref().and_then(job_kind_of), Some(kind));
        }
        assert!(rule_for_job("restore").is_none());
        assert!(job_kind_of("agent_offline").is_none());
        assert!(is_success("warning") && is_success("succeeded"));
        assert!(!is_success("failed") && !is_success("lost") && !is_success("cancelled"));
    }
}
