//! Every job kind on a local repository, on both versions: snapshots,
//! stats (both modes), diff, forget (only the given host), check, prune,
//! unlock, restore of selected paths; and progress during a larger backup.

use std::path::Path;
use std::time::Duration;

use rm_bus::msg::{JobOutcome, JobParams, RestoreTarget, Retention, StatsMode};

use crate::support::*;

fn snapshot_count(v: &serde_json::Value, host: &str) -> usize {
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["hostname"] == host)
        .count()
}

#[tokio::test]
async fn maintenance_and_inspection_jobs() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let data = small_tree(repo.dir.path());
        let b = |host: &str| backup(&[&data], Some(host));
        let (r1, _) = repo.run(b("host-a")).await;
        std::fs::write(data.join("added.bin"), random_bytes(10_000, 9)).unwrap();
        let (r2, _) = repo.run(b("host-a")).await;
        let (r3, _) = repo.run(b("host-b")).await;
        for r in [&r1, &r2, &r3] {
            assert_eq!(r.outcome, JobOutcome::Succeeded, "{r:?}");
        }
        let id = |r: &rm_restic::RunResult| {
            r.summary.as_ref().unwrap()["snapshot_id"]
                .as_str()
                .unwrap()
                .to_owned()
        };

        let (s, _) = repo
            .run(JobParams::Snapshots {
                host_name: Some("host-a".into()),
            })
            .await;
        assert_eq!(s.outcome, JobOutcome::Succeeded);
        assert_eq!(s.summary.as_ref().unwrap().as_array().unwrap().len(), 2);

        let (st, _) = repo
            .run(JobParams::Stats {
                mode: StatsMode::RestoreSize,
                snapshot: Some(id(&r1)),
            })
            .await;
        let st = st.summary.expect("stats summary");
        // restore-size counts directories too
        assert!(st["total_file_count"].as_u64().unwrap() >= 5, "{st}");
        assert_eq!(st["total_size"], 4 + 3000 + 70_000 + 5 + 500);
        let (raw, _) = repo
            .run(JobParams::Stats {
                mode: StatsMode::RawData,
                snapshot: None,
            })
            .await;
        let raw = raw.summary.expect("raw stats");
        assert!(
            raw["total_size"].as_u64().unwrap() > 0
                && raw["total_blob_count"].as_u64().unwrap() > 0,
            "{raw}"
        );

        let (diff, _) = repo
            .run(JobParams::Diff {
                from: id(&r1),
                to: id(&r2),
            })
            .await;
        assert_eq!(diff.outcome, JobOutcome::Succeeded, "{diff:?}");
        let d = diff.summary.expect("diff statistics");
        assert_eq!(d["added"]["files"], 1, "{d}");
        // the changed paths themselves, for the job page's added / removed / changed lists
        let changes = d["changes"].as_array().expect("diff lists its changes");
        assert!(
            changes.iter().any(
                |c| c["modifier"] == "+" && c["path"].as_str().unwrap().ends_with("/added.bin")
            ),
            "{d}"
        );
        assert_eq!(d["changes_total"], changes.len(), "{d}");

        let forget = JobParams::Forget {
            retention: Retention {
                keep_last: Some(1),
                ..Retention::default()
            },
            host_name: "host-a".into(),
            prune: false,
        };
        let (f, _) = repo.run(forget).await;
        assert_eq!(f.outcome, JobOutcome::Succeeded, "{f:?}");
        let groups = f.summary.expect("forget groups");
        assert_eq!(groups[0]["host"], "host-a");
        assert_eq!(groups[0]["remove"].as_array().unwrap().len(), 1);
        let all = rm_restic::snapshots(&restic, &repo.repo(), None, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            (
                snapshot_count(&all, "host-a"),
                snapshot_count(&all, "host-b")
            ),
            (1, 1)
        );

        let (p, events) = repo.run(JobParams::Prune {}).await;
        assert_eq!(p.outcome, JobOutcome::Succeeded, "{p:?}");
        let out = p.summary.expect("prune output");
        assert!(
            out["output"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l.as_str().unwrap().contains("done")),
            "{out}"
        );
        assert!(logs(&events).iter().any(|l| l.contains("loading indexes")));

        let (c, _) = repo
            .run(JobParams::Check {
                read_data_subset: Some("50%".into()),
            })
            .await;
        assert_eq!(c.outcome, JobOutcome::Succeeded, "{c:?}");
        assert_eq!(c.summary.expect("check summary")["num_errors"], 0);

        let (u, _) = repo.run(JobParams::Unlock { remove_all: true }).await;
        assert_eq!(u.outcome, JobOutcome::Succeeded, "{u:?}");
        // 0.14 always says so; 0.18 prints nothing when there was no lock
        match u.summary {
            Some(out) => assert!(
                out["output"][0].as_str().unwrap().contains("removed"),
                "{out}"
            ),
            None => assert!(!is_014(&restic)),
        }
    }
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn restore_selected_paths_to_another_directory() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let data = small_tree(repo.dir.path());
        let (b, _) = repo.run(backup(&[&data], None)).await;
        let snap = b.summary.unwrap()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let target = repo.dir.path().join("restored");
        let (r, _) = repo
            .run(JobParams::Restore {
                snapshot: snap,
                include: vec![
                    format!("{}/a/b", data.display()),
                    format!("{}/top.txt", data.display()),
                ],
                target: RestoreTarget::Path {
                    path: target.display().to_string(),
                },
            })
            .await;
        assert_eq!(r.outcome, JobOutcome::Succeeded, "{r:?}");
        let rel = data.strip_prefix("/").unwrap();
        let got = files_under(&target);
        let want: Vec<String> = ["a/b/c/f3", "a/b/f2", "top.txt"]
            .iter()
            .map(|f| rel.join(f).display().to_string())
            .collect();
        assert_eq!(got, want);
        for f in ["a/b/c/f3", "a/b/f2", "top.txt"] {
            assert_eq!(
                std::fs::read(target.join(rel).join(f)).unwrap(),
                std::fs::read(data.join(f)).unwrap(),
                "{f}"
            );
        }
        let s = r.summary.expect("restore summary");
        assert_eq!(s["bytes_restored"], 4 + 70_000 + 5, "{s}");
        // 0.18 counts directories too; our 0.14 measurement counts files
        let files = s["files_restored"].as_u64().unwrap();
        if is_014(&restic) {
            assert_eq!(files, 3, "{s}");
        } else {
            assert!(files >= 3, "{s}");
        }
    }
}

