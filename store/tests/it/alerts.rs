//! The alerts role's tables: one open alert per key, causes, conditional
//! transitions, the outbox claim and ordering, late-ingested results.

use rm_store::alerts::{self, NewAlert, Raised};
use rm_store::channels::{self, Channel};
use rm_store::delivery::{self, NewDelivery};
use rm_store::jobs::{self, Finish, JobStatus, Phase};
use rm_store::{hosts, mutes, worker_state};

use super::{backup, new_job, plan_of, store};

fn alert<'a>(id: &'a str, cause: &'a str, now: i64) -> NewAlert<'a> {
    NewAlert {
        id,
        host_id: "h1",
        kind: "backup_failed",
        subject: "r1",
        severity: "critical",
        message: "backup failed",
        job_id: Some(cause),
        cause,
        now,
        notified: true,
    }
}

#[tokio::test]
async fn one_open_alert_per_key_and_conditional_transitions() {
    let (s, _d) = store().await;
    let mut c = s.pool().acquire().await.unwrap();
    hosts::insert(&mut c, "h1", "one", "t", 1).await.unwrap();

    let Raised::New(a) = alerts::raise(&mut c, &alert("a1", "j1", 10)).await.unwrap() else {
        panic!("first raise is new");
    };
    // Same key, another cause: the open alert is confirmed, not duplicated.
    let Raised::Bumped(b) = alerts::raise(&mut c, &alert("a2", "j2", 20)).await.unwrap() else {
        panic!("second raise bumps");
    };
    assert_eq!(b.id, a.id);
    assert_eq!(b.last_seen_at, 20);
    assert_eq!(b.raised_at, 10);
    assert_eq!(b.cause, "j2");
    assert!(
        alerts::cause_seen(&mut c, "h1", "backup_failed", "r1", "j2")
            .await
            .unwrap()
    );

    // Acknowledge once; a second acknowledgement changes nothing.
    let acked = alerts::acknowledge(&mut c, &a.id, "alice", 30)
        .await
        .unwrap();
    assert_eq!(
        acked.and_then(|x| x.acknowledged_by).as_deref(),
        Some("alice")
    );
    assert!(
        alerts::acknowledge(&mut c, &a.id, "bob", 31)
            .await
            .unwrap()
            .is_none()
    );

    // Resolve once: the second resolver gets no row.
    let r = alerts::resolve_open(&mut c, "h1", "backup_failed", "r1", "system", 40)
        .await
        .unwrap();
    assert_eq!(r.map(|x| x.resolved_at), Some(Some(40)));
    assert!(
        alerts::resolve(&mut c, &a.id, "alice", 41)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !alerts::touch(&mut c, &a.id, 50).await.unwrap(),
        "resolved alerts are not bumped"
    );

    // After resolution the key is free again; the old cause is remembered.
    assert!(
        alerts::cause_seen(&mut c, "h1", "backup_failed", "r1", "j2")
            .await
            .unwrap()
    );
    assert!(matches!(
        alerts::raise(&mut c, &alert("a3", "j3", 60)).await.unwrap(),
        Raised::New(_)
    ));
    assert_eq!(alerts::list_open(&mut c).await.unwrap().len(), 1);

    // Mutes.
    assert!(!mutes::is_muted(&mut c, "h1", 60).await.unwrap());
    let window = |id: &str, from: i64, until: i64| mutes::MuteWindow {
        id: id.into(),
        host_id: "h1".into(),
        starts_at: from,
        until,
        reason: None,
        created_by: "alice".into(),
        created_at: from,
        ended_by: None,
    };
    mutes::set_mute(&mut c, &window("m1", 60, 100))
        .await
        .unwrap();
    assert!(mutes::is_muted(&mut c, "h1", 99).await.unwrap());
    assert!(!mutes::is_muted(&mut c, "h1", 100).await.unwrap());
    // A new mute replaces the current one; clearing ends it and keeps it.
    mutes::set_mute(&mut c, &window("m2", 80, 500))
        .await
        .unwrap();
    assert!(mutes::clear_mute(&mut c, "h1", "bob", 90).await.unwrap());
    assert!(!mutes::is_muted(&mut c, "h1", 95).await.unwrap());
    assert!(!mutes::clear_mute(&mut c, "h1", "bob", 95).await.unwrap());
    let history = mutes::mutes_between(&mut c, "h1", 0, 1000).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|m| (m.id.as_str(), m.starts_at, m.until, m.ended_by.as_deref()))
            .collect::<Vec<_>>(),
        [("m1", 60, 80, None), ("m2", 80, 90, Some("bob"))],
        "both mutes are kept with when they really ended"
    );
}

