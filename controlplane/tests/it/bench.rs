//! The durable result-ingest benchmark (ignored: run by hand, never in CI;
//! figures go to `docs/benchmarks.md`). Agents send `done` for backup jobs
//! that are running (spread over a few repositories whose snapshot count
//! is known, so each result also updates the snapshot cache and repository
//! health, as at fleet scale); each ack means the result is committed.
//! Reports results acknowledged per second, how the acks' latency compares
//! with the agent's 10 s attempt timeout, how many `done` messages the
//! bus carried (re-sends included), and the writer's transactions.
//! `RM_BENCH_COUNT_SQL=1` also counts SQL statements and their time (a
//! tracing layer on `sqlx::query`: it slows the run, so rates measured
//! with it are not comparable). Agents enroll 8 at a time, retrying their
//! connection (set-up, not measured).
//!
//! ```sh
//! RM_BENCH_AGENTS=50 RM_BENCH_RESULTS=40 RM_TEST_BUS=embedded \
//!   cargo nextest run -p rm-controlplane --run-ignored only bench_ --no-capture
//! # the burst of a large fleet: every agent's `done` at once
//! RM_BENCH_AGENTS=2000 RM_BENCH_RESULTS=2 ...
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rm_bus::JobId;
use rm_bus::creds::Role;
use rm_bus::msg::JobOutcome;
use rm_controlplane::api;
use rm_store::jobs::{JobStatus, NewJob};
use rm_testkit::TestBus;

use crate::support::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The agent's own attempt timeout for results (`rm_agent::Timings`).
const AGENT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts `sqlx::query` events (one per statement) and sums their time.
#[derive(Default)]
struct SqlCount {
    statements: AtomicU64,
    micros: AtomicU64,
}

struct SqlLayer(Arc<SqlCount>);

struct Elapsed(f64);

