//! `serve` beyond loopback: the bus serves TLS with a certificate from the
//! installation's CA (created at first start), the local agent gets that
//! CA at enrollment and verifies the bus with it, a client trusting
//! another CA is refused, and the certificate is renewed for new
//! connections while the agent stays online.
#![cfg(unix)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rm_bus::pki::rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::serve::{free_port, terminate, wait_running};

/// The INFO line and, if the handshake with `client` succeeds, the
/// certificate a new connection to `port` gets.
async fn handshake(
    port: u16,
    client: rm_bus::pki::rustls::ClientConfig,
) -> (String, Result<CertificateDer<'static>, String>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tcp = BufReader::new(tcp);
    let mut info = String::new();
    tcp.read_line(&mut info).await.unwrap();
    let r = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp.into_inner())
        .await
        .map(|tls| {
            tls.get_ref().1.peer_certificates().unwrap()[0]
                .clone()
                .into_owned()
        })
        .map_err(|e| e.to_string());
    (info, r)
}

async fn agent_online(dir: &std::path::Path) -> bool {
    let Ok(db) = rm_store::Store::open(&dir.join("restic-manager.db")).await else {
        return false;
    };
    let Ok(mut c) = db.read().await else {
        return false;
    };
    rm_store::hosts::list(&mut c)
        .await
        .unwrap_or_default()
        .iter()
        .any(|h| h.name == "self-1" && h.status == "online")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_beyond_loopback_serves_the_bus_over_tls_from_its_ca_which_the_agent_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        // beyond loopback: the behaviour under test (operator auth, TLS)
        .args(["--bus-listen", &format!("0.0.0.0:{port}")])
        .args(["--web-listen", "127.0.0.1:0", "--heartbeat-secs", "1"])
        .args(["--local-agent", "--local-agent-name", "self-1"])
        // a deliberately short certificate life: renewed 4 s in
        .args(["--tls-life-secs", "6"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    wait_running(&mut child);
    let ca_pem = std::fs::read_to_string(dir.path().join("ca/ca-cert.pem")).unwrap();
    let ours = || rm_bus::pki::verify::trusting_ca(ca_pem.as_bytes()).unwrap();

    // TLS required, with a certificate from the installation's CA
    let (info, first) = handshake(port, ours()).await;
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let first = first.expect("the bus's certificate is from the installation's CA");
    let other = rm_bus_server::pki::Ca::generate(SystemTime::now()).unwrap();
    let (_, refused) = handshake(
        port,
        rm_bus::pki::verify::trusting_ca(other.cert_pem().as_bytes()).unwrap(),
    )
    .await;
    let e = refused.expect_err("another CA's client refuses it");
    assert!(e.contains("not issued by this installation's CA"), "{e}");

    // the local agent got the CA at enrollment and is online over TLS
    let mut online = false;
    for _ in 0..300 {
        if agent_online(dir.path()).await {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "the local agent came online over the verified bus");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("agent/bus-ca.pem")).unwrap(),
        ca_pem
    );

    // renewal: new connections get a new certificate; the agent stays online
    let mut renewed = None;
    for _ in 0..300 {
        let (_, now) = handshake(port, ours()).await;
        let now = now.expect("still from the CA");
        if now != first {
            renewed = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed.is_some(), "the bus certificate was renewed");
    assert!(agent_online(dir.path()).await, "the agent is still online");
    let status = terminate(&mut child);
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test]
async fn authority_bus_cert_issues_a_nats_server_certificate_from_the_installation_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("bus-cert.pem");
    let key = dir.path().join("bus-key.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["authority", "bus-cert", "--data-dir"])
        .arg(dir.path())
        .args(["--name", "bus.example", "--days", "30", "--cert-out"])
        .arg(&cert)
        .arg("--key-out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // a server with it passes a client that trusts only the installation's CA
    let server = rm_bus_server::server::tls::server_config_from_files(&cert, &key).unwrap();
    let ca_pem = std::fs::read(dir.path().join("ca/ca-cert.pem")).unwrap();
    let client = rm_bus::pki::verify::trusting_ca(&ca_pem).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move {
        tokio_rustls::TlsAcceptor::from(server)
            .accept(b)
            .await
            .map(|_| ())
    });
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("bus.example").unwrap(), a)
        .await
        .expect("the certificate is from the installation's CA, for bus.example");
    // the server's side finished its handshake too (it may see the client
    // go away while sending session tickets)
    let _ = accept.await.unwrap();
    drop(tls);
}

/// `authority bus-cert --renew-if-expiring` as the renewal timer runs it,
/// writing into `dir`, plus `extra` flags; what it said.
fn renew(data: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["authority", "bus-cert", "--data-dir"])
        .arg(data)
        .args(["--renew-if-expiring", "--name", "nats-a.example,10.0.0.1"])
        .arg("--cert-out")
        .arg(dir.join("bus-cert.pem"))
        .arg("--key-out")
        .arg(dir.join("bus-key.pem"))
        .arg("--ca-out")
        .arg(dir.join("ca.pem"))
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn bus_cert_renew_if_expiring_replaces_a_near_expiry_certificate_and_leaves_a_fresh_one_alone() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let tls_dir = tmp.path().join("nats-tls");
    let ca =
        rm_bus_server::pki::Ca::load_or_create(&rm_bus_server::pki::ca::dir_of(&data)).unwrap();
    std::fs::create_dir_all(&tls_dir).unwrap();
    let (cert, key) = (tls_dir.join("bus-cert.pem"), tls_dir.join("bus-key.pem"));
    // issued 70 of its 90 days ago: in the last third of its life
    let day = Duration::from_secs(86_400);
    let old = ca
        .issue(&[], 90 * day, SystemTime::now() - 70 * day)
        .unwrap();
    std::fs::write(&cert, old.chain_pem()).unwrap();
    std::fs::write(&key, old.key_pem()).unwrap();

    let said = renew(&data, &tls_dir, &[]);
    assert!(said.contains("wrote"), "{said}");
    let pem = std::fs::read(&cert).unwrap();
    let der = rm_bus::pki::verify::first_cert(&pem).unwrap();
    let end = rm_bus_server::pki::expiry::not_after(&der).unwrap();
    assert!(
        end > SystemTime::now() + 80 * day,
        "a new 90-day certificate replaced the old one"
    );
    assert_ne!(
        std::fs::read_to_string(&key).unwrap(),
        old.key_pem(),
        "a new key"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(
        std::fs::read_to_string(tls_dir.join("ca.pem")).unwrap(),
        ca.cert_pem(),
        "the CA is written next to it"
    );
    // the new certificate and key are a pair a server loads
    rm_bus_server::server::tls::server_config_from_files(&cert, &key).unwrap();

    // fresh now: a second run (the next day's timer) changes nothing
    let (cert_before, key_before) = (pem, std::fs::read(&key).unwrap());
    let said = renew(&data, &tls_dir, &[]);
    assert!(said.contains("left alone"), "{said}");
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        cert_before,
        "certificate kept"
    );
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "key kept");

    // the timer's way: a key a nats-server in the group can read
    let group_dir = tmp.path().join("group-tls");
    renew(&data, &group_dir, &["--group-readable"]);
    assert_eq!(mode(&group_dir), 0o750);
    assert_eq!(mode(&group_dir.join("bus-key.pem")), 0o640);
    assert_eq!(mode(&group_dir.join("bus-cert.pem")), 0o644);
}
