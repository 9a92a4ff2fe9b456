//! Jobs through the control plane with simulated agents: queued while
//! offline and dispatched on hello; results ingested exactly once, across a
//! control-plane restart; ingest refuses another host's job; forget on an
//! append-only credential goes to the maintenance host; schedules reach an
//! agent on hello; no password travels or rests in the clear.

use std::time::Duration;

use rm_bus::JobId;
use rm_bus::msg::*;
use rm_bus::seal::RepoSecrets;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

#[tokio::test]
async fn job_created_while_offline_runs_after_hello_and_its_result_is_recorded_once() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let repo = repo_with(&cp, "main", "repo-pw-1", &[&agent], &[]).await;

    // host is not online yet (no hello): the job waits
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
    assert_eq!(created.exec_host_id, agent.host_id());
    dispatcher_looked(&cp).await;
    assert!(
        agent.next_command(Duration::ZERO).await.is_none(),
        "dispatched to an offline host"
    );
    let db = cp.db().await;
    assert_eq!(job_status(&db, &created.job_id).await, "queued");

    agent.hello(0, vec![], vec![]).await;
    let spec = agent.expect_dispatch().await;
    assert_eq!(spec.job_id.as_str(), created.job_id);
    assert!(spec.repo.append_only);
    // the secrets are sealed to this agent, and carry its own credential
    let secrets: RepoSecrets =
        rm_bus::seal::open(&spec.repo.secrets, &agent.xkey, &agent.cp_xkey).unwrap();
    assert_eq!(secrets.password, "repo-pw-1");
    assert!(secrets.repository.contains("web-1:web-1pw@"));
    // --host pinned by the control plane: the host id, never the hostname
    let id = agent.host_id();
    assert!(matches!(&spec.params, JobParams::Backup { host_name: Some(h), .. } if *h == id));
    eventually("dispatched", || async {
        (job_status(&db, &created.job_id).await == "dispatched").then_some(())
    })
    .await;

    let job = JobId::parse(&created.job_id).unwrap();
    let ack = agent
        .send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    assert!(ack.ok && !ack.duplicate);
    assert_eq!(job_status(&db, &created.job_id).await, "running");

    // the first `done` is committed, but its ack is "lost": the agent retries
    // across a control-plane restart
    let done = done_msg(&job, JobOutcome::Succeeded);
    let first = agent.send_done(&done).await.unwrap();
    assert!(first.ok && !first.duplicate);
    cp.stop().await;
    let cp2 = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let again = agent.send_done(&done).await.unwrap();
    assert!(again.ok && again.duplicate, "replay recognised: {again:?}");
    let db2 = cp2.db().await;
    let mut c = db2.read().await.unwrap();
    let j = rm_store::jobs::get(&mut c, &created.job_id).await.unwrap();
    assert_eq!(j.status, "succeeded");
    let sum = rm_store::hosts::summary(&mut c, &agent.host_id())
        .await
        .unwrap();
    assert_eq!(sum.last_backup_status.as_deref(), Some("succeeded"));
    assert_eq!(sum.last_snapshot_id.as_deref(), Some("0123456789abcdef"));
    // cached under the host's restic host name: its id
    let snaps = rm_store::snapshots::list(&mut c, &repo, Some(&agent.host_id()))
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1, "the backup's snapshot is cached once");
}

