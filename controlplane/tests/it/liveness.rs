//! Liveness: a host goes offline within three missed heartbeats and comes
//! back with the next one; a control-plane restart does not flag a healthy
//! fleet offline.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::msg::{PROTOCOL_VERSION, encode};
use rm_bus::subject::{self, Event};
use rm_controlplane::Timings;
use rm_testkit::TestBus;

use crate::support::*;

const HEARTBEAT: Duration = Duration::from_millis(500);

/// One enrolled host, online after its hello, whose heartbeats then stop;
/// `offline` hears every `host.offline` event.
struct SilentHost {
    _bus: TestBus,
    _dir: tempfile::TempDir,
    cp: Cp,
    agent: Agent,
    offline: async_nats::Subscriber,
    db: rm_store::Store,
}

impl SilentHost {
    async fn start() -> Self {
        let bus = TestBus::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
            .await
            .unwrap();
        let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
        let offline = cp
            .web
            .subscribe(Event::HostOffline.subject())
            .await
            .unwrap();
        agent.hello(0, vec![], vec![]).await;
        let db = cp.db().await;
        assert_eq!(host_status(&db, &agent.host_id()).await, "online");
        agent.stop_heartbeats();
        Self {
            _bus: bus,
            _dir: dir,
            cp,
            agent,
            offline,
            db,
        }
    }
}

/// The metrics say whether the sweeper looked at all (a 100,000-agent run
/// detected none of its killed agents, and nothing told why): ticks
/// skipped before the connection settled, sweeps done and how long they
/// took.
#[tokio::test]
async fn the_offline_sweeper_counts_ticks_before_settling_and_sweeps_with_their_duration() {
    let SilentHost {
        _bus,
        _dir,
        cp,
        agent: _agent,
        mut offline,
        db: _db,
    } = SilentHost::start().await;
    tokio::time::timeout(WAIT, offline.next())
        .await
        .expect("host.offline event")
        .unwrap();
    let m = cp.metrics().await;
    assert!(
        m.offline_sweeps_unsettled >= 1,
        "the first tick comes before the window passed: {m:?}"
    );
    assert!(m.offline_sweeps >= 1, "{m:?}");
    assert!(m.offline_sweep_max_ms >= m.offline_sweep_last_ms, "{m:?}");
    assert_eq!(m.bus_reconnects, 0, "{m:?}");
}

