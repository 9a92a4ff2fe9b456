//! Every subject restic-manager uses, built in one place.
//!
//! No other module formats a subject string: builders here take validated
//! ids ([`HostId`], [`JobId`]) or closed enums, so an id can never inject a
//! `.` or a wildcard. [`AgentSubject::parse`] is the inverse used by ingest
//! to learn which host sent a message.

use std::fmt;

use crate::ids::{HostId, JobId};

/// Prefix of everything an agent publishes.
pub const AGENT_PREFIX: &str = "rm.agent";
/// Prefix of commands to agents.
pub const CMD_PREFIX: &str = "rm.cmd";
/// Prefix of role services (request/reply).
pub const SVC_PREFIX: &str = "rm.svc";
/// Prefix of events published after commit.
pub const EVT_PREFIX: &str = "rm.evt";

/// A job message phase or stream on `rm.agent.<host>.job.<job>.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobTopic {
    /// at most once, throttled
    Progress,
    /// at most once, batched lines
    Log,
    /// request/ack, at least once
    Started,
    /// request/ack, at least once
    Done,
    /// request/ack, at least once: one chunk of a result too large for one
    /// message, sent before the `done` that refers to it
    Part,
    /// request/ack: a scheduled exclusive job (prune, check, forget) asks
    /// the control plane for its repository before it starts
    Claim,
}

impl JobTopic {
    pub const ALL: [JobTopic; 6] = [
        Self::Progress,
        Self::Log,
        Self::Started,
        Self::Done,
        Self::Part,
        Self::Claim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progress => "progress",
            Self::Log => "log",
            Self::Started => "started",
            Self::Done => "done",
            Self::Part => "part",
            Self::Claim => "claim",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What an agent subject carries, once its host is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentTopic {
    Hello,
    Heartbeat,
    Goodbye,
    Job(JobId, JobTopic),
}

/// A parsed `rm.agent.<host>.…` subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentSubject {
    pub host: HostId,
    pub topic: AgentTopic,
}

impl AgentSubject {
    pub fn new(host: &HostId, topic: AgentTopic) -> Self {
        Self {
            host: host.clone(),
            topic,
        }
    }

    /// Parses a concrete subject an agent published on; `None` for anything
    /// that is not exactly one of the agent subjects with valid ids.
    pub fn parse(subject: &str) -> Option<Self> {
        let rest = subject.strip_prefix("rm.agent.")?;
        let mut parts = rest.split('.');
        let host = HostId::parse(parts.next()?).ok()?;
        let topic = match (parts.next()?, parts.next(), parts.next(), parts.next()) {
            ("hello", None, _, _) => AgentTopic::Hello,
            ("heartbeat", None, _, _) => AgentTopic::Heartbeat,
            ("goodbye", None, _, _) => AgentTopic::Goodbye,
            ("job", Some(job), Some(kind), None) => {
                AgentTopic::Job(JobId::parse(job).ok()?, JobTopic::parse(kind)?)
            }
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { host, topic })
    }

    pub fn to_subject(&self) -> String {
        let h = &self.host;
        match &self.topic {
            AgentTopic::Hello => format!("{AGENT_PREFIX}.{h}.hello"),
            AgentTopic::Heartbeat => format!("{AGENT_PREFIX}.{h}.heartbeat"),
            AgentTopic::Goodbye => format!("{AGENT_PREFIX}.{h}.goodbye"),
            AgentTopic::Job(j, t) => format!("{AGENT_PREFIX}.{h}.job.{j}.{}", t.as_str()),
        }
    }
}

impl fmt::Display for AgentSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_subject())
    }
}

/// `rm.agent.<host>.hello` — request on every (re)connect.
pub fn agent_hello(host: &HostId) -> String {
    AgentSubject::new(host, AgentTopic::Hello).to_subject()
}

/// `rm.agent.<host>.heartbeat` — publish every interval.
pub fn agent_heartbeat(host: &HostId) -> String {
    AgentSubject::new(host, AgentTopic::Heartbeat).to_subject()
}

