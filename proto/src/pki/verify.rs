//! Client-side trust: a rustls client configuration that accepts only
//! certificates issued by one CA ([`trusting_ca`], how agents check the
//! bus) or a server whose leaf or CA has a pinned SHA-256 fingerprint
//! ([`pinned`], the enrollment call). Refusals say why in words an
//! operator can act on, not just `UnknownIssuer`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::fingerprint_of;

fn refuse(why: String) -> rustls::Error {
    rustls::Error::General(why)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts certificates chaining to one CA, for the right name; refusals
/// name the reason.
#[derive(Debug)]
struct OnlyCa {
    inner: Arc<WebPkiServerVerifier>,
    ca_fingerprint: String,
    provider: Arc<CryptoProvider>,
}

fn webpki_for(
    ca: &CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .context("the CA certificate is not usable as a trust anchor")?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("building the certificate verifier")
}

/// Explains a webpki refusal against the CA with fingerprint `ca`.
fn explain(e: rustls::Error, ca: &str, name: &ServerName<'_>) -> rustls::Error {
    let name = name.to_str();
    match e {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => refuse(format!(
            "the server's certificate is not issued by this installation's CA ({ca})"
        )),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => refuse(format!(
            "the server's certificate (from this installation's CA) is not valid for the name {name}: add it to the server's --tls-name"
        )),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => refuse("the server's certificate has expired".to_owned()),
        other => other,
    }
}

impl ServerCertVerifier for OnlyCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| explain(e, &self.ca_fingerprint, server_name))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The first certificate of a PEM text.
pub fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>> {
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(c) => c.context("parsing the CA certificate PEM"),
        None => bail!("no certificate in the CA PEM"),
    }
}

/// A client configuration that trusts only the CA in `ca_pem` (and checks
/// the server name).
pub fn trusting_ca(ca_pem: &[u8]) -> Result<rustls::ClientConfig> {
    let ca = first_cert(ca_pem)?;
    let provider = provider();
    let verifier = OnlyCa {
        inner: webpki_for(&ca, provider.clone())?,
        ca_fingerprint: fingerprint_of(&ca),
        provider: provider.clone(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts a server whose leaf certificate has the pinned fingerprint (a
/// self-signed or operator-provided certificate), or whose chain carries a
/// CA with that fingerprint that issued the leaf for this name.
/// Handshake signatures are verified either way.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let leaf: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if leaf == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let pin = format!("sha256:{}", data_encoding::HEXLOWER.encode(&self.pin));
        let Some(ca) = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref())) == self.pin)
        else {
            return Err(refuse(format!(
                "neither the server's certificate ({}) nor a CA it sent has the pinned fingerprint {pin}",
                fingerprint_of(end_entity)
            )));
        };
        let ca = ca.clone().into_owned();
        let verifier = webpki_for(&ca, self.provider.clone())
            .map_err(|e| refuse(format!("the pinned CA is unusable: {e:#}")))?;
        verifier
            .verify_server_cert(end_entity, &[], server_name, ocsp, now)
            .map_err(|e| explain(e, &pin, server_name))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration for the pinned first contact (see [`Pinned`]).
pub fn pinned(pin: [u8; 32]) -> Result<rustls::ClientConfig> {
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
            .with_no_client_auth(),
    )
}
