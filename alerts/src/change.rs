//! One alert change (raised, acknowledged, resolved): inside the write
//! transaction, one delivery row per enabled channel — unless nobody was
//! told about the alert (it was raised while its host was muted) or it is
//! raised while its host is muted — and, after commit, the `rm.evt.alert.*`
//! event and the count of deliveries suppressed (by reason: a mute, a
//! maintenance window, an alert nobody was told about, a disabled channel).

use rm_bus::ids::random_token;
use rm_bus::notify::{
    AlertInfo, AlertKind, AlertState, EventData, EventType, HostInfo, NotificationEvent, Severity,
    rfc3339_utc,
};
use rm_bus::subject::Event as Evt;
use rm_store::alerts::Alert;
use rm_store::delivery::{self, NewDelivery};
use rm_store::{Conn, channels, hosts};

use crate::Ctx;
use crate::api::Suppressed;

/// A committed change to announce.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub event: Evt,
    pub host_id: String,
    pub alert_id: String,
    /// Delivery rows were written: wake the sender.
    pub queued: bool,
    /// Deliveries not queued, counted once the change committed.
    pub suppressed: Suppressed,
}

/// Where an alert is in its life.
pub(crate) fn state_of(a: &Alert) -> AlertState {
    if a.resolved_at.is_some() {
        AlertState::Resolved
    } else if a.acknowledged_at.is_some() {
        AlertState::Acknowledged
    } else {
        AlertState::Open
    }
}

fn ts(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339_utc)
}

/// The notification envelope of `alert` as it is now.
pub(crate) fn envelope(
    ctx: &Ctx,
    alert: &Alert,
    host_name: &str,
    kind: EventType,
    now: i64,
) -> NotificationEvent {
    NotificationEvent {
        kind,
        id: format!("evt_{}", random_token(12)),
        timestamp: rfc3339_utc(now),
        data: EventData {
            alert: AlertInfo {
                id: alert.id.clone(),
                kind: AlertKind::from(alert.kind.as_str()),
                severity: Severity::from(alert.severity.as_str()),
                state: state_of(alert),
                subject: alert.subject.clone(),
                message: alert.message.clone(),
                raised_at: rfc3339_utc(alert.raised_at),
                last_seen_at: rfc3339_utc(alert.last_seen_at),
                acknowledged_at: ts(alert.acknowledged_at),
                acknowledged_by: alert.acknowledged_by.clone(),
                resolved_at: ts(alert.resolved_at),
                resolved_by: alert.resolved_by.clone(),
                url: ctx
                    .ui_base_url
                    .as_ref()
                    .map(|b| format!("{}/alerts/{}", b.trim_end_matches('/'), alert.id)),
            },
            host: HostInfo {
                id: alert.host_id.clone(),
                name: host_name.to_owned(),
            },
            group: None,
        },
    }
}

fn bus_event(kind: &EventType) -> Evt {
    match kind {
        EventType::Acknowledged => Evt::AlertAcknowledged,
        EventType::Resolved => Evt::AlertResolved,
        _ => Evt::AlertRaised,
    }
}

fn outbox_event(kind: &EventType) -> &'static str {
    match kind {
        EventType::Acknowledged => "acknowledged",
        EventType::Resolved => "resolved",
        EventType::Test => "test",
        _ => "raised",
    }
}

/// Records `kind` of `alert` in the outbox (one row per enabled channel)
/// when it is to be notified (see the module doc); returns what to
/// announce after commit.
pub(crate) async fn record(
    ctx: &Ctx,
    conn: &mut Conn,
    alert: &Alert,
    kind: EventType,
    now: i64,
) -> rm_store::Result<Change> {
    let muted_by = rm_store::mutes::muted_at(conn, &alert.host_id, now).await?;
    let muted = muted_by.is_some();
    // A mute silences new alerts; what happens to an alert people were
    // already told about (acknowledged, resolved) is still sent, so their
    // view never keeps an alert open that is closed here.
    let send = alert.notified && (kind != EventType::Raised || !muted);
    let (enabled, disabled) = rm_store::channels::counts(conn).await?;
    let as_count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut suppressed = Suppressed {
        channel_disabled: as_count(disabled),
        ..Suppressed::default()
    };
    if !send {
        let n = as_count(enabled);
        match muted_by.map(|m| m.by) {
            Some(_) if kind != EventType::Raised => suppressed.never_notified = n,
            Some(rm_store::mutes::MutedBy::Mute(_)) => suppressed.host_muted = n,
            Some(rm_store::mutes::MutedBy::Maintenance(_)) => suppressed.maintenance_window = n,
            None => suppressed.never_notified = n,
        }
    }
    let mut queued = false;
    if send {
        let host_name = match hosts::get(conn, &alert.host_id).await {
            Ok(h) => h.name,
            Err(rm_store::StoreError::NotFound { .. }) => alert.host_id.clone(),
            Err(e) => return Err(e),
        };
        let env = envelope(ctx, alert, &host_name, kind.clone(), now);
        let payload = serde_json::to_string(&env).map_err(|e| rm_store::StoreError::Corrupt {
            what: "notification event",
            detail: e.to_string(),
        })?;
        for channel_id in channels::enabled_ids(conn).await? {
            let id = format!("d{}", random_token(12));
            let webhook_id = format!("msg_{}", random_token(15));
            delivery::enqueue(
                conn,
                &NewDelivery {
                    id: &id,
                    webhook_id: &webhook_id,
                    alert_id: Some(&alert.id),
                    channel_id: &channel_id,
                    event: outbox_event(&kind),
                    payload_json: &payload,
                    now,
                },
            )
            .await?;
            queued = true;
        }
    }
    tracing::info!(
        alert_id = %alert.id,
        host_id = %alert.host_id,
        kind = %alert.kind,
        subject = %alert.subject,
        event = %kind,
        muted,
        notified = alert.notified,
        queued,
        suppressed_muted = suppressed.host_muted + suppressed.maintenance_window,
        suppressed_never_notified = suppressed.never_notified,
        suppressed_disabled = suppressed.channel_disabled,
        "alert change"
    );
    Ok(Change {
        event: bus_event(&kind),
        host_id: alert.host_id.clone(),
        alert_id: alert.id.clone(),
        queued,
        suppressed,
    })
}

/// Publishes committed changes, counts what they suppressed and wakes the
/// sender if rows were queued.
pub(crate) async fn announce(ctx: &Ctx, changes: &[Change]) {
    if changes.iter().any(|c| c.queued) {
        ctx.outbox_wake.notify_one();
    }
    for c in changes {
        ctx.metrics.suppressed(&c.suppressed);
        ctx.event(c.event, &c.host_id, &c.alert_id).await;
    }
}
