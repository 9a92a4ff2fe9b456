//! The write path: heartbeats kept in memory and flushed as changed rows
//! (vitals only when they change), and a write that failed while the
//! database was unavailable is written once it is back, without a restart.

use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

async fn metrics(cp: &Cp) -> api::Metrics {
    cp.call(api::METRICS, serde_json::json!({})).await
}

async fn last_seen(db: &rm_store::Store, host: &str) -> Option<i64> {
    let mut c = db.read().await.unwrap();
    rm_store::hosts::get(&mut c, host)
        .await
        .unwrap()
        .last_seen_at
}

async fn vitals_updates(db: &rm_store::Store) -> i64 {
    let mut c = db.read().await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM probe_vitals")
        .fetch_one(&mut *c)
        .await
        .unwrap()
}

/// Waits until the stored last-seen of `host` moved past `after`.
async fn seen_after(db: &rm_store::Store, host: &str, after: Option<i64>) -> i64 {
    eventually("last-seen to move", || async {
        last_seen(db, host)
            .await
            .filter(|t| after.is_none_or(|a| *t > a))
    })
    .await
}

#[tokio::test]
async fn heartbeats_with_unchanged_vitals_move_last_seen_but_never_rewrite_the_vitals() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "steady").await.unwrap();
    let db = cp.db().await;
    // Counts every statement that sets the vitals, whatever their value.
    exec(
        &db,
        "CREATE TABLE probe_vitals (host TEXT);
         CREATE TRIGGER probe_vitals AFTER UPDATE OF vitals_json ON hosts
         BEGIN INSERT INTO probe_vitals VALUES (NEW.id); END;",
    )
    .await;
    agent.hello(0, vec![], vec![]).await; // beats every 100 ms from now on
    let host = agent.host_id();
    // The first beat's vitals are new: written once.
    let mut seen = seen_after(&db, &host, None).await;
    seen = seen_after(&db, &host, Some(seen)).await;
    let first = vitals_updates(&db).await;
    // Five more flushes of beats with the same vitals.
    for _ in 0..5 {
        seen = seen_after(&db, &host, Some(seen)).await;
    }
    assert_eq!(
        vitals_updates(&db).await,
        first,
        "unchanged vitals were written again"
    );
    let m = metrics(&cp).await;
    assert!(
        m.vitals_written >= 1 && m.heartbeat_rows_written > m.vitals_written,
        "{m:?}"
    );
    agent.stop_heartbeats();
}

#[tokio::test]
async fn a_heartbeat_that_arrives_while_the_database_is_unavailable_is_written_once_it_is_back() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "patient").await.unwrap();
    agent.hello(0, vec![], vec![]).await;
    agent.stop_heartbeats(); // one beat by hand below
    let db = cp.db().await;
    let host = agent.host_id();
    seen_after(&db, &host, None).await;

    // Every write to hosts fails for a while.
    exec(&db, "ALTER TABLE hosts RENAME TO hosts_away").await;
    let sent_at = rm_bus::clock::system().now_ms();
    agent.heartbeat().await;
    eventually("a heartbeat flush to fail", || async {
        (metrics(&cp).await.errors_of("heartbeats") > 0).then_some(())
    })
    .await;
    exec(&db, "ALTER TABLE hosts_away RENAME TO hosts").await;

    // No further beat: the one kept in memory is written by itself.
    eventually("the beat to be on record", || async {
        last_seen(&db, &host)
            .await
            .filter(|t| *t >= sent_at)
            .map(|_| ())
    })
    .await;
}

/// Timings under which nothing writes by itself while a test runs: the
/// sweeper ticks once at start, heartbeats are flushed only when a host
/// first comes online, the dispatcher wakes only when asked.
fn quiet_timings() -> rm_controlplane::Timings {
    let hour = std::time::Duration::from_secs(3600);
    rm_controlplane::Timings {
        heartbeat: hour,
        seen_flush: hour,
        dispatch_every: hour,
        ..fast_timings()
    }
}

