//! The alerts pages: `/alerts` (filters by state, host, kind and severity
//! in the query string; acknowledge, resolve, mute a host), `/alerts/<id>`
//! (one alert's history and delivery attempts), and the mute and
//! maintenance-window forms (also on the host page). Every change is a
//! request to the alerts role; the page and its JSON twin share
//! `views::alert` and the store's listing.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use rm_bus::subject::{SvcRole, Verb};
use serde::Deserialize;

use crate::AppState;
use crate::api::alerts::{ALERT_KINDS, SEVERITIES, check_filter};
use crate::auth::{Principal, RequireOperator, RequireViewer};
use crate::error::ApiError;
use crate::svc;
use crate::ui::settings::FormErrors;
use crate::ui::{Layout, can_operate, error_page, open_alerts, render};
use crate::views::alert::{self, AlertDetail, HostMutes};

/// `?state=&host=&kind=&severity=`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AlertFilter {
    pub state: String,
    pub host: String,
    pub kind: String,
    pub severity: String,
}

impl AlertFilter {
    /// This filter as a query string with `state` replaced.
    pub fn with_state(&self, state: &str) -> String {
        let mut parts = vec![format!("state={}", enc(state))];
        for (k, v) in [
            ("host", &self.host),
            ("kind", &self.kind),
            ("severity", &self.severity),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", enc(v)));
            }
        }
        format!("/alerts?{}", parts.join("&"))
    }

    /// The current state word (`open` by default).
    pub fn state_or_open(&self) -> &str {
        if self.state.is_empty() {
            "open"
        } else {
            &self.state
        }
    }

    /// This page's own address (where forms come back to).
    pub fn here(&self) -> String {
        self.with_state(self.state_or_open())
    }

    pub fn is_narrowed(&self) -> bool {
        !(self.host.is_empty() && self.kind.is_empty() && self.severity.is_empty())
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One alert as the list shows it.
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub alert: rm_store::alerts::Alert,
    pub host_name: String,
}

impl AlertRow {
    pub fn state_word(&self) -> &'static str {
        alert::state_of(&self.alert)
    }
    pub fn state_class(&self) -> &'static str {
        alert::state_class(self.state_word(), &self.alert.severity)
    }
    pub fn title(&self) -> String {
        rm_bus::notify::AlertKind::from(self.alert.kind.as_str())
            .label()
            .to_owned()
    }
}

