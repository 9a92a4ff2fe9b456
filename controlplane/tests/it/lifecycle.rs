//! Job lifecycle details: cancel in every state, exclusive jobs per
//! repository, reconciliation (lost jobs, late results), restore onto
//! another host, repository health from results, connection tests.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::JobId;
use rm_bus::creds::Role;
use rm_bus::msg::*;
use rm_bus::subject::JobTopic;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

async fn setup(names: &[&str]) -> (TestBus, tempfile::TempDir, Cp, Vec<Agent>) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agents = Vec::new();
    for n in names {
        agents.push(Agent::enroll(&bus, &cp, n).await.unwrap());
    }
    (bus, dir, cp, agents)
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

#[tokio::test]
async fn cancel_works_in_every_state() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let db = cp.db().await;
    let a = &mut agents[0];

    // queued (host offline): cancelled at once, never dispatched
    let queued: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    let st: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: queued.job_id.clone(),
            },
        )
        .await;
    assert_eq!(st.status, "cancelled");

    // dispatched: the agent is told
    a.hello(0, vec![], vec![]).await;
    let running: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    let spec = a.expect_dispatch().await;
    assert_eq!(
        spec.job_id.as_str(),
        running.job_id,
        "the cancelled job was never dispatched"
    );
    let job = JobId::parse(&running.job_id).unwrap();
    a.send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let st: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: running.job_id.clone(),
            },
        )
        .await;
    assert_eq!(st.status, "running", "running until the agent reports");
    let (cmd, m) = a.next_command(WAIT).await.expect("cancel sent");
    assert_eq!(
        cmd.body,
        CommandBody::Cancel {
            job_id: job.clone()
        }
    );
    a.answer(&m, encode(&Ack::ok())).await;
    let mut done = done_msg(&job, JobOutcome::Cancelled);
    done.summary = None;
    a.send_done(&done).await.unwrap();
    assert_eq!(job_status(&db, &running.job_id).await, "cancelled");

    // finished: cancelling again changes nothing
    let st: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: running.job_id.clone(),
            },
        )
        .await;
    assert_eq!(st.status, "cancelled");
    // cancelled while its dispatch is in flight: the agent accepted it, so
    // it is told to cancel
    let racing: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    // (a retried cancel of the previous job may still be in the queue)
    let m = loop {
        let (cmd, m) = a.next_command(WAIT).await.expect("dispatch");
        match cmd.body {
            CommandBody::Dispatch { .. } => break m,
            CommandBody::Cancel { job_id } if job_id == job => {
                a.answer(&m, encode(&Ack::duplicate())).await
            }
            other => panic!("{other:?}"),
        }
    };
    let st: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: racing.job_id.clone(),
            },
        )
        .await;
    assert_eq!(st.status, "cancelled");
    a.answer(&m, encode(&Ack::ok())).await;
    let (cmd, m) = a
        .next_command(WAIT)
        .await
        .expect("cancel follows the late ack");
    assert_eq!(
        cmd.body,
        CommandBody::Cancel {
            job_id: JobId::parse(&racing.job_id).unwrap()
        }
    );
    a.answer(&m, encode(&Ack::ok())).await;

    let err = cp
        .call_raw::<_, api::JobState>(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: "jnope".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "not_found");
}

