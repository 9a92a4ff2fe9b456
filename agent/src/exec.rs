//! Running jobs: accepting a dispatch (persisted before the ack), waiting
//! for the repository (runs that conflict on one repository take turns),
//! running restic through `rm_restic`, publishing throttled progress and
//! batched log lines, and writing `started` / `done` to the outbox.
//! Also the read-only queries (ls, snapshots, init, verify) that the
//! control plane asks for without a stored job.
//!
//! Stale locks: a restic of this host can leave a lock behind only when
//! it did not end normally — the agent died under it (a job still
//! `running` in the journal at start), or the job failed, timed out or
//! was cancelled (restic killed). Such a job marks its repository (kept in
//! `lock_check_file`); the next job there first removes this host's stale
//! locks, then clears the mark once a run succeeds. Every other job
//! opens the repository once: its own restic run.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use async_nats::Client;
use nkeys::XKey;
use rm_bus::clock::SharedClock;
use rm_bus::msg::{
    AcceptMark, Ack, CommandBody, ErrorKind, JobClaim, JobDone, JobKind, JobOrigin, JobOutcome,
    JobParams, JobSpec, JobStarted, LogBatch, LogLine, PROTOCOL_VERSION, QueryReply, RepoAccess,
    encode,
};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::seal::{RepoSecrets, SealedSecrets};
use rm_bus::subject::{self, JobTopic};
use rm_bus::{HostId, JobId};
use rm_restic::{Failure, Repo, Restic, RunEvent, RunOptions, RunResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::journal::{JobRecord, JobState, Journal, Known};
use crate::outbox::Outbox;

/// Timeout of a job whose spec says 0 (no limit given).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Timeout of a query (ls, snapshots, init, verify).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(110);
/// Most log lines sent in one batch.
const LOG_BATCH_MAX: usize = 200;

/// The answer to a dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Persisted now; it will run.
    New,
    /// Already held or finished: a re-sent dispatch, not run twice.
    Duplicate,
    /// Not taken now, for a reason that may pass (shutting down, outbox
    /// full, the journal could not be written): the control plane requeues
    /// the job with backoff.
    Refused(String),
}

/// Everything a job run needs that does not change while the agent runs.
pub struct ExecConfig {
    pub host: HostId,
    pub client: Client,
    pub xkey: XKey,
    pub controlplane_xkey: String,
    pub restic: Option<Restic>,
    /// Why restic is not usable, when it is not.
    pub restic_error: Option<String>,
    pub scratch_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub clock: SharedClock,
    pub progress_interval: Duration,
    pub log_flush: Duration,
    /// This host's name as restic records it in locks.
    pub lock_hostname: String,
    /// Wait before asking for a busy repository again.
    pub claim_retry: Duration,
    /// Where the repositories whose next job looks for stale locks are
    /// kept across restarts (`None`: in memory only).
    pub lock_check_file: Option<PathBuf>,
}

pub struct Executor {
    cfg: ExecConfig,
    /// Held across an accept's duplicate check, journal write and spawn,
    /// so copies of one dispatch handled at once are accepted once; it
    /// also numbers the accepts of this process (see [`AcceptMark`]).
    accepting: Mutex<AcceptCounter>,
    journal: Journal,
    outbox: Arc<Outbox>,
    repo_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cancels: Mutex<HashMap<JobId, CancellationToken>>,
    /// Repositories where a restic of this host may have left a lock.
    lock_check: Mutex<BTreeSet<String>>,
    tasks: TaskTracker,
    stopping: CancellationToken,
}

/// This process's accepts, in order.
struct AcceptCounter {
    boot: String,
    seq: u64,
}