#[derive(Template)]
#[template(path = "alerts.html")]
pub(crate) struct AlertsPage {
    pub(crate) layout: Layout,
    pub(crate) alerts: Vec<AlertRow>,
    pub(crate) filter: AlertFilter,
    /// Suggestions for the host fields: the listed alerts' hosts.
    pub(crate) hosts: Vec<(String, String)>,
    /// What the host filter shows: the chosen host's name, or what was typed.
    pub(crate) host_label: String,
    pub(crate) kinds: [&'static str; 7],
    pub(crate) severities: [&'static str; 3],
    pub(crate) states: [(&'static str, &'static str); 5],
    /// The filtered host's mutes, when one host is shown.
    pub(crate) mutes: Option<HostMutes>,
    pub(crate) last_resolved_at: Option<i64>,
    pub(crate) can_operate: bool,
    pub(crate) now: i64,
    /// The mute form as refused, or empty.
    pub(crate) forms: MuteForms,
}

/// Alerts shown at most.
const ALERTS_SHOWN: i64 = 200;

pub(crate) const STATES: [(&str, &str); 5] = [
    ("open", "Open"),
    ("unacknowledged", "Not acknowledged"),
    ("acknowledged", "Acknowledged"),
    ("resolved", "Resolved"),
    ("all", "All"),
];

/// `GET /alerts`.
pub async fn list(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(filter): Query<AlertFilter>,
) -> Response {
    list_with(&state, &who, filter, MuteForms::default()).await
}

/// The alerts page with `forms` in its mute form (a refused one: 422).
async fn list_with(
    state: &AppState,
    who: &Principal,
    filter: AlertFilter,
    forms: MuteForms,
) -> Response {
    let now = state.now();
    let loaded = async {
        let (st, kind, severity) = check_filter(
            Some(filter.state.as_str()),
            Some(filter.kind.as_str()),
            Some(filter.severity.as_str()),
        )?;
        let mut conn = state.store.read().await?;
        // The host filter takes an id or an exact name; only the names of
        // the listed alerts' hosts are loaded, never the whole fleet's.
        let resolved = match filter.host.trim() {
            "" => None,
            h => rm_store::hosts::resolve(&mut conn, h).await?,
        };
        let host = resolved
            .as_deref()
            .or((!filter.host.is_empty()).then_some(filter.host.as_str()));
        let list = rm_store::listing::alerts(
            &mut conn,
            &rm_store::listing::AlertFilter {
                host_id: host,
                state: st,
                kind,
                severity,
                before: None,
            },
            ALERTS_SHOWN,
        )
        .await?;
        let mut ids: Vec<&str> = list.iter().map(|a| a.host_id.as_str()).collect();
        ids.extend(resolved.as_deref());
        ids.sort_unstable();
        ids.dedup();
        let mut hosts = rm_store::hosts::names_of(&mut conn, &ids).await?;
        hosts.sort_by(|a, b| a.1.cmp(&b.1));
        let names: std::collections::HashMap<String, String> = hosts.iter().cloned().collect();
        let rows = list
            .into_iter()
            .map(|a| AlertRow {
                host_name: names
                    .get(a.host_id.as_str())
                    .map_or_else(|| a.host_id.clone(), Clone::clone),
                alert: a,
            })
            .collect::<Vec<_>>();
        let mutes = match resolved.as_deref() {
            Some(h) => Some(alert::host_mutes(&mut conn, h, now).await?),
            None => None,
        };
        let host_label = resolved
            .as_ref()
            .and_then(|id| names.get(id).cloned())
            .unwrap_or_else(|| filter.host.clone());
        let last_resolved_at = rm_store::listing::last_resolved_at(&mut conn).await?;
        Ok::<_, ApiError>((rows, hosts, host_label, mutes, last_resolved_at))
    }
    .await;
    let status = forms.status();
    match loaded {
        Ok((alerts, hosts, host_label, mutes, last_resolved_at)) => with_status(
            render(&AlertsPage {
                layout: Layout::new(who, "alerts", "alerts", open_alerts(state).await),
                can_operate: can_operate(who),
                alerts,
                filter,
                hosts,
                host_label,
                kinds: ALERT_KINDS,
                severities: SEVERITIES,
                states: STATES,
                mutes,
                last_resolved_at,
                now,
                forms,
            }),
            status,
        ),
        Err(e) => error_page(who, "alerts", &e),
    }
}

/// `resp` with `status` when one is given (a refused form).
pub(crate) fn with_status(mut resp: Response, status: Option<StatusCode>) -> Response {
    if let Some(s) = status
        && resp.status().is_success()
    {
        *resp.status_mut() = s;
    }
    resp
}

#[derive(Template)]
#[template(path = "alert.html")]
pub(crate) struct AlertPage {
    pub(crate) layout: Layout,
    pub(crate) a: AlertDetail,
    pub(crate) mutes: HostMutes,
    pub(crate) can_operate: bool,
    pub(crate) here: String,
    pub(crate) forms: MuteForms,
}

/// `GET /alerts/{id}`.
pub async fn page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Path(id): Path<String>,
) -> Response {
    page_with(&state, &who, &id, MuteForms::default()).await
}

/// An alert's page with `forms` in its mute form (a refused one: 422).
async fn page_with(state: &AppState, who: &Principal, id: &str, forms: MuteForms) -> Response {
    let now = state.now();
    let loaded = async {
        let mut conn = state.store.read().await?;
        let a = alert::load(&mut conn, id, now).await?;
        let mutes = alert::host_mutes(&mut conn, &a.host_id, now).await?;
        Ok::<_, ApiError>((a, mutes))
    }
    .await;
    let status = forms.status();
    match loaded {
        Ok((a, mutes)) => with_status(
            render(&AlertPage {
                layout: Layout::new(who, "alerts", "alerts", open_alerts(state).await),
                can_operate: can_operate(who),
                here: format!("/alerts/{}", a.id),
                a,
                mutes,
                forms,
            }),
            status,
        ),
        Err(e) => error_page(who, "alerts", &e),
    }
}

/// Where to go back to after a change.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BackTo {
    pub back: String,
}

/// Same-site paths of the alerts and host pages only.
fn back(to: &str) -> String {
    let safe = (to.starts_with("/alerts") || to.starts_with("/hosts/"))
        && !to.starts_with("//")
        && !to.contains(['\\', '\r', '\n']);
    if safe {
        to.to_owned()
    } else {
        "/alerts".into()
    }
}

async fn ask<B: serde::Serialize>(
    state: &AppState,
    who: &Principal,
    verb: Verb,
    body: B,
) -> Result<serde_json::Value, ApiError> {
    Ok(svc::call(
        &state.bus,
        SvcRole::Alerts,
        verb,
        who.actor(),
        body,
        state.svc_timeout,
    )
    .await?)
}

