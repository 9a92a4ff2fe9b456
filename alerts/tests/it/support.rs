//! Test support: a real bus, the real alerts role and real notifier roles,
//! HTTP receivers on 127.0.0.1, and the control plane's writes simulated
//! through rm-store (it is the writer of hosts, jobs and schedules) with
//! the events it would publish after commit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nkeys::XKey;
use rm_alerts::api::{self, SealedChannel};
use rm_alerts::{Config, Timings};
use rm_bus::clock::{ManualClock, SharedClock};
use rm_bus::creds::Role;
use rm_bus::msg::{
    Actor, ActorVia, EventMsg, JobParams, PROTOCOL_VERSION, SvcError, SvcReply, SvcRequest, decode,
    encode,
};
use rm_bus::notify::{ChannelDef, DeliverReply, WebhookChannel, deliver_subject};
use rm_bus::reqack::RetryPolicy;
use rm_bus::subject::{self, Event as Evt, SvcRole, Verb};
use rm_notifier::{Notifier, NotifierConfig};
use rm_store::jobs::{self, Finish, JobStatus, NewJob};
use rm_store::{Store, alerts, delivery, hosts, repos, schedules};
use rm_testkit::{TestBus, TestClient};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(15);

/// Short intervals for tests.
pub fn fast_timings() -> Timings {
    Timings {
        tick: Duration::from_millis(200),
        cursor_overlap: Duration::from_secs(1),
        // the whole overlap, as before it existed (it has a test of its own)
        event_lookback: Duration::from_secs(3600),
        deliver: RetryPolicy {
            attempt_timeout: Duration::from_secs(4),
            deadline: Some(Duration::from_secs(600)),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            jitter: 0.0,
        },
        wake_debounce: Duration::from_millis(20),
        outbox_poll: Duration::from_millis(100),
        max_in_flight: 16,
        // raised at once (the grace has a test of its own)
        offline_grace: Duration::ZERO,
        ..Timings::default()
    }
}

type Running = (oneshot::Sender<()>, JoinHandle<Result<()>>);

/// A bus, a database, and the roles under test.
pub struct Env {
    pub bus: TestBus,
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub notifier_xkey: XKey,
    /// Publishes events as the control plane.
    pub cp: TestClient,
    /// Sends service requests as the web role.
    pub web: TestClient,
    /// Probes the notifier queue group as the alerts role (the only role
    /// allowed to reach it).
    probe: TestClient,
    pub clock: SharedClock,
    pub timings: Timings,
    /// The `backup_anomaly` thresholds the next started role uses.
    pub anomaly: rm_alerts::anomaly::AnomalyConfig,
    alerts: Vec<Running>,
    notifiers: Vec<Running>,
}

impl Env {
    pub async fn new() -> Result<Self> {
        Self::with_clock(rm_bus::clock::system()).await
    }