#[tokio::test]
async fn ingest_refuses_another_hosts_job() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut a = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let mut b = Agent::enroll(&bus, &cp, "web-2").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&a, &b], &[]).await;
    a.hello(0, vec![], vec![]).await;
    b.hello(0, vec![], vec![]).await;
    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: a.host_id(),
                repo_id: repo,
                params: backup_params(),
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await;
    a.expect_dispatch().await;
    let job = JobId::parse(&created.job_id).unwrap();
    // b reports a's job on b's own subject: the bus allows it, ingest refuses
    let err = b
        .send_done(&done_msg(&job, JobOutcome::Failed))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("belongs to another host"), "{err}");
    let err = b
        .send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("belongs to another host"), "{err}");
    let db = cp.db().await;
    assert_eq!(job_status(&db, &created.job_id).await, "dispatched");
    // a mismatch between subject and payload is refused too
    let other = JobId::parse("jforged").unwrap();
    let err = a
        .request(
            &other,
            rm_bus::subject::JobTopic::Done,
            encode(&done_msg(&job, JobOutcome::Failed)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // malformed payloads get a clear refusal, not silence
    let err = a
        .request(&job, rm_bus::subject::JobTopic::Done, "{not json".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed done message"), "{err}");
}

#[tokio::test]
async fn forget_on_append_only_goes_to_the_maintenance_host_with_host_pinned() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let web = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let mut maint = Agent::enroll(&bus, &cp, "maint").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&web], &[&maint]).await;
    maint.hello(0, vec![], vec![]).await;
    let forget = JobParams::Forget {
        retention: Retention {
            keep_daily: Some(7),
            ..Retention::default()
        },
        host_name: "someone-else".into(),
        prune: true,
    };
    let req = api::JobCreate {
        host_id: web.host_id(),
        repo_id: repo.clone(),
        params: forget,
        timeout_secs: None,
        target_host_id: None,
    };
    // no maintenance host yet: a clear refusal
    let err = cp
        .call_raw::<_, api::JobCreated>(api::JOB_CREATE, req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code, "conflict");
    assert!(err.message.contains("maintenance host"), "{}", err.message);
    // an append-only host cannot be the maintenance host
    let err = cp
        .call_raw::<_, api::Done>(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(web.host_id()),
            },
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("full access"), "{}", err.message);
    let _: api::Done = cp
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id()),
            },
        )
        .await;

    let created: api::JobCreated = cp.call(api::JOB_CREATE, req).await;
    assert_eq!(created.exec_host_id, maint.host_id());
    let spec = maint.expect_dispatch().await;
    assert!(!spec.repo.append_only);
    match &spec.params {
        JobParams::Forget { host_name, .. } => assert_eq!(
            *host_name,
            web.host_id(),
            "--host is the owner's (its id), whatever the client sent"
        ),
        other => panic!("{other:?}"),
    }
    // invalid retention is refused up front
    let empty = JobParams::Forget {
        retention: Retention::default(),
        host_name: String::new(),
        prune: false,
    };
    let err = cp
        .call_raw::<_, api::JobCreated>(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: web.host_id(),
                repo_id: repo,
                params: empty,
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("retention policy"), "{}", err.message);
}

#[tokio::test]
async fn retention_preview_runs_where_forget_would_with_the_owners_host_pinned_and_is_never_scheduled()
 {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut web = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let mut maint = Agent::enroll(&bus, &cp, "maint").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&web], &[&maint]).await;
    web.hello(0, vec![], vec![]).await;
    maint.hello(0, vec![], vec![]).await;
    let preview = JobParams::ForgetPreview {
        retention: Retention {
            keep_last: Some(3),
            ..Retention::default()
        },
        host_name: "someone-else".into(),
    };
    let req = api::JobCreate {
        host_id: web.host_id(),
        repo_id: repo.clone(),
        params: preview.clone(),
        timeout_secs: Some(120),
        target_host_id: None,
    };
    // no maintenance host: the owner previews with its own credential
    let created: api::JobCreated = cp.call(api::JOB_CREATE, req.clone()).await;
    assert_eq!(created.exec_host_id, web.host_id());
    let spec = web.expect_dispatch().await;
    assert!(spec.repo.append_only);
    assert_eq!(spec.timeout_secs, 120);
    match &spec.params {
        JobParams::ForgetPreview { host_name, .. } => {
            assert_eq!(
                host_name,
                &web.host_id(),
                "pinned to the owner's restic host name: its id"
            )
        }
        other => panic!("{other:?}"),
    }
    // with a maintenance host: there, with its full credential
    let _: api::Done = cp
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id()),
            },
        )
        .await;
    let created: api::JobCreated = cp.call(api::JOB_CREATE, req).await;
    assert_eq!(created.exec_host_id, maint.host_id());
    let spec = maint.expect_dispatch().await;
    assert!(!spec.repo.append_only);
    match &spec.params {
        JobParams::ForgetPreview { host_name, .. } => {
            assert_eq!(
                host_name,
                &web.host_id(),
                "pinned to the owner's restic host name: its id"
            )
        }
        other => panic!("{other:?}"),
    }
    // a preview without a keep rule is refused up front
    let err = cp
        .call_raw::<_, api::JobCreated>(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: web.host_id(),
                repo_id: repo.clone(),
                params: JobParams::ForgetPreview {
                    retention: Retention::default(),
                    host_name: String::new(),
                },
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("retention policy"), "{}", err.message);
    // and it is not something a schedule runs
    let err = cp
        .call_raw::<_, api::ScheduleSaved>(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: web.host_id(),
                repo_id: repo,
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
                params: preview,
                enabled: true,
                jitter_secs: 0,
                timeout_secs: None,
                grace_secs: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid");
}