#[tokio::test]
async fn offline_after_missed_heartbeats_and_back_on_the_next() {
    let SilentHost {
        _bus,
        _dir,
        cp,
        agent,
        mut offline,
        db,
    } = SilentHost::start().await;

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

/// A host that comes back online is written at once, and alone: the other
/// hosts heard from since the last flush wait for the periodic flush. A
/// bus node restart brings thousands of hosts back one by one; writing
/// every host heard since the last flush for each of them (50,000 rows a
/// time) kept the writer busy for minutes and hellos went unanswered.
#[tokio::test]
async fn a_host_back_online_is_written_alone_while_the_rest_wait_for_the_periodic_flush() {
    // the periodic flush (at most two heartbeats apart) after the test
    let (_bus, _dir, cp, agents) = six_hosts(Timings {
        heartbeat: Duration::from_secs(600),
        seen_flush: Duration::from_secs(600),
        ..fast_timings()
    })
    .await;
    let db = cp.db().await;
    // first beats: each host just came online, each written at once
    for a in &agents {
        a.heartbeat().await;
    }
    eventually("the first beats to be written", || async {
        (cp.metrics().await.heartbeat_rows_written >= 6).then_some(())
    })
    .await;
    // beats of hosts known online wait for the periodic flush
    for a in &agents {
        a.heartbeat().await;
    }
    eventually("the beats to be read", || async {
        (cp.metrics().await.heartbeats_received >= 12).then_some(())
    })
    .await;
    let before = cp.metrics().await.heartbeat_rows_written;
    assert_eq!(before, 6, "one row per host that came online");

    // one host leaves and comes back
    let gone = &agents[0];
    gone.client
        .publish(
            subject::agent_goodbye(&gone.host),
            encode(&rm_bus::msg::Goodbye {
                v: PROTOCOL_VERSION,
                ts_ms: 0,
                reason: None,
            }),
        )
        .await
        .unwrap();
    eventually("the goodbye", || async {
        (host_status(&db, &gone.host_id()).await == "offline").then_some(())
    })
    .await;
    gone.heartbeat().await;
    eventually("the host back online", || async {
        (host_status(&db, &gone.host_id()).await == "online").then_some(())
    })
    .await;
    let m = eventually("its row to be counted", || async {
        let m = cp.metrics().await;
        (m.heartbeat_rows_written > before).then_some(m)
    })
    .await;
    assert_eq!(
        m.heartbeat_rows_written,
        before + 1,
        "the host back online alone, not the five others heard since: {m:?}"
    );
}

/// The periodic flush writes a large fleet's rows a part at a time, so
/// hellos and results queued meanwhile are written between the parts (at
/// 50,000 agents one flush was a write of seconds that everything else
/// waited behind). Here two rows to a write: six hosts' beats take at
/// least three writes.
#[tokio::test]
async fn the_periodic_flush_writes_a_few_rows_at_a_time() {
    let (_bus, _dir, cp, agents) = six_hosts(Timings {
        heartbeat: Duration::from_secs(600),
        seen_flush: Duration::from_millis(500),
        flush_rows_per_write: 2,
        ..fast_timings()
    })
    .await;
    for a in &agents {
        a.heartbeat().await;
    }
    let m0 = eventually("the first beats to be written", || async {
        let m = cp.metrics().await;
        (m.heartbeat_rows_written >= 6).then_some(m)
    })
    .await;
    // beats of hosts known online: only the periodic flush writes them
    for a in &agents {
        a.heartbeat().await;
    }
    let m1 = eventually("the periodic flush", || async {
        let m = cp.metrics().await;
        (m.heartbeat_rows_written >= m0.heartbeat_rows_written + 6).then_some(m)
    })
    .await;
    assert!(
        m1.writes_committed >= m0.writes_committed + 3,
        "six rows in writes of two: {m0:?} then {m1:?}"
    );
}

/// A control plane with `timings` and six enrolled hosts that have not
/// beaten yet (no hello: their beats are sent by hand).
async fn six_hosts(timings: Timings) -> (TestBus, tempfile::TempDir, Cp, Vec<Agent>) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(
        &bus,
        dir.path().into(),
        CpOptions {
            timings,
            ..CpOptions::default()
        },
    )
    .await
    .unwrap();
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(Agent::enroll(&bus, &cp, &format!("web-{i}")).await.unwrap());
    }
    (bus, dir, cp, agents)
}