/// `rm.agent.<host>.goodbye` — publish on clean shutdown.
pub fn agent_goodbye(host: &HostId) -> String {
    AgentSubject::new(host, AgentTopic::Goodbye).to_subject()
}

/// `rm.agent.<host>.job.<job>.<topic>`.
pub fn agent_job(host: &HostId, job: &JobId, topic: JobTopic) -> String {
    AgentSubject::new(host, AgentTopic::Job(job.clone(), topic)).to_subject()
}

/// `rm.agent.<host>.>` — everything one agent may publish.
pub fn agent_all_of(host: &HostId) -> String {
    format!("{AGENT_PREFIX}.{host}.>")
}

/// `rm.agent.>` — everything every agent publishes.
pub fn agent_all() -> String {
    format!("{AGENT_PREFIX}.>")
}

/// `rm.agent.*.hello`, `rm.agent.*.heartbeat`, `rm.agent.*.goodbye`.
pub fn agent_any(topic: AgentTopicKind) -> String {
    format!("{AGENT_PREFIX}.*.{}", topic.as_str())
}

/// `rm.agent.*.job.*.<topic>`.
pub fn agent_any_job(topic: JobTopic) -> String {
    format!("{AGENT_PREFIX}.*.job.*.{}", topic.as_str())
}

/// `rm.agent.*.job.>` — every job message of every agent.
pub fn agent_any_job_all() -> String {
    format!("{AGENT_PREFIX}.*.job.>")
}

/// `rm.agent.<host>.job.<job>.*` — every message of one job (live view).
pub fn agent_job_all(host: &HostId, job: &JobId) -> String {
    format!("{AGENT_PREFIX}.{host}.job.{job}.*")
}

/// The non-job agent topics, for wildcard subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTopicKind {
    Hello,
    Heartbeat,
    Goodbye,
}

impl AgentTopicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Heartbeat => "heartbeat",
            Self::Goodbye => "goodbye",
        }
    }
}

/// `rm.cmd.<host>` — commands to one agent (request/ack).
pub fn cmd(host: &HostId) -> String {
    format!("{CMD_PREFIX}.{host}")
}

/// `rm.cmd.>` — commands to every agent.
pub fn cmd_all() -> String {
    format!("{CMD_PREFIX}.>")
}

/// The inbox prefix an agent must use for its own requests: `_INBOX.<host>`.
pub fn agent_inbox_prefix(host: &HostId) -> String {
    format!("_INBOX.{host}")
}

/// `_INBOX.<host>.>` — what an agent may subscribe to for replies.
pub fn agent_inbox_all(host: &HostId) -> String {
    format!("_INBOX.{host}.>")
}

/// True if `reply` lies in `host`'s own inbox (`_INBOX.<host>.<token>...`,
/// no wildcards, no empty tokens): the only place a request from agent
/// `<host>` may be answered. Anything else (another agent's inbox, its
/// command subject, an event subject) would let an agent make the control
/// plane publish where it cannot.
pub fn is_agent_inbox(reply: &str, host: &HostId) -> bool {
    let Some(rest) = reply
        .strip_prefix("_INBOX.")
        .and_then(|r| r.strip_prefix(host.as_str()))
        .and_then(|r| r.strip_prefix('.'))
    else {
        return false;
    };
    rest.split('.').all(|t| {
        !t.is_empty()
            && t != "*"
            && t != ">"
            && !t.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// The inbox prefix of a server-side role: `_INBOX._<role>`. The leading
/// `_` cannot start a host id, so no agent's inbox can overlap a role's.
pub fn role_inbox_prefix(role: &'static str) -> String {
    debug_assert!(crate::ids::check_token("role", role).is_ok());
    format!("_INBOX._{role}")
}

/// `_INBOX._<role>.>`.
pub fn role_inbox_all(role: &'static str) -> String {
    format!("{}.>", role_inbox_prefix(role))
}

/// A role that offers services on `rm.svc.<role>.<verb>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SvcRole {
    Controlplane,
    Alerts,
    Notifier,
}

impl SvcRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Controlplane => "controlplane",
            Self::Alerts => "alerts",
            Self::Notifier => "notifier",
        }
    }
}

