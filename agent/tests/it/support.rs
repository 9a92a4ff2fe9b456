//! End-to-end harness: a real bus (the one `RM_TEST_BUS` names), the real
//! control plane in-process, real agents (in-process or as the
//! `restic-manager-agent` binary), real restic and `rclone serve restic`
//! servers (append-only and full) over one repository directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rm_agent::state::{Identity, StateDir};
use rm_agent::{Settings, Timings};
use rm_bus::clock::SharedClock;
use rm_bus::creds::Role;
use rm_bus::msg::*;
use rm_bus::reqack::RetryPolicy;
use rm_bus::subject::{SvcRole, Verb};
use rm_controlplane::api;
use rm_testkit::{TestBus, TestClient};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

pub const WAIT: Duration = Duration::from_secs(30);
pub const REST_USER: &str = "rm";
pub const REST_PASS: &str = "rest-secret-pw";
pub const REPO_PASSWORD: &str = "correct-horse-battery-staple-42";

/// The restic to test with: Debian's on PATH (0.14) unless told.
pub fn restic_bin() -> PathBuf {
    std::env::var_os("RM_RESTIC").map_or_else(|| PathBuf::from("restic"), PathBuf::from)
}

/// restic 0.18 (fetched by the test command). Missing: a failure in CI,
/// `None` (the test says it skipped) elsewhere.
pub fn restic_018() -> Option<PathBuf> {
    let p = std::env::var_os("RM_RESTIC_018").map(PathBuf::from);
    match p {
        Some(p) if p.exists() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("RM_RESTIC_018 is not set or missing: scripts/test fetches restic 0.18")
        }
        _ => {
            eprintln!("SKIPPED: restic 0.18 not available (set RM_RESTIC_018)");
            None
        }
    }
}

pub fn fast_cp_timings() -> rm_controlplane::Timings {
    let quick = RetryPolicy {
        attempt_timeout: Duration::from_secs(2),
        deadline: Some(Duration::from_secs(10)),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        jitter: 0.5,
    };
    rm_controlplane::Timings {
        heartbeat: Duration::from_millis(500),
        lost_grace: Duration::from_secs(5),
        dispatch: quick.clone(),
        config_push: quick,
        dispatch_every: Duration::from_millis(300),
        ..rm_controlplane::Timings::default()
    }
}

pub fn fast_agent_timings() -> Timings {
    Timings {
        heartbeat: Duration::from_millis(500),
        scheduler_tick: Duration::from_millis(100),
        results: RetryPolicy {
            attempt_timeout: Duration::from_secs(2),
            deadline: Some(Duration::from_secs(4)),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            jitter: 0.5,
        },
        hello: RetryPolicy {
            attempt_timeout: Duration::from_secs(2),
            deadline: Some(Duration::from_secs(4)),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            jitter: 0.5,
        },
        reconnect_max: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(10),
        ..Timings::default()
    }
}

// ------------------------------------------------------------ rest server

/// `rclone serve restic` on a free port of 127.0.0.1; killed on drop.
pub struct RestServer {
    child: tokio::process::Child,
    pub port: u16,
}

impl RestServer {
    pub async fn start(dir: &Path, append_only: bool) -> Result<Self> {
        Self::start_logged(dir, append_only, None).await
    }

    /// [`Self::start`], logging every request (`-vv`) to `log` when given.
    pub async fn start_logged(dir: &Path, append_only: bool, log: Option<&Path>) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new("rclone");
        cmd.arg("serve")
            .arg("restic")
            .arg(dir)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--user", REST_USER, "--pass", REST_PASS])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(log) = log {
            cmd.arg("-vv").stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)?,
            ));
        }
        if append_only {
            cmd.arg("--append-only");
        }
        let child = cmd.spawn().context("starting rclone serve restic")?;
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("rclone serve restic did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, port })
    }

    /// The repository URL for `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!(
            "rest:http://{REST_USER}:{REST_PASS}@127.0.0.1:{}/{name}",
            self.port
        )
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

// ------------------------------------------------------------ control plane

