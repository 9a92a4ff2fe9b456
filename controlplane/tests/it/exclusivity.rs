//! Repository exclusivity: prune, check and forget have their repository
//! to themselves, whichever host's dispatcher or scheduler asks at the
//! same moment. The repository is claimed in the statement that lets a
//! job go, so two dispatches (or a dispatch and an agent's scheduled run)
//! cannot both pass the "busy" check.

use std::time::Duration;

use rm_bus::JobId;
use rm_bus::msg::*;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

async fn setup() -> (TestBus, tempfile::TempDir, Cp, Agent, Agent, String) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut web = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let mut maint = Agent::enroll(&bus, &cp, "maint").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&web], &[&maint]).await;
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
    (bus, dir, cp, web, maint, repo)
}

fn create(host: &Agent, repo: &str, params: JobParams) -> api::JobCreate {
    api::JobCreate {
        host_id: host.host_id(),
        repo_id: repo.into(),
        params,
        timeout_secs: None,
        target_host_id: None,
    }
}

/// Answers `agent`'s dispatch attempts until `job` is recorded dispatched
/// (an answer to an attempt that already timed out is not heard).
async fn ack_dispatch_of(agent: &mut Agent, db: &rm_store::Store, job: &str) {
    for _ in 0..20 {
        if let Some((cmd, m)) = agent.next_command(Duration::from_secs(2)).await {
            if let CommandBody::Dispatch { job: spec } = &cmd.body {
                assert_eq!(spec.job_id.as_str(), job);
            }
            agent.answer(&m, encode(&Ack::ok())).await;
        }
        for _ in 0..10 {
            if job_status(db, job).await == "dispatched" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    panic!("{job} never recorded dispatched");
}

async fn wait_running(db: &rm_store::Store, job: &str) {
    eventually("the job runs", || async {
        (job_status(db, job).await == "running").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_prune_is_not_dispatched_while_another_hosts_backup_dispatch_is_in_flight() {
    let (_bus, _dir, cp, mut web, mut maint, repo) = setup().await;
    let db = cp.db().await;

    // The backup's dispatch reaches web-1, which has not answered yet:
    // the job is still queued in the store, but it holds the repository.
    let backup: api::JobCreated = cp
        .call(api::JOB_CREATE, create(&web, &repo, backup_params()))
        .await;
    let (first, _) = web
        .next_command(WAIT)
        .await
        .expect("the backup goes out to web-1");
    assert!(matches!(first.body, CommandBody::Dispatch { .. }));

    // Meanwhile the maintenance host's dispatcher looks at the repository.
    let prune: api::JobCreated = cp
        .call(api::JOB_CREATE, create(&web, &repo, JobParams::Prune {}))
        .await;
    assert_eq!(prune.exec_host_id, maint.host_id());
    dispatcher_looked(&cp).await;
    assert_eq!(job_status(&db, &prune.job_id).await, "queued");
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "prune dispatched while a backup's dispatch to another host was in flight"
    );

    // web-1 takes the backup; it runs and ends; only then the prune goes.
    ack_dispatch_of(&mut web, &db, &backup.job_id).await;
    let bjob = JobId::parse(&backup.job_id).unwrap();
    web.send_started(&bjob, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    wait_running(&db, &backup.job_id).await;
    dispatcher_looked(&cp).await;
    assert_eq!(job_status(&db, &prune.job_id).await, "queued");
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "prune dispatched beside a running backup"
    );
    let mut done = done_msg(&bjob, JobOutcome::Succeeded);
    done.summary = None;
    web.send_done(&done).await.unwrap();
    // (the backup's refresh jobs on web-1 share the repository: answered)
    let spec = exclusive_next(&mut maint, &mut web).await;
    assert_eq!(spec.job_id.as_str(), prune.job_id);
}

#[tokio::test]
async fn a_scheduled_prune_asks_first_waits_for_a_running_backup_and_then_holds_the_repository() {
    let (_bus, _dir, cp, mut web, maint, repo) = setup().await;
    let db = cp.db().await;
    let saved: api::ScheduleSaved = cp
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: web.host_id(),
                repo_id: repo.clone(),
                cron: "0 4 * * *".into(),
                timezone: "UTC".into(),
                params: JobParams::Prune {},
                enabled: true,
                jitter_secs: 0,
                timeout_secs: Some(3600),
                grace_secs: None,
            },
        )
        .await;

    let backup: api::JobCreated = cp
        .call(api::JOB_CREATE, create(&web, &repo, backup_params()))
        .await;
    web.expect_dispatch().await;
    let bjob = JobId::parse(&backup.job_id).unwrap();
    web.send_started(&bjob, JobOrigin::Dispatch, None)
        .await
        .unwrap();

    // the scheduled prune on the maintenance host asks: busy, ask later
    let sjob = JobId::parse(format!("{}-1000", saved.schedule_id)).unwrap();
    let busy = maint
        .claim(&sjob, &saved.schedule_id, &repo, JobParams::Prune {})
        .await;
    assert!(!busy.ok && busy.retry, "{busy:?}");
    assert!(
        busy.error.as_deref().unwrap_or("").contains(&backup.job_id),
        "{busy:?}"
    );
    // a refusal for now is not a rejected result
    {
        let mut c = db.read().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rejected_results")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    let done = done_msg(&bjob, JobOutcome::Succeeded);
    web.send_done(&done).await.unwrap();
    // the backup made the first snapshot of a repository never listed: a
    // full refresh (four read-only jobs) is queued on web-1, and while
    // those run the prune still waits
    let mut refresh = Vec::new();
    for _ in 0..4 {
        refresh.push(web.expect_dispatch().await);
    }
    let held = maint
        .claim(&sjob, &saved.schedule_id, &repo, JobParams::Prune {})
        .await;
    assert!(!held.ok && held.retry, "{held:?}");
    for r in &refresh {
        web.send_started(&r.job_id, JobOrigin::Dispatch, None)
            .await
            .unwrap();
        let mut rd = done_msg(&r.job_id, JobOutcome::Failed);
        rd.summary = None;
        web.send_done(&rd).await.unwrap();
    }
    let granted = maint
        .claim(&sjob, &saved.schedule_id, &repo, JobParams::Prune {})
        .await;
    assert!(granted.ok, "{granted:?}");
    assert_eq!(job_status(&db, sjob.as_str()).await, "dispatched");
    // asking again (a lost ack) is granted again, not refused by itself
    let again = maint
        .claim(&sjob, &saved.schedule_id, &repo, JobParams::Prune {})
        .await;
    assert!(again.ok, "{again:?}");

    // while it holds the repository, even a backup waits
    let backup2: api::JobCreated = cp
        .call(api::JOB_CREATE, create(&web, &repo, backup_params()))
        .await;
    dispatcher_looked(&cp).await;
    assert_eq!(job_status(&db, &backup2.job_id).await, "queued");
    assert!(
        web.next_command(Duration::ZERO).await.is_none(),
        "backup dispatched beside a scheduled prune"
    );
    maint
        .send_started(
            &sjob,
            JobOrigin::Schedule {
                schedule_id: saved.schedule_id.clone(),
            },
            Some(JobParams::Prune {}),
        )
        .await
        .unwrap();
    assert_eq!(job_status(&db, sjob.as_str()).await, "running");
    let mut d = done_msg(&sjob, JobOutcome::Succeeded);
    d.summary = None;
    maint.send_done(&d).await.unwrap();
    let spec = web.expect_dispatch().await;
    assert_eq!(spec.job_id.as_str(), backup2.job_id);

    // a finished job is never granted again; an unknown schedule never
    let finished = maint
        .claim(&sjob, &saved.schedule_id, &repo, JobParams::Prune {})
        .await;
    assert!(!finished.ok && !finished.retry, "{finished:?}");
    let unknown = maint
        .claim(
            &JobId::parse("gone-1").unwrap(),
            "gone",
            &repo,
            JobParams::Prune {},
        )
        .await;
    assert!(!unknown.ok && !unknown.retry, "{unknown:?}");
    // and another host cannot claim the maintenance host's schedule
    let other = web
        .claim(
            &JobId::parse(format!("{}-2000", saved.schedule_id)).unwrap(),
            &saved.schedule_id,
            &repo,
            JobParams::Prune {},
        )
        .await;
    assert!(!other.ok && !other.retry, "{other:?}");
}

async fn backup_schedule(cp: &Cp, web: &Agent, repo: &str) -> String {
    let saved: api::ScheduleSaved = cp
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: web.host_id(),
                repo_id: repo.into(),
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
                params: backup_params(),
                enabled: true,
                jitter_secs: 0,
                timeout_secs: Some(3600),
                grace_secs: None,
            },
        )
        .await;
    saved.schedule_id
}

#[tokio::test]
async fn scheduled_backups_share_the_repository_and_hold_off_an_exclusive_dispatch() {
    let (_bus, _dir, cp, mut web, mut maint, repo) = setup().await;
    let db = cp.db().await;
    let sched = backup_schedule(&cp, &web, &repo).await;
    let origin = JobOrigin::Schedule {
        schedule_id: sched.clone(),
    };

    // two scheduled backups ask at once: both granted (a shared claim)
    let b1 = JobId::parse(format!("{sched}-1000")).unwrap();
    let b2 = JobId::parse(format!("{sched}-2000")).unwrap();
    for b in [&b1, &b2] {
        let ack = web.claim(b, &sched, &repo, backup_params()).await;
        assert!(ack.ok, "{ack:?}");
        assert_eq!(job_status(&db, b.as_str()).await, "dispatched");
    }

    // a prune is not dispatched while they hold the repository
    let prune: api::JobCreated = cp
        .call(api::JOB_CREATE, create(&web, &repo, JobParams::Prune {}))
        .await;
    assert_eq!(prune.exec_host_id, maint.host_id());
    dispatcher_looked(&cp).await;
    assert_eq!(job_status(&db, &prune.job_id).await, "queued");
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "prune dispatched beside a scheduled backup"
    );

    // one ends: the other still holds it
    web.send_started(&b1, origin.clone(), Some(backup_params()))
        .await
        .unwrap();
    let mut d = done_msg(&b1, JobOutcome::Succeeded);
    d.summary = None;
    web.send_done(&d).await.unwrap();
    web.send_started(&b2, origin.clone(), Some(backup_params()))
        .await
        .unwrap();
    assert_eq!(job_status(&db, b1.as_str()).await, "succeeded");
    dispatcher_looked(&cp).await;
    assert_eq!(job_status(&db, &prune.job_id).await, "queued");

    // both ended: the prune goes
    let mut d = done_msg(&b2, JobOutcome::Succeeded);
    d.summary = None;
    web.send_done(&d).await.unwrap();
    let spec = exclusive_next(&mut maint, &mut web).await;
    assert_eq!(spec.job_id.as_str(), prune.job_id);
}

