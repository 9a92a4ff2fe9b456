//! The service router on `rm.svc.controlplane.>`: decodes the envelope,
//! runs the verb's handler, replies with `SvcReply` (after commit: handlers
//! commit before they return). A request carrying an idempotency key that
//! was seen before is answered with the first attempt's reply
//! ([`crate::replies`]). A fresh answer carries this process's own time
//! for the request in [`rm_bus::msg::SVC_TOOK_HEADER`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures_util::StreamExt;
use rm_bus::msg::{SvcReply, SvcRequest, decode, encode};
use rm_bus::reqack::IdempotencyKey;
use rm_bus::subject::{self, SvcRole};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use crate::replies::{Claim, Replies};
use crate::{Cp, api, enroll, jobs, repo_admin, repos, schedules, tags};

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
    pub fn conflict(m: impl Into<String>) -> Self {
        Self {
            code: "conflict",
            message: m.into(),
        }
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self {
            code: "forbidden",
            message: m.into(),
        }
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self {
            code: "unavailable",
            message: m.into(),
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
            rm_store::StoreError::Conflict(m) => Self::conflict(m),
            other => {
                tracing::error!(error = %other, "store error in a service request");
                Self {
                    code: "internal",
                    message: "internal error; see the control plane's log".into(),
                }
            }
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "service request failed");
        Self {
            code: "internal",
            message: "internal error; see the control plane's log".into(),
        }
    }
}

pub(crate) type Outcome<T> = std::result::Result<T, Fail>;

pub(crate) async fn serve(cp: Arc<Cp>) -> Result<()> {
    let mut sub = cp
        .svc_client
        .subscribe(subject::svc_all_of(SvcRole::Controlplane))
        .await?;
    let limit = Arc::new(Semaphore::new(cp.t.svc_concurrency.max(1)));
    let replies = Arc::new(Replies::default());
    while let Some(msg) = sub.next().await {
        let received = Instant::now();
        let Some(reply) = msg.reply.clone() else {
            tracing::warn!(subject = %msg.subject, "service message without reply subject ignored");
            continue;
        };
        let claim = IdempotencyKey::of(&msg).map(|k| {
            replies.claim(
                msg.subject.as_str(),
                k.as_str(),
                &msg.payload,
                Instant::now(),
            )
        });
        let ticket = match claim {
            None => None,
            Some(Claim::Run(t)) => Some(t),
            Some(Claim::Replay(bytes)) => {
                cp.metrics.svc_replayed();
                send(&cp, reply, None, bytes).await;
                continue;
            }
            Some(Claim::Wait(mut rx)) => {
                cp.metrics.svc_replayed();
                let cp = cp.clone();
                tokio::spawn(async move {
                    let bytes = match rx.wait_for(Option::is_some).await {
                        Ok(b) => b.clone().unwrap_or_default(),
                        // the first attempt's task ended without a reply
                        Err(_) => {
                            reply_bytes(
                                &cp,
                                Err(Fail::from(anyhow::anyhow!(
                                    "the first attempt of this request ended without a reply"
                                ))),
                            )
                            .0
                        }
                    };
                    send(&cp, reply, None, bytes).await;
                });
                continue;
            }
        };
        let permit = limit.clone().acquire_owned().await?;
        let cp = cp.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let subj = msg.subject.as_str();
            let key = IdempotencyKey::of(&msg);
            // the key names the request in what its handler logs (a slow write)
            let span = tracing::info_span!("svc", key = key.as_ref().map(IdempotencyKey::as_str));
            let out = handle(&cp, subj, &msg.payload).instrument(span).await;
            let (bytes, keepable) = reply_bytes(&cp, out);
            if let Some(t) = ticket {
                let keep = keepable && verb_of(subj).is_some_and(changes_state);
                replies.finish(t, bytes.clone(), keep, Instant::now());
            }
            let handled = Instant::now();
            // the asker learns this process's share of its wait (the web
            // role's `server-timing` `owner`)
            let took = rm_bus::msg::svc_took_headers(handled - received);
            send(&cp, reply, Some(took), bytes).await;
            drop(permit);
            let phases = Phases {
                waited: started - received,
                handled: handled - started,
                replied: handled.elapsed(),
            };
            phases.log(subj, key.as_ref().map(IdempotencyKey::as_str));
        });
    }
    Ok(())
}

/// Where a service request's time went in this process: waiting for a
/// handler's turn (`svc_concurrency` of them at once), its handler (the
/// write it waits for included), and handing the reply to the bus client
/// (which waits while the client's outgoing buffer is full). The time before
/// it arrived, on the bus and in the subscription's queue, is not here: the
/// asker's own timing minus these is that.
#[derive(Debug, Clone, Copy)]
struct Phases {
    waited: Duration,
    handled: Duration,
    replied: Duration,
}

/// A request whose phases add up to this or more is logged at WARN.
const SLOW_REQUEST: Duration = Duration::from_secs(1);

impl Phases {
    fn total(self) -> Duration {
        self.waited + self.handled + self.replied
    }

    fn is_slow(self) -> bool {
        self.total() >= SLOW_REQUEST
    }

    /// Every request at DEBUG, a slow one at WARN, with its phases in ms.
    fn log(self, subject: &str, key: Option<&str>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (waited_ms, handled_ms, replied_ms) =
            (ms(self.waited), ms(self.handled), ms(self.replied));
        if self.is_slow() {
            tracing::warn!(
                %subject,
                key,
                waited_ms,
                handled_ms,
                replied_ms,
                "slow service request"
            );
        } else {
            tracing::debug!(
                %subject,
                key,
                waited_ms,
                handled_ms,
                replied_ms,
                "service request answered"
            );
        }
    }
}

