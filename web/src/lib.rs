//! The web role: operator accounts, sessions and API tokens (the tables
//! it alone writes), the HTML front door and the JSON API, served over
//! HTTPS with HTTP/2. Every change beyond its own tables is a bus request
//! to the owning role carrying the operator's identity.
//!
//! - [`run`] / [`WebConfig`]: the role, like the others.
//! - [`server`]: TLS + HTTP/2 + HTTP/1.1 serving with a connection cap.
//! - [`routes`]: the route table (every route, method and minimum role)
//!   and the router built from it.
//! - [`auth`]: accounts, sessions, tokens, the throttle, CSRF, extractors.
//! - [`pages`]: login, logout, first-run setup and the placeholder home.
//! - [`api`]: the JSON API; [`openapi`]: its document, from the route table;
//!   [`events`]: live events over SSE; [`metrics`]: `/metrics`.
//! - [`layers`]: security headers, limits, timeouts, compression, request ids.
//! - [`state`]: what handlers share.
//! - [`svc`]: service requests to the owning roles, with the operator's identity.
//! - [`tls`]: the certificate (issued by the installation's CA and renewed,
//!   or the operator's) and the fingerprint enrollment pins.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use rm_bus::clock::SharedClock;
use rm_bus::connect::{ConnectSpec, connect};
use rm_store::Store;

pub mod api;
pub mod auth;
pub mod downloads;
mod enroll;
pub mod error;
pub mod events;
mod health;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod routes;
pub mod server;
pub mod state;
pub mod svc;
pub mod tls;
pub mod ui;
pub mod views;

pub use server::launch;
pub use state::AppState;

/// Where the web role listens.
#[derive(Debug)]
pub enum Listen {
    /// Bind this address.
    Addr(SocketAddr),
    /// Serve on a listener bound already (`serve` binds first to learn the
    /// address it prints in enrollment commands).
    Bound(tokio::net::TcpListener),
}

/// How to run the web role.
#[derive(Debug)]
pub struct WebConfig {
    /// The certificate lives in `<data_dir>/web`; the database by default.
    pub data_dir: PathBuf,
    /// The SQLite file (default `<data_dir>/restic-manager.db`).
    pub db_path: Option<PathBuf>,
    /// The bus, with the web role's credentials: the live events'
    /// connection as given, the requests' one the same under the name
    /// `<name>-requests`.
    pub connect: ConnectSpec,
    pub listen: Listen,
    /// Extra DNS names or addresses for the certificate (the listen
    /// address and loopback are always in it).
    pub tls_names: Vec<String>,
    /// The operator's certificate chain and key (PEM) instead of one
    /// issued by the installation's CA.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Life of each certificate issued by the CA (renewed at two thirds).
    pub tls_life: Duration,
    /// How long to wait for an owning role's answer.
    pub svc_timeout: Duration,
    pub auth: auth::AuthSettings,
    pub clock: SharedClock,
    /// Also print the first-run setup code on standard output (the
    /// install command shows it; the log line is always written).
    pub print_setup_code: bool,
    /// Where the agent binaries offered at `/download/agent/` are
    /// (default: see `downloads`).
    pub agent_dir: Option<PathBuf>,
}

impl WebConfig {
    /// Defaults for everything but where to find things.
    pub fn new(data_dir: PathBuf, connect: ConnectSpec, listen: Listen) -> Self {
        Self {
            data_dir,
            db_path: None,
            connect,
            listen,
            tls_names: Vec::new(),
            tls_files: None,
            tls_life: tls::LEAF_LIFE,
            svc_timeout: Duration::from_secs(30),
            auth: auth::AuthSettings::default(),
            clock: rm_bus::clock::system(),
            print_setup_code: false,
            agent_dir: None,
        }
    }
}

