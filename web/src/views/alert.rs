//! One alert with its history (`/alerts/<id>` and
//! `GET /api/v1/alerts/<id>/history`): what happened, where it is in its
//! life, what is behind it, and every delivery attempt; and a host's mutes
//! (`/hosts/<id>`, the alerts page, `GET /api/v1/hosts/<id>/mutes`).

use rm_store::mutes::{self, MutedBy};
use rm_store::{alerts, channels, hosts, listing};
use serde::Serialize;
use utoipa::ToSchema;

/// Delivery attempts shown on an alert's page at most.
const ATTEMPTS_SHOWN: i64 = 200;

/// One step of an alert's life.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Step {
    pub at: i64,
    /// `raised`, `acknowledged` or `resolved`.
    pub what: String,
    /// Who did it (`system` for the rule engine).
    pub by: String,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub at: i64,
    pub channel_id: String,
    pub channel_name: String,
    /// `raised`, `acknowledged` or `resolved`.
    pub event: String,
    /// `delivered`, `retryable`, `failed`, `no_responder`, `timeout`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub attempt: i64,
    pub error: Option<String>,
}

impl Attempt {
    pub fn class(&self) -> &'static str {
        match self.outcome.as_str() {
            "delivered" => "s-ok",
            "failed" => "s-fail",
            _ => "s-warn",
        }
    }
}

/// What is behind an alert: the job, the schedule or the host.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Behind {
    pub label: String,
    pub href: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertDetail {
    pub id: String,
    pub host_id: String,
    pub host_name: String,
    pub kind: String,
    pub title: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    pub job_id: Option<String>,
    pub raised_at: i64,
    pub last_seen_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    /// Raised while its host was muted and nobody has been told (yet).
    pub muted: bool,
    pub behind: Vec<Behind>,
    pub steps: Vec<Step>,
    /// Newest first.
    pub attempts: Vec<Attempt>,
    pub now: i64,
}

impl AlertDetail {
    pub fn state_class(&self) -> &'static str {
        state_class(&self.state, &self.severity)
    }
}

/// `s-…` class of an alert's state and severity.
pub fn state_class(state: &str, severity: &str) -> &'static str {
    match state {
        "resolved" => "s-ok",
        "acknowledged" => "s-warn",
        _ if severity == "critical" => "s-fail",
        _ => "s-warn",
    }
}

/// The state word of an alert row.
pub fn state_of(a: &alerts::Alert) -> &'static str {
    match (&a.resolved_at, &a.acknowledged_at) {
        (Some(_), _) => "resolved",
        (None, Some(_)) => "acknowledged",
        (None, None) => "open",
    }
}

/// What is behind an alert, as links.
pub fn behind(a: &alerts::Alert, repo_name: Option<&str>) -> Vec<Behind> {
    let mut out = Vec::new();
    if let Some(j) = &a.job_id {
        out.push(Behind {
            label: "the job".into(),
            href: format!("/jobs/{j}"),
        });
    }
    if a.kind == "stale_schedule" {
        out.push(Behind {
            label: "the schedule".into(),
            href: format!("/hosts/{}#schedules", a.host_id),
        });
    }
    if let Some(name) = repo_name {
        out.push(Behind {
            label: format!("repository {name}"),
            href: "/repositories".into(),
        });
    }
    out
}

