//! Settings → Notifications (admin): the channels (ntfy, webhook) with
//! create, edit, enable/disable, delete behind a confirmation, "Send test
//! notification" on saved channels and on unsaved form values (testing
//! saves nothing), and each channel's delivery log. A saved channel's
//! destination and secrets are never shown again: the edit form has empty
//! "replace" fields, and leaving them empty keeps what is saved.
//!
//! The test result works without script (the form posts and the page comes
//! back with the result and the values kept) and with it (`app.js` posts
//! the same form in the background and swaps in `#test-result`).

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use rm_bus::notify::{ChannelDef, NtfyAuth, NtfyChannel, NtfyPriorities, WebhookChannel};
use serde::Deserialize;

use super::{FormErrors, frame, status_of};
use crate::AppState;
use crate::api::alerts::{self as api, ChannelBody, ChannelTestView, ChannelViewBody, TestTarget};
use crate::api::logs::{DeliveryQuery, DeliveryView, deliveries_page};
use crate::auth::{Principal, RequireAdmin};
use crate::error::ApiError;
use crate::ui::{Layout, error_page, render};

/// The channel form as posted (every field a string, so input is kept).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChannelForm {
    pub name: String,
    /// `webhook` or `ntfy`.
    pub kind: String,
    /// A checkbox: present when ticked.
    pub enabled: Option<String>,
    pub url: String,
    pub secret: String,
    /// `Name: value` per line.
    pub headers: String,
    pub server_url: String,
    pub topic: String,
    /// `none`, `bearer` or `basic`.
    pub auth: String,
    pub token: String,
    pub user: String,
    pub password: String,
    /// A checkbox on the edit page: drop the saved signing secret.
    pub clear_secret: Option<String>,
    /// `save` or `test`.
    pub action: String,
}

/// Fields that make up the destination (what "replace" means).
const DESTINATION: [&str; 8] = [
    "url",
    "secret",
    "headers",
    "server_url",
    "topic",
    "token",
    "user",
    "password",
];

/// Every field a message can be placed on.
const FIELDS: [&str; 11] = [
    "name",
    "kind",
    "url",
    "secret",
    "headers",
    "server_url",
    "topic",
    "auth",
    "token",
    "user",
    "password",
];

impl ChannelForm {
    fn blank() -> Self {
        Self {
            kind: "webhook".into(),
            enabled: Some("1".into()),
            auth: "none".into(),
            ..Self::default()
        }
    }

    /// True when no destination field was filled in (an edit keeps the
    /// saved destination).
    pub fn destination_empty(&self) -> bool {
        DESTINATION.iter().all(|f| self.value(f).trim().is_empty())
    }

    fn value(&self, field: &str) -> &str {
        match field {
            "url" => &self.url,
            "secret" => &self.secret,
            "headers" => &self.headers,
            "server_url" => &self.server_url,
            "topic" => &self.topic,
            "token" => &self.token,
            "user" => &self.user,
            "password" => &self.password,
            _ => "",
        }
    }

    pub fn is_ntfy(&self) -> bool {
        self.kind == "ntfy"
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.is_some()
    }

