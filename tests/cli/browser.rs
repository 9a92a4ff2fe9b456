//! The operator UI in a real browser: `restic-manager serve --local-agent`
//! with real restic backing up into `rclone serve restic --append-only`,
//! accounts made with `restic-manager user add`, and Debian's headless
//! Chromium driven by `tests/browser/drive.mjs` (playwright-core). The
//! script's checks are listed there; this test prepares the installation,
//! runs it and writes the screenshots to `docs/screenshots/`.
//!
//! Needs `node` with `tests/browser/node_modules` (the test command runs
//! `npm ci` there) and `/usr/bin/chromium`; without them the test fails
//! and says what is missing.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rm_bus::subject::{SvcRole, Verb};

use crate::serve::{call_role, free_port, terminate, wait_running};

pub(crate) const REST_USER: &str = "rm";
pub(crate) const REST_PASS: &str = "rest-secret";
const REPO_PASSWORD: &str = "repo-password-e2e";

/// A child process killed when dropped.
pub(crate) struct Kill(pub(crate) Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn rclone(dir: &Path, port: u16, append_only: bool) -> Kill {
    let mut cmd = Command::new("rclone");
    cmd.args(["serve", "restic"])
        .arg(dir)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--user", REST_USER, "--pass", REST_PASS])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if append_only {
        cmd.arg("--append-only");
    }
    // Held by the guard from the start, so it is killed and reaped on every path.
    let child = Kill(
        cmd.spawn()
            .expect("rclone is installed (the test command installs it)"),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rclone serve restic did not listen on {port}");
}

/// Random bytes (incompressible, so restic reports progress for a while).
fn make_data(dir: &Path, files: usize, size: usize) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let mut state: u64 = 0x1234_5678;
    for i in 0..files {
        let mut f = std::fs::File::create(dir.join(format!("file-{i:03}.bin"))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size / (1 << 20) {
            for chunk in buf.chunks_mut(8) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            f.write_all(&buf).unwrap();
        }
    }
}

pub(crate) fn user_add(dir: &Path, name: &str, role: &str, password: &str) {
    let file = dir.join(format!("{name}.pw"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["user", "add", "--data-dir"])
        .arg(dir)
        .args(["--name", name, "--role", role, "--password-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) async fn svc(
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

pub(crate) fn sealed(xkey: &str, url: String) -> serde_json::Value {
    let sealed = rm_controlplane::api::SealedSecrets::seal(
        &rm_controlplane::api::RepoSecretsInput {
            url,
            password: REPO_PASSWORD.into(),
            env: Default::default(),
        },
        xkey,
    )
    .unwrap();
    serde_json::to_value(sealed).unwrap()
}

/// The local agent's host id, once it is online.
pub(crate) async fn local_host_online(db: &Path, name: &str) -> String {
    let store = rm_store::Store::open(db).await.unwrap();
    for _ in 0..600 {
        let mut c = store.read().await.unwrap();
        let hosts = rm_store::hosts::list(&mut c).await.unwrap_or_default();
        if let Some(h) = hosts
            .into_iter()
            .find(|h| h.name == name && h.status == "online")
        {
            return h.id;
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the local agent {name} did not come online");
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_ui_works_in_a_real_browser_against_a_real_agent_and_restic() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser (scripts/test does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed (scripts/test installs it)"
    );

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rm-data");
    std::fs::create_dir_all(&data).unwrap();
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let (full_port, ao_port) = (free_port(), free_port());
    let _full = rclone(&repos, full_port, false);
    let _append_only = rclone(&repos, ao_port, true);
    user_add(&data, "ops", "admin", "ops-password-e2e");
    user_add(&data, "watcher", "viewer", "watcher-password-e2e");

    let bus_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--bus-listen", &format!("127.0.0.1:{bus_port}")])
        .args([
            "--web-listen",
            "127.0.0.1:0",
            "--local-agent",
            "--local-agent-name",
            "e2e-host",
            "--heartbeat-secs",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(tmp.path().join("serve.log")).unwrap(),
        ))
        .spawn()
        .expect("start serve");
    let mut serve = Kill(child);
    let url = wait_running(&mut serve.0);

    let db = data.join("restic-manager.db");
    eprintln!("serve is up at {url}; waiting for the local agent");
    let host_id = local_host_online(&db, "e2e-host").await;
    let key = svc(&data, bus_port, "pubkey", serde_json::json!({})).await;
    let xkey = key["xkey"].as_str().unwrap().to_owned();
    let added = svc(
        &data,
        bus_port,
        "repo-add",
        serde_json::json!({
            "name": "e2e-repo",
            "secrets": sealed(&xkey, format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{full_port}/e2e")),
            "init_on_host": host_id,
        }),
    )
    .await;
    let repo_id = added["repo_id"].as_str().unwrap().to_owned();
    svc(
        &data,
        bus_port,
        "repo-attach",
        serde_json::json!({
            "repo_id": repo_id,
            "host_id": host_id,
            "access": "append_only",
            "secrets": sealed(&xkey, format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{ao_port}/e2e")),
        }),
    )
    .await;
    // A host whose name is markup, for the escaping check.
    svc(
        &data,
        bus_port,
        "host-add",
        serde_json::to_value(rm_controlplane::api::HostAdd::new("<script>alert(1)</script>").0)
            .unwrap(),
    )
    .await;

    let sched = crate::browser_sched::prepare(
        &data,
        bus_port,
        sealed(
            &xkey,
            format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{full_port}/sched"),
        ),
        &host_id,
        tmp.path(),
    )
    .await;
    let backup_src = tmp.path().join("to-back-up");
    make_data(&backup_src, 6, 48 << 20);

    let restore_target = tmp.path().join("restored");
    let screenshots = repo_root().join("docs/screenshots");
    let rejected = crate::browser_rejected::seed(&db, &host_id).await;
    let settings = crate::browser_settings::Receivers::start();
    let (_webhooks, alerts_cfg) = crate::browser_alerts::setup(&data, bus_port).await;
    let (_empty, empty_cfg) = crate::browser_fleetscale::start_empty(tmp.path());
    let config = serde_json::json!({
        "settings": settings.config(),
        "rejected": rejected,
        "url": url,
        "admin": {"name": "ops", "password": "ops-password-e2e"},
        "viewer": {"name": "watcher", "password": "watcher-password-e2e"},
        "host_id": host_id,
        "repo_id": repo_id,
        "backup_path": backup_src,
        "restore_target": restore_target,
        "screenshots": screenshots,
        "sched": sched,
        "alerts": alerts_cfg,
        "empty": empty_cfg,
    });
    let config = crate::browser_repositories::extend(
        config,
        format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{full_port}/e2e"),
        REPO_PASSWORD,
    );
    let config = crate::browser_repoadmin::extend(
        config,
        (REST_USER, REST_PASS),
        (full_port, ao_port),
        REPO_PASSWORD,
    );
    eprintln!(
        "installation ready: {url}, host {host_id}, repository {repo_id}; starting the browser"
    );
    // The script's lines go to the test's output as they happen; its FAIL
    // lines are also kept for the failure message, so the reason is at the
    // end of the output (CI shows the head and the tail of a long log).
    let mut node = Command::new("node")
        .arg(browser_dir.join("drive.mjs"))
        .env("RM_BROWSER_CONFIG", config.to_string())
        .current_dir(&browser_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let node_out = node.stdout.take().expect("piped stdout");
    let echo = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut fails = Vec::new();
        for line in std::io::BufReader::new(node_out).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if line.starts_with("FAIL ") {
                fails.push(line.chars().take(2000).collect::<String>());
            }
        }
        fails
    });
    let out = node.wait().expect("node runs");
    let fails = echo.join().unwrap_or_default();
    let status = terminate(&mut serve.0);
    if !out.success() {
        let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!("serve log (last lines, newest first):\n{}", tail.join("\n"));
    }
    assert!(
        out.success(),
        "browser checks failed ({}):\n{}",
        out,
        fails.join("\n")
    );
    assert!(status.success(), "serve stopped cleanly");
    crate::browser_settings::check(&settings);
    // restic restores the full original path below the target.
    let below = restore_target.join(backup_src.strip_prefix("/").unwrap());
    for name in ["file-000.bin", "file-001.bin"] {
        let restored = std::fs::read(below.join(name))
            .unwrap_or_else(|e| panic!("{name} was restored below {}: {e}", below.display()));
        assert!(
            restored == std::fs::read(backup_src.join(name)).unwrap(),
            "{name} restored through the wizard has the original bytes"
        );
    }
    assert!(
        !below.join("file-002.bin").exists(),
        "only the selected files are restored"
    );
}
