//! The control plane: the one writer of hosts, enrollment, repositories,
//! credentials, schedules, jobs and repository state, and the credential
//! authority. It talks to agents and the web service only over the bus.
//!
//! - [`api`]: service request/reply bodies (`rm.svc.controlplane.*`), the
//!   `rm-cp-api` crate re-exported (the web role links that, not this).
//! - `svc`: the service router (`replies`: replies kept by idempotency
//!   key for retries); `enroll`, `repos`, `schedules`, `jobs`:
//!   the services.
//! - `ingest`: hello, heartbeats, goodbye, job `started`/`done` and logs;
//!   `beats`: heartbeats kept in memory and flushed periodically.
//! - The writer task (`rm_store::writer`, `Cp::writer`): every write of
//!   the role queues there (operators' in its first lane, `Cp::write_first`)
//!   and shares one transaction per batch on the store's one write
//!   connection; reads use the store's read-only pool. Only the start-up
//!   release of earlier claims runs before it exists.
//! - `dispatch`: queued jobs and config pushes out to agents.
//! - `sweeper`: offline detection, retention and the health refresh;
//!   `delivery`: how far behind heartbeat delivery runs (offline waits that
//!   much longer);
//!   `deadlines`: every job reaches a terminal state.
//! - [`secrets`]: the master key for secrets at rest.
//! - `metrics`: counters of loop errors and shed load.
//! - [`recovery`]: the recovery kit (master key plus the control-plane
//!   backup repository's credentials), `rm_store::recovery` re-exported.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, Event};
use nkeys::XKey;
use rm_bus::clock::SharedClock;
use rm_bus::connect::{ConnectSpec, connect};
use rm_bus::msg::{EventMsg, PROTOCOL_VERSION, encode};
use rm_bus::reqack::RetryPolicy;
use rm_bus::subject::Event as Evt;
use rm_bus_server::creds::{Authority, Role};
use rm_store::Store;
use tokio::sync::Notify;

pub use rm_cp_api as api;
mod audit;
mod awaited;
mod beats;
mod committed;
mod deadlines;
mod delivery;
mod dispatch;
mod enroll;
mod health;
mod ingest;
mod jobs;
mod metrics;
pub use rm_store::recovery;
mod replies;
mod repo_admin;
mod repos;
mod resync;
mod schedules;
pub mod secrets;
mod settle;
mod svc;
mod sweeper;
mod tags;

