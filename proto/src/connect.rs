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
    /// Most connection events kept for a caller that is behind
    /// (default [`EVENTS_CAPACITY`]).
    pub events_capacity: usize,
    /// Trust only this CA (PEM) for `tls://` servers (and servers that
    /// require TLS) instead of the system's roots.
    pub tls_ca_pem: Option<String>,
    /// Pause between reconnect attempts growing to this, jittered
    /// ([`reconnect_delay`]); `None`: async-nats' default (at most 4 s,
    /// no jitter), right for the few server roles. A fleet's agents need
    /// it: after a bus node restarts, thousands retrying every 4 s in step
    /// keep the node too busy to accept them.
    pub reconnect_max: Option<Duration>,
    /// Messages each subscription holds while its reader is behind; when
    /// full, the client drops what comes next (a `slow consumer` event).
    /// `None`: async-nats' default (65,536). The control plane's heartbeat
    /// subscription needs more at fleet scale: a bus node that stalls for
    /// ten seconds hands over its backlog at once.
    pub subscription_capacity: Option<usize>,
    /// How often the client pings the server when it has heard nothing
    /// from it (a PING, answered by a PONG, is how a silently dead
    /// connection is found: after three unanswered intervals). `None`:
    /// async-nats' default (60 s). An agent that only publishes hears
    /// nothing else, so every agent pings at this period: at fleet scale
    /// a bus node reads a PING and writes a PONG for each.
    pub ping_interval: Option<Duration>,
    /// Try the URLs in their order, the first first, instead of in the
    /// shuffled order async-nats uses by default: two connections of one
    /// process given the same list then land on the same node.
    pub retain_order: bool,
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
            events_capacity: EVENTS_CAPACITY,
            tls_ca_pem: None,
            reconnect_max: None,
            subscription_capacity: None,
            ping_interval: None,
            retain_order: false,
        }
    }
}

/// Connection events the caller may want (server errors such as
/// permission violations arrive only here; they do not fail the call).
/// Bounded: a caller that never reads them holds at most
/// [`ConnectSpec::events_capacity`]; newer events are dropped (they are logged anyway).
pub type Events = mpsc::Receiver<Event>;

/// Most connection events [`connect`] keeps for a caller that is behind,
/// unless [`ConnectSpec::events_capacity`] says otherwise.
pub const EVENTS_CAPACITY: usize = 64;

/// The async-nats options for `spec`, forwarding events to `events`.
pub fn options(
    spec: &ConnectSpec,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<ConnectOptions> {
    options_with(spec, move |event| {
        if let Some(tx) = &events {
            let _ = tx.send(event);
        }
    })
}

/// The async-nats options for `spec`, handing every event to `sink` after
/// logging it.
fn options_with(
    spec: &ConnectSpec,
    sink: impl Fn(Event) + Clone + Send + Sync + 'static,
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
        let sink = sink.clone();
        async move {
            match &event {
                Event::ServerError(_) | Event::ClientError(_) => {
                    tracing::warn!(%event, "bus connection error")
                }
                _ => tracing::debug!(%event, "bus connection event"),
            }
            sink(event);
        }
    });
    if let Some(max) = spec.reconnect_max {
        opts = opts.reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max));
    }
    if let Some(n) = spec.subscription_capacity {
        opts = opts.subscription_capacity(n.max(1));
    }
    if let Some(d) = spec.ping_interval {
        // a zero period would panic in the client's timer
        opts = opts.ping_interval(d.max(Duration::from_millis(1)));
    }
    if spec.retry_on_initial_connect {
        opts = opts.retry_on_initial_connect();
    }
    if spec.retain_order {
        opts = opts.retain_servers_order();
    }
    if let Some(pem) = &spec.tls_ca_pem {
        opts = opts.tls_client_config(crate::pki::verify::trusting_ca(pem.as_bytes())?);
    }
    Ok(opts)
}

/// The name of the bus node `client` is connected to (the `server_name`
/// of its latest INFO), if it named itself: what a heartbeat reports as
/// `bus_node`.
pub fn node_name(client: &async_nats::Client) -> Option<String> {
    client
        .try_server_info()
        .map(|info| info.server_name)
        .filter(|name| !name.is_empty())
}

