//! The control plane's sweeps over the fleet (offline candidates, config
//! resync): what they read, and that an index answers them without
//! reading every online host's row (or, for the resync, every online
//! host).

use rm_store::hosts;

use super::{plan_as_analysed, plan_of, store};

fn assert_covered(plan: &[String], what: &str) {
    assert!(
        plan.iter()
            .any(|l| l.contains("USING COVERING INDEX hosts_status (status=?)")),
        "{what}: {plan:?}"
    );
}

/// A statement over a JSON list of ids walks the list once and finds each
/// host by its key.
fn assert_list_outer_each_host_by_key(plan: &[String], what: &str) {
    assert!(
        plan.first().is_some_and(
            |l| l.contains("SCAN") && (l.contains("VIRTUAL TABLE") || l.contains("json_each"))
        ),
        "{what}: the list is the outer loop: {plan:?}"
    );
    assert!(
        plan.iter()
            .any(|l| l.contains("SEARCH") && l.contains("(id=?)")),
        "{what}: each host found by its key: {plan:?}"
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
async fn the_offline_sweeps_read_of_every_online_host_comes_from_the_status_index_alone() {
    let (s, _dir) = store().await;
    let mut w = s.write().await.unwrap();
    assert_covered(
        &plan_of(&mut w, hosts::ONLINE_IDS_SQL).await,
        "without statistics",
    );
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
    assert_covered(
        &plan_of(&mut w, hosts::ONLINE_IDS_SQL).await,
        "with statistics",
    );
}

/// The config resync never reads every online host: the unconfirmed ones
/// come from their partial index, the rest by key from a list.
#[tokio::test]
async fn the_config_resyncs_reads_touch_only_unconfirmed_hosts_and_hosts_asked_by_key() {
    let (s, _dir) = store().await;
    let mut w = s.write().await.unwrap();
    let check = |unconfirmed: &[String], among: &[String], what: &str| {
        assert!(
            unconfirmed
                .iter()
                .any(|l| l.contains("hosts_config_unconfirmed")),
            "{what}: {unconfirmed:?}"
        );
        assert!(
            !unconfirmed.iter().any(|l| l.contains("hosts_status")),
            "{what}: {unconfirmed:?}"
        );
        assert_list_outer_each_host_by_key(among, what);
    };
    check(
        &plan_of(&mut w, hosts::CONFIG_UNCONFIRMED_ONLINE_SQL).await,
        &plan_of(&mut w, hosts::CONFIG_VERSIONS_AMONG_SQL).await,
        "without statistics",
    );
    plan_as_analysed(
        &mut w,
        &[
            ("hosts", "sqlite_autoindex_hosts_1", "100000 1"),
            ("hosts", "hosts_status", "100000 50000 50000 50000 1"),
            ("hosts", "hosts_config_unconfirmed", "10 5 1 1"),
        ],
    )
    .await;
    check(
        &plan_of(&mut w, hosts::CONFIG_UNCONFIRMED_ONLINE_SQL).await,
        &plan_of(&mut w, hosts::CONFIG_VERSIONS_AMONG_SQL).await,
        "with statistics",
    );
}

#[tokio::test]
async fn the_config_resync_finds_online_hosts_behind_and_asked_hosts_desired_versions() {
    let (s, _dir) = store().await;
    let mut w = s.write().await.unwrap();
    five_hosts(&mut w).await;
    // "old" and "off" bumped past what their agents confirmed
    for id in ["old", "off", "old"] {
        hosts::bump_config_version(&mut w, id).await.unwrap();
    }
    hosts::set_applied_config(&mut w, "fresh", 7).await.unwrap();
    let mut behind = hosts::config_unconfirmed_online(&mut w).await.unwrap();
    behind.sort();
    let old_v = hosts::get(&mut w, "old").await.unwrap().config_version;
    assert_eq!(behind, [("old".to_owned(), old_v)]);
    // once its agent confirms, it is no longer behind
    hosts::set_applied_config(&mut w, "old", old_v)
        .await
        .unwrap();
    assert!(
        hosts::config_unconfirmed_online(&mut w)
            .await
            .unwrap()
            .is_empty()
    );

    let mut among = hosts::config_versions_among(&mut w, &asked())
        .await
        .unwrap();
    among.sort();
    // "gone" is no host; "off" is found, offline; each with its stored
    // desired version
    let found: Vec<(&str, bool)> = among.iter().map(|(h, _, o)| (h.as_str(), *o)).collect();
    assert_eq!(
        found,
        [
            ("fresh", true),
            ("never", true),
            ("off", false),
            ("old", true)
        ]
    );
    for (id, v, _) in &among {
        let stored = hosts::get(&mut w, id).await.unwrap().config_version;
        assert_eq!(*v, stored, "{id}");
    }
    assert_eq!(among[3].1, old_v);
    assert!(
        hosts::config_versions_among(&mut w, &[])
            .await
            .unwrap()
            .is_empty()
    );
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
        assert_list_outer_each_host_by_key(plan, what);
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
