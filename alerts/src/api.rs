//! The alerts role's services on `rm.svc.alerts.<verb>`: request and reply
//! bodies, wrapped in `SvcRequest` / `SvcReply` envelopes. The web service
//! (the only role allowed to speak for an operator) sends them.
//!
//! Channel definitions carry secrets (tokens, passwords, webhook secrets,
//! URLs with credentials): they travel only as [`SealedChannel`], sealed to
//! the alerts role's public xkey ([`PUBKEY`]).

use rm_bus::notify::ChannelDef;
use rm_bus::subject::Verb;
use serde::{Deserialize, Serialize};

/// The alerts role's public xkey.
pub const PUBKEY: Verb = Verb::new("pubkey");
pub const ALERT_ACK: Verb = Verb::new("alert-ack");
pub const ALERT_RESOLVE: Verb = Verb::new("alert-resolve");
pub const MUTE_SET: Verb = Verb::new("mute-set");
pub const MUTE_CLEAR: Verb = Verb::new("mute-clear");
/// Add a recurring maintenance window to a host.
pub const MAINTENANCE_ADD: Verb = Verb::new("maintenance-add");
pub const MAINTENANCE_DELETE: Verb = Verb::new("maintenance-delete");
pub const CHANNEL_CREATE: Verb = Verb::new("channel-create");
pub const CHANNEL_UPDATE: Verb = Verb::new("channel-update");
pub const CHANNEL_DELETE: Verb = Verb::new("channel-delete");
pub const CHANNEL_LIST: Verb = Verb::new("channel-list");
/// Send a synthetic info event through the real notifier path.
pub const CHANNEL_TEST: Verb = Verb::new("channel-test");

/// The role's counters ([`Metrics`]).
pub const METRICS: Verb = Verb::new("metrics");

/// Every verb, for the service router.
pub const ALL_VERBS: [Verb; 13] = [
    METRICS,
    PUBKEY,
    ALERT_ACK,
    ALERT_RESOLVE,
    MUTE_SET,
    MUTE_CLEAR,
    MAINTENANCE_ADD,
    MAINTENANCE_DELETE,
    CHANNEL_CREATE,
    CHANNEL_UPDATE,
    CHANNEL_DELETE,
    CHANNEL_LIST,
    CHANNEL_TEST,
];

/// The alerts role's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rule-engine passes completed ...
    #[serde(default)]
    pub passes: u64,
    /// ... of which wrote something (a pass that finds nothing changed
    /// opens no write transaction).
    #[serde(default)]
    pub passes_written: u64,
    /// Passes that failed (logged; the next one retries).
    #[serde(default)]
    pub pass_errors: u64,
    /// Transactions the writer task committed ...
    #[serde(default)]
    pub write_batches: u64,
    /// ... holding this many writes.
    #[serde(default)]
    pub writes_committed: u64,
    /// Writer batches that did not commit (busy or read-only database).
    #[serde(default)]
    pub write_batches_failed: u64,
    /// Transactions of the writer's first lane (operators' actions)
    /// committed (counted in `write_batches` too).
    #[serde(default)]
    pub write_batches_first: u64,
    /// Commits on the role's write connection (SQLite commit hook): equal
    /// to `write_batches` when every write goes through the writer task.
    #[serde(default)]
    pub db_commits: u64,
    /// Commits on that connection between the writer task's own
    /// transactions (see `rm_store::writer::WriterStats::commits_outside`):
    /// zero while every write of the role goes through its writer.
    #[serde(default)]
    pub db_commits_outside_writer: u64,
    /// Deliveries (one alert change to one channel) not queued, by reason.
    #[serde(default)]
    pub suppressed: Suppressed,
}

