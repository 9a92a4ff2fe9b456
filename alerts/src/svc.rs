//! The service router on `rm.svc.alerts.>`: decodes the envelope, runs the
//! verb's handler, replies with `SvcReply` after commit; alert
//! acknowledgement and manual resolution, host mutes. Every change is
//! audited in the same write, which runs in the writer task's first lane
//! (`Ctx::write_first`), and announced after commit.

use std::sync::Arc;

use anyhow::Result;
use async_nats::Subscriber;
use futures_util::StreamExt;
use rm_bus::msg::{Actor, SvcReply, SvcRequest, decode, encode};
use rm_bus::notify::EventType;
use rm_bus::subject::{self, SvcRole};
use rm_store::alerts;
use rm_store::audit::{self as store_audit, NewEntry};
use rm_store::hosts;
use rm_store::mutes::{self, MaintenanceWindow, MuteWindow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::api::{
    self, AlertRef, AlertView, Done, HostRef, MaintenanceAdd, MaintenanceAdded, MaintenanceRef,
    MuteSet, PubKey,
};
use crate::{Ctx, change, channels};

/// A service failure: a machine code and a sentence for the operator.
#[derive(Debug)]
pub(crate) struct Fail {
    pub code: &'static str,
    pub message: String,
}

impl Fail {
    pub fn invalid(m: impl Into<String>) -> Self {
        Self {
            code: "invalid",
            message: m.into(),
        }
    }

    /// An internal failure: logged in full, reported without detail.
    pub fn internal(m: impl Into<String>) -> Self {
        let m = m.into();
        tracing::error!(error = %m, "service request failed");
        Self {
            code: "internal",
            message: "internal error; see the alerts role's log".into(),
        }
    }
}

impl From<rm_store::StoreError> for Fail {
    fn from(e: rm_store::StoreError) -> Self {
        match e {
            rm_store::StoreError::NotFound { .. } => Self {
                code: "not_found",
                message: e.to_string(),
            },
            rm_store::StoreError::Conflict(m) => Self {
                code: "conflict",
                message: m,
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

pub(crate) type Outcome<T> = std::result::Result<T, Fail>;

pub(crate) async fn serve(ctx: Arc<Ctx>, mut sub: Subscriber) -> Result<()> {
    let limit = Arc::new(Semaphore::new(ctx.t.svc_concurrency.max(1)));
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            tracing::warn!(subject = %msg.subject, "service message without reply subject ignored");
            continue;
        };
        let permit = limit.clone().acquire_owned().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let body = match handle(&ctx, msg.subject.as_str(), &msg.payload).await {
                Ok(v) => SvcReply::ok(v),
                Err(f) => SvcReply::refused(f.code, f.message),
            };
            if let Err(e) = ctx.client.publish(reply, encode(&body)).await {
                tracing::warn!(error = %e, "service reply not sent");
            }
            drop(permit);
        });
    }
    anyhow::bail!("the service subscription ended")
}

async fn handle(ctx: &Arc<Ctx>, subj: &str, payload: &[u8]) -> Outcome<Value> {
    let Some(verb) = api::ALL_VERBS
        .into_iter()
        .find(|v| subject::svc(SvcRole::Alerts, *v) == subj)
    else {
        return Err(Fail {
            code: "unknown_verb",
            message: format!("no such service: {subj}"),
        });
    };
    let req: SvcRequest<Value> =
        decode("service request", payload).map_err(|e| Fail::invalid(e.to_string()))?;
    let actor = &req.actor;
    let body = req.body;
    match verb {
        v if v == api::METRICS => out(Ok(ctx
            .metrics
            .snapshot(ctx.writer.stats(), ctx.store.commits()))),
        v if v == api::PUBKEY => out(Ok(PubKey {
            xkey: ctx.xkey.public_key(),
        })),
        v if v == api::ALERT_ACK => out(acknowledge(ctx, actor, parse(body)?).await),
        v if v == api::ALERT_RESOLVE => out(resolve(ctx, actor, parse(body)?).await),
        v if v == api::MUTE_SET => out(mute_set(ctx, actor, parse(body)?).await),
        v if v == api::MUTE_CLEAR => out(mute_clear(ctx, actor, parse(body)?).await),
        v if v == api::MAINTENANCE_ADD => out(maintenance_add(ctx, actor, parse(body)?).await),
        v if v == api::MAINTENANCE_DELETE => {
            out(maintenance_delete(ctx, actor, parse(body)?).await)
        }
        v if v == api::CHANNEL_CREATE => out(channels::create(ctx, actor, parse(body)?).await),
        v if v == api::CHANNEL_UPDATE => out(channels::update(ctx, actor, parse(body)?).await),
        v if v == api::CHANNEL_DELETE => out(channels::delete(ctx, actor, parse(body)?).await),
        v if v == api::CHANNEL_LIST => out(channels::list(ctx).await),
        v if v == api::CHANNEL_TEST => out(channels::test(ctx, parse(body)?).await),
        _ => Err(Fail {
            code: "unknown_verb",
            message: format!("no such service: {subj}"),
        }),
    }
}

fn parse<T: DeserializeOwned>(body: Value) -> Outcome<T> {
    serde_json::from_value(body).map_err(|e| Fail::invalid(format!("malformed request: {e}")))
}

fn out<T: Serialize>(r: Outcome<T>) -> Outcome<Value> {
    r.and_then(|v| serde_json::to_value(v).map_err(|e| Fail::internal(e.to_string())))
}

/// Appends an audit entry written by the alerts role.
pub(crate) async fn audit(
    conn: &mut rm_store::Conn,
    now: i64,
    actor: &Actor,
    action: &str,
    target: (&str, &str),
    detail: Option<Value>,
) -> rm_store::Result<()> {
    let via = serde_json::to_value(actor.via)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    store_audit::append_from(
        conn,
        &NewEntry {
            ts: now,
            actor: &actor.name,
            via: &via,
            role: "alerts",
            action,
            target_kind: Some(target.0),
            target_id: Some(target.1),
            detail,
        },
        actor.address.as_deref(),
    )
    .await
}

/// Acknowledges an open alert ("I have seen it"; it stays open). Already
/// acknowledged: the alert as it is, no change.
async fn acknowledge(ctx: &Arc<Ctx>, actor: &Actor, req: AlertRef) -> Outcome<AlertView> {
    let now = ctx.now();
    let (c, actor) = (ctx.clone(), actor.clone());
    let (view, announce) = ctx
        .write_first(move |tx| {
            Box::pin(async move {
                let current = alerts::get(&mut *tx, &req.alert_id).await?;
                if current.resolved_at.is_some() {
                    return Err(Fail {
                        code: "conflict",
                        message: format!("alert {} is already resolved", req.alert_id),
                    });
                }
                let Some(alert) =
                    alerts::acknowledge(&mut *tx, &req.alert_id, &actor.name, now).await?
                else {
                    return Ok((AlertView::from(&current), None));
                };
                let ch = change::record(&c, &mut *tx, &alert, EventType::Acknowledged, now).await?;
                audit(
                    &mut *tx,
                    now,
                    &actor,
                    "alert.acknowledge",
                    ("alert", &alert.id),
                    None,
                )
                .await?;
                Ok((AlertView::from(&alert), Some(ch)))
            })
        })
        .await?;
    if let Some(ch) = announce {
        change::announce(ctx, &[ch]).await;
    }
    Ok(view)
}

/// Resolves an alert by hand. Already resolved: the alert as it is.
async fn resolve(ctx: &Arc<Ctx>, actor: &Actor, req: AlertRef) -> Outcome<AlertView> {
    let now = ctx.now();
    let (c, actor) = (ctx.clone(), actor.clone());
    let (view, announce) = ctx
        .write_first(move |tx| {
            Box::pin(async move {
                let current = alerts::get(&mut *tx, &req.alert_id).await?;
                let Some(alert) =
                    alerts::resolve(&mut *tx, &req.alert_id, &actor.name, now).await?
                else {
                    return Ok((AlertView::from(&current), None));
                };
                let ch = change::record(&c, &mut *tx, &alert, EventType::Resolved, now).await?;
                audit(
                    &mut *tx,
                    now,
                    &actor,
                    "alert.resolve",
                    ("alert", &alert.id),
                    None,
                )
                .await?;
                Ok((AlertView::from(&alert), Some(ch)))
            })
        })
        .await?;
    if let Some(ch) = announce {
        change::announce(ctx, &[ch]).await;
    }
    Ok(view)
}

async fn mute_set(ctx: &Arc<Ctx>, actor: &Actor, req: MuteSet) -> Outcome<Done> {
    let now = ctx.now();
    if req.until_ms <= now {
        return Err(Fail::invalid("a mute must end in the future"));
    }
    let reason = clean_reason(req.reason.as_deref())?;
    let actor = actor.clone();
    let host_id = req.host_id.clone();
    ctx.write_first(move |tx| {
        Box::pin(async move {
            hosts::get(&mut *tx, &req.host_id).await?;
            mutes::set_mute(
                &mut *tx,
                &MuteWindow {
                    id: format!("m{}", rm_bus::ids::random_token(10)),
                    host_id: req.host_id.clone(),
                    starts_at: now,
                    until: req.until_ms,
                    reason: reason.clone(),
                    created_by: actor.name.clone(),
                    created_at: now,
                    ended_by: None,
                },
            )
            .await?;
            audit(
                &mut *tx,
                now,
                &actor,
                "host.mute",
                ("host", &req.host_id),
                Some(json!({"until": req.until_ms, "reason": reason})),
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    ctx.mutes_changed(&host_id).await;
    Ok(Done {})
}

/// Longest reason kept with a mute or a window.
const REASON_MAX: usize = 200;

fn clean_reason(reason: Option<&str>) -> Outcome<Option<String>> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > REASON_MAX) {
        return Err(Fail::invalid(format!(
            "Reason: at most {REASON_MAX} characters"
        )));
    }
    Ok(reason.map(str::to_owned))
}

async fn mute_clear(ctx: &Arc<Ctx>, actor: &Actor, req: HostRef) -> Outcome<Done> {
    let now = ctx.now();
    let actor = actor.clone();
    let host_id = req.host_id.clone();
    ctx.write_first(move |tx| {
        Box::pin(async move {
            if mutes::clear_mute(&mut *tx, &req.host_id, &actor.name, now).await? {
                audit(
                    &mut *tx,
                    now,
                    &actor,
                    "host.unmute",
                    ("host", &req.host_id),
                    None,
                )
                .await?;
            }
            Ok(())
        })
    })
    .await?;
    // Alerts raised during the mute and still open are notified now.
    ctx.wake.notify_one();
    ctx.mutes_changed(&host_id).await;
    Ok(Done {})
}

async fn maintenance_add(
    ctx: &Arc<Ctx>,
    actor: &Actor,
    req: MaintenanceAdd,
) -> Outcome<MaintenanceAdded> {
    let now = ctx.now();
    let cron = req.cron.trim().to_owned();
    let timezone = req.timezone.trim().to_owned();
    rm_cron::CronSchedule::parse(&cron, &timezone)
        .map_err(|e| Fail::invalid(format!("Cron or time zone: {e}")))?;
    if !(60..=api::MAINTENANCE_MAX_SECS).contains(&req.duration_secs) {
        return Err(Fail::invalid(format!(
            "Duration: a window lasts from 1 minute to {} hours",
            api::MAINTENANCE_MAX_SECS / 3600
        )));
    }
    let reason = clean_reason(req.reason.as_deref())?;
    let actor = actor.clone();
    let host_id = req.host_id.clone();
    let id = format!("w{}", rm_bus::ids::random_token(10));
    let window_id = id.clone();
    ctx.write_first(move |tx| {
        Box::pin(async move {
            hosts::get(&mut *tx, &req.host_id).await?;
            mutes::add_maintenance(
                &mut *tx,
                &MaintenanceWindow {
                    id: id.clone(),
                    host_id: req.host_id.clone(),
                    cron: cron.clone(),
                    timezone: timezone.clone(),
                    duration_secs: req.duration_secs,
                    reason: reason.clone(),
                    created_by: actor.name.clone(),
                    created_at: now,
                },
            )
            .await?;
            audit(
                &mut *tx,
                now,
                &actor,
                "host.maintenance.add",
                ("host", &req.host_id),
                Some(json!({"window": id, "cron": cron, "timezone": timezone,
                            "duration_secs": req.duration_secs, "reason": reason})),
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    ctx.mutes_changed(&host_id).await;
    Ok(MaintenanceAdded { window_id })
}

async fn maintenance_delete(ctx: &Arc<Ctx>, actor: &Actor, req: MaintenanceRef) -> Outcome<Done> {
    let now = ctx.now();
    let actor = actor.clone();
    let host_id = ctx
        .write_first(move |tx| {
            Box::pin(async move {
                let Some(w) = mutes::delete_maintenance(&mut *tx, &req.window_id).await? else {
                    return Err(Fail {
                        code: "not_found",
                        message: format!("maintenance window {} not found", req.window_id),
                    });
                };
                audit(
                    &mut *tx,
                    now,
                    &actor,
                    "host.maintenance.delete",
                    ("host", &w.host_id),
                    Some(json!({"window": w.id, "cron": w.cron, "timezone": w.timezone})),
                )
                .await?;
                Ok(w.host_id)
            })
        })
        .await?;
    // Alerts raised inside the window and still open are notified now.
    ctx.wake.notify_one();
    ctx.mutes_changed(&host_id).await;
    Ok(Done {})
}