    pub async fn with_clock(clock: SharedClock) -> Result<Self> {
        let bus = TestBus::start().await?;
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("restic-manager.db")).await?;
        let cp = bus.connect_role(Role::Controlplane).await?;
        let web = bus.connect_role(Role::Web).await?;
        let probe = bus.connect_role(Role::Alerts).await?;
        Ok(Self {
            bus,
            dir,
            store,
            notifier_xkey: XKey::new(),
            cp,
            web,
            probe,
            clock,
            timings: fast_timings(),
            anomaly: rm_alerts::anomaly::AnomalyConfig::default(),
            alerts: Vec::new(),
            notifiers: Vec::new(),
        })
    }

    /// A manual clock starting at `start_ms`.
    pub async fn manual(start_ms: i64) -> Result<(Self, Arc<ManualClock>)> {
        let clock = ManualClock::new(start_ms);
        let env = Self::with_clock(clock.clone()).await?;
        Ok((env, clock))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Starts an alerts role (another copy if one runs) and waits until it
    /// answers.
    pub async fn start_alerts(&mut self) -> Result<()> {
        let creds = self.bus.creds_for(&Role::Alerts)?;
        let mut spec = self.bus.spec(&Role::Alerts, creds);
        spec.name = format!("alerts {}", self.alerts.len());
        let config = Config {
            data_dir: self.data_dir(),
            db_path: None,
            connect: spec,
            notifier_xkey: self.notifier_xkey.public_key(),
            ui_base_url: Some("https://rm.test".into()),
            timings: self.timings.clone(),
            anomaly: self.anomaly.clone(),
            clock: self.clock.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rm_alerts::run(config, async move {
            let _ = stopped.await;
        }));
        self.alerts.push((stop, task));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let probe: Result<api::PubKey, SvcError> = self.call(api::PUBKEY, api::Done {}).await;
            if probe.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the alerts role never answered: {probe:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every alerts role and checks each ended cleanly.
    pub async fn stop_alerts(&mut self) -> Result<()> {
        for (stop, task) in self.alerts.drain(..) {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, task)
                .await
                .context("alerts role did not stop")???;
        }
        Ok(())
    }

    /// Starts a notifier copy with a 1 s attempt timeout; returns when the
    /// bus routes requests to it.
    pub async fn start_notifier(&mut self, instance: &str) -> Result<()> {
        let creds = self.bus.creds_for(&Role::Notifier)?;
        let mut spec = self.bus.spec(&Role::Notifier, creds);
        spec.name = format!("notifier {instance}");
        let mut config = NotifierConfig::new(spec, self.notifier_xkey.clone());
        config.instance = instance.into();
        config.attempt_timeout = Duration::from_secs(1);
        config.shutdown_grace = Duration::from_secs(2);
        let notifier = Notifier::start(config).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(notifier.serve(async move {
            let _ = stopped.await;
        }));
        self.notifiers.push((stop, task));
        // Probe with malformed requests (answered `failed`, nothing sent)
        // until this copy answers one.
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(msg) = self.probe.request(deliver_subject(), "{}".into()).await {
                let reply: DeliverReply = decode("deliver reply", &msg.payload)?;
                if reply.notifier.as_deref() == Some(instance) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("notifier {instance} never answered")
    }

    pub async fn stop_all(&mut self) -> Result<()> {
        self.stop_alerts().await?;
        for (stop, task) in self.notifiers.drain(..) {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, task)
                .await
                .context("notifier did not stop")???;
        }
        Ok(())
    }

    // ------------------------------------------------------------ services

    /// A service call to the alerts role as operator `alice`.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        verb: Verb,
        body: B,
    ) -> Result<R, SvcError> {
        let req = SvcRequest {
            v: PROTOCOL_VERSION,
            actor: Actor {
                name: "alice".into(),
                via: ActorVia::Session,
                address: None,
            },
            body,
        };
        let fail = |code: &str, message: String| SvcError {
            code: code.into(),
            message,
        };
        let msg = tokio::time::timeout(
            WAIT,
            self.web
                .request(subject::svc(SvcRole::Alerts, verb), encode(&req)),
        )
        .await
        .map_err(|_| fail("timeout", "no reply".into()))?
        .map_err(|e| fail("unavailable", e.to_string()))?;
        let reply: SvcReply<R> =
            decode("svc reply", &msg.payload).map_err(|e| fail("decode", e.to_string()))?;
        match (reply.ok, reply.error) {
            (Some(v), None) => Ok(v),
            (_, Some(e)) => Err(e),
            (None, None) => Err(fail("empty", "empty reply".into())),
        }
    }

    /// Saves a webhook channel to `url` through the service (sealed to the
    /// alerts role's key); returns its id.
    pub async fn add_webhook(&self, name: &str, url: &str, secret: Option<&str>) -> Result<String> {
        let def = ChannelDef::Webhook(WebhookChannel {
            url: url.into(),
            secret: secret.map(str::to_owned),
            headers: BTreeMap::new(),
        });
        let view: api::ChannelView = self
            .call(
                api::CHANNEL_CREATE,
                api::ChannelCreate {
                    name: name.into(),
                    enabled: true,
                    definition: self.seal(&def).await?,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
        Ok(view.id)
    }

    /// Seals a definition to the alerts role's public key.
    pub async fn seal(&self, def: &ChannelDef) -> Result<SealedChannel> {
        let key: api::PubKey = self
            .call(api::PUBKEY, api::Done {})
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
        Ok(SealedChannel::seal(def, &key.xkey)?)
    }

    // ------------------------------------------------------------ the control plane's writes

    /// Publishes an event as the control plane would after a commit.
    pub async fn publish(&self, e: Evt, host: Option<&str>) -> Result<()> {
        let msg = EventMsg {
            v: PROTOCOL_VERSION,
            ts_ms: self.now(),
            host: host.map(rm_bus::HostId::parse).transpose()?,
            job: None,
            id: None,
            repo: None,
        };
        self.cp.publish(e.subject(), encode(&msg)).await?;
        self.cp.flush().await?;
        Ok(())
    }

    /// An enrolled host that is online.
    pub async fn add_host(&self, id: &str, name: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.store.write().await?;
        hosts::insert(&mut tx, id, name, "alice", now).await?;
        hosts::record_seen(&mut tx, id, now, &hosts::Vitals::default()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_offline(&self, id: &str) -> Result<()> {
        let mut conn = self.store.pool().acquire().await?;
        assert!(hosts::mark_offline(&mut conn, id, self.now()).await?);
        drop(conn);
        self.publish(Evt::HostOffline, Some(id)).await
    }

    pub async fn set_online(&self, id: &str) -> Result<()> {
        let mut conn = self.store.pool().acquire().await?;
        hosts::record_seen(&mut conn, id, self.now(), &hosts::Vitals::default()).await?;
        drop(conn);
        self.publish(Evt::HostOnline, Some(id)).await
    }

    /// Marks `ids` offline in one transaction (as the control plane's
    /// offline sweep does), then announces each.
    pub async fn set_offline_together(&self, ids: &[String]) -> Result<()> {
        let now = self.now();
        let mut tx = self.store.write().await?;
        for id in ids {
            assert!(hosts::mark_offline(&mut tx, id, now).await?);
        }
        tx.commit().await?;
        for id in ids {
            self.publish(Evt::HostOffline, Some(id)).await?;
        }
        Ok(())
    }

    /// Marks `ids` seen (online) in one transaction, then announces each.
    pub async fn set_online_together(&self, ids: &[String]) -> Result<()> {
        let now = self.now();
        let mut tx = self.store.write().await?;
        for id in ids {
            hosts::record_seen(&mut tx, id, now, &hosts::Vitals::default()).await?;
        }
        tx.commit().await?;
        for id in ids {
            self.publish(Evt::HostOnline, Some(id)).await?;
        }
        Ok(())
    }

    pub async fn add_repo(&self, id: &str, name: &str) -> Result<()> {
        let mut conn = self.store.pool().acquire().await?;
        repos::insert(
            &mut conn,
            &repos::NewRepo {
                id,
                name,
                url_display: "rest:https://backup.test/",
                secrets_enc: b"not used here",
                created_by: "alice",
                now: self.now(),
            },
        )
        .await?;
        Ok(())
    }

    /// A job of `kind` that finished with `status`, without publishing.
    pub async fn job_done_quietly(
        &self,
        host: &str,
        repo: &str,
        kind: &str,
        status: JobStatus,
        schedule: Option<&str>,
    ) -> Result<String> {
        self.job_done_at(host, repo, kind, status, schedule, self.now())
            .await
    }

    /// A job that finished at `now` (by its agent's clock), without
    /// publishing.
    pub async fn job_done_at(
        &self,
        host: &str,
        repo: &str,
        kind: &str,
        status: JobStatus,
        schedule: Option<&str>,
        now: i64,
    ) -> Result<String> {
        let id = rm_bus::JobId::generate().to_string();
        let params = params(kind)?;
        let mut tx = self.store.write().await?;
        jobs::insert(
            &mut tx,
            &NewJob {
                id: &id,
                host_id: host,
                exec_host_id: host,
                repo_id: Some(repo),
                params: &params,
                origin: if schedule.is_some() {
                    "schedule"
                } else {
                    "operator"
                },
                schedule_id: schedule,
                status: JobStatus::Running,
                timeout_secs: 3600,
                created_by: "alice",
                created_at: now,
                started_at: Some(now),
            },
        )
        .await?;
        let failed = status == JobStatus::Failed;
        jobs::finish(
            &mut tx,
            &id,
            status,
            &Finish {
                exit_code: Some(if failed { 1 } else { 0 }),
                error: failed.then(|| "repository is locked".to_owned()),
                finished_at: now,
                ..Finish::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A successful backup with restic's summary, then `job.finished`.
    pub async fn backup_with_summary(
        &self,
        host: &str,
        repo: &str,
        summary: serde_json::Value,
    ) -> Result<String> {
        let id = self
            .backup_with_summary_at(host, repo, summary, self.now())
            .await?;
        self.publish(Evt::JobFinished, Some(host)).await?;
        Ok(id)
    }

    /// A successful backup with restic's summary that finished at `now`,
    /// without publishing.
    pub async fn backup_with_summary_at(
        &self,
        host: &str,
        repo: &str,
        summary: serde_json::Value,
        now: i64,
    ) -> Result<String> {
        let id = rm_bus::JobId::generate().to_string();
        let params = params("backup")?;
        let mut tx = self.store.write().await?;
        jobs::insert(
            &mut tx,
            &NewJob {
                id: &id,
                host_id: host,
                exec_host_id: host,
                repo_id: Some(repo),
                params: &params,
                origin: "operator",
                schedule_id: None,
                status: JobStatus::Running,
                timeout_secs: 3600,
                created_by: "alice",
                created_at: now,
                started_at: Some(now),
            },
        )
        .await?;
        jobs::finish(
            &mut tx,
            &id,
            JobStatus::Succeeded,
            &Finish {
                exit_code: Some(0),
                summary_json: Some(summary.to_string()),
                finished_at: now,
                ..Finish::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A finished job, then the `job.finished` event.
    pub async fn job_done(
        &self,
        host: &str,
        repo: &str,
        kind: &str,
        status: JobStatus,
    ) -> Result<String> {
        let id = self
            .job_done_quietly(host, repo, kind, status, None)
            .await?;
        self.publish(Evt::JobFinished, Some(host)).await?;
        Ok(id)
    }

    pub async fn add_schedule(
        &self,
        id: &str,
        host: &str,
        repo: &str,
        cron: &str,
        tz: &str,
        grace_secs: i64,
    ) -> Result<()> {
        let params = params("backup")?;
        let now = self.now();
        let mut conn = self.store.pool().acquire().await?;
        schedules::upsert(
            &mut conn,
            &schedules::Schedule {
                id: id.into(),
                host_id: host.into(),
                repo_id: repo.into(),
                kind: "backup".into(),
                cron: cron.into(),
                timezone: tz.into(),
                params_json: serde_json::to_string(&params)?,
                enabled: true,
                jitter_secs: 0,
                timeout_secs: 3600,
                grace_secs,
                exec_host_id: host.into(),
                config_version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------ reading state

    pub async fn alerts_of(&self, host: &str) -> Result<Vec<alerts::Alert>> {
        let mut conn = self.store.read().await?;
        Ok(alerts::list_for_host(&mut conn, host, 1000).await?)
    }

    /// The running alerts role's counters.
    pub async fn metrics(&self) -> Result<api::Metrics> {
        self.call(api::METRICS, serde_json::json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
    }

    /// Waits until the alerts role counted a suppressed delivery for which
    /// `reason` returns at least `n`; the counters then.
    pub async fn wait_suppressed(
        &self,
        what: &str,
        reason: fn(&api::Suppressed) -> u64,
        n: u64,
    ) -> Result<api::Metrics> {
        wait_for(what, || async {
            let m = self.metrics().await?;
            Ok((reason(&m.suppressed) >= n).then_some(m))
        })
        .await
    }

    pub async fn outbox(&self) -> Result<Vec<delivery::Delivery>> {
        let mut conn = self.store.read().await?;
        Ok(delivery::all(&mut conn).await?)
    }

    pub async fn log_of(&self, outbox_id: &str) -> Result<Vec<delivery::LogEntry>> {
        let mut conn = self.store.read().await?;
        Ok(delivery::log_of(&mut conn, outbox_id).await?)
    }

    /// Waits until the alert of (host, kind) matches `pred`.
    pub async fn wait_alert(
        &self,
        host: &str,
        kind: &str,
        what: &str,
        pred: impl Fn(&alerts::Alert) -> bool,
    ) -> Result<alerts::Alert> {
        wait_for(what, || async {
            Ok(self
                .alerts_of(host)
                .await?
                .into_iter()
                .find(|a| a.kind == kind && pred(a)))
        })
        .await
    }
}

fn params(kind: &str) -> Result<JobParams> {
    Ok(match kind {
        "backup" => JobParams::Backup {
            paths: vec!["/home".into()],
            excludes: vec![],
            tags: vec![],
            one_file_system: false,
            host_name: None,
        },
        "forget" => JobParams::Forget {
            retention: rm_bus::msg::Retention {
                keep_daily: Some(7),
                ..Default::default()
            },
            host_name: "h".into(),
            prune: false,
        },
        "prune" => JobParams::Prune {},
        "check" => JobParams::Check {
            read_data_subset: None,
        },
        other => bail!("no params for {other}"),
    })
}

/// Polls `probe` until it yields a value.
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- HTTP receivers

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How a receiver answers one connection.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// Wait, then answer with the status.
    Slow(Duration, u16),
    /// The status with a `Retry-After` of so many seconds.
    RetryAfter(u16, u64),
    /// Read the request and never answer.
    Hang,
    /// The status for the first request of each `webhook-id` (recorded in
    /// the set), 200 for every later one: each event's first attempt fails
    /// whatever order the attempts of several events arrive in.
    FirstOfEachId(Arc<Mutex<BTreeSet<String>>>, u16),
}

/// A local HTTP/1.1 endpoint (one request per connection) that records
/// what it receives and answers from a script, then with a default.
pub struct Receiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Connections accepted so far (each delivery attempt is one).
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(default: Answer) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, requests) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let task = tokio::spawn({
            let script = script.clone();
            let connections = connections.clone();
            async move {
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer = script
                        .lock()
                        .ok()
                        .and_then(|mut s| s.pop_front())
                        .unwrap_or_else(|| default.clone());
                    conns.spawn(serve_one(stream, tx.clone(), answer));
                }
            }
        });
        Ok(Self {
            addr,
            requests,
            script,
            connections,
            task,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next connections with these, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        if let Ok(mut s) = self.script.lock() {
            s.extend(answers);
        }
    }

    pub async fn next(&mut self) -> Result<Received> {
        match tokio::time::timeout(WAIT, self.requests.recv()).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => bail!("receiver stopped"),
            Err(_) => bail!("no request within {WAIT:?}"),
        }
    }

    /// How many connections (requests) reached this receiver so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests that arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            out.push(r);
        }
        out
    }
}

async fn serve_one(mut stream: TcpStream, tx: mpsc::UnboundedSender<Received>, answer: Answer) {
    let Ok(req) = read_request(&mut stream).await else {
        return;
    };
    let _ = tx.send(req.clone());
    match answer {
        Answer::Hang => tokio::time::sleep(Duration::from_secs(120)).await,
        Answer::Slow(wait, code) => {
            tokio::time::sleep(wait).await;
            let head = format!(
                "HTTP/1.1 {code} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Answer::RetryAfter(code, secs) => {
            let head = format!(
                "HTTP/1.1 {code} Whatever\r\nretry-after: {secs}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Answer::FirstOfEachId(seen, code) => {
            let id = req.header("webhook-id").unwrap_or_default().to_owned();
            let first = seen.lock().map(|mut s| s.insert(id)).unwrap_or(true);
            let code = if first { code } else { 200 };
            let head = format!(
                "HTTP/1.1 {code} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Answer::Status(code) => {
            let head = format!(
                "HTTP/1.1 {code} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> Result<Received> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec())?;
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .context("no request line")?
        .to_owned();
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').context("bad header")?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed inside the body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Received {
        path,
        headers,
        body,
    })
}
