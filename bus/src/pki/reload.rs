//! Certificates swapped without restarting a listener: [`Reloading`] is a
//! rustls `ResolvesServerCert` whose certificate is replaced for new
//! handshakes (open connections keep theirs), and [`Renewal`] issues a new
//! one from the CA two thirds into the current one's life.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rustls_pki_types::PrivateKeyDer;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::ca::{Ca, Leaf};

/// The certificate new handshakes get.
#[derive(Debug)]
pub struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
    leaf: watch::Sender<Leaf>,
}

fn certified(leaf: &Leaf) -> Result<Arc<CertifiedKey>> {
    let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        leaf.key_pkcs8.clone().into(),
    ))
    .context("the certificate key is not usable for TLS")?;
    Ok(Arc::new(CertifiedKey::new(leaf.chain.clone(), key)))
}

impl Reloading {
    pub fn new(leaf: Leaf) -> Result<Arc<Self>> {
        let current = RwLock::new(certified(&leaf)?);
        let (tx, _) = watch::channel(leaf);
        Ok(Arc::new(Self { current, leaf: tx }))
    }

    /// Serves `leaf` to every handshake from now on.
    pub fn set(&self, leaf: Leaf) -> Result<()> {
        let key = certified(&leaf)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        self.leaf.send_replace(leaf);
        Ok(())
    }

    /// The certificate being served now.
    pub fn leaf(&self) -> Leaf {
        self.leaf.borrow().clone()
    }

    /// Changes whenever the certificate is replaced.
    pub fn subscribe(&self) -> watch::Receiver<Leaf> {
        self.leaf.subscribe()
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3) serving
    /// whatever this resolver holds.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Keeps one listener's certificate fresh.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub ca: Arc<Ca>,
    /// Names in the certificate (localhost and loopback are always added).
    pub names: Vec<String>,
    /// Life of each certificate issued.
    pub life: Duration,
    pub resolver: Arc<Reloading>,
    /// `bus` or `web`, for the log.
    pub what: &'static str,
}

/// The longest single wait: the wall clock is checked at least this often
/// (a suspended machine's monotonic timers lag it).
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl Renewal {
    /// Issues the first certificate and returns the renewal plus the
    /// server configuration to listen with.
    pub fn start(
        ca: Arc<Ca>,
        names: Vec<String>,
        life: Duration,
        what: &'static str,
    ) -> Result<(Self, Arc<rustls::ServerConfig>)> {
        let leaf = ca
            .issue(&names, life, SystemTime::now())
            .with_context(|| format!("issuing the {what} certificate"))?;
        let resolver = Reloading::new(leaf)?;
        let config = resolver.server_config()?;
        Ok((
            Self {
                ca,
                names,
                life,
                resolver,
                what,
            },
            config,
        ))
    }

    /// Renews the certificate two thirds into its life until `stop`
    /// completes. A failed renewal is logged and retried.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let retry = (self.life / 10).clamp(Duration::from_millis(100), MAX_WAIT);
        let mut due = self.resolver.leaf().renew_at;
        loop {
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(MAX_WAIT);
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            if SystemTime::now() < due {
                continue;
            }
            match self.renew() {
                Ok(leaf) => due = leaf.renew_at,
                Err(e) => {
                    tracing::error!(what = self.what, error = %format!("{e:#}"), "renewing a certificate failed; retrying");
                    due = SystemTime::now() + retry;
                }
            }
        }
    }

    /// Issues and installs a new certificate now.
    pub fn renew(&self) -> Result<Leaf> {
        let leaf = self.ca.issue(&self.names, self.life, SystemTime::now())?;
        self.resolver.set(leaf.clone())?;
        tracing::info!(
            what = self.what,
            not_after = %jiff::Timestamp::try_from(leaf.not_after).map_or_else(|_| "?".to_owned(), |t| t.to_string()),
            "renewed the certificate for new connections"
        );
        Ok(leaf)
    }
}
