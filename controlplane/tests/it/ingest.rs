//! Result ingest under a burst: a batch of results is one transaction,
//! and the work results share (each host's summary, each repository's
//! snapshot count and health row) is written once per batch, not once per
//! result; re-sends are recognised without writing anything again; a
//! result whose write fails does not hold up the rest of its batch.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::JobId;
use rm_bus::msg::{Ack, JobOutcome};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_ack};
use rm_bus::subject::{self, JobTopic};
use rm_controlplane::api;
use rm_store::jobs::{JobStatus, NewJob};
use rm_testkit::TestBus;

use crate::support::*;

/// Results in the burst (also the batch size, so the burst is one batch).
const N: usize = 40;

async fn metrics(cp: &Cp) -> api::Metrics {
    cp.call(api::METRICS, serde_json::json!({})).await
}

async fn probes(db: &rm_store::Store) -> Vec<(String, Option<String>, i64, i64)> {
    let mut c = db.read().await.unwrap();
    sqlx::query_as("SELECT * FROM probe_summary")
        .fetch_all(&mut *c)
        .await
        .unwrap()
}

async fn count(db: &rm_store::Store, sql: &'static str) -> i64 {
    let mut c = db.read().await.unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut *c).await.unwrap()
}

/// `n` running backup jobs of `agent` on `repo`, written to the store.
async fn running_backups(
    db: &rm_store::Store,
    agent: &Agent,
    repo: Option<&str>,
    n: usize,
) -> Vec<JobId> {
    // started now: the deadline sweeper leaves them alone
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut tx = db.write().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = JobId::generate();
        rm_store::jobs::insert(
            &mut tx,
            &NewJob {
                id: id.as_str(),
                host_id: &agent.host_id(),
                exec_host_id: &agent.host_id(),
                repo_id: repo,
                params: &backup_params(),
                origin: "operator",
                schedule_id: None,
                status: JobStatus::Running,
                timeout_secs: 3600,
                created_by: "test",
                created_at: now,
                started_at: Some(now),
            },
        )
        .await
        .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

fn done_of(id: &JobId, outcome: JobOutcome) -> rm_bus::msg::JobDone {
    let mut d = done_msg(id, outcome);
    d.summary = Some(serde_json::json!({"snapshot_id": id.to_string(), "files_new": 1}));
    d
}

/// Sends every `done` at once (as a fleet's agents do after a shared
/// schedule) and returns their acks, in order.
async fn burst(
    agents: &[(&Agent, Vec<rm_bus::msg::JobDone>)],
    policy: &RetryPolicy,
) -> Vec<Result<Ack, String>> {
    let mut tasks = Vec::new();
    for (a, dones) in agents {
        for d in dones {
            let (client, host, d, policy) = (
                a.client.client.clone(),
                a.host.clone(),
                d.clone(),
                policy.clone(),
            );
            tasks.push(tokio::spawn(async move {
                request_ack(
                    &client,
                    &subject::agent_job(&host, &d.job_id, JobTopic::Done),
                    &IdempotencyKey::job_phase(&d.job_id, JobTopic::Done),
                    rm_bus::msg::encode(&d),
                    &policy,
                )
                .await
                .map_err(|e| e.to_string())
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Attempts longer than the batch takes to fill: no re-send races it.
fn patient() -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_secs(60),
        deadline: Some(Duration::from_secs(120)),
        initial_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

/// Every running backup of both agents, succeeded.
fn all_succeeded<'a>(
    a: &'a Agent,
    ja: &[JobId],
    b: &'a Agent,
    jb: &[JobId],
) -> [(&'a Agent, Vec<rm_bus::msg::JobDone>); 2] {
    let done = |jobs: &[JobId]| {
        jobs.iter()
            .map(|j| done_of(j, JobOutcome::Succeeded))
            .collect()
    };
    [(a, done(ja)), (b, done(jb))]
}

/// A control plane whose result batch closes only when `n` results are
/// in (the linger never ends it), on a bus of its own.
async fn batching_at(n: usize) -> (TestBus, tempfile::TempDir, Cp) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let timings = rm_controlplane::Timings {
        ingest_batch: n,
        ingest_commit_results: n,
        ingest_linger: Duration::from_secs(60),
        ..fast_timings()
    };
    let cp = Cp::start(
        &bus,
        dir.path().into(),
        CpOptions {
            timings,
            ..CpOptions::default()
        },
    )
    .await
    .unwrap();
    (bus, dir, cp)
}

/// A control plane whose batch closes only when `N` results are in (the
/// linger never ends it), two agents, a repository whose snapshots were
/// listed once (so backups add to its count), and `N / 2` running backups
/// of each agent on it.
struct Burst {
    _bus: TestBus,
    _dir: tempfile::TempDir,
    cp: Cp,
    a: Agent,
    b: Agent,
    repo: String,
    db: rm_store::Store,
    ja: Vec<JobId>,
    jb: Vec<JobId>,
}

impl Burst {
    async fn start(name: &str) -> Self {
        let (bus, dir, cp) = batching_at(N).await;
        let a = Agent::enroll(&bus, &cp, &format!("{name}-a"))
            .await
            .unwrap();
        let b = Agent::enroll(&bus, &cp, &format!("{name}-b"))
            .await
            .unwrap();
        let repo = repo_with(&cp, name, "pw", &[], &[]).await;
        let db = cp.db().await;
        let mut tx = db.write().await.unwrap();
        rm_store::health::mark_listed(&mut tx, &repo, 1_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let ja = running_backups(&db, &a, Some(&repo), N / 2).await;
        let jb = running_backups(&db, &b, Some(&repo), N / 2).await;
        Self {
            _bus: bus,
            _dir: dir,
            cp,
            a,
            b,
            repo,
            db,
            ja,
            jb,
        }
    }
}

#[tokio::test]
async fn a_burst_of_results_is_one_transaction_that_updates_each_host_summary_once_and_writes_no_health_row()
 {
    let Burst {
        _bus,
        _dir,
        cp,
        a,
        b,
        repo,
        db,
        ja,
        jb,
    } = Burst::start("burst").await;
    // Counts every statement that writes a host's summary.
    exec(
        &db,
        "CREATE TABLE probe_summary (host TEXT, last_job TEXT, running INTEGER, failed INTEGER);
         CREATE TRIGGER probe_summary AFTER UPDATE ON host_summary
         BEGIN INSERT INTO probe_summary VALUES (NEW.host_id, NEW.last_job_id, NEW.running_jobs, NEW.failed_jobs_total); END;",
    )
    .await;
    let health_before = count(&db, "SELECT COUNT(*) FROM repo_health").await;
    let m0 = metrics(&cp).await;

    // one of host A's backups failed
    let mut da: Vec<_> = ja
        .iter()
        .map(|j| done_of(j, JobOutcome::Succeeded))
        .collect();
    da[0] = done_of(&ja[0], JobOutcome::Failed);
    let db_: Vec<_> = jb
        .iter()
        .map(|j| done_of(j, JobOutcome::Succeeded))
        .collect();
    let sent = [(&a, da), (&b, db_)];
    for ack in burst(&sent, &patient()).await {
        let ack = ack.expect("acknowledged");
        assert!(ack.ok && !ack.duplicate, "{ack:?}");
    }
    let m1 = metrics(&cp).await;
    assert_eq!(m1.ingest_results - m0.ingest_results, N as u64, "{m1:?}");
    assert_eq!(
        m1.ingest_commits - m0.ingest_commits,
        1,
        "a batch of {N} results is one transaction: {m1:?}"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE created_by = 'test' AND status IN ('succeeded', 'failed')").await,
        N as i64,
        "every result is stored"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM probe_summary").await,
        2,
        "each host's summary is written once per batch, not once per result: {m1:?} {:?}",
        probes(&db).await
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM repo_health").await,
        health_before,
        "the snapshot count is the cache's: no health row per result or batch"
    );
    {
        let mut c = db.read().await.unwrap();
        let h = rm_store::health::latest(&mut c, &repo).await.unwrap();
        assert_eq!(
            h.snapshot_count,
            Some(N as i64 - 1),
            "every successful backup's snapshot is counted"
        );
        let sa = rm_store::hosts::summary(&mut c, &a.host_id())
            .await
            .unwrap();
        assert_eq!(sa.failed_jobs_total, 1, "{sa:?}");
        assert_eq!(sa.running_jobs, 0, "{sa:?}");
        assert_eq!(sa.last_backup_success_at, Some(2_000), "{sa:?}");
        assert!(
            ja.iter()
                .any(|j| sa.last_job_id.as_deref() == Some(j.as_str())),
            "{sa:?}"
        );
        let sb = rm_store::hosts::summary(&mut c, &b.host_id())
            .await
            .unwrap();
        assert_eq!((sb.failed_jobs_total, sb.running_jobs), (0, 0), "{sb:?}");
        assert_eq!(
            sb.last_backup_status.as_deref(),
            Some("succeeded"),
            "{sb:?}"
        );
        assert!(
            jb.iter()
                .any(|j| sb.last_snapshot_id.as_deref() == Some(j.as_str())),
            "{sb:?}"
        );
    }

    // The whole burst again (every agent re-sends): recognised, nothing written.
    let again = all_succeeded(&a, &ja, &b, &jb);
    for ack in burst(&again, &patient()).await {
        let ack = ack.expect("acknowledged");
        assert!(ack.ok && ack.duplicate, "{ack:?}");
    }
    let m2 = metrics(&cp).await;
    assert_eq!(
        m2.results_acked_from_memory - m1.results_acked_from_memory,
        N as u64,
        "{m2:?}"
    );
    assert_eq!(m2.ingest_results, m1.ingest_results, "{m2:?}");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM probe_summary").await,
        2,
        "re-sends write no summary"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM repo_health").await,
        health_before,
        "re-sends write no health"
    );
}

#[tokio::test]
async fn a_result_whose_write_fails_does_not_hold_up_its_batch_and_is_stored_once_it_can_be() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let a = Agent::enroll(&bus, &cp, "one-bad").await.unwrap();
    let db = cp.db().await;
    let jobs = running_backups(&db, &a, None, N).await;
    let bad = jobs[N / 2].clone();
    // this one job's row cannot be finished (as if its page were corrupt)
    let mut c = db.pool().acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER refuse_one BEFORE UPDATE OF status ON jobs WHEN OLD.id = '{bad}'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    )))
    .execute(&mut *c)
    .await
    .unwrap();
    let m0 = metrics(&cp).await;
    // the failing one's agent keeps trying for a while, then gives up for now
    let dones: Vec<_> = jobs
        .iter()
        .map(|j| done_of(j, JobOutcome::Succeeded))
        .collect();
    let short = RetryPolicy {
        attempt_timeout: Duration::from_secs(3),
        deadline: Some(Duration::from_secs(8)),
        initial_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let acks = burst(&[(&a, dones.clone())], &short).await;
    for (d, ack) in dones.iter().zip(&acks) {
        if d.job_id == bad {
            assert!(
                ack.is_err(),
                "a result that was not stored is not acknowledged: {ack:?}"
            );
        } else {
            assert!(ack.as_ref().is_ok_and(|a| a.ok), "{ack:?}");
        }
    }
    let m1 = metrics(&cp).await;
    assert!(
        m1.ingest_results - m0.ingest_results >= N as u64 - 1,
        "{m1:?}"
    );
    assert!(
        m1.ingest_results_alone > m0.ingest_results_alone,
        "its batch was applied again one result at a time: {m1:?}"
    );
    assert_eq!(job_status(&db, bad.as_str()).await, "running");
    // the fault is gone: the agent's next attempt is stored
    sqlx::raw_sql("DROP TRIGGER refuse_one")
        .execute(&mut *c)
        .await
        .unwrap();
    let acks = burst(
        &[(&a, vec![done_of(&bad, JobOutcome::Succeeded)])],
        &patient(),
    )
    .await;
    assert!(
        acks[0].as_ref().is_ok_and(|a| a.ok && !a.duplicate),
        "{acks:?}"
    );
    assert_eq!(job_status(&db, bad.as_str()).await, "succeeded");
}

/// A batch's results cost a few statements between them, not a few each:
/// each statement is a round trip to SQLite's worker thread, and under a
/// burst those round trips, not SQLite's work, were the ingest's limit.
#[tokio::test]
async fn a_burst_of_results_reads_and_writes_in_a_few_statements_not_a_few_per_result() {
    let statements = rm_testkit::statements::Statements::install();
    let Burst {
        _bus,
        _dir,
        cp,
        a,
        b,
        repo,
        db,
        ja,
        jb,
    } = Burst::start("few").await;
    let m0 = metrics(&cp).await;
    statements.clear();
    let sent = all_succeeded(&a, &ja, &b, &jb);
    for ack in burst(&sent, &patient()).await {
        let ack = ack.expect("acknowledged");
        assert!(ack.ok && !ack.duplicate, "{ack:?}");
    }
    let m1 = metrics(&cp).await;
    assert_eq!(
        m1.ingest_commits - m0.ingest_commits,
        1,
        "one batch: {m1:?}"
    );
    let phases = statements.matching("job_ingest");
    let finishes = statements.matching("UPDATE jobs");
    let snapshots = statements.matching("INSERT INTO snapshots");
    let summaries = statements.matching("UPDATE host_summary");
    let health = statements.matching("INSERT INTO repo_health");
    // one per result before: 40 phase rows, 40 finishes, 40 snapshots
    assert!(
        (1..=2).contains(&phases),
        "phases read and written: {phases} statements"
    );
    assert_eq!(finishes, 1, "jobs finished in one statement");
    assert_eq!(snapshots, 1, "snapshots added in one statement");
    assert_eq!(summaries, 1, "both hosts' summaries in one statement");
    assert_eq!(health, 0, "no health row: the count is the cache's");
    {
        let mut c = db.read().await.unwrap();
        let h = rm_store::health::latest(&mut c, &repo).await.unwrap();
        assert_eq!(h.snapshot_count, Some(N as i64), "every snapshot counted");
        for host in [a.host_id(), b.host_id()] {
            let s = rm_store::hosts::summary(&mut c, &host).await.unwrap();
            assert_eq!((s.running_jobs, s.failed_jobs_total), (0, 0), "{s:?}");
            assert_eq!(s.last_backup_status.as_deref(), Some("succeeded"), "{s:?}");
        }
    }
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM jobs WHERE created_by = 'test' AND status = 'succeeded'"
        )
        .await,
        N as i64
    );
}

/// The same result twice in one batch (an agent re-sent it after the
/// first copy was taken, before its ack came back): applied once, the
/// second is a duplicate, and the host's failure count moves once. (A
/// copy re-sent while the first still waits replaces it: `crate::awaited`.)
#[tokio::test]
async fn a_result_sent_twice_within_one_batch_is_applied_once() {
    let (bus, _dir, cp) = batching_at(3).await;
    let a = Agent::enroll(&bus, &cp, "twice").await.unwrap();
    let db = cp.db().await;
    let jobs = running_backups(&db, &a, None, 2).await;
    let failed = done_of(&jobs[0], JobOutcome::Failed);
    let ok = done_of(&jobs[1], JobOutcome::Succeeded);
    let m0 = metrics(&cp).await;
    // the first copy in the batch that waits for a third result ...
    let first = [(&a, vec![failed.clone()])];
    let rest = [(&a, vec![failed, ok])];
    let policy = patient();
    let (mut acks, more) = tokio::join!(burst(&first, &policy), async {
        eventually("the first copy taken into the batch", || async {
            let m = metrics(&cp).await;
            (m.results_queued_total > m0.results_queued_total && m.results_waiting == 0)
                .then_some(())
        })
        .await;
        // ... then the re-send and another result
        burst(&rest, &policy).await
    });
    acks.extend(more);
    let acks: Vec<Ack> = acks.into_iter().map(|a| a.expect("acknowledged")).collect();
    assert!(acks.iter().all(|a| a.ok), "{acks:?}");
    assert_eq!(
        acks[..2].iter().filter(|a| a.duplicate).count(),
        1,
        "one of the two copies is the duplicate: {acks:?}"
    );
    assert!(!acks[2].duplicate, "{acks:?}");
    let m1 = metrics(&cp).await;
    assert_eq!(
        m1.ingest_commits - m0.ingest_commits,
        1,
        "one batch: {m1:?}"
    );
    let mut c = db.read().await.unwrap();
    let s = rm_store::hosts::summary(&mut c, &a.host_id())
        .await
        .unwrap();
    assert_eq!((s.failed_jobs_total, s.running_jobs), (1, 0), "{s:?}");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE created_by = 'test' ORDER BY id")
            .fetch_all(&mut *c)
            .await
            .unwrap();
    let mut want = [
        (jobs[0].to_string(), "failed"),
        (jobs[1].to_string(), "succeeded"),
    ];
    want.sort();
    assert_eq!(
        statuses,
        want.iter().map(|(_, s)| s.to_string()).collect::<Vec<_>>()
    );
}

/// A re-send of a result already committed (its agent missed the ack) is
/// answered as a duplicate from memory: not queued, not written. In a
/// 100,000-agent burst two of every three results the writer applied
/// were such re-sends (docs/benchmarks.md, stop 40).
#[tokio::test]
async fn a_result_sent_again_after_it_committed_is_acknowledged_from_memory_without_a_write() {
    let (bus, _dir, cp) = batching_at(1).await;
    let a = Agent::enroll(&bus, &cp, "again").await.unwrap();
    let db = cp.db().await;
    let jobs = running_backups(&db, &a, None, 1).await;
    let done = [(&a, vec![done_of(&jobs[0], JobOutcome::Succeeded)])];
    let first = burst(&done, &patient()).await;
    let first = first[0].clone().expect("acknowledged");
    assert!(first.ok && !first.duplicate, "{first:?}");
    let m0 = metrics(&cp).await;
    let again = burst(&done, &patient()).await;
    let again = again[0].clone().expect("acknowledged");
    assert!(again.ok && again.duplicate, "{again:?}");
    let m1 = metrics(&cp).await;
    assert_eq!(
        m1.results_acked_from_memory - m0.results_acked_from_memory,
        1,
        "{m1:?}"
    );
    assert_eq!(
        (
            m1.results_queued_total,
            m1.ingest_results,
            m1.ingest_commits
        ),
        (
            m0.results_queued_total,
            m0.ingest_results,
            m0.ingest_commits
        ),
        "neither queued nor written: {m1:?}"
    );
}

/// A control plane that writes results one at a time as they come
/// (`timings` with batches of one and no linger), one agent with `n`
/// running backups, and that agent's subscription to the acks of
/// [`send_done_once`]. Keep `_bus` and `_dir` bound: the bus and the data
/// directory end with them.
struct OneByOne {
    _bus: TestBus,
    _dir: tempfile::TempDir,
    cp: Cp,
    agent: Agent,
    db: rm_store::Store,
    jobs: Vec<JobId>,
    acks: async_nats::Subscriber,
}

async fn one_by_one(timings: rm_controlplane::Timings, name: &str, n: usize) -> OneByOne {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let timings = rm_controlplane::Timings {
        ingest_batch: 1,
        ingest_commit_results: 1,
        ingest_linger: Duration::ZERO,
        ..timings
    };
    let opts = CpOptions {
        timings,
        ..CpOptions::default()
    };
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let agent = Agent::enroll(&bus, &cp, name).await.unwrap();
    let db = cp.db().await;
    let jobs = running_backups(&db, &agent, None, n).await;
    let acks = agent
        .client
        .subscribe(format!("_INBOX.{}.res.>", agent.host))
        .await
        .unwrap();
    agent.client.flush().await.unwrap();
    OneByOne {
        _bus: bus,
        _dir: dir,
        cp,
        agent,
        db,
        jobs,
        acks,
    }
}

/// The next ack on `acks` (to [`send_done_once`]): the `n` it went to,
/// and the ack.
async fn next_ack(acks: &mut async_nats::Subscriber) -> (String, Ack) {
    let r = tokio::time::timeout(WAIT, acks.next())
        .await
        .expect("an ack")
        .unwrap();
    let n = r.subject.rsplit('.').next().unwrap_or_default().to_owned();
    (n, rm_bus::msg::decode("ack", &r.payload).unwrap())
}

/// `done` of `job` from `agent` whose ack goes to `_INBOX.<host>.res.<n>`
/// (one attempt, as an agent's; the test reads the acks' order).
async fn send_done_once(agent: &Agent, job: &JobId, n: usize) {
    let mut headers = async_nats::HeaderMap::new();
    let key = IdempotencyKey::job_phase(job, JobTopic::Done);
    headers.insert(rm_bus::reqack::IDEMPOTENCY_HEADER, key.as_str());
    agent
        .client
        .publish_with_reply_and_headers(
            subject::agent_job(&agent.host, job, JobTopic::Done),
            format!("_INBOX.{}.res.{n}", agent.host),
            headers,
            rm_bus::msg::encode(&done_of(job, JobOutcome::Succeeded)),
        )
        .await
        .unwrap();
    agent.client.flush().await.unwrap();
}

/// The livelock of a 100,000-agent burst, in small: while the writer is
/// held up, a result that waited longer than its agent waits for the ack
/// is dropped unanswered (its agent sends it again, and that copy is
/// acknowledged); once the oldest waiting result waited past the
/// threshold, the newest are acknowledged first. Without the queue every
/// ack came in arrival order, minutes late (docs/benchmarks.md, stop 39).
#[tokio::test]
async fn results_that_waited_longer_than_their_agents_wait_are_dropped_and_the_newest_are_acknowledged_first()
 {
    let timings = rm_controlplane::Timings {
        result_max_wait: Duration::from_millis(1_500),
        result_newest_first: Duration::from_millis(200),
        ..fast_timings()
    };
    let OneByOne {
        cp,
        agent: a,
        db,
        jobs,
        mut acks,
        _bus,
        _dir,
    } = one_by_one(timings, "late-acks", 4).await;
    let m0 = metrics(&cp).await;
    let queued = |n: u64| {
        let cp = &cp;
        async move {
            eventually("the results queued", || async {
                let m = metrics(cp).await;
                (m.results_queued_total - m0.results_queued_total == n).then_some(m)
            })
            .await
        }
    };

    // The writer holds job 0's result while the store is locked ...
    let lock = db.write().await.unwrap();
    send_done_once(&a, &jobs[0], 0).await;
    queued(1).await;
    eventually("the first result in hand", || async {
        (metrics(&cp).await.results_waiting == 0).then_some(())
    })
    .await;
    // ... job 1's waits past its agent's patience ...
    send_done_once(&a, &jobs[1], 1).await;
    queued(2).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    // ... and jobs 2 and 3 past the threshold
    send_done_once(&a, &jobs[2], 2).await;
    send_done_once(&a, &jobs[3], 3).await;
    let m = queued(4).await;
    assert_eq!(m.results_waiting, 3, "{m:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(lock);

    let mut answered = Vec::new();
    for _ in 0..3 {
        answered.push(next_ack(&mut acks).await.0);
    }
    assert_eq!(
        answered,
        ["0", "3", "2"],
        "the one in hand, then the newest first"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), acks.next())
            .await
            .is_err(),
        "the result that waited too long is not answered"
    );
    let m = metrics(&cp).await;
    assert_eq!(m.results_expired - m0.results_expired, 1, "{m:?}");
    assert_eq!(m.results_newest_first - m0.results_newest_first, 2, "{m:?}");
    assert_eq!(job_status(&db, jobs[1].as_str()).await, "running");

    // its agent sends it again: stored and acknowledged
    send_done_once(&a, &jobs[1], 4).await;
    let (n, ack) = next_ack(&mut acks).await;
    assert_eq!(n, "4", "the re-sent result is answered");
    assert!(ack.ok && !ack.duplicate, "{ack:?}");
    for j in &jobs {
        assert_eq!(job_status(&db, j.as_str()).await, "succeeded");
    }
}

