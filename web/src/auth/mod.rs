//! Who is asking, and may they: accounts, sessions, API tokens, the login
//! throttle, CSRF protection and the extractors handlers use.
//!
//! ## How a request is authenticated
//!
//! [`authenticate`] runs (as a router layer) before every handler. It
//! resolves an `Authorization: Bearer rmt_...` token, or else the
//! `__Host-rm_session` cookie, into a [`Principal`] and stores an [`Authn`]
//! in the request's extensions. Every route's minimum role comes from the
//! route table (`routes::table`) and is enforced by [`guard`] before the
//! handler runs; handlers take [`Principal`] or one of [`RequireViewer`],
//! [`RequireOperator`], [`RequireAdmin`] (each derefs to [`Principal`]) as
//! an extractor to learn who is asking.
//!
//! ## CSRF: nothing to do in a handler
//!
//! [`authenticate`] also protects every state-changing request (any method
//! but GET, HEAD, OPTIONS) before any handler sees it:
//! - an `Origin` header (or, without one, a `Referer`) naming another
//!   origin than this server's is refused; a cookie-authenticated request
//!   with neither is refused too;
//! - a cookie-authenticated request must carry its session's CSRF token:
//!   the header `X-CSRF-Token` (for `fetch()`), or for an
//!   `application/x-www-form-urlencoded` body the form field `_csrf`.
//!
//! So an HTML form only needs `<input type="hidden" name="_csrf"
//! value="{{ csrf }}">`, with `csrf` taken from [`Principal::csrf`], and a
//! script sends the same value as `X-CSRF-Token`. Bearer-token requests
//! need neither (browsers never attach them by themselves).
//!
//! Refusals are JSON (`{"error": {...}}`, 401/403) under `/api/` and for
//! `/metrics`; HTML pages
//! answer 303 to `/login?next=<path>` when not signed in and a 403 page when
//! the role is too low.

use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

pub mod accounts;
pub mod client;
mod csrf;
pub mod password;
pub mod session;
pub mod setup;
pub mod throttle;
pub mod token;
pub mod touch;

/// Operator roles, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Run jobs, restore, edit schedules and repositories, acknowledge alerts.
    Operator,
    /// Everything, including users, tokens and settings.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    /// The account name (for a token: `name (token T)`), as audited.
    pub name: String,
    pub role: Role,
    pub via: Via,
    /// The session's CSRF token (sessions only), for forms and scripts.
    pub csrf: Option<String>,
    /// The session's stored id (the SHA-256 of its cookie; sessions only),
    /// so the account page can mark "this session".
    pub session: Option<String>,
    /// The client address of this request ([`client`]), for the audit log.
    pub address: Option<String>,
}

impl Principal {
    /// The identity owning roles audit.
    pub fn actor(&self) -> rm_bus::msg::Actor {
        rm_bus::msg::Actor {
            name: self.name.clone(),
            via: match self.via {
                Via::Session => rm_bus::msg::ActorVia::Session,
                Via::Token => rm_bus::msg::ActorVia::ApiToken,
            },
            address: self.address.clone(),
        }
    }
}

/// The outcome of authentication, in every request's extensions.
#[derive(Debug, Clone)]
pub enum Authn {
    Anonymous,
    Principal(Principal),
    /// A bearer token was sent but refused (unknown, expired, revoked).
    BadToken(token::Refusal),
}

impl Authn {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Self::Principal(p) => Some(p),
            _ => None,
        }
    }
}

/// Session and throttle settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after login, used or not.
    pub session_absolute: Duration,
    pub throttle: throttle::ThrottlePolicy,
    /// Reverse proxies whose `X-Forwarded-For` names the client (see
    /// [`client`]); empty: the TCP peer is the client.
    pub trusted_proxies: Vec<client::Cidr>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(12 * 3600),
            session_absolute: Duration::from_secs(7 * 24 * 3600),
            throttle: throttle::ThrottlePolicy::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// `n` random bytes, URL-safe base64 without padding.
pub(crate) fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    data_encoding::BASE64URL_NOPAD.encode(&b)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(s.as_bytes()))
}

/// Why a request may not proceed.
#[derive(Debug, Clone)]
pub enum Denied {
    /// Not signed in (or a refused token).
    Unauthenticated,
    /// Signed in, but the role is too low.
    Forbidden { need: Role, have: Role },
    /// A CSRF or origin check failed.
    Csrf(&'static str),
    /// The database did not answer.
    Unavailable,
}

/// The refusal for `path`: JSON under `/api/`, pages otherwise.
pub fn deny(path_and_query: &str, method: &Method, d: &Denied) -> Response {
    let api = crate::routes::is_api(path_and_query);
    match (api, d) {
        (true, Denied::Unauthenticated) => ApiError::unauthorized().into_response(),
        (true, Denied::Forbidden { need, have }) => {
            ApiError::forbidden(format!("this needs the {need} role; you have {have}"))
                .into_response()
        }
        (true, Denied::Csrf(why)) => ApiError::forbidden(*why).into_response(),
        (_, Denied::Unavailable) => {
            ApiError::unavailable("the database is not answering; try again shortly")
                .into_response()
        }
        (false, Denied::Unauthenticated) => {
            // after signing in, a page comes back; a form post cannot be replayed
            let back = if method == Method::GET {
                path_and_query
            } else {
                "/"
            };
            let target = format!("/login?next={}", crate::pages::percent_encode(back));
            Redirect::to(&target).into_response()
        }
        (false, Denied::Forbidden { need, have }) => page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!("This page needs the {need} role; your account has the {have} role."),
        ),
        (false, Denied::Csrf(why)) => page(StatusCode::FORBIDDEN, "Request refused", why),
    }
}

