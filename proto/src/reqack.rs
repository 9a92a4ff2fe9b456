//! Request/ack with timeout, retries, backoff with jitter and an
//! idempotency key.
//!
//! Core NATS delivers at most once, so every message that must arrive
//! (job `started`/`done`, dispatch, notifier deliveries) is sent as a
//! request and retried until an [`Ack`] comes back. Every attempt carries the
//! same idempotency key in the [`IDEMPOTENCY_HEADER`] header, so the
//! receiver can recognise a replay and answer "duplicate" instead of
//! recording twice.

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, RequestErrorKind};
use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

use crate::msg::{Ack, decode};

/// Header carrying the idempotency key on every attempt.
pub const IDEMPOTENCY_HEADER: &str = "Rm-Idempotency-Key";

/// The key that lets a receiver deduplicate retries, e.g. `<job>:done`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key for one phase of one job: `(job id, phase)` is what ingest
    /// deduplicates on.
    pub fn job_phase(job: &crate::JobId, phase: crate::subject::JobTopic) -> Self {
        Self(format!("{job}:{}", phase.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the key of a received message, if it has one.
    pub fn of(msg: &Message) -> Option<Self> {
        let v = msg.headers.as_ref()?.get(IDEMPOTENCY_HEADER)?;
        Some(Self(v.as_str().to_owned()))
    }
}

/// How hard to try. Every interval is configurable (tests shorten them).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// How long one attempt waits for its reply.
    pub attempt_timeout: Duration,
    /// Give up after this much time in total; `None` = never (the caller
    /// stops by dropping the future, e.g. on shutdown).
    pub deadline: Option<Duration>,
    /// Pause after the first failed attempt.
    pub initial_backoff: Duration,
    /// Largest pause between attempts.
    pub max_backoff: Duration,
    /// Fraction of each pause that is random, 0.0..=1.0. Spreads retries of
    /// many agents after an outage.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            deadline: Some(Duration::from_secs(60)),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based), before
    /// jitter: `initial * 2^(attempt-1)`, capped at `max_backoff`.
    pub fn base_backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// The pause with jitter applied: uniformly within
    /// `[base * (1 - jitter), base]`.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_backoff(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || base.is_zero() {
            return base;
        }
        let factor = 1.0 - jitter * rng.r#gen::<f64>();
        base.mul_f64(factor)
    }
}

/// Why a request did not get through.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no reply on {subject} after {attempts} attempts in {elapsed:?} (last: {last})")]
    GaveUp {
        subject: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("request on {subject} cannot be sent: {reason}")]
    Invalid { subject: String, reason: String },
    /// Bigger than the server accepts: retrying cannot help; split it or
    /// set it aside.
    #[error("request on {subject} is too large for the bus: {too_large}")]
    TooLarge {
        subject: String,
        too_large: crate::size::TooLarge,
    },
    #[error("{subject} refused the message: {reason}")]
    Refused { subject: String, reason: String },
    #[error(transparent)]
    Decode(#[from] crate::msg::DecodeError),
}

/// Sends `payload` as a request on `subject` until a reply arrives or the
/// policy's deadline passes. Returns the first reply, whatever it says.
pub async fn request_with_retry(
    client: &Client,
    subject: &str,
    key: &IdempotencyKey,
    payload: Bytes,
    policy: &RetryPolicy,
) -> Result<Message, RequestError> {
    let start = Instant::now();
    let mut attempts = 0u32;
    let header = crate::size::header_len([(IDEMPOTENCY_HEADER, key.as_str())]);
    loop {
        // Checked on every attempt: a reconnect may reach a server with a
        // smaller limit.
        if let Err(too_large) = crate::size::check(client, header, payload.len()) {
            return Err(RequestError::TooLarge {
                subject: subject.to_owned(),
                too_large,
            });
        }
        attempts += 1;
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_HEADER, key.as_str());
        let request = async_nats::Request::new()
            .payload(payload.clone())
            .headers(headers)
            .timeout(Some(policy.attempt_timeout));
        let last = match client.send_request(subject.to_owned(), request).await {
            Ok(msg) => return Ok(msg),
            Err(e) => match e.kind() {
                RequestErrorKind::NoResponders => "no responders".to_owned(),
                RequestErrorKind::TimedOut => "timed out".to_owned(),
                RequestErrorKind::Other => e.to_string(),
                // Retrying cannot fix these.
                RequestErrorKind::MaxPayloadExceeded => {
                    return Err(RequestError::TooLarge {
                        subject: subject.to_owned(),
                        too_large: crate::size::TooLarge {
                            size: header + payload.len(),
                            max: crate::size::max_payload(client),
                        },
                    });
                }
                RequestErrorKind::InvalidSubject => {
                    return Err(RequestError::Invalid {
                        subject: subject.to_owned(),
                        reason: e.to_string(),
                    });
                }
            },
        };
        let pause = policy.backoff(attempts, &mut rand::thread_rng());
        let elapsed = start.elapsed();
        tracing::debug!(subject, attempts, ?pause, reason = %last, "request not answered; retrying");
        if let Some(deadline) = policy.deadline
            && elapsed + pause >= deadline
        {
            return Err(RequestError::GaveUp {
                subject: subject.to_owned(),
                attempts,
                elapsed,
                last,
            });
        }
        tokio::time::sleep(pause).await;
    }
}

/// [`request_with_retry`] for messages answered with an [`Ack`]: a reply
/// with `ok: false` is a definitive refusal and is not retried.
pub async fn request_ack(
    client: &Client,
    subject: &str,
    key: &IdempotencyKey,
    payload: Bytes,
    policy: &RetryPolicy,
) -> Result<Ack, RequestError> {
    let reply = request_with_retry(client, subject, key, payload, policy).await?;
    let ack: Ack = decode("ack", &reply.payload)?;
    if ack.ok {
        Ok(ack)
    } else {
        Err(RequestError::Refused {
            subject: subject.to_owned(),
            reason: ack.error.unwrap_or_else(|| "no reason given".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempt_timeout: Duration::from_millis(100),
            deadline: Some(Duration::from_secs(10)),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: 0.5,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let got: Vec<u128> = (1..=6).map(|a| p.base_backoff(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.base_backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_band_and_varies() {
        let p = policy();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..200).map(|_| p.backoff(3, &mut rng)).collect();
        for s in &samples {
            assert!(
                *s >= Duration::from_millis(200) && *s <= Duration::from_millis(400),
                "{s:?}"
            );
        }
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(
            distinct.len() > 50,
            "jitter produced only {} values",
            distinct.len()
        );
        let none = RetryPolicy { jitter: 0.0, ..p };
        assert_eq!(none.backoff(3, &mut rng), Duration::from_millis(400));
    }

    #[test]
    fn job_phase_keys() {
        let j = crate::JobId::parse("j1").unwrap();
        assert_eq!(
            IdempotencyKey::job_phase(&j, crate::subject::JobTopic::Done).as_str(),
            "j1:done"
        );
    }
}
