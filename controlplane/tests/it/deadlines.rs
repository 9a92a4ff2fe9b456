//! Every job reaches a terminal state: the deadline sweeper ends jobs of
//! revoked hosts, jobs past their timeout plus the grace, and cancels of
//! jobs on hosts that went silent; a refresh stuck on an offline host no
//! longer blocks later refreshes of its repository; a dispatch the agent
//! refuses for now is requeued with backoff, not failed; a result the
//! control plane refuses is recorded where an operator sees it.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::JobId;
use rm_bus::clock::ManualClock;
use rm_bus::msg::*;
use rm_bus::subject::Event;
use rm_controlplane::{Timings, api};
use rm_testkit::TestBus;

use crate::support::*;

const GRACE: Duration = Duration::from_secs(30);

async fn setup(names: &[&str], opts: CpOptions) -> (TestBus, tempfile::TempDir, Cp, Vec<Agent>) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let mut agents = Vec::new();
    for n in names {
        agents.push(Agent::enroll(&bus, &cp, n).await.unwrap());
    }
    (bus, dir, cp, agents)
}

fn manual(clock: &std::sync::Arc<ManualClock>) -> CpOptions {
    CpOptions {
        timings: Timings {
            job_deadline_grace: GRACE,
            ..fast_timings()
        },
        clock: clock.clone(),
    }
}

async fn create(cp: &Cp, host: &Agent, repo: &str, timeout_secs: Option<u64>) -> String {
    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: host.host_id(),
                repo_id: repo.into(),
                params: backup_params(),
                timeout_secs,
                target_host_id: None,
            },
        )
        .await;
    created.job_id
}

async fn job(db: &rm_store::Store, id: &str) -> rm_store::jobs::Job {
    let mut c = db.read().await.unwrap();
    rm_store::jobs::get(&mut c, id).await.unwrap()
}

async fn wait_status(db: &rm_store::Store, id: &str, status: &str) -> rm_store::jobs::Job {
    eventually(status, || async {
        let j = job(db, id).await;
        (j.status == status).then_some(j)
    })
    .await
}

#[tokio::test]
async fn a_revoked_hosts_running_job_ends_lost_with_the_reason_and_an_event() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"], CpOptions::default()).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let db = cp.db().await;
    let id = create(&cp, a, &repo, None).await;
    a.expect_dispatch().await;
    a.send_started(&JobId::parse(&id).unwrap(), JobOrigin::Dispatch, None)
        .await
        .unwrap();
    wait_status(&db, &id, "running").await;
    let mut finished = cp
        .web
        .subscribe(Event::JobFinished.subject())
        .await
        .unwrap();
    cp.web.flush().await.unwrap();

    let _: api::Done = cp
        .call(
            api::HOST_REVOKE,
            api::HostRef {
                host_id: a.host_id(),
            },
        )
        .await;

    let j = wait_status(&db, &id, "lost").await;
    let error = j.error.unwrap_or_default();
    assert!(error.contains("revoked"), "{error}");
    let evt = tokio::time::timeout(WAIT, finished.next())
        .await
        .expect("job.finished event")
        .unwrap();
    let msg: EventMsg = decode("event", &evt.payload).unwrap();
    assert_eq!(msg.job.map(|j| j.to_string()), Some(id));
    assert_eq!(
        msg.repo,
        Some(repo),
        "the sweeper's event names the job's repository"
    );
}

