//! Embedded bus vs nats-server, same client, same run, alternating rounds:
//! memory per idle connection, 1 → 1 throughput, fan-in from 1,000
//! connections, fan-out to 1,000 subscribers, request/reply latency, and
//! 10,000 TLS connections (memory each and handshake rate).
//!
//! ```sh
//! cargo bench -p rm-bus-server --bench bus --no-run
//! # server on core 0, this client on core 1 (what docs/benchmarks.md reports)
//! RM_BENCH_SERVER_CPUS=0 taskset -c 1 cargo bench -p rm-bus-server --bench bus
//! ```
//!
//! Knobs (environment): `RM_BENCH_ROUNDS` (3; each round runs both servers,
//! the first server alternating), `RM_BENCH_SERVER_CPUS` (a `taskset -c`
//! list for the server process; unset: no pinning), `RM_BENCH_TLS_CONNS`
//! (10,000), `RM_NATS_SERVER` (else `.venv/bin/nats-server`).
//!
//! Both servers run as child processes without auth on 127.0.0.1 (the
//! embedded one is this binary re-executed with `--serve`), so their
//! resident memory and CPU are read alone from /proc. The load generators
//! other than the request/reply pair are raw TCP writers and byte counters,
//! not a NATS client library, so the figures measure the servers rather
//! than a client's parsing. Not part of the test suite.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const IDLE_CONNS: usize = 2_000;
const MSGS: usize = 500_000;
const MSG_SIZE: usize = 128;
const REQUESTS: usize = 10_000;
const FAN_IN_CONNS: usize = 1_000;
/// Each fan-in publisher's messages: 200,000 in all, about 30 MB for the
/// one subscriber, under both servers' 64 MB pending limit per connection
/// (500,000 at once were cut as a slow consumer when client and server
/// shared the cores).
const FAN_IN_PER_CONN: usize = 200;
const FAN_OUT_SUBS: usize = 1_000;
const FAN_OUT_MSGS: usize = 1_000;
const TLS_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    idle_kib: f64,
    one_to_one: f64,
    one_to_one_client: f64,
    fan_in: f64,
    fan_out: f64,
    rr_p50: f64,
    rr_p99: f64,
    tls_kib: f64,
    tls_per_sec: f64,
    /// server CPU seconds over the throughput figures (1→1, fan-in, fan-out)
    server_cpu: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let port: u16 = args[i + 1].parse().expect("port");
        let tls = args.get(i + 2).map(|c| (c.clone(), args[i + 3].clone()));
        serve_embedded(port, tls);
        return;
    }
    let rounds: usize = env_num("RM_BENCH_ROUNDS", 3);
    let tls_conns: usize = env_num("RM_BENCH_TLS_CONNS", 10_000);
    let pin = std::env::var("RM_BENCH_SERVER_CPUS").ok();
    let nats = rm_testkit::nats_server_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca_der) = write_tls_files(tmp.path());
    let roots = Arc::new(client_tls(ca_der));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    eprintln!(
        "rounds {rounds}, server cpus {}, TLS connections {tls_conns}, load {}",
        pin.as_deref().unwrap_or("any"),
        loadavg()
    );
    println!(
        "| round | server | idle conn KiB | 1→1 msgs/s | 1→1 via async-nats msgs/s | fan-in 1,000→1 msgs/s | fan-out 1→1,000 deliveries/s | req/reply p50 / p99 µs | TLS conn KiB | TLS handshakes/s | server CPU s | load |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all: Vec<(&str, Figures)> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            ["embedded", "nats-server"]
        } else {
            ["nats-server", "embedded"]
        };
        for kind in order {
            let f = run_one(
                kind,
                &nats,
                pin.as_deref(),
                tmp.path(),
                &cert,
                &key,
                &roots,
                tls_conns,
                &rt,
            );
            println!(
                "| {} | {kind} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {:.1} | {:.0} | {:.2} | {:.1} |",
                round + 1,
                f.idle_kib,
                f.one_to_one,
                f.one_to_one_client,
                f.fan_in,
                f.fan_out,
                f.rr_p50,
                f.rr_p99,
                f.tls_kib,
                f.tls_per_sec,
                f.server_cpu,
                loadavg()
            );
            all.push((kind, f));
        }
    }
    summary(&all);
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    kind: &str,
    nats: &Path,
    pin: Option<&str>,
    dir: &Path,
    cert: &Path,
    key: &Path,
    roots: &Arc<rustls::ClientConfig>,
    tls_conns: usize,
    rt: &tokio::runtime::Runtime,
) -> Figures {
    let mut f = Figures::default();
    // plaintext server: everything but TLS
    let port = free_port();
    let mut child = spawn(kind, nats, pin, dir, port, None);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr);
    f.idle_kib = idle_memory(&child, addr) / 1024.0;
    let cpu0 = cpu_secs(&child);
    f.one_to_one = rt.block_on(one_to_one_raw(addr));
    f.one_to_one_client = rt.block_on(throughput(addr));
    f.fan_in = rt.block_on(fan_in(addr));
    f.fan_out = rt.block_on(fan_out(addr));
    f.server_cpu = cpu_secs(&child) - cpu0;
    let (p50, p99) = rt.block_on(latency(addr));
    f.rr_p50 = p50;
    f.rr_p99 = p99;
    stop(&mut child);
    // TLS server
    if tls_conns > 0 {
        let port = free_port();
        let mut child = spawn(kind, nats, pin, dir, port, Some((cert, key)));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_listening(addr);
        let (kib, rate) = rt.block_on(tls_connections(&child, addr, roots.clone(), tls_conns));
        f.tls_kib = kib;
        f.tls_per_sec = rate;
        stop(&mut child);
    }
    f
}

