//! The settings pages through the real router: what a viewer is refused,
//! the last admin kept, a password change ending the other sessions, an
//! API token shown once and revoked, the audit page's filters, and a
//! channel test of unsaved values saving nothing (with the real alerts role).

use axum::body::Body;
use axum::http::header;
use rm_web::auth::Role;

use crate::harness::{H, Session, form, header_of, req, text};

/// POSTs a form as `s`; status and body.
pub(crate) async fn post(h: &H, s: &Session, path: &str, fields: &str) -> (u16, String) {
    let body = if fields.is_empty() {
        format!("_csrf={}", s.csrf)
    } else {
        format!("_csrf={}&{fields}", s.csrf)
    };
    let resp = h
        .send(
            form(req("POST", path), &body)
                .header(header::COOKIE, s.header())
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    (resp.status().as_u16(), text(resp).await)
}

pub(crate) async fn get(h: &H, s: &Session, path: &str) -> (u16, String) {
    let resp = h
        .send(
            req("GET", path)
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    (resp.status().as_u16(), text(resp).await)
}

#[tokio::test]
async fn a_viewer_is_refused_every_settings_page_and_action_by_the_server() {
    let h = H::new().await;
    h.user("boss", Role::Admin).await;
    let boss_id = {
        let mut c = h.state.store.read().await.unwrap();
        rm_store::users::by_name(&mut c, "boss")
            .await
            .unwrap()
            .unwrap()
            .0
            .id
    };
    h.user("vic", Role::Viewer).await;
    let vic = h.login("vic").await;
    for page in [
        "/settings/notifications",
        "/settings/notifications/c1",
        "/settings/users",
        "/settings/tokens",
        "/settings/audit",
    ] {
        assert_eq!(get(&h, &vic, page).await.0, 403, "GET {page}");
    }
    for (path, fields) in [
        (
            "/settings/notifications",
            "name=x&kind=webhook&url=https://h.example&action=save".to_owned(),
        ),
        (
            "/settings/notifications",
            "name=x&kind=webhook&url=https://h.example&action=test".to_owned(),
        ),
        ("/settings/notifications/c1", "action=save".to_owned()),
        ("/settings/notifications/c1/enabled", "enabled=0".to_owned()),
        ("/settings/notifications/c1/delete", "confirm=1".to_owned()),
        (
            "/settings/users",
            "name=mallory&role=admin&password=long-enough-password".to_owned(),
        ),
        (
            &format!("/settings/users/{boss_id}") as &str,
            "role=viewer".to_owned(),
        ),
        (
            "/settings/tokens",
            "name=t&role=viewer&expires_in_days=1".to_owned(),
        ),
        ("/settings/tokens/tok_x/revoke", "confirm=1".to_owned()),
    ] {
        assert_eq!(post(&h, &vic, path, &fields).await.0, 403, "POST {path}");
    }
    let (status, overview) = get(&h, &vic, "/settings").await;
    assert_eq!(status, 200);
    assert!(
        !overview.contains("/settings/users"),
        "a viewer's settings page links to no admin page"
    );
    assert_eq!(
        get(&h, &vic, "/account").await.0,
        200,
        "everyone has an account page"
    );
    let mut c = h.state.store.read().await.unwrap();
    assert_eq!(
        rm_store::users::count(&mut c).await.unwrap(),
        2,
        "nobody was added"
    );
    let boss = rm_store::users::get(&mut c, &boss_id).await.unwrap();
    assert_eq!(boss.role, "admin", "nobody was demoted");
}

#[tokio::test]
async fn the_users_page_keeps_the_last_admin_and_says_why() {
    let h = H::new().await;
    let id = h.user("root", Role::Admin).await;
    let s = h.login("root").await;
    let (status, page) = post(&h, &s, &format!("/settings/users/{id}"), "role=operator").await;
    assert_eq!(status, 409);
    assert!(
        page.contains("last enabled admin"),
        "the page says why: {page}"
    );
    let (status, _) = post(&h, &s, &format!("/settings/users/{id}"), "disabled=1").await;
    assert_eq!(status, 409, "nor disabled");
    // with a second admin, demoting the first works
    let (status, _) = post(
        &h,
        &s,
        "/settings/users",
        "name=second&role=admin&password=second-admin-password",
    )
    .await;
    assert_eq!(status, 303);
    let (status, _) = post(&h, &s, &format!("/settings/users/{id}"), "role=operator").await;
    assert_eq!(status, 303);
    let mut c = h.state.store.read().await.unwrap();
    assert_eq!(
        rm_store::users::get(&mut c, &id).await.unwrap().role,
        "operator"
    );
    // a bad new account keeps its name and names the field
    drop(c);
    let (status, page) = post(
        &h,
        &s,
        "/settings/users",
        "name=shorty&role=viewer&password=short",
    )
    .await;
    assert_eq!(
        status, 403,
        "root is an operator now: refused by the route table"
    );
    assert!(!page.contains("shorty"));
}

#[tokio::test]
async fn changing_your_password_ends_your_other_sessions_and_keeps_this_one() {
    let h = H::new().await;
    h.user("ann", Role::Viewer).await;
    let here = h.login("ann").await;
    let elsewhere = h.login("ann").await;
    let (status, page) = get(&h, &here, "/account").await;
    assert_eq!(status, 200);
    assert_eq!(
        page.matches("this browser").count(),
        1,
        "this session is marked once"
    );
    let (status, page) = post(
        &h,
        &here,
        "/account/password",
        "current=wrong&new=ann-new-long-password&confirm=ann-new-long-password",
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("not your current password"), "{page}");
    assert_eq!(
        h.me_status(&elsewhere).await,
        200,
        "a refused change ends nothing"
    );
    let current = crate::harness::password_of("ann");
    let (status, _) = post(
        &h,
        &here,
        "/account/password",
        &format!("current={current}&new=ann-new-long-password&confirm=ann-new-long-password"),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(h.me_status(&here).await, 200, "this session stays");
    assert_eq!(h.me_status(&elsewhere).await, 401, "the other one ended");
    assert_eq!(
        h.try_login("ann", "ann-new-long-password").await.status(),
        303,
        "the new password works"
    );
}

#[tokio::test]
async fn ending_one_of_your_sessions_from_the_account_page_signs_that_browser_out() {
    let h = H::new().await;
    h.user("ann", Role::Viewer).await;
    let here = h.login("ann").await;
    let other = h.login("ann").await;
    let other_id = rm_web::auth::session::id_of(&other.cookie);
    let (status, _) = post(&h, &here, &format!("/account/sessions/{other_id}/end"), "").await;
    assert_eq!(status, 303);
    assert_eq!(h.me_status(&other).await, 401);
    assert_eq!(h.me_status(&here).await, 200);
    // someone else's session is not yours to end
    h.user("bob", Role::Viewer).await;
    let bob = h.login("bob").await;
    let bob_id = rm_web::auth::session::id_of(&bob.cookie);
    let (status, _) = post(&h, &here, &format!("/account/sessions/{bob_id}/end"), "").await;
    assert_eq!(status, 404);
    assert_eq!(h.me_status(&bob).await, 200);
}

async fn token_status(h: &H, token: &str) -> u16 {
    h.send(
        req("GET", "/api/v1/me")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn a_token_from_the_tokens_page_is_shown_once_works_and_is_refused_after_revoking() {
    let h = H::new().await;
    h.user("root", Role::Admin).await;
    let s = h.login("root").await;
    let (status, page) = post(
        &h,
        &s,
        "/settings/tokens",
        "name=ci&role=viewer&expires_in_days=7",
    )
    .await;
    assert_eq!(status, 201);
    let start = page.find("rmt_").expect("the secret is on the answer page");
    let secret: String = page[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    assert_eq!(token_status(&h, &secret).await, 200);
    let (_, list) = get(&h, &s, "/settings/tokens").await;
    assert!(
        !list.contains(&secret),
        "the list never shows the secret again"
    );
    assert!(list.contains(&secret[..12]), "but shows its prefix");
    let id = {
        let mut c = h.state.store.read().await.unwrap();
        rm_store::api_tokens::list(&mut c).await.unwrap()[0]
            .id
            .clone()
    };
    let (status, _) = post(&h, &s, &format!("/settings/tokens/{id}/revoke"), "").await;
    assert_eq!(status, 400, "revoking needs the confirmation");
    assert_eq!(token_status(&h, &secret).await, 200);
    let (status, _) = post(
        &h,
        &s,
        &format!("/settings/tokens/{id}/revoke"),
        "confirm=1",
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(token_status(&h, &secret).await, 401);
    // the audit page shows both, filtered by the action family
    let (status, audit) = get(&h, &s, "/settings/audit?action=token.").await;
    assert_eq!(status, 200);
    assert!(
        audit.contains("token.create") && audit.contains("token.revoke"),
        "{audit}"
    );
    let (_, users_only) = get(&h, &s, "/settings/audit?action=user.").await;
    assert!(
        !users_only.contains(">token.create<"),
        "no token entry among the user entries"
    );
    let (status, bad) = get(&h, &s, "/settings/audit?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(bad.contains("since"), "the bad field is named");
}

#[tokio::test]
async fn testing_unsaved_channel_values_saves_nothing_and_shows_the_failure() {
    let mut h = H::new().await;
    h.with_alerts().await;
    h.user("root", Role::Admin).await;
    let s = h.login("root").await;
    let fields = "name=hook&kind=webhook&enabled=1&url=http%3A%2F%2F127.0.0.1%3A9%2Fin&auth=none&action=test";
    let (status, page) = post(&h, &s, "/settings/notifications", fields).await;
    // no notifier runs in this test: the real path answers "no responder"
    assert!(page.contains("test-fail"), "a red cross: {status} {page}");
    assert!(
        page.contains("http://127.0.0.1:9/in"),
        "the values are kept in the form"
    );
    let mut c = h.state.store.read().await.unwrap();
    assert!(
        rm_store::channels::list(&mut c).await.unwrap().is_empty(),
        "testing saved nothing"
    );
    drop(c);
    let (status, page) = post(
        &h,
        &s,
        "/settings/notifications",
        "name=hook&kind=webhook&url=nope&action=save",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        page.contains("id=\"url-error\""),
        "the URL field is named: {page}"
    );
    let (status, _) = post(
        &h,
        &s,
        "/settings/notifications",
        &fields.replace("action=test", "action=save"),
    )
    .await;
    assert_eq!(status, 303);
    let mut c = h.state.store.read().await.unwrap();
    let saved = rm_store::channels::list(&mut c).await.unwrap();
    assert_eq!(saved.len(), 1);
    drop(c);
    let (_, shown) = get(&h, &s, &format!("/settings/notifications/{}", saved[0].id)).await;
    assert!(
        !shown.contains("/in"),
        "the saved URL's path is never shown again"
    );
    let resp = h
        .send(
            req("GET", "/settings/audit?target_kind=channel")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        header_of(&resp, "content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(text(resp).await.contains("channel.create"));
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_and_tokens_and_never_yourself_or_the_last_admin() {
    let h = H::new().await;
    let root = h.user("root", Role::Admin).await;
    let s = h.login("root").await;
    let olga = h.user("olga", Role::Operator).await;
    let olga_session = h.login("olga").await;
    let olga_token = rm_web::auth::token::create(&h.state, &olga, "ci", Role::Operator, None)
        .await
        .unwrap()
        .secret;
    assert_eq!(h.me_status(&olga_session).await, 200);
    assert_eq!(
        h.api(&olga_token, "GET", "/api/v1/hosts", None).await.0,
        200
    );

    // The page asks for a confirmation naming the user.
    let (_, page) = get(&h, &s, "/settings/users").await;
    assert!(
        page.contains(&format!("action=\"/settings/users/{olga}/delete\""))
            && page.contains("Delete the user olga"),
        "{page}"
    );
    assert!(
        !page.contains(&format!("/settings/users/{root}/delete")),
        "no delete button for yourself"
    );
    // Without the confirmation nothing happens.
    let (status, page) = post(&h, &s, &format!("/settings/users/{olga}/delete"), "").await;
    assert_eq!(status, 400);
    assert!(page.contains("tick the box"), "{page}");
    assert_eq!(h.me_status(&olga_session).await, 200);

    let (status, _) = post(
        &h,
        &s,
        &format!("/settings/users/{olga}/delete"),
        "confirm=1",
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(h.me_status(&olga_session).await, 401, "her session ended");
    assert_eq!(
        h.api(&olga_token, "GET", "/api/v1/hosts", None).await.0,
        401,
        "her token ended"
    );
    let mut c = h.state.store.read().await.unwrap();
    let audit = rm_store::audit::recent(&mut c, 10).await.unwrap();
    let entry = audit
        .iter()
        .find(|e| e.action == "user.delete")
        .expect("audited");
    assert_eq!(entry.actor, "root");
    assert!(entry.detail_json.as_deref().unwrap_or("").contains("olga"));
    drop(c);

    // Yourself: refused, on the page and by the API.
    let (status, page) = post(
        &h,
        &s,
        &format!("/settings/users/{root}/delete"),
        "confirm=1",
    )
    .await;
    assert_eq!(status, 409);
    assert!(page.contains("your own account"), "{page}");
    let second = h.user("second", Role::Admin).await;
    let token = rm_web::auth::token::create(&h.state, &root, "t", Role::Admin, None)
        .await
        .unwrap()
        .secret;
    let (status, err) = h
        .api(&token, "DELETE", &format!("/api/v1/users/{root}"), None)
        .await;
    assert_eq!(status, 409, "{err}");
    // Another admin may go while an enabled admin remains (a disabled
    // admin counts for nothing).
    let (status, _) = h
        .api(
            &token,
            "PATCH",
            &format!("/api/v1/users/{second}"),
            Some(serde_json::json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .api(&token, "DELETE", &format!("/api/v1/users/{second}"), None)
        .await;
    assert_eq!(status, 204, "a disabled admin may go");
    let mut c = h.state.store.read().await.unwrap();
    assert_eq!(rm_store::users::count(&mut c).await.unwrap(), 1);
}

#[tokio::test]
async fn back_up_now_while_a_control_plane_backup_runs_says_so_and_queues_no_second_run() {
    let h = H::new().await;
    h.user("boss", Role::Admin).await;
    let boss = h.login("boss").await;
    let token = h.token(Role::Admin).await;
    let started = crate::harness::T0 - 90_000;
    let run = {
        let mut tx = h.state.store.write().await.unwrap();
        rm_store::cpbackup::set_repo(&mut tx, Some("r1"), "boss", started)
            .await
            .unwrap();
        let id = rm_store::cpbackup::run_started(&mut tx, "r1", "/stage", started)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    };

    // the page and its JSON twin say a run is going, not when one is due
    let (status, page) = get(&h, &boss, "/settings/controlplane-backup").await;
    assert_eq!(status, 200);
    let next = page.split("id=\"cp-next-run\">").nth(1).unwrap();
    let next = next.split("</dd>").next().unwrap();
    assert!(
        next.contains("running") && next.contains("1 m ago"),
        "{next}"
    );
    let (status, body) = h.get_text(&token, "/api/v1/controlplane-backup").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["running_since"], started, "{v}");

    // the button: that run is the one asked for
    let resp = h
        .send(
            form(req("POST", "/settings/controlplane-backup/run"), "")
                .header(header::COOKIE, boss.header())
                .body(Body::from(format!("_csrf={}", boss.csrf)))
                .unwrap(),
        )
        .await;
    assert_eq!(
        header_of(&resp, "location").as_deref(),
        Some("/settings/controlplane-backup?done=running")
    );
    let (_, page) = get(&h, &boss, "/settings/controlplane-backup?done=running").await;
    assert!(page.contains("already running, so no second one was queued"));
    let requested = {
        let mut c = h.state.store.read().await.unwrap();
        rm_store::cpbackup::settings(&mut c)
            .await
            .unwrap()
            .unwrap()
            .run_requested_at
    };
    assert_eq!(requested, None, "nothing queued behind the running run");

    // once it ended the button queues a run, and the page says when
    {
        let mut tx = h.state.store.write().await.unwrap();
        rm_store::cpbackup::run_finished(&mut tx, run, None, crate::harness::T0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let resp = h
        .send(
            form(req("POST", "/settings/controlplane-backup/run"), "")
                .header(header::COOKIE, boss.header())
                .body(Body::from(format!("_csrf={}", boss.csrf)))
                .unwrap(),
        )
        .await;
    assert_eq!(
        header_of(&resp, "location").as_deref(),
        Some("/settings/controlplane-backup?done=run")
    );
    let (_, page) = get(&h, &boss, "/settings/controlplane-backup").await;
    let next = page.split("id=\"cp-next-run\">").nth(1).unwrap();
    assert!(next.starts_with("due now"), "{next}");
    let (_, body) = h.get_text(&token, "/api/v1/controlplane-backup").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["running_since"].is_null(), "{v}");
}

/// The control-plane backup's repository field takes a name or an id
/// (as the host fields do), refuses one no repository has under the field
/// with nothing saved, and suggests the first 20 repositories by name,
/// never every one: an installation may have thousands.
#[tokio::test]
async fn the_control_plane_backup_takes_a_repository_by_name_or_id_and_lists_only_a_few() {
    let h = H::new().await;
    h.user("boss", Role::Admin).await;
    let boss = h.login("boss").await;
    {
        let mut tx = h.state.store.write().await.unwrap();
        for i in 0..25 {
            let (id, name) = (format!("r{i:02}"), format!("repo-{i:02}"));
            rm_store::repos::insert(
                &mut tx,
                &rm_store::repos::NewRepo {
                    id: &id,
                    name: &name,
                    url_display: "rest:https://backup.example/x",
                    secrets_enc: b"",
                    created_by: "boss",
                    now: crate::harness::T0,
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let post = |body: &str| {
        form(req("POST", "/settings/controlplane-backup"), "")
            .header(header::COOKIE, boss.header())
            .body(Body::from(format!("_csrf={}&{body}", boss.csrf)))
            .unwrap()
    };
    let saved = || async {
        let mut c = h.state.store.read().await.unwrap();
        rm_store::cpbackup::settings(&mut c)
            .await
            .unwrap()
            .and_then(|s| s.repo_id)
    };

    // by name
    let resp = h.send(post("repo=repo-07&run_at=03%3A00")).await;
    assert_eq!(
        header_of(&resp, "location").as_deref(),
        Some("/settings/controlplane-backup?done=repo")
    );
    assert_eq!(saved().await.as_deref(), Some("r07"));
    let (_, page) = get(&h, &boss, "/settings/controlplane-backup").await;
    assert!(
        page.contains(r#"id="cp-repo" name="repo" value="repo-07""#),
        "the field shows the saved repository's name"
    );
    let suggested = page
        .split(r#"<datalist id="repo-names">"#)
        .nth(1)
        .unwrap()
        .split("</datalist>")
        .next()
        .unwrap();
    assert_eq!(suggested.matches("<option").count(), 20, "{suggested}");
    assert!(
        suggested.contains(r#"value="repo-00""#) && !suggested.contains("repo-20"),
        "the first 20 by name: {suggested}"
    );

    // by id, under the field's old name too
    let resp = h.send(post("repo_id=r12&run_at=03%3A00")).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(saved().await.as_deref(), Some("r12"));

    // a name no repository has: refused under the field, nothing saved
    let resp = h.send(post("repo=repo-99&run_at=04%3A00")).await;
    assert_eq!(resp.status(), 422);
    let page = text(resp).await;
    let error = page
        .split(r#"<span class="error" id="cp-repo-error">"#)
        .nth(1)
        .unwrap()
        .split("</span>")
        .next()
        .unwrap();
    assert!(
        error.starts_with("Repository:") && error.contains("repo-99"),
        "{error}"
    );
    assert!(page.contains(r#"value="repo-99""#), "the input is kept");
    assert!(page.contains(r#"aria-invalid="true""#));
    assert_eq!(saved().await.as_deref(), Some("r12"), "nothing saved");

    // empty: the daily backup off
    let resp = h.send(post("repo=&run_at=03%3A00")).await;
    assert_eq!(
        header_of(&resp, "location").as_deref(),
        Some("/settings/controlplane-backup?done=cleared")
    );
    assert_eq!(saved().await, None);
}