/// Deliveries not queued, by reason: each count is one alert change that
/// one channel was not sent. Counted after the change committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    /// Raised while a one-off mute of its host covered it (one per enabled
    /// channel).
    #[serde(default)]
    pub host_muted: u64,
    /// Raised inside one of its host's recurring maintenance windows (one
    /// per enabled channel).
    #[serde(default)]
    pub maintenance_window: u64,
    /// Acknowledged or resolved while nobody had been told it was raised
    /// (it was raised while muted; one per enabled channel).
    #[serde(default)]
    pub never_notified: u64,
    /// Any change, for each disabled channel.
    #[serde(default)]
    pub channel_disabled: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PubKey {
    pub xkey: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRef {
    pub alert_id: String,
}

/// An alert as the services report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub id: String,
    pub host_id: String,
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    /// open | acknowledged | resolved
    pub state: String,
    pub raised_at: i64,
    pub last_seen_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    /// False when nobody was notified (the host was muted).
    pub notified: bool,
}

impl From<&rm_store::alerts::Alert> for AlertView {
    fn from(a: &rm_store::alerts::Alert) -> Self {
        Self {
            id: a.id.clone(),
            host_id: a.host_id.clone(),
            kind: a.kind.clone(),
            subject: a.subject.clone(),
            severity: a.severity.clone(),
            message: a.message.clone(),
            state: crate::change::state_of(a).as_str().to_owned(),
            raised_at: a.raised_at,
            last_seen_at: a.last_seen_at,
            acknowledged_at: a.acknowledged_at,
            acknowledged_by: a.acknowledged_by.clone(),
            resolved_at: a.resolved_at,
            resolved_by: a.resolved_by.clone(),
            notified: a.notified,
        }
    }
}

/// Mute a host's notifications until a time: its alerts are still
/// recorded, nobody is told. Alerts still open when the window ends are
/// notified then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MuteSet {
    pub host_id: String,
    /// Unix milliseconds.
    pub until_ms: i64,
    pub reason: Option<String>,
}

/// A recurring maintenance window: from every slot of `cron` (five
/// fields, in `timezone`) for `duration_secs`, the host's alerts are
/// recorded but nobody is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceAdd {
    pub host_id: String,
    pub cron: String,
    pub timezone: String,
    pub duration_secs: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceRef {
    pub window_id: String,
}

/// The window created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceAdded {
    pub window_id: String,
}

/// Longest maintenance window: a day (a longer one is a mute, not a window).
pub const MAINTENANCE_MAX_SECS: i64 = 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRef {
    pub host_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {}

/// A channel definition sealed to the alerts role's xkey by an ephemeral
/// sender key: the bus never carries channel secrets in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedChannel {
    pub sender_xkey: String,
    pub sealed: rm_bus::msg::Sealed,
}

impl SealedChannel {
    /// Seals `def` to the alerts role's public xkey.
    pub fn seal(def: &ChannelDef, alerts_xkey: &str) -> Result<Self, rm_bus::seal::SealError> {
        let sender = nkeys::XKey::new();
        Ok(Self {
            sender_xkey: sender.public_key(),
            sealed: rm_bus::seal::seal(def, &sender, alerts_xkey)?,
        })
    }

    pub fn open(&self, recipient: &nkeys::XKey) -> Result<ChannelDef, rm_bus::seal::SealError> {
        rm_bus::seal::open(&self.sealed, recipient, &self.sender_xkey)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelCreate {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub definition: SealedChannel,
}

fn yes() -> bool {
    true
}

/// Changes what is given; `definition: None` keeps the stored one. A new
/// webhook definition without a secret keeps the saved signing secret
/// unless `clear_secret` says to drop it (which also works without a new
/// definition).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelUpdate {
    pub channel_id: String,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub definition: Option<SealedChannel>,
    #[serde(default)]
    pub clear_secret: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelRef {
    pub channel_id: String,
}

/// A channel as listed: no secrets, the endpoint only as its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    /// ntfy | webhook
    pub kind: String,
    pub enabled: bool,
    /// Redacted settings for display (`server`/`url` origin, auth kind,
    /// whether it signs, header names, priorities).
    pub summary: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
}

/// Test a saved channel (`channel_id`), an unsaved definition, or both:
/// an unsaved edit of a saved channel, where a webhook whose secret is
/// left out is signed with the saved channel's secret (as saving it would
/// keep it) unless `clear_secret`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelTest {
    pub channel_id: Option<String>,
    pub definition: Option<SealedChannel>,
    /// With both: test without the saved signing secret.
    #[serde(default)]
    pub clear_secret: bool,
}

