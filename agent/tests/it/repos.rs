//! Repository setup through the control plane with real restic: init on a
//! host, the connection test's reasons, a plain local repository, and a
//! partial backup.

use std::path::Path;

use rm_bus::msg::{ErrorKind, JobParams, RestoreTarget};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_test_names_the_reason() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let a = env.agent("ct-1", &bin).await.unwrap();
    let repo = env.new_repo("ct", &a.host_id).await;
    env.attach_full(&repo, &a.host_id).await;
    let ok = env.repo_test(&repo, &a.host_id).await;
    assert!(ok.ok, "{ok:?}");
    assert!(
        ok.restic_repo_id.as_deref().is_some_and(|id| id.len() >= 8),
        "{ok:?}"
    );

    // wrong password
    let b = env.agent("ct-2", &bin).await.unwrap();
    env.attach_append_only(&repo, "ct", &b.host_id, "wrong-pw")
        .await;
    let r = env.repo_test(&repo, &b.host_id).await;
    assert!(!r.ok);
    assert_eq!(r.error_kind, Some(ErrorKind::WrongPassword), "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("password"),
        "{r:?}"
    );

    // not a repository (nothing was ever initialised there)
    let none = env
        .add_repo("none", &env.full.url("never-initialised"), None)
        .await
        .unwrap();
    env.attach_full(&none, &a.host_id).await;
    let r = env.repo_test(&none, &a.host_id).await;
    assert!(!r.ok);
    assert_eq!(r.error_kind, Some(ErrorKind::RepoMissing), "{r:?}");

    // unreachable (nothing listens there)
    let port = free_port().unwrap();
    let gone = env
        .add_repo("gone", &format!("rest:http://u:p@127.0.0.1:{port}/x"), None)
        .await
        .unwrap();
    env.attach_full(&gone, &a.host_id).await;
    let r = env.repo_test(&gone, &a.host_id).await;
    assert!(!r.ok);
    assert_eq!(r.error_kind, Some(ErrorKind::Network), "{r:?}");

    // initialising where a repository already exists is refused clearly
    let err = env
        .add_repo("ct-again", &env.full.url("ct"), Some(&a.host_id))
        .await
        .unwrap_err();
    assert!(!err.message.is_empty(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_repository_and_a_partial_backup() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let a = env.agent("local-1", &bin).await.unwrap();
    let dir = env.path("local-repo");
    let repo = env
        .add_repo("local", dir.to_str().unwrap(), Some(&a.host_id))
        .await
        .unwrap();
    env.attach_full(&repo, &a.host_id).await;
    assert!(dir.join("config").exists(), "restic init ran on the host");

    let src = env.path("src");
    make_tree(&src, &[("x/one.bin", 20_000), ("two.txt", 10)]);
    let created = env.job(&a.host_id, &repo, backup(&[&src])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let snap: serde_json::Value =
        serde_json::from_str(job.summary_json.as_deref().unwrap()).unwrap();
    let snap = snap["snapshot_id"].as_str().unwrap().to_owned();

    let target = env.path("out");
    let created = env
        .job(
            &a.host_id,
            &repo,
            JobParams::Restore {
                snapshot: snap,
                include: vec![],
                target: RestoreTarget::Path {
                    path: target.display().to_string(),
                },
            },
        )
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let back = target.join(src.strip_prefix("/").unwrap());
    for f in ["x/one.bin", "two.txt"] {
        assert_eq!(
            std::fs::read(back.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap()
        );
    }

    // a source file that cannot be read: the snapshot is made but
    // incomplete, and that is a warning, not a success
    let created = env
        .job(
            &a.host_id,
            &repo,
            backup(&[&src, Path::new("/proc/self/mem")]),
        )
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "warning", "{job:?}");
    assert_eq!(job.error_kind.as_deref(), Some("partial"), "{job:?}");
}