#[tokio::test]
async fn a_result_ingested_late_is_found_by_the_cursor() {
    let (s, _d) = store().await;
    let mut c = s.pool().acquire().await.unwrap();
    hosts::insert(&mut c, "h1", "one", "t", 1).await.unwrap();
    let p = backup();
    jobs::insert(&mut c, &new_job("j1", "h1", &p, 100))
        .await
        .unwrap();
    // The agent ran it long ago and reports only now (ingested at 5000).
    jobs::finish(
        &mut c,
        "j1",
        JobStatus::Failed,
        &Finish {
            finished_at: 200,
            ..Finish::default()
        },
    )
    .await
    .unwrap();
    jobs::record_phase(&mut c, "j1", Phase::Done, 5000)
        .await
        .unwrap();

    let keys = alerts::results_since(&mut c, 1000).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        (
            keys[0].kind.as_str(),
            keys[0].repo_id.as_str(),
            keys[0].mark
        ),
        ("backup", "", 5000)
    );
    assert!(
        alerts::results_since(&mut c, 5000)
            .await
            .unwrap()
            .is_empty()
    );
    let latest = alerts::latest_result(&mut c, "h1", "backup", "")
        .await
        .unwrap();
    assert_eq!(latest.map(|j| j.id).as_deref(), Some("j1"));

    worker_state::put(&mut c, "cursor", &serde_json::json!({"w": 5000}), 1)
        .await
        .unwrap();
    let v: Option<serde_json::Value> = worker_state::get(&mut c, "cursor").await.unwrap();
    assert_eq!(v, Some(serde_json::json!({"w": 5000})));
}

#[tokio::test]
async fn outbox_claims_once_and_keeps_each_alerts_order_per_channel() {
    let (s, _d) = store().await;
    let mut c = s.pool().acquire().await.unwrap();
    hosts::insert(&mut c, "h1", "one", "t", 1).await.unwrap();
    alerts::raise(&mut c, &alert("a1", "j1", 10)).await.unwrap();
    channels::insert(
        &mut c,
        &Channel {
            id: "c1".into(),
            name: "ops".into(),
            kind: "webhook".into(),
            enabled: true,
            config_json: "{}".into(),
            secrets_enc: None,
            created_at: 1,
            updated_at: 1,
        },
    )
    .await
    .unwrap();
    for (id, event, now) in [("d1", "raised", 10), ("d2", "resolved", 20)] {
        delivery::enqueue(
            &mut c,
            &NewDelivery {
                id,
                webhook_id: &format!("msg_{id}"),
                alert_id: Some("a1"),
                channel_id: "c1",
                event,
                payload_json: "{}",
                now,
            },
        )
        .await
        .unwrap();
    }
    // Only the older row is due: the resolution waits for the raise.
    let due = delivery::due(&mut c, 100, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d1"]
    );
    // Two senders race for it: one wins.
    assert!(delivery::claim(&mut c, "d1", 0, 100, 200).await.unwrap());
    assert!(!delivery::claim(&mut c, "d1", 0, 100, 200).await.unwrap());
    assert!(
        delivery::due(&mut c, 150, 10).await.unwrap().is_empty(),
        "leased"
    );
    delivery::finish(&mut c, "d1", delivery::DELIVERED, None, 120)
        .await
        .unwrap();
    let due = delivery::due(&mut c, 150, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d2"]
    );
    assert_eq!(delivery::next_due_at(&mut c).await.unwrap(), Some(20));
    let d1 = delivery::get(&mut c, "d1").await.unwrap();
    assert_eq!((d1.state.as_str(), d1.attempts), ("delivered", 1));
}

