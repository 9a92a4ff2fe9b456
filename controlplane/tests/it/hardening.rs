//! The control plane under trouble: store errors in background loops are
//! logged, counted and survived; replies go only to the asking agent's own
//! inbox.

use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::msg::{EventMsg, Goodbye, PROTOCOL_VERSION, decode, encode};
use rm_bus::subject::{self, Event};
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

async fn metrics(cp: &Cp) -> api::Metrics {
    cp.call(api::METRICS, serde_json::json!({})).await
}

async fn goodbye(agent: &Agent) {
    let bye = Goodbye {
        v: PROTOCOL_VERSION,
        ts_ms: 0,
        reason: Some("test".into()),
    };
    agent
        .client
        .publish(subject::agent_goodbye(&agent.host), encode(&bye))
        .await
        .unwrap();
    agent.client.flush().await.unwrap();
}

/// Waits for a `host.offline` event naming `host`.
async fn offline_event_for(sub: &mut async_nats::Subscriber, host: &str) {
    loop {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a host.offline event")
            .expect("subscription open");
        let e: EventMsg = decode("event", &m.payload).unwrap();
        if e.host.as_ref().map(|h| h.as_str()) == Some(host) {
            return;
        }
    }
}

#[tokio::test]
async fn store_errors_in_background_loops_are_counted_and_the_role_keeps_serving() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut leaving = Agent::enroll(&bus, &cp, "leaving").await.unwrap();
    let mut worker = Agent::enroll(&bus, &cp, "worker").await.unwrap();
    leaving.hello(0, vec![], vec![]).await;
    worker.hello(0, vec![], vec![]).await;
    let repo = repo_with(&cp, "r1", "pw", &[&worker], &[]).await;
    let db = cp.db().await;

    // The store fails every query on hosts and jobs for a while (as a
    // read-only, corrupt or locked database would).
    exec(&db, "ALTER TABLE hosts RENAME TO hosts_away").await;
    exec(&db, "ALTER TABLE jobs RENAME TO jobs_away").await;
    goodbye(&leaving).await;
    let m = eventually("every loop to hit the broken store", || async {
        let m = metrics(&cp).await;
        (m.errors_of("sweeper") > 0 && m.errors_of("dispatcher") > 0 && m.errors_of("goodbye") > 0)
            .then_some(m)
    })
    .await;
    assert!(m.errors_of("goodbye") >= 1, "{m:?}");
    exec(&db, "ALTER TABLE hosts_away RENAME TO hosts").await;
    exec(&db, "ALTER TABLE jobs_away RENAME TO jobs").await;

    // Recovered by itself: services answer, a goodbye takes a host offline
    // (while it still heartbeats, so only the goodbye loop can), jobs are
    // dispatched, and a silent host is swept offline.
    let mut offline = cp
        .web
        .subscribe(Event::HostOffline.subject())
        .await
        .unwrap();
    cp.web.flush().await.unwrap();
    goodbye(&leaving).await;
    offline_event_for(&mut offline, &leaving.host_id()).await;

    let created: api::JobCreated = cp
        .call(
            api::JOB_CREATE,
            api::JobCreate {
                host_id: worker.host_id(),
                repo_id: repo,
                params: backup_params(),
                timeout_secs: None,
                target_host_id: None,
            },
        )
        .await;
    let spec = worker.expect_dispatch().await;
    assert_eq!(spec.job_id.as_str(), created.job_id);

    worker.stop_heartbeats();
    offline_event_for(&mut offline, &worker.host_id()).await;
    leaving.stop_heartbeats();
}

#[tokio::test]
async fn replies_go_only_to_the_asking_agents_own_inbox() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mallory = Agent::enroll(&bus, &cp, "mallory").await.unwrap();
    let mut victim = Agent::enroll(&bus, &cp, "victim").await.unwrap();
    let hello = rm_bus::msg::Hello {
        v: PROTOCOL_VERSION,
        agent_version: "0.1.0-test".into(),
        restic_version: None,
        os: "linux".into(),
        arch: "x86_64".into(),
        hostname: "mallory".into(),
        config_version: 0,
        accepted_jobs: vec![],
        running_jobs: vec![],
        accept_seq: None,
    };
    // A hello whose reply subject is the victim's command subject, and one
    // whose reply subject is the victim's inbox: neither is answered there.
    let mut victim_inbox = victim
        .client
        .subscribe(format!("_INBOX.{}.>", victim.host))
        .await
        .unwrap();
    victim.client.flush().await.unwrap();
    // (one after the other: a host's second hello waiting would replace
    // its first)
    for (n, reply) in [
        subject::cmd(&victim.host),
        format!("_INBOX.{}.stolen", victim.host),
    ]
    .into_iter()
    .enumerate()
    {
        mallory
            .client
            .publish_with_reply(subject::agent_hello(&mallory.host), reply, encode(&hello))
            .await
            .unwrap();
        mallory.client.flush().await.unwrap();
        eventually("the reply refused", || async {
            (metrics(&cp).await.replies_refused > n as u64).then_some(())
        })
        .await;
    }
    let m = metrics(&cp).await;
    assert_eq!(m.replies_refused, 2);
    assert!(
        victim.next_command(Duration::ZERO).await.is_none(),
        "the victim got a command it never should have"
    );
    assert!(
        tokio::time::timeout(Duration::ZERO, victim_inbox.next())
            .await
            .is_err(),
        "the victim's inbox got a reply to someone else's request"
    );

    // The asker's own inbox still gets its answer.
    let mut mallory = mallory;
    let reply = mallory.hello(0, vec![], vec![]).await;
    assert!(reply.server_time_ms > 0);
}

