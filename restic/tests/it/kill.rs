//! Timeout and cancellation of a real restic mid-backup (no process left
//! behind), then stale-lock removal: the SIGKILLed restic leaves its lock,
//! which the next run removes because its pid on this host is dead.

use std::time::{Duration, Instant};

use rm_bus::msg::{ErrorKind, JobOutcome, JobParams};
use rm_restic::RunEvent;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A sparse file restic has to read (and chunk) in full: ~16 GiB of zeros
/// takes far longer than the tests wait, and costs no disk space.
fn sparse_tree(root: &std::path::Path) -> std::path::PathBuf {
    let d = root.join("sparse-src");
    std::fs::create_dir(&d).unwrap();
    let f = std::fs::File::create(d.join("huge.img")).unwrap();
    f.set_len(16 << 30).unwrap();
    d
}

async fn assert_no_restic_for(needle: &str) {
    // reaped synchronously by the runner; allow /proc a moment
    for _ in 0..20 {
        if processes_with(needle).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("restic still running: {:?}", processes_with(needle));
}

#[tokio::test]
async fn timeout_kills_a_real_backup() {
    let restic = restic_014().await;
    let repo = TestRepo::new(&restic).await;
    let src = sparse_tree(repo.dir.path());
    let mut o = opts();
    o.timeout = Duration::from_secs(3);
    let t0 = Instant::now();
    let (res, _) = run_with(&restic, &repo.repo(), backup(&[&src], None), &o).await;
    assert_eq!(
        (res.outcome, res.error_kind),
        (JobOutcome::Failed, Some(ErrorKind::Timeout)),
        "{res:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(res.error.unwrap().contains("timeout"));
    assert_no_restic_for(&src.display().to_string()).await;
}

#[tokio::test]
async fn cancel_mid_backup_then_stale_lock_is_removed() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let src = sparse_tree(repo.dir.path());
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let c2 = cancel.clone();
        // cancel once restic reports bytes read
        let watcher = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let RunEvent::Progress(p) = e
                    && p.bytes_done.unwrap_or(0) > 0
                {
                    c2.cancel();
                    return true;
                }
            }
            false
        });
        let t0 = Instant::now();
        let res = rm_restic::run_job(
            &restic,
            &repo.repo(),
            &backup(&[&src], None),
            false,
            &opts(),
            tx,
            cancel,
        )
        .await;
        assert_eq!(
            (res.outcome, res.error_kind),
            (JobOutcome::Cancelled, Some(ErrorKind::Cancelled)),
            "{res:?}"
        );
        assert!(
            watcher.await.unwrap(),
            "no progress with bytes before the end"
        );
        assert!(t0.elapsed() < Duration::from_secs(30));
        assert_no_restic_for(&src.display().to_string()).await;

        // SIGKILL left restic's lock behind, and the locks job sees it stale
        assert_eq!(list_locks(&restic, &repo).len(), 1);
        let (l, _) = repo.run(JobParams::Locks {}).await;
        assert_eq!(l.outcome, JobOutcome::Succeeded, "{l:?}");
        let locks = l.summary.expect("locks summary");
        let locks = locks.as_array().expect("an array");
        assert_eq!(locks.len(), 1, "{locks:?}");
        assert_eq!(locks[0]["stale"], true, "{locks:?}");
        assert_eq!(locks[0]["exclusive"], false, "{locks:?}");
        assert!(locks[0]["pid"].as_i64().unwrap() > 0, "{locks:?}");
        // not asked to look (the default), the stale lock stays and
        // blocks an exclusive job
        let (p, _) = repo.run(JobParams::Prune {}).await;
        assert_eq!(p.error_kind, Some(ErrorKind::Locked), "{p:?}");
        // asked, but without our host name, it stays too
        let mut blind = opts();
        blind.remove_stale_locks = true;
        blind.lock_hostname = String::new();
        let (p, _) = run_with(&restic, &repo.repo(), JobParams::Prune {}, &blind).await;
        assert_eq!(p.error_kind, Some(ErrorKind::Locked), "{p:?}");
        // asked with it, the stale lock is removed before the run
        let mut look = opts();
        look.remove_stale_locks = true;
        let (p, _) = run_with(&restic, &repo.repo(), JobParams::Prune {}, &look).await;
        assert_eq!(p.outcome, JobOutcome::Succeeded, "{p:?}");
        assert!(list_locks(&restic, &repo).is_empty());
        // and a backup works
        let data = small_tree(repo.dir.path());
        let (b, _) = repo.run(backup(&[&data], None)).await;
        assert_eq!(b.outcome, JobOutcome::Succeeded, "{b:?}");
    }
}
