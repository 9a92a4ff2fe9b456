//! The notification delivery contract: what the alerts role sends to the
//! notifier queue group on `rm.svc.notifier.deliver`, and what comes back.
//!
//! - [`DeliverRequest`]: one attempt at delivering one [`NotificationEvent`]
//!   to one channel. The channel definition ([`ChannelDef`], with its tokens
//!   and webhook secret) travels [`Sealed`] to the notifier role's xkey, so
//!   the bus never carries channel secrets in the clear. `webhook_id` is the
//!   same on every retry of one event to one channel: receivers deduplicate
//!   on it.
//! - [`NotificationEvent`]: the one stable webhook envelope
//!   `{type, id, timestamp, data: {alert, host, group}}` for raised,
//!   acknowledged, resolved and test events (`group` is `null` but when
//!   many changes of one kind go as one notification, [`GroupInfo`]). It is the webhook body as is and the source of
//!   the ntfy message.
//! - [`DeliverReply`]: the outcome of the attempt — `delivered`, `retryable`
//!   (429, 5xx, timeout, connection error, notifier busy) or `failed`
//!   (final: other 4xx, redirects, a bad or unopenable channel, a malformed
//!   request) — with HTTP status, latency and a human error for the
//!   delivery log.
//!
//! Closed-looking sets (event type, alert kind, severity, state, outcome)
//! keep values this build does not know verbatim ([`AlertKind::Other`] and
//! friends), so an older notifier forwards a newer alert faithfully.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use data_encoding::{BASE64, BASE64_NOPAD};
use nkeys::XKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::msg::{PROTOCOL_VERSION, Sealed};
use crate::seal::{self, SealError};
use crate::subject::{self, SvcRole, Verb};

fn v1() -> u32 {
    PROTOCOL_VERSION
}

/// The notifier's delivery verb.
pub const DELIVER: Verb = Verb::new("deliver");

/// The queue group every notifier copy joins, so each request is handled by
/// exactly one of them.
pub const QUEUE_GROUP: &str = "notifier";

/// Per-attempt HTTP timeout the notifier uses unless configured otherwise.
/// A requester's own timeout must be longer than this plus the notifier's
/// queue wait, or it will retry deliveries that are still in flight.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// `rm.svc.notifier.deliver`.
pub fn deliver_subject() -> String {
    subject::svc(SvcRole::Notifier, DELIVER)
}

/// An enum over strings that keeps unknown values verbatim.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this build does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => Self::$variant, )+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }
    };
}

open_enum! {
    /// What happened: the envelope's `type` (Standard Webhooks style,
    /// `<thing>.<what>`).
    pub enum EventType {
        Raised => "alert.raised",
        Acknowledged => "alert.acknowledged",
        Resolved => "alert.resolved",
        /// A synthetic event from a channel's "send test notification".
        Test => "alert.test",
    }
}

open_enum! {
    /// The rule that raised an alert.
    pub enum AlertKind {
        BackupFailed => "backup_failed",
        ForgetFailed => "forget_failed",
        PruneFailed => "prune_failed",
        CheckFailed => "check_failed",
        StaleSchedule => "stale_schedule",
        AgentOffline => "agent_offline",
        /// A backup far from its host's usual figures (ransomware or an
        /// exclusion mistake).
        BackupAnomaly => "backup_anomaly",
        /// The synthetic alert of a test notification.
        Test => "test",
    }
}

impl AlertKind {
    /// A short human title.
    pub fn label(&self) -> &str {
        match self {
            Self::BackupFailed => "Backup failed",
            Self::ForgetFailed => "Forget failed",
            Self::PruneFailed => "Prune failed",
            Self::CheckFailed => "Check failed",
            Self::StaleSchedule => "Scheduled backup missed",
            Self::AgentOffline => "Agent offline",
            Self::BackupAnomaly => "Unusual backup",
            Self::Test => "Test notification",
            Self::Other(s) => s,
        }
    }
}

open_enum! {
    /// How bad an alert is.
    pub enum Severity {
        Info => "info",
        Warning => "warning",
        Critical => "critical",
    }
}