/// Loads an alert with its history; `NotFound` for an unknown id.
pub async fn load(conn: &mut rm_store::Conn, id: &str, now: i64) -> rm_store::Result<AlertDetail> {
    let a = alerts::get(&mut *conn, id).await?;
    let host_name = match hosts::get(&mut *conn, &a.host_id).await {
        Ok(h) => h.name,
        Err(rm_store::StoreError::NotFound { .. }) => a.host_id.clone(),
        Err(e) => return Err(e),
    };
    let repo_name = if a.subject.is_empty() || a.kind == "stale_schedule" {
        None
    } else {
        alerts::repo_name(&mut *conn, &a.subject).await?
    };
    let mut steps = vec![Step {
        at: a.raised_at,
        what: "raised".into(),
        by: "system".into(),
    }];
    if let (Some(at), Some(by)) = (a.acknowledged_at, &a.acknowledged_by) {
        steps.push(Step {
            at,
            what: "acknowledged".into(),
            by: by.clone(),
        });
    }
    if let (Some(at), Some(by)) = (a.resolved_at, &a.resolved_by) {
        steps.push(Step {
            at,
            what: "resolved".into(),
            by: by.clone(),
        });
    }
    let names: std::collections::HashMap<String, String> = channels::list(&mut *conn)
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let attempts = listing::deliveries(&mut *conn, Some(id), None, None, ATTEMPTS_SHOWN)
        .await?
        .into_iter()
        .map(|d| Attempt {
            at: d.ts,
            channel_name: names
                .get(&d.channel_id)
                .cloned()
                .unwrap_or_else(|| format!("deleted channel {}", d.channel_id)),
            channel_id: d.channel_id,
            event: d.event,
            outcome: d.outcome,
            status_code: d.status_code,
            latency_ms: d.latency_ms,
            attempt: d.attempt,
            error: d.error,
        })
        .collect();
    Ok(AlertDetail {
        behind: behind(&a, repo_name.as_deref()),
        title: rm_bus::notify::AlertKind::from(a.kind.as_str())
            .label()
            .to_owned(),
        state: state_of(&a).to_owned(),
        muted: !a.notified,
        id: a.id,
        host_id: a.host_id,
        host_name,
        kind: a.kind,
        subject: a.subject,
        severity: a.severity,
        message: a.message,
        job_id: a.job_id,
        raised_at: a.raised_at,
        last_seen_at: a.last_seen_at,
        acknowledged_at: a.acknowledged_at,
        acknowledged_by: a.acknowledged_by,
        resolved_at: a.resolved_at,
        resolved_by: a.resolved_by,
        steps,
        attempts,
        now,
    })
}

/// A host's current mute, if any.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MutedNow {
    pub until: i64,
    /// `mute` or `maintenance`.
    pub by: String,
    pub reason: Option<String>,
    /// Who set the mute or the window.
    pub who: String,
    /// The maintenance window, when one mutes the host.
    pub window_id: Option<String>,
}

/// A recurring maintenance window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowView {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub duration_secs: i64,
    pub reason: Option<String>,
    pub created_by: String,
    /// The cron expression in words.
    pub reading: String,
    pub next_at: Option<i64>,
}

/// A host's mutes: now and the recurring windows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostMutes {
    pub host_id: String,
    pub muted: Option<MutedNow>,
    pub windows: Vec<WindowView>,
}

pub async fn host_mutes(
    conn: &mut rm_store::Conn,
    host_id: &str,
    now: i64,
) -> rm_store::Result<HostMutes> {
    let muted = mutes::muted_at(&mut *conn, host_id, now)
        .await?
        .map(|m| match m.by {
            MutedBy::Mute(w) => MutedNow {
                until: m.until,
                by: "mute".into(),
                reason: w.reason,
                who: w.created_by,
                window_id: None,
            },
            MutedBy::Maintenance(w) => MutedNow {
                until: m.until,
                by: "maintenance".into(),
                reason: w.reason,
                who: w.created_by,
                window_id: Some(w.id),
            },
        });
    let windows = mutes::maintenance_of(&mut *conn, host_id)
        .await?
        .into_iter()
        .map(|w| WindowView {
            reading: crate::ui::cron_words::describe(&w.cron),
            next_at: rm_cron::CronSchedule::parse(&w.cron, &w.timezone)
                .ok()
                .and_then(|c| c.next_after_ms(now)),
            id: w.id,
            cron: w.cron,
            timezone: w.timezone,
            duration_secs: w.duration_secs,
            reason: w.reason,
            created_by: w.created_by,
        })
        .collect();
    Ok(HostMutes {
        host_id: host_id.to_owned(),
        muted,
        windows,
    })
}