/// Each owner purges its own tables: the control plane's retention leaves
/// the alerts role's outbox alone; the alerts role's purge removes only old
/// finished rows.
#[tokio::test]
async fn delivery_history_is_purged_by_its_owner_only() {
    use rm_store::retention;
    let (s, _d) = store().await;
    let day = 24 * 3600 * 1000;
    let now = 400 * day;
    let mut c = s.pool().acquire().await.unwrap();
    channels::insert(
        &mut c,
        &Channel {
            id: "c1".into(),
            name: "ops".into(),
            kind: "webhook".into(),
            enabled: true,
            config_json: "{}".into(),
            secrets_enc: None,
            created_at: 1,
            updated_at: 1,
        },
    )
    .await
    .unwrap();
    for (id, at) in [
        ("old", now - 40 * day),
        ("recent", now - day),
        ("stuck", now - 40 * day),
    ] {
        delivery::enqueue(
            &mut c,
            &NewDelivery {
                id,
                webhook_id: &format!("msg_{id}"),
                alert_id: None,
                channel_id: "c1",
                event: "test",
                payload_json: "{}",
                now: at,
            },
        )
        .await
        .unwrap();
        if id != "stuck" {
            delivery::finish(&mut c, id, delivery::DELIVERED, None, at)
                .await
                .unwrap();
        }
    }
    let ids = |rows: Vec<delivery::Delivery>| rows.into_iter().map(|d| d.id).collect::<Vec<_>>();
    retention::purge(&mut c, now, retention::Retention::default())
        .await
        .unwrap();
    assert_eq!(
        ids(delivery::all(&mut c).await.unwrap()),
        ["old", "stuck", "recent"],
        "the control plane's retention touched the alerts role's outbox"
    );
    let purged = delivery::purge_finished(&mut c, now - 30 * day)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        ids(delivery::all(&mut c).await.unwrap()),
        ["stuck", "recent"]
    );
}

/// Through the host's status index both per-key reads of the alerts role
/// read every finished job of the host and sorted them, once per key
/// judged; the key's own index (migration 26) hands them its newest rows
/// in order.
#[tokio::test]
async fn the_per_key_result_reads_seek_the_keys_newest_rows_without_sorting() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    for (what, sql) in [
        ("latest result", alerts::LATEST_RESULT_SQL),
        ("backup successes", alerts::BACKUP_SUCCESSES_SQL),
        ("backup successes after", alerts::BACKUP_SUCCESSES_AFTER_SQL),
    ] {
        let plan = plan_of(&mut c, sql).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("USING INDEX jobs_key_finished")
                    && l.contains("host_id=? AND kind=? AND <expr>=?")),
            "{what}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|l| l.contains("TEMP B-TREE")),
            "{what} sorts: {plan:?}"
        );
    }
}

/// With its time bound a parameter, SQLite planned the alerts role's
/// "which keys have new results" read on the status index: every pass read
/// every finished job ever stored. It reads the window of the time
/// indexes, the jobs side from the index alone.
#[tokio::test]
async fn the_new_results_read_scans_the_window_of_its_time_indexes() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    let plan = plan_of(&mut c, alerts::RESULTS_SINCE_SQL).await;
    assert!(
        plan.iter()
            .any(|l| l.contains("SEARCH jobs USING COVERING INDEX jobs_finished (finished_at>?)")),
        "{plan:?}"
    );
    assert!(
        plan.iter().any(
            |l| l.contains("SEARCH i USING COVERING INDEX job_ingest_received (received_at>?)")
        ),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|l| l.contains("status")),
        "no status index: {plan:?}"
    );
}