/// A web-role client hearing every `host.offline` event (keep the client:
/// the subscription ends with it).
async fn offline_watcher(bus: &TestBus) -> (rm_testkit::TestClient, async_nats::Subscriber) {
    let watcher = bus.connect_role(rm_bus::creds::Role::Web).await.unwrap();
    let offline = watcher
        .subscribe(Event::HostOffline.subject())
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    (watcher, offline)
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
    let (watcher, mut offline) = offline_watcher(&bus).await;

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

/// A control plane back after a long stop finds every host it has not
/// heard again silent since before the stop, though it may still be
/// reconnecting: such a host goes offline only once this control plane
/// has listened for the mass silence's longer window (four offline
/// windows), whether many hosts are silent (a mass silence) or few. A
/// 19,000-agent bench run restarted on a store whose hosts were last
/// heard 13 minutes earlier, its fleet reconnecting at 300 a second,
/// marked 5,129 of them offline one window after the start
/// (docs/benchmarks.md, stop 57). A host that never comes back is still
/// reported, that longer window after the start.
async fn hosts_last_heard_before_a_long_stop_go_offline_only_after_the_longer_window_from_the_start(
    hosts: usize,
) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let timings = fast_timings();
    let window = timings.heartbeat * timings.offline_after_missed;
    let longer = window * 4; // MASS_SILENCE_WINDOWS
    let opts = || CpOptions {
        timings: timings.clone(),
        ..CpOptions::default()
    };
    let mut cp = Cp::start(&bus, dir.path().into(), opts()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..hosts {
        ids.push(cp.host_add(&format!("web-{i}")).await.host_id);
    }
    cp.stop().await;
    // online when the control plane stopped, last heard ten minutes ago
    let db = cp.db().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let long_ago = now_ms - 600_000;
    let mut tx = db.write().await.unwrap();
    for id in &ids {
        sqlx::query("UPDATE hosts SET status = 'online', last_seen_at = ? WHERE id = ?")
            .bind(long_ago)
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    db.close().await;

    let (_watcher, mut offline) = offline_watcher(&bus).await;
    let started = std::time::Instant::now();
    let cp = Cp::start(&bus, dir.path().into(), opts()).await.unwrap();
    // two sweeps done (each counted after its events went out), each
    // holding every host back, and saying so
    let m = eventually("two offline sweeps after the start", || async {
        let m = cp.metrics().await;
        (m.offline_sweeps >= 2).then_some(m)
    })
    .await;
    let early = tokio::time::timeout(Duration::ZERO, offline.next()).await;
    assert!(
        early.is_err() || started.elapsed() >= longer,
        "a host not heard since before the stop went offline {:?} after the start, \
         within the mass silence's {longer:?}: {early:?}",
        started.elapsed()
    );
    if started.elapsed() < longer {
        assert!(
            m.offline_sweep_held_since_start >= 2 * hosts as u64,
            "two sweeps held {hosts} hosts each: {m:?}"
        );
    }
    // ... and a fleet that never comes back is reported after it
    let mut gone = std::collections::HashSet::new();
    while gone.len() < hosts {
        let evt = tokio::time::timeout(WAIT, offline.next())
            .await
            .expect("every silent host goes offline in the end")
            .unwrap();
        let msg: rm_bus::msg::EventMsg = rm_bus::msg::decode("event", &evt.payload).unwrap();
        gone.insert(msg.host.map(|h| h.as_str().to_owned()).unwrap());
    }
    assert!(
        started.elapsed() >= longer,
        "offline {:?} after the start, before the mass silence's {longer:?}",
        started.elapsed()
    );
    let db = cp.db().await;
    for id in &ids {
        assert_eq!(host_status(&db, id).await, "offline", "{id}");
    }
}

#[tokio::test]
async fn after_a_long_stop_a_fleet_not_yet_reconnected_goes_offline_only_after_four_windows_from_the_start()
 {
    // a mass silence: at least 50 hosts and a twentieth of those online
    hosts_last_heard_before_a_long_stop_go_offline_only_after_the_longer_window_from_the_start(60)
        .await;
}

#[tokio::test]
async fn after_a_long_stop_a_few_hosts_not_yet_reconnected_go_offline_only_after_four_windows_from_the_start()
 {
    hosts_last_heard_before_a_long_stop_go_offline_only_after_the_longer_window_from_the_start(3)
        .await;
}

/// The offline sweep asks the memory again when its write begins: a host
/// heard while the sweep read (seconds at 100,000 hosts) or waited for
/// the write lock stays online, although its stored last-seen is old (the
/// beat is only in memory until the next flush).
#[tokio::test]
async fn a_beat_heard_while_the_offline_sweep_waits_to_write_keeps_the_host_online() {
    use sqlx::Connection;
    let SilentHost {
        _bus,
        _dir,
        cp,
        agent,
        mut offline,
        db,
    } = SilentHost::start().await;

    // Another process holds the write lock: the sweep that finds the host
    // silent (three missed beats: 600 ms) waits for it to write.
    let url = format!(
        "sqlite://{}",
        cp.data_dir.join("restic-manager.db").display()
    );
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // the host speaks while that sweep waits, and goes on speaking
    agent.heartbeat().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    for _ in 0..15 {
        agent.heartbeat().await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), offline.next()).await
        {
            let e: rm_bus::msg::EventMsg = rm_bus::msg::decode("event", &m.payload).unwrap();
            panic!("marked offline although heard: {e:?}");
        }
    }
    assert_eq!(host_status(&db, &agent.host_id()).await, "online");
}

/// The first `host.offline` event on `offline` (its host) and how long
/// after this call it came, while `beat` runs every 100 ms or so (the
/// other hosts' heartbeats); fails after [`WAIT`].
async fn first_offline(
    offline: &mut async_nats::Subscriber,
    mut beat: impl AsyncFnMut(),
) -> (Option<String>, Duration) {
    let from = std::time::Instant::now();
    let evt = loop {
        beat().await;
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), offline.next()).await
        {
            break e;
        }
        assert!(
            from.elapsed() < WAIT,
            "the silent host was never marked offline"
        );
    };
    let took = from.elapsed();
    let msg: rm_bus::msg::EventMsg = rm_bus::msg::decode("event", &evt.payload).unwrap();
    (msg.host.map(|h| h.as_str().to_owned()), took)
}

