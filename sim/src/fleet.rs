//! A fleet of simulated agents in one process: ramp-up at a steady rate
//! with jitter, what was sent and acknowledged, kills, and the result
//! burst (running jobs written to the store, then every agent sends their
//! `done` through its outbox at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::Rng;
use rand::seq::SliceRandom;
use rm_bus::JobId;
use rm_bus::msg::{JobKind, JobParams};
use serde::Serialize;

use crate::agent::{Behaviour, SimAgent};
use crate::ident::Identity;

/// Connection attempts per agent during ramp-up before it counts as failed.
const CONNECT_ATTEMPTS: u32 = 8;

/// What the fleet sent and what was acknowledged.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub connect_retries: AtomicU64,
    pub hellos_answered: AtomicU64,
    /// Hellos given up on after the agent's tries (each also an error).
    pub hellos_failed: AtomicU64,
    /// Reconnects after the first connection (each says hello again).
    pub reconnects: AtomicU64,
    /// Rounds of (re)connect attempts that failed: async-nats tried each
    /// server of its pool once, every one refused, timed out or cut the
    /// attempt off (an authentication timeout), and the next round comes
    /// after a longer pause.
    pub reconnect_rounds_failed: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub dispatches: AtomicU64,
    pub other_commands: AtomicU64,
    pub scheduled_runs: AtomicU64,
    pub progress_sent: AtomicU64,
    pub log_batches_sent: AtomicU64,
    /// `done` results written to the outboxes.
    pub results_pushed: AtomicU64,
    /// Outbox entries (`started` and `done`) written, acknowledged, refused.
    pub outbox_pushed: AtomicU64,
    pub outbox_acked: AtomicU64,
    pub outbox_rejected: AtomicU64,
    pub errors: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub connected: u64,
    pub connect_failed: u64,
    pub connect_retries: u64,
    pub hellos_answered: u64,
    pub hellos_failed: u64,
    pub reconnects: u64,
    pub reconnect_rounds_failed: u64,
    pub heartbeats_sent: u64,
    pub dispatches: u64,
    pub other_commands: u64,
    pub scheduled_runs: u64,
    pub progress_sent: u64,
    pub log_batches_sent: u64,
    pub results_pushed: u64,
    pub outbox_pushed: u64,
    pub outbox_acked: u64,
    pub outbox_rejected: u64,
    pub errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connected: g(&self.connected),
            connect_failed: g(&self.connect_failed),
            connect_retries: g(&self.connect_retries),
            hellos_answered: g(&self.hellos_answered),
            hellos_failed: g(&self.hellos_failed),
            reconnects: g(&self.reconnects),
            reconnect_rounds_failed: g(&self.reconnect_rounds_failed),
            heartbeats_sent: g(&self.heartbeats_sent),
            dispatches: g(&self.dispatches),
            other_commands: g(&self.other_commands),
            scheduled_runs: g(&self.scheduled_runs),
            progress_sent: g(&self.progress_sent),
            log_batches_sent: g(&self.log_batches_sent),
            results_pushed: g(&self.results_pushed),
            outbox_pushed: g(&self.outbox_pushed),
            outbox_acked: g(&self.outbox_acked),
            outbox_rejected: g(&self.outbox_rejected),
            errors: g(&self.errors),
        }
    }
}

/// The agents of this process.
pub struct Fleet {
    pub agents: tokio::sync::Mutex<Vec<Arc<SimAgent>>>,
    pub counters: Arc<Counters>,
    pub behaviour: Arc<Behaviour>,
}

/// Agents whose burst jobs one setup transaction writes.
const BURST_SETUP_AGENTS_PER_TX: usize = 250;

/// Times a burst's setup chunk is written again after "database is
/// locked" (a role held the write lock past the busy timeout).
const BURST_SETUP_RETRIES: u32 = 5;

/// Whether `e` is SQLite's "database is locked" or "busy".
fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .is_some_and(rm_store::is_busy)
    })
}

