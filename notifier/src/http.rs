//! One HTTP attempt and how its result is classified.
//!
//! - 2xx: delivered.
//! - 429, 408, 425, 5xx, timeouts and connection errors: retryable (with the
//!   endpoint's `Retry-After` seconds when given).
//! - 3xx: failed — redirects are never followed (a webhook's signature and
//!   credentials must not travel to wherever a redirect points).
//! - every other 4xx (410 gone included): failed, final.
//!
//! Error texts name the endpoint only by its origin and never include the
//! request's URL path, headers or body: they go to the delivery log.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{LOCATION, RETRY_AFTER};
use rm_bus::clock::SharedClock;
use rm_bus::notify::{DeliverOutcome, redact_url};

/// How much of an error response's body is read for the error text.
const SNIPPET_BYTES: usize = 512;
/// How much of it is kept.
const SNIPPET_CHARS: usize = 200;
/// `Retry-After` values beyond this are capped.
const MAX_RETRY_AFTER_SECS: u64 = 24 * 3600;

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: DeliverOutcome,
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
    pub retry_after_secs: Option<u64>,
}

/// An HTTP client for deliveries: no redirects, one timeout per attempt.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    timeout: Duration,
    clock: SharedClock,
}

impl HttpSender {
    /// Builds the client. rustls runs on ring: the ring provider becomes the
    /// process default unless another one was installed first.
    pub fn new(timeout: Duration, clock: SharedClock) -> anyhow::Result<Self> {
        // Err means a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!(
                "restic-manager-notifier/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            client,
            timeout,
            clock,
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request to `url` (used only for error texts) and
    /// classifies the result.
    pub async fn send(&self, url: &str, request: reqwest::RequestBuilder) -> Attempt {
        let started = Instant::now();
        let result = request.send().await;
        let mut attempt = match result {
            Ok(resp) => self.classify_response(url, resp, started).await,
            Err(e) => self.classify_error(url, &e),
        };
        attempt.latency = started.elapsed();
        attempt
    }

    async fn classify_response(
        &self,
        url: &str,
        resp: reqwest::Response,
        started: Instant,
    ) -> Attempt {
        let status = resp.status();
        let retry_after_secs = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, self.clock.now_secs()));
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| {
                if l.contains("://") {
                    redact_url(l)
                } else {
                    "a path on the same server".to_owned()
                }
            });
        let (outcome, error) = classify_status(status, location.as_deref());
        let error = match error {
            Some(mut text) if !status.is_redirection() => {
                let remaining = self.timeout.saturating_sub(started.elapsed());
                if let Some(snippet) = body_snippet(resp, remaining).await {
                    text.push_str(": ");
                    text.push_str(&snippet);
                }
                Some(text)
            }
            other => other,
        };
        Attempt {
            outcome,
            status: Some(status.as_u16()),
            latency: Duration::ZERO,
            error: error.map(|e| format!("{} answered {e}", redact_url(url))),
            retry_after_secs,
        }
    }

    fn classify_error(&self, url: &str, e: &reqwest::Error) -> Attempt {
        let endpoint = redact_url(url);
        let (outcome, error) = if e.is_timeout() {
            (
                DeliverOutcome::Retryable,
                format!("{endpoint} did not answer within {:?}", self.timeout),
            )
        } else if e.is_builder() {
            (
                DeliverOutcome::Failed,
                format!("cannot build a request for {endpoint}: {}", error_chain(e)),
            )
        } else if e.is_connect() {
            (
                DeliverOutcome::Retryable,
                format!("cannot connect to {endpoint}: {}", error_chain(e)),
            )
        } else {
            (
                DeliverOutcome::Retryable,
                format!("request to {endpoint} failed: {}", error_chain(e)),
            )
        };
        Attempt {
            outcome,
            status: None,
            latency: Duration::ZERO,
            error: Some(error),
            retry_after_secs: None,
        }
    }
}

