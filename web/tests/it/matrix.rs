//! The authorization matrix, generated from the route table: every route ×
//! {anonymous, viewer, operator, admin, expired token, revoked token} gets
//! the status its entry promises. A second check keeps the table the only
//! place routes are registered, so a route cannot escape the matrix.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, header};
use rm_web::auth::Role;
use rm_web::routes::{Access, table};

use crate::harness::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Session(Role),
    ExpiredToken,
    RevokedToken,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Refused: not signed in.
    Unauthenticated,
    /// Refused: role too low.
    Forbidden,
    /// Reached the handler.
    Allowed,
}

fn outcome(path: &str, resp: &Response<Body>) -> Outcome {
    let status = resp.status().as_u16();
    let location = header_of(resp, "location").unwrap_or_default();
    if rm_web::routes::is_api(path) {
        match status {
            401 => Outcome::Unauthenticated,
            403 => Outcome::Forbidden,
            _ => Outcome::Allowed,
        }
    } else {
        match status {
            303 if location.starts_with("/login?next=") => Outcome::Unauthenticated,
            401 => Outcome::Unauthenticated,
            403 => Outcome::Forbidden,
            _ => Outcome::Allowed,
        }
    }
}

fn expected(access: Access, who: Who) -> Outcome {
    match (access, who) {
        (Access::Public, _) => Outcome::Allowed,
        (Access::Min(_), Who::Anonymous | Who::ExpiredToken | Who::RevokedToken) => {
            Outcome::Unauthenticated
        }
        (Access::Min(min), Who::Session(role)) if role < min => Outcome::Forbidden,
        (Access::Min(_), Who::Session(_)) => Outcome::Allowed,
    }
}

/// A concrete path for a route pattern (`{id}` segments filled).
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "x_unknown".to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_answers_every_kind_of_caller_as_its_table_entry_says() {
    let h = H::new().await;
    for role in Role::ALL {
        h.user(role.as_str(), role).await;
    }
    let admin_id = h.user("tokens", Role::Admin).await;
    let now = h.state.now();
    let expired =
        rm_web::auth::token::create(&h.state, &admin_id, "old", Role::Admin, Some(now + 1))
            .await
            .unwrap();
    let revoked = rm_web::auth::token::create(&h.state, &admin_id, "gone", Role::Admin, None)
        .await
        .unwrap();
    {
        let mut tx = h.state.store.write().await.unwrap();
        rm_store::api_tokens::revoke(&mut tx, &revoked.id, now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    h.clock.advance(Duration::from_secs(1));

    let routes = table();
    assert!(!routes.is_empty());
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in &routes {
        let whos = [
            Who::Anonymous,
            Who::Session(Role::Viewer),
            Who::Session(Role::Operator),
            Who::Session(Role::Admin),
            Who::ExpiredToken,
            Who::RevokedToken,
        ];
        for who in whos {
            // a fresh session per request: some routes (logout) end it
            let session = match who {
                Who::Session(role) => Some(h.login(role.as_str()).await),
                _ => None,
            };
            let path = concrete(route.path);
            let mut r = req(route.method.as_str(), &path)
                .header(header::ORIGIN, ORIGIN)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if let Some(s) = &session {
                r = r
                    .header(header::COOKIE, s.header())
                    .header("x-csrf-token", s.csrf.clone());
            }
            match who {
                Who::ExpiredToken => {
                    r = r.header(header::AUTHORIZATION, format!("Bearer {}", expired.secret));
                }
                Who::RevokedToken => {
                    r = r.header(header::AUTHORIZATION, format!("Bearer {}", revoked.secret));
                }
                _ => {}
            }
            let resp = h.send(r.body(Body::empty()).unwrap()).await;
            let got = outcome(&path, &resp);
            let want = expected(route.access, who);
            let status = resp.status().as_u16();
            let unrouted = if matches!(status, 404 | 405) {
                let body = text(resp).await;
                body.contains("no such route")
                    || body.contains("method_not_allowed")
                    || body.contains("There is no such page")
            } else {
                false
            };
            // 503: the owning role is not running in this test; still reached
            if unrouted || (status >= 500 && status != 503) {
                failures.push(format!(
                    "{route:?} as {who:?}: status {status} (not routed, or a server error)"
                ));
            } else if got != want {
                failures.push(format!(
                    "{route:?} as {who:?}: {got:?} (status {status}), expected {want:?}"
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every `.rs` file under `dir`.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn routes_are_registered_only_from_the_table() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut offenders = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let is_table = f.ends_with("routes.rs") && f.parent() == Some(src.as_path());
        for needle in [
            ".route(",
            ".nest(",
            ".merge(",
            ".nest_service(",
            ".route_service(",
        ] {
            let n = text.matches(needle).count();
            let allowed = usize::from(is_table && needle == ".route(");
            if n > allowed {
                offenders.push(format!("{}: {n} × {needle}", f.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes registered outside routes::table(), so the authorization matrix cannot see them:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_table_has_no_duplicate_entries() {
    let mut seen = std::collections::HashSet::new();
    for r in table() {
        assert!(seen.insert((r.method.clone(), r.path)), "{r:?} twice");
    }
}