    /// The definition the form describes, or the field that is wrong.
    pub fn definition(&self) -> Result<ChannelDef, FormErrors> {
        let def = match self.kind.as_str() {
            "webhook" => {
                if self.url.trim().is_empty() {
                    return Err(FormErrors::field("url", "the webhook needs a URL"));
                }
                let mut headers = BTreeMap::new();
                for line in self.headers.lines().filter(|l| !l.trim().is_empty()) {
                    let Some((k, v)) = line.split_once(':') else {
                        return Err(FormErrors::field(
                            "headers",
                            format!(
                                "write each header as Name: value ({:?} has no colon)",
                                line.trim()
                            ),
                        ));
                    };
                    headers.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                let secret = self.secret.trim();
                ChannelDef::Webhook(WebhookChannel {
                    url: self.url.trim().to_owned(),
                    secret: (!secret.is_empty()).then(|| secret.to_owned()),
                    headers,
                })
            }
            "ntfy" => {
                if self.server_url.trim().is_empty() {
                    return Err(FormErrors::field(
                        "server_url",
                        "the ntfy server's URL is needed, e.g. https://ntfy.sh",
                    ));
                }
                let auth = match self.auth.as_str() {
                    "" | "none" => NtfyAuth::None,
                    "bearer" => NtfyAuth::Bearer {
                        token: self.token.trim().to_owned(),
                    },
                    "basic" => NtfyAuth::Basic {
                        user: self.user.trim().to_owned(),
                        password: self.password.clone(),
                    },
                    _ => return Err(FormErrors::field("auth", "none, bearer or basic")),
                };
                ChannelDef::Ntfy(NtfyChannel {
                    server_url: self.server_url.trim().to_owned(),
                    topic: self.topic.trim().to_owned(),
                    auth,
                    click_base_url: None,
                    priorities: NtfyPriorities::default(),
                })
            }
            _ => return Err(FormErrors::field("kind", "choose webhook or ntfy")),
        };
        def.validate()
            .map_err(|e| FormErrors::field(field_of_channel_error(&e.0), e.0))?;
        Ok(def)
    }
}

/// The form field a channel validation message is about.
fn field_of_channel_error(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.starts_with("server_url") {
        "server_url"
    } else if m.starts_with("url") {
        "url"
    } else if m.contains("topic") {
        "topic"
    } else if m.contains("secret") {
        "secret"
    } else if m.contains("header") {
        "headers"
    } else if m.contains("bearer") {
        "token"
    } else if m.contains("basic-auth") {
        "user"
    } else {
        "kind"
    }
}

/// A test send's result as the page shows it.
#[derive(Debug, Clone)]
pub struct TestShown {
    pub ok: bool,
    /// One line: outcome, HTTP status, latency.
    pub summary: String,
    pub error: Option<String>,
}

impl From<ChannelTestView> for TestShown {
    fn from(t: ChannelTestView) -> Self {
        let mut parts = vec![if t.ok {
            "Delivered".to_owned()
        } else {
            match t.outcome.as_str() {
                "no_responder" => "No notifier is running".to_owned(),
                "timeout" => "The notifier did not answer in time".to_owned(),
                o => format!("Not delivered ({o})"),
            }
        }];
        if let Some(s) = t.status {
            parts.push(format!("HTTP {s}"));
        }
        parts.push(format!("{} ms", t.latency_ms));
        Self {
            ok: t.ok,
            summary: parts.join(" · "),
            error: t.error,
        }
    }
}

impl TestShown {
    fn refused(e: &FormErrors) -> Self {
        Self {
            ok: false,
            summary: "Not sent: the form has a mistake".into(),
            error: e
                .general
                .clone()
                .or_else(|| e.fields.first().map(|(_, m)| m.clone())),
        }
    }
}

// ------------------------------------------------------------ the list

#[derive(Template)]
#[template(path = "settings_channels.html")]
pub(crate) struct ChannelsPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) channels: Vec<ChannelViewBody>,
    pub(crate) form: ChannelForm,
    pub(crate) errors: FormErrors,
    pub(crate) test: Option<TestShown>,
    /// `None` on the new-channel form; the channel when editing.
    pub(crate) editing: Option<ChannelViewBody>,
    pub(crate) notice: Option<String>,
    pub(crate) now: i64,
}

fn summary_line(c: &ChannelViewBody) -> String {
    let s = &c.summary;
    let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    match c.kind.as_str() {
        "webhook" => {
            let signed = s.get("signed").and_then(serde_json::Value::as_bool) == Some(true);
            format!(
                "{}{}",
                text("url"),
                if signed {
                    " · signed"
                } else {
                    " · not signed"
                }
            )
        }
        "ntfy" => format!("{} · auth {}", text("server"), text("auth")),
        _ => String::new(),
    }
}