#[tokio::test]
async fn an_enrollment_with_the_token_in_clear_is_refused_and_the_token_stays_valid() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let added = cp.host_add("web-1").await;
    assert!(!format!("{added:?}").contains(&added.token));
    let (nkey, xkey) = (nkeys::KeyPair::new_user(), nkeys::XKey::new());
    let req = enroll_request(&added.token, &nkey, &xkey, "web-1");
    assert!(!format!("{req:?}").contains(&added.token));
    let err = cp
        .call_raw::<_, rm_bus::msg::EnrollReply>(api::ENROLL, req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid");
    // sealed to some other key: does not open
    let other = nkeys::XKey::new();
    let wrong = api::SealedEnroll::seal(&req, &other.public_key()).unwrap();
    let err = cp
        .call_raw::<_, rm_bus::msg::EnrollReply>(api::ENROLL, wrong)
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid");
    // sealed to the control plane: enrolled
    let reply = cp.enroll_call(req).await;
    assert_eq!(reply.host_id.as_str(), added.host_id);
}

#[tokio::test]
async fn a_heartbeat_storm_while_the_database_is_locked_drops_nothing_and_keeps_every_host_live() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let stormy = Agent::enroll(&bus, &cp, "stormy").await.unwrap();
    let quiet = Agent::enroll(&bus, &cp, "quiet").await.unwrap();
    let db = cp.db().await;
    let before = metrics(&cp).await.heartbeats_received;

    // The writer is stuck behind another connection's write lock while a
    // storm of heartbeats arrives.
    let lock = db.write().await.unwrap();
    const STORM: u64 = 4096 + 512;
    let beat = encode(&rm_bus::msg::Heartbeat {
        v: PROTOCOL_VERSION,
        ts_ms: 0,
        agent_version: "0.1.0-test".into(),
        restic_version: None,
        os: "linux".into(),
        arch: "x86_64".into(),
        uptime_secs: 1,
        config_version: 0,
        disks: vec![],
        running_jobs: vec![],
        next_runs: vec![],
        bus_node: None,
    });
    for _ in 0..STORM {
        stormy
            .client
            .publish(subject::agent_heartbeat(&stormy.host), beat.clone())
            .await
            .unwrap();
    }
    stormy.client.flush().await.unwrap();
    eventually("the storm to be read", || async {
        (metrics(&cp).await.heartbeats_received >= before + STORM).then_some(())
    })
    .await;
    // The one heartbeat of a quiet host arrives behind the storm.
    let sent_at = rm_bus::clock::system().now_ms();
    quiet.heartbeat().await;
    let m = eventually("the quiet host's beat to be read", || async {
        let m = metrics(&cp).await;
        (m.heartbeats_received > before + STORM).then_some(m)
    })
    .await;
    assert_eq!(m.heartbeats_dropped, 0, "{m:?}");
    drop(lock);

    // Once the writer catches up, the quiet host's beat is on record, and
    // the storm cost one row per host per flush, not one per beat.
    eventually("the quiet host to be seen", || async {
        let mut c = db.read().await.unwrap();
        let h = rm_store::hosts::get(&mut c, &quiet.host_id())
            .await
            .unwrap();
        h.last_seen_at.is_some_and(|t| t >= sent_at).then_some(())
    })
    .await;
    let m = metrics(&cp).await;
    assert!(m.heartbeat_rows_written < STORM / 10, "{m:?}");
}

fn test_hello() -> bytes::Bytes {
    encode(&rm_bus::msg::Hello {
        v: PROTOCOL_VERSION,
        agent_version: "0.1.0-test".into(),
        restic_version: None,
        os: "linux".into(),
        arch: "x86_64".into(),
        hostname: "stormy".into(),
        config_version: 0,
        accepted_jobs: vec![],
        running_jobs: vec![],
        accept_seq: None,
    })
}

