//! Renders pages over a seeded store: what the templates show, escaping,
//! and the views they share with the API. With `RM_UI_PREVIEW_DIR` set,
//! the rendered pages are also written there (with the stylesheet) for a
//! look in a browser.

use askama::Template;

use super::*;
use crate::views;

const NOW: i64 = 1_796_126_400_000; // 2026-12-01T12:00Z

async fn seeded() -> (tempfile::TempDir, rm_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = rm_store::Store::open(&dir.path().join("rm.db"))
        .await
        .unwrap();
    let spec = rm_store::seed::Spec {
        hosts: 40,
        now_ms: NOW,
        ..rm_store::seed::Spec::default()
    };
    rm_store::seed::fleet(&store, &spec).await.unwrap();
    let mut c = store.pool().acquire().await.unwrap();
    // A host whose name is markup, and one with a backup running now.
    sqlx::query("UPDATE hosts SET name = '<script>alert(1)</script>' WHERE id = 'seed-h000011'")
        .execute(&mut *c)
        .await
        .unwrap();
    sqlx::query("INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, status, timeout_secs, created_by, created_at, started_at)
                 SELECT 'run-1', id, id, NULL, 'backup', '{\"kind\":\"backup\",\"paths\":[\"/srv\"]}', 'operator', 'running', 3600, 'ops', ?, ? FROM hosts WHERE id = 'seed-h000012'")
        .bind(NOW - 60_000)
        .bind(NOW - 50_000)
        .execute(&mut *c)
        .await
        .unwrap();
    sqlx::query("UPDATE host_summary SET running_jobs = 1 WHERE host_id = 'seed-h000012'")
        .execute(&mut *c)
        .await
        .unwrap();
    sqlx::query("UPDATE hosts SET status = 'online' WHERE id = 'seed-h000012'")
        .execute(&mut *c)
        .await
        .unwrap();
    drop(c);
    (dir, store)
}

fn layout(nav: &'static str) -> Layout {
    Layout {
        user: "ops".into(),
        role: "admin",
        csrf: "csrf-token".into(),
        nav,
        open_alerts: 3,
        topics: "hosts,jobs",
        event_id: Some(7),
        event_host: None,
        event_job: None,
        event_repo: None,
        event_progress: None,
        asset_version: assets::version(),
        cp_banner: false,
    }
}

fn preview(name: &str, html: &str) {
    if let Ok(dir) = std::env::var("RM_UI_PREVIEW_DIR") {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir.join("static")).unwrap();
        std::fs::write(
            dir.join("static/app.css"),
            include_str!("../../static/app.css"),
        )
        .unwrap();
        let html = html.replace("href=\"/static/app.css", "href=\"static/app.css");
        std::fs::write(dir.join(format!("{name}.html")), html).unwrap();
    }
}

#[tokio::test]
async fn dashboard_lists_the_fleet_worst_first_with_counters_and_escapes_names() {
    let (_dir, store) = seeded().await;
    let mut conn = store.read().await.unwrap();
    let fleet = views::fleet::load(&mut conn, &views::fleet::FleetFilter::default(), NOW)
        .await
        .unwrap();
    let c = &fleet.counters;
    assert_eq!(
        c.total, fleet.total,
        "every non-revoked host is counted once"
    );
    assert!(
        c.ok > 0 && c.total < 40,
        "seed has healthy hosts and a revoked one: {c:?}"
    );
    // Worst first: no ok host before a failed or offline one.
    let first_ok = fleet.hosts.iter().position(|h| h.health == "ok").unwrap();
    assert!(fleet.hosts[first_ok..].iter().all(|h| h.health == "ok"));
    assert!(fleet.hosts.iter().all(|h| h.days.len() == 30));
    let now = fleet.now;
    let page = dashboard::DashboardPage {
        layout: layout("dashboard"),
        fleet,
        can_operate: true,
        now,
        states: dashboard::STATES,
    };
    let html = page.render().unwrap();
    preview("dashboard", &html);
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert!(!html.contains("<script>alert(1)</script>"));
    assert!(
        html.contains("data-progress-bar=\"run-1\""),
        "the running backup shows a progress bar"
    );
    assert!(html.contains("backing up"));
}