/// A service verb: one subject-safe token (`enroll`, `job-create`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verb(&'static str);

impl Verb {
    /// Verbs are compile-time constants; this panics in tests (debug
    /// assertion) if one is not a single subject-safe token.
    pub const fn new(verb: &'static str) -> Self {
        Self(verb)
    }

    pub fn as_str(self) -> &'static str {
        debug_assert!(crate::ids::check_token("verb", self.0).is_ok());
        self.0
    }
}

/// `rm.svc.<role>.<verb>`.
pub fn svc(role: SvcRole, verb: Verb) -> String {
    format!("{SVC_PREFIX}.{}.{}", role.as_str(), verb.as_str())
}

/// `rm.svc.<role>.>` — every service of one role.
pub fn svc_all_of(role: SvcRole) -> String {
    format!("{SVC_PREFIX}.{}.>", role.as_str())
}

/// `rm.svc.>`.
pub fn svc_all() -> String {
    format!("{SVC_PREFIX}.>")
}

/// Events published after commit: `rm.evt.<thing>.<what>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    JobQueued,
    JobStarted,
    JobFinished,
    HostOnline,
    HostOffline,
    HostChanged,
    HostVitals,
    ScheduleChanged,
    RepoChanged,
    RepoHealth,
    AlertRaised,
    AlertAcknowledged,
    AlertResolved,
    /// A host's mute or maintenance windows changed (published by the
    /// alerts role, which may publish only `rm.evt.alert.*`).
    AlertMutes,
    ChannelsChanged,
}

impl Event {
    pub const ALL: [Event; 15] = [
        Self::JobQueued,
        Self::JobStarted,
        Self::JobFinished,
        Self::HostOnline,
        Self::HostOffline,
        Self::HostChanged,
        Self::HostVitals,
        Self::ScheduleChanged,
        Self::RepoChanged,
        Self::RepoHealth,
        Self::AlertRaised,
        Self::AlertAcknowledged,
        Self::AlertResolved,
        Self::AlertMutes,
        Self::ChannelsChanged,
    ];

    /// `(thing, what)`.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            Self::JobQueued => ("job", "queued"),
            Self::JobStarted => ("job", "started"),
            Self::JobFinished => ("job", "finished"),
            Self::HostOnline => ("host", "online"),
            Self::HostOffline => ("host", "offline"),
            Self::HostChanged => ("host", "changed"),
            Self::HostVitals => ("host", "vitals"),
            Self::ScheduleChanged => ("schedule", "changed"),
            Self::RepoChanged => ("repo", "changed"),
            Self::RepoHealth => ("repo", "health"),
            Self::AlertRaised => ("alert", "raised"),
            Self::AlertAcknowledged => ("alert", "acknowledged"),
            Self::AlertMutes => ("alert", "mutes"),
            Self::AlertResolved => ("alert", "resolved"),
            Self::ChannelsChanged => ("channels", "changed"),
        }
    }

    pub fn subject(self) -> String {
        let (thing, what) = self.parts();
        format!("{EVT_PREFIX}.{thing}.{what}")
    }

    pub fn parse(subject: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.subject() == subject)
    }
}

/// `rm.evt.>`.
pub fn evt_all() -> String {
    format!("{EVT_PREFIX}.>")
}

/// `rm.evt.<thing>.>` for one thing (`alert`, `job`, ...).
pub fn evt_thing(thing: EventThing) -> String {
    format!("{EVT_PREFIX}.{}.>", thing.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventThing {
    Job,
    Host,
    Alert,
    Channels,
}

impl EventThing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Host => "host",
            Self::Alert => "alert",
            Self::Channels => "channels",
        }
    }
}

/// System-account subjects used to push account JWT updates (revocations).
pub mod sys {
    /// `$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE`.
    pub fn claims_update(account_pub: &str) -> String {
        format!("$SYS.REQ.ACCOUNT.{account_pub}.CLAIMS.UPDATE")
    }