#[tokio::test]
async fn schedule_edited_while_offline_reaches_the_agent_on_hello_and_scheduled_runs_are_recorded()
{
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&agent], &[]).await;
    let put = api::SchedulePut {
        schedule_id: None,
        host_id: agent.host_id(),
        repo_id: repo.clone(),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        params: backup_params(),
        enabled: true,
        jitter_secs: 0,
        timeout_secs: Some(3600),
        grace_secs: None,
    };
    let bad_tz = api::SchedulePut {
        timezone: "Mars/Olympus".into(),
        ..put.clone()
    };
    let err = cp
        .call_raw::<_, api::ScheduleSaved>(api::SCHEDULE_PUT, bad_tz)
        .await
        .unwrap_err();
    assert!(err.message.contains("time zone"), "{}", err.message);
    let saved: api::ScheduleSaved = cp.call(api::SCHEDULE_PUT, put.clone()).await;
    let edited: api::ScheduleSaved = cp
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: Some(saved.schedule_id.clone()),
                cron: "30 4 * * *".into(),
                ..put
            },
        )
        .await;
    assert!(edited.config_version > saved.config_version);

    // the agent was offline for both changes: hello brings the latest
    let reply = agent.hello(0, vec![], vec![]).await;
    let config = reply.config.expect("config re-synced on hello");
    assert_eq!(config.version, edited.config_version as u64);
    assert_eq!(config.schedules.len(), 1);
    assert_eq!(config.schedules[0].cron, "30 4 * * *");
    let secrets: RepoSecrets = rm_bus::seal::open(
        &config.schedules[0].repo.secrets,
        &agent.xkey,
        &agent.cp_xkey,
    )
    .unwrap();
    assert_eq!(secrets.password, "pw");
    // an agent that has it gets nothing more
    assert!(
        agent
            .hello(config.version, vec![], vec![])
            .await
            .config
            .is_none()
    );

    // a change while online is pushed
    let _: api::ScheduleSaved = cp
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: Some(saved.schedule_id.clone()),
                enabled: false,
                ..api::SchedulePut {
                    schedule_id: None,
                    host_id: agent.host_id(),
                    repo_id: repo.clone(),
                    cron: "30 4 * * *".into(),
                    timezone: "Europe/Berlin".into(),
                    params: backup_params(),
                    enabled: true,
                    jitter_secs: 0,
                    timeout_secs: None,
                    grace_secs: None,
                }
            },
        )
        .await;
    // The pushes the two edits spawned may land after the hello put the
    // host online: the version the agent already has can come once more
    // (harmless) before the new one.
    let pushed = loop {
        let (cmd, m) = agent.next_command(WAIT).await.expect("config pushed");
        match cmd.body {
            CommandBody::ConfigChanged { config } => {
                agent.answer(&m, encode(&Ack::ok())).await;
                if config.version > edited.config_version as u64 {
                    break config;
                }
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(!pushed.schedules[0].enabled);

    // a run the agent started from its schedule is recorded as a job
    let run = JobId::generate();
    let origin = JobOrigin::Schedule {
        schedule_id: saved.schedule_id.clone(),
    };
    agent
        .send_started(&run, origin, Some(backup_params()))
        .await
        .unwrap();
    agent
        .send_done(&done_msg(&run, JobOutcome::Warning))
        .await
        .unwrap();
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let j = rm_store::jobs::get(&mut c, run.as_str()).await.unwrap();
    assert_eq!(
        (j.status.as_str(), j.origin.as_str()),
        ("warning", "schedule")
    );
    assert_eq!(j.schedule_id.as_deref(), Some(saved.schedule_id.as_str()));
}

#[tokio::test]
async fn no_password_in_the_clear_on_the_bus_in_sqlite_or_logs() {
    let _log = capture_logs();
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    // everything that crosses the bus, seen by a system-wide wildcard tap
    let tap = bus.tap_all().await.unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let password = "correct-horse-battery-staple-9f3a";
    let repo = repo_with(&cp, "main", password, &[&agent], &[]).await;
    agent.hello(0, vec![], vec![]).await;
    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: agent.host_id(),
                repo_id: repo,
                params: backup_params(),
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await;
    agent.expect_dispatch().await;
    let job = JobId::parse(&created.job_id).unwrap();
    agent
        .send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    agent
        .send_done(&done_msg(&job, JobOutcome::Succeeded))
        .await
        .unwrap();

    let seen = tap.stop().await;
    assert!(
        seen.len() > 10,
        "the tap saw the traffic ({} messages)",
        seen.len()
    );
    for m in &seen {
        assert!(
            !contains(&m.payload, password.as_bytes()),
            "password in clear on {}",
            m.subject
        );
        assert!(
            !contains(&m.payload, b"adminpw"),
            "backend credential in clear on {}",
            m.subject
        );
    }
    // at rest: every file of the data dir (database, WAL, keys)
    drop(cp);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !contains(&bytes, password.as_bytes()),
            "password in clear in {}",
            path.display()
        );
        assert!(
            !contains(&bytes, b"web-1pw"),
            "REST credential in clear in {}",
            path.display()
        );
    }
    let logs = captured_logs();
    assert!(logs.contains("host enrolled"), "the log was captured");
    assert!(
        !logs.contains(password) && !logs.contains("web-1pw") && !logs.contains("adminpw"),
        "secret in the log"
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
