//! Notification channels: create, update, delete, list and test send.
//!
//! Definitions arrive sealed to the alerts role's xkey, are validated with
//! the same check the notifier runs, and are stored whole, encrypted with
//! the master key bound to the channel's row; `config_json` keeps only a
//! redacted summary for display. A test send runs a synthetic info event
//! through the real path: sealed to the notifier, one request to the queue
//! group, the notifier's verdict as the reply.

use rm_bus::ids::random_token;
use rm_bus::msg::{Actor, PROTOCOL_VERSION};
use rm_bus::notify::{
    ChannelDef, DeliverRequest, NotificationEvent, NtfyAuth, WebhookChannel, redact_url,
};
use rm_bus::subject::Event as Evt;
use rm_store::channels::{self, Channel};
use serde_json::json;

use crate::Ctx;
use crate::api::{
    ChannelCreate, ChannelList, ChannelRef, ChannelTest, ChannelTestResult, ChannelUpdate,
    ChannelView, Done, SealedChannel,
};
use crate::svc::{Fail, Outcome, audit};

/// Associated data binding a channel's ciphertext to its row.
pub(crate) fn aad(channel_id: &str) -> String {
    format!("channel:{channel_id}")
}

fn kind_of(def: &ChannelDef) -> &'static str {
    match def {
        ChannelDef::Ntfy(_) => "ntfy",
        ChannelDef::Webhook(_) => "webhook",
    }
}

/// What may be shown of a definition: no topic, token, secret, header value
/// or URL path.
fn summary(def: &ChannelDef) -> serde_json::Value {
    match def {
        ChannelDef::Ntfy(n) => json!({
            "server": redact_url(&n.server_url),
            "auth": match &n.auth {
                NtfyAuth::None => "none",
                NtfyAuth::Bearer { .. } => "bearer",
                NtfyAuth::Basic { .. } => "basic",
            },
            "click_base_url": n.click_base_url,
            "priorities": n.priorities,
        }),
        ChannelDef::Webhook(w) => json!({
            "url": redact_url(&w.url),
            "signed": w.secret.is_some(),
            "headers": w.headers.keys().collect::<Vec<_>>(),
        }),
    }
}

fn unseal(ctx: &Ctx, sealed: &SealedChannel) -> Outcome<ChannelDef> {
    let def = sealed.open(&ctx.xkey).map_err(|e| {
        Fail::invalid(format!(
            "the channel definition does not open with the alerts role's key: {e}"
        ))
    })?;
    def.validate().map_err(|e| Fail::invalid(e.to_string()))?;
    Ok(def)
}

fn check_name(name: &str) -> Outcome<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Fail::invalid("channel name must be 1-100 characters"));
    }
    Ok(name.to_owned())
}

fn view(ch: &Channel) -> ChannelView {
    ChannelView {
        id: ch.id.clone(),
        name: ch.name.clone(),
        kind: ch.kind.clone(),
        enabled: ch.enabled,
        summary: serde_json::from_str(&ch.config_json).unwrap_or(serde_json::Value::Null),
        created_at: ch.created_at,
        updated_at: ch.updated_at,
    }
}

fn seal_at_rest(ctx: &Ctx, def: &ChannelDef, id: &str) -> Outcome<Vec<u8>> {
    Ok(ctx.master.encrypt_json(def, &aad(id))?)
}

async fn changed(ctx: &Ctx, id: &str) {
    let msg = rm_bus::msg::EventMsg {
        v: PROTOCOL_VERSION,
        ts_ms: ctx.now(),
        host: None,
        job: None,
        id: Some(id.to_owned()),
        repo: None,
    };
    if let Err(e) = ctx
        .client
        .publish(Evt::ChannelsChanged.subject(), rm_bus::msg::encode(&msg))
        .await
    {
        tracing::warn!(error = %e, "channels event not published");
    }
}