#[tokio::test]
async fn prune_waits_for_the_repository_and_cancel_reaches_an_agent_that_was_away() {
    let (bus, _dir, cp, mut agents) = setup(&["web-1", "maint"]).await;
    let (web, maint) = agents.split_at_mut(1);
    let (web, maint) = (&mut web[0], &mut maint[0]);
    let repo = repo_with(&cp, "main", "pw", &[web], &[maint]).await;
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

    let backup: api::JobCreated = cp
        .call(api::JOB_CREATE, create(web, &repo, backup_params()))
        .await;
    web.expect_dispatch().await;
    let bjob = JobId::parse(&backup.job_id).unwrap();
    web.send_started(&bjob, JobOrigin::Dispatch, None)
        .await
        .unwrap();

    // prune is exclusive: it waits while the backup runs
    let prune: api::JobCreated = cp
        .call(api::JOB_CREATE, create(web, &repo, JobParams::Prune {}))
        .await;
    assert_eq!(prune.exec_host_id, maint.host_id());
    dispatcher_looked(&cp).await;
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "prune dispatched beside a running backup"
    );
    assert_eq!(job_status(&db, &prune.job_id).await, "queued");

    let mut done = done_msg(&bjob, JobOutcome::Succeeded);
    done.summary = None;
    web.send_done(&done).await.unwrap();
    // (refresh jobs for web-1 on the repository, if any, are answered)
    let spec = exclusive_next(maint, web).await;
    assert_eq!(spec.job_id.as_str(), prune.job_id);
    eventually("prune dispatched", || async {
        (job_status(&db, &prune.job_id).await == "dispatched").then_some(())
    })
    .await;

    // the maintenance host drops off; cancel is remembered and repeated at hello
    maint.disconnect().await;
    let st: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: prune.job_id.clone(),
            },
        )
        .await;
    assert_eq!(st.status, "dispatched");
    maint.reconnect(&bus).await.unwrap();
    let pjob = JobId::parse(&prune.job_id).unwrap();
    maint.hello(0, vec![pjob.clone()], vec![]).await;
    let (cmd, m) = maint
        .next_command(WAIT)
        .await
        .expect("cancel repeated after hello");
    assert_eq!(cmd.body, CommandBody::Cancel { job_id: pjob });
    maint.answer(&m, encode(&Ack::ok())).await;
}

#[tokio::test]
async fn unknown_jobs_become_lost_and_a_late_result_still_counts() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let created: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    a.expect_dispatch().await;
    let job = JobId::parse(&created.job_id).unwrap();
    let db = cp.db().await;
    eventually("dispatched", || async {
        (job_status(&db, &created.job_id).await == "dispatched").then_some(())
    })
    .await;

    // the agent comes back knowing nothing of it: lost after the grace
    a.hello(0, vec![], vec![]).await;
    eventually("lost", || async {
        (job_status(&db, &created.job_id).await == "lost").then_some(())
    })
    .await;

    // ... unless its result turns up after all
    let mut done = done_msg(&job, JobOutcome::Failed);
    done.error_kind = Some(ErrorKind::WrongPassword);
    done.summary = None;
    a.send_done(&done).await.unwrap();
    let mut c = db.read().await.unwrap();
    let j = rm_store::jobs::get(&mut c, &created.job_id).await.unwrap();
    assert_eq!(
        (j.status.as_str(), j.error_kind.as_deref()),
        ("failed", Some("wrong_password"))
    );

    // a job the agent does report stays put
    drop(c);
    let second: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    a.expect_dispatch().await;
    eventually("dispatched", || async {
        (job_status(&db, &second.job_id).await == "dispatched").then_some(())
    })
    .await;
    let checks = |m: api::Metrics| m.lost_checks;
    let before = checks(cp.call(api::METRICS, serde_json::json!({})).await);
    a.hello(0, vec![JobId::parse(&second.job_id).unwrap()], vec![])
        .await;
    // the hello is answered after its reconciliation: no lost check began
    assert_eq!(
        checks(cp.call(api::METRICS, serde_json::json!({})).await),
        before,
        "a lost check was started for a job the agent holds"
    );
    assert_eq!(job_status(&db, &second.job_id).await, "dispatched");
}

