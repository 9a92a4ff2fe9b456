//! The executor on its own (a real bus client, no control plane): a
//! re-sent dispatch is not run twice, a full outbox refuses new work but
//! never drops a result, and secrets that do not open fail the job clearly.

use std::sync::Arc;
use std::time::Duration;

use nkeys::XKey;
use rm_agent::exec::{Accepted, ExecConfig, Executor};
use rm_agent::journal::Journal;
use rm_agent::outbox::Outbox;
use rm_bus::creds::Role;
use rm_bus::msg::{JobDone, JobOrigin, JobParams, JobSpec, RepoAccess, Sealed, decode};
use rm_bus::subject::JobTopic;
use rm_bus::{HostId, JobId};
use rm_testkit::TestBus;

use crate::support::*;

fn spec(id: &str) -> JobSpec {
    JobSpec {
        job_id: JobId::parse(id).unwrap(),
        params: JobParams::Snapshots { host_name: None },
        repo: RepoAccess {
            repo_id: "r1".into(),
            secrets: Sealed("bm90IGEgYm94".into()),
            append_only: true,
        },
        timeout_secs: 60,
    }
}

async fn executor(
    bus: &TestBus,
    dir: &std::path::Path,
    outbox_max: usize,
) -> (Arc<Executor>, Arc<Outbox>) {
    executor_keyed(bus, dir, outbox_max, XKey::new(), XKey::new().public_key()).await
}

