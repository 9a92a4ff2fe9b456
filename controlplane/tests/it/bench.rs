//! The durable result-ingest benchmark (ignored: run by hand, never in CI;
//! figures go to `docs/benchmarks.md`). Agents send `done` for jobs that
//! are running; each ack means the result is committed. Reports results
//! acknowledged per second.
//!
//! ```sh
//! RM_BENCH_AGENTS=50 RM_BENCH_RESULTS=40 RM_TEST_BUS=embedded \
//!   cargo nextest run -p rm-controlplane --run-ignored only bench_ --no-capture
//! ```

use std::time::{Duration, Instant};

use rm_bus::JobId;
use rm_bus::msg::JobOutcome;
use rm_store::jobs::{JobStatus, NewJob};
use rm_testkit::TestBus;

use crate::support::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, figures in docs/benchmarks.md"]
async fn bench_durable_result_ingest_rate() {
    let agents_n = env_usize("RM_BENCH_AGENTS", 50);
    let per_agent = env_usize("RM_BENCH_RESULTS", 40);
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 0..agents_n {
        agents.push(
            Agent::enroll(&bus, &cp, &format!("bench-{i}"))
                .await
                .unwrap(),
        );
    }
    // Running jobs the agents will report on, written straight to the store.
    let db = cp.db().await;
    let mut jobs: Vec<Vec<JobId>> = Vec::new();
    {
        let mut tx = db.write().await.unwrap();
        for a in &agents {
            let mut mine = Vec::new();
            for _ in 0..per_agent {
                let id = JobId::generate();
                rm_store::jobs::insert(
                    &mut tx,
                    &NewJob {
                        id: id.as_str(),
                        host_id: &a.host_id(),
                        exec_host_id: &a.host_id(),
                        repo_id: None,
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
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (a, mine) in agents.iter().zip(jobs) {
        let client = a.client.client.clone();
        let host = a.host.clone();
        tasks.push(tokio::spawn(async move {
            for id in mine {
                let ack = send_done_as(&client, &host, &done_msg(&id, JobOutcome::Succeeded)).await;
                assert!(ack.ok, "acknowledged: {ack:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let total = agents_n * per_agent;
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "BENCH durable result ingest: {total} results from {agents_n} agents in {:.2} s = {rate:.0} results/s",
        took.as_secs_f64()
    );
}

/// Sends one `done` and waits for its ack (after commit), as the agent's
/// outbox does.
async fn send_done_as(
    client: &async_nats::Client,
    host: &rm_bus::HostId,
    done: &rm_bus::msg::JobDone,
) -> rm_bus::msg::Ack {
    let subj = rm_bus::subject::agent_job(host, &done.job_id, rm_bus::subject::JobTopic::Done);
    let policy = rm_bus::reqack::RetryPolicy {
        deadline: Some(Duration::from_secs(60)),
        initial_backoff: Duration::from_millis(20),
        attempt_timeout: Duration::from_secs(10),
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
