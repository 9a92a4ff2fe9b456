//! Failure classification against real restic: wrong password, missing
//! repository, partial backup (exit 3).

use std::path::Path;
use std::time::Duration;

use rm_bus::msg::{ErrorKind, JobOutcome, JobParams};

use crate::support::*;

#[tokio::test]
async fn wrong_password_on_both_versions() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let mut bad = repo.secrets.clone();
        bad.password = "not the password".into();
        let view = repo.with_secrets(&bad);
        let err = rm_restic::verify(&restic, &view, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::WrongPassword, "{err:?}");
        let (res, _) = run_with(
            &restic,
            &view,
            JobParams::Snapshots { host_name: None },
            &opts(),
        )
        .await;
        assert_eq!(
            (res.outcome, res.error_kind),
            (JobOutcome::Failed, Some(ErrorKind::WrongPassword)),
            "{res:?}"
        );
        let want = if is_014(&restic) { 1 } else { 12 };
        assert_eq!(res.exit_code, Some(want));
        let msg = res.error.unwrap();
        assert!(
            msg.contains("wrong password")
                && msg.contains("restic said: Fatal: wrong password or no key found"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn missing_repository_on_both_versions() {
    for restic in all_versions().await {
        let repo = TestRepo::uninit(&restic);
        let err = rm_restic::verify(&restic, &repo.repo(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RepoMissing, "{err:?}");
        let data = small_tree(repo.dir.path());
        let (res, _) = repo.run(backup(&[&data], None)).await;
        assert_eq!(res.error_kind, Some(ErrorKind::RepoMissing), "{res:?}");
        assert_eq!(res.exit_code, Some(if is_014(&restic) { 1 } else { 10 }));
        assert!(!res.stderr_tail.is_empty());
        let err = rm_restic::snapshots(&restic, &repo.repo(), None, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RepoMissing);
    }
}

/// As root every file is readable, so the unreadable source is
/// `/proc/self/mem`: restic can lstat it but reading it at offset 0 fails
/// with EIO, which restic reports per file and exits 3.
#[tokio::test]
async fn unreadable_file_is_a_partial_backup_warning() {
    for restic in all_versions().await {
        let repo = TestRepo::new(&restic).await;
        let data = small_tree(repo.dir.path());
        let (res, events) = repo
            .run(backup(&[&data, Path::new("/proc/self/mem")], None))
            .await;
        assert_eq!(
            (res.outcome, res.error_kind),
            (JobOutcome::Warning, Some(ErrorKind::Partial)),
            "{res:?}"
        );
        assert_eq!(res.exit_code, Some(3));
        assert!(res.summary.as_ref().unwrap()["snapshot_id"].is_string());
        let msg = res.error.unwrap();
        assert!(
            msg.contains("incomplete") && msg.contains("/proc/self/mem"),
            "{msg}"
        );
        assert!(logs(&events).iter().any(|l| l.contains("/proc/self/mem")));
        // the snapshot was recorded
        let s = rm_restic::snapshots(&restic, &repo.repo(), None, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(s.as_array().unwrap().len(), 1);
    }
}