/// Whether a verb changes something: only their replies are kept for
/// retries (a read runs again).
fn changes_state(verb: rm_bus::subject::Verb) -> bool {
    ![api::PUBKEY, api::METRICS, api::LS, api::REPO_TEST].contains(&verb)
}

/// The reply envelope of an outcome, and whether a retry may be answered
/// with it (not after an `internal` or `unavailable` failure: nothing was
/// changed, the retry should run).
fn reply_bytes(cp: &Cp, out: Outcome<Value>) -> (Bytes, bool) {
    let body = match out {
        Ok(v) => SvcReply::ok(v),
        Err(f) => SvcReply::refused(f.code, f.message),
    };
    let keepable = body
        .error
        .as_ref()
        .is_none_or(|e| e.code != "internal" && e.code != "unavailable");
    let bytes = encode(&body);
    let header = rm_bus::msg::svc_took_header_max();
    if let Err(t) = rm_bus::size::check(&cp.svc_client, header, bytes.len()) {
        // an answer the bus would refuse becomes an error saying so
        let refused = encode(&SvcReply::<Value>::refused(
            "too_large",
            format!("the answer is too large for the bus: {t}"),
        ));
        return (refused, keepable);
    }
    (bytes, keepable)
}

/// Hands a reply to the bus: a fresh answer with `headers` (its
/// [`rm_bus::msg::SVC_TOOK_HEADER`]), a replayed one with none.
async fn send(
    cp: &Cp,
    reply: async_nats::Subject,
    headers: Option<async_nats::HeaderMap>,
    bytes: Bytes,
) {
    let sent = match headers {
        Some(h) => cp.svc_client.publish_with_headers(reply, h, bytes).await,
        None => cp.svc_client.publish(reply, bytes).await,
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "service reply not sent");
    }
}

fn verb_of(subj: &str) -> Option<rm_bus::subject::Verb> {
    api::ALL_VERBS
        .into_iter()
        .find(|v| subject::svc(SvcRole::Controlplane, *v) == subj)
}

async fn handle(cp: &Arc<Cp>, subj: &str, payload: &[u8]) -> Outcome<Value> {
    let Some(verb) = verb_of(subj) else {
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
        v if v == api::PUBKEY => out(Ok(repos::pubkey(cp))),
        v if v == api::METRICS => out(Ok(cp.metrics.snapshot(
            cp.writer.stats(),
            cp.store.commits(),
            cp.writer.first_queued(),
        ))),
        v if v == api::HOST_ADD => out(enroll::host_add(cp, actor, parse(body)?).await),
        v if v == api::HOST_TOKEN => out(enroll::host_token(cp, actor, parse(body)?).await),
        v if v == api::HOST_REVOKE => out(enroll::host_revoke(cp, actor, parse(body)?).await),
        v if v == api::HOST_TAGS => out(tags::set(cp, actor, parse(body)?).await),
        v if v == api::ENROLL => out(enroll::enroll_sealed(cp, parse(body)?).await),
        v if v == api::REPO_ADD => out(repos::add(cp, actor, parse(body)?).await),
        v if v == api::REPO_ATTACH => out(repos::attach(cp, actor, parse(body)?).await),
        v if v == api::REPO_MAINTENANCE => out(repos::maintenance(cp, actor, parse(body)?).await),
        v if v == api::REPO_TEST => out(repos::test(cp, parse(body)?).await),
        v if v == api::REPO_UPDATE => out(repo_admin::update(cp, actor, parse(body)?).await),
        v if v == api::REPO_DETACH => out(repo_admin::detach(cp, actor, parse(body)?).await),
        v if v == api::REPO_DELETE => out(repo_admin::delete(cp, actor, parse(body)?).await),
        v if v == api::REPO_REFRESH => out(repos::refresh(cp, actor, parse(body)?).await),
        v if v == api::SCHEDULE_PUT => out(schedules::put(cp, actor, parse(body)?).await),
        v if v == api::SCHEDULE_DELETE => out(schedules::delete(cp, actor, parse(body)?).await),
        v if v == api::JOB_CREATE => out(jobs::create(cp, actor, parse(body)?).await),
        v if v == api::JOB_CANCEL => out(jobs::cancel(cp, actor, parse(body)?).await),
        v if v == api::LS => out(jobs::ls(cp, parse(body)?).await),
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
    r.and_then(|v| serde_json::to_value(v).map_err(|e| Fail::from(anyhow::Error::from(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(waited: u64, handled: u64, replied: u64) -> Phases {
        let ms = Duration::from_millis;
        Phases {
            waited: ms(waited),
            handled: ms(handled),
            replied: ms(replied),
        }
    }

    #[test]
    fn a_request_is_slow_when_its_wait_handler_and_reply_together_reach_a_second() {
        assert!(!phases(400, 400, 199).is_slow());
        assert!(phases(400, 400, 200).is_slow());
        // each phase alone counts: a full outgoing buffer as much as a write
        assert!(phases(1_000, 0, 0).is_slow());
        assert!(phases(0, 1_000, 0).is_slow());
        assert!(phases(0, 0, 1_000).is_slow());
    }
}
