//! Test helpers: a control plane started on a test bus and stopped on drop,
//! service calls as the web role, and simulated agents.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use async_nats::{Message, Subscriber};
use futures_util::StreamExt;
use nkeys::{KeyPair, XKey};
use rm_bus::clock::SharedClock;
use rm_bus::creds::{Role, UserCreds};
use rm_bus::msg::*;
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_ack, request_with_retry};
use rm_bus::subject::{self, JobTopic, SvcRole, Verb};
use rm_bus::{HostId, JobId};
use rm_controlplane::api;
use rm_controlplane::{Config, Timings};
use rm_testkit::{TestBus, TestClient};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn fast_timings() -> Timings {
    let quick = RetryPolicy {
        attempt_timeout: Duration::from_millis(500),
        deadline: Some(Duration::from_secs(3)),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        jitter: 0.5,
    };
    Timings {
        heartbeat: Duration::from_millis(200),
        lost_grace: Duration::from_millis(500),
        dispatch: quick.clone(),
        config_push: quick,
        dispatch_every: Duration::from_millis(300),
        seen_flush: Duration::from_millis(100),
        ..Timings::default()
    }
}

/// A running control plane; stopped (gracefully) on drop.
pub struct Cp {
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    pub web: TestClient,
}

pub struct CpOptions {
    pub timings: Timings,
    pub clock: SharedClock,
}

impl Default for CpOptions {
    fn default() -> Self {
        Self {
            timings: fast_timings(),
            clock: rm_bus::clock::system(),
        }
    }
}

impl Cp {
    pub async fn start(bus: &TestBus, data_dir: PathBuf, opts: CpOptions) -> Result<Self> {
        let config = Config {
            data_dir: data_dir.clone(),
            db_path: None,
            bus_urls: vec![bus.url()],
            agent_bus_urls: vec![bus.url()],
            authority: bus.authority().clone(),
            server_url: "https://cp.test:8443".into(),
            server_fingerprint: Some("SHA256:test".into()),
            timings: opts.timings,
            clock: opts.clock,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(rm_controlplane::run(config, async move {
            let _ = rx.await;
        }));
        let web = bus.connect_role(Role::Web).await?;
        let cp = Self {
            data_dir,
            stop: Some(tx),
            task: Some(task),
            web,
        };
        // ready when the service answers
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let probe: Result<Value, _> = cp
                .call_raw(api::HOST_TOKEN, serde_json::json!({"host_id": "none"}))
                .await;
            match probe {
                Err(e) if e.code == "unavailable" && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => break,
            }
        }
        Ok(cp)
    }

    /// Stops the control plane and waits for it to finish.
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

    /// Waits for the control plane to end on its own (no stop asked);
    /// its error.
    pub async fn ended_with_error(&mut self) -> String {
        let t = self.task.take().expect("running");
        match tokio::time::timeout(WAIT, t).await {
            Ok(Ok(Err(e))) => format!("{e:#}"),
            other => panic!("the control plane did not end with an error: {other:?}"),
        }
    }

