//! Grouped notifications. When many alert changes of one kind are due to
//! one channel at once — a bus node down takes thousands of hosts offline,
//! a storage outage fails every backup to it — they go out as one
//! notification that lists them all, instead of one each: ntfy's public
//! server takes a burst of 60 and then one message per 5 s, and a phone
//! buzzing 14,000 times buries the alert that matters.
//!
//! [`plan`] splits the due outbox rows into sends: one row, or a group of
//! rows of one (channel, change, alert kind); [`envelope`] builds a group's
//! event. Every member row keeps its own attempt count and log entry. A
//! group's `webhook-id` and event id are derived from its members', so a
//! retry of the same members is the same notification to a receiver that
//! deduplicates on it.

use std::collections::{HashMap, HashSet};

use rm_bus::notify::{
    AlertInfo, AlertKind, EventData, GroupInfo, GroupMember, HostInfo, NotificationEvent, Severity,
    group_list_path,
};
use rm_store::delivery::Delivery;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Hosts a group's message names before "and N more".
const NAMED_HOSTS: usize = 10;

/// When rows group, and how large a group may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rows of one key due at once that make a group; below 2, never.
    pub from: usize,
    /// Most members of one group.
    pub max_members: usize,
    /// Most bytes of members' stored events in one group (the request must
    /// stay under the bus's `max_payload`).
    pub max_bytes: usize,
}

/// What rows must share to go as one notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    channel: String,
    change: String,
    kind: String,
}

/// Only the alert kind of a stored event.
#[derive(Deserialize)]
struct KindOnly {
    data: KindData,
}

#[derive(Deserialize)]
struct KindData {
    alert: KindAlert,
}

#[derive(Deserialize)]
struct KindAlert {
    kind: String,
}

fn key_of(row: &Delivery) -> Option<Key> {
    // test sends and unreadable events are never grouped
    if row.alert_id.is_none() || row.event == "test" {
        return None;
    }
    let kind = serde_json::from_str::<KindOnly>(&row.payload_json)
        .ok()?
        .data
        .alert
        .kind;
    Some(Key {
        channel: row.channel_id.clone(),
        change: row.event.clone(),
        kind,
    })
}

/// Splits `due` (in the order the outbox gave it) into at most `max_sends`
/// sends, each one row or a group of two or more. Rows of one key form
/// groups when at least `limits.from` of them are due; a group is cut at
/// `max_members` rows or `max_bytes` of stored events. Sends keep the
/// order of their first row, so a storm does not hold back an older row
/// of another kind.
pub(crate) fn plan(due: Vec<Delivery>, limits: &Limits, max_sends: usize) -> Vec<Vec<Delivery>> {
    if limits.from < 2 {
        return due.into_iter().take(max_sends).map(|r| vec![r]).collect();
    }
    let mut sends: Vec<(usize, Vec<Delivery>)> = Vec::new();
    let mut buckets: HashMap<Key, Vec<(usize, Delivery)>> = HashMap::new();
    for (pos, row) in due.into_iter().enumerate() {
        match key_of(&row) {
            Some(key) => buckets.entry(key).or_default().push((pos, row)),
            None => sends.push((pos, vec![row])),
        }
    }
    for rows in buckets.into_values() {
        if rows.len() < limits.from {
            sends.extend(rows.into_iter().map(|(pos, row)| (pos, vec![row])));
            continue;
        }
        let mut chunk: Vec<Delivery> = Vec::new();
        let (mut chunk_pos, mut bytes) = (0, 0);
        for (pos, row) in rows {
            let len = row.payload_json.len();
            if !chunk.is_empty()
                && (chunk.len() >= limits.max_members || bytes + len > limits.max_bytes)
            {
                sends.push((chunk_pos, std::mem::take(&mut chunk)));
                bytes = 0;
            }
            if chunk.is_empty() {
                chunk_pos = pos;
            }
            bytes += len;
            chunk.push(row);
        }
        if !chunk.is_empty() {
            sends.push((chunk_pos, chunk));
        }
    }
    sends.sort_by_key(|(pos, _)| *pos);
    sends
        .into_iter()
        .take(max_sends)
        .map(|(_, rows)| rows)
        .collect()
}

