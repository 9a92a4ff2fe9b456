//! Alerts (list with filters, get, acknowledge, resolve) and notification
//! channels (list, create, edit, delete, test a saved or an unsaved one),
//! the changes through the alerts role. Channel definitions are sealed to
//! the alerts role's xkey before they touch the bus.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rm_alerts::api as al;
use rm_bus::subject::SvcRole;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiQuery, Page, PageQuery, ask, page};
use crate::AppState;
use crate::auth::{Principal, RequireAdmin, RequireOperator};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertViewBody {
    pub id: String,
    pub host_id: String,
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    /// open | acknowledged | resolved
    pub state: String,
    pub job_id: Option<String>,
    pub raised_at: i64,
    pub last_seen_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub notified: bool,
}

fn view(a: rm_store::alerts::Alert) -> AlertViewBody {
    let v = al::AlertView::from(&a);
    AlertViewBody {
        id: v.id,
        host_id: v.host_id,
        kind: v.kind,
        subject: v.subject,
        severity: v.severity,
        message: v.message,
        state: v.state,
        job_id: a.job_id,
        raised_at: v.raised_at,
        last_seen_at: v.last_seen_at,
        acknowledged_at: v.acknowledged_at,
        acknowledged_by: v.acknowledged_by,
        resolved_at: v.resolved_at,
        resolved_by: v.resolved_by,
        notified: v.notified,
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AlertQuery {
    pub host: Option<String>,
    /// `open` (not resolved, the default), `unacknowledged`,
    /// `acknowledged`, `resolved` or `all`.
    pub state: Option<String>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// A checked filter: state (`None` = all), kind, severity.
pub(crate) type CheckedFilter<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Checks an alert filter's values (shared with the alerts page): the
/// state (`None` = all), kind and severity.
pub(crate) fn check_filter<'a>(
    state: Option<&'a str>,
    kind: Option<&'a str>,
    severity: Option<&'a str>,
) -> Result<CheckedFilter<'a>, ApiError> {
    let state = match state.filter(|s| !s.is_empty()) {
        None => Some("open"),
        Some("all") => None,
        Some(s) if rm_store::listing::ALERT_STATES.contains(&s) => Some(s),
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!(
                    "state must be open, unacknowledged, acknowledged, resolved or all, not {other:?}"
                ),
            ));
        }
    };
    let kind = kind.filter(|k| !k.is_empty());
    if let Some(k) = kind
        && !ALERT_KINDS.contains(&k)
    {
        return Err(ApiError::invalid(
            "kind",
            format!(
                "unknown alert kind {k:?}; one of {}",
                ALERT_KINDS.join(", ")
            ),
        ));
    }
    let severity = severity.filter(|s| !s.is_empty());
    if let Some(s) = severity
        && !SEVERITIES.contains(&s)
    {
        return Err(ApiError::invalid(
            "severity",
            format!("severity must be critical, warning or info, not {s:?}"),
        ));
    }
    Ok((state, kind, severity))
}

/// The rules' kinds, for filters.
pub(crate) const ALERT_KINDS: [&str; 7] = [
    "backup_failed",
    "backup_anomaly",
    "check_failed",
    "forget_failed",
    "prune_failed",
    "stale_schedule",
    "agent_offline",
];

pub(crate) const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