/// The pause before reconnect attempt `attempts` (0 = the first, at
/// once): 250 ms doubling per attempt up to `max`, less up to half of it
/// at random, so a fleet that lost its node together does not come back
/// in step.
pub fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    use rand::Rng;
    if attempts == 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(attempts.min(16)).unwrap_or(16);
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << shift.saturating_sub(1))
        .min(max);
    base.mul_f64(1.0 - 0.5 * rand::thread_rng().r#gen::<f64>())
}

/// Hands an event to a bounded receiver, dropping it if the receiver is
/// full or gone: connection events never pile up unread.
fn forward(tx: &mpsc::Sender<Event>, event: Event) {
    if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
        tracing::debug!(%event, "bus connection event dropped: nobody is reading them");
    }
}

/// Connects and returns the client plus a bounded stream of its
/// connection events (drop it if you do not need them).
pub async fn connect(spec: &ConnectSpec) -> Result<(Client, Events)> {
    let (tx, rx) = mpsc::channel(spec.events_capacity.max(1));
    let opts = options_with(spec, move |event| forward(&tx, event))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(30);
        assert_eq!(reconnect_delay(0, max), Duration::ZERO);
        for _ in 0..50 {
            let d = reconnect_delay(1, max);
            assert!(
                d >= Duration::from_millis(125) && d <= Duration::from_millis(250),
                "{d:?}"
            );
            let d = reconnect_delay(40, max);
            assert!(d >= Duration::from_secs(15) && d <= max, "{d:?}");
        }
        let samples: std::collections::HashSet<_> =
            (0..50).map(|_| reconnect_delay(5, max)).collect();
        assert!(samples.len() > 10);
    }

    /// A server that completes the handshake, then never answers again:
    /// sends `()` on `pings` for every PING it reads after the handshake.
    async fn silent_server(listener: tokio::net::TcpListener, pings: mpsc::UnboundedSender<()>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let (r, mut w) = sock.into_split();
        let info = "INFO {\"server_id\":\"silent\",\"version\":\"2.10.0\",\"proto\":1,\"max_payload\":1048576,\"nonce\":\"bm9uY2U\",\"headers\":true}\r\n";
        if w.write_all(info.as_bytes()).await.is_err() {
            return;
        }
        let mut lines = BufReader::new(r).lines();
        let mut handshake_done = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("PING") {
                if handshake_done {
                    let _ = pings.send(());
                } else {
                    // the handshake's PING: answered, then silence
                    handshake_done = true;
                    if w.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn the_ping_interval_sets_how_often_a_client_pings_and_how_soon_a_silent_server_is_dropped()
     {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let server = tokio::spawn(silent_server(listener, ptx));
        let kp = nkeys::KeyPair::new_user();
        let creds = UserCreds::new("a.b.c".into(), kp.seed().unwrap());
        let mut spec = ConnectSpec::new(url, creds, &Role::Web);
        spec.ping_interval = Some(Duration::from_millis(300));
        let (etx, mut erx) = mpsc::unbounded_channel();
        let urls: Vec<async_nats::ServerAddr> = vec![spec.urls[0].parse().unwrap()];
        let client = options(&spec, Some(etx))
            .unwrap()
            .max_reconnects(Some(1))
            .connect(urls.as_slice())
            .await
            .unwrap();
        // three unanswered intervals (about 1 s here; 2–3 minutes at the
        // default): the client drops the connection
        let disconnected = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = erx.recv().await {
                if matches!(e, Event::Disconnected) {
                    return;
                }
            }
        })
        .await;
        assert!(
            disconnected.is_ok(),
            "no disconnect from a server that stopped answering pings"
        );
        // the default (60 s) would have sent none in this time
        let mut seen = 0;
        while prx.try_recv().is_ok() {
            seen += 1;
        }
        assert!(seen >= 2, "pings after the handshake: {seen}");
        drop(client);
        server.abort();
    }

    #[test]
    fn unread_connection_events_are_bounded_not_piled_up() {
        let (tx, mut rx) = mpsc::channel(EVENTS_CAPACITY);
        for _ in 0..3 * EVENTS_CAPACITY {
            forward(&tx, Event::Disconnected);
        }
        assert_eq!(rx.len(), EVENTS_CAPACITY);
        // the oldest are kept; reading makes room again
        assert!(matches!(rx.try_recv(), Ok(Event::Disconnected)));
        forward(&tx, Event::Connected);
        assert_eq!(rx.len(), EVENTS_CAPACITY);
        // a dropped receiver costs nothing
        drop(rx);
        forward(&tx, Event::Connected);
    }
}
