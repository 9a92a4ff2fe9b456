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
//! Many rows of one channel, change and alert kind due at once go as one
//! grouped notification ([`group`]); each row still gets its own attempt
//! and log entry.
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

use crate::{Ctx, group, ms};

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

/// Due rows read at once when grouping is on, so a storm's rows can form
/// groups (more than `max_in_flight` single sends).
const GROUP_READ: i64 = 2_000;
/// Most members of one grouped notification.
const GROUP_MAX_MEMBERS: usize = 1_000;
/// Most bytes of members' stored events in one group, and at most a
/// quarter of the bus's `max_payload`.
const GROUP_MAX_BYTES: usize = 256 * 1024;

async fn claim_and_send(ctx: &Arc<Ctx>, tasks: &mut JoinSet<()>, free: usize) -> Result<()> {
    let now = ctx.now();
    let limits = group::Limits {
        from: ctx.t.notify_group_from,
        max_members: GROUP_MAX_MEMBERS,
        max_bytes: GROUP_MAX_BYTES.min(rm_bus::size::max_payload(&ctx.client) / 4),
    };
    let read = if limits.from >= 2 {
        GROUP_READ
    } else {
        i64::try_from(free).unwrap_or(i64::MAX)
    };
    let due = {
        let mut conn = ctx.store.read().await?;
        delivery::due(&mut conn, now, read).await?
    };
    if due.is_empty() {
        return Ok(());
    }
    let sends = group::plan(due, &limits, free);
    let lease_until = now.saturating_add(ms(ctx.t.deliver.attempt_timeout + LEASE_MARGIN));
    // One write claims them all.
    let claimed = ctx
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let mut claimed = Vec::with_capacity(sends.len());
                for rows in sends {
                    let mut mine = Vec::with_capacity(rows.len());
                    for row in rows {
                        if delivery::claim(&mut *tx, &row.id, row.attempts, now, lease_until)
                            .await?
                        {
                            mine.push(row);
                        }
                    }
                    if !mine.is_empty() {
                        claimed.push(mine);
                    }
                }
                Ok::<_, rm_store::StoreError>(claimed)
            })
        })
        .await?;
    for rows in claimed {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            if let Err(e) = attempt_delivery(&ctx, &rows).await {
                tracing::warn!(
                    delivery_id = rows.first().map_or("", |r| r.id.as_str()),
                    rows = rows.len(),
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

/// The attempt number of `row`'s claimed attempt.
fn attempt_of(row: &Delivery) -> u32 {
    u32::try_from(row.attempts + 1).unwrap_or(u32::MAX)
}

/// Builds the request for claimed rows of one channel (one row, or a group
/// of one change and kind: [`group`]); `Err` is a final failure.
async fn build(ctx: &Ctx, rows: &[Delivery], attempt: u32) -> Result<DeliverRequest, String> {
    let first = rows
        .first()
        .ok_or_else(|| "nothing to deliver".to_owned())?;
    let ch = {
        let mut conn = ctx.store.read().await.map_err(|e| e.to_string())?;
        match channels::get(&mut conn, &first.channel_id).await {
            Ok(ch) => ch,
            Err(StoreError::NotFound { .. }) => return Err("the channel was deleted".into()),
            Err(e) => return Err(e.to_string()),
        }
    };
    if !ch.enabled {
        return Err("the channel was disabled before delivery".into());
    }
    let def = open_channel(ctx, &ch)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let event: NotificationEvent = serde_json::from_str(&row.payload_json)
            .map_err(|e| format!("stored notification event is corrupt: {e}"))?;
        events.push(event);
    }
    let (webhook_id, event) = if rows.len() == 1 {
        (first.webhook_id.clone(), events.remove(0))
    } else {
        let event = group::envelope(events, ctx.ui_base_url.as_deref())
            .ok_or_else(|| "nothing to deliver".to_owned())?;
        (group::webhook_id(rows), event)
    };
    let channel = DeliverRequest::seal_channel(&def, &ctx.xkey, &ctx.notifier_xkey)
        .map_err(|e| format!("sealing the channel to the notifier failed: {e}"))?;
    Ok(DeliverRequest {
        v: PROTOCOL_VERSION,
        delivery_id: first.id.clone(),
        webhook_id,
        attempt,
        sender_xkey: ctx.xkey.public_key(),
        channel,
        event,
    })
}

/// One attempt at delivering `rows` (claimed, of one channel): one
/// request, and the outcome recorded for every row (its own attempt
/// number; a row past the deadline is given up, the others retried
/// together).
async fn attempt_delivery(ctx: &Ctx, rows: &[Delivery]) -> Result<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let attempt = rows.iter().map(attempt_of).max().unwrap_or(1);
    let built = build(ctx, rows, attempt).await;
    let webhook_id = built.as_ref().map(|r| r.webhook_id.clone()).ok();
    let result = match built {
        Ok(req) => send(ctx, &req).await,
        Err(error) => Attempt::final_failure(error),
    };
    let now = ctx.now();
    let deadline = ctx.t.deliver.deadline.map(ms);
    let given_up = |row: &Delivery| {
        result.retry && deadline.is_some_and(|d| now.saturating_sub(row.created_at) >= d)
    };
    let gave_up = rows.iter().filter(|r| given_up(r)).count();
    // the backoff is drawn here: the write closure must be Send
    let backoff = (result.retry && gave_up < rows.len()).then(|| {
        ctx.t
            .deliver
            .backoff(attempt, &mut rand::thread_rng())
            .max(Duration::from_secs(result.retry_after_secs.unwrap_or(0)))
    });
    let plan: Vec<(String, u32, Option<Duration>)> = rows
        .iter()
        .map(|r| {
            let backoff = if given_up(r) { None } else { backoff };
            (r.id.clone(), attempt_of(r), backoff)
        })
        .collect();
    let r = result.clone();
    let next_at = ctx
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let mut next_at = None;
                for (id, attempt, backoff) in &plan {
                    next_at = record_attempt(tx, id, *attempt, now, &r, *backoff)
                        .await?
                        .or(next_at);
                }
                Ok::<_, rm_store::StoreError>(next_at)
            })
        })
        .await?;
    tracing::info!(
        delivery_id = %first.id,
        webhook_id = webhook_id.as_deref().unwrap_or(&first.webhook_id),
        alert_id = first.alert_id.as_deref().unwrap_or(""),
        channel_id = %first.channel_id,
        event = %first.event,
        rows = rows.len(),
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
