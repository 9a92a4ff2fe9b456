//! The delivery outbox with real notifiers and real receivers: delivery
//! once a notifier starts, one stable webhook-id across notifier copies
//! and retries, timeouts, retryable and final statuses, mutes, channels
//! and the test send.

use std::collections::{BTreeMap, BTreeSet};

use rm_alerts::api::{self, ChannelTest, ChannelTestResult, ChannelView};
use rm_bus::notify::{ChannelDef, NtfyAuth, NtfyChannel, NtfyPriorities, WebhookChannel};
use rm_store::jobs::JobStatus;

use crate::support::{Answer, Env, Receiver, wait_for};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn an_alert_raised_while_no_notifier_runs_is_delivered_when_one_starts() -> anyhow::Result<()>
{
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), Some(SECRET))
        .await?;

    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    // Attempts fail with no responder and are logged.
    let row = wait_for("a logged attempt", || async {
        let rows = env.outbox().await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let log = env.log_of(&row.id).await?;
        Ok((log.len() >= 2).then_some((row, log)))
    })
    .await?;
    let (row, log) = row;
    assert!(log.iter().all(|e| e.outcome == "no_responder"), "{log:?}");
    assert_eq!(log[0].attempt, 1);
    assert_eq!(log[1].attempt, 2);
    assert_eq!(env.outbox().await?[0].state, "pending");

    env.start_notifier("n1").await?;
    let got = rx.next().await?;
    assert_eq!(got.header("webhook-id"), Some(row.webhook_id.as_str()));
    assert!(
        got.header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,"))
    );
    assert_eq!(got.json()["type"], "alert.raised");
    let done = wait_for("delivered", || async {
        let rows = env.outbox().await?;
        Ok(rows.into_iter().find(|r| r.state == "delivered"))
    })
    .await?;
    let log = env.log_of(&done.id).await?;
    let last = log.last().map(|e| (e.outcome.as_str(), e.status_code));
    assert_eq!(last, Some(("delivered", Some(200))), "{log:?}");
    env.stop_all().await
}

#[tokio::test]
async fn two_notifiers_record_each_event_once_with_one_stable_webhook_id() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    // Every event's first attempt is answered 503: each event is retried,
    // by whichever copy the queue group picks.
    let mut rx = Receiver::start(Answer::FirstOfEachId(Default::default(), 503)).await?;
    for i in 0..4 {
        env.add_host(&format!("h{i}"), &format!("host-{i}")).await?;
    }
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_notifier("n2").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), Some(SECRET))
        .await?;

    for i in 0..4 {
        env.job_done(&format!("h{i}"), "r1", "backup", JobStatus::Failed)
            .await?;
    }
    let rows = wait_for("four deliveries", || async {
        let rows = env.outbox().await?;
        Ok((rows.len() == 4 && rows.iter().all(|r| r.state == "delivered")).then_some(rows))
    })
    .await?;

    // Each event recorded once: one row per alert for the one channel.
    let alert_ids: BTreeSet<_> = rows.iter().filter_map(|r| r.alert_id.clone()).collect();
    assert_eq!(alert_ids.len(), 4);

    // A receiver deduplicating on webhook-id sees each event once; every
    // request of one event carries the same id.
    let mut by_id: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for got in rx.drain() {
        let id = got.header("webhook-id").unwrap_or_default().to_owned();
        by_id.entry(id).or_default().push(got.json());
    }
    let ids: BTreeSet<_> = rows.iter().map(|r| r.webhook_id.clone()).collect();
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), ids);
    for (id, bodies) in &by_id {
        assert!(
            bodies.len() >= 2,
            "{id}: the 503 was retried: {}",
            bodies.len()
        );
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "same envelope every time"
        );
    }
    for row in &rows {
        let log = env.log_of(&row.id).await?;
        assert_eq!(log.first().map(|e| e.status_code), Some(Some(503)));
        assert_eq!(log.first().map(|e| e.outcome.as_str()), Some("retryable"));
        assert_eq!(log.last().map(|e| e.outcome.as_str()), Some("delivered"));
        let attempts: Vec<i64> = log.iter().map(|e| e.attempt).collect();
        assert_eq!(attempts, (1..=log.len() as i64).collect::<Vec<_>>());
    }
    env.stop_all().await
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_at_the_timeout_logged_and_retried() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    rx.script([Answer::Hang]);
    env.add_host("h1", "db-1").await?;
    env.start_notifier("n1").await?; // 1 s attempt timeout
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.set_offline("h1").await?;
    let row = wait_for("delivered", || async {
        let rows = env.outbox().await?;
        Ok(rows.into_iter().find(|r| r.state == "delivered"))
    })
    .await?;
    let log = env.log_of(&row.id).await?;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].outcome, "retryable");
    assert_eq!(log[0].status_code, None);
    let error = log[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("did not answer within 1s"), "{error}");
    assert!(
        !error.contains("/hook"),
        "the endpoint only by origin: {error}"
    );
    assert_eq!(log[1].outcome, "delivered");
    let first = rx.next().await?;
    let second = rx.next().await?;
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    env.stop_all().await
}

