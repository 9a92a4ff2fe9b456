//! Store tests against real SQLite files.

use rm_bus::msg::JobParams;
use rm_store::jobs::{self, Finish, JobStatus, NewJob, Phase};
use rm_store::repos::{self, Access, NewRepo};
use rm_store::{Store, StoreError, enroll, hosts, parts, retention};

mod active_jobs;
mod admin;
mod alerts;
mod beats;
mod cpbackup;
mod fleet_ui;
mod refresh_cadence;
mod results;
mod schema_change;
mod sqlite_build;
mod sweeps;
mod vacuum;
mod writer;

/// `EXPLAIN QUERY PLAN` of one of our statements, a line per step.
async fn plan_of(c: &mut rm_store::Conn, sql: &str) -> Vec<String> {
    let rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(c)
            .await
            .unwrap();
    rows.into_iter().map(|r| r.3).collect()
}

/// Runs `ANALYZE`, then replaces the statistics with `stats` (table,
/// index, `sqlite_stat1` figures of a large store) and reloads them into
/// this connection's planner: a small test store planned as a big one.
async fn plan_as_analysed(c: &mut rm_store::Conn, stats: &[(&str, &str, &str)]) {
    sqlx::query("ANALYZE").execute(&mut *c).await.unwrap();
    for (tbl, idx, stat) in stats {
        sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)")
            .bind(tbl)
            .bind(idx)
            .bind(stat)
            .execute(&mut *c)
            .await
            .unwrap();
    }
    // reloads the statistics into this connection's planner
    sqlx::query("ANALYZE sqlite_schema")
        .execute(&mut *c)
        .await
        .unwrap();
}

/// A repository named as its id (the tests' placeholder URL and secrets).
async fn add_repo(tx: &mut rm_store::Tx, id: &str) {
    repos::insert(
        &mut *tx,
        &NewRepo {
            id,
            name: id,
            url_display: "rest:http://x/",
            secrets_enc: b"x",
            created_by: "alice",
            now: 0,
        },
    )
    .await
    .unwrap();
}

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("rm.db")).await.unwrap();
    (s, dir)
}

fn backup() -> JobParams {
    JobParams::Backup {
        paths: vec!["/data".into()],
        excludes: vec![],
        tags: vec![],
        one_file_system: false,
        host_name: None,
    }
}

fn new_job<'a>(id: &'a str, host: &'a str, params: &'a JobParams, now: i64) -> NewJob<'a> {
    NewJob {
        id,
        host_id: host,
        exec_host_id: host,
        repo_id: None,
        params,
        origin: "operator",
        schedule_id: None,
        status: JobStatus::Queued,
        timeout_secs: 60,
        created_by: "alice",
        created_at: now,
        started_at: None,
    }
}

