//! Changing and removing repositories: update verifies new credentials
//! through a host before saving and pushes them to the agents whose
//! credential carried the old ones; detach refuses while the host has
//! schedules there or is the maintenance host; delete refuses while hosts
//! are attached or jobs run, and keeps the job history.

use std::time::Duration;

use rm_bus::msg::*;
use rm_bus::seal::RepoSecrets;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

/// The next config pushed to `agent`, acknowledged.
async fn take_config(agent: &mut Agent) -> AgentConfig {
    let (cmd, m) = agent.next_command(WAIT).await.expect("a config push");
    match cmd.body {
        CommandBody::ConfigChanged { config } => {
            agent.answer(&m, encode(&Ack::ok())).await;
            config
        }
        other => panic!("expected a config push, got {other:?}"),
    }
}

/// Answers the next command, a verify, with `reply`; returns the secrets
/// it was asked to verify.
async fn answer_verify(agent: &mut Agent, reply: QueryReply) -> RepoSecrets {
    let (cmd, m) = agent.next_command(WAIT).await.expect("a verify");
    let CommandBody::RepoVerify { repo } = cmd.body else {
        panic!("expected a verify, got {:?}", cmd.body);
    };
    agent.answer(&m, encode(&reply)).await;
    rm_bus::seal::open(&repo.secrets, &agent.xkey, &agent.cp_xkey).unwrap()
}

fn verified(restic_id: &str) -> QueryReply {
    QueryReply {
        v: PROTOCOL_VERSION,
        ok: true,
        error_kind: None,
        error: None,
        entries: vec![],
        snapshots: None,
        restic_repo_id: Some(restic_id.into()),
    }
}

fn wrong_password() -> QueryReply {
    QueryReply {
        v: PROTOCOL_VERSION,
        ok: false,
        error_kind: Some(ErrorKind::WrongPassword),
        error: Some("Fatal: wrong password or no key found".into()),
        entries: vec![],
        snapshots: None,
        restic_repo_id: None,
    }
}

fn opened(agent: &Agent, config: &AgentConfig) -> Vec<RepoSecrets> {
    config
        .schedules
        .iter()
        .map(|s| rm_bus::seal::open(&s.repo.secrets, &agent.xkey, &agent.cp_xkey).unwrap())
        .collect()
}

async fn schedule(cp: &Cp, host: &Agent, repo: &str, params: JobParams) -> String {
    let saved: api::ScheduleSaved = cp
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: host.host_id(),
                repo_id: repo.into(),
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
                params,
                enabled: true,
                jitter_secs: 0,
                timeout_secs: None,
                grace_secs: None,
            },
        )
        .await;
    saved.schedule_id
}

fn forget_params() -> JobParams {
    JobParams::Forget {
        retention: Retention {
            keep_last: Some(3),
            ..Default::default()
        },
        host_name: String::new(),
        prune: false,
    }
}

async fn repo_row(db: &rm_store::Store, id: &str) -> Option<rm_store::repos::Repo> {
    let mut c = db.read().await.unwrap();
    rm_store::repos::get(&mut c, id).await.ok()
}

async fn audited(db: &rm_store::Store, action: &str) -> usize {
    let mut c = db.read().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = ?")
        .bind(action)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    usize::try_from(n).unwrap()
}

fn patch(key: &api::PubKey, url: Option<&str>, password: Option<&str>) -> api::SealedSecretsPatch {
    api::SealedSecretsPatch::seal(
        &api::RepoSecretsPatch {
            url: url.map(str::to_owned),
            password: password.map(str::to_owned),
            env: None,
        },
        &key.xkey,
    )
    .unwrap()
}

/// web-1 (full access, maintenance host) and web-2 (append-only with its
/// own REST user), each with a backup schedule on "main"; both online with
/// their configs applied.
async fn two_hosts(bus: &TestBus, cp: &Cp) -> (Agent, Agent, String) {
    let mut a = Agent::enroll(bus, cp, "web-1").await.unwrap();
    let mut b = Agent::enroll(bus, cp, "web-2").await.unwrap();
    let repo = repo_with(cp, "main", "pw", &[&b], &[&a]).await;
    let _: api::Done = cp
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(a.host_id()),
            },
        )
        .await;
    schedule(cp, &a, &repo, backup_params()).await;
    schedule(cp, &b, &repo, backup_params()).await;
    a.hello(0, vec![], vec![]).await;
    b.hello(0, vec![], vec![]).await;
    (a, b, repo)
}

