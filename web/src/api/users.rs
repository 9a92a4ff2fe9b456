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
use crate::auth::{RequireAdmin, Role, password};
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

pub(crate) async fn list(
    State(state): State<AppState>,
    _: RequireAdmin,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(Json(
        rm_store::users::list(&mut conn)
            .await?
            .into_iter()
            .map(view)
            .collect(),
    ))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UserCreateBody {
    pub name: String,
    pub role: String,
    pub password: String,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireAdmin,
    ApiJson(body): ApiJson<UserCreateBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
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
        AddError::Taken(n) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("an account named {n:?} exists already"),
        ),
        AddError::Store(e) => e.into(),
        other => ApiError::internal(other.to_string()),
    })?;
    audit(
        &state,
        &p,
        "user.create",
        "user",
        &id,
        Some(serde_json::json!({"name": body.name, "role": role.as_str()})),
    )
    .await;
    let mut conn = state.store.read().await?;
    Ok((
        StatusCode::CREATED,
        Json(view(rm_store::users::get(&mut conn, &id).await?)),
    ))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UserUpdateBody {
    pub role: Option<String>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// Refuses to leave the installation without an enabled admin.
async fn keep_an_admin(state: &AppState, id: &str) -> Result<(), ApiError> {
    let mut conn = state.store.read().await?;
    let users = rm_store::users::list(&mut conn).await?;
    let others = users
        .iter()
        .filter(|u| u.id != id && u.role == "admin" && !u.disabled)
        .count();
    if others == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this is the last enabled admin; make another admin first",
        ));
    }
    Ok(())
}

pub(crate) async fn update(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserUpdateBody>,
) -> Result<Json<UserView>, ApiError> {
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
    {
        let mut conn = state.store.read().await?;
        rm_store::users::get(&mut conn, &id).await?;
    }
    if role.is_some_and(|r| r != Role::Admin) || body.disabled == Some(true) {
        keep_an_admin(&state, &id).await?;
    }
    let mut tx = state.store.write().await?;
    rm_store::users::update(&mut tx, &id, role.map(Role::as_str), body.disabled).await?;
    if let Some(hash) = &hash {
        rm_store::users::set_password(&mut tx, &id, hash, state.now()).await?;
    }
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    audit(
        &state,
        &p,
        "user.update",
        "user",
        &id,
        Some(serde_json::json!({
            "role": role.map(Role::as_str),
            "disabled": body.disabled,
            "password_changed": hash.is_some(),
        })),
    )
    .await;
    let mut conn = state.store.read().await?;
    Ok(Json(view(rm_store::users::get(&mut conn, &id).await?)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    {
        let mut conn = state.store.read().await?;
        rm_store::users::get(&mut conn, &id).await?;
    }
    keep_an_admin(&state, &id).await?;
    let mut tx = state.store.write().await?;
    rm_store::users::delete(&mut tx, &id).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    audit(&state, &p, "user.delete", "user", &id, None).await;
    Ok(StatusCode::NO_CONTENT)
}
