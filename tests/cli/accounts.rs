//! `restic-manager user add` and `token create`: the first setup scripted
//! without a browser; `serve` on a fresh install logs a one-time setup
//! code, and none once an account exists.
#![cfg(unix)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
}

fn user_add(dir: &std::path::Path, name: &str, role: &str, stdin: &str) -> std::process::Output {
    let mut child = bin()
        .args(["user", "add", "--data-dir"])
        .arg(dir)
        .args(["--name", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn open(dir: &std::path::Path) -> rm_store::Store {
    rm_store::Store::open(&dir.join("restic-manager.db"))
        .await
        .unwrap()
}

#[tokio::test]
async fn user_add_takes_the_password_from_stdin_and_token_create_prints_a_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = user_add(dir.path(), "root", "admin", "a long admin password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer = user_add(dir.path(), "eve", "viewer", "a long viewer password\n");
    assert!(viewer.status.success());
    // too short, and a taken name: refused with a reason
    let short = user_add(dir.path(), "bob", "viewer", "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least"));
    let taken = user_add(dir.path(), "root", "viewer", "another long password\n");
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("exists already"));
    // the password never goes on the command line
    let argv = bin()
        .args([
            "user",
            "add",
            "--name",
            "x",
            "--role",
            "admin",
            "--password",
            "p",
        ])
        .output()
        .unwrap();
    assert!(!argv.status.success());

    let store = open(dir.path()).await;
    let mut c = store.read().await.unwrap();
    let (user, hash) = rm_store::users::by_name(&mut c, "root")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.role, "admin");
    assert!(rm_web::auth::password::verify(
        "a long admin password",
        &hash
    ));
    drop(c);

    let token = bin()
        .args(["token", "create", "--data-dir"])
        .arg(dir.path())
        .args(["--user", "root", "--name", "ci", "--role", "operator"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let secret = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("rmt_") && secret.len() > 40, "{secret}");
    let mut c = store.read().await.unwrap();
    let listed = rm_store::api_tokens::list(&mut c).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].role, "operator");
    assert!(listed[0].expires_at.is_some());
    drop(c);
    // a token may not exceed its account's role
    let over = bin()
        .args(["token", "create", "--data-dir"])
        .arg(dir.path())
        .args(["--user", "eve", "--name", "x", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!over.status.success());
    store.close().await;
}

/// Starts serve on a data dir and returns its log up to the web role
/// serving, then stops it.
fn serve_log_until_running(dir: &std::path::Path) -> Vec<String> {
    let mut child = bin()
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--bus-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        let done = line.contains("web role serving");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    lines
}

#[test]
fn serve_logs_a_setup_code_only_while_no_account_exists() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve_log_until_running(dir.path());
    assert!(
        first
            .iter()
            .any(|l| l.contains("setup_code=") && l.contains("/setup")),
        "{first:#?}"
    );
    let out = user_add(dir.path(), "root", "admin", "a long admin password\n");
    assert!(out.status.success());
    let second = serve_log_until_running(dir.path());
    assert!(
        !second.iter().any(|l| l.contains("setup_code=")),
        "{second:#?}"
    );
}

#[test]
fn db_vacuum_rewrites_an_existing_database_and_refuses_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let vacuum = || {
        bin()
            .args(["db-vacuum", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let missing = vacuum();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no database at"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(
        !dir.path().join("restic-manager.db").exists(),
        "created nothing"
    );

    let made = user_add(dir.path(), "root", "admin", "a long admin password\n");
    assert!(made.status.success());
    let done = vacuum();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("rewritten in key order"),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
    // the account is still there: a second add of the name is refused
    let again = user_add(dir.path(), "root", "viewer", "another long password\n");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
}