async fn alert_action(
    state: &AppState,
    who: &Principal,
    verb: Verb,
    id: String,
    to: &BackTo,
) -> Response {
    match ask(state, who, verb, rm_alerts::api::AlertRef { alert_id: id }).await {
        Ok(_) => Redirect::to(&back(&to.back)).into_response(),
        Err(e) => error_page(who, "alerts", &e),
    }
}

/// `POST /alerts/{id}/ack`.
pub async fn ack(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(to): Form<BackTo>,
) -> Response {
    alert_action(&state, &who, rm_alerts::api::ALERT_ACK, id, &to).await
}

/// `POST /alerts/{id}/resolve`.
pub async fn resolve(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(to): Form<BackTo>,
) -> Response {
    alert_action(&state, &who, rm_alerts::api::ALERT_RESOLVE, id, &to).await
}

/// The durations the mute form offers, in minutes.
pub const MUTE_DURATIONS: [(&str, &str); 5] = [
    ("60", "1 hour"),
    ("240", "4 hours"),
    ("720", "12 hours"),
    ("1440", "1 day"),
    ("10080", "1 week"),
];

/// The mute form as the operator filled it in, and what was wrong with it.
#[derive(Debug, Clone, Default)]
pub struct MuteInput {
    pub host: String,
    pub for_mins: String,
    pub until: String,
    /// The operator's time zone (the browser's, filled in by the script).
    pub tz: String,
    pub reason: String,
    pub errors: FormErrors,
}

impl MuteInput {
    /// The zone the form reads "until" in: the one sent, or the server's.
    pub fn tz_or_server(&self) -> String {
        if self.tz.trim().is_empty() {
            crate::ui::fmt::server_zone()
        } else {
            self.tz.trim().to_owned()
        }
    }
}

/// The maintenance-window form as the operator filled it in.
#[derive(Debug, Clone)]
pub struct WindowInput {
    pub cron: String,
    pub timezone: String,
    pub duration_mins: String,
    pub reason: String,
    pub errors: FormErrors,
}

impl Default for WindowInput {
    fn default() -> Self {
        Self {
            cron: String::new(),
            timezone: "UTC".into(),
            duration_mins: "60".into(),
            reason: String::new(),
            errors: FormErrors::default(),
        }
    }
}

/// What a page's mute and maintenance-window forms show: empty, or what
/// was refused with the reason.
#[derive(Debug, Clone, Default)]
pub struct MuteForms {
    pub mute: MuteInput,
    pub window: WindowInput,
}

impl MuteForms {
    /// 422 when a form was refused for a field, 4xx/502 for the rest.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        let refused = |e: &FormErrors| {
            (!e.is_empty()).then_some(if e.fields.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            })
        };
        refused(&self.mute.errors).or_else(|| refused(&self.window.errors))
    }

    /// `aria-invalid` and `aria-describedby` for a mute form field.
    pub fn mute_attrs(&self, field: &str) -> String {
        field_attrs(&self.mute.errors, field)
    }

    /// `aria-invalid` and `aria-describedby` for a window form field.
    pub fn window_attrs(&self, field: &str) -> String {
        field_attrs(&self.window.errors, field)
    }
}

fn field_attrs(errors: &FormErrors, field: &str) -> String {
    if errors.get(field).is_some() {
        format!(r#" aria-invalid="true" aria-describedby="{field}-error""#)
    } else {
        String::new()
    }
}

/// The mute form: for a duration (`for_mins`) or until a time (`until`,
/// `YYYY-MM-DDTHH:MM` from a `datetime-local` input, in the zone `tz`: the
/// browser's, filled in by the script; the server's when empty).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MuteForm {
    pub host: String,
    pub for_mins: String,
    pub until: String,
    pub tz: String,
    pub reason: String,
    pub back: String,
}

/// When a mute form's mute ends, or which field is wrong.
pub(crate) fn mute_until(f: &MuteForm, now: i64) -> Result<i64, ApiError> {
    if !f.until.trim().is_empty() {
        let s = f.until.trim();
        let dt: jiff::civil::DateTime = s.parse().map_err(|_| {
            ApiError::invalid(
                "until",
                format!("{s:?} is not a date and time (YYYY-MM-DDTHH:MM)"),
            )
        })?;
        let zone_name = if f.tz.trim().is_empty() {
            crate::ui::fmt::server_zone()
        } else {
            f.tz.trim().to_owned()
        };
        let zone = jiff::tz::TimeZone::get(&zone_name).map_err(|_| {
            ApiError::invalid(
                "until",
                format!("unknown time zone {zone_name:?} for the time to mute until"),
            )
        })?;
        let at = dt
            .to_zoned(zone)
            .map_err(|e| ApiError::invalid("until", e.to_string()))?
            .timestamp()
            .as_millisecond();
        if at <= now {
            return Err(ApiError::invalid(
                "until",
                "the mute must end in the future",
            ));
        }
        return Ok(at);
    }
    let mins: i64 = f.for_mins.trim().parse().map_err(|_| {
        ApiError::invalid(
            "for_mins",
            "choose how long to mute, or a time to mute until",
        )
    })?;
    if !(1..=90 * 24 * 60).contains(&mins) {
        return Err(ApiError::invalid(
            "for_mins",
            "Mute for: a mute lasts from 1 minute to 90 days",
        ));
    }
    Ok(now + mins * 60_000)
}

