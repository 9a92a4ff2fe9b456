//! Per-connection publish/subscribe permissions, as nats-server applies them.
//!
//! - An empty allow list allows everything; deny always wins.
//! - Entries may hold wildcards; a subscribe entry may name a queue group
//!   as `"subject queue"`.
//! - A response permission lets a client publish to the reply subject of a
//!   request it received (`max` replies within `ttl`). As in nats-server, a
//!   response permission without a publish allow list turns the blanket
//!   "allow everything" off: such a user may publish replies only.
//! - A wildcard subscription that overlaps a deny entry is accepted, and
//!   messages on denied subjects are filtered out at delivery.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::creds::claims::{Permission, Permissions};

use super::sublist::{is_subset, matches, overlaps};

/// nats-server's defaults for a response permission written as `max: 0` /
/// `ttl: 0` (or `allow_responses: true`).
pub const DEFAULT_RESPONSE_MAX: u64 = 1;
pub const DEFAULT_RESPONSE_TTL: Duration = Duration::from_secs(120);
/// Hard cap on the requests one connection may hold unanswered (the oldest
/// loses its answer beyond it): a bound on memory (about 150 bytes each,
/// 150 MB at the cap), far above what a fleet's burst holds. nats-server
/// has no cap; 10,000 here refused the control plane's answers to a burst
/// from a fleet of 10,000 agents, which then sent everything again.
const REPLY_CAP: usize = 1 << 20;
/// Stale queue entries tolerated beyond the live ones before compaction.
const REPLY_COMPACT_SLACK: usize = 1024;

#[derive(Debug, Clone)]
struct Entry {
    subject: String,
    queue: Option<String>,
}

impl Entry {
    fn parse(s: &str) -> Self {
        let mut parts = s.split_whitespace();
        let subject = parts.next().unwrap_or_default().to_owned();
        let queue = parts.next().map(str::to_owned);
        Self { subject, queue }
    }
}

/// One allow/deny pair, compiled.
#[derive(Debug, Clone, Default)]
struct Rules {
    /// `None` = everything allowed.
    allow: Option<Vec<Entry>>,
    deny: Vec<Entry>,
}

impl Rules {
    fn new(p: &Permission, force_allow_list: bool) -> Self {
        let allow = if p.allow.is_empty() && !force_allow_list {
            None
        } else {
            Some(p.allow.iter().map(|s| Entry::parse(s)).collect())
        };
        Self {
            allow,
            deny: p.deny.iter().map(|s| Entry::parse(s)).collect(),
        }
    }
}

/// Response permission, with defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct Responses {
    pub max: u64,
    pub ttl: Duration,
}

/// A connection's compiled permissions.
#[derive(Debug, Clone, Default)]
pub struct ConnPerms {
    publish: Rules,
    subscribe: Rules,
    responses: Option<Responses>,
}

impl ConnPerms {
    /// Everything allowed (no auth, or a user without permissions).
    pub fn all() -> Self {
        Self::default()
    }

    pub fn new(p: &Permissions) -> Self {
        let responses = p.responses.map(|r| Responses {
            max: if r.max <= 0 {
                DEFAULT_RESPONSE_MAX
            } else {
                r.max as u64
            },
            ttl: if r.ttl <= 0 {
                DEFAULT_RESPONSE_TTL
            } else {
                Duration::from_nanos(r.ttl as u64)
            },
        });
        Self {
            publish: Rules::new(&p.publish, responses.is_some()),
            subscribe: Rules::new(&p.subscribe, false),
            responses,
        }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.publish.allow.is_none()
            && self.publish.deny.is_empty()
            && self.subscribe.allow.is_none()
            && self.subscribe.deny.is_empty()
    }

    pub fn responses(&self) -> Option<Responses> {
        self.responses
    }

    /// May publish to `subject` by the allow/deny lists alone?
    pub fn can_publish(&self, subject: &str) -> bool {
        let allowed = match &self.publish.allow {
            None => true,
            Some(list) => list.iter().any(|e| matches(&e.subject, subject)),
        };
        allowed
            && !self
                .publish
                .deny
                .iter()
                .any(|e| matches(&e.subject, subject))
    }

    /// May subscribe to `subject` (possibly a wildcard) in `queue`?
    pub fn can_subscribe(&self, subject: &str, queue: Option<&str>) -> bool {
        let queue_fits = |e: &Entry| match (&e.queue, queue) {
            (None, _) => true,
            (Some(eq), Some(q)) => matches(eq, q),
            (Some(_), None) => false,
        };
        let allowed = match &self.subscribe.allow {
            None => true,
            Some(list) => list
                .iter()
                .any(|e| is_subset(subject, &e.subject) && queue_fits(e)),
        };
        let denied = self
            .subscribe
            .deny
            .iter()
            .any(|e| is_subset(subject, &e.subject) && queue_fits(e));
        allowed && !denied
    }

