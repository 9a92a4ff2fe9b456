//! `restic-manager alerts` end to end: the real binary, started with a creds
//! file and the notifier's public xkey, serves the alerts services over a
//! real bus and stops cleanly on SIGTERM.
#![cfg(unix)]

use std::process::Stdio;
use std::time::Duration;

use nkeys::XKey;
use rm_bus::creds::Role;
use rm_bus::msg::{Actor, ActorVia, PROTOCOL_VERSION, SvcRequest, encode};
use rm_bus::subject::{self, SvcRole, Verb};
use rm_testkit::TestBus;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn alerts_subcommand_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    let bus = TestBus::start().await?;
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("alerts.creds");
    std::fs::write(&creds, bus.creds_for(&Role::Alerts)?.to_creds_file())?;
    let notifier = XKey::new().public_key();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .arg("alerts")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--nats-url", &bus.url(), "--notifier-xkey", &notifier])
        .arg("--creds")
        .arg(&creds)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    let web = bus.connect_role(Role::Web).await?;
    let req = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "alice".into(),
            via: ActorVia::Session,
            address: None,
        },
        body: serde_json::json!({}),
    };
    let subject = subject::svc(SvcRole::Alerts, Verb::new("pubkey"));
    // The process needs a moment to connect: retry while no one responds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reply: serde_json::Value = loop {
        match web.request(subject.clone(), encode(&req)).await {
            Ok(msg) => break serde_json::from_slice(&msg.payload)?,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "alerts role not up yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => anyhow::bail!("the alerts role never answered: {e}"),
        }
    };
    let xkey = reply["ok"]["xkey"].as_str().unwrap_or_default().to_owned();
    // The role's key was created in the data directory, and is the one
    // it reports.
    let seed = std::fs::read_to_string(dir.path().join("alerts.xk"))?;
    assert_eq!(XKey::from_seed(seed.trim())?.public_key(), xkey);
    assert!(dir.path().join("restic-manager.db").exists());
    assert!(dir.path().join("master.key").exists());

    let pid = child.id().expect("child is running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await??;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).await?;
    }
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("alerts role running"), "{stderr}");
    assert!(stderr.contains("alerts role shutting down"), "{stderr}");
    assert!(!stderr.contains(seed.trim()), "the seed was logged");
    Ok(())
}
