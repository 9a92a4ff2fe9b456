//! The agent's bus session: hello again after the bus restarts, retried
//! until the control plane answers (and jobs keep flowing), a clean stop says goodbye, and `tls://` bus URLs with the
//! state directory's CA.

use std::time::Duration;

use futures_util::StreamExt;
use rm_agent::state::StateDir;
use rm_bus::HostId;
use rm_bus::creds::Role;
use rm_bus::msg::{Hello, HelloReply, PROTOCOL_VERSION, decode, encode};
use rm_bus::subject;
use rm_testkit::{BusKind, BusOptions, TestBus};

use crate::support::*;

async fn host_status(env: &Env, host: &str) -> String {
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    rm_store::hosts::get(&mut c, host).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_bus_restart_the_agent_says_hello_again_and_jobs_flow() {
    let bin = restic_bin();
    let mut env = Env::start().await.unwrap();
    let mut agent = env.agent("re-1", &bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("re", &host).await;
    env.attach_append_only(&repo, "re", &host, REPO_PASSWORD)
        .await;

    // the control plane goes away and the bus restarts: the agent
    // reconnects and says hello, again and again until it is answered
    env.cp.stop().await;
    env.bus.restart().await.unwrap();
    let tap = env.bus.connect_role(Role::Controlplane).await.unwrap();
    let hid = HostId::parse(&host).unwrap();
    let mut hellos = tap.subscribe(subject::agent_hello(&hid)).await.unwrap();
    tap.flush().await.unwrap();
    let m = tokio::time::timeout(WAIT, hellos.next())
        .await
        .expect("a hello after the restart")
        .unwrap();
    let hello: Hello = decode("hello", &m.payload).unwrap();
    assert_eq!(hello.hostname, "re-1");
    env.cp = Cp::start(&env.bus, env.cp.data_dir.clone()).await.unwrap();
    env.wait_online(&host).await;

    let src = env.path("src");
    make_tree(&src, &[("a.txt", 500)]);
    let created = env.job(&host, &repo, backup(&[&src])).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");

    // a clean stop says goodbye: offline at once, not after missed beats
    agent.stop().await;
    eventually("offline after goodbye", || async {
        (host_status(&env, &host).await == "offline").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_bus_url_is_used_with_the_state_directory_ca() {
    let bus = TestBus::start_with(
        BusKind::from_env(),
        BusOptions {
            tls: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = HostId::parse("tls-1").unwrap();
    let url = format!("tls://127.0.0.1:{}", bus.port());
    let state = enrolled_state(&dir.path().join("agent"), &host, &url, bus.authority());
    let ca = bus.tls_ca().unwrap();
    std::fs::copy(ca, state.path("bus-ca.pem")).unwrap();

    // the control plane's side, over TLS too
    let creds = bus.creds_for(&Role::Controlplane).unwrap();
    let spec = bus.spec(&Role::Controlplane, creds);
    let cp = rm_bus::connect::options(&spec, None)
        .unwrap()
        .add_root_certificates(ca.to_path_buf())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .unwrap();
    let mut hellos = cp.subscribe(subject::agent_hello(&host)).await.unwrap();
    cp.flush().await.unwrap();

    let mut settings = rm_agent::Settings::new(state.root().to_path_buf());
    settings.hostname = "tls-1".into();
    settings.timings = fast_agent_timings();
    let mut agent = Agent::start(settings).await.unwrap();
    let m = tokio::time::timeout(WAIT, hellos.next())
        .await
        .expect("hello over TLS")
        .unwrap();
    let hello: Hello = decode("hello", &m.payload).unwrap();
    assert_eq!(hello.hostname, "tls-1");
    let reply = HelloReply {
        v: PROTOCOL_VERSION,
        config: None,
        server_time_ms: 0,
    };
    cp.publish(m.reply.unwrap(), encode(&reply)).await.unwrap();
    cp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_cannot_touch_another_hosts_subjects() {
    let env = Env::start().await.unwrap();
    let (a, a_dir) = env.enroll("hostile-1").await.unwrap();
    let (b, _) = env.enroll("victim-1").await.unwrap();
    // the hostile host's own credentials, as enrollment issued them
    let creds = StateDir::open(&a_dir).unwrap().creds().unwrap();
    let a_id = HostId::parse(&a).unwrap();
    let b_id = HostId::parse(&b).unwrap();
    let mut hostile = env
        .bus
        .connect_as(&Role::Agent(a_id.clone()), creds)
        .await
        .unwrap();
    let _sub = hostile.subscribe(subject::cmd(&b_id)).await.unwrap();
    hostile.flush().await.unwrap();
    let e = hostile
        .expect_server_error("Permissions Violation for Subscription", WAIT)
        .await
        .unwrap();
    assert!(e.contains(&subject::cmd(&b_id)), "{e}");
    hostile
        .publish(subject::agent_heartbeat(&b_id), "{}".into())
        .await
        .unwrap();
    hostile.flush().await.unwrap();
    let e = hostile
        .expect_server_error("Permissions Violation for Publish", WAIT)
        .await
        .unwrap();
    assert!(e.contains(&subject::agent_heartbeat(&b_id)), "{e}");
    // its own subjects still work on the same connection
    hostile
        .publish(subject::agent_heartbeat(&a_id), "{}".into())
        .await
        .unwrap();
    hostile.flush().await.unwrap();
    assert!(hostile.drain_server_errors().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_get_a_clear_refusal_and_break_nothing() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let agent = env.agent("mal-1", &bin).await.unwrap();
    let host = HostId::parse(&agent.host_id).unwrap();
    let cp = env.bus.connect_role(Role::Controlplane).await.unwrap();
    for (payload, why) in [
        (&b"not json at all"[..], "malformed"),
        (br#"{"v":1,"cmd":"dispatch"}"#, "malformed"),
        (br#"{"v":1,"cmd":"dispatch","job":{"job_id":"bad.id","params":{"kind":"prune"},"repo":{"repo_id":"r","secrets":"x"},"timeout_secs":1}}"#, "malformed"),
        (br#"{"v":9,"cmd":"warp_drive","speed":9}"#, "unknown command"),
    ] {
        let reply = tokio::time::timeout(
            WAIT,
            cp.request(subject::cmd(&host), bytes::Bytes::copy_from_slice(payload)),
        )
        .await
        .expect("answered")
        .expect("a reply");
        let ack: rm_bus::msg::Ack = decode("ack", &reply.payload).unwrap();
        assert!(!ack.ok, "{ack:?}");
        assert!(
            ack.error.as_deref().unwrap_or("").contains(why),
            "{}: {ack:?}",
            String::from_utf8_lossy(payload)
        );
    }
    // the agent still works
    let repo = env.new_repo("mal", &agent.host_id).await;
    env.attach_append_only(&repo, "mal", &agent.host_id, REPO_PASSWORD)
        .await;
    let src = env.path("src");
    make_tree(&src, &[("a.txt", 10)]);
    let created = env.job(&agent.host_id, &repo, backup(&[&src])).await;
    assert_eq!(env.finished(&created.job_id).await.status, "succeeded");
}