#[tokio::test]
async fn a_job_past_its_timeout_plus_the_grace_ends_lost_and_a_late_result_still_wins() {
    let clock = ManualClock::new(1_700_000_000_000);
    // The host stays online through the clock's jumps: whether a sweeper
    // tick or the next heartbeat comes first after a jump must not matter
    // (it decides between "timeout" and "went offline" as the reason).
    let mut opts = manual(&clock);
    opts.timings.offline_after_missed = 1_000;
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"], opts).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let db = cp.db().await;
    // both reach the agent, whose `started` never arrives
    let short = create(&cp, a, &repo, Some(10)).await;
    a.expect_dispatch().await;
    let long = create(&cp, a, &repo, Some(60)).await;
    a.expect_dispatch().await;
    wait_status(&db, &short, "dispatched").await;
    wait_status(&db, &long, "dispatched").await;

    // past the short one's deadline (10 s + grace), not the long one's
    clock.advance(Duration::from_secs(45));
    let j = wait_status(&db, &short, "lost").await;
    let error = j.error.unwrap_or_default();
    assert!(error.contains("timeout (10s)"), "{error}");
    // the same sweep saw the long one within its deadline
    assert_eq!(job(&db, &long).await.status, "dispatched");

    clock.advance(Duration::from_secs(50));
    wait_status(&db, &long, "lost").await;

    // its real result turns up after all: it wins
    let done = done_msg(&JobId::parse(&long).unwrap(), JobOutcome::Succeeded);
    a.send_done(&done).await.unwrap();
    assert_eq!(job(&db, &long).await.status, "succeeded");
}

#[tokio::test]
async fn a_cancel_of_a_job_on_an_offline_host_ends_cancelled_and_the_agent_hears_of_it() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (bus, _dir, cp, mut agents) = setup(&["web-1"], manual(&clock)).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let db = cp.db().await;
    let id = create(&cp, a, &repo, None).await;
    a.expect_dispatch().await;
    wait_status(&db, &id, "dispatched").await;

    // the host goes away
    a.disconnect().await;
    clock.advance(Duration::from_secs(5));
    eventually("offline", || async {
        (host_status(&db, &a.host_id()).await == "offline").then_some(())
    })
    .await;
    let st: api::JobState = cp
        .call(api::JOB_CANCEL, api::JobRef { job_id: id.clone() })
        .await;
    assert_eq!(st.status, "dispatched");

    // silent for the grace: cancelled, with the reason
    clock.advance(GRACE + Duration::from_secs(1));
    let j = wait_status(&db, &id, "cancelled").await;
    let error = j.error.unwrap_or_default();
    assert!(error.contains("offline"), "{error}");

    // it comes back still holding the job: it is told to stop it
    a.reconnect(&bus).await.unwrap();
    let jid = JobId::parse(&id).unwrap();
    a.hello(0, vec![jid.clone()], vec![]).await;
    loop {
        let (cmd, m) = a.next_command(WAIT).await.expect("a cancel arrives");
        a.answer(&m, encode(&Ack::ok())).await;
        if cmd.body
            == (CommandBody::Cancel {
                job_id: jid.clone(),
            })
        {
            break;
        }
    }
}

#[tokio::test]
async fn a_refresh_stuck_on_an_offline_host_does_not_block_the_next_one() {
    let opts = CpOptions {
        timings: Timings {
            health_every: Duration::from_millis(400),
            ..fast_timings()
        },
        ..CpOptions::default()
    };
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "web-2"], opts).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let db = cp.db().await;
    let (first, rest) = agents.split_at_mut(1);
    let (a1, a2) = (&mut first[0], &mut rest[0]);
    a1.hello(0, vec![], vec![]).await;
    // a refresh is queued on web-1, which never takes it and goes away
    let (cmd, _) = a1.next_command(WAIT).await.expect("a refresh dispatch");
    assert!(matches!(cmd.body, CommandBody::Dispatch { .. }), "{cmd:?}");
    a1.disconnect().await;
    eventually("offline", || async {
        (host_status(&db, &a1.host_id()).await == "offline").then_some(())
    })
    .await;

    let mut finished = cp
        .web
        .subscribe(Event::JobFinished.subject())
        .await
        .unwrap();
    cp.web.flush().await.unwrap();
    // web-2 joins the repository: the next refresh goes there
    let _: api::Done = cp
        .call(
            api::REPO_ATTACH,
            api::RepoAttach {
                repo_id: repo.clone(),
                host_id: a2.host_id(),
                access: api::AccessInput::Full,
                secrets: None,
            },
        )
        .await;
    a2.hello(0, vec![], vec![]).await;
    let spec = a2.expect_dispatch().await;
    assert!(
        matches!(
            spec.params,
            JobParams::Snapshots { .. } | JobParams::Stats { .. } | JobParams::Locks {}
        ),
        "{spec:?}"
    );
    // ... and the stale one says why it ended
    let mut c = db.read().await.unwrap();
    let stale: Vec<rm_store::jobs::Job> =
        rm_store::jobs::list_for_host(&mut c, &a1.host_id(), None, 50)
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.origin == "system")
            .collect();
    assert!(!stale.is_empty());
    // the UI hears that they ended
    let evt = tokio::time::timeout(WAIT, finished.next())
        .await
        .expect("job.finished event")
        .unwrap();
    let msg: EventMsg = decode("event", &evt.payload).unwrap();
    let ended = msg.job.map(|j| j.to_string()).unwrap_or_default();
    assert!(
        stale.iter().any(|j| j.id == ended),
        "{ended} among {stale:?}"
    );
    for j in stale {
        assert_eq!(j.status, "cancelled", "{j:?}");
        assert!(
            j.error
                .as_deref()
                .unwrap_or_default()
                .contains("superseded"),
            "{j:?}"
        );
    }
}

