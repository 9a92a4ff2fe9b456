//! Settings → API tokens (admin): create one with a role and an expiry
//! (its secret is on the answer page once and nowhere else), list them
//! with prefix, role, expiry and last use, revoke behind a confirmation.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{FormErrors, frame, status_of};
use crate::AppState;
use crate::api::tokens::{self as api, TokenCreateBody, TokenCreated, TokenView};
use crate::auth::{Principal, RequireAdmin};
use crate::error::ApiError;
use crate::ui::{Layout, error_page, render};

/// The create form as posted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateForm {
    pub name: String,
    pub role: String,
    pub expires_in_days: String,
}

#[derive(Template)]
#[template(path = "settings_tokens.html")]
pub(crate) struct TokensPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) tokens: Vec<TokenView>,
    pub(crate) form: CreateForm,
    pub(crate) errors: FormErrors,
    /// The token just created: its secret, shown this once.
    pub(crate) created: Option<(String, TokenCreated)>,
    pub(crate) row_error: Option<(String, String)>,
    pub(crate) notice: Option<String>,
    pub(crate) now: i64,
}

impl TokensPage {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }
    pub fn row_error_of(&self, id: &str) -> Option<&str> {
        self.row_error
            .as_ref()
            .filter(|(t, _)| t == id)
            .map(|(_, m)| m.as_str())
    }
    /// `active`, `expired` or `revoked`, and its status class.
    pub fn state_of(&self, t: &TokenView) -> (&'static str, &'static str) {
        if t.revoked_at.is_some() {
            ("revoked", "s-unknown")
        } else if t.expires_at.is_some_and(|e| e <= self.now) {
            ("expired", "s-warn")
        } else {
            ("active", "s-ok")
        }
    }
    pub fn roles(&self) -> [&'static str; 3] {
        ["viewer", "operator", "admin"]
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notice {
    pub done: String,
}

async fn page(
    state: &AppState,
    who: &Principal,
    form: CreateForm,
    errors: FormErrors,
    created: Option<(String, TokenCreated)>,
    row_error: Option<(String, String)>,
    notice: Option<String>,
) -> Result<TokensPage, ApiError> {
    Ok(TokensPage {
        layout: frame(state, who).await,
        is_admin: true,
        sub: "tokens",
        tokens: api::all(state).await?,
        form,
        errors,
        created,
        row_error,
        notice,
        now: state.now(),
    })
}

fn shown(r: Result<TokensPage, ApiError>, who: &Principal, status: StatusCode) -> Response {
    match r {
        Ok(p) => {
            let mut resp = render(&p);
            *resp.status_mut() = status;
            // the page may carry a secret: never cache it
            resp.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => error_page(who, "settings", &e),
    }
}

fn blank() -> CreateForm {
    CreateForm {
        role: "viewer".into(),
        expires_in_days: "90".into(),
        ..CreateForm::default()
    }
}

/// `GET /settings/tokens`.
pub async fn list(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Query(n): Query<Notice>,
) -> Response {
    let notice = (n.done == "revoked").then(|| "Token revoked: it no longer works.".to_owned());
    let r = page(
        &state,
        &who,
        blank(),
        FormErrors::default(),
        None,
        None,
        notice,
    )
    .await;
    shown(r, &who, StatusCode::OK)
}

/// `POST /settings/tokens`: create; the answer page shows the secret once.
pub async fn create(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Form(f): Form<CreateForm>,
) -> Response {
    let days = match f.expires_in_days.trim() {
        "" => Ok(None),
        d => d
            .parse::<u32>()
            .map(Some)
            .map_err(|_| FormErrors::field("expires_in_days", "a whole number of days, 1 to 3650")),
    };
    let result = match days {
        Ok(expires_in_days) => {
            let body = TokenCreateBody {
                name: f.name.clone(),
                role: f.role.clone(),
                expires_in_days,
            };
            api::create_token(&state, &who, &body).await.map_err(|e| {
                (
                    FormErrors::from_api(&e, &["name", "role", "expires_in_days"]),
                    status_of(&e),
                )
            })
        }
        Err(errs) => Err((errs, StatusCode::BAD_REQUEST)),
    };
    match result {
        Ok(created) => {
            let name = f.name.trim().to_owned();
            let r = page(
                &state,
                &who,
                blank(),
                FormErrors::default(),
                Some((name, created)),
                None,
                None,
            )
            .await;
            shown(r, &who, StatusCode::CREATED)
        }
        Err((errors, status)) => {
            let r = page(&state, &who, f, errors, None, None, None).await;
            shown(r, &who, status)
        }
    }
}

/// The revoke confirmation checkbox.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConfirmForm {
    pub confirm: String,
}

/// `POST /settings/tokens/{id}/revoke` (needs `confirm`).
pub async fn revoke(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let result = if f.confirm.is_empty() {
        Err(ApiError::invalid(
            "confirm",
            "tick the box to confirm revoking this token",
        ))
    } else {
        api::revoke_token(&state, &who, &id).await
    };
    match result {
        Ok(()) => Redirect::to("/settings/tokens?done=revoked").into_response(),
        Err(e) => {
            let status = status_of(&e);
            let row = Some((id, e.message));
            let r = page(
                &state,
                &who,
                blank(),
                FormErrors::default(),
                None,
                row,
                None,
            )
            .await;
            shown(r, &who, status)
        }
    }
}
