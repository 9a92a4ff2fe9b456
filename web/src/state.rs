//! What handlers share: the store (read everything, write only the web
//! role's tables), the bus, the clock, auth settings and the setup code.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use rm_bus::clock::SharedClock;
use rm_store::Store;

use crate::auth::AuthSettings;
use crate::auth::setup::SetupCode;

/// Everything a handler may need.
pub struct Shared {
    pub store: Store,
    /// The bus connection operators' requests go out on (and their
    /// replies come back on), with the web role's credentials.
    pub bus: async_nats::Client,
    /// The bus connection live events arrive on (every job's progress and
    /// log lines, every `rm.evt.*`, heartbeats while a `vitals` client is
    /// connected): apart from [`Shared::bus`], so a request's reply never
    /// waits behind the fleet's events in one TCP stream (at 100,000
    /// agents the control plane's single connection held requests for
    /// seconds behind its heartbeats, stop 52). The same connection as
    /// `bus` where one is enough (tests, [`AppState::with_defaults`]).
    pub live_bus: async_nats::Client,
    /// How long to wait for the owning role's answer.
    pub svc_timeout: Duration,
    pub clock: SharedClock,
    pub auth: AuthSettings,
    /// The first-run setup code, while no account exists.
    pub setup: SetupCode,
    /// Live events for SSE clients.
    pub events: crate::events::Hub,
    /// HTTP request durations.
    pub http: crate::metrics::Http,
    /// Directory listings of snapshots (the restore wizard's cache).
    pub listings: crate::ui::listing::Listings,
    /// Where the agent binaries offered for download are.
    pub downloads: crate::downloads::Downloads,
    /// The recovery kit's master key and whether a kit was exported.
    pub recovery: crate::ui::settings::cpbackup::Recovery,
    /// Sessions' and API tokens' last-use marks, written off the request path.
    pub touches: crate::auth::touch::Touches,
}

/// Cheap to clone; derefs to [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// A state with default settings and the real clock (tests, embedding).
    pub fn with_defaults(store: Store, bus: async_nats::Client) -> Self {
        Self::new(Shared {
            store,
            live_bus: bus.clone(),
            bus,
            svc_timeout: Duration::from_secs(30),
            clock: rm_bus::clock::system(),
            auth: AuthSettings::default(),
            setup: SetupCode::default(),
            events: crate::events::Hub::default(),
            http: crate::metrics::Http::default(),
            listings: Default::default(),
            downloads: Default::default(),
            recovery: Default::default(),
            touches: Default::default(),
        })
    }

    /// The shared part itself.
    pub fn shared(&self) -> Arc<Shared> {
        self.0.clone()
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