#[tokio::test]
async fn a_dispatch_refused_for_now_is_requeued_with_backoff_not_failed() {
    let clock = ManualClock::new(1_700_000_000_000);
    let opts = CpOptions {
        timings: Timings {
            requeue_backoff: Duration::from_secs(60),
            // The clock jumps past the backoff below; the host must not be
            // judged offline by that jump (which would hold the dispatch).
            offline_after_missed: 10_000,
            ..fast_timings()
        },
        clock: clock.clone(),
    };
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"], opts).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let db = cp.db().await;
    let id = create(&cp, a, &repo, None).await;
    loop {
        let (cmd, m) = a.next_command(WAIT).await.expect("a dispatch");
        if let CommandBody::Dispatch { .. } = cmd.body {
            a.answer(
                &m,
                encode(&Ack::refused_for_now("the agent is shutting down")),
            )
            .await;
            break;
        }
        a.answer(&m, encode(&Ack::ok())).await;
    }

    // still queued, the reason visible
    let j = eventually("the refusal recorded", || async {
        let j = job(&db, &id).await;
        j.error.is_some().then_some(j)
    })
    .await;
    assert_eq!(j.status, "queued");
    let error = j.error.unwrap_or_default();
    assert!(
        error.contains("shutting down") && error.contains("refused 1 time"),
        "{error}"
    );

    // not before the backoff has passed
    dispatcher_looked(&cp).await;
    assert!(
        a.dispatch_within(Duration::from_millis(10)).await.is_none(),
        "dispatched again before the backoff"
    );
    assert_eq!(job(&db, &id).await.status, "queued");

    // after the wait it goes again, and this time the agent takes it
    clock.advance(Duration::from_secs(61));
    a.expect_dispatch().await;
    let j = wait_status(&db, &id, "dispatched").await;
    assert_eq!(j.error, None);
}

#[tokio::test]
async fn a_run_of_a_deleted_schedule_is_refused_and_recorded_for_the_operator() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"], CpOptions::default()).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let mut changed = cp
        .web
        .subscribe(Event::HostChanged.subject())
        .await
        .unwrap();
    cp.web.flush().await.unwrap();

    // the schedule was deleted while the host was offline; its run reports
    let run = JobId::generate();
    let origin = JobOrigin::Schedule {
        schedule_id: "sch-deleted".into(),
    };
    let started = a.send_started(&run, origin, Some(backup_params())).await;
    assert!(started.is_err(), "{started:?}");
    let done = a.send_done(&done_msg(&run, JobOutcome::Succeeded)).await;
    assert!(done.is_err(), "{done:?}");

    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let rows = rm_store::rejected::list(&mut c, Some(&a.host_id()), 10)
        .await
        .unwrap();
    let phases: Vec<&str> = rows.iter().map(|r| r.phase.as_str()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        phases.contains(&"started") && phases.contains(&"done"),
        "{rows:?}"
    );
    let started = rows.iter().find(|r| r.phase == "started").unwrap();
    assert_eq!(started.job_id, run.to_string());
    assert!(started.reason.contains("sch-deleted"), "{started:?}");
    let done = rows.iter().find(|r| r.phase == "done").unwrap();
    assert!(
        done.excerpt.contains("0123456789abcdef"),
        "the snapshot id is kept: {done:?}"
    );
    let evt = tokio::time::timeout(WAIT, changed.next())
        .await
        .expect("host.changed event")
        .unwrap();
    let msg: EventMsg = decode("event", &evt.payload).unwrap();
    assert_eq!(msg.host.map(|h| h.to_string()), Some(a.host_id()));
}