#[tokio::test]
async fn a_503_is_retried_and_a_400_is_not() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut retry = Receiver::start(Answer::Status(200)).await?;
    retry.script([Answer::Status(503), Answer::Status(503)]);
    let refuse = Receiver::start(Answer::Status(400)).await?;
    env.add_host("h1", "db-1").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    let ok_channel = env.add_webhook("retrying", &retry.url("/a"), None).await?;
    let bad_channel = env.add_webhook("refusing", &refuse.url("/b"), None).await?;

    env.set_offline("h1").await?;
    let rows = wait_for("both rows finished", || async {
        let rows = env.outbox().await?;
        Ok((rows.len() == 2 && rows.iter().all(|r| r.state != "pending")).then_some(rows))
    })
    .await?;
    let ok = rows.iter().find(|r| r.channel_id == ok_channel);
    let bad = rows.iter().find(|r| r.channel_id == bad_channel);
    let (Some(ok), Some(bad)) = (ok, bad) else {
        anyhow::bail!("one row per channel: {rows:?}");
    };

    assert_eq!(ok.state, "delivered");
    assert_eq!(ok.attempts, 3);
    let log = env.log_of(&ok.id).await?;
    let seen: Vec<_> = log
        .iter()
        .map(|e| (e.attempt, e.outcome.as_str(), e.status_code))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "retryable", Some(503)),
            (2, "retryable", Some(503)),
            (3, "delivered", Some(200)),
        ]
    );
    let ids: BTreeSet<_> = retry
        .drain()
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, BTreeSet::from([ok.webhook_id.clone()]));

    // Final: failed after one attempt, never tried again.
    assert_eq!(bad.state, "failed");
    assert_eq!(bad.attempts, 1);
    let log = env.log_of(&bad.id).await?;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, "failed");
    assert_eq!(log[0].status_code, Some(400));
    assert!(bad.last_error.as_deref().is_some_and(|e| e.contains("400")));
    env.stop_all().await
}

