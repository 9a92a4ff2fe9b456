//! The account page (`/account`, every role): change your own password
//! (every other session ends) and see your sessions — created, last seen,
//! the address they signed in from, this one marked — ending any of them.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::{FormErrors, frame, is_admin, status_of};
use crate::AppState;
use crate::api::account::{self as api, PasswordChangeBody, SessionView};
use crate::auth::{Principal, RequireViewer, session};
use crate::ui::{Layout, error_page, render};

#[derive(Template)]
#[template(path = "account.html")]
pub(crate) struct AccountPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) sessions: Vec<SessionView>,
    pub(crate) errors: FormErrors,
    pub(crate) notice: Option<String>,
    pub(crate) now: i64,
}

impl AccountPage {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notice {
    pub done: String,
    pub ended: u64,
}

async fn render_page(
    state: &AppState,
    who: &Principal,
    errors: FormErrors,
    notice: Option<String>,
    status: StatusCode,
) -> Response {
    match api::sessions_of(state, who).await {
        Ok(sessions) => {
            let mut resp = render(&AccountPage {
                layout: frame(state, who).await,
                is_admin: is_admin(who),
                sub: "account",
                sessions,
                errors,
                notice,
                now: state.now(),
            });
            *resp.status_mut() = status;
            resp
        }
        Err(e) => error_page(who, "settings", &e),
    }
}

/// `GET /account`.
pub async fn page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(n): Query<Notice>,
) -> Response {
    let notice = match n.done.as_str() {
        "password" => Some(format!(
            "Password changed. {} other session{} ended; this one stays signed in.",
            n.ended,
            if n.ended == 1 { "" } else { "s" }
        )),
        "ended" => Some("Session ended.".to_owned()),
        _ => None,
    };
    render_page(&state, &who, FormErrors::default(), notice, StatusCode::OK).await
}

/// The password form as posted.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordForm {
    pub current: String,
    pub new: String,
    pub confirm: String,
}

/// `POST /account/password`.
pub async fn password(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Form(f): Form<PasswordForm>,
) -> Response {
    if f.new != f.confirm {
        let errors = FormErrors::field("confirm", "the two new passwords differ");
        return render_page(&state, &who, errors, None, StatusCode::BAD_REQUEST).await;
    }
    let body = PasswordChangeBody {
        current: f.current,
        new: f.new,
    };
    match api::change_password(&state, &who, &body).await {
        Ok(ended) => Redirect::to(&format!("/account?done=password&ended={ended}")).into_response(),
        Err(e) => {
            let errors = FormErrors::from_api(&e, &["current", "new"]);
            render_page(&state, &who, errors, None, status_of(&e)).await
        }
    }
}

/// `POST /account/sessions/{id}/end`: ends one of your sessions; ending
/// this one signs you out.
pub async fn end(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Path(id): Path<String>,
    jar: CookieJar,
) -> Response {
    match api::end_session(&state, &who, &id).await {
        Ok(true) => (jar.add(session::removal()), Redirect::to("/login")).into_response(),
        Ok(false) => Redirect::to("/account?done=ended").into_response(),
        Err(e) => error_page(&who, "settings", &e),
    }
}
