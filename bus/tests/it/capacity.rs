//! A client's subscription buffer is the size its `ConnectSpec` names:
//! what arrives while the reader is behind is kept up to it, and dropped
//! past it (the control plane's heartbeat subscription relies on this at
//! fleet scale).

use std::time::Duration;

use rm_bus::HostId;
use rm_bus::subject::{self, AgentTopicKind};
use rm_bus_server::creds::Role;
use rm_testkit::TestBus;

use crate::support::next_within;

/// Subscribes to every heartbeat with `capacity`, lets one agent publish
/// `sent` beats without reading, then counts what the subscription holds.
async fn held(bus: &TestBus, capacity: Option<usize>, sent: usize) -> usize {
    let role = Role::Controlplane;
    let mut spec = bus.spec(&role, bus.creds_for(&role).expect("creds"));
    spec.subscription_capacity = capacity;
    let (client, _events) = rm_bus::connect::connect(&spec).await.expect("connect");
    let mut sub = client
        .subscribe(subject::agent_any(AgentTopicKind::Heartbeat))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let host = HostId::parse("hcapacity").expect("host id");
    let agent = bus.agent(host.as_str()).await.expect("agent");
    // the subscription is live once a beat comes back
    let beat = subject::agent_heartbeat(&host);
    loop {
        agent
            .publish(beat.clone(), "warmup".into())
            .await
            .expect("publish");
        if next_within(&mut sub, Duration::from_millis(100))
            .await
            .is_some()
        {
            break;
        }
    }
    // drain warmups still in flight
    while next_within(&mut sub, Duration::from_millis(200))
        .await
        .is_some()
    {}
    for i in 0..sent {
        agent
            .publish(beat.clone(), i.to_string().into())
            .await
            .expect("publish");
    }
    agent.flush().await.expect("flush");
    // every beat has reached the subscriber's client once a round trip
    // through the server behind them is done
    client.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut n = 0;
    while next_within(&mut sub, Duration::from_millis(200))
        .await
        .is_some()
    {
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_subscription_keeps_what_its_connect_spec_allows_while_its_reader_is_behind() {
    let bus = TestBus::start().await.expect("bus");
    let small = held(&bus, Some(16), 200).await;
    assert!(small <= 16 + 1, "a capacity of 16 held {small} of 200");
    assert_eq!(
        held(&bus, Some(1024), 200).await,
        200,
        "a capacity of 1024 holds all 200"
    );
}
