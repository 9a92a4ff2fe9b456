//! Behaviour specific to the embedded bus (no nats-server counterpart in
//! the conformance suite): lame-duck shutdown, the connection cap,
//! counters, account updates persisted across restarts, loopback-only
//! without auth, and memory per idle connection.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::Event;
use bytes::Bytes;
use rm_bus_server::creds::{Authority, Permissions};
use rm_bus_server::server::{Auth, OperatorAuth, Server, ServerConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{WAIT, next_within};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn open_server() -> Server {
    Server::start(ServerConfig::new(loopback(), Auth::None))
        .await
        .unwrap()
}

#[tokio::test]
async fn refuses_non_loopback_without_auth() {
    let err = Server::start(ServerConfig::new(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        Auth::None,
    ))
    .await
    .expect_err("no auth on a public address");
    assert!(err.to_string().contains("without authentication"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_lame_duck_then_closes() {
    let server = open_server().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    client.flush().await.unwrap();
    server.shutdown().await;
    let mut saw_ldm = false;
    let mut saw_disconnect = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(saw_ldm && saw_disconnect) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::LameDuckMode)) => saw_ldm = true,
            Ok(Some(Event::Disconnected)) => saw_disconnect = true,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(saw_ldm, "lame-duck INFO seen");
    assert!(saw_disconnect, "then disconnected");
}

#[tokio::test]
async fn connection_cap_refuses_extra_connections() {
    let mut config = ServerConfig::new(loopback(), Auth::None);
    config.limits.max_connections = 2;
    let server = Server::start(config).await.unwrap();
    let a = async_nats::connect(server.url()).await.unwrap();
    let b = async_nats::connect(server.url()).await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut got = Vec::new();
    while let Ok(Ok(Some(l))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        got.push(l);
    }
    assert!(
        got.iter()
            .any(|l| l == "-ERR 'maximum connections exceeded'"),
        "{got:?}"
    );
    let c = server.counters();
    assert_eq!(c.connections, 2);
    assert_eq!(c.refused_connections, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_traffic_and_auth_failures() {
    let user = nkeys::KeyPair::new_user();
    let config = ServerConfig::new(
        loopback(),
        Auth::Users(vec![rm_bus_server::server::StaticUser {
            nkey: user.public_key(),
            permissions: Permissions::default(),
        }]),
    );
    let server = Server::start(config).await.unwrap();
    let c = async_nats::ConnectOptions::with_nkey(user.seed().unwrap())
        .connect(server.url())
        .await
        .unwrap();
    let mut sub = c.subscribe("count.me").await.unwrap();
    c.flush().await.unwrap();
    for _ in 0..3 {
        c.publish("count.me", Bytes::from_static(b"12345"))
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    for _ in 0..3 {
        next_within(&mut sub, WAIT).await.expect("message");
    }
    let stranger = nkeys::KeyPair::new_user();
    assert!(
        async_nats::ConnectOptions::with_nkey(stranger.seed().unwrap())
            .connect(server.url())
            .await
            .is_err()
    );
    let n = server.counters();
    assert_eq!((n.msgs_in, n.msgs_out), (3, 3), "{n:?}");
    assert_eq!((n.bytes_in, n.bytes_out), (15, 15), "{n:?}");
    assert_eq!(n.auth_failures, 1, "{n:?}");
    assert_eq!(n.connections, 1, "{n:?}");
    assert!(n.total_connections >= 2, "{n:?}");
    server.shutdown().await;
}

async fn operator_server(
    authority: &Authority,
    preload: Vec<String>,
    dir: &std::path::Path,
) -> Server {
    let auth = Auth::Operator(OperatorAuth {
        operator_jwt: authority.operator_jwt().unwrap(),
        system_account: None,
        preload,
        resolver_dir: Some(dir.to_path_buf()),
    });
    Server::start(ServerConfig::new(loopback(), auth))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_updates_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::generate(rm_bus::clock::system());
    let original = authority.account_jwt().unwrap();
    let system_jwt = authority.system_account_jwt().unwrap();
    let server = operator_server(
        &authority,
        vec![original.clone(), system_jwt.clone()],
        dir.path(),
    )
    .await;
    let user = authority
        .mint_new_user("victim", Permissions::default())
        .unwrap();
    let victim_pub = user.key_pair().unwrap().public_key();
    let sys = authority.system_user().unwrap();
    let sys_client = async_nats::ConnectOptions::with_credentials(&sys.to_creds_file())
        .unwrap()
        .connect(server.url())
        .await
        .unwrap();
    authority.revoke(&victim_pub).unwrap();
    let updated = authority.account_jwt().unwrap();
    let account = authority.account_public_key();
    let reply = sys_client
        .request("$SYS.REQ.CLAIMS.UPDATE", updated.clone().into())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["data"]["code"], 200, "{v}");
    assert_eq!(v["data"]["message"], "jwt updated");
    assert_eq!(v["data"]["account"], account.as_str());
    // a JWT signed by a foreign operator is refused
    let foreign = Authority::generate(rm_bus::clock::system())
        .account_jwt()
        .unwrap();
    let reply = sys_client
        .request("$SYS.REQ.CLAIMS.UPDATE", foreign.into())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(v.get("error").is_some(), "{v}");
    drop(sys_client);
    server.shutdown().await;

    // restart with the *old* JWT preloaded: the stored update wins
    let server = operator_server(&authority, vec![original, system_jwt], dir.path()).await;
    let refused = async_nats::ConnectOptions::with_credentials(&user.to_creds_file())
        .unwrap()
        .connect(server.url())
        .await;
    assert!(refused.is_err(), "revocation survived the restart");
    let sys_client = async_nats::ConnectOptions::with_credentials(&sys.to_creds_file())
        .unwrap()
        .connect(server.url())
        .await
        .unwrap();
    let lookup = sys_client
        .request(
            format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(lookup.payload.as_ref(), updated.as_bytes());
    server.shutdown().await;
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Design target: at most 20 KiB of server memory per idle connection.
/// Measured as the growth of this process's resident memory while 1000
/// connected, authenticated-free idle clients (plain blocking sockets,
/// which cost the process next to nothing) are held open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_stay_small() {
    const N: usize = 1000;
    let server = open_server().await;
    let addr = server.local_addr();
    // warm up allocator arenas and the runtime with a few connections
    let warm = connect_idle(addr, 50).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/statm: skipping the memory measurement");
        return;
    };
    let conns = connect_idle(addr, N).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes().unwrap_or(before);
    assert_eq!(server.counters().connections as usize, N);
    let per_conn = after.saturating_sub(before) / N as u64;
    eprintln!("idle connection: ~{per_conn} bytes of process memory each");
    // Only nextest runs each test in its own process; under `cargo test`
    // other tests share this process's memory and the number is noise.
    if std::env::var_os("NEXTEST").is_none() {
        eprintln!("not isolated (no nextest): measurement reported, not asserted");
        drop(conns);
        server.shutdown().await;
        return;
    }
    assert!(
        per_conn <= 20 * 1024,
        "{per_conn} bytes per idle connection"
    );
    drop(conns);
    server.shutdown().await;
}

/// Opens `n` connections that CONNECT, exchange one PING/PONG, then idle.
async fn connect_idle(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Write};
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
                .unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                if line.starts_with("PONG") {
                    break;
                }
            }
            out.push(s);
        }
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishers_fan_in_without_loss() {
    let server = open_server().await;
    let sub_client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = sub_client.subscribe("fan.>").await.unwrap();
    sub_client.flush().await.unwrap();
    let _ = sub_client.request("sync.probe", Bytes::new()).await;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let c = async_nats::connect(url).await.unwrap();
            for i in 0..200 {
                c.publish(format!("fan.{p}"), format!("{i}").into())
                    .await
                    .unwrap();
            }
            c.flush().await.unwrap();
            let _ = c.request("sync.probe", Bytes::new()).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut per: std::collections::HashMap<String, usize> = Default::default();
    for _ in 0..1600 {
        let m = next_within(&mut sub, WAIT)
            .await
            .expect("every message arrives");
        *per.entry(m.subject.to_string()).or_default() += 1;
    }
    assert!(per.values().all(|n| *n == 200), "{per:?}");
    server.shutdown().await;
}
