//! The caller's own account: their sessions (list, end one) and their
//! password (change it; every other session ends). The account page
//! (`ui::settings::account`) calls the same functions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, audit};
use crate::AppState;
use crate::auth::{Principal, password};
use crate::error::ApiError;

/// One of the caller's sessions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// The id to end it by (a hash of the cookie, not the cookie).
    pub id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    /// The client address it signed in from.
    pub address: Option<String>,
    /// True for the session making this request.
    pub current: bool,
}

/// The caller's sessions, most recently used first.
pub async fn sessions_of(state: &AppState, p: &Principal) -> Result<Vec<SessionView>, ApiError> {
    let mut conn = state.store.read().await?;
    let rows = rm_store::sessions::list_for_user(&mut conn, &p.user_id).await?;
    Ok(rows
        .into_iter()
        .map(|s| SessionView {
            current: p.session.as_deref() == Some(s.id_hash.as_str()),
            id: s.id_hash,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            address: s.address,
        })
        .collect())
}

/// Ends one of the caller's own sessions; true when it was the caller's
/// current one. Someone else's session is "not found".
pub async fn end_session(state: &AppState, p: &Principal, id: &str) -> Result<bool, ApiError> {
    let mut tx = state.store.write().await?;
    let done = rm_store::sessions::delete_of_user(&mut tx, &p.user_id, id).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    if !done {
        return Err(ApiError::not_found("no such session of yours"));
    }
    let short: String = id.chars().take(12).collect();
    audit(
        state,
        p,
        "session.end",
        "user",
        &p.user_id,
        Some(serde_json::json!({"session": short})),
    )
    .await;
    Ok(p.session.as_deref() == Some(id))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PasswordChangeBody {
    pub current: String,
    pub new: String,
}

/// Changes the caller's password after checking the current one; every
/// other session of the account ends (the one asking stays signed in).
/// Returns how many sessions ended.
pub async fn change_password(
    state: &AppState,
    p: &Principal,
    body: &PasswordChangeBody,
) -> Result<u64, ApiError> {
    let found = {
        let mut conn = state.store.read().await?;
        rm_store::users::by_name(&mut conn, &p.name).await?
    };
    let hash = found
        .filter(|(u, _)| u.id == p.user_id)
        .map(|(_, h)| h)
        .ok_or_else(|| {
            ApiError::forbidden("only an account's own sessions can change its password")
        })?;
    if !password::verify_async(body.current.clone(), Some(hash)).await {
        return Err(ApiError::invalid(
            "current",
            "that is not your current password",
        ));
    }
    password::check_strength(&body.new).map_err(|m| ApiError::invalid("new", m))?;
    if body.new == body.current {
        return Err(ApiError::invalid(
            "new",
            "the new password is the same as the current one",
        ));
    }
    let new_hash = password::hash_async(body.new.clone())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut tx = state.store.write().await?;
    let before = rm_store::sessions::count_for_user(&mut tx, &p.user_id).await?;
    rm_store::users::set_password_keeping(
        &mut tx,
        &p.user_id,
        &new_hash,
        state.now(),
        p.session.as_deref(),
    )
    .await?;
    let after = rm_store::sessions::count_for_user(&mut tx, &p.user_id).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    let ended = u64::try_from(before - after).unwrap_or(0);
    audit(
        state,
        p,
        "user.password_change",
        "user",
        &p.user_id,
        Some(serde_json::json!({"sessions_ended": ended})),
    )
    .await;
    Ok(ended)
}

pub(crate) async fn sessions(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    Ok(Json(sessions_of(&state, &p).await?))
}

pub(crate) async fn session_end(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    end_session(&state, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a password change did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Other sessions of the account that ended.
    pub sessions_ended: u64,
}

pub(crate) async fn password(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<PasswordChangeBody>,
) -> Result<Json<PasswordChanged>, ApiError> {
    Ok(Json(PasswordChanged {
        sessions_ended: change_password(&state, &p, &body).await?,
    }))
}
