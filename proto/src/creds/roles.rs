//! Least-privilege permissions for every role and for each agent.
//!
//! Built from [`crate::subject`] patterns only. Each server-side role has its
//! own inbox prefix (`_INBOX._<role>`) and each agent `_INBOX.<host>`, so no
//! one can read another's replies.

use super::claims::{Permission, Permissions, ResponsePermission};
use crate::ids::HostId;
use crate::subject::{self, AgentTopicKind, EventThing, SvcRole};

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Controlplane,
    Alerts,
    Notifier,
    Web,
    Agent(HostId),
}

/// One reply per request received, for the server's default time.
const ONE_REPLY: ResponsePermission = ResponsePermission { max: 1, ttl: 0 };

impl Role {
    /// Name used in the JWT and connection name.
    pub fn name(&self) -> String {
        match self {
            Self::Agent(h) => format!("agent {h}"),
            other => other.role_token().to_owned(),
        }
    }

    fn role_token(&self) -> &'static str {
        match self {
            Self::Controlplane => "controlplane",
            Self::Alerts => "alerts",
            Self::Notifier => "notifier",
            Self::Web => "web",
            Self::Agent(_) => "agent",
        }
    }

    /// The inbox prefix the client must use for its own requests.
    pub fn inbox_prefix(&self) -> String {
        match self {
            Self::Agent(h) => subject::agent_inbox_prefix(h),
            other => subject::role_inbox_prefix(other.role_token()),
        }
    }

    /// The permissions this role's user JWT carries.
    pub fn permissions(&self) -> Permissions {
        match self {
            Self::Agent(h) => Permissions {
                publish: Permission::allow([subject::agent_all_of(h)]),
                subscribe: Permission::allow([subject::cmd(h), subject::agent_inbox_all(h)]),
                responses: Some(ONE_REPLY),
            },
            Self::Controlplane => Permissions {
                publish: Permission::allow([subject::cmd_all(), subject::evt_all()]),
                subscribe: Permission::allow([
                    subject::agent_all(),
                    subject::svc_all_of(SvcRole::Controlplane),
                    subject::role_inbox_all("controlplane"),
                ]),
                responses: Some(ONE_REPLY),
            },
            Self::Alerts => Permissions {
                publish: Permission::allow([
                    subject::evt_thing(EventThing::Alert),
                    // channel changes (created, edited, deleted) for the web role
                    subject::evt_thing(EventThing::Channels),
                    subject::svc_all_of(SvcRole::Notifier),
                ]),
                subscribe: Permission::allow([
                    subject::evt_all(),
                    subject::svc_all_of(SvcRole::Alerts),
                    subject::role_inbox_all("alerts"),
                ]),
                responses: Some(ONE_REPLY),
            },
            Self::Notifier => Permissions {
                publish: Permission::none(),
                subscribe: Permission::allow([subject::svc_all_of(SvcRole::Notifier)]),
                responses: Some(ONE_REPLY),
            },
            // Operators' requests go to the roles that own the data; the
            // notifier is reached only through the alerts role.
            Self::Web => Permissions {
                publish: Permission::allow([
                    subject::svc_all_of(SvcRole::Controlplane),
                    subject::svc_all_of(SvcRole::Alerts),
                ]),
                subscribe: Permission::allow([
                    subject::agent_any(AgentTopicKind::Heartbeat),
                    subject::agent_any_job_all(),
                    subject::evt_all(),
                    subject::role_inbox_all("web"),
                ]),
                responses: None,
            },
        }
    }
}

/// The user a leaf node at a remote site connects to the hub with: it
/// carries that site's agents, so agents' traffic goes out (their subjects
/// and replies to the control plane's requests) and commands and the
/// answers to agents' requests come in. Each agent's own JWT still
/// confines it on the leaf.
pub fn leafnode_permissions() -> Permissions {
    Permissions {
        publish: Permission::allow([subject::agent_all(), "_INBOX.>".to_owned()]),
        subscribe: Permission::allow([subject::cmd_all(), "_INBOX.>".to_owned()]),
        responses: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_is_confined_to_its_host() {
        let h = HostId::parse("h1").unwrap();
        let p = Role::Agent(h.clone()).permissions();
        assert_eq!(p.publish.allow, vec!["rm.agent.h1.>"]);
        assert_eq!(p.subscribe.allow, vec!["rm.cmd.h1", "_INBOX.h1.>"]);
        assert_eq!(p.responses.map(|r| r.max), Some(1));
        assert_eq!(Role::Agent(h).inbox_prefix(), "_INBOX.h1");
    }

    #[test]
    fn only_web_publishes_operator_requests_and_notifier_publishes_nothing() {
        assert_eq!(
            Role::Web.permissions().publish.allow,
            vec!["rm.svc.controlplane.>", "rm.svc.alerts.>"]
        );
        assert!(Role::Web.permissions().responses.is_none());
        let n = Role::Notifier.permissions();
        assert!(n.publish.allow.is_empty());
        assert_eq!(n.publish.deny, vec![">"]);
        assert_eq!(Role::Controlplane.inbox_prefix(), "_INBOX._controlplane");
    }
}