fn summary(all: &[(&str, Figures)]) {
    let med = |kind: &str, get: &dyn Fn(&Figures) -> f64| {
        let mut v: Vec<f64> = all
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, f)| get(f))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let m = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        (
            m,
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    #[allow(clippy::type_complexity)]
    let rows: [(&str, bool, &dyn Fn(&Figures) -> f64); 10] = [
        ("idle connection memory (KiB)", false, &|f| f.idle_kib),
        (
            "1→1 msgs/s (128 B, raw publisher and counter)",
            true,
            &|f| f.one_to_one,
        ),
        (
            "1→1 msgs/s (128 B, async-nats publisher and subscriber)",
            true,
            &|f| f.one_to_one_client,
        ),
        ("fan-in 1,000 connections → 1, msgs/s", true, &|f| {
            f.fan_in
        }),
        (
            "fan-out 1 → 1,000 subscribers, deliveries/s",
            true,
            &|f| f.fan_out,
        ),
        ("request/reply p50 (µs)", false, &|f| f.rr_p50),
        ("request/reply p99 (µs)", false, &|f| f.rr_p99),
        ("TLS connection memory (KiB)", false, &|f| f.tls_kib),
        ("TLS handshakes/s", true, &|f| f.tls_per_sec),
        ("server CPU s for the four throughput runs", false, &|f| {
            f.server_cpu
        }),
    ];
    println!();
    println!(
        "| figure (median, min–max) | embedded | nats-server | embedded ÷ nats-server | better |"
    );
    println!("|---|---:|---:|---:|---|");
    for (name, higher_better, get) in rows {
        let (e, emin, emax) = med("embedded", get);
        let (n, nmin, nmax) = med("nats-server", get);
        let ratio = e / n;
        let better = if (ratio >= 1.0) == higher_better {
            "embedded"
        } else {
            "nats-server"
        };
        println!(
            "| {name} | {} ({}–{}) | {} ({}–{}) | {ratio:.2} | {better} |",
            fmt(e),
            fmt(emin),
            fmt(emax),
            fmt(n),
            fmt(nmin),
            fmt(nmax)
        );
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn spawn(
    kind: &str,
    nats: &Path,
    pin: Option<&str>,
    dir: &Path,
    port: u16,
    tls: Option<(&Path, &Path)>,
) -> Child {
    let mut argv: Vec<String> = Vec::new();
    if let Some(cpus) = pin {
        argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
    }
    match kind {
        "embedded" => {
            argv.push(std::env::current_exe().expect("exe").display().to_string());
            argv.extend(["--serve".into(), port.to_string()]);
            if let Some((c, k)) = tls {
                argv.extend([c.display().to_string(), k.display().to_string()]);
            }
        }
        _ => {
            let conf = dir.join(format!("nats-{port}.conf"));
            let mut text = format!("listen: \"127.0.0.1:{port}\"\nmax_connections: 100000\n");
            if let Some((c, k)) = tls {
                text.push_str(&format!(
                    "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 10\n}}\n",
                    c.display(),
                    k.display()
                ));
            }
            std::fs::write(&conf, text).expect("write nats-server config");
            argv.push(nats.display().to_string());
            argv.extend(["-c".into(), conf.display().to_string()]);
        }
    }
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the server (set RM_NATS_SERVER for nats-server)")
}

fn serve_embedded(port: u16, tls: Option<(String, String)>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let mut config = rm_bus_server::server::ServerConfig::new(
            ([127, 0, 0, 1], port).into(),
            rm_bus_server::server::Auth::None,
        );
        if let Some((cert, key)) = tls {
            config.tls = Some(
                rm_bus_server::server::tls::server_config_from_files(cert.as_ref(), key.as_ref())
                    .expect("TLS config"),
            );
            // as nats-server's tls.timeout above: the handshake queue of
            // 10,000 connections on one core must not trip it
            config.limits.auth_timeout = Duration::from_secs(10);
        }
        let _server = rm_bus_server::server::Server::start(config)
            .await
            .expect("server");
        std::future::pending::<()>().await;
    });
}

