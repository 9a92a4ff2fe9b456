//! The fleet UI at scale (issue 11): the restore wizard's snapshot pages,
//! the host-name suggestions, and the query plans of the hot queries
//! behind the dashboard, the jobs and alerts filters and the restore
//! wizard (each seeks an index; none sorts in a temporary B-tree or scans
//! a big table).

use rm_store::repos::{self, NewRepo};
use rm_store::snapshots::{self, PageFilter, Snapshot};
use rm_store::{Store, hosts};

use crate::store;

fn snap(id: &str, time: i64, tags: &str, paths: &str) -> Snapshot {
    Snapshot {
        repo_id: "r1".into(),
        snapshot_id: id.into(),
        short_id: id.chars().take(8).collect(),
        hostname: "web-1".into(),
        time,
        paths_json: paths.into(),
        tags_json: tags.into(),
        summary_json: None,
        seen_at: 0,
    }
}

async fn with_snapshots(s: &Store) {
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    repos::insert(
        &mut tx,
        &NewRepo {
            id: "r1",
            name: "main",
            url_display: "rest:http://x/",
            secrets_enc: b"x",
            created_by: "alice",
            now: 0,
        },
    )
    .await
    .unwrap();
    // two snapshots share a time: the id breaks the tie
    for (id, time, tags, paths) in [
        ("aaaa0001", 100, r#"["daily"]"#, r#"["/srv/www"]"#),
        ("aaaa0002", 200, r#"["weekly"]"#, r#"["/srv/WWW"]"#),
        ("aaaa0003", 300, r#"["daily"]"#, r#"["/home"]"#),
        ("aaaa0004", 300, r#"["daily"]"#, r#"["/srv/www", "/etc"]"#),
        ("aaaa0005", 400, r#"[]"#, r#"["/srv/www"]"#),
    ] {
        snapshots::upsert(&mut tx, &snap(id, time, tags, paths))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn ids(v: &[Snapshot]) -> Vec<&str> {
    v.iter().map(|s| s.snapshot_id.as_str()).collect()
}

#[tokio::test]
async fn snapshot_pages_walk_newest_first_by_cursor_and_filter_in_sql() {
    let (s, _dir) = store().await;
    with_snapshots(&s).await;
    let mut c = s.read().await.unwrap();
    let all = PageFilter::default();
    let p1 = snapshots::page(&mut c, "r1", "web-1", &all, None, 2)
        .await
        .unwrap();
    assert_eq!(ids(&p1), ["aaaa0005", "aaaa0004"]);
    let last = p1.last().unwrap();
    let p2 = snapshots::page(
        &mut c,
        "r1",
        "web-1",
        &all,
        Some((last.time, &last.snapshot_id)),
        2,
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&p2),
        ["aaaa0003", "aaaa0002"],
        "the tie at 300 is split by id, nothing lost"
    );
    let last = p2.last().unwrap();
    let p3 = snapshots::page(
        &mut c,
        "r1",
        "web-1",
        &all,
        Some((last.time, &last.snapshot_id)),
        2,
    )
    .await
    .unwrap();
    assert_eq!(ids(&p3), ["aaaa0001"]);

    let f = |since, until, tag, path| PageFilter {
        since,
        until,
        tag,
        path,
    };
    let got = snapshots::page(
        &mut c,
        "r1",
        "web-1",
        &f(None, None, Some("daily"), None),
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(ids(&got), ["aaaa0004", "aaaa0003", "aaaa0001"]);
    let got = snapshots::page(
        &mut c,
        "r1",
        "web-1",
        &f(None, None, None, Some("www")),
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&got),
        ["aaaa0005", "aaaa0004", "aaaa0001"],
        "a path matches case-sensitively"
    );
    let got = snapshots::page(
        &mut c,
        "r1",
        "web-1",
        &f(Some(200), Some(400), Some("daily"), Some("www")),
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&got),
        ["aaaa0004"],
        "since included, until excluded, all filters at once"
    );
    let got = snapshots::page(&mut c, "r1", "other", &all, None, 10)
        .await
        .unwrap();
    assert!(got.is_empty(), "only the host's own snapshots");
    let found = snapshots::find(&mut c, "r1", "web-1", "aaaa0003")
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.time), Some(300));
}

#[tokio::test]
async fn host_names_are_suggested_by_name_page_by_page_and_resolve_a_name_or_id() {
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    for (id, name) in [
        ("h1", "web-1"),
        ("h2", "web-2"),
        ("h3", "db-1"),
        ("h4", "Web_3"),
    ] {
        hosts::insert(&mut tx, id, name, "alice", 0).await.unwrap();
    }
    sqlx::query("UPDATE hosts SET status = 'revoked' WHERE id = 'h2'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let names = |v: Vec<(String, String)>| v.into_iter().map(|(_, n)| n).collect::<Vec<_>>();
    assert_eq!(
        names(hosts::search_names(&mut c, "web", None, 10).await.unwrap()),
        ["Web_3", "web-1"],
        "case-insensitive, revoked hosts left out, by name"
    );
    assert_eq!(
        names(hosts::search_names(&mut c, "", None, 2).await.unwrap()),
        ["Web_3", "db-1"]
    );
    assert_eq!(
        names(
            hosts::search_names(&mut c, "", Some("db-1"), 2)
                .await
                .unwrap()
        ),
        ["web-1"],
        "the next page starts after the cursor's name"
    );
    assert_eq!(
        names(hosts::search_names(&mut c, "_", None, 10).await.unwrap()),
        ["Web_3"],
        "`_` is not a wildcard"
    );
    assert_eq!(
        names(hosts::search_names(&mut c, "h3", None, 10).await.unwrap()),
        ["db-1"],
        "an exact id"
    );
    assert_eq!(
        hosts::resolve(&mut c, "db-1").await.unwrap().as_deref(),
        Some("h3")
    );
    assert_eq!(
        hosts::resolve(&mut c, "h1").await.unwrap().as_deref(),
        Some("h1")
    );
    assert_eq!(hosts::resolve(&mut c, "nope").await.unwrap(), None);
}

/// `EXPLAIN QUERY PLAN` of `sql` as one string.
async fn plan(c: &mut rm_store::Conn, sql: &str) -> String {
    let rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(&mut *c)
            .await
            .unwrap();
    rows.into_iter()
        .map(|r| r.3)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test]
async fn the_hot_fleet_ui_queries_seek_their_indexes() {
    let (s, _dir) = store().await;
    let mut c = s.read().await.unwrap();
    for (what, sql, index) in [
        (
            "the restore wizard's snapshot page",
            "SELECT * FROM snapshots WHERE repo_id = 'r' AND hostname = 'h'
               AND ('1' IS NULL OR time < 1 OR (time = 1 AND snapshot_id < 'x'))
             ORDER BY time DESC, snapshot_id DESC LIMIT 51",
            "USING INDEX snapshots_repo_host_time_id (repo_id=? AND hostname=?",
        ),
        (
            "host-name suggestions",
            "SELECT id, name FROM hosts WHERE status != 'revoked'
               AND ('w' = '' OR name LIKE '%w%' ESCAPE '\\' OR id = 'w') AND ('a' IS NULL OR name > 'a')
             ORDER BY name LIMIT 21",
            "USING INDEX sqlite_autoindex_hosts_2",
        ),
        (
            "a host filter typed by name",
            "SELECT id FROM hosts WHERE id = 'x' UNION ALL SELECT id FROM hosts WHERE name = 'x' LIMIT 1",
            "SEARCH hosts USING INDEX sqlite_autoindex_hosts_2 (name=?)",
        ),
        (
            "the strip's backups of a dashboard page",
            "SELECT host_id, id, status, created_at FROM jobs
             WHERE host_id IN (SELECT value FROM json_each('[\"a\"]')) AND created_at >= 5 AND kind = 'backup'
             ORDER BY host_id, created_at DESC",
            "SEARCH jobs USING INDEX jobs_host_created_id (host_id=? AND created_at>?)",
        ),
        (
            "the mutes of a dashboard page",
            "SELECT * FROM mute_windows WHERE host_id IN (SELECT value FROM json_each('[\"a\"]'))
               AND until > 1 AND starts_at < 2 ORDER BY starts_at",
            "USING INDEX mute_windows_host (host_id=? AND until>?)",
        ),
        (
            "the maintenance windows of a dashboard page",
            "SELECT * FROM maintenance_windows WHERE host_id IN (SELECT value FROM json_each('[\"a\"]'))",
            "USING INDEX maintenance_windows_host (host_id=?)",
        ),
    ] {
        let p = plan(&mut c, sql).await;
        assert!(p.contains(index), "{what}: {p}");
        assert!(!p.contains("TEMP B-TREE") || what.contains("mutes"), "{what} sorts: {p}");
    }
}
