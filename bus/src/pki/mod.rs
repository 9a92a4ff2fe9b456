//! The installation's private PKI as the server roles run it: a long-lived
//! certificate authority created at first start (`<data-dir>/ca/`), and
//! short-lived bus and web certificates issued from it and renewed in place.
//! The client side that trusts only that authority is `rm_bus::pki`,
//! re-exported here.
//!
//! - [`ca`]: the authority's files, its fingerprint, issuing leaves.
//! - [`expiry`]: when an operator-provided certificate expires, and the
//!   start-up warning when that is near.
//! - [`reload`]: a rustls certificate resolver whose certificate is swapped
//!   for new handshakes, and the renewal task.

pub mod ca;
pub mod expiry;
pub mod reload;

pub use ca::{Ca, Leaf};
pub use reload::{Reloading, Renewal};
pub use rm_bus::pki::{fingerprint_of, rustls, verify};

#[cfg(test)]
mod verify_tests {
    //! `rm_bus::pki::verify` against certificates this crate's CA issues.
    use std::time::{Duration, SystemTime};

    use std::sync::Arc;

    use rm_bus::pki::rustls;
    use rm_bus::pki::rustls::pki_types::ServerName;
    use rm_bus::pki::verify::{pinned, trusting_ca};
    use sha2::{Digest, Sha256};

    use crate::pki::{Ca, Reloading};

    /// One TLS handshake of `client` against a server holding `leaf`;
    /// the client's error text, if refused.
    async fn handshake(
        client: rustls::ClientConfig,
        server: Arc<rustls::ServerConfig>,
        name: &str,
    ) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let srv = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let r = connector
            .connect(name, a)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = srv.await;
        r
    }

    fn server_for(ca: &Ca, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let leaf = ca
            .issue(&names, Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        Reloading::new(leaf).unwrap().server_config().unwrap()
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_refuses_another_cas_server_and_says_why() {
        let ours = Ca::generate(SystemTime::now()).unwrap();
        let theirs = Ca::generate(SystemTime::now()).unwrap();
        let client = || trusting_ca(ours.cert_pem().as_bytes()).unwrap();
        handshake(client(), server_for(&ours, &["bus.example"]), "bus.example")
            .await
            .unwrap();
        handshake(client(), server_for(&ours, &[]), "127.0.0.1")
            .await
            .unwrap();
        let e = handshake(
            client(),
            server_for(&theirs, &["bus.example"]),
            "bus.example",
        )
        .await
        .unwrap_err();
        assert!(e.contains("not issued by this installation's CA"), "{e}");
        assert!(e.contains(&ours.fingerprint()), "{e}");
        let e = handshake(
            client(),
            server_for(&ours, &["bus.example"]),
            "other.example",
        )
        .await
        .unwrap_err();
        assert!(e.contains("not valid for the name other.example"), "{e}");
    }

    #[tokio::test]
    async fn the_enrollment_pin_accepts_the_ca_or_the_leaf_fingerprint() {
        let ca = Ca::generate(SystemTime::now()).unwrap();
        let leaf = ca
            .issue(&[], Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        let leaf_pin: [u8; 32] = Sha256::digest(leaf.cert_der().as_ref()).into();
        let ca_pin: [u8; 32] = Sha256::digest(ca.cert_der().as_ref()).into();
        let server = Reloading::new(leaf).unwrap().server_config().unwrap();
        handshake(pinned(ca_pin).unwrap(), server.clone(), "127.0.0.1")
            .await
            .unwrap();
        handshake(pinned(leaf_pin).unwrap(), server.clone(), "127.0.0.1")
            .await
            .unwrap();
        let e = handshake(pinned([7; 32]).unwrap(), server.clone(), "127.0.0.1")
            .await
            .unwrap_err();
        assert!(
            e.contains("nor a CA it sent has the pinned fingerprint"),
            "{e}"
        );
        // the CA pin still checks the name
        let e = handshake(pinned(ca_pin).unwrap(), server, "cp.example")
            .await
            .unwrap_err();
        assert!(e.contains("not valid for the name"), "{e}");
    }
}
