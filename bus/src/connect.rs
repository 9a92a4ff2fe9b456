//! Connecting an async-nats client with restic-manager credentials.
//!
//! Every connection is a user nkey plus a user JWT (see [`crate::creds`]);
//! the client signs the server's nonce with its seed. The inbox prefix must
//! match the role's subscribe permission.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{AuthError, Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use crate::creds::{Role, UserCreds};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    /// One or more `nats://` / `tls://` URLs.
    pub urls: Vec<String>,
    pub creds: UserCreds,
    pub inbox_prefix: String,
    pub name: String,
    /// Connection attempt timeout.
    pub connect_timeout: Duration,
    /// Keep retrying the first connect instead of failing.
    pub retry_on_initial_connect: bool,
}

impl ConnectSpec {
    pub fn new(url: impl Into<String>, creds: UserCreds, role: &Role) -> Self {
        Self {
            urls: vec![url.into()],
            creds,
            inbox_prefix: role.inbox_prefix(),
            name: role.name(),
            connect_timeout: Duration::from_secs(5),
            retry_on_initial_connect: false,
        }
    }
}

/// Connection events the caller may want (server errors such as
/// permission violations arrive only here; they do not fail the call).
pub type Events = mpsc::UnboundedReceiver<Event>;

/// The async-nats options for `spec`, forwarding events to `events`.
pub fn options(
    spec: &ConnectSpec,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<ConnectOptions> {
    let kp = Arc::new(spec.creds.key_pair()?);
    let mut opts = ConnectOptions::with_jwt(spec.creds.jwt.clone(), move |nonce| {
        let kp = kp.clone();
        async move { kp.sign(&nonce).map_err(AuthError::new) }
    })
    .name(spec.name.clone())
    .custom_inbox_prefix(spec.inbox_prefix.clone())
    .connection_timeout(spec.connect_timeout)
    .event_callback(move |event| {
        let events = events.clone();
        async move {
            tracing::debug!(%event, "bus connection event");
            if let Some(tx) = &events {
                let _ = tx.send(event);
            }
        }
    });
    if spec.retry_on_initial_connect {
        opts = opts.retry_on_initial_connect();
    }
    Ok(opts)
}

/// Connects and returns the client plus a stream of its connection events.
pub async fn connect(spec: &ConnectSpec) -> Result<(Client, Events)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = options(spec, Some(tx))?;
    let urls: Vec<async_nats::ServerAddr> = spec
        .urls
        .iter()
        .map(|u| u.parse().with_context(|| format!("bad bus URL {u:?}")))
        .collect::<Result<_>>()?;
    let client = opts
        .connect(urls.as_slice())
        .await
        .with_context(|| format!("connecting to the bus at {}", spec.urls.join(", ")))?;
    Ok((client, rx))
}
