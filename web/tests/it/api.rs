//! The JSON API against the real control plane on a real bus: changes go
//! through the owner, reads come from SQLite, bad input gets a clear 4xx
//! naming the field and changes nothing.

use rm_web::auth::Role;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn hosts_and_jobs_go_through_the_control_plane_and_read_back() {
    let mut h = H::new().await;
    h.with_controlplane().await;
    let op = h.token(Role::Operator).await;
    let viewer = h.token(Role::Viewer).await;

    let (status, added) = h
        .api(&op, "POST", "/api/v1/hosts", Some(json!({"name": "web-1"})))
        .await;
    assert_eq!(status, 201, "{added}");
    let host_id = added["host_id"].as_str().unwrap().to_owned();
    assert!(
        added["command"].as_str().unwrap().contains("enroll"),
        "{added}"
    );

    let (status, host) = h
        .api(&viewer, "GET", &format!("/api/v1/hosts/{host_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(host["name"], "web-1");
    assert_eq!(host["status"], "pending");

    // the audit log names the operator, as the owner recorded it
    let mut c = h.state.store.read().await.unwrap();
    let audit = rm_store::audit::recent(&mut c, 10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor.starts_with("tok-operator") && e.via == "api_token"),
        "{audit:?}"
    );
    drop(c);

    // a viewer may read but not change
    let (status, err) = h
        .api(&viewer, "POST", "/api/v1/hosts", Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 403);
    assert_eq!(err["error"]["code"], "forbidden");

    // a job for a host without that repository: the owner's clear refusal
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/jobs",
            Some(json!({"host_id": host_id, "repo_id": "repo_nope", "params": {"kind": "snapshots"}})),
        )
        .await;
    assert!((400..500).contains(&status), "{status} {err}");
    assert!(err["error"]["message"].as_str().is_some());

    // an id of another kind is simply unknown
    let (status, _) = h
        .api(&viewer, "GET", &format!("/api/v1/jobs/{host_id}"), None)
        .await;
    assert_eq!(status, 404);

    // a revoked host takes no jobs, and says so with a 4xx
    let admin = h.token(Role::Admin).await;
    let (status, _) = h
        .api(
            &admin,
            "POST",
            &format!("/api/v1/hosts/{host_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/jobs",
            Some(json!({"host_id": host_id, "repo_id": "repo_x", "params": {"kind": "prune"}})),
        )
        .await;
    assert!((400..500).contains(&status), "{status} {err}");

    let (status, page) = h.api(&viewer, "GET", "/api/v1/jobs?limit=10", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["next"], json!(null));
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let h = H::new().await;
    let op = h.token(Role::Operator).await;
    let admin = h.token(Role::Admin).await;
    // missing field
    let (status, err) = h.api(&op, "POST", "/api/v1/hosts", Some(json!({}))).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "name");
    // a retention preview: waiting too long, an unknown host, a missing policy
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/hosts/nope/retention-preview",
            Some(json!({"repo_id": "r", "retention": {"keep_last": 1}, "wait_secs": 999})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("wait_secs")),
        "{err}"
    );
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/hosts/nope/retention-preview",
            Some(json!({"repo_id": "r", "retention": {"keep_last": 1}})),
        )
        .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/hosts/nope/retention-preview",
            Some(json!({"repo_id": "r"})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("retention")),
        "{err}"
    );
    let (status, _) = h
        .api(&op, "GET", "/api/v1/jobs/nope/retention-plan", None)
        .await;
    assert_eq!(status, 404);
    // wrong type
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/jobs",
            Some(json!({"host_id": 5, "repo_id": "r", "params": {"kind": "prune"}})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid");
    // a restore escaping its target, an unknown kind
    let restore = |include: &str, target: &str| {
        json!({"host_id": "h", "repo_id": "r", "params": {"kind": "restore", "snapshot": "latest",
            "include": [include], "target": {"to": "path", "path": target}}})
    };
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/jobs",
            Some(restore("/etc/../root", "/tmp/r")),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("params.include"))
    );
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/jobs",
            Some(restore("/etc", "/tmp/../etc")),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("params.target.path"))
    );
    let (status, err) = h
        .api(
            &op,
            "POST",
            "/api/v1/jobs",
            Some(json!({"host_id": "h", "repo_id": "r", "params": {"kind": "teleport"}})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("params.kind"))
    );
    // malformed JSON
    let resp = h
        .send(
            req("POST", "/api/v1/hosts")
                .header("authorization", format!("Bearer {op}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{nope"))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 400);
    // not JSON at all
    let resp = h
        .send(
            req("POST", "/api/v1/hosts")
                .header("authorization", format!("Bearer {op}"))
                .body(axum::body::Body::from("name=x"))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 415);
    // unknown ids: 404 with the error shape
    let (status, err) = h.api(&op, "GET", "/api/v1/jobs/job_nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _) = h.api(&op, "GET", "/api/v1/hosts/host_nope", None).await;
    assert_eq!(status, 404);
    // bad filters and cursors
    let (status, err) = h
        .api(&op, "GET", "/api/v1/jobs?status=exploded", None)
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("status"))
    );
    let (status, err) = h.api(&op, "GET", "/api/v1/jobs?cursor=!!", None).await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("cursor"))
    );
    let (status, err) = h.api(&op, "GET", "/api/v1/jobs?limit=100000", None).await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("limit"))
    );
    let (status, err) = h
        .api(
            &op,
            "GET",
            "/api/v1/snapshots/latest/ls?host=h&repo=r&dir=/etc/../root",
            None,
        )
        .await;
    assert_eq!((status, err["error"]["field"].clone()), (400, json!("dir")));
    // a user with a short password, a token above the admin's reach is fine, an unknown role is not
    let (status, err) = h
        .api(
            &admin,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "bob", "role": "viewer", "password": "short"})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("password"))
    );
    let (status, err) = h
        .api(
            &admin,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "god"})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("role"))
    );
    assert_eq!(h.user_count().await, 2, "nothing was created");
}

