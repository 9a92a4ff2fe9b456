//! `restic-manager notifier` end to end: the real binary, started with a
//! creds file and an xkey seed file, serves a delivery over a real bus to a
//! local HTTP receiver and stops cleanly on SIGTERM.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use nkeys::XKey;
use rm_bus::creds::Role;
use rm_bus::msg::{PROTOCOL_VERSION, decode, encode};
use rm_bus::notify::{
    ChannelDef, DeliverOutcome, DeliverReply, DeliverRequest, NotificationEvent, WebhookChannel,
    deliver_subject,
};
use rm_testkit::TestBus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Accepts one HTTP request, answers 200 and returns the raw request text.
async fn one_request(listener: TcpListener) -> anyhow::Result<String> {
    let (mut stream, _) = listener.accept().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Head and the small JSON body arrive together or shortly after.
    loop {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if n == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
            break;
        }
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn notifier_subcommand_delivers_and_stops_on_sigterm() -> anyhow::Result<()> {
    let bus = TestBus::start().await?;
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("notifier.creds");
    std::fs::write(&creds, bus.creds_for(&Role::Notifier)?.to_creds_file())?;
    // `notifier-xkey` creates the seed file (0600) and prints the public key,
    // the same one on a second run.
    let seed = dir.path().join("notifier.xkey");
    let public = |out: std::process::Output| -> anyhow::Result<String> {
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let xkey_cmd = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_restic-manager"))
            .arg("notifier-xkey")
            .arg(&seed)
            .output()
    };
    let first = public(xkey_cmd()?)?;
    assert_eq!(public(xkey_cmd()?)?, first);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&seed)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let notifier_xkey = XKey::from_seed(std::fs::read_to_string(&seed)?.trim())?;
    assert_eq!(notifier_xkey.public_key(), first);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["notifier", "--nats-url", &bus.url(), "--name", "cli-1"])
        .arg("--creds")
        .arg(&creds)
        .arg("--xkey-seed-file")
        .arg(&seed)
        .args(["--attempt-timeout-ms", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let received = tokio::spawn(one_request(listener));

    let alerts = bus.connect_role(Role::Alerts).await?;
    let alerts_xkey = XKey::new();
    let channel = ChannelDef::Webhook(WebhookChannel {
        url,
        secret: None,
        headers: BTreeMap::new(),
    });
    let req = DeliverRequest {
        v: PROTOCOL_VERSION,
        delivery_id: "d1".into(),
        webhook_id: "msg_cli".into(),
        attempt: 1,
        sender_xkey: alerts_xkey.public_key(),
        channel: DeliverRequest::seal_channel(&channel, &alerts_xkey, &notifier_xkey.public_key())?,
        event: NotificationEvent::test("evt-cli", 1_777_636_496_000, None),
    };
    // The process needs a moment to connect: retry while no one responds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reply: DeliverReply = loop {
        match alerts.request(deliver_subject(), encode(&req)).await {
            Ok(msg) => break decode("deliver reply", &msg.payload)?,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "notifier not up yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => anyhow::bail!("the notifier never answered: {e}"),
        }
    };
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    assert_eq!(reply.notifier.as_deref(), Some("cli-1"));
    let request = tokio::time::timeout(Duration::from_secs(10), received).await???;
    assert!(
        request.to_ascii_lowercase().contains("webhook-id: msg_cli"),
        "{request}"
    );

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
    assert!(stderr.contains("notifier ready"), "{stderr}");
    assert!(stderr.contains("notifier stopped"), "{stderr}");
    assert!(
        !stderr.contains(notifier_xkey.seed()?.as_str()),
        "the seed was logged"
    );
    Ok(())
}
