//! The agent's life on the bus: connect with its nkey + JWT (reconnecting
//! forever with jittered backoff), say hello on every (re)connect, publish
//! heartbeats, answer commands on `rm.cmd.<host>`, keep the outbox draining,
//! and say goodbye on a clean stop.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::{Client, Event, Message};
use futures_util::StreamExt;
use rm_bus::HostId;
use rm_bus::connect::ConnectSpec;
use rm_bus::creds::Role;
use rm_bus::msg::{
    Ack, AgentConfig, Command, CommandBody, ErrorKind, Goodbye, Heartbeat, Hello, HelloReply,
    PROTOCOL_VERSION, QueryReply, decode, encode,
};
use rm_bus::reqack::{IdempotencyKey, request_with_retry};
use rm_bus::subject;
use rm_restic::Restic;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::exec::{Accepted, ExecConfig, Executor};
use crate::journal::Journal;
use crate::outbox::Outbox;
use crate::schedule::Scheduler;
use crate::state::StateDir;
use crate::{Settings, vitals};

const CONFIG_FILE: &str = "config.json";
/// Repositories whose next job first removes this host's stale locks.
const LOCK_CHECK_FILE: &str = "lock-check.json";

struct Agent {
    settings: Settings,
    host: HostId,
    client: Client,
    state: StateDir,
    exec: Arc<Executor>,
    sched: Arc<Scheduler>,
    outbox: Arc<Outbox>,
    config: Mutex<Option<AgentConfig>>,
    /// A config arriving in parts (too large for one command).
    config_parts: Mutex<ConfigParts>,
    heartbeat_every: watch::Sender<Duration>,
    hello_wake: Notify,
    /// Notified on every (re)connect.
    connected: Arc<Notify>,
    started: Instant,
    restic_version: Option<String>,
}

/// The parts of one config version received so far.
#[derive(Default)]
struct ConfigParts {
    version: u64,
    parts: Vec<Option<String>>,
}

