//! One simulated agent: the real wire protocol, no restic.
//!
//! Connects with its own nkey and JWT, says hello, heartbeats with vitals
//! (the first after a random part of the interval, so a fleet does not beat
//! in lockstep), accepts dispatched jobs (acknowledged with an accept mark,
//! duplicates recognised) and answers them: `started` through the outbox,
//! progress messages, a batch of log lines, then `done` through the outbox.
//! Backup schedules in its config run every `schedule_every` (a cadence
//! instead of cron, so a benchmark sees runs within minutes). Query
//! commands get an empty, successful answer; config pushes are taken.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, Message};
use futures_util::StreamExt;
use rand::Rng;
use rm_agent::outbox::Outbox;
use rm_bus::creds::Role;
use rm_bus::msg::{
    AcceptMark, Ack, AgentConfig, Command, CommandBody, DiskFree, Heartbeat, Hello, HelloReply,
    JobDone, JobKind, JobOrigin, JobOutcome, JobParams, JobStarted, LogBatch, LogLine, LsEntry,
    PROTOCOL_VERSION, Progress, QueryReply, Stream, decode, encode,
};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::subject::{self, JobTopic};
use rm_bus::{HostId, JobId};
use tokio_util::sync::CancellationToken;

use crate::fleet::Counters;
use crate::ident::Identity;
use crate::now_ms;

/// How every agent of a fleet behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub bus_url: String,
    pub heartbeat: Duration,
    /// A job "runs" this long, sending progress every `progress_every`.
    pub job_time: Duration,
    pub progress_every: Duration,
    /// Log lines per job (one batch).
    pub log_lines: usize,
    /// Each backup schedule in the config runs this often (none: never).
    pub schedule_every: Option<Duration>,
    /// Outboxes live under here, one directory per agent.
    pub outbox_root: PathBuf,
    pub results: RetryPolicy,
    pub hello: RetryPolicy,
    /// How often each agent pings its node (the real agent's default
    /// unless told otherwise).
    pub ping_interval: Duration,
    /// Entries in every directory an `ls` query lists (see [`listing`]).
    pub ls_entries: usize,
}

impl Behaviour {
    pub fn new(bus_url: impl Into<String>, outbox_root: PathBuf) -> Self {
        let t = rm_agent::Timings::default();
        Self {
            bus_url: bus_url.into(),
            heartbeat: t.heartbeat,
            job_time: Duration::from_secs(2),
            progress_every: t.progress_interval,
            log_lines: 20,
            schedule_every: None,
            outbox_root,
            results: t.results,
            hello: t.hello,
            ping_interval: t.ping_interval,
            ls_entries: 0,
        }
    }
}

