//! Operator accounts (admin): list, create, change role / disable /
//! password, delete. The last enabled admin cannot be demoted, disabled or
//! deleted. A password change or disabling ends the account's sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, audit};
use crate::AppState;
use crate::auth::accounts::{self, AddError};
use crate::auth::{Principal, RequireAdmin, Role, password};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    pub password_changed_at: i64,
}

fn view(u: rm_store::users::User) -> UserView {
    UserView {
        id: u.id,
        name: u.username,
        role: u.role,
        disabled: u.disabled,
        created_at: u.created_at,
        password_changed_at: u.password_changed_at,
    }
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s)
        .ok_or_else(|| ApiError::invalid("role", "role must be admin, operator or viewer"))
}

/// Every account, by name (the API's list and the users page).
pub async fn all(state: &AppState) -> Result<Vec<UserView>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(rm_store::users::list(&mut conn)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

pub(crate) async fn list(
    State(state): State<AppState>,
    _: RequireAdmin,
) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(all(&state).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UserCreateBody {
    pub name: String,
    pub role: String,
    pub password: String,
}

/// Creates an account (the API's and the users page's one way).
pub async fn create_user(
    state: &AppState,
    p: &Principal,
    body: &UserCreateBody,
) -> Result<UserView, ApiError> {
    let role = parse_role(&body.role)?;
    let id = accounts::add(
        &state.store,
        state.now(),
        &body.name,
        role,
        &body.password,
        false,
    )
    .await
    .map_err(|e| match e {
        AddError::Invalid { field, message } => ApiError::invalid(field, message),
        AddError::Taken(n) => ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("an account named {n:?} exists already"),
            )
        },
        AddError::Store(e) => e.into(),
        other => ApiError::internal(other.to_string()),
    })?;
    audit(
        state,
        p,
        "user.create",
        "user",
        &id,
        Some(serde_json::json!({"name": body.name, "role": role.as_str()})),
    )
    .await;
    let mut conn = state.store.read().await?;
    Ok(view(rm_store::users::get(&mut conn, &id).await?))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireAdmin,
    ApiJson(body): ApiJson<UserCreateBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(create_user(&state, &p, &body).await?),
    ))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UserUpdateBody {
    pub role: Option<String>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// The refusal when a change would leave no enabled admin.
pub const LAST_ADMIN: &str = "this is the last enabled admin: make another account an admin first";

/// Refuses to leave the installation without an enabled admin (read in
/// the transaction that makes the change, so two admins demoting each
/// other at once cannot both succeed).
async fn keep_an_admin(conn: &mut rm_store::Conn, id: &str) -> Result<(), ApiError> {
    let users = rm_store::users::list(conn).await?;
    let others = users
        .iter()
        .filter(|u| u.id != id && u.role == "admin" && !u.disabled)
        .count();
    if others == 0 {
        return Err(ApiError {
            field: Some("role".into()),
            ..ApiError::new(StatusCode::CONFLICT, "conflict", LAST_ADMIN)
        });
    }
    Ok(())
}

/// Changes an account's role, disabled flag or password (the API's and the
/// users page's one way). A password change or disabling ends the
/// account's sessions.
pub async fn update_user(
    state: &AppState,
    p: &Principal,
    id: &str,
    body: &UserUpdateBody,
) -> Result<UserView, ApiError> {
    let role = body.role.as_deref().map(parse_role).transpose()?;
    let hash = match &body.password {
        Some(pw) => {
            password::check_strength(pw).map_err(|m| ApiError::invalid("password", m))?;
            Some(
                password::hash_async(pw.clone())
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            )
        }
        None => None,
    };
    let mut tx = state.store.write().await?;
    let before = rm_store::users::get(&mut tx, id).await?;
    let loses_admin = before.role == "admin"
        && !before.disabled
        && (role.is_some_and(|r| r != Role::Admin) || body.disabled == Some(true));
    if loses_admin {
        keep_an_admin(&mut tx, id).await?;
    }
    rm_store::users::update(&mut tx, id, role.map(Role::as_str), body.disabled).await?;
    if let Some(hash) = &hash {
        rm_store::users::set_password(&mut tx, id, hash, state.now()).await?;
    }
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    audit(
        state,
        p,
        "user.update",
        "user",
        id,
        Some(serde_json::json!({
            "name": before.username,
            "role": role.map(Role::as_str),
            "disabled": body.disabled,
            "password_changed": hash.is_some(),
        })),
    )
    .await;
    let mut conn = state.store.read().await?;
    Ok(view(rm_store::users::get(&mut conn, id).await?))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserUpdateBody>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(update_user(&state, &p, &id, &body).await?))
}

/// The refusal to delete the account making the request.
pub const NOT_YOURSELF: &str =
    "you cannot delete your own account: another admin can, or disable it instead";

/// Deletes an account (the API's and the users page's one way): never the
/// caller's own, never the last enabled admin (checked inside the write
/// transaction). Its sessions and API tokens go with it (the store
/// cascades), so they end at once. Audited; answers the account's name.
pub async fn delete_user(state: &AppState, p: &Principal, id: &str) -> Result<String, ApiError> {
    if p.user_id == id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            NOT_YOURSELF,
        ));
    }
    let mut tx = state.store.write().await?;
    let before = rm_store::users::get(&mut tx, id).await?;
    if before.role == "admin" && !before.disabled {
        keep_an_admin(&mut tx, id).await?;
    }
    rm_store::users::delete(&mut tx, id).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    audit(
        state,
        p,
        "user.delete",
        "user",
        id,
        Some(serde_json::json!({"name": before.username, "role": before.role})),
    )
    .await;
    Ok(before.username)
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_user(&state, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