pub(crate) async fn list(
    State(state): State<AppState>,
    _: Principal,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<Page<AlertViewBody>>, ApiError> {
    let pq = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = pq.limit()?;
    let cursor = pq.cursor()?;
    let (st, kind, severity) =
        check_filter(q.state.as_deref(), q.kind.as_deref(), q.severity.as_deref())?;
    let mut conn = state.store.read().await?;
    let rows = rm_store::listing::alerts(
        &mut conn,
        &rm_store::listing::AlertFilter {
            host_id: q.host.as_deref().filter(|h| !h.is_empty()),
            state: st,
            kind,
            severity,
            before: cursor.as_ref().map(|(t, id)| (*t, id.as_str())),
        },
        limit + 1,
    )
    .await?;
    Ok(Json(page(
        rows,
        limit,
        |a| (a.raised_at, a.id.clone()),
        view,
    )))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<AlertViewBody>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(Json(view(rm_store::alerts::get(&mut conn, &id).await?)))
}

async fn change(
    state: &AppState,
    p: &Principal,
    verb: rm_bus::subject::Verb,
    id: String,
) -> Result<StatusCode, ApiError> {
    let _: serde_json::Value = ask(
        state,
        p,
        SvcRole::Alerts,
        verb,
        al::AlertRef { alert_id: id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn ack(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &p, al::ALERT_ACK, id).await
}

pub(crate) async fn resolve(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &p, al::ALERT_RESOLVE, id).await
}

/// A channel as listed: no secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelViewBody {
    pub id: String,
    pub name: String,
    /// ntfy | webhook
    pub kind: String,
    pub enabled: bool,
    #[schema(value_type = Option<Object>)]
    pub summary: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<al::ChannelView> for ChannelViewBody {
    fn from(c: al::ChannelView) -> Self {
        Self {
            id: c.id,
            name: c.name,
            kind: c.kind,
            enabled: c.enabled,
            summary: c.summary,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Every channel (no secrets): the API's list and the notifications page.
pub async fn channel_list(
    state: &AppState,
    p: &Principal,
) -> Result<Vec<ChannelViewBody>, ApiError> {
    let list: al::ChannelList = ask(
        state,
        p,
        SvcRole::Alerts,
        al::CHANNEL_LIST,
        serde_json::json!({}),
    )
    .await?;
    Ok(list.channels.into_iter().map(Into::into).collect())
}

pub(crate) async fn channels(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<ChannelViewBody>>, ApiError> {
    Ok(Json(channel_list(&state, &p).await?))
}

async fn seal(
    state: &AppState,
    p: &Principal,
    def: &rm_bus::notify::ChannelDef,
) -> Result<al::SealedChannel, ApiError> {
    def.validate()
        .map_err(|e| ApiError::invalid("definition", e.to_string()))?;
    let key: al::PubKey = ask(state, p, SvcRole::Alerts, al::PUBKEY, serde_json::json!({})).await?;
    al::SealedChannel::seal(def, &key.xkey)
        .map_err(|e| ApiError::internal(format!("sealing the channel: {e}")))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ChannelBody {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// `{"type": "ntfy", ...}` or `{"type": "webhook", ...}`, secrets included.
    #[schema(value_type = Object)]
    pub definition: Option<rm_bus::notify::ChannelDef>,
    /// On update: drop the webhook's saved signing secret. A new webhook
    /// definition without a `secret` otherwise keeps the saved one.
    pub clear_secret: Option<bool>,
}

/// Creates a channel (the API's and the notifications page's one way).
pub async fn create_channel(
    state: &AppState,
    p: &Principal,
    body: ChannelBody,
) -> Result<ChannelViewBody, ApiError> {
    let name = body
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("name", "a channel needs a name"))?;
    let def = body
        .definition
        .ok_or_else(|| ApiError::invalid("definition", "a channel needs a definition"))?;
    let definition = seal(state, p, &def).await?;
    let created: al::ChannelView = ask(
        state,
        p,
        SvcRole::Alerts,
        al::CHANNEL_CREATE,
        al::ChannelCreate {
            name,
            enabled: body.enabled.unwrap_or(true),
            definition,
        },
    )
    .await?;
    Ok(created.into())
}

pub(crate) async fn channel_create(
    State(state): State<AppState>,
    p: RequireAdmin,
    ApiJson(body): ApiJson<ChannelBody>,
) -> Result<(StatusCode, Json<ChannelViewBody>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(create_channel(&state, &p, body).await?),
    ))
}

/// Edits a channel: name, enabled, and (when given) the whole definition,
/// secrets included (the API's and the notifications page's one way).
pub async fn update_channel(
    state: &AppState,
    p: &Principal,
    id: String,
    body: ChannelBody,
) -> Result<ChannelViewBody, ApiError> {
    let definition = match &body.definition {
        Some(def) => Some(seal(state, p, def).await?),
        None => None,
    };
    let updated: al::ChannelView = ask(
        state,
        p,
        SvcRole::Alerts,
        al::CHANNEL_UPDATE,
        al::ChannelUpdate {
            channel_id: id,
            name: body.name,
            enabled: body.enabled,
            definition,
            clear_secret: body.clear_secret.unwrap_or(false),
        },
    )
    .await?;
    Ok(updated.into())
}

pub(crate) async fn channel_update(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChannelBody>,
) -> Result<Json<ChannelViewBody>, ApiError> {
    Ok(Json(update_channel(&state, &p, id, body).await?))
}

/// Deletes a channel (the API's and the notifications page's one way).
pub async fn delete_channel(state: &AppState, p: &Principal, id: String) -> Result<(), ApiError> {
    let _: al::Done = ask(
        state,
        p,
        SvcRole::Alerts,
        al::CHANNEL_DELETE,
        al::ChannelRef { channel_id: id },
    )
    .await?;
    Ok(())
}

pub(crate) async fn channel_delete(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_channel(&state, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelTestView {
    pub ok: bool,
    pub outcome: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub notifier: Option<String>,
}

/// What a test send tries: a saved channel, or a definition that is not
/// saved (and is not saved by testing it).
#[derive(Debug, Clone)]
pub enum TestTarget {
    Saved(String),
    Unsaved(rm_bus::notify::ChannelDef),
    /// A saved channel's edit, not saved: a webhook secret left out is the
    /// saved one unless `clear_secret`.
    Edited {
        id: String,
        def: rm_bus::notify::ChannelDef,
        clear_secret: bool,
    },
}

/// One test notification through the real notifier path (the API's and
/// the notifications page's one way).
pub async fn test_channel(
    state: &AppState,
    p: &Principal,
    target: TestTarget,
) -> Result<ChannelTestView, ApiError> {
    let req = match target {
        TestTarget::Saved(id) => al::ChannelTest {
            channel_id: Some(id),
            definition: None,
            clear_secret: false,
        },
        TestTarget::Unsaved(def) => al::ChannelTest {
            channel_id: None,
            definition: Some(seal(state, p, &def).await?),
            clear_secret: false,
        },
        TestTarget::Edited {
            id,
            def,
            clear_secret,
        } => al::ChannelTest {
            channel_id: Some(id),
            definition: Some(seal(state, p, &def).await?),
            clear_secret,
        },
    };
    let r: al::ChannelTestResult = ask(state, p, SvcRole::Alerts, al::CHANNEL_TEST, req).await?;
    Ok(ChannelTestView {
        ok: r.ok,
        outcome: r.outcome,
        status: r.status,
        latency_ms: r.latency_ms,
        error: r.error,
        notifier: r.notifier,
    })
}

pub(crate) async fn channel_test(
    State(state): State<AppState>,
    p: RequireAdmin,
    Path(id): Path<String>,
) -> Result<Json<ChannelTestView>, ApiError> {
    Ok(Json(test_channel(&state, &p, TestTarget::Saved(id)).await?))
}

pub(crate) async fn channel_test_unsaved(
    State(state): State<AppState>,
    p: RequireAdmin,
    ApiJson(body): ApiJson<ChannelBody>,
) -> Result<Json<ChannelTestView>, ApiError> {
    let def = body
        .definition
        .ok_or_else(|| ApiError::invalid("definition", "give the channel definition to test"))?;
    Ok(Json(
        test_channel(&state, &p, TestTarget::Unsaved(def)).await?,
    ))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MuteBody {
    /// Until when (Unix milliseconds) nobody is notified about this host.
    pub until_ms: i64,
    pub reason: Option<String>,
}

pub(crate) async fn mute(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(host_id): Path<String>,
    ApiJson(body): ApiJson<MuteBody>,
) -> Result<StatusCode, ApiError> {
    if body.until_ms <= state.now() {
        return Err(ApiError::invalid(
            "until_ms",
            "the mute must end in the future",
        ));
    }
    let _: al::Done = ask(
        &state,
        &p,
        SvcRole::Alerts,
        al::MUTE_SET,
        al::MuteSet {
            host_id,
            until_ms: body.until_ms,
            reason: body.reason,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn unmute(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(host_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _: al::Done = ask(
        &state,
        &p,
        SvcRole::Alerts,
        al::MUTE_CLEAR,
        al::HostRef { host_id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn history(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<crate::views::alert::AlertDetail>, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(Json(
        crate::views::alert::load(&mut conn, &id, state.now()).await?,
    ))
}

pub(crate) async fn host_mutes(
    State(state): State<AppState>,
    _: Principal,
    Path(host_id): Path<String>,
) -> Result<Json<crate::views::alert::HostMutes>, ApiError> {
    let mut conn = state.store.read().await?;
    rm_store::hosts::get(&mut conn, &host_id).await?;
    Ok(Json(
        crate::views::alert::host_mutes(&mut conn, &host_id, state.now()).await?,
    ))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct WindowBody {
    /// Five-field cron expression: when each window starts.
    pub cron: String,
    /// IANA time zone of the cron expression (default UTC).
    pub timezone: Option<String>,
    /// How long each window lasts (60 s to 24 h).
    pub duration_secs: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowCreated {
    pub window_id: String,
}

pub(crate) async fn window_add(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(host_id): Path<String>,
    ApiJson(body): ApiJson<WindowBody>,
) -> Result<(StatusCode, Json<WindowCreated>), ApiError> {
    let timezone = body.timezone.unwrap_or_else(|| "UTC".into());
    check_window(&body.cron, &timezone, body.duration_secs)?;
    let added: al::MaintenanceAdded = ask(
        &state,
        &p,
        SvcRole::Alerts,
        al::MAINTENANCE_ADD,
        al::MaintenanceAdd {
            host_id,
            cron: body.cron,
            timezone,
            duration_secs: body.duration_secs,
            reason: body.reason,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(WindowCreated {
            window_id: added.window_id,
        }),
    ))
}

/// Which field of a maintenance window is wrong, if any (the page and
/// the API both check here; the alerts role checks again).
pub(crate) fn check_window(cron: &str, timezone: &str, duration_secs: i64) -> Result<(), ApiError> {
    if let Err(e) = rm_cron::CronSchedule::parse(cron.trim(), timezone.trim()) {
        return Err(match e {
            rm_cron::CronError::TimeZone(_) => ApiError::invalid(
                "timezone",
                format!("Time zone: {e} (an IANA name such as Europe/Berlin, or UTC)"),
            ),
            rm_cron::CronError::Expression { .. } => {
                ApiError::invalid("cron", format!("Cron: {e}"))
            }
        });
    }
    if !(60..=al::MAINTENANCE_MAX_SECS).contains(&duration_secs) {
        return Err(ApiError::invalid(
            "duration_secs",
            format!(
                "a window lasts from 1 minute to {} hours",
                al::MAINTENANCE_MAX_SECS / 3600
            ),
        ));
    }
    Ok(())
}

/// `NotFound` unless `window_id` is a maintenance window of `host_id`.
pub(crate) async fn window_of_host(
    state: &AppState,
    host_id: &str,
    window_id: &str,
) -> Result<(), ApiError> {
    let mut conn = state.store.read().await?;
    match rm_store::mutes::get_maintenance(&mut conn, window_id).await {
        Ok(w) if w.host_id == host_id => Ok(()),
        Ok(_) => Err(rm_store::StoreError::NotFound {
            what: "maintenance window",
            id: window_id.to_owned(),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn window_delete(
    State(state): State<AppState>,
    p: RequireOperator,
    Path((host_id, window_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    window_of_host(&state, &host_id, &window_id).await?;
    let _: al::Done = ask(
        &state,
        &p,
        SvcRole::Alerts,
        al::MAINTENANCE_DELETE,
        al::MaintenanceRef { window_id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