open_enum! {
    /// Where an alert is in its life.
    pub enum AlertState {
        Open => "open",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
}

open_enum! {
    /// The result of one delivery attempt.
    pub enum DeliverOutcome {
        /// The endpoint accepted it (2xx).
        Delivered => "delivered",
        /// Try again later, with the same `webhook_id` (429, 5xx, timeout,
        /// connection error, notifier busy). Requesters treat an unknown
        /// outcome like this one.
        Retryable => "retryable",
        /// Final: retrying the same request cannot succeed.
        Failed => "failed",
    }
}

// ---------------------------------------------------------------- the envelope

/// The alert an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInfo {
    pub id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    /// What on the host the alert is about (schedule, repository); `""` for
    /// the host as a whole.
    #[serde(default)]
    pub subject: String,
    /// One human sentence.
    pub message: String,
    /// RFC 3339, UTC.
    pub raised_at: String,
    /// RFC 3339, UTC: the last evaluation that confirmed the condition.
    pub last_seen_at: String,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<String>,
    /// A user name, or `system` for automatic resolution.
    pub resolved_by: Option<String>,
    /// The alert's page in the UI.
    pub url: Option<String>,
}

/// The host an alert is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub id: String,
    pub name: String,
}

/// `data` of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub alert: AlertInfo,
    pub host: HostInfo,
    /// `null` for one alert's change. When many changes of one kind reach
    /// one channel at once (a bus node down: thousands of hosts offline),
    /// the alerts role sends them as one notification: then `alert` is a
    /// summary (`id` the group's, `message` naming the hosts), `host` is
    /// `{id: "", name: "<n> hosts"}`, and this lists every change.
    #[serde(default)]
    pub group: Option<GroupInfo>,
}

/// The alert changes one grouped notification stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// How many changes (`alerts.len()`).
    pub count: u64,
    /// How many distinct hosts they are on.
    pub hosts: u64,
    /// Each change as its own event would have carried it, oldest first.
    pub alerts: Vec<GroupMember>,
}

/// One change of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub alert: AlertInfo,
    pub host: HostInfo,
}

/// The one stable webhook envelope: `{type, id, timestamp, data: {alert,
/// host, group}}`. Every key is always present (absent values are `null`), whatever
/// the type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// This event's id (one alert change), the same for every channel.
    pub id: String,
    /// When the change happened, RFC 3339 UTC.
    pub timestamp: String,
    pub data: EventData,
}

impl NotificationEvent {
    /// The synthetic info-severity event a channel's test send delivers
    /// through the real send path.
    pub fn test(id: impl Into<String>, now_ms: i64, url: Option<String>) -> Self {
        let ts = rfc3339_utc(now_ms);
        Self {
            kind: EventType::Test,
            id: id.into(),
            timestamp: ts.clone(),
            data: EventData {
                alert: AlertInfo {
                    id: "test".into(),
                    kind: AlertKind::Test,
                    severity: Severity::Info,
                    state: AlertState::Open,
                    subject: String::new(),
                    message: "Test notification from restic-manager: this channel works.".into(),
                    raised_at: ts.clone(),
                    last_seen_at: ts,
                    acknowledged_at: None,
                    acknowledged_by: None,
                    resolved_at: None,
                    resolved_by: None,
                    url,
                },
                host: HostInfo {
                    id: "test".into(),
                    name: "restic-manager".into(),
                },
                group: None,
            },
        }
    }
}

/// The UI's alerts list (relative to its base URL) showing the alerts of a
/// grouped change: `alerts?state=<open|acknowledged|resolved>&kind=<kind>`.
pub fn group_list_path(change: &EventType, kind: &AlertKind) -> String {
    let state = match change {
        EventType::Acknowledged => "acknowledged",
        EventType::Resolved => "resolved",
        _ => "open",
    };
    format!("alerts?state={state}&kind={kind}")
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds
/// (`2026-05-01T12:34:56.789Z`). Times beyond jiff's range (years
/// -9999..=9999) are clamped to it.
pub fn rfc3339_utc(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

// ---------------------------------------------------------------- channels

/// How a channel authenticates to an ntfy server.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NtfyAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>` (an ntfy access token, `tk_...`).
    Bearer { token: String },
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: String, password: String },
}

