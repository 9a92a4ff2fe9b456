//! The simulator against the real control plane on the test bus: a small
//! fleet enrolls through the control plane, comes online, and a job
//! dispatched to one of its agents is answered and ingested, and the
//! bench's result burst is stored with its snapshots.

use std::time::Duration;

use rm_bus::creds::Role;
use rm_bus::msg::JobParams;
use rm_controlplane::{Config, Timings, api};
use rm_sim::agent::Behaviour;
use rm_sim::fleet::Fleet;
use rm_sim::ops;
use rm_testkit::TestBus;

const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_simulated_agents_come_online_answer_a_dispatched_job_and_a_result_burst() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let timings = Timings {
        heartbeat: Duration::from_millis(300),
        seen_flush: Duration::from_millis(100),
        dispatch_every: Duration::from_millis(300),
        ..Timings::default()
    };
    let config = Config {
        data_dir: dir.path().join("cp"),
        db_path: None,
        bus_urls: vec![bus.url()],
        agent_bus_urls: vec![bus.url()],
        authority: bus.authority().clone(),
        server_url: "https://cp.test:8443".into(),
        server_fingerprint: None,
        timings,
        clock: rm_bus::clock::system(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cp = tokio::spawn(rm_controlplane::run(config, async move {
        let _ = stop_rx.await;
    }));
    let web = bus.connect_role(Role::Web).await.unwrap();

    // enrollment through the control plane's own verbs, 20 hosts
    let ids = eventually("the control plane to enroll", || async {
        ops::enroll_bulk(&web.client, "sim", 0, 20, 8).await.ok()
    })
    .await;
    assert_eq!(ids.len(), 20);

    let mut b = Behaviour::new(bus.url(), dir.path().join("outboxes"));
    b.heartbeat = Duration::from_millis(300);
    b.job_time = Duration::from_millis(300);
    b.progress_every = Duration::from_millis(100);
    let fleet = Fleet::new(b);
    fleet.ramp(&ids, 200.0).await;
    assert_eq!(
        fleet.counters.snapshot().connected,
        20,
        "every agent connected"
    );

    let store = rm_store::Store::open(&dir.path().join("cp/restic-manager.db"))
        .await
        .unwrap();
    eventually("20 hosts online", || async {
        let mut c = store.read().await.ok()?;
        let hosts = rm_store::hosts::list(&mut c).await.ok()?;
        (hosts.iter().filter(|h| h.status == "online").count() == 20).then_some(())
    })
    .await;
    // a host is online once the control plane committed its hello; the
    // agent counts the answer when the reply reaches it, a moment later
    eventually("every hello answered", || async {
        (fleet.counters.snapshot().hellos_answered == 20).then_some(())
    })
    .await;
    // each agent's longest time between two heartbeats is recorded: about
    // one period, far under the bound of 5 s
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let gaps = fleet.heartbeat_gaps(5_000, 5).await;
    assert_eq!(gaps["agents_over"], 0, "{gaps}");
    let max = gaps["max_ms"].as_u64().expect("a number");
    assert!((200..5_000).contains(&max), "{gaps}");

    // an operator backs up one host: dispatched, answered, ingested
    let host = ids[3].host_id.to_string();
    let cp_key: api::PubKey = ops::call(&web.client, api::PUBKEY, serde_json::json!({}))
        .await
        .unwrap();
    let seal = |url: &str| {
        api::SealedSecrets::seal(
            &api::RepoSecretsInput {
                url: url.into(),
                password: "pw".into(),
                env: Default::default(),
            },
            &cp_key.xkey,
        )
        .unwrap()
    };
    let repo: api::RepoAdded = ops::call(
        &web.client,
        api::REPO_ADD,
        api::RepoAdd {
            name: "main".into(),
            secrets: seal("rest:http://admin:pw@127.0.0.1:1/main"),
            init_on_host: None,
            verify_on_host: None,
        },
    )
    .await
    .unwrap();
    let _: api::Done = ops::call(
        &web.client,
        api::REPO_ATTACH,
        api::RepoAttach {
            repo_id: repo.repo_id.clone(),
            host_id: host.clone(),
            access: api::AccessInput::AppendOnly,
            secrets: Some(seal("rest:http://h:pw@127.0.0.1:1/main")),
        },
    )
    .await
    .unwrap();
    let job: api::JobCreated = ops::call(
        &web.client,
        api::JOB_CREATE,
        api::JobCreate {
            host_id: host.clone(),
            repo_id: repo.repo_id,
            params: JobParams::Backup {
                paths: vec!["/data".into()],
                excludes: vec![],
                tags: vec![],
                one_file_system: false,
                host_name: None,
            },
            timeout_secs: None,
            target_host_id: None,
        },
    )
    .await
    .unwrap();
    let done = eventually("the backup ingested as succeeded", || async {
        let mut c = store.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &job.job_id).await.ok()?;
        (j.status == "succeeded").then_some(j)
    })
    .await;
    assert_eq!(done.host_id, host);
    let c = fleet.counters.snapshot();
    assert!(c.dispatches >= 1, "the agent took the dispatch: {c:?}");
    assert!(c.progress_sent >= 1 && c.log_batches_sent >= 1, "{c:?}");
    // everything written to an outbox was acknowledged once idle
    eventually("every outbox entry acknowledged", || async {
        let c = fleet.counters.snapshot();
        (c.outbox_acked == c.outbox_pushed && c.outbox_rejected == 0).then_some(())
    })
    .await;

    // the bench's result burst: every agent finishes 3 backups to its own
    // repository; each is acknowledged, stored and adds its snapshot
    let (acked, _) = fleet
        .burst(&dir.path().join("cp/restic-manager.db"), 3)
        .await
        .unwrap();
    // (the count also takes in other entries acknowledged meanwhile: the
    // refresh the earlier backup queued on its never-listed repository)
    assert!(acked >= 60, "every burst result acknowledged: {acked}");
    let mut c = store.read().await.unwrap();
    let stored = rm_store::raw::fetch_strings(
        &mut c,
        "SELECT j.status || ' ' || (SELECT COUNT(*) FROM snapshots s WHERE s.repo_id = j.repo_id)
           FROM jobs j WHERE j.created_by = 'sim burst'",
    )
    .await
    .unwrap();
    assert_eq!(stored.len(), 60);
    assert!(
        stored.iter().all(|s| s == "succeeded 3"),
        "each host's repository holds its 3 snapshots: {stored:?}"
    );
    drop(c);

    // the fleet was not refused anything and stops cleanly
    assert_eq!(fleet.counters.snapshot().errors, 0);
    let killed = fleet.kill(20).await;
    assert_eq!(killed.len(), 20);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(WAIT, cp).await;
}
