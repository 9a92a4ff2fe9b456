//! The web service's TLS identity: a self-signed certificate created at
//! first start (`<dir>/web-cert.pem`, `<dir>/web-key.pem`, key 0600) whose
//! SHA-256 fingerprint goes into every enrollment command, so the agent's
//! first HTTPS call is pinned rather than trusted on first use.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A certificate, its key, and its fingerprint.
pub struct Identity {
    pub server_config: Arc<tokio_rustls::rustls::ServerConfig>,
    /// `sha256:<64 hex>` of the DER certificate.
    pub fingerprint: String,
}

/// Loads the identity from `dir`, creating a self-signed one for `names`
/// (DNS names or IP addresses) at first start.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Identity> {
    let cert_path = dir.join("web-cert.pem");
    let key_path = dir.join("web-key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir)?;
        let mut all = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        all.extend(names.iter().cloned());
        all.sort();
        all.dedup();
        let cert =
            rcgen::generate_simple_self_signed(all).context("generating the web certificate")?;
        rm_bus::creds::authority::write_private(
            &key_path,
            cert.signing_key.serialize_pem().as_bytes(),
        )?;
        std::fs::write(&cert_path, cert.cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(cert = %cert_path.display(), "created the web service's certificate");
    }
    let cert_pem =
        std::fs::read(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem =
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let server_config = rm_bus::server::tls::server_config_from_pem(&cert_pem, &key_pem)?;
    let der = rustls_pki_der(&cert_pem)?;
    Ok(Identity {
        server_config,
        fingerprint: format!(
            "sha256:{}",
            data_encoding::HEXLOWER.encode(&Sha256::digest(&der))
        ),
    })
}

fn rustls_pki_der(pem: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(pem).context("certificate is not PEM text")?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    data_encoding::BASE64
        .decode(body.trim().as_bytes())
        .context("certificate PEM is not base64")
}
