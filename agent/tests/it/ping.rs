//! The agent's PING period to its bus node is its configuration's:
//! `bus_ping_secs` in the `[run]` table of the real binary's agent.toml
//! reaches its bus connection (a node that answers PINGs and says nothing
//! else counts them), and without it the agent keeps the 60 s default.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rm_bus::HostId;
use rm_bus_server::creds::Authority;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::enrolled_state;

/// A bus node that completes every client's handshake, answers each PING
/// with a PONG and sends nothing else; counts the PINGs after handshakes
/// and the hellos published.
async fn quiet_node(listener: TcpListener, pings: Arc<AtomicUsize>, hellos: Arc<AtomicUsize>) {
    while let Ok((sock, _)) = listener.accept().await {
        let (pings, hellos) = (pings.clone(), hellos.clone());
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let info = "INFO {\"server_id\":\"quiet\",\"version\":\"2.10.0\",\"proto\":1,\"max_payload\":1048576,\"nonce\":\"bm9uY2U\",\"headers\":true}\r\n";
            if w.write_all(info.as_bytes()).await.is_err() {
                return;
            }
            let mut lines = BufReader::new(r).lines();
            let mut handshake_done = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if (line.starts_with("PUB ") || line.starts_with("HPUB "))
                    && line.contains(".hello ")
                {
                    hellos.fetch_add(1, Ordering::Relaxed);
                }
                if line.starts_with("PING") {
                    if handshake_done {
                        pings.fetch_add(1, Ordering::Relaxed);
                    }
                    handshake_done = true;
                    if w.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// The agent binary run with `config` as its agent.toml, against a quiet
/// node: the PINGs it sent within `window` from half a second after its
/// first hello.
async fn pings_of_an_agent_configured_with(config: &str, window: Duration) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    let (pings, hellos) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let node = tokio::spawn(quiet_node(listener, pings.clone(), hellos.clone()));
    // any JWT: the quiet node checks none
    let authority = Authority::generate(rm_bus::clock::system());
    let host = HostId::parse("pinger").unwrap();
    let state = enrolled_state(&dir.path().join("state"), &host, &url, &authority);
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, config).unwrap();
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_restic-manager-agent"))
        .arg("--config")
        .arg(&file)
        .arg("--state-dir")
        .arg(state.root())
        .args(["--restic", "/nonexistent/restic", "run"])
        .env_remove("RM_AGENT_BUS_PING_SECS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // the start's own round trips (the client's flushes) are not the
    // period: count from a moment after the agent said hello
    tokio::time::timeout(Duration::from_secs(60), async {
        while hellos.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent says hello to the quiet node");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_start = pings.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let seen = pings.load(Ordering::Relaxed) - at_start;
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent kept running against the quiet node"
    );
    agent.kill().await.unwrap();
    node.abort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_ping_secs_in_the_agents_config_sets_how_often_it_pings_its_bus_node() {
    let window = Duration::from_millis(4500);
    let (set, default) = tokio::join!(
        pings_of_an_agent_configured_with("[run]\nbus_ping_secs = 1\n", window),
        pings_of_an_agent_configured_with("", window),
    );
    // about one a second
    assert!(set >= 3, "PINGs with bus_ping_secs = 1: {set}");
    assert_eq!(default, 0, "the 60 s default sends none in {window:?}");
}