/// Every interval and limit; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timings {
    /// The agents' heartbeat interval.
    pub heartbeat: Duration,
    /// Heartbeats missed before a host is offline.
    pub offline_after_missed: u32,
    /// How long an active job may be unknown to its agent before it is lost.
    pub lost_grace: Duration,
    /// The deadline sweeper's grace: an active job with no result this long
    /// past its timeout ends `lost`; a cancelled job whose host has been
    /// silent this long ends `cancelled`.
    pub job_deadline_grace: Duration,
    /// The first wait before a dispatch the agent refused for now is sent
    /// again; it doubles with every refusal ...
    pub requeue_backoff: Duration,
    /// ... up to this.
    pub requeue_backoff_max: Duration,
    /// A config push an agent did not confirm is tried again after this
    /// (by the resync sweep, each sweeper tick), doubling per failure ...
    pub resync_first: Duration,
    /// ... up to this.
    pub resync_max: Duration,
    /// Sending a dispatch or cancel to an agent.
    pub dispatch: RetryPolicy,
    /// Pushing a changed config to an agent (hello re-syncs on failure).
    pub config_push: RetryPolicy,
    /// How often the dispatcher looks for jobs whose way became clear.
    pub dispatch_every: Duration,
    /// Ingest batching: results are applied this many at a time (a part:
    /// their shared work written once), and the role's writer task puts at
    /// most this many writes in one transaction ...
    ///
    /// 1,024 by default: an operator's write that comes while results are
    /// written waits for the part in progress and the commit (about half a
    /// second at 1,024 results on a 2-core machine).
    pub ingest_batch: usize,
    /// ... and a commit holds at most this many results (several parts)
    /// while no operator's write waits, for at most `ingest_parts_budget`
    /// of applying ...
    ///
    /// 4,096 by default: a commit writes every page its results touched
    /// once, and results of one commit share leaves of the same indexes
    /// (the active jobs', the finished-time ones), so larger commits write
    /// fewer pages per result (13.6 at 1,024, 10.3 at 4,096,
    /// docs/benchmarks.md, stop 59). Measured in the whole system (stop
    /// 60): a burst's commits took a second less, its applying as much
    /// longer (the write cache spills a large commit's pages), so the
    /// writer's time did not fall. A light trickle still commits at once,
    /// in small batches.
    pub ingest_commit_results: usize,
    /// ... and takes no further part once its parts have taken this long
    /// (2 s). With nobody waiting, a burst's 4,096 results (four parts)
    /// take about this long on a 2-core machine; on a slower one the
    /// transaction ends sooner, so the writes queued behind it in the
    /// ordinary lane (hellos, which wait at most 8 s) and the first
    /// results' acks (their agents wait 10 s a try) wait at most this and
    /// one part more. Not an option (tests shorten it) ...
    pub ingest_parts_budget: Duration,
    /// ... waiting at most this long for more to arrive.
    pub ingest_linger: Duration,
    /// Most results waiting for the writer (`crate::awaited`); at the cap
    /// the oldest is dropped unanswered for the newcomer and its agent
    /// sends it again. 32,768: a 19,000-agent fleet's burst of results at
    /// once (18,900) overran 16,384, and the 1,034–1,588 results dropped
    /// waited for their agents' next try, 10 s later (docs/benchmarks.md,
    /// stop 58). Each waiting result holds its message (about a
    /// kilobyte for a backup's `done`).
    pub ingest_queue: usize,
    /// A result (`started`, `done`, part, claim) that waited this long for
    /// the writer is dropped unanswered (`results_expired`); the agent
    /// keeps it in its outbox and sends it again. 60 s: longer than the
    /// agent waits for its acknowledgement (10 s a try), because a result
    /// written after its agent stopped waiting is not work lost: writing
    /// it is what the agent's next try needs, and that try is answered
    /// from memory (`crate::committed`). Dropped at 8 s (before stop 58),
    /// a 19,000-result burst whose writing took 8–12 s had its oldest
    /// results written only after their second tries, 10 s after the
    /// first (docs/benchmarks.md, stops 57 and 58). Shorter than the two
    /// minutes a responder may answer within on the bus (nats-server
    /// refuses a later reply).
    pub result_max_wait: Duration,
    /// Once the oldest waiting result waited this long the writer is
    /// behind and takes the newest first (`results_newest_first`); at
    /// `result_max_wait` or more, always the oldest first.
    pub result_newest_first: Duration,
    /// Writes waiting for the writer task, in each of its two lanes
    /// (operators' and the rest).
    pub writer_queue: usize,
    /// How often heartbeats kept in memory are written (last-seen lags by
    /// at most this; offline detection reads the memory, not the row).
    /// Never longer than two heartbeat intervals.
    pub seen_flush: Duration,
    /// Most heartbeat rows in one write of a flush: hellos and results
    /// queued meanwhile are written between the parts. The rows come in
    /// table order, so the parts together touch each page once (in hash
    /// order, parts of 1,000 at 50,000 hosts wrote ten times the WAL of
    /// one write and made result bursts a third as fast,
    /// docs/benchmarks.md, stop 30).
    pub flush_rows_per_write: usize,
    /// Most hellos handled at once (a reconnect storm waits, one hello
    /// per host).
    pub hello_concurrency: usize,
    /// A hello that waited this long for a handler is dropped unanswered
    /// (`hellos_expired`): below the agent's wait for an answer (10 s per
    /// attempt), so what is answered is still awaited.
    pub hello_max_wait: Duration,
    /// Once the oldest waiting hello waited this long the handlers are
    /// behind and take the newest first (`hellos_newest_first`), so what
    /// they answer in a storm is still awaited; at `hello_max_wait` or
    /// more, always the oldest first.
    pub hello_newest_first: Duration,
    /// Service requests (from the web role) handled at once.
    pub svc_concurrency: usize,
    /// How long a query to an agent (`ls`, snapshots) waits for its answer.
    pub query_timeout: Duration,
    /// The restic timeout of a system health refresh (snapshots, stats).
    pub refresh_timeout: Duration,
    /// Connection events kept for the control plane while it is behind.
    pub events_capacity: usize,
    /// Messages each bus subscription holds while ingest is behind. At
    /// 100,000 agents async-nats' 65,536 was ten seconds of heartbeats: a
    /// bus node that stalled that long handed over its backlog at once and
    /// the client dropped beats (false offline; docs/benchmarks.md, stop
    /// 33). Memory is taken only while the buffer fills.
    pub subscription_capacity: usize,
    /// Enrollment token lifetime.
    pub token_ttl: Duration,
    /// Stored log lines per job.
    pub log_cap: i64,
    pub retention: rm_store::retention::Retention,
    pub retention_every: Duration,
    /// A repository's full refresh (snapshot list, both stats modes,
    /// locks) is queued at most this often by the periodic sweep (besides
    /// after a forget, prune or check, and when an operator asks).
    pub health_every: Duration,
    /// At most this many repositories' periodic refreshes are queued per
    /// sweeper tick (oldest due first; the rest at later ticks).
    pub health_refresh_per_tick: usize,
    /// Default restic timeout of a job.
    pub default_job_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            offline_after_missed: 3,
            lost_grace: Duration::from_secs(120),
            job_deadline_grace: Duration::from_secs(15 * 60),
            requeue_backoff: Duration::from_secs(30),
            requeue_backoff_max: Duration::from_secs(15 * 60),
            resync_first: Duration::from_secs(30),
            resync_max: Duration::from_secs(15 * 60),
            dispatch: RetryPolicy {
                attempt_timeout: Duration::from_secs(5),
                deadline: Some(Duration::from_secs(20)),
                ..RetryPolicy::default()
            },
            config_push: RetryPolicy {
                attempt_timeout: Duration::from_secs(5),
                deadline: Some(Duration::from_secs(10)),
                ..RetryPolicy::default()
            },
            dispatch_every: Duration::from_secs(10),
            ingest_batch: 1024,
            ingest_commit_results: 4096,
            ingest_parts_budget: Duration::from_secs(2),
            ingest_linger: Duration::from_millis(20),
            ingest_queue: 32_768,
            result_max_wait: Duration::from_secs(60),
            result_newest_first: Duration::from_secs(2),
            writer_queue: 4096,
            seen_flush: Duration::from_secs(30),
            flush_rows_per_write: 5000,
            hello_concurrency: 32,
            hello_max_wait: Duration::from_secs(8),
            hello_newest_first: Duration::from_secs(1),
            svc_concurrency: 64,
            query_timeout: Duration::from_secs(120),
            refresh_timeout: Duration::from_secs(3600),
            events_capacity: rm_bus::connect::EVENTS_CAPACITY,
            subscription_capacity: 262_144,
            token_ttl: Duration::from_secs(24 * 3600),
            log_cap: 10_000,
            retention: rm_store::retention::Retention::default(),
            retention_every: Duration::from_secs(3600),
            health_every: Duration::from_secs(6 * 3600),
            health_refresh_per_tick: 256,
            default_job_timeout: Duration::from_secs(12 * 3600),
        }
    }
}

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Master key, control-plane xkey, and the database by default.
    pub data_dir: PathBuf,
    /// The SQLite file (default `<data_dir>/restic-manager.db`).
    pub db_path: Option<PathBuf>,
    /// Where the control plane connects.
    pub bus_urls: Vec<String>,
    /// What agents are told to connect to.
    pub agent_bus_urls: Vec<String>,
    /// The credential authority (operator/account keys).
    pub authority: Arc<Authority>,
    /// The web service's URL, for the enrollment command.
    pub server_url: String,
    /// SHA-256 fingerprint of the web service's TLS certificate.
    pub server_fingerprint: Option<String>,
    pub timings: Timings,
    pub clock: SharedClock,
}