impl ChannelsPage {
    pub fn summary_of(&self, c: &ChannelViewBody) -> String {
        summary_line(c)
    }
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }
    pub fn signed(&self, c: &ChannelViewBody) -> bool {
        c.summary["signed"] == true
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notice {
    pub done: String,
}

fn notice_text(n: &Notice) -> Option<String> {
    match n.done.as_str() {
        "created" => Some("Channel saved.".into()),
        "saved" => Some("Changes saved.".into()),
        "deleted" => Some("Channel deleted.".into()),
        "enabled" => Some("Channel enabled: it receives alerts again.".into()),
        "disabled" => Some("Channel disabled: it receives nothing until enabled.".into()),
        _ => None,
    }
}

async fn list_page(
    state: &AppState,
    who: &Principal,
    form: ChannelForm,
    errors: FormErrors,
    test: Option<TestShown>,
    notice: Option<String>,
) -> Result<ChannelsPage, ApiError> {
    Ok(ChannelsPage {
        layout: frame(state, who).await,
        is_admin: true,
        sub: "notifications",
        channels: api::channel_list(state, who).await?,
        form,
        errors,
        test,
        editing: None,
        notice,
        now: state.now(),
    })
}

/// `GET /settings/notifications`.
pub async fn list(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Query(n): Query<Notice>,
) -> Response {
    let notice = notice_text(&n);
    match list_page(
        &state,
        &who,
        ChannelForm::blank(),
        FormErrors::default(),
        None,
        notice,
    )
    .await
    {
        Ok(p) => render(&p),
        Err(e) => error_page(&who, "settings", &e),
    }
}

fn with_status(mut resp: Response, status: StatusCode) -> Response {
    *resp.status_mut() = status;
    resp
}

/// `POST /settings/notifications`: save a new channel, or test the form's
/// values without saving them.
pub async fn create(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Form(form): Form<ChannelForm>,
) -> Response {
    let def = form.definition();
    let (errors, test, status) = if form.action == "test" {
        match def {
            Ok(def) => match api::test_channel(&state, &who, TestTarget::Unsaved(def)).await {
                Ok(t) => (FormErrors::default(), Some(t.into()), StatusCode::OK),
                Err(e) => {
                    let errs = FormErrors::from_api(&e, &FIELDS);
                    let shown = TestShown::refused(&errs);
                    (errs, Some(shown), status_of(&e))
                }
            },
            Err(errs) => {
                let shown = TestShown::refused(&errs);
                (errs, Some(shown), StatusCode::BAD_REQUEST)
            }
        }
    } else {
        let body = def.map(|d| ChannelBody {
            name: Some(form.name.clone()),
            enabled: Some(form.is_enabled()),
            definition: Some(d),
            clear_secret: None,
        });
        match body {
            Ok(body) => match api::create_channel(&state, &who, body).await {
                Ok(c) => {
                    return Redirect::to(&format!("/settings/notifications/{}?done=created", c.id))
                        .into_response();
                }
                Err(e) => (FormErrors::from_api(&e, &FIELDS), None, status_of(&e)),
            },
            Err(errs) => (errs, None, StatusCode::BAD_REQUEST),
        }
    };
    match list_page(&state, &who, form, errors, test, None).await {
        Ok(p) => with_status(render(&p), status),
        Err(e) => error_page(&who, "settings", &e),
    }
}

// ------------------------------------------------------------ one channel

#[derive(Template)]
#[template(path = "settings_channel.html")]
pub(crate) struct ChannelPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) channel: ChannelViewBody,
    /// The same channel, for the shared form's "saved destination" line.
    pub(crate) editing: Option<ChannelViewBody>,
    pub(crate) form: ChannelForm,
    pub(crate) errors: FormErrors,
    pub(crate) test: Option<TestShown>,
    pub(crate) notice: Option<String>,
    pub(crate) deliveries: Vec<DeliveryView>,
    pub(crate) next: Option<String>,
    pub(crate) now: i64,
}

