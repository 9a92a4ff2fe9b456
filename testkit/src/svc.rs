//! Service calls the way the web role makes them: an `rm.svc.<role>.<verb>`
//! request as operator `alice`, retried with one idempotency key, the reply
//! envelope unwrapped into the body or the service's error.

use std::time::Duration;

use async_nats::Client;
use rm_bus::msg::{
    Actor, ActorVia, PROTOCOL_VERSION, SvcError, SvcReply, SvcRequest, decode, encode,
};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::subject::{self, SvcRole, Verb};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Calls `role`'s `verb` with `body`; each attempt waits up to `attempt`.
/// Transport failures come back as code `unavailable`.
pub async fn svc_call<B: Serialize, R: DeserializeOwned>(
    client: &Client,
    role: SvcRole,
    verb: Verb,
    body: B,
    attempt: Duration,
) -> Result<R, SvcError> {
    let req = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "alice".into(),
            via: ActorVia::Session,
            address: None,
        },
        body,
    };
    let policy = RetryPolicy {
        attempt_timeout: attempt,
        deadline: Some(attempt + Duration::from_secs(5)),
        ..RetryPolicy::default()
    };
    let key = IdempotencyKey::new(rm_bus::ids::random_token(8));
    let fail = |code: &str, message: String| SvcError {
        code: code.into(),
        message,
    };
    let msg = request_with_retry(
        client,
        &subject::svc(role, verb),
        &key,
        encode(&req),
        &policy,
    )
    .await
    .map_err(|e| fail("unavailable", e.to_string()))?;
    let reply: SvcReply<R> =
        decode("svc reply", &msg.payload).map_err(|e| fail("decode", e.to_string()))?;
    match (reply.ok, reply.error) {
        (Some(v), None) => Ok(v),
        (_, Some(e)) => Err(e),
        (None, None) => Err(fail("empty", "empty reply".into())),
    }
}
