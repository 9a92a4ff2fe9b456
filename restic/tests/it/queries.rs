//! Version detection, init/verify, snapshots and ls on both versions.

use std::time::Duration;

use rm_bus::msg::{ErrorKind, JobOutcome};

use crate::support::*;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn detects_both_versions() {
    let r = restic_014().await;
    assert_eq!(r.version_string(), "0.14.0");
    assert_eq!(
        r.version(),
        &rm_restic::Version {
            major: 0,
            minor: 14,
            patch: 0
        }
    );
    if let Some(r) = restic_018().await {
        assert_eq!(r.version_string(), "0.18.0");
        assert!(r.version() > restic_014().await.version());
    }
    let err = rm_restic::Restic::detect("/nonexistent/restic")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal);
    assert!(
        err.message.contains("/nonexistent/restic"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn unparseable_version_names_the_output() {
    let d = tempfile::tempdir().unwrap();
    let bin = crate::fake::script(d.path(), "echo 'rustic v9 banana'");
    let err = rm_restic::Restic::detect(&bin).await.unwrap_err();
    assert!(err.message.contains("rustic v9 banana"), "{}", err.message);
}

#[tokio::test]
async fn init_verify_and_backup_summary_on_both_versions() {
    for restic in all_versions().await {
        let repo = TestRepo::uninit(&restic);
        let id = rm_restic::init(&restic, &repo.repo(), T).await.unwrap();
        assert_eq!(id.len(), 64, "{id}");
        assert_eq!(
            rm_restic::verify(&restic, &repo.repo(), T).await.unwrap(),
            id
        );
        // the password file is gone after each run
        assert_eq!(std::fs::read_dir(&repo.scratch).unwrap().count(), 0);

        let data = small_tree(repo.dir.path());
        let (res, _) = repo.run(backup(&[&data], Some("h-one"))).await;
        assert_eq!(res.outcome, JobOutcome::Succeeded, "{res:?}");
        assert_eq!(res.exit_code, Some(0));
        let summary = res.summary.expect("backup summary");
        let snap = summary["snapshot_id"].as_str().unwrap().to_owned();
        let want = if is_014(&restic) { 8 } else { 64 };
        assert_eq!(snap.len(), want, "{summary}");
        assert_eq!(summary["files_new"], 5);

        let all = rm_restic::snapshots(&restic, &repo.repo(), None, T)
            .await
            .unwrap();
        let arr = all.as_array().unwrap();
        assert_eq!(arr.len(), 1);
        assert!(arr[0]["id"].as_str().unwrap().starts_with(&snap));
        assert_eq!(arr[0]["hostname"], "h-one");
        let none = rm_restic::snapshots(&restic, &repo.repo(), Some("other-host"), T)
            .await
            .unwrap();
        assert_eq!(none, serde_json::json!([]));
        assert_eq!(std::fs::read_dir(&repo.scratch).unwrap().count(), 0);
    }
}

#[tokio::test]
async fn ls_one_level_at_a_time() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let data = small_tree(repo.dir.path());
        let (res, _) = repo.run(backup(&[&data], None)).await;
        assert_eq!(res.outcome, JobOutcome::Succeeded, "{res:?}");
        let snap = res.summary.unwrap()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let ls = |dir: String| {
            let (restic, repo, snap) = (&restic, &repo, &snap);
            async move {
                let mut v = rm_restic::ls(restic, &repo.repo(), snap, &dir, T)
                    .await
                    .unwrap();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            }
        };
        let d = data.display().to_string();
        let names =
            |v: &[rm_bus::msg::LsEntry]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        let top = ls(d.clone()).await;
        assert_eq!(names(&top), ["a", "other", "top.txt"]);
        assert_eq!(top[0].kind, "dir");
        assert_eq!(top[2].kind, "file");
        assert_eq!(top[2].size, Some(4));
        assert_eq!(top[2].path, format!("{d}/top.txt"));
        assert!(top[2].mtime.is_some());
        let a = ls(format!("{d}/a/")).await;
        assert_eq!(names(&a), ["b", "f1"]);
        assert_eq!(a[1].size, Some(3000));
        let b = ls(format!("{d}/a/b")).await;
        assert_eq!(names(&b), ["c", "f2"]);
        let c = ls(format!("{d}/a/b/c")).await;
        assert_eq!(names(&c), ["f3"]);
        // the root lists the first path component only
        let root = ls("/".into()).await;
        assert_eq!(names(&root), [d.split('/').nth(1).unwrap()]);
        // an unknown snapshot is an error on both (0.14 exits 0 for it)
        let err = rm_restic::ls(&restic, &repo.repo(), "deadbeef", &d, T)
            .await
            .unwrap_err();
        assert!(err.message.contains("deadbeef"), "{err:?}");
    }
}