#[tokio::test]
async fn a_scheduled_backup_waits_while_an_exclusive_job_holds_the_repository() {
    let (_bus, _dir, cp, mut web, mut maint, repo) = setup().await;
    let db = cp.db().await;
    let sched = backup_schedule(&cp, &web, &repo).await;
    let prune: api::JobCreated = cp
        .call(api::JOB_CREATE, create(&web, &repo, JobParams::Prune {}))
        .await;
    let spec = exclusive_next(&mut maint, &mut web).await;
    assert_eq!(spec.job_id.as_str(), prune.job_id);

    let b = JobId::parse(format!("{sched}-1000")).unwrap();
    let busy = web.claim(&b, &sched, &repo, backup_params()).await;
    assert!(!busy.ok && busy.retry, "{busy:?}");
    assert!(
        busy.error.as_deref().unwrap_or("").contains(&prune.job_id),
        "{busy:?}"
    );
    assert!(
        rm_store::jobs::find(&mut db.read().await.unwrap(), b.as_str())
            .await
            .unwrap()
            .is_none(),
        "nothing recorded for a refused claim"
    );

    // the prune ends: the backup is granted
    let pjob = JobId::parse(&prune.job_id).unwrap();
    maint
        .send_started(&pjob, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let mut d = done_msg(&pjob, JobOutcome::Succeeded);
    d.summary = None;
    maint.send_done(&d).await.unwrap();
    let granted = web.claim(&b, &sched, &repo, backup_params()).await;
    assert!(granted.ok, "{granted:?}");
}
