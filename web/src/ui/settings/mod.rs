//! The settings pages: the overview (`/settings`, everyone), and for
//! admins notification channels, users, API tokens and the audit log; the
//! account page (`/account`, everyone); the control-plane backup
//! (`cpbackup`, admin). Every change goes through the same
//! service function as its JSON twin under `/api/v1` (`crate::api::*`), so
//! a page never validates or writes differently from the API. Admin-only
//! routes are refused by the route table's guard before a handler runs.

pub mod account;
pub mod audit;
pub mod channels;
pub mod cpbackup;
pub mod tokens;
pub mod users;

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use crate::AppState;
use crate::auth::{Principal, RequireViewer, Role};
use crate::error::ApiError;
use crate::ui::{Layout, open_alerts, render};

/// A form's field errors and a message for the whole form.
#[derive(Debug, Clone, Default)]
pub struct FormErrors {
    /// `(field, message)` pairs.
    pub fields: Vec<(String, String)>,
    /// What went wrong that is not about one field.
    pub general: Option<String>,
}

impl FormErrors {
    /// The message about `field`, if any.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_none()
    }

    /// An API error placed on the field it names (one of `known`), or as
    /// the general message.
    pub fn from_api(e: &ApiError, known: &[&str]) -> Self {
        match e.field.as_deref() {
            Some(f) if known.contains(&f) => Self {
                fields: vec![(f.to_owned(), e.message.clone())],
                general: None,
            },
            _ => Self {
                fields: vec![],
                general: Some(e.message.clone()),
            },
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            fields: vec![(field.to_owned(), message.into())],
            general: None,
        }
    }
}

/// A status for an API error shown on a re-rendered form.
pub(crate) fn status_of(e: &ApiError) -> axum::http::StatusCode {
    if e.status.is_client_error() {
        e.status
    } else {
        axum::http::StatusCode::BAD_GATEWAY
    }
}

/// Whether `who` sees the admin settings.
pub fn is_admin(who: &Principal) -> bool {
    who.role >= Role::Admin
}

/// The frame of a settings page: the layout and which tab is current.
pub(crate) async fn frame(state: &AppState, who: &Principal) -> Layout {
    Layout::new(who, "settings", "", open_alerts(state).await)
}

#[derive(Template)]
#[template(path = "settings.html")]
pub(crate) struct SettingsPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
}

/// `GET /settings`: where each setting lives; admins see their pages.
pub async fn overview(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
) -> Response {
    render(&SettingsPage {
        layout: frame(&state, &who).await,
        is_admin: is_admin(&who),
        sub: "overview",
    })
}
