//! The fleet UI at scale (issue 11): the restore wizard's snapshot pages,
//! the host-name suggestions, and the query plans of the hot queries
//! behind the dashboard, the jobs and alerts filters and the restore
//! wizard (each seeks an index; none scans a big table or sorts in a
//! temporary B-tree, but for the snapshot page's snapshots of one time).

use rm_store::repos::{self, NewRepo};
use rm_store::snapshots::{self, PageFilter, Snapshot};
use rm_store::{Store, hosts};

use crate::{add_repo, store};

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
    add_repo(&mut tx, "r1").await;
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

/// Migration 34 took the snapshot id out of the snapshot indexes: the
/// index orders snapshots of one time by when they were stored, and the
/// pages still order them by id. Here three hosts' snapshots share a time
/// and were stored in the reverse of their ids' order.
#[tokio::test]
async fn snapshots_of_one_time_page_by_id_whatever_order_they_were_stored_in() {
    let (s, _dir) = store().await;
    with_snapshots(&s).await;
    let mut tx = s.write().await.unwrap();
    for (id, host) in [
        ("ffff0003", "web-1"),
        ("ffff0002", "db-1"),
        ("ffff0001", "web-1"),
    ] {
        let mut x = snap(id, 500, "[]", r#"["/srv"]"#);
        x.hostname = host.into();
        snapshots::upsert(&mut tx, &x).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let older = ["aaaa0005", "aaaa0004", "aaaa0003", "aaaa0002", "aaaa0001"];
    for (host, tie) in [
        (None, vec!["ffff0003", "ffff0002", "ffff0001"]),
        (Some("web-1"), vec!["ffff0003", "ffff0001"]),
    ] {
        let want: Vec<&str> = tie.into_iter().chain(older).collect();
        let mut got = Vec::new();
        let mut before: Option<(i64, String)> = None;
        // two at a time: the second page starts after a cursor inside or
        // at the end of the tie
        loop {
            let cursor = before.as_ref().map(|(t, id)| (*t, id.as_str()));
            let page = snapshots::page_any(&mut c, "r1", host, cursor, 2)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            before = Some((last.time, last.snapshot_id.clone()));
            got.extend(page.iter().map(|s| s.snapshot_id.clone()));
        }
        assert_eq!(
            got, want,
            "host {host:?}: newest first, a tie by id descending"
        );
    }
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

/// The by-id reads the restore wizard, the run and schedule forms and a
/// repository's page use instead of reading every host and repository (a
/// fleet where each host has its own repository holds as many of them as
/// hosts) return exactly the rows asked for.
#[tokio::test]
async fn hosts_and_repositories_read_by_id_are_exactly_those_asked_for() {
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    for (id, name) in [("h1", "web-1"), ("h2", "web-2"), ("h3", "db-1")] {
        hosts::insert(&mut tx, id, name, "alice", 0).await.unwrap();
    }
    sqlx::query("UPDATE hosts SET status = 'online' WHERE id = 'h3'")
        .execute(&mut *tx)
        .await
        .unwrap();
    // named by their ids: the order asked for is not the order by name
    for id in ["zeta", "alpha", "mid"] {
        add_repo(&mut tx, id).await;
    }
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let mut got = hosts::names_and_status_of(&mut c, &["h3", "h1", "nope"])
        .await
        .unwrap();
    got.sort();
    let status_of_h1 = got[0].1.1.clone();
    assert_eq!(
        got,
        [
            ("h1".to_owned(), ("web-1".to_owned(), status_of_h1)),
            ("h3".to_owned(), ("db-1".to_owned(), "online".to_owned())),
        ],
        "the hosts asked for, an unknown id left out"
    );
    assert!(
        hosts::names_and_status_of(&mut c, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let names: Vec<String> = repos::of_ids(&mut c, &["zeta", "alpha", "gone"])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["alpha", "zeta"], "by name, an unknown id left out");
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
            "USING INDEX snapshots_repo_host_time (repo_id=? AND hostname=?",
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
            "a filtered page of the repositories list (migration 32)",
            "SELECT id FROM repositories
             WHERE '%x%' IS NULL OR name LIKE '%x%' ESCAPE '\\' OR url_display LIKE '%x%' ESCAPE '\\'
             ORDER BY name LIMIT 50 OFFSET 0",
            "SCAN repositories USING COVERING INDEX repositories_name_url",
        ),
        (
            "the repositories list's count (migration 32)",
            "SELECT count(*) FROM repositories
             WHERE '%x%' IS NULL OR name LIKE '%x%' ESCAPE '\\' OR url_display LIKE '%x%' ESCAPE '\\'",
            "SCAN repositories USING COVERING INDEX repositories_name_url",
        ),
        (
            "a page of the API's repositories list after a name",
            "SELECT id FROM repositories
             WHERE ('%x%' IS NULL OR name LIKE '%x%' ESCAPE '\\' OR url_display LIKE '%x%' ESCAPE '\\')
               AND name > 'm'
             ORDER BY name LIMIT 51 OFFSET 0",
            "USING COVERING INDEX repositories_name_url (name>?)",
        ),
        (
            "a page of the API's schedules list after a cursor (migration 33)",
            "SELECT * FROM schedules WHERE (NULL IS NULL OR host_id = NULL) AND (host_id, id) > ('h', 's')
             ORDER BY host_id, id LIMIT 51",
            "USING INDEX schedules_host ((host_id,id)>(?,?))",
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
        (
            "the dashboard's counters (maintained, migration 21)",
            "SELECT health, hosts, running FROM fleet_counts",
            "SCAN fleet_counts",
        ),
        (
            "the open-alerts counter",
            "SELECT COUNT(*) FROM alerts a JOIN hosts h ON h.id = a.host_id
             WHERE a.resolved_at IS NULL AND h.status != 'revoked'",
            "SEARCH a USING INDEX alerts_open (resolved_at=?)",
        ),
        (
            "the tag filter's tags and counts (maintained, migration 21)",
            "SELECT tag, hosts FROM tag_counts WHERE hosts > 0 ORDER BY tag LIMIT 500",
            "SCAN tag_counts",
        ),
        (
            "the hosts a snapshot counts for (migration 25's triggers)",
            "SELECT h.id FROM hosts h JOIN host_repositories hr ON hr.host_id = h.id AND hr.repo_id = 'r'
             WHERE h.restic_host = 'x'",
            "SEARCH h USING INDEX hosts_restic_host (restic_host=?)",
        ),
        (
            "a text filter's total (migration 25)",
            &rm_store::fleet::TEXT_COUNT.replace("?1", "'%x%'"),
            "SCAN h USING COVERING INDEX hosts_text",
        ),
        (
            "the total of a tag-only filter",
            "SELECT hosts FROM tag_counts WHERE tag = 'prod'",
            "SEARCH tag_counts USING PRIMARY KEY (tag=?)",
        ),
        (
            "a tag filter's hosts",
            "SELECT COUNT(*) FROM hosts h LEFT JOIN host_summary s ON s.host_id = h.id
             WHERE h.status != 'revoked' AND h.id IN (SELECT host_id FROM host_tags WHERE tag = 'prod')",
            "USING COVERING INDEX host_tags_tag (tag=?)",
        ),
    ] {
        let p = plan(&mut c, sql).await;
        assert!(p.contains(index), "{what}: {p}");
        if what.contains("counter") || what.contains("tag") {
            assert!(
                !p.contains("SCAN hosts") && !p.contains("SCAN h ") && !p.ends_with("SCAN h"),
                "{what} scans the hosts: {p}"
            );
        }
        // The snapshot page may sort the snapshots of one time, and only
        // those (migration 34): the index gives the time order.
        let unsorted = if what.contains("snapshot page") {
            // (SQLite names a sort of the order's last term so; of more
            // terms, "RIGHT PART OF ORDER BY")
            p.replace("USE TEMP B-TREE FOR LAST TERM OF ORDER BY", "")
        } else {
            p.clone()
        };
        assert!(
            !unsorted.contains("TEMP B-TREE") || what.contains("mutes"),
            "{what} sorts: {p}"
        );
    }
}

/// The maintained counters and tag counts equal a recount from the
/// source rows, and are what `expect` says.
async fn counts_agree(s: &Store, step: &str, expect: [i64; 7], tags: &[(&str, i64)]) {
    let mut c = s.read().await.unwrap();
    let kept = rm_store::fleet::counts(&mut c).await.unwrap();
    let recounted = rm_store::fleet::recount(&mut c).await.unwrap();
    assert_eq!(kept, recounted, "{step}: maintained counters drifted");
    let got = [
        kept.ok,
        kept.warning,
        kept.failed,
        kept.offline,
        kept.never,
        kept.pending,
        kept.running,
    ];
    assert_eq!(
        got, expect,
        "{step}: [ok, warning, failed, offline, never, pending, running]"
    );
    let known = rm_store::tags::known(&mut c, 500).await.unwrap();
    assert_eq!(
        known,
        rm_store::tags::recount_known(&mut c).await.unwrap(),
        "{step}: maintained tag counts drifted"
    );
    let stale: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM hosts h LEFT JOIN host_summary s ON s.host_id = h.id
         WHERE s.host_id IS NULL OR s.host_status IS NOT h.status OR s.host_name IS NOT h.name",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!(
        stale, 0,
        "{step}: every host has a summary with its status and name"
    );
    let want: Vec<(String, i64)> = tags.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
    assert_eq!(known, want, "{step}: tag counts");
    for (tag, n) in tags {
        assert_eq!(
            rm_store::fleet::tag_total(&mut c, tag).await.unwrap(),
            *n,
            "{step}: {tag}"
        );
    }
}

#[tokio::test]
async fn dashboard_counters_and_tag_counts_stay_right_through_adds_status_changes_tag_edits_and_deletes()
 {
    use rm_store::jobs::{self, Finish, JobStatus};
    use rm_store::tags;
    let (s, _dir) = store().await;
    counts_agree(&s, "empty", [0; 7], &[]).await;

    let mut tx = s.write().await.unwrap();
    for (id, name) in [("h1", "web-1"), ("h2", "db-1"), ("h3", "mail-1")] {
        hosts::insert(&mut tx, id, name, "alice", 0).await.unwrap();
    }
    tx.commit().await.unwrap();
    counts_agree(&s, "three added", [0, 0, 0, 0, 0, 3, 0], &[]).await;

    let mut tx = s.write().await.unwrap();
    let seen = hosts::Vitals::default();
    for id in ["h1", "h2"] {
        hosts::record_seen(&mut tx, id, 10, &seen).await.unwrap();
    }
    tags::set(&mut tx, "h1", &["a".into(), "b".into()])
        .await
        .unwrap();
    tags::set(&mut tx, "h2", &["b".into()]).await.unwrap();
    tags::set(&mut tx, "h3", &["c".into()]).await.unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "two online, tagged",
        [0, 0, 0, 0, 2, 1, 0],
        &[("a", 1), ("b", 2), ("c", 1)],
    )
    .await;

    // a backup runs on h1 and fails; one on h2 succeeds, one partial on h2 after
    let params = crate::backup();
    let mut tx = s.write().await.unwrap();
    for (job, host) in [("j1", "h1"), ("j2", "h2")] {
        jobs::insert(&mut tx, &crate::new_job(job, host, &params, 20))
            .await
            .unwrap();
        jobs::set_running(&mut tx, job, 21).await.unwrap();
    }
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "two running",
        [0, 0, 0, 0, 2, 1, 2],
        &[("a", 1), ("b", 2), ("c", 1)],
    )
    .await;
    let done = |at| Finish {
        finished_at: at,
        ..Finish::default()
    };
    let mut tx = s.write().await.unwrap();
    jobs::finish(&mut tx, "j1", JobStatus::Failed, &done(30))
        .await
        .unwrap();
    jobs::finish(&mut tx, "j2", JobStatus::Succeeded, &done(31))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "failed and ok",
        [1, 0, 1, 0, 0, 1, 0],
        &[("a", 1), ("b", 2), ("c", 1)],
    )
    .await;
    let mut tx = s.write().await.unwrap();
    jobs::insert(&mut tx, &crate::new_job("j3", "h2", &params, 40))
        .await
        .unwrap();
    jobs::finish(&mut tx, "j3", JobStatus::Warning, &done(41))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "partial",
        [0, 1, 1, 0, 0, 1, 0],
        &[("a", 1), ("b", 2), ("c", 1)],
    )
    .await;

    // h2 goes offline and back; h1's tags change
    let mut tx = s.write().await.unwrap();
    assert!(hosts::mark_offline(&mut tx, "h2", 50).await.unwrap());
    tags::set(&mut tx, "h1", &["b".into(), "d".into()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "offline, retagged",
        [0, 0, 1, 1, 0, 1, 0],
        &[("b", 2), ("c", 1), ("d", 1)],
    )
    .await;
    let mut tx = s.write().await.unwrap();
    hosts::record_seen(&mut tx, "h2", 60, &seen).await.unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "back online",
        [0, 1, 1, 0, 0, 1, 0],
        &[("b", 2), ("c", 1), ("d", 1)],
    )
    .await;

    // revoking h3 takes it and its tags out; deleting h1 (jobs, summary and
    // tags go by cascade) and h3 (revoked) leaves only h2
    let mut tx = s.write().await.unwrap();
    hosts::set_revoked(&mut tx, "h3", 70).await.unwrap();
    tx.commit().await.unwrap();
    counts_agree(&s, "revoked", [0, 1, 1, 0, 0, 0, 0], &[("b", 2), ("d", 1)]).await;
    let mut tx = s.write().await.unwrap();
    jobs::insert(&mut tx, &crate::new_job("j4", "h1", &params, 80))
        .await
        .unwrap();
    jobs::set_running(&mut tx, "j4", 81).await.unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "running again",
        [0, 1, 1, 0, 0, 0, 1],
        &[("b", 2), ("d", 1)],
    )
    .await;
    let mut tx = s.write().await.unwrap();
    sqlx::query("DELETE FROM hosts WHERE id IN ('h1', 'h3')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counts_agree(&s, "deleted", [0, 1, 0, 0, 0, 0, 0], &[("b", 1)]).await;

    // a host added back counts again, with its tags
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h5", "web-5", "alice", 90)
        .await
        .unwrap();
    tags::set(&mut tx, "h5", &["b".into(), "<i>x</i>".into()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counts_agree(
        &s,
        "added again",
        [0, 1, 0, 0, 0, 1, 0],
        &[("<i>x</i>", 1), ("b", 2)],
    )
    .await;
}

#[tokio::test]
async fn a_dashboard_page_walks_a_sort_index_without_sorting_every_host() {
    use rm_store::fleet::{Query, Sort, page_ids_sql};
    let (s, _dir) = store().await;
    let mut c = s.read().await.unwrap();
    for (sort, index) in [
        (Sort::Health, "host_summary_by_health"),
        (Sort::Name, "host_summary_by_name"),
        (Sort::LastBackup, "host_summary_by_last_backup"),
    ] {
        let q = Query {
            sort,
            ..Query::default()
        };
        let p = plan(&mut c, &page_ids_sql(&q)).await;
        assert!(p.contains(index), "{sort:?}: {p}");
        assert!(!p.contains("TEMP B-TREE"), "{sort:?} sorts: {p}");
        assert!(!p.contains("SCAN h"), "{sort:?} reads every host: {p}");
    }
}

/// The stored snapshot count and repository size of every host equal a
/// recount from the source rows, and each host's stored pair is what
/// `expect` says (`(host, snapshots, size)`).
async fn stats_agree(s: &Store, step: &str, expect: &[(&str, i64, Option<i64>)]) {
    let mut c = s.read().await.unwrap();
    let drift = rm_store::fleet::stats_drift(&mut c).await.unwrap();
    assert!(
        drift.is_empty(),
        "{step}: stored host stats drifted: {drift:?}"
    );
    for (host, n, size) in expect {
        let got: (i64, Option<i64>) =
            sqlx::query_as("SELECT snapshot_count, repo_size FROM host_summary WHERE host_id = ?")
                .bind(host)
                .fetch_one(&mut *c)
                .await
                .unwrap();
        assert_eq!(got, (*n, *size), "{step}: {host} (snapshots, size)");
        if let Some(row) = rm_store::fleet::row(&mut c, host).await.unwrap() {
            assert_eq!(
                (row.snapshot_count, row.repo_size),
                got,
                "{step}: {host}'s dashboard row reads the stored values"
            );
        }
    }
}

fn snap_of(repo: &str, host: &str, id: &str, time: i64) -> Snapshot {
    Snapshot {
        repo_id: repo.into(),
        hostname: host.into(),
        ..snap(id, time, "[]", r#"["/data"]"#)
    }
}

async fn measure(tx: &mut rm_store::Tx, repo: &str, ts: i64, raw: Option<i64>, total: Option<i64>) {
    rm_store::health::insert(
        &mut *tx,
        &rm_store::health::Health {
            repo_id: repo.into(),
            ts,
            raw_size: raw,
            total_size: total,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn stored_snapshot_counts_and_repository_sizes_stay_right_through_ingest_forget_detach_and_delete()
 {
    use rm_store::repos::Access;
    let (s, _dir) = store().await;
    // h1 and h2 enrolled (restic names "h1", "h2"), h3 never enrolled
    let mut tx = s.write().await.unwrap();
    for id in ["h1", "h2", "h3"] {
        hosts::insert(&mut tx, id, &format!("name-{id}"), "alice", 0)
            .await
            .unwrap();
    }
    for id in ["h1", "h2"] {
        let key = format!("N{id}");
        hosts::set_enrolled(
            &mut tx,
            id,
            &hosts::Enrollment {
                nkey: &key,
                xkey: "X",
                hostname: "box",
                os: "linux",
                arch: "x86_64",
                agent_version: "1",
            },
            1,
        )
        .await
        .unwrap();
    }
    add_repo(&mut tx, "ra").await;
    add_repo(&mut tx, "rb").await;
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "no repositories",
        &[("h1", 0, None), ("h2", 0, None), ("h3", 0, None)],
    )
    .await;

    // snapshots arrive before anyone is attached; then h1 gets both repositories, h2 one
    let mut tx = s.write().await.unwrap();
    for (repo, host, id, t) in [
        ("ra", "h1", "a1", 10),
        ("ra", "h1", "a2", 20),
        ("ra", "h2", "a3", 30),
        ("rb", "h1", "b1", 40),
        ("ra", "other", "a4", 50),
    ] {
        snapshots::upsert(&mut tx, &snap_of(repo, host, id, t))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "snapshots, nobody attached",
        &[("h1", 0, None), ("h2", 0, None)],
    )
    .await;
    let mut tx = s.write().await.unwrap();
    for (host, repo) in [("h1", "ra"), ("h1", "rb"), ("h2", "ra"), ("h3", "ra")] {
        repos::attach(&mut tx, host, repo, Access::AppendOnly, b"s", 2)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "attached",
        &[("h1", 3, None), ("h2", 1, None), ("h3", 0, None)],
    )
    .await;

    // sizes: ra measured twice (the newer counts; a measurement without
    // a size does not hide the last known one), rb by restore size only
    let mut tx = s.write().await.unwrap();
    measure(&mut tx, "ra", 100, Some(1000), Some(5000)).await;
    measure(&mut tx, "ra", 200, Some(1500), None).await;
    measure(&mut tx, "ra", 300, None, None).await;
    measure(&mut tx, "rb", 100, None, Some(70)).await;
    measure(&mut tx, "ra", 150, Some(9), None).await; // older: ignored
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "measured",
        &[
            ("h1", 3, Some(1570)),
            ("h2", 1, Some(1500)),
            ("h3", 0, Some(1500)),
        ],
    )
    .await;

    // an ingest adds one; re-sending a known snapshot adds nothing
    let mut tx = s.write().await.unwrap();
    snapshots::upsert(&mut tx, &snap_of("ra", "h2", "a5", 60))
        .await
        .unwrap();
    snapshots::upsert(&mut tx, &snap_of("ra", "h2", "a5", 60))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "ingested",
        &[("h1", 3, Some(1570)), ("h2", 2, Some(1500))],
    )
    .await;

    // forget/prune: a full listing of h1 in ra without a1 removes it
    let mut tx = s.write().await.unwrap();
    snapshots::replace_all(&mut tx, "ra", Some("h1"), &[snap_of("ra", "h1", "a2", 20)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "forgotten",
        &[("h1", 2, Some(1570)), ("h2", 2, Some(1500))],
    )
    .await;
    // and a full listing of the whole repository that keeps only a2
    let mut tx = s.write().await.unwrap();
    snapshots::replace_all(&mut tx, "ra", None, &[snap_of("ra", "h1", "a2", 20)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "pruned",
        &[("h1", 2, Some(1570)), ("h2", 0, Some(1500))],
    )
    .await;

    // detaching rb from h1 takes its snapshot and size away
    let mut tx = s.write().await.unwrap();
    repos::detach(&mut tx, "h1", "rb").await.unwrap();
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "detached",
        &[("h1", 1, Some(1500)), ("h2", 0, Some(1500))],
    )
    .await;

    // deleting h2 (cascades) leaves the others; deleting repository ra
    // (snapshots, measurements and attachments by cascade) leaves nothing
    let mut tx = s.write().await.unwrap();
    sqlx::query("DELETE FROM hosts WHERE id = 'h2'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "host deleted",
        &[("h1", 1, Some(1500)), ("h3", 0, Some(1500))],
    )
    .await;
    let mut tx = s.write().await.unwrap();
    repos::delete(&mut tx, "ra").await.unwrap();
    tx.commit().await.unwrap();
    stats_agree(
        &s,
        "repository deleted",
        &[("h1", 0, None), ("h3", 0, None)],
    )
    .await;
}

#[tokio::test]
async fn a_text_filter_matches_name_or_hostname_literally_and_its_total_agrees_with_its_pages() {
    use rm_store::fleet::{self, Query, Sort};
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    // (id, name, hostname when enrolled)
    for (id, name, hostname) in [
        ("h1", "web-1", Some("alpha.example")),
        ("h2", "web-2", Some("beta.example")),
        ("h3", "db-1", Some("web-db.example")),
        ("h4", "mail_1", None),
        ("h5", "mail-1", None),
        ("h6", "web-gone", None),
        ("h7", "100%", None),
    ] {
        hosts::insert(&mut tx, id, name, "alice", 0).await.unwrap();
        if let Some(hostname) = hostname {
            let key = format!("N{id}");
            hosts::set_enrolled(
                &mut tx,
                id,
                &hosts::Enrollment {
                    nkey: &key,
                    xkey: "X",
                    hostname,
                    os: "linux",
                    arch: "x86_64",
                    agent_version: "1",
                },
                1,
            )
            .await
            .unwrap();
        }
    }
    hosts::set_revoked(&mut tx, "h6", 2).await.unwrap();
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let counts = fleet::counts(&mut c).await.unwrap();
    for (text, want) in [
        ("web", vec!["h3", "h1", "h2"]), // h3 by hostname; revoked h6 left out
        ("WEB-1", vec!["h1"]),
        ("example", vec!["h3", "h1", "h2"]),
        ("mail_", vec!["h4"]), // `_` is a literal, not a wildcard
        ("0%", vec!["h7"]),    // so is `%`
        ("nothing", vec![]),
        ("  ", vec!["h7", "h3", "h5", "h4", "h1", "h2"]), // blank: every host
    ] {
        for limit in [50, 2] {
            let q = Query {
                text: Some(text.into()),
                sort: Sort::Name,
                limit,
                ..Query::default()
            };
            let ids = fleet::page_ids(&mut c, &q).await.unwrap();
            let cut = usize::try_from(limit).unwrap().min(want.len());
            assert_eq!(ids, want[..cut], "{text:?} page of {limit}");
            let total = fleet::total(&mut c, &q, &counts).await.unwrap();
            assert_eq!(total, i64::try_from(want.len()).unwrap(), "{text:?} total");
        }
    }
    // with a state as well: the never-backed-up enrolled hosts are offline
    let q = Query {
        text: Some("web".into()),
        health: Some("offline".into()),
        sort: Sort::Name,
        limit: 50,
        ..Query::default()
    };
    assert_eq!(
        fleet::page_ids(&mut c, &q).await.unwrap(),
        ["h3", "h1", "h2"]
    );
    assert_eq!(fleet::total(&mut c, &q, &counts).await.unwrap(), 3);
    let q = Query {
        health: Some("pending".into()),
        ..q
    };
    assert!(fleet::page_ids(&mut c, &q).await.unwrap().is_empty());
    assert_eq!(fleet::total(&mut c, &q, &counts).await.unwrap(), 0);
}

#[tokio::test]
async fn a_pages_backup_runs_in_one_query_equal_each_hosts_own_newest_first() {
    use rm_store::fleet;
    use rm_store::jobs::{self, Finish, JobStatus};
    let (s, _dir) = store().await;
    let params = crate::backup();
    let check = check_params();
    let mut tx = s.write().await.unwrap();
    for id in ["h1", "h2", "h3"] {
        hosts::insert(&mut tx, id, &format!("name-{id}"), "alice", 0)
            .await
            .unwrap();
    }
    // (job, host, created, params, finished as)
    for (job, host, at, p, end) in [
        ("j01", "h1", 5, &params, Some(JobStatus::Succeeded)), // before the window
        ("j02", "h1", 10, &params, Some(JobStatus::Failed)),
        ("j03", "h1", 20, &params, Some(JobStatus::Succeeded)),
        ("j04", "h1", 20, &params, Some(JobStatus::Warning)), // same time as j03
        ("j05", "h1", 30, &check, Some(JobStatus::Succeeded)), // not a backup
        ("j06", "h1", 40, &params, None),                     // still queued
        ("j07", "h2", 15, &params, Some(JobStatus::Failed)),
        ("j08", "h3", 50, &params, Some(JobStatus::Succeeded)), // not asked for
    ] {
        jobs::insert(&mut tx, &crate::new_job(job, host, p, at))
            .await
            .unwrap();
        if let Some(status) = end {
            let f = Finish {
                finished_at: at + 1,
                error_kind: (status == JobStatus::Failed).then(|| "repo_locked".into()),
                error: (status == JobStatus::Failed)
                    .then(|| "it said \"locked\" \\ <b>é</b>\nsecond line".into()),
                ..Finish::default()
            };
            jobs::finish(&mut tx, job, status, &f).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let ids = vec!["h1".to_owned(), "h2".to_owned(), "nobody".to_owned()];
    let many = fleet::backups_since_many(&mut c, &ids, 10).await.unwrap();
    assert_eq!(many.len(), 2, "only hosts with runs: {many:?}");
    for host in ["h1", "h2"] {
        let own = fleet::backups_since(&mut c, host, 10).await.unwrap();
        assert_eq!(many[host], own, "{host}");
    }
    let h1: Vec<&str> = many["h1"].iter().map(|r| r.id.as_str()).collect();
    assert_eq!(h1, ["j06", "j04", "j03", "j02"]);
    assert_eq!(
        many["h2"][0].error.as_deref(),
        Some("it said \"locked\" \\ <b>é</b>\nsecond line")
    );
    assert_eq!(many["h1"][0].finished_at, None);
    assert!(
        fleet::backups_since_many(&mut c, &[], 0)
            .await
            .unwrap()
            .is_empty()
    );
}

fn check_params() -> rm_bus::msg::JobParams {
    rm_bus::msg::JobParams::Check {
        read_data_subset: None,
    }
}

#[tokio::test]
async fn a_repositories_page_is_by_name_filtered_by_name_or_url_and_counts_hosts_and_matches() {
    let (s, _dir) = store().await;
    let mut tx = s.write().await.unwrap();
    for (id, url) in [
        ("zulu", "rest:http://a/"),
        ("alpha", "s3:s3.example/bucket-7"),
        ("Bravo_1", "rest:http://b/"),
        ("charlie", "rest:http://c/100%"),
    ] {
        repos::insert(
            &mut tx,
            &NewRepo {
                id,
                name: id,
                url_display: url,
                secrets_enc: b"x",
                created_by: "alice",
                now: 0,
            },
        )
        .await
        .unwrap();
    }
    for (host, access) in [
        ("h1", repos::Access::AppendOnly),
        ("h2", repos::Access::Full),
    ] {
        hosts::insert(&mut tx, host, host, "alice", 0)
            .await
            .unwrap();
        repos::attach(&mut tx, host, "alpha", access, b"x", 0)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let names = |rows: &[repos::Listed]| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    // every one, by name (SQLite's binary order: capitals first), paged
    let (rows, total) = repos::page(&mut c, "", 2, 0).await.unwrap();
    assert_eq!(
        (names(&rows), total),
        (vec!["Bravo_1".into(), "alpha".into()], 4)
    );
    assert_eq!((rows[1].hosts, rows[1].append_only_hosts), (2, 1));
    assert_eq!((rows[0].hosts, rows[0].append_only_hosts), (0, 0));
    let (rows, total) = repos::page(&mut c, "", 2, 2).await.unwrap();
    assert_eq!(
        (names(&rows), total),
        (vec!["charlie".into(), "zulu".into()], 4)
    );
    // text in the name, any case; text in the URL
    let (rows, total) = repos::page(&mut c, " BRAVO ", 50, 0).await.unwrap();
    assert_eq!((names(&rows), total), (vec!["Bravo_1".into()], 1));
    let (rows, _) = repos::page(&mut c, "bucket-7", 50, 0).await.unwrap();
    assert_eq!(names(&rows), ["alpha"]);
    // LIKE's wildcards are plain text
    let (rows, total) = repos::page(&mut c, "_", 50, 0).await.unwrap();
    assert_eq!((names(&rows), total), (vec!["Bravo_1".into()], 1));
    let (rows, _) = repos::page(&mut c, "100%", 50, 0).await.unwrap();
    assert_eq!(names(&rows), ["charlie"]);
    let (rows, total) = repos::page(&mut c, "nothing", 50, 0).await.unwrap();
    assert!(rows.is_empty() && total == 0);
    // the API's walk: after a name, with or without a filter
    let rows = repos::after(&mut c, "", None, 3).await.unwrap();
    assert_eq!(names(&rows), ["Bravo_1", "alpha", "charlie"]);
    assert_eq!(
        (rows[1].created_by.as_str(), rows[1].hosts),
        ("alice", 2),
        "the row carries what the API shows"
    );
    let rows = repos::after(&mut c, "", Some("alpha"), 3).await.unwrap();
    assert_eq!(names(&rows), ["charlie", "zulu"]);
    let rows = repos::after(&mut c, "rest:", Some("Bravo_1"), 1)
        .await
        .unwrap();
    assert_eq!(
        names(&rows),
        ["charlie"],
        "the filter holds after the cursor"
    );
    let rows = repos::after(&mut c, "", Some("zulu"), 3).await.unwrap();
    assert!(rows.is_empty(), "nothing after the last");
}