/// State shared by the control plane's tasks.
pub(crate) struct Cp {
    pub store: Store,
    pub client: Client,
    /// The connection operators' service requests arrive on and are
    /// answered on (see `run`).
    pub svc_client: Client,
    pub system: Client,
    pub authority: Arc<Authority>,
    pub master: secrets::MasterKey,
    pub xkey: XKey,
    pub clock: SharedClock,
    pub t: Timings,
    pub server_url: String,
    pub server_fingerprint: Option<String>,
    /// The CA agents verify the bus against (see [`bus_ca_pem`]).
    pub bus_ca_pem: Option<String>,
    pub agent_bus_urls: Vec<String>,
    /// Wakes the dispatcher (a job was queued or a host said hello).
    pub dispatch_wake: Notify,
    /// Jobs each agent last said it holds (accepted or running).
    pub agent_jobs: Mutex<HashMap<String, HashSet<String>>>,
    /// Where each dispatched job fell in its agent's order of accepts (from
    /// the dispatch ack): a hello composed before that says nothing of it.
    pub accept_marks: Mutex<HashMap<String, rm_bus::msg::AcceptMark>>,
    /// Hosts a dispatch task is running for.
    /// Hosts with a dispatch pass under way, and whether another pass
    /// was asked for meanwhile (it runs as soon as this one ends).
    pub dispatching: Mutex<std::collections::HashMap<String, bool>>,
    /// Since when heartbeats can reach the control plane: set once ingest
    /// has subscribed, reset on every reconnect, cleared on disconnect.
    pub connected_since: Mutex<Option<tokio::time::Instant>>,
    /// Loop errors survived and load shed.
    pub metrics: metrics::Metrics,
    /// Config versions agents report, and per-host resync backoff.
    pub resync: resync::Resync,
    /// The role's writer task: every write of the role, batched.
    pub writer: rm_store::writer::Writer,
    /// Heartbeats in memory, flushed periodically.
    pub beats: beats::Liveness,
}

