//! The ntfy JSON publish: `POST` to the server's root URL with `topic`,
//! `title`, `message`, `priority` (from the severity), `tags` and a `click`
//! link to the alert; bearer or basic auth. JSON rather than the header form
//! so non-ASCII host names and messages arrive intact.

use rm_bus::notify::{
    AlertKind, EventType, NotificationEvent, NtfyAuth, NtfyChannel, Severity, group_list_path,
};
use serde::Serialize;

/// ntfy's limit on the public server; longer messages are cut.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The JSON body of an ntfy publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Publish {
    pub topic: String,
    pub title: String,
    pub message: String,
    pub priority: u8,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click: Option<String>,
}

/// Default priority per severity: critical 5 (max), warning 4 (high),
/// info and anything unknown 3 (default).
fn severity_priority(ch: &NtfyChannel, severity: &Severity) -> u8 {
    let p = &ch.priorities;
    match severity {
        Severity::Critical => p.critical.unwrap_or(5),
        Severity::Warning => p.warning.unwrap_or(4),
        Severity::Info | Severity::Other(_) => p.info.unwrap_or(3),
    }
}

/// The publish for `event` on channel `ch`.
pub fn publish(ch: &NtfyChannel, event: &NotificationEvent) -> Publish {
    let alert = &event.data.alert;
    let host = &event.data.host.name;
    let label = alert.kind.label();
    let (title, priority, mark) = match &event.kind {
        EventType::Raised => (
            format!("{label} on {host}"),
            severity_priority(ch, &alert.severity),
            match alert.severity {
                Severity::Critical => "rotating_light",
                Severity::Warning => "warning",
                Severity::Info | Severity::Other(_) => "information_source",
            },
        ),
        // Good news and "someone is on it" need no urgency.
        EventType::Acknowledged => (format!("Acknowledged: {label} on {host}"), 2, "eyes"),
        EventType::Resolved => (
            format!("Resolved: {label} on {host}"),
            3,
            "white_check_mark",
        ),
        EventType::Test => (
            "Test notification from restic-manager".to_owned(),
            severity_priority(ch, &Severity::Info),
            "test_tube",
        ),
        EventType::Other(t) => (
            format!("{label} on {host} ({t})"),
            severity_priority(ch, &alert.severity),
            "bell",
        ),
    };

    let mut message = alert.message.clone();
    if !alert.subject.is_empty() {
        message.push_str(&format!("\nSubject: {}", alert.subject));
    }
    match &event.kind {
        EventType::Acknowledged => {
            if let Some(by) = &alert.acknowledged_by {
                message.push_str(&format!("\nAcknowledged by {by}"));
            }
        }
        EventType::Resolved => {
            if let Some(by) = &alert.resolved_by {
                message.push_str(&format!("\nResolved by {by}"));
            }
        }
        _ => {}
    }

    let grouped = event.data.group.is_some();
    let mut tags = vec![mark.to_owned()];
    if alert.kind != AlertKind::Test {
        tags.push(alert.kind.as_str().to_owned());
        // a group's "host" is "<n> hosts": its message names them
        if !grouped {
            tags.push(host.clone());
        }
    }

    let click = match &ch.click_base_url {
        Some(base) if event.kind == EventType::Test => Some(base.trim_end_matches('/').to_owned()),
        // a group has no page of its own: the alerts list of its kind
        Some(base) if grouped => Some(format!(
            "{}/{}",
            base.trim_end_matches('/'),
            group_list_path(&event.kind, &alert.kind)
        )),
        Some(base) => Some(format!(
            "{}/alerts/{}",
            base.trim_end_matches('/'),
            alert.id
        )),
        None => alert.url.clone(),
    };

    Publish {
        topic: ch.topic.clone(),
        title,
        message: truncate(message, MAX_MESSAGE_BYTES),
        priority,
        tags,
        click,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, ending in `…`.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let ellipsis = '…';
    let mut cut = max - ellipsis.len_utf8();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push(ellipsis);
    s
}

/// The request: JSON body to the server root, with the channel's auth.
pub fn request(
    client: &reqwest::Client,
    ch: &NtfyChannel,
    event: &NotificationEvent,
) -> reqwest::RequestBuilder {
    let rb = client.post(&ch.server_url).json(&publish(ch, event));
    match &ch.auth {
        NtfyAuth::None => rb,
        NtfyAuth::Bearer { token } => rb.bearer_auth(token),
        NtfyAuth::Basic { user, password } => rb.basic_auth(user, Some(password)),
    }
}

#[cfg(test)]
mod tests {
    use rm_bus::notify::{AlertInfo, AlertState, EventData, HostInfo, NtfyPriorities};

    use super::*;

    fn channel() -> NtfyChannel {
        NtfyChannel {
            server_url: "https://ntfy.example".into(),
            topic: "backups".into(),
            auth: NtfyAuth::None,
            click_base_url: None,
            priorities: NtfyPriorities::default(),
        }
    }

    fn event(kind: EventType, severity: Severity) -> NotificationEvent {
        NotificationEvent {
            kind,
            id: "e1".into(),
            timestamp: "2026-05-01T00:00:00.000Z".into(),
            data: EventData {
                alert: AlertInfo {
                    id: "a7".into(),
                    kind: AlertKind::StaleSchedule,
                    severity,
                    state: AlertState::Open,
                    subject: "nightly".into(),
                    message: "no successful run since 02:00".into(),
                    raised_at: "2026-05-01T00:00:00.000Z".into(),
                    last_seen_at: "2026-05-01T00:00:00.000Z".into(),
                    acknowledged_at: None,
                    acknowledged_by: None,
                    resolved_at: None,
                    resolved_by: Some("system".into()),
                    url: Some("https://rm.example/alerts/a7".into()),
                },
                host: HostInfo {
                    id: "h1".into(),
                    name: "db-02".into(),
                },
                group: None,
            },
        }
    }

    #[test]
    fn priority_follows_severity_and_overrides() {
        let ch = channel();
        for (sev, want) in [
            (Severity::Critical, 5),
            (Severity::Warning, 4),
            (Severity::Info, 3),
            (Severity::Other("new".into()), 3),
        ] {
            assert_eq!(publish(&ch, &event(EventType::Raised, sev)).priority, want);
        }
        let mut ch = channel();
        ch.priorities.critical = Some(4);
        let p = publish(&ch, &event(EventType::Raised, Severity::Critical));
        assert_eq!(p.priority, 4);
        let resolved = publish(&ch, &event(EventType::Resolved, Severity::Critical));
        assert_eq!(resolved.priority, 3);
        assert!(
            resolved
                .title
                .starts_with("Resolved: Scheduled backup missed on db-02")
        );
        assert!(resolved.message.ends_with("Resolved by system"));
        assert_eq!(resolved.tags[0], "white_check_mark");
    }

    #[test]
    fn click_prefers_the_channel_base_url() {
        let e = event(EventType::Raised, Severity::Warning);
        assert_eq!(
            publish(&channel(), &e).click.as_deref(),
            Some("https://rm.example/alerts/a7")
        );
        let mut ch = channel();
        ch.click_base_url = Some("https://phone.example/rm/".into());
        assert_eq!(
            publish(&ch, &e).click.as_deref(),
            Some("https://phone.example/rm/alerts/a7")
        );
    }

    #[test]
    fn a_group_links_to_the_alerts_list_of_its_kind_and_tags_no_host() {
        let mut e = event(EventType::Resolved, Severity::Warning);
        e.data.host.name = "12 hosts".into();
        e.data.alert.url =
            Some("https://rm.example/alerts?state=resolved&kind=stale_schedule".into());
        e.data.group = Some(rm_bus::notify::GroupInfo {
            count: 12,
            hosts: 12,
            alerts: Vec::new(),
        });
        let p = publish(&channel(), &e);
        assert_eq!(p.title, "Resolved: Scheduled backup missed on 12 hosts");
        assert_eq!(p.tags, ["white_check_mark", "stale_schedule"]);
        assert_eq!(p.click, e.data.alert.url);
        let mut ch = channel();
        ch.click_base_url = Some("https://phone.example/rm/".into());
        assert_eq!(
            publish(&ch, &e).click.as_deref(),
            Some("https://phone.example/rm/alerts?state=resolved&kind=stale_schedule")
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut e = event(EventType::Raised, Severity::Info);
        e.data.alert.message = "é".repeat(5000);
        let p = publish(&channel(), &e);
        assert!(p.message.len() <= MAX_MESSAGE_BYTES);
        assert!(p.message.ends_with('…'));
    }

    #[test]
    fn test_events_say_so() {
        let e = NotificationEvent::test("t1", 0, None);
        let p = publish(&channel(), &e);
        assert_eq!(p.title, "Test notification from restic-manager");
        assert_eq!(p.priority, 3);
        assert_eq!(p.tags, ["test_tube"]);
        assert_eq!(p.click, None);
    }
}
