//! A real 3-node nats-server cluster as the bus (issue 13): every node's
//! configuration is what `restic-manager authority nats-config` prints
//! (routes on loopback, operator mode, `full` resolver, its own resolver
//! directory, a certificate from the installation's CA by `authority
//! bus-cert`: clients over TLS, routes and leaf connections mutual TLS,
//! every role and agent verifying the servers against that CA); control plane, alerts and web run as their own processes on
//! node A, one notifier each on nodes B and C, and real agents with real
//! restic on node C back up into `rclone serve restic --append-only`.
//! Shown: a backup succeeds; a failing job raises one alert whose
//! deliveries all carry one `webhook-id`; an agent publishing or
//! subscribing as another host is refused by the servers; an agent enrolled
//! while the cluster runs, at a remote site behind a leaf node of A and B,
//! connects with no server reload; once revoked it is refused by every
//! node and the leaf; killing node C moves its agents to A or B and
//! every result they produce meanwhile is ingested exactly once; a
//! server whose certificate is from another CA cannot join the cluster.
//! `deploy/nats/generate.sh`'s files pass `nats-server -t`.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use rm_bus::connect::{ConnectSpec, connect};
use rm_bus::msg::{Actor, ActorVia};
use rm_bus::subject::{SvcRole, Verb};
use rm_bus_server::creds::{Authority, Role};
use serde_json::{Value, json};

use crate::browser::{REST_PASS, REST_USER, rclone, sealed};
use crate::serve::free_port;

const REPO_PASSWORD: &str = "repo-password-e2e";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
}

/// A certificate for 127.0.0.1 from the installation's CA in `ca_data`
/// (`authority bus-cert`), written to `<dir>/<name>-cert.pem` and
/// `<dir>/<name>-key.pem`; returns the two paths.
pub(crate) fn issue_cert(ca_data: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    let out = bin()
        .args(["authority", "bus-cert", "--data-dir"])
        .arg(ca_data)
        .args(["--name", "127.0.0.1", "--cert-out"])
        .arg(&cert)
        .arg("--key-out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "bus-cert: {out:?}");
    (cert, key)
}

fn agent_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_restic-manager")).with_file_name("restic-manager-agent");
    assert!(
        p.exists(),
        "{} is missing: build it (`cargo build -p rm-agent`; the test command builds the workspace)",
        p.display()
    );
    p
}

fn restic() -> PathBuf {
    std::env::var_os("RM_RESTIC_018")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/restic"))
}

/// A process of the test, killed (and reaped) when dropped; its output
/// goes to `<dir>/<name>.log`, whose tail is printed if the test fails.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            eprintln!(
                "--- {} (last lines, newest first)\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `secs`.
