//! API tokens (admin): create with a role and an expiry (the secret is in
//! the answer once, never again), list, revoke. A token's role is at most
//! its creator's.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, audit};
use crate::AppState;
use crate::auth::{Principal, RequireAdmin, Role};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub user_id: String,
    /// The creator's account name.
    pub user_name: String,
    pub role: String,
    /// The secret's first characters (`rmt_AbCd1234`), to tell tokens apart.
    pub prefix: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TokenCreateBody {
    /// Where the token is used.
    pub name: String,
    /// admin | operator | viewer
    pub role: String,
    /// Days until it expires; 0 or absent: 90 days. `null` is not accepted:
    /// every token expires.
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenCreated {
    pub id: String,
    /// `rmt_...`: shown only in this answer.
    pub secret: String,
    pub expires_at: i64,
}

/// Every token, newest first (the API's list and the tokens page).
pub async fn all(state: &AppState) -> Result<Vec<TokenView>, ApiError> {
    let mut conn = state.store.read().await?;
    let rows = rm_store::api_tokens::list(&mut conn).await?;
    Ok(rows
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            user_id: t.user_id,
            user_name: t.username,
            role: t.role,
            prefix: t.prefix,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        })
        .collect())
}

pub(crate) async fn list(
    State(state): State<AppState>,
    _: RequireAdmin,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    Ok(Json(all(&state).await?))
}

/// Creates a token (the API's and the tokens page's one way).
pub async fn create_token(
    state: &AppState,
    p: &Principal,
    body: &TokenCreateBody,
) -> Result<TokenCreated, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "name",
            "a token needs a name of 1 to 100 characters",
        ));
    }
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("role", "role must be admin, operator or viewer"))?;
    if role > p.role {
        return Err(ApiError::invalid(
            "role",
            "a token cannot have more than your role",
        ));
    }
    let days = match body.expires_in_days {
        None | Some(0) => 90,
        Some(d) if d <= 3650 => d,
        Some(_) => return Err(ApiError::invalid("expires_in_days", "at most 3650 days")),
    };
    let expires_at = state.now() + i64::from(days) * 86_400_000;
    let created =
        crate::auth::token::create(state, &p.user_id, name, role, Some(expires_at)).await?;
    audit(
        state,
        p,
        "token.create",
        "api_token",
        &created.id,
        Some(serde_json::json!({"name": name, "role": role.as_str(), "expires_at": expires_at})),
    )
    .await;
    Ok(TokenCreated {
        id: created.id,
        secret: created.secret,
        expires_at,
    })
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireAdmin,
    ApiJson(body): ApiJson<TokenCreateBody>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(create_token(&state, &p, &body).await?),
    ))
}

/// Revokes a token (the API's and the tokens page's one way).
pub async fn revoke_token(state: &AppState, p: &Principal, id: &str) -> Result<(), ApiError> {
    let mut tx = state.store.write().await?;
    let done = rm_store::api_tokens::revoke(&mut tx, id, state.now()).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    if !done {
        return Err(ApiError::not_found(format!("no active token {id:?}")));
    }
    audit(state, p, "token.revoke", "api_token", id, None).await;
    Ok(())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke_token(&state, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