/// `agent`'s replies to hellos sent with [`send_hello`].
async fn hello_replies(agent: &Agent) -> async_nats::Subscriber {
    let sub = agent
        .client
        .subscribe(format!("_INBOX.{}.storm.>", agent.host))
        .await
        .unwrap();
    agent.client.flush().await.unwrap();
    sub
}

/// A hello from `agent` whose answer goes to `_INBOX.<host>.storm.<n>`.
async fn send_hello(agent: &Agent, n: usize) {
    agent
        .client
        .publish_with_reply(
            subject::agent_hello(&agent.host),
            format!("_INBOX.{}.storm.{n}", agent.host),
            test_hello(),
        )
        .await
        .unwrap();
    agent.client.flush().await.unwrap();
}

async fn cp_with_hello_timings(
    bus: &TestBus,
    dir: &std::path::Path,
    concurrency: usize,
    max_wait: Duration,
) -> Cp {
    let mut opts = CpOptions::default();
    opts.timings.hello_concurrency = concurrency;
    opts.timings.hello_max_wait = max_wait;
    Cp::start(bus, dir.into(), opts).await.unwrap()
}

#[tokio::test]
async fn a_hello_storm_from_many_hosts_is_handled_a_bounded_number_at_a_time_and_all_are_answered()
{
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = cp_with_hello_timings(&bus, dir.path(), 2, Duration::from_secs(60)).await;
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(
            Agent::enroll(&bus, &cp, &format!("stormy-{i}"))
                .await
                .unwrap(),
        );
    }
    let mut replies = Vec::new();
    for a in &agents {
        replies.push(hello_replies(a).await);
    }
    let db = cp.db().await;
    let before = metrics(&cp).await.hellos_queued_total;

    // Every hello needs the store, which another connection holds.
    let lock = db.write().await.unwrap();
    for a in &agents {
        send_hello(a, 0).await;
    }
    let m = eventually("two hellos in hand and three waiting", || async {
        let m = metrics(&cp).await;
        (m.hellos_queued_total - before == 5 && m.hellos_waiting == 3).then_some(m)
    })
    .await;
    assert_eq!((m.hellos_superseded, m.hellos_expired), (0, 0), "{m:?}");
    drop(lock);

    for r in &mut replies {
        tokio::time::timeout(WAIT, r.next())
            .await
            .expect("every host's hello is answered")
            .unwrap();
    }
    assert_eq!(metrics(&cp).await.hellos_waiting, 0);
}

#[tokio::test]
async fn hellos_an_agent_repeats_while_it_waits_are_answered_once_the_latest() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = cp_with_hello_timings(&bus, dir.path(), 1, Duration::from_secs(60)).await;
    let agent = Agent::enroll(&bus, &cp, "repeater").await.unwrap();
    let mut replies = hello_replies(&agent).await;
    let db = cp.db().await;
    let before = metrics(&cp).await;

    let lock = db.write().await.unwrap();
    send_hello(&agent, 0).await;
    eventually("the first hello in hand", || async {
        let m = metrics(&cp).await;
        (m.hellos_queued_total > before.hellos_queued_total && m.hellos_waiting == 0).then_some(())
    })
    .await;
    for n in 1..=5 {
        send_hello(&agent, n).await;
    }
    let m = eventually("the repeats read", || async {
        let m = metrics(&cp).await;
        (m.hellos_queued_total - before.hellos_queued_total == 6).then_some(m)
    })
    .await;
    assert_eq!(m.hellos_waiting, 1, "one per host: {m:?}");
    assert_eq!(m.hellos_superseded - before.hellos_superseded, 4, "{m:?}");
    drop(lock);

    let mut answered = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("two answers")
            .unwrap();
        answered.push(r.subject.to_string());
    }
    answered.sort();
    let inbox = |n: usize| format!("_INBOX.{}.storm.{n}", agent.host);
    assert_eq!(
        answered,
        [inbox(0), inbox(5)],
        "the one in hand and the latest"
    );
    let m = metrics(&cp).await;
    assert_eq!((m.hellos_waiting, m.hellos_expired), (0, 0), "{m:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replies.next())
            .await
            .is_err(),
        "a replaced hello is not answered"
    );
}

