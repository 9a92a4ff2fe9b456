//! The bus side of the notifier: a queue subscription on
//! `rm.svc.notifier.deliver`, one task per request (bounded by a semaphore,
//! so a slow endpoint never stalls other deliveries), a reply for every
//! request — a malformed one or one whose channel does not open included —
//! and a graceful shutdown that drains the subscription and lets in-flight
//! deliveries finish.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_nats::{Client, Message, Subscriber};
use futures_util::StreamExt;
use rm_bus::connect::connect;
use rm_bus::msg::{self, encode};
use rm_bus::notify::{
    ChannelDef, DeliverOutcome, DeliverReply, DeliverRequest, deliver_subject, redact_url,
};
use rm_bus::seal::SealError;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::NotifierConfig;
use crate::http::HttpSender;
use crate::{ntfy, webhook};

/// Connects, subscribes and serves until `shutdown` resolves.
pub async fn run(config: NotifierConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    Notifier::start(config).await?.serve(shutdown).await
}

/// A notifier that is connected and subscribed: requests sent from now on
/// are queued for it.
pub struct Notifier {
    client: Client,
    subscription: Subscriber,
    ctx: Arc<Ctx>,
}

struct Ctx {
    client: Client,
    sender: HttpSender,
    config: NotifierConfig,
    slots: Arc<Semaphore>,
}

impl Notifier {
    /// Connects to the bus and joins the queue group; returns once the
    /// server has the subscription.
    pub async fn start(config: NotifierConfig) -> Result<Self> {
        config.validate()?;
        let sender = HttpSender::new(config.attempt_timeout, config.clock.clone())?;
        let (client, _events) = connect(&config.connect).await?;
        let subject = deliver_subject();
        let subscription = client
            .queue_subscribe(subject.clone(), config.queue_group.clone())
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        client
            .flush()
            .await
            .context("confirming the subscription with the bus")?;
        tracing::info!(
            subject = %subject,
            queue_group = %config.queue_group,
            instance = %config.instance,
            xkey = %config.xkey.public_key(),
            attempt_timeout_ms = duration_ms(config.attempt_timeout),
            max_concurrent = config.max_concurrent,
            "notifier ready"
        );
        if config.trusted_senders.is_empty() {
            tracing::warn!(
                "no trusted sender xkey: channels sealed by anyone who may publish to the notifier are opened; pass the alerts role's xkey (--trusted-sender-xkey)"
            );
        }
        let slots = Arc::new(Semaphore::new(config.max_concurrent));
        Ok(Self {
            client: client.clone(),
            subscription,
            ctx: Arc::new(Ctx {
                client,
                sender,
                config,
                slots,
            }),
        })
    }

    /// The notifier role's public xkey (what senders seal channels to).
    pub fn public_xkey(&self) -> String {
        self.ctx.config.xkey.public_key()
    }

    /// Serves requests until `shutdown` resolves, then drains the
    /// subscription and waits for in-flight deliveries (up to the configured
    /// grace). Fails if the subscription ends without a shutdown request
    /// (the connection closed for good).
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        let mut draining = false;
        let grace = tokio::time::sleep(self.ctx.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                () = &mut shutdown, if !draining => {
                    tracing::info!(in_flight = tasks.len(), "notifier shutting down");
                    draining = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + self.ctx.config.shutdown_grace);
                    if let Err(e) = self.subscription.drain().await {
                        tracing::warn!(error = %e, "draining the subscription failed");
                        break;
                    }
                }
                msg = self.subscription.next() => match msg {
                    Some(msg) => {
                        tasks.spawn(handle(self.ctx.clone(), msg));
                    }
                    None => break,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "delivery task failed");
                    }
                }
                () = &mut grace, if draining => {
                    tracing::warn!("shutdown grace over before the subscription drained");
                    break;
                }
            }
        }
        // The subscription is done; let deliveries already running finish.
        let wait = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout_at(grace.deadline(), wait)
            .await
            .is_err()
            || !draining
        {
            // Not draining means the connection closed: nothing can be
            // replied anyway.
            if !tasks.is_empty() {
                tracing::warn!(
                    in_flight = tasks.len(),
                    "abandoning deliveries still in flight"
                );
            }
            tasks.abort_all();
        }
        if !draining {
            // Reconnects are transparent; the stream ends only when the
            // client is closed for good. Fail so a supervisor restarts us.
            anyhow::bail!("the bus subscription ended without a shutdown request");
        }
        let _ = tokio::time::timeout(self.ctx.config.shutdown_grace, self.client.flush()).await;
        tracing::info!("notifier stopped");
        Ok(())
    }
}

