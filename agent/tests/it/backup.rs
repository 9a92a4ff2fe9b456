//! Backup, restore and browsing through the control plane with real
//! restic (0.14 and 0.18) against `rclone serve restic --append-only`.

use std::path::{Path, PathBuf};

use rm_bus::msg::{JobParams, QueryReply, RestoreTarget};
use rm_controlplane::api;
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_and_browse_on_restic_0_14() {
    backup_restore_and_browse(restic_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_and_browse_on_restic_0_18() {
    if let Some(bin) = restic_018() {
        backup_restore_and_browse(bin).await;
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

type LogBuf = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Every log line of this process (TRACE and up) from now on; `None` when
/// another test of this process installed its subscriber first (nextest
/// runs each test in its own process).
fn capture_logs() -> Option<LogBuf> {
    #[derive(Clone)]
    struct W(LogBuf);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf: LogBuf = Default::default();
    let w = W(buf.clone());
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    match tracing::subscriber::set_global_default(sub) {
        Ok(()) => Some(buf),
        Err(_) => {
            eprintln!("logs not captured: a subscriber was already installed");
            None
        }
    }
}

fn names(reply: &QueryReply) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = reply
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.kind.clone()))
        .collect();
    v.sort();
    v
}

async fn backup_restore_and_browse(bin: PathBuf) {
    let logs = capture_logs();
    let env = Env::start().await.unwrap();
    let tap = env.bus.tap_all().await.unwrap();
    let agent = env.agent("web-1", &bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("r1", &host).await;
    env.attach_append_only(&repo, "r1", &host, REPO_PASSWORD)
        .await;

    let src = env.path("src");
    make_tree(
        &src,
        &[
            ("a.txt", 1000),
            ("docs/b.bin", 300_000),
            ("docs/deep/c.bin", 50_000),
            ("docs/deep/d.txt", 10),
            ("other/e.bin", 2000),
        ],
    );
    let created = env.job(&host, &repo, backup(&[&src])).await;
    assert_eq!(created.exec_host_id, host);
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let summary: Value = serde_json::from_str(job.summary_json.as_deref().unwrap()).unwrap();
    let snap = summary["snapshot_id"].as_str().unwrap().to_owned();
    assert_eq!(summary["files_new"], 5, "{summary}");
    assert!(job.restic_version.is_some());

    // restic itself sees one snapshot, made under this host's restic
    // host name: its id, never the (clonable) machine name
    let snaps = env.snapshots(&bin, "r1");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["hostname"], host.as_str());
    assert!(snaps[0]["id"].as_str().unwrap().starts_with(&snap[..8]));

    // the control plane cached it with the summary
    let db = env.cp.db().await;
    let cached = eventually("snapshot cached", || async {
        let mut c = db.read().await.ok()?;
        let s = rm_store::snapshots::list(&mut c, &repo, None).await.ok()?;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert!(cached.iter().any(|s| snap.starts_with(&s.short_id)));

    // browse one directory level at a time
    let ls = |dir: PathBuf| {
        let (host, repo, snap) = (host.clone(), repo.clone(), snap.clone());
        let env = &env;
        async move {
            let r: QueryReply = env
                .call(
                    api::LS,
                    api::LsRequest {
                        host_id: host,
                        repo_id: repo,
                        snapshot: snap,
                        dir: dir.display().to_string(),
                    },
                )
                .await;
            assert!(r.ok, "{r:?}");
            r
        }
    };
    assert_eq!(
        names(&ls(src.join("docs")).await),
        [
            ("b.bin".into(), "file".into()),
            ("deep".into(), "dir".into())
        ]
    );
    let deep = ls(src.join("docs/deep")).await;
    assert_eq!(
        names(&deep),
        [
            ("c.bin".into(), "file".into()),
            ("d.txt".into(), "file".into())
        ]
    );
    let c = deep.entries.iter().find(|e| e.name == "c.bin").unwrap();
    assert_eq!(c.size, Some(50_000));

    // restore one directory to an alternate place, byte for byte
    let target = env.path("restored");
    let created = env
        .job(
            &host,
            &repo,
            JobParams::Restore {
                snapshot: snap.clone(),
                include: vec![src.join("docs/deep").display().to_string()],
                target: RestoreTarget::Path {
                    path: target.display().to_string(),
                },
            },
        )
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let restored_root = target.join(src.strip_prefix("/").unwrap());
    let mut got: Vec<PathBuf> = files_under(&target)
        .into_iter()
        .map(|p| p.strip_prefix(&restored_root).unwrap().to_path_buf())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            PathBuf::from("docs/deep/c.bin"),
            PathBuf::from("docs/deep/d.txt")
        ]
    );
    for f in ["docs/deep/c.bin", "docs/deep/d.txt"] {
        assert_eq!(
            std::fs::read(restored_root.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }

    // the repository password and the REST password never crossed the bus
    // in the clear, nor landed in the agent's or control plane's files
    let mut agent = agent;
    agent.stop().await;
    let msgs = tap.stop().await;
    assert!(msgs.len() > 20, "the tap saw the traffic ({})", msgs.len());
    for m in &msgs {
        let text = String::from_utf8_lossy(&m.payload);
        for secret in [REPO_PASSWORD, REST_PASS] {
            assert!(!text.contains(secret), "{secret} in clear on {}", m.subject);
        }
    }
    if let Some(logs) = logs {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        assert!(text.contains("job finished"), "logs were captured");
        for secret in [REPO_PASSWORD, REST_PASS] {
            assert!(!text.contains(secret), "{secret} in the logs");
        }
    }
    for f in files_under(&agent.state_dir)
        .into_iter()
        .chain(files_under(&env.cp.data_dir))
    {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [REPO_PASSWORD, REST_PASS] {
            assert!(
                !text.contains(secret),
                "{secret} in clear in {}",
                f.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_as_such() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let agent = env.agent("web-2", &bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("r2", &host).await;
    env.attach_append_only(&repo, "r2", &host, "not-the-password")
        .await;
    let src = env.path("src");
    make_tree(&src, &[("a.txt", 100)]);
    let created = env.job(&host, &repo, backup(&[&src])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "failed", "{job:?}");
    assert_eq!(job.error_kind.as_deref(), Some("wrong_password"), "{job:?}");
    assert!(
        job.error
            .as_deref()
            .unwrap_or("")
            .to_lowercase()
            .contains("password"),
        "{job:?}"
    );
    // restic's own words reach the job's log (batched, at most once) and
    // its stderr tail (with the result, at least once)
    assert!(
        job.stderr_tail
            .as_deref()
            .unwrap_or("")
            .contains("wrong password"),
        "{job:?}"
    );
    let db = env.cp.db().await;
    let lines = eventually("log lines stored", || async {
        let mut c = db.read().await.ok()?;
        let l = rm_store::jobs::logs(&mut c, &created.job_id).await.ok()?;
        l.iter()
            .any(|l| l.text.contains("wrong password"))
            .then_some(l)
    })
    .await;
    assert!(
        lines
            .iter()
            .all(|l| l.stream == "stderr" || l.stream == "stdout"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_restic_fails_jobs_with_a_clear_reason() {
    let env = Env::start().await.unwrap();
    let ok = env.agent("ok-1", &restic_bin()).await.unwrap();
    let broken = env
        .agent("nor-1", Path::new("/nonexistent/bin/restic"))
        .await
        .unwrap();
    let repo = env.new_repo("r3", &ok.host_id).await;
    env.attach_append_only(&repo, "r3", &broken.host_id, REPO_PASSWORD)
        .await;
    let src = env.path("src");
    make_tree(&src, &[("a.txt", 100)]);
    let created = env.job(&broken.host_id, &repo, backup(&[&src])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "failed", "{job:?}");
    assert_eq!(job.error_kind.as_deref(), Some("fatal"), "{job:?}");
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains("restic is not usable") && error.contains("/nonexistent/bin/restic"),
        "{error}"
    );
}