/// An operator's write taking this long or longer, from being queued to its
/// commit, is logged at WARN with where the time went.
const SLOW_WRITE: Duration = Duration::from_secs(1);

/// When a queued write began, and when it was applied.
type WriteMarks = Arc<Mutex<Option<(std::time::Instant, std::time::Instant)>>>;

/// `f`, noting in `marks` when the writer task began it (after the batch
/// being written when it was queued, and its transaction's `BEGIN`) and
/// when it was applied (its commit comes after).
fn timed<R, F>(
    f: F,
    marks: WriteMarks,
) -> impl for<'c> FnOnce(&'c mut rm_store::Conn) -> rm_store::writer::WriteFuture<'c, R, svc::Fail>
+ Send
+ 'static
where
    F: for<'c> FnOnce(&'c mut rm_store::Conn) -> rm_store::writer::WriteFuture<'c, R, svc::Fail>
        + Send
        + 'static,
    R: Send + 'static,
{
    move |tx| {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let out = f(tx).await;
            *lock(&marks) = Some((started, std::time::Instant::now()));
            out
        })
    }
}

impl Cp {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// An operator's write (a service request): `f` runs in the writer
    /// task's first lane, ahead of pending batches of results, in its own
    /// savepoint (an error rolls back only its changes). Its result after
    /// commit. `f` must not queue another write (it would wait for itself).
    pub async fn write_first<R, F>(&self, f: F) -> svc::Outcome<R>
    where
        F: for<'c> FnOnce(
                &'c mut rm_store::Conn,
            ) -> rm_store::writer::WriteFuture<'c, R, svc::Fail>
            + Send
            + 'static,
        R: Send + 'static,
    {
        let asked = std::time::Instant::now();
        let ran = Arc::new(Mutex::new(None));
        let out = self.writer.run_first(timed(f, ran.clone())).await;
        let ran = *lock(&ran);
        if let Some((started, applied)) = ran {
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let phases = (
                started.saturating_duration_since(asked),
                applied.saturating_duration_since(started),
                applied.elapsed(),
            );
            if phases.0 + phases.1 + phases.2 >= SLOW_WRITE {
                tracing::warn!(
                    queued_ms = ms(phases.0),
                    applied_ms = ms(phases.1),
                    committed_ms = ms(phases.2),
                    "slow operator write"
                );
            }
        }
        out
    }

    /// Publishes an event; call only after the write it describes committed.
    /// Events only wake consumers: losing one is harmless.
    pub async fn event(&self, e: Evt, host: Option<&str>, job: Option<&str>, id: Option<&str>) {
        self.publish_event(e, host, job, id, None).await;
    }

    /// Publishes a job's event naming its repository (`repo`, if the job
    /// runs against one), so a repository's page can take only its own
    /// jobs' events; call only after the write it describes committed.
    pub async fn job_event(&self, e: Evt, host: &str, job: &str, repo: Option<&str>) {
        self.publish_event(e, Some(host), Some(job), None, repo)
            .await;
    }

    async fn publish_event(
        &self,
        e: Evt,
        host: Option<&str>,
        job: Option<&str>,
        id: Option<&str>,
        repo: Option<&str>,
    ) {
        let msg = EventMsg {
            v: PROTOCOL_VERSION,
            ts_ms: self.now(),
            host: host.and_then(|h| rm_bus::HostId::parse(h).ok()),
            job: job.and_then(|j| rm_bus::JobId::parse(j).ok()),
            id: id.map(str::to_owned),
            repo: repo.map(str::to_owned),
        };
        if let Err(err) = self.client.publish(e.subject(), encode(&msg)).await {
            tracing::warn!(event = %e.subject(), error = %err, "event not published");
        }
    }
}