/// A made-up directory of a snapshot for an `ls` query: `n` children of
/// `dir`, every tenth a directory, the rest files of assorted sizes (the
/// restore wizard's browse step at scale without a repository).
pub fn listing(dir: &str, n: usize) -> Vec<LsEntry> {
    let base = dir.trim_end_matches('/');
    (0..n)
        .map(|i| {
            let is_dir = i % 10 == 0;
            let name = if is_dir {
                format!("dir-{i:05}")
            } else {
                format!("file-{i:05}.dat")
            };
            LsEntry {
                path: format!("{base}/{name}"),
                kind: if is_dir { "dir" } else { "file" }.to_owned(),
                size: (!is_dir).then_some((i as u64 * 7_919) % 50_000_000),
                mtime: Some(format!("2026-11-{:02}T08:{:02}:00Z", 1 + i % 28, i % 60)),
                name,
            }
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running simulated agent.
pub struct SimAgent {
    pub host: HostId,
    client: Client,
    outbox: Outbox,
    /// One outbox drain at a time (entries go in order).
    draining: tokio::sync::Mutex<()>,
    b: Arc<Behaviour>,
    counters: Arc<Counters>,
    boot: String,
    accepts: AtomicU64,
    /// Jobs taken (dispatch duplicates are recognised) and still running.
    seen: Mutex<HashSet<JobId>>,
    running: Mutex<HashSet<JobId>>,
    config: Mutex<Option<AgentConfig>>,
    started: std::time::Instant,
    pub stop: CancellationToken,
    /// When the last heartbeat was handed to the client (ms since epoch;
    /// 0: none yet) ...
    hb_last_ms: AtomicU64,
    /// ... and the longest time between two, since [`Self::take_hb_gap`].
    hb_gap_max_ms: AtomicU64,
    /// Every time between two heartbeats handed to the client of more
    /// than two periods, as `(from_ms, to_ms)`, all run ([`Self::silences`]).
    long_gaps: Mutex<Vec<(u64, u64)>>,
}

impl SimAgent {
    /// Connects `id` and starts its tasks (hello, heartbeats, commands,
    /// schedules).
    pub async fn start(
        id: &Identity,
        b: Arc<Behaviour>,
        counters: Arc<Counters>,
    ) -> Result<Arc<Self>> {
        let host = id.host_id.clone();
        let mut spec = rm_bus::connect::ConnectSpec::new(
            b.bus_url.clone(),
            id.creds(),
            &Role::Agent(host.clone()),
        );
        spec.name = format!("sim agent {host}");
        spec.connect_timeout = Duration::from_secs(20);
        // as the real agent: backoff with jitter up to its maximum
        spec.reconnect_max = Some(rm_agent::Timings::default().reconnect_max);
        spec.ping_interval = Some(b.ping_interval);
        let (client, mut events) = rm_bus::connect::connect(&spec).await?;
        let commands = client
            .subscribe(subject::cmd(&host))
            .await
            .context("subscribing to commands")?;
        let outbox = Outbox::open(b.outbox_root.join(host.as_str()), 10_000)?;
        let me = Arc::new(Self {
            host,
            client,
            outbox,
            draining: tokio::sync::Mutex::new(()),
            b,
            counters,
            boot: rm_bus::ids::random_token(8),
            accepts: AtomicU64::new(0),
            seen: Mutex::new(HashSet::new()),
            running: Mutex::new(HashSet::new()),
            config: Mutex::new(None),
            started: std::time::Instant::now(),
            stop: CancellationToken::new(),
            hb_last_ms: AtomicU64::new(0),
            hb_gap_max_ms: AtomicU64::new(0),
            long_gaps: Mutex::new(Vec::new()),
        });
        tokio::spawn(me.clone().hello());
        // As the real agent: a hello on every reconnect too (a bus node
        // restarted makes a storm of them).
        let again = me.clone();
        tokio::spawn(async move {
            // the first `Connected` is the connection the hello above is on
            let mut first = true;
            while let Some(ev) = events.recv().await {
                if matches!(ev, async_nats::Event::ClientError(_)) {
                    again
                        .counters
                        .reconnect_rounds_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
                if !matches!(ev, async_nats::Event::Connected) {
                    continue;
                }
                if std::mem::take(&mut first) {
                    continue;
                }
                if !again.stop.is_cancelled() {
                    again.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(again.clone().hello());
                }
            }
        });
        tokio::spawn(me.clone().heartbeats());
        tokio::spawn(me.clone().commands(commands));
        tokio::spawn(me.clone().schedules());
        Ok(me)
    }

    /// The longest time between two of this agent's heartbeats since the
    /// last call (ms; the first call after start counts from its first).
    pub fn take_hb_gap(&self) -> u64 {
        self.hb_gap_max_ms.swap(0, Ordering::Relaxed)
    }

    /// This agent's silences of more than two heartbeat periods, all run:
    /// `(from_ms, to_ms)` between two heartbeats handed to the client, and
    /// one still going (`to_ms` None) if none was for that long by `now_ms`.
    /// What the agent itself did not send, told from what the bus or the
    /// control plane did not deliver.
    pub fn silences(&self, now_ms: u64) -> Vec<(u64, Option<u64>)> {
        let mut out: Vec<(u64, Option<u64>)> = lock(&self.long_gaps)
            .iter()
            .map(|&(from, to)| (from, Some(to)))
            .collect();
        let last = self.hb_last_ms.load(Ordering::Relaxed);
        let over =
            u64::try_from(self.b.heartbeat.as_millis().saturating_mul(2)).unwrap_or(u64::MAX);
        if last > 0 && now_ms.saturating_sub(last) > over {
            out.push((last, None));
        }
        out
    }

    /// Drops off the bus without a goodbye, as a crashed machine would.
    pub async fn kill(&self) {
        self.stop.cancel();
        let _ = self.client.drain().await;
    }

    fn hello_msg(&self) -> Hello {
        let running: Vec<JobId> = lock(&self.running).iter().cloned().collect();
        Hello {
            v: PROTOCOL_VERSION,
            agent_version: format!("{}-sim", rm_agent::VERSION),
            restic_version: Some("0.18.0".into()),
            os: "linux".into(),
            arch: "x86_64".into(),
            hostname: format!("sim-{}", self.host),
            config_version: lock(&self.config).as_ref().map_or(0, |c| c.version),
            accepted_jobs: vec![],
            running_jobs: running,
            accept_seq: Some(AcceptMark {
                boot: self.boot.clone(),
                seq: self.accepts.load(Ordering::SeqCst),
            }),
        }
    }

    async fn hello(self: Arc<Self>) {
        let key = IdempotencyKey::new(format!("hello:{}", rm_bus::ids::random_token(8)));
        let subj = subject::agent_hello(&self.host);
        let sent = tokio::select! {
            () = self.stop.cancelled() => return,
            r = request_with_retry(&self.client, &subj, &key, encode(&self.hello_msg()), &self.b.hello) => r,
        };
        match sent.map_err(anyhow::Error::from).and_then(|m| {
            decode::<HelloReply>("hello reply", &m.payload).map_err(anyhow::Error::from)
        }) {
            Ok(reply) => {
                self.counters
                    .hellos_answered
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(c) = reply.config {
                    self.take_config(c);
                }
            }
            Err(e) => {
                tracing::warn!(host = %self.host, error = %format!("{e:#}"), "hello not answered");
                self.counters.hellos_failed.fetch_add(1, Ordering::Relaxed);
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn take_config(&self, c: AgentConfig) {
        let mut cur = lock(&self.config);
        if cur.as_ref().is_none_or(|old| old.version != c.version) {
            *cur = Some(c);
        }
    }

    async fn heartbeats(self: Arc<Self>) {
        let every = self.b.heartbeat;
        let first = every.mul_f64(rand::thread_rng().r#gen::<f64>());
        tokio::select! {
            () = self.stop.cancelled() => return,
            () = tokio::time::sleep(first) => {}
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // stable per agent, like a real disk
        let free = rand::thread_rng().gen_range(10u64 << 30..500u64 << 30);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let hb = Heartbeat {
                v: PROTOCOL_VERSION,
                ts_ms: now_ms(),
                agent_version: format!("{}-sim", rm_agent::VERSION),
                restic_version: Some("0.18.0".into()),
                os: "linux".into(),
                arch: "x86_64".into(),
                uptime_secs: 86_400 + self.started.elapsed().as_secs(),
                config_version: lock(&self.config).as_ref().map_or(0, |c| c.version),
                disks: vec![DiskFree {
                    path: "/".into(),
                    free_bytes: free,
                    total_bytes: Some(1 << 40),
                }],
                running_jobs: lock(&self.running).iter().cloned().collect(),
                next_runs: vec![],
                bus_node: rm_bus::connect::node_name(&self.client),
            };
            match rm_bus::size::publish(
                &self.client,
                subject::agent_heartbeat(&self.host),
                encode(&hb),
            )
            .await
            {
                Ok(()) => {
                    self.counters
                        .heartbeats_sent
                        .fetch_add(1, Ordering::Relaxed);
                    let now = u64::try_from(now_ms()).unwrap_or(0);
                    let last = self.hb_last_ms.swap(now, Ordering::Relaxed);
                    if last > 0 {
                        let gap = now.saturating_sub(last);
                        self.hb_gap_max_ms.fetch_max(gap, Ordering::Relaxed);
                        if u128::from(gap) > every.as_millis().saturating_mul(2) {
                            lock(&self.long_gaps).push((last, now));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat not sent");
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn commands(self: Arc<Self>, mut commands: async_nats::Subscriber) {
        loop {
            let m = tokio::select! {
                () = self.stop.cancelled() => return,
                m = commands.next() => m,
            };
            let Some(m) = m else { return };
            self.clone().on_command(m).await;
        }
    }

    async fn on_command(self: Arc<Self>, m: Message) {
        let Some(reply_to) = m.reply.clone() else {
            return;
        };
        let answer = match decode::<Command>("command", &m.payload).map(|c| c.body) {
            Err(e) => encode(&Ack::refused(e.to_string())),
            Ok(CommandBody::Dispatch { job }) => {
                let new = lock(&self.seen).insert(job.job_id.clone());
                if new {
                    self.counters.dispatches.fetch_add(1, Ordering::Relaxed);
                    let seq = self.accepts.fetch_add(1, Ordering::SeqCst) + 1;
                    lock(&self.running).insert(job.job_id.clone());
                    let me = self.clone();
                    let kind = job.params.kind();
                    tokio::spawn(async move {
                        me.run_job(job.job_id, kind, None).await;
                    });
                    encode(&Ack {
                        accepted: Some(AcceptMark {
                            boot: self.boot.clone(),
                            seq,
                        }),
                        ..Ack::ok()
                    })
                } else {
                    encode(&Ack::duplicate())
                }
            }
            Ok(CommandBody::ConfigChanged { config }) => {
                self.counters.other_commands.fetch_add(1, Ordering::Relaxed);
                self.take_config(config);
                encode(&Ack::ok())
            }
            Ok(
                CommandBody::Cancel { .. } | CommandBody::ConfigPart { .. } | CommandBody::Unknown,
            ) => {
                self.counters.other_commands.fetch_add(1, Ordering::Relaxed);
                encode(&Ack::ok())
            }
            Ok(query) => {
                self.counters.other_commands.fetch_add(1, Ordering::Relaxed);
                let entries = match &query {
                    CommandBody::Ls { dir, .. } => listing(dir, self.b.ls_entries),
                    _ => vec![],
                };
                encode(&QueryReply {
                    v: PROTOCOL_VERSION,
                    ok: true,
                    error_kind: None,
                    error: None,
                    entries,
                    snapshots: Some(serde_json::json!([])),
                    restic_repo_id: Some(format!("{:064x}", rand::thread_rng().r#gen::<u128>())),
                })
            }
        };
        if let Err(e) = rm_bus::size::publish(&self.client, reply_to, answer).await {
            tracing::debug!(error = %e, "command reply not sent");
        }
    }

    /// Backup schedules run every `schedule_every`, from a random offset.
    async fn schedules(self: Arc<Self>) {
        let Some(every) = self.b.schedule_every else {
            return;
        };
        let first = every.mul_f64(rand::thread_rng().r#gen::<f64>());
        tokio::select! {
            () = self.stop.cancelled() => return,
            () = tokio::time::sleep(first) => {}
        }
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due: Vec<_> = lock(&self.config)
                .as_ref()
                .map(|c| {
                    c.schedules
                        .iter()
                        .filter(|s| s.enabled && s.params.kind() == JobKind::Backup)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for s in due {
                let job = JobId::generate();
                lock(&self.seen).insert(job.clone());
                lock(&self.running).insert(job.clone());
                self.counters.scheduled_runs.fetch_add(1, Ordering::Relaxed);
                let me = self.clone();
                let origin = (
                    JobOrigin::Schedule {
                        schedule_id: s.schedule_id.clone(),
                    },
                    s.params.clone(),
                    s.repo.repo_id.clone(),
                );
                tokio::spawn(async move {
                    me.run_job(job, JobKind::Backup, Some(origin)).await;
                });
            }
        }
    }

    /// Runs one job: `started`, progress, log lines, `done`. `scheduled`
    /// carries a local run's origin, parameters and repository.
    async fn run_job(
        self: Arc<Self>,
        job: JobId,
        kind: JobKind,
        scheduled: Option<(JobOrigin, JobParams, String)>,
    ) {
        let started_ms = now_ms();
        let (origin, params, repo_id) = match scheduled {
            Some((o, p, r)) => (o, Some(p), Some(r)),
            None => (JobOrigin::Dispatch, None, None),
        };
        let started = JobStarted {
            v: PROTOCOL_VERSION,
            job_id: job.clone(),
            kind,
            origin,
            started_ms,
            params,
            repo_id,
        };
        self.push(&job, JobTopic::Started, &encode(&started)).await;
        let steps = (self.b.job_time.as_millis() / self.b.progress_every.as_millis().max(1)).max(1);
        #[allow(clippy::cast_precision_loss)]
        for i in 1..=steps {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(self.b.progress_every) => {}
            }
            self.progress(&job, started_ms, i as f64 / steps as f64)
                .await;
        }
        self.log(&job).await;
        self.finish(&job, kind, Some(started_ms)).await;
    }

    /// Publishes one progress message (`fraction` done).
    pub async fn progress(&self, job: &JobId, started_ms: i64, fraction: f64) {
        let total: u64 = 2 << 30;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let done = (total as f64 * fraction) as u64;
        let now = now_ms();
        let p = Progress {
            v: PROTOCOL_VERSION,
            ts_ms: now,
            elapsed_ms: u64::try_from(now - started_ms).unwrap_or(0),
            percent_done: Some(fraction),
            bytes_done: Some(done),
            total_bytes: Some(total),
            files_done: Some(done >> 16),
            total_files: Some(total >> 16),
            seconds_remaining: Some(1),
            current_files: vec!["/data/some/file.bin".into()],
        };
        let subj = subject::agent_job(&self.host, job, JobTopic::Progress);
        if rm_bus::size::publish(&self.client, subj, encode(&p))
            .await
            .is_ok()
        {
            self.counters.progress_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn log(&self, job: &JobId) {
        if self.b.log_lines == 0 {
            return;
        }
        let now = now_ms();
        let batch = LogBatch {
            v: PROTOCOL_VERSION,
            seq: 0,
            lines: (0..self.b.log_lines)
                .map(|i| LogLine {
                    ts_ms: now,
                    stream: Stream::Stdout,
                    text: format!("processed /data/dir-{i}/file-{i}.bin"),
                })
                .collect(),
        };
        let subj = subject::agent_job(&self.host, job, JobTopic::Log);
        if rm_bus::size::publish(&self.client, subj, encode(&batch))
            .await
            .is_ok()
        {
            self.counters
                .log_batches_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes the job's `done` to the outbox and sends it.
    pub async fn finish(&self, job: &JobId, kind: JobKind, started_ms: Option<i64>) {
        let summary = match kind {
            JobKind::Backup => Some(serde_json::json!({
                "message_type": "summary",
                "snapshot_id": format!("{:064x}", rand::thread_rng().r#gen::<u128>()),
                "files_new": 12, "files_changed": 40, "files_unmodified": 20_000,
                "dirs_new": 1, "dirs_changed": 3, "dirs_unmodified": 900,
                "data_blobs": 60, "tree_blobs": 4, "data_added": 52_428_800,
                "total_files_processed": 20_052, "total_bytes_processed": 2_147_483_648_u64,
                "total_duration": 2.0,
            })),
            JobKind::Snapshots | JobKind::Locks => Some(serde_json::json!([])),
            JobKind::Stats => Some(
                serde_json::json!({"total_size": 2_147_483_648_u64, "total_file_count": 20_052}),
            ),
            _ => None,
        };
        let done = JobDone {
            v: PROTOCOL_VERSION,
            job_id: job.clone(),
            outcome: JobOutcome::Succeeded,
            exit_code: Some(0),
            error_kind: None,
            error: None,
            summary,
            stderr_tail: vec![],
            started_ms,
            finished_ms: now_ms(),
            restic_version: Some("0.18.0".into()),
            summary_parts: None,
        };
        self.counters.results_pushed.fetch_add(1, Ordering::Relaxed);
        self.push(job, JobTopic::Done, &encode(&done)).await;
        lock(&self.running).remove(job);
    }

    /// Writes to the outbox (durably) and drains it until empty, backing
    /// off while nothing is acknowledged, as the agent's outbox loop does.
    async fn push(&self, job: &JobId, topic: JobTopic, payload: &[u8]) {
        if let Err(e) = self.outbox.push(job, topic, payload) {
            tracing::error!(error = %format!("{e:#}"), "outbox write failed");
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.outbox_pushed.fetch_add(1, Ordering::Relaxed);
        let _one = self.draining.lock().await;
        let mut failures = 0u32;
        loop {
            match self
                .outbox
                .drain(&self.client, &self.host, &self.b.results)
                .await
            {
                Ok(d) => {
                    self.counters
                        .outbox_acked
                        .fetch_add(d.sent as u64, Ordering::Relaxed);
                    self.counters
                        .outbox_rejected
                        .fetch_add(d.rejected as u64, Ordering::Relaxed);
                    if d.remaining == 0 {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "outbox unreadable");
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            failures = failures.saturating_add(1);
            let pause = self.b.results.backoff(failures, &mut rand::thread_rng());
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_holds_n_direct_children_of_the_directory_asked() {
        for dir in ["/", "/home/ann", "/home/ann/"] {
            let entries = listing(dir, 25);
            assert_eq!(entries.len(), 25);
            let base = dir.trim_end_matches('/');
            for e in &entries {
                assert_eq!(e.path, format!("{base}/{}", e.name), "in {dir}");
                assert_eq!(e.kind == "dir", e.size.is_none(), "{e:?}");
            }
            assert_eq!(entries.iter().filter(|e| e.kind == "dir").count(), 3);
        }
        assert!(listing("/", 0).is_empty());
    }
}