#[tokio::test]
async fn dashboard_filter_by_state_counts_and_pages_agree() {
    let (_dir, store) = seeded().await;
    let mut conn = store.read().await.unwrap();
    let all = views::fleet::load(&mut conn, &views::fleet::FleetFilter::default(), NOW)
        .await
        .unwrap();
    for (state, expected) in [
        ("ok", all.counters.ok),
        ("failed", all.counters.failed),
        ("offline", all.counters.offline),
        ("pending", all.counters.pending),
    ] {
        let f = views::fleet::FleetFilter {
            state: state.into(),
            ..Default::default()
        };
        let page = views::fleet::load(&mut conn, &f, NOW).await.unwrap();
        assert_eq!(page.total, expected, "{state}");
        assert!(page.hosts.iter().all(|h| h.health == state), "{state}");
    }
    let f = views::fleet::FleetFilter {
        q: "host-0001".into(),
        ..Default::default()
    };
    let page = views::fleet::load(&mut conn, &f, NOW).await.unwrap();
    let expected: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE (name LIKE '%host-0001%' OR hostname LIKE '%host-0001%') AND status != 'revoked'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(expected > 0);
    assert_eq!(page.total, expected);
    assert!(page.hosts.iter().all(|h| {
        h.name.contains("host-0001")
            || h.hostname
                .as_deref()
                .is_some_and(|n| n.contains("host-0001"))
    }));
    let f = views::fleet::FleetFilter {
        q: "%".into(),
        ..Default::default()
    };
    assert_eq!(
        views::fleet::load(&mut conn, &f, NOW).await.unwrap().total,
        0,
        "LIKE wildcards are literal"
    );
}

