//! Enrollment: happy path; reused, expired and wrong tokens refused; a
//! revoked host is cut off and cannot reconnect; re-enrollment replaces keys.

use std::time::Duration;

use async_nats::Event;
use nkeys::{KeyPair, XKey};
use rm_bus::clock::ManualClock;
use rm_bus::creds::{Role, UserCreds};
use rm_bus::msg::EnrollReply;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

#[tokio::test]
async fn enrollment_happy_path_and_refusals() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let cp = Cp::start(
        &bus,
        dir.path().into(),
        CpOptions {
            clock: clock.clone(),
            ..CpOptions::default()
        },
    )
    .await
    .unwrap();

    let added = cp.host_add("web-1").await;
    assert!(
        added.command.contains(&format!("--token {}", added.token)),
        "{}",
        added.command
    );
    assert!(
        added.command.contains("--server https://cp.test:8443")
            && added.command.contains("--fingerprint SHA256:test")
    );
    assert_eq!(added.expires_at, 1_700_000_000_000 + 24 * 3600 * 1000);

    // the token is stored hashed only
    let db = cp.db().await;
    let stored: Vec<String> = sqlx_tokens(&db).await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(&added.token));

    // wrong token
    let (nkey, xkey) = (KeyPair::new_user(), XKey::new());
    let err = cp
        .enroll_call_raw(enroll_request("not-a-token", &nkey, &xkey, "web-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "forbidden");
    assert!(
        err.message.contains("invalid, expired or already used"),
        "{}",
        err.message
    );

    // happy path: the JWT works on the bus, confined to the host
    let reply: EnrollReply = cp
        .enroll_call(enroll_request(&added.token, &nkey, &xkey, "web-1"))
        .await;
    assert_eq!(reply.host_id.as_str(), added.host_id);
    assert_eq!(reply.bus_urls, vec![bus.url()]);
    assert!(reply.controlplane_xkey.starts_with('X'));
    let mut agent = Agent::connect(&bus, reply, nkey, xkey, "web-1")
        .await
        .unwrap();
    let hello = agent.hello(0, vec![], vec![]).await;
    assert!(
        hello.config.is_none()
            || hello
                .config
                .as_ref()
                .is_some_and(|c| c.schedules.is_empty())
    );
    assert_eq!(host_status(&db, &agent.host_id()).await, "online");

    // reused token
    let (n2, x2) = (KeyPair::new_user(), XKey::new());
    let err = cp
        .enroll_call_raw(enroll_request(&added.token, &n2, &x2, "web-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "forbidden");

    // expired token (24 h + 1 ms later)
    let other = cp.host_add("db-1").await;
    clock.advance(Duration::from_secs(24 * 3600) + Duration::from_millis(1));
    let err = cp
        .enroll_call_raw(enroll_request(&other.token, &n2, &x2, "db-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "forbidden");

    // malformed keys are refused with a clear error
    let fresh = cp.host_token(&other.host_id.clone()).await.unwrap();
    let mut bad = enroll_request(&fresh.token, &n2, &x2, "db-1");
    bad.nkey = "not-a-key".into();
    let err = cp.enroll_call_raw(bad).await.unwrap_err();
    assert_eq!(err.code, "invalid");
    // ... and did not use up the token
    let _: EnrollReply = cp
        .enroll_call(enroll_request(&fresh.token, &n2, &x2, "db-1"))
        .await;
}

async fn sqlx_tokens(db: &rm_store::Store) -> Vec<String> {
    let mut c = db.read().await.unwrap();
    let audit = rm_store::audit::recent(&mut c, 10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "host.add" && r.actor == "alice"),
        "adding a host is audited"
    );
    rm_store::raw::fetch_strings(&mut c, "SELECT token_hash FROM enrollment_tokens")
        .await
        .unwrap()
}

#[tokio::test]
async fn revoked_host_is_cut_off_and_cannot_reconnect() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    agent.hello(0, vec![], vec![]).await;

    let _: api::Done = cp
        .call(
            api::HOST_REVOKE,
            api::HostRef {
                host_id: agent.host_id(),
            },
        )
        .await;
    agent
        .client
        .expect_event("disconnect", WAIT, |e| matches!(e, Event::Disconnected))
        .await
        .unwrap();
    let role = Role::Agent(agent.host.clone());
    let creds = UserCreds::new(agent.jwt.clone(), agent.nkey.seed().unwrap());
    assert!(
        bus.connect_as(&role, creds).await.is_err(),
        "revoked agent reconnected"
    );
    let db = cp.db().await;
    assert_eq!(host_status(&db, &agent.host_id()).await, "revoked");
    // a new token for a revoked host is refused
    let err = cp.host_token(&agent.host_id()).await.unwrap_err();
    assert_eq!(err.code, "conflict");
}

#[tokio::test]
async fn re_enrollment_replaces_the_keys() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut old = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    old.hello(0, vec![], vec![]).await;
    let fresh = cp.host_token(&old.host_id()).await.unwrap();
    let (nkey, xkey) = (KeyPair::new_user(), XKey::new());
    let reply: EnrollReply = cp
        .enroll_call(enroll_request(&fresh.token, &nkey, &xkey, "web-1"))
        .await;
    assert_eq!(reply.host_id, old.host);
    // the old identity is cut off, the new one works
    old.client
        .expect_event("old key disconnected", WAIT, |e| {
            matches!(e, Event::Disconnected)
        })
        .await
        .unwrap();
    let mut new = Agent::connect(&bus, reply, nkey, xkey, "web-1")
        .await
        .unwrap();
    new.hello(0, vec![], vec![]).await;
}

/// One attempt of `host-add` carrying idempotency key `key`; `payload` is
/// the whole request envelope, the same bytes on every attempt.
async fn host_add_attempt(
    cp: &Cp,
    key: &str,
    payload: bytes::Bytes,
) -> rm_bus::msg::SvcReply<api::SealedEnrollment> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(rm_bus::reqack::IDEMPOTENCY_HEADER, key);
    let req = async_nats::Request::new()
        .payload(payload)
        .headers(headers)
        .timeout(Some(WAIT));
    let subj = rm_bus::subject::svc(rm_bus::subject::SvcRole::Controlplane, api::HOST_ADD);
    let m = cp.web.client.send_request(subj, req).await.unwrap();
    rm_bus::msg::decode("svc reply", &m.payload).unwrap()
}

#[tokio::test]
async fn a_host_add_retried_with_its_idempotency_key_gets_the_first_reply_not_a_conflict() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let before: api::Metrics = cp.call(api::METRICS, serde_json::json!({})).await;
    let (req, key) = api::HostAdd::new("db-1");
    let payload = rm_bus::msg::encode(&rm_bus::msg::SvcRequest {
        v: rm_bus::msg::PROTOCOL_VERSION,
        actor: rm_bus::msg::Actor {
            name: "alice".into(),
            via: rm_bus::msg::ActorVia::Session,
            address: None,
        },
        body: req,
    });
    // Two attempts at once (the second arrives while the first runs, or
    // just after), then a third once both are answered.
    let (a, b) = tokio::join!(
        host_add_attempt(&cp, "k1", payload.clone()),
        host_add_attempt(&cp, "k1", payload.clone()),
    );
    let c = host_add_attempt(&cp, "k1", payload.clone()).await;
    let opened: Vec<api::HostEnrollment> = [a, b, c]
        .into_iter()
        .map(|r| {
            let sealed =
                r.ok.unwrap_or_else(|| panic!("an answer, got {:?}", r.error));
            sealed.open(&key).expect("sealed to the asker")
        })
        .collect();
    for o in &opened[1..] {
        assert_eq!(o.host_id, opened[0].host_id, "one host, one reply");
        assert_eq!(o.token, opened[0].token, "the first attempt's token");
    }
    let db = cp.db().await;
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts WHERE name = 'db-1'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(hosts, 1);
    let after: api::Metrics = cp.call(api::METRICS, serde_json::json!({})).await;
    assert_eq!(after.svc_replayed - before.svc_replayed, 2);

    // Another key is another request: the name is taken.
    let d = host_add_attempt(&cp, "k2", payload).await;
    assert_eq!(d.error.map(|e| e.code).as_deref(), Some("conflict"));
}