/// Writes one chunk of a burst's running jobs in one transaction: all of
/// it or nothing.
async fn burst_setup_chunk(
    store: &rm_store::Store,
    chunk: &[Arc<SimAgent>],
    per_agent: usize,
    params: &JobParams,
    now: i64,
) -> Result<Vec<(Arc<SimAgent>, Vec<JobId>)>> {
    let mut tx = store.write().await?;
    let mut plan = Vec::with_capacity(chunk.len());
    for a in chunk {
        let repo = burst_repo(&mut tx, a.host.as_str(), now).await?;
        let mut mine = Vec::with_capacity(per_agent);
        for _ in 0..per_agent {
            let id = JobId::generate();
            rm_store::jobs::insert(
                &mut tx,
                &rm_store::jobs::NewJob {
                    id: id.as_str(),
                    host_id: a.host.as_str(),
                    exec_host_id: a.host.as_str(),
                    repo_id: Some(&repo),
                    params,
                    origin: "operator",
                    schedule_id: None,
                    status: rm_store::jobs::JobStatus::Running,
                    timeout_secs: 3600,
                    created_by: "sim burst",
                    created_at: now,
                    started_at: Some(now),
                },
            )
            .await?;
            mine.push(id);
        }
        plan.push((a.clone(), mine));
    }
    tx.commit().await?;
    Ok(plan)
}

/// The host's own repository for the burst's backups (as in a fleet
/// where every host backs up to its own repository, the costliest shape
/// for ingest: every result adds a snapshot to its own repository's
/// cache), created on the first burst: attached, already listed once (so
/// a backup's snapshot is counted, not a reason for a refresh), and the
/// host given its restic name. Bench only: its secrets are not real.
async fn burst_repo(tx: &mut rm_store::Tx, host: &str, now: i64) -> Result<String> {
    let repo = format!("rb{host}");
    sqlx::query(
        "INSERT OR IGNORE INTO repositories (id, name, url_display, secrets_enc, created_at, created_by, refresh_phase)
         VALUES (?1, 'bench ' || ?1, 'rest:https://bench.invalid/' || ?2, x'00', ?3, 'sim burst', ?4)",
    )
    .bind(&repo)
    .bind(host)
    .bind(now)
    .bind(rm_store::refresh::phase_of(&repo))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO host_repositories (host_id, repo_id, access, secrets_enc, created_at)
         VALUES (?, ?, 'append_only', x'00', ?)",
    )
    .bind(host)
    .bind(&repo)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE hosts SET restic_host = id WHERE id = ? AND restic_host IS NULL")
        .bind(host)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE repositories SET snapshots_listed_at = ?2 WHERE id = ?1 AND snapshots_listed_at IS NULL",
    )
    .bind(&repo)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(repo)
}

