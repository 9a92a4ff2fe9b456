//! How failures are reported: timeouts, statuses, redirects, refused
//! connections, busy notifiers, and requests that cannot be served.

use std::collections::BTreeMap;
use std::time::Duration;

use nkeys::XKey;
use rm_bus::msg::encode;
use rm_bus::notify::{
    ChannelDef, DeliverOutcome, DeliverRequest, EventType, NtfyAuth, NtfyChannel, NtfyPriorities,
    Severity, WebhookChannel,
};

use crate::support::{Answer, Harness, Receiver, closed_port, event};

const WAIT: Duration = Duration::from_secs(10);

fn hook(url: String) -> ChannelDef {
    ChannelDef::Webhook(WebhookChannel {
        url,
        secret: Some("whsec_aGVsbG8gd29ybGQgc2VjcmV0IGtleQ==".into()),
        headers: BTreeMap::new(),
    })
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_at_the_timeout_without_stalling_others() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|c| c.attempt_timeout = Duration::from_millis(1500)).await?;
    let mut hanging = Receiver::start(Answer::Hang).await?;
    let mut fast = Receiver::start(Answer::ok()).await?;
    let e = event("evt-h", EventType::Raised, Severity::Critical);

    let slow_req = h.request(&hook(hanging.url("/slow")), &e, "msg_hang", 1)?;
    let mut slow = Box::pin(h.deliver(&slow_req));
    // Drive the hanging delivery until the receiver holds it.
    tokio::select! {
        r = &mut slow => panic!("hanging delivery answered early: {r:?}"),
        got = hanging.next(WAIT) => { got?; }
    }
    // Another delivery goes through while the first one hangs.
    let fast_req = h.request(&hook(fast.url("/fast")), &e, "msg_fast", 1)?;
    tokio::select! {
        r = &mut slow => panic!("the hanging delivery finished before the fast one: {r:?}"),
        r = h.deliver(&fast_req) => {
            let r = r?;
            assert_eq!(r.outcome, DeliverOutcome::Delivered, "{r:?}");
        }
    }
    fast.next(WAIT).await?;

    let reply = slow.await?;
    assert_eq!(reply.outcome, DeliverOutcome::Retryable, "{reply:?}");
    assert_eq!(reply.status, None);
    let err = reply.error.unwrap_or_default();
    assert!(err.contains("did not answer within 1.5s"), "{err}");
    assert!(err.contains("http://127.0.0.1:"), "{err}");
    assert!(
        !err.contains("/slow"),
        "the error names only the origin: {err}"
    );
    assert!(reply.latency_ms < 10_000, "{}", reply.latency_ms);

    h.stop().await
}

#[tokio::test]
async fn a_busy_notifier_answers_retryable_instead_of_queueing_forever() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|c| {
        c.attempt_timeout = Duration::from_secs(3);
        c.max_concurrent = 1;
        c.queue_wait = Duration::from_millis(100);
    })
    .await?;
    let mut hanging = Receiver::start(Answer::Hang).await?;
    let fast = Receiver::start(Answer::ok()).await?;
    let e = event("evt-b", EventType::Raised, Severity::Info);

    let slow_req = h.request(&hook(hanging.url("/")), &e, "msg_1", 1)?;
    let mut slow = Box::pin(h.deliver(&slow_req));
    tokio::select! {
        r = &mut slow => panic!("answered early: {r:?}"),
        got = hanging.next(WAIT) => { got?; }
    }
    let busy_req = h.request(&hook(fast.url("/")), &e, "msg_2", 1)?;
    tokio::select! {
        r = &mut slow => panic!("the slot freed before the busy reply: {r:?}"),
        r = h.deliver(&busy_req) => {
            let r = r?;
            assert_eq!(r.outcome, DeliverOutcome::Retryable, "{r:?}");
            assert!(r.error.unwrap_or_default().contains("busy"));
        }
    }
    assert_eq!(slow.await?.outcome, DeliverOutcome::Retryable);
    h.stop().await
}