impl ConfigParts {
    /// Adds a part; the whole text once every part of `version` is here.
    fn add(&mut self, version: u64, index: u32, total: u32, data: String) -> Option<String> {
        let (Ok(index), Ok(total)) = (usize::try_from(index), usize::try_from(total)) else {
            return None;
        };
        if index >= total {
            return None;
        }
        if self.version != version || self.parts.len() != total {
            // a new version (or a new split of it) starts over
            self.version = version;
            self.parts = vec![None; total];
        }
        self.parts[index] = Some(data);
        if self.parts.iter().all(Option::is_some) {
            let text = self.parts.drain(..).flatten().collect();
            self.version = 0;
            Some(text)
        } else {
            None
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the agent until `shutdown` completes.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<()> {
    let state = StateDir::open(&settings.state_dir)?;
    let identity = state.identity()?;
    match state.clear_scratch() {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed password files left by an earlier crash"),
        Err(e) => tracing::warn!(error = %e, "could not clear the scratch directory"),
    }
    let creds = state.creds()?;
    let xkey = state.xkey()?;
    let host = identity.host_id.clone();
    let (restic, restic_error) = match Restic::detect(&settings.restic_bin).await {
        Ok(r) => {
            tracing::info!(version = %r.version_string(), bin = %settings.restic_bin.display(), yields = settings.restic_yields, "restic found");
            let r = if settings.restic_yields {
                r.yielding()
            } else {
                r
            };
            (Some(r), None)
        }
        Err(e) => {
            tracing::error!(bin = %settings.restic_bin.display(), error = %e, "restic not usable; jobs will fail until it is installed");
            (
                None,
                Some(format!("{} ({e})", settings.restic_bin.display())),
            )
        }
    };
    let urls = settings
        .bus_urls
        .clone()
        .unwrap_or_else(|| identity.bus_urls.clone());
    let connected = Arc::new(Notify::new());
    let client = connect(&settings, &state, &host, &urls, creds, connected.clone()).await?;
    let commands = client
        .subscribe(subject::cmd(&host))
        .await
        .context("subscribing to this host's commands")?;

    let outbox = Arc::new(Outbox::open(state.outbox_dir(), settings.outbox_max)?);
    let journal = Journal::open(state.jobs_dir())?;
    let config: Option<AgentConfig> = state.read_json(CONFIG_FILE).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cached config unreadable; waiting for the control plane's");
        None
    });
    let exec = Executor::new(
        ExecConfig {
            host: host.clone(),
            client: client.clone(),
            xkey,
            controlplane_xkey: identity.controlplane_xkey.clone(),
            restic: restic.clone(),
            restic_error,
            scratch_dir: state.scratch_dir(),
            cache_dir: state.cache_dir(),
            clock: settings.clock.clone(),
            progress_interval: settings.timings.progress_interval,
            log_flush: settings.timings.log_flush,
            // restic writes the machine's own name into its locks
            lock_hostname: vitals::hostname(),
            claim_retry: settings.timings.claim_retry,
            lock_check_file: Some(state.path(LOCK_CHECK_FILE)),
        },
        journal,
        outbox.clone(),
    );
    let sched = Arc::new(Scheduler::new(
        state.clone(),
        settings.clock.clone(),
        config.clone(),
    )?);
    let hb = heartbeat_of(&settings, config.as_ref());
    let (heartbeat_every, _) = watch::channel(hb);
    let agent = Arc::new(Agent {
        host,
        client,
        state,
        exec,
        sched,
        outbox,
        config: Mutex::new(config),
        config_parts: Mutex::new(ConfigParts::default()),
        heartbeat_every,
        hello_wake: Notify::new(),
        connected,
        started: Instant::now(),
        restic_version: restic.as_ref().map(Restic::version_string),
        settings,
    });
    agent.exec.resume()?;

    let stop = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(agent.clone().hello_loop(stop.clone())),
        tokio::spawn(agent.clone().heartbeat_loop(stop.clone())),
        tokio::spawn(agent.clone().outbox_loop(stop.clone())),
        tokio::spawn(agent.clone().command_loop(commands, stop.clone())),
        tokio::spawn(agent.sched.clone().run(
            agent.exec.clone(),
            agent.settings.timings.scheduler_tick,
            stop.clone(),
        )),
    ];
    // The first hello goes out on the client's first `Connected` event
    // (which async-nats also reports for the initial connection).
    tracing::info!(host = %agent.host, "agent running");
    shutdown.await;

    tracing::info!("agent stopping");
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    agent
        .exec
        .shutdown(agent.settings.timings.shutdown_grace)
        .await;
    // A last chance for the results of jobs just stopped; whatever is not
    // acknowledged stays in the outbox for the next start.
    let mut quick = agent.settings.timings.results.clone();
    quick.deadline = Some(Duration::from_secs(2));
    // one attempt may not outlast the deadline (a control plane already
    // gone would hold the stop for a whole attempt, 10 s by default)
    quick.attempt_timeout = quick.attempt_timeout.min(Duration::from_secs(2));
    let _ = agent.outbox.drain(&agent.client, &agent.host, &quick).await;
    let bye = Goodbye {
        v: PROTOCOL_VERSION,
        ts_ms: agent.settings.clock.now_ms(),
        reason: Some("shutdown".into()),
    };
    let _ = agent
        .client
        .publish(subject::agent_goodbye(&agent.host), encode(&bye))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), agent.client.flush()).await;
    Ok(())
}

fn heartbeat_of(settings: &Settings, config: Option<&AgentConfig>) -> Duration {
    config
        .and_then(|c| c.heartbeat_secs)
        .filter(|s| *s > 0)
        .map_or(settings.timings.heartbeat, Duration::from_secs)
}

