//! The roles as separate processes: the standalone embedded bus with a
//! users file, and the external-cluster mode — a real nats-server trusting
//! this installation's keys (`authority nats-config`), the control plane on
//! its own against it, and `admin` talking to it.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
}

/// Kills the child on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..200 {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("did not stop within 10 s of SIGTERM");
    }
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

#[tokio::test]
async fn standalone_bus_with_a_users_file_enforces_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nnkey = \"{}\"\npublish = {{ allow = [\"app.>\", \"_INBOX.>\"], deny = [\"app.secret\"] }}\nsubscribe = {{ allow = [\"app.>\", \"_INBOX.>\"] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = bin()
        .args(["bus", "--listen", &format!("127.0.0.1:{port}"), "--users"])
        .arg(&users)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let bus = Proc(child);

    let url = format!("nats://127.0.0.1:{port}");
    let seed = user.seed().unwrap();
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_nkey(seed)
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(url.as_str())
        .await
        .unwrap();
    let mut sub = client.subscribe("app.>").await.unwrap();
    client.flush().await.unwrap();
    client.publish("app.hello", "hi".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"hi");
    client.publish("app.secret", "no".into()).await.unwrap();
    client.flush().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = errors.recv().await.unwrap();
            if e.contains("Permissions Violation") {
                return e;
            }
        }
    })
    .await
    .expect("a permission violation");
    assert!(err.contains("app.secret"), "{err}");

    // an unknown nkey is refused
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let refused = async_nats::ConnectOptions::with_nkey(stranger)
        .connect(url.as_str())
        .await;
    assert!(refused.is_err());

    let status = bus.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn standalone_bus_without_auth_stays_on_loopback_and_says_so() {
    let port = free_port();
    let mut child = bin()
        .args(["bus", "--listen", &format!("0.0.0.0:{port}")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let stderr = child.stderr.take().unwrap();
    let bus = Proc(child);
    let status = bus.terminate();
    assert!(status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut log).unwrap();
    assert!(log.contains("listening on loopback only"), "{log}");
}

#[tokio::test]
async fn control_plane_alone_against_a_real_nats_server_in_operator_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = bin()
        .args(["authority", "init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("operator:"));
    let out = bin()
        .args(["authority", "nats-config", "--data-dir"])
        .arg(&data)
        .arg("--resolver-dir")
        .arg(dir.path().join("jwt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let port = free_port();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\nport: {port}\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
    )
    .unwrap();
    let nats = Proc(
        Command::new(rm_testkit::nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server 2.15 (scripts/test installs it)"),
    );
    wait_port(port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let cp = Proc(
        bin()
            .args(["controlplane", "--data-dir"])
            .arg(&data)
            .args(["--nats-url", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["admin", "--data-dir"])
        .arg(&data)
        .args(["--nats-url", &url, "host-add", "ext-1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("restic-manager-agent enroll --server"),
        "{text}"
    );
    let status = cp.terminate();
    assert!(status.success(), "{status}");
    drop(nats);
}