/// `POST /alerts/mute`: mute a host.
pub async fn mute(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Form(f): Form<MuteForm>,
) -> Response {
    let done = async {
        if f.host.trim().is_empty() {
            return Err(ApiError::invalid("host", "Host: choose the host to mute"));
        }
        let host_id = {
            let mut conn = state.store.read().await?;
            rm_store::hosts::resolve(&mut conn, f.host.trim())
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        "host",
                        format!("Host: no host is named {:?}", f.host.trim()),
                    )
                })?
        };
        let until_ms = mute_until(&f, state.now())?;
        ask(
            &state,
            &who,
            rm_alerts::api::MUTE_SET,
            rm_alerts::api::MuteSet {
                host_id,
                until_ms,
                reason: Some(f.reason.clone()).filter(|r| !r.trim().is_empty()),
            },
        )
        .await
    }
    .await;
    match done {
        Ok(_) => Redirect::to(&back(&f.back)).into_response(),
        Err(e) => {
            let forms = MuteForms {
                mute: MuteInput {
                    errors: FormErrors::from_api(&e, &["host", "for_mins", "until", "reason"]),
                    host: f.host,
                    tz: f.tz,
                    for_mins: f.for_mins,
                    until: f.until,
                    reason: f.reason,
                },
                ..MuteForms::default()
            };
            refused_on(&state, &who, &back(&f.back), forms).await
        }
    }
}

/// The page `to` (a [`back`] path: a host, an alert or the alerts list)
/// rendered again with a refused form.
async fn refused_on(state: &AppState, who: &Principal, to: &str, forms: MuteForms) -> Response {
    let path = to.split('#').next().unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/hosts/") {
        let id = rest.split(['/', '?']).next().unwrap_or_default();
        return crate::ui::pages::host_page_with(state, who, id, None, forms).await;
    }
    if let Some(rest) = path.strip_prefix("/alerts/") {
        let id = rest.split(['/', '?']).next().unwrap_or_default();
        return page_with(state, who, id, forms).await;
    }
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let filter: AlertFilter = serde_urlencoded::from_str(query).unwrap_or_default();
    list_with(state, who, filter, forms).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HostForm {
    pub host: String,
    pub back: String,
}

/// `POST /alerts/unmute`: end a host's mute now.
pub async fn unmute(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Form(f): Form<HostForm>,
) -> Response {
    match ask(
        &state,
        &who,
        rm_alerts::api::MUTE_CLEAR,
        rm_alerts::api::HostRef {
            host_id: f.host.clone(),
        },
    )
    .await
    {
        Ok(_) => Redirect::to(&back(&f.back)).into_response(),
        Err(e) => error_page(&who, "alerts", &e),
    }
}

/// The maintenance-window form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WindowForm {
    pub cron: String,
    pub timezone: String,
    pub duration_mins: String,
    pub reason: String,
}

/// `POST /hosts/{id}/maintenance`: add a recurring maintenance window.
pub async fn window_add(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(host): Path<String>,
    Form(f): Form<WindowForm>,
) -> Response {
    let done = async {
        let mins: i64 = f.duration_mins.trim().parse().map_err(|_| {
            ApiError::invalid(
                "duration_mins",
                "Minutes: how many minutes each window lasts (a whole number)",
            )
        })?;
        let timezone = if f.timezone.trim().is_empty() {
            "UTC".to_owned()
        } else {
            f.timezone.trim().to_owned()
        };
        crate::api::alerts::check_window(&f.cron, &timezone, mins.saturating_mul(60)).map_err(
            |mut e| {
                if e.field.as_deref() == Some("duration_secs") {
                    e.field = Some("duration_mins".into());
                    e.message = format!("Minutes: {}", e.message);
                }
                e
            },
        )?;
        ask(
            &state,
            &who,
            rm_alerts::api::MAINTENANCE_ADD,
            rm_alerts::api::MaintenanceAdd {
                host_id: host.clone(),
                cron: f.cron.clone(),
                timezone,
                duration_secs: mins.saturating_mul(60),
                reason: Some(f.reason.clone()).filter(|r| !r.trim().is_empty()),
            },
        )
        .await
    }
    .await;
    match done {
        Ok(_) => Redirect::to(&format!("/hosts/{host}#mutes")).into_response(),
        Err(e) => {
            let forms = MuteForms {
                window: WindowInput {
                    errors: FormErrors::from_api(
                        &e,
                        &["cron", "timezone", "duration_mins", "reason"],
                    ),
                    cron: f.cron,
                    timezone: f.timezone,
                    duration_mins: f.duration_mins,
                    reason: f.reason,
                },
                ..MuteForms::default()
            };
            crate::ui::pages::host_page_with(&state, &who, &host, None, forms).await
        }
    }
}