impl ChannelPage {
    pub fn summary(&self) -> String {
        summary_line(&self.channel)
    }
    pub fn summary_of(&self, c: &ChannelViewBody) -> String {
        summary_line(c)
    }
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }
    /// Whether the saved channel signs its requests.
    pub fn signed(&self, c: &ChannelViewBody) -> bool {
        c.summary["signed"] == true
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChannelQuery {
    pub done: String,
    pub cursor: String,
}

async fn channel_page(
    state: &AppState,
    who: &Principal,
    id: &str,
    form: Option<ChannelForm>,
    errors: FormErrors,
    test: Option<TestShown>,
    q: &ChannelQuery,
) -> Result<ChannelPage, ApiError> {
    let channel = api::channel_list(state, who)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::not_found(format!("there is no channel {id:?}")))?;
    let log = deliveries_page(
        state,
        &DeliveryQuery {
            channel: Some(id.to_owned()),
            cursor: Some(q.cursor.clone()),
            limit: Some(50),
            ..DeliveryQuery::default()
        },
    )
    .await?;
    let form = form.unwrap_or_else(|| ChannelForm {
        name: channel.name.clone(),
        kind: channel.kind.clone(),
        enabled: channel.enabled.then(|| "1".into()),
        auth: "none".into(),
        ..ChannelForm::default()
    });
    Ok(ChannelPage {
        layout: frame(state, who).await,
        is_admin: true,
        sub: "notifications",
        notice: notice_text(&Notice {
            done: q.done.clone(),
        }),
        editing: Some(channel.clone()),
        channel,
        form,
        errors,
        test,
        deliveries: log.items,
        next: log.next,
        now: state.now(),
    })
}

/// `GET /settings/notifications/{id}`: edit form, test, delete, delivery log.
pub async fn show(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Query(q): Query<ChannelQuery>,
) -> Response {
    match channel_page(&state, &who, &id, None, FormErrors::default(), None, &q).await {
        Ok(p) => render(&p),
        Err(e) => error_page(&who, "settings", &e),
    }
}

/// `POST /settings/notifications/{id}`: save the changes, or test (the
/// saved channel, or the replacement values when some are filled in,
/// without saving them).
pub async fn update(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Form(form): Form<ChannelForm>,
) -> Response {
    let replacing = !form.destination_empty();
    let def = if replacing {
        form.definition().map(Some)
    } else {
        Ok(None)
    };
    let (errors, test, status) = if form.action == "test" {
        // Replacement values not saved are tested as an edit of this
        // channel: an empty secret field means the saved secret.
        let clear_secret = form.clear_secret.is_some();
        let target = def.map(|d| {
            d.map_or_else(
                || TestTarget::Saved(id.clone()),
                |def| TestTarget::Edited {
                    id: id.clone(),
                    def,
                    clear_secret,
                },
            )
        });
        match target {
            Ok(t) => match api::test_channel(&state, &who, t).await {
                Ok(t) => (FormErrors::default(), Some(t.into()), StatusCode::OK),
                Err(e) => {
                    let errs = FormErrors::from_api(&e, &FIELDS);
                    let shown = TestShown::refused(&errs);
                    (errs, Some(shown), status_of(&e))
                }
            },
            Err(errs) => {
                let shown = TestShown::refused(&errs);
                (errs, Some(shown), StatusCode::BAD_REQUEST)
            }
        }
    } else {
        match def {
            Ok(definition) => {
                let body = ChannelBody {
                    name: Some(form.name.clone()),
                    enabled: Some(form.is_enabled()),
                    definition,
                    clear_secret: Some(form.clear_secret.is_some()),
                };
                match api::update_channel(&state, &who, id.clone(), body).await {
                    Ok(_) => {
                        return Redirect::to(&format!("/settings/notifications/{id}?done=saved"))
                            .into_response();
                    }
                    Err(e) => (FormErrors::from_api(&e, &FIELDS), None, status_of(&e)),
                }
            }
            Err(errs) => (errs, None, StatusCode::BAD_REQUEST),
        }
    };
    let q = ChannelQuery::default();
    match channel_page(&state, &who, &id, Some(form), errors, test, &q).await {
        Ok(p) => with_status(render(&p), status),
        Err(e) => error_page(&who, "settings", &e),
    }
}