/// Runs the web role until `shutdown` completes: opens the database,
/// connects to the bus, prints a one-time setup code while no account
/// exists, and serves HTTPS.
pub async fn run(config: WebConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let db = config
        .db_path
        .clone()
        .unwrap_or_else(|| config.data_dir.join("restic-manager.db"));
    let store = Store::open_shared(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    // Two connections with the role's credentials: live events arrive on
    // one (`web`), operators' requests go out and their replies come back
    // on the other (`web-requests`), so a reply never waits behind the
    // fleet's events in one TCP stream (see `state::Shared::live_bus`).
    // Their connection events are logged by `connect`; a lost connection
    // shows in `/readyz` and `/metrics`.
    let (live_bus, _live_events) = connect(&config.connect).await?;
    let mut requests = config.connect.clone();
    requests.name = format!("{}-requests", config.connect.name);
    requests.subscription_capacity = None;
    let (bus, _events) = connect(&requests).await?;
    let listener = match config.listen {
        Listen::Bound(l) => l,
        Listen::Addr(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the web service to {addr}"))?,
    };
    let source = match &config.tls_files {
        Some((cert, key)) => {
            if let Ok(a) = listener.local_addr() {
                rm_bus_server::pki::expiry::warn_at_start(a, cert);
            }
            tls::Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        }
        None => {
            let mut names = config.tls_names.clone();
            if let Ok(a) = listener.local_addr() {
                names.push(a.ip().to_string());
            }
            tls::Source::Ca {
                data_dir: config.data_dir.clone(),
                names,
                life: config.tls_life,
            }
        }
    };
    let identity = tls::load(&source)?;
    let (renew_stop, renew_stopped) = tokio::sync::oneshot::channel::<()>();
    let renewal = identity.renewal.clone().map(|r| {
        tokio::spawn(r.run(async move {
            let _ = renew_stopped.await;
        }))
    });
    let state = AppState::new(state::Shared {
        store,
        bus,
        live_bus,
        svc_timeout: config.svc_timeout,
        clock: config.clock.clone(),
        auth: config.auth.clone(),
        setup: auth::setup::SetupCode::default(),
        events: events::Hub::default(),
        http: metrics::Http::default(),
        listings: Default::default(),
        downloads: Default::default(),
        recovery: Default::default(),
        touches: Default::default(),
    });
    state.downloads.set_dir(config.agent_dir.clone());
    if rm_store::secrets::MasterKey::text(&config.data_dir)
        .ok()
        .flatten()
        .is_some()
    {
        state.recovery.set_data_dir(config.data_dir.clone());
    }
    if state.setup.offer_if_no_account(&state.store).await? {
        // deliberately a console log line: whoever reads it may claim the install
        tracing::warn!(
            setup_code = %state.setup.code().unwrap_or_default(),
            "no account exists yet: open /setup in a browser and enter this one-time setup code"
        );
        if config.print_setup_code {
            use std::io::Write;
            // a closed stdout must not end the role (println! would panic)
            let _ = writeln!(
                std::io::stdout(),
                "  first admin: open /setup and enter the one-time setup code {}",
                state.setup.code().unwrap_or_default()
            );
        }
    }
    tracing::info!(
        addr = %listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string()),
        fingerprint = %identity.fingerprint,
        "web role serving"
    );
    let sweeper = tokio::spawn(auth::sweep_loop(state.clone()));
    let pump = tokio::spawn(events::pump(state.clone()));
    let app = routes::app(state.clone());
    let hub = state.clone();
    let shutdown = async move {
        shutdown.await;
        // event streams never finish by themselves: end them first
        hub.events.close();
    };
    let result = launch(listener, identity.server_config.clone(), app, shutdown).await;
    sweeper.abort();
    pump.abort();
    state.store.close_shared().await;
    let _ = renew_stop.send(());
    if let Some(r) = renewal {
        let _ = r.await;
    }
    result
}

/// Who the caller is.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MeView {
    pub user_id: String,
    pub name: String,
    /// admin | operator | viewer
    pub role: String,
    /// session | token
    pub via: String,
    /// The session's CSRF token, for `X-CSRF-Token` (sessions only).
    pub csrf: Option<String>,
}

/// `GET /api/v1/me`: who the caller is.
pub(crate) async fn me(p: auth::Principal) -> axum::Json<MeView> {
    axum::Json(MeView {
        user_id: p.user_id,
        name: p.name,
        role: p.role.as_str().to_owned(),
        via: match p.via {
            auth::Via::Session => "session",
            auth::Via::Token => "token",
        }
        .to_owned(),
        csrf: p.csrf,
    })
}