/// A minimal standalone HTML page.
pub(crate) fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let (t, x) = (crate::pages::escape(title), crate::pages::escape(text));
    let v = crate::ui::assets::version();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · restic-manager</title><link rel=\"stylesheet\" href=\"/static/app.css?v={v}\"></head>\
         <body><main class=\"auth\" id=\"main\"><h1>{t}</h1><p>{x}</p><p><a href=\"/\">Back to the fleet</a></p></main></body></html>"
    );
    (status, Html(body)).into_response()
}

fn path_of(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned())
}

/// How long [`authenticate`] took for the request that carries it (the
/// token's or session's lookup and the CSRF check); `server-timing`'s
/// `auth` (`crate::metrics::time`).
#[derive(Debug, Clone, Copy)]
pub struct AuthTook(pub std::time::Duration);

/// The authentication and CSRF layer (see the module doc).
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let path = path_of(&req);
    let method = req.method().clone();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    let address = client::of_request(&state.auth.trusted_proxies, req.extensions(), req.headers())
        .map(|ip| ip.to_string());
    let authn = if let Some(secret) = bearer {
        match token::resolve(&state, &secret).await {
            Ok(Ok(p)) => Authn::Principal(p),
            Ok(Err(refusal)) => {
                tracing::info!(?refusal, "bearer token refused");
                Authn::BadToken(refusal)
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking up a token failed");
                return deny(&path, &method, &Denied::Unavailable);
            }
        }
    } else if let Some(c) = CookieJar::from_headers(req.headers()).get(session::COOKIE) {
        match session::resolve(&state, c.value()).await {
            Ok(Some(p)) => Authn::Principal(p),
            Ok(None) => Authn::Anonymous,
            Err(e) => {
                tracing::warn!(error = %e, "looking up a session failed");
                return deny(&path, &method, &Denied::Unavailable);
            }
        }
    } else {
        Authn::Anonymous
    };
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        // The body is already read whole (`layers::read_body_first`).
        req = match csrf::check(req, authn.principal()).await {
            Ok(r) => r,
            Err(why) => {
                tracing::info!(%path, reason = why, "state-changing request refused");
                return deny(&path, &method, &Denied::Csrf(why));
            }
        };
    }
    let authn = match authn {
        Authn::Principal(p) => Authn::Principal(Principal { address, ..p }),
        other => other,
    };
    req.extensions_mut().insert(authn);
    req.extensions_mut().insert(AuthTook(started.elapsed()));
    next.run(req).await
}

/// Refuses requests whose principal is below `min` (the route table's entry).
pub async fn guard(min: Role, req: Request, next: Next) -> Response {
    let verdict = check(req.extensions().get::<Authn>(), min);
    match verdict {
        Ok(()) => next.run(req).await,
        Err(d) => deny(&path_of(&req), req.method(), &d),
    }
}

fn check(authn: Option<&Authn>, min: Role) -> Result<(), Denied> {
    match authn.and_then(Authn::principal) {
        None => Err(Denied::Unauthenticated),
        Some(p) if p.role < min => Err(Denied::Forbidden {
            need: min,
            have: p.role,
        }),
        Some(_) => Ok(()),
    }
}

/// An extractor's refusal; answers like [`deny`].
#[derive(Debug, Clone)]
pub struct Refused {
    path: String,
    method: Method,
    denied: Denied,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        deny(&self.path, &self.method, &self.denied)
    }
}

fn require(parts: &Parts, min: Role) -> Result<Principal, Refused> {
    let authn = parts.extensions.get::<Authn>();
    let refused = |denied| Refused {
        path: parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str())
            .to_owned(),
        method: parts.method.clone(),
        denied,
    };
    check(authn, min).map_err(refused)?;
    authn
        .and_then(Authn::principal)
        .cloned()
        .ok_or_else(|| refused(Denied::Unauthenticated))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
        require(parts, Role::Viewer)
    }
}

/// The principal, or `None` when anonymous (for public pages).
#[derive(Debug, Clone)]
pub struct MaybePrincipal(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybePrincipal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<Authn>()
                .and_then(Authn::principal)
                .cloned(),
        ))
    }
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl std::ops::Deref for $name {
            type Target = Principal;

            fn deref(&self) -> &Principal {
                &self.0
            }
        }

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Refused;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
                require(parts, $role).map($name)
            }
        }
    };
}

role_extractor!(
    RequireViewer,
    Role::Viewer,
    "A signed-in principal of any role."
);
role_extractor!(RequireOperator, Role::Operator, "An operator or admin.");
role_extractor!(RequireAdmin, Role::Admin, "An admin.");

/// Deletes expired sessions and stale throttle entries, every ten minutes.
pub async fn sweep_loop(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = state.now();
        let result: rm_store::Result<(u64, u64)> = async {
            let mut tx = state.store.write().await?;
            let s =
                rm_store::sessions::sweep(&mut tx, now, now - ms(state.auth.session_idle)).await?;
            let t = rm_store::throttle::sweep(&mut tx, now - ms(state.auth.throttle.forget_after))
                .await?;
            tx.commit().await.map_err(rm_store::StoreError::from)?;
            Ok((s, t))
        }
        .await;
        match result {
            Ok((sessions, throttle)) if sessions + throttle > 0 => {
                tracing::debug!(
                    sessions,
                    throttle,
                    "swept expired sessions and throttle entries"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping sessions failed; trying again later"),
        }
    }
}