    /// Does a deny entry overlap this (wildcard) subscription, so that
    /// deliveries must be filtered?
    pub fn needs_delivery_filter(&self, subject: &str) -> bool {
        self.subscribe
            .deny
            .iter()
            .any(|e| e.queue.is_none() && overlaps(subject, &e.subject))
    }

    /// Is delivery of a message on literal `subject` denied?
    pub fn delivery_denied(&self, subject: &str) -> bool {
        self.subscribe
            .deny
            .iter()
            .any(|e| e.queue.is_none() && matches(&e.subject, subject))
    }
}

/// Reply subjects a connection may answer, from requests it received.
///
/// Requests arrive in time order, so a queue in delivery order finds the
/// expired ones at its front: pruning costs O(1) per delivery however many
/// requests are waiting for their answer (a full scan of the map per
/// delivery, as before, was quadratic in a burst). The queue may hold stale
/// entries (answered, or delivered again later); an entry is live while the
/// map holds the same subject with the same delivery time, and the queue
/// is compacted when stale entries outnumber live ones.
#[derive(Debug, Default)]
pub struct ReplyTracker {
    replies: HashMap<Arc<str>, (Instant, u64)>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl ReplyTracker {
    /// Records that a message with reply subject `reply` was delivered.
    pub fn delivered(&mut self, reply: &str, now: Instant, perm: Responses) {
        self.expire(now, perm.ttl);
        while self.replies.len() >= REPLY_CAP {
            // the oldest request still waiting loses its answer
            let Some((t, k)) = self.order.pop_front() else {
                break;
            };
            self.forget_if_live(&k, t);
        }
        let key: Arc<str> = Arc::from(reply);
        self.replies.insert(key.clone(), (now, 0));
        self.order.push_back((now, key));
        if self.order.len() > 2 * self.replies.len() + REPLY_COMPACT_SLACK {
            let live = &self.replies;
            self.order
                .retain(|(t, k)| live.get(k).is_some_and(|(lt, _)| lt == t));
        }
    }

    /// Drops what was delivered more than `ttl` before `now`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) <= ttl {
                break;
            }
            if let Some((t, k)) = self.order.pop_front() {
                self.forget_if_live(&k, t);
            }
        }
    }

    fn forget_if_live(&mut self, key: &str, delivered: Instant) {
        if self.replies.get(key).is_some_and(|(t, _)| *t == delivered) {
            self.replies.remove(key);
        }
    }

    /// Uses one reply on `subject` if allowed.
    pub fn try_reply(&mut self, subject: &str, now: Instant, perm: Responses) -> bool {
        let Some((t, n)) = self.replies.get_mut(subject) else {
            return false;
        };
        *n += 1;
        if *n > perm.max || now.saturating_duration_since(*t) > perm.ttl {
            self.replies.remove(subject);
            return false;
        }
        if *n == perm.max {
            self.replies.remove(subject);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::claims::ResponsePermission;

    fn perms(
        pub_allow: &[&str],
        pub_deny: &[&str],
        sub_allow: &[&str],
        sub_deny: &[&str],
    ) -> Permissions {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Permissions {
            publish: Permission {
                allow: v(pub_allow),
                deny: v(pub_deny),
            },
            subscribe: Permission {
                allow: v(sub_allow),
                deny: v(sub_deny),
            },
            responses: None,
        }
    }

    #[test]
    fn allow_deny() {
        let p = ConnPerms::new(&perms(
            &["a.>"],
            &["a.secret"],
            &["b.*", "q.x grp"],
            &["b.bad"],
        ));
        assert!(p.can_publish("a.b"));
        assert!(!p.can_publish("a.secret"));
        assert!(!p.can_publish("c"));
        assert!(p.can_subscribe("b.x", None));
        assert!(p.can_subscribe("b.*", None));
        assert!(!p.can_subscribe("b.>", None));
        assert!(!p.can_subscribe("b.bad", None));
        assert!(p.needs_delivery_filter("b.*"));
        assert!(p.delivery_denied("b.bad"));
        assert!(p.can_subscribe("q.x", Some("grp")));
        assert!(!p.can_subscribe("q.x", None));
        assert!(!p.can_subscribe("q.x", Some("other")));
        let open = ConnPerms::new(&Permissions::default());
        assert!(open.is_unrestricted());
        assert!(open.can_publish("anything"));
    }

    #[test]
    fn responses_turn_off_blanket_publish() {
        let p = Permissions {
            responses: Some(ResponsePermission { max: 0, ttl: 0 }),
            ..Default::default()
        };
        let c = ConnPerms::new(&p);
        assert!(!c.can_publish("x"));
        let r = c.responses().unwrap();
        assert_eq!(r.max, 1);
        let mut t = ReplyTracker::default();
        let now = Instant::now();
        t.delivered("_INBOX.a.1", now, r);
        assert!(t.try_reply("_INBOX.a.1", now, r));
        assert!(!t.try_reply("_INBOX.a.1", now, r), "max 1");
        t.delivered("_INBOX.a.2", now, r);
        assert!(
            !t.try_reply("_INBOX.a.2", now + r.ttl + Duration::from_secs(1), r),
            "expired"
        );
        assert!(t.is_empty());
    }

    fn one_reply() -> Responses {
        Responses {
            max: 1,
            ttl: DEFAULT_RESPONSE_TTL,
        }
    }

    /// The bug this fixes: a cap of 10,000 took the answers of a
    /// control plane holding a burst from more agents than that.
    #[test]
    fn twenty_thousand_requests_held_at_once_may_all_be_answered() {
        let (mut t, r, now) = (ReplyTracker::default(), one_reply(), Instant::now());
        for i in 0..20_000 {
            t.delivered(&format!("_INBOX.h{i}.r"), now, r);
        }
        for i in 0..20_000 {
            assert!(t.try_reply(&format!("_INBOX.h{i}.r"), now, r), "reply {i}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn expired_requests_are_forgotten_when_the_next_one_arrives() {
        let (mut t, r, now) = (ReplyTracker::default(), one_reply(), Instant::now());
        for i in 0..1_000 {
            t.delivered(&format!("_INBOX.a.{i}"), now, r);
        }
        let later = now + r.ttl + Duration::from_secs(1);
        t.delivered("_INBOX.a.new", later, r);
        assert_eq!((t.len(), t.order.len()), (1, 1));
        assert!(t.try_reply("_INBOX.a.new", later, r));
    }

    #[test]
    fn a_request_delivered_again_keeps_its_later_time() {
        let (mut t, r, now) = (ReplyTracker::default(), one_reply(), Instant::now());
        t.delivered("_INBOX.a.1", now, r);
        let again = now + Duration::from_secs(100);
        t.delivered("_INBOX.a.1", again, r);
        // the first delivery's expiry must not take the second's answer
        let later = now + r.ttl + Duration::from_secs(1);
        t.delivered("_INBOX.a.2", later, r);
        assert!(t.try_reply("_INBOX.a.1", later, r));
    }

    #[test]
    fn answered_requests_do_not_pile_up_in_the_queue() {
        let (mut t, r, now) = (ReplyTracker::default(), one_reply(), Instant::now());
        t.delivered("_INBOX.a.waiting", now, r);
        for i in 0..100_000 {
            let s = format!("_INBOX.a.{i}");
            t.delivered(&s, now, r);
            assert!(t.try_reply(&s, now, r));
        }
        assert_eq!(t.len(), 1);
        assert!(
            t.order.len() <= 2 + REPLY_COMPACT_SLACK,
            "queue {}",
            t.order.len()
        );
        assert!(t.try_reply("_INBOX.a.waiting", now, r));
    }

    #[test]
    fn beyond_the_cap_the_oldest_waiting_request_loses_its_answer() {
        let (mut t, r, now) = (ReplyTracker::default(), one_reply(), Instant::now());
        for i in 0..=REPLY_CAP {
            t.delivered(&format!("r{i}"), now, r);
        }
        assert_eq!(t.len(), REPLY_CAP);
        assert!(!t.try_reply("r0", now, r));
        assert!(t.try_reply("r1", now, r));
        assert!(t.try_reply(&format!("r{REPLY_CAP}"), now, r));
    }

    /// `rm_bus::creds::roles` as this server enforces it.
    #[test]
    fn the_alerts_role_may_publish_every_event_it_sends() {
        let p = ConnPerms::new(&rm_bus::creds::Role::Alerts.permissions());
        for evt in [
            rm_bus::subject::Event::ChannelsChanged,
            rm_bus::subject::Event::AlertRaised,
            rm_bus::subject::Event::AlertResolved,
            rm_bus::subject::Event::AlertMutes,
        ] {
            let subj = evt.subject();
            assert!(p.can_publish(&subj), "alerts may not publish {subj}");
        }
    }
}