#[tokio::test]
async fn cron_preview_lists_the_next_runs_in_the_time_zone() {
    let h = H::new().await;
    let viewer = h.token(Role::Viewer).await;
    let (status, p) = h
        .api(
            &viewer,
            "GET",
            "/api/v1/cron/preview?expr=0%203%20*%20*%20*&tz=Europe/Berlin&count=3",
            None,
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let next = p["next"].as_array().unwrap();
    assert_eq!(next.len(), 3);
    for t in next {
        let t = t.as_str().unwrap();
        assert!(t.contains("T03:00:00+0"), "{t}");
    }
    let ms = p["next_ms"].as_array().unwrap();
    assert!(ms[0].as_i64().unwrap() > T0 && ms[1].as_i64() > ms[0].as_i64());
    assert_eq!(p["reading"], "every day at 03:00", "{p}");
    let (status, err) = h
        .api(
            &viewer,
            "GET",
            "/api/v1/cron/preview?expr=0%203%20*%20*%20*&tz=Mars/Olympus",
            None,
        )
        .await;
    assert_eq!((status, err["error"]["field"].clone()), (400, json!("tz")));
    let (status, err) = h
        .api(
            &viewer,
            "GET",
            "/api/v1/cron/preview?expr=61%20*%20*%20*%20*",
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("expr"))
    );
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_revocable() {
    let h = H::new().await;
    let admin = h.token(Role::Admin).await;
    let (status, created) = h
        .api(
            &admin,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "backup-script", "role": "operator", "expires_in_days": 7})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rmt_"));
    let (status, me) = h.api(&secret, "GET", "/api/v1/me", None).await;
    assert_eq!((status, me["role"].clone()), (200, json!("operator")));
    let (_, list) = h.api(&admin, "GET", "/api/v1/tokens", None).await;
    let text = list.to_string();
    assert!(
        !text.contains(&secret[4..]),
        "the secret is never listed again"
    );
    assert!(text.contains("backup-script"));
    let id = created["id"].as_str().unwrap();
    let (status, _) = h
        .api(&admin, "DELETE", &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.api(&secret, "GET", "/api/v1/me", None).await.0, 401);
    assert_eq!(
        h.api(&admin, "DELETE", &format!("/api/v1/tokens/{id}"), None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn users_are_managed_by_admins_and_the_last_admin_stays() {
    let h = H::new().await;
    let admin_id = h.user("root", Role::Admin).await;
    let s = h.login("root").await;
    let admin = rm_web::auth::token::create(&h.state, &admin_id, "t", Role::Admin, None)
        .await
        .unwrap()
        .secret;
    let (status, bob) = h
        .api(
            &admin,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "bob", "role": "viewer", "password": "bob's long password"})),
        )
        .await;
    assert_eq!(status, 201, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let (status, _) = h
        .api(
            &admin,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "bob", "role": "viewer", "password": "another long password"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, bob) = h
        .api(
            &admin,
            "PATCH",
            &format!("/api/v1/users/{bob_id}"),
            Some(json!({"role": "operator"})),
        )
        .await;
    assert_eq!((status, bob["role"].clone()), (200, json!("operator")));
    // the last admin cannot demote or delete itself
    let (status, err) = h
        .api(
            &admin,
            "PATCH",
            &format!("/api/v1/users/{admin_id}"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (409, json!("conflict"))
    );
    assert_eq!(
        h.api(&admin, "DELETE", &format!("/api/v1/users/{admin_id}"), None)
            .await
            .0,
        409
    );
    // a password change ends the account's sessions
    let (status, _) = h
        .api(
            &admin,
            "PATCH",
            &format!("/api/v1/users/{admin_id}"),
            Some(json!({"password": "a new long password"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.me_status(&s).await, 401);
    assert_eq!(
        h.api(&admin, "DELETE", &format!("/api/v1/users/{bob_id}"), None)
            .await
            .0,
        204
    );
    let (_, list) = h.api(&admin, "GET", "/api/v1/users", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_openapi_document_covers_every_api_route_of_the_table() {
    let h = H::new().await;
    let resp = h
        .send(
            req("GET", "/api/v1/openapi.json")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let doc = json(resp).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut missing = Vec::new();
    for r in rm_web::routes::table() {
        if !r.path.starts_with("/api/") {
            continue;
        }
        let method = r.method.as_str().to_lowercase();
        if doc["paths"][r.path][&method].is_null() {
            missing.push(format!("{} {}", r.method, r.path));
        }
    }
    assert!(
        missing.is_empty(),
        "missing from the OpenAPI document: {missing:?}"
    );
    // schemas come from the handlers' types
    let job = &doc["paths"]["/api/v1/jobs/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    // one job is the page's view: its list row's fields and the page's own
    let row = &doc["components"]["schemas"]["JobRow"];
    assert!(row["properties"]["status"].is_object(), "{row}");
    assert_eq!(
        job["allOf"][0]["$ref"], "#/components/schemas/JobRow",
        "{job}"
    );
    assert!(
        job["allOf"][1]["properties"]["command"].is_object(),
        "{job}"
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn metrics_need_a_token_and_report_the_fleet_and_this_process() {
    let h = H::new().await;
    let viewer = h.token(Role::Viewer).await;
    assert_eq!(h.api(&viewer, "GET", "/api/v1/me", None).await.0, 200);
    let anonymous = h
        .send(
            req("GET", "/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        anonymous.status(),
        401,
        "a scraper gets 401, not a login page"
    );
    let (status, body) = h.get_text(&viewer, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "rm_sse_clients 0",
        "rm_bus_connected 1",
        "rm_sse_clients_fell_behind 0",
        "rm_sse_events_published 0",
        "rm_live_progress_lag_seconds_count 0",
        "rm_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/me\",status=\"200\"} 1",
        // no other role runs here: said, and their families left out
        "rm_role_up{role=\"controlplane\"} 0",
        "rm_role_up{role=\"alerts\"} 0",
    ] {
        assert!(body.contains(needle), "{needle} missing in\n{body}");
    }
    assert!(!body.contains("rm_alerts_suppressed"), "{body}");
}

/// The other roles' own counters reach the scraper through the web role:
/// the alerts role's suppressed deliveries (a muted host's alert nobody was
/// told about) and the control plane's ingest and loop errors.
#[tokio::test]
async fn metrics_carry_the_control_plane_and_alerts_roles_counters() {
    let mut h = H::new().await;
    h.with_controlplane().await;
    h.with_alerts().await;
    let viewer = h.token(Role::Viewer).await;
    let (status, body) = h.get_text(&viewer, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "rm_role_up{role=\"controlplane\"} 1",
        "rm_role_up{role=\"alerts\"} 1",
        "rm_controlplane_ingest_results 0",
        "rm_controlplane_write_batches_failed 0",
        "rm_controlplane_ingest_commits_cut_by{cause=\"operator\"} 0",
        "rm_controlplane_ingest_commits_cut_by{cause=\"role\"} 0",
        "rm_controlplane_ingest_commits_cut_by{cause=\"time\"} 0",
        "rm_alerts_suppressed{reason=\"host_muted\"} 0",
        "rm_alerts_suppressed{reason=\"channel_disabled\"} 0",
        "rm_alerts_pass_errors 0",
    ] {
        assert!(body.contains(needle), "{needle} missing in\n{body}");
    }
}

#[tokio::test]
async fn the_audit_log_pages_by_cursor_and_the_reference_page_lists_the_routes() {
    let h = H::new().await;
    let admin = h.token(Role::Admin).await;
    for i in 0..3 {
        let (status, _) = h
            .api(
                &admin,
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": format!("t{i}"), "role": "viewer"})),
            )
            .await;
        assert_eq!(status, 201);
        h.clock.advance(std::time::Duration::from_millis(1));
    }
    let (status, first) = h.api(&admin, "GET", "/api/v1/audit?limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["detail"]["name"], "t2", "newest first");
    let next = first["next"].as_str().unwrap();
    let (_, second) = h
        .api(
            &admin,
            "GET",
            &format!("/api/v1/audit?limit=2&cursor={next}"),
            None,
        )
        .await;
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["detail"]["name"], "t0");
    assert_eq!(items[0]["action"], "token.create");
    assert_eq!(second["next"], json!(null));

    let (status, d) = h.api(&admin, "GET", "/api/v1/deliveries", None).await;
    assert_eq!((status, d["items"].clone()), (200, json!([])));
    let (status, err) = h
        .api(
            &admin,
            "POST",
            "/api/v1/hosts/h1/mute",
            Some(json!({"until_ms": 5})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("until_ms"))
    );

    let page = h
        .send(
            req("GET", "/api/docs")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status(), 200);
    let html = text(page).await;
    assert!(
        html.contains("/api/v1/jobs/{id}/cancel") && html.contains("operator"),
        "{html}"
    );
    assert!(!html.contains("<script"));
}

#[tokio::test]
async fn refused_results_are_listed_by_the_api_and_on_the_host_page() {
    use axum::body::Body;
    use axum::http::header;
    let mut h = H::new().await;
    h.with_controlplane().await;
    let op = h.token(Role::Operator).await;
    let viewer = h.token(Role::Viewer).await;
    let (_, added) = h
        .api(&op, "POST", "/api/v1/hosts", Some(json!({"name": "web-1"})))
        .await;
    let host = added["host_id"].as_str().unwrap().to_owned();
    // what ingest records when it refuses a result
    {
        let mut tx = h.state.store.write().await.unwrap();
        rm_store::rejected::record(
            &mut tx,
            &host,
            "sgone-1000",
            "started",
            "unknown schedule sgone (deleted while the host was offline?): this run is not kept as a job",
            br#"{"v":1,"job_id":"sgone-1000"}"#,
            1_000,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let (status, list) = h
        .api(
            &viewer,
            "GET",
            &format!("/api/v1/rejected?host={host}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["job_id"], "sgone-1000");
    assert_eq!(list[0]["phase"], "started");
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown schedule")
    );
    assert!(list[0]["excerpt"].as_str().unwrap().contains("sgone-1000"));
    let (status, all) = h.api(&viewer, "GET", "/api/v1/rejected", None).await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (status, err) = h
        .api(&viewer, "GET", "/api/v1/rejected?host=hnope", None)
        .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = h
        .api(&viewer, "GET", "/api/v1/rejected?limit=0", None)
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "limit");

    // the host page shows it: when, job, reason
    h.user("vera", Role::Viewer).await;
    let s = h.login("vera").await;
    let resp = h
        .send(
            req("GET", &format!("/hosts/{host}"))
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let page = text(resp).await;
    assert!(page.contains("Refused results"), "{page}");
    assert!(page.contains("sgone-1000"));
    assert!(page.contains("deleted while the host was offline"));
}

/// A forget or prune schedule of an append-only host on a repository with
/// no maintenance host never runs (nothing there may delete): the host
/// page and its JSON twin say so and where to fix it, instead of showing
/// it "enabled" with a next run that never happens.
#[tokio::test]
async fn a_forget_schedule_that_cannot_run_without_a_maintenance_host_says_so() {
    use rm_store::repos::{Access, NewRepo};
    let h = H::new().await;
    let viewer = h.token(Role::Viewer).await;
    {
        let mut tx = h.state.store.write().await.unwrap();
        for (id, name) in [("h1", "web-1"), ("h2", "maint-1")] {
            rm_store::hosts::insert(&mut tx, id, name, "t", 1)
                .await
                .unwrap();
        }
        rm_store::repos::insert(
            &mut tx,
            &NewRepo {
                id: "r1",
                name: "offsite",
                url_display: "rest:https://backup.example/offsite",
                secrets_enc: b"x",
                created_by: "t",
                now: 1,
            },
        )
        .await
        .unwrap();
        rm_store::repos::attach(&mut tx, "h1", "r1", Access::AppendOnly, b"x", 1)
            .await
            .unwrap();
        rm_store::repos::attach(&mut tx, "h2", "r1", Access::Full, b"x", 1)
            .await
            .unwrap();
        for (id, kind) in [("s-forget", "forget"), ("s-backup", "backup")] {
            rm_store::schedules::upsert(
                &mut tx,
                &rm_store::schedules::Schedule {
                    id: id.into(),
                    host_id: "h1".into(),
                    repo_id: "r1".into(),
                    kind: kind.into(),
                    cron: "0 3 * * *".into(),
                    timezone: "UTC".into(),
                    params_json: "{}".into(),
                    enabled: true,
                    jitter_secs: 0,
                    timeout_secs: 3600,
                    grace_secs: 0,
                    exec_host_id: "h1".into(),
                    config_version: 1,
                    created_at: 1,
                    updated_at: 1,
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let blocked = |host: &serde_json::Value, id: &str| {
        host["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("schedule {id} listed: {host}"))["blocked"]
            .clone()
    };
    let (status, host) = h.api(&viewer, "GET", "/api/v1/hosts/h1", None).await;
    assert_eq!(status, 200, "{host}");
    let why = blocked(&host, "s-forget");
    assert!(
        why.as_str()
            .is_some_and(|w| w.contains("append-only") && w.contains("no maintenance host")),
        "the forget schedule says why it cannot run: {why}"
    );
    assert_eq!(blocked(&host, "s-backup"), serde_json::Value::Null);
    let (status, page) = h.get_text(&viewer, "/hosts/h1").await;
    assert_eq!(status, 200);
    assert!(page.contains("cannot run"), "the host page says so");
    assert!(
        page.contains("href=\"/repositories/r1\""),
        "and links the fix"
    );

    // a maintenance host with full access runs it: no longer blocked
    {
        let mut tx = h.state.store.write().await.unwrap();
        rm_store::repos::set_maintenance_host(&mut tx, "r1", Some("h2"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let (_, host) = h.api(&viewer, "GET", "/api/v1/hosts/h1", None).await;
    assert_eq!(blocked(&host, "s-forget"), serde_json::Value::Null);
}

/// The `server-timing` header gives the handler's time and the
/// authentication's before it and, for a change forwarded to its owner,
/// the part of the handler's time spent waiting for the owner's answer
/// over the bus (no more than the whole) and of that the owner's own time
/// as its reply states it; a read from SQLite names no bus wait.
#[tokio::test]
async fn server_timing_names_auth_and_of_a_forwarded_change_the_bus_wait_and_the_owners_share() {
    let mut h = H::new().await;
    h.with_controlplane().await;
    let op = h.token(Role::Operator).await;
    let timing = |resp: &axum::http::Response<axum::body::Body>| -> Vec<(String, f64)> {
        header_of(resp, "server-timing")
            .unwrap_or_default()
            .split(',')
            .filter_map(|m| {
                let (name, dur) = m.trim().split_once(";dur=")?;
                Some((name.to_owned(), dur.parse().ok()?))
            })
            .collect()
    };
    let add = req("POST", "/api/v1/hosts")
        .header("authorization", format!("Bearer {op}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"name": "timed-1"}).to_string(),
        ))
        .unwrap();
    let resp = h.send(add).await;
    assert_eq!(resp.status(), 201);
    let t = timing(&resp);
    assert_eq!(
        t.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["app", "auth", "bus", "owner"],
        "{t:?}"
    );
    let (app, auth, bus, owner) = (t[0].1, t[1].1, t[2].1, t[3].1);
    assert!(auth > 0.0, "{t:?}");
    assert!(bus > 0.0 && bus <= app, "{t:?}");
    // the control plane states its own time in its reply: a real add takes
    // it some microseconds, and never more than the web role waited
    assert!(owner > 0.0 && owner <= bus, "{t:?}");

    let list = req("GET", "/api/v1/hosts")
        .header("authorization", format!("Bearer {op}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = h.send(list).await;
    assert_eq!(resp.status(), 200);
    let t = timing(&resp);
    assert_eq!(
        t.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["app", "auth"],
        "{t:?}"
    );
}