pub(crate) async fn create(
    ctx: &std::sync::Arc<Ctx>,
    actor: &Actor,
    req: ChannelCreate,
) -> Outcome<ChannelView> {
    let name = check_name(&req.name)?;
    let def = unseal(ctx, &req.definition)?;
    let now = ctx.now();
    let id = format!("c{}", random_token(10));
    let ch = Channel {
        id: id.clone(),
        name,
        kind: kind_of(&def).into(),
        enabled: req.enabled,
        config_json: summary(&def).to_string(),
        secrets_enc: Some(seal_at_rest(ctx, &def, &id)?),
        created_at: now,
        updated_at: now,
    };
    let (row, actor_w) = (ch.clone(), actor.clone());
    ctx.write_first(move |tx| {
        Box::pin(async move {
            channels::insert(&mut *tx, &row).await?;
            audit(
                &mut *tx,
                now,
                &actor_w,
                "channel.create",
                ("channel", &row.id),
                Some(json!({"name": row.name, "kind": row.kind, "enabled": row.enabled})),
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    tracing::info!(channel_id = %id, kind = %ch.kind, actor = %actor.name, "channel created");
    changed(ctx, &id).await;
    Ok(view(&ch))
}

pub(crate) async fn update(
    ctx: &std::sync::Arc<Ctx>,
    actor: &Actor,
    req: ChannelUpdate,
) -> Outcome<ChannelView> {
    let def = req
        .definition
        .as_ref()
        .map(|d| unseal(ctx, d))
        .transpose()?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    let now = ctx.now();
    let (c, actor) = (ctx.clone(), actor.clone());
    let ch = ctx
        .write_first(move |tx| {
            Box::pin(async move {
                let ctx = &*c;
                let mut ch = channels::get(&mut *tx, &req.channel_id).await?;
                if let Some(name) = name {
                    ch.name = name;
                }
                if let Some(enabled) = req.enabled {
                    ch.enabled = enabled;
                }
                // A webhook whose secret field was left empty keeps the saved
                // secret (it is never shown back, so an operator cannot retype
                // it); clearing it is an explicit choice.
                let def = match def {
                    Some(ChannelDef::Webhook(w)) if w.secret.is_none() && !req.clear_secret => {
                        Some(ChannelDef::Webhook(keep_secret(ctx, &ch, w)?))
                    }
                    None if req.clear_secret => {
                        match crate::outbox::open_channel(ctx, &ch).map_err(Fail::internal)? {
                            ChannelDef::Webhook(w) => {
                                Some(ChannelDef::Webhook(WebhookChannel { secret: None, ..w }))
                            }
                            ChannelDef::Ntfy(_) => None,
                        }
                    }
                    other => other,
                };
                if let Some(def) = &def {
                    ch.kind = kind_of(def).into();
                    ch.config_json = summary(def).to_string();
                    ch.secrets_enc = Some(seal_at_rest(ctx, def, &ch.id)?);
                }
                ch.updated_at = now;
                channels::update(&mut *tx, &ch).await?;
                audit(
                    &mut *tx,
                    now,
                    &actor,
                    "channel.update",
                    ("channel", &ch.id),
                    Some(json!({
                        "name": ch.name,
                        "enabled": ch.enabled,
                        "definition_replaced": def.is_some(),
                        "secret_cleared": req.clear_secret,
                    })),
                )
                .await?;
                Ok(ch)
            })
        })
        .await?;
    changed(ctx, &ch.id).await;
    Ok(view(&ch))
}

/// `new` with the saved webhook's signing secret, if the saved channel is
/// a signed webhook.
fn keep_secret(ctx: &Ctx, saved: &Channel, mut new: WebhookChannel) -> Outcome<WebhookChannel> {
    if let ChannelDef::Webhook(old) =
        crate::outbox::open_channel(ctx, saved).map_err(Fail::internal)?
    {
        new.secret = old.secret;
    }
    Ok(new)
}

pub(crate) async fn delete(
    ctx: &std::sync::Arc<Ctx>,
    actor: &Actor,
    req: ChannelRef,
) -> Outcome<Done> {
    let now = ctx.now();
    let actor = actor.clone();
    let id = req.channel_id.clone();
    ctx.write_first(move |tx| {
        Box::pin(async move {
            channels::delete(&mut *tx, &req.channel_id).await?;
            audit(
                &mut *tx,
                now,
                &actor,
                "channel.delete",
                ("channel", &req.channel_id),
                None,
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    changed(ctx, &id).await;
    Ok(Done {})
}

pub(crate) async fn list(ctx: &Ctx) -> Outcome<ChannelList> {
    let mut conn = ctx.store.read().await?;
    Ok(ChannelList {
        channels: channels::list(&mut conn).await?.iter().map(view).collect(),
    })
}

/// One synthetic info event through the real notifier path: to a saved
/// channel (logged in its delivery log), an unsaved definition, or an
/// unsaved edit of a saved channel (neither logged).
pub(crate) async fn test(
    ctx: &std::sync::Arc<Ctx>,
    req: ChannelTest,
) -> Outcome<ChannelTestResult> {
    let saved = match &req.channel_id {
        Some(id) => {
            let mut conn = ctx.store.read().await?;
            Some(channels::get(&mut conn, id).await?)
        }
        None => None,
    };
    let def = match (&saved, &req.definition) {
        (Some(ch), None) => crate::outbox::open_channel(ctx, ch).map_err(Fail::internal)?,
        (None, Some(sealed)) => unseal(ctx, sealed)?,
        // An edit not saved: the secret field left empty means the saved
        // secret, as saving the edit would keep it.
        (Some(ch), Some(sealed)) => match unseal(ctx, sealed)? {
            ChannelDef::Webhook(w) if w.secret.is_none() && !req.clear_secret => {
                ChannelDef::Webhook(keep_secret(ctx, ch, w)?)
            }
            other => other,
        },
        (None, None) => {
            return Err(Fail::invalid(
                "give a saved channel's id, an unsaved definition, or both",
            ));
        }
    };
    let log_to = match (&req.channel_id, &req.definition) {
        (Some(id), None) => Some(id),
        _ => None,
    };
    let now = ctx.now();
    let url = ctx
        .ui_base_url
        .as_ref()
        .map(|b| format!("{}/settings/channels", b.trim_end_matches('/')));
    let event = NotificationEvent::test(format!("evt_{}", random_token(12)), now, url);
    let channel = DeliverRequest::seal_channel(&def, &ctx.xkey, &ctx.notifier_xkey)
        .map_err(|e| Fail::internal(format!("sealing the channel to the notifier: {e}")))?;
    let request = DeliverRequest {
        v: PROTOCOL_VERSION,
        delivery_id: format!("test-{}", random_token(10)),
        webhook_id: format!("msg_{}", random_token(15)),
        attempt: 1,
        sender_xkey: ctx.xkey.public_key(),
        channel,
        event,
    };
    let a = crate::outbox::send(ctx, &request).await;
    if let Some(channel_id) = log_to {
        // A saved channel's test is in its delivery log, marked `test`.
        let logged = async {
            let payload = serde_json::to_string(&request.event)
                .map_err(|e| Fail::internal(format!("test event: {e}")))?;
            let done_at = ctx.now();
            let channel_id = channel_id.clone();
            let (delivery_id, webhook_id) =
                (request.delivery_id.clone(), request.webhook_id.clone());
            let (outcome, status, latency_ms, error) =
                (a.outcome, a.status, a.latency_ms, a.error.clone());
            ctx.write_first(move |tx| {
                Box::pin(async move {
                    rm_store::delivery::record_test(
                        &mut *tx,
                        &rm_store::delivery::NewDelivery {
                            id: &delivery_id,
                            webhook_id: &webhook_id,
                            alert_id: None,
                            channel_id: &channel_id,
                            event: "test",
                            payload_json: &payload,
                            now,
                        },
                        &rm_store::delivery::NewLogEntry {
                            outbox_id: &delivery_id,
                            attempt: 1,
                            ts: done_at,
                            outcome,
                            status_code: status.map(i64::from),
                            latency_ms: latency_ms.and_then(|l| i64::try_from(l).ok()),
                            error: error.as_deref(),
                        },
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?;
            Ok::<_, Fail>(())
        }
        .await;
        if let Err(e) = logged {
            // The operator still sees the result; only the log misses it.
            tracing::warn!(channel_id = %channel_id, error = %e.message, "test send not logged");
        }
    }
    tracing::info!(
        channel_id = req.channel_id.as_deref().unwrap_or(""),
        edited = req.channel_id.is_some() && req.definition.is_some(),
        kind = kind_of(&def),
        outcome = a.outcome,
        status = a.status,
        error = a.error.as_deref(),
        "channel test send"
    );
    Ok(ChannelTestResult {
        ok: a.outcome == "delivered",
        outcome: a.outcome.to_owned(),
        status: a.status,
        latency_ms: a.latency_ms.unwrap_or(0),
        error: a.error,
        notifier: a.notifier,
    })
}
