//! TLS on the embedded bus: beyond loopback it refuses plain connections
//! unless told otherwise, and a certificate issued by the installation's
//! CA is renewed for new connections while open ones stay up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::Event;
use rm_bus::connect::ConnectSpec;
use rm_bus::pki::rustls;
use rm_bus::pki::rustls::client::danger::ServerCertVerifier;
use rm_bus_server::creds::{Authority, Role};
use rm_bus_server::pki::{Ca, Renewal};
use rm_bus_server::server::{Auth, OperatorAuth, Server, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, BufReader};

fn operator(authority: &Authority) -> Auth {
    Auth::Operator(OperatorAuth {
        operator_jwt: authority.operator_jwt().unwrap(),
        system_account: Some(authority.system_account_public_key()),
        preload: vec![
            authority.account_jwt().unwrap(),
            authority.system_account_jwt().unwrap(),
        ],
        resolver_dir: None,
    })
}

/// A non-loopback address of this machine, if it has one.
fn non_loopback() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

#[tokio::test]
async fn beyond_loopback_the_bus_refuses_to_start_without_tls_unless_allowed() {
    let authority = Authority::generate(rm_bus::clock::system());
    let err = Server::start(ServerConfig::new(non_loopback(), operator(&authority)))
        .await
        .expect_err("plain beyond loopback");
    let e = err.to_string();
    assert!(e.contains("without TLS"), "{e}");
    assert!(e.contains("--bus-allow-plaintext"), "names the flag: {e}");

    let mut allowed = ServerConfig::new(non_loopback(), operator(&authority));
    allowed.allow_plaintext = true;
    Server::start(allowed)
        .await
        .expect("explicitly allowed")
        .shutdown()
        .await;

    let ca = Arc::new(Ca::generate(SystemTime::now()).unwrap());
    let (_renewal, tls) = Renewal::start(ca, vec![], Duration::from_secs(3600), "bus").unwrap();
    let mut with_tls = ServerConfig::new(non_loopback(), operator(&authority));
    with_tls.tls = Some(tls);
    Server::start(with_tls).await.expect("TLS").shutdown().await;

    // loopback stays plain (tests, all-in-one)
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Server::start(ServerConfig::new(loopback, operator(&authority)))
        .await
        .expect("plain on loopback")
        .shutdown()
        .await;
}

/// The certificate a new connection to `port` gets (NATS sends INFO in
/// clear, then the client starts TLS).
async fn presented(port: u16, ca_pem: &str) -> CertificateDer<'static> {
    let mut tcp = BufReader::new(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    let mut info = String::new();
    tcp.read_line(&mut info).await.unwrap();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let config = rm_bus::pki::verify::trusting_ca(ca_pem.as_bytes()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp.into_inner())
        .await
        .expect("verifies against the CA");
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Verifies `leaf` against `ca` as of `at`.
fn verifies(ca: &Ca, leaf: &CertificateDer<'_>, at: SystemTime) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    v.verify_server_cert(
        leaf,
        &[],
        &ServerName::try_from("127.0.0.1").unwrap(),
        &[],
        UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap()),
    )
    .expect("issued by the CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_while_open_ones_stay() {
    let authority = Arc::new(Authority::generate(rm_bus::clock::system()));
    let ca = Arc::new(Ca::generate(SystemTime::now()).unwrap());
    // a deliberately short life: renewed two seconds in
    let (renewal, tls) = Renewal::start(ca.clone(), vec![], Duration::from_secs(3), "bus").unwrap();
    let resolver = renewal.resolver.clone();
    let mut renewed = resolver.subscribe();
    let mut config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), operator(&authority));
    config.tls = Some(tls);
    let server = Server::start(config).await.unwrap();
    let port = server.local_addr().port();

    // an agent's connection, before renewal
    let creds = authority
        .mint_new_user("cp", Role::Controlplane.permissions())
        .unwrap();
    let mut spec = ConnectSpec::new(server.url(), creds, &Role::Controlplane);
    spec.tls_ca_pem = Some(ca.cert_pem().to_owned());
    let (client, mut events) = rm_bus::connect::connect(&spec).await.unwrap();
    client.flush().await.unwrap();
    let id_before = client.server_info().client_id;
    let first = presented(port, ca.cert_pem()).await;
    let first_at = SystemTime::now();
    assert_eq!(&first, resolver.leaf().cert_der());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(renewal.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), renewed.changed())
        .await
        .expect("renewed in time")
        .unwrap();
    let leaf = resolver.leaf();

    // a new connection sees the new certificate, from the same CA
    let second = presented(port, ca.cert_pem()).await;
    assert_ne!(first, second, "a new certificate");
    assert_eq!(&second, leaf.cert_der());
    verifies(&ca, &first, first_at);
    verifies(&ca, &second, SystemTime::now());

    // the connection from before is the same one and still works
    tokio::time::timeout(Duration::from_secs(10), client.flush())
        .await
        .expect("a PING/PONG round trip over the old connection")
        .unwrap();
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    assert_eq!(client.server_info().client_id, id_before, "not reconnected");
    let mut connects = 0;
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, Event::Disconnected), "no disconnect: {e}");
        connects += usize::from(matches!(e, Event::Connected));
    }
    assert!(connects <= 1, "only the first connect, no reconnect");
    let _ = stop.send(());
    task.await.unwrap();
    server.shutdown().await;
}
