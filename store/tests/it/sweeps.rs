//! The control plane's sweeps over every online host (offline candidates,
//! config resync): what they read, and that the `hosts_status` index
//! answers them without reading a row of the table.

use rm_store::hosts;

use super::{plan_as_analysed, plan_of, store};

fn assert_covered(plan: &[String], what: &str) {
    assert!(
        plan.iter()
            .any(|l| l.contains("USING COVERING INDEX hosts_status (status=?)")),
        "{what}: {plan:?}"
    );
}

/// Five hosts: online and last seen at 100 ("old", "other"), online and
/// never seen ("never"), online and seen at 900 ("fresh"), offline and
/// seen at 100 ("off"); every status changed at 1.
async fn five_hosts(tx: &mut rm_store::Conn) {
    for (id, status, seen) in [
        ("old", "online", Some(100)),
        ("never", "online", None),
        ("fresh", "online", Some(900)),
        ("off", "offline", Some(100)),
        ("other", "online", Some(100)),
    ] {
        hosts::insert(&mut *tx, id, id, "alice", 0).await.unwrap();
        sqlx::query(
            "UPDATE hosts SET status = ?, last_seen_at = ?, status_changed_at = 1 WHERE id = ?",
        )
        .bind(status)
        .bind(seen)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
}

/// The ids the sweep tests ask about: all but "other", and one unknown.
fn asked() -> Vec<String> {
    ["old", "never", "fresh", "off", "gone"]
        .map(String::from)
        .to_vec()
}

#[tokio::test]
async fn the_sweeps_reads_of_every_online_host_come_from_the_status_index_alone() {
    let (s, _dir) = store().await;
    let mut w = s.write().await.unwrap();
    for sql in [hosts::ONLINE_IDS_SQL, hosts::CONFIG_VERSIONS_ONLINE_SQL] {
        assert_covered(&plan_of(&mut w, sql).await, "without statistics");
    }
    // a fleet of 50,000 nearly all online, as ANALYZE would describe it
    plan_as_analysed(
        &mut w,
        &[
            ("hosts", "sqlite_autoindex_hosts_1", "50000 1"),
            ("hosts", "hosts_status", "50000 25000 25000 25000 1"),
            ("hosts", "hosts_status_changed", "50000 2"),
        ],
    )
    .await;
    for sql in [hosts::ONLINE_IDS_SQL, hosts::CONFIG_VERSIONS_ONLINE_SQL] {
        assert_covered(&plan_of(&mut w, sql).await, "with statistics");
    }
}

/// The offline sweep's statements over a list of ids walk the list once
/// and find each host by its key, never every online host with a scan of
/// the list for each (quadratic: at 100,000 agents one sweep ran for
/// minutes and no killed agent was detected, docs/benchmarks.md, stop 41).
#[tokio::test]
async fn the_offline_sweeps_statements_over_a_list_of_ids_find_each_host_by_its_key() {
    let (s, _dir) = store().await;
    let mut w = s.write().await.unwrap();
    let by_key = |plan: &[String], what: &str| {
        assert!(
            plan.first()
                .is_some_and(|l| l.contains("SCAN")
                    && (l.contains("VIRTUAL TABLE") || l.contains("json_each"))),
            "{what}: the list is the outer loop: {plan:?}"
        );
        assert!(
            plan.iter()
                .any(|l| l.contains("SEARCH") && l.contains("(id=?)")),
            "{what}: each host found by its key: {plan:?}"
        );
        assert!(
            !plan.iter().any(|l| l.contains("hosts_status")),
            "{what}: not every online host: {plan:?}"
        );
    };
    for sql in [hosts::STALE_AMONG_SQL, hosts::MARK_OFFLINE_IF_STALE_SQL] {
        by_key(&plan_of(&mut w, sql).await, "without statistics");
    }
    plan_as_analysed(
        &mut w,
        &[
            ("hosts", "sqlite_autoindex_hosts_1", "100000 1"),
            ("hosts", "hosts_status", "100000 50000 50000 50000 1"),
        ],
    )
    .await;
    for sql in [hosts::STALE_AMONG_SQL, hosts::MARK_OFFLINE_IF_STALE_SQL] {
        by_key(&plan_of(&mut w, sql).await, "with statistics");
    }
}

#[tokio::test]
async fn stale_among_names_only_online_hosts_whose_stored_last_seen_is_before_the_bound() {
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    five_hosts(&mut tx).await;
    let mut online = hosts::online_ids(&mut tx).await.unwrap();
    online.sort();
    assert_eq!(online, ["fresh", "never", "old", "other"]);
    let asked = asked();
    let mut stale = hosts::stale_among(&mut tx, &asked, 500).await.unwrap();
    stale.sort();
    assert_eq!(stale, ["never", "old"], "'other' was not asked about");
    assert!(
        hosts::stale_among(&mut tx, &[], 500)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn mark_offline_if_stale_changes_only_hosts_still_online_and_stale_and_names_them() {
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    five_hosts(&mut tx).await;
    let asked = asked();
    let mut gone = hosts::mark_offline_if_stale(&mut tx, &asked, 500, 2_000)
        .await
        .unwrap();
    gone.sort();
    assert_eq!(gone, ["never", "old"]);
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, status, status_changed_at FROM hosts ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    let rows: Vec<(&str, &str, i64)> = rows
        .iter()
        .map(|(i, s, c)| (i.as_str(), s.as_str(), *c))
        .collect();
    assert_eq!(
        rows,
        [
            ("fresh", "online", 1),
            ("never", "offline", 2_000),
            ("off", "offline", 1),
            ("old", "offline", 2_000),
            ("other", "online", 1),
        ]
    );
    // a second sweep over the same ids changes nothing more
    assert!(
        hosts::mark_offline_if_stale(&mut tx, &asked, 500, 3_000)
            .await
            .unwrap()
            .is_empty()
    );
}