async fn connect(
    settings: &Settings,
    state: &StateDir,
    host: &HostId,
    urls: &[String],
    creds: rm_bus::creds::UserCreds,
    connected: Arc<Notify>,
) -> Result<Client> {
    let role = Role::Agent(host.clone());
    let first = urls.first().context("no bus URL configured")?.clone();
    let mut spec = ConnectSpec::new(first, creds, &role);
    spec.urls = urls.to_vec();
    spec.name = format!("agent {host}");
    spec.retry_on_initial_connect = true;
    spec.tls_ca_pem = bus_ca(state, urls)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    spec.reconnect_max = Some(settings.timings.reconnect_max);
    spec.ping_interval = Some(settings.timings.ping_interval);
    let opts = rm_bus::connect::options(&spec, Some(tx))?.max_reconnects(None);
    // URLs given on the agent's command line or configuration are in the
    // operator's order of preference (the nearest node first); the
    // enrolled list is shared by the fleet and spreads it at random.
    let opts = if settings.bus_urls.is_some() {
        opts.retain_servers_order()
    } else {
        opts
    };
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().with_context(|| format!("bad bus URL {u:?}")))
        .collect::<Result<_>>()?;
    let client = opts
        .connect(addrs.as_slice())
        .await
        .with_context(|| format!("connecting to the bus at {}", urls.join(", ")))?;
    // Connection events drive hellos; forwarded by a task that lives as
    // long as the client's callback sender.
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Connected => {
                    tracing::info!("connected to the bus");
                    connected.notify_one();
                }
                Event::Disconnected => tracing::warn!("disconnected from the bus"),
                other => tracing::debug!(event = %other, "bus event"),
            }
        }
    });
    Ok(client)
}

