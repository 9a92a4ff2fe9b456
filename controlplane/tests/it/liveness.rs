//! Liveness: a host goes offline within three missed heartbeats and comes
//! back with the next one; a control-plane restart does not flag a healthy
//! fleet offline.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::subject::Event;
use rm_controlplane::Timings;
use rm_testkit::TestBus;

use crate::support::*;

const HEARTBEAT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn offline_after_missed_heartbeats_and_back_on_the_next() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let mut offline = cp
        .web
        .subscribe(Event::HostOffline.subject())
        .await
        .unwrap();
    agent.hello(0, vec![], vec![]).await;
    let db = cp.db().await;
    assert_eq!(host_status(&db, &agent.host_id()).await, "online");
    agent.stop_heartbeats();

    // silence: offline within 3 intervals (+ one sweep), with an event
    let evt = tokio::time::timeout(WAIT, offline.next())
        .await
        .expect("host.offline event")
        .unwrap();
    let msg: rm_bus::msg::EventMsg = rm_bus::msg::decode("event", &evt.payload).unwrap();
    assert_eq!(
        msg.host.as_ref().map(|h| h.as_str()),
        Some(agent.host_id().as_str())
    );
    assert_eq!(host_status(&db, &agent.host_id()).await, "offline");

    // the next heartbeat brings it back (heartbeats repeat until the
    // event subscription is surely live)
    let mut online = cp.web.subscribe(Event::HostOnline.subject()).await.unwrap();
    let evt = loop {
        agent.heartbeat().await;
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), online.next()).await {
            break e;
        }
    };
    let msg: rm_bus::msg::EventMsg = rm_bus::msg::decode("event", &evt.payload).unwrap();
    assert_eq!(
        msg.host.as_ref().map(|h| h.as_str()),
        Some(agent.host_id().as_str())
    );
    assert_eq!(host_status(&db, &agent.host_id()).await, "online");
}

#[tokio::test]
async fn a_control_plane_restart_does_not_flag_a_healthy_fleet_offline() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // wider intervals than the other tests: this one must not confuse a
    // loaded machine with a dead host
    let opts = || CpOptions {
        timings: Timings {
            heartbeat: HEARTBEAT,
            ..fast_timings()
        },
        ..CpOptions::default()
    };
    let mut cp = Cp::start(&bus, dir.path().into(), opts()).await.unwrap();
    let mut agents = Vec::new();
    for i in 0..3 {
        let mut a = Agent::enroll(&bus, &cp, &format!("web-{i}")).await.unwrap();
        a.hello(0, vec![], vec![]).await;
        a.stop_heartbeats(); // this test beats by hand
        agents.push(a);
    }
    let ids: Vec<String> = agents.iter().map(|a| a.host_id()).collect();
    // healthy agents heartbeat every interval, whatever happens
    let beating = tokio::spawn(async move {
        loop {
            for a in &agents {
                a.heartbeat().await;
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
    let watcher = bus.connect_role(rm_bus::creds::Role::Web).await.unwrap();
    let mut offline = watcher
        .subscribe(Event::HostOffline.subject())
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    cp.stop().await;
    // down for well over three heartbeat intervals
    tokio::time::sleep(HEARTBEAT * 6).await;
    let cp = Cp::start(&bus, dir.path().into(), opts()).await.unwrap();
    // ... and up for several sweeps that looked at the fleet (each counted
    // after its events went out)
    eventually("three offline sweeps after the restart", || async {
        let m: rm_controlplane::api::Metrics = cp
            .call(rm_controlplane::api::METRICS, serde_json::json!({}))
            .await;
        (m.offline_sweeps >= 3).then_some(())
    })
    .await;
    watcher.flush().await.unwrap();
    let flagged = tokio::time::timeout(Duration::ZERO, offline.next()).await;
    assert!(
        flagged.is_err(),
        "a healthy host was declared offline: {flagged:?}"
    );
    let db = cp.db().await;
    for id in &ids {
        assert_eq!(host_status(&db, id).await, "online", "{id}");
    }
    beating.abort();
}