/// `enabled=1|0`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EnableForm {
    pub enabled: String,
}

/// `POST /settings/notifications/{id}/enabled`: enable or disable.
pub async fn set_enabled(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Form(f): Form<EnableForm>,
) -> Response {
    let on = f.enabled == "1";
    let body = ChannelBody {
        enabled: Some(on),
        ..ChannelBody::default()
    };
    match api::update_channel(&state, &who, id, body).await {
        Ok(_) => Redirect::to(if on {
            "/settings/notifications?done=enabled"
        } else {
            "/settings/notifications?done=disabled"
        })
        .into_response(),
        Err(e) => error_page(&who, "settings", &e),
    }
}

/// The delete confirmation checkbox.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConfirmForm {
    pub confirm: String,
}

/// `POST /settings/notifications/{id}/delete` (needs `confirm`).
pub async fn delete(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Path(id): Path<String>,
    Form(f): Form<ConfirmForm>,
) -> Response {
    if f.confirm.is_empty() {
        let errors = FormErrors::field("confirm", "tick the box to confirm the deletion");
        let q = ChannelQuery::default();
        return match channel_page(&state, &who, &id, None, errors, None, &q).await {
            Ok(p) => with_status(render(&p), StatusCode::BAD_REQUEST),
            Err(e) => error_page(&who, "settings", &e),
        };
    }
    match api::delete_channel(&state, &who, id).await {
        Ok(()) => Redirect::to("/settings/notifications?done=deleted").into_response(),
        Err(e) => error_page(&who, "settings", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> ChannelForm {
        ChannelForm {
            name: "ops".into(),
            kind: "webhook".into(),
            url: url.into(),
            ..ChannelForm::default()
        }
    }

    #[test]
    fn a_webhook_form_becomes_a_definition_with_its_headers_and_secret() {
        let f = ChannelForm {
            secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into(),
            headers: "X-Team: backups\n\nAuthorization: Bearer abc".into(),
            ..webhook("https://hooks.example/in")
        };
        let ChannelDef::Webhook(w) = f.definition().unwrap() else {
            panic!("a webhook")
        };
        assert_eq!(w.url, "https://hooks.example/in");
        assert!(w.secret.is_some());
        assert_eq!(w.headers.get("X-Team").map(String::as_str), Some("backups"));
        assert_eq!(w.headers.len(), 2);
    }

    #[test]
    fn form_mistakes_land_on_the_field_they_are_about() {
        assert_eq!(webhook("").definition().unwrap_err().fields[0].0, "url");
        assert_eq!(
            webhook("ftp://x").definition().unwrap_err().fields[0].0,
            "url"
        );
        let bad_secret = ChannelForm {
            secret: "not base64!".into(),
            ..webhook("https://h.example")
        };
        assert_eq!(bad_secret.definition().unwrap_err().fields[0].0, "secret");
        let bad_header = ChannelForm {
            headers: "no colon here".into(),
            ..webhook("https://h.example")
        };
        assert_eq!(bad_header.definition().unwrap_err().fields[0].0, "headers");
        let ntfy = ChannelForm {
            kind: "ntfy".into(),
            server_url: "https://ntfy.sh".into(),
            topic: "bad topic!".into(),
            ..ChannelForm::default()
        };
        assert_eq!(ntfy.definition().unwrap_err().fields[0].0, "topic");
    }

    #[test]
    fn an_edit_with_no_destination_fields_keeps_the_saved_destination() {
        let f = ChannelForm {
            name: "renamed".into(),
            kind: "webhook".into(),
            auth: "none".into(),
            ..ChannelForm::default()
        };
        assert!(f.destination_empty());
        assert!(!webhook("https://h.example").destination_empty());
    }
}