/// Why an opened channel definition does not parse, without quoting any of
/// its values (serde's "invalid type" and "invalid value" messages would).
fn channel_parse_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("unknown variant") || text.starts_with("missing field") {
        format!("channel definition not understood by this notifier (a newer sender?): {text}")
    } else {
        format!(
            "channel definition not understood by this notifier: a field has the wrong type or value (line {}, column {})",
            e.line(),
            e.column()
        )
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Handles one request and sends its reply.
async fn handle(ctx: Arc<Ctx>, msg: Message) {
    let Some(reply_to) = msg.reply.clone() else {
        tracing::warn!(subject = %msg.subject, "deliver request without a reply subject; ignored");
        return;
    };
    let mut reply = process(&ctx, &msg.payload).await;
    reply.notifier = Some(ctx.config.instance.clone());
    if let Err(e) = ctx.client.publish(reply_to, encode(&reply)).await {
        tracing::warn!(
            delivery_id = reply.delivery_id.as_deref().unwrap_or(""),
            error = %e,
            "could not send the delivery reply"
        );
    }
}

/// Decodes, opens, validates and delivers; every failure is a reply.
async fn process(ctx: &Ctx, payload: &[u8]) -> DeliverReply {
    let req: DeliverRequest = match msg::decode("deliver", payload) {
        Ok(req) => req,
        Err(e) => {
            let delivery_id = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("delivery_id")?.as_str().map(str::to_owned));
            tracing::warn!(
                delivery_id = delivery_id.as_deref().unwrap_or(""),
                error = %e,
                "malformed deliver request"
            );
            let mut reply = DeliverReply::new(DeliverOutcome::Failed, delivery_id, 0);
            reply.error = Some(e.to_string());
            return reply;
        }
    };
    let refuse = |error: String| {
        tracing::warn!(
            delivery_id = %req.delivery_id,
            webhook_id = %req.webhook_id,
            attempt = req.attempt,
            error = %error,
            "deliver request refused"
        );
        let mut reply = DeliverReply::new(
            DeliverOutcome::Failed,
            Some(req.delivery_id.clone()),
            req.attempt,
        );
        reply.error = Some(error);
        reply
    };
    if req.delivery_id.is_empty() || req.webhook_id.is_empty() {
        return refuse(
            "malformed deliver request: delivery_id and webhook_id must not be empty".into(),
        );
    }
    let trusted = &ctx.config.trusted_senders;
    if !trusted.is_empty() && !trusted.contains(&req.sender_xkey) {
        return refuse(format!(
            "sender xkey {} is not trusted by this notifier",
            req.sender_xkey
        ));
    }
    let channel = match req.open_channel(&ctx.config.xkey) {
        Ok(ch) => ch,
        Err(SealError::Json(e)) => return refuse(channel_parse_error(&e)),
        Err(e) => {
            return refuse(format!(
                "cannot open the sealed channel: {e}; it must be sealed by {} to this notifier's xkey {}",
                req.sender_xkey,
                ctx.config.xkey.public_key()
            ));
        }
    };
    if let Err(e) = channel.validate() {
        return refuse(e.to_string());
    }

    let permit = match tokio::time::timeout(
        ctx.config.queue_wait,
        ctx.slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            tracing::warn!(
                delivery_id = %req.delivery_id,
                max_concurrent = ctx.config.max_concurrent,
                "notifier busy"
            );
            let mut reply = DeliverReply::new(
                DeliverOutcome::Retryable,
                Some(req.delivery_id.clone()),
                req.attempt,
            );
            reply.error = Some(format!(
                "notifier {} busy: {} deliveries in flight",
                ctx.config.instance, ctx.config.max_concurrent
            ));
            return reply;
        }
    };

    let (kind, url, request) = match &channel {
        ChannelDef::Ntfy(ch) => (
            "ntfy",
            ch.server_url.as_str(),
            ntfy::request(ctx.sender.client(), ch, &req.event),
        ),
        ChannelDef::Webhook(ch) => {
            let now = ctx.config.clock.now_secs();
            match webhook::request(ctx.sender.client(), ch, &req.webhook_id, &req.event, now) {
                Ok(rb) => ("webhook", ch.url.as_str(), rb),
                Err(e) => return refuse(e.to_string()),
            }
        }
    };
    let attempt = ctx.sender.send(url, request).await;
    drop(permit);

    let latency_ms = duration_ms(attempt.latency);
    tracing::info!(
        delivery_id = %req.delivery_id,
        webhook_id = %req.webhook_id,
        attempt = req.attempt,
        event = %req.event.kind,
        channel = kind,
        endpoint = %redact_url(url),
        outcome = %attempt.outcome,
        status = attempt.status,
        latency_ms,
        error = attempt.error.as_deref(),
        "delivery attempt"
    );
    DeliverReply {
        status: attempt.status,
        latency_ms,
        error: attempt.error,
        retry_after_secs: attempt.retry_after_secs,
        ..DeliverReply::new(attempt.outcome, Some(req.delivery_id), req.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_parse_errors_never_quote_values() {
        let wrong_type = serde_json::from_str::<ChannelDef>(
            r#"{"type":"ntfy","server_url":"http://x","topic":"t","auth":{"kind":"bearer","token":123456789}}"#,
        )
        .unwrap_err();
        assert!(
            wrong_type.to_string().contains("123456789"),
            "serde quotes it"
        );
        let text = channel_parse_error(&wrong_type);
        assert!(!text.contains("123456789"), "{text}");
        assert!(text.contains("wrong type"), "{text}");

        let newer =
            serde_json::from_str::<ChannelDef>(r#"{"type":"matrix","room":"r"}"#).unwrap_err();
        let text = channel_parse_error(&newer);
        assert!(text.contains("unknown variant `matrix`"), "{text}");
    }
}
