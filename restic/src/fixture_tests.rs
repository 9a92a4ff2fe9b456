//! Unit tests over recorded transcripts of restic versions the integration
//! tests do not run (0.15–0.17, 0.19): `fixtures/restic/<version>/`.

use rm_bus::msg::{ErrorKind, JobKind, JobOutcome};

use crate::RunEvent;
use crate::run::replay;

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/restic/",
            $path
        ))
    };
}

fn progress(events: &[RunEvent]) -> Vec<rm_bus::msg::Progress> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Progress(p) => Some(p.clone()),
            RunEvent::Log(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn v015_backup_full_snapshot_id() {
    let (r, events) = replay(JobKind::Backup, fixture!("0.15.2/backup.txt")).await;
    assert_eq!(r.outcome, JobOutcome::Succeeded);
    let s = r.summary.unwrap();
    assert_eq!(s["snapshot_id"].as_str().unwrap().len(), 64);
    // the first status goes out at once, the second within 500 ms is held
    let p = progress(&events);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].bytes_done, p[0].total_bytes, p[0].files_done),
        (Some(1000), Some(4000), Some(1))
    );
    assert_eq!(p[0].current_files, vec!["/data/a.bin".to_owned()]);
}

#[test]
fn v015_init_json_id() {
    let line = fixture!("0.15.2/init.txt")
        .lines()
        .find_map(|l| l.strip_prefix("out: "))
        .unwrap();
    let v = crate::parse::json_line(line).unwrap();
    assert_eq!(crate::parse::init_id(&v).unwrap().len(), 64);
}

#[tokio::test]
async fn v016_restore_status_and_summary() {
    let (r, events) = replay(JobKind::Restore, fixture!("0.16.4/restore.txt")).await;
    assert_eq!(r.outcome, JobOutcome::Succeeded);
    let s = r.summary.unwrap();
    assert_eq!(
        (s["bytes_restored"].as_u64(), s["files_restored"].as_u64()),
        (Some(2_000_000), Some(6))
    );
    let p = progress(&events);
    assert_eq!(p[0].bytes_done, Some(1_000_000));
    assert_eq!(p[0].files_done, Some(3));
    assert_eq!(p[0].total_files, Some(6));
    assert_eq!(p[0].percent_done, Some(0.5));
}

#[test]
fn v017_ls_message_type() {
    let entries: Vec<_> = fixture!("0.17.3/ls.txt")
        .lines()
        .filter_map(|l| l.strip_prefix("out: "))
        .filter_map(crate::parse::json_line)
        .filter_map(|v| crate::parse::ls_child(&v, "/data"))
        .collect();
    let names: Vec<_> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind.as_str(), e.size))
        .collect();
    assert_eq!(
        names,
        [
            ("sub", "dir", None),
            ("a.bin", "file", Some(1234)),
            ("link", "symlink", None)
        ]
    );
}

#[tokio::test]
async fn v017_partial_with_message_errors() {
    let (r, events) = replay(JobKind::Backup, fixture!("0.17.3/backup-partial.txt")).await;
    assert_eq!(
        (r.outcome, r.error_kind),
        (JobOutcome::Warning, Some(ErrorKind::Partial))
    );
    assert!(
        r.error
            .unwrap()
            .contains("open /data/secret: permission denied")
    );
    assert_eq!(r.summary.unwrap()["data_added_packed"], 90);
    let logs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log(l) => Some(l.text.as_str()),
            RunEvent::Progress(_) => None,
        })
        .collect();
    assert_eq!(
        logs,
        [
            "error during archival on /data/secret: open /data/secret: permission denied",
            "Warning: at least one source file could not be read"
        ]
    );
}

#[tokio::test]
async fn v017_exit_codes() {
    let (r, _) = replay(JobKind::Check, fixture!("0.17.3/wrong-password.txt")).await;
    assert_eq!(
        (r.exit_code, r.error_kind),
        (Some(12), Some(ErrorKind::WrongPassword))
    );
    let (r, _) = replay(JobKind::Prune, fixture!("0.17.3/locked.txt")).await;
    assert_eq!(
        (r.exit_code, r.error_kind),
        (Some(11), Some(ErrorKind::Locked))
    );
    assert!(r.error.unwrap().contains("PID 4242"));
    assert_eq!(r.stderr_tail.len(), 4);
}

#[tokio::test]
async fn v019_interrupted_and_missing_source() {
    let (r, _) = replay(JobKind::Backup, fixture!("0.19.0/interrupted.txt")).await;
    // not cancelled by us: someone else interrupted restic
    assert_eq!(
        (r.outcome, r.error_kind),
        (JobOutcome::Failed, Some(ErrorKind::Fatal))
    );
    assert!(r.error.unwrap().contains("interrupted"));
    let (r, events) = replay(
        JobKind::Backup,
        fixture!("0.19.0/backup-missing-source.txt"),
    )
    .await;
    assert_eq!(
        (r.outcome, r.error_kind),
        (JobOutcome::Warning, Some(ErrorKind::Partial))
    );
    assert!(r.error.unwrap().contains("/data/gone"));
    assert_eq!(
        progress(&events)[0].seconds_remaining,
        Some(9_223_372_036_854_775_807)
    );
    assert!(r.summary.unwrap()["backup_end"].is_string());
}
