//! The embedded bus: a core-NATS server, wire-compatible with nats-server
//! for everything restic-manager uses.
//!
//! - [`proto`]: the bounded client-protocol parser.
//! - `sublist`: subject validation and the per-account subscription trie.
//! - [`perms`]: publish/subscribe permissions and response permissions.
//! - `client`: one task pair per connection (reader + writer) with a
//!   bounded outbound buffer; routing of messages between connections.
//! - `auth`: nkey challenge, static users, operator-mode user JWTs.
//! - `sys`: the system account's account-JWT update and lookup requests,
//!   persisted in the resolver directory.
//! - [`tls`]: rustls server configuration from PEM files.
//! - [`users`]: the static `users.toml` file.
//!
//! Start with [`Server::start`]; stop with [`Server::shutdown`] (lame-duck
//! INFO, drain, close). Every interval and limit lives in [`Limits`].

mod auth;
mod client;
pub mod perms;
pub mod proto;
mod sublist;
mod sys;
pub mod tls;
pub mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::creds::claims::Permissions;

pub use auth::AccountJwt;
use client::ClientHandle;
use sublist::Sublist;
pub use sublist::{is_subset, matches, valid_literal_subject, valid_queue, valid_subject};

/// The nats-server feature level this server implements; announced as
/// `version` in INFO, since clients gate features on it.
pub const COMPAT_VERSION: &str = "2.10.0";
/// Name of the single account used without operator mode (as nats-server).
pub const GLOBAL_ACCOUNT: &str = "$G";

/// Limits and intervals; defaults are nats-server's.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message (headers + payload) accepted; announced in INFO.
    pub max_payload: usize,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Bytes queued for one connection before it is cut as a slow consumer.
    pub max_pending: usize,
    /// How long one socket write may block before the connection is cut
    /// as a slow consumer.
    pub write_deadline: Duration,
    /// How often the server PINGs a connection that sent nothing.
    pub ping_interval: Duration,
    /// Unanswered PINGs before the connection is closed as stale.
    pub max_pings_out: u32,
    /// Time from accept to a valid CONNECT (and the TLS handshake).
    pub auth_timeout: Duration,
    /// Time between the lame-duck INFO and closing connections at shutdown.
    pub lame_duck_grace: Duration,
    /// Subscriptions one connection may hold (0 = unlimited).
    pub max_subscriptions: usize,
}

/// Time a client has from the server's accept to a valid CONNECT (and
/// the TLS handshake): long enough that a loaded server taking a storm of
/// reconnects does not cut off clients that are merely queued, which then
/// come back after a longer pause and cost a second handshake; short
/// enough that a connection that never authenticates is gone soon. The
/// same for the embedded bus and the nats-server configuration we write.
pub const CLIENT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 1024 * 1024,
            max_connections: 65_536,
            max_pending: 64 * 1024 * 1024,
            write_deadline: Duration::from_secs(10),
            ping_interval: Duration::from_secs(120),
            max_pings_out: 2,
            auth_timeout: CLIENT_AUTH_TIMEOUT,
            lame_duck_grace: Duration::from_millis(500),
            max_subscriptions: 0,
        }
    }
}

/// A user of the static users file: an nkey and its permissions.
#[derive(Debug, Clone)]
pub struct StaticUser {
    /// Public user nkey (`U...`).
    pub nkey: String,
    pub permissions: Permissions,
}

/// Decentralized (operator mode) authentication settings.
#[derive(Debug, Clone)]
pub struct OperatorAuth {
    /// The trusted, self-signed operator JWT.
    pub operator_jwt: String,
    /// System account public key; defaults to the operator JWT's.
    pub system_account: Option<String>,
    /// Account JWTs known at start (the system account's among them).
    pub preload: Vec<String>,
    /// Where account JWT updates are kept across restarts (`<pub>.jwt`).
    pub resolver_dir: Option<PathBuf>,
}

/// How connections authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone may connect; only allowed on a loopback listen address.
    None,
    /// Static nkey users (nonce challenge), one shared account.
    Users(Vec<StaticUser>),
    /// Operator mode: user JWTs signed by trusted accounts.
    Operator(OperatorAuth),
}

/// Everything [`Server::start`] needs.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub auth: Auth,
    /// With TLS, INFO says `tls_required` and clients upgrade after it.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub limits: Limits,
    pub server_name: String,
    /// Listen beyond loopback without TLS (refused unless set).
    pub allow_plaintext: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("auth", &self.auth)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("server_name", &self.server_name)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, auth: Auth) -> Self {
        Self {
            listen,
            auth,
            tls: None,
            limits: Limits::default(),
            server_name: "restic-manager".into(),
            allow_plaintext: false,
        }
    }
}

/// A snapshot of the server's counters (exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub slow_consumers: u64,
    pub auth_failures: u64,
    /// Connections refused because of `max_connections`.
    pub refused_connections: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    connections: AtomicU64,
    total_connections: AtomicU64,
    msgs_in: AtomicU64,
    msgs_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    slow_consumers: AtomicU64,
    auth_failures: AtomicU64,
    refused_connections: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> Counters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            connections: g(&self.connections),
            total_connections: g(&self.total_connections),
            msgs_in: g(&self.msgs_in),
            msgs_out: g(&self.msgs_out),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            slow_consumers: g(&self.slow_consumers),
            auth_failures: g(&self.auth_failures),
            refused_connections: g(&self.refused_connections),
        }
    }
}

/// One account: a separate subject space with its own connections.
pub(crate) struct Account {
    pub name: String,
    pub sublist: RwLock<Sublist>,
    pub clients: Mutex<HashMap<u64, Weak<ClientHandle>>>,
    /// The account JWT in force (operator mode only).
    pub jwt: RwLock<Option<AccountJwt>>,
    pub is_system: bool,
}

