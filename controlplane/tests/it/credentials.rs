//! Credential changes reach agents: re-attaching a host with new secrets
//! bumps and pushes its config; a push the agent did not confirm is
//! retried; a heartbeat reporting an older config version is re-synced.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rm_bus::msg::*;
use rm_bus::seal::RepoSecrets;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

/// The next config pushed to `agent` (other commands are not expected).
async fn next_config(
    agent: &mut Agent,
    within: Duration,
) -> Option<(AgentConfig, async_nats::Message)> {
    let (cmd, m) = agent.next_command(within).await?;
    match cmd.body {
        CommandBody::ConfigChanged { config } => Some((config, m)),
        other => panic!("expected a config push, got {other:?}"),
    }
}

async fn applied(db: &rm_store::Store, host: &str) -> i64 {
    let mut c = db.read().await.unwrap();
    rm_store::hosts::get(&mut c, host)
        .await
        .unwrap()
        .applied_config_version
}

#[tokio::test]
async fn reattached_secrets_reach_the_agent_an_unconfirmed_push_is_retried_and_a_stale_heartbeat_resyncs()
 {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut timings = fast_timings();
    timings.resync_first = Duration::from_millis(300);
    timings.resync_max = Duration::from_millis(600);
    let opts = CpOptions {
        timings,
        ..CpOptions::default()
    };
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&agent], &[]).await;
    let _: api::ScheduleSaved = cp
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: agent.host_id(),
                repo_id: repo.clone(),
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
                params: backup_params(),
                enabled: true,
                jitter_secs: 0,
                timeout_secs: None,
                grace_secs: None,
            },
        )
        .await;
    let v1 = agent
        .hello(0, vec![], vec![])
        .await
        .config
        .expect("config on hello")
        .version;
    assert!(agent.hello(v1, vec![], vec![]).await.config.is_none());
    let db = cp.db().await;
    assert_eq!(applied(&db, &agent.host_id()).await, v1 as i64);

    // Re-attached with a new append-only user: the config is bumped and
    // pushed, carrying the new secret.
    let cp_key: api::PubKey = cp.call(api::PUBKEY, serde_json::json!({})).await;
    let new_url = "rest:http://web-1b:newpw@127.0.0.1:1/main".to_owned();
    let sealed = api::SealedSecrets::seal(
        &api::RepoSecretsInput {
            url: new_url.clone(),
            password: "pw".into(),
            env: Default::default(),
        },
        &cp_key.xkey,
    )
    .unwrap();
    let _: api::Done = cp
        .call(
            api::REPO_ATTACH,
            api::RepoAttach {
                repo_id: repo.clone(),
                host_id: agent.host_id(),
                access: api::AccessInput::AppendOnly,
                secrets: Some(sealed),
            },
        )
        .await;
    let (pushed, _) = next_config(&mut agent, WAIT)
        .await
        .expect("the new credential is pushed");
    assert!(pushed.version > v1);
    let s: RepoSecrets = rm_bus::seal::open(
        &pushed.schedules[0].repo.secrets,
        &agent.xkey,
        &agent.cp_xkey,
    )
    .unwrap();
    assert_eq!(s.repository, new_url);

    // The agent does not answer: the push fails. Its retries are ignored
    // too, until the push has given up (fast timings: 3 s).
    let gave_up = tokio::time::Instant::now() + Duration::from_millis(3_500);
    while tokio::time::Instant::now() < gave_up {
        let _ = next_config(&mut agent, Duration::from_millis(200)).await;
    }
    assert_eq!(applied(&db, &agent.host_id()).await, v1 as i64);
    // The resync sweep pushes it again; this time it is confirmed.
    let (again, m) = next_config(&mut agent, WAIT)
        .await
        .expect("an unconfirmed push is retried");
    assert_eq!(again.version, pushed.version);
    agent.answer(&m, encode(&Ack::ok())).await;
    eventually("the agent's confirmation recorded", || async {
        (applied(&db, &agent.host_id()).await == pushed.version as i64).then_some(())
    })
    .await;
    agent.beat_version.store(pushed.version, Ordering::Relaxed);
    // drain what was in flight before the confirmation
    while next_config(&mut agent, Duration::from_millis(1_000))
        .await
        .is_some()
    {}

    // The agent lost its state: its heartbeats report the older version.
    agent.beat_version.store(v1, Ordering::Relaxed);
    let (resynced, m) = next_config(&mut agent, WAIT)
        .await
        .expect("a heartbeat behind triggers a resync");
    assert_eq!(resynced.version, pushed.version);
    agent.answer(&m, encode(&Ack::ok())).await;
}

#[tokio::test]
async fn the_enrollment_token_never_crosses_the_bus_in_clear() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let tap = bus.tap_all().await.unwrap();
    let added = cp.host_add("web-1").await;
    let fresh = cp.host_token(&added.host_id).await.unwrap();
    // a later exchange, so the replies above reached the tap before it stops
    let _: api::PubKey = cp.call(api::PUBKEY, serde_json::json!({})).await;
    let seen = tap.stop().await;
    let texts: Vec<String> = seen
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(
        texts.iter().filter(|t| t.contains("sealer_xkey")).count(),
        2,
        "both replies were seen on the bus: {texts:?}"
    );
    for t in &texts {
        assert!(
            !t.contains(&added.token) && !t.contains(&fresh.token),
            "a token in clear on the bus: {t}"
        );
    }
    assert!(added.command.contains(&added.token));
    // a request that does not say whom to seal it to is refused
    let err = cp
        .call_raw::<_, serde_json::Value>(api::HOST_ADD, serde_json::json!({"name": "db-1"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid", "{err:?}");
}