#[tokio::test]
async fn a_hello_that_waited_longer_than_its_agent_waits_is_dropped_and_the_next_is_answered() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = cp_with_hello_timings(&bus, dir.path(), 1, Duration::from_millis(300)).await;
    let first = Agent::enroll(&bus, &cp, "first").await.unwrap();
    let late = Agent::enroll(&bus, &cp, "late").await.unwrap();
    let mut first_replies = hello_replies(&first).await;
    let mut late_replies = hello_replies(&late).await;
    let db = cp.db().await;
    let before = metrics(&cp).await;

    let lock = db.write().await.unwrap();
    send_hello(&first, 0).await;
    eventually("the first hello in hand", || async {
        let m = metrics(&cp).await;
        (m.hellos_queued_total > before.hellos_queued_total && m.hellos_waiting == 0).then_some(())
    })
    .await;
    send_hello(&late, 0).await;
    eventually("the late hello waiting", || async {
        (metrics(&cp).await.hellos_waiting == 1).then_some(())
    })
    .await;
    // longer than the 300 ms a hello may wait
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(lock);

    tokio::time::timeout(WAIT, first_replies.next())
        .await
        .expect("the hello in hand is answered")
        .unwrap();
    let m = eventually("the late hello dropped", || async {
        let m = metrics(&cp).await;
        (m.hellos_expired - before.hellos_expired == 1).then_some(m)
    })
    .await;
    assert_eq!(m.hellos_waiting, 0, "{m:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), late_replies.next())
            .await
            .is_err(),
        "a stale hello is not answered"
    );
    // the agent asks again: answered
    send_hello(&late, 1).await;
    let r = tokio::time::timeout(WAIT, late_replies.next())
        .await
        .expect("the repeated hello is answered")
        .unwrap();
    assert_eq!(r.subject.as_str(), format!("_INBOX.{}.storm.1", late.host));
}

#[tokio::test]
async fn a_database_migrated_past_this_builds_schema_stops_the_role_with_the_reason() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let db = cp.db().await;
    // a newer build of another role migrates the shared database
    let mut c = db.pool().acquire().await.unwrap();
    sqlx::query("INSERT INTO schema_migrations VALUES (?, 'from a newer build', 0)")
        .bind(rm_store::schema_version() + 1)
        .execute(&mut *c)
        .await
        .unwrap();
    drop(c);
    let error = cp.ended_with_error().await;
    assert!(
        error.contains(&format!(
            "schema version {} by a newer restic-manager",
            rm_store::schema_version() + 1
        )),
        "{error}"
    );
}

#[tokio::test]
async fn hellos_that_waited_past_the_threshold_are_answered_newest_first_and_all_in_the_end() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CpOptions::default();
    opts.timings.hello_concurrency = 1;
    opts.timings.hello_max_wait = Duration::from_secs(60);
    opts.timings.hello_newest_first = Duration::from_millis(200);
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(
            Agent::enroll(&bus, &cp, &format!("lifo-{i}"))
                .await
                .unwrap(),
        );
    }
    let mut replies = Vec::new();
    for a in &agents {
        replies.push(hello_replies(a).await);
    }
    let tap = bus.tap_all().await.unwrap();
    let db = cp.db().await;
    let before = metrics(&cp).await;

    // The one handler holds lifo-0's hello while the store is locked ...
    let lock = db.write().await.unwrap();
    send_hello(&agents[0], 0).await;
    eventually("the first hello in hand", || async {
        let m = metrics(&cp).await;
        (m.hellos_queued_total > before.hellos_queued_total && m.hellos_waiting == 0).then_some(())
    })
    .await;
    // ... while three more arrive, one after the other (the bus orders
    // messages per sender only), and wait past the threshold
    for (n, a) in agents[1..].iter().enumerate() {
        send_hello(a, 0).await;
        eventually("the hello queued", || async {
            (metrics(&cp).await.hellos_waiting == n as u64 + 1).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(lock);

    for r in &mut replies {
        tokio::time::timeout(WAIT, r.next())
            .await
            .expect("every waiting hello is answered in the end")
            .unwrap();
    }
    // the tap reads on a connection of its own: let it catch up
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answered: Vec<String> = tap
        .stop()
        .await
        .into_iter()
        .filter_map(|m| {
            let s = m.subject.as_str();
            s.ends_with(".storm.0")
                .then(|| s.trim_start_matches("_INBOX.").trim_end_matches(".storm.0"))
                .map(str::to_owned)
        })
        .collect();
    let host = |i: usize| agents[i].host.to_string();
    assert_eq!(
        answered,
        [host(0), host(3), host(2), host(1)],
        "the one in hand, then the newest first"
    );
    let m = metrics(&cp).await;
    assert_eq!(
        m.hellos_newest_first - before.hellos_newest_first,
        3,
        "{m:?}"
    );
    assert_eq!((m.hellos_waiting, m.hellos_expired), (0, 0), "{m:?}");
}
