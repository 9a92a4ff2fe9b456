//! The CSRF and origin checks of state-changing requests (see the `auth`
//! module doc for the rules).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};

use super::{Principal, Via};

/// Header a script sends the session's CSRF token in.
pub const HEADER: &str = "x-csrf-token";
/// Form field an HTML form sends it in.
pub const FIELD: &str = "_csrf";
/// Largest form body buffered to find the field.
const FORM_LIMIT: usize = 1024 * 1024;

/// This server's own origin as the client addressed it.
fn own_origin(req: &Request) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    Some(format!("https://{}", host.to_ascii_lowercase()))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn origin_ok(req: &Request, cookie_auth: bool) -> Result<(), &'static str> {
    let own = own_origin(req);
    let same = |o: &str| {
        own.as_deref()
            .is_some_and(|own| o.eq_ignore_ascii_case(own))
    };
    if let Some(origin) = header_str(req.headers(), header::ORIGIN) {
        return if same(origin) {
            Ok(())
        } else {
            Err("the request came from another site (Origin)")
        };
    }
    if let Some(referer) = header_str(req.headers(), header::REFERER) {
        let origin: String = match referer.splitn(4, '/').collect::<Vec<_>>().as_slice() {
            [scheme, "", host, ..] => format!("{scheme}//{host}"),
            _ => String::new(),
        };
        return if same(&origin) {
            Ok(())
        } else {
            Err("the request came from another site (Referer)")
        };
    }
    if cookie_auth {
        Err("the request carries no Origin or Referer")
    } else {
        Ok(())
    }
}

fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a state-changing request; hands back the request (its form body
/// restored after reading `_csrf`) or why it is refused.
pub(super) async fn check(
    req: Request,
    principal: Option<&Principal>,
) -> Result<Request, &'static str> {
    let cookie_auth = principal.is_some_and(|p| p.via == Via::Session);
    origin_ok(&req, cookie_auth)?;
    let Some(expected) = principal
        .filter(|_| cookie_auth)
        .and_then(|p| p.csrf.as_deref())
    else {
        return Ok(req);
    };
    if let Some(sent) = header_str(req.headers(), header::HeaderName::from_static(HEADER)) {
        return if tokens_equal(sent, expected) {
            Ok(req)
        } else {
            Err("the CSRF token does not match this session")
        };
    }
    let is_form = header_str(req.headers(), header::CONTENT_TYPE)
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err("the request carries no CSRF token (X-CSRF-Token)");
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| "the form is too large or was cut off")?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let sent = fields
        .iter()
        .find(|(k, _)| k == FIELD)
        .map(|(_, v)| v.as_str());
    match sent {
        Some(sent) if tokens_equal(sent, expected) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Some(_) => Err("the CSRF token does not match this session"),
        None => Err("the form carries no CSRF token (_csrf)"),
    }
}
