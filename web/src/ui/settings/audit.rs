//! Settings → Audit log (admin): who did what to which object, when and
//! from where, filtered by actor, action, object and time through the
//! query string (so a filtered view is a link), newest first, a cursor
//! page at a time. Object pages link here with `target_kind` and
//! `target_id` set.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;

use super::frame;
use crate::AppState;
use crate::api::logs::{AuditQuery, AuditView, audit_page};
use crate::auth::RequireAdmin;
use crate::ui::{Layout, error_page, render};

#[derive(Template)]
#[template(path = "audit.html")]
pub(crate) struct AuditPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) q: AuditQuery,
    pub(crate) entries: Vec<AuditView>,
    /// The query string of the next (older) page, if any.
    pub(crate) older: Option<String>,
    pub(crate) now: i64,
    pub(crate) error: Option<(String, String)>,
}

/// Where an audited object lives in the UI, if it has a page.
pub fn object_href(kind: &str, id: &str) -> Option<String> {
    let id = crate::pages::percent_encode(id);
    match kind {
        "host" => Some(format!("/hosts/{id}")),
        "job" => Some(format!("/jobs/{id}")),
        "channel" => Some(format!("/settings/notifications/{id}")),
        "alert" => Some("/alerts?state=all".to_owned()),
        "repo" => Some("/repositories".to_owned()),
        "user" => Some("/settings/users".to_owned()),
        "api_token" => Some("/settings/tokens".to_owned()),
        _ => None,
    }
}

impl AuditPage {
    pub fn v<'a>(&self, o: &'a Option<String>) -> &'a str {
        o.as_deref().unwrap_or("")
    }
    pub fn href(&self, e: &AuditView) -> Option<String> {
        match (&e.target_kind, &e.target_id) {
            (Some(k), Some(i)) => object_href(k, i),
            _ => None,
        }
    }
    /// The detail as one compact line (`key: value, ...`).
    pub fn detail_line(&self, e: &AuditView) -> String {
        match &e.detail {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}: {s}"),
                    serde_json::Value::Number(n) if k.ends_with("_at") => match n.as_i64() {
                        Some(ms) => format!("{k}: {}", crate::ui::fmt::absolute(ms)),
                        None => format!("{k}: {n}"),
                    },
                    other => format!("{k}: {other}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    }
    /// Only this object's entries (a link from the row).
    pub fn object_filter(&self, e: &AuditView) -> Option<String> {
        match (&e.target_kind, &e.target_id) {
            (Some(k), Some(i)) => Some(format!(
                "/settings/audit?target_kind={}&target_id={}",
                crate::pages::percent_encode(k),
                crate::pages::percent_encode(i)
            )),
            _ => None,
        }
    }
    pub fn filtered(&self) -> bool {
        self.q.filtered()
    }
    pub fn field_error(&self, field: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }
}

fn query_string(q: &AuditQuery, cursor: &str) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("target_kind", &q.target_kind),
        ("target_id", &q.target_id),
        ("since", &q.since),
        ("until", &q.until),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", crate::pages::percent_encode(v)));
        }
    }
    parts.push(format!("cursor={cursor}"));
    parts.join("&")
}

/// `GET /settings/audit`.
pub async fn page(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Query(q): Query<AuditQuery>,
) -> Response {
    let (entries, older, error) = match audit_page(&state, &q).await {
        Ok(p) => (p.items, p.next.map(|c| query_string(&q, &c)), None),
        Err(e) if e.status.is_client_error() && e.field.is_some() => (
            Vec::new(),
            None,
            Some((e.field.clone().unwrap_or_default(), e.message.clone())),
        ),
        Err(e) => return error_page(&who, "settings", &e),
    };
    let status = if error.is_some() {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    let mut resp = render(&AuditPage {
        layout: frame(&state, &who).await,
        is_admin: true,
        sub: "audit",
        q,
        entries,
        older,
        now: state.now(),
        error,
    });
    *resp.status_mut() = status;
    resp
}
