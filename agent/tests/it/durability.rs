//! At-least-once results with the agent binary killed (SIGKILL) at the
//! worst moments, and exactly-once effects after it comes back.

use std::path::Path;

use crate::support::*;

const MB: usize = 1 << 20;

fn outbox_has_done(state_dir: &Path, job: &str) -> bool {
    std::fs::read_dir(state_dir.join("outbox"))
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                // not a `.…tmp` file still being written
                !n.starts_with('.') && n.contains(&format!(".{job}.done."))
            })
        })
        .unwrap_or(false)
}

fn big_tree(env: &Env, name: &str) -> std::path::PathBuf {
    let src = env.path(name);
    let files: Vec<(String, usize)> = (0..6)
        .map(|i| (format!("{name}-{i}.bin"), 25 * MB))
        .collect();
    let refs: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    make_tree(&src, &refs);
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_unacknowledged_at_sigkill_arrives_exactly_once_after_restart() {
    let bin = restic_bin();
    let mut env = Env::start().await.unwrap();
    let (host, state) = env.enroll("k-1").await.unwrap();
    let mut agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    env.wait_online(&host).await;
    let repo = env.new_repo("k1", &host).await;
    env.attach_append_only(&repo, "k1", &host, REPO_PASSWORD)
        .await;
    let src = big_tree(&env, "src");

    let created = env.job(&host, &repo, backup(&[&src])).await;
    let db = env.cp.db().await;
    eventually("job dispatched", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &created.job_id).await.ok()?;
        (j.status != "queued").then_some(())
    })
    .await;
    drop(db);
    // the control plane goes away: the result cannot be acknowledged
    env.cp.stop().await;
    eventually_within(
        "done written to the outbox",
        std::time::Duration::from_secs(120),
        || async { outbox_has_done(&state, &created.job_id).then_some(()) },
    )
    .await;
    agent.kill9();

    env.cp = Cp::start(&env.bus, env.cp.data_dir.clone()).await.unwrap();
    let _agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    eventually("outbox emptied", || async {
        (!outbox_has_done(&state, &created.job_id)).then_some(())
    })
    .await;
    let snaps = env.snapshots(&bin, "k1");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    let jobs = rm_store::jobs::list_for_host(&mut c, &host, None, 100)
        .await
        .unwrap();
    let backups: Vec<_> = jobs.iter().filter(|j| j.kind == "backup").collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_accepted_before_sigkill_runs_once_after_restart() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let (host, state) = env.enroll("k-2").await.unwrap();
    let mut agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    env.wait_online(&host).await;
    let repo = env.new_repo("k2", &host).await;
    env.attach_append_only(&repo, "k2", &host, REPO_PASSWORD)
        .await;
    let big = big_tree(&env, "big");
    let small = env.path("small");
    make_tree(&small, &[("s.txt", 1234)]);

    // the first job holds the repository; the second waits its turn on
    // the agent, accepted (persisted and acknowledged) but not started
    let first = env.job(&host, &repo, backup(&[&big])).await;
    let db = env.cp.db().await;
    eventually("first running", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &first.job_id).await.ok()?;
        (j.status == "running").then_some(())
    })
    .await;
    let second = env.job(&host, &repo, backup(&[&small])).await;
    eventually("second acknowledged by the agent", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &second.job_id).await.ok()?;
        (j.status == "dispatched").then_some(())
    })
    .await;
    assert!(
        state
            .join("jobs")
            .join(format!("{}.json", second.job_id))
            .exists()
    );
    agent.kill9();
    // restic dies with the agent
    let needle = big.display().to_string();
    eventually("restic gone with the agent", || async {
        restic_processes(&needle).is_empty().then_some(())
    })
    .await;

    let _agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    let j2 = env.finished(&second.job_id).await;
    assert_eq!(j2.status, "succeeded", "{j2:?}");
    let j1 = env.finished(&first.job_id).await;
    assert_eq!(j1.status, "failed", "{j1:?}");
    assert!(
        j1.error.as_deref().unwrap_or("").contains("agent stopped"),
        "{j1:?}"
    );
    let snaps = env.snapshots(&bin, "k2");
    let of_small: Vec<_> = snaps
        .iter()
        .filter(|s| s["paths"][0] == small.display().to_string())
        .collect();
    assert_eq!(
        of_small.len(),
        1,
        "the accepted job ran exactly once: {snaps:?}"
    );
    assert!(
        !snaps
            .iter()
            .any(|s| s["paths"][0] == big.display().to_string()),
        "the killed backup left no snapshot: {snaps:?}"
    );
}
