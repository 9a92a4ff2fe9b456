//! Minted credentials against a real nats-server 2.15 in operator mode:
//! allowed subjects pass, other hosts' subjects are refused with the
//! server's own permission errors, revocation cuts a user off.

use std::time::Duration;

use async_nats::Event;
use bytes::Bytes;
use rm_bus::subject::{self, AgentTopicKind, JobTopic};
use rm_bus::{JobId, clock};
use rm_bus_server::creds::authority::UserSpec;
use rm_bus_server::creds::{Authority, Permissions, Role};
use rm_testkit::{BusKind, TestBus};

use rm_bus::reqack::{IdempotencyKey, request_with_retry};

use crate::support::{WAIT, host, next_real, next_within, retry, wait_until_live};

async fn nats_server() -> TestBus {
    TestBus::start_kind(BusKind::NatsServer)
        .await
        .expect("nats-server starts")
}

#[tokio::test]
async fn agent_jwt_allows_its_own_subjects() {
    let bus = nats_server().await;
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let agent = bus.agent("h1").await.unwrap();
    let h1 = host("h1");

    // agent → control plane: heartbeat
    let mut beats = cp
        .subscribe(subject::agent_any(AgentTopicKind::Heartbeat))
        .await
        .unwrap();
    wait_until_live(&agent, &subject::agent_heartbeat(&h1), &mut beats).await;
    agent
        .publish(subject::agent_heartbeat(&h1), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let msg = next_real(&mut beats, WAIT)
        .await
        .expect("heartbeat arrives");
    assert_eq!(msg.subject.as_str(), "rm.agent.h1.heartbeat");
    assert_eq!(msg.payload.as_ref(), b"{}");

    // control plane → agent: a command, answered (response permission)
    let mut cmds = agent.subscribe(subject::cmd(&h1)).await.unwrap();
    agent.flush().await.unwrap();
    let responder = tokio::spawn(async move {
        let m = next_within(&mut cmds, WAIT).await.expect("command arrives");
        let reply = m.reply.expect("command is a request");
        agent
            .publish(reply, Bytes::from_static(b"ack"))
            .await
            .unwrap();
        agent.flush().await.unwrap();
        agent
    });
    let key = IdempotencyKey::new("cmd-1");
    let reply = request_with_retry(&cp, &subject::cmd(&h1), &key, "cmd".into(), &retry())
        .await
        .unwrap();
    assert_eq!(reply.payload.as_ref(), b"ack");
    let agent = responder.await.unwrap();

    // agent → control plane: a request with the agent's own inbox prefix
    let mut dones = cp
        .subscribe(subject::agent_any_job(JobTopic::Done))
        .await
        .unwrap();
    cp.flush().await.unwrap();
    let cp2 = cp.client.clone();
    tokio::spawn(async move {
        if let Some(m) = next_within(&mut dones, WAIT).await {
            cp2.publish(m.reply.unwrap(), Bytes::from_static(b"ok"))
                .await
                .unwrap();
        }
    });
    let job = JobId::parse("j1").unwrap();
    let subj = subject::agent_job(&h1, &job, JobTopic::Done);
    let key = IdempotencyKey::job_phase(&job, JobTopic::Done);
    let r = request_with_retry(&agent, &subj, &key, "{}".into(), &retry())
        .await
        .unwrap();
    assert_eq!(r.payload.as_ref(), b"ok");
}

#[tokio::test]
async fn agent_cannot_touch_another_hosts_subjects() {
    let bus = nats_server().await;
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let mut agent = bus.agent("h1").await.unwrap();
    let mut all = cp.subscribe(subject::agent_all()).await.unwrap();
    wait_until_live(&agent, &subject::agent_heartbeat(&host("h1")), &mut all).await;

    // publishing as h2 is refused and never delivered
    agent
        .publish(subject::agent_heartbeat(&host("h2")), "forged".into())
        .await
        .unwrap();
    let err = agent
        .expect_server_error("Permissions Violation", WAIT)
        .await
        .unwrap();
    assert!(
        err.contains(r#"Permissions Violation for Publish to "rm.agent.h2.heartbeat""#),
        "{err}"
    );
    // the connection stays open: an allowed message still flows, and it is
    // the first thing the subscriber sees (per-connection order)
    agent
        .publish(subject::agent_heartbeat(&host("h1")), "real".into())
        .await
        .unwrap();
    let first = next_real(&mut all, WAIT)
        .await
        .expect("allowed message arrives");
    assert_eq!(first.subject.as_str(), "rm.agent.h1.heartbeat");
    assert_eq!(first.payload.as_ref(), b"real");

    // subscribing to h2's commands is refused and receives nothing
    let mut stolen = agent.subscribe(subject::cmd(&host("h2"))).await.unwrap();
    let err = agent
        .expect_server_error("Subscription", WAIT)
        .await
        .unwrap();
    assert!(
        err.contains(r#"Permissions Violation for Subscription to "rm.cmd.h2""#),
        "{err}"
    );
    let mut own = agent.subscribe(subject::cmd(&host("h1"))).await.unwrap();
    wait_until_live(&cp, &subject::cmd(&host("h1")), &mut own).await;
    cp.publish(subject::cmd(&host("h2")), "for h2".into())
        .await
        .unwrap();
    cp.publish(subject::cmd(&host("h1")), "for h1".into())
        .await
        .unwrap();
    cp.flush().await.unwrap();
    assert_eq!(
        next_real(&mut own, WAIT).await.unwrap().payload.as_ref(),
        b"for h1"
    );
    assert!(
        next_within(&mut stolen, Duration::from_millis(300))
            .await
            .is_none()
    );

    // other roles' inboxes and services are out of reach too
    agent
        .publish("rm.evt.job.finished", "fake".into())
        .await
        .unwrap();
    let err = agent
        .expect_server_error("Permissions Violation", WAIT)
        .await
        .unwrap();
    assert!(
        err.contains(r#"for Publish to "rm.evt.job.finished""#),
        "{err}"
    );
}

#[tokio::test]
async fn revoked_user_is_cut_off_and_stays_out() {
    let mut bus = nats_server().await;
    let h1 = host("h1");
    let role = Role::Agent(h1.clone());
    let creds = bus.creds_for(&role).unwrap();
    let mut agent = bus.connect_as(&role, creds.clone()).await.unwrap();
    let user_pub = agent.public_key();
    agent
        .publish(subject::agent_heartbeat(&h1), "{}".into())
        .await
        .unwrap();
    agent.flush().await.unwrap();

    bus.revoke(&user_pub).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, agent.events.recv()).await {
        let done = matches!(e, Event::Disconnected);
        seen.push(e.to_string());
        if done {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|e| e.contains("User Authentication Revoked")),
        "the server names the reason: {seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("disconnected"),
        "{seen:?}"
    );

    // the same JWT is refused from now on
    let again = bus.connect_as(&role, creds).await;
    let err = format!("{:#}", again.err().expect("revoked creds must not connect"));
    assert!(
        err.to_lowercase().contains("authorization violation"),
        "{err}"
    );

    // re-enrolment: a JWT minted after the revocation is admitted
    let kp = nkeys::KeyPair::from_seed(agent.creds.seed()).unwrap();
    let fresh = bus
        .authority()
        .mint_user(&UserSpec {
            public_key: kp.public_key(),
            name: role.name(),
            permissions: role.permissions(),
            expires: None,
        })
        .unwrap();
    let creds = rm_bus::creds::UserCreds::new(fresh, agent.creds.seed().to_owned());
    bus.connect_as(&role, creds)
        .await
        .expect("re-minted JWT connects");
}

#[tokio::test]
async fn expired_and_foreign_jwts_are_refused() {
    let bus = nats_server().await;
    let role = Role::Agent(host("h1"));
    let kp = nkeys::KeyPair::new_user();
    let spec = UserSpec {
        public_key: kp.public_key(),
        name: "h1".into(),
        permissions: role.permissions(),
        expires: Some(clock::system().now_secs() - 10),
    };
    let expired = bus.authority().mint_user(&spec).unwrap();
    let creds = rm_bus::creds::UserCreds::new(expired, kp.seed().unwrap());
    assert!(
        bus.connect_as(&role, creds).await.is_err(),
        "expired JWT connected"
    );

    // a JWT from another installation's authority
    let foreign = Authority::generate(clock::system());
    let creds = foreign
        .mint_new_user("intruder", Permissions::default())
        .unwrap();
    assert!(
        bus.connect_as(&role, creds).await.is_err(),
        "foreign JWT connected"
    );

    // and the good one still works
    let spec = UserSpec {
        expires: Some(clock::system().now_secs() + 3600),
        ..spec
    };
    let good = bus.authority().mint_user(&spec).unwrap();
    let creds = rm_bus::creds::UserCreds::new(good, kp.seed().unwrap());
    bus.connect_as(&role, creds)
        .await
        .expect("valid JWT connects");
}
