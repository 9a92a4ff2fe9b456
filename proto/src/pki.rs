//! Client-side trust in the installation's private PKI: configurations that
//! trust exactly one CA (or one pinned fingerprint) and say why a server is
//! refused. The CA itself, issuing and renewing certificates, is the server
//! roles' (`rm_bus_server::pki`).
//!
//! - [`verify`]: the client configurations and PEM helpers.
//! - [`fingerprint_of`]: the `sha256:<hex>` fingerprint operators compare.

use sha2::{Digest, Sha256};

pub mod verify;

/// The rustls this crate builds configurations with.
pub use tokio_rustls::rustls;

/// `sha256:<64 hex>` of a DER certificate.
pub fn fingerprint_of(der: &[u8]) -> String {
    format!(
        "sha256:{}",
        data_encoding::HEXLOWER.encode(&Sha256::digest(der))
    )
}
