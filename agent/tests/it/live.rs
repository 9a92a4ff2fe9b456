//! A large backup seen live: throttled progress over the bus, cancel
//! mid-backup (no restic process left behind), and the next backup.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::creds::Role;
use rm_bus::msg::{Progress, decode};
use rm_bus::subject::{self, JobTopic};
use rm_controlplane::api;

use crate::support::*;

const MB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_throttled_and_cancel_leaves_nothing_running() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let agent = env.agent("big-1", &bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("big", &host).await;
    env.attach_append_only(&repo, "big", &host, REPO_PASSWORD)
        .await;

    let watcher = env.bus.connect_role(Role::Web).await.unwrap();
    let mut progress = watcher
        .subscribe(subject::agent_any_job(JobTopic::Progress))
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    // 1. a backup of 300 MB: several progress messages, never two within
    //    400 ms of each other (by the agent's send times)
    let src = env.path("src1");
    let files: Vec<(String, usize)> = (0..12).map(|i| (format!("f{i}.bin"), 25 * MB)).collect();
    let refs: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    make_tree(&src, &refs);
    let created = env.job(&host, &repo, backup(&[&src])).await;
    let job_subject = subject::agent_job(
        &host.parse().unwrap(),
        &created.job_id.parse().unwrap(),
        JobTopic::Progress,
    );
    let finished = env.finished(&created.job_id);
    tokio::pin!(finished);
    let mut seen: Vec<Progress> = Vec::new();
    let job = loop {
        tokio::select! {
            j = &mut finished => break j,
            Some(m) = progress.next() => {
                if m.subject.as_str() == job_subject {
                    seen.push(decode("progress", &m.payload).unwrap());
                }
            }
        }
    };
    assert_eq!(job.status, "succeeded", "{job:?}");
    // messages published just before `done` may still be on their way
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), progress.next()).await
    {
        if m.subject.as_str() == job_subject {
            seen.push(decode("progress", &m.payload).unwrap());
        }
    }
    assert!(seen.len() >= 3, "only {} progress messages", seen.len());
    for w in seen.windows(2) {
        let gap = w[1].ts_ms - w[0].ts_ms;
        assert!(gap >= 400, "two progress messages {gap} ms apart: {w:?}");
    }
    assert!(
        seen.iter()
            .any(|p| p.bytes_done.unwrap_or(0) > 0 && p.total_bytes.is_some()),
        "{seen:?}"
    );
    let pct: Vec<f64> = seen.iter().filter_map(|p| p.percent_done).collect();
    assert!(pct.windows(2).all(|w| w[1] >= w[0]), "{pct:?}");

    // 2. cancel a second large backup while restic runs
    let src2 = env.path("src2");
    let files: Vec<(String, usize)> = (0..8).map(|i| (format!("g{i}.bin"), 26 * MB)).collect();
    let refs: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    make_tree(&src2, &refs);
    let created = env.job(&host, &repo, backup(&[&src2])).await;
    let job_subject = subject::agent_job(
        &host.parse().unwrap(),
        &created.job_id.parse().unwrap(),
        JobTopic::Progress,
    );
    // restic is running once progress flows
    loop {
        let m = tokio::time::timeout(WAIT, progress.next())
            .await
            .expect("progress of the second backup")
            .unwrap();
        if m.subject.as_str() == job_subject {
            break;
        }
    }
    let needle = src2.display().to_string();
    assert!(
        !restic_processes(&needle).is_empty(),
        "restic runs before the cancel"
    );
    let _: api::JobState = env
        .call(
            api::JOB_CANCEL,
            api::JobRef {
                job_id: created.job_id.clone(),
            },
        )
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "cancelled", "{job:?}");
    eventually("no restic process left", || async {
        restic_processes(&needle).is_empty().then_some(())
    })
    .await;

    // 3. the next backup of the same data succeeds (stale lock or not)
    let created = env.job(&host, &repo, backup(&[&src2])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let snaps = env.snapshots(&bin, "big");
    assert_eq!(
        snaps.len(),
        2,
        "the cancelled backup left no snapshot: {snaps:?}"
    );
}
