//! The docs/api.md walkthrough, run for real: `restic-manager serve` with a
//! local agent and real restic; curl with an API token adds a repository,
//! runs a backup, follows its events, restores a file — and says HTTP/2.
#![cfg(unix)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
}

fn restic() -> Option<PathBuf> {
    ["/usr/bin/restic"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::var_os("RM_RESTIC_018").map(PathBuf::from))
        .find(|p| p.exists())
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

struct Curl {
    base: String,
    cacert: PathBuf,
    token: String,
}

impl Curl {
    /// One API call: `(status, JSON body)`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http2", "--cacert"])
            .arg(&self.cacert)
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .args(["-X", method, "-w", "\n%{http_code} %{http_version}"]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut tail = tail.split_whitespace();
        let status: u16 = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        assert_eq!(
            tail.next(),
            Some("2"),
            "curl --http2 reports HTTP/2 ({text})"
        );
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Waits until a job is in a terminal state; returns it.
    fn wait_job(&self, job_id: &str) -> Value {
        for _ in 0..600 {
            let (status, job) = self.call("GET", &format!("/api/v1/jobs/{job_id}"), None);
            assert_eq!(status, 200, "{job}");
            let s = job["status"].as_str().unwrap_or_default();
            if ["succeeded", "warning", "failed", "cancelled", "lost"].contains(&s) {
                return job;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("job {job_id} did not finish within two minutes");
    }
}

fn wait_running(child: &mut Child) -> String {
    let out = child.stdout.take().expect("stdout");
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.trim().strip_prefix("web: ") {
            return rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    }
    panic!("serve exited before it was running");
}

async fn local_host(dir: &Path) -> Option<(String, String)> {
    let db = rm_store::Store::open(&dir.join("restic-manager.db"))
        .await
        .ok()?;
    let mut c = db.read().await.ok()?;
    let hosts = rm_store::hosts::list(&mut c).await.ok()?;
    hosts
        .into_iter()
        .find(|h| h.name == "self-1")
        .map(|h| (h.id, h.status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_walkthrough_backs_up_and_restores_a_file_over_http2() {
    let Some(restic) = restic() else {
        eprintln!("no restic binary: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // the first admin and an operator token, scripted
    let mut add = bin()
        .args(["user", "add", "--data-dir"])
        .arg(d)
        .args(["--name", "admin", "--role", "admin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"a long admin password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let token = bin()
        .args(["token", "create", "--data-dir"])
        .arg(d)
        .args([
            "--user",
            "admin",
            "--name",
            "walkthrough",
            "--role",
            "operator",
        ])
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = bin()
        .args(["serve", "--data-dir"])
        .arg(d)
        .args(["--bus-listen", &format!("127.0.0.1:{port}")])
        .args(["--web-listen", "127.0.0.1:0", "--heartbeat-secs", "1"])
        .args(["--local-agent", "--local-agent-name", "self-1", "--restic"])
        .arg(&restic)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = wait_running(&mut child);
    let _serve = Serve(child);
    let curl = Curl {
        base,
        cacert: d.join("ca/ca-cert.pem"),
        token,
    };
    let mut host_id = None;
    for _ in 0..300 {
        if let Some((id, status)) = local_host(d).await
            && status == "online"
        {
            host_id = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let host_id = host_id.expect("the local agent came online");

    // add a repository, created by that host
    let repo_path = d.join("repo");
    let (status, added) = curl.call(
        "POST",
        "/api/v1/repos",
        Some(json!({"name": "main", "init_on_host": host_id,
            "secrets": {"url": repo_path.to_str().unwrap(), "password": "walkthrough-pw"}})),
    );
    assert_eq!(status, 201, "{added}");
    let repo_id = added["repo_id"].as_str().unwrap().to_owned();
    let (status, err) = curl.call(
        "POST",
        &format!("/api/v1/repos/{repo_id}/attach"),
        Some(json!({"host_id": host_id, "access": "full"})),
    );
    assert!(status == 204 || status == 409, "{status} {err}");

    // follow job events while a backup runs
    let mut events = Command::new("curl")
        .args(["-sS", "-N", "--http2", "--cacert"])
        .arg(&curl.cacert)
        .args(["-H", &format!("Authorization: Bearer {}", curl.token)])
        .arg(format!("{}/api/v1/events?topics=jobs", curl.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "hello from the walkthrough\n").unwrap();
    let (status, job) = curl.call(
        "POST",
        "/api/v1/jobs",
        Some(json!({"host_id": host_id, "repo_id": repo_id,
            "params": {"kind": "backup", "paths": [data.to_str().unwrap()]}})),
    );
    assert_eq!(status, 201, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let done = curl.wait_job(&job_id);
    assert_eq!(done["status"], "succeeded", "{done}");
    // the stream carried this job's events, from start to end
    let mut types = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if v["job_id"] == job_id.as_str() {
            let t = v["type"].as_str().unwrap_or_default().to_owned();
            let end = t == "finished";
            types.push(t);
            if end {
                break;
            }
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    eprintln!("event types of the backup: {types:?}");
    assert!(types.iter().any(|t| t == "started"), "{types:?}");
    assert_eq!(
        types.last().map(String::as_str),
        Some("finished"),
        "{types:?}"
    );
    assert!(
        types.iter().any(|t| t == "progress"),
        "the backup's progress reached the stream: {types:?}"
    );

    // restore the file elsewhere on the same host
    let target = d.join("restored");
    let file = data.join("hello.txt");
    let (status, job) = curl.call(
        "POST",
        "/api/v1/jobs",
        Some(json!({"host_id": host_id, "repo_id": repo_id,
            "params": {"kind": "restore", "snapshot": "latest", "include": [file.to_str().unwrap()],
                "target": {"to": "path", "path": target.to_str().unwrap()}}})),
    );
    assert_eq!(status, 201, "{job}");
    let done = curl.wait_job(job["job_id"].as_str().unwrap());
    assert_eq!(done["status"], "succeeded", "{done}");
    let restored = target.join(file.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        "hello from the walkthrough\n"
    );
}