#[tokio::test]
async fn a_hello_composed_before_a_dispatch_arrived_does_not_make_that_job_lost() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "web-2"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0], &agents[1]], &[]).await;
    let db = cp.db().await;
    let mark = |seq| {
        Some(AcceptMark {
            boot: "boot-1".into(),
            seq,
        })
    };
    let (a, b) = agents.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    a.hello_marked(0, vec![], vec![], mark(0)).await;
    b.hello(0, vec![], vec![]).await;

    // web-1 takes the job as its first accept ...
    let created: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    a.expect_dispatch_marked(mark(1)).await;
    eventually("dispatched", || async {
        (job_status(&db, &created.job_id).await == "dispatched").then_some(())
    })
    .await;
    // ... while its hello, composed before that (0 accepts), is on the way
    a.hello_marked(0, vec![], vec![], mark(0)).await;

    // a job web-2 really forgot, noticed after web-1's hello: lost once
    // its grace is over, which is after web-1's job's would have been
    let forgotten: api::JobCreated = cp
        .call(api::JOB_CREATE, create(b, &repo, backup_params()))
        .await;
    b.expect_dispatch().await;
    eventually("dispatched", || async {
        (job_status(&db, &forgotten.job_id).await == "dispatched").then_some(())
    })
    .await;
    b.hello(0, vec![], vec![]).await;
    eventually("web-2's job lost", || async {
        (job_status(&db, &forgotten.job_id).await == "lost").then_some(())
    })
    .await;
    assert_eq!(
        job_status(&db, &created.job_id).await,
        "dispatched",
        "web-1's stale hello proves nothing about a job it accepted later"
    );

    // a hello composed after the accept that lacks the job does count
    a.hello_marked(0, vec![], vec![], mark(1)).await;
    eventually("web-1's job lost", || async {
        (job_status(&db, &created.job_id).await == "lost").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_summary_in_parts_is_reassembled_even_for_a_job_already_called_lost() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "web-2"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0], &agents[1]], &[]).await;
    let db = cp.db().await;
    let (a, b) = agents.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    a.hello(0, vec![], vec![]).await;
    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            create(a, &repo, JobParams::Snapshots { host_name: None }),
        )
        .await;
    a.expect_dispatch().await;
    eventually("dispatched", || async {
        (job_status(&db, &created.job_id).await == "dispatched").then_some(())
    })
    .await;
    // the agent seems to have forgotten it ...
    a.hello(0, vec![], vec![]).await;
    eventually("lost", || async {
        (job_status(&db, &created.job_id).await == "lost").then_some(())
    })
    .await;

    // ... but its result turns up, in parts
    let job = JobId::parse(&created.job_id).unwrap();
    let listing = serde_json::json!([
        {"id": "a".repeat(64), "time": "2026-11-25T16:48:30Z", "hostname": "web-1", "paths": ["/srv/é"], "tags": null},
        {"id": "b".repeat(64), "time": "2026-11-26T16:48:30Z", "hostname": "web-2", "paths": ["/x"], "tags": ["t"]},
    ]);
    let text = listing.to_string();
    let (p0, p1) = text.split_at(text.len() / 2);
    let part = |index: u32, data: &str| {
        encode(&JobPart {
            v: PROTOCOL_VERSION,
            job_id: job.clone(),
            of: "summary".into(),
            index,
            total: 2,
            data: data.into(),
        })
    };
    // another host cannot add to it
    let err = b
        .request(&job, JobTopic::Part, part(0, "[]"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another host"), "{err}");
    // out of order, one re-sent
    for (i, d) in [(1, p1), (0, "stale"), (0, p0), (1, p1)] {
        let ack = a.request(&job, JobTopic::Part, part(i, d)).await.unwrap();
        assert!(ack.ok);
    }
    let mut done = done_msg(&job, JobOutcome::Succeeded);
    done.summary = None;
    done.summary_parts = Some(PartsRef {
        total: 2,
        bytes: text.len() as u64,
    });
    assert!(a.send_done(&done).await.unwrap().ok);

    let mut c = db.read().await.unwrap();
    let j = rm_store::jobs::get(&mut c, &created.job_id).await.unwrap();
    assert_eq!(j.status, "succeeded");
    let summary: serde_json::Value =
        serde_json::from_str(j.summary_json.as_deref().unwrap()).unwrap();
    assert_eq!(summary, listing);
    let cached = rm_store::snapshots::list(&mut c, &repo, None)
        .await
        .unwrap();
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert_eq!(rm_store::parts::count(&mut c).await.unwrap(), 0);
}

#[tokio::test]
async fn restore_onto_another_host_gets_credentials_sealed_to_it() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "rescue"]).await;
    let repo = repo_with(&cp, "main", "pw-restore", &[&agents[0]], &[]).await;
    let target = &mut agents[1];
    target.hello(0, vec![], vec![]).await;
    let params = JobParams::Restore {
        snapshot: "latest".into(),
        include: vec!["/data/a".into()],
        target: RestoreTarget::Path {
            path: "/restore".into(),
        },
    };
    let req = api::JobCreate {
        host_id: agents[0].host_id(),
        repo_id: repo.clone(),
        params,
        timeout_secs: Some(60),
        target_host_id: Some(agents[1].host_id()),
    };
    let created: api::JobCreated = cp.call(api::JOB_CREATE, req).await;
    assert_eq!(created.exec_host_id, agents[1].host_id());
    let target = &mut agents[1];
    let spec = target.expect_dispatch().await;
    let sealed: rm_bus::seal::SealedSecrets =
        rm_bus::seal::open(&spec.repo.secrets, &target.xkey, &target.cp_xkey)
            .expect("sealed to the target");
    assert_eq!(sealed.secrets.password, "pw-restore");
    assert_eq!(spec.timeout_secs, 60);
    // good for reading, for this one job with exactly these parameters
    assert!(spec.repo.append_only);
    let bound = sealed
        .bound
        .expect("the borrowed secret is bound to the job");
    assert_eq!(bound.job_id, created.job_id);
    assert!(bound.read_only);
    assert_eq!(
        bound.params_sha256,
        rm_bus::seal::params_digest(&spec.params)
    );
    assert!(bound.check(spec.job_id.as_str(), &spec.params).is_ok());
    assert!(bound.check("jother", &spec.params).is_err());
    // another kind cannot run elsewhere
    let req = api::JobCreate {
        host_id: agents[0].host_id(),
        repo_id: repo,
        params: backup_params(),
        timeout_secs: None,
        target_host_id: Some(agents[1].host_id()),
    };
    let err = cp
        .call_raw::<_, api::JobCreated>(api::JOB_CREATE, req)
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid");
}