async fn until<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET on a nats-server monitoring endpoint: the JSON body.
fn monitor(base: &str, path: &str) -> Option<Value> {
    let hostport = base.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// One nats-server of the cluster.
struct Node {
    name: &'static str,
    proc: Option<Proc>,
    client: String,
    monitor: String,
    route: String,
    /// Where leaf nodes connect (`nats-leaf://`), if this node takes them.
    leafnodes: String,
}

impl Node {
    /// Writes the node's configuration with the documented command and
    /// starts nats-server on it; ports are chosen by the server (-1) and
    /// read back from its ports file.
    async fn start(dir: &Path, data: &Path, name: &'static str, routes: &[String]) -> Node {
        let mut args: Vec<String> = ["--cluster", "restic-manager"]
            .into_iter()
            .chain(["--cluster-listen", "127.0.0.1:-1"])
            .chain(["--leafnodes-listen", "127.0.0.1:-1"])
            .map(str::to_owned)
            .collect();
        if !routes.is_empty() {
            args.extend(["--route".to_owned(), routes.join(",")]);
        }
        Node::configure(dir, data, name, &args, data).await
    }

    /// A leaf node at a "remote site", connected to `hubs`' leaf node
    /// ports with the documented credentials.
    async fn leaf(dir: &Path, data: &Path, name: &'static str, hubs: &[&Node]) -> Node {
        let mut files = Vec::new();
        for role in ["leafnode", "system"] {
            let file = dir.join(format!("{name}-{role}.creds"));
            let out = bin()
                .args(["authority", "creds", "--data-dir"])
                .arg(data)
                .args(["--role", role, "--out"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "authority creds --role {role}: {out:?}"
            );
            files.push(file.display().to_string());
        }
        let urls: Vec<String> = hubs.iter().map(|h| h.leafnodes.clone()).collect();
        let args = [
            "--leaf-remote".to_owned(),
            urls.join(","),
            "--leaf-creds".to_owned(),
            files[0].clone(),
            "--leaf-system-creds".to_owned(),
            files[1].clone(),
        ];
        Node::configure(dir, data, name, &args, data).await
    }

    /// Starts a node whose certificate is issued by the CA in `ca_data`
    /// (the installation's, `data`, unless a test wants a stranger) and
    /// which trusts that CA for its peers.
    async fn configure(
        dir: &Path,
        data: &Path,
        name: &'static str,
        extra: &[String],
        ca_data: &Path,
    ) -> Node {
        let (cert, key) = issue_cert(ca_data, dir, name);
        let mut cmd = bin();
        cmd.args(["authority", "nats-config", "--data-dir"])
            .arg(data)
            .arg("--resolver-dir")
            .arg(dir.join(format!("jwt-{name}")))
            .args(["--server-name", name, "--listen", "127.0.0.1:-1"])
            .args(["--http", "127.0.0.1:-1"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--tls-ca")
            .arg(ca_data.join("ca/ca-cert.pem"))
            .args(extra);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "nats-config: {out:?}");
        let conf = dir.join(format!("nats-{name}.conf"));
        std::fs::write(&conf, &out.stdout).unwrap();
        let ports_dir = dir.join(format!("ports-{name}"));
        std::fs::create_dir_all(&ports_dir).unwrap();
        let mut nats = Command::new(rm_testkit::nats_server_bin());
        nats.arg("-c")
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        let proc = Proc::spawn(nats, dir, &format!("nats-{name}"));
        let ports: Value = until(&format!("node {name}'s ports file"), 20, || {
            let dir = ports_dir.clone();
            async move {
                let entry = std::fs::read_dir(&dir).ok()?.next()?.ok()?;
                serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()
            }
        })
        .await;
        let first = |k: &str| ports[k][0].as_str().unwrap_or_default().to_owned();
        let mut node = Node {
            name,
            proc: Some(proc),
            client: first("nats"),
            monitor: first("monitoring"),
            route: first("cluster"),
            leafnodes: String::new(),
        };
        // The ports file leaves the leaf node port out; varz has it.
        if let Some(port) = node.varz()["leaf"]["port"].as_u64().filter(|p| *p > 0) {
            node.leafnodes = format!("nats-leaf://127.0.0.1:{port}");
        }
        node
    }

    fn varz(&self) -> Value {
        monitor(&self.monitor, "/varz").expect("varz")
    }

    /// Names of the client connections this node holds.
    fn connection_names(&self) -> Vec<String> {
        monitor(&self.monitor, "/connz?limit=1024")
            .map(|v| {
                v["connections"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Leaf node connections of this node.
    fn leaf_connections(&self) -> u64 {
        monitor(&self.monitor, "/leafz")
            .and_then(|v| v["leafnodes"].as_u64())
            .unwrap_or(0)
    }

    /// Distinct servers this node has routes to.
    fn peers(&self) -> usize {
        monitor(&self.monitor, "/routez")
            .map(|v| {
                v["routes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["remote_id"].as_str().map(str::to_owned))
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .unwrap_or(0)
    }
}

/// A webhook receiver: answers 500 to the first delivery and 200 after,
/// and keeps each request's `webhook-id` header. Stops when dropped.
struct Webhooks {
    url: String,
    ids: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Webhooks {
    fn start() -> Webhooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let ids: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = ids.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let mut s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, want) = loop {
                    let Ok(n) = s.read(&mut chunk) else {
                        break (String::new(), 0);
                    };
                    if n == 0 {
                        break (String::new(), 0);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break (head, i + 4 + len);
                    }
                };
                while buf.len() < want {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let id = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("webhook-id")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let first = {
                    let mut ids = seen.lock().unwrap();
                    ids.push(id);
                    ids.len() == 1
                };
                let status = if first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Webhooks {
            url,
            ids,
            stop,
            thread: Some(thread),
        }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

/// Service requests as the web role would make them, over node A.
struct Ops {
    client: async_nats::Client,
}

impl Ops {
    async fn call(&self, role: SvcRole, verb: &'static str, body: Value) -> Value {
        let actor = Actor {
            name: "cluster-test".into(),
            via: ActorVia::Session,
            address: None,
        };
        rm_web::svc::call(
            &self.client,
            role,
            Verb::new(verb),
            actor,
            body,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{verb}: {e:?}"))
    }

    /// Retries `pubkey` until the role answers (it connects on its own time).
    async fn wait_role(&self, role: SvcRole) -> String {
        until(&format!("{role:?} to answer"), 60, || async {
            let actor = Actor {
                name: "cluster-test".into(),
                via: ActorVia::Session,
                address: None,
            };
            let v: Value = rm_web::svc::call(
                &self.client,
                role,
                Verb::new("pubkey"),
                actor,
                json!({}),
                Duration::from_secs(2),
            )
            .await
            .ok()?;
            v["xkey"].as_str().map(str::to_owned)
        })
        .await
    }
}

/// `admin host-add` (the operator's command) then the printed enrollment
/// command, then `run` with the node URLs in order; returns the host id and
/// the agent process.
async fn enroll_and_run(
    dir: &Path,
    data: &Path,
    admin_urls: &str,
    name: &str,
    bus_urls: &str,
) -> (String, PathBuf, Proc) {
    let out = bin()
        .args(["admin", "--data-dir"])
        .arg(data)
        .args(["--nats-url", admin_urls, "host-add", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "host-add: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let host_id = text
        .split_whitespace()
        .nth(1)
        .expect("host <id> added")
        .to_owned();
    let command = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("restic-manager-agent enroll"))
        .unwrap_or_else(|| panic!("an enrollment command in {text}"));
    let state = dir.join(format!("agent-{name}"));
    let out = Command::new(agent_bin())
        .arg("--state-dir")
        .arg(&state)
        .args(command.split_whitespace().skip(1))
        .args(["--hostname", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "enroll {name}: {out:?}");
    // The enrollment told it every node (controlplane --agent-nats-url a,b,c).
    let identity = rm_agent::state::StateDir::open(&state)
        .unwrap()
        .identity()
        .unwrap();
    assert_eq!(identity.bus_urls.join(","), admin_urls, "enrolled bus URLs");
    let mut run = Command::new(agent_bin());
    run.arg("--state-dir")
        .arg(&state)
        .arg("--restic")
        .arg(restic())
        .args(["run", "--bus-url", bus_urls, "--heartbeat-secs", "1"]);
    let proc = Proc::spawn(run, dir, &format!("agent-{name}"));
    (host_id, state, proc)
}

async fn host_status(store: &rm_store::Store, id: &str) -> Option<String> {
    let mut c = store.read().await.ok()?;
    rm_store::hosts::get(&mut c, id)
        .await
        .ok()
        .map(|h| h.status)
}

async fn job(store: &rm_store::Store, id: &str) -> Option<rm_store::jobs::Job> {
    let mut c = store.read().await.ok()?;
    rm_store::jobs::get(&mut c, id).await.ok()
}

fn terminal(status: &str) -> bool {
    ["succeeded", "warning", "failed", "cancelled", "lost"].contains(&status)
}

async fn wait_job(store: &rm_store::Store, id: &str, secs: u64) -> rm_store::jobs::Job {
    until(&format!("job {id} to end"), secs, || async {
        job(store, id).await.filter(|j| terminal(&j.status))
    })
    .await
}

async fn backup(ops: &Ops, host: &str, repo: &str, path: &Path) -> String {
    let created = ops
        .call(
            SvcRole::Controlplane,
            "job-create",
            json!({"host_id": host, "repo_id": repo,
                "params": {"kind": "backup", "paths": [path]}}),
        )
        .await;
    created["job_id"].as_str().unwrap().to_owned()
}

/// Incompressible bytes, distinct per `seed`.
fn make_data(dir: &Path, seed: u64, bytes: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; bytes];
    for chunk in buf.chunks_mut(8) {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.join("data.bin"), buf).unwrap();
}

/// Connects to exactly `url` with `creds` (no retry): the error text, if
/// the server refuses.
async fn refused(
    url: &str,
    creds: rm_bus::creds::UserCreds,
    role: &Role,
    ca: &str,
) -> Option<String> {
    let mut spec = ConnectSpec::new(url.to_owned(), creds, role);
    spec.tls_ca_pem = Some(ca.to_owned());
    let opts = rm_bus::connect::options(&spec, None).unwrap();
    let addr: async_nats::ServerAddr = url.parse().unwrap();
    match opts.ignore_discovered_servers().connect(addr).await {
        Ok(client) => {
            drop(client);
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_nats_cluster_carries_every_role_and_survives_losing_a_node() {
    let t0 = Instant::now();
    let mut marks: Vec<(&str, Duration)> = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("rm-data");
    let out = bin()
        .args(["authority", "init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "authority init: {out:?}");

    // The cluster: B routes to A, C to A and B; gossip completes the mesh.
    let a = Node::start(dir, &data, "a", &[]).await;
    let b = Node::start(dir, &data, "b", std::slice::from_ref(&a.route)).await;
    let mut c = Node::start(dir, &data, "c", &[a.route.clone(), b.route.clone()]).await;
    for node in [&a, &b, &c] {
        until(
            &format!("node {} to route to both others", node.name),
            30,
            || async { (node.peers() >= 2).then_some(()) },
        )
        .await;
    }
    // Clients over TLS; routes and leaf connections mutual TLS.
    for node in [&a, &b, &c] {
        let varz = node.varz();
        assert!(node.client.starts_with("tls://"), "{}", node.client);
        assert_eq!(varz["tls_required"], true, "node {}", node.name);
        assert_eq!(varz["cluster"]["tls_required"], true, "node {}", node.name);
        assert_eq!(varz["cluster"]["tls_verify"], true, "node {}", node.name);
        assert_eq!(varz["leaf"]["tls_required"], true, "node {}", node.name);
        assert_eq!(varz["leaf"]["tls_verify"], true, "node {}", node.name);
        // the configuration's client authentication timeout is honoured
        // (not nats-server's default, 6 s with this TLS timeout)
        assert_eq!(varz["auth_timeout"], 10, "node {}", node.name);
    }
    let ca_pem = std::fs::read_to_string(data.join("ca/ca-cert.pem")).unwrap();
    // A server holding a certificate from another CA (it trusts its own)
    // is refused by A: its route handshake fails and the mesh stays three.
    {
        let stranger = dir.join("stranger-data");
        let args: Vec<String> = [
            "--cluster",
            "restic-manager",
            "--cluster-listen",
            "127.0.0.1:-1",
            "--route",
            &a.route,
        ]
        .map(str::to_owned)
        .to_vec();
        let x = Node::configure(dir, &data, "x", &args, &stranger).await;
        let a_log = a.proc.as_ref().unwrap();
        until("node A to refuse the stranger's route", 30, || async {
            let log = a_log.log_text();
            log.lines()
                .any(|l| l.contains("TLS route handshake error"))
                .then_some(())
        })
        .await;
        assert_eq!(x.peers(), 0, "the stranger has no route");
        assert_eq!(a.peers(), 2, "A routes to B and C only");
    }
    let loaded: Vec<Value> = [&a, &b, &c]
        .iter()
        .map(|n| n.varz()["config_load_time"].clone())
        .collect();
    marks.push(("cluster formed", t0.elapsed()));

    // Web first (it prints its address and certificate fingerprint), then
    // the control plane with them, then alerts: one at a time on one
    // database.
    let mut web = bin();
    web.args(["web", "--data-dir"]).arg(&data).args([
        "--nats-url",
        &a.client,
        "--listen",
        "127.0.0.1:0",
    ]);
    let web = Proc::spawn(web, dir, "web");
    let (web_addr, fingerprint) = until("the web role to serve", 60, || async {
        let text = web.log_text();
        let line = text.lines().find(|l| l.contains("web role serving"))?;
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_owned)
        };
        Some((field("addr=")?, field("fingerprint=")?))
    })
    .await;
    let all_urls = format!("{},{},{}", a.client, b.client, c.client);
    // two nodes (not C, which is killed below), B first: the control
    // plane tries them in this order
    let cp_urls = format!("{},{}", b.client, a.client);
    let mut cp = bin();
    cp.args(["controlplane", "--data-dir"])
        .arg(&data)
        .args(["--nats-url", &cp_urls, "--agent-nats-url", &all_urls])
        .args(["--server-url", &format!("https://{web_addr}")])
        .args([
            "--server-fingerprint",
            &fingerprint,
            "--heartbeat-secs",
            "1",
        ]);
    let _cp = Proc::spawn(cp, dir, "controlplane");

    let authority = Authority::load_or_create(&data.join("bus"), rm_bus::clock::system()).unwrap();
    let web_creds = authority
        .mint_new_user("cluster-test", Role::Web.permissions())
        .unwrap();
    let mut spec = ConnectSpec::new(a.client.clone(), web_creds, &Role::Web);
    spec.retry_on_initial_connect = true;
    spec.tls_ca_pem = Some(ca_pem.clone());
    let (client, _events) = connect(&spec).await.unwrap();
    let ops = Ops { client };
    let cp_xkey = ops.wait_role(SvcRole::Controlplane).await;
    // Operators' requests reach the control plane on a connection of its
    // own (not behind the fleet's heartbeats), on the node of its fleet
    // connection: the first of its `--nats-url`, B.
    until(
        "the control plane's two connections on node B",
        30,
        || async {
            let names = b.connection_names();
            (names.iter().any(|x| x == "controlplane")
                && names.iter().any(|x| x == "controlplane-svc"))
            .then_some(())
        },
    )
    .await;
    // The web role's live events and operators' requests on connections
    // of their own (its one URL: node A)
    until("the web role's two connections on node A", 30, || async {
        let names = a.connection_names();
        (names.iter().any(|x| x == "web") && names.iter().any(|x| x == "web-requests"))
            .then_some(())
    })
    .await;
    assert!(
        !a.connection_names()
            .iter()
            .any(|x| x.starts_with("controlplane")),
        "no control-plane connection (fleet, service or system) on node A, the second of its URLs"
    );

    let notifier_seed = data.join("notifier.xkey");
    let out = bin()
        .arg("notifier-xkey")
        .arg(&notifier_seed)
        .output()
        .unwrap();
    assert!(out.status.success(), "notifier-xkey: {out:?}");
    let notifier_xkey = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let notifier_creds = dir.join("notifier.creds");
    let out = bin()
        .args(["authority", "creds", "--data-dir"])
        .arg(&data)
        .args(["--role", "notifier", "--out"])
        .arg(&notifier_creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "authority creds: {out:?}");
    let mut alerts = bin();
    alerts.args(["alerts", "--data-dir"]).arg(&data).args([
        "--nats-url",
        &a.client,
        "--notifier-xkey",
        &notifier_xkey,
    ]);
    let _alerts = Proc::spawn(alerts, dir, "alerts");
    let mut notifiers = Vec::new();
    for node in [&b, &c] {
        let mut n = bin();
        n.args(["notifier", "--nats-url", &node.client, "--creds"])
            .arg(&notifier_creds)
            .arg("--xkey-seed-file")
            .arg(&notifier_seed)
            .arg("--nats-ca")
            .arg(data.join("ca/ca-cert.pem"))
            .args(["--name", &format!("notifier-{}", node.name)]);
        notifiers.push(Proc::spawn(n, dir, &format!("notifier-{}", node.name)));
    }
    let alerts_xkey = ops.wait_role(SvcRole::Alerts).await;
    marks.push(("roles up", t0.elapsed()));

    // Two agents on node C (C first, then A and B).
    let store = rm_store::Store::open(&data.join("restic-manager.db"))
        .await
        .unwrap();
    let on_c = format!("{},{},{}", c.client, a.client, b.client);
    let (h1, state1, _agent1) = enroll_and_run(dir, &data, &all_urls, "agent-1", &on_c).await;
    let (h2, _state2, _agent2) = enroll_and_run(dir, &data, &all_urls, "agent-2", &on_c).await;
    for h in [&h1, &h2] {
        until(&format!("{h} online"), 60, || async {
            (host_status(&store, h).await? == "online").then_some(())
        })
        .await;
        let name = format!("agent {h}");
        until(&format!("{h} connected to node C"), 30, || async {
            c.connection_names().contains(&name).then_some(())
        })
        .await;
    }
    marks.push(("agents online on C", t0.elapsed()));

    // A repository on an append-only REST server (initialised through a
    // full-access one), both agents attached append-only.
    let repos = dir.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let (full_port, ao_port) = (free_port(), free_port());
    let _full = rclone(&repos, full_port, false);
    let _append_only = rclone(&repos, ao_port, true);
    let rest = |port: u16| format!("rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{port}/main");
    let added = ops
        .call(
            SvcRole::Controlplane,
            "repo-add",
            json!({"name": "main", "secrets": sealed(&cp_xkey, rest(full_port)), "init_on_host": h1}),
        )
        .await;
    let repo = added["repo_id"].as_str().unwrap().to_owned();
    for h in [&h1, &h2] {
        ops.call(
            SvcRole::Controlplane,
            "repo-attach",
            json!({"repo_id": repo, "host_id": h, "access": "append_only",
                "secrets": sealed(&cp_xkey, rest(ao_port))}),
        )
        .await;
    }

    // 1. A backup end to end.
    let src = dir.join("src-0");
    make_data(&src, 0, 1 << 20);
    let first = backup(&ops, &h1, &repo, &src).await;
    let done = wait_job(&store, &first, 90).await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    marks.push(("first backup", t0.elapsed()));

    // 2. A failing job: one alert; its deliveries (a 500, then a retry)
    // carry one webhook-id.
    let hooks = Webhooks::start();
    let def = rm_bus::notify::ChannelDef::Webhook(rm_bus::notify::WebhookChannel {
        url: hooks.url.clone(),
        secret: None,
        headers: Default::default(),
    });
    let channel = rm_alerts::api::SealedChannel::seal(&def, &alerts_xkey).unwrap();
    ops.call(
        SvcRole::Alerts,
        "channel-create",
        json!({"name": "cluster-hook", "enabled": true, "definition": channel}),
    )
    .await;
    let failing = backup(&ops, &h2, &repo, &dir.join("does-not-exist")).await;
    let done = wait_job(&store, &failing, 90).await;
    assert_eq!(done.status, "failed", "{done:?}");
    let ids = until("a delivery retried after the 500", 60, || async {
        let ids = hooks.ids();
        (ids.len() >= 2).then_some(ids)
    })
    .await;
    assert!(!ids[0].is_empty(), "deliveries carry a webhook-id");
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "every delivery of the alert carries one webhook-id: {ids:?}"
    );
    let failed_alerts = |list: Vec<rm_store::alerts::Alert>| {
        list.into_iter()
            .filter(|a| a.kind == "backup_failed")
            .collect::<Vec<_>>()
    };
    let mut conn = store.read().await.unwrap();
    let raised = failed_alerts(
        rm_store::alerts::list_for_host(&mut conn, &h2, 50)
            .await
            .unwrap(),
    );
    drop(conn);
    assert_eq!(raised.len(), 1, "one alert recorded: {raised:?}");
    marks.push(("alert delivered", t0.elapsed()));

    // 3. Agent 1's credentials cannot act as agent 2: the servers refuse.
    let creds1 = rm_agent::state::StateDir::open(&state1)
        .unwrap()
        .creds()
        .unwrap();
    let role1 = Role::Agent(rm_bus::ids::HostId::parse(&h1).unwrap());
    let mut spec = ConnectSpec::new(c.client.clone(), creds1, &role1);
    spec.tls_ca_pem = Some(ca_pem.clone());
    let (rogue, mut events) = connect(&spec).await.unwrap();
    let sub = rogue.subscribe(format!("rm.cmd.{h2}")).await.unwrap();
    rogue
        .publish(format!("rm.agent.{h2}.heartbeat"), "{}".into())
        .await
        .unwrap();
    rogue.flush().await.unwrap();
    let mut violations = Vec::new();
    while violations.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the servers report the violations")
            .expect("events");
        let text = ev.to_string();
        if text.contains("Permissions Violation") {
            violations.push(text);
        }
    }
    let joined = violations.join(" | ");
    assert!(
        joined.contains(&format!("Publish to \"rm.agent.{h2}.heartbeat\"")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("Subscription to \"rm.cmd.{h2}\"")),
        "{joined}"
    );
    // Closed, so it is not mistaken for agent 1 below.
    drop(sub);
    rogue.drain().await.unwrap();
    drop(rogue);

    // 4. Enrolled while the cluster runs, at a remote site behind a leaf
    // node of A and B: connects, and no server reloaded.
    let leaf = Node::leaf(dir, &data, "site", &[&a, &b]).await;
    until("the leaf's two connections to the hub", 30, || async {
        (leaf.leaf_connections() >= 2).then_some(())
    })
    .await;
    let leaf_loaded = leaf.varz()["config_load_time"].clone();
    let (h3, state3, _agent3) =
        enroll_and_run(dir, &data, &all_urls, "agent-3", &leaf.client).await;
    until("agent-3 online", 60, || async {
        (host_status(&store, &h3).await? == "online").then_some(())
    })
    .await;
    let name3 = format!("agent {h3}");
    assert!(
        leaf.connection_names().contains(&name3),
        "agent-3 is connected to the leaf node"
    );
    let now_loaded: Vec<Value> = [&a, &b, &c]
        .iter()
        .map(|n| n.varz()["config_load_time"].clone())
        .collect();
    assert_eq!(loaded, now_loaded, "no node reloaded its configuration");
    assert_eq!(leaf.varz()["config_load_time"], leaf_loaded, "nor the leaf");
    // ... and revoked: gone from every node, and refused by each.
    let out = bin()
        .args(["admin", "--data-dir"])
        .arg(&data)
        .args(["--nats-url", &all_urls, "host-revoke", &h3])
        .output()
        .unwrap();
    assert!(out.status.success(), "host-revoke: {out:?}");
    until("agent-3 cut off on every node and the leaf", 30, || async {
        [&a, &b, &c, &leaf]
            .iter()
            .all(|n| !n.connection_names().contains(&name3))
            .then_some(())
    })
    .await;
    let creds3 = rm_agent::state::StateDir::open(&state3)
        .unwrap()
        .creds()
        .unwrap();
    let role3 = Role::Agent(rm_bus::ids::HostId::parse(&h3).unwrap());
    for node in [&a, &b, &c, &leaf] {
        let err = refused(&node.client, creds3.clone(), &role3, &ca_pem)
            .await
            .unwrap_or_else(|| panic!("node {} let the revoked agent in", node.name));
        assert!(
            err.to_lowercase().contains("authoriz") || err.to_lowercase().contains("revoked"),
            "node {}: {err}",
            node.name
        );
    }
    marks.push(("leaf agent revoked everywhere", t0.elapsed()));

    // 5. Node C dies while both agents work: they move to A or B and
    // every result is ingested exactly once.
    let mut finished = until_sub(&ops.client).await;
    let mut batch = Vec::new();
    for (i, h) in [&h1, &h2, &h1, &h2, &h1, &h2].into_iter().enumerate() {
        let src = dir.join(format!("src-{}", i + 1));
        make_data(&src, i as u64 + 1, 8 << 20);
        batch.push(backup(&ops, h, &repo, &src).await);
    }
    until("a backup of the batch running", 60, || async {
        for id in &batch {
            if job(&store, id).await?.status == "running" {
                return Some(());
            }
        }
        None
    })
    .await;
    let mut ended_before = 0;
    for id in &batch {
        if job(&store, id).await.is_some_and(|j| terminal(&j.status)) {
            ended_before += 1;
        }
    }
    drop(c.proc.take());
    let killed_at = t0.elapsed();
    marks.push(("node C killed", killed_at));
    assert!(ended_before < batch.len(), "results were still to come");
    for id in &batch {
        let done = wait_job(&store, id, 120).await;
        assert_eq!(done.status, "succeeded", "{done:?}");
    }
    marks.push(("batch ingested", t0.elapsed()));
    for h in [&h1, &h2] {
        let name = format!("agent {h}");
        until(&format!("{h} on node A or B"), 30, || async {
            [&a, &b]
                .iter()
                .any(|n| n.connection_names().contains(&name))
                .then_some(())
        })
        .await;
    }
    // One job.finished per job (a replayed result is acknowledged as a
    // duplicate and publishes nothing), and one snapshot per backup.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    until("a job.finished event for every backup", 30, || {
        while let Some(Some(msg)) = finished.next().now_or_never() {
            if let Ok(ev) = serde_json::from_slice::<Value>(&msg.payload)
                && let Some(j) = ev["job"].as_str()
            {
                *seen.entry(j.to_owned()).or_default() += 1;
            }
        }
        let all = batch.iter().all(|id| seen.contains_key(id));
        async move { all.then_some(()) }
    })
    .await;
    for id in &batch {
        assert_eq!(seen.get(id), Some(&1), "job {id} finished once: {seen:?}");
    }
    let out = Command::new(restic())
        .args(["snapshots", "--json", "--no-lock", "-r"])
        .arg(repos.join("main"))
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "restic snapshots: {out:?}");
    let snapshots: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        snapshots.len(),
        1 + batch.len(),
        "one snapshot per successful backup, none twice"
    );
    let mut conn = store.read().await.unwrap();
    let raised = failed_alerts(
        rm_store::alerts::list_for_host(&mut conn, &h2, 50)
            .await
            .unwrap(),
    );
    drop(conn);
    assert_eq!(raised.len(), 1, "still one backup_failed alert: {raised:?}");

    marks.push(("done", t0.elapsed()));
    eprintln!(
        "cluster test timings: {}; {} of {} backups had ended when node C was killed",
        marks
            .iter()
            .map(|(what, at)| format!("{what} {:.1}s", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        ended_before,
        batch.len()
    );
    drop(notifiers);
}

/// Subscribes (on node A) to `job.finished` events.
async fn until_sub(client: &async_nats::Client) -> async_nats::Subscriber {
    let sub = client.subscribe("rm.evt.job.finished").await.unwrap();
    client.flush().await.unwrap();
    sub
}

#[test]
fn the_generated_cluster_and_leaf_configurations_pass_nats_server_t() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/generate.sh");
    let run = Command::new("sh")
        .arg(&script)
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args([
            "--leaf",
            "site-1",
            "nats-a=10.0.0.1",
            "nats-b=10.0.0.2",
            "nats-c=10.0.0.3",
        ])
        .env("RM", env!("CARGO_BIN_EXE_restic-manager"))
        .output()
        .unwrap();
    assert!(run.status.success(), "generate.sh: {run:?}");
    for name in ["nats-a", "nats-b", "nats-c", "site-1"] {
        for file in [format!("{name}-cert.pem"), format!("{name}-key.pem")] {
            assert!(out.join(&file).exists(), "generate.sh wrote {file}");
        }
    }
    assert!(out.join("ca.pem").exists(), "generate.sh copied the CA");
    let mut checked = Vec::new();
    for name in ["nats-a", "nats-b", "nats-c", "site-1"] {
        let file = out.join(format!("{name}.conf"));
        // Point the server's own paths into the temporary directory: -t
        // creates the resolver directory and reads the leaf's credentials.
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace(
                "/var/lib/nats/jwt",
                &tmp.path().join("jwt").display().to_string(),
            )
            .replace("/etc/nats/", &format!("{}/", out.display()));
        // clients TLS, routes / leaf connections mutual TLS
        assert!(
            text.contains(&format!("cert_file: \"{}/{name}-cert.pem\"", out.display())),
            "{text}"
        );
        if name == "site-1" {
            assert!(text.contains("nats-leaf://10.0.0.2:7422"), "{text}");
        } else {
            assert!(text.contains("nats://10.0.0.3:6222"), "{text}");
            assert!(text.contains(&format!("server_name: \"{name}\"")), "{text}");
            assert_eq!(text.matches("verify: true").count(), 2, "{text}");
        }
        std::fs::write(&file, text).unwrap();
        let t = Command::new(rm_testkit::nats_server_bin())
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .output()
            .expect("nats-server 2.15 (scripts/test installs it)");
        assert!(t.status.success(), "nats-server -t {name}: {t:?}");
        checked.push(name);
    }
    assert_eq!(checked.len(), 4);
}
