//! The delivery sender: claims due outbox rows, sends each as a request to
//! the notifier queue group (`rm.svc.notifier.deliver`) with the channel
//! definition sealed to the notifier role's xkey, and records the outcome.
//!
//! - delivered → the row is done; failed (final) → the row is failed;
//! - retryable, no responder, timeout, an unreadable reply → the row is
//!   tried again after a backoff (at least the endpoint's `Retry-After`),
//!   always with the same `webhook_id`, until the row is older than the
//!   configured deadline.
//!
//! Every attempt is appended to the delivery log. A claim counts the
//! attempt and leases the row for longer than one request can take, so two
//! senders never send the same attempt and a crashed sender's row falls due
//! again when the lease ends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_nats::RequestErrorKind;
use rm_bus::msg::{PROTOCOL_VERSION, decode, encode};
use rm_bus::notify::{
    ChannelDef, DeliverOutcome, DeliverReply, DeliverRequest, NotificationEvent, deliver_subject,
};
use rm_store::delivery::{self, Delivery, NewLogEntry};
use rm_store::{StoreError, channels};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Ctx, ms};

/// Margin added to the request timeout for a claimed row's lease.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Shortest sleep of the loop, so rows blocked behind an older pending row
/// of the same alert and channel do not spin it.
const MIN_SLEEP: Duration = Duration::from_millis(25);

/// Sends due deliveries until `stop` turns true, then lets the attempts in
/// flight finish and record their outcome (each is bounded by the request
/// timeout), so a clean shutdown leaves no attempt unlogged.
pub(crate) async fn serve(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut tasks: JoinSet<()> = JoinSet::new();
    while !*stop.borrow() {
        let free = ctx.t.max_in_flight.saturating_sub(tasks.len());
        if free > 0
            && let Err(e) = claim_and_send(&ctx, &mut tasks, free).await
        {
            tracing::warn!(error = %format!("{e:#}"), "reading the delivery outbox failed");
        }
        let now = ctx.now();
        let next = match ctx.store.read().await {
            Ok(mut conn) => delivery::next_due_at(&mut conn).await.ok().flatten(),
            Err(_) => None,
        };
        let wait = next
            .map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
            .unwrap_or(ctx.t.outbox_poll)
            .clamp(MIN_SLEEP, ctx.t.outbox_poll.max(MIN_SLEEP));
        tokio::select! {
            () = ctx.outbox_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            r = stop.changed() => {
                if r.is_err() {
                    break;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "delivery task failed");
                }
            }
        }
    }
    if !tasks.is_empty() {
        tracing::info!(in_flight = tasks.len(), "waiting for deliveries in flight");
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "delivery task failed");
        }
    }
    Ok(())
}

async fn claim_and_send(ctx: &Arc<Ctx>, tasks: &mut JoinSet<()>, free: usize) -> Result<()> {
    let now = ctx.now();
    let due = {
        let mut conn = ctx.store.read().await?;
        delivery::due(&mut conn, now, i64::try_from(free).unwrap_or(i64::MAX)).await?
    };
    if due.is_empty() {
        return Ok(());
    }
    let lease_until = now.saturating_add(ms(ctx.t.deliver.attempt_timeout + LEASE_MARGIN));
    // One write claims them all.
    let claimed = ctx
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let mut claimed = Vec::with_capacity(due.len());
                for row in due {
                    if delivery::claim(&mut *tx, &row.id, row.attempts, now, lease_until).await? {
                        claimed.push(row);
                    }
                }
                Ok::<_, rm_store::StoreError>(claimed)
            })
        })
        .await?;
    for row in claimed {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let attempt = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
            if let Err(e) = attempt_delivery(&ctx, &row, attempt).await {
                tracing::warn!(
                    delivery_id = %row.id,
                    error = %format!("{e:#}"),
                    "recording a delivery attempt failed; it is retried when its lease ends"
                );
            }
        });
    }
    Ok(())
}

/// The outcome of one attempt as the log records it.
#[derive(Clone)]
pub(crate) struct Attempt {
    pub outcome: &'static str,
    pub retry: bool,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub retry_after_secs: Option<u64>,
    pub notifier: Option<String>,
}

impl Attempt {
    fn final_failure(error: String) -> Self {
        Self {
            outcome: "failed",
            retry: false,
            status: None,
            latency_ms: None,
            error: Some(error),
            retry_after_secs: None,
            notifier: None,
        }
    }

    fn retry(outcome: &'static str, error: String) -> Self {
        Self {
            outcome,
            retry: true,
            status: None,
            latency_ms: None,
            error: Some(error),
            retry_after_secs: None,
            notifier: None,
        }
    }

    fn from_reply(r: DeliverReply) -> Self {
        let (outcome, retry) = match r.outcome {
            DeliverOutcome::Delivered => ("delivered", false),
            DeliverOutcome::Failed => ("failed", false),
            _ => ("retryable", true),
        };
        Self {
            outcome,
            retry,
            status: r.status,
            latency_ms: Some(r.latency_ms),
            error: r.error,
            retry_after_secs: r.retry_after_secs,
            notifier: r.notifier,
        }
    }
}

/// The clear channel definition of a stored channel.
pub(crate) fn open_channel(ctx: &Ctx, ch: &channels::Channel) -> Result<ChannelDef, String> {
    let blob = ch
        .secrets_enc
        .as_deref()
        .ok_or_else(|| "the channel has no stored definition".to_owned())?;
    ctx.master
        .decrypt_json(blob, &crate::channels::aad(&ch.id))
        .map_err(|e| format!("the channel's stored definition cannot be read: {e}"))
}