/// The CA the bus must be issued by: `bus-ca.pem` from enrollment. An
/// agent enrolled before the installation had a CA has none: it goes on
/// trusting this machine's roots for `tls://` servers, and says so.
pub fn bus_ca(state: &StateDir, urls: &[String]) -> Result<Option<String>> {
    let path = state.path(crate::state::BUS_CA);
    match std::fs::read_to_string(&path) {
        Ok(pem) => Ok(Some(pem)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if urls.iter().any(|u| u.starts_with("tls://")) {
                tracing::warn!(
                    file = %path.display(),
                    "no bus CA stored (enrolled before the installation had its own CA): the bus certificate is checked against this machine's trusted roots only; re-enroll to verify it against the installation's CA"
                );
            }
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reconnect delay: exponential from 250 ms to `max`, with the lower half
/// random so a fleet does not reconnect in lockstep after an outage.
impl Agent {
    fn config_version(&self) -> u64 {
        lock(&self.config).as_ref().map_or(0, |c| c.version)
    }

    /// Takes a config: cached, then live. A push is taken only when newer
    /// than the one applied (retried pushes may arrive out of order); the
    /// hello reply is the control plane's answer to this agent's current
    /// version and is taken whenever it differs (the control plane's
    /// database may have been restored to an older state).
    fn apply_config(&self, config: AgentConfig, from_hello: bool) -> Result<()> {
        let current = self.config_version();
        if config.version == current || (!from_hello && config.version < current) {
            return Ok(());
        }
        self.state.write_json(CONFIG_FILE, &config)?;
        let _ = self
            .heartbeat_every
            .send(heartbeat_of(&self.settings, Some(&config)));
        tracing::info!(
            version = config.version,
            schedules = config.schedules.len(),
            "config applied"
        );
        self.sched.set_config(config.clone());
        *lock(&self.config) = Some(config);
        Ok(())
    }

    fn hello_msg(&self) -> Hello {
        let (accepted, running, mark) = self.exec.held_marked();
        Hello {
            v: PROTOCOL_VERSION,
            agent_version: crate::VERSION.into(),
            restic_version: self.restic_version.clone(),
            os: vitals::os(),
            arch: vitals::arch(),
            hostname: self.settings.hostname.clone(),
            config_version: self.config_version(),
            accepted_jobs: accepted,
            running_jobs: running,
            accept_seq: Some(mark),
        }
    }

    /// Says hello whenever the connection is (re)established, until the
    /// control plane answers.
    async fn hello_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.hello_wake.notified() => {}
                () = self.connected.notified() => {}
            }
            // the reconnect also restarts the outbox
            self.outbox.wake.notify_one();
            let key = IdempotencyKey::new(format!("hello:{}", rm_bus::ids::random_token(8)));
            let subj = subject::agent_hello(&self.host);
            let policy = self.settings.timings.hello.clone();
            let sent = tokio::select! {
                () = stop.cancelled() => return,
                r = request_with_retry(&self.client, &subj, &key, encode(&self.hello_msg()), &policy) => r,
            };
            match sent
                .map_err(anyhow::Error::from)
                .and_then(|m| decode::<HelloReply>("hello reply", &m.payload).map_err(Into::into))
            {
                Ok(reply) => {
                    tracing::info!(config_version = self.config_version(), "hello answered");
                    if let Some(c) = reply.config
                        && let Err(e) = self.apply_config(c, true)
                    {
                        tracing::error!(error = %e, "config from hello not applied");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "hello not answered; trying again");
                    self.hello_wake.notify_one();
                }
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut every = self.heartbeat_every.subscribe();
        loop {
            let wait = *every.borrow_and_update();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                _ = every.changed() => continue,
            }
            let mut disks = Vec::new();
            if let Some(d) = vitals::disk_free(self.state.root()) {
                disks.push(d);
            }
            let hb = Heartbeat {
                v: PROTOCOL_VERSION,
                ts_ms: self.settings.clock.now_ms(),
                agent_version: crate::VERSION.into(),
                restic_version: self.restic_version.clone(),
                os: vitals::os(),
                arch: vitals::arch(),
                uptime_secs: vitals::uptime_secs(self.started),
                config_version: self.config_version(),
                disks,
                running_jobs: self.exec.running(),
                next_runs: self.sched.next_runs(),
                bus_node: rm_bus::connect::node_name(&self.client),
            };
            if let Err(e) = rm_bus::size::publish(
                &self.client,
                subject::agent_heartbeat(&self.host),
                encode(&hb),
            )
            .await
            {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
    }

    /// Sends the outbox whenever something is added or the connection
    /// comes back, backing off while nothing is acknowledged.
    async fn outbox_loop(self: Arc<Self>, stop: CancellationToken) {
        let policy = self.settings.timings.results.clone();
        let mut failures = 0u32;
        loop {
            let pass = tokio::select! {
                () = stop.cancelled() => return,
                r = self.outbox.drain(&self.client, &self.host, &policy) => r,
            };
            let pause = match pass {
                Ok(d) if d.remaining == 0 => {
                    failures = 0;
                    None
                }
                Ok(_) => {
                    failures = failures.saturating_add(1);
                    Some(policy.backoff(failures, &mut rand::thread_rng()))
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox unreadable");
                    failures = failures.saturating_add(1);
                    Some(policy.backoff(failures, &mut rand::thread_rng()))
                }
            };
            match pause {
                Some(p) => tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(p) => {}
                    () = self.outbox.wake.notified() => {}
                },
                None => tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.outbox.wake.notified() => {}
                    // a safety net: look again now and then
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                },
            }
        }
    }

    async fn command_loop(
        self: Arc<Self>,
        mut commands: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let m = tokio::select! {
                () = stop.cancelled() => return,
                m = commands.next() => m,
            };
            let Some(m) = m else { return };
            let me = self.clone();
            tokio::spawn(async move { me.on_command(m).await });
        }
    }

    async fn on_command(&self, m: Message) {
        let Some(reply_to) = m.reply.clone() else {
            tracing::warn!("command without a reply subject ignored");
            return;
        };
        let body = match decode::<Command>("command", &m.payload) {
            Ok(c) => c.body,
            Err(e) => {
                tracing::warn!(error = %e, "malformed command refused");
                let _ = self
                    .client
                    .publish(reply_to, encode(&Ack::refused(e.to_string())))
                    .await;
                return;
            }
        };
        let answer = match body {
            CommandBody::Dispatch { job } => {
                match self
                    .exec
                    .accept_marked(job, rm_bus::msg::JobOrigin::Dispatch, None)
                {
                    (Accepted::New, accepted) => encode(&Ack {
                        accepted,
                        ..Ack::ok()
                    }),
                    (Accepted::Duplicate, _) => encode(&Ack::duplicate()),
                    // every refusal of a well-formed dispatch may pass
                    (Accepted::Refused(why), _) => encode(&Ack::refused_for_now(why)),
                }
            }
            CommandBody::Cancel { job_id } => {
                let held = self.exec.cancel(&job_id);
                tracing::info!(job = %job_id, held, "cancel received");
                encode(&Ack::ok())
            }
            CommandBody::ConfigChanged { config } => match self.apply_config(config, false) {
                Ok(()) => encode(&Ack::ok()),
                Err(e) => encode(&Ack::refused(format!("config not saved: {e}"))),
            },
            CommandBody::ConfigPart {
                version,
                index,
                total,
                data,
            } => {
                let whole = lock(&self.config_parts).add(version, index, total, data);
                match whole.map(|text| decode::<AgentConfig>("config", text.as_bytes())) {
                    None => encode(&Ack::ok()),
                    Some(Ok(config)) if config.version == version => {
                        tracing::info!(version, parts = total, "config received in parts");
                        match self.apply_config(config, false) {
                            Ok(()) => encode(&Ack::ok()),
                            Err(e) => encode(&Ack::refused(format!("config not saved: {e}"))),
                        }
                    }
                    Some(Ok(_)) => encode(&Ack::refused("config parts name another version")),
                    Some(Err(e)) => encode(&Ack::refused(format!("config parts: {e}"))),
                }
            }
            q @ (CommandBody::Ls { .. }
            | CommandBody::Snapshots { .. }
            | CommandBody::RepoInit { .. }
            | CommandBody::RepoVerify { .. }) => encode(&self.exec.query(q).await),
            CommandBody::Unknown => encode(&Ack::refused("unknown command (agent too old?)")),
        };
        // An answer too large for the bus (a listing) becomes a refusal
        // that says so, rather than no answer at all.
        let answer = match rm_bus::size::check(&self.client, 0, answer.len()) {
            Ok(()) => answer,
            Err(too_large) => {
                tracing::warn!(
                    size = too_large.size,
                    max_payload = too_large.max,
                    "reply too large for the bus; refusing instead"
                );
                encode(&QueryReply {
                    v: PROTOCOL_VERSION,
                    ok: false,
                    error_kind: Some(ErrorKind::InvalidRequest),
                    error: Some(format!(
                        "the answer is too large for the bus: {too_large}; list a narrower part"
                    )),
                    entries: vec![],
                    snapshots: None,
                    restic_repo_id: None,
                })
            }
        };
        if let Err(e) = rm_bus::size::publish(&self.client, reply_to, answer).await {
            tracing::warn!(error = %e, "command reply not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parts_assemble_once_all_of_one_version_are_in() {
        let mut p = ConfigParts::default();
        assert_eq!(p.add(3, 1, 2, "b".into()), None);
        // another version starts over
        assert_eq!(p.add(4, 1, 2, "y".into()), None);
        assert_eq!(p.add(4, 1, 2, "y".into()), None, "a re-sent part");
        assert_eq!(p.add(4, 0, 2, "x".into()), Some("xy".into()));
        assert_eq!(p.add(5, 2, 2, "z".into()), None, "index out of range");
        assert_eq!(p.add(5, 0, 1, "whole".into()), Some("whole".into()));
    }
}
