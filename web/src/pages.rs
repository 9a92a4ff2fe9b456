//! The front door's HTML: `GET/POST /login`, `POST /logout` (one session,
//! or every session of the account with `everywhere=1`), `GET/POST /setup`
//! (the first admin, with the console's one-time code). Templates are
//! askama, rendered to strings.

use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use crate::AppState;
use crate::auth::accounts::{self, AddError};
use crate::auth::{MaybePrincipal, Principal, Role, page, password, session, throttle};

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?k=v&...` of the pairs whose value is not empty, values
/// percent-encoded, in the order given; empty when none is (a page's own
/// links: filters, then the page or cursor).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `next` if it is a path on this site, else `/` (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "rendering a page failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "This page could not be shown.",
            )
        }
    }
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again shortly",
        "The database is not answering.",
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    next: String,
    username: String,
    csrf: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

pub(crate) async fn login_form(
    State(state): State<AppState>,
    MaybePrincipal(p): MaybePrincipal,
    Query(q): Query<NextQuery>,
) -> Response {
    // a fresh install has nobody to sign in: send the newcomer to setup
    if let Ok(false) = has_account(&state).await {
        return Redirect::to("/setup").into_response();
    }
    render(
        StatusCode::OK,
        &LoginPage {
            error: None,
            next: safe_next(q.next.as_deref()),
            username: String::new(),
            csrf: p.and_then(|p| p.csrf),
        },
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The client address ([`client`](crate::auth::client)), as text.
fn client_addr(
    state: &AppState,
    ci: Option<&Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Option<String> {
    let peer = ci.map(|c| c.0.0.ip());
    crate::auth::client::client_ip(&state.auth.trusted_proxies, peer, headers)
        .map(|ip| ip.to_string())
}

/// Whole seconds, rounded up, at least 1.
fn retry_secs(d: std::time::Duration) -> u64 {
    d.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

fn with_retry_after(mut resp: Response, d: std::time::Duration) -> Response {
    if let Ok(v) = HeaderValue::from_str(&retry_secs(d).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub(crate) async fn login(
    State(state): State<AppState>,
    MaybePrincipal(current): MaybePrincipal,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let address = client_addr(&state, ci.as_ref(), &headers);
    let keys = throttle::keys(&form.username, address.as_deref().unwrap_or("unknown"));
    // a browser still signed in posts the form again with its CSRF token
    let csrf = current.and_then(|p| p.csrf);
    let again = |status: StatusCode, message: String| {
        render(
            status,
            &LoginPage {
                error: Some(message),
                next: next.clone(),
                username: form.username.clone(),
                csrf: csrf.clone(),
            },
        )
    };
    if form.username.is_empty() || form.password.is_empty() {
        return again(
            StatusCode::BAD_REQUEST,
            "Enter your name and password.".to_owned(),
        );
    }
    match throttle::blocked_for(&state, &keys).await {
        Ok(Some(wait)) => {
            let resp = again(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed sign-ins. Try again in {} seconds.",
                    retry_secs(wait)
                ),
            );
            return with_retry_after(resp, wait);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "reading the login throttle failed");
            return unavailable();
        }
    }
    let found = match state.store.read().await {
        Ok(mut conn) => rm_store::users::by_name(&mut conn, &form.username).await,
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "looking up an account failed");
            return unavailable();
        }
    };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    let ok = password::verify_async(form.password.clone(), hash).await;
    let user = user.filter(|u| ok && !u.disabled);
    let Some(user) = user else {
        let delay = match throttle::failed(&state, &keys).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "recording a failed login failed");
                return unavailable();
            }
        };
        tracing::info!(username = %form.username, "failed sign-in");
        let resp = again(
            StatusCode::UNAUTHORIZED,
            "Wrong name or password.".to_owned(),
        );
        return if delay.is_zero() {
            resp
        } else {
            with_retry_after(resp, delay)
        };
    };
    if let Err(e) = throttle::succeeded(&state, &keys[0]).await {
        tracing::warn!(error = %e, "clearing the login throttle failed");
    }
    sign_in(
        &state,
        jar,
        &user.id,
        &next,
        &user.username,
        address.as_deref(),
    )
    .await
}

/// Ends any session the browser still holds and starts a new one.
async fn sign_in(
    state: &AppState,
    jar: CookieJar,
    user_id: &str,
    next: &str,
    name: &str,
    address: Option<&str>,
) -> Response {
    if let Some(old) = jar.get(session::COOKIE)
        && let Err(e) = session::end(state, old.value()).await
    {
        tracing::warn!(error = %e, "ending the previous session failed");
    }
    match session::create(state, user_id, address).await {
        Ok(s) => {
            tracing::info!(user = %name, "signed in");
            (jar.add(session::cookie(s.cookie_value)), Redirect::to(next)).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "creating a session failed");
            unavailable()
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    everywhere: Option<String>,
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    jar: CookieJar,
    Form(form): Form<LogoutForm>,
) -> Response {
    let result = if form
        .everywhere
        .as_deref()
        .is_some_and(|v| !v.is_empty() && v != "0")
    {
        session::end_all(&state, &principal.user_id)
            .await
            .map(|_| ())
    } else if let Some(c) = jar.get(session::COOKIE) {
        session::end(&state, c.value()).await
    } else {
        Ok(())
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "ending a session failed");
        return unavailable();
    }
    tracing::info!(user = %principal.name, "signed out");
    (jar.remove(session::removal()), Redirect::to("/login")).into_response()
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    error: Option<String>,
    username: String,
    min_len: usize,
}

async fn has_account(state: &AppState) -> rm_store::Result<bool> {
    let mut conn = state.store.read().await?;
    Ok(rm_store::users::count(&mut conn).await? > 0)
}

pub(crate) async fn setup_form(State(state): State<AppState>) -> Response {
    match has_account(&state).await {
        Ok(true) => Redirect::to("/login").into_response(),
        Ok(false) => render(
            StatusCode::OK,
            &SetupPage {
                error: None,
                username: String::new(),
                min_len: password::MIN_LEN,
            },
        ),
        Err(_) => unavailable(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SetupForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

pub(crate) async fn setup(
    State(state): State<AppState>,
    jar: CookieJar,
    Form(form): Form<SetupForm>,
) -> Response {
    let again = |status: StatusCode, message: &str| {
        render(
            status,
            &SetupPage {
                error: Some(message.to_owned()),
                username: form.username.clone(),
                min_len: password::MIN_LEN,
            },
        )
    };
    match has_account(&state).await {
        Ok(true) => return Redirect::to("/login").into_response(),
        Ok(false) => {}
        Err(_) => return unavailable(),
    }
    if !state.setup.matches(&form.code) {
        tracing::warn!("first-run setup refused: wrong setup code");
        return again(
            StatusCode::FORBIDDEN,
            "That is not the setup code printed on the server's console.",
        );
    }
    if form.password != form.password_confirm {
        return again(StatusCode::BAD_REQUEST, "The two passwords differ.");
    }
    let added = accounts::add(
        &state.store,
        state.now(),
        &form.username,
        Role::Admin,
        &form.password,
        true,
    )
    .await;
    match added {
        Ok(id) => {
            state.setup.consume();
            tracing::info!(user = %form.username, "first administrator created");
            sign_in(&state, jar, &id, "/", &form.username, None).await
        }
        Err(AddError::Invalid { message, .. }) => again(StatusCode::BAD_REQUEST, &message),
        Err(AddError::NotFirst) => Redirect::to("/login").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "first-run setup failed");
            unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_kept_only_for_paths_on_this_site() {
        assert_eq!(safe_next(Some("/hosts/h1?x=1")), "/hosts/h1?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn escaping_and_encoding() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        assert_eq!(percent_encode("/a b?c=d&e"), "/a%20b%3Fc%3Dd%26e");
    }
}
