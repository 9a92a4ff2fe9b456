//! Protecting the control plane: `controlplane-backup` copies a running
//! installation (database by `VACUUM INTO`, every key) into a staging
//! directory; `controlplane-restore` puts it into an empty data directory
//! on "another machine" (another directory and port), where it still
//! decrypts every repository password and channel secret and its agent
//! reconnects — real processes, real restic, a real REST server.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_bus::subject::{SvcRole, Verb};

use crate::browser::{Kill, REST_PASS, REST_USER, local_host_online, rclone, sealed, svc};
use crate::serve::{call_role, free_port, terminate, wait_running};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
}

/// The agent binary next to ours (`cargo build -p rm-agent` makes it).
fn agent_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_restic-manager")).with_file_name("restic-manager-agent");
    assert!(
        p.exists(),
        "{} is missing: `cargo build -p rm-agent`",
        p.display()
    );
    p
}

fn start_serve(data: &Path, bus_port: u16, log: &Path) -> Kill {
    let child = bin()
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--bus-listen", &format!("127.0.0.1:{bus_port}")])
        .args(["--web-listen", "127.0.0.1:0", "--heartbeat-secs", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start serve");
    let mut k = Kill(child);
    wait_running(&mut k.0);
    k
}

fn run_agent(state: &Path, bus_url: Option<String>, log: &Path) -> Kill {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--state-dir").arg(state);
    cmd.args([
        "--restic",
        "/usr/bin/restic",
        "run",
        "--heartbeat-secs",
        "2",
    ]);
    if let Some(url) = bus_url {
        cmd.args(["--bus-url", &url]);
    }
    Kill(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .expect("start the agent"),
    )
}

fn stop(mut k: Kill) {
    assert!(terminate(&mut k.0).success(), "stopped cleanly on SIGTERM");
}

/// Stops a serve on SIGTERM; if it does not stop cleanly in time, the
/// failure carries the end of its log (what it was still doing).
fn stop_serve(mut k: Kill, log: &Path) {
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| terminate(&mut k.0)));
    match stopped {
        Ok(status) => assert!(
            status.success(),
            "serve did not stop cleanly on SIGTERM: {status}\nserve log:\n{}",
            log_tail(log)
        ),
        Err(_) => panic!(
            "serve did not stop in time after SIGTERM\nserve log:\n{}",
            log_tail(log)
        ),
    }
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A service request answered `ok`, retried while the role cannot do it
/// yet (e.g. its agent is still connecting); panics after a minute.
async fn svc_until_ok(
    data: &Path,
    port: u16,
    role: SvcRole,
    verb: &'static str,
    body: serde_json::Value,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..60 {
        let reply = call_role(data, port, role, Verb::new(verb), body.clone()).await;
        match (reply.ok, reply.error) {
            (Some(v), _) if done(&v) => return v,
            (Some(v), _) => last = v.to_string(),
            (_, Some(e)) => last = format!("{}: {}", e.code, e.message),
            _ => last = "empty reply".into(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{verb} never succeeded: {last}");
}

/// (lower-cased head, body) of every request received.
type Got = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver keeping (headers, body) of every request.
struct Hooks {
    port: u16,
    got: Got,
    stop: Arc<AtomicBool>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn hooks() -> Hooks {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Got = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (g, s) = (got.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(req) = read_request(stream) {
                        g.lock().unwrap().push(req);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Hooks { port, got, stop }
}

fn read_request(mut stream: TcpStream) -> Option<(String, Vec<u8>)> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    Some((head, buf[head_end..].to_vec()))
}

/// True when the request carries a Standard Webhooks signature made with
/// `secret` (`whsec_<base64>`).
fn signed_with(secret: &str, head: &str, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
    };
    let (Some(id), Some(ts), Some(sigs)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let key = data_encoding::BASE64
        .decode(secret.trim_start_matches("whsec_").as_bytes())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = data_encoding::BASE64.encode(&mac.finalize().into_bytes());
    // header values were lower-cased with the head: compare so
    sigs.split_whitespace()
        .any(|s| s.strip_prefix("v1,") == Some(want.to_lowercase().as_str()))
}

/// What the installation under test holds.
struct Installed {
    host_id: String,
    repo_id: String,
    channel_id: String,
}

/// Adds host `cp-agent` and enrolls a real agent for it into `state`.
async fn enroll_agent(data: &Path, bus_port: u16, state: &Path) -> String {
    let (req, key) = rm_controlplane::api::HostAdd::new("cp-agent");
    let reply = call_role(
        data,
        bus_port,
        SvcRole::Controlplane,
        Verb::new("host-add"),
        serde_json::to_value(&req).unwrap(),
    )
    .await;
    let sealed_e: rm_controlplane::api::SealedEnrollment =
        serde_json::from_value(reply.ok.expect("host added")).unwrap();
    let e = sealed_e.open(&key).unwrap();
    let arg = |flag: &str| {
        e.command
            .split_whitespace()
            .skip_while(|w| *w != flag)
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let out = Command::new(agent_bin())
        .arg("--state-dir")
        .arg(state)
        .args([
            "enroll",
            "--server",
            &arg("--server"),
            "--token",
            &arg("--token"),
        ])
        .args([
            "--fingerprint",
            &arg("--fingerprint"),
            "--hostname",
            "cp-agent",
        ])
        .output()
        .unwrap();
    ok(&out, "agent enroll");
    e.host_id.to_string()
}

impl Installed {
    /// A repository on a real REST server attached to the online agent
    /// with full access, and a webhook channel with a signing secret.
    async fn create(
        data: &Path,
        bus_port: u16,
        rest_port: u16,
        hooks: &Hooks,
        secret: &str,
    ) -> Self {
        let mut i = Installed {
            host_id: local_host_online(&data.join("restic-manager.db"), "cp-agent").await,
            repo_id: String::new(),
            channel_id: String::new(),
        };
        i.fill(data, bus_port, rest_port, hooks, secret).await;
        i
    }

    async fn fill(
        &mut self,
        data: &Path,
        bus_port: u16,
        rest_port: u16,
        hooks: &Hooks,
        secret: &str,
    ) {
        let key = svc(data, bus_port, "pubkey", serde_json::json!({})).await;
        let xkey = key["xkey"].as_str().unwrap().to_owned();
        let url = format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{rest_port}/cp");
        let added = svc(
            data,
            bus_port,
            "repo-add",
            serde_json::json!({"name": "cp-repo", "secrets": sealed(&xkey, url),
                "init_on_host": self.host_id}),
        )
        .await;
        self.repo_id = added["repo_id"].as_str().unwrap().to_owned();
        // no secrets: the host's credential is derived from the repository's own
        svc(
            data,
            bus_port,
            "repo-attach",
            serde_json::json!({"repo_id": self.repo_id, "host_id": self.host_id, "access": "full",
                "secrets": null}),
        )
        .await;
        let key = call_role(
            data,
            bus_port,
            SvcRole::Alerts,
            Verb::new("pubkey"),
            serde_json::json!({}),
        )
        .await;
        let axkey = key.ok.unwrap()["xkey"].as_str().unwrap().to_owned();
        let def = rm_bus::notify::ChannelDef::Webhook(rm_bus::notify::WebhookChannel {
            url: format!("http://127.0.0.1:{}/hook", hooks.port),
            secret: Some(secret.to_owned()),
            headers: Default::default(),
        });
        let sealed_c = rm_alerts::api::SealedChannel::seal(&def, &axkey).unwrap();
        let created = call_role(
            data,
            bus_port,
            SvcRole::Alerts,
            Verb::new("channel-create"),
            serde_json::json!({"name": "cp-hook", "enabled": true, "definition": sealed_c}),
        )
        .await;
        let created = created.ok.expect("channel created");
        self.channel_id = created["channel_id"]
            .as_str()
            .or_else(|| created["id"].as_str())
            .unwrap_or_else(|| panic!("channel id in {created}"))
            .to_owned();
    }
}

/// The installation decrypts its secrets and reaches its agent: a
/// repository test through the agent (the host's credential, decrypted by
/// the control plane and sealed to the agent), a re-attach that derives the
/// credential from the repository's own secrets, and a channel test send
/// (decrypted by the alerts role, signed with the channel's secret by the
/// notifier).
async fn proves_secrets(data: &Path, bus_port: u16, i: &Installed, hooks: &Hooks, secret: &str) {
    let is_ok = |v: &serde_json::Value| v["ok"] == serde_json::json!(true);
    let test = serde_json::json!({"repo_id": i.repo_id, "host_id": i.host_id});
    svc_until_ok(
        data,
        bus_port,
        SvcRole::Controlplane,
        "repo-test",
        test.clone(),
        is_ok,
    )
    .await;
    svc(
        data,
        bus_port,
        "repo-attach",
        serde_json::json!({"repo_id": i.repo_id, "host_id": i.host_id, "access": "full",
            "secrets": null}),
    )
    .await;
    svc_until_ok(
        data,
        bus_port,
        SvcRole::Controlplane,
        "repo-test",
        test,
        is_ok,
    )
    .await;
    let before = hooks.got.lock().unwrap().len();
    svc_until_ok(
        data,
        bus_port,
        SvcRole::Alerts,
        "channel-test",
        serde_json::json!({"channel_id": i.channel_id}),
        is_ok,
    )
    .await;
    let got = hooks.got.lock().unwrap();
    let (head, body) = got.get(before).expect("the receiver got the test send");
    assert!(
        signed_with(secret, head, body),
        "signed with the channel's secret: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_copy_restored_on_another_machine_decrypts_every_secret_and_its_agent_reconnects()
 {
    let tmp = tempfile::tempdir().unwrap();
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let rest_port = free_port();
    let _rest = rclone(&repos, rest_port, false);
    let hooks = hooks();
    let secret = format!(
        "whsec_{}",
        data_encoding::BASE64.encode(b"a channel signing secret 32 byte")
    );

    // The first machine.
    let old = tmp.path().join("old");
    let old_port = free_port();
    let serve = start_serve(&old, old_port, &tmp.path().join("old.log"));
    let agent_state = tmp.path().join("agent");
    let host_id = enroll_agent(&old, old_port, &agent_state).await;
    let agent = run_agent(&agent_state, None, &tmp.path().join("agent-old.log"));
    let installed = Installed::create(&old, old_port, rest_port, &hooks, &secret).await;
    assert_eq!(installed.host_id, host_id);
    proves_secrets(&old, old_port, &installed, &hooks, &secret).await;

    // The copy, taken while everything runs.
    let copy = tmp.path().join("copy");
    let out = bin()
        .args(["controlplane-backup", "--data-dir"])
        .arg(&old)
        .arg("--out")
        .arg(&copy)
        .output()
        .unwrap();
    let said = ok(&out, "controlplane-backup");
    assert!(said.contains("schema version"), "{said}");

    // The first machine is gone.
    stop(agent);
    stop_serve(serve, &tmp.path().join("old.log"));

    // Another machine: another directory and port.
    let new = tmp.path().join("new");
    let out = bin()
        .args(["controlplane-restore", "--from"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(&new)
        .output()
        .unwrap();
    ok(&out, "controlplane-restore");
    let new_port = free_port();
    let serve = start_serve(&new, new_port, &tmp.path().join("new.log"));
    let agent = run_agent(
        &agent_state,
        Some(format!("nats://127.0.0.1:{new_port}")),
        &tmp.path().join("agent-new.log"),
    );
    proves_secrets(&new, new_port, &installed, &hooks, &secret).await;
    stop(agent);
    stop_serve(serve, &tmp.path().join("new.log"));
}

fn restore(from: &Path, to: &Path) -> Output {
    bin()
        .args(["controlplane-restore", "--from"])
        .arg(from)
        .arg("--data-dir")
        .arg(to)
        .output()
        .unwrap()
}

fn refused(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(stderr.contains(says), "the error says {says:?}: {stderr}");
}

#[tokio::test]
async fn restore_refuses_a_used_data_dir_a_tampered_copy_and_a_newer_schema_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = rm_store::Store::open(&data.join("restic-manager.db"))
        .await
        .unwrap();
    store.close().await;
    std::fs::write(
        data.join("master.key"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    std::fs::create_dir_all(data.join("demo/repository")).unwrap();
    std::fs::write(data.join("demo/repository/config"), "not the control plane").unwrap();
    std::fs::create_dir_all(data.join("agent/cache")).unwrap();
    std::fs::write(data.join("agent/identity.json"), "{}").unwrap();
    std::fs::write(data.join("agent/cache/blob"), "cache").unwrap();
    let copy = tmp.path().join("copy");
    let out = bin()
        .args(["controlplane-backup", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&copy)
        .output()
        .unwrap();
    ok(&out, "controlplane-backup");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("manifest.json")).unwrap()).unwrap();
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["agent/identity.json", "master.key", "restic-manager.db"],
        "the database, the keys and the agent's identity; not the demo or caches"
    );
    for p in paths.iter().chain(&["manifest.json"]) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(copy.join(p))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{p}");
    }

    // a data dir in use
    let used = tmp.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("master.key"), "mine").unwrap();
    refused(&restore(&copy, &used), "is not empty");
    assert_eq!(
        std::fs::read_to_string(used.join("master.key")).unwrap(),
        "mine"
    );

    // a changed key file
    let tampered = tmp.path().join("tampered");
    crate::cpbackup::copy_dir(&copy, &tampered);
    std::fs::write(
        tampered.join("master.key"),
        "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=\n",
    )
    .unwrap();
    let target = tmp.path().join("target");
    refused(
        &restore(&tampered, &target),
        "master.key (SHA-256 or size differs",
    );
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());

    // a copy from a newer schema
    let newer = tmp.path().join("newer");
    crate::cpbackup::copy_dir(&copy, &newer);
    let mut m = manifest.clone();
    m["schema_version"] = serde_json::json!(rm_store::schema_version() + 1);
    std::fs::write(newer.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    refused(&restore(&newer, &target), "newer than this build supports");

    // not a copy at all
    refused(&restore(&data, &target), "is not a control-plane backup");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());

    // the real thing
    ok(&restore(&copy, &target), "controlplane-restore");
    let v = rm_store::file_schema_version(&target.join("restic-manager.db"))
        .await
        .unwrap();
    assert_eq!(v, rm_store::schema_version());
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The commands of docs/install.md's "Disaster recovery" block.
fn documented_restore() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/install.md"))
            .unwrap();
    let start = doc
        .find("<!-- BEGIN disaster-recovery -->")
        .expect("the block");
    let end = doc.find("<!-- END disaster-recovery -->").expect("its end");
    let block = &doc[start..end];
    let body = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh code block");
    body.to_owned()
}

/// Adds the control-plane backup repository (initialised by restic on the
/// local host) and attaches that host with full access; its id.
async fn add_cp_repo(data: &Path, port: u16, host_id: &str, rest_port: u16, path: &str) -> String {
    let key = svc(data, port, "pubkey", serde_json::json!({})).await;
    let xkey = key["xkey"].as_str().unwrap().to_owned();
    let url = format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{rest_port}/{path}");
    let added = svc(
        data,
        port,
        "repo-add",
        serde_json::json!({"name": "cp-backups", "secrets": sealed(&xkey, url), "init_on_host": host_id}),
    )
    .await;
    let repo_id = added["repo_id"].as_str().unwrap().to_owned();
    svc(
        data,
        port,
        "repo-attach",
        serde_json::json!({"repo_id": repo_id, "host_id": host_id, "access": "full", "secrets": null}),
    )
    .await;
    repo_id
}

/// The last part of a serve log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// The first successful control-plane backup; fails at once with the
/// run's error (and the serve log) if one fails, and after two minutes.
async fn wait_for_success(db: &Path, log: &Path) -> rm_store::cpbackup::Run {
    let store = rm_store::Store::open(db).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        let mut c = store.read().await.unwrap();
        let s = rm_store::cpbackup::status(&mut c).await.unwrap();
        if let Some(run) = s.last_success {
            return run;
        }
        if let Some(run) = s.last_run.as_ref().filter(|r| r.error.is_some()) {
            panic!(
                "a control-plane backup failed: {run:?}\nserve log:\n{}",
                log_tail(log)
            );
        }
        last = s.last_run;
        drop(c);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "no control-plane backup succeeded within 2 minutes; last run: {last:?}\nserve log:\n{}",
        log_tail(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_backup_through_the_local_agent_and_the_documented_restore_bring_the_installation_back()
 {
    let tmp = tempfile::tempdir().unwrap();
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let rest_port = free_port();
    let _rest = rclone(&repos, rest_port, false);
    let old = tmp.path().join("old");
    let old_port = free_port();
    let start = |data: &Path, port: u16, log: &str| {
        let child = bin()
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--bus-listen", &format!("127.0.0.1:{port}")])
            .args(["--web-listen", "127.0.0.1:0", "--heartbeat-secs", "2"])
            .args(["--local-agent", "--local-agent-name", "cp-local"])
            .args([
                "--restic",
                "/usr/bin/restic",
                "--controlplane-backup-poll-secs",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(tmp.path().join(log)).unwrap(),
            ))
            .spawn()
            .expect("start serve");
        let mut k = Kill(child);
        wait_running(&mut k.0);
        k
    };
    let serve = start(&old, old_port, "old.log");
    let db = old.join("restic-manager.db");
    let host_id = local_host_online(&db, "cp-local").await;
    let repo_id = add_cp_repo(&old, old_port, &host_id, rest_port, "controlplane").await;
    // Until a kit is exported the log warns.
    let log = std::fs::read_to_string(tmp.path().join("old.log")).unwrap();
    assert!(log.contains("no backup of the master key exists"), "{log}");

    // The admin chooses the repository (the settings page's write).
    {
        let store = rm_store::Store::open(&db).await.unwrap();
        let mut tx = store.write().await.unwrap();
        rm_store::cpbackup::set_repo(&mut tx, Some(&repo_id), "ops", 1)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store.close().await;
    }
    let run = wait_for_success(&db, &tmp.path().join("old.log")).await;
    assert_eq!(run.repo_id.as_deref(), Some(repo_id.as_str()));
    assert!(
        run.job_id.is_some() && run.files.unwrap_or(0) >= 5,
        "{run:?}"
    );

    let out = bin()
        .args(["recovery-kit", "--data-dir"])
        .arg(&old)
        .arg("--out")
        .arg(tmp.path().join("restic-manager-recovery-kit.env"))
        .output()
        .unwrap();
    ok(&out, "recovery-kit");
    stop_serve(serve, &tmp.path().join("old.log"));

    // Another machine, the documented commands.
    let new = tmp.path().join("new");
    let restore_tmp = tmp.path().join("rm-restore");
    let script = documented_restore()
        .replace("/var/lib/restic-manager", new.to_str().unwrap())
        .replace("/tmp/rm-restore", restore_tmp.to_str().unwrap());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_restic-manager"))
        .parent()
        .unwrap();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let out = Command::new("sh")
        .args(["-ec", &script])
        .current_dir(tmp.path())
        .env("PATH", path)
        .env_remove(rm_store::secrets::MASTER_KEY_ENV)
        .output()
        .unwrap();
    ok(&out, "the documented restore");

    let new_port = free_port();
    let serve = start(&new, new_port, "new.log");
    // The local agent comes back as the same host, through the new bus,
    // and the restored installation decrypts its credential.
    let test = serde_json::json!({"repo_id": repo_id, "host_id": host_id});
    svc_until_ok(
        &new,
        new_port,
        SvcRole::Controlplane,
        "repo-test",
        test,
        |v| v["ok"] == serde_json::json!(true),
    )
    .await;
    // The restored installation keeps its control-plane backup setting.
    let store = rm_store::Store::open(&new.join("restic-manager.db"))
        .await
        .unwrap();
    let mut c = store.read().await.unwrap();
    let status = rm_store::cpbackup::status(&mut c).await.unwrap();
    assert_eq!(status.repo_id(), Some(repo_id.as_str()));
    drop(c);
    store.close().await;
    stop_serve(serve, &tmp.path().join("new.log"));
}

/// The split deployment's timer command: `controlplane-backup --if-due`
/// over the bus with the agent of `host`; its output.
fn if_due(data: &Path, port: u16, host: &str) -> Output {
    bin()
        .args(["controlplane-backup", "--if-due", "--data-dir"])
        .arg(data)
        .args(["--nats-url", &format!("nats://127.0.0.1:{port}")])
        .args(["--host", host])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlplane_backup_if_due_runs_the_backup_once_and_then_waits_for_the_time_of_day() {
    let tmp = tempfile::tempdir().unwrap();
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let rest_port = free_port();
    let _rest = rclone(&repos, rest_port, false);
    let data = tmp.path().join("cp");
    let port = free_port();
    // serve for the bus and the local agent only: its own backup task
    // looks once at start (nothing configured yet) and not again for a day
    let child = bin()
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--bus-listen", &format!("127.0.0.1:{port}")])
        .args(["--web-listen", "127.0.0.1:0", "--heartbeat-secs", "2"])
        .args(["--local-agent", "--local-agent-name", "cp-local"])
        .args([
            "--restic",
            "/usr/bin/restic",
            "--controlplane-backup-poll-secs",
            "86400",
        ])
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
    let host_id = local_host_online(&db, "cp-local").await;

    // Not configured yet: the command says so and records nothing.
    let out = if_due(&data, port, "cp-local");
    assert!(ok(&out, "if-due, off").contains("is off"));

    let repo_id = add_cp_repo(&data, port, &host_id, rest_port, "cp").await;
    // The settings page's write: the repository, daily at 03:15 in Tokyo.
    let store = rm_store::Store::open(&db).await.unwrap();
    {
        let mut tx = store.write().await.unwrap();
        rm_store::cpbackup::set_repo(&mut tx, Some(&repo_id), "ops", 1)
            .await
            .unwrap();
        rm_store::cpbackup::set_schedule(&mut tx, 3 * 60 + 15, Some("Asia/Tokyo"), "ops", 1)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    // Never ran: due at once; the run goes through the agent and is
    // recorded as serve's would be.
    let out = if_due(&data, port, "cp-local");
    assert!(ok(&out, "if-due, first").contains("succeeded"));
    let runs = {
        let mut c = store.read().await.unwrap();
        rm_store::cpbackup::recent_runs(&mut c, 10).await.unwrap()
    };
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, "succeeded", "{runs:?}");
    assert!(runs[0].job_id.is_some(), "backed up by the agent: {runs:?}");

    // The next look (the timer's next tick) runs nothing: the next run is
    // the first 03:15 in Tokyo after that one started.
    let want = rm_store::cpbackup::daily(3 * 60 + 15, "Asia/Tokyo")
        .unwrap()
        .next_after_ms(runs[0].started_at)
        .unwrap();
    let out = if_due(&data, port, "cp-local");
    let said = ok(&out, "if-due, second");
    let when = jiff::Timestamp::from_millisecond(want).unwrap().to_string();
    assert!(said.contains(&format!("not due until {when}")), "{said}");
    assert!(
        when.contains("T18:15:00"),
        "03:15 in Tokyo is 18:15 UTC: {when}"
    );
    let mut c = store.read().await.unwrap();
    let runs = rm_store::cpbackup::recent_runs(&mut c, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "no second run: {runs:?}");
    drop(c);
    store.close().await;
    stop(serve);
}
