//! The whole product on one alert: a real backup fails (wrong password),
//! the real alerts role raises `backup_failed`, the real notifier delivers
//! a signed webhook to a local receiver; after the credential is fixed the
//! next real backup succeeds and the alert resolves, delivered the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use nkeys::XKey;
use rm_alerts::api as alerts_api;
use rm_bus::creds::Role;
use rm_bus::notify::{ChannelDef, WebhookChannel};
use rm_bus::reqack::RetryPolicy;
use rm_bus::subject::SvcRole;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// One webhook request: its headers (lower-cased names) and JSON body.
struct Hook {
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A minimal HTTP receiver that answers 200 to everything.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Hook>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                let mut headers = BTreeMap::new();
                r.read_line(&mut line).await.ok()?;
                loop {
                    line.clear();
                    r.read_line(&mut line).await.ok()?;
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let (k, v) = l.split_once(':')?;
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
                let n: usize = headers.get("content-length")?.parse().ok()?;
                let mut body = vec![0; n];
                r.read_exact(&mut body).await.ok()?;
                let mut stream = r.into_inner();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let body = serde_json::from_slice(&body).ok()?;
                tx.send(Hook { headers, body }).ok()
            });
        }
    });
    (url, rx)
}

async fn next_of(rx: &mut mpsc::UnboundedReceiver<Hook>, kind: &str) -> Hook {
    loop {
        let h = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} webhook"))
            .expect("receiver running");
        if h.body["type"] == kind {
            return h;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_is_alerted_by_webhook_and_resolved_by_the_next_success() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let notifier_key = XKey::new();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    let alerts_cfg = rm_alerts::Config {
        data_dir: env.cp.data_dir.clone(),
        db_path: None,
        connect: env
            .bus
            .spec(&Role::Alerts, env.bus.creds_for(&Role::Alerts).unwrap()),
        notifier_xkey: notifier_key.public_key(),
        ui_base_url: Some("https://rm.test".into()),
        timings: rm_alerts::Timings {
            tick: Duration::from_millis(200),
            cursor_overlap: Duration::from_secs(1),
            deliver: RetryPolicy {
                attempt_timeout: Duration::from_secs(4),
                deadline: Some(Duration::from_secs(120)),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                jitter: 0.0,
            },
            wake_debounce: Duration::from_millis(20),
            outbox_poll: Duration::from_millis(100),
            max_in_flight: 4,
            ..rm_alerts::Timings::default()
        },
        anomaly: Default::default(),
        clock: rm_bus::clock::system(),
    };
    let alerts = tokio::spawn(rm_alerts::run(alerts_cfg, stopped(stop_rx.clone())));
    let n_spec = env
        .bus
        .spec(&Role::Notifier, env.bus.creds_for(&Role::Notifier).unwrap());
    let notifier = tokio::spawn(rm_notifier::run(
        rm_notifier::NotifierConfig::new(n_spec, notifier_key),
        stopped(stop_rx.clone()),
    ));

    // a signed webhook channel, sealed to the alerts role
    let (url, mut hooks) = receiver().await;
    let key: alerts_api::PubKey = eventually("alerts role up", || async {
        env.call_role(SvcRole::Alerts, alerts_api::PUBKEY, alerts_api::Done {})
            .await
            .ok()
    })
    .await;
    let def = ChannelDef::Webhook(WebhookChannel {
        url,
        secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        headers: BTreeMap::new(),
    });
    let _: alerts_api::ChannelView = env
        .call_role(
            SvcRole::Alerts,
            alerts_api::CHANNEL_CREATE,
            alerts_api::ChannelCreate {
                name: "ops".into(),
                enabled: true,
                definition: alerts_api::SealedChannel::seal(&def, &key.xkey).unwrap(),
            },
        )
        .await
        .unwrap();

    let agent = env.agent("al-1", &bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("al", &host).await;
    env.attach_append_only(&repo, "al", &host, "a-wrong-password")
        .await;
    let src = env.path("src");
    make_tree(&src, &[("a.txt", 100)]);
    let created = env.job(&host, &repo, backup(&[&src])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.error_kind.as_deref(), Some("wrong_password"), "{job:?}");

    let raised = next_of(&mut hooks, "alert.raised").await;
    let alert = &raised.body["data"]["alert"];
    assert_eq!(alert["kind"], "backup_failed", "{}", raised.body);
    assert_eq!(
        raised.body["data"]["host"]["id"],
        host.as_str(),
        "{}",
        raised.body
    );
    for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(raised.headers.contains_key(h), "{h}: {:?}", raised.headers);
    }

    // the operator fixes the credential; the next backup resolves it
    env.attach_append_only(&repo, "al", &host, REPO_PASSWORD)
        .await;
    let created = env.job(&host, &repo, backup(&[&src])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let resolved = next_of(&mut hooks, "alert.resolved").await;
    assert_eq!(
        resolved.body["data"]["alert"]["id"], alert["id"],
        "{}",
        resolved.body
    );
    assert_ne!(resolved.headers["webhook-id"], raised.headers["webhook-id"]);

    let _ = stop_tx.send(true);
    alerts.await.unwrap().unwrap();
    notifier.await.unwrap().unwrap();
}