/// A result that waited for the writer longer than the 8 s after which
/// results were dropped before stop 58, but less than its agent's 10 s
/// try, is written and acknowledged to that try; and a result written
/// after its agent stopped waiting is what the next try needs, answered
/// from memory. Dropped at 8 s, a 19,000-result burst whose writing took
/// 8–12 s had its oldest results written only after their second tries
/// (docs/benchmarks.md, stops 57 and 58). The default waits, as shipped.
#[tokio::test]
async fn a_result_that_waited_nine_seconds_for_the_writer_is_written_and_acknowledged_not_dropped()
{
    let timings = fast_timings();
    assert_eq!(
        (timings.result_max_wait, timings.result_newest_first),
        (
            rm_controlplane::Timings::default().result_max_wait,
            rm_controlplane::Timings::default().result_newest_first
        ),
        "the shipped waits"
    );
    let OneByOne {
        cp,
        agent: a,
        db,
        jobs,
        mut acks,
        _bus,
        _dir,
    } = one_by_one(timings, "slow-writer", 2).await;
    let m0 = metrics(&cp).await;

    // The writer holds job 0's result while the store is locked (below
    // the store's 10 s busy timeout) and job 1's waits 9 s in the queue.
    let lock = db.write().await.unwrap();
    send_done_once(&a, &jobs[0], 0).await;
    eventually("the first result in hand", || async {
        let m = metrics(&cp).await;
        (m.results_queued_total - m0.results_queued_total == 1 && m.results_waiting == 0)
            .then_some(())
    })
    .await;
    send_done_once(&a, &jobs[1], 1).await;
    eventually("the second result waiting", || async {
        (metrics(&cp).await.results_waiting == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    drop(lock);

    let mut answered = Vec::new();
    for _ in 0..2 {
        let (n, ack) = next_ack(&mut acks).await;
        assert!(ack.ok && !ack.duplicate, "{ack:?}");
        answered.push(n);
    }
    assert_eq!(answered, ["0", "1"], "both answered, none dropped");
    let m = metrics(&cp).await;
    assert_eq!(m.results_expired - m0.results_expired, 0, "{m:?}");
    for j in &jobs {
        assert_eq!(job_status(&db, j.as_str()).await, "succeeded");
    }

    // an agent whose try ran out before the write sends it again: answered
    // from memory, not written again
    send_done_once(&a, &jobs[1], 2).await;
    let (n, ack) = next_ack(&mut acks).await;
    assert_eq!(n, "2", "the next try is answered");
    assert!(ack.ok && ack.duplicate, "{ack:?}");
    let m1 = metrics(&cp).await;
    assert_eq!(
        (
            m1.results_acked_from_memory - m.results_acked_from_memory,
            m1.ingest_results - m.ingest_results
        ),
        (1, 0),
        "{m1:?}"
    );
}

/// Results in a part, and most results in one commit, for the parts tests.
const PART: usize = 4;
const COMMIT: usize = 16;
/// A parts budget no test reaches.
const HOUR: Duration = Duration::from_secs(3600);

/// A control plane that applies results `PART` at a time, up to `COMMIT`
/// in one commit, whose batch closes only when `COMMIT` results are in
/// (the linger never ends it), with nothing else writing by itself (no
/// heartbeat flushes, no dispatcher passes); one agent with `COMMIT`
/// running backups, and the metrics before their results.
async fn in_parts(
    name: &str,
    budget: Duration,
) -> (
    TestBus,
    tempfile::TempDir,
    Cp,
    Agent,
    rm_store::Store,
    Vec<JobId>,
    api::Metrics,
) {
    let hour = Duration::from_secs(3600);
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let timings = rm_controlplane::Timings {
        ingest_batch: PART,
        ingest_commit_results: COMMIT,
        ingest_parts_budget: budget,
        ingest_linger: Duration::from_secs(60),
        heartbeat: hour,
        seen_flush: hour,
        dispatch_every: hour,
        ..fast_timings()
    };
    let opts = CpOptions {
        timings,
        ..CpOptions::default()
    };
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let agent = Agent::enroll(&bus, &cp, name).await.unwrap();
    let db = cp.db().await;
    let jobs = running_backups(&db, &agent, None, COMMIT).await;
    let m0 = metrics(&cp).await;
    (bus, dir, cp, agent, db, jobs, m0)
}

fn succeeded(jobs: &[JobId]) -> Vec<rm_bus::msg::JobDone> {
    jobs.iter()
        .map(|j| done_of(j, JobOutcome::Succeeded))
        .collect()
}

/// Since `m0`: (results committed, their commits, commits cut short).
async fn commits_since(cp: &Cp, m0: &api::Metrics) -> (u64, u64, u64) {
    let m = metrics(cp).await;
    (
        m.ingest_results - m0.ingest_results,
        m.ingest_commits - m0.ingest_commits,
        m.ingest_commits_cut - m0.ingest_commits_cut,
    )
}

/// Since `m0`: commits cut short for (an operator's write, another role,
/// their time).
async fn cuts_since(cp: &Cp, m0: &api::Metrics) -> (u64, u64, u64) {
    let m = metrics(cp).await;
    (
        m.ingest_cut_operator - m0.ingest_cut_operator,
        m.ingest_cut_role - m0.ingest_cut_role,
        m.ingest_cut_time - m0.ingest_cut_time,
    )
}

fn all_acked(acks: Vec<Result<Ack, String>>) {
    assert_eq!(acks.len(), COMMIT);
    for ack in acks {
        let ack = ack.expect("acknowledged");
        assert!(ack.ok && !ack.duplicate, "{ack:?}");
    }
}

#[tokio::test]
async fn results_beyond_one_part_share_one_commit_while_no_operator_waits() {
    let (_bus, _dir, cp, agent, db, jobs, m0) = in_parts("parts", HOUR).await;

    all_acked(burst(&[(&agent, succeeded(&jobs))], &patient()).await);

    assert_eq!(
        commits_since(&cp, &m0).await,
        (COMMIT as u64, 1, 0),
        "{} results in parts of {PART}: one commit, not one a part",
        COMMIT
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").await,
        COMMIT as i64
    );
}

#[tokio::test]
async fn a_commit_of_results_ends_after_a_part_once_its_time_is_up_and_counts_the_cut_as_time() {
    let (_bus, _dir, cp, agent, db, jobs, m0) = in_parts("budget", Duration::ZERO).await;

    all_acked(burst(&[(&agent, succeeded(&jobs))], &patient()).await);

    let parts = (COMMIT / PART) as u64;
    assert_eq!(
        commits_since(&cp, &m0).await,
        (COMMIT as u64, parts, parts - 1),
        "no time for a second part: one commit a part, all but the last cut short"
    );
    assert_eq!(
        cuts_since(&cp, &m0).await,
        (0, 0, parts - 1),
        "nobody waited: every cut was the time's"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").await,
        COMMIT as i64
    );
}

#[tokio::test]
async fn an_operators_waiting_write_ends_a_commit_of_results_after_the_part_in_progress() {
    let (_bus, _dir, cp, agent, db, jobs, m0) = in_parts("cut", HOUR).await;
    // Holds the database's write lock: the results' transaction waits to
    // begin until the operator's write is queued behind it.
    let hold = db.write().await.unwrap();
    let dones = [(&agent, succeeded(&jobs))];
    let policy = patient();
    let sending = burst(&dones, &policy);
    let operating = async {
        eventually("the results to be taken for writing", || async {
            let m = metrics(&cp).await;
            (m.results_queued_total - m0.results_queued_total >= COMMIT as u64
                && m.results_waiting == 0)
                .then_some(())
        })
        .await;
        let release = async {
            eventually("the operator's write to wait", || async {
                (metrics(&cp).await.writes_waiting_first >= 1).then_some(())
            })
            .await;
            hold.commit().await.unwrap();
        };
        let (added, ()) = tokio::join!(cp.host_add("added-meanwhile"), release);
        added
    };
    let (acks, added) = tokio::join!(sending, operating);
    all_acked(acks);

    assert_eq!(
        commits_since(&cp, &m0).await,
        (COMMIT as u64, 2, 1),
        "one part committed before the operator's write, the other {} results after it",
        COMMIT - PART
    );
    assert_eq!(
        cuts_since(&cp, &m0).await,
        (1, 0, 0),
        "cut for the operator's write"
    );
    let m = metrics(&cp).await;
    assert!(m.write_batches_first > m0.write_batches_first, "{m:?}");
    assert_eq!(m.writes_waiting_first, 0);
    let mut c = db.read().await.unwrap();
    rm_store::hosts::get(&mut c, &added.host_id).await.unwrap();
}