/// A beat held up on the bus is not a host gone: while another host's
/// beats arrive 3 s late (a bus node handing over a backlog), a silent
/// host is marked offline only once it has been silent for the window and
/// as long again (the delay, capped at one more window), and then it is.
/// A host whose clock is minutes behind does not count as late.
#[tokio::test]
async fn while_beats_arrive_late_a_silent_host_waits_one_more_window_before_offline() {
    let (_bus, _dir, cp, mut agents) = six_hosts(fast_timings()).await;
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let mut offline = cp
        .web
        .subscribe(Event::HostOffline.subject())
        .await
        .unwrap();
    for a in agents.iter_mut().take(3) {
        a.hello(0, vec![], vec![]).await;
        a.stop_heartbeats();
    }
    let (late, skewed, quiet) = (&agents[0], &agents[1], &agents[2]);
    // on time first (the hosts' usual lateness), the skewed host's clock
    // five minutes behind all along
    for _ in 0..3 {
        late.heartbeat_stamped(now()).await;
        skewed.heartbeat_stamped(now() - 300_000).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the skewed host beside one on time, for two sweeps: delivery is not behind
    let sweeps = cp.metrics().await.offline_sweeps;
    let m = loop {
        skewed.heartbeat_stamped(now() - 300_000).await;
        late.heartbeat_stamped(now()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = cp.metrics().await;
        if m.offline_sweeps >= sweeps + 2 {
            break m;
        }
    };
    assert_eq!(
        m.offline_sweep_behind_max_ms, 0,
        "a clock five minutes off is not a late delivery: {m:?}"
    );

    // now one host's beats arrive 3 s late while another falls silent
    quiet.heartbeat_stamped(now()).await;
    let (host, took) = first_offline(&mut offline, async || {
        late.heartbeat_stamped(now() - 3_000).await;
        skewed.heartbeat_stamped(now() - 300_000).await;
    })
    .await;
    assert_eq!(
        host.as_deref(),
        Some(quiet.host_id().as_str()),
        "only the silent host goes offline"
    );
    // window 600 ms (3 x 200 ms), plus the delay capped at one more window
    assert!(
        took >= Duration::from_millis(1_150),
        "marked offline {took:?} after its last beat, before the window and the delay had passed"
    );
    let m = cp.metrics().await;
    assert_eq!(
        m.offline_sweep_behind_max_ms, 600,
        "capped at one more window: {m:?}"
    );
}

/// A host whose beats came through a bus node that has gone quiet (its
/// read loops frozen: the beats it holds are not lost, only late) waits
/// as long as the node has been quiet, at most one more window, while a
/// node still delivering leaves the fleet's window as it was. The host is
/// marked offline once that wait is over.
#[tokio::test]
async fn a_silent_host_behind_a_quiet_bus_node_waits_as_long_as_the_node_before_offline() {
    // 1 s beats: a node counts as quiet from a second without beats on
    let (_bus, _dir, cp, mut agents) = six_hosts(Timings {
        heartbeat: Duration::from_secs(1),
        ..fast_timings()
    })
    .await;
    let mut offline = cp
        .web
        .subscribe(Event::HostOffline.subject())
        .await
        .unwrap();
    for a in agents.iter_mut().take(2) {
        a.hello(0, vec![], vec![]).await;
        a.stop_heartbeats();
    }
    let (held, live) = (&agents[0], &agents[1]);
    // node a delivered 600 beats (10 a second over the node's minute),
    // then nothing: the held host's latest beat came through it
    live.heartbeats_through("b", 1).await;
    held.heartbeats_through("a", 600).await;
    let (host, took) = first_offline(&mut offline, async || {
        live.heartbeats_through("b", 1).await;
    })
    .await;
    assert_eq!(
        host.as_deref(),
        Some(held.host_id().as_str()),
        "only the silent host goes offline"
    );
    // window 3 s (3 x 1 s), plus its node's quiet (past its first second)
    // capped at one more window: 6 s; without the node's quiet, 3 s
    assert!(
        took >= Duration::from_millis(5_500),
        "marked offline {took:?} after its last beat, before the window and its node's quiet had passed"
    );
    let m = cp.metrics().await;
    assert!(
        m.offline_sweep_held_by_node >= 1,
        "sweeps kept it back for its node: {m:?}"
    );
    assert_eq!(
        m.offline_sweep_node_wait_max_ms, 3_000,
        "capped at one more window: {m:?}"
    );
    assert_eq!(
        m.offline_sweep_behind_max_ms, 0,
        "the fleet's delivery was never behind, only node a: {m:?}"
    );
}

/// A bus outage is a stop the control plane lives through: after it
/// reconnects, every host it has not heard since may still be
/// reconnecting too, so such a host goes offline only four offline
/// windows after the reconnect, as after a start (stop 57: a 19,000-agent
/// fleet reconnecting after a restart had 5,129 hosts marked offline,
/// docs/benchmarks.md). Hosts back within that are never flagged; one that
/// never comes back is reported once it has passed.
#[tokio::test]
async fn after_a_bus_restart_hosts_not_yet_back_go_offline_only_four_windows_after_the_reconnect() {
    let timings = Timings {
        heartbeat: HEARTBEAT,
        ..fast_timings()
    };
    let window = timings.heartbeat * timings.offline_after_missed;
    let longer = window * 4; // MASS_SILENCE_WINDOWS
    let (mut bus, _dir, cp, mut agents) = six_hosts(timings).await;
    for a in &mut agents {
        a.hello(0, vec![], vec![]).await;
        a.stop_heartbeats(); // this test beats by hand
        a.heartbeat().await;
    }
    let ids: Vec<String> = agents.iter().map(|a| a.host_id()).collect();
    let db = cp.db().await;
    for id in &ids {
        assert_eq!(host_status(&db, id).await, "online", "{id}");
    }

    // the bus goes down for two offline windows: every host is silent for
    // longer than the window by the time the control plane is back
    bus.stop().await;
    tokio::time::sleep(window * 2).await;
    bus.restart().await.unwrap();
    let restarted = std::time::Instant::now();
    let (_watcher, mut offline) = offline_watcher(&bus).await;
    eventually("the control plane back on the bus", || async {
        (cp.metrics().await.bus_reconnects >= 1).then_some(())
    })
    .await;

    // The fleet is reconnecting: until five of the six are back, no host
    // goes offline, and the sweeps say they hold all six (waiting for
    // the agents' own clients to be connected again as well, so that
    // their beats are not held up in them).
    let reconnected =
        |a: &Agent| a.client.connection_state() == async_nats::connection::State::Connected;
    loop {
        tokio::select! {
            e = offline.next() => panic!(
                "offline {:?} after the bus restart, within four windows ({longer:?}): {e:?}",
                restarted.elapsed()
            ),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                let m = cp.metrics().await;
                if m.offline_sweep_held_since_start >= 6 && agents.iter().all(reconnected) {
                    break;
                }
                assert!(
                    restarted.elapsed() < longer,
                    "no sweep held the hosts not heard since the reconnect: {m:?}"
                );
            }
        }
    }
    let beating = {
        let back: Vec<Agent> = agents.drain(..5).collect();
        tokio::spawn(async move {
            loop {
                for a in &back {
                    a.heartbeat().await;
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    };
    let evt = tokio::time::timeout(WAIT, offline.next())
        .await
        .expect("the host that never came back goes offline")
        .unwrap();
    let took = restarted.elapsed();
    let msg: rm_bus::msg::EventMsg = rm_bus::msg::decode("event", &evt.payload).unwrap();
    assert_eq!(
        msg.host.map(|h| h.as_str().to_owned()).as_deref(),
        Some(ids[5].as_str())
    );
    assert!(
        took >= longer,
        "offline {took:?} after the bus restart, before four windows ({longer:?})"
    );
    // the others stay online
    tokio::time::sleep(window * 2).await;
    if let Ok(e) = tokio::time::timeout(Duration::ZERO, offline.next()).await {
        panic!("a host that came back went offline: {e:?}");
    }
    for id in &ids[..5] {
        assert_eq!(host_status(&db, id).await, "online", "{id}");
    }
    beating.abort();
}
