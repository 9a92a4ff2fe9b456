//! The set-based heartbeat flush (`rm_store::hosts::record_beats`): what
//! it writes for each kind of host, and that it finds each row by its key.

use rm_store::hosts::{self, Beat, BeatsRecorded, HostStatus, Vitals};

use super::{plan_of, store};

#[tokio::test]
async fn the_beat_and_vitals_writes_find_each_host_by_its_key() {
    let (s, _dir) = store().await;
    let mut c = s.pool().acquire().await.unwrap();
    for sql in [hosts::BEATS_SQL, hosts::BACK_ONLINE_SQL, hosts::VITALS_SQL] {
        let plan = plan_of(&mut c, sql).await;
        assert!(
            plan.iter()
                .any(|l| l.starts_with("SEARCH hosts USING INDEX sqlite_autoindex_hosts_1 (id=?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|l| l.contains("hosts_status")), "{plan:?}");
    }
}

#[tokio::test]
async fn record_beats_writes_every_host_in_one_call_and_reports_who_came_online() {
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    for (id, status, seen) in [
        ("on", "online", Some(500)),
        ("off", "offline", Some(100)),
        ("new", "pending", None),
        ("gone", "revoked", Some(100)),
    ] {
        hosts::insert(&mut tx, id, id, "alice", 0).await.unwrap();
        sqlx::query(
            "UPDATE hosts SET status = ?, last_seen_at = ?, status_changed_at = 50,
                 uptime_secs = 7, os = 'linux', agent_version = '1.0' WHERE id = ?",
        )
        .bind(status)
        .bind(seen)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let vitals = Vitals {
        agent_version: Some("2.0".into()),
        vitals_json: Some(r#"{"disks":[]}"#.into()),
        ..Vitals::default()
    };
    let beat = |id, seen_at, uptime_secs, vitals| Beat {
        id,
        seen_at,
        uptime_secs,
        vitals,
    };
    let done = hosts::record_beats(
        &mut tx,
        &[
            // older than what the row has: last-seen never goes back
            beat("on", 400, None, Some(&vitals)),
            beat("off", 300, Some(9), None),
            beat("new", 300, Some(1), Some(&vitals)),
            beat("gone", 300, Some(9), Some(&vitals)),
            beat("deleted", 300, None, None),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (done.came_online, done.unknown),
        (vec!["off".into(), "new".into()], vec!["deleted".into()])
    );
    let mut placed: Vec<&str> = done.rowids.iter().map(|(id, _)| id.as_str()).collect();
    placed.sort_unstable();
    assert_eq!(placed, ["gone", "new", "off", "on"], "every host found");
    for (id, rowid) in &done.rowids {
        let at: i64 = sqlx::query_scalar("SELECT rowid FROM hosts WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(*rowid, at, "{id}");
    }
    let on = hosts::get(&mut tx, "on").await.unwrap();
    assert_eq!(on.status().unwrap(), HostStatus::Online);
    assert_eq!(
        (on.last_seen_at, on.status_changed_at, on.uptime_secs),
        (Some(500), Some(50), Some(7)),
        "already online: its change time stays, uptime kept when not sent"
    );
    assert_eq!(
        (on.agent_version.as_deref(), on.os.as_deref()),
        (Some("2.0"), Some("linux")),
        "a vital not sent is kept"
    );
    assert_eq!(on.vitals_json.as_deref(), Some(r#"{"disks":[]}"#));
    let off = hosts::get(&mut tx, "off").await.unwrap();
    assert_eq!(off.status().unwrap(), HostStatus::Online);
    assert_eq!(
        (off.last_seen_at, off.status_changed_at, off.uptime_secs),
        (Some(300), Some(300), Some(9))
    );
    assert_eq!(off.agent_version.as_deref(), Some("1.0"), "no vitals sent");
    let new = hosts::get(&mut tx, "new").await.unwrap();
    assert_eq!(new.status().unwrap(), HostStatus::Online);
    assert_eq!(
        (new.last_seen_at, new.status_changed_at),
        (Some(300), Some(300))
    );
    assert_eq!(new.agent_version.as_deref(), Some("2.0"));
    let gone = hosts::get(&mut tx, "gone").await.unwrap();
    assert_eq!(gone.status().unwrap(), HostStatus::Revoked);
    assert_eq!(
        (
            gone.last_seen_at,
            gone.uptime_secs,
            gone.agent_version.as_deref()
        ),
        (Some(100), Some(7), Some("1.0")),
        "a revoked host is left alone"
    );
    assert_eq!(
        hosts::record_beats(&mut tx, &[]).await.unwrap(),
        BeatsRecorded::default()
    );
    tx.commit().await.unwrap();
}