/// ~150 MB of incompressible data so that the backup runs for a few seconds
/// and restic prints many status lines.
#[tokio::test]
async fn progress_during_a_larger_backup_is_throttled() {
    let restic = restic_014().await;
    let repo = TestRepo::new(&restic).await;
    let data = repo.dir.path().join("big");
    std::fs::create_dir(&data).unwrap();
    for i in 0..6u64 {
        std::fs::write(data.join(format!("f{i}")), random_bytes(25 << 20, 100 + i)).unwrap();
    }
    let mut opts = opts();
    // short, so that even a fast machine sees several: the spacing is the
    // point here, not the product's 500 ms
    opts.progress_interval = Duration::from_millis(100);
    let (res, events) = run_with(&restic, &repo.repo(), backup(&[&data], None), &opts).await;
    assert_eq!(res.outcome, JobOutcome::Succeeded, "{res:?}");
    let p = progress(&events);
    // several lines to space out (restic's first ones, before it has read
    // a byte, count too: on a fast disk the 150 MB can be read between two
    // of them, so only one line may carry bytes)
    assert!(p.len() >= 3, "{p:?}");
    let with_bytes: Vec<_> = p.iter().filter(|p| p.bytes_done.unwrap_or(0) > 0).collect();
    assert!(!with_bytes.is_empty(), "{p:?}");
    assert!(
        with_bytes.iter().any(|p| p.total_bytes == Some(150 << 20)),
        "{p:?}"
    );
    assert!(with_bytes.iter().any(|p| !p.current_files.is_empty()));
    for w in p.windows(2) {
        assert!(
            w[1].ts_ms - w[0].ts_ms >= 99,
            "too close: {:?} {:?}",
            w[0],
            w[1]
        );
        assert!(w[1].elapsed_ms >= w[0].elapsed_ms + 99);
    }
    // bytes_done never goes backwards
    assert!(
        with_bytes
            .windows(2)
            .all(|w| w[1].bytes_done >= w[0].bytes_done)
    );
}