#[tokio::test]
async fn a_full_access_credential_never_leaves_its_host_for_a_restore() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "rescue"]).await;
    // web-1 holds only a full-access credential
    let repo = repo_with(&cp, "main", "pw", &[], &[&agents[0]]).await;
    agents[1].hello(0, vec![], vec![]).await;
    let db = cp.db().await;
    let req = api::JobCreate {
        host_id: agents[0].host_id(),
        repo_id: repo,
        params: JobParams::Restore {
            snapshot: "latest".into(),
            include: vec![],
            target: RestoreTarget::Path {
                path: "/restore".into(),
            },
        },
        timeout_secs: Some(60),
        target_host_id: Some(agents[1].host_id()),
    };
    let created: api::JobCreated = cp.call(api::JOB_CREATE, req).await;
    let job = eventually("the restore fails with the reason", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &created.job_id).await.ok()?;
        (j.status == "failed").then_some(j)
    })
    .await;
    assert!(
        job.error
            .as_deref()
            .unwrap_or("")
            .contains("cannot delete data"),
        "{job:?}"
    );
    // The job failed before anything left: no wait needed to know.
    assert!(
        agents[1].next_command(Duration::ZERO).await.is_none(),
        "nothing was sent to the target"
    );
}

#[tokio::test]
async fn results_keep_repository_health_current() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let created: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    a.expect_dispatch().await;
    let job = JobId::parse(&created.job_id).unwrap();
    a.send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    a.send_done(&done_msg(&job, JobOutcome::Succeeded))
        .await
        .unwrap();

    // the backup triggers a refresh: snapshots, both stats modes, locks
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let spec = a.expect_dispatch().await;
        let summary = match &spec.params {
            JobParams::Snapshots { host_name: None } => serde_json::json!([
                {"time": "2026-11-25T10:00:00.5+01:00", "id": "a".repeat(64), "short_id": "aaaaaaaa", "hostname": "web-1", "paths": ["/data"]},
                {"time": "2026-11-25T11:00:00Z", "id": "b".repeat(64), "short_id": "bbbbbbbb", "hostname": "other", "paths": ["/srv"], "tags": ["x"]}
            ]),
            JobParams::Stats {
                mode: StatsMode::RestoreSize,
                ..
            } => {
                serde_json::json!({"total_size": 3000, "total_file_count": 5, "snapshots_count": 2})
            }
            JobParams::Stats {
                mode: StatsMode::RawData,
                ..
            } => {
                serde_json::json!({"total_size": 1000, "total_uncompressed_size": 1500, "compression_ratio": 1.5, "total_blob_count": 9})
            }
            JobParams::Locks {} => serde_json::json!([
                {"id": "c".repeat(64), "time": "2026-11-25T11:00:00Z", "exclusive": false, "hostname": "web-1", "pid": 7, "stale": true}
            ]),
            other => panic!("unexpected refresh job {other:?}"),
        };
        kinds.push(spec.params.kind());
        a.send_started(&spec.job_id, JobOrigin::Dispatch, None)
            .await
            .unwrap();
        let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
        d.summary = Some(summary);
        a.send_done(&d).await.unwrap();
    }
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        vec![
            JobKind::Locks,
            JobKind::Snapshots,
            JobKind::Stats,
            JobKind::Stats
        ]
    );
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let h = rm_store::health::latest(&mut c, &repo).await.unwrap();
    assert_eq!(
        (
            h.snapshot_count,
            h.total_size,
            h.raw_size,
            h.uncompressed_size
        ),
        (Some(2), Some(3000), Some(1000), Some(1500))
    );
    assert_eq!(h.dedup_ratio, Some(3.0));
    assert_eq!(h.compression_ratio, Some(1.5));
    assert_eq!(h.lock_count, Some(1));
    // the cache now holds restic's list (the backup's own entry replaced)
    let snaps = rm_store::snapshots::list(&mut c, &repo, None)
        .await
        .unwrap();
    let ids: Vec<&str> = snaps.iter().map(|s| s.short_id.as_str()).collect();
    assert_eq!(ids, vec!["bbbbbbbb", "aaaaaaaa"], "newest first");
    assert_eq!(snaps[1].time, 1_795_597_200_500);
}