/// The `webhook-id` of a group: the same for the same members, whatever
/// their order.
pub(crate) fn webhook_id(rows: &[Delivery]) -> String {
    format!(
        "msg_grp_{}",
        digest(rows.iter().map(|r| r.webhook_id.as_str()))
    )
}

fn digest<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    data_encoding::HEXLOWER.encode(&h.finalize()[..12])
}

fn rank(s: &Severity) -> u8 {
    match s {
        Severity::Critical => 3,
        Severity::Warning => 2,
        Severity::Info => 1,
        Severity::Other(_) => 0,
    }
}

/// The human sentence of a group: the kind, how many, and the first hosts
/// by name.
fn summary(kind: &AlertKind, count: usize, names: &[&str]) -> String {
    let label = kind.label();
    let mut list = names
        .iter()
        .take(NAMED_HOSTS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let rest = names.len().saturating_sub(NAMED_HOSTS);
    if rest > 0 {
        list.push_str(&format!(" and {rest} more"));
    }
    let hosts = hosts_word(names.len());
    if count == names.len() {
        format!("{label} on {hosts}: {list}.")
    } else {
        format!("{label}: {count} alerts on {hosts}: {list}.")
    }
}

/// "1 host", "12 hosts".
fn hosts_word(n: usize) -> String {
    if n == 1 {
        "1 host".to_owned()
    } else {
        format!("{n} hosts")
    }
}

/// The one event standing for `events` (the members' stored events, in
/// their rows' order; all of one change and kind). `None` if empty.
pub(crate) fn envelope(
    events: Vec<NotificationEvent>,
    ui_base_url: Option<&str>,
) -> Option<NotificationEvent> {
    let first = events.first()?;
    let change = first.kind.clone();
    let kind = first.data.alert.kind.clone();
    let state = first.data.alert.state.clone();
    let id = format!("evt_grp_{}", digest(events.iter().map(|e| e.id.as_str())));
    let severity = events
        .iter()
        .map(|e| &e.data.alert.severity)
        .max_by_key(|s| rank(s))
        .cloned()
        .unwrap_or(Severity::Info);
    let raised_at = events
        .iter()
        .map(|e| &e.data.alert.raised_at)
        .min()
        .cloned();
    let last_seen_at = events
        .iter()
        .map(|e| &e.data.alert.last_seen_at)
        .max()
        .cloned();
    let timestamp = events.iter().map(|e| &e.timestamp).max().cloned();
    let mut seen = HashSet::new();
    let names: Vec<&str> = events
        .iter()
        .filter(|e| seen.insert(e.data.host.id.as_str()))
        .map(|e| e.data.host.name.as_str())
        .collect();
    let hosts = names.len();
    let message = summary(&kind, events.len(), &names);
    let url = ui_base_url.map(|b| {
        format!(
            "{}/{}",
            b.trim_end_matches('/'),
            group_list_path(&change, &kind)
        )
    });
    let alerts: Vec<GroupMember> = events
        .iter()
        .map(|e| GroupMember {
            alert: e.data.alert.clone(),
            host: e.data.host.clone(),
        })
        .collect();
    Some(NotificationEvent {
        kind: change,
        timestamp: timestamp.unwrap_or_default(),
        data: EventData {
            alert: AlertInfo {
                id: id.clone(),
                kind,
                severity,
                state,
                subject: String::new(),
                message,
                raised_at: raised_at.unwrap_or_default(),
                last_seen_at: last_seen_at.unwrap_or_default(),
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                url,
            },
            host: HostInfo {
                id: String::new(),
                name: hosts_word(hosts),
            },
            group: Some(GroupInfo {
                count: u64::try_from(alerts.len()).unwrap_or(u64::MAX),
                hosts: u64::try_from(hosts).unwrap_or(u64::MAX),
                alerts,
            }),
        },
        id,
    })
}

#[cfg(test)]
mod tests {
    use rm_bus::notify::{AlertState, EventType};

    use super::*;

    fn event(n: usize, kind: &str, change: EventType, severity: Severity) -> NotificationEvent {
        NotificationEvent {
            kind: change,
            id: format!("evt_{n}"),
            timestamp: format!("2026-05-01T00:00:{n:02}.000Z"),
            data: EventData {
                alert: AlertInfo {
                    id: format!("a{n}"),
                    kind: AlertKind::from(kind),
                    severity,
                    state: AlertState::Open,
                    subject: String::new(),
                    message: format!("agent on host-{n} is offline"),
                    raised_at: format!("2026-05-01T00:00:{n:02}.000Z"),
                    last_seen_at: format!("2026-05-01T00:00:{n:02}.000Z"),
                    acknowledged_at: None,
                    acknowledged_by: None,
                    resolved_at: None,
                    resolved_by: None,
                    url: None,
                },
                host: HostInfo {
                    id: format!("h{n}"),
                    name: format!("host-{n}"),
                },
                group: None,
            },
        }
    }

    fn row(n: usize, channel: &str, kind: &str, change: &str) -> Delivery {
        let ev = event(
            n,
            kind,
            EventType::from(format!("alert.{change}").as_str()),
            Severity::Warning,
        );
        Delivery {
            id: format!("d{n}"),
            webhook_id: format!("msg_{n}"),
            alert_id: Some(format!("a{n}")),
            channel_id: channel.into(),
            event: change.into(),
            payload_json: serde_json::to_string(&ev).unwrap(),
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            created_at: 0,
            finished_at: None,
        }
    }

    const LIMITS: Limits = Limits {
        from: 3,
        max_members: 1000,
        max_bytes: 1 << 20,
    };

    fn ids(sends: &[Vec<Delivery>]) -> Vec<Vec<String>> {
        sends
            .iter()
            .map(|s| s.iter().map(|r| r.id.clone()).collect())
            .collect()
    }

    #[test]
    fn rows_of_one_channel_change_and_kind_group_from_the_threshold_and_keep_their_order() {
        let due = vec![
            row(0, "c1", "backup_failed", "raised"),
            row(1, "c1", "agent_offline", "raised"),
            row(2, "c2", "agent_offline", "raised"),
            row(3, "c1", "agent_offline", "raised"),
            row(4, "c1", "agent_offline", "resolved"),
            row(5, "c1", "agent_offline", "raised"),
            row(6, "c1", "backup_failed", "raised"),
        ];
        let sends = plan(due, &LIMITS, 100);
        assert_eq!(
            ids(&sends),
            [
                vec!["d0"],
                vec!["d1", "d3", "d5"],
                vec!["d2"],
                vec!["d4"],
                vec!["d6"]
            ]
        );
    }

    #[test]
    fn grouping_off_sends_each_row_alone_and_sends_are_capped() {
        let due: Vec<_> = (0..6)
            .map(|n| row(n, "c1", "agent_offline", "raised"))
            .collect();
        let off = Limits { from: 0, ..LIMITS };
        assert_eq!(plan(due.clone(), &off, 4).len(), 4);
        assert!(plan(due.clone(), &off, 4).iter().all(|s| s.len() == 1));
        // grouped, the cap counts sends, not rows
        assert_eq!(ids(&plan(due, &LIMITS, 1))[0].len(), 6);
    }

    #[test]
    fn a_group_is_cut_at_its_member_and_byte_limits() {
        let due: Vec<_> = (0..7)
            .map(|n| row(n, "c1", "agent_offline", "raised"))
            .collect();
        let by_count = Limits {
            max_members: 3,
            ..LIMITS
        };
        let sizes: Vec<usize> = plan(due.clone(), &by_count, 100)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [3, 3, 1]);
        let one = due[0].payload_json.len();
        let by_bytes = Limits {
            max_bytes: one * 2 + 1,
            ..LIMITS
        };
        let sizes: Vec<usize> = plan(due, &by_bytes, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
    }

    #[test]
    fn test_sends_and_unreadable_events_never_group() {
        let mut due: Vec<_> = (0..4)
            .map(|n| row(n, "c1", "agent_offline", "raised"))
            .collect();
        due[1].payload_json = "{not json".into();
        due[2].event = "test".into();
        let sends = plan(due, &LIMITS, 100);
        assert_eq!(
            ids(&sends),
            [vec!["d0"], vec!["d1"], vec!["d2"], vec!["d3"]]
        );
    }

    #[test]
    fn a_group_envelope_names_its_hosts_and_lists_every_change() {
        let mut events: Vec<_> = (0..14)
            .map(|n| event(n, "agent_offline", EventType::Raised, Severity::Warning))
            .collect();
        events[5].data.alert.severity = Severity::Critical;
        let e = envelope(events.clone(), Some("https://rm.example/")).unwrap();
        assert_eq!(e.kind, EventType::Raised);
        assert!(e.id.starts_with("evt_grp_"), "{}", e.id);
        assert_eq!(e.timestamp, "2026-05-01T00:00:13.000Z");
        let a = &e.data.alert;
        assert_eq!(a.kind, AlertKind::AgentOffline);
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.raised_at, "2026-05-01T00:00:00.000Z");
        assert_eq!(
            a.message,
            "Agent offline on 14 hosts: host-0, host-1, host-2, host-3, host-4, host-5, \
             host-6, host-7, host-8, host-9 and 4 more."
        );
        assert_eq!(
            a.url.as_deref(),
            Some("https://rm.example/alerts?state=open&kind=agent_offline")
        );
        assert_eq!(e.data.host.name, "14 hosts");
        let g = e.data.group.as_ref().unwrap();
        assert_eq!((g.count, g.hosts), (14, 14));
        let listed: Vec<&str> = g.alerts.iter().map(|m| m.alert.id.as_str()).collect();
        let want: Vec<String> = (0..14).map(|n| format!("a{n}")).collect();
        assert_eq!(listed, want);
        // the same members in another order are the same notification
        events.reverse();
        assert_eq!(envelope(events, None).unwrap().id, e.id);
    }

    #[test]
    fn several_alerts_on_one_host_are_counted_apart_from_hosts() {
        let mut events: Vec<_> = (0..3)
            .map(|n| event(n, "backup_failed", EventType::Resolved, Severity::Critical))
            .collect();
        events[2].data.host = events[0].data.host.clone();
        let e = envelope(events, None).unwrap();
        assert_eq!(
            e.data.alert.message,
            "Backup failed: 3 alerts on 2 hosts: host-0, host-1."
        );
        assert_eq!(e.data.host.name, "2 hosts");
        assert_eq!(e.data.alert.url, None);
        let mut same_host: Vec<_> = (0..2)
            .map(|n| event(n, "backup_failed", EventType::Raised, Severity::Critical))
            .collect();
        same_host[1].data.host = same_host[0].data.host.clone();
        let e = envelope(same_host, None).unwrap();
        assert_eq!(
            e.data.alert.message,
            "Backup failed: 2 alerts on 1 host: host-0."
        );
        assert_eq!(e.data.host.name, "1 host");
    }

    #[test]
    fn a_group_webhook_id_depends_on_its_members_not_their_order() {
        let rows: Vec<_> = (0..4)
            .map(|n| row(n, "c1", "agent_offline", "raised"))
            .collect();
        let mut reversed = rows.clone();
        reversed.reverse();
        assert_eq!(webhook_id(&rows), webhook_id(&reversed));
        assert_ne!(webhook_id(&rows), webhook_id(&rows[..3]));
        assert!(webhook_id(&rows).starts_with("msg_grp_"));
    }
}
