//! API tokens: `rmt_` followed by 43 random URL-safe characters, shown
//! once at creation and stored only as a SHA-256. A token acts with its
//! own role, never more than its creator's current role, until it expires
//! or is revoked; its use records a last-used time (to the minute).

use rm_store::api_tokens::{self, NewToken};

use super::{Principal, Role, Via};
use crate::AppState;

/// Every token starts with this, so secret scanners and people recognise it.
pub const PREFIX: &str = "rmt_";

/// A token just created: its secret is shown once.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub secret: String,
}

/// Creates a token for `user_id` acting as `role`, valid until `expires_at`
/// (Unix ms; `None`: until revoked).
pub async fn create(
    state: &AppState,
    user_id: &str,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
) -> rm_store::Result<Created> {
    create_in(&state.store, user_id, name, role, state.now(), expires_at).await
}

/// [`create`] on a bare store (the `token create` command).
pub async fn create_in(
    store: &rm_store::Store,
    user_id: &str,
    name: &str,
    role: Role,
    now: i64,
    expires_at: Option<i64>,
) -> rm_store::Result<Created> {
    let secret = format!("{PREFIX}{}", super::random_token(32));
    let id = format!("tok_{}", super::random_token(9));
    let mut tx = store.write().await?;
    api_tokens::insert(
        &mut tx,
        &NewToken {
            id: &id,
            name,
            token_hash: &super::sha256_hex(&secret),
            user_id,
            role: role.as_str(),
            now,
            expires_at,
            prefix: prefix_of(&secret),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Created { id, secret })
}

/// What of a secret may be shown again: `rmt_` and 8 characters.
pub fn prefix_of(secret: &str) -> &str {
    let end = secret
        .char_indices()
        .nth(PREFIX.len() + 8)
        .map_or(secret.len(), |(i, _)| i);
    &secret[..end]
}

/// Why a bearer token was refused (for the log; the client hears only 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    Revoked,
    AccountDisabled,
}

/// The principal of a bearer token.
pub async fn resolve(
    state: &AppState,
    secret: &str,
) -> rm_store::Result<Result<Principal, Refusal>> {
    if !secret.starts_with(PREFIX) {
        return Ok(Err(Refusal::Unknown));
    }
    let now = state.now();
    let found = {
        let mut conn = state.store.read().await?;
        api_tokens::by_hash(&mut conn, &super::sha256_hex(secret)).await?
    };
    let Some(t) = found else {
        return Ok(Err(Refusal::Unknown));
    };
    if t.revoked_at.is_some() {
        return Ok(Err(Refusal::Revoked));
    }
    if t.expires_at.is_some_and(|e| now >= e) {
        return Ok(Err(Refusal::Expired));
    }
    if t.user_disabled {
        return Ok(Err(Refusal::AccountDisabled));
    }
    let (Some(role), Some(user_role)) = (Role::parse(&t.role), Role::parse(&t.user_role)) else {
        return Ok(Err(Refusal::Unknown));
    };
    // one mark per minute per token, written off the request path
    if t.last_used_at
        .is_none_or(|last| now - last >= super::touch::EVERY_MS)
    {
        state
            .touches
            .queue(&state.store, super::touch::Mark::Token, &t.id, now);
    }
    Ok(Ok(Principal {
        user_id: t.user_id,
        name: format!("{} (token {})", t.username, t.name),
        role: role.min(user_role),
        via: Via::Token,
        csrf: None,
        session: None,
        address: None,
    }))
}
