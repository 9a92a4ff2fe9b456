//! The delivery contract round-trips, tolerates unknown fields and values,
//! validates channels and never shows a secret in `Debug`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(msg: &T) -> Value {
    let text = serde_json::to_string(msg).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, msg, "round trip of {text}");
    let mut obj: Value = serde_json::from_str(&text).unwrap();
    if let Some(map) = obj.as_object_mut() {
        map.insert("zz_future_field".into(), json!({"nested": [1, 2, 3]}));
    }
    let tolerant: T = serde_json::from_value(obj).unwrap();
    assert_eq!(&tolerant, msg, "unknown fields changed the parse of {text}");
    serde_json::from_str(&text).unwrap()
}

fn raised() -> NotificationEvent {
    NotificationEvent {
        kind: EventType::Raised,
        id: "evt-1".into(),
        timestamp: "2026-05-01T12:00:00.000Z".into(),
        data: EventData {
            alert: AlertInfo {
                id: "a1".into(),
                kind: AlertKind::BackupFailed,
                severity: Severity::Critical,
                state: AlertState::Open,
                subject: "sched-nightly".into(),
                message: "backup of /srv failed: wrong password".into(),
                raised_at: "2026-05-01T12:00:00.000Z".into(),
                last_seen_at: "2026-05-01T12:00:00.000Z".into(),
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                url: Some("https://rm.example/alerts/a1".into()),
            },
            host: HostInfo {
                id: "h1".into(),
                name: "web-01".into(),
            },
            group: None,
        },
    }
}

fn webhook() -> ChannelDef {
    ChannelDef::Webhook(WebhookChannel {
        url: "https://hooks.example/T0/B1/s3cr3t-path?token=q5ecret".into(),
        secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        headers: BTreeMap::from([("X-Api-Key".into(), "k3y-value".into())]),
    })
}

fn ntfy() -> ChannelDef {
    ChannelDef::Ntfy(NtfyChannel {
        server_url: "https://ntfy.example".into(),
        topic: "backups-Xy7q".into(),
        auth: NtfyAuth::Basic {
            user: "ops".into(),
            password: "pa55word".into(),
        },
        click_base_url: None,
        priorities: NtfyPriorities {
            critical: Some(4),
            ..Default::default()
        },
    })
}

#[test]
fn the_envelope_has_one_stable_shape() {
    let v = roundtrip(&raised());
    assert_eq!(v["type"], "alert.raised");
    assert_eq!(v["id"], "evt-1");
    let keys: Vec<&String> = v["data"]["alert"].as_object().unwrap().keys().collect();
    let test = serde_json::to_value(NotificationEvent::test("t1", 0, None)).unwrap();
    let test_keys: Vec<&String> = test["data"]["alert"].as_object().unwrap().keys().collect();
    assert_eq!(keys, test_keys, "every event type has the same alert keys");
    assert!(v["data"]["alert"]["resolved_by"].is_null());
    assert_eq!(v["data"]["host"], json!({"id": "h1", "name": "web-01"}));
    assert!(
        v["data"]["group"].is_null(),
        "group is present, null for one change"
    );
    let top: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(top, ["data", "id", "timestamp", "type"]);
}

#[test]
fn a_grouped_envelope_round_trips_and_one_stored_without_group_reads_as_single() {
    let one = raised();
    let mut grouped = one.clone();
    grouped.data.group = Some(GroupInfo {
        count: 2,
        hosts: 2,
        alerts: vec![
            GroupMember {
                alert: one.data.alert.clone(),
                host: one.data.host.clone(),
            },
            GroupMember {
                alert: AlertInfo {
                    id: "a2".into(),
                    ..one.data.alert.clone()
                },
                host: HostInfo {
                    id: "h2".into(),
                    name: "web-02".into(),
                },
            },
        ],
    });
    let v = roundtrip(&grouped);
    assert_eq!(v["data"]["group"]["alerts"][1]["alert"]["id"], "a2");
    assert_eq!(v["data"]["group"]["alerts"][1]["host"]["name"], "web-02");
    // Outbox rows written before groups existed have no `group` key.
    let mut old = serde_json::to_value(&one).unwrap();
    old["data"].as_object_mut().unwrap().remove("group");
    let back: NotificationEvent = serde_json::from_value(old).unwrap();
    assert_eq!(back, one);
}

#[test]
fn unknown_enum_values_are_kept_verbatim() {
    let mut v = serde_json::to_value(raised()).unwrap();
    v["type"] = json!("alert.escalated");
    v["data"]["alert"]["kind"] = json!("disk_full");
    v["data"]["alert"]["severity"] = json!("catastrophic");
    let e: NotificationEvent = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(e.kind, EventType::Other("alert.escalated".into()));
    assert_eq!(e.data.alert.kind, AlertKind::Other("disk_full".into()));
    assert_eq!(serde_json::to_value(&e).unwrap(), v);
    assert_eq!(EventType::from("alert.resolved"), EventType::Resolved);
}

