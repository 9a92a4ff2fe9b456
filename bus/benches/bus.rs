//! Embedded bus vs nats-server: memory per idle connection, pub/sub
//! throughput and request/reply latency. Run with
//! `cargo bench -p rm-bus-server --bench bus` (release build; nats-server from
//! `RM_NATS_SERVER` or `.venv/bin/nats-server`). Not part of the test
//! suite: results go to docs/benchmarks.md by hand.
//!
//! Both servers run as child processes (the embedded one is this binary
//! re-executed with `--serve PORT`), so their resident memory is measured
//! alone, from /proc.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

const IDLE_CONNS: usize = 2_000;
const MSGS: usize = 500_000;
const MSG_SIZE: usize = 128;
const REQUESTS: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let port: u16 = args[i + 1].parse().expect("port");
        serve_embedded(port);
        return;
    }
    let nats = rm_testkit::nats_server_bin();
    println!(
        "| server | idle conn RSS (KiB each) | pub/sub msgs/s ({MSG_SIZE} B) | req/reply p50 / p99 (µs) |"
    );
    println!("|---|---:|---:|---:|");
    for kind in ["embedded", "nats-server"] {
        let port = free_port();
        let mut child = match kind {
            "embedded" => Command::new(std::env::current_exe().expect("exe"))
                .args(["--serve", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn embedded"),
            _ => Command::new(&nats)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nats-server (set RM_NATS_SERVER)"),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_listening(addr);
        let per_conn = idle_memory(&child, addr);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("rt");
        let rate = rt.block_on(throughput(addr));
        let (p50, p99) = rt.block_on(latency(addr));
        println!(
            "| {kind} | {:.1} | {:.0} | {p50} / {p99} |",
            per_conn / 1024.0,
            rate
        );
        stop(&mut child);
    }
}

fn serve_embedded(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let config = rm_bus_server::server::ServerConfig::new(
            ([127, 0, 0, 1], port).into(),
            rm_bus_server::server::Auth::None,
        );
        let _server = rm_bus_server::server::Server::start(config)
            .await
            .expect("server");
        std::future::pending::<()>().await;
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn rss_bytes(child: &Child) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024.0
}

/// Opens connections that CONNECT, PING, wait for PONG, then idle.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
                .expect("write");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            loop {
                line.clear();
                r.read_line(&mut line).expect("read");
                if line.starts_with("PONG") {
                    break;
                }
            }
            s
        })
        .collect()
}

fn idle_memory(child: &Child, addr: SocketAddr) -> f64 {
    let warm = open_idle(addr, 100);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(child);
    let conns = open_idle(addr, IDLE_CONNS);
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_bytes(child);
    drop((warm, conns));
    (after - before) / IDLE_CONNS as f64
}

async fn throughput(addr: SocketAddr) -> f64 {
    let url = format!("nats://{addr}");
    // room for every message, so a fast server is not cut short by the
    // client's own slow-consumer guard
    let sub_client = async_nats::ConnectOptions::new()
        .subscription_capacity(MSGS + 1_000)
        .connect(&url)
        .await
        .expect("sub");
    let pub_client = async_nats::connect(&url).await.expect("pub");
    let mut sub = sub_client.subscribe("bench.tp").await.expect("subscribe");
    sub_client.flush().await.expect("flush");
    // the subscription is live once a probe arrives
    loop {
        pub_client
            .publish("bench.tp", "probe".into())
            .await
            .expect("probe");
        if tokio::time::timeout(Duration::from_millis(100), sub.next())
            .await
            .is_ok()
        {
            break;
        }
    }
    let payload = bytes::Bytes::from(vec![b'x'; MSG_SIZE]);
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < MSGS {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(m)) if m.payload.len() == MSG_SIZE => n += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        n
    });
    for _ in 0..MSGS {
        pub_client
            .publish("bench.tp", payload.clone())
            .await
            .expect("publish");
    }
    pub_client.flush().await.expect("flush");
    let got = reader.await.expect("reader");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, MSGS, "messages lost");
    MSGS as f64 / secs
}

async fn latency(addr: SocketAddr) -> (u128, u128) {
    let url = format!("nats://{addr}");
    let server = async_nats::connect(&url).await.expect("server");
    let client = async_nats::connect(&url).await.expect("client");
    let mut sub = server.subscribe("bench.rr").await.expect("subscribe");
    let s2 = server.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = s2.publish(r, m.payload).await;
            }
        }
    });
    server.flush().await.expect("flush");
    // warm up until the responder is live
    while client.request("bench.rr", "w".into()).await.is_err() {}
    let mut samples = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        client
            .request("bench.rr", "ping".into())
            .await
            .expect("request");
        samples.push(t.elapsed().as_micros());
    }
    samples.sort_unstable();
    (samples[REQUESTS / 2], samples[REQUESTS * 99 / 100])
}
