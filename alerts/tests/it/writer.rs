//! One writer per role: every commit of the alerts role (operators'
//! actions, the rule engine, deliveries, retention) is a transaction of
//! its writer task, and operators' actions go in its first lane.

use std::time::Duration;

use rm_alerts::api::{self, AlertRef, AlertView};
use rm_store::jobs::JobStatus;

use crate::support::{Answer, Env, Receiver, wait_for};

async fn call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    env: &Env,
    verb: rm_bus::subject::Verb,
    body: B,
) -> anyhow::Result<R> {
    env.call(verb, body)
        .await
        .map_err(|e| anyhow::anyhow!("{verb:?}: {}: {}", e.code, e.message))
}

#[tokio::test]
async fn every_commit_of_operators_rules_and_retention_is_a_writer_task_batch_operators_in_the_first_lane()
-> anyhow::Result<()> {
    let mut env = Env::new().await?;
    // Retention runs often and may purge every finished delivery.
    env.timings.retention_every = Duration::from_millis(100);
    env.timings.delivery_retention = Duration::from_millis(1);
    let rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    let before = env.metrics().await?;

    // Every kind of operator action.
    let ch = env.add_webhook("ops", &rx.url("/hook"), None).await?;
    let _: api::ChannelView = call(
        &env,
        api::CHANNEL_UPDATE,
        api::ChannelUpdate {
            channel_id: ch.clone(),
            name: Some("ops-renamed".into()),
            enabled: None,
            definition: None,
            clear_secret: false,
        },
    )
    .await?;
    let tested: api::ChannelTestResult = call(
        &env,
        api::CHANNEL_TEST,
        api::ChannelTest {
            channel_id: Some(ch.clone()),
            definition: None,
            clear_secret: false,
        },
    )
    .await?;
    assert!(tested.ok, "{tested:?}");
    let spare = env.add_webhook("spare", &rx.url("/spare"), None).await?;
    let _: api::Done = call(
        &env,
        api::CHANNEL_DELETE,
        api::ChannelRef { channel_id: spare },
    )
    .await?;
    let _: api::Done = call(
        &env,
        api::MUTE_SET,
        api::MuteSet {
            host_id: "h1".into(),
            until_ms: env.now() + 3_600_000,
            reason: None,
        },
    )
    .await?;
    let _: api::Done = call(
        &env,
        api::MUTE_CLEAR,
        api::HostRef {
            host_id: "h1".into(),
        },
    )
    .await?;
    let window: api::MaintenanceAdded = call(
        &env,
        api::MAINTENANCE_ADD,
        api::MaintenanceAdd {
            host_id: "h1".into(),
            cron: "0 1 * * *".into(),
            timezone: "UTC".into(),
            duration_secs: 3600,
            reason: None,
        },
    )
    .await?;
    let _: api::Done = call(
        &env,
        api::MAINTENANCE_DELETE,
        api::MaintenanceRef {
            window_id: window.window_id,
        },
    )
    .await?;
    // The rule engine raises an alert; an operator acknowledges and
    // resolves it.
    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let alert = env
        .wait_alert("h1", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    let _: AlertView = call(
        &env,
        api::ALERT_ACK,
        AlertRef {
            alert_id: alert.id.clone(),
        },
    )
    .await?;
    let resolved: AlertView = call(
        &env,
        api::ALERT_RESOLVE,
        AlertRef {
            alert_id: alert.id.clone(),
        },
    )
    .await?;
    assert_eq!(resolved.state, "resolved");
    // Retention purges the test send's finished delivery.
    wait_for("retention to purge the test send", || async {
        let rows = env.outbox().await?;
        Ok((!rows.iter().any(|d| d.id.starts_with("test-"))).then_some(()))
    })
    .await?;

    // A last operator's write: its transaction, begun after everything
    // above committed, counts any commit made outside the writer since
    // the writer started.
    let _: api::Done = call(
        &env,
        api::MUTE_SET,
        api::MuteSet {
            host_id: "h1".into(),
            until_ms: env.now() + 60_000,
            reason: None,
        },
    )
    .await?;
    let after = env.metrics().await?;
    assert_eq!(after.db_commits_outside_writer, 0, "{after:?}");
    assert!(after.db_commits > before.db_commits, "{after:?}");
    // channel create ×2, update, test (its log), delete; mute set, clear
    // and set; window add and delete; acknowledge, resolve: twelve
    // operators' writes, each in the first lane.
    assert!(
        after.write_batches_first - before.write_batches_first >= 12,
        "{after:?}"
    );
    assert!(
        after.write_batches_failed == before.write_batches_failed,
        "{after:?}"
    );
    env.stop_all().await?;
    Ok(())
}

#[tokio::test]
async fn an_operator_write_refused_inside_the_writer_keeps_its_error_code_and_changes_nothing()
-> anyhow::Result<()> {
    let mut env = Env::new().await?;
    env.add_host("h1", "db-1").await?;
    env.start_alerts().await?;
    let audited = |env: &Env| {
        let store = env.store.clone();
        async move {
            let mut conn = store.read().await?;
            anyhow::Ok(rm_store::audit::recent(&mut conn, 1000).await?.len())
        }
    };
    let before = env.metrics().await?;
    let audit_before = audited(&env).await?;

    let code = |r: Result<api::Done, rm_bus::msg::SvcError>| match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code,
    };
    let muted = env
        .call(
            api::MUTE_SET,
            api::MuteSet {
                host_id: "nope".into(),
                until_ms: env.now() + 60_000,
                reason: None,
            },
        )
        .await;
    assert_eq!(code(muted), "not_found");
    let deleted = env
        .call(
            api::MAINTENANCE_DELETE,
            api::MaintenanceRef {
                window_id: "wnope".into(),
            },
        )
        .await;
    assert_eq!(code(deleted), "not_found");
    let acked: Result<AlertView, _> = env
        .call(
            api::ALERT_ACK,
            AlertRef {
                alert_id: "anope".into(),
            },
        )
        .await;
    assert!(
        matches!(&acked, Err(e) if e.code == "not_found"),
        "{acked:?}"
    );
    let updated: Result<api::ChannelView, _> = env
        .call(
            api::CHANNEL_UPDATE,
            api::ChannelUpdate {
                channel_id: "cnope".into(),
                name: Some("x".into()),
                enabled: None,
                definition: None,
                clear_secret: false,
            },
        )
        .await;
    assert!(
        matches!(&updated, Err(e) if e.code == "not_found"),
        "{updated:?}"
    );

    // Nothing was written, no batch failed, and the next write goes through.
    assert_eq!(audited(&env).await?, audit_before);
    let _: api::Done = call(
        &env,
        api::MUTE_SET,
        api::MuteSet {
            host_id: "h1".into(),
            until_ms: env.now() + 60_000,
            reason: None,
        },
    )
    .await?;
    assert_eq!(audited(&env).await?, audit_before + 1);
    let m = env.metrics().await?;
    assert_eq!(m.write_batches_failed, before.write_batches_failed, "{m:?}");
    env.stop_all().await?;
    Ok(())
}
