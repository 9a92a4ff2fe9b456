//! The request/ack helper against a real bus: it retries until a responder
//! shows up, gives up cleanly at its deadline, and never retries a refusal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_bus::JobId;
use rm_bus::creds::Role;
use rm_bus::msg::{Ack, encode};
use rm_bus::reqack::{IdempotencyKey, RequestError, RetryPolicy, request_ack};
use rm_bus::subject::{self, JobTopic};
use rm_testkit::TestBus;

use crate::support::{WAIT, host, next_within};

fn fast_policy(deadline: Duration) -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_millis(200),
        deadline: Some(deadline),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        jitter: 0.5,
    }
}

#[tokio::test]
async fn retries_until_a_late_responder_answers() {
    let bus = TestBus::start().await.unwrap();
    let agent = bus.agent("h1").await.unwrap();
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let job = JobId::parse("j1").unwrap();
    let subj = subject::agent_job(&host("h1"), &job, JobTopic::Done);
    let key = IdempotencyKey::job_phase(&job, JobTopic::Done);

    let seen_keys = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_keys.clone();
    let responder = tokio::spawn(async move {
        // appear only after the sender has failed a few times
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut sub = cp
            .subscribe(subject::agent_any_job(JobTopic::Done))
            .await
            .unwrap();
        cp.flush().await.unwrap();
        let m = next_within(&mut sub, WAIT)
            .await
            .expect("a retry reaches the responder");
        seen.lock().unwrap().push(IdempotencyKey::of(&m));
        cp.publish(m.reply.unwrap(), encode(&Ack::ok()))
            .await
            .unwrap();
        cp.flush().await.unwrap();
    });

    let ack = request_ack(
        &agent,
        &subj,
        &key,
        "{}".into(),
        &fast_policy(Duration::from_secs(10)),
    )
    .await
    .expect("delivered once the responder is up");
    assert!(ack.ok);
    responder.await.unwrap();
    assert_eq!(seen_keys.lock().unwrap().as_slice(), &[Some(key)]);
}

#[tokio::test]
async fn gives_up_cleanly_after_its_deadline() {
    let bus = TestBus::start().await.unwrap();
    let agent = bus.agent("h1").await.unwrap();
    let job = JobId::parse("j2").unwrap();
    let subj = subject::agent_job(&host("h1"), &job, JobTopic::Started);
    let key = IdempotencyKey::job_phase(&job, JobTopic::Started);
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        request_ack(
            &agent,
            &subj,
            &key,
            "{}".into(),
            &fast_policy(Duration::from_millis(600)),
        ),
    )
    .await
    .expect("returns instead of hanging");
    match result {
        Err(RequestError::GaveUp {
            attempts, subject, ..
        }) => {
            assert!(attempts >= 2, "only {attempts} attempts");
            assert_eq!(subject, subj);
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_is_final() {
    let bus = TestBus::start().await.unwrap();
    let agent = bus.agent("h1").await.unwrap();
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let mut sub = cp
        .subscribe(subject::agent_any_job(JobTopic::Done))
        .await
        .unwrap();
    cp.flush().await.unwrap();
    let count = Arc::new(Mutex::new(0u32));
    let c = count.clone();
    tokio::spawn(async move {
        while let Some(m) = next_within(&mut sub, WAIT).await {
            *c.lock().unwrap() += 1;
            cp.publish(
                m.reply.unwrap(),
                encode(&Ack::refused("job j3 belongs to another host")),
            )
            .await
            .unwrap();
            cp.flush().await.unwrap();
        }
    });
    let job = JobId::parse("j3").unwrap();
    let subj = subject::agent_job(&host("h1"), &job, JobTopic::Done);
    let err = request_ack(
        &agent,
        &subj,
        &IdempotencyKey::job_phase(&job, JobTopic::Done),
        "{}".into(),
        &fast_policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RequestError::Refused { reason, .. } if reason.contains("another host")),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*count.lock().unwrap(), 1, "a refusal must not be retried");
}

#[tokio::test]
async fn a_request_over_the_servers_max_payload_fails_at_once_as_too_large() {
    let bus = TestBus::start_with(
        rm_testkit::BusKind::from_env(),
        rm_testkit::BusOptions {
            max_payload: Some(4096),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let agent = bus.agent("h1").await.unwrap();
    assert_eq!(rm_bus::size::max_payload(&agent), 4096, "read from INFO");
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let mut sub = cp
        .subscribe(subject::agent_any_job(JobTopic::Done))
        .await
        .unwrap();
    cp.flush().await.unwrap();
    let job = JobId::parse("j3").unwrap();
    let subj = subject::agent_job(&host("h1"), &job, JobTopic::Done);
    let key = IdempotencyKey::job_phase(&job, JobTopic::Done);
    let header = rm_bus::size::header_len([(rm_bus::reqack::IDEMPOTENCY_HEADER, key.as_str())]);

    // headers + payload exactly at the limit: sent and answered
    let answer = tokio::spawn(async move {
        let m = next_within(&mut sub, WAIT)
            .await
            .expect("the fitting request arrives");
        cp.publish(m.reply.unwrap(), encode(&Ack::ok()))
            .await
            .unwrap();
        cp.flush().await.unwrap();
        m.payload.len()
    });
    let fits = vec![b'x'; 4096 - header];
    let ack = request_ack(&agent, &subj, &key, fits.into(), &fast_policy(WAIT))
        .await
        .expect("a request of exactly max_payload is delivered");
    assert!(ack.ok);
    assert_eq!(answer.await.unwrap(), 4096 - header);

    // one byte more: refused before sending, not retried until the deadline
    let over = vec![b'x'; 4096 - header + 1];
    let err = request_ack(&agent, &subj, &key, over.into(), &fast_policy(WAIT))
        .await
        .unwrap_err();
    match err {
        RequestError::TooLarge { too_large, .. } => {
            assert_eq!((too_large.size, too_large.max), (4097, 4096));
        }
        other => panic!("expected TooLarge, got {other}"),
    }
}
