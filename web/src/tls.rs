//! The web service's TLS identity. By default its certificate is issued
//! by the installation's CA (`<data-dir>/ca`, created at first start) for
//! the configured names plus loopback, lives [`LEAF_LIFE`] and is renewed
//! in place (see `rm_bus_server::pki::reload`); enrollment commands pin the CA's
//! SHA-256 fingerprint, so they stay valid across renewals. An operator's
//! own certificate and key (`--tls-cert`/`--tls-key`) replace all that;
//! then the command pins that certificate's fingerprint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rm_bus_server::pki::{Ca, Renewal, fingerprint_of};

pub use rm_bus_server::pki::ca::LEAF_LIFE;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Issued by the CA in `<data_dir>/ca` for these names, this long.
    Ca {
        data_dir: PathBuf,
        names: Vec<String>,
        life: Duration,
    },
    /// The operator's PEM chain and key.
    Files { cert: PathBuf, key: PathBuf },
}

/// A server configuration, the fingerprint enrollment pins, and the
/// renewal to run (CA-issued certificates only).
pub struct Identity {
    pub server_config: Arc<tokio_rustls::rustls::ServerConfig>,
    /// `sha256:<64 hex>` of the CA (or of the operator's certificate).
    pub fingerprint: String,
    pub renewal: Option<Renewal>,
}

/// Loads the identity, creating the CA at first start.
pub fn load(source: &Source) -> Result<Identity> {
    match source {
        Source::Ca {
            data_dir,
            names,
            life,
        } => {
            let ca = Arc::new(load_ca(data_dir)?);
            let fingerprint = ca.fingerprint();
            let (renewal, server_config) = Renewal::start(ca, names.clone(), *life, "web")?;
            Ok(Identity {
                server_config,
                fingerprint,
                renewal: Some(renewal),
            })
        }
        Source::Files { cert, key } => {
            let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let leaf = rm_bus::pki::verify::first_cert(&pem)
                .with_context(|| format!("{} holds no certificate", cert.display()))?;
            Ok(Identity {
                server_config: rm_bus_server::server::tls::server_config_from_files(cert, key)?,
                fingerprint: fingerprint_of(&leaf),
                renewal: None,
            })
        }
    }
}

/// The identity issued by the CA of `data_dir` for `names`, with the
/// default life.
pub fn for_data_dir(data_dir: &Path, names: &[String]) -> Result<Identity> {
    load(&Source::Ca {
        data_dir: data_dir.to_path_buf(),
        names: names.to_vec(),
        life: LEAF_LIFE,
    })
}

/// The installation's CA in `<data_dir>/ca`, created at first start.
pub fn load_ca(data_dir: &Path) -> Result<Ca> {
    let dir = rm_bus_server::pki::ca::dir_of(data_dir);
    let ca = Ca::load_or_create(&dir)
        .with_context(|| format!("loading the certificate authority in {}", dir.display()))?;
    let old = data_dir.join("web").join("web-cert.pem");
    if old.exists() {
        tracing::info!(
            file = %old.display(),
            "the web certificate is now issued by the installation's CA; this self-signed one is no longer used (enrollment commands printed before pin it and must be issued again)"
        );
    }
    Ok(ca)
}