    /// A service call as operator `alice`; the error is the service's.
    pub async fn call_raw<B: Serialize, R: DeserializeOwned>(
        &self,
        verb: Verb,
        body: B,
    ) -> Result<R, SvcError> {
        rm_testkit::svc_call(
            &self.web,
            SvcRole::Controlplane,
            verb,
            body,
            Duration::from_secs(15),
        )
        .await
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

    /// The control plane's counters.
    pub async fn metrics(&self) -> api::Metrics {
        self.call(api::METRICS, serde_json::json!({})).await
    }

    /// Adds a host the way the web role does: the token comes back sealed
    /// to a key of this call.
    pub async fn host_add(&self, name: &str) -> api::HostEnrollment {
        let (req, key) = api::HostAdd::new(name);
        let e: api::SealedEnrollment = self.call(api::HOST_ADD, req).await;
        e.open(&key).expect("the reply opens with the asker's key")
    }

    /// A new enrollment token, opened as the asker.
    pub async fn host_token(&self, host_id: &str) -> Result<api::HostEnrollment, SvcError> {
        let (req, key) = api::HostTokenRequest::new(host_id);
        let e: api::SealedEnrollment = self.call_raw(api::HOST_TOKEN, req).await?;
        Ok(e.open(&key).expect("the reply opens with the asker's key"))
    }

    /// An enrollment the way the web role forwards it: sealed to the
    /// control plane's xkey.
    pub async fn enroll_call_raw(&self, req: EnrollRequest) -> Result<EnrollReply, SvcError> {
        let key: api::PubKey = self.call(api::PUBKEY, serde_json::json!({})).await;
        let sealed = api::SealedEnroll::seal(&req, &key.xkey).expect("seal");
        self.call_raw(api::ENROLL, sealed).await
    }

    pub async fn enroll_call(&self, req: EnrollRequest) -> EnrollReply {
        match self.enroll_call_raw(req).await {
            Ok(r) => r,
            Err(e) => panic!("enrollment failed: {}: {}", e.code, e.message),
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

/// A simulated agent: real keys, real enrollment, real protocol messages.
pub struct Agent {
    pub host: HostId,
    pub nkey: KeyPair,
    pub xkey: XKey,
    pub jwt: String,
    pub cp_xkey: String,
    pub client: TestClient,
    pub commands: Subscriber,
    pub hostname: String,
    /// The config version heartbeats report (the last hello's).
    pub beat_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    beat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_heartbeats();
    }
}

pub fn enroll_request(token: &str, nkey: &KeyPair, xkey: &XKey, hostname: &str) -> EnrollRequest {
    EnrollRequest {
        v: PROTOCOL_VERSION,
        token: token.into(),
        nkey: nkey.public_key(),
        xkey: xkey.public_key(),
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0-test".into(),
    }
}

impl Agent {
    /// Adds a host, enrolls it with fresh keys and connects it (no hello yet).
    pub async fn enroll(bus: &TestBus, cp: &Cp, name: &str) -> Result<Self> {
        let added = cp.host_add(name).await;
        let nkey = KeyPair::new_user();
        let xkey = XKey::new();
        let reply: EnrollReply = cp
            .enroll_call(enroll_request(&added.token, &nkey, &xkey, name))
            .await;
        Self::connect(bus, reply, nkey, xkey, name).await
    }

    pub async fn connect(
        bus: &TestBus,
        reply: EnrollReply,
        nkey: KeyPair,
        xkey: XKey,
        hostname: &str,
    ) -> Result<Self> {
        let role = Role::Agent(reply.host_id.clone());
        let creds = UserCreds::new(reply.jwt.clone(), nkey.seed()?);
        let client = bus.connect_as(&role, creds).await?;
        let commands = client.subscribe(subject::cmd(&reply.host_id)).await?;
        client.flush().await?;
        Ok(Self {
            host: reply.host_id,
            nkey,
            xkey,
            jwt: reply.jwt,
            cp_xkey: reply.controlplane_xkey,
            client,
            commands,
            hostname: hostname.into(),
            beat_version: Default::default(),
            beat: None,
        })
    }

    /// Heartbeats every 100 ms from now on, like a live agent.
    pub fn start_heartbeats(&mut self) {
        if self.beat.is_some() {
            return;
        }
        let client = self.client.client.clone();
        let subject = subject::agent_heartbeat(&self.host);
        let version = self.beat_version.clone();
        self.beat = Some(tokio::spawn(async move {
            loop {
                let v = version.load(std::sync::atomic::Ordering::Relaxed);
                let _ = client
                    .publish(subject.clone(), encode(&heartbeat_msg(v)))
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    /// Falls silent (the host looks dead).
    pub fn stop_heartbeats(&mut self) {
        if let Some(b) = self.beat.take() {
            b.abort();
        }
    }

    /// Closes the connection (the agent goes away).
    pub async fn disconnect(&mut self) {
        self.stop_heartbeats();
        let _ = self.commands.unsubscribe().await;
        let _ = self.client.client.drain().await;
    }

    /// Connects again with the same identity.
    pub async fn reconnect(&mut self, bus: &TestBus) -> Result<()> {
        let role = Role::Agent(self.host.clone());
        let creds = UserCreds::new(self.jwt.clone(), self.nkey.seed()?);
        self.client = bus.connect_as(&role, creds).await?;
        self.commands = self.client.subscribe(subject::cmd(&self.host)).await?;
        self.client.flush().await?;
        Ok(())
    }

    pub fn host_id(&self) -> String {
        self.host.to_string()
    }

    pub async fn hello(
        &mut self,
        config_version: u64,
        accepted: Vec<JobId>,
        running: Vec<JobId>,
    ) -> HelloReply {
        self.hello_marked(config_version, accepted, running, None)
            .await
    }

    /// A hello that says how many jobs this agent process had accepted
    /// when it was composed.
    pub async fn hello_marked(
        &mut self,
        config_version: u64,
        accepted: Vec<JobId>,
        running: Vec<JobId>,
        accept_seq: Option<AcceptMark>,
    ) -> HelloReply {
        let hello = Hello {
            v: PROTOCOL_VERSION,
            agent_version: "0.1.0-test".into(),
            restic_version: Some("0.18.0".into()),
            os: "linux".into(),
            arch: "x86_64".into(),
            hostname: self.hostname.clone(),
            config_version,
            accepted_jobs: accepted,
            running_jobs: running,
            accept_seq,
        };
        self.beat_version
            .store(config_version, std::sync::atomic::Ordering::Relaxed);
        let key = IdempotencyKey::new(rm_bus::ids::random_token(6));
        let policy = RetryPolicy {
            deadline: Some(WAIT),
            initial_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
        let m = request_with_retry(
            &self.client,
            &subject::agent_hello(&self.host),
            &key,
            encode(&hello),
            &policy,
        )
        .await
        .expect("hello answered");
        self.start_heartbeats();
        decode("hello reply", &m.payload).expect("hello reply parses")
    }

    pub async fn heartbeat(&self) {
        self.client
            .publish(
                subject::agent_heartbeat(&self.host),
                encode(&heartbeat_msg(
                    self.beat_version.load(std::sync::atomic::Ordering::Relaxed),
                )),
            )
            .await
            .expect("heartbeat");
        self.client.flush().await.expect("flush");
    }
}

impl Agent {
    /// One heartbeat stamped `ts_ms` by the agent's clock (a beat sent that
    /// long ago and held up on the way, or from a clock that is off).
    pub async fn heartbeat_stamped(&self, ts_ms: i64) {
        let hb = Heartbeat {
            ts_ms,
            ..heartbeat_msg(0)
        };
        self.client
            .publish(subject::agent_heartbeat(&self.host), encode(&hb))
            .await
            .expect("heartbeat");
        self.client.flush().await.expect("flush");
    }

    /// `n` heartbeats stamped now through bus node `node` (its
    /// `bus_node`), sent together: a node delivering many beats a second.
    pub async fn heartbeats_through(&self, node: &str, n: usize) {
        let ts_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms");
        let hb = encode(&Heartbeat {
            ts_ms,
            bus_node: Some(node.into()),
            ..heartbeat_msg(0)
        });
        for _ in 0..n {
            self.client
                .publish(subject::agent_heartbeat(&self.host), hb.clone())
                .await
                .expect("heartbeat");
        }
        self.client.flush().await.expect("flush");
    }
}

fn heartbeat_msg(config_version: u64) -> Heartbeat {
    Heartbeat {
        v: PROTOCOL_VERSION,
        ts_ms: 0,
        agent_version: "0.1.0-test".into(),
        restic_version: Some("0.18.0".into()),
        os: "linux".into(),
        arch: "x86_64".into(),
        uptime_secs: 1,
        config_version,
        disks: vec![],
        running_jobs: vec![],
        next_runs: vec![],
        bus_node: None,
    }
}

impl Agent {
    /// The next command sent to this agent.
    pub async fn next_command(&mut self, within: Duration) -> Option<(Command, Message)> {
        let m = tokio::time::timeout(within, self.commands.next())
            .await
            .ok()
            .flatten()?;
        let c: Command = decode("command", &m.payload).expect("command parses");
        Some((c, m))
    }

    pub async fn answer(&self, m: &Message, body: bytes::Bytes) {
        self.client
            .publish(m.reply.clone().expect("a request"), body)
            .await
            .expect("answer");
        self.client.flush().await.expect("flush");
    }

    /// Waits for a dispatch and acknowledges it.
    pub async fn expect_dispatch(&mut self) -> JobSpec {
        self.expect_dispatch_marked(None).await
    }

    /// A dispatch within `wait`, acknowledged; `None` if none came.
    pub async fn dispatch_within(&mut self, wait: Duration) -> Option<JobSpec> {
        loop {
            let (cmd, m) = self.next_command(wait).await?;
            match cmd.body {
                CommandBody::Dispatch { job } => {
                    self.answer(&m, encode(&Ack::ok())).await;
                    return Some(job);
                }
                CommandBody::ConfigChanged { .. } => self.answer(&m, encode(&Ack::ok())).await,
                other => panic!("expected a dispatch, got {other:?}"),
            }
        }
    }

    /// Waits for a dispatch and acknowledges it with the accept's mark.
    pub async fn expect_dispatch_marked(&mut self, accepted: Option<AcceptMark>) -> JobSpec {
        loop {
            let (cmd, m) = self.next_command(WAIT).await.expect("a dispatch arrives");
            match cmd.body {
                CommandBody::Dispatch { job } => {
                    let ack = Ack {
                        accepted: accepted.clone(),
                        ..Ack::ok()
                    };
                    self.answer(&m, encode(&ack)).await;
                    return job;
                }
                CommandBody::ConfigChanged { .. } => self.answer(&m, encode(&Ack::ok())).await,
                other => panic!("expected a dispatch, got {other:?}"),
            }
        }
    }

    pub async fn send_started(
        &self,
        job: &JobId,
        origin: JobOrigin,
        params: Option<JobParams>,
    ) -> Result<Ack, rm_bus::reqack::RequestError> {
        let msg = JobStarted {
            v: PROTOCOL_VERSION,
            job_id: job.clone(),
            kind: params.as_ref().map_or(JobKind::Backup, JobParams::kind),
            origin,
            started_ms: 1_000,
            params,
            repo_id: None,
        };
        self.request(job, JobTopic::Started, encode(&msg)).await
    }

    pub async fn send_done(&self, done: &JobDone) -> Result<Ack, rm_bus::reqack::RequestError> {
        self.request(&done.job_id, JobTopic::Done, encode(done))
            .await
    }

    pub async fn request(
        &self,
        job: &JobId,
        topic: JobTopic,
        body: bytes::Bytes,
    ) -> Result<Ack, rm_bus::reqack::RequestError> {
        let subj = subject::agent_job(&self.host, job, topic);
        let policy = RetryPolicy {
            deadline: Some(WAIT),
            initial_backoff: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        request_ack(
            &self.client,
            &subj,
            &IdempotencyKey::job_phase(job, topic),
            body,
            &policy,
        )
        .await
    }
}

pub fn done_msg(job: &JobId, outcome: JobOutcome) -> JobDone {
    JobDone {
        v: PROTOCOL_VERSION,
        job_id: job.clone(),
        outcome,
        exit_code: Some(0),
        error_kind: None,
        error: None,
        summary: Some(serde_json::json!({"snapshot_id": "0123456789abcdef", "files_new": 3})),
        stderr_tail: vec![],
        started_ms: Some(1_000),
        finished_ms: 2_000,
        restic_version: Some("0.18.0".into()),
        summary_parts: None,
    }
}

/// Polls `f` until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Adds a repository and attaches `hosts` (append-only unless listed in
/// `full`). Returns the repository id.
pub async fn repo_with(
    cp: &Cp,
    name: &str,
    password: &str,
    hosts: &[&Agent],
    full: &[&Agent],
) -> String {
    let cp_key: api::PubKey = cp.call(api::PUBKEY, serde_json::json!({})).await;
    let seal = |i: api::RepoSecretsInput| api::SealedSecrets::seal(&i, &cp_key.xkey).expect("seal");
    let secrets = seal(api::RepoSecretsInput {
        url: format!("rest:http://admin:adminpw@127.0.0.1:1/{name}"),
        password: password.into(),
        env: Default::default(),
    });
    let added: api::RepoAdded = cp
        .call(
            api::REPO_ADD,
            api::RepoAdd {
                name: name.into(),
                secrets,
                init_on_host: None,
                verify_on_host: None,
            },
        )
        .await;
    for a in hosts {
        let ao = api::RepoSecretsInput {
            url: format!("rest:http://{0}:{0}pw@127.0.0.1:1/{name}", a.hostname),
            password: password.into(),
            env: Default::default(),
        };
        let _: api::Done = cp
            .call(
                api::REPO_ATTACH,
                api::RepoAttach {
                    repo_id: added.repo_id.clone(),
                    host_id: a.host_id(),
                    access: api::AccessInput::AppendOnly,
                    secrets: Some(seal(ao)),
                },
            )
            .await;
    }
    for a in full {
        let _: api::Done = cp
            .call(
                api::REPO_ATTACH,
                api::RepoAttach {
                    repo_id: added.repo_id.clone(),
                    host_id: a.host_id(),
                    access: api::AccessInput::Full,
                    secrets: None,
                },
            )
            .await;
    }
    added.repo_id
}

pub fn backup_params() -> JobParams {
    JobParams::Backup {
        paths: vec!["/data".into()],
        excludes: vec![],
        tags: vec![],
        one_file_system: false,
        host_name: None,
    }
}

pub async fn job_status(db: &rm_store::Store, id: &str) -> String {
    let mut c = db.read().await.unwrap();
    rm_store::jobs::get(&mut c, id).await.unwrap().status
}

/// Waits until two more dispatch passes ended than when called: one of
/// them began after the call, so it saw every job queued before it.
pub async fn dispatcher_looked(cp: &Cp) {
    let passes = || async {
        let m: rm_controlplane::api::Metrics = cp
            .call(rm_controlplane::api::METRICS, serde_json::json!({}))
            .await;
        m.dispatch_passes
    };
    let start = passes().await;
    eventually("two dispatch passes", || async {
        (passes().await >= start + 2).then_some(())
    })
    .await;
}

/// Waits until two more sweeper ticks ended than when called (the
/// offline sweep is counted on each tick once the control plane settled):
/// one of them ran whole after the call, periodic refreshes included.
pub async fn sweeper_looked(cp: &Cp) {
    let sweeps = || async {
        let m: rm_controlplane::api::Metrics = cp
            .call(rm_controlplane::api::METRICS, serde_json::json!({}))
            .await;
        m.offline_sweeps
    };
    let start = sweeps().await;
    eventually("two sweeper ticks", || async {
        (sweeps().await >= start + 2).then_some(())
    })
    .await;
}

/// Runs SQL on the test's own write connection (reads are read-only).
pub async fn exec(db: &rm_store::Store, sql: &'static str) {
    let mut c = db.pool().acquire().await.unwrap();
    sqlx::raw_sql(sql).execute(&mut *c).await.unwrap();
}

pub async fn host_status(db: &rm_store::Store, id: &str) -> String {
    let mut c = db.read().await.unwrap();
    rm_store::hosts::get(&mut c, id).await.unwrap().status
}

static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line (TRACE and up) of this test's thread; the
/// control plane's tasks run on it (current-thread runtime).
pub fn capture_logs() -> tracing::subscriber::DefaultGuard {
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .finish();
    tracing::subscriber::set_default(sub)
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

impl Agent {
    /// Asks for the repository before a scheduled exclusive run; the
    /// control plane's answer as it is (granted, busy, or refused).
    pub async fn claim(
        &self,
        job: &JobId,
        schedule_id: &str,
        repo_id: &str,
        params: JobParams,
    ) -> Ack {
        let msg = JobClaim {
            v: PROTOCOL_VERSION,
            job_id: job.clone(),
            origin: JobOrigin::Schedule {
                schedule_id: schedule_id.into(),
            },
            params,
            repo_id: repo_id.into(),
        };
        let subj = subject::agent_job(&self.host, job, JobTopic::Claim);
        let policy = RetryPolicy {
            deadline: Some(WAIT),
            initial_backoff: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let m = request_with_retry(
            &self.client,
            &subj,
            &IdempotencyKey::job_phase(job, JobTopic::Claim),
            encode(&msg),
            &policy,
        )
        .await
        .expect("claim answered");
        decode("ack", &m.payload).expect("ack parses")
    }
}

/// The next dispatch to `maint`, while answering the refresh jobs (snapshots,
/// stats, locks) dispatched to `other` meanwhile: they share the repository,
/// so an agent that never answered them would hold it.
pub async fn exclusive_next(maint: &mut Agent, other: &mut Agent) -> JobSpec {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < until {
        if let Some(spec) = maint.dispatch_within(Duration::from_millis(200)).await {
            return spec;
        }
        if let Some(spec) = other.dispatch_within(Duration::from_millis(50)).await {
            let summary = match spec.params.kind() {
                JobKind::Snapshots | JobKind::Locks => serde_json::json!([]),
                JobKind::Stats => serde_json::json!({"total_size": 1}),
                k => panic!("unexpected {k:?} on the other host"),
            };
            other
                .send_started(&spec.job_id, JobOrigin::Dispatch, None)
                .await
                .unwrap();
            let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
            d.summary = Some(summary);
            other.send_done(&d).await.unwrap();
        }
    }
    panic!("no dispatch to the maintenance host within 30 s");
}