impl Account {
    fn new(name: &str, is_system: bool) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            sublist: RwLock::new(Sublist::new()),
            clients: Mutex::new(HashMap::new()),
            jwt: RwLock::new(None),
            is_system,
        })
    }

    pub fn sublist_read(&self) -> std::sync::RwLockReadGuard<'_, Sublist> {
        self.sublist.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sublist_write(&self) -> std::sync::RwLockWriteGuard<'_, Sublist> {
        self.sublist.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn jwt(&self) -> Option<AccountJwt> {
        self.jwt.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    pub limits: Limits,
    pub server_id: String,
    pub server_name: String,
    pub port: u16,
    pub host: String,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: auth::AuthState,
    stats: Stats,
    clients: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    next_client_id: AtomicU64,
    lame_duck: AtomicBool,
    /// Woken when the last connection task ends.
    drained: Notify,
    sys_seq: AtomicU64,
}

impl Shared {
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// A running embedded bus.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    stop_accepting: Arc<Notify>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("server_id", &self.shared.server_id)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds, loads the auth state and starts accepting connections.
    pub async fn start(config: ServerConfig) -> Result<Server> {
        if matches!(config.auth, Auth::None) && !config.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without authentication: use a loopback address or configure users or operator auth",
                config.listen
            );
        }
        if config.tls.is_none() && !config.allow_plaintext && !config.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} (beyond loopback) without TLS: give the bus a certificate, or allow plain connections explicitly with --bus-allow-plaintext (serve) / --allow-plaintext (bus)",
                config.listen
            );
        }
        if config.limits.max_payload == 0 || config.limits.max_pending < config.limits.max_payload {
            bail!("max_payload must be > 0 and max_pending at least max_payload");
        }
        let auth = auth::AuthState::load(&config.auth)
            .await
            .context("loading bus authentication")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the bus listener on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let server_id = nkeys::KeyPair::new_server().public_key();
        let shared = Arc::new(Shared {
            limits: config.limits.clone(),
            server_name: if config.server_name.is_empty() {
                server_id.clone()
            } else {
                config.server_name.clone()
            },
            server_id,
            port: local_addr.port(),
            host: local_addr.ip().to_string(),
            tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            auth,
            stats: Stats::default(),
            clients: Mutex::new(HashMap::new()),
            next_client_id: AtomicU64::new(1),
            lame_duck: AtomicBool::new(false),
            drained: Notify::new(),
            sys_seq: AtomicU64::new(0),
        });
        tracing::info!(
            addr = %local_addr,
            auth = auth_kind(&config.auth),
            tls = config.tls.is_some(),
            max_payload = config.limits.max_payload,
            "embedded bus listening"
        );
        let stop_accepting = Arc::new(Notify::new());
        let accept = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            stop_accepting.clone(),
        ));
        Ok(Server {
            shared,
            local_addr,
            accept,
            stop_accepting,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `nats://host:port` (or `tls://` with TLS) for clients.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot()
    }

    /// Graceful stop: no new connections; every client gets an INFO with
    /// `ldm: true`, then, after the grace period, its queued messages are
    /// flushed and it is closed.
    pub async fn shutdown(mut self) {
        self.stop_accepting.notify_one();
        let _ = (&mut self.accept).await;
        self.shared.lame_duck.store(true, Ordering::SeqCst);
        let clients: Vec<Arc<ClientHandle>> = self.shared.clients().values().cloned().collect();
        tracing::info!(
            clients = clients.len(),
            "embedded bus entering lame-duck mode"
        );
        for c in &clients {
            c.send_lame_duck_info(&self.shared);
        }
        if !clients.is_empty() {
            tokio::time::sleep(self.shared.limits.lame_duck_grace).await;
        }
        for c in &clients {
            c.close(client::CloseReason::ServerShutdown);
        }
        drop(clients);
        let wait = async {
            loop {
                let notified = self.shared.drained.notified();
                if self.shared.clients().is_empty() {
                    break;
                }
                notified.await;
            }
        };
        let deadline = self.shared.limits.write_deadline + Duration::from_secs(1);
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!("embedded bus: some connections did not close in time");
        }
        tracing::info!("embedded bus stopped");
    }
}

impl Drop for Server {
    /// Dropped without [`Server::shutdown`]: stop at once, closing every
    /// connection without the lame-duck grace.
    fn drop(&mut self) {
        self.accept.abort();
        let clients: Vec<Arc<ClientHandle>> = self.shared.clients().values().cloned().collect();
        for c in clients {
            c.close(client::CloseReason::ServerShutdown);
        }
    }
}

fn auth_kind(a: &Auth) -> &'static str {
    match a {
        Auth::None => "none",
        Auth::Users(_) => "users",
        Auth::Operator(_) => "operator",
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.notified() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = shared.stats.connections.load(Ordering::Relaxed) as usize;
        if open >= shared.limits.max_connections {
            shared
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, open, max = shared.limits.max_connections, "connection refused: maximum connections exceeded");
            tokio::spawn(client::refuse(stream, shared.clone()));
            continue;
        }
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(client::serve(stream, peer, id, shared.clone()));
    }
}

impl Shared {
    pub(crate) fn register(&self, c: &Arc<ClientHandle>) {
        self.clients().insert(c.id, c.clone());
    }

    pub(crate) fn unregister(&self, id: u64) {
        let empty = {
            let mut clients = self.clients();
            clients.remove(&id);
            clients.is_empty()
        };
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        if empty {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn is_lame_duck(&self) -> bool {
        self.lame_duck.load(Ordering::SeqCst)
    }

    pub(crate) fn next_sys_seq(&self) -> u64 {
        self.sys_seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}