impl AcceptCounter {
    fn mark(&self) -> AcceptMark {
        AcceptMark {
            boot: self.boot.clone(),
            seq: self.seq,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Executor {
    pub fn new(cfg: ExecConfig, journal: Journal, outbox: Arc<Outbox>) -> Arc<Self> {
        let lock_check = cfg
            .lock_check_file
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<BTreeSet<String>>(&b).ok())
            .unwrap_or_default();
        Arc::new(Self {
            lock_check: Mutex::new(lock_check),
            cfg,
            accepting: Mutex::new(AcceptCounter {
                boot: rm_bus::ids::random_token(10),
                seq: 0,
            }),
            journal,
            outbox,
            repo_turns: Mutex::new(HashMap::new()),
            cancels: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    pub fn restic(&self) -> Option<&Restic> {
        self.cfg.restic.as_ref()
    }

    /// Takes up the jobs held at the last stop: accepted ones run now; a job
    /// that was running when the agent died is reported failed (restic was
    /// interrupted with it), once.
    pub fn resume(self: &Arc<Self>) -> Result<()> {
        let done_pending = self.outbox.jobs_with_done_pending();
        for rec in self.journal.all()? {
            if done_pending.contains(&rec.spec.job_id) {
                // stopped between writing `done` and forgetting the job
                self.journal.finish(&rec.spec.job_id)?;
                continue;
            }
            match rec.state {
                JobState::Accepted => {
                    tracing::info!(job = %rec.spec.job_id, "resuming an accepted job");
                    self.spawn(rec);
                }
                JobState::Running => {
                    tracing::warn!(job = %rec.spec.job_id, "job was running when the agent stopped; reporting it failed");
                    // its restic may have left a lock
                    self.set_lock_check(&rec.spec.repo.repo_id, true);
                    let result = RunResult {
                        outcome: JobOutcome::Failed,
                        exit_code: None,
                        error_kind: Some(ErrorKind::Fatal),
                        error: Some(
                            "the agent stopped while this job was running; restic was interrupted"
                                .into(),
                        ),
                        summary: None,
                        stderr_tail: vec![],
                    };
                    self.finish(&rec, rec.started_ms, result)?;
                }
            }
        }
        Ok(())
    }

    /// Persists and starts a job (idempotent by job id).
    pub fn accept(self: &Arc<Self>, spec: JobSpec, origin: JobOrigin) -> Accepted {
        self.accept_marked(spec, origin, None).0
    }

    /// [`Self::accept`] for a job that must not start before `not_before_ms`.
    pub fn accept_at(
        self: &Arc<Self>,
        spec: JobSpec,
        origin: JobOrigin,
        not_before_ms: Option<i64>,
    ) -> Accepted {
        self.accept_marked(spec, origin, not_before_ms).0
    }

    /// Accepts a job atomically: the duplicate check, the journal write and
    /// the start happen under one lock, so copies of one dispatch arriving
    /// together are accepted once. A new job also gets its place in this
    /// process's order of accepts.
    pub fn accept_marked(
        self: &Arc<Self>,
        spec: JobSpec,
        origin: JobOrigin,
        not_before_ms: Option<i64>,
    ) -> (Accepted, Option<AcceptMark>) {
        let mut counter = lock(&self.accepting);
        match self.journal.known(&spec.job_id) {
            Known::Held(_) | Known::Finished => return (Accepted::Duplicate, None),
            Known::Unknown => {}
        }
        if self.stopping.is_cancelled() {
            return (Accepted::Refused("the agent is shutting down".into()), None);
        }
        if self.outbox.is_full() {
            return (
                Accepted::Refused(
                    "the agent's outbox is full (the control plane has not acknowledged its results)"
                        .into(),
                ),
                None,
            );
        }
        let rec = JobRecord {
            spec,
            origin,
            state: JobState::Accepted,
            accepted_ms: self.cfg.clock.now_ms(),
            started_ms: None,
            not_before_ms,
        };
        if let Err(e) = self.journal.put(&rec) {
            tracing::error!(job = %rec.spec.job_id, error = %e, "could not persist a job");
            return (
                Accepted::Refused(format!("the agent could not persist the job: {e}")),
                None,
            );
        }
        counter.seq += 1;
        tracing::info!(job = %rec.spec.job_id, kind = ?rec.spec.params.kind(), seq = counter.seq, "job accepted");
        self.spawn(rec);
        (Accepted::New, Some(counter.mark()))
    }

    /// Jobs held, as [`Self::held`], with this process's accept count at
    /// that moment: every job accepted up to that count is in the lists.
    pub fn held_marked(&self) -> (Vec<JobId>, Vec<JobId>, AcceptMark) {
        let counter = lock(&self.accepting);
        let (accepted, running) = self.held();
        (accepted, running, counter.mark())
    }

    /// Cancels a job in any state; `false` when this agent does not hold it.
    pub fn cancel(&self, job: &JobId) -> bool {
        match lock(&self.cancels).get(job) {
            Some(t) => {
                tracing::info!(job = %job, "cancelling job");
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Jobs held: (accepted, running). A job whose `done` still waits in
    /// the outbox counts as running, so the control plane does not call it
    /// lost while the result is on its way.
    pub fn held(&self) -> (Vec<JobId>, Vec<JobId>) {
        let mut accepted = Vec::new();
        let mut running = Vec::new();
        for r in self.journal.all().unwrap_or_default() {
            match r.state {
                JobState::Accepted => accepted.push(r.spec.job_id),
                JobState::Running => running.push(r.spec.job_id),
            }
        }
        for j in self.outbox.jobs_with_done_pending() {
            if !running.contains(&j) && !accepted.contains(&j) {
                running.push(j);
            }
        }
        (accepted, running)
    }

    /// Jobs running now (for heartbeats).
    pub fn running(&self) -> Vec<JobId> {
        self.journal
            .all()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.state == JobState::Running)
            .map(|r| r.spec.job_id)
            .collect()
    }

    /// Stops: running jobs are cancelled and reported; accepted ones stay
    /// in the journal and run at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("jobs did not stop within the grace period");
        }
    }

    fn spawn(self: &Arc<Self>, rec: JobRecord) {
        let token = self.stopping.child_token();
        lock(&self.cancels).insert(rec.spec.job_id.clone(), token.clone());
        let me = self.clone();
        self.tasks.spawn(async move {
            let id = rec.spec.job_id.clone();
            if let Err(e) = me.run(rec, token).await {
                tracing::error!(job = %id, error = %e, "job bookkeeping failed");
            }
            lock(&me.cancels).remove(&id);
        });
    }

    fn turn_for(&self, repo: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.repo_turns)
            .entry(repo.to_owned())
            .or_default()
            .clone()
    }

    async fn run(&self, mut rec: JobRecord, cancel: CancellationToken) -> Result<()> {
        let id = rec.spec.job_id.clone();
        let wait = rec
            .not_before_ms
            .map_or(0, |t| t.saturating_sub(self.cfg.clock.now_ms()));
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
        let turn = self.turn_for(&rec.spec.repo.repo_id);
        let _turn = tokio::select! {
            g = async { tokio::time::sleep(wait).await; turn.lock_owned().await } => g,
            () = cancel.cancelled() => {
                if self.stopping.is_cancelled() {
                    // Not started: it runs after the next start.
                    return Ok(());
                }
                let result = failed(JobOutcome::Cancelled, ErrorKind::Cancelled, "cancelled before it started");
                // The control plane must know the job before its `done`.
                let started = self.cfg.clock.now_ms();
                self.push_started(&rec, started)?;
                return self.finish_retrying(&rec, Some(started), result).await;
            }
        };
        let claim = self.claim_repository(&rec, &cancel).await;
        if self.stopping.is_cancelled() {
            // Not started: it runs (and asks again) after the next start.
            return Ok(());
        }
        let unclaimed = match claim {
            Err(why) => Some(failed(JobOutcome::Failed, ErrorKind::InvalidRequest, &why)),
            Ok(()) if cancel.is_cancelled() => Some(failed(
                JobOutcome::Cancelled,
                ErrorKind::Cancelled,
                "cancelled while waiting for the repository",
            )),
            Ok(()) => None,
        };
        if let Some(result) = unclaimed {
            let started = self.cfg.clock.now_ms();
            self.push_started(&rec, started)?;
            return self.finish_retrying(&rec, Some(started), result).await;
        }
        let started = self.cfg.clock.now_ms();
        // `started` first: a crash before the journal says running leaves
        // an accepted job that runs again and re-sends an idempotent
        // `started`, never a `done` without its `started`.
        self.push_started(&rec, started)?;
        rec.state = JobState::Running;
        rec.started_ms = Some(started);
        self.journal.put(&rec)?;
        tracing::info!(job = %id, kind = ?rec.spec.params.kind(), "job started");

        let result = match (self.open_for(&rec.spec), &self.cfg.restic) {
            (Err(f), _) => failed(JobOutcome::Failed, f.kind, &f.message),
            (Ok(_), None) => failed(JobOutcome::Failed, ErrorKind::Fatal, &self.no_restic()),
            (Ok(secrets), Some(restic)) => {
                let timeout = match rec.spec.timeout_secs {
                    0 => DEFAULT_JOB_TIMEOUT,
                    s => Duration::from_secs(s),
                };
                let opts = RunOptions {
                    timeout,
                    progress_interval: self.cfg.progress_interval,
                    lock_hostname: self.cfg.lock_hostname.clone(),
                    remove_stale_locks: self.lock_check_due(&rec.spec.repo.repo_id),
                };
                let checked = opts.remove_stale_locks;
                let repo = Repo {
                    secrets: &secrets,
                    cache_dir: Some(&self.cfg.cache_dir),
                    scratch_dir: &self.cfg.scratch_dir,
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let fwd = tokio::spawn(forward(
                    self.cfg.client.clone(),
                    self.cfg.host.clone(),
                    id.clone(),
                    rx,
                    self.cfg.log_flush,
                ));
                let mut r = rm_restic::run_job(
                    restic,
                    &repo,
                    &rec.spec.params,
                    rec.spec.repo.append_only,
                    &opts,
                    tx,
                    cancel.clone(),
                )
                .await;
                let _ = fwd.await;
                if r.outcome == JobOutcome::Cancelled && self.stopping.is_cancelled() {
                    r.error = Some("the agent was stopped while the job was running".into());
                }
                if let Some(check) = lock_check_after(&rec.spec.params, checked, &r) {
                    self.set_lock_check(&rec.spec.repo.repo_id, check);
                }
                r
            }
        };
        tracing::info!(job = %id, outcome = ?result.outcome, error_kind = ?result.error_kind, "job finished");
        self.finish_retrying(&rec, Some(started), result).await
    }

    /// A scheduled run asks the control plane for its repository first.
    /// A prune, check or forget asks for it *exclusively* and waits (asking
    /// again every `claim_retry`) while it is busy or the control plane
    /// does not answer: it never runs beside another job. A backup asks
    /// for a *shared* claim (backups run side by side, but not beside an
    /// exclusive job): it waits while the control plane says busy, but
    /// runs anyway when the control plane cannot be reached — a backup
    /// never depends on the control plane being up, and restic's own
    /// repository locks keep it apart from a prune then. `Err` with the
    /// reason when the control plane refuses for good (an unknown
    /// schedule); a stop or cancel while waiting is `Ok` (the run loop
    /// handles those).
    async fn claim_repository(
        &self,
        rec: &JobRecord,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let JobOrigin::Schedule { .. } = &rec.origin else {
            return Ok(());
        };
        let kind = serde_json::to_value(rec.spec.params.kind())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let shared = match kind.as_str() {
            "forget" | "prune" | "check" => false,
            "backup" => true,
            _ => return Ok(()),
        };
        let id = &rec.spec.job_id;
        let claim = JobClaim {
            v: PROTOCOL_VERSION,
            job_id: id.clone(),
            origin: rec.origin.clone(),
            params: rec.spec.params.clone(),
            repo_id: rec.spec.repo.repo_id.clone(),
        };
        let subj = subject::agent_job(&self.cfg.host, id, JobTopic::Claim);
        let key = IdempotencyKey::job_phase(id, JobTopic::Claim);
        // one ask: 10 s an attempt, 30 s in all (shorter when the retry
        // interval is, as in tests)
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_secs(10).min(self.cfg.claim_retry),
            deadline: Some(Duration::from_secs(30).min(self.cfg.claim_retry)),
            ..RetryPolicy::default()
        };
        loop {
            let why = match request_with_retry(
                &self.cfg.client,
                &subj,
                &key,
                encode(&claim),
                &policy,
            )
            .await
            {
                Ok(m) => match rm_bus::msg::decode::<Ack>("ack", &m.payload) {
                    Ok(a) if a.ok => {
                        tracing::info!(job = %id, shared, "repository granted");
                        return Ok(());
                    }
                    Ok(a) if !a.retry => {
                        let reason = a.error.unwrap_or_default();
                        tracing::warn!(job = %id, reason = %reason, "the control plane refused the scheduled run");
                        return Err(format!(
                            "the control plane did not allow this run: {reason}"
                        ));
                    }
                    Ok(a) => a.error.unwrap_or_default(),
                    Err(e) => e.to_string(),
                },
                Err(e) if shared => {
                    tracing::warn!(job = %id, error = %e, "the control plane did not answer; the scheduled backup runs without its claim (restic's locks protect the repository)");
                    return Ok(());
                }
                Err(e) => format!("no answer from the control plane: {e}"),
            };
            tracing::info!(job = %id, reason = %why, retry_in = ?self.cfg.claim_retry, "scheduled run waits for its repository");
            tokio::select! {
                () = tokio::time::sleep(self.cfg.claim_retry) => {}
                () = cancel.cancelled() => return Ok(()),
            }
        }
    }

    fn push_started(&self, rec: &JobRecord, started_ms: i64) -> Result<()> {
        let scheduled = matches!(rec.origin, JobOrigin::Schedule { .. });
        let msg = JobStarted {
            v: PROTOCOL_VERSION,
            job_id: rec.spec.job_id.clone(),
            kind: rec.spec.params.kind(),
            origin: rec.origin.clone(),
            started_ms,
            params: scheduled.then(|| rec.spec.params.clone()),
            repo_id: Some(rec.spec.repo.repo_id.clone()),
        };
        self.outbox
            .push(&rec.spec.job_id, JobTopic::Started, &encode(&msg))
    }

    /// [`Self::finish`], retried while the disk refuses the write (full,
    /// read-only): the result stays in memory until it is on disk. Only a
    /// stop gives up, leaving the job `running` in the journal, reported as
    /// interrupted at the next start.
    async fn finish_retrying(
        &self,
        rec: &JobRecord,
        started_ms: Option<i64>,
        r: RunResult,
    ) -> Result<()> {
        let mut pause = Duration::from_millis(500);
        loop {
            match self.finish(rec, started_ms, r.clone()) {
                Ok(()) => return Ok(()),
                Err(e) if self.stopping.is_cancelled() => return Err(e),
                Err(e) => {
                    tracing::error!(job = %rec.spec.job_id, error = %e, retry_in = ?pause, "cannot write the job's result (disk full?); keeping it and retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.stopping.cancelled() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Writes the `done` durably, then forgets the job.
    fn finish(&self, rec: &JobRecord, started_ms: Option<i64>, r: RunResult) -> Result<()> {
        let done = JobDone {
            v: PROTOCOL_VERSION,
            job_id: rec.spec.job_id.clone(),
            outcome: r.outcome,
            exit_code: r.exit_code,
            error_kind: r.error_kind,
            error: r.error,
            summary: r.summary,
            stderr_tail: r.stderr_tail,
            started_ms,
            finished_ms: self.cfg.clock.now_ms(),
            restic_version: self.cfg.restic.as_ref().map(Restic::version_string),
            summary_parts: None,
        };
        self.outbox
            .push(&rec.spec.job_id, JobTopic::Done, &encode(&done))?;
        self.journal.finish(&rec.spec.job_id)
    }

    /// Whether the next job on `repo` first removes this host's stale locks.
    fn lock_check_due(&self, repo: &str) -> bool {
        lock(&self.lock_check).contains(repo)
    }

    /// Marks (or clears) `repo` for a stale-lock check before its next job,
    /// on disk when the agent keeps it there (a failed write is logged: the
    /// mark still holds until this process ends).
    fn set_lock_check(&self, repo: &str, check: bool) {
        let mut set = lock(&self.lock_check);
        let changed = if check {
            set.insert(repo.to_owned())
        } else {
            set.remove(repo)
        };
        if !changed {
            return;
        }
        tracing::info!(repo = %repo, check, "stale-lock check before the next job");
        if let Some(p) = &self.cfg.lock_check_file {
            let body = serde_json::to_vec(&*set).unwrap_or_default();
            if let Err(e) = crate::state::write_durable(p, &body, true) {
                tracing::warn!(file = %p.display(), error = %format!("{e:#}"), "stale-lock marks not saved");
            }
        }
    }

    fn no_restic(&self) -> String {
        format!(
            "restic is not usable on this host: {}",
            self.cfg
                .restic_error
                .as_deref()
                .unwrap_or("not found where the agent looks for it")
        )
    }

    /// Opens the secrets of a query: never ones bound to one job.
    fn open(&self, access: &RepoAccess) -> Result<RepoSecrets, Failure> {
        let s = self.open_sealed(access)?;
        if let Some(b) = &s.bound {
            return Err(invalid(format!(
                "the repository secret was issued for job {} only",
                b.job_id
            )));
        }
        Ok(s.secrets)
    }

    /// Opens the secrets of a job; a secret bound to one job (a restore
    /// onto this host with another host's credential) opens only for that
    /// job with exactly its parameters.
    fn open_for(&self, spec: &JobSpec) -> Result<RepoSecrets, Failure> {
        let s = self.open_sealed(&spec.repo)?;
        if let Some(b) = &s.bound {
            b.check(spec.job_id.as_str(), &spec.params).map_err(|why| {
                tracing::warn!(job = %spec.job_id, bound_to = %b.job_id, reason = %why, "job refused: its repository secret is bound to another job");
                invalid(why)
            })?;
        }
        Ok(s.secrets)
    }

    fn open_sealed(&self, access: &RepoAccess) -> Result<SealedSecrets, Failure> {
        rm_bus::seal::open::<SealedSecrets>(
            &access.secrets,
            &self.cfg.xkey,
            &self.cfg.controlplane_xkey,
        )
        .map_err(|e| {
            invalid(format!(
                "the repository secrets do not open on this agent: {e}"
            ))
        })
    }

    /// Answers a query command (ls, snapshots, init, verify).
    pub async fn query(&self, body: CommandBody) -> QueryReply {
        let mut reply = QueryReply {
            v: PROTOCOL_VERSION,
            ok: true,
            error_kind: None,
            error: None,
            entries: vec![],
            snapshots: None,
            restic_repo_id: None,
        };
        let res = self.query_inner(body, &mut reply).await;
        if let Err(f) = res {
            reply.ok = false;
            reply.error_kind = Some(f.kind);
            reply.error = Some(f.message);
        }
        reply
    }

    async fn query_inner(&self, body: CommandBody, reply: &mut QueryReply) -> Result<(), Failure> {
        let access = match &body {
            CommandBody::Ls { repo, .. }
            | CommandBody::Snapshots { repo, .. }
            | CommandBody::RepoInit { repo }
            | CommandBody::RepoVerify { repo } => repo,
            _ => {
                return Err(Failure {
                    kind: ErrorKind::InvalidRequest,
                    message: "not a query".into(),
                    exit_code: None,
                });
            }
        };
        let restic = self.cfg.restic.as_ref().ok_or_else(|| Failure {
            kind: ErrorKind::Fatal,
            message: self.no_restic(),
            exit_code: None,
        })?;
        let secrets = self.open(access)?;
        let repo = Repo {
            secrets: &secrets,
            cache_dir: Some(&self.cfg.cache_dir),
            scratch_dir: &self.cfg.scratch_dir,
        };
        match &body {
            CommandBody::Ls { snapshot, dir, .. } => {
                reply.entries = rm_restic::ls(restic, &repo, snapshot, dir, QUERY_TIMEOUT).await?;
            }
            CommandBody::Snapshots { host_name, .. } => {
                reply.snapshots = Some(
                    rm_restic::snapshots(restic, &repo, host_name.as_deref(), QUERY_TIMEOUT)
                        .await?,
                );
            }
            CommandBody::RepoInit { .. } => {
                reply.restic_repo_id = Some(rm_restic::init(restic, &repo, QUERY_TIMEOUT).await?);
            }
            CommandBody::RepoVerify { .. } => {
                reply.restic_repo_id = Some(rm_restic::verify(restic, &repo, QUERY_TIMEOUT).await?);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether the next job on the repository looks for stale locks after
/// this run (`None`: as before). Set when restic ran and did not end
/// normally (failed, timed out, killed or cancelled: it may have left a
/// lock); refusals before restic started leave none. Cleared by a run
/// that succeeded after removing stale locks (or by `unlock` itself); a
/// `locks` listing removes nothing, so it clears nothing.
fn lock_check_after(params: &JobParams, checked: bool, r: &RunResult) -> Option<bool> {
    let ok = matches!(r.outcome, JobOutcome::Succeeded | JobOutcome::Warning);
    let refused = matches!(
        r.error_kind,
        Some(ErrorKind::InvalidRequest | ErrorKind::AppendOnly)
    );
    match params.kind() {
        _ if !ok && !refused => Some(true),
        JobKind::Unlock if ok => Some(false),
        JobKind::Locks => None,
        _ if ok && checked => Some(false),
        _ => None,
    }
}

fn invalid(message: String) -> Failure {
    Failure {
        kind: ErrorKind::InvalidRequest,
        message,
        exit_code: None,
    }
}

fn failed(outcome: JobOutcome, kind: ErrorKind, msg: &str) -> RunResult {
    RunResult {
        outcome,
        exit_code: None,
        error_kind: Some(kind),
        error: Some(msg.to_owned()),
        summary: None,
        stderr_tail: vec![],
    }
}

/// Longest log line sent (restic may print lines of megabytes).
const LOG_LINE_MAX: usize = 16 * 1024;

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
fn cut_line(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" [{cut} more bytes cut]"));
}

/// Publishes a job's progress as it comes (the runner throttles it) and its
/// log lines in batches, both at most once. Lines are cut to
/// [`LOG_LINE_MAX`] and a batch goes out before it nears the server's
/// `max_payload`, so no batch is too large for the bus.
async fn forward(
    client: Client,
    host: HostId,
    job: JobId,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    flush_every: Duration,
) {
    let progress_subj = subject::agent_job(&host, &job, JobTopic::Progress);
    let log_subj = subject::agent_job(&host, &job, JobTopic::Log);
    let mut lines: Vec<LogLine> = Vec::new();
    let mut bytes = 0usize;
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flush = |lines: &mut Vec<LogLine>, bytes: &mut usize, seq: &mut u64| {
        let batch = LogBatch {
            v: PROTOCOL_VERSION,
            seq: *seq,
            lines: std::mem::take(lines),
        };
        *bytes = 0;
        *seq += batch.lines.len() as u64;
        let client = client.clone();
        let subj = log_subj.clone();
        async move {
            if let Err(e) = rm_bus::size::publish(&client, subj, encode(&batch)).await {
                tracing::debug!(error = %e, "log batch not sent");
            }
        }
    };
    // the JSON of a line is at most twice its text plus a little
    let budget_now = || rm_bus::size::chunk_len(rm_bus::size::max_payload(&client));
    let mut budget = budget_now();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(RunEvent::Progress(p)) => {
                    if let Err(e) = rm_bus::size::publish(&client, progress_subj.clone(), encode(&p)).await {
                        tracing::debug!(error = %e, "progress not sent");
                    }
                }
                Some(RunEvent::Log(mut l)) => {
                    cut_line(&mut l.text, LOG_LINE_MAX.min(budget / 2));
                    if bytes + l.text.len() + 64 > budget && !lines.is_empty() {
                        flush(&mut lines, &mut bytes, &mut seq).await;
                    }
                    bytes += l.text.len() + 64;
                    lines.push(l);
                    if lines.len() >= LOG_BATCH_MAX {
                        flush(&mut lines, &mut bytes, &mut seq).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !lines.is_empty() {
                    flush(&mut lines, &mut bytes, &mut seq).await;
                }
                budget = budget_now();
            }
        }
    }
    if !lines.is_empty() {
        flush(&mut lines, &mut bytes, &mut seq).await;
    }
}

#[cfg(test)]
mod tests {
    use super::cut_line;

    #[test]
    fn long_log_lines_are_cut_on_a_character_boundary() {
        let mut s = "é".repeat(10);
        cut_line(&mut s, 5);
        assert_eq!(s, "éé [16 more bytes cut]");
        let mut short = "ok".to_owned();
        cut_line(&mut short, 5);
        assert_eq!(short, "ok");
    }
}
