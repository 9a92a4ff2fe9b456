//! `backup_anomaly` end to end: real `serve` with its local agent, real
//! restic against a real REST server; ordinary backups that each add a
//! little, then one that adds far more raises the warning.
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::browser::{Kill, REST_PASS, REST_USER, local_host_online, rclone, sealed, svc};
use crate::serve::{free_port, terminate, wait_running};

/// Writes `len` pseudo-random bytes (distinct per `seed`: no dedup).
fn random_file(path: &Path, seed: u64, len: usize) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        buf.extend_from_slice(&state.to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).unwrap();
}

async fn backup(data: &Path, port: u16, host: &str, repo: &str, src: &Path) -> String {
    let created = svc(
        data,
        port,
        "job-create",
        serde_json::json!({"host_id": host, "repo_id": repo, "timeout_secs": 300,
            "params": {"kind": "backup", "paths": [src]}}),
    )
    .await;
    created["job_id"].as_str().unwrap().to_owned()
}

async fn wait_job(store: &rm_store::Store, id: &str) -> String {
    for _ in 0..1200 {
        let mut c = store.read().await.unwrap();
        let job = rm_store::jobs::get(&mut c, id).await.unwrap();
        if job.finished_at.is_some() {
            return job.status;
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not finish");
}

async fn anomalies(store: &rm_store::Store, host: &str) -> Vec<rm_store::alerts::Alert> {
    let mut c = store.read().await.unwrap();
    rm_store::alerts::list_for_host(&mut c, host, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == "backup_anomaly")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_adding_far_more_than_usual_raises_backup_anomaly_with_real_restic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rm-data");
    std::fs::create_dir_all(&data).unwrap();
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let rest_port = free_port();
    let _rest = rclone(&repos, rest_port, false);
    let bus_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--bus-listen", &format!("127.0.0.1:{bus_port}")])
        .args(["--web-listen", "127.0.0.1:0", "--local-agent"])
        .args(["--local-agent-name", "anomaly-host"])
        .args(["--anomaly-min-history", "3"])
        .args(["--anomaly-min-added-bytes", "1048576"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(tmp.path().join("serve.log")).unwrap(),
        ))
        .spawn()
        .expect("start serve");
    let mut serve = Kill(child);
    wait_running(&mut serve.0);
    let db = data.join("restic-manager.db");
    let host = local_host_online(&db, "anomaly-host").await;
    let key = svc(&data, bus_port, "pubkey", serde_json::json!({})).await;
    let xkey = key["xkey"].as_str().unwrap().to_owned();
    let url = format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{rest_port}/r");
    let added = svc(
        &data,
        bus_port,
        "repo-add",
        serde_json::json!({"name": "anomaly-repo", "secrets": sealed(&xkey, url.clone()),
            "init_on_host": host}),
    )
    .await;
    let repo = added["repo_id"].as_str().unwrap().to_owned();
    svc(
        &data,
        bus_port,
        "repo-attach",
        serde_json::json!({"repo_id": repo, "host_id": host, "access": "full",
            "secrets": sealed(&xkey, url)}),
    )
    .await;
    let store = rm_store::Store::open(&db).await.unwrap();

    // Ordinary days: each backup adds one new 64 KiB file.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for day in 0..5_u64 {
        random_file(&src.join(format!("day-{day}.bin")), day + 1, 64 << 10);
        let id = backup(&data, bus_port, &host, &repo, &src).await;
        assert_eq!(
            wait_job(&store, &id).await,
            "succeeded",
            "ordinary backup {day}"
        );
    }
    // The rule engine has judged every ordinary backup by now or will
    // judge only the latest: none of them is unusual.
    assert!(anomalies(&store, &host).await.is_empty());

    // A day that adds 24 MiB: hundreds of times the usual.
    random_file(&src.join("encrypted.bin"), 99, 24 << 20);
    let big = backup(&data, bus_port, &host, &repo, &src).await;
    assert_eq!(wait_job(&store, &big).await, "succeeded");
    let mut found = None;
    for _ in 0..300 {
        if let Some(a) = anomalies(&store, &host).await.into_iter().next() {
            found = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = terminate(&mut serve.0);
    let alert = found.unwrap_or_else(|| {
        let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
        panic!("no backup_anomaly alert; serve log:\n{log}")
    });
    assert_eq!(alert.job_id.as_deref(), Some(big.as_str()));
    assert_eq!(alert.severity, "warning");
    assert_eq!(alert.subject, repo);
    assert!(
        alert.message.contains("anomaly-repo") && alert.message.contains("far above"),
        "{}",
        alert.message
    );
    assert!(status.success(), "serve stops cleanly: {status:?}");
}