#[test]
fn channels_round_trip_and_debug_redacts_secrets() {
    for ch in [webhook(), ntfy()] {
        roundtrip(&ch);
        ch.validate().unwrap();
        let dbg = format!("{ch:?}");
        for secret in [
            "s3cr3t",
            "q5ecret",
            "MfKQ9r8G",
            "k3y-value",
            "pa55word",
            "Xy7q",
        ] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
    }
    assert!(format!("{:?}", webhook()).contains("https://hooks.example"));
    assert!(format!("{:?}", webhook()).contains("X-Api-Key"));
    let bearer = NtfyAuth::Bearer {
        token: "tk_abcdef".into(),
    };
    assert!(!format!("{bearer:?}").contains("tk_abcdef"));
    let v = serde_json::to_value(ntfy()).unwrap();
    assert_eq!(v["type"], "ntfy");
    assert_eq!(v["auth"]["kind"], "basic");
    // auth and priorities may be left out
    let minimal: ChannelDef = serde_json::from_value(json!({
        "type": "ntfy", "server_url": "http://127.0.0.1:1", "topic": "t"
    }))
    .unwrap();
    let ChannelDef::Ntfy(n) = minimal else {
        panic!("not ntfy")
    };
    assert_eq!(n.auth, NtfyAuth::None);
}

#[test]
fn redact_url_keeps_only_the_origin() {
    assert_eq!(
        redact_url("https://user:pw@hooks.example:8443/a/b?c=d#e"),
        "https://hooks.example:8443"
    );
    assert_eq!(redact_url("http://[::1]:80/x"), "http://[::1]:80");
    assert_eq!(redact_url("no-scheme/secret"), "<not a URL>");
}

#[test]
fn validate_rejects_what_cannot_work() {
    let bad = |ch: ChannelDef, needle: &str| {
        let err = ch.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    };
    let ChannelDef::Webhook(w) = webhook() else {
        unreachable!()
    };
    bad(
        ChannelDef::Webhook(WebhookChannel {
            url: "ftp://x/".into(),
            ..w.clone()
        }),
        "http:// or https://",
    );
    bad(
        ChannelDef::Webhook(WebhookChannel {
            secret: Some("whsec_!!not base64!!".into()),
            ..w.clone()
        }),
        "whsec_",
    );
    bad(
        ChannelDef::Webhook(WebhookChannel {
            headers: BTreeMap::from([("Webhook-Signature".into(), "v1,forged".into())]),
            ..w.clone()
        }),
        "set by the notifier",
    );
    bad(
        ChannelDef::Webhook(WebhookChannel {
            headers: BTreeMap::from([("X-A".into(), "line\r\nInjected: 1".into())]),
            ..w.clone()
        }),
        "control",
    );
    let ChannelDef::Ntfy(n) = ntfy() else {
        unreachable!()
    };
    bad(
        ChannelDef::Ntfy(NtfyChannel {
            topic: "a/b".into(),
            ..n.clone()
        }),
        "topic",
    );
    bad(
        ChannelDef::Ntfy(NtfyChannel {
            priorities: NtfyPriorities {
                info: Some(9),
                ..Default::default()
            },
            ..n.clone()
        }),
        "1 to 5",
    );
    bad(
        ChannelDef::Ntfy(NtfyChannel {
            server_url: "https://".into(),
            ..n
        }),
        "with a host",
    );
}

#[test]
fn secret_key_is_the_base64_after_the_prefix() {
    assert_eq!(webhook_secret_key("whsec_aGVsbG8=").unwrap(), b"hello");
    assert_eq!(webhook_secret_key("whsec_aGVsbG8").unwrap(), b"hello");
    assert!(webhook_secret_key("whsec_").is_err());
}

#[test]
fn request_and_reply_round_trip_and_the_channel_opens_only_for_the_notifier() {
    let alerts = XKey::new();
    let notifier = XKey::new();
    let sealed = DeliverRequest::seal_channel(&webhook(), &alerts, &notifier.public_key()).unwrap();
    assert!(!sealed.0.contains("whsec"));
    let req = DeliverRequest {
        v: PROTOCOL_VERSION,
        delivery_id: "d1".into(),
        webhook_id: "msg_evt-1_ch1".into(),
        attempt: 2,
        sender_xkey: alerts.public_key(),
        channel: sealed,
        event: raised(),
    };
    let v = roundtrip(&req);
    assert_eq!(v["v"], 1);
    assert_eq!(req.open_channel(&notifier).unwrap(), webhook());
    assert!(matches!(
        req.open_channel(&XKey::new()),
        Err(SealError::Open)
    ));

    let mut reply = DeliverReply::new(DeliverOutcome::Retryable, Some("d1".into()), 2);
    reply.status = Some(503);
    reply.latency_ms = 12;
    reply.error = Some("HTTP 503".into());
    reply.retry_after_secs = Some(30);
    let v = roundtrip(&reply);
    assert_eq!(v["outcome"], "retryable");
    assert!(reply.should_retry());
    let later: DeliverReply =
        serde_json::from_value(json!({"outcome": "deferred", "delivery_id": null})).unwrap();
    assert_eq!(later.v, PROTOCOL_VERSION);
    assert!(later.should_retry(), "an unknown outcome is retried");
    assert!(!DeliverReply::new(DeliverOutcome::Failed, None, 1).should_retry());
}

#[test]
fn subject_is_built_from_the_role_and_verb() {
    assert_eq!(deliver_subject(), "rm.svc.notifier.deliver");
}

#[test]
fn rfc3339_matches_known_dates() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_utc(1_777_636_496_789), "2026-05-01T11:54:56.789Z");
    assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(rfc3339_utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    // beyond the calendar's range: clamped, never garbage or a panic
    assert!(rfc3339_utc(i64::MAX).starts_with("9999-12-"));
    let min = rfc3339_utc(i64::MIN);
    assert!(min.starts_with("-9999-01-"), "{min}");
}