#[tokio::test]
async fn connection_test_reports_a_clear_reason() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let host = a.host_id();
    let answer = async {
        let (cmd, m) = a.next_command(WAIT).await.expect("verify sent");
        assert!(
            matches!(cmd.body, CommandBody::RepoVerify { .. }),
            "{cmd:?}"
        );
        let reply = QueryReply {
            v: PROTOCOL_VERSION,
            ok: false,
            error_kind: Some(ErrorKind::WrongPassword),
            error: Some("Fatal: wrong password or no key found".into()),
            entries: vec![],
            snapshots: None,
            restic_repo_id: None,
        };
        a.answer(&m, encode(&reply)).await;
    };
    let call = cp.call::<_, api::RepoTestResult>(
        api::REPO_TEST,
        api::RepoTest {
            repo_id: repo.clone(),
            host_id: host,
        },
    );
    let ((), result) = tokio::join!(answer, call);
    assert!(!result.ok);
    let msg = result.error.unwrap();
    assert!(
        msg.starts_with("wrong repository password — edit the repository's credentials"),
        "{msg}"
    );
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let r = rm_store::repos::get(&mut c, &repo).await.unwrap();
    assert_eq!(r.status, "error");
}

#[tokio::test]
async fn every_kind_validates_its_parameters() {
    let (_bus, _dir, cp, agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let bad = [
        JobParams::Backup {
            paths: vec![],
            excludes: vec![],
            tags: vec![],
            one_file_system: false,
            host_name: None,
        },
        JobParams::Forget {
            retention: Retention::default(),
            host_name: String::new(),
            prune: false,
        },
        JobParams::Forget {
            retention: Retention {
                keep_within: Some("1 year".into()),
                ..Retention::default()
            },
            host_name: String::new(),
            prune: false,
        },
        JobParams::Check {
            read_data_subset: Some("150%".into()),
        },
        JobParams::Diff {
            from: String::new(),
            to: "abc".into(),
        },
        JobParams::Stats {
            mode: StatsMode::RawData,
            snapshot: Some(" ".into()),
        },
        JobParams::Restore {
            snapshot: "latest".into(),
            include: vec![],
            target: RestoreTarget::Path {
                path: "relative/dir".into(),
            },
        },
        JobParams::Unknown,
    ];
    for params in bad {
        let err = cp
            .call_raw::<_, api::JobCreated>(
                api::JOB_CREATE,
                create(&agents[0], &repo, params.clone()),
            )
            .await
            .expect_err("refused");
        assert_eq!(err.code, "invalid", "{params:?}: {err:?}");
        assert!(!err.message.is_empty());
    }
    for params in [
        JobParams::Check {
            read_data_subset: Some("1/10".into()),
        },
        JobParams::Unlock { remove_all: true },
        JobParams::Snapshots { host_name: None },
        JobParams::Stats {
            mode: StatsMode::RestoreSize,
            snapshot: None,
        },
        JobParams::Diff {
            from: "aa".into(),
            to: "bb".into(),
        },
    ] {
        let _: api::JobCreated = cp
            .call(api::JOB_CREATE, create(&agents[0], &repo, params))
            .await;
    }
}

/// A backup created, dispatched and started on `a`; its failed `done`.
async fn started_job(cp: &Cp, repo: &str, a: &mut Agent) -> (api::JobCreated, JobDone) {
    let created: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, repo, backup_params()))
        .await;
    a.expect_dispatch().await;
    let job = JobId::parse(&created.job_id).unwrap();
    a.send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let mut done = done_msg(&job, JobOutcome::Failed);
    done.summary = None;
    (created, done)
}