impl tracing::field::Visit for Elapsed {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.0 = value;
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SqlLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut e = Elapsed(0.0);
            event.record(&mut e);
            self.0.statements.fetch_add(1, Ordering::Relaxed);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            self.0
                .micros
                .fetch_add((e.0 * 1e6) as u64, Ordering::Relaxed);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, figures in docs/benchmarks.md"]
async fn bench_durable_result_ingest_rate() {
    let agents_n = env_usize("RM_BENCH_AGENTS", 50);
    let per_agent = env_usize("RM_BENCH_RESULTS", 40);
    let repos_n = env_usize("RM_BENCH_REPOS", 4).max(1);
    let sql = Arc::new(SqlCount::default());
    if std::env::var("RM_BENCH_COUNT_SQL").is_ok_and(|v| v == "1") {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(SqlLayer(sql.clone()));
        tracing::subscriber::set_global_default(sub).unwrap();
    }
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    // enrolled a few at a time (set-up, not measured)
    let agents: Vec<Agent> = futures_util::stream::iter(0..agents_n)
        .map(|i| {
            let (bus, cp) = (&bus, &cp);
            async move { enroll_patiently(bus, cp, &format!("bench-{i}")).await }
        })
        .buffered(8)
        .collect()
        .await;
    let mut repos = Vec::new();
    for i in 0..repos_n {
        repos.push(repo_with(&cp, &format!("bench-repo-{i}"), "pw", &[], &[]).await);
    }
    // Running jobs the agents will report on, written straight to the store;
    // each repository's snapshot count is known (listed once).
    let db = cp.db().await;
    let mut jobs: Vec<Vec<JobId>> = Vec::new();
    {
        let mut tx = db.write().await.unwrap();
        for r in &repos {
            rm_store::health::mark_listed(&mut tx, r, 1_000)
                .await
                .unwrap();
        }
        for (n, a) in agents.iter().enumerate() {
            let mut mine = Vec::new();
            for _ in 0..per_agent {
                let id = JobId::generate();
                rm_store::jobs::insert(
                    &mut tx,
                    &NewJob {
                        id: id.as_str(),
                        host_id: &a.host_id(),
                        exec_host_id: &a.host_id(),
                        repo_id: Some(&repos[n % repos.len()]),
                        params: &backup_params(),
                        origin: "operator",
                        schedule_id: None,
                        status: JobStatus::Running,
                        timeout_secs: 3600,
                        created_by: "bench",
                        created_at: 1_000,
                        started_at: Some(1_000),
                    },
                )
                .await
                .unwrap();
                mine.push(id);
            }
            jobs.push(mine);
        }
        tx.commit().await.unwrap();
    }
    // Every `done` the bus carries, re-sends included.
    let watcher = bus.connect_role(Role::Web).await.unwrap();
    let mut dones = watcher
        .client
        .subscribe(rm_bus::subject::agent_any_job(
            rm_bus::subject::JobTopic::Done,
        ))
        .await
        .unwrap();
    watcher.client.flush().await.unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let watch = tokio::spawn(async move {
        while dones.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let m0: api::Metrics = cp.call(api::METRICS, serde_json::json!({})).await;
    let sql0 = (
        sql.statements.load(Ordering::Relaxed),
        sql.micros.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (a, mine) in agents.iter().zip(jobs) {
        let client = a.client.client.clone();
        let host = a.host.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for id in mine {
                let t = Instant::now();
                // each backup made its own snapshot
                let mut done = done_msg(&id, JobOutcome::Succeeded);
                done.summary =
                    Some(serde_json::json!({"snapshot_id": id.to_string(), "files_new": 3}));
                let ack = send_done_as(&client, &host, &done).await;
                lat.push(t.elapsed());
                assert!(ack.ok, "acknowledged: {ack:?}");
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    let sql1 = (
        sql.statements.load(Ordering::Relaxed),
        sql.micros.load(Ordering::Relaxed),
    );
    let m1: api::Metrics = cp.call(api::METRICS, serde_json::json!({})).await;
    let total = agents_n * per_agent;
    // every result is stored as succeeded
    {
        let mut c = db.read().await.unwrap();
        let stored: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded' AND created_by = 'bench'",
        )
        .fetch_one(&mut *c)
        .await
        .unwrap();
        assert_eq!(usize::try_from(stored).unwrap(), total, "nothing lost");
    }
    lat.sort();
    let late = lat.iter().filter(|d| **d > AGENT_ATTEMPT_TIMEOUT).count();
    let carried = seen.load(Ordering::Relaxed);
    watch.abort();
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / took.as_secs_f64();
    let batches = m1.write_batches - m0.write_batches;
    let writes = m1.writes_committed - m0.writes_committed;
    println!(
        "BENCH durable result ingest: {total} results from {agents_n} agents in {:.2} s = {rate:.0} results/s",
        took.as_secs_f64()
    );
    println!(
        "BENCH ack latency p50 {:?} p99 {:?} max {:?}; {late} acks later than the agent's {AGENT_ATTEMPT_TIMEOUT:?} attempt timeout",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
    #[allow(clippy::cast_precision_loss)]
    let per = |n: u64| n as f64 / total as f64;
    println!(
        "BENCH done messages on the bus: {carried} ({:.2} per result); writer: {batches} transactions, {writes} writes ({:.3} transactions per result)",
        per(carried),
        per(batches)
    );
    if sql1.0 > sql0.0 {
        println!(
            "BENCH SQL: {} statements ({:.1} per result), {:.2} s inside statements ({:.0} us per result)",
            sql1.0 - sql0.0,
            per(sql1.0 - sql0.0),
            (sql1.1 - sql0.1) as f64 / 1e6,
            per(sql1.1 - sql0.1),
        );
    }
}

/// [`Agent::enroll`], retrying the connection: on a loaded machine many
/// connections at once run into the bus's authentication timeout.
async fn enroll_patiently(bus: &TestBus, cp: &Cp, name: &str) -> Agent {
    let added = cp.host_add(name).await;
    let nkey = nkeys::KeyPair::new_user();
    let xkey = nkeys::XKey::new();
    let reply = cp
        .enroll_call(enroll_request(&added.token, &nkey, &xkey, name))
        .await;
    let mut tries = 0;
    loop {
        let (n, x) = (
            nkeys::KeyPair::from_seed(&nkey.seed().unwrap()).unwrap(),
            nkeys::XKey::from_seed(&xkey.seed().unwrap()).unwrap(),
        );
        match Agent::connect(bus, reply.clone(), n, x, name).await {
            Ok(a) => return a,
            Err(e) if tries < 10 => {
                tries += 1;
                eprintln!("bench: {name} not connected ({e:#}); again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{name} not connected: {e:#}"),
        }
    }
}

/// Sends one `done` and waits for its ack (after commit), as the agent's
/// outbox does (its attempt timeout).
async fn send_done_as(
    client: &async_nats::Client,
    host: &rm_bus::HostId,
    done: &rm_bus::msg::JobDone,
) -> rm_bus::msg::Ack {
    let subj = rm_bus::subject::agent_job(host, &done.job_id, rm_bus::subject::JobTopic::Done);
    let policy = rm_bus::reqack::RetryPolicy {
        deadline: Some(Duration::from_secs(120)),
        initial_backoff: Duration::from_millis(500),
        attempt_timeout: AGENT_ATTEMPT_TIMEOUT,
        ..rm_bus::reqack::RetryPolicy::default()
    };
    rm_bus::reqack::request_ack(
        client,
        &subj,
        &rm_bus::reqack::IdempotencyKey::job_phase(&done.job_id, rm_bus::subject::JobTopic::Done),
        rm_bus::msg::encode(done),
        &policy,
    )
    .await
    .expect("acknowledged")
}