#[tokio::test]
async fn host_page_shows_posture_snapshots_schedules_and_jobs() {
    let (_dir, store) = seeded().await;
    let mut conn = store.read().await.unwrap();
    let host = views::host::load(&mut conn, "seed-h000020", NOW)
        .await
        .unwrap();
    assert_eq!(host.repositories.len(), 1);
    assert!(host.posture.append_only);
    assert_eq!(host.schedules.len(), 1);
    assert!(host.schedules[0].reading.starts_with("every day at 0"));
    assert!(host.schedules[0].blocked.is_none(), "a backup always runs");
    // a forget that cannot run (no maintenance host) says so in its row
    let mut host = host;
    let mut forget = host.schedules[0].clone();
    forget.kind = "forget".into();
    forget.blocked = Some("Cannot run: no maintenance host.".into());
    host.schedules.push(forget);
    let mutes = views::alert::host_mutes(&mut conn, "seed-h000020", NOW)
        .await
        .unwrap();
    let page = pages::HostPage {
        layout: layout("hosts"),
        host,
        mutes,
        can_operate: true,
        can_admin: true,
        tags_input: String::new(),
        tags_error: None,
        forms: Default::default(),
    };
    let html = page.render().unwrap();
    preview("host", &html);
    assert!(html.contains("append-only"));
    assert!(html.contains(
        r#"<span class="status s-fail" title="Cannot run: no maintenance host.">cannot run</span>"#
    ));
    assert!(
        html.contains("action=\"/alerts/mute\"") && html.contains("Maintenance windows"),
        "the host page mutes and holds the maintenance windows"
    );
    assert!(matches!(
        views::host::load(&mut conn, "nope", NOW).await,
        Err(rm_store::StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn job_pages_show_result_error_advice_and_command_line() {
    let (_dir, store) = seeded().await;
    let mut conn = store.read().await.unwrap();
    let failed: String = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'failed' LIMIT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let job = views::job::load(&mut conn, &failed, NOW).await.unwrap();
    assert!(
        job.advice
            .as_deref()
            .unwrap()
            .contains("edit the repository's credentials")
    );
    let cmd = job.command.clone().unwrap();
    assert!(
        cmd.starts_with("restic --repo=rest:https://backup-0.example.internal/fleet backup --json"),
        "{cmd}"
    );
    let html = pages::JobPage {
        layout: layout("jobs"),
        job,
        logs: Vec::new(),
        can_operate: true,
    }
    .render()
    .unwrap();
    preview("job-failed", &html);
    let job = views::job::load(&mut conn, "run-1", NOW).await.unwrap();
    let html = pages::JobPage {
        layout: layout("jobs"),
        job,
        logs: Vec::new(),
        can_operate: true,
    }
    .render()
    .unwrap();
    preview("job-running", &html);
    assert!(html.contains("data-progress-bar=\"run-1\""));

    let f = views::job::JobFilter {
        status: "failed".into(),
        ..Default::default()
    };
    let page = views::job::list(&mut conn, &f, NOW).await.unwrap();
    assert!(!page.jobs.is_empty() && page.jobs.iter().all(|j| j.status == "failed"));
    let all = views::job::list(&mut conn, &views::job::JobFilter::default(), NOW)
        .await
        .unwrap();
    let cursor = all.next_cursor.clone().unwrap();
    let next = views::job::list(
        &mut conn,
        &views::job::JobFilter {
            before: cursor,
            ..Default::default()
        },
        NOW,
    )
    .await
    .unwrap();
    assert!(next.jobs[0].created_at <= all.jobs.last().unwrap().created_at);
    assert!(
        next.jobs
            .iter()
            .all(|j| !all.jobs.iter().any(|a| a.id == j.id)),
        "pages do not overlap"
    );
}

#[test]
fn templates_carry_no_inline_script_or_style_that_the_csp_would_block() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display();
        assert!(
            !text.contains(" style=\""),
            "{name}: a style attribute (CSP style-src 'self')"
        );
        assert!(!text.contains("<style"), "{name}: an inline stylesheet");
        let scripts_ok = text.matches("<script").count() == text.matches("<script src=").count();
        assert!(
            scripts_ok,
            "{name}: an inline script (CSP script-src 'self')"
        );
        for handler in [
            " onclick=",
            " onchange=",
            " onsubmit=",
            " onload=",
            " oninput=",
        ] {
            assert!(
                !text.contains(handler),
                "{name}: an inline event handler {handler}"
            );
        }
    }
}

#[tokio::test]
async fn alerts_and_repositories_pages_show_what_needs_attention() {
    let (_dir, store) = seeded().await;
    let mut conn = store.read().await.unwrap();
    let open = rm_store::listing::alerts(
        &mut conn,
        &rm_store::listing::AlertFilter {
            state: Some("open"),
            ..Default::default()
        },
        100,
    )
    .await
    .unwrap();
    assert!(!open.is_empty(), "the seed raises alerts for failing hosts");
    let names: std::collections::HashMap<String, String> = rm_store::hosts::names(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let alerts: Vec<crate::ui::alerts::AlertRow> = open
        .into_iter()
        .map(|a| crate::ui::alerts::AlertRow {
            host_name: names[&a.host_id].clone(),
            alert: a,
        })
        .collect();
    let first = alerts[0].alert.message.clone();
    let html = crate::ui::alerts::AlertsPage {
        layout: layout("alerts"),
        alerts,
        filter: crate::ui::alerts::AlertFilter::default(),
        hosts: Vec::new(),
        host_label: String::new(),
        kinds: crate::api::alerts::ALERT_KINDS,
        severities: crate::api::alerts::SEVERITIES,
        states: crate::ui::alerts::STATES,
        mutes: None,
        last_resolved_at: None,
        can_operate: true,
        now: NOW,
        forms: Default::default(),
    }
    .render()
    .unwrap();
    preview("alerts", &html);
    assert!(html.contains(&first));
    assert!(html.contains(">Acknowledge</button>") && html.contains(">Resolve</button>"));
    let repo = rm_store::repos::list(&mut conn).await.unwrap().remove(0);
    let html = lists::ReposPage {
        layout: layout("repositories"),
        repos: vec![lists::RepoRow {
            health: rm_store::health::latest(&mut conn, &repo.id).await.ok(),
            id: repo.id,
            name: repo.name.clone(),
            url: repo.url_display,
            status: repo.status,
            status_detail: None,
            maintenance_host: None,
            hosts: 3,
            append_only_hosts: 3,
        }],
        can_operate: true,
        now: NOW,
        filter: Default::default(),
        total: 1,
        page: 1,
    }
    .render()
    .unwrap();
    preview("repositories", &html);
    assert!(html.contains(&repo.name) && html.contains("forget and prune cannot run"));
    assert!(html.contains("2.4×"), "the deduplication ratio is shown");
}

fn restore_page(step: &'static str, q: &str) -> restore::RestorePage {
    restore::RestorePage {
        layout: layout("hosts"),
        now: NOW,
        step,
        w: restore::Wizard::parse(q),
        host_name: "web-1".into(),
        repo_name: "offsite".into(),
        short_id: "abcd1234".into(),
        choices: vec![],
        snaps: vec![],
        older: None,
        entries: vec![],
        total: 0,
        page: 1,
        pages: 1,
        crumbs: vec![],
        targets: vec!["db-1".into(), "web-1".into()],
        target_label: "db-1".into(),
        more_hosts: None,
        host_list_filtered: false,
        errors: run::Errors::new(),
        failure: None,
    }
}

#[test]
fn restore_browse_keeps_selections_of_other_folders_and_escapes_file_names() {
    let mut p = restore_page(
        "browse",
        "host=h1&repo=r1&snapshot=abcd1234&dir=/srv&sel=/srv/a.txt&sel=/etc/hosts",
    );
    let entry = |name: &str, kind: &str| rm_bus::msg::LsEntry {
        name: name.into(),
        kind: kind.into(),
        path: format!("/srv/{name}"),
        size: Some(2048),
        mtime: Some("2026-11-30T12:00:00.5+00:00".into()),
    };
    p.entries = vec![
        entry("www", "dir"),
        entry("a.txt", "file"),
        entry("<b>x", "file"),
    ];
    p.total = 450;
    p.pages = 3;
    p.crumbs = listing::crumbs("/srv");
    let html = p.render().unwrap();
    preview("restore-browse", &html);
    assert!(html.contains(r#"value="/srv/a.txt" id="sel-2" aria-label="Select a.txt" checked"#));
    assert!(html.contains(r#"<input type="hidden" name="sel" value="/etc/hosts">"#));
    assert!(!html.contains(r#"type="hidden" name="sel" value="/srv/a.txt""#));
    assert!(html.contains("&#60;b&#62;x") && !html.contains("<b>x"));
    assert!(html.contains("2.0 KiB") && html.contains("2026-11-30 12:00:00"));
    assert!(html.contains("Entries 1–3 of 450") && html.contains("page=2"));
    // A folder link carries the selection on.
    assert!(html.contains("dir=%2Fsrv%2Fwww&#38;sel=%2Fsrv%2Fa.txt&#38;sel=%2Fetc%2Fhosts"));
}

#[test]
fn restore_target_shows_the_summary_the_overwrite_warning_and_refused_input() {
    let mut p = restore_page(
        "target",
        "host=h1&repo=r1&snapshot=abcd1234&sel=/srv/a.txt&target_path=tmp/x&target_host=h2",
    );
    p.errors
        .insert("target_path", "give an absolute path".into());
    let html = p.render().unwrap();
    preview("restore-target", &html);
    assert!(html.contains(
        r#"value="tmp/x" aria-describedby="target_path-hint target_path-error" aria-invalid="true""#
    ));
    assert!(html.contains(r#"id="target_path-error">give an absolute path"#));
    assert!(
        html.contains(r#"id="target_host" name="target_host" value="db-1""#),
        "the target host's search box shows its name"
    );
    assert!(html.contains(r#"<datalist id="host-names"><option value="db-1"></option>"#));
    assert!(html.contains("Files at the original location are overwritten."));
    assert!(html.contains("I understand this overwrites <code>/srv/a.txt</code> on web-1."));
    assert!(html.contains(r#"<input type="hidden" name="sel" value="/srv/a.txt">"#));
}

/// Readable results (issue 11): a diff job's page lists the changed
/// paths as a table with the added / removed / changed filter and totals
/// with units, not raw JSON, and pages a long list; markup in a path is text.
#[tokio::test]
async fn a_diff_job_page_shows_changed_paths_as_a_paged_table() {
    let (_dir, store) = seeded().await;
    let mut changes: Vec<serde_json::Value> = (0..150)
        .map(|i| serde_json::json!({"path": format!("/srv/new-{i:03}"), "modifier": "+"}))
        .collect();
    changes.push(serde_json::json!({"path": "/srv/<b>gone</b>", "modifier": "-"}));
    let summary = serde_json::json!({"changed_files": 0, "added": {"files": 150, "dirs": 0, "bytes": 1_572_864},
        "removed": {"files": 1, "dirs": 0, "bytes": 10}, "changes": changes, "changes_total": 151});
    let mut c = store.write().await.unwrap();
    sqlx::query("INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, status, timeout_secs, created_by, created_at, started_at, finished_at, summary_json)
                 SELECT 'diff-1', id, id, NULL, 'diff', '{\"kind\":\"diff\",\"from\":\"a\",\"to\":\"b\"}', 'operator', 'succeeded', 3600, 'ops', ?, ?, ?, ? FROM hosts WHERE id = 'seed-h000001'")
        .bind(NOW - 60_000)
        .bind(NOW - 50_000)
        .bind(NOW - 40_000)
        .bind(summary.to_string())
        .execute(&mut *c)
        .await
        .unwrap();
    c.commit().await.unwrap();
    let mut conn = store.read().await.unwrap();
    let render = |job| {
        pages::JobPage {
            layout: layout("jobs"),
            job,
            logs: Vec::new(),
            can_operate: true,
        }
        .render()
        .unwrap()
    };
    let html = render(views::job::load(&mut conn, "diff-1", NOW).await.unwrap());
    preview("job-diff", &html);
    assert!(html.contains("150 files, 0 directories, 1.5 MiB"));
    assert!(html.contains("Page 1 of 2") && html.contains("?page=2#result"));
    assert!(html.contains("/srv/new-000") && !html.contains("/srv/new-120"));
    assert!(html.contains("added (150)") && html.contains("removed (1)"));
    assert!(!html.contains("\"modifier\""), "no raw JSON");
    let q = views::job::ResultQuery {
        page: 1,
        change: "removed".into(),
    };
    let html = render(
        views::job::load_page(&mut conn, "diff-1", NOW, &q)
            .await
            .unwrap(),
    );
    assert!(html.contains("/srv/&#60;b&#62;gone&#60;/b&#62;") && !html.contains("/srv/new-000"));
}

#[tokio::test]
async fn the_strip_marks_the_days_a_mute_or_a_maintenance_window_covered() {
    const DAY: i64 = 86_400_000;
    let (_dir, store) = seeded().await;
    let host = "seed-h000020";
    let today = NOW - NOW.rem_euclid(DAY);
    let load = || async {
        let mut conn = store.read().await.unwrap();
        views::host::load(&mut conn, host, NOW)
            .await
            .unwrap()
            .summary
            .unwrap()
    };
    assert!(
        load().await.days.iter().all(|d| !d.muted),
        "nothing muted yet"
    );
    {
        let mut tx = store.write().await.unwrap();
        // Muted from 22:00 five days ago to 02:00 four days ago.
        rm_store::mutes::set_mute(
            &mut tx,
            &rm_store::mutes::MuteWindow {
                id: "m1".into(),
                host_id: host.into(),
                starts_at: today - 5 * DAY + 22 * 3_600_000,
                until: today - 4 * DAY + 2 * 3_600_000,
                reason: None,
                created_by: "ops".into(),
                created_at: today - 5 * DAY,
                ended_by: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let row = load().await;
    let muted: Vec<usize> = (0..30).filter(|&i| row.days[i].muted).collect();
    assert_eq!(muted, [24, 25], "the two days the mute touched");
    assert!(
        row.strip_label().contains("2 muted"),
        "{}",
        row.strip_label()
    );
    let page = pages::HostPage {
        layout: layout("hosts"),
        mutes: {
            let mut conn = store.read().await.unwrap();
            views::alert::host_mutes(&mut conn, host, NOW)
                .await
                .unwrap()
        },
        host: {
            let mut conn = store.read().await.unwrap();
            views::host::load(&mut conn, host, NOW).await.unwrap()
        },
        can_operate: true,
        can_admin: true,
        tags_input: String::new(),
        tags_error: None,
        forms: Default::default(),
    };
    assert_eq!(page.render().unwrap().matches("muted-day").count(), 2);

    // A nightly maintenance window created two days ago marks the days
    // since (not before: it did not exist then).
    {
        let mut tx = store.write().await.unwrap();
        rm_store::mutes::add_maintenance(
            &mut tx,
            &rm_store::mutes::MaintenanceWindow {
                id: "w1".into(),
                host_id: host.into(),
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
                duration_secs: 3600,
                reason: Some("nightly dump".into()),
                created_by: "ops".into(),
                created_at: today - 2 * DAY,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let row = load().await;
    let muted: Vec<usize> = (0..30).filter(|&i| row.days[i].muted).collect();
    assert_eq!(
        muted,
        [24, 25, 27, 28, 29],
        "the mute's days and the window's"
    );
    let mut conn = store.read().await.unwrap();
    let mutes = views::alert::host_mutes(&mut conn, host, NOW)
        .await
        .unwrap();
    assert!(
        mutes.muted.is_none(),
        "12:00 is outside the 03:00–04:00 window"
    );
    assert_eq!(mutes.windows.len(), 1);
    assert_eq!(mutes.windows[0].next_at, Some(today + DAY + 3 * 3_600_000));
    let inside = views::alert::host_mutes(&mut conn, host, today + 3 * 3_600_000 + 60_000)
        .await
        .unwrap();
    assert_eq!(
        inside.muted.map(|m| (m.by, m.until)),
        Some(("maintenance".to_owned(), today + 4 * 3_600_000))
    );
}
