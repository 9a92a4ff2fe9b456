//! The one way to ask an owning role to change something: a
//! `rm.svc.<role>.<verb>` request with the operator's [`Actor`] in the
//! envelope, decoded from `SvcReply`. Used by every API handler, the
//! enrollment endpoint and the `restic-manager admin` commands.
//!
//! A request is retried while no responder exists (nobody received it).
//! A request to the control plane carries an idempotency key and is also
//! retried after an attempt's timeout (a third of the budget, at least a
//! second): the control plane answers a retry with the first attempt's
//! reply instead of acting twice, so a reply lost on a busy bus costs a
//! retry, not the operator's change. The other roles do not deduplicate:
//! their timeouts are not retried, because the owner may have acted.

use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use axum::http::StatusCode;
use rm_bus::msg::{Actor, PROTOCOL_VERSION, SvcError, SvcReply, SvcRequest, decode, encode};
use rm_bus::reqack::IDEMPOTENCY_HEADER;
use rm_bus::subject::{self, SvcRole, Verb};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Why a service call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SvcCallError {
    /// Nobody answered in time (the owning role is down or busy).
    #[error("the {role} did not answer: {detail}")]
    Unavailable { role: &'static str, detail: String },
    /// The owner refused, with its code and message.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(SvcError),
    /// The answer made no sense.
    #[error("bad answer from the {role}: {detail}")]
    Malformed { role: &'static str, detail: String },
}

fn role_name(role: SvcRole) -> &'static str {
    match role {
        SvcRole::Controlplane => "control plane",
        SvcRole::Alerts => "alerts role",
        SvcRole::Notifier => "notifier",
    }
}

/// Sends `body` to `role`'s `verb` as `actor`; waits at most `timeout`.
pub async fn call<B: Serialize, R: DeserializeOwned>(
    bus: &Client,
    role: SvcRole,
    verb: Verb,
    actor: Actor,
    body: B,
    timeout: Duration,
) -> Result<R, SvcCallError> {
    let envelope = SvcRequest {
        v: PROTOCOL_VERSION,
        actor,
        body,
    };
    let payload = encode(&envelope);
    let subject = subject::svc(role, verb);
    let name = role_name(role);
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut pause = Duration::from_millis(100);
    // Only the control plane recognises a retry by its key.
    let dedupes = role == SvcRole::Controlplane;
    let key = rm_bus::ids::random_token(8);
    let attempt = if dedupes {
        (timeout / 3).max(Duration::from_secs(1))
    } else {
        timeout
    };
    let sent = async {
        Ok::<_, SvcCallError>(loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut request = async_nats::Request::new()
                .payload(payload.clone())
                .timeout(Some(left.min(attempt).max(Duration::from_millis(1))));
            if dedupes {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(IDEMPOTENCY_HEADER, key.as_str());
                request = request.headers(headers);
            }
            match bus.send_request(subject.clone(), request).await {
                Ok(m) => break m,
                Err(e) if e.kind() == RequestErrorKind::NoResponders && left > pause => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e)
                    if dedupes
                        && e.kind() == RequestErrorKind::TimedOut
                        && deadline > tokio::time::Instant::now() =>
                {
                    tracing::debug!(
                        verb = verb.as_str(),
                        "service attempt timed out; retrying with its key"
                    );
                }
                Err(e) => {
                    return Err(SvcCallError::Unavailable {
                        role: name,
                        detail: e.to_string(),
                    });
                }
            }
        })
    }
    .await;
    // the request's `server-timing` counts the wait, and the answering
    // role's own share of it (`metrics::time`)
    let owner = sent
        .as_ref()
        .ok()
        .and_then(|m| rm_bus::msg::svc_took(m.headers.as_ref()));
    crate::metrics::bus_wait(started.elapsed(), owner);
    let msg = sent?;
    match decode::<SvcReply<R>>("service reply", &msg.payload) {
        Ok(SvcReply { ok: Some(r), .. }) => Ok(r),
        Ok(SvcReply { error: Some(e), .. }) => Err(SvcCallError::Refused(e)),
        Ok(_) => Err(SvcCallError::Malformed {
            role: name,
            detail: "neither a result nor an error".into(),
        }),
        Err(e) => Err(SvcCallError::Malformed {
            role: name,
            detail: e.to_string(),
        }),
    }
}

/// The HTTP status of a service error code.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid" => StatusCode::BAD_REQUEST,
        "forbidden" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn static_code(code: &str) -> &'static str {
    match code {
        "invalid" => "invalid",
        "forbidden" => "forbidden",
        "not_found" => "not_found",
        "conflict" => "conflict",
        "unavailable" => "unavailable",
        _ => "internal",
    }
}

impl From<SvcCallError> for ApiError {
    fn from(e: SvcCallError) -> Self {
        match e {
            SvcCallError::Refused(err) => {
                ApiError::new(status_of(&err.code), static_code(&err.code), err.message)
            }
            SvcCallError::Unavailable { role, .. } => {
                tracing::warn!(error = %e, "service call failed");
                ApiError::unavailable(format!("the {role} is not answering; try again shortly"))
            }
            SvcCallError::Malformed { .. } => {
                tracing::warn!(error = %e, "service call failed");
                ApiError::new(StatusCode::BAD_GATEWAY, "internal", e.to_string())
            }
        }
    }
}
