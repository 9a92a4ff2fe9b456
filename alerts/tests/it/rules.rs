//! The rules with the real alerts role, a real notifier and a real webhook
//! receiver: raise, confirm without notifying, auto-resolve, acknowledge,
//! resolve by hand, stale schedules under a manual clock, offline hosts,
//! evaluation of what happened while the worker was stopped, and two
//! workers raising one alert.

use rm_alerts::api::{self, AlertRef, AlertView};
use rm_bus::subject::Event as Evt;
use rm_store::jobs::JobStatus;

use crate::support::{Answer, Env, Receiver, wait_for};

/// Waits for the next webhook of `kind` (`alert.raised`, ...) and returns
/// its envelope.
async fn next_event(rx: &mut Receiver, kind: &str) -> anyhow::Result<serde_json::Value> {
    let got = rx.next().await?;
    let body = got.json();
    assert_eq!(body["type"], kind, "{body}");
    assert!(got.header("webhook-id").is_some());
    Ok(body)
}

#[tokio::test]
async fn each_job_rule_raises_is_confirmed_quietly_and_resolves_on_success() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    for (job_kind, rule, severity) in [
        ("backup", "backup_failed", "critical"),
        ("forget", "forget_failed", "warning"),
        ("prune", "prune_failed", "warning"),
        ("check", "check_failed", "critical"),
    ] {
        env.job_done("h1", "r1", job_kind, JobStatus::Failed)
            .await?;
        let alert = env
            .wait_alert("h1", rule, "the alert", |a| a.is_open())
            .await?;
        assert_eq!(alert.subject, "r1");
        assert_eq!(alert.severity, severity);
        assert!(alert.message.contains("offsite"), "{}", alert.message);
        assert!(
            alert.message.contains("repository is locked"),
            "{}",
            alert.message
        );
        let body = next_event(&mut rx, "alert.raised").await?;
        assert_eq!(body["data"]["alert"]["kind"], rule);
        assert_eq!(body["data"]["alert"]["id"], alert.id.as_str());
        assert_eq!(body["data"]["host"]["name"], "fileserver");
        assert_eq!(
            body["data"]["alert"]["url"],
            format!("https://rm.test/alerts/{}", alert.id)
        );

        // The same failure again: confirmed, nobody notified.
        let again = env
            .job_done("h1", "r1", job_kind, JobStatus::Failed)
            .await?;
        let bumped = env
            .wait_alert("h1", rule, "the bump", |a| {
                a.id == alert.id && a.job_id.as_deref() == Some(again.as_str())
            })
            .await?;
        assert!(bumped.last_seen_at >= alert.last_seen_at);
        assert!(bumped.is_open());
        let rows: Vec<_> = env
            .outbox()
            .await?
            .into_iter()
            .filter(|d| d.alert_id.as_deref() == Some(alert.id.as_str()))
            .collect();
        assert_eq!(rows.len(), 1, "a repeat failure queues nothing: {rows:?}");

        // Success of the same kind for the same host and repository.
        env.job_done("h1", "r1", job_kind, JobStatus::Succeeded)
            .await?;
        let resolved = env
            .wait_alert("h1", rule, "the resolution", |a| {
                a.id == alert.id && !a.is_open()
            })
            .await?;
        assert_eq!(resolved.resolved_by.as_deref(), Some("system"));
        let body = next_event(&mut rx, "alert.resolved").await?;
        assert_eq!(body["data"]["alert"]["state"], "resolved");
        assert_eq!(body["data"]["alert"]["resolved_by"], "system");
    }
    assert!(rx.drain().is_empty(), "nothing else was sent");
    env.stop_all().await
}

