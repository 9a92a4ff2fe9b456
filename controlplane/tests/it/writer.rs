//! The write path: heartbeats kept in memory and flushed as changed rows
//! (vitals only when they change), and a write that failed while the
//! database was unavailable is written once it is back, without a restart.

use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

async fn metrics(cp: &Cp) -> api::Metrics {
    cp.call(api::METRICS, serde_json::json!({})).await
}

async fn last_seen(db: &rm_store::Store, host: &str) -> Option<i64> {
    let mut c = db.read().await.unwrap();
    rm_store::hosts::get(&mut c, host)
        .await
        .unwrap()
        .last_seen_at
}

async fn vitals_updates(db: &rm_store::Store) -> i64 {
    let mut c = db.read().await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM probe_vitals")
        .fetch_one(&mut *c)
        .await
        .unwrap()
}

/// Waits until the stored last-seen of `host` moved past `after`.
async fn seen_after(db: &rm_store::Store, host: &str, after: Option<i64>) -> i64 {
    eventually("last-seen to move", || async {
        last_seen(db, host)
            .await
            .filter(|t| after.is_none_or(|a| *t > a))
    })
    .await
}

#[tokio::test]
async fn heartbeats_with_unchanged_vitals_move_last_seen_but_never_rewrite_the_vitals() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "steady").await.unwrap();
    let db = cp.db().await;
    // Counts every statement that sets the vitals, whatever their value.
    exec(
        &db,
        "CREATE TABLE probe_vitals (host TEXT);
         CREATE TRIGGER probe_vitals AFTER UPDATE OF vitals_json ON hosts
         BEGIN INSERT INTO probe_vitals VALUES (NEW.id); END;",
    )
    .await;
    agent.hello(0, vec![], vec![]).await; // beats every 100 ms from now on
    let host = agent.host_id();
    // The first beat's vitals are new: written once.
    let mut seen = seen_after(&db, &host, None).await;
    seen = seen_after(&db, &host, Some(seen)).await;
    let first = vitals_updates(&db).await;
    // Five more flushes of beats with the same vitals.
    for _ in 0..5 {
        seen = seen_after(&db, &host, Some(seen)).await;
    }
    assert_eq!(
        vitals_updates(&db).await,
        first,
        "unchanged vitals were written again"
    );
    let m = metrics(&cp).await;
    assert!(
        m.vitals_written >= 1 && m.heartbeat_rows_written > m.vitals_written,
        "{m:?}"
    );
    agent.stop_heartbeats();
}

#[tokio::test]
async fn a_heartbeat_that_arrives_while_the_database_is_unavailable_is_written_once_it_is_back() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut agent = Agent::enroll(&bus, &cp, "patient").await.unwrap();
    agent.hello(0, vec![], vec![]).await;
    agent.stop_heartbeats(); // one beat by hand below
    let db = cp.db().await;
    let host = agent.host_id();
    seen_after(&db, &host, None).await;

    // Every write to hosts fails for a while.
    exec(&db, "ALTER TABLE hosts RENAME TO hosts_away").await;
    let sent_at = rm_bus::clock::system().now_ms();
    agent.heartbeat().await;
    eventually("a heartbeat flush to fail", || async {
        (metrics(&cp).await.errors_of("heartbeats") > 0).then_some(())
    })
    .await;
    exec(&db, "ALTER TABLE hosts_away RENAME TO hosts").await;

    // No further beat: the one kept in memory is written by itself.
    eventually("the beat to be on record", || async {
        last_seen(&db, &host)
            .await
            .filter(|t| *t >= sent_at)
            .map(|_| ())
    })
    .await;
}