fn write_tls_files(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    rustls_pki_types::CertificateDer<'static>,
) {
    let now = std::time::SystemTime::now();
    let ca = rm_bus_server::pki::ca::Ca::generate(now).expect("CA");
    let leaf = ca
        .issue(&["127.0.0.1".into()], Duration::from_secs(86_400), now)
        .expect("leaf");
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, leaf.chain_pem()).expect("cert");
    std::fs::write(&key, leaf.key_pem()).expect("key");
    (cert, key, ca.cert_der().clone())
}

fn client_tls(ca: rustls_pki_types::CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA root");
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
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

// `taskset` execs the server, so `child.id()` is the server's pid when pinned too.
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

fn cpu_secs(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("stat");
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime, stime: fields 14 and 15 of /proc/pid/stat, 11 and 12 after ')',
    // in clock ticks (USER_HZ, 100 on Linux)
    (f[11] + f[12]) / 100.0
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

/// One raw publisher writes `MSGS` messages as fast as the server reads
/// them; one raw subscriber counts them: messages delivered / s.
async fn one_to_one_raw(addr: SocketAddr) -> f64 {
    let sub = raw_conn(addr, Some("bench.one")).await;
    let mut publisher = raw_conn(addr, None).await;
    let frames = pub_frames("bench.one", MSGS);
    let start = Instant::now();
    let counter = tokio::spawn(count_bytes(sub, "bench.one", MSGS));
    publisher.write_all(&frames).await.expect("publish");
    let got = counter.await.expect("counter");
    let secs = start.elapsed().as_secs_f64();
    delivered_rate("1→1", got, MSGS, secs)
}

/// Messages per second, or NaN (said on stderr) when fewer than sent
/// arrived: the server cut a subscriber as a slow consumer.
fn delivered_rate(what: &str, got: usize, sent: usize, secs: f64) -> f64 {
    if got != sent {
        eprintln!("{what}: {got} of {sent} delivered (slow consumer?)");
        return f64::NAN;
    }
    got as f64 / secs
}

/// A raw protocol connection: CONNECT, optional SUB, PING, wait for PONG.
async fn raw_conn(addr: SocketAddr, sub: Option<&str>) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n".to_vec();
    if let Some(subject) = sub {
        hello.extend_from_slice(format!("SUB {subject} 1\r\n").as_bytes());
    }
    hello.extend_from_slice(b"PING\r\n");
    s.write_all(&hello).await.expect("write");
    wait_pong(&mut s).await;
    s
}

/// Reads until the server's PONG (everything before it is discarded).
async fn wait_pong(s: &mut (impl tokio::io::AsyncRead + Unpin)) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(6).any(|w| w == b"PONG\r\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before PONG");
        got.extend_from_slice(&buf[..n]);
    }
}