/// The test send's result, for the UI's inline tick or cross.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTestResult {
    pub ok: bool,
    /// delivered | retryable | failed, or `no_responder` / `timeout` when
    /// no notifier answered.
    pub outcome: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The notifier copy that tried.
    pub notifier: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_bus::msg::Sealed;
    use serde::de::DeserializeOwned;

    /// Serializes, adds a field a newer peer might send, parses back and
    /// checks nothing was lost.
    fn tolerant<T: Serialize + DeserializeOwned>(v: T) {
        let before = serde_json::to_value(&v).unwrap();
        let mut json = before.clone();
        json.as_object_mut()
            .expect("bodies are JSON objects")
            .insert("field_from_a_newer_peer".into(), serde_json::json!([1]));
        let back: T = serde_json::from_value(json).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), before);
    }

    fn sealed() -> SealedChannel {
        SealedChannel {
            sender_xkey: "XA".into(),
            sealed: Sealed("c2VhbGVk".into()),
        }
    }

    #[test]
    fn every_body_round_trips_and_ignores_unknown_fields() {
        tolerant(PubKey { xkey: "XA".into() });
        tolerant(AlertRef {
            alert_id: "a1".into(),
        });
        tolerant(AlertView {
            id: "a1".into(),
            host_id: "h1".into(),
            kind: "backup_failed".into(),
            subject: "r1".into(),
            severity: "error".into(),
            message: "backup failed".into(),
            state: "open".into(),
            raised_at: 1,
            last_seen_at: 2,
            acknowledged_at: Some(3),
            acknowledged_by: Some("alice".into()),
            resolved_at: None,
            resolved_by: None,
            notified: true,
        });
        tolerant(MuteSet {
            host_id: "h1".into(),
            until_ms: 9,
            reason: Some("maintenance".into()),
        });
        tolerant(HostRef {
            host_id: "h1".into(),
        });
        tolerant(MaintenanceAdd {
            host_id: "h1".into(),
            cron: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            duration_secs: 3600,
            reason: Some("nightly database dump".into()),
        });
        tolerant(MaintenanceRef {
            window_id: "w1".into(),
        });
        tolerant(MaintenanceAdded {
            window_id: "w1".into(),
        });
        tolerant(Done {});
        tolerant(sealed());
        tolerant(ChannelCreate {
            name: "ops".into(),
            enabled: true,
            definition: sealed(),
        });
        tolerant(ChannelUpdate {
            channel_id: "c1".into(),
            name: None,
            enabled: Some(false),
            definition: Some(sealed()),
            clear_secret: false,
        });
        tolerant(ChannelRef {
            channel_id: "c1".into(),
        });
        let view = ChannelView {
            id: "c1".into(),
            name: "ops".into(),
            kind: "ntfy".into(),
            enabled: true,
            summary: serde_json::json!({"topic": "backups"}),
            created_at: 1,
            updated_at: 2,
        };
        tolerant(view.clone());
        tolerant(ChannelList {
            channels: vec![view],
        });
        tolerant(ChannelTest {
            channel_id: Some("c1".into()),
            definition: None,
            clear_secret: false,
        });
        tolerant(ChannelTestResult {
            ok: true,
            outcome: "delivered".into(),
            status: Some(200),
            latency_ms: 12,
            error: None,
            notifier: Some("n1".into()),
        });
    }
}