#[tokio::test]
async fn a_dispatched_job_whose_host_went_offline_before_it_started_frees_the_repository_after_the_grace()
 {
    let clock = ManualClock::new(1_700_000_000_000);
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "maint"], manual(&clock)).await;
    let (first, rest) = agents.split_at_mut(1);
    let (web, maint) = (&mut first[0], &mut rest[0]);
    let repo = repo_with(&cp, "main", "pw", &[&*web], &[&*maint]).await;
    let _: api::Done = cp
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id()),
            },
        )
        .await;
    web.hello(0, vec![], vec![]).await;
    maint.hello(0, vec![], vec![]).await;
    let db = cp.db().await;

    // web-1 takes a backup (an hour's timeout) and goes silent before
    // its `started`: the backup holds the repository.
    let backup = create(&cp, web, &repo, Some(3600)).await;
    web.expect_dispatch().await;
    wait_status(&db, &backup, "dispatched").await;
    let prune: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: web.host_id(),
                repo_id: repo.clone(),
                params: JobParams::Prune {},
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await;
    assert_eq!(prune.exec_host_id, maint.host_id());
    dispatcher_looked(&cp).await;
    assert_eq!(job(&db, &prune.job_id).await.status, "queued");

    web.disconnect().await;
    clock.advance(Duration::from_secs(5));
    // A heartbeat still in flight when the agent left can land after the
    // jump (its last-seen is then the new time, and a frozen clock never
    // makes it stale): time moves on a second every half second of
    // looking (every 20th look), at most ten seconds in all, well inside
    // the grace, until the sweeper calls the host offline.
    let looks = std::sync::atomic::AtomicU32::new(0);
    eventually("offline", || async {
        if host_status(&db, &web.host_id()).await == "offline" {
            return Some(());
        }
        let n = looks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(20) && n <= 200 {
            clock.advance(Duration::from_secs(1));
        }
        None
    })
    .await;
    // within the grace it still holds: two more sweeps (each runs the
    // deadline sweeper) leave it as it was
    let sweeps = || async {
        let m: api::Metrics = cp.call(api::METRICS, serde_json::json!({})).await;
        m.offline_sweeps
    };
    let start = sweeps().await;
    eventually("two sweeps", || async {
        (sweeps().await >= start + 2).then_some(())
    })
    .await;
    assert_eq!(job(&db, &backup).await.status, "dispatched");
    assert_eq!(job(&db, &prune.job_id).await.status, "queued");

    // offline for the grace: the backup is taken not to run (lost, with
    // the reason) long before its hour is up, and the prune goes.
    clock.advance(GRACE + Duration::from_secs(1));
    let j = wait_status(&db, &backup, "lost").await;
    let error = j.error.unwrap_or_default();
    assert!(error.contains("before the job started"), "{error}");
    maint.hello(0, vec![], vec![]).await;
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < until, "the prune never went");
        let Some(spec) = maint.dispatch_within(Duration::from_secs(1)).await else {
            continue;
        };
        if spec.job_id.as_str() == prune.job_id {
            break;
        }
        // a repository refresh queued meanwhile: answered, so it frees
        // the repository again
        let summary = match spec.params.kind() {
            JobKind::Snapshots | JobKind::Locks => serde_json::json!([]),
            JobKind::Stats => serde_json::json!({"total_size": 1}),
            k => panic!("unexpected {k:?}"),
        };
        maint
            .send_started(&spec.job_id, JobOrigin::Dispatch, None)
            .await
            .unwrap();
        let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
        d.summary = Some(summary);
        maint.send_done(&d).await.unwrap();
    }
}
