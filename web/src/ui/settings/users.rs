//! Settings → Users (admin): add an account, change its role, disable or
//! enable it, reset its password, delete it (confirmed by name; never your
//! own). The last enabled admin cannot be demoted, disabled or deleted
//! (the service function refuses, with the reason).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{FormErrors, frame, status_of};
use crate::AppState;
use crate::api::users::{self as api, UserCreateBody, UserUpdateBody, UserView};
use crate::auth::{Principal, RequireAdmin, Role};
use crate::error::ApiError;
use crate::ui::{Layout, error_page, render};

/// The add-account form as posted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AddForm {
    pub name: String,
    pub role: String,
    pub password: String,
}

#[derive(Template)]
#[template(path = "settings_users.html")]
pub(crate) struct UsersPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) users: Vec<UserView>,
    pub(crate) me: String,
    pub(crate) add: AddForm,
    /// Errors of the add form.
    pub(crate) errors: FormErrors,
    /// A refusal about one account's row: `(user id, message)`.
    pub(crate) row_error: Option<(String, String)>,
    pub(crate) notice: Option<String>,
    pub(crate) now: i64,
}

impl UsersPage {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }
    pub fn row_error_of(&self, id: &str) -> Option<&str> {
        self.row_error
            .as_ref()
            .filter(|(u, _)| u == id)
            .map(|(_, m)| m.as_str())
    }
    pub fn roles(&self) -> [&'static str; 3] {
        [
            Role::Viewer.as_str(),
            Role::Operator.as_str(),
            Role::Admin.as_str(),
        ]
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notice {
    pub done: String,
    pub name: String,
}

fn notice_text(n: &Notice) -> Option<String> {
    let who = &n.name;
    match n.done.as_str() {
        "added" => Some(format!("Account {who} added.")),
        "role" => Some(format!("Role of {who} changed.")),
        "disabled" => Some(format!("{who} is disabled and signed out everywhere.")),
        "enabled" => Some(format!("{who} can sign in again.")),
        "deleted" => Some(format!(
            "Account {who} deleted; its sessions and API tokens have ended."
        )),
        "password" => Some(format!(
            "Password of {who} reset; their sessions have ended."
        )),
        _ => None,
    }
}

async fn page(
    state: &AppState,
    who: &Principal,
    add: AddForm,
    errors: FormErrors,
    row_error: Option<(String, String)>,
    notice: Option<String>,
) -> Result<UsersPage, ApiError> {
    Ok(UsersPage {
        layout: frame(state, who).await,
        is_admin: true,
        sub: "users",
        users: api::all(state).await?,
        me: who.user_id.clone(),
        add,
        errors,
        row_error,
        notice,
        now: state.now(),
    })
}

fn shown(r: Result<UsersPage, ApiError>, who: &Principal, status: StatusCode) -> Response {
    match r {
        Ok(p) => {
            let mut resp = render(&p);
            *resp.status_mut() = status;
            resp
        }
        Err(e) => error_page(who, "settings", &e),
    }
}

/// `GET /settings/users`.
pub async fn list(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Query(n): Query<Notice>,
) -> Response {
    let add = AddForm {
        role: "viewer".into(),
        ..AddForm::default()
    };
    let r = page(
        &state,
        &who,
        add,
        FormErrors::default(),
        None,
        notice_text(&n),
    )
    .await;
    shown(r, &who, StatusCode::OK)
}

fn done(what: &str, name: &str) -> Response {
    Redirect::to(&format!(
        "/settings/users?done={what}&name={}",
        crate::pages::percent_encode(name)
    ))
    .into_response()
}

/// `POST /settings/users`: add an account.
pub async fn add(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Form(f): Form<AddForm>,
) -> Response {
    let body = UserCreateBody {
        name: f.name.clone(),
        role: f.role.clone(),
        password: f.password.clone(),
    };
    match api::create_user(&state, &who, &body).await {
        Ok(u) => done("added", &u.name),
        Err(e) => {
            let errors = FormErrors::from_api(&e, &["name", "role", "password"]);
            // the password is not sent back
            let kept = AddForm {
                password: String::new(),
                ..f
            };
            shown(
                page(&state, &who, kept, errors, None, None).await,
                &who,
                status_of(&e),
            )
        }
    }
}

/// One account's change, from its row: `role=`, `disabled=1|0` or `password=`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChangeForm {
    pub role: Option<String>,
    pub disabled: Option<String>,
    pub password: Option<String>,
}

/// `POST /settings/users/{id}`: change role, disable/enable or reset the
/// password, whichever the row's form sent.
pub async fn change(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let body = UserUpdateBody {
        role: f.role.clone(),
        disabled: f.disabled.as_deref().map(|d| d == "1"),
        password: f.password.clone(),
    };
    let what = if body.password.is_some() {
        "password"
    } else if let Some(d) = body.disabled {
        if d { "disabled" } else { "enabled" }
    } else {
        "role"
    };
    match api::update_user(&state, &who, &id, &body).await {
        Ok(u) => done(what, &u.name),
        Err(e) => {
            let add = AddForm {
                role: "viewer".into(),
                ..AddForm::default()
            };
            let row = Some((id, e.message.clone()));
            shown(
                page(&state, &who, add, FormErrors::default(), row, None).await,
                &who,
                status_of(&e),
            )
        }
    }
}

/// The delete confirmation checkbox.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    pub confirm: String,
}

/// `POST /settings/users/{id}/delete`: delete an account (confirmed).
pub async fn delete(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    let done_or = if f.confirm == "1" {
        api::delete_user(&state, &who, &id).await
    } else {
        Err(ApiError::invalid(
            "confirm",
            "tick the box to confirm the deletion",
        ))
    };
    match done_or {
        Ok(name) => done("deleted", &name),
        Err(e) => {
            let add = AddForm {
                role: "viewer".into(),
                ..AddForm::default()
            };
            let row = Some((id, e.message.clone()));
            shown(
                page(&state, &who, add, FormErrors::default(), row, None).await,
                &who,
                status_of(&e),
            )
        }
    }
}
