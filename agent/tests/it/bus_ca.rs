//! The agent verifies a `tls://` bus against the CA it got at enrollment:
//! a bus whose certificate comes from another CA is refused with the
//! reason, the installation's own bus is accepted (a real agent says hello
//! over it), and an agent with no CA stored keeps trusting the machine's
//! roots as before.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use rm_agent::state::{BUS_CA, StateDir};
use rm_bus::HostId;
use rm_bus::connect::ConnectSpec;
use rm_bus::creds::Role;
use rm_bus::msg::{Hello, HelloReply, PROTOCOL_VERSION, decode, encode};
use rm_bus::subject;
use rm_bus_server::pki::Ca;
use rm_testkit::{BusKind, BusOptions, TestBus};

use crate::support::*;

/// A bus serving a certificate issued by `ca` for 127.0.0.1.
async fn bus_from(ca: &Ca) -> TestBus {
    let leaf = ca
        .issue(&[], Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    TestBus::start_with(
        BusKind::from_env(),
        BusOptions {
            tls_pem: Some((leaf.chain_pem(), leaf.key_pem())),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// An agent state enrolled on `bus` (its JWT minted there) with `ca_pem`
/// stored as the bus CA.
fn enrolled(dir: &std::path::Path, bus: &TestBus, ca_pem: Option<&str>) -> (StateDir, HostId) {
    let host = HostId::parse("ca-1").unwrap();
    let url = format!("tls://127.0.0.1:{}", bus.port());
    let state = enrolled_state(dir, &host, &url, bus.authority());
    if let Some(pem) = ca_pem {
        std::fs::write(state.path(BUS_CA), pem).unwrap();
    }
    (state, host)
}

/// Connects as the agent does (its CA, its credentials), once.
async fn agent_connect(state: &StateDir, host: &HostId) -> anyhow::Result<async_nats::Client> {
    let urls = state.identity()?.bus_urls;
    let mut spec = ConnectSpec::new(urls[0].clone(), state.creds()?, &Role::Agent(host.clone()));
    spec.tls_ca_pem = rm_agent::session::bus_ca(state, &urls)?;
    Ok(rm_bus::connect::connect(&spec).await?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_bus_from_another_ca_and_accepts_its_installations_bus() {
    let ours = Ca::generate(SystemTime::now()).unwrap();
    let theirs = Ca::generate(SystemTime::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // an impostor bus: its certificate is fine, but not from our CA
    let impostor = bus_from(&theirs).await;
    let (state, host) = enrolled(&dir.path().join("a"), &impostor, Some(ours.cert_pem()));
    let e = format!("{:#}", agent_connect(&state, &host).await.unwrap_err());
    assert!(e.contains("not issued by this installation's CA"), "{e}");
    assert!(
        e.contains(&ours.fingerprint()),
        "names the CA it expected: {e}"
    );

    // the installation's bus: a real agent connects and says hello
    let bus = bus_from(&ours).await;
    let (state, host) = enrolled(&dir.path().join("b"), &bus, Some(ours.cert_pem()));
    agent_connect(&state, &host)
        .await
        .expect("the installation's bus");
    let mut spec = bus.spec(
        &Role::Controlplane,
        bus.creds_for(&Role::Controlplane).unwrap(),
    );
    spec.urls = vec![format!("tls://127.0.0.1:{}", bus.port())];
    spec.tls_ca_pem = Some(ours.cert_pem().to_owned());
    let (cp, _) = rm_bus::connect::connect(&spec).await.unwrap();
    let mut hellos = cp.subscribe(subject::agent_hello(&host)).await.unwrap();
    cp.flush().await.unwrap();
    let mut settings = rm_agent::Settings::new(state.root().to_path_buf());
    settings.hostname = "ca-1".into();
    settings.timings = fast_agent_timings();
    let mut agent = Agent::start(settings).await.unwrap();
    let m = tokio::time::timeout(WAIT, hellos.next())
        .await
        .expect("hello over the verified bus")
        .unwrap();
    let hello: Hello = decode("hello", &m.payload).unwrap();
    assert_eq!(hello.hostname, "ca-1");
    let reply = HelloReply {
        v: PROTOCOL_VERSION,
        config: None,
        server_time_ms: 0,
    };
    cp.publish(m.reply.unwrap(), encode(&reply)).await.unwrap();
    cp.flush().await.unwrap();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolled_before_the_ca_keeps_the_machines_roots() {
    let ca = Ca::generate(SystemTime::now()).unwrap();
    let bus = bus_from(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (state, host) = enrolled(dir.path(), &bus, None);
    let urls = state.identity().unwrap().bus_urls;
    assert_eq!(rm_agent::session::bus_ca(&state, &urls).unwrap(), None);
    // as before: the private CA is not among the machine's roots
    let e = format!("{:#}", agent_connect(&state, &host).await.unwrap_err());
    assert!(!e.contains("installation's CA"), "{e}");
}