#[tokio::test]
async fn acknowledge_keeps_an_alert_open_and_a_manual_resolve_closes_it() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_host("h2", "witness").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    // An open alert whose confirmations show that ticks ran (raised before
    // the channel exists, so it is not delivered).
    env.set_offline("h2").await?;
    env.wait_alert("h2", "agent_offline", "the witness", |a| a.is_open())
        .await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    let mut events = env.web.subscribe(Evt::AlertRaised.subject()).await?;
    let mut acks = env.web.subscribe(Evt::AlertAcknowledged.subject()).await?;
    let mut resolutions = env.web.subscribe(Evt::AlertResolved.subject()).await?;
    env.web.flush().await?;

    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let alert = env
        .wait_alert("h1", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    next_event(&mut rx, "alert.raised").await?;
    let evt = next_msg(&mut events).await?;
    assert_eq!(evt["id"], alert.id.as_str());
    assert_eq!(evt["host"], "h1");

    let acked: AlertView = env
        .call(
            api::ALERT_ACK,
            AlertRef {
                alert_id: alert.id.clone(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(acked.state, "acknowledged");
    assert_eq!(acked.acknowledged_by.as_deref(), Some("alice"));
    assert!(acked.resolved_at.is_none(), "still open");
    let body = next_event(&mut rx, "alert.acknowledged").await?;
    assert_eq!(body["data"]["alert"]["acknowledged_by"], "alice");
    assert_eq!(next_msg(&mut acks).await?["id"], alert.id.as_str());

    // The condition still holds: ticks confirm it, nothing new is raised.
    let before = acked.last_seen_at;
    env.wait_alert("h1", "backup_failed", "a confirming tick", |a| {
        a.id == alert.id && a.last_seen_at > before
    })
    .await?;

    let resolved: AlertView = env
        .call(
            api::ALERT_RESOLVE,
            AlertRef {
                alert_id: alert.id.clone(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(resolved.state, "resolved");
    assert_eq!(resolved.resolved_by.as_deref(), Some("alice"));
    let body = next_event(&mut rx, "alert.resolved").await?;
    assert_eq!(body["data"]["alert"]["resolved_by"], "alice");
    assert_eq!(next_msg(&mut resolutions).await?["id"], alert.id.as_str());

    // The same failed job is not raised again after the manual resolve:
    // wake the worker and wait for a tick (h2's open alert is confirmed).
    env.publish(Evt::JobFinished, Some("h1")).await?;
    let mark = env.now();
    env.wait_alert("h2", "agent_offline", "a tick after the resolve", |a| {
        a.last_seen_at > mark
    })
    .await?;
    let all = env.alerts_of("h1").await?;
    assert_eq!(all.len(), 1, "{all:?}");
    // A new failure is a new alert.
    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let second = env
        .wait_alert("h1", "backup_failed", "a new alert", |a| a.is_open())
        .await?;
    assert_ne!(second.id, alert.id);
    next_event(&mut rx, "alert.raised").await?;

    // Acknowledging a resolved alert is refused.
    let err = env
        .call::<_, AlertView>(
            api::ALERT_ACK,
            AlertRef {
                alert_id: alert.id.clone(),
            },
        )
        .await
        .expect_err("already resolved");
    assert_eq!(err.code, "conflict");
    env.stop_all().await
}

async fn next_msg(sub: &mut async_nats::Subscriber) -> anyhow::Result<serde_json::Value> {
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(crate::support::WAIT, sub.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
    Ok(serde_json::from_slice(&msg.payload)?)
}

#[tokio::test]
async fn agent_offline_raises_and_resolves_when_the_host_is_back() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "laptop").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.set_offline("h1").await?;
    let alert = env
        .wait_alert("h1", "agent_offline", "the alert", |a| a.is_open())
        .await?;
    assert_eq!(alert.subject, "");
    assert_eq!(alert.severity, "warning");
    let body = next_event(&mut rx, "alert.raised").await?;
    assert_eq!(body["data"]["alert"]["kind"], "agent_offline");

    env.set_online("h1").await?;
    env.wait_alert("h1", "agent_offline", "the resolution", |a| {
        a.id == alert.id && a.resolved_by.as_deref() == Some("system")
    })
    .await?;
    next_event(&mut rx, "alert.resolved").await?;
    env.stop_all().await
}

#[tokio::test]
async fn a_failure_while_the_worker_is_stopped_raises_when_it_starts() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    env.add_host("h1", "web-1").await?;
    env.add_repo("r1", "offsite").await?;
    // One pass, then stop: the cursor is saved.
    env.start_alerts().await?;
    env.job_done("h1", "r1", "backup", JobStatus::Succeeded)
        .await?;
    wait_for("the cursor", || async {
        let mut conn = env.store.read().await?;
        let v: Option<serde_json::Value> =
            rm_store::worker_state::get(&mut conn, "alerts.jobs").await?;
        Ok(v.filter(|v| !v["watermark"].is_null()))
    })
    .await?;
    env.stop_alerts().await?;

    // Fails while nobody listens; its event is lost.
    let job = env
        .job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    assert!(env.alerts_of("h1").await?.is_empty());

    env.start_alerts().await?;
    let alert = env
        .wait_alert("h1", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    assert_eq!(alert.job_id.as_deref(), Some(job.as_str()));
    env.stop_all().await
}

#[tokio::test]
async fn a_missed_cron_run_raises_stale_schedule_but_not_for_an_offline_host() -> anyhow::Result<()>
{
    // 2026-03-02T00:00:00Z, a Monday.
    let start = 1_772_409_600_000;
    let (mut env, clock) = Env::manual(start).await?;
    env.add_host("h1", "nas").await?;
    env.add_host("h2", "sleepy").await?;
    env.add_repo("r1", "offsite").await?;
    // Daily at 02:00 Berlin (01:00 UTC), one hour of grace.
    env.add_schedule("s1", "h1", "r1", "0 2 * * *", "Europe/Berlin", 3600)
        .await?;
    env.add_schedule("s2", "h2", "r1", "0 2 * * *", "Europe/Berlin", 3600)
        .await?;
    env.set_offline("h2").await?;
    env.start_alerts().await?;

    // 01:30 UTC: the run was due at 01:00 UTC but the grace has not passed.
    clock.set_ms(start + 90 * 60_000);
    let cursor_tick = env.now();
    wait_for("a tick at 01:30", || async {
        let alerts = env.alerts_of("h2").await?;
        // h2's offline alert is raised by the same passes.
        Ok(alerts
            .into_iter()
            .find(|a| a.kind == "agent_offline" && a.last_seen_at >= cursor_tick))
    })
    .await?;
    assert!(
        env.alerts_of("h1").await?.is_empty(),
        "not stale within grace"
    );

    // 02:01 UTC: past 01:00 + 1 h.
    clock.set_ms(start + 121 * 60_000);
    let stale = env
        .wait_alert("h1", "stale_schedule", "the stale alert", |a| a.is_open())
        .await?;
    assert_eq!(stale.subject, "s1");
    assert!(
        stale.message.contains("2026-03-02T02:00:00+01:00"),
        "{}",
        stale.message
    );
    // The offline host's schedule raises nothing (agent_offline covers it).
    let h2 = env.alerts_of("h2").await?;
    assert!(
        h2.iter().all(|a| a.kind != "stale_schedule"),
        "offline host: {h2:?}"
    );

    // Ticks confirm it.
    let seen = stale.last_seen_at;
    clock.set_ms(start + 122 * 60_000);
    env.wait_alert("h1", "stale_schedule", "a confirming tick", |a| {
        a.last_seen_at > seen
    })
    .await?;

    // Disabling a stale schedule resolves its alert. (Saved at 02:02; due
    // at 00:30 the next day, one minute of grace.)
    env.add_schedule("s3", "h1", "r1", "30 0 * * *", "UTC", 60)
        .await?;
    clock.set_ms(start + (24 * 60 + 32) * 60_000);
    let s3 = env
        .wait_alert("h1", "stale_schedule", "s3 stale", |a| {
            a.subject == "s3" && a.is_open()
        })
        .await?;
    {
        let mut conn = env.store.pool().acquire().await?;
        let mut sched = rm_store::schedules::get(&mut conn, "s3").await?;
        sched.enabled = false;
        rm_store::schedules::upsert(&mut conn, &sched).await?;
    }
    env.publish(Evt::ScheduleChanged, Some("h1")).await?;
    env.wait_alert("h1", "stale_schedule", "s3 resolved", |a| {
        a.id == s3.id && !a.is_open()
    })
    .await?;

    // A successful run resolves it.
    env.job_done_quietly("h1", "r1", "backup", JobStatus::Succeeded, Some("s1"))
        .await?;
    env.publish(Evt::JobFinished, Some("h1")).await?;
    env.wait_alert("h1", "stale_schedule", "the resolution", |a| {
        a.id == stale.id && a.resolved_by.as_deref() == Some("system")
    })
    .await?;
    env.stop_all().await
}

#[tokio::test]
async fn two_alerts_workers_raise_one_alert_and_queue_one_delivery() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    for _ in 0..3 {
        env.job_done("h1", "r1", "backup", JobStatus::Failed)
            .await?;
    }
    env.set_offline("h1").await?;
    env.wait_alert("h1", "agent_offline", "offline", |a| a.is_open())
        .await?;
    let got = wait_for("two deliveries", || async {
        let rows = env.outbox().await?;
        Ok((rows.len() >= 2 && rows.iter().all(|r| r.state == "delivered")).then_some(rows))
    })
    .await?;
    let all = env.alerts_of("h1").await?;
    assert_eq!(
        all.len(),
        2,
        "one backup_failed, one agent_offline: {all:?}"
    );
    assert_eq!(got.len(), 2, "{got:?}");
    let a = rx.next().await?;
    let b = rx.next().await?;
    assert_ne!(a.header("webhook-id"), b.header("webhook-id"));
    env.stop_all().await
}

#[tokio::test]
async fn events_only_wake_the_worker_which_reads_the_database() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    // No tick within the test: only the pass at start and event wake-ups.
    env.timings.tick = std::time::Duration::from_secs(3600);
    env.add_host("h1", "db-1").await?;
    env.add_host("h2", "other").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_alerts().await?;

    // A failure written without its event, then an unrelated event: the
    // worker evaluates what is committed, not what the event says.
    let job = env
        .job_done_quietly("h1", "r1", "prune", JobStatus::Failed, None)
        .await?;
    env.publish(Evt::HostChanged, Some("h2")).await?;
    let alert = env
        .wait_alert("h1", "prune_failed", "the alert", |a| a.is_open())
        .await?;
    assert_eq!(alert.job_id.as_deref(), Some(job.as_str()));
    // Its own alert events do not loop back into passes that change
    // anything: the alert is raised once.
    assert_eq!(env.alerts_of("h1").await?.len(), 1);
    env.stop_all().await
}

#[tokio::test]
async fn the_role_keeps_working_across_a_bus_restart() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    let mut rx = Receiver::start(Answer::Status(200)).await?;
    env.add_host("h1", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_notifier("n1").await?;
    env.start_alerts().await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;

    env.bus.restart().await?;
    // The event may be lost while clients reconnect; the tick catches up
    // and the outbox retries until a notifier is reachable again.
    env.job_done("h1", "r1", "backup", JobStatus::Failed)
        .await?;
    let alert = env
        .wait_alert("h1", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    let got = rx.next().await?;
    assert_eq!(got.json()["data"]["alert"]["id"], alert.id.as_str());
    // The services answer again.
    let list: api::ChannelList = wait_for("the services", || async {
        Ok(env.call(api::CHANNEL_LIST, api::Done {}).await.ok())
    })
    .await?;
    assert_eq!(list.channels.len(), 1);
    env.stop_all().await
}

#[tokio::test]
async fn an_agent_clock_far_ahead_does_not_hide_later_failures() -> anyhow::Result<()> {
    let mut env = Env::new().await?;
    env.add_host("h1", "fast-clock").await?;
    env.add_host("h2", "db-1").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_alerts().await?;

    // h1's agent reports a finish time a day ahead.
    let day = 24 * 3_600_000;
    env.job_done_at(
        "h1",
        "r1",
        "backup",
        JobStatus::Succeeded,
        None,
        env.now() + day,
    )
    .await?;
    env.publish(Evt::JobFinished, Some("h1")).await?;
    wait_for("the cursor", || async {
        let mut conn = env.store.read().await?;
        let v: Option<serde_json::Value> =
            rm_store::worker_state::get(&mut conn, "alerts.jobs").await?;
        Ok(v.filter(|v| !v["watermark"].is_null()))
    })
    .await?;
    // A failure with a true time is still seen.
    env.job_done("h2", "r1", "backup", JobStatus::Failed)
        .await?;
    env.wait_alert("h2", "backup_failed", "the alert", |a| a.is_open())
        .await?;
    env.stop_all().await
}

/// Waits until the rule engine's job cursor has passed `finished_at` (the
/// result was judged).
async fn wait_judged(env: &Env, job_id: &str) -> anyhow::Result<()> {
    let finished = {
        let mut c = env.store.read().await?;
        rm_store::jobs::get(&mut c, job_id)
            .await?
            .finished_at
            .unwrap_or(0)
    };
    wait_for("the rule engine to judge the backup", || async {
        let mut c = env.store.read().await?;
        let cursor: Option<serde_json::Value> =
            rm_store::worker_state::get(&mut c, "alerts.jobs").await?;
        let mark = cursor
            .and_then(|v| v["watermark"].as_i64())
            .unwrap_or(i64::MIN);
        Ok((mark >= finished).then_some(()))
    })
    .await
}

/// `backup_anomaly` thresholds for backups of tens of MiB.
fn small_anomalies() -> rm_alerts::anomaly::AnomalyConfig {
    const MIB: i64 = 1 << 20;
    rm_alerts::anomaly::AnomalyConfig {
        min_history: 5,
        min_added_bytes: 10 * MIB,
        min_changed_files: 100,
        min_drop_bytes: 10 * MIB,
        ..Default::default()
    }
}

fn summary(added: i64, files: i64, total: i64) -> serde_json::Value {
    serde_json::json!({"message_type": "summary", "files_new": files, "files_changed": 0,
        "data_added": added, "total_bytes_processed": total, "snapshot_id": "0123abcd"})
}

#[tokio::test]
async fn backup_anomaly_is_quiet_without_history_fires_on_a_tenfold_jump_and_resolves()
-> anyhow::Result<()> {
    const MIB: i64 = 1 << 20;
    let mut env = Env::new().await?;
    env.anomaly = small_anomalies();
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_alerts().await?;

    // A huge first backup: nothing to compare it with, so quiet.
    let first = env
        .backup_with_summary("h1", "r1", summary(900 * MIB, 40_000, 1000 * MIB))
        .await?;
    wait_judged(&env, &first).await?;
    for i in 0..5 {
        let id = env
            .backup_with_summary("h1", "r1", summary((19 + i) * MIB, 200, 1000 * MIB))
            .await?;
        wait_judged(&env, &id).await?;
    }
    assert!(
        env.alerts_of("h1").await?.is_empty(),
        "quiet until there is enough history, and for usual backups"
    );

    // Ten times the usual data added.
    let jump = env
        .backup_with_summary("h1", "r1", summary(210 * MIB, 200, 1000 * MIB))
        .await?;
    let alert = env
        .wait_alert("h1", "backup_anomaly", "the anomaly", |a| a.is_open())
        .await?;
    assert_eq!(alert.job_id.as_deref(), Some(jump.as_str()));
    assert_eq!(alert.severity, "warning");
    assert_eq!(alert.subject, "r1");
    assert!(
        alert.message.contains("added 210.0 MiB")
            && alert.message.contains("usual 21.5 MiB")
            && alert.message.contains("range 19.0 MiB–23.0 MiB")
            && alert.message.contains("offsite"),
        "{}",
        alert.message
    );

    // The next usual backup resolves it.
    env.backup_with_summary("h1", "r1", summary(20 * MIB, 200, 1000 * MIB))
        .await?;
    let resolved = env
        .wait_alert("h1", "backup_anomaly", "the resolution", |a| {
            a.id == alert.id && !a.is_open()
        })
        .await?;
    assert_eq!(resolved.resolved_by.as_deref(), Some("system"));
    assert_eq!(env.alerts_of("h1").await?.len(), 1, "one alert in all");
    env.stop_all().await
}

/// Two backups finish between two passes, the older one anomalous: it is
/// judged (against the backups before it) and raises, and the newer, usual
/// one resolves it. Passes that look at both again (the cursor's overlap,
/// a restarted role) raise nothing twice.
#[tokio::test]
async fn an_anomalous_backup_that_is_not_the_newest_of_a_pass_is_judged_once() -> anyhow::Result<()>
{
    const MIB: i64 = 1 << 20;
    const T0: i64 = 1_750_000_000_000;
    // A frozen clock: every pass looks at both backups again.
    let (mut env, _clock) = Env::manual(T0).await?;
    env.anomaly = small_anomalies();
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_alerts().await?;
    let rx = Receiver::start(Answer::Status(200)).await?;
    env.add_webhook("ops", &rx.url("/hook"), None).await?;
    for i in 0..5 {
        let id = env
            .backup_with_summary_at(
                "h1",
                "r1",
                summary((19 + i) * MIB, 200, 1000 * MIB),
                T0 - 60_000 + i * 1000,
            )
            .await?;
        env.publish(Evt::JobFinished, Some("h1")).await?;
        wait_judged(&env, &id).await?;
    }

    // No pass runs while both finish.
    env.stop_alerts().await?;
    let odd = env
        .backup_with_summary_at("h1", "r1", summary(210 * MIB, 200, 1000 * MIB), T0 - 500)
        .await?;
    let usual = env
        .backup_with_summary_at("h1", "r1", summary(20 * MIB, 200, 1000 * MIB), T0 - 400)
        .await?;
    env.start_alerts().await?;
    wait_judged(&env, &usual).await?;

    let check = |alerts: Vec<rm_store::alerts::Alert>,
                 outbox: Vec<rm_store::delivery::Delivery>| {
        assert_eq!(alerts.len(), 1, "one alert in all: {alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.kind, "backup_anomaly");
        assert_eq!(a.job_id.as_deref(), Some(odd.as_str()), "{a:?}");
        assert!(a.message.contains("added 210.0 MiB"), "{}", a.message);
        assert_eq!(
            a.resolved_by.as_deref(),
            Some("system"),
            "the usual one resolved it"
        );
        let mut events: Vec<&str> = outbox.iter().map(|d| d.event.as_str()).collect();
        events.sort_unstable();
        assert_eq!(events, ["raised", "resolved"], "{outbox:?}");
    };
    check(env.alerts_of("h1").await?, env.outbox().await?);

    // More passes over the same two backups (the clock stands still, so
    // both stay within the cursor's overlap) ...
    let seen = passes(&env).await?;
    wait_for("three more passes", || async {
        Ok((passes(&env).await? >= seen + 3).then_some(()))
    })
    .await?;
    check(env.alerts_of("h1").await?, env.outbox().await?);
    // ... and after a restart.
    env.stop_alerts().await?;
    env.start_alerts().await?;
    wait_for("three passes of the restarted role", || async {
        Ok((passes(&env).await? >= 3).then_some(()))
    })
    .await?;
    check(env.alerts_of("h1").await?, env.outbox().await?);
    env.stop_all().await
}

/// The cursor's overlap brings a busy host's recent backups back into
/// every pass; a backup a completed pass judged is not judged again (that
/// re-judging was most of the role's work in a burst). So a backup that
/// arrives late, older than one judged already, is not judged after it —
/// as when an anomaly alert names the newer one — while a new backup is
/// judged as before.
#[tokio::test]
async fn a_late_backup_older_than_one_already_judged_is_not_judged_after_it() -> anyhow::Result<()>
{
    const MIB: i64 = 1 << 20;
    const T0: i64 = 1_750_000_000_000;
    // A frozen clock and a long overlap: every backup stays new to every
    // pass by the cursor alone.
    let (mut env, _clock) = Env::manual(T0).await?;
    env.timings.cursor_overlap = std::time::Duration::from_secs(600);
    env.anomaly = small_anomalies();
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    env.start_alerts().await?;
    for i in 0..7 {
        let id = env
            .backup_with_summary_at(
                "h1",
                "r1",
                summary((19 + i % 3) * MIB, 200, 1000 * MIB),
                T0 - 60_000 + i * 2000,
            )
            .await?;
        env.publish(Evt::JobFinished, Some("h1")).await?;
        wait_judged(&env, &id).await?;
    }

    // Ten times the usual, finished between the sixth and the seventh
    // backups (six before it: enough history), stored only now.
    env.backup_with_summary_at(
        "h1",
        "r1",
        summary(210 * MIB, 200, 1000 * MIB),
        T0 - 60_000 + 5 * 2000 + 1000,
    )
    .await?;
    let seen = passes(&env).await?;
    env.publish(Evt::JobFinished, Some("h1")).await?;
    wait_for("three more passes", || async {
        Ok((passes(&env).await? >= seen + 3).then_some(()))
    })
    .await?;
    assert!(
        env.alerts_of("h1").await?.is_empty(),
        "the late backup is older than the newest one judged"
    );

    // A new backup, ten times the usual, is judged and raises.
    let jump = env
        .backup_with_summary_at("h1", "r1", summary(210 * MIB, 200, 1000 * MIB), T0 - 1000)
        .await?;
    env.publish(Evt::JobFinished, Some("h1")).await?;
    let alert = env
        .wait_alert("h1", "backup_anomaly", "the new anomaly", |a| a.is_open())
        .await?;
    assert_eq!(alert.job_id.as_deref(), Some(jump.as_str()));
    env.stop_all().await
}

/// Rule-engine passes of the running alerts role.
async fn passes(env: &Env) -> anyhow::Result<u64> {
    let m: api::Metrics = env
        .call(api::METRICS, serde_json::json!({}))
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    Ok(m.passes)
}

/// Publishes `evt` about `host` and waits for a pass that completed after
/// it (the count is read first, so a pass the event wakes is not missed).
async fn pass_after(env: &Env, evt: Evt, host: &str, what: &str) -> anyhow::Result<()> {
    let before = passes(env).await?;
    env.publish(evt, Some(host)).await?;
    wait_for(what, || async {
        Ok((passes(env).await? > before).then_some(()))
    })
    .await
}

/// A pass that judges many new backups of one host asks whether an alert
/// is open once per rule and subject, not once per backup: a fleet's
/// burst brings many backups per host into each pass (20 here), and those
/// reads were most of the role's statements.
#[tokio::test]
async fn a_pass_over_many_new_backups_of_a_host_reads_its_open_alert_once() -> anyhow::Result<()> {
    const MIB: i64 = 1 << 20;
    const T0: i64 = 1_750_000_000_000;
    let statements = rm_testkit::statements::Statements::install();
    // 20 usual backups, then the role starts: its first pass judges them all.
    let (mut env, _clock) = Env::manual(T0).await?;
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    let mut last = String::new();
    for i in 0..20 {
        last = env
            .backup_with_summary_at(
                "h1",
                "r1",
                summary(20 * MIB, 200, 1000 * MIB),
                T0 - 60_000 + i * 1000,
            )
            .await?;
    }
    statements.clear();
    env.start_alerts().await?;
    wait_judged(&env, &last).await?;
    let reads = statements.matching("AND subject = ? AND resolved_at IS NULL");
    let passes = passes(&env).await?;
    // per pass at most a few (backup_failed and backup_anomaly for
    // (h1, r1), a confirmation); not one per backup judged
    assert!(
        reads <= 3 * passes as usize,
        "{reads} open-alert reads in {passes} passes over 20 new backups"
    );
    assert!(env.alerts_of("h1").await?.is_empty());
    env.stop_all().await
}

/// A pass woken by an event evaluates only the job keys whose results
/// changed since the last pass; the cursor's overlap brings every recent
/// key back each time, which at fleet scale was most of the role's work.
/// A key with a new result is judged as before.
#[tokio::test]
async fn an_event_woken_pass_skips_keys_whose_results_did_not_change() -> anyhow::Result<()> {
    const T0: i64 = 1_750_000_000_000;
    let statements = rm_testkit::statements::Statements::install();
    let (mut env, _clock) = Env::manual(T0).await?;
    // only the first pass is a ticker pass; every key stays in the overlap
    env.timings.tick = std::time::Duration::from_secs(3600);
    env.timings.cursor_overlap = std::time::Duration::from_secs(600);
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    let ok = env
        .job_done_at("h1", "r1", "backup", JobStatus::Succeeded, None, T0 - 2000)
        .await?;
    env.start_alerts().await?;
    wait_judged(&env, &ok).await?;
    // events about other things wake passes; (h1, backup, r1) is unchanged
    let seen = passes(&env).await?;
    statements.clear();
    for _ in 0..3 {
        pass_after(&env, Evt::HostChanged, "h1", "a pass").await?;
    }
    assert!(passes(&env).await? >= seen + 3);
    let reads = statements.matching("ORDER BY finished_at DESC, id DESC LIMIT 1");
    assert_eq!(
        reads, 0,
        "the unchanged key's latest result is not read again"
    );
    // a new result for the key is judged: its failure raises
    env.job_done_at("h1", "r1", "backup", JobStatus::Failed, None, T0 - 1000)
        .await?;
    env.publish(Evt::JobFinished, Some("h1")).await?;
    env.wait_alert("h1", "backup_failed", "the failure raised", |a| {
        a.resolved_at.is_none()
    })
    .await?;
    env.stop_all().await
}

/// Likewise for hosts: a pass woken by an event evaluates only the hosts
/// whose status or change time differs from what the last completed pass
/// saw. The host cursor's overlap brought every host that came online in
/// the last minutes back each pass (a reconnect storm of 50,000 agents: a
/// lookup of each one's open alert, every pass). A host that goes offline
/// is evaluated and raises as before.
#[tokio::test]
async fn an_event_woken_pass_skips_hosts_whose_status_did_not_change() -> anyhow::Result<()> {
    const T0: i64 = 1_750_000_000_000;
    let statements = rm_testkit::statements::Statements::install();
    let (mut env, clock) = Env::manual(T0).await?;
    env.timings.tick = std::time::Duration::from_secs(3600);
    env.timings.cursor_overlap = std::time::Duration::from_secs(600);
    env.add_host("h1", "laptop").await?;
    env.add_host("h2", "desktop").await?;
    env.start_alerts().await?;
    wait_for("the first pass", || async {
        Ok((passes(&env).await? >= 1).then_some(()))
    })
    .await?;
    let open_lookup =
        "FROM alerts WHERE host_id = ? AND kind = ? AND subject = ? AND resolved_at IS NULL";
    // the first pass looked both hosts up (the check below can fail)
    statements.clear();
    for _ in 0..3 {
        pass_after(&env, Evt::HostChanged, "h1", "a pass").await?;
    }
    assert_eq!(
        statements.matching(open_lookup),
        0,
        "the unchanged hosts are not evaluated again"
    );
    clock.advance(std::time::Duration::from_secs(1));
    env.set_offline("h1").await?;
    env.wait_alert("h1", "agent_offline", "the offline host raised", |a| {
        a.is_open()
    })
    .await?;
    assert!(env.alerts_of("h2").await?.is_empty());
    env.stop_all().await
}

/// `agent_offline` waits out its grace: a host offline for less raises
/// nothing, and one back before the grace ends raises nothing at all (a
/// bus node restart marks thousands offline for a minute or two). One
/// that stays offline raises once the grace has passed, in a pass woken
/// by an event (the ticker is an hour here), though its status did not
/// change since the passes that let it be.
#[tokio::test]
async fn agent_offline_waits_out_its_grace_and_a_host_back_sooner_raises_nothing()
-> anyhow::Result<()> {
    const T0: i64 = 1_750_000_000_000;
    let (mut env, clock) = Env::manual(T0).await?;
    env.timings.tick = std::time::Duration::from_secs(3600);
    env.timings.offline_grace = std::time::Duration::from_secs(120);
    // the passes read status changes back a second only: h2 is judged
    // again as an offline host within the overlap and the grace
    env.timings.event_lookback = std::time::Duration::from_secs(1);
    env.add_host("h1", "laptop").await?;
    env.add_host("h2", "desktop").await?;
    env.start_alerts().await?;
    let pass = |what| pass_after(&env, Evt::HostChanged, "h1", what);
    pass("the first pass").await?;

    env.set_offline("h1").await?;
    env.set_offline("h2").await?;
    pass("a pass with both offline").await?;
    assert!(env.alerts_of("h1").await?.is_empty(), "h1 within its grace");
    assert!(env.alerts_of("h2").await?.is_empty(), "h2 within its grace");

    clock.advance(std::time::Duration::from_secs(60));
    env.set_online("h1").await?;
    pass("a pass with h1 back").await?;
    clock.advance(std::time::Duration::from_secs(59));
    pass("a pass a second before h2's grace ends").await?;
    assert!(env.alerts_of("h2").await?.is_empty(), "h2 119 s offline");

    clock.advance(std::time::Duration::from_secs(1));
    pass("a pass as h2's grace ends").await?;
    let alert = env
        .wait_alert("h2", "agent_offline", "h2's alert", |a| a.is_open())
        .await?;
    assert!(alert.message.contains("desktop"), "{}", alert.message);
    assert!(
        env.alerts_of("h1").await?.is_empty(),
        "h1 was back within its grace"
    );
    env.stop_all().await
}

/// A pass woken by an event reads results back only `event_lookback`
/// before the last pass, not the whole overlap (at fleet scale that
/// re-read was the role's CPU): a result stamped earlier than that, though
/// in the overlap, waits for a ticker pass, which reads it all (here the
/// first pass after a restart; the ticker is an hour).
#[tokio::test]
async fn an_event_woken_pass_reads_back_its_lookback_and_a_ticker_pass_the_whole_overlap()
-> anyhow::Result<()> {
    const T0: i64 = 1_750_000_000_000;
    let (mut env, _clock) = Env::manual(T0).await?;
    env.timings.tick = std::time::Duration::from_secs(3600);
    env.timings.cursor_overlap = std::time::Duration::from_secs(600);
    env.timings.event_lookback = std::time::Duration::from_secs(60);
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    env.add_repo("r2", "nas").await?;
    env.start_alerts().await?;
    let pass = |what| pass_after(&env, Evt::JobFinished, "h1", what);
    pass("the first pass").await?;
    let late = env
        .job_done_at("h1", "r1", "backup", JobStatus::Failed, None, T0 - 120_000)
        .await?;
    let recent = env
        .job_done_at("h1", "r2", "backup", JobStatus::Failed, None, T0 - 30_000)
        .await?;
    pass("an event-woken pass").await?;
    // the pass counted may be one that was under way when the results
    // were written (CI saw it judge nothing); the event's own pass follows
    // and moves the job cursor past the recent failure
    wait_judged(&env, &recent).await?;
    let open: Vec<String> = env
        .alerts_of("h1")
        .await?
        .into_iter()
        .filter(|a| a.is_open())
        .map(|a| a.subject)
        .collect();
    assert_eq!(
        open,
        ["r2"],
        "only the failure within the lookback ({recent}, not {late})"
    );
    env.stop_alerts().await?;
    env.start_alerts().await?;
    env.wait_alert("h1", "backup_failed", "the late failure's alert", |a| {
        a.is_open() && a.subject == "r1"
    })
    .await?;
    env.stop_all().await
}

/// After a pass has judged a host's backups to a repository, a pass woken
/// by an event reads only the backups after the newest one judged, and
/// judges them against the history the last pass read: before, every new
/// backup read (and parsed) its twenty predecessors again, which at fleet
/// scale was most of the role's reading in a burst. The judgement is the
/// same: ten times the usual raises, though only the new backup was read.
#[tokio::test]
async fn an_event_woken_pass_judges_a_new_backup_against_the_history_it_holds() -> anyhow::Result<()>
{
    const MIB: i64 = 1 << 20;
    const T0: i64 = 1_750_000_000_000;
    let statements = rm_testkit::statements::Statements::install();
    let (mut env, _clock) = Env::manual(T0).await?;
    // only the first pass is a ticker pass (it reads every key whole)
    env.timings.tick = std::time::Duration::from_secs(3600);
    env.timings.cursor_overlap = std::time::Duration::from_secs(600);
    env.anomaly = small_anomalies();
    env.add_host("h1", "fileserver").await?;
    env.add_repo("r1", "offsite").await?;
    let mut last = String::new();
    for i in 0..20 {
        last = env
            .backup_with_summary_at(
                "h1",
                "r1",
                summary((19 + i % 3) * MIB, 200, 1000 * MIB),
                T0 - 60_000 + i * 1000,
            )
            .await?;
    }
    env.start_alerts().await?;
    wait_judged(&env, &last).await?;
    assert!(env.alerts_of("h1").await?.is_empty());

    statements.clear();
    let jump = env
        .backup_with_summary_at("h1", "r1", summary(210 * MIB, 200, 1000 * MIB), T0 - 1000)
        .await?;
    env.publish(Evt::JobFinished, Some("h1")).await?;
    let alert = env
        .wait_alert("h1", "backup_anomaly", "the anomaly", |a| a.is_open())
        .await?;
    assert_eq!(alert.job_id.as_deref(), Some(jump.as_str()));
    assert!(
        alert.message.contains("added 210.0 MiB"),
        "{}",
        alert.message
    );
    let reads = statements.matching("FROM jobs j WHERE j.host_id = ?1 AND j.kind = 'backup'");
    let after = statements.matching("AND (j.finished_at, j.id) > (?5, ?6)");
    assert!(after >= 1, "the backups after the judged one were read");
    assert_eq!(reads, after, "no pass read the whole history again");
    env.stop_all().await
}