#[tokio::test]
async fn an_update_is_verified_first_a_wrong_password_changes_nothing_and_new_secrets_reach_the_agents_that_used_the_old()
 {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let (mut a, mut b, repo) = two_hosts(&bus, &cp).await;
    let db = cp.db().await;
    let key: api::PubKey = cp.call(api::PUBKEY, serde_json::json!({})).await;
    let before = repo_row(&db, &repo).await.unwrap();

    // A wrong password: verified on the maintenance host, refused by name,
    // nothing saved (not even the new name).
    let call = cp.call_raw::<_, api::RepoUpdated>(
        api::REPO_UPDATE,
        api::RepoUpdate {
            repo_id: repo.clone(),
            name: Some("main-renamed".into()),
            secrets: Some(patch(&key, None, Some("wrong"))),
            verify_on_host: None,
        },
    );
    let (refused, asked) = tokio::join!(call, answer_verify(&mut a, wrong_password()));
    let err = refused.unwrap_err();
    assert_eq!(err.code, "wrong_password", "{err:?}");
    assert!(
        err.message.contains("wrong repository password")
            && err.message.contains("nothing was changed"),
        "{}",
        err.message
    );
    assert_eq!(asked.password, "wrong");
    assert_eq!(
        asked.repository,
        "rest:http://admin:adminpw@127.0.0.1:1/main"
    );
    assert_eq!(repo_row(&db, &repo).await.unwrap(), before);
    assert_eq!(audited(&db, "repo.update").await, 0);

    // Renamed with a new password: saved, and both agents get it (web-2
    // keeps its own REST user's URL).
    let call = cp.call_raw::<_, api::RepoUpdated>(
        api::REPO_UPDATE,
        api::RepoUpdate {
            repo_id: repo.clone(),
            name: Some("main-renamed".into()),
            secrets: Some(patch(&key, None, Some("newpw"))),
            verify_on_host: None,
        },
    );
    let (done, _) = tokio::join!(call, answer_verify(&mut a, verified("abcd1234")));
    let done = done.unwrap();
    assert_eq!(done.verified_on, Some(a.host_id()));
    let mut updated = done.hosts_updated.clone();
    updated.sort();
    let mut both = vec![a.host_id(), b.host_id()];
    both.sort();
    assert_eq!(updated, both);
    let (ca, cb) = tokio::join!(take_config(&mut a), take_config(&mut b));
    let sa = opened(&a, &ca);
    assert_eq!(sa[0].password, "newpw");
    assert_eq!(
        sa[0].repository,
        "rest:http://admin:adminpw@127.0.0.1:1/main"
    );
    let sb = opened(&b, &cb);
    assert_eq!(sb[0].password, "newpw");
    assert_eq!(
        sb[0].repository,
        "rest:http://web-2:web-2pw@127.0.0.1:1/main"
    );
    let row = repo_row(&db, &repo).await.unwrap();
    assert_eq!(row.name, "main-renamed");
    assert_eq!(
        (row.status.as_str(), row.restic_repo_id.as_deref()),
        ("ok", Some("abcd1234"))
    );
    assert_eq!(audited(&db, "repo.update").await, 1);

    // A new URL: the full-access host follows; web-2's own URL is kept and
    // named, and its agent gets no push.
    let call = cp.call_raw::<_, api::RepoUpdated>(
        api::REPO_UPDATE,
        api::RepoUpdate {
            repo_id: repo.clone(),
            name: None,
            secrets: Some(patch(
                &key,
                Some("rest:http://admin:adminpw@127.0.0.1:2/main"),
                None,
            )),
            verify_on_host: None,
        },
    );
    let (done, asked) = tokio::join!(call, answer_verify(&mut a, verified("abcd1234")));
    let done = done.unwrap();
    assert_eq!(asked.password, "newpw", "the stored password is kept");
    assert_eq!(done.hosts_updated, vec![a.host_id()]);
    assert_eq!(done.hosts_kept, vec![b.host_id()]);
    let ca = take_config(&mut a).await;
    assert_eq!(
        opened(&a, &ca)[0].repository,
        "rest:http://admin:adminpw@127.0.0.1:2/main"
    );
    assert_eq!(
        repo_row(&db, &repo).await.unwrap().url_display,
        "rest:http://***@127.0.0.1:2/main"
    );
    assert!(
        b.next_command(Duration::from_millis(300)).await.is_none(),
        "web-2's credential did not change"
    );

    // A URL that opens another restic repository: refused, nothing saved.
    let before = repo_row(&db, &repo).await.unwrap();
    let call = cp.call_raw::<_, api::RepoUpdated>(
        api::REPO_UPDATE,
        api::RepoUpdate {
            repo_id: repo.clone(),
            name: None,
            secrets: Some(patch(
                &key,
                Some("rest:http://admin:adminpw@127.0.0.1:3/other"),
                None,
            )),
            verify_on_host: Some(a.host_id()),
        },
    );
    let (refused, _) = tokio::join!(call, answer_verify(&mut a, verified("ffff0000")));
    let err = refused.unwrap_err();
    assert_eq!(err.code, "different_repository", "{err:?}");
    assert_eq!(repo_row(&db, &repo).await.unwrap(), before);

    // A taken name, and nothing to change: refused without asking a host.
    let _ = repo_with(&cp, "other", "pw", &[], &[]).await;
    let err = cp
        .call_raw::<_, api::RepoUpdated>(
            api::REPO_UPDATE,
            api::RepoUpdate {
                repo_id: repo.clone(),
                name: Some("other".into()),
                secrets: None,
                verify_on_host: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "name_taken", "{err:?}");
    let err = cp
        .call_raw::<_, api::RepoUpdated>(
            api::REPO_UPDATE,
            api::RepoUpdate {
                repo_id: repo.clone(),
                name: Some("main-renamed".into()),
                secrets: None,
                verify_on_host: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid", "{err:?}");
}

#[tokio::test]
async fn detaching_refuses_a_host_with_schedules_there_or_the_maintenance_host_unless_asked_and_pushes_configs_without_the_credential()
 {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let (mut a, mut b, repo) = two_hosts(&bus, &cp).await;
    let db = cp.db().await;
    // web-2's forget runs on web-1, the maintenance host
    let forget = schedule(&cp, &b, &repo, forget_params()).await;
    take_config(&mut a).await;
    let detach =
        |host: &Agent, delete_schedules, new_maint: Option<String>, none| api::RepoDetach {
            repo_id: repo.clone(),
            host_id: host.host_id(),
            delete_schedules,
            new_maintenance_host: new_maint,
            no_maintenance_host: none,
        };
    let attached = |db: rm_store::Store, repo: String| async move {
        let mut c = db.read().await.unwrap();
        rm_store::repos::hosts_of_repo(&mut c, &repo)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.host_id)
            .collect::<Vec<_>>()
    };

    // web-2 has two schedules there: refused, each listed, nothing changed.
    let err = cp
        .call_raw::<_, api::Done>(api::REPO_DETACH, detach(&b, false, None, false))
        .await
        .unwrap_err();
    assert_eq!(err.code, "has_schedules", "{err:?}");
    assert!(
        err.message.contains("web-2")
            && err.message.contains(&forget)
            && err.message.contains("forget"),
        "{}",
        err.message
    );
    assert_eq!(attached(db.clone(), repo.clone()).await.len(), 2);

    // web-1 is the maintenance host: refused until another is chosen or
    // none confirmed; web-2 (append-only) cannot take it.
    let err = cp
        .call_raw::<_, api::Done>(api::REPO_DETACH, detach(&a, true, None, false))
        .await
        .unwrap_err();
    assert_eq!(err.code, "maintenance_host", "{err:?}");
    assert!(err.message.contains("web-1"), "{}", err.message);
    let err = cp
        .call_raw::<_, api::Done>(api::REPO_DETACH, detach(&a, true, Some(b.host_id()), false))
        .await
        .unwrap_err();
    assert_eq!(err.code, "conflict", "{err:?}");
    assert!(err.message.contains("full access"), "{}", err.message);
    assert_eq!(attached(db.clone(), repo.clone()).await.len(), 2);

    // web-2 with its schedules: its agent gets a config without them, and
    // web-1 stops running web-2's forget.
    let _: api::Done = cp
        .call(api::REPO_DETACH, detach(&b, true, None, false))
        .await;
    let (ca, cb) = tokio::join!(take_config(&mut a), take_config(&mut b));
    assert!(cb.schedules.is_empty(), "{cb:?}");
    assert_eq!(ca.schedules.len(), 1, "only web-1's own backup is left");
    assert_eq!(attached(db.clone(), repo.clone()).await, vec![a.host_id()]);
    {
        let mut c = db.read().await.unwrap();
        assert!(rm_store::schedules::get(&mut c, &forget).await.is_err());
    }

    // web-1, confirming the repository keeps no maintenance host.
    let _: api::Done = cp
        .call(api::REPO_DETACH, detach(&a, true, None, true))
        .await;
    let ca = take_config(&mut a).await;
    assert!(ca.schedules.is_empty(), "{ca:?}");
    let row = repo_row(&db, &repo).await.unwrap();
    assert_eq!(row.maintenance_host_id, None);
    assert!(attached(db.clone(), repo.clone()).await.is_empty());
    assert_eq!(audited(&db, "repo.detach").await, 2);

    // not attached any more
    let err = cp
        .call_raw::<_, api::Done>(api::REPO_DETACH, detach(&a, true, None, true))
        .await
        .unwrap_err();
    assert_eq!(err.code, "not_found", "{err:?}");
}

#[tokio::test]
async fn deleting_refuses_while_jobs_run_or_hosts_are_attached_and_keeps_the_job_history() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let db = cp.db().await;
    // web-1 has not said hello yet: its job stays queued
    let mut a = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&a], &[]).await;
    let sched = schedule(&cp, &a, &repo, backup_params()).await;
    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: a.host_id(),
                repo_id: repo.clone(),
                params: backup_params(),
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await;
    let delete = |detach_hosts| api::RepoDelete {
        repo_id: repo.clone(),
        detach_hosts,
    };

    let err = cp
        .call_raw::<_, api::Done>(api::REPO_DELETE, delete(true))
        .await
        .unwrap_err();
    assert_eq!(err.code, "jobs_running", "{err:?}");
    assert!(err.message.contains(&created.job_id), "{}", err.message);
    let st: api::JobState = cp
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: created.job_id.clone(),
            },
        )
        .await;
    assert_eq!(st.status, "cancelled");

    let err = cp
        .call_raw::<_, api::Done>(api::REPO_DELETE, delete(false))
        .await
        .unwrap_err();
    assert_eq!(err.code, "hosts_attached", "{err:?}");
    assert!(err.message.contains("web-1"), "{}", err.message);
    assert!(repo_row(&db, &repo).await.is_some());

    let v = a
        .hello(0, vec![], vec![])
        .await
        .config
        .expect("config")
        .version;
    let _: api::Done = cp.call(api::REPO_DELETE, delete(true)).await;
    let config = take_config(&mut a).await;
    assert!(config.version > v);
    assert!(config.schedules.is_empty(), "{config:?}");
    assert!(repo_row(&db, &repo).await.is_none());
    let mut c = db.read().await.unwrap();
    assert!(rm_store::schedules::get(&mut c, &sched).await.is_err());
    let job = rm_store::jobs::get(&mut c, &created.job_id).await.unwrap();
    assert_eq!((job.status.as_str(), job.repo_id), ("cancelled", None));
    drop(c);
    assert_eq!(audited(&db, "repo.delete").await, 1);
}

#[tokio::test]
async fn deleting_a_forget_schedule_routed_to_the_maintenance_host_pushes_that_hosts_config() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let (mut a, b, repo) = two_hosts(&bus, &cp).await;
    let forget = schedule(&cp, &b, &repo, forget_params()).await;
    assert_eq!(take_config(&mut a).await.schedules.len(), 2);
    let _: api::Done = cp
        .call(
            api::SCHEDULE_DELETE,
            api::ScheduleRef {
                schedule_id: forget,
            },
        )
        .await;
    let config = take_config(&mut a).await;
    assert_eq!(
        config.schedules.len(),
        1,
        "the maintenance host stops running it"
    );
}