/// The file whose CA agents are given at enrollment to verify `tls://`
/// bus servers, if the operator's bus certificate is not issued by the
/// installation's CA: `<data_dir>/ca/agent-bus-ca.pem`.
pub const AGENT_BUS_CA: &str = "agent-bus-ca.pem";

/// The CA (PEM) agents get at enrollment: `<data_dir>/ca/agent-bus-ca.pem`
/// when the operator put one there, else the installation's CA
/// certificate, else none (an installation without a CA yet).
pub fn bus_ca_pem(data_dir: &std::path::Path) -> Result<Option<String>> {
    let dir = rm_bus_server::pki::ca::dir_of(data_dir);
    for name in [AGENT_BUS_CA, rm_bus_server::pki::ca::CA_CERT] {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                rm_bus::pki::verify::first_cert(pem.as_bytes())
                    .with_context(|| format!("{} holds no certificate", path.display()))?;
                return Ok(Some(pem));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(None)
}

/// Runs the control plane until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    #[cfg(unix)]
    {
        // keys, the master key and the database: owner only
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", config.data_dir.display()))?;
    }
    let db = config
        .db_path
        .clone()
        .unwrap_or_else(|| config.data_dir.join("restic-manager.db"));
    let store = Store::open_shared(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    {
        // No dispatch of an earlier process is in flight any more.
        let mut tx = store.write().await?;
        let n = rm_store::jobs::release_all_claims(&mut tx).await?;
        // the web role's repository pages say when the next periodic
        // refresh falls, from this process's period
        rm_store::refresh::publish_period(
            &mut tx,
            i64::try_from(config.timings.health_every.as_millis()).unwrap_or(i64::MAX),
            config.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        if n > 0 {
            tracing::info!(claims = n, "released repository claims of an earlier run");
        }
    }
    let master = secrets::MasterKey::load_or_create(&config.data_dir)?;
    let xkey = rm_bus::seal::load_or_create_xkey(&config.data_dir.join("controlplane.xk"))?;

    let role = Role::Controlplane;
    let creds = config
        .authority
        .mint_new_user(&role.name(), role.permissions())?;
    let mut spec = ConnectSpec::new(
        config.bus_urls.first().cloned().unwrap_or_default(),
        creds,
        &role,
    );
    spec.urls = config.bus_urls.clone();
    // `--nats-url` in order of preference: the first node that takes the
    // connection (not a random one), for all three connections (this, the
    // service one below, the system one)
    spec.retain_order = true;
    spec.retry_on_initial_connect = true;
    spec.events_capacity = config.timings.events_capacity;
    spec.subscription_capacity = Some(config.timings.subscription_capacity);
    // the bus is trusted as agents trust it
    let bus_ca = bus_ca_pem(&config.data_dir)?;
    spec.tls_ca_pem = bus_ca.clone();
    let (client, mut events) = connect(&spec).await?;
    // Operators' requests on a connection of their own, on the same node:
    // on the fleet's connection a request waited behind heartbeats and
    // results in one TCP stream, and its reply behind acknowledgements (at
    // 100,000 agents for seconds, stop 52). It tries the URLs in their
    // order as the fleet connection does (`retain_order` above), so both
    // meet on the first node that takes them. Its events are logged by `connect`; a lost
    // connection shows in the operators' requests.
    let mut svc_spec = spec.clone();
    svc_spec.name = format!("{}-svc", spec.name);
    svc_spec.subscription_capacity = None;
    let (svc_client, _) = connect(&svc_spec).await?;

    let sys_creds = config.authority.system_user()?;
    let mut sys_spec = ConnectSpec::new(String::new(), sys_creds, &role);
    sys_spec.urls = config.bus_urls.clone();
    sys_spec.inbox_prefix = "_INBOX".into();
    sys_spec.name = "controlplane-system".into();
    sys_spec.retry_on_initial_connect = true;
    // `--nats-url` in its order, as the other two
    sys_spec.retain_order = true;
    sys_spec.tls_ca_pem = bus_ca.clone();
    // Its connection events are logged by `connect`; nobody reads them.
    let (system, _) = connect(&sys_spec).await?;

    let writer = rm_store::writer::Writer::spawn(
        store.clone(),
        config.timings.ingest_batch,
        config.timings.writer_queue,
    );
    let cp = Arc::new(Cp {
        writer,
        beats: beats::Liveness::default(),
        store,
        client,
        svc_client,
        system,
        authority: config.authority.clone(),
        master,
        xkey,
        clock: config.clock.clone(),
        t: config.timings.clone(),
        server_url: config.server_url.clone(),
        server_fingerprint: config.server_fingerprint.clone(),
        bus_ca_pem: bus_ca,
        agent_bus_urls: config.agent_bus_urls.clone(),
        dispatch_wake: Notify::new(),
        agent_jobs: Mutex::new(HashMap::new()),
        accept_marks: Mutex::new(HashMap::new()),
        dispatching: Mutex::new(std::collections::HashMap::new()),
        // set by ingest once its subscriptions are live (and on reconnects)
        connected_since: Mutex::new(None),
        metrics: metrics::Metrics::default(),
        resync: resync::Resync::default(),
    });

    // Track (re)connects: the offline sweeper waits after each one.
    let cp_events = cp.clone();
    let conn_watch = async move {
        let mut lost = false;
        while let Some(e) = events.recv().await {
            match e {
                Event::Connected => {
                    *lock(&cp_events.connected_since) = Some(tokio::time::Instant::now());
                    if std::mem::take(&mut lost) {
                        cp_events.metrics.bus_reconnected();
                    }
                }
                Event::Disconnected => {
                    *lock(&cp_events.connected_since) = None;
                    lost = true;
                }
                Event::SlowConsumer(_) => cp_events.metrics.slow_consumer(),
                _ => {}
            }
        }
        Ok::<(), anyhow::Error>(())
    };

    tracing::info!(db = %db.display(), "control plane running");
    let result = tokio::select! {
        r = svc::serve(cp.clone()) => r.context("service handler stopped"),
        r = ingest::serve(cp.clone()) => r.context("ingest stopped"),
        r = dispatch::serve(cp.clone()) => r.context("dispatcher stopped"),
        r = sweeper::serve(cp.clone()) => r.context("sweeper stopped"),
        // a newer build of another role migrated the database: stop
        e = cp.store.schema_overtaken(cp.t.heartbeat) => Err(e.into()),
        r = conn_watch => r,
        () = shutdown => {
            tracing::info!("control plane shutting down");
            Ok(())
        }
    };
    // Every write already queued is applied and its caller answered (a
    // later one hears `NotCommitted`): nothing accepted is lost.
    cp.writer.shutdown().await;
    let _ = cp.client.flush().await;
    let _ = cp.svc_client.flush().await;
    cp.store.close_shared().await;
    result
}

/// Locks a std mutex, recovering from poisoning (plain data inside).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    #[tokio::test]
    async fn a_timed_write_keeps_its_outcome_and_marks_when_it_began_and_was_applied() {
        let mut conn = rm_store::Conn::connect("sqlite::memory:")
            .await
            .expect("an in-memory database");
        let marks: WriteMarks = Arc::default();
        let queued = std::time::Instant::now();
        let write = timed(
            |_tx| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, svc::Fail>(7)
                })
            },
            marks.clone(),
        );
        assert_eq!(write(&mut conn).await.expect("the write's own value"), 7);
        let (began, applied) = marks.lock().unwrap().expect("marked once it ran");
        assert!(began >= queued);
        assert!(applied.duration_since(began) >= Duration::from_millis(20));

        // a failing write still fails, and is marked too
        let failed: WriteMarks = Arc::default();
        let write = timed(
            |_tx| Box::pin(async { Err::<(), _>(svc::Fail::conflict("taken")) }),
            failed.clone(),
        );
        let e = write(&mut conn).await.expect_err("the write's own error");
        assert_eq!(e.code, "conflict");
        assert!(failed.lock().unwrap().is_some());
    }
}
