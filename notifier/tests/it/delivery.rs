//! What arrives at the endpoints: the ntfy JSON publish, the signed webhook,
//! and one stable `webhook-id` across notifier copies and retries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use data_encoding::BASE64;
use futures_util::future::join_all;
use rm_bus::notify::{
    ChannelDef, DeliverOutcome, EventType, NotificationEvent, NtfyAuth, NtfyChannel,
    NtfyPriorities, Severity, WebhookChannel,
};
use serde_json::json;

use crate::support::{Answer, Harness, Receiver, event, python_verify};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ntfy(server: &Receiver, auth: NtfyAuth) -> ChannelDef {
    ChannelDef::Ntfy(NtfyChannel {
        server_url: server.url("/"),
        topic: "rm-backups".into(),
        auth,
        click_base_url: None,
        priorities: NtfyPriorities::default(),
    })
}

fn webhook(server: &Receiver, secret: Option<&str>) -> ChannelDef {
    ChannelDef::Webhook(WebhookChannel {
        url: server.url("/hooks/restic?team=ops"),
        secret: secret.map(str::to_owned),
        headers: BTreeMap::from([("X-Team".into(), "storage".into())]),
    })
}

#[tokio::test]
async fn ntfy_request_is_the_documented_json_publish() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|_| {}).await?;
    let mut server = Receiver::start(Answer::ok()).await?;

    let bearer = ntfy(
        &server,
        NtfyAuth::Bearer {
            token: "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2".into(),
        },
    );
    let e = event("evt-1", EventType::Raised, Severity::Critical);
    let reply = h.deliver(&h.request(&bearer, &e, "wh-1", 1)?).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    assert_eq!(reply.status, Some(200));
    assert_eq!(reply.delivery_id.as_deref(), Some("d-wh-1-1"));
    assert_eq!(reply.attempt, 1);
    assert_eq!(reply.notifier.as_deref(), Some("n1"));

    let got = server.next(WAIT).await?;
    // JSON publish: POST to the server root, not /<topic>.
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.header("authorization"),
        Some("Bearer tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2")
    );
    let body = got.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["topic", "title", "message", "priority", "tags", "click"])
    );
    assert_eq!(body["topic"], "rm-backups");
    assert_eq!(body["title"], "Backup failed on fileserver-1");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("backup of /home failed: repository is locked — ünïcödé"),
        "{body}"
    );
    assert_eq!(body["priority"], 5, "critical is ntfy's max priority");
    assert_eq!(
        body["tags"],
        json!(["rotating_light", "backup_failed", "fileserver-1"])
    );
    assert_eq!(body["click"], "https://rm.example/alerts/a42");

    // basic auth, a warning, resolved
    let basic = ntfy(
        &server,
        NtfyAuth::Basic {
            user: "phil".into(),
            password: "mypass".into(),
        },
    );
    let mut resolved = event("evt-2", EventType::Resolved, Severity::Warning);
    resolved.data.alert.resolved_by = Some("system".into());
    let reply = h.deliver(&h.request(&basic, &resolved, "wh-2", 1)?).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    let got = server.next(WAIT).await?;
    let auth = got.header("authorization").unwrap();
    let decoded = BASE64.decode(auth.strip_prefix("Basic ").unwrap().as_bytes())?;
    assert_eq!(decoded, b"phil:mypass");
    let body = got.json();
    assert_eq!(body["title"], "Resolved: Backup failed on fileserver-1");
    assert_eq!(body["tags"][0], "white_check_mark");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("Resolved by system")
    );

    // the channel's priority overrides; no auth header without auth
    let ChannelDef::Ntfy(mut quiet) = ntfy(&server, NtfyAuth::None) else {
        unreachable!()
    };
    quiet.priorities.critical = Some(3);
    let reply = h
        .deliver(&h.request(&ChannelDef::Ntfy(quiet), &e, "wh-3", 1)?)
        .await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered);
    let got = server.next(WAIT).await?;
    assert_eq!(got.json()["priority"], 3);
    assert_eq!(got.header("authorization"), None);

    h.stop().await
}