/// Every event of a job's life names the job's repository, so a
/// repository's page can take its own jobs' events and no others.
#[tokio::test]
async fn a_jobs_queued_started_and_finished_events_name_its_repository() {
    let (bus, _dir, cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let watcher = bus.connect_role(Role::Web).await.unwrap();
    let mut events = watcher.subscribe("rm.evt.job.>").await.unwrap();
    watcher.flush().await.unwrap();
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let (created, done) = started_job(&cp, &repo, a).await;
    a.send_done(&done).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("the job's events")
            .unwrap();
        let ev: EventMsg = decode("event", &m.payload).unwrap();
        assert_eq!(
            ev.job.as_ref().map(JobId::as_str),
            Some(created.job_id.as_str())
        );
        seen.push((m.subject.to_string(), ev.repo));
    }
    let some = Some(repo.clone());
    assert_eq!(
        seen,
        [
            ("rm.evt.job.queued".to_owned(), some.clone()),
            ("rm.evt.job.started".to_owned(), some.clone()),
            ("rm.evt.job.finished".to_owned(), some),
        ]
    );
}

#[tokio::test]
async fn job_finished_is_published_after_the_result_is_committed() {
    let (bus, _dir, cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let db = cp.db().await;
    let watcher = bus.connect_role(Role::Web).await.unwrap();
    let mut events = watcher
        .subscribe(rm_bus::subject::Event::JobFinished.subject())
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let (created, done) = started_job(&cp, &repo, a).await;
    // The commit that finishes this job takes a while: an event published
    // before the commit would reach the watcher while a read still sees
    // the job running.
    let mut c = db.pool().acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER slow_finish AFTER UPDATE OF status ON jobs
         WHEN NEW.id = '{}' AND NEW.status = 'failed'
         BEGIN
           SELECT (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)
                   SELECT COUNT(*) FROM c);
         END;",
        created.job_id
    )))
    .execute(&mut *c)
    .await
    .unwrap();
    drop(c);
    // sent without waiting for the ack: the event races the commit
    let subj = rm_bus::subject::agent_job(&a.host, &done.job_id, rm_bus::subject::JobTopic::Done);
    a.client
        .publish_with_reply(subj, format!("_INBOX.{}.lost", a.host), encode(&done))
        .await
        .unwrap();
    a.client.flush().await.unwrap();
    let m = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("job.finished")
        .unwrap();
    // whoever the event wakes finds the result already committed
    assert_eq!(job_status(&db, &created.job_id).await, "failed");
    let ev: EventMsg = decode("event", &m.payload).unwrap();
    assert_eq!(
        ev.job.as_ref().map(JobId::as_str),
        Some(created.job_id.as_str())
    );
    assert_eq!(ev.host.as_ref().map(|h| h.to_string()), Some(a.host_id()));
    // a replayed `done` records nothing new and publishes nothing: the
    // next event is the next job's (events leave in commit order)
    let ack = a.send_done(&done).await.unwrap();
    assert!(ack.duplicate);
    let (next, done) = started_job(&cp, &repo, a).await;
    a.send_done(&done).await.unwrap();
    let m = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("the next job.finished")
        .unwrap();
    let ev: EventMsg = decode("event", &m.payload).unwrap();
    assert_eq!(
        ev.job.as_ref().map(JobId::as_str),
        Some(next.job_id.as_str()),
        "no second event for the duplicate"
    );
}