/// `POST /hosts/{id}/maintenance/{window}/delete`.
pub async fn window_delete(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path((host, window)): Path<(String, String)>,
) -> Response {
    let done = async {
        crate::api::alerts::window_of_host(&state, &host, &window).await?;
        ask(
            &state,
            &who,
            rm_alerts::api::MAINTENANCE_DELETE,
            rm_alerts::api::MaintenanceRef { window_id: window },
        )
        .await
    }
    .await;
    match done {
        Ok(_) => Redirect::to(&format!("/hosts/{host}#mutes")).into_response(),
        Err(e) => error_page(&who, "hosts", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mute_ends_after_a_duration_or_at_a_time_and_bad_input_names_the_field() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00Z
        let f = |for_mins: &str, until: &str| MuteForm {
            host: "h1".into(),
            for_mins: for_mins.into(),
            until: until.into(),
            tz: "UTC".into(),
            ..MuteForm::default()
        };
        assert_eq!(mute_until(&f("60", ""), now).unwrap(), now + 3_600_000);
        assert_eq!(
            mute_until(&f("60", "2026-01-01T06:30"), now).unwrap(),
            now + 6 * 3_600_000 + 30 * 60_000,
            "a time wins over a duration, read as UTC"
        );
        assert_eq!(
            mute_until(&f("", "tomorrow"), now)
                .unwrap_err()
                .field
                .as_deref(),
            Some("until")
        );
        assert_eq!(
            mute_until(&f("", "2025-12-31T23:00"), now)
                .unwrap_err()
                .field
                .as_deref(),
            Some("until")
        );
        assert_eq!(
            mute_until(&f("", ""), now).unwrap_err().field.as_deref(),
            Some("for_mins")
        );
        assert_eq!(
            mute_until(&f("0", ""), now).unwrap_err().field.as_deref(),
            Some("for_mins")
        );
    }

    #[test]
    fn until_is_read_in_the_operators_time_zone() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00Z
        let f = |until: &str, tz: &str| MuteForm {
            host: "h1".into(),
            until: until.into(),
            tz: tz.into(),
            ..MuteForm::default()
        };
        assert_eq!(
            mute_until(&f("2026-01-01T10:30", "Asia/Tokyo"), now).unwrap(),
            now + 90 * 60_000,
            "10:30 in Tokyo is 01:30 UTC"
        );
        assert_eq!(
            mute_until(&f("2025-12-31T20:00", "America/New_York"), now).unwrap(),
            now + 3_600_000,
            "20:00 in New York (UTC-5) is 01:00 UTC the next day"
        );
        assert_eq!(
            mute_until(&f("2026-01-01T06:30", "Asia/Tokyo"), now)
                .unwrap_err()
                .field
                .as_deref(),
            Some("until"),
            "06:30 in Tokyo has passed already"
        );
        let e = mute_until(&f("2026-01-01T06:30", "Mars/Olympus"), now).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("until"));
        assert!(e.message.contains("Mars/Olympus"), "{}", e.message);
    }

    #[test]
    fn filters_keep_each_other_and_back_links_stay_on_site() {
        let f = AlertFilter {
            state: String::new(),
            host: "h 1".into(),
            kind: "backup_failed".into(),
            severity: String::new(),
        };
        assert_eq!(f.here(), "/alerts?state=open&host=h%201&kind=backup_failed");
        assert_eq!(
            f.with_state("resolved"),
            "/alerts?state=resolved&host=h%201&kind=backup_failed"
        );
        assert_eq!(back("/hosts/h1#mutes"), "/hosts/h1#mutes");
        assert_eq!(back("https://evil.example/"), "/alerts");
        assert_eq!(back("//evil.example/alerts"), "/alerts");
    }
}