/// The outcome for an HTTP status, and the error text when not delivered.
pub fn classify_status(
    status: StatusCode,
    location: Option<&str>,
) -> (DeliverOutcome, Option<String>) {
    let code = status.as_u16();
    if status.is_success() {
        (DeliverOutcome::Delivered, None)
    } else if status.is_redirection() {
        (
            DeliverOutcome::Failed,
            Some(format!(
                "HTTP {code}, a redirect to {}; redirects are not followed: set the channel's URL to the final one",
                location.unwrap_or("nowhere")
            )),
        )
    } else if matches!(code, 408 | 425 | 429) || status.is_server_error() {
        (DeliverOutcome::Retryable, Some(format!("HTTP {code}")))
    } else if code == 410 {
        (
            DeliverOutcome::Failed,
            Some("HTTP 410: the endpoint is gone".to_owned()),
        )
    } else {
        (DeliverOutcome::Failed, Some(format!("HTTP {code}")))
    }
}

/// `Retry-After` as seconds from `now_secs`: either delay-seconds or an
/// HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`). Capped at a
/// day; a date in the past means "now" (0).
pub fn retry_after(value: &str, now_secs: i64) -> Option<u64> {
    let value = value.trim();
    let secs = match value.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => {
            let at = parse_http_date(value)?;
            u64::try_from(at.saturating_sub(now_secs)).unwrap_or(0)
        }
    };
    Some(secs.min(MAX_RETRY_AFTER_SECS))
}

/// Unix seconds of an HTTP date (IMF-fixdate, which HTTP requires to be
/// in GMT): parsed by jiff's RFC 2822 parser, which also checks the
/// weekday against the date.
fn parse_http_date(s: &str) -> Option<i64> {
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let s = s.trim();
    if !s.ends_with(" GMT") {
        return None;
    }
    PARSER
        .parse_timestamp(s)
        .ok()
        .map(jiff::Timestamp::as_second)
}

/// The start of an error response's body, on one line, or `None` when it is
/// empty or does not arrive in time.
async fn body_snippet(mut resp: reqwest::Response, within: Duration) -> Option<String> {
    let read = async {
        let mut buf = Vec::new();
        while buf.len() < SNIPPET_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                _ => break,
            }
        }
        buf
    };
    let buf = tokio::time::timeout(within, read).await.ok()?;
    let text: String = String::from_utf8_lossy(&buf[..buf.len().min(SNIPPET_BYTES)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// An error and its sources on one line, without the request URL.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        // reqwest's own text names the URL; the sources say what happened.
        parts.push(if e.is_connect() {
            "connection failed".to_owned()
        } else {
            "transport error".to_owned()
        });
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(code: u16) -> DeliverOutcome {
        classify_status(StatusCode::from_u16(code).unwrap(), None).0
    }

    #[test]
    fn statuses_map_to_outcomes() {
        for code in [200, 201, 202, 204] {
            assert_eq!(outcome(code), DeliverOutcome::Delivered, "{code}");
        }
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(outcome(code), DeliverOutcome::Retryable, "{code}");
        }
        for code in [301, 302, 307, 308, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(outcome(code), DeliverOutcome::Failed, "{code}");
        }
        let (_, text) = classify_status(StatusCode::FOUND, Some("https://elsewhere.example"));
        let text = text.unwrap();
        assert!(text.contains("not followed") && text.contains("https://elsewhere.example"));
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        // 1994-11-06T08:49:37Z
        let at = 784_111_777;
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(at));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(retry_after(" 120 ", at), Some(120));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:50:07 GMT", at), Some(30));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", at), Some(0));
        assert_eq!(retry_after("9999999", at), Some(MAX_RETRY_AFTER_SECS));
        for bad in [
            "soon",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            // the weekday does not match the date
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "-5",
        ] {
            assert_eq!(retry_after(bad, at), None, "{bad}");
        }
    }
}