#[tokio::test]
async fn statuses_are_classified_and_retry_after_is_reported() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|_| {}).await?;
    let mut server = Receiver::start(Answer::ok()).await?;
    server.script([
        Answer::Status(503, vec![("Retry-After".into(), "7".into())], String::new()),
        Answer::Status(
            429,
            vec![("Retry-After".into(), "120".into())],
            String::new(),
        ),
        Answer::status(500),
        Answer::Status(
            400,
            vec![("Content-Type".into(), "application/json".into())],
            r#"{"code":40010,"http":400,"error":"invalid request: topic invalid"}"#.into(),
        ),
        Answer::status(410),
        Answer::status(401),
    ]);
    let ch = hook(server.url("/x"));
    let e = event("evt-s", EventType::Raised, Severity::Warning);
    let mut replies = Vec::new();
    for i in 0..6 {
        replies.push(h.deliver(&h.request(&ch, &e, "msg_s", i + 1)?).await?);
    }
    let summary: Vec<(DeliverOutcome, Option<u16>, Option<u64>)> = replies
        .iter()
        .map(|r| (r.outcome.clone(), r.status, r.retry_after_secs))
        .collect();
    assert_eq!(
        summary,
        [
            (DeliverOutcome::Retryable, Some(503), Some(7)),
            (DeliverOutcome::Retryable, Some(429), Some(120)),
            (DeliverOutcome::Retryable, Some(500), None),
            (DeliverOutcome::Failed, Some(400), None),
            (DeliverOutcome::Failed, Some(410), None),
            (DeliverOutcome::Failed, Some(401), None),
        ]
    );
    let err400 = replies[3].error.as_deref().unwrap_or_default();
    assert!(
        err400.contains("HTTP 400") && err400.contains("topic invalid"),
        "{err400}"
    );
    assert!(
        replies[4]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("gone")
    );
    assert_eq!(server.drain().len(), 6, "one HTTP request per attempt");

    // ntfy gets the same treatment
    server.script([Answer::status(503)]);
    let ntfy = ChannelDef::Ntfy(NtfyChannel {
        server_url: server.url("/"),
        topic: "t".into(),
        auth: NtfyAuth::None,
        click_base_url: None,
        priorities: NtfyPriorities::default(),
    });
    let r = h.deliver(&h.request(&ntfy, &e, "msg_n", 1)?).await?;
    assert_eq!(
        (r.outcome, r.status),
        (DeliverOutcome::Retryable, Some(503))
    );
    h.stop().await
}

#[tokio::test]
async fn redirects_are_not_followed() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|_| {}).await?;
    let mut elsewhere = Receiver::start(Answer::ok()).await?;
    let mut server = Receiver::start(Answer::ok()).await?;
    let target = elsewhere.url("/stolen?secret=1");
    server.script([
        Answer::Status(
            302,
            vec![("Location".into(), target.clone())],
            String::new(),
        ),
        Answer::Status(307, vec![("Location".into(), target)], String::new()),
        Answer::Status(
            308,
            vec![("Location".into(), "/moved".into())],
            String::new(),
        ),
    ]);
    let ch = hook(server.url("/hook"));
    let e = event("evt-r", EventType::Raised, Severity::Warning);
    for (attempt, code) in [(1, 302), (2, 307), (3, 308)] {
        let reply = h.deliver(&h.request(&ch, &e, "msg_r", attempt)?).await?;
        assert_eq!(reply.outcome, DeliverOutcome::Failed, "{reply:?}");
        assert_eq!(reply.status, Some(code));
        let err = reply.error.unwrap_or_default();
        assert!(err.contains("redirects are not followed"), "{err}");
        assert!(!err.contains("secret=1"), "{err}");
    }
    assert_eq!(server.drain().len(), 3);
    assert!(
        elsewhere.next(Duration::from_millis(300)).await.is_err(),
        "the redirect target got a request"
    );
    h.stop().await
}

#[tokio::test]
async fn connection_refused_is_retryable() -> anyhow::Result<()> {
    let h = Harness::with_notifier(|_| {}).await?;
    let port = closed_port().await?;
    let ch = hook(format!("http://127.0.0.1:{port}/hook"));
    let e = event("evt-c", EventType::Raised, Severity::Warning);
    let reply = h.deliver(&h.request(&ch, &e, "msg_c", 1)?).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Retryable, "{reply:?}");
    assert_eq!(reply.status, None);
    let err = reply.error.unwrap_or_default();
    assert!(err.contains("cannot connect"), "{err}");
    h.stop().await
}