#[tokio::test]
async fn check_and_forget_wait_for_a_running_backup_too() {
    let (_bus, _dir, cp, mut agents) = setup(&["web-1", "maint"]).await;
    let (web, maint) = agents.split_at_mut(1);
    let (web, maint) = (&mut web[0], &mut maint[0]);
    let repo = repo_with(&cp, "main", "pw", &[web], &[maint]).await;
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
    let backup: api::JobCreated = cp
        .call(api::JOB_CREATE, create(web, &repo, backup_params()))
        .await;
    web.expect_dispatch().await;
    let bjob = JobId::parse(&backup.job_id).unwrap();
    web.send_started(&bjob, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let check: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            create(
                maint,
                &repo,
                JobParams::Check {
                    read_data_subset: None,
                },
            ),
        )
        .await;
    let forget: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            create(
                web,
                &repo,
                JobParams::Forget {
                    retention: Retention {
                        keep_last: Some(3),
                        ..Retention::default()
                    },
                    host_name: String::new(),
                    prune: false,
                },
            ),
        )
        .await;
    assert_eq!(forget.exec_host_id, maint.host_id());
    dispatcher_looked(&cp).await;
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "check or forget dispatched beside a running backup"
    );
    assert_eq!(job_status(&db, &check.job_id).await, "queued");
    assert_eq!(job_status(&db, &forget.job_id).await, "queued");
    let mut done = done_msg(&bjob, JobOutcome::Succeeded);
    done.summary = None;
    web.send_done(&done).await.unwrap();
    // one exclusive job at a time: the second waits for the first (the
    // backup's refresh jobs on web-1 share the repository: answered)
    let first = exclusive_next(maint, web).await;
    dispatcher_looked(&cp).await;
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "two exclusive jobs at once"
    );
    maint
        .send_started(&first.job_id, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let mut d = done_msg(&first.job_id, JobOutcome::Succeeded);
    d.summary = None;
    maint.send_done(&d).await.unwrap();
    let second = exclusive_next(maint, web).await;
    let mut got = [first.job_id.to_string(), second.job_id.to_string()];
    got.sort();
    let mut want = [check.job_id.clone(), forget.job_id.clone()];
    want.sort();
    assert_eq!(got, want);
}

/// Answers dispatched refresh jobs (snapshots, stats, locks) with empty
/// results until `n` arrived; returns their kinds, sorted.
async fn answer_refresh(a: &mut Agent, n: usize) -> Vec<JobKind> {
    let mut kinds = Vec::new();
    for _ in 0..n {
        let spec = a.expect_dispatch().await;
        let summary = match spec.params.kind() {
            JobKind::Snapshots | JobKind::Locks => serde_json::json!([]),
            JobKind::Stats => serde_json::json!({"total_size": 1}),
            other => panic!("unexpected {other:?}"),
        };
        kinds.push(spec.params.kind());
        a.send_started(&spec.job_id, JobOrigin::Dispatch, None)
            .await
            .unwrap();
        let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
        d.summary = Some(summary);
        a.send_done(&d).await.unwrap();
    }
    kinds.sort_by_key(|k| format!("{k:?}"));
    kinds
}

async fn maintenance_env(
    health_every: Duration,
) -> (TestBus, tempfile::TempDir, Cp, Agent, String) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CpOptions::default();
    opts.timings.health_every = health_every;
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let mut maint = Agent::enroll(&bus, &cp, "maint").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[], &[&maint]).await;
    let _: api::Done = cp
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id()),
            },
        )
        .await;
    maint.hello(0, vec![], vec![]).await;
    (bus, dir, cp, maint, repo)
}

const REFRESH: [JobKind; 4] = [
    JobKind::Locks,
    JobKind::Snapshots,
    JobKind::Stats,
    JobKind::Stats,
];

#[tokio::test]
async fn health_is_refreshed_periodically_without_any_job() {
    let (_bus, _dir, _cp, mut maint, _repo) = maintenance_env(Duration::from_secs(1)).await;
    assert_eq!(answer_refresh(&mut maint, 4).await, REFRESH);
    // and again at the next period
    assert_eq!(answer_refresh(&mut maint, 4).await, REFRESH);
}

