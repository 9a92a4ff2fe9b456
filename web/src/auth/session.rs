//! Login sessions: a random id in the `__Host-rm_session` cookie (Secure,
//! HttpOnly, SameSite=Lax, Path=/), stored only as its SHA-256 with a CSRF
//! token, an absolute expiry and an idle expiry measured from the last
//! request. A login always makes a new id; logout deletes the row, so the
//! cookie is dead on the server even if a copy survives.

use axum_extra::extract::cookie::{Cookie, SameSite};
use rm_store::sessions;

use super::{Principal, Role, Via};
use crate::AppState;

/// The session cookie's name (`__Host-`: Secure, Path=/, no Domain).
pub const COOKIE: &str = "__Host-rm_session";

/// A new session: the cookie value (shown to the browser only) and its CSRF token.
pub struct NewSession {
    pub cookie_value: String,
    pub csrf: String,
}

/// Starts a session for `user_id`, signed in from `address`.
pub async fn create(
    state: &AppState,
    user_id: &str,
    address: Option<&str>,
) -> rm_store::Result<NewSession> {
    let cookie_value = super::random_token(32);
    let csrf = super::random_token(32);
    let now = state.now();
    let expires = now + super::ms(state.auth.session_absolute);
    let mut tx = state.store.write().await?;
    sessions::insert(
        &mut tx,
        &super::sha256_hex(&cookie_value),
        user_id,
        &csrf,
        now,
        expires,
        address,
    )
    .await?;
    tx.commit().await?;
    Ok(NewSession { cookie_value, csrf })
}

/// The cookie that carries a session.
pub fn cookie(value: String) -> Cookie<'static> {
    Cookie::build((COOKIE, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .build()
}

/// The cookie that clears it in the browser.
pub fn removal() -> Cookie<'static> {
    let mut c = cookie(String::new());
    c.make_removal();
    c
}

/// The principal of a live session cookie; `None` for an unknown, expired
/// or idle session or a disabled account.
pub async fn resolve(state: &AppState, cookie_value: &str) -> rm_store::Result<Option<Principal>> {
    let id_hash = super::sha256_hex(cookie_value);
    let now = state.now();
    let found = {
        let mut conn = state.store.read().await?;
        sessions::get(&mut conn, &id_hash).await?
    };
    let Some(s) = found else {
        return Ok(None);
    };
    let idle_limit = s.last_seen_at + super::ms(state.auth.session_idle);
    if s.disabled || now >= s.expires_at || now >= idle_limit {
        return Ok(None);
    }
    let Some(role) = Role::parse(&s.role) else {
        tracing::warn!(user = %s.username, role = %s.role, "account has an unknown role");
        return Ok(None);
    };
    if now - s.last_seen_at >= super::touch::EVERY_MS {
        // written off the request path
        state
            .touches
            .queue(&state.store, super::touch::Mark::Session, &id_hash, now);
    }
    Ok(Some(Principal {
        user_id: s.user_id,
        name: s.username,
        role,
        via: Via::Session,
        csrf: Some(s.csrf_token),
        session: Some(id_hash),
        address: None,
    }))
}

/// Ends the session of this cookie value.
pub async fn end(state: &AppState, cookie_value: &str) -> rm_store::Result<()> {
    let mut tx = state.store.write().await?;
    sessions::delete(&mut tx, &super::sha256_hex(cookie_value)).await?;
    tx.commit().await?;
    Ok(())
}

/// The id under which a cookie value's session is stored.
pub fn id_of(cookie_value: &str) -> String {
    super::sha256_hex(cookie_value)
}

/// Ends every session of an account ("log out everywhere").
pub async fn end_all(state: &AppState, user_id: &str) -> rm_store::Result<u64> {
    let mut tx = state.store.write().await?;
    let n = sessions::delete_for_user(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(n)
}