#[tokio::test]
async fn requests_that_cannot_be_served_get_a_clear_failed_reply() -> anyhow::Result<()> {
    let mut h = Harness::new().await?;
    let alerts_pub = h.alerts_xkey.public_key();
    h.spawn_notifier("n1", |c| c.trusted_senders = vec![alerts_pub])
        .await?;
    let mut server = Receiver::start(Answer::ok()).await?;
    let e = event("evt-x", EventType::Raised, Severity::Warning);
    let good = hook(server.url("/"));

    // Sealed to some other xkey: the notifier cannot open it.
    let mut req = h.request(&good, &e, "msg_x", 1)?;
    req.channel = DeliverRequest::seal_channel(&good, &h.alerts_xkey, &XKey::new().public_key())?;
    let reply = h.deliver(&req).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Failed);
    assert_eq!(reply.delivery_id.as_deref(), Some("d-msg_x-1"));
    let err = reply.error.unwrap_or_default();
    assert!(err.contains("cannot open the sealed channel"), "{err}");
    assert!(err.contains(&h.notifier_xkey.public_key()), "{err}");

    // Sealed by an xkey this notifier does not trust.
    let stranger = XKey::new();
    let mut req = h.request(&good, &e, "msg_y", 1)?;
    req.sender_xkey = stranger.public_key();
    req.channel = DeliverRequest::seal_channel(&good, &stranger, &h.notifier_xkey.public_key())?;
    let reply = h.deliver(&req).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Failed);
    assert!(reply.error.unwrap_or_default().contains("not trusted"));

    // A channel type from a newer sender.
    let mut req = h.request(&good, &e, "msg_new", 1)?;
    req.channel = rm_bus::seal::seal(
        &serde_json::json!({"type": "matrix", "room": "!ops:example.org"}),
        &h.alerts_xkey,
        &h.notifier_xkey.public_key(),
    )?;
    let reply = h.deliver(&req).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Failed);
    let err = reply.error.unwrap_or_default();
    assert!(
        err.contains("not understood") && err.contains("matrix"),
        "{err}"
    );

    // A channel that cannot work.
    let bad = ChannelDef::Ntfy(NtfyChannel {
        server_url: server.url("/"),
        topic: "no/slashes".into(),
        auth: NtfyAuth::None,
        click_base_url: None,
        priorities: NtfyPriorities::default(),
    });
    let reply = h.deliver(&h.request(&bad, &e, "msg_z", 1)?).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Failed);
    assert!(
        reply
            .error
            .unwrap_or_default()
            .contains("invalid channel: ntfy topic")
    );

    // Malformed requests: missing fields, not JSON at all.
    let reply = h
        .deliver_raw(encode(&serde_json::json!({"v": 1, "delivery_id": "d9"})))
        .await?;
    assert_eq!(reply.outcome, DeliverOutcome::Failed);
    assert_eq!(reply.delivery_id.as_deref(), Some("d9"));
    assert!(
        reply
            .error
            .unwrap_or_default()
            .contains("malformed deliver message")
    );
    let reply = h
        .deliver_raw(bytes::Bytes::from_static(b"\xff not json"))
        .await?;
    assert_eq!(reply.outcome, DeliverOutcome::Failed);
    assert_eq!(reply.delivery_id, None);

    assert!(
        server.next(Duration::from_millis(200)).await.is_err(),
        "nothing was sent for refused requests"
    );
    // The notifier is still serving.
    let reply = h.deliver(&h.request(&good, &e, "msg_ok", 1)?).await?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    server.next(WAIT).await?;
    h.stop().await
}

#[tokio::test]
async fn shutdown_lets_in_flight_deliveries_finish_and_replies() -> anyhow::Result<()> {
    let mut h = Harness::with_notifier(|c| {
        c.attempt_timeout = Duration::from_secs(5);
        c.shutdown_grace = Duration::from_secs(8);
    })
    .await?;
    let mut server = Receiver::start(Answer::After(
        Duration::from_millis(300),
        Box::new(Answer::ok()),
    ))
    .await?;
    let e = event("evt-sd", EventType::Resolved, Severity::Info);
    let req = h.request(&hook(server.url("/")), &e, "msg_sd", 1)?;
    let alerts = h.alerts.client.clone();
    let in_flight = tokio::spawn(async move {
        alerts
            .request(rm_bus::notify::deliver_subject(), encode(&req))
            .await
    });
    server.next(WAIT).await?;
    // Stop while the receiver still holds the request.
    h.signal_stop();
    let reply = tokio::time::timeout(WAIT, in_flight).await???;
    let reply: rm_bus::notify::DeliverReply = rm_bus::msg::decode("reply", &reply.payload)?;
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    h.stop().await
}

#[tokio::test]
async fn keeps_serving_across_a_bus_restart() -> anyhow::Result<()> {
    let mut h = Harness::with_notifier(|_| {}).await?;
    let mut server = Receiver::start(Answer::ok()).await?;
    let e = event("evt-rs", EventType::Raised, Severity::Critical);
    let req = h.request(&hook(server.url("/")), &e, "msg_rs", 1)?;
    assert_eq!(h.deliver(&req).await?.outcome, DeliverOutcome::Delivered);
    server.next(WAIT).await?;

    h.bus.restart().await?;
    // Both sides reconnect by themselves; the notifier resubscribes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        // Short tries: a request sent while disconnected is simply lost.
        match tokio::time::timeout(Duration::from_secs(1), h.deliver(&req)).await {
            Ok(Ok(reply)) => break reply,
            Ok(Err(_)) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(e.context("the notifier never came back")),
            Err(_) => anyhow::bail!("the notifier never came back"),
        }
    };
    assert_eq!(reply.outcome, DeliverOutcome::Delivered, "{reply:?}");
    assert_eq!(
        server.next(WAIT).await?.header("webhook-id"),
        Some("msg_rs")
    );
    h.stop().await
}