    /// `$SYS.REQ.ACCOUNT.<account>.CLAIMS.LOOKUP`.
    pub fn claims_lookup(account_pub: &str) -> String {
        format!("$SYS.REQ.ACCOUNT.{account_pub}.CLAIMS.LOOKUP")
    }

    /// `$SYS.REQ.CLAIMS.UPDATE` (account taken from the JWT).
    pub const CLAIMS_UPDATE: &str = "$SYS.REQ.CLAIMS.UPDATE";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HostId {
        HostId::parse(s).unwrap()
    }
    fn j(s: &str) -> JobId {
        JobId::parse(s).unwrap()
    }

    #[test]
    fn only_the_agents_own_inbox_is_its_inbox() {
        let host = h("h1");
        assert!(is_agent_inbox("_INBOX.h1.abc", &host));
        assert!(is_agent_inbox("_INBOX.h1.abc.7", &host));
        for bad in [
            "_INBOX.h1",
            "_INBOX.h1.",
            "_INBOX.h1..x",
            "_INBOX.h1.>",
            "_INBOX.h1.*",
            "_INBOX.h1.a b",
            "_INBOX.h10.abc",
            "_INBOX.h2.abc",
            "_INBOX._controlplane.abc",
            "rm.cmd.h1",
            "rm.cmd.h2",
            "rm.evt.host.offline",
            "",
        ] {
            assert!(!is_agent_inbox(bad, &host), "{bad:?} accepted");
        }
    }

    #[test]
    fn builds_agent_subjects() {
        let host = h("h1");
        assert_eq!(agent_hello(&host), "rm.agent.h1.hello");
        assert_eq!(agent_heartbeat(&host), "rm.agent.h1.heartbeat");
        assert_eq!(
            agent_job(&host, &j("j9"), JobTopic::Done),
            "rm.agent.h1.job.j9.done"
        );
        assert_eq!(agent_all_of(&host), "rm.agent.h1.>");
        assert_eq!(cmd(&host), "rm.cmd.h1");
        assert_eq!(agent_inbox_prefix(&host), "_INBOX.h1");
        assert_eq!(agent_any(AgentTopicKind::Heartbeat), "rm.agent.*.heartbeat");
        assert_eq!(agent_any_job(JobTopic::Started), "rm.agent.*.job.*.started");
    }

    #[test]
    fn parse_inverts_build() {
        let host = h("web-1");
        let job = j("jabc");
        let all = [
            AgentTopic::Hello,
            AgentTopic::Heartbeat,
            AgentTopic::Goodbye,
            AgentTopic::Job(job.clone(), JobTopic::Progress),
            AgentTopic::Job(job.clone(), JobTopic::Log),
            AgentTopic::Job(job.clone(), JobTopic::Started),
            AgentTopic::Job(job.clone(), JobTopic::Done),
            AgentTopic::Job(job, JobTopic::Part),
        ];
        for topic in all {
            let s = AgentSubject::new(&host, topic);
            assert_eq!(AgentSubject::parse(&s.to_subject()), Some(s));
        }
    }

    #[test]
    fn parse_refuses_junk() {
        for bad in [
            "rm.agent.h1",
            "rm.agent.h1.hello.x",
            "rm.agent.*.hello",
            "rm.agent.h1.job.j1",
            "rm.agent.h1.job.j1.done.x",
            "rm.agent.h1.job.*.done",
            "rm.agent.h1.job.j1.exploded",
            "rm.cmd.h1",
            "rm.agent..hello",
        ] {
            assert_eq!(AgentSubject::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn services_and_events() {
        assert_eq!(
            svc(SvcRole::Notifier, Verb::new("deliver")),
            "rm.svc.notifier.deliver"
        );
        assert_eq!(svc_all_of(SvcRole::Alerts), "rm.svc.alerts.>");
        for e in Event::ALL {
            assert_eq!(Event::parse(&e.subject()), Some(e));
            assert!(e.subject().starts_with("rm.evt."));
        }
        assert_eq!(Event::JobFinished.subject(), "rm.evt.job.finished");
    }
}
