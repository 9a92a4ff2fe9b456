//! Sessions, CSRF, the login throttle and first-run setup, in-process.

use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use rm_web::auth::{AuthSettings, Role};
use tower::ServiceExt;

use crate::harness::*;

#[tokio::test]
async fn login_sets_a_host_only_secure_cookie_and_a_new_session_id_each_time() {
    let h = H::new().await;
    h.user("alice", Role::Operator).await;
    let resp = h.try_login("alice", &password_of("alice")).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(header_of(&resp, "location").as_deref(), Some("/"));
    let set = header_of(&resp, "set-cookie").unwrap();
    for attr in [
        "__Host-rm_session=",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let first = h.session_of(session_cookie(&resp).unwrap()).await;

    // signing in again with the old cookie: a new id, and the old one is dead
    let resp = h
        .try_login_with("alice", &password_of("alice"), Some(&first))
        .await;
    assert_eq!(resp.status(), 303);
    let second = session_cookie(&resp).unwrap();
    assert_ne!(second, first.cookie);
    assert_eq!(h.me_status(&first).await, 401);
    let second = h.session_of(second).await;
    assert_eq!(h.me_status(&second).await, 200);
    assert_ne!(second.csrf, first.csrf);

    // a wrong password while signed in shows the form again with the
    // session's CSRF token, so the next try is not refused
    let resp = h
        .try_login_with("alice", "wrong-password", Some(&second))
        .await;
    assert_eq!(resp.status(), 401);
    let page = text(resp).await;
    assert!(
        page.contains(&format!("name=\"_csrf\" value=\"{}\"", second.csrf)),
        "{page}"
    );
}

async fn logout(h: &H, s: &Session, extra: &[(&str, &str)], body: &str) -> u16 {
    let mut r = req("POST", "/logout")
        .header(header::COOKIE, s.header())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    h.send(r.body(Body::from(body.to_owned())).unwrap())
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_state_changing_request_without_its_csrf_token_is_refused() {
    let h = H::new().await;
    h.user("alice", Role::Viewer).await;
    let s = h.login("alice").await;
    let origin = [("origin", ORIGIN)];
    assert_eq!(logout(&h, &s, &origin, "").await, 403, "no token");
    assert_eq!(
        logout(&h, &s, &origin, "_csrf=wrong").await,
        403,
        "wrong field"
    );
    let wrong_header = [("origin", ORIGIN), ("x-csrf-token", "wrong")];
    let with_field = format!("_csrf={}", s.csrf);
    assert_eq!(
        logout(&h, &s, &wrong_header, &with_field).await,
        403,
        "a wrong header is not rescued by the field"
    );
    assert_eq!(h.me_status(&s).await, 200, "refusals changed nothing");
    // a JSON API call with the header is fine, without it refused
    let api = |token: Option<&str>| {
        let mut r = req("POST", "/api/v1/me")
            .header(header::COOKIE, s.header())
            .header("origin", ORIGIN);
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.body(Body::empty()).unwrap()
    };
    let refused = h.send(api(None)).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json(refused).await["error"]["code"], "forbidden");
    assert_eq!(
        h.send(api(Some(&s.csrf))).await.status(),
        405,
        "passes CSRF, then 405"
    );
    // the right field logs out
    assert_eq!(logout(&h, &s, &origin, &with_field).await, 303);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_even_with_the_right_token() {
    let h = H::new().await;
    h.user("alice", Role::Viewer).await;
    let s = h.login("alice").await;
    let body = format!("_csrf={}", s.csrf);
    let evil = [("origin", "https://evil.example")];
    assert_eq!(logout(&h, &s, &evil, &body).await, 403);
    let evil_referer = [("referer", "https://evil.example/page")];
    assert_eq!(logout(&h, &s, &evil_referer, &body).await, 403);
    assert_eq!(
        logout(&h, &s, &[], &body).await,
        403,
        "neither Origin nor Referer"
    );
    assert_eq!(h.me_status(&s).await, 200);
    let same_referer = [("referer", "https://rm.test/hosts")];
    assert_eq!(logout(&h, &s, &same_referer, &body).await, 303);
    // an anonymous cross-site login post is refused too
    let r = req("POST", "/login")
        .header("origin", "https://evil.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "username=alice&password={}",
            password_of("alice")
        )))
        .unwrap();
    assert_eq!(h.send(r).await.status(), 403);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let h = H::new().await;
    let id = h.user("alice", Role::Viewer).await;
    let s = h.login("alice").await;
    let body = format!("_csrf={}", s.csrf);
    let resp = h
        .send(
            form(req("POST", "/logout"), &body)
                .header(header::COOKIE, s.header())
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(header_of(&resp, "location").as_deref(), Some("/login"));
    let cleared = header_of(&resp, "set-cookie").unwrap();
    assert!(cleared.starts_with("__Host-rm_session=;"), "{cleared}");
    // the cookie replayed is worthless: the row is gone
    assert_eq!(h.me_status(&s).await, 401);
    let mut c = h.state.store.read().await.unwrap();
    assert_eq!(
        rm_store::sessions::count_for_user(&mut c, &id)
            .await
            .unwrap(),
        0
    );
    drop(c);
    let page = h
        .send(
            req("GET", "/no-such-page?x=1")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status(), 404, "unknown page stays 404");
    let home = h
        .send(
            req("GET", "/")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(home.status(), 303);
    assert_eq!(
        header_of(&home, "location").as_deref(),
        Some("/login?next=/")
    );
}

#[tokio::test]
async fn log_out_everywhere_ends_every_session_of_the_account_only() {
    let h = H::new().await;
    h.user("alice", Role::Viewer).await;
    h.user("bob", Role::Viewer).await;
    let a1 = h.login("alice").await;
    let a2 = h.login("alice").await;
    let b = h.login("bob").await;
    let body = format!("_csrf={}&everywhere=1", a1.csrf);
    let resp = h
        .send(
            form(req("POST", "/logout"), &body)
                .header(header::COOKIE, a1.header())
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(h.me_status(&a1).await, 401);
    assert_eq!(h.me_status(&a2).await, 401);
    assert_eq!(h.me_status(&b).await, 200);
}

#[tokio::test]
async fn the_nth_failed_login_is_delayed_and_the_delay_grows() {
    let h = H::new().await;
    h.user("alice", Role::Viewer).await;
    // two free failures
    for _ in 0..2 {
        let r = h.try_login("alice", "wrong-password").await;
        assert_eq!(r.status(), 401);
        assert_eq!(header_of(&r, "retry-after"), None);
    }
    // the third brings a delay of one second ...
    let r = h.try_login("alice", "wrong-password").await;
    assert_eq!(r.status(), 401);
    assert_eq!(header_of(&r, "retry-after").as_deref(), Some("1"));
    // ... during which even the right password is not checked
    let r = h.try_login("alice", &password_of("alice")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header_of(&r, "retry-after").as_deref(), Some("1"));
    assert!(session_cookie(&r).is_none());
    assert!(text(r).await.contains("Too many failed sign-ins"));
    // once it passed, the next failure doubles it
    h.clock.advance(Duration::from_secs(1));
    let r = h.try_login("alice", "wrong-password").await;
    assert_eq!(header_of(&r, "retry-after").as_deref(), Some("2"));
    h.clock.advance(Duration::from_millis(1500));
    assert_eq!(
        h.try_login("alice", &password_of("alice")).await.status(),
        429
    );
    h.clock.advance(Duration::from_millis(500));
    // after waiting, the right password works and clears the account's count
    assert_eq!(
        h.try_login("alice", &password_of("alice")).await.status(),
        303
    );
}

/// Four failed sign-ins as `name` a minute apart: status, Retry-After and
/// page of each, with the name blanked.
async fn four_failures(name: &str) -> Vec<(u16, Option<String>, String)> {
    let h = H::new().await;
    h.user("alice", Role::Viewer).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = h.try_login(name, "wrong-password").await;
        let status = r.status().as_u16();
        let retry = header_of(&r, "retry-after");
        seen.push((status, retry, text(r).await.replace(name, "NAME")));
        h.clock.advance(Duration::from_millis(500));
    }
    seen
}

#[tokio::test]
async fn unknown_accounts_are_answered_and_throttled_like_known_ones() {
    let known = four_failures("alice").await;
    let unknown = four_failures("mallory").await;
    assert_eq!(known, unknown);
    let statuses: Vec<u16> = known.iter().map(|k| k.0).collect();
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "the fourth comes within the delay"
    );
}

#[tokio::test]
async fn the_client_address_is_throttled_across_accounts() {
    let h = H::new().await;
    h.user("alice", Role::Viewer).await;
    // one client trying many names: the address key blocks it
    for name in ["a1", "a2", "a3"] {
        h.try_login(name, "wrong-password").await;
    }
    let r = h.try_login("alice", &password_of("alice")).await;
    assert_eq!(r.status(), 429, "the address is blocked, whatever the name");
}

async fn setup_post(h: &H, code: &str, name: &str) -> axum::http::Response<Body> {
    let pw = password_of(name);
    let body = format!("code={code}&username={name}&password={pw}&password_confirm={pw}");
    h.send(
        form(req("POST", "/setup"), &body)
            .body(Body::from(body.clone()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_setup_code_works_once_and_only_while_no_account_exists() {
    let h = H::new().await;
    assert!(
        h.state
            .setup
            .offer_if_no_account(&h.state.store)
            .await
            .unwrap()
    );
    let code = h.state.setup.code().unwrap();
    let page = h
        .send(req("GET", "/setup").body(Body::empty()).unwrap())
        .await;
    assert_eq!(page.status(), 200);
    assert!(text(page).await.contains("name=\"code\""));

    let wrong = setup_post(&h, "AAAA-BBBB-CCCC-DDDD", "mallory").await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(h.user_count().await, 0);

    let ok = setup_post(&h, &code.to_lowercase(), "root").await;
    assert_eq!(ok.status(), 303);
    let s = h.session_of(session_cookie(&ok).unwrap()).await;
    let me = json(
        h.send(
            req("GET", "/api/v1/me")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(me["role"], "admin");
    assert_eq!(me["name"], "root");

    // the same code again does nothing
    let again = setup_post(&h, &code, "mallory").await;
    assert_eq!(again.status(), 303);
    assert_eq!(header_of(&again, "location").as_deref(), Some("/login"));
    assert!(session_cookie(&again).is_none());
    assert_eq!(h.user_count().await, 1);
    assert_eq!(h.state.setup.code(), None);
}

#[tokio::test]
async fn the_setup_code_is_refused_once_an_account_exists_otherwise() {
    let h = H::new().await;
    assert!(
        h.state
            .setup
            .offer_if_no_account(&h.state.store)
            .await
            .unwrap()
    );
    let code = h.state.setup.code().unwrap();
    // an admin created meanwhile by `restic-manager user add`
    h.user("admin", Role::Admin).await;
    let page = h
        .send(req("GET", "/setup").body(Body::empty()).unwrap())
        .await;
    assert_eq!(page.status(), 303);
    let r = setup_post(&h, &code, "mallory").await;
    assert_eq!(r.status(), 303);
    assert!(session_cookie(&r).is_none());
    assert_eq!(h.user_count().await, 1);
    // and a fresh web process makes no code at all
    assert!(
        !h.state
            .setup
            .offer_if_no_account(&h.state.store)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_limit() {
    let h = H::with(AuthSettings {
        session_idle: Duration::from_secs(3600),
        session_absolute: Duration::from_secs(3 * 3600),
        ..AuthSettings::default()
    })
    .await;
    h.user("alice", Role::Viewer).await;
    let idle = h.login("alice").await;
    let busy = h.login("alice").await;
    // `busy` is used every 50 minutes, `idle` never
    for _ in 0..3 {
        h.clock.advance(Duration::from_secs(50 * 60));
        assert_eq!(h.me_status(&busy).await, 200);
    }
    assert_eq!(h.me_status(&idle).await, 401, "idle past an hour");
    h.clock.advance(Duration::from_secs(30 * 60 + 1));
    assert_eq!(h.me_status(&busy).await, 401, "past three hours in all");
}

#[tokio::test]
async fn a_password_change_ends_the_sessions_from_before_it() {
    let h = H::new().await;
    let id = h.user("alice", Role::Viewer).await;
    let s = h.login("alice").await;
    let hash = rm_web::auth::password::hash("a brand new password").unwrap();
    let mut tx = h.state.store.write().await.unwrap();
    rm_store::users::set_password(&mut tx, &id, &hash, h.state.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(h.me_status(&s).await, 401);
}

#[tokio::test]
async fn bearer_tokens_act_with_their_role_and_stop_at_expiry_or_revocation() {
    let h = H::new().await;
    let id = h.user("ops", Role::Operator).await;
    let now = h.state.now();
    let token = rm_web::auth::token::create(&h.state, &id, "ci", Role::Viewer, Some(now + 60_000))
        .await
        .unwrap();
    assert!(token.secret.starts_with("rmt_"));
    let me = |secret: String| {
        req("GET", "/api/v1/me")
            .header(header::AUTHORIZATION, format!("Bearer {secret}"))
            .body(Body::empty())
            .unwrap()
    };
    let resp = h.send(me(token.secret.clone())).await;
    assert_eq!(resp.status(), 200);
    let body = json(resp).await;
    assert_eq!(body["role"], "viewer");
    assert_eq!(body["via"], "token");
    // the last use is written off the request path
    h.state.touches.idle().await;
    let mut c = h.state.store.read().await.unwrap();
    let listed = rm_store::api_tokens::list(&mut c).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(now));
    drop(c);
    // a token needs no CSRF token or Origin
    let r = h
        .send(
            req("POST", "/api/v1/me")
                .header(header::AUTHORIZATION, format!("Bearer {}", token.secret))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 405);

    h.clock.advance(Duration::from_secs(61));
    let expired = h.send(me(token.secret.clone())).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(json(expired).await["error"]["code"], "unauthorized");

    let t2 = rm_web::auth::token::create(&h.state, &id, "ci2", Role::Operator, None)
        .await
        .unwrap();
    assert_eq!(h.send(me(t2.secret.clone())).await.status(), 200);
    let mut tx = h.state.store.write().await.unwrap();
    rm_store::api_tokens::revoke(&mut tx, &t2.id, h.state.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(h.send(me(t2.secret)).await.status(), 401);
    assert_eq!(h.send(me("rmt_unknown".into())).await.status(), 401);
}

#[tokio::test]
async fn every_response_has_the_security_headers_and_a_request_id() {
    let h = H::new().await;
    for path in ["/healthz", "/login", "/api/v1/nope"] {
        let r = h.send(req("GET", path).body(Body::empty()).unwrap()).await;
        assert_eq!(
            header_of(&r, "content-security-policy").as_deref(),
            Some(rm_web::layers::CSP),
            "{path}"
        );
        assert_eq!(
            header_of(&r, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header_of(&r, "referrer-policy").as_deref(),
            Some("same-origin")
        );
        assert!(
            header_of(&r, "x-request-id").is_some_and(|v| v.len() >= 32),
            "{path}"
        );
    }
    let r = h
        .send(
            req("GET", "/healthz")
                .header("x-request-id", "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(header_of(&r, "x-request-id").as_deref(), Some("abc-123"));
}

#[tokio::test]
async fn unknown_api_routes_methods_and_huge_bodies_get_clear_errors() {
    let h = H::new().await;
    let r = h
        .send(req("GET", "/api/v1/nope").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await["error"]["code"], "not_found");
    let r = h
        .send(req("DELETE", "/api/v1/enroll").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(json(r).await["error"]["code"], "method_not_allowed");
    let huge = vec![b'a'; 2 * 1024 * 1024];
    let r = h
        .send(
            form(req("POST", "/login"), "")
                .header(header::CONTENT_LENGTH, huge.len())
                .body(Body::from(huge))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(h.user_count().await, 0);
}

#[tokio::test]
async fn readyz_reports_the_database_and_the_bus() {
    let h = H::new().await;
    let r = h
        .send(req("GET", "/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!(body["database"], "ok");
    assert_eq!(body["bus"], "ok");
    h.state.store.close().await;
    let r = h
        .send(req("GET", "/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(json(r).await["database"], "unavailable");
}

/// A failed login from TCP peer `peer`, with `X-Forwarded-For: xff`.
async fn login_via(h: &H, peer: &str, xff: &str, name: &str) -> u16 {
    let body = format!("username={name}&password=wrong-password&next=/");
    let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    let r = form(req("POST", "/login"), &body)
        .header("x-forwarded-for", xff)
        .extension(axum::extract::ConnectInfo(addr))
        .body(Body::from(body))
        .unwrap();
    h.send(r).await.status().as_u16()
}

#[tokio::test]
async fn without_a_trusted_proxy_a_forged_x_forwarded_for_does_not_escape_the_throttle() {
    let h = H::new().await;
    // one client, a new forged address and a new name every time
    let statuses = [
        login_via(&h, "192.0.2.9", "198.51.100.1", "n1").await,
        login_via(&h, "192.0.2.9", "198.51.100.2", "n2").await,
        login_via(&h, "192.0.2.9", "198.51.100.3", "n3").await,
        login_via(&h, "192.0.2.9", "198.51.100.4", "n4").await,
    ];
    assert_eq!(statuses, [401, 401, 401, 429], "keyed on the peer");
}

#[tokio::test]
async fn behind_a_trusted_proxy_two_clients_are_throttled_separately() {
    let h = H::with(AuthSettings {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..AuthSettings::default()
    })
    .await;
    let proxy = "10.0.0.5";
    // client A fails with three names until its address is blocked
    for name in ["a1", "a2", "a3"] {
        login_via(&h, proxy, "203.0.113.1", name).await;
    }
    assert_eq!(login_via(&h, proxy, "203.0.113.1", "a4").await, 429);
    // client B behind the same proxy is not (and cannot pass as a trusted hop)
    assert_eq!(login_via(&h, proxy, "203.0.113.2", "b1").await, 401);
    assert_eq!(
        login_via(&h, proxy, "203.0.113.1, 203.0.113.2", "b2").await,
        401,
        "the right-most untrusted hop is the client"
    );
    // A, forging a left-most address, is still A
    assert_eq!(
        login_via(&h, proxy, "198.51.100.77, 203.0.113.1", "a5").await,
        429
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_session_records_the_forwarded_client() {
    let h = H::with(AuthSettings {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..AuthSettings::default()
    })
    .await;
    h.user("alice", Role::Viewer).await;
    let body = format!("username=alice&password={}&next=/", password_of("alice"));
    let peer: std::net::SocketAddr = "10.0.0.5:40000".parse().unwrap();
    let r = form(req("POST", "/login"), &body)
        .header("x-forwarded-for", "198.51.100.9, 203.0.113.1")
        .extension(axum::extract::ConnectInfo(peer))
        .body(Body::from(body))
        .unwrap();
    let resp = h.send(r).await;
    assert_eq!(resp.status(), 303);
    let s = h.session_of(session_cookie(&resp).unwrap()).await;
    let mine = json(
        h.send(
            req("GET", "/api/v1/me/sessions")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await
    .to_string();
    assert!(
        mine.contains(r#""address":"203.0.113.1""#),
        "the session's address is the forwarded client: {mine}"
    );
}

/// While another process holds SQLite's write lock (the control plane of
/// a large fleet commits all the time), a crowd of requests on one token
/// whose last use is due is answered at once: the mark is written after,
/// once. Each request used to take the write lock itself, and waited.
#[tokio::test]
async fn requests_are_answered_while_another_process_holds_the_write_lock_and_the_last_use_is_written_once()
 {
    let h = H::new().await;
    let token = h.token(Role::Viewer).await;
    // counts the writes of a token's last use
    {
        let mut tx = h.state.store.write().await.unwrap();
        sqlx::query(
            "CREATE TABLE probe_touch (at INTEGER);
             CREATE TRIGGER probe_touch AFTER UPDATE OF last_used_at ON api_tokens
             BEGIN INSERT INTO probe_touch VALUES (NEW.last_used_at); END;",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    // another process's writer (its own connection to the file) holds the lock
    let other = rm_store::Store::open(&h.dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let held = other.write().await.unwrap();
    let crowd: Vec<_> = (0..50)
        .map(|_| {
            let (app, token) = (h.app.clone(), token.clone());
            tokio::spawn(async move {
                app.oneshot(
                    req("GET", "/api/v1/me")
                        .header(header::AUTHORIZATION, format!("Bearer {token}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
                .status()
                .as_u16()
            })
        })
        .collect();
    // well inside the store's 10 s busy timeout: a request waiting for
    // the lock would still be waiting
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut statuses = Vec::new();
        for t in crowd {
            statuses.push(t.await.unwrap());
        }
        statuses
    })
    .await
    .expect("every request answered while the lock is held");
    assert!(answered.iter().all(|s| *s == 200), "{answered:?}");
    held.rollback().await.unwrap();
    h.state.touches.idle().await;
    let mut c = h.state.store.read().await.unwrap();
    let writes: Vec<i64> = sqlx::query_scalar("SELECT at FROM probe_touch")
        .fetch_all(&mut *c)
        .await
        .unwrap();
    assert_eq!(writes, [T0], "the last use, written once");
}
