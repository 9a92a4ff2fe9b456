//! `restic-manager serve`: one process brings up the embedded bus, the
//! control plane, the alerts role and a notifier; an operator request (as the web role, with
//! credentials minted by the installation's own authority) is answered;
//! SIGTERM stops everything cleanly and the state survives a restart.
#![cfg(unix)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rm_bus::connect::{ConnectSpec, connect};
use rm_bus::msg::{Actor, ActorVia, PROTOCOL_VERSION, SvcReply, SvcRequest, decode, encode};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::subject::{self, SvcRole, Verb};
use rm_bus_server::creds::{Authority, Role};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--bus-listen", &format!("127.0.0.1:{port}")])
        .args(["--web-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir))
        .spawn()
        .expect("start serve")
}

/// Where a serve started here logs (`<dir>/serve.log`): read back when it
/// does not stop in time ([`terminate_logged`]).
fn log_file(dir: &std::path::Path) -> std::fs::File {
    std::fs::File::create(dir.join("serve.log")).expect("serve's log file")
}

/// [`terminate`], and on a stop that overran, the last lines serve
/// logged (each part of its stop logs when it ended) in the panic.
fn terminate_logged(child: &mut Child, dir: &std::path::Path) -> std::process::ExitStatus {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| terminate(child))) {
        Ok(status) => status,
        Err(e) => {
            let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("serve's last log lines:\n{}", tail.join("\n"));
            std::panic::resume_unwind(e)
        }
    }
}

/// Reads serve's stdout until it says it is running; returns the web URL.
pub(crate) fn wait_running(child: &mut Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout");
    // A thread reads serve's stdout to its end (so a later line never
    // meets a closed pipe) and hands over the web address.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.trim().strip_prefix("web: ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(url) => url,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("serve exited before it was running")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("serve printed no web address within 120 s")
        }
    }
}

/// How long [`terminate`] waits: serve's own bound without a local agent.
/// Its embedded bus gives connected clients a 0.5 s lame-duck grace, then
/// waits up to its write deadline (10 s) and 1 s for their connections to
/// close (`bus::server::Server::shutdown`); a 10 s limit sat below that
/// and failed on a loaded CI machine (stop 47).
const STOP_LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = std::time::Instant::now() + STOP_LIMIT;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("serve did not stop within {STOP_LIMIT:?} of SIGTERM");
}

async fn call(
    dir: &std::path::Path,
    port: u16,
    verb: Verb,
    body: serde_json::Value,
) -> SvcReply<serde_json::Value> {
    call_role(dir, port, SvcRole::Controlplane, verb, body).await
}

pub(crate) async fn call_role(
    dir: &std::path::Path,
    port: u16,
    role: SvcRole,
    verb: Verb,
    body: serde_json::Value,
) -> SvcReply<serde_json::Value> {
    let authority = Authority::load_or_create(&dir.join("bus"), rm_bus::clock::system()).unwrap();
    let creds = authority
        .mint_new_user("web", Role::Web.permissions())
        .unwrap();
    let mut spec = ConnectSpec::new(format!("nats://127.0.0.1:{port}"), creds, &Role::Web);
    spec.retry_on_initial_connect = true;
    let (client, _events) = connect(&spec).await.expect("connect as web");
    let req = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "alice".into(),
            via: ActorVia::Session,
            address: None,
        },
        body,
    };
    // Service calls are not all idempotent (repo-add runs `restic init`):
    // one attempt must outlast a slow answer on a loaded machine rather
    // than send the request again.
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(60),
        deadline: Some(Duration::from_secs(90)),
        ..RetryPolicy::default()
    };
    let msg = request_with_retry(
        &client,
        &subject::svc(role, verb),
        // one key per call: the control plane answers a repeated key
        // (same verb and body) with the first call's reply
        &IdempotencyKey::new(rm_bus::ids::random_token(8)),
        encode(&req),
        &policy,
    )
    .await
    .expect("the role answers");
    decode("reply", &msg.payload).expect("reply parses")
}