/// Sends one request to the notifier queue group and classifies the result.
pub(crate) async fn send(ctx: &Ctx, req: &DeliverRequest) -> Attempt {
    let request = async_nats::Request::new()
        .payload(encode(req))
        .timeout(Some(ctx.t.deliver.attempt_timeout));
    match ctx.client.send_request(deliver_subject(), request).await {
        Ok(msg) => match decode::<DeliverReply>("deliver reply", &msg.payload) {
            Ok(reply) => Attempt::from_reply(reply),
            Err(e) => Attempt::retry("retryable", e.to_string()),
        },
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => {
                Attempt::retry("no_responder", "no notifier is running".into())
            }
            RequestErrorKind::TimedOut => Attempt::retry(
                "timeout",
                format!(
                    "no reply from a notifier within {} ms",
                    ms(ctx.t.deliver.attempt_timeout)
                ),
            ),
            _ => Attempt::retry("retryable", format!("request failed: {e}")),
        },
    }
}

/// Builds the request for a stored row; `Err` is a final failure.
async fn build(ctx: &Ctx, row: &Delivery, attempt: u32) -> Result<DeliverRequest, String> {
    let ch = {
        let mut conn = ctx.store.read().await.map_err(|e| e.to_string())?;
        match channels::get(&mut conn, &row.channel_id).await {
            Ok(ch) => ch,
            Err(StoreError::NotFound { .. }) => return Err("the channel was deleted".into()),
            Err(e) => return Err(e.to_string()),
        }
    };
    if !ch.enabled {
        return Err("the channel was disabled before delivery".into());
    }
    let def = open_channel(ctx, &ch)?;
    let event: NotificationEvent = serde_json::from_str(&row.payload_json)
        .map_err(|e| format!("stored notification event is corrupt: {e}"))?;
    let channel = DeliverRequest::seal_channel(&def, &ctx.xkey, &ctx.notifier_xkey)
        .map_err(|e| format!("sealing the channel to the notifier failed: {e}"))?;
    Ok(DeliverRequest {
        v: PROTOCOL_VERSION,
        delivery_id: row.id.clone(),
        webhook_id: row.webhook_id.clone(),
        attempt,
        sender_xkey: ctx.xkey.public_key(),
        channel,
        event,
    })
}

async fn attempt_delivery(ctx: &Ctx, row: &Delivery, attempt: u32) -> Result<()> {
    let result = match build(ctx, row, attempt).await {
        Ok(req) => send(ctx, &req).await,
        Err(error) => Attempt::final_failure(error),
    };
    let now = ctx.now();
    let deadline = ctx.t.deliver.deadline.map(ms);
    let gave_up = result.retry && deadline.is_some_and(|d| now.saturating_sub(row.created_at) >= d);
    // the backoff is drawn here: the write closure must be Send
    let backoff = (result.retry && !gave_up).then(|| {
        ctx.t
            .deliver
            .backoff(attempt, &mut rand::thread_rng())
            .max(Duration::from_secs(result.retry_after_secs.unwrap_or(0)))
    });
    let (id, r) = (row.id.clone(), result.clone());
    let next_at = ctx
        .writer
        .run(move |tx| {
            Box::pin(async move { record_attempt(tx, &id, attempt, now, &r, backoff).await })
        })
        .await?;
    tracing::info!(
        delivery_id = %row.id,
        webhook_id = %row.webhook_id,
        alert_id = row.alert_id.as_deref().unwrap_or(""),
        channel_id = %row.channel_id,
        event = %row.event,
        attempt,
        outcome = result.outcome,
        status = result.status,
        latency_ms = result.latency_ms,
        error = result.error.as_deref(),
        notifier = result.notifier.as_deref(),
        next_attempt_at = next_at,
        gave_up,
        "delivery attempt"
    );
    Ok(())
}

/// Logs one attempt and moves its row on: retried at `now + backoff`,
/// given up, delivered or failed. Returns the next attempt's time.
async fn record_attempt(
    tx: &mut rm_store::Conn,
    id: &str,
    attempt: u32,
    now: i64,
    result: &Attempt,
    backoff: Option<Duration>,
) -> rm_store::Result<Option<i64>> {
    delivery::log(
        &mut *tx,
        &NewLogEntry {
            outbox_id: id,
            attempt: i64::from(attempt),
            ts: now,
            outcome: result.outcome,
            status_code: result.status.map(i64::from),
            latency_ms: result
                .latency_ms
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            error: result.error.as_deref(),
        },
    )
    .await?;
    if let Some(backoff) = backoff {
        let at = now.saturating_add(ms(backoff));
        delivery::retry_at(&mut *tx, id, at, result.error.as_deref()).await?;
        return Ok(Some(at));
    }
    if result.retry {
        let error = format!(
            "gave up after {attempt} attempts: {}",
            result.error.as_deref().unwrap_or("no reason")
        );
        delivery::finish(&mut *tx, id, delivery::FAILED, Some(&error), now).await?;
    } else if result.outcome == "delivered" {
        delivery::finish(&mut *tx, id, delivery::DELIVERED, None, now).await?;
    } else {
        delivery::finish(&mut *tx, id, delivery::FAILED, result.error.as_deref(), now).await?;
    }
    Ok(None)
}