fn pub_frames(subject: &str, count: usize) -> Vec<u8> {
    let payload = vec![b'x'; MSG_SIZE];
    let mut out = Vec::with_capacity(count * (MSG_SIZE + 32));
    for _ in 0..count {
        out.extend_from_slice(format!("PUB {subject} {MSG_SIZE}\r\n").as_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Counts MSG frames of `MSG_SIZE` payload for `subject` (sid 1) by bytes,
/// answering any PING the server sends on the way.
async fn count_bytes(mut s: tokio::net::TcpStream, subject: &str, msgs: usize) -> usize {
    let frame = format!("MSG {subject} 1 {MSG_SIZE}\r\n").len() + MSG_SIZE + 2;
    let want = frame * msgs;
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < want {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                // a server PING is 6 bytes and would skew the count
                if buf[..n].windows(6).any(|w| w == b"PING\r\n") {
                    let _ = s.write_all(b"PONG\r\n").await;
                    got += n - 6;
                } else {
                    got += n;
                }
            }
            _ => break,
        }
    }
    got / frame
}

/// 1,000 connections each publish their share of `MSGS` at once to one
/// subscriber (a raw connection counting bytes): messages delivered / s.
async fn fan_in(addr: SocketAddr) -> f64 {
    let per = FAN_IN_PER_CONN;
    let sub = raw_conn(addr, Some("bench.in")).await;
    let mut pubs = Vec::with_capacity(FAN_IN_CONNS);
    for _ in 0..FAN_IN_CONNS {
        pubs.push(raw_conn(addr, None).await);
    }
    let frames = Arc::new(pub_frames("bench.in", per));
    let start = Instant::now();
    let counter = tokio::spawn(count_bytes(sub, "bench.in", per * FAN_IN_CONNS));
    let mut writers = Vec::with_capacity(FAN_IN_CONNS);
    for mut p in pubs {
        let frames = frames.clone();
        writers.push(tokio::spawn(async move {
            p.write_all(&frames).await.expect("publish");
            p
        }));
    }
    let mut keep = Vec::with_capacity(FAN_IN_CONNS);
    for w in writers {
        keep.push(w.await.expect("writer"));
    }
    let got = counter.await.expect("counter");
    let secs = start.elapsed().as_secs_f64();
    drop(keep);
    delivered_rate("fan-in", got, per * FAN_IN_CONNS, secs)
}

/// One publisher, 1,000 subscriber connections on one subject: deliveries / s.
async fn fan_out(addr: SocketAddr) -> f64 {
    let mut subs = Vec::with_capacity(FAN_OUT_SUBS);
    for _ in 0..FAN_OUT_SUBS {
        subs.push(raw_conn(addr, Some("bench.out")).await);
    }
    let mut publisher = raw_conn(addr, None).await;
    // every subscription is registered: each subscriber had the PONG
    // that follows its SUB
    let frames = pub_frames("bench.out", FAN_OUT_MSGS);
    let start = Instant::now();
    let counters: Vec<_> = subs
        .into_iter()
        .map(|s| tokio::spawn(count_bytes(s, "bench.out", FAN_OUT_MSGS)))
        .collect();
    publisher.write_all(&frames).await.expect("publish");
    let mut total = 0;
    for c in counters {
        total += c.await.expect("counter");
    }
    let secs = start.elapsed().as_secs_f64();
    delivered_rate("fan-out", total, FAN_OUT_MSGS * FAN_OUT_SUBS, secs)
}

async fn latency(addr: SocketAddr) -> (f64, f64) {
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
        samples.push(t.elapsed().as_micros() as f64);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[REQUESTS / 2], samples[REQUESTS * 99 / 100])
}

/// One TLS client connection as a NATS client makes it: read INFO in
/// plaintext, upgrade, CONNECT, PING, wait for PONG.
async fn tls_conn(
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut r = tokio::io::BufReader::new(tcp);
    let mut info = String::new();
    r.read_line(&mut info).await.expect("INFO");
    assert!(info.starts_with("INFO"), "no INFO: {info}");
    let tcp = r.into_inner();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true}\r\nPING\r\n",
    )
    .await
    .expect("write");
    wait_pong(&mut tls).await;
    tls
}

/// Opens `n` TLS connections, `TLS_CONCURRENCY` at a time: server memory
/// per connection (KiB) and handshakes completed per second.
async fn tls_connections(
    child: &Child,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    n: usize,
) -> (f64, f64) {
    let connector = tokio_rustls::TlsConnector::from(config);
    // warm-up, as for plaintext
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(tls_conn(addr, connector.clone()).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(child);
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(TLS_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let c = connector.clone();
        tasks.push(tokio::spawn(async move {
            let s = tls_conn(addr, c).await;
            drop(permit);
            s
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        conns.push(t.await.expect("tls task"));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes(child);
    drop((warm, conns));
    ((after - before) / n as f64 / 1024.0, rate)
}