async fn executor_keyed(
    bus: &TestBus,
    dir: &std::path::Path,
    outbox_max: usize,
    xkey: XKey,
    controlplane_xkey: String,
) -> (Arc<Executor>, Arc<Outbox>) {
    let host = HostId::parse("ex-1").unwrap();
    let client = bus.connect_role(Role::Agent(host.clone())).await.unwrap();
    let outbox = Arc::new(Outbox::open(dir.join("outbox"), outbox_max).unwrap());
    let journal = Journal::open(dir.join("jobs")).unwrap();
    let exec = Executor::new(
        ExecConfig {
            host,
            client: client.client.clone(),
            xkey,
            controlplane_xkey,
            restic: rm_restic::Restic::detect(restic_bin()).await.ok(),
            restic_error: None,
            scratch_dir: dir.to_path_buf(),
            cache_dir: dir.to_path_buf(),
            clock: rm_bus::clock::system(),
            progress_interval: Duration::from_millis(500),
            log_flush: Duration::from_millis(100),
            lock_hostname: String::new(),
            claim_retry: Duration::from_millis(200),
            lock_check_file: None,
        },
        journal,
        outbox.clone(),
    );
    (exec, outbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_full_outbox_and_unopenable_secrets() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (exec, outbox) = executor(&bus, dir.path(), 3).await;

    assert_eq!(exec.accept(spec("j1"), JobOrigin::Dispatch), Accepted::New);
    // the control plane's retry of the same dispatch
    assert_eq!(
        exec.accept(spec("j1"), JobOrigin::Dispatch),
        Accepted::Duplicate
    );
    // its result: failed, the secrets were not sealed to this agent
    let done = eventually("j1 done in the outbox", || async {
        outbox
            .pending()
            .ok()?
            .into_iter()
            .find(|e| e.job.as_str() == "j1" && e.topic == JobTopic::Done)
    })
    .await;
    let d: JobDone = decode("done", &std::fs::read(&done.path).unwrap()).unwrap();
    assert_eq!(
        d.error_kind,
        Some(rm_bus::msg::ErrorKind::InvalidRequest),
        "{d:?}"
    );
    assert!(d.error.unwrap().contains("do not open"));
    // finished: still a duplicate, never run again
    assert_eq!(
        exec.accept(spec("j1"), JobOrigin::Dispatch),
        Accepted::Duplicate
    );
    assert_eq!(outbox.len(), 2, "started and done of j1, once each");

    // the outbox at its bound (3): new work is refused with the reason ...
    assert_eq!(exec.accept(spec("j2"), JobOrigin::Dispatch), Accepted::New);
    eventually("j2 done", || async {
        (outbox.jobs_with_done_pending().len() == 2).then_some(())
    })
    .await;
    match exec.accept(spec("j3"), JobOrigin::Dispatch) {
        Accepted::Refused(why) => assert!(why.contains("outbox is full"), "{why}"),
        other => panic!("accepted into a full outbox: {other:?}"),
    }
    // ... but j2's result was written past it, not dropped
    assert_eq!(outbox.len(), 4);
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_crash_sends_each_result_once() {
    use rm_agent::journal::{JobRecord, JobState};
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // the state a crash leaves: j1 running with its `done` already written,
    // j2 running without one
    {
        let journal = Journal::open(dir.path().join("jobs")).unwrap();
        let outbox = Outbox::open(dir.path().join("outbox"), 100).unwrap();
        for id in ["j1", "j2"] {
            journal
                .put(&JobRecord {
                    spec: spec(id),
                    origin: JobOrigin::Dispatch,
                    state: JobState::Running,
                    accepted_ms: 1,
                    started_ms: Some(2),
                    not_before_ms: None,
                })
                .unwrap();
        }
        outbox
            .push(&JobId::parse("j1").unwrap(), JobTopic::Done, b"{}")
            .unwrap();
    }
    let (exec, outbox) = executor(&bus, dir.path(), 100).await;
    exec.resume().unwrap();
    let dones: Vec<String> = outbox
        .pending()
        .unwrap()
        .into_iter()
        .filter(|e| e.topic == JobTopic::Done)
        .map(|e| e.job.to_string())
        .collect();
    assert_eq!(
        dones,
        ["j1", "j2"],
        "j1's result is not doubled; j2 gets one"
    );
    let (accepted, running) = exec.held();
    assert!(accepted.is_empty());
    assert_eq!(running.len(), 2, "both results are still on their way");
    let journal = Journal::open(dir.path().join("jobs")).unwrap();
    assert!(journal.all().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_dispatch_are_accepted_once_and_run_once() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (exec, outbox) = executor(&bus, dir.path(), 100).await;
    for round in 0..5 {
        let id = format!("race{round}");
        // the control plane's re-sends arriving together (each command is
        // handled on its own task); the journal write fsyncs in between
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (exec, barrier, spec) = (exec.clone(), barrier.clone(), spec(&id));
                tokio::task::spawn_blocking(move || {
                    barrier.wait();
                    exec.accept(spec, JobOrigin::Dispatch)
                })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            match t.await.unwrap() {
                Accepted::New => new += 1,
                Accepted::Duplicate => {}
                Accepted::Refused(why) => panic!("refused: {why}"),
            }
        }
        assert_eq!(new, 1, "{id}: accepted {new} times");
        eventually("the job's result", || async {
            outbox
                .jobs_with_done_pending()
                .contains(&JobId::parse(&id).unwrap())
                .then_some(())
        })
        .await;
        let started = outbox
            .pending()
            .unwrap()
            .into_iter()
            .filter(|e| e.job.as_str() == id && e.topic == JobTopic::Started)
            .count();
        assert_eq!(started, 1, "{id} ran once");
    }
    exec.shutdown(Duration::from_secs(5)).await;
}

/// The `done` of `job` once it is in the outbox.
async fn done_of(outbox: &Outbox, job: &str) -> JobDone {
    let e = eventually("the job's done in the outbox", || async {
        outbox
            .pending()
            .ok()?
            .into_iter()
            .find(|e| e.job.as_str() == job && e.topic == JobTopic::Done)
    })
    .await;
    decode("done", &std::fs::read(&e.path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_bound_to_one_restore_is_refused_in_any_other_job() {
    use rm_bus::msg::RestoreTarget;
    use rm_bus::seal::{JobBinding, RepoSecrets, SealedSecrets, params_digest};
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent_key = XKey::new();
    let cp_key = XKey::new();
    let agent_pub = agent_key.public_key();
    let (exec, outbox) =
        executor_keyed(&bus, dir.path(), 100, agent_key, cp_key.public_key()).await;
    let restore = |path: &str| JobParams::Restore {
        snapshot: "latest".into(),
        include: vec!["/data/a".into()],
        target: RestoreTarget::Path { path: path.into() },
    };
    // what the control plane seals for restore job r1 onto this host
    let sealed = rm_bus::seal::seal(
        &SealedSecrets {
            secrets: RepoSecrets {
                repository: dir.path().join("no-repo").display().to_string(),
                password: "pw".into(),
                env: Default::default(),
            },
            bound: Some(JobBinding {
                job_id: "r1".into(),
                params_sha256: params_digest(&restore("/restore")),
                read_only: true,
            }),
        },
        &cp_key,
        &agent_pub,
    )
    .unwrap();
    let with = |id: &str, params: JobParams| JobSpec {
        job_id: JobId::parse(id).unwrap(),
        params,
        repo: RepoAccess {
            repo_id: "r".into(),
            secrets: sealed.clone(),
            append_only: true,
        },
        timeout_secs: 60,
    };
    // replayed in a forged command: another job id, other parameters,
    // another kind — each refused before restic runs
    let forged = [
        ("f1", restore("/restore"), "issued for job r1"),
        ("r1", restore("/etc"), "parameters differ"),
        ("f3", JobParams::Prune {}, "issued for job r1"),
    ];
    for (id, params, why) in forged {
        assert_eq!(
            exec.accept(with(id, params), JobOrigin::Dispatch),
            Accepted::New
        );
        let d = done_of(&outbox, id).await;
        assert_eq!(
            d.error_kind,
            Some(rm_bus::msg::ErrorKind::InvalidRequest),
            "{d:?}"
        );
        assert!(
            d.error.as_deref().unwrap_or("").contains(why),
            "{id}: {d:?}"
        );
    }
    // and r1 itself, sent again, is a duplicate: never run twice
    assert_eq!(
        exec.accept(with("r1", restore("/restore")), JobOrigin::Dispatch),
        Accepted::Duplicate,
        "r1 was already taken (with forged parameters) and is not run again"
    );
    exec.shutdown(Duration::from_secs(5)).await;
}

fn scheduled_backup(id: &str) -> JobSpec {
    JobSpec {
        params: JobParams::Backup {
            paths: vec!["/data".into()],
            excludes: vec![],
            tags: vec![],
            one_file_system: false,
            host_name: None,
        },
        ..spec(id)
    }
}

fn from_schedule() -> JobOrigin {
    JobOrigin::Schedule {
        schedule_id: "s1".into(),
    }
}

fn started_in(outbox: &Outbox, job: &str) -> bool {
    outbox
        .pending()
        .unwrap()
        .into_iter()
        .any(|e| e.job.as_str() == job && e.topic == JobTopic::Started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_asks_for_a_shared_claim_and_waits_while_the_repository_is_busy() {
    use futures_util::StreamExt;
    use rm_bus::msg::{Ack, JobClaim, JobKind, encode};
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (exec, outbox) = executor(&bus, dir.path(), 100).await;
    // the control plane's side of the claim, answered by hand
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let subj = rm_bus::subject::agent_job(
        &HostId::parse("ex-1").unwrap(),
        &JobId::parse("sb1").unwrap(),
        JobTopic::Claim,
    );
    let mut asks = cp.client.subscribe(subj).await.unwrap();
    cp.client.flush().await.unwrap();

    assert_eq!(
        exec.accept(scheduled_backup("sb1"), from_schedule()),
        Accepted::New
    );
    // busy twice (a prune holds the repository): the backup waits
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, asks.next())
            .await
            .expect("the scheduled backup asks for its repository")
            .unwrap();
        let claim: JobClaim = decode("claim", &m.payload).unwrap();
        assert_eq!(claim.params.kind(), JobKind::Backup);
        assert_eq!(claim.repo_id, "r1");
        assert!(!started_in(&outbox, "sb1"), "started while busy");
        let busy = Ack::refused_for_now("the repository is busy with job p1 (prune)");
        cp.client
            .publish(m.reply.unwrap(), encode(&busy))
            .await
            .unwrap();
        cp.client.flush().await.unwrap();
    }
    // it asked a third time, so it had not run yet; now it may
    let m = tokio::time::timeout(WAIT, asks.next())
        .await
        .expect("asked again")
        .unwrap();
    assert!(!started_in(&outbox, "sb1"), "started while busy");
    cp.client
        .publish(m.reply.unwrap(), encode(&Ack::ok()))
        .await
        .unwrap();
    cp.client.flush().await.unwrap();
    // it ran (the test secrets do not open: it fails at once, after its start)
    let d = done_of(&outbox, "sb1").await;
    assert!(d.error.unwrap_or_default().contains("do not open"));
    assert!(started_in(&outbox, "sb1"));
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_runs_when_the_control_plane_cannot_be_reached() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // nobody answers claims on this bus
    let (exec, outbox) = executor(&bus, dir.path(), 100).await;
    assert_eq!(
        exec.accept(scheduled_backup("sb2"), from_schedule()),
        Accepted::New
    );
    let d = done_of(&outbox, "sb2").await;
    assert!(
        d.error.unwrap_or_default().contains("do not open"),
        "it ran without its claim"
    );
    assert!(started_in(&outbox, "sb2"));
    exec.shutdown(Duration::from_secs(5)).await;
}
