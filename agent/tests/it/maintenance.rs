//! Retention and repository maintenance with append-only endpoints:
//! forget and prune run on the maintenance host with full credentials and
//! touch only the requesting host's snapshots; check results become
//! repository health.

use rm_bus::msg::{JobParams, Retention};
use rm_controlplane::api;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_runs_on_the_maintenance_host_and_touches_only_the_requesting_host() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let web = env.agent("web-9", &bin).await.unwrap();
    let maint = env.agent("maint-1", &bin).await.unwrap();
    let repo = env.new_repo("m1", &maint.host_id).await;
    env.attach_append_only(&repo, "m1", &web.host_id, REPO_PASSWORD)
        .await;
    env.attach_full(&repo, &maint.host_id).await;

    let a = env.path("a");
    let b = env.path("b");
    make_tree(&a, &[("one.txt", 500)]);
    make_tree(&b, &[("two.txt", 700)]);
    for (host, src) in [(&web.host_id, &a), (&web.host_id, &a), (&maint.host_id, &b)] {
        let created = env.job(host, &repo, backup(&[src])).await;
        let job = env.finished(&created.job_id).await;
        assert_eq!(job.status, "succeeded", "{job:?}");
    }
    let forget = JobParams::Forget {
        retention: Retention {
            keep_last: Some(1),
            ..Retention::default()
        },
        host_name: String::new(),
        prune: true,
    };
    // no maintenance host yet: a clear refusal, nothing runs
    let err = env
        .call_raw::<_, api::JobCreated>(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: web.host_id.clone(),
                repo_id: repo.clone(),
                params: forget.clone(),
                timeout_secs: Some(600),
                target_host_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("maintenance"), "{err:?}");

    let _: api::Done = env
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id.clone()),
            },
        )
        .await;
    let created = env.job(&web.host_id, &repo, forget).await;
    assert_eq!(created.exec_host_id, maint.host_id);
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");

    let snaps = env.snapshots(&bin, "m1");
    let of = |h: &str| snaps.iter().filter(|s| s["hostname"] == h).count();
    assert_eq!(of(&web.host_id), 1, "{snaps:?}");
    assert_eq!(
        of(&maint.host_id),
        1,
        "the other host's snapshot is untouched: {snaps:?}"
    );

    // a check on the maintenance host becomes repository health
    let created = env
        .job(
            &maint.host_id,
            &repo,
            JobParams::Check {
                read_data_subset: Some("50%".into()),
            },
        )
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let db = env.cp.db().await;
    let health = eventually("health from real restic output", || async {
        let mut c = db.read().await.ok()?;
        let h = rm_store::health::latest(&mut c, &repo).await.ok()?;
        (h.check_ok.is_some()
            && h.snapshot_count.is_some()
            && h.total_size.is_some()
            && h.raw_size.is_some()
            && h.lock_count.is_some())
        .then_some(h)
    })
    .await;
    assert_eq!(health.check_ok, Some(true), "{health:?}");
    assert!(
        health.raw_size.unwrap() > 0 && health.total_size.unwrap() > 0,
        "{health:?}"
    );
    assert!(health.dedup_ratio.is_some(), "{health:?}");
    assert_eq!(health.lock_count, Some(0), "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloned_hosts_with_one_hostname_keep_separate_retention_scopes() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    // two cloned VMs: one machine name, two hosts
    let a = env.agent_as("clone-a", "clone", &bin).await.unwrap();
    let b = env.agent_as("clone-b", "clone", &bin).await.unwrap();
    let maint = env.agent("maint-2", &bin).await.unwrap();
    let repo = env.new_repo("cl", &maint.host_id).await;
    for h in [&a, &b] {
        env.attach_append_only(&repo, "cl", &h.host_id, REPO_PASSWORD)
            .await;
    }
    env.attach_full(&repo, &maint.host_id).await;
    let _: api::Done = env
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id.clone()),
            },
        )
        .await;
    // the same path on both, as on clones
    let src = env.path("same");
    make_tree(&src, &[("one.txt", 500)]);
    for host in [&a.host_id, &a.host_id, &b.host_id, &b.host_id] {
        let created = env.job(host, &repo, backup(&[&src])).await;
        let job = env.finished(&created.job_id).await;
        assert_eq!(job.status, "succeeded", "{job:?}");
    }
    let forget = JobParams::Forget {
        retention: Retention {
            keep_last: Some(1),
            ..Retention::default()
        },
        host_name: String::new(),
        prune: false,
    };
    let created = env.job(&a.host_id, &repo, forget).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");

    let snaps = env.snapshots(&bin, "cl");
    let of = |h: &str| snaps.iter().filter(|s| s["hostname"] == h).count();
    assert_eq!(of(&a.host_id), 1, "clone-a's retention applied: {snaps:?}");
    assert_eq!(
        of(&b.host_id),
        2,
        "clone-b's snapshots untouched by clone-a's retention: {snaps:?}"
    );
    // the human names stay what the operator chose
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    let ha = rm_store::hosts::get(&mut c, &a.host_id).await.unwrap();
    assert_eq!(ha.name, "clone-a");
    assert_eq!(ha.hostname.as_deref(), Some("clone"));
    assert_eq!(ha.restic_host.as_deref(), Some(a.host_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_stats_diff_and_unlock_run_through_the_control_plane() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let agent = env.agent("kinds-1", &bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("k", &host).await;
    env.attach_append_only(&repo, "k", &host, REPO_PASSWORD)
        .await;
    let src = env.path("src");
    make_tree(&src, &[("a.txt", 3000), ("b.txt", 100)]);
    let run = |params: JobParams| {
        let (env, host, repo) = (&env, host.clone(), repo.clone());
        async move {
            let created = env.job(&host, &repo, params).await;
            let job = env.finished(&created.job_id).await;
            assert_eq!(job.status, "succeeded", "{job:?}");
            job.summary_json
                .as_deref()
                .map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap())
        }
    };
    let first = run(backup(&[&src])).await.unwrap();
    std::fs::write(src.join("c.txt"), b"new file").unwrap();
    std::fs::remove_file(src.join("b.txt")).unwrap();
    let second = run(backup(&[&src])).await.unwrap();

    let snaps = run(JobParams::Snapshots { host_name: None }).await.unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");

    for mode in [
        rm_bus::msg::StatsMode::RestoreSize,
        rm_bus::msg::StatsMode::RawData,
    ] {
        let stats = run(JobParams::Stats {
            mode,
            snapshot: None,
        })
        .await
        .unwrap();
        assert!(stats["total_size"].as_u64().unwrap() > 0, "{stats}");
    }

    let diff = run(JobParams::Diff {
        from: first["snapshot_id"].as_str().unwrap().into(),
        to: second["snapshot_id"].as_str().unwrap().into(),
    })
    .await
    .unwrap();
    assert_eq!(diff["added"]["files"], 1, "{diff}");
    assert_eq!(diff["removed"]["files"], 1, "{diff}");

    run(JobParams::Unlock { remove_all: false }).await;
}