#[tokio::test]
async fn a_muted_host_records_alerts_without_notifying() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;
    // Told before the mute.
    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let told = env
        .wait_alert("h1", "backup_failed", "the first alert", |a| a.is_open())
        .await?;
    assert_eq!(rx.next().await?.json()["type"], "alert.raised");

    let until = env.now() + 3_600_000;
    let _: api::Done = env
        .call(
            api::MUTE_SET,
            api::MuteSet {
                host_id: "h1".into(),
                until_ms: until,
                reason: Some("nightly maintenance".into()),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    env.job_done("h1", "r1", "check", JobStatus::Failed).await?;
    let alert = env
        .wait_alert("h1", "check_failed", "the alert", |a| a.is_open())
        .await?;
    assert!(!alert.notified);
    let queued = |rows: Vec<rm_store::delivery::Delivery>| {
        rows.into_iter()
            .filter(|d| d.alert_id.as_deref() == Some(alert.id.as_str()))
            .count()
    };
    assert_eq!(queued(env.outbox().await?), 0, "muted: nothing queued");
    // The role counted the delivery it held back (one channel) ...
    let m = env
        .wait_suppressed("the muted delivery counted", |s| s.host_muted, 1)
        .await?;
    assert_eq!(m.suppressed.host_muted, 1, "{m:?}");
    // ... and the receiver has had only the alert told before the mute.
    assert_eq!(rx.connections(), 1, "nothing more reached the receiver");

    // What they were told about still reaches them during the mute.
    env.job_done("h1", "r1", "backup", JobStatus::Succeeded)
        .await?;
    let got = rx.next().await?;
    assert_eq!(got.json()["type"], "alert.resolved");
    assert_eq!(got.json()["data"]["alert"]["id"], told.id.as_str());
    assert_eq!(queued(env.outbox().await?), 0, "still muted");
    assert_eq!(rx.connections(), 2, "the raise, then the resolution told");

    // The mute ends while the alert is still open: it is notified now.
    let _: api::Done = env
        .call(
            api::MUTE_CLEAR,
            api::HostRef {
                host_id: "h1".into(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let got = rx.next().await?;
    assert_eq!(got.json()["type"], "alert.raised");
    assert_eq!(got.json()["data"]["alert"]["id"], alert.id.as_str());
    env.wait_alert("h1", "check_failed", "notified", |a| a.notified)
        .await?;
    env.stop_all().await
}

#[tokio::test]
async fn channels_are_stored_encrypted_listed_redacted_and_test_sent() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut hook = Receiver::start(Answer::Status(200)).await?;
    let mut ntfy = Receiver::start(Answer::Status(200)).await?;
    let refuse = Receiver::start(Answer::Status(400)).await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;

    let topic = "rm-secret-topic-93f1";
    let token = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2";
    let ntfy_def = ChannelDef::Ntfy(NtfyChannel {
        server_url: ntfy.url("/"),
        topic: topic.into(),
        auth: NtfyAuth::Bearer {
            token: token.into(),
        },
        click_base_url: None,
        priorities: NtfyPriorities::default(),
    });
    let created: ChannelView = env
        .call(
            api::CHANNEL_CREATE,
            api::ChannelCreate {
                name: "phone".into(),
                enabled: true,
                definition: env.seal(&ntfy_def).await?,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(created.kind, "ntfy");
    let hook_id = env
        .add_webhook("ops", &hook.url("/hooks/x?token=s3cr3t"), Some(SECRET))
        .await?;

    // At rest: no secret in the clear anywhere in the row.
    let mut conn = env.store.read().await?;
    for ch in rm_store::channels::list(&mut conn).await? {
        let blob = ch.secrets_enc.clone().unwrap_or_default();
        for secret in [topic, token, "s3cr3t", SECRET] {
            assert!(!ch.config_json.contains(secret), "{}", ch.config_json);
            assert!(!blob.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
    drop(conn);
    let list: api::ChannelList = env
        .call(api::CHANNEL_LIST, api::Done {})
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let text = serde_json::to_string(&list)?;
    for secret in [topic, token, "s3cr3t", SECRET, "/hooks"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(list.channels.len(), 2);

    // Test sends through the real path: saved channels ...
    let r: ChannelTestResult = env
        .call(
            api::CHANNEL_TEST,
            ChannelTest {
                channel_id: Some(created.id.clone()),
                definition: None,
                clear_secret: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.notifier.as_deref(), Some("n1"));
    let got = ntfy.next().await?;
    assert_eq!(got.path, "/");
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(got.json()["topic"], topic);
    let r: ChannelTestResult = env
        .call(
            api::CHANNEL_TEST,
            ChannelTest {
                channel_id: Some(hook_id.clone()),
                definition: None,
                clear_secret: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(r.ok, "{r:?}");
    let got = hook.next().await?;
    assert_eq!(got.json()["type"], "alert.test");
    assert_eq!(got.json()["data"]["alert"]["severity"], "info");
    assert!(got.header("webhook-signature").is_some());

    // ... and an unsaved definition, whose endpoint refuses.
    let unsaved = ChannelDef::Webhook(WebhookChannel {
        url: refuse.url("/nope"),
        secret: None,
        headers: BTreeMap::new(),
    });
    let r: ChannelTestResult = env
        .call(
            api::CHANNEL_TEST,
            ChannelTest {
                channel_id: None,
                definition: Some(env.seal(&unsaved).await?),
                clear_secret: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!r.ok);
    assert_eq!(r.outcome, "failed");
    assert_eq!(r.status, Some(400));

    // Invalid definitions and duplicate names are refused.
    let bad = ChannelDef::Webhook(WebhookChannel {
        url: "ftp://nowhere".into(),
        secret: None,
        headers: BTreeMap::new(),
    });
    let err = env
        .call::<_, ChannelView>(
            api::CHANNEL_CREATE,
            api::ChannelCreate {
                name: "bad".into(),
                enabled: true,
                definition: env.seal(&bad).await?,
            },
        )
        .await
        .expect_err("invalid");
    assert_eq!(err.code, "invalid");
    let err = env
        .add_webhook("ops", &hook.url("/"), None)
        .await
        .expect_err("duplicate name");
    assert!(err.to_string().contains("conflict"), "{err}");

    // Disable, then delete.
    let updated: ChannelView = env
        .call(
            api::CHANNEL_UPDATE,
            api::ChannelUpdate {
                channel_id: hook_id.clone(),
                name: None,
                enabled: Some(false),
                definition: None,
                clear_secret: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!updated.enabled);
    let _: api::Done = env
        .call(
            api::CHANNEL_DELETE,
            api::ChannelRef {
                channel_id: hook_id,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let list: api::ChannelList = env
        .call(api::CHANNEL_LIST, api::Done {})
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(list.channels.len(), 1);
    let mut conn = env.store.read().await?;
    let audit = rm_store::audit::recent(&mut conn, 20).await?;
    let actions: Vec<_> = audit.iter().map(|e| e.action.as_str()).collect();
    for a in ["channel.create", "channel.update", "channel.delete"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert!(
        audit
            .iter()
            .all(|e| e.role == "alerts" && e.actor == "alice")
    );
    drop(conn);
    env.stop_all().await
}

#[tokio::test]
async fn shutdown_lets_an_attempt_in_flight_finish_and_be_logged() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Slow(std::time::Duration::from_millis(500), 200)).await?;
    env.add_host("h1", "db-1").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.set_offline("h1").await?;
    // The endpoint has the request and answers in a moment: stop now.
    rx.next().await?;
    env.stop_alerts().await?;
    let rows = env.outbox().await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "delivered", "{rows:?}");
    let log = env.log_of(&rows[0].id).await?;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, "delivered");
    env.stop_all().await
}

#[tokio::test]
async fn a_delivery_is_given_up_after_the_deadline() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    env.timings.deliver.deadline = Some(std::time::Duration::from_millis(300));
    let rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.start_alerts().await?; // no notifier at all
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.set_offline("h1").await?;
    let row = wait_for("given up", || async {
        let rows = env.outbox().await?;
        Ok(rows.into_iter().find(|r| r.state == "failed"))
    })
    .await?;
    let error = row.last_error.clone().unwrap_or_default();
    assert!(error.starts_with("gave up after"), "{error}");
    assert!(error.contains("no notifier is running"), "{error}");
    let log = env.log_of(&row.id).await?;
    assert_eq!(log.len() as i64, row.attempts, "every attempt logged");
    assert!(log.iter().all(|e| e.outcome == "no_responder"));
    env.stop_all().await
}

#[tokio::test]
async fn a_429_is_retried_no_earlier_than_its_retry_after() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let rx = Receiver::start(Answer::RetryAfter(429, 120)).await?;
    env.add_host("h1", "db-1").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.set_offline("h1").await?;
    let (row, log) = wait_for("a logged 429", || async {
        let Some(row) = env.outbox().await?.into_iter().next() else {
            return Ok(None);
        };
        let log = env.log_of(&row.id).await?;
        Ok((!log.is_empty()).then_some((row, log)))
    })
    .await?;
    assert_eq!(log[0].status_code, Some(429));
    assert_eq!(log[0].outcome, "retryable");
    // Re-read: the retry is scheduled in the same transaction as the log.
    let row = env
        .outbox()
        .await?
        .into_iter()
        .find(|r| r.id == row.id)
        .unwrap_or(row);
    assert_eq!(row.state, "pending");
    assert!(
        row.next_attempt_at >= log[0].ts + 120_000,
        "next attempt {} only {} ms after the 429",
        row.next_attempt_at,
        row.next_attempt_at - log[0].ts
    );
    env.stop_all().await
}

#[tokio::test]
async fn an_alert_raised_during_a_mute_is_notified_when_the_window_ends() -> anyhow::Result<()> {
    let (mut env, clock) = Env::manual(1_772_409_600_000).await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;
    let _: api::Done = env
        .call(
            api::MUTE_SET,
            api::MuteSet {
                host_id: "h1".into(),
                until_ms: env.now() + 3_600_000,
                reason: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let alert = env
        .wait_alert("h1", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    assert!(!alert.notified);
    let m = env
        .wait_suppressed("the muted delivery counted", |s| s.host_muted, 1)
        .await?;
    assert_eq!(m.suppressed.host_muted, 1, "{m:?}");
    assert_eq!(rx.connections(), 0, "the receiver got nothing");
    // Ticks inside the window change nothing.
    clock.advance(std::time::Duration::from_secs(1800));
    env.wait_alert("h1", "backup_failed", "a tick in the window", |a| {
        a.last_seen_at > alert.last_seen_at
    })
    .await?;
    assert!(env.outbox().await?.is_empty());
    assert_eq!(rx.connections(), 0, "the receiver still got nothing");

    // The window ends; the next tick notifies the alert still open.
    clock.advance(std::time::Duration::from_secs(3600));
    let got = rx.next().await?;
    assert_eq!(got.json()["type"], "alert.raised");
    assert_eq!(got.json()["data"]["alert"]["id"], alert.id.as_str());
    env.stop_all().await
}

#[tokio::test]
async fn a_disabled_channel_gets_no_delivery() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let on = Receiver::start(Answer::Status(200)).await?;
    let mut off = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    let on_channel = env.add_webhook("on", &on.url("/a"), None).await?;
    let off_channel = env.add_webhook("off", &off.url("/b"), None).await?;
    let _: api::ChannelView = env
        .call(
            api::CHANNEL_UPDATE,
            api::ChannelUpdate {
                channel_id: off_channel.clone(),
                name: None,
                enabled: Some(false),
                definition: None,
                clear_secret: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    env.set_offline("h1").await?;
    let rows = wait_for("the delivery finished", || async {
        let rows = env.outbox().await?;
        Ok((!rows.is_empty() && rows.iter().all(|r| r.state != "pending")).then_some(rows))
    })
    .await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].channel_id, on_channel);
    assert_eq!(rows[0].state, "delivered");
    // the outbox is where every delivery starts: no row for the disabled
    // channel (checked above) means nothing will ever be sent to it; the
    // role counted the one it held back
    let m = env
        .wait_suppressed(
            "the disabled channel's delivery counted",
            |s| s.channel_disabled,
            1,
        )
        .await?;
    assert_eq!(m.suppressed.channel_disabled, 1, "{m:?}");
    assert_eq!(off.connections(), 0, "nothing reached the disabled channel");
    assert!(off.drain().is_empty());
    env.stop_all().await
}

#[tokio::test]
async fn the_alerts_role_purges_its_own_old_delivery_history() -> anyhow::Result<()> {
    use rm_store::delivery::{self, NewDelivery};
    let mut env = Env::new().await?;
    env.timings.delivery_retention = std::time::Duration::from_secs(24 * 3600);
    env.timings.retention_every = std::time::Duration::from_millis(100);
    env.start_alerts().await?;
    let channel = env
        .add_webhook("ops", "http://127.0.0.1:1/hook", None)
        .await?;
    let day = 24 * 3600 * 1000;
    let now = env.now();
    let mut tx = env.store.write().await?;
    for (id, at) in [("old", now - 2 * day), ("recent", now - 1000)] {
        delivery::enqueue(
            &mut tx,
            &NewDelivery {
                id,
                webhook_id: &format!("msg_{id}"),
                alert_id: None,
                channel_id: &channel,
                event: "test",
                payload_json: "{}",
                now: at,
            },
        )
        .await?;
        delivery::finish(&mut tx, id, delivery::DELIVERED, None, at).await?;
    }
    tx.commit().await?;
    let left = wait_for("the old delivery to be purged", || async {
        let rows = env.outbox().await?;
        Ok((!rows.iter().any(|d| d.id == "old")).then_some(rows))
    })
    .await?;
    assert_eq!(
        left.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["recent"]
    );
    env.stop_alerts().await?;
    Ok(())
}

#[tokio::test]
async fn a_maintenance_window_mutes_alerts_inside_it_and_they_are_told_after_it()
-> anyhow::Result<()> {
    // 2026-12-01T01:30Z: inside a 01:00–02:00 (UTC) nightly window.
    let (mut env, clock) = Env::manual(1_796_088_600_000).await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    let bad = env
        .call::<_, api::MaintenanceAdded>(
            api::MAINTENANCE_ADD,
            api::MaintenanceAdd {
                host_id: "h1".into(),
                cron: "0 1 * *".into(),
                timezone: "UTC".into(),
                duration_secs: 3600,
                reason: None,
            },
        )
        .await;
    assert!(
        matches!(&bad, Err(e) if e.code == "invalid" && e.message.starts_with("Cron")),
        "a bad cron is refused naming the field: {bad:?}"
    );
    let added: api::MaintenanceAdded = env
        .call(
            api::MAINTENANCE_ADD,
            api::MaintenanceAdd {
                host_id: "h1".into(),
                cron: "0 1 * * *".into(),
                timezone: "UTC".into(),
                duration_secs: 3600,
                reason: Some("nightly dump".into()),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(added.window_id.starts_with('w'));

    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let alert = env
        .wait_alert("h1", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    assert!(
        !alert.notified,
        "raised inside the window: recorded, not told"
    );
    assert!(
        env.outbox()
            .await?
            .iter()
            .all(|d| d.alert_id.as_deref() != Some(alert.id.as_str())),
        "nothing queued inside the window"
    );
    let m = env
        .wait_suppressed(
            "the delivery held back counted",
            |s| s.maintenance_window,
            1,
        )
        .await?;
    assert_eq!(m.suppressed.maintenance_window, 1, "{m:?}");
    assert_eq!(m.suppressed.host_muted, 0, "a window, not a mute: {m:?}");
    assert_eq!(rx.connections(), 0, "the receiver got nothing");

    // The window ends with the alert still open: the next tick tells.
    clock.advance(std::time::Duration::from_secs(3600));
    let got = rx.next().await?;
    assert_eq!(got.json()["type"], "alert.raised");
    assert_eq!(got.json()["data"]["alert"]["id"], alert.id.as_str());

    // Deleting the window is audited; an unknown one is not found.
    let _: api::Done = env
        .call(
            api::MAINTENANCE_DELETE,
            api::MaintenanceRef {
                window_id: added.window_id.clone(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let again = env
        .call::<_, api::Done>(
            api::MAINTENANCE_DELETE,
            api::MaintenanceRef {
                window_id: added.window_id,
            },
        )
        .await;
    assert!(
        matches!(&again, Err(e) if e.code == "not_found"),
        "{again:?}"
    );
    env.stop_all().await
}

/// Whether `got` carries a valid Standard Webhooks signature with `secret`.
fn signed_with(got: &crate::support::Received, secret: &str) -> bool {
    let (Some(id), Some(ts), Some(sig)) = (
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        got.header("webhook-signature"),
    ) else {
        return false;
    };
    let key = rm_bus::notify::webhook_secret_key(secret).unwrap();
    let want = rm_notifier::webhook::sign(&key, id, ts.parse().unwrap(), &got.body).unwrap();
    sig == want
}

#[tokio::test]
async fn replacing_a_webhook_url_keeps_its_signing_secret_unless_replaced_or_cleared()
-> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut first = Receiver::start(Answer::Status(200)).await?;
    let mut second = Receiver::start(Answer::Status(200)).await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    let id = env
        .add_webhook("ops", &first.url("/a"), Some(SECRET))
        .await?;
    let update = |url: String, secret: Option<&str>, clear_secret: bool| {
        let env = &env;
        let id = id.clone();
        let secret = secret.map(str::to_owned);
        async move {
            let def = ChannelDef::Webhook(WebhookChannel {
                url,
                secret,
                headers: BTreeMap::new(),
            });
            env.call::<_, ChannelView>(
                api::CHANNEL_UPDATE,
                api::ChannelUpdate {
                    channel_id: id,
                    name: None,
                    enabled: None,
                    definition: Some(env.seal(&def).await?),
                    clear_secret,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
        }
    };
    let test_send = || async {
        let r: ChannelTestResult = env
            .call(
                api::CHANNEL_TEST,
                ChannelTest {
                    channel_id: Some(id.clone()),
                    definition: None,
                    clear_secret: false,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(r.ok, "{r:?}");
        Ok(())
    };
    test_send().await?;
    assert!(signed_with(&first.next().await?, SECRET));

    // A new URL with the secret field left empty keeps the saved secret.
    let view = update(second.url("/b"), None, false).await?;
    assert_eq!(view.summary["signed"], true, "{view:?}");
    test_send().await?;
    let got = second.next().await?;
    assert_eq!(got.path, "/b", "the new URL is used");
    assert!(signed_with(&got, SECRET), "signed with the saved secret");

    // A new secret replaces it.
    let other = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkh";
    update(second.url("/c"), Some(other), false).await?;
    test_send().await?;
    let got = second.next().await?;
    assert!(signed_with(&got, other) && !signed_with(&got, SECRET));

    // Clearing it on purpose leaves the channel unsigned.
    let view = update(second.url("/d"), None, true).await?;
    assert_eq!(view.summary["signed"], false, "{view:?}");
    test_send().await?;
    assert!(second.next().await?.header("webhook-signature").is_none());
    env.stop_all().await
}

#[tokio::test]
async fn a_test_send_of_a_saved_channel_is_in_its_delivery_log_marked_as_a_test()
-> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut ok = Receiver::start(Answer::Status(200)).await?;
    let refuse = Receiver::start(Answer::Status(500)).await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    let good = env.add_webhook("ops", &ok.url("/a"), Some(SECRET)).await?;
    let bad = env.add_webhook("broken", &refuse.url("/b"), None).await?;
    for id in [&good, &bad] {
        let _: ChannelTestResult = env
            .call(
                api::CHANNEL_TEST,
                ChannelTest {
                    channel_id: Some(id.clone()),
                    definition: None,
                    clear_secret: false,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    ok.next().await?;
    // An unsaved definition is logged nowhere.
    let unsaved = ChannelDef::Webhook(WebhookChannel {
        url: ok.url("/unsaved"),
        secret: None,
        headers: BTreeMap::new(),
    });
    let _: ChannelTestResult = env
        .call(
            api::CHANNEL_TEST,
            ChannelTest {
                channel_id: None,
                definition: Some(env.seal(&unsaved).await?),
                clear_secret: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut conn = env.store.read().await?;
    let log = rm_store::listing::deliveries(&mut conn, None, Some(&good), None, 10).await?;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].event.as_str(),
            log[0].outcome.as_str(),
            log[0].alert_id.as_deref()
        ),
        ("test", "delivered", None)
    );
    assert_eq!(log[0].status_code, Some(200));
    assert!(log[0].latency_ms.is_some());
    let log = rm_store::listing::deliveries(&mut conn, None, Some(&bad), None, 10).await?;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].event.as_str(), log[0].status_code),
        ("test", Some(500))
    );
    assert_ne!(log[0].outcome, "delivered");
    assert!(log[0].error.is_some());
    let all = rm_store::listing::deliveries(&mut conn, None, None, None, 10).await?;
    assert_eq!(all.len(), 2, "the unsaved test is not logged: {all:?}");
    assert!(
        rm_store::delivery::due(&mut conn, i64::MAX, 10)
            .await?
            .is_empty(),
        "a test is never sent again by the outbox"
    );
    drop(conn);
    env.stop_all().await
}

/// The edit page's "Send test" with a changed URL that is not saved and the
/// secret field left empty: signed with the saved secret (as saving the
/// edit would keep it), unless the clear box is ticked; nothing is saved
/// and nothing logged for the saved channel.
#[tokio::test]
async fn an_unsaved_edit_with_the_secret_left_empty_is_test_sent_signed_with_the_saved_secret()
-> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut saved_rx = Receiver::start(Answer::Status(200)).await?;
    let mut edited_rx = Receiver::start(Answer::Status(200)).await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    let id = env
        .add_webhook("ops", &saved_rx.url("/saved"), Some(SECRET))
        .await?;
    let edit = ChannelDef::Webhook(WebhookChannel {
        url: edited_rx.url("/edited"),
        secret: None,
        headers: BTreeMap::new(),
    });
    let test = |clear: bool| {
        let env = &env;
        let id = id.clone();
        let edit = edit.clone();
        async move {
            let mut req = ChannelTest {
                channel_id: Some(id),
                definition: Some(env.seal(&edit).await?),
                ..Default::default()
            };
            req.clear_secret = clear;
            let r: ChannelTestResult = env
                .call(api::CHANNEL_TEST, req)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            anyhow::ensure!(r.ok, "{r:?}");
            Ok(())
        }
    };
    test(false).await?;
    let got = edited_rx.next().await?;
    assert_eq!(got.path, "/edited", "the unsaved URL is used");
    assert!(signed_with(&got, SECRET), "signed with the saved secret");
    // With the clear box ticked, unsigned.
    test(true).await?;
    assert!(
        edited_rx
            .next()
            .await?
            .header("webhook-signature")
            .is_none(),
        "clearing on purpose tests unsigned"
    );

    // Nothing saved: the saved channel still goes to its URL, signed; and
    // only that test is in its delivery log.
    let r: ChannelTestResult = env
        .call(
            api::CHANNEL_TEST,
            ChannelTest {
                channel_id: Some(id.clone()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(r.ok, "{r:?}");
    let got = saved_rx.next().await?;
    assert!(got.path == "/saved" && signed_with(&got, SECRET));
    assert_eq!(
        saved_rx.connections(),
        1,
        "the edit never went to the saved URL"
    );
    let logged: Vec<_> = env
        .outbox()
        .await?
        .into_iter()
        .filter(|d| d.channel_id == id)
        .collect();
    assert_eq!(
        logged.len(),
        1,
        "only the saved channel's test is logged: {logged:?}"
    );
    env.stop_all().await
}

/// Twelve hosts (`h00`…`h11`, named `web-00`…) enrolled and online, and a
/// receiver answering `answer`.
async fn twelve_hosts(answer: Answer) -> anyhow::Result<(Env, Receiver, Vec<String>)> {
    let env = Env::new().await?;
    let rx = Receiver::start(answer).await?;
    let ids: Vec<String> = (0..12).map(|i| format!("h{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        env.add_host(id, &format!("web-{i:02}")).await?;
    }
    Ok((env, rx, ids))
}

/// Waits until `n` outbox rows are all delivered; returns them.
async fn delivered(env: &Env, n: usize) -> anyhow::Result<Vec<rm_store::delivery::Delivery>> {
    wait_for("every row delivered", || async {
        let rows = env.outbox().await?;
        Ok((rows.len() == n && rows.iter().all(|r| r.state == "delivered")).then_some(rows))
    })
    .await
}

#[tokio::test]
async fn hosts_going_offline_together_are_one_grouped_notification_retried_as_the_same_one()
-> anyhow::Result<()> {
    // every webhook-id's first request is answered 503
    let (mut env, mut rx, ids) =
        twelve_hosts(Answer::FirstOfEachId(Default::default(), 503)).await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), Some(SECRET))
        .await?;

    env.set_offline_together(&ids).await?;
    let rows = delivered(&env, 12).await?;
    let got = rx.drain();
    assert_eq!(
        got.len(),
        2,
        "one grouped request, refused once and retried"
    );
    let hook_id = got[0].header("webhook-id").unwrap_or_default().to_owned();
    assert!(hook_id.starts_with("msg_grp_"), "{hook_id}");
    assert_eq!(got[1].header("webhook-id"), Some(hook_id.as_str()));
    assert!(signed_with(&got[1], SECRET));
    let body = got[1].json();
    assert_eq!(got[0].json(), body, "the retry is the same notification");
    assert_eq!(body["type"], "alert.raised");
    assert_eq!(body["data"]["alert"]["kind"], "agent_offline");
    assert_eq!(body["data"]["host"]["name"], "12 hosts");
    assert_eq!(body["data"]["group"]["count"], 12);
    let message = body["data"]["alert"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("Agent offline on 12 hosts: web-"),
        "{message}"
    );
    assert!(message.ends_with(" and 2 more."), "{message}");
    assert_eq!(
        body["data"]["alert"]["url"],
        "https://rm.test/alerts?state=open&kind=agent_offline"
    );
    // the group lists every alert, each on its host
    let listed: BTreeSet<(String, String)> = body["data"]["group"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["alert"]["id"].as_str().unwrap_or_default().to_owned(),
                        m["host"]["id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut raised = BTreeSet::new();
    for id in &ids {
        let alerts = env.alerts_of(id).await?;
        let a = alerts
            .iter()
            .find(|a| a.kind == "agent_offline")
            .expect("raised");
        raised.insert((a.id.clone(), id.clone()));
    }
    assert_eq!(listed, raised);
    // every row's own log: refused once, then delivered
    for row in &rows {
        let log = env.log_of(&row.id).await?;
        let outcomes: Vec<(&str, Option<i64>)> = log
            .iter()
            .map(|e| (e.outcome.as_str(), e.status_code))
            .collect();
        assert_eq!(
            outcomes,
            [("retryable", Some(503)), ("delivered", Some(200))],
            "{}",
            row.id
        );
    }

    // back together: one grouped resolution
    env.set_online_together(&ids).await?;
    delivered(&env, 24).await?;
    let got = rx.drain();
    assert_eq!(
        got.len(),
        2,
        "one grouped request, refused once and retried"
    );
    let body = got[1].json();
    assert_eq!(body["type"], "alert.resolved");
    assert_eq!(body["data"]["group"]["count"], 12);
    assert_eq!(
        body["data"]["alert"]["url"],
        "https://rm.test/alerts?state=resolved&kind=agent_offline"
    );
    env.stop_all().await
}

#[tokio::test]
async fn with_grouping_off_hosts_going_offline_together_are_one_notification_each()
-> anyhow::Result<()> {
    let (mut env, mut rx, ids) = twelve_hosts(Answer::Status(200)).await?;
    env.timings.notify_group_from = 0;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.set_offline_together(&ids).await?;
    let rows = delivered(&env, 12).await?;
    let got = rx.drain();
    let hook_ids: BTreeSet<String> = got
        .iter()
        .map(|g| g.header("webhook-id").unwrap_or_default().to_owned())
        .collect();
    let row_ids: BTreeSet<String> = rows.iter().map(|r| r.webhook_id.clone()).collect();
    assert_eq!(hook_ids, row_ids, "one request per row, with its own id");
    assert!(got.iter().all(|g| g.json()["data"]["group"].is_null()));
    env.stop_all().await
}

#[tokio::test]
async fn fewer_changes_than_the_threshold_go_one_each() -> anyhow::Result<()> {
    let (mut env, mut rx, ids) = twelve_hosts(Answer::Status(200)).await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    // the default threshold is 5: four at once go one each
    env.set_offline_together(&ids[..4]).await?;
    delivered(&env, 4).await?;
    let got = rx.drain();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|g| g.json()["data"]["group"].is_null()));
    assert!(got.iter().all(|g| {
        g.json()["data"]["host"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("web-"))
    }));
    env.stop_all().await
}