/// The control plane, in-process; stopped on drop.
pub struct Cp {
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Cp {
    pub async fn start(bus: &TestBus, data_dir: PathBuf) -> Result<Self> {
        let config = rm_controlplane::Config {
            data_dir: data_dir.clone(),
            db_path: None,
            bus_urls: vec![bus.url()],
            agent_bus_urls: vec![bus.url()],
            authority: bus.authority().clone(),
            server_url: "https://cp.test:8443".into(),
            server_fingerprint: Some("sha256:test".into()),
            timings: fast_cp_timings(),
            clock: rm_bus::clock::system(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(rm_controlplane::run(config, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            data_dir,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            match tokio::time::timeout(WAIT, t).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("control plane did not stop cleanly: {other:?}"),
            }
        }
    }

    pub async fn db(&self) -> rm_store::Store {
        rm_store::Store::open(&self.data_dir.join("restic-manager.db"))
            .await
            .expect("open db")
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ------------------------------------------------------------ agents

/// An agent running in this process; stopped on drop.
pub struct Agent {
    pub host_id: String,
    pub state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Agent {
    pub async fn start(settings: Settings) -> Result<Self> {
        let state_dir = settings.state_dir.clone();
        let host_id = StateDir::open(&state_dir)?.identity()?.host_id.to_string();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(rm_agent::run(settings, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            host_id,
            state_dir,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Stops cleanly (running jobs are cancelled and recorded).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            match tokio::time::timeout(WAIT, t).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("agent did not stop cleanly: {other:?}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The agent binary as a child process (for SIGKILL); killed on drop.
pub struct AgentProc {
    child: Option<std::process::Child>,
}

impl AgentProc {
    pub fn start(state_dir: &Path, bus_url: &str, restic: &Path) -> Result<Self> {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_restic-manager-agent"))
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--restic")
            .arg(restic)
            .args(["run", "--bus-url", bus_url, "--heartbeat-secs", "1"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(state_dir.join("agent.log"))?,
            ))
            .spawn()
            .context("starting restic-manager-agent")?;
        Ok(Self { child: Some(child) })
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------ the environment

pub struct Env {
    pub bus: TestBus,
    pub dir: tempfile::TempDir,
    pub cp: Cp,
    pub web: TestClient,
    pub append_only: RestServer,
    pub full: RestServer,
}

impl Env {
    pub async fn start() -> Result<Self> {
        Self::start_with(rm_testkit::BusOptions::default()).await
    }

    /// [`Self::start`] on a bus with these limits.
    pub async fn start_with(options: rm_testkit::BusOptions) -> Result<Self> {
        let bus = TestBus::start_with(rm_testkit::BusKind::from_env(), options).await?;
        let dir = tempfile::Builder::new().prefix("rm-agent-e2e-").tempdir()?;
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&repos)?;
        let append_only = RestServer::start(&repos, true).await?;
        let full = RestServer::start(&repos, false).await?;
        let cp = Cp::start(&bus, dir.path().join("cp")).await?;
        let web = bus.connect_role(Role::Web).await?;
        let env = Self {
            bus,
            dir,
            cp,
            web,
            append_only,
            full,
        };
        // ready when the service answers
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match env
                .call_raw::<_, serde_json::Value>(api::PUBKEY, serde_json::json!({}))
                .await
            {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("control plane never answered: {}", e.message),
            }
        }
        Ok(env)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn call_raw<B: Serialize, R: DeserializeOwned>(
        &self,
        verb: Verb,
        body: B,
    ) -> Result<R, SvcError> {
        self.call_role(SvcRole::Controlplane, verb, body).await
    }

    /// A service call as operator `alice` to `role`.
    pub async fn call_role<B: Serialize, R: DeserializeOwned>(
        &self,
        role: SvcRole,
        verb: Verb,
        body: B,
    ) -> Result<R, SvcError> {
        // long: repo-add with init waits for restic on the host
        rm_testkit::svc_call(&self.web, role, verb, body, Duration::from_secs(130)).await
    }

    pub async fn call<B: Serialize, R: DeserializeOwned>(&self, verb: Verb, body: B) -> R {
        match self.call_raw(verb, body).await {
            Ok(r) => r,
            Err(e) => panic!(
                "service {} failed: {}: {}",
                verb.as_str(),
                e.code,
                e.message
            ),
        }
    }

    /// Adds a host and enrolls a state directory for it the way the agent
    /// does (keys generated locally, public halves sent with the token).
    pub async fn enroll(&self, name: &str) -> Result<(String, PathBuf)> {
        self.enroll_as(name, name).await
    }

    /// Adds a host; the token comes back sealed to this call's key.
    pub async fn host_add(&self, name: &str) -> api::HostEnrollment {
        let (req, key) = api::HostAdd::new(name);
        let e: api::SealedEnrollment = self.call(api::HOST_ADD, req).await;
        e.open(&key).expect("the reply opens with the asker's key")
    }

    /// Enrolls host `name` from a machine called `hostname`.
    pub async fn enroll_as(&self, name: &str, hostname: &str) -> Result<(String, PathBuf)> {
        let added = self.host_add(name).await;
        let state_dir = self.path(&format!("agent-{name}"));
        let state = StateDir::open(&state_dir)?;
        let (nkey, xkey) = state.new_keys()?;
        let cp_key: api::PubKey = self.call(api::PUBKEY, serde_json::json!({})).await;
        let sealed = api::SealedEnroll::seal(
            &EnrollRequest {
                v: PROTOCOL_VERSION,
                token: added.token,
                nkey: nkey.public_key(),
                xkey: xkey.public_key(),
                hostname: hostname.into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                agent_version: rm_agent::VERSION.into(),
            },
            &cp_key.xkey,
        )?;
        let reply: EnrollReply = self.call(api::ENROLL, sealed).await;
        let id = Identity {
            host_id: reply.host_id.clone(),
            bus_urls: reply.bus_urls,
            controlplane_xkey: reply.controlplane_xkey,
            server_url: "https://cp.test:8443".into(),
            enrolled_at_ms: 0,
        };
        state.commit_enrollment(&id, &reply.jwt)?;
        Ok((reply.host_id.to_string(), state_dir))
    }

    /// Settings for an in-process agent of `state_dir`.
    pub fn settings(&self, state_dir: &Path, hostname: &str, restic: &Path) -> Settings {
        let mut s = Settings::new(state_dir.to_path_buf());
        s.restic_bin = restic.to_path_buf();
        s.hostname = hostname.into();
        s.timings = fast_agent_timings();
        s
    }

    /// Enrolls `name` and starts its agent in this process.
    pub async fn agent(&self, name: &str, restic: &Path) -> Result<Agent> {
        let (_, dir) = self.enroll(name).await?;
        let a = Agent::start(self.settings(&dir, name, restic)).await?;
        self.wait_online(&a.host_id).await;
        Ok(a)
    }

    /// Enrolls `name` from a machine called `hostname` and starts it.
    pub async fn agent_as(&self, name: &str, hostname: &str, restic: &Path) -> Result<Agent> {
        let (_, dir) = self.enroll_as(name, hostname).await?;
        let a = Agent::start(self.settings(&dir, hostname, restic)).await?;
        self.wait_online(&a.host_id).await;
        Ok(a)
    }

    pub async fn agent_with_clock(
        &self,
        name: &str,
        restic: &Path,
        clock: SharedClock,
    ) -> Result<Agent> {
        let (_, dir) = self.enroll(name).await?;
        let mut s = self.settings(&dir, name, restic);
        s.clock = clock;
        let a = Agent::start(s).await?;
        self.wait_online(&a.host_id).await;
        Ok(a)
    }

    pub async fn wait_online(&self, host: &str) {
        let db = self.cp.db().await;
        eventually(&format!("host {host} online"), || async {
            let mut c = db.read().await.ok()?;
            let h = rm_store::hosts::get(&mut c, host).await.ok()?;
            (h.status == "online").then_some(())
        })
        .await;
    }

    fn sealed(&self, cp_xkey: &str, url: String, password: &str) -> api::SealedSecrets {
        api::SealedSecrets::seal(
            &api::RepoSecretsInput {
                url,
                password: password.into(),
                env: Default::default(),
            },
            cp_xkey,
        )
        .expect("seal")
    }

    /// A new repository `name`, initialised by `init_host` through the full
    /// server; returns its id.
    pub async fn new_repo(&self, name: &str, init_host: &str) -> String {
        self.add_repo(name, &self.full.url(name), Some(init_host))
            .await
            .unwrap_or_else(|e| panic!("repo-add failed: {}: {}", e.code, e.message))
    }

    /// Adds a repository at `url` (full credentials, the test password),
    /// initialised by `init_host` when given.
    pub async fn add_repo(
        &self,
        name: &str,
        url: &str,
        init_host: Option<&str>,
    ) -> Result<String, SvcError> {
        let key: api::PubKey = self.call(api::PUBKEY, serde_json::json!({})).await;
        let added: api::RepoAdded = self
            .call_raw(
                api::REPO_ADD,
                api::RepoAdd {
                    name: name.into(),
                    secrets: self.sealed(&key.xkey, url.to_owned(), REPO_PASSWORD),
                    init_on_host: init_host.map(Into::into),
                    verify_on_host: None,
                },
            )
            .await?;
        Ok(added.repo_id)
    }

    /// The control plane's connection test of `host` to `repo`.
    pub async fn repo_test(&self, repo: &str, host: &str) -> api::RepoTestResult {
        self.call(
            api::REPO_TEST,
            api::RepoTest {
                repo_id: repo.into(),
                host_id: host.into(),
            },
        )
        .await
    }

    /// Attaches `host` to the repository through the append-only server
    /// (with `password`).
    pub async fn attach_append_only(&self, repo: &str, name: &str, host: &str, password: &str) {
        let key: api::PubKey = self.call(api::PUBKEY, serde_json::json!({})).await;
        let _: api::Done = self
            .call(
                api::REPO_ATTACH,
                api::RepoAttach {
                    repo_id: repo.into(),
                    host_id: host.into(),
                    access: api::AccessInput::AppendOnly,
                    secrets: Some(self.sealed(&key.xkey, self.append_only.url(name), password)),
                },
            )
            .await;
    }

    pub async fn attach_full(&self, repo: &str, host: &str) {
        let _: api::Done = self
            .call(
                api::REPO_ATTACH,
                api::RepoAttach {
                    repo_id: repo.into(),
                    host_id: host.into(),
                    access: api::AccessInput::Full,
                    secrets: None,
                },
            )
            .await;
    }

    pub async fn job(&self, host: &str, repo: &str, params: JobParams) -> api::JobCreated {
        self.call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: host.into(),
                repo_id: repo.into(),
                params,
                timeout_secs: Some(600),
                target_host_id: None,
            },
        )
        .await
    }

    /// Waits until the job is finished (any final status) and returns it.
    pub async fn finished(&self, job: &str) -> rm_store::jobs::Job {
        let db = self.cp.db().await;
        eventually_within(
            &format!("job {job} finished"),
            Duration::from_secs(120),
            || async {
                let mut c = db.read().await.ok()?;
                let j = rm_store::jobs::get(&mut c, job).await.ok()?;
                matches!(
                    j.status.as_str(),
                    "succeeded" | "warning" | "failed" | "cancelled" | "lost"
                )
                .then_some(j)
            },
        )
        .await
    }

    /// Runs restic directly against the repository (full credentials).
    pub fn restic(&self, bin: &Path, repo: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(bin)
            .args(args)
            .env("RESTIC_REPOSITORY", self.full.url(repo))
            .env("RESTIC_PASSWORD", REPO_PASSWORD)
            .env("RESTIC_CACHE_DIR", self.path("restic-cache"))
            .stdin(Stdio::null())
            .output()
            .expect("restic runs")
    }

    /// Snapshots in the repository, as restic lists them.
    pub fn snapshots(&self, bin: &Path, repo: &str) -> Vec<serde_json::Value> {
        let out = self.restic(bin, repo, &["snapshots", "--json", "--no-lock"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("snapshots JSON")
    }
}

pub fn backup(paths: &[&Path]) -> JobParams {
    JobParams::Backup {
        paths: paths.iter().map(|p| p.display().to_string()).collect(),
        excludes: vec![],
        tags: vec![],
        one_file_system: false,
        host_name: None,
    }
}

/// A tree of files with deterministic pseudo-random content.
pub fn make_tree(root: &Path, files: &[(&str, usize)]) {
    for (i, (rel, size)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pseudo_random(*size, i as u64 + 1)).unwrap();
    }
}

/// `n` bytes of xorshift output: incompressible and not deduplicable.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, f).await
}

pub async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// restic processes running now whose command line mentions `needle`.
pub fn restic_processes(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env = String::from_utf8_lossy(&environ);
        if cmd.contains("restic")
            && !cmd.contains("rclone")
            && (cmd.contains(needle) || env.contains(needle))
        {
            out.push(pid);
        }
    }
    out
}

/// An agent state in `dir` enrolled as `host` for `bus_url`, its user JWT
/// minted by `authority` (the test bus's own, or any for a bus that checks
/// none), as `restic-manager-agent enroll` leaves it.
pub fn enrolled_state(
    dir: &Path,
    host: &rm_bus::HostId,
    bus_url: &str,
    authority: &rm_bus_server::creds::Authority,
) -> StateDir {
    let state = StateDir::open(dir).unwrap();
    let (nkey, _xkey) = state.new_keys().unwrap();
    let role = Role::Agent(host.clone());
    let jwt = authority
        .mint_user(&rm_bus_server::creds::authority::UserSpec {
            public_key: nkey.public_key(),
            name: role.name(),
            permissions: role.permissions(),
            expires: None,
        })
        .unwrap();
    state
        .commit_enrollment(
            &Identity {
                host_id: host.clone(),
                bus_urls: vec![bus_url.to_owned()],
                controlplane_xkey: nkeys::XKey::new().public_key(),
                server_url: "https://cp.test".into(),
                enrolled_at_ms: 0,
            },
            &jwt,
        )
        .unwrap();
    state
}