#[tokio::test]
async fn a_dispatch_costs_two_commits_the_claim_and_the_record_of_its_ack() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = CpOptions {
        timings: quiet_timings(),
        ..CpOptions::default()
    };
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "busy").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&agent], &[]).await;
    agent.hello(0, vec![], vec![]).await;
    // The first beat of a host coming online is written at once; later
    // ones only after an hour.
    eventually("the first heartbeat flush", || async {
        (metrics(&cp).await.heartbeat_rows_written >= 1).then_some(())
    })
    .await;
    agent.stop_heartbeats();
    let db = cp.db().await;

    const N: u64 = 10;
    let before = metrics(&cp).await.db_commits;
    for _ in 0..N {
        let passes = metrics(&cp).await.dispatch_passes;
        let created: api::JobCreated = cp
            .call(
                api::JOB_CREATE,
                api::JobCreate {
                    host_id: agent.host_id(),
                    repo_id: repo.clone(),
                    params: backup_params(),
                    timeout_secs: None,
                    target_host_id: None,
                },
            )
            .await;
        let spec = agent.expect_dispatch().await;
        assert_eq!(spec.job_id.as_str(), created.job_id);
        // recorded dispatched, and the pass that sent it is over
        eventually(
            "the dispatch to be recorded and its pass to end",
            || async {
                let done = job_status(&db, &created.job_id).await == "dispatched"
                    && metrics(&cp).await.dispatch_passes > passes;
                done.then_some(())
            },
        )
        .await;
    }
    let commits = metrics(&cp).await.db_commits - before;
    // Per job: its creation, the claim before the send, the record of the
    // agent's ack (which drops the claim). Two to spare for a config push
    // the agent confirmed meanwhile.
    assert!(
        commits <= 3 * N + 2,
        "{commits} commits for {N} jobs created and dispatched"
    );
}

#[tokio::test]
async fn every_commit_of_operators_and_the_dispatcher_is_a_writer_task_batch_operators_in_the_first_lane()
 {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = CpOptions {
        timings: quiet_timings(),
        ..CpOptions::default()
    };
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    agent.hello(0, vec![], vec![]).await;
    eventually("the first heartbeat flush", || async {
        (metrics(&cp).await.heartbeat_rows_written >= 1).then_some(())
    })
    .await;
    agent.stop_heartbeats();
    let db = cp.db().await;
    let before = metrics(&cp).await;

    // Operators' writes of each kind, and a dispatch.
    let other = cp.host_add("db-1").await;
    let _: api::HostTagsSaved = cp
        .call(
            api::HOST_TAGS,
            api::HostTags {
                host_id: other.host_id.clone(),
                tags: vec!["db".into()],
            },
        )
        .await;
    let repo = repo_with(&cp, "main", "pw", &[&agent], &[]).await;
    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: agent.host_id(),
                repo_id: repo.clone(),
                params: backup_params(),
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await;
    agent.expect_dispatch().await;
    let j = created.job_id.clone();
    eventually("the dispatch to be recorded", || async {
        (job_status(&db, &j).await == "dispatched").then_some(())
    })
    .await;
    let _: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: created.job_id.clone(),
            },
        )
        .await;
    let _: api::Done = cp
        .call(
            api::HOST_REVOKE,
            api::HostRef {
                host_id: other.host_id,
            },
        )
        .await;

    // The revoke's transaction, begun after everything above committed,
    // counted any commit made outside the writer since it started (the
    // writer counts them while it holds the connection: comparing the
    // commit hook's count with the batches from outside catches commits
    // under way).
    let after = metrics(&cp).await;
    assert_eq!(after.db_commits_outside_writer, 0, "{after:?}");
    assert!(after.db_commits > before.db_commits, "{after:?}");
    // host add, tags, repository add and attach, job create and cancel,
    // revoke: seven operators' writes, each in the first lane
    assert!(
        after.write_batches_first - before.write_batches_first >= 7,
        "{after:?}"
    );
}
