//! nats-py, an independent client, against the embedded bus with a static
//! users file (nkey auth): pub/sub, headers, request/reply, no-responders,
//! an unknown key refused.

use std::net::SocketAddr;
use std::time::Duration;

use rm_bus_server::server::{Auth, Server, ServerConfig, users};

const SCRIPT: &str = include_str!("py/client.py");

/// The Python with nats-py, or `None` (and a loud message) without it.
fn python() -> Option<std::path::PathBuf> {
    let py = rm_testkit::python_bin();
    let ok = std::process::Command::new(&py)
        .args(["-c", "import nats, nkeys"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "\n!!!!! SKIPPED: {} has no nats-py/nkeys; run scripts/test (it creates .venv) !!!!!\n",
            py.display()
        );
        return None;
    }
    Some(py)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_against_embedded_bus_with_users_file() {
    let Some(py) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let users_toml = format!(
        "[[user]]\nnkey = \"{}\"\npublish = {{ allow = [\"py.>\", \"svc.>\", \"_INBOX.>\"] }}\nsubscribe = {{ allow = [\"py.>\", \"svc.>\", \"_INBOX.>\"] }}\n",
        user.public_key()
    );
    let path = dir.path().join("users.toml");
    std::fs::write(&path, users_toml).unwrap();
    let config = ServerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Auth::Users(users::load(&path).unwrap()),
    );
    let server = Server::start(config).await.unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let run = tokio::process::Command::new(py)
        .arg(&script)
        .arg(server.url())
        .arg(user.seed().unwrap())
        .arg(stranger.seed().unwrap())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("nats-py finishes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "nats-py failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    let counters = server.counters();
    assert!(counters.auth_failures >= 1, "{counters:?}");
    assert!(counters.msgs_in >= 4, "{counters:?}");
    server.shutdown().await;
}