impl fmt::Debug for NtfyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            Self::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// ntfy priorities (1 min … 5 max) per severity, overriding the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtfyPriorities {
    pub critical: Option<u8>,
    pub warning: Option<u8>,
    pub info: Option<u8>,
}

/// An ntfy channel.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtfyChannel {
    /// The server's root URL (`https://ntfy.sh`); the JSON publish goes to
    /// this URL, not to `/<topic>`.
    pub server_url: String,
    /// On a public server, whoever knows the topic can read it: a secret.
    pub topic: String,
    #[serde(default)]
    pub auth: NtfyAuth,
    /// Base URL of the UI as the phone reaches it, when it differs from the
    /// one alerts link to: the click link becomes `<base>/alerts/<id>`.
    pub click_base_url: Option<String>,
    #[serde(default)]
    pub priorities: NtfyPriorities,
}

impl fmt::Debug for NtfyChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtfyChannel")
            .field("server_url", &redact_url(&self.server_url))
            .field("topic", &"<redacted>")
            .field("auth", &self.auth)
            .field("click_base_url", &self.click_base_url)
            .field("priorities", &self.priorities)
            .finish()
    }
}

/// A webhook channel (Standard Webhooks).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookChannel {
    /// May carry a token in its path or query: shown only as its origin.
    pub url: String,
    /// `whsec_<base64>`: when present every request is signed.
    pub secret: Option<String>,
    /// Extra request headers (their values may be credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A channel definition in the clear, after opening its [`Sealed`] form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelDef {
    Ntfy(NtfyChannel),
    Webhook(WebhookChannel),
}

/// A channel definition that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel: {0}")]
pub struct ChannelError(pub String);

/// Headers the notifier sets itself; a channel may not set them.
pub const RESERVED_HEADERS: [&str; 6] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
];