#[tokio::test]
async fn serve_runs_every_role_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(dir.path(), port);
    let web_url = wait_running(&mut child);
    assert!(web_url.starts_with("https://127.0.0.1:"), "{web_url}");
    let (req, key) = rm_controlplane::api::HostAdd::new("web-1");
    let reply = call(
        dir.path(),
        port,
        Verb::new("host-add"),
        serde_json::to_value(&req).unwrap(),
    )
    .await;
    let ok: rm_controlplane::api::SealedEnrollment =
        serde_json::from_value(reply.ok.expect("host added")).unwrap();
    let ok = ok.open(&key).expect("sealed to the asker");
    let host_id = ok.host_id.clone();
    assert!(ok.command.contains("restic-manager-agent enroll"));

    // the notifier is up too: a malformed delivery gets a clear refusal
    let authority =
        Authority::load_or_create(&dir.path().join("bus"), rm_bus::clock::system()).unwrap();
    let creds = authority
        .mint_new_user("alerts", Role::Alerts.permissions())
        .unwrap();
    let (alerts, _e) = connect(&ConnectSpec::new(
        format!("nats://127.0.0.1:{port}"),
        creds,
        &Role::Alerts,
    ))
    .await
    .unwrap();
    let policy = RetryPolicy {
        deadline: Some(Duration::from_secs(10)),
        ..RetryPolicy::default()
    };
    let r = request_with_retry(
        &alerts,
        &rm_bus::notify::deliver_subject(),
        &IdempotencyKey::new("d"),
        "{}".into(),
        &policy,
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&r.payload);
    assert!(text.contains("failed"), "{text}");

    // and the alerts role answers its services
    let reply = call_role(
        dir.path(),
        port,
        SvcRole::Alerts,
        Verb::new("channel-list"),
        serde_json::json!({}),
    )
    .await;
    let ok = reply.ok.expect("channels listed");
    assert_eq!(ok["channels"], serde_json::json!([]));

    // this test's own connection goes first: terminate blocks this
    // thread, so the client could not answer the bus's lame-duck notice
    drop(alerts);
    let status = terminate_logged(&mut child, dir.path());
    assert!(status.success(), "serve exited with {status}");

    // state survives a restart
    let mut child = start(dir.path(), port);
    let reply = call(
        dir.path(),
        port,
        Verb::new("host-token"),
        serde_json::to_value(rm_controlplane::api::HostTokenRequest::new(host_id).0).unwrap(),
    )
    .await;
    assert!(
        reply.ok.is_some(),
        "the host is still known: {:?}",
        reply.error
    );
    let status = terminate_logged(&mut child, dir.path());
    assert!(status.success(), "serve exited with {status}");
}