#[tokio::test]
async fn health_is_refreshed_after_a_forget() {
    // the periodic refresh is hours away: what follows is the forget's
    let (_bus, _dir, cp, mut maint, repo) = maintenance_env(Duration::from_secs(6 * 3600)).await;
    let forget: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            create(
                &maint,
                &repo,
                JobParams::Forget {
                    retention: Retention {
                        keep_daily: Some(7),
                        ..Retention::default()
                    },
                    host_name: String::new(),
                    prune: true,
                },
            ),
        )
        .await;
    let spec = maint.expect_dispatch().await;
    assert_eq!(spec.job_id.as_str(), forget.job_id);
    // Nothing else was queued before the forget ended: a whole sweeper
    // tick (where periodic refreshes are queued) ran since (an observable,
    // not a sleep) and the repository still has the forget as its only job.
    sweeper_looked(&cp).await;
    let db = cp.db().await;
    let jobs_of_repo: i64 = {
        let mut c = db.read().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE repo_id = ?")
            .bind(&repo)
            .fetch_one(&mut *c)
            .await
            .unwrap()
    };
    assert_eq!(jobs_of_repo, 1, "nothing else was queued");
    assert!(
        maint.next_command(Duration::ZERO).await.is_none(),
        "nothing else was sent"
    );
    maint
        .send_started(&spec.job_id, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
    d.summary = Some(serde_json::json!([]));
    maint.send_done(&d).await.unwrap();
    assert_eq!(answer_refresh(&mut maint, 4).await, REFRESH);
}

#[tokio::test]
async fn an_agent_ahead_of_a_restored_database_gets_the_current_config() {
    let (_bus, _dir, _cp, mut agents) = setup(&["web-1"]).await;
    let a = &mut agents[0];
    // in step: nothing to send
    assert!(a.hello(0, vec![], vec![]).await.config.is_none());
    // the agent applied version 7, which this database never had
    let reply = a.hello(7, vec![], vec![]).await;
    let config = reply.config.expect("the control plane's config");
    assert_eq!(config.version, 0);
    assert!(config.schedules.is_empty());
}

#[tokio::test]
async fn a_result_whose_ack_was_lost_is_applied_exactly_once_when_resent_after_a_restart() {
    let (bus, dir, mut cp, mut agents) = setup(&["web-1"]).await;
    let repo = repo_with(&cp, "main", "pw", &[&agents[0]], &[]).await;
    let a = &mut agents[0];
    a.hello(0, vec![], vec![]).await;
    let created: api::JobCreated = cp
        .call(api::JOB_CREATE, create(a, &repo, backup_params()))
        .await;
    a.expect_dispatch().await;
    let job = JobId::parse(&created.job_id).unwrap();
    a.send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let done = done_msg(&job, JobOutcome::Succeeded);
    // The ack is lost for real: it goes to an inbox nobody listens on, as
    // when the agent dies between sending and reading the answer.
    let subj = rm_bus::subject::agent_job(&a.host, &job, JobTopic::Done);
    a.client
        .publish_with_reply(subj, format!("_INBOX.{}.gone", a.host), encode(&done))
        .await
        .unwrap();
    a.client.flush().await.unwrap();
    let db = cp.db().await;
    eventually("the result committed", || async {
        (job_status(&db, &created.job_id).await == "succeeded").then_some(())
    })
    .await;
    let count_jobs = |db: rm_store::Store, host: String| async move {
        let mut c = db.read().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE exec_host_id = ?")
            .bind(host)
            .fetch_one(&mut *c)
            .await
            .unwrap();
        n
    };
    let first = {
        let mut c = db.read().await.unwrap();
        rm_store::jobs::get(&mut c, &created.job_id).await.unwrap()
    };
    let jobs_before = count_jobs(db.clone(), a.host_id()).await;
    drop(db);

    // The control plane restarts; the agent's outbox sends the same
    // result again (it never saw an ack).
    cp.stop().await;
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let ack = a.send_done(&done).await.unwrap();
    assert!(ack.ok && ack.duplicate, "{ack:?}");
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let again = rm_store::jobs::get(&mut c, &created.job_id).await.unwrap();
    assert_eq!(again, first, "the replay changed the job");
    let phases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_ingest WHERE job_id = ?")
        .bind(&created.job_id)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(phases, 2, "started and done, once each");
    drop(c);
    assert_eq!(
        count_jobs(db, a.host_id()).await,
        jobs_before,
        "the replay queued more work (a second health refresh)"
    );
}