impl ChannelDef {
    /// Checks everything that can be checked without sending: URLs, the
    /// ntfy topic, priorities, the webhook secret and header names. The
    /// alerts role runs it on save; the notifier on every delivery.
    pub fn validate(&self) -> Result<(), ChannelError> {
        match self {
            Self::Ntfy(n) => {
                check_http_url("server_url", &n.server_url)?;
                if n.topic.is_empty()
                    || n.topic.len() > 64
                    || !n
                        .topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(ChannelError(
                        "ntfy topic must be 1-64 letters, digits, '-' or '_'".into(),
                    ));
                }
                if let Some(base) = &n.click_base_url {
                    check_http_url("click_base_url", base)?;
                }
                let p = &n.priorities;
                for (name, value) in [
                    ("critical", p.critical),
                    ("warning", p.warning),
                    ("info", p.info),
                ] {
                    if value.is_some_and(|v| !(1..=5).contains(&v)) {
                        return Err(ChannelError(format!(
                            "ntfy priority for {name} must be 1 to 5"
                        )));
                    }
                }
                match &n.auth {
                    NtfyAuth::Bearer { token } if token.is_empty() => {
                        Err(ChannelError("ntfy bearer token is empty".into()))
                    }
                    NtfyAuth::Basic { user, .. } if user.is_empty() || user.contains(':') => Err(
                        ChannelError("ntfy basic-auth user is empty or contains ':'".into()),
                    ),
                    _ => Ok(()),
                }
            }
            Self::Webhook(w) => {
                check_http_url("url", &w.url)?;
                if let Some(secret) = &w.secret {
                    webhook_secret_key(secret)?;
                }
                for (name, value) in &w.headers {
                    let lower = name.to_ascii_lowercase();
                    if name.is_empty() || !name.bytes().all(is_token_byte) {
                        return Err(ChannelError(format!("header name {name:?} is not valid")));
                    }
                    if RESERVED_HEADERS.contains(&lower.as_str()) {
                        return Err(ChannelError(format!(
                            "header {name:?} is set by the notifier and cannot be overridden"
                        )));
                    }
                    if !value
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
                    {
                        return Err(ChannelError(format!(
                            "header {name:?} has a value with control or non-ASCII characters"
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
pub fn webhook_secret_key(secret: &str) -> Result<Vec<u8>, ChannelError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = BASE64
        .decode(b64.as_bytes())
        .or_else(|_| BASE64_NOPAD.decode(b64.as_bytes()))
        .map_err(|_| ChannelError("webhook secret is not whsec_ followed by base64".into()))?;
    if key.is_empty() {
        return Err(ChannelError("webhook secret is empty".into()));
    }
    Ok(key)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_http_url(field: &str, url: &str) -> Result<(), ChannelError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| authority_host(r).1).unwrap_or_default();
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ChannelError(format!(
            "{field} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(())
}

/// Splits `user@host:port/path` into (authority without user, host part).
fn authority_host(after_scheme: &str) -> (&str, &str) {
    let end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if authority.starts_with('[') {
        authority.split_once(']').map_or("", |(h, _)| h)
    } else {
        authority.split(':').next().unwrap_or("")
    };
    (authority, host.trim_start_matches('['))
}

/// A URL reduced to `scheme://host[:port]`, for logs and `Debug`: paths,
/// queries and user info may hold tokens.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() => {
            let (authority, _) = authority_host(rest);
            format!("{scheme}://{authority}")
        }
        _ => "<not a URL>".into(),
    }
}

// ---------------------------------------------------------------- request and reply

/// `rm.svc.notifier.deliver` request: one attempt at one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverRequest {
    #[serde(default = "v1")]
    pub v: u32,
    /// The outbox row this attempt belongs to.
    pub delivery_id: String,
    /// Stable across every retry of this event to this channel: sent as
    /// `webhook-id`, the receiver's idempotency key.
    pub webhook_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The sender's public xkey (the alerts role): the box must be from it.
    pub sender_xkey: String,
    /// A [`ChannelDef`] sealed to the notifier role's xkey.
    pub channel: Sealed,
    pub event: NotificationEvent,
}

impl DeliverRequest {
    /// Seals `channel` from `sender` to the notifier role's public xkey.
    pub fn seal_channel(
        channel: &ChannelDef,
        sender: &XKey,
        notifier_xkey: &str,
    ) -> Result<Sealed, SealError> {
        seal::seal(channel, sender, notifier_xkey)
    }

    /// Opens the channel with the notifier role's key pair.
    pub fn open_channel(&self, notifier: &XKey) -> Result<ChannelDef, SealError> {
        seal::open(&self.channel, notifier, &self.sender_xkey)
    }
}

/// Reply to [`DeliverRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverReply {
    #[serde(default = "v1")]
    pub v: u32,
    /// Echoed from the request (absent when the request did not parse).
    pub delivery_id: Option<String>,
    pub outcome: DeliverOutcome,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Time spent on the HTTP attempt.
    #[serde(default)]
    pub latency_ms: u64,
    /// Why it was not delivered: one line, without secrets.
    pub error: Option<String>,
    /// Echoed from the request.
    #[serde(default)]
    pub attempt: u32,
    /// The endpoint's `Retry-After`, in seconds, when it sent one.
    pub retry_after_secs: Option<u64>,
    /// Which notifier copy handled it (its instance name), for the
    /// delivery log: "which machine cannot reach the endpoint".
    pub notifier: Option<String>,
}

impl DeliverReply {
    /// A reply for the given outcome; the rest empty.
    pub fn new(outcome: DeliverOutcome, delivery_id: Option<String>, attempt: u32) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            delivery_id,
            outcome,
            status: None,
            latency_ms: 0,
            error: None,
            attempt,
            retry_after_secs: None,
            notifier: None,
        }
    }

    /// Whether the requester should try again later.
    pub fn should_retry(&self) -> bool {
        !matches!(
            self.outcome,
            DeliverOutcome::Delivered | DeliverOutcome::Failed
        )
    }
}

#[cfg(test)]
mod tests;