impl Fleet {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            agents: tokio::sync::Mutex::new(Vec::new()),
            counters: Arc::new(Counters::default()),
            behaviour: Arc::new(behaviour),
        }
    }

    /// Connects every identity, `per_sec` a second, each start jittered by
    /// up to one slot either way. Returns once every connect has finished
    /// (each agent tries [`CONNECT_ATTEMPTS`] times with a growing,
    /// jittered pause; failures are counted and logged).
    pub async fn ramp(&self, ids: &[Identity], per_sec: f64) -> Duration {
        let t0 = Instant::now();
        let slot = 1.0 / per_sec.max(1.0);
        let mut tasks = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let at = (i as f64 + rand::thread_rng().gen_range(-1.0..1.0)).max(0.0) * slot;
            let (id, b, c) = (id.clone(), self.behaviour.clone(), self.counters.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(t0) + Duration::from_secs_f64(at)).await;
                // like an agent: retry with a growing, jittered pause
                for attempt in 0..CONNECT_ATTEMPTS {
                    match SimAgent::start(&id, b.clone(), c.clone()).await {
                        Ok(a) => {
                            c.connected.fetch_add(1, Ordering::Relaxed);
                            return Some(a);
                        }
                        Err(e) => {
                            tracing::warn!(host = %id.host_id, attempt, error = %format!("{e:#}"), "simulated agent did not connect");
                            c.connect_retries.fetch_add(1, Ordering::Relaxed);
                            let pause = Duration::from_millis(500 << attempt.min(5))
                                .mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
                c.connect_failed.fetch_add(1, Ordering::Relaxed);
                None
            }));
        }
        let mut up = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Ok(Some(a)) = t.await {
                up.push(a);
            }
        }
        self.agents.lock().await.extend(up);
        t0.elapsed()
    }

    /// Each agent's longest time between two heartbeats it sent since the
    /// last call: how many went longer than `over` ms, the longest, and up
    /// to `name` hosts that did (the longest first). A send gap tells a
    /// silent simulator from a bus or control plane that lost its beats.
    pub async fn heartbeat_gaps(&self, over: u64, name: usize) -> serde_json::Value {
        let agents = self.agents.lock().await.clone();
        let mut long: Vec<(u64, String)> = Vec::new();
        let mut max = 0;
        for a in &agents {
            let g = a.take_hb_gap();
            max = max.max(g);
            if g > over {
                long.push((g, a.host.to_string()));
            }
        }
        long.sort_unstable_by(|x, y| y.cmp(x));
        let count = long.len();
        long.truncate(name);
        serde_json::json!({"over_ms": over, "agents_over": count, "max_ms": max, "longest": long})
    }

    /// Of `hosts`, those this process runs, each with its silences of more
    /// than two heartbeat periods all run ([`SimAgent::silences`]).
    pub async fn silences(&self, hosts: &std::collections::HashSet<&str>) -> serde_json::Value {
        let agents = self.agents.lock().await.clone();
        let now = u64::try_from(crate::now_ms()).unwrap_or(0);
        let out: serde_json::Map<String, serde_json::Value> = agents
            .iter()
            .filter(|a| hosts.contains(a.host.as_str()))
            .map(|a| (a.host.to_string(), serde_json::json!(a.silences(now))))
            .collect();
        serde_json::Value::Object(out)
    }

    /// Drops `n` random agents off the bus without a goodbye; returns their
    /// host ids.
    pub async fn kill(&self, n: usize) -> Vec<String> {
        let mut agents = self.agents.lock().await;
        agents.shuffle(&mut rand::thread_rng());
        let n = n.min(agents.len());
        let gone: Vec<Arc<SimAgent>> = agents.drain(..n).collect();
        drop(agents);
        let mut hosts = Vec::with_capacity(gone.len());
        for a in gone {
            a.kill().await;
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
            hosts.push(a.host.to_string());
        }
        hosts
    }

    /// The result burst: writes `per_agent` running backup jobs per live
    /// agent straight into the store at `db` (a bench-only shortcut: the
    /// jobs exist as if dispatched), then every agent sends their `done`
    /// through its outbox, all at once. Returns the results acknowledged
    /// and the time from the first send to the last acknowledgement.
    pub async fn burst(&self, db: &std::path::Path, per_agent: usize) -> Result<(u64, Duration)> {
        let agents = self.agents.lock().await.clone();
        let store = rm_store::Store::open(db).await?;
        let mut plan: Vec<(Arc<SimAgent>, Vec<JobId>)> = Vec::new();
        {
            let params = JobParams::Backup {
                paths: vec!["/data".into()],
                excludes: vec![],
                tags: vec![],
                one_file_system: false,
                host_name: None,
            };
            let now = crate::now_ms();
            // in transactions of a few hundred agents: one for all of them
            // held the write lock for seconds while the control plane was
            // serving (operators' host adds then failed "database is locked")
            for chunk in agents.chunks(BURST_SETUP_AGENTS_PER_TX) {
                let mut attempt = 0;
                loop {
                    match burst_setup_chunk(&store, chunk, per_agent, &params, now).await {
                        Ok(jobs) => {
                            plan.extend(jobs);
                            break;
                        }
                        // a role held the write lock past the busy timeout:
                        // nothing of this chunk was written, so write it again
                        Err(e) if attempt < BURST_SETUP_RETRIES && is_busy(&e) => {
                            attempt += 1;
                            tracing::warn!(attempt, error = %format!("{e:#}"), "burst setup: database busy; writing the chunk again");
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let before = self.counters.outbox_acked.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(plan.len());
        for (a, jobs) in plan {
            tasks.push(tokio::spawn(async move {
                for j in jobs {
                    a.finish(&j, JobKind::Backup, Some(crate::now_ms())).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let took = t0.elapsed();
        let acked = self.counters.outbox_acked.load(Ordering::Relaxed) - before;
        Ok((acked, took))
    }

    /// The host ids of the first `k` connected agents: the rows of a
    /// dashboard the bench's clients stand for (`rows K`).
    pub async fn hosts(&self, k: usize) -> Vec<String> {
        let agents = self.agents.lock().await;
        agents.iter().take(k).map(|a| a.host.to_string()).collect()
    }

    /// The live-path probe: `n` progress messages from random agents (of
    /// those in `among`, if given and still connected), `per_sec` a
    /// second, each for a job id of its own (the web role streams progress
    /// as it arrives; the message carries its send time).
    pub async fn progress_probe(
        &self,
        n: usize,
        per_sec: f64,
        among: Option<&std::collections::HashSet<String>>,
    ) -> usize {
        let mut agents = self.agents.lock().await.clone();
        if let Some(hosts) = among {
            agents.retain(|a| hosts.contains(&a.host.to_string()));
        }
        if agents.is_empty() {
            return 0;
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec.max(0.1)));
        for _ in 0..n {
            tick.tick().await;
            let i = rand::thread_rng().gen_range(0..agents.len());
            agents[i]
                .progress(&JobId::generate(), crate::now_ms() - 1_000, 0.5)
                .await;
        }
        n
    }
}
