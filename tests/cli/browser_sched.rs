//! Set-up for the schedules browser steps (`tests/browser/steps/30-schedules.mjs`):
//! a second repository on the full-access REST server, attached to the
//! local host with full access and with that host as its maintenance host
//! (the retention preview runs there, with the full credential), holding
//! several snapshots of a small tree made by real backups.

use std::path::Path;
use std::time::Duration;

use rm_bus::subject::{SvcRole, Verb};

use crate::serve::call_role;

async fn svc(
    dir: &Path,
    port: u16,
    verb: &'static str,
    body: serde_json::Value,
) -> serde_json::Value {
    let reply = call_role(dir, port, SvcRole::Controlplane, Verb::new(verb), body).await;
    match (reply.ok, reply.error) {
        (Some(v), _) => v,
        (_, Some(e)) => panic!("{verb}: {}: {}", e.code, e.message),
        _ => panic!("{verb}: empty reply"),
    }
}

/// Waits until a job is in a terminal state; returns its status.
async fn finished(db: &Path, job_id: &str) -> String {
    let store = rm_store::Store::open(db).await.unwrap();
    for _ in 0..1200 {
        let mut c = store.read().await.unwrap();
        if let Ok(j) = rm_store::jobs::get(&mut c, job_id).await
            && j.status().is_ok_and(|s| s.is_terminal())
        {
            return j.status;
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not finish in two minutes");
}

/// Makes the repository and `snapshots` backups; returns what the steps
/// need: `{"repo_id", "repo_name", "snapshots"}`.
pub(crate) async fn prepare(
    data: &Path,
    bus_port: u16,
    sealed_full: serde_json::Value,
    host_id: &str,
    tmp: &Path,
) -> serde_json::Value {
    let snapshots = 3;
    let add = |init: bool| {
        let mut body = serde_json::json!({"name": "sched-repo", "secrets": sealed_full.clone()});
        if init {
            body["init_on_host"] = host_id.into();
        }
        call_role(
            data,
            bus_port,
            SvcRole::Controlplane,
            Verb::new("repo-add"),
            body,
        )
    };
    // Under heavy load restic 0.14's init against rclone has been seen to
    // retry its own successful create and then report "config file
    // already exists": the repository is there, so add it as existing.
    let reply = add(true).await;
    let added = match (reply.ok, reply.error) {
        (Some(v), _) => v,
        (_, Some(e)) if e.message.contains("config file already exists") => {
            eprintln!(
                "sched-repo: {}; adding it as an existing repository",
                e.message
            );
            let again = add(false).await;
            again.ok.expect("repo-add of the existing sched-repo")
        }
        (_, e) => panic!("repo-add sched-repo: {e:?}"),
    };
    let repo_id = added["repo_id"].as_str().unwrap().to_owned();
    svc(
        data,
        bus_port,
        "repo-attach",
        serde_json::json!({"repo_id": repo_id, "host_id": host_id, "access": "full"}),
    )
    .await;
    svc(
        data,
        bus_port,
        "repo-maintenance",
        serde_json::json!({"repo_id": repo_id, "host_id": host_id}),
    )
    .await;
    let src = tmp.join("sched-src");
    std::fs::create_dir_all(&src).unwrap();
    let db = data.join("restic-manager.db");
    for i in 0..snapshots {
        std::fs::write(src.join("note.txt"), format!("version {i}\n")).unwrap();
        let job = svc(
            data,
            bus_port,
            "job-create",
            serde_json::json!({"host_id": host_id, "repo_id": repo_id,
                "params": {"kind": "backup", "paths": [src], "tags": [format!("v{i}")]}}),
        )
        .await;
        let status = finished(&db, job["job_id"].as_str().unwrap()).await;
        assert_eq!(status, "succeeded", "backup {i} into sched-repo");
    }
    serde_json::json!({"repo_id": repo_id, "repo_name": "sched-repo", "snapshots": snapshots, "source": src})
}