#[tokio::test]
async fn open_is_idempotent_and_pragmas_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rm.db");
    let s = Store::open(&path).await.unwrap();
    let mut c = s.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    // commits survive power loss: acknowledged results are deleted on the agent
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    drop(c);
    // reads go through read-only connections
    let mut r = s.read().await.unwrap();
    let err = sqlx::query("DELETE FROM hosts").execute(&mut *r).await;
    assert!(err.is_err(), "a read connection refuses writes");
    drop(r);
    s.close().await;
    let s = Store::open(&path).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(
        n >= 6,
        "the six migrations of the first releases are embedded"
    );
    assert_eq!(
        n,
        rm_store::migration_count(),
        "each embedded migration applied exactly once"
    );
    // a database from a newer build is refused, not guessed at
    sqlx::query("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
        .execute(s.pool())
        .await
        .unwrap();
    s.close().await;
    let err = Store::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn hosts_have_typed_not_found_and_unique_names() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 1)
        .await
        .unwrap();
    let err = hosts::insert(&mut tx, "h2", "web-1", "alice", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("web-1")),
        "{err}"
    );
    tx.commit().await.unwrap();
    let mut c = s.pool().acquire().await.unwrap();
    assert!(matches!(
        hosts::get(&mut c, "nope").await,
        Err(StoreError::NotFound { what: "host", .. })
    ));
    let h = hosts::get(&mut c, "h1").await.unwrap();
    assert_eq!(h.status().unwrap(), hosts::HostStatus::Pending);
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_and_expire() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    enroll::insert(&mut tx, "hash-a", "h1", 0, 1000)
        .await
        .unwrap();
    enroll::insert(&mut tx, "hash-b", "h1", 0, 1000)
        .await
        .unwrap();
    assert_eq!(
        enroll::take(&mut tx, "nope", 10).await.unwrap(),
        Err(enroll::TokenRefusal::Unknown)
    );
    assert_eq!(
        enroll::take(&mut tx, "hash-a", 10).await.unwrap(),
        Ok("h1".to_owned())
    );
    assert_eq!(
        enroll::take(&mut tx, "hash-a", 11).await.unwrap(),
        Err(enroll::TokenRefusal::Used)
    );
    assert_eq!(
        enroll::take(&mut tx, "hash-b", 1000).await.unwrap(),
        Err(enroll::TokenRefusal::Expired)
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn job_lifecycle_keeps_the_host_summary_current() {
    let (s, _d) = store().await;
    let p = backup();
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j1", "h1", &p, 1))
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j2", "h1", &p, 2))
        .await
        .unwrap();
    let sum = hosts::summary(&mut tx, "h1").await.unwrap();
    assert_eq!((sum.queued_jobs, sum.running_jobs), (2, 0));

    assert!(jobs::set_dispatched(&mut tx, "j1", 3).await.unwrap());
    assert!(
        !jobs::set_dispatched(&mut tx, "j1", 3).await.unwrap(),
        "only from queued"
    );
    assert!(jobs::set_running(&mut tx, "j1", 4).await.unwrap());
    let sum = hosts::summary(&mut tx, "h1").await.unwrap();
    assert_eq!((sum.queued_jobs, sum.running_jobs), (1, 1));

    let f = Finish {
        exit_code: Some(0),
        summary_json: Some(r#"{"snapshot_id":"abcd1234"}"#.into()),
        finished_at: 10,
        ..Finish::default()
    };
    assert!(
        jobs::finish(&mut tx, "j1", JobStatus::Succeeded, &f)
            .await
            .unwrap()
    );
    assert!(
        !jobs::finish(&mut tx, "j1", JobStatus::Failed, &f)
            .await
            .unwrap(),
        "first result wins"
    );
    let sum = hosts::summary(&mut tx, "h1").await.unwrap();
    assert_eq!(sum.last_backup_status.as_deref(), Some("succeeded"));
    assert_eq!(sum.last_backup_success_at, Some(10));
    assert_eq!(sum.last_snapshot_id.as_deref(), Some("abcd1234"));
    assert_eq!((sum.queued_jobs, sum.running_jobs), (1, 0));

    // a failure afterwards keeps the last success time
    jobs::finish(
        &mut tx,
        "j2",
        JobStatus::Failed,
        &Finish {
            finished_at: 20,
            ..Finish::default()
        },
    )
    .await
    .unwrap();
    let sum = hosts::summary(&mut tx, "h1").await.unwrap();
    assert_eq!(sum.last_backup_status.as_deref(), Some("failed"));
    assert_eq!(sum.last_backup_success_at, Some(10));
    assert_eq!(sum.failed_jobs_total, 1);
    assert_eq!(sum.queued_jobs, 0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn ingest_phases_are_recorded_once() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    assert!(
        jobs::record_phase(&mut tx, "j1", Phase::Done, 1)
            .await
            .unwrap()
    );
    assert!(
        !jobs::record_phase(&mut tx, "j1", Phase::Done, 2)
            .await
            .unwrap()
    );
    assert!(
        jobs::record_phase(&mut tx, "j1", Phase::Started, 2)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn result_parts_reassemble_in_order_once_complete_and_are_then_gone() {
    let (s, _d) = store().await;
    let p = backup();
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j1", "h1", &p, 1))
        .await
        .unwrap();
    // out of order, one re-sent, and a stale part of an earlier split
    parts::put(&mut tx, "j1", "summary", 1, 3, "bb", 5)
        .await
        .unwrap();
    parts::put(&mut tx, "j1", "summary", 3, 4, "zz", 5)
        .await
        .unwrap();
    parts::put(&mut tx, "j1", "summary", 0, 3, "a", 5)
        .await
        .unwrap();
    parts::put(&mut tx, "j1", "summary", 0, 3, "aa", 6)
        .await
        .unwrap();
    assert_eq!(
        parts::take(&mut tx, "j1", "summary", 3, 6).await.unwrap(),
        Err(parts::Incomplete::Missing { got: 2, total: 3 })
    );
    // taking deletes: a complete set afterwards
    for (i, d) in ["aa", "bb", "cc"].iter().enumerate() {
        parts::put(&mut tx, "j1", "summary", i as u32, 3, d, 7)
            .await
            .unwrap();
    }
    assert_eq!(
        parts::take(&mut tx, "j1", "summary", 3, 5).await.unwrap(),
        Err(parts::Incomplete::Length {
            got: 6,
            expected: 5
        })
    );
    for (i, d) in ["aa", "bb", "cc"].iter().enumerate() {
        parts::put(&mut tx, "j1", "summary", i as u32, 3, d, 7)
            .await
            .unwrap();
    }
    assert_eq!(
        parts::take(&mut tx, "j1", "summary", 3, 6).await.unwrap(),
        Ok("aabbcc".to_owned())
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_parts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(left, 0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_queued_job_finishes_it_and_others_get_flagged() {
    let (s, _d) = store().await;
    let p = backup();
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j1", "h1", &p, 1))
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j2", "h1", &p, 1))
        .await
        .unwrap();
    let j = jobs::request_cancel(&mut tx, "j1", 5).await.unwrap();
    assert_eq!(j.status().unwrap(), JobStatus::Cancelled);
    jobs::set_dispatched(&mut tx, "j2", 2).await.unwrap();
    let j = jobs::request_cancel(&mut tx, "j2", 5).await.unwrap();
    assert_eq!(j.status().unwrap(), JobStatus::Dispatched);
    assert!(j.cancel_requested);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn job_logs_are_capped() {
    let (s, _d) = store().await;
    let p = backup();
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j1", "h1", &p, 1))
        .await
        .unwrap();
    let lines: Vec<(i64, &str, &str)> = (0..8).map(|i| (i, "stdout", "line")).collect();
    jobs::append_logs(&mut tx, "j1", 0, &lines[..4], 6)
        .await
        .unwrap();
    jobs::append_logs(&mut tx, "j1", 2, &lines[..4], 6)
        .await
        .unwrap(); // overlaps 2,3
    jobs::append_logs(&mut tx, "j1", 6, &lines[..4], 6)
        .await
        .unwrap();
    let logs = jobs::logs(&mut tx, "j1").await.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    let j = jobs::get(&mut tx, "j1").await.unwrap();
    assert!(j.log_truncated);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn maintenance_host_needs_full_access() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    hosts::insert(&mut tx, "h2", "maint", "alice", 0)
        .await
        .unwrap();
    add_repo(&mut tx, "r1").await;
    repos::attach(&mut tx, "h1", "r1", Access::AppendOnly, b"a", 0)
        .await
        .unwrap();
    repos::attach(&mut tx, "h2", "r1", Access::Full, b"f", 0)
        .await
        .unwrap();
    let err = repos::set_maintenance_host(&mut tx, "r1", Some("h1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    repos::set_maintenance_host(&mut tx, "r1", Some("h2"))
        .await
        .unwrap();
    assert_eq!(
        repos::get(&mut tx, "r1")
            .await
            .unwrap()
            .maintenance_host_id
            .as_deref(),
        Some("h2")
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn at_most_one_open_alert_per_host_kind_subject() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    let raise = "INSERT INTO alerts (id, host_id, kind, subject, severity, message, raised_at, last_seen_at)
                 VALUES (?, 'h1', 'backup_failed', '', 'error', 'm', 0, 0)";
    sqlx::query(raise)
        .bind("a1")
        .execute(&mut *tx)
        .await
        .unwrap();
    let dup = sqlx::query(raise)
        .bind("a2")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)
        .unwrap_err();
    assert!(dup.is_unique_violation());
    sqlx::query("UPDATE alerts SET resolved_at = 1 WHERE id = 'a1'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(raise)
        .bind("a3")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn retention_purges_old_finished_jobs_but_keeps_the_latest_and_active() {
    let (s, _d) = store().await;
    let p = backup();
    let day = 24 * 3600 * 1000;
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    for (id, t) in [("old1", 1), ("old2", 2), ("active", 3)] {
        jobs::insert(&mut tx, &new_job(id, "h1", &p, t))
            .await
            .unwrap();
    }
    jobs::append_logs(&mut tx, "old1", 0, &[(1, "stdout", "x")], 10)
        .await
        .unwrap();
    jobs::finish(
        &mut tx,
        "old1",
        JobStatus::Succeeded,
        &Finish {
            finished_at: 10,
            ..Finish::default()
        },
    )
    .await
    .unwrap();
    jobs::finish(
        &mut tx,
        "old2",
        JobStatus::Succeeded,
        &Finish {
            finished_at: 20,
            ..Finish::default()
        },
    )
    .await
    .unwrap();
    let purged = retention::purge(&mut tx, 100 * day, retention::Retention::default())
        .await
        .unwrap();
    assert_eq!(purged.jobs, 1);
    assert!(jobs::find(&mut tx, "old1").await.unwrap().is_none());
    assert!(
        jobs::logs(&mut tx, "old1").await.unwrap().is_empty(),
        "logs go with their job"
    );
    assert!(
        jobs::find(&mut tx, "old2").await.unwrap().is_some(),
        "the host's last job stays"
    );
    assert!(jobs::find(&mut tx, "active").await.unwrap().is_some());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn retention_purges_old_audit_rows_and_keeps_recent_ones() {
    use rm_store::audit;
    let (s, _d) = store().await;
    let day = 24 * 3600 * 1000;
    let now = 400 * day;
    let mut tx = s.write().await.unwrap();
    for (ts, action) in [(now - 366 * day, "old"), (now - 10 * day, "recent")] {
        audit::append(
            &mut tx,
            &audit::NewEntry {
                ts,
                actor: "alice",
                via: "session",
                role: "controlplane",
                action,
                target_kind: Some("host"),
                target_id: Some("h1"),
                detail: None,
            },
        )
        .await
        .unwrap();
    }
    let purged = retention::purge(&mut tx, now, retention::Retention::default())
        .await
        .unwrap();
    assert_eq!(purged.audit, 1);
    let left: Vec<String> = audit::recent(&mut tx, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(left, ["recent"]);
    tx.commit().await.unwrap();
}

/// Many processes' worth of connections opening one brand-new database at
/// the same moment (roles starting together on an empty data dir): every
/// open succeeds, WAL is on and the schema is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_first_opens_of_a_new_database_at_once_all_succeed() {
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rm.db");
        let opens: Vec<_> = (0..10)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { Store::open(&path).await })
            })
            .collect();
        let mut stores = Vec::new();
        for o in opens {
            match o.await.unwrap() {
                Ok(s) => stores.push(s),
                Err(e) => panic!("round {round}: a concurrent first open failed: {e}"),
            }
        }
        let mut c = stores[0].pool().acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let (applied, distinct, latest): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM schema_migrations",
        )
        .fetch_one(&mut *c)
        .await
        .unwrap();
        drop(c);
        assert_eq!(
            applied, distinct,
            "round {round}: each migration applied once"
        );
        assert_eq!(
            applied,
            rm_store::migration_count(),
            "round {round}: every migration applied"
        );
        assert_eq!(
            latest,
            rm_store::schema_version(),
            "round {round}: up to the newest"
        );
        for s in stores {
            s.close().await;
        }
    }
}

/// Roles starting together on an empty data dir each load the master key:
/// all of them end up with the one key that is on disk.
#[test]
fn concurrent_first_starts_share_the_one_master_key_on_disk() {
    use rm_store::secrets::MasterKey;
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.path().to_owned();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    MasterKey::load_or_create(&dir)
                })
            })
            .collect();
        let keys: Vec<MasterKey> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: a first start failed: {e:#}"))
            })
            .collect();
        // What a restart would load.
        let on_disk = MasterKey::load_or_create(dir.path()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let blob = k.encrypt(b"secret", "t").unwrap();
            assert!(
                on_disk.decrypt(&blob, "t").is_ok(),
                "round {round}: starter {i} kept a key that is not on disk"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("master.key")]);
    }
}

#[tokio::test]
async fn a_job_refused_for_now_stays_queued_and_waits_longer_after_each_refusal() {
    let (s, _d) = store().await;
    let p = backup();
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    jobs::insert(&mut tx, &new_job("j1", "h1", &p, 1))
        .await
        .unwrap();
    let waits: Vec<(i64, i64)> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            let r = jobs::requeue(&mut tx, "j1", "busy", 1_000, 100, 500)
                .await
                .unwrap();
            out.push(r.expect("still queued"));
        }
        out
    };
    // 100, 200, 400, then capped at 500
    assert_eq!(waits, vec![(1, 1_100), (2, 1_200), (3, 1_400), (4, 1_500)]);
    let j = jobs::get(&mut tx, "j1").await.unwrap();
    assert_eq!(j.status, "queued");
    assert!(j.error.as_deref().unwrap_or_default().contains("busy"));
    // not offered before its time; offered after, and dispatching clears the reason
    assert!(
        jobs::dispatchable_for(&mut tx, "h1", 1_499)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        jobs::dispatchable_for(&mut tx, "h1", 1_500)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(jobs::set_dispatched(&mut tx, "j1", 1_500).await.unwrap());
    assert_eq!(jobs::get(&mut tx, "j1").await.unwrap().error, None);
    assert_eq!(
        jobs::requeue(&mut tx, "j1", "busy", 1_600, 100, 500)
            .await
            .unwrap(),
        None
    );
}

/// `serve` runs several roles in one process: opened with `open_shared`,
/// they write through one connection (their transactions queue in the
/// process instead of sleeping in SQLite's busy handler), each keeps its
/// reads, and the connection closes with its last holder.
#[tokio::test]
async fn roles_of_one_process_share_one_write_connection_until_the_last_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rm.db");
    let cp = Store::open_shared(&path).await.unwrap();
    let alerts = Store::open_shared(&path).await.unwrap();
    let alone = Store::open(&path).await.unwrap();
    let (cp0, alone0) = (cp.commits(), alone.commits());
    let mut tx = alerts.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        cp.commits() - cp0,
        1,
        "the alerts role's commit is on the shared connection"
    );
    assert_eq!(alone.commits(), alone0, "a store opened alone has its own");
    cp.close_shared().await;
    let mut tx = alerts.write().await.unwrap();
    hosts::insert(&mut tx, "h2", "web-2", "alice", 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut r = alerts.read().await.unwrap();
    assert_eq!(hosts::list(&mut r).await.unwrap().len(), 2);
    drop(r);
    alerts.close_shared().await;
    assert!(alerts.write().await.is_err(), "closed with its last holder");
    // a later role of the process opens it afresh
    let again = Store::open_shared(&path).await.unwrap();
    let mut tx = again.write().await.unwrap();
    hosts::insert(&mut tx, "h3", "web-3", "alice", 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    again.close_shared().await;
    alone.close().await;
}

/// SQLite's default page cache (2 MiB) is smaller than what one batch of
/// results dirties in a grown database, so the write connection would
/// spill into the WAL mid-transaction; both kinds of connection get a
/// larger cache.
#[tokio::test]
async fn write_and_read_connections_get_their_page_caches() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    let writer: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut r = s.read().await.unwrap();
    let reader: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(&mut *r)
        .await
        .unwrap();
    assert_eq!((writer, reader), (-64 * 1024, -8 * 1024));
}
