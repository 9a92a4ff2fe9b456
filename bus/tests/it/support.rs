//! Small helpers shared by the integration tests.

use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures_util::StreamExt;

pub const WAIT: Duration = Duration::from_secs(5);

/// The next message on `sub`, or `None` if none arrives within `within`.
pub async fn next_within(sub: &mut Subscriber, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, sub.next())
        .await
        .ok()
        .flatten()
}

pub fn host(s: &str) -> rm_bus::HostId {
    rm_bus::HostId::parse(s).expect("valid host id")
}

/// Publishes `warmup` on `subject` until `sub` sees one: proves the
/// subscription is live on the server (a flush only empties the socket;
/// the server may not have processed the SUB yet). Returns once seen;
/// later copies still in flight carry the payload `warmup` and can be
/// skipped with [`next_real`].
pub async fn wait_until_live(publisher: &async_nats::Client, subject: &str, sub: &mut Subscriber) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publisher
            .publish(subject.to_owned(), "warmup".into())
            .await
            .expect("publish warmup");
        if next_within(sub, Duration::from_millis(100)).await.is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscription on {subject} never became live"
        );
    }
}

/// The next message that is not a `warmup`.
pub async fn next_real(sub: &mut Subscriber, within: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, sub.next())
            .await
            .ok()
            .flatten()?;
        if m.payload.as_ref() != b"warmup" {
            return Some(m);
        }
    }
}

/// A request policy for tests: retries while the responder's subscription
/// is still being registered on the server.
pub fn retry() -> rm_bus::reqack::RetryPolicy {
    rm_bus::reqack::RetryPolicy {
        attempt_timeout: Duration::from_secs(1),
        deadline: Some(WAIT),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        jitter: 0.5,
    }
}
