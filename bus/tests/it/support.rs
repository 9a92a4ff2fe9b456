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
