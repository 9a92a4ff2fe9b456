//! The retention preview (`forget --dry-run --json --no-lock`) on a real
//! repository with several snapshots, on both versions: the plan lists
//! only the given host's snapshots, each kept one with restic's reasons,
//! and nothing is removed.

use std::time::Duration;

use rm_bus::msg::{JobOutcome, JobParams, Retention, RetentionPlan};

use crate::support::*;

fn tagged_backup(path: &std::path::Path, host: &str, tag: &str) -> JobParams {
    match backup(&[path], Some(host)) {
        JobParams::Backup {
            paths,
            excludes,
            one_file_system,
            host_name,
            ..
        } => JobParams::Backup {
            paths,
            excludes,
            tags: vec![tag.to_owned()],
            one_file_system,
            host_name,
        },
        other => other,
    }
}

#[tokio::test]
async fn preview_lists_what_the_policy_removes_and_why_each_kept_one_stays() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let data = small_tree(repo.dir.path());
        let mut ids = Vec::new();
        for i in 0..4 {
            std::fs::write(data.join("n.txt"), format!("{i}")).unwrap();
            let (b, _) = repo
                .run(tagged_backup(&data, "host-a", &format!("t{i}")))
                .await;
            assert_eq!(b.outcome, JobOutcome::Succeeded, "{b:?}");
            ids.push(
                b.summary.unwrap()["snapshot_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let (other, _) = repo.run(backup(&[&data], Some("host-b"))).await;
        assert_eq!(other.outcome, JobOutcome::Succeeded);

        let (p, _) = repo
            .run(JobParams::ForgetPreview {
                retention: Retention {
                    keep_last: Some(2),
                    ..Retention::default()
                },
                host_name: "host-a".into(),
            })
            .await;
        assert_eq!(p.outcome, JobOutcome::Succeeded, "{p:?}");
        let plan: RetentionPlan = serde_json::from_value(p.summary.expect("a plan")).unwrap();
        let v = restic.version_string();
        assert_eq!(plan.snapshots.len(), 4, "{v}: only host-a's: {plan:?}");
        assert!(plan.snapshots.iter().all(|s| s.hostname == "host-a"));
        // newest first: the two last backups are kept for "last snapshot"
        let kept: Vec<&str> = plan
            .snapshots
            .iter()
            .filter(|s| s.keep)
            .map(|s| s.tags[0].as_str())
            .collect();
        assert_eq!(kept, ["t3", "t2"], "{v}: {plan:?}");
        for s in &plan.snapshots {
            assert_eq!(s.paths, [data.display().to_string()]);
            assert!(s.time_ms.is_some(), "{v}: {s:?}");
            if s.keep {
                assert_eq!(s.reasons, ["last snapshot"], "{v}: {s:?}");
            } else {
                assert!(s.reasons.is_empty());
            }
            // 0.14 prints short ids in the backup summary, 0.18 full ones
            assert!(
                ids.iter().any(|i| s.id.starts_with(i.as_str())),
                "{v}: {s:?}"
            );
        }
        // a dry run: every snapshot is still there
        let all = rm_restic::snapshots(&restic, &repo.repo(), None, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(all.as_array().unwrap().len(), 5, "{v}");
    }
}

#[tokio::test]
async fn preview_without_a_keep_rule_is_refused_before_restic_runs() {
    let restic = restic_014().await;
    let repo = TestRepo::new(&restic).await;
    let (p, _) = repo
        .run(JobParams::ForgetPreview {
            retention: Retention::default(),
            host_name: "host-a".into(),
        })
        .await;
    assert_eq!(p.outcome, JobOutcome::Failed);
    assert!(p.error.unwrap().contains("keep-*"));
}