#[tokio::test]
async fn webhook_signature_verifies_with_an_independent_implementation() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|_| {}).await?;
    let mut server = Receiver::start(Answer::Status(204, Vec::new(), String::new())).await?;

    let e = event("evt-7", EventType::Acknowledged, Severity::Warning);
    let reply = h
        .deliver(&h.request(&webhook(&server, Some(SECRET)), &e, "msg_2Kx9", 3)?)
        .await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    assert_eq!(reply.status, Some(204));
    assert_eq!(reply.attempt, 3);

    let got = server.next(WAIT).await?;
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/hooks/restic?team=ops");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("x-team"), Some("storage"));
    assert_eq!(got.header("webhook-id"), Some("msg_2Kx9"));
    // The body is the envelope, exactly.
    assert_eq!(got.json(), serde_json::to_value(&e)?);
    let top: BTreeSet<String> = got.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        top,
        ["data", "id", "timestamp", "type"].map(String::from).into()
    );
    assert_eq!(got.json()["type"], "alert.acknowledged");

    let ts = got.header("webhook-timestamp").unwrap().to_owned();
    let sig = got.header("webhook-signature").unwrap().to_owned();
    assert!(sig.starts_with("v1,"), "{sig}");
    let (ok, verdict) = python_verify(SECRET, "msg_2Kx9", &ts, &got.body, &sig).await?;
    assert!(ok, "independent verification failed: {verdict}");

    // The check can fail: a changed body, id or secret does not verify.
    let mut tampered = got.body.clone();
    tampered.push(b' ');
    let (ok, verdict) = python_verify(SECRET, "msg_2Kx9", &ts, &tampered, &sig).await?;
    assert!(!ok, "tampered body verified: {verdict}");
    let (ok, _) = python_verify(SECRET, "msg_other", &ts, &got.body, &sig).await?;
    assert!(!ok, "another id verified");
    let other_secret = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";
    let (ok, _) = python_verify(other_secret, "msg_2Kx9", &ts, &got.body, &sig).await?;
    assert!(!ok, "another secret verified");

    // Without a secret: the same headers, no signature.
    let reply = h
        .deliver(&h.request(&webhook(&server, None), &e, "msg_unsigned", 1)?)
        .await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered);
    let got = server.next(WAIT).await?;
    assert_eq!(got.header("webhook-id"), Some("msg_unsigned"));
    assert!(got.header("webhook-timestamp").is_some());
    assert_eq!(got.header("webhook-signature"), None);

    // A test send goes through the same path with the same envelope shape.
    let test = NotificationEvent::test("test-1", 1_777_636_496_000, None);
    let reply = h
        .deliver(&h.request(&webhook(&server, Some(SECRET)), &test, "msg_test", 1)?)
        .await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered);
    let got = server.next(WAIT).await?;
    assert_eq!(got.json()["type"], "alert.test");
    assert_eq!(got.json()["data"]["alert"]["severity"], "info");
    let (ok, verdict) = python_verify(
        SECRET,
        "msg_test",
        got.header("webhook-timestamp").unwrap(),
        &got.body,
        got.header("webhook-signature").unwrap(),
    )
    .await?;
    assert!(ok, "{verdict}");

    h.stop().await
}

#[tokio::test]
async fn two_notifiers_share_the_queue_and_keep_one_webhook_id() -> anyhow::Result<()> {
    let mut h = Harness::new().await?;
    h.spawn_notifier("n1", |_| {}).await?;
    h.spawn_notifier("n2", |_| {}).await?;
    let mut server = Receiver::start(Answer::ok()).await?;
    let channel = webhook(&server, Some(SECRET));

    const N: usize = 40;
    let requests = (0..N)
        .map(|i| {
            let e = event(&format!("evt-{i}"), EventType::Raised, Severity::Warning);
            h.request(&channel, &e, &format!("msg_{i}"), 1)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let replies = join_all(requests.iter().map(|r| h.deliver(r))).await;

    let mut handled_by = BTreeMap::<String, usize>::new();
    for reply in replies {
        let reply = reply?;
        assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
        *handled_by
            .entry(reply.notifier.unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        handled_by.keys().map(String::as_str).collect::<Vec<_>>(),
        ["n1", "n2"],
        "both copies took part: {handled_by:?}"
    );
    // Every reply is sent after its HTTP exchange: all requests are in.
    let got = server.drain();
    assert_eq!(got.len(), N, "each request was delivered exactly once");
    let ids: BTreeSet<&str> = got.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), N);

    // Retries of one event carry the same webhook-id, whichever copy
    // handles them: a receiver deduplicating on it sees the event once.
    server.script([Answer::status(503), Answer::status(502)]);
    let e = event("evt-retry", EventType::Raised, Severity::Critical);
    let mut outcomes = Vec::new();
    for attempt in 1..=3 {
        let reply = h
            .deliver(&h.request(&channel, &e, "msg_retry", attempt)?)
            .await?;
        outcomes.push(reply.outcome);
    }
    assert_eq!(
        outcomes,
        [
            DeliverOutcome::Retryable,
            DeliverOutcome::Retryable,
            DeliverOutcome::Delivered
        ]
    );
    let got = server.drain();
    assert_eq!(got.len(), 3);
    let mut seen = BTreeSet::new();
    for r in &got {
        assert_eq!(r.header("webhook-id"), Some("msg_retry"));
        assert_eq!(r.json()["id"], "evt-retry");
        seen.insert(r.header("webhook-id").unwrap_or_default().to_owned());
    }
    assert_eq!(
        seen.len(),
        1,
        "a deduplicating receiver sees the event once"
    );

    h.stop().await
}