fn start_with_local_agent(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--bus-listen", &format!("127.0.0.1:{port}")])
        .args(["--web-listen", "127.0.0.1:0", "--heartbeat-secs", "1"])
        .args(["--local-agent", "--local-agent-name", "self-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir))
        .spawn()
        .expect("start serve")
}

async fn local_host(dir: &std::path::Path) -> Option<rm_store::hosts::Host> {
    let db = rm_store::Store::open(&dir.join("restic-manager.db"))
        .await
        .ok()?;
    let mut c = db.read().await.ok()?;
    let hosts = rm_store::hosts::list(&mut c).await.ok()?;
    hosts.into_iter().find(|h| h.name == "self-1")
}

/// The local agent is enrolled once (a restart runs the same host), comes
/// online with its restic runs set to yield to serve's roles, and on
/// SIGTERM stops first, before the roles and the bus, as serve's log
/// (plain text, not a terminal's colours) says part by part.
#[tokio::test]
async fn serve_with_a_local_agent_enrolls_it_once_makes_its_restic_yield_and_stops_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_with_local_agent(dir.path(), port);
    wait_running(&mut child);
    let mut first = None;
    for _ in 0..200 {
        if let Some(h) = local_host(dir.path()).await
            && h.status == "online"
        {
            first = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("the local agent came online");
    assert!(dir.path().join("agent/identity.json").exists());
    let status = terminate_logged(&mut child, dir.path());
    assert!(status.success(), "serve exited with {status}");
    // the agent stops first, while the control plane still takes its last
    // results; the bus the roles speak through goes last
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        !log.contains('\x1b'),
        "no terminal colour codes in a log that is not a terminal: {log}"
    );
    // its restic runs below serve's priorities (rm_restic::Restic::yielding)
    assert!(
        log.lines()
            .any(|l| l.contains("restic found") && l.contains("yields=true")),
        "{log}"
    );
    let order = stop_order(&log);
    assert_eq!(order.first(), Some(&"local agent"), "{log}");
    assert_eq!(order.last(), Some(&"embedded bus"), "{log}");
    assert_eq!(order.len(), 6, "every part says it stopped: {log}");

    // a restart runs the same agent, not a second enrollment
    let mut child = start_with_local_agent(dir.path(), port);
    wait_running(&mut child);
    let mut back = false;
    for _ in 0..200 {
        if let Some(h) = local_host(dir.path()).await
            && h.status == "online"
            && h.last_seen_at > first.last_seen_at
        {
            assert_eq!(h.id, first.id);
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the local agent came back as the same host");
    let status = terminate_logged(&mut child, dir.path());
    assert!(status.success(), "serve exited with {status}");
}

/// The parts of serve that logged their stop (`stopped part=... stop_ms=`),
/// in the order they did.
fn stop_order(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" stopped ") && l.contains("stop_ms="))
        .filter_map(|l| l.split("part=\"").nth(1)?.split('"').next())
        .collect()
}

/// A role that fails ends serve with an error naming it, but only after
/// every other part stopped in order: the other roles are joined, the bus
/// shut down last (the roles used to be left to the process's end). The
/// web service fails here on a key file that is not a key.
#[tokio::test]
async fn serve_whose_web_service_fails_names_it_and_still_stops_the_other_roles_then_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::cluster::issue_cert(dir.path(), dir.path(), "web");
    std::fs::write(&key, "not a key\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--bus-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--web-listen", "127.0.0.1:0", "--web-tls-cert"])
        .arg(&cert)
        .arg("--web-tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir.path()))
        .spawn()
        .expect("start serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("serve did not end within 60 s of its web service failing: {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!status.success(), "a failed role is a failed serve: {log}");
    assert!(log.contains("the web service stopped"), "{log}");
    let order = stop_order(&log);
    assert_eq!(
        order.first(),
        Some(&"web service"),
        "the failed part first: {log}"
    );
    assert_eq!(order.last(), Some(&"embedded bus"), "the bus last: {log}");
    for part in ["control plane", "notifier", "alerts role"] {
        assert!(
            order.contains(&part),
            "{part} was stopped and joined: {log}"
        );
    }
    assert_eq!(order.len(), 5, "each part once: {log}");
}

/// The notifier `serve` runs opens channels sealed by the alerts role's
/// xkey only: a request sealed by any other key is refused unopened.
#[tokio::test]
async fn serve_s_notifier_trusts_only_the_alerts_role_s_xkey() {
    use rm_bus::notify::{
        ChannelDef, DeliverOutcome, DeliverReply, DeliverRequest, NotificationEvent,
        WebhookChannel, deliver_subject,
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(dir.path(), port);
    wait_running(&mut child);
    let notifier_pub = rm_bus::seal::load_or_create_xkey(&dir.path().join("notifier.xk"))
        .unwrap()
        .public_key();
    let alerts_key = rm_bus::seal::load_or_create_xkey(&dir.path().join("alerts.xk")).unwrap();
    let authority =
        Authority::load_or_create(&dir.path().join("bus"), rm_bus::clock::system()).unwrap();
    let creds = authority
        .mint_new_user("alerts-test", Role::Alerts.permissions())
        .unwrap();
    let mut spec = ConnectSpec::new(format!("nats://127.0.0.1:{port}"), creds, &Role::Alerts);
    spec.retry_on_initial_connect = true;
    let (client, _) = connect(&spec).await.expect("connect as alerts");
    let channel = ChannelDef::Webhook(WebhookChannel {
        // nothing listens there: a trusted request gets as far as trying
        url: "http://127.0.0.1:1/hook".into(),
        secret: None,
        headers: Default::default(),
    });
    let deliver = |sender: &nkeys::XKey, id: &str| DeliverRequest {
        v: PROTOCOL_VERSION,
        delivery_id: id.into(),
        webhook_id: format!("msg_{id}"),
        attempt: 1,
        sender_xkey: sender.public_key(),
        channel: DeliverRequest::seal_channel(&channel, sender, &notifier_pub).unwrap(),
        event: NotificationEvent::test("evt-trust", 1_777_636_496_000, None),
    };
    let ask = |req: DeliverRequest| {
        let client = client.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                match client.request(deliver_subject(), encode(&req)).await {
                    Ok(m) => break decode::<DeliverReply>("deliver reply", &m.payload).unwrap(),
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("the notifier never answered: {e}"),
                }
            }
        }
    };
    let stranger = nkeys::XKey::new();
    let refused = ask(deliver(&stranger, "d1")).await;
    assert_eq!(refused.outcome, DeliverOutcome::Failed, "{refused:?}");
    assert!(
        refused
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("not trusted"),
        "{refused:?}"
    );
    let trusted = ask(deliver(&alerts_key, "d2")).await;
    assert_eq!(trusted.outcome, DeliverOutcome::Retryable, "{trusted:?}");
    assert!(terminate_logged(&mut child, dir.path()).success());
}
