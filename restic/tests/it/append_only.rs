//! Against `rclone serve restic --append-only`: backups work; a forget
//! sent anyway (append_only = false) is classified AppendOnly — the runner
//! stops restic at the first HTTP 403 instead of letting 0.14 retry ~45 s.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rm_bus::msg::{ErrorKind, JobOutcome, JobParams, Retention};

use crate::support::*;

struct Rclone(Child);
impl Drop for Rclone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_rclone(dir: &std::path::Path) -> (Rclone, u16) {
    let port = free_port();
    let child = Command::new("rclone")
        .args([
            "serve",
            "restic",
            &dir.display().to_string(),
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--append-only",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rclone on PATH (scripts/test installs it)");
    let guard = Rclone(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "rclone did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, port)
}

#[tokio::test]
async fn append_only_server_refuses_forget() {
    for restic in all_versions().await {
        let mut repo = TestRepo::uninit(&restic);
        let served = repo.dir.path().join("served");
        std::fs::create_dir(&served).unwrap();
        let (_rclone, port) = start_rclone(&served);
        repo.secrets.repository = format!("rest:http://127.0.0.1:{port}/h1");
        rm_restic::init(&restic, &repo.repo(), Duration::from_secs(30))
            .await
            .unwrap();
        let data = small_tree(repo.dir.path());
        for _ in 0..2 {
            let (b, _) = repo.run(backup(&[&data], Some("ao-host"))).await;
            assert_eq!(b.outcome, JobOutcome::Succeeded, "{b:?}");
        }
        let forget = JobParams::Forget {
            retention: Retention {
                keep_last: Some(1),
                ..Retention::default()
            },
            host_name: "ao-host".into(),
            prune: false,
        };
        let t0 = Instant::now();
        let (f, _) = repo.run(forget).await;
        assert_eq!(
            (f.outcome, f.error_kind),
            (JobOutcome::Failed, Some(ErrorKind::AppendOnly)),
            "{f:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        assert!(f.error.unwrap().contains("maintenance host"));
        // nothing was deleted
        let s = rm_restic::snapshots(&restic, &repo.repo(), None, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(s.as_array().unwrap().len(), 2);
    }
}

/// The preview is a `--no-lock` dry run: it works on an append-only
/// credential (nothing is deleted, no lock is written).
#[tokio::test]
async fn append_only_server_answers_a_retention_preview() {
    for restic in all_versions().await {
        let mut repo = TestRepo::uninit(&restic);
        let served = repo.dir.path().join("served");
        std::fs::create_dir(&served).unwrap();
        let (_rclone, port) = start_rclone(&served);
        repo.secrets.repository = format!("rest:http://127.0.0.1:{port}/h1");
        rm_restic::init(&restic, &repo.repo(), Duration::from_secs(30))
            .await
            .unwrap();
        let data = small_tree(repo.dir.path());
        for _ in 0..3 {
            let (b, _) = repo.run(backup(&[&data], Some("ao-host"))).await;
            assert_eq!(b.outcome, JobOutcome::Succeeded, "{b:?}");
        }
        let (p, _) = repo
            .run(JobParams::ForgetPreview {
                retention: Retention {
                    keep_last: Some(1),
                    ..Retention::default()
                },
                host_name: "ao-host".into(),
            })
            .await;
        assert_eq!(p.outcome, JobOutcome::Succeeded, "{p:?}");
        let plan: rm_bus::msg::RetentionPlan = serde_json::from_value(p.summary.unwrap()).unwrap();
        assert_eq!((plan.kept(), plan.removed()), (1, 2), "{plan:?}");
    }
}
