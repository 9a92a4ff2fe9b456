//! The control plane's services on `rm.svc.controlplane.<verb>`: request
//! and reply bodies, wrapped in `SvcRequest` / `SvcReply` envelopes. The
//! web service (the only role allowed to speak for an operator) sends them.

use std::collections::BTreeMap;

use rm_bus::msg::{JobParams, QueryReply};
use rm_bus::subject::Verb;
use serde::{Deserialize, Serialize};

pub const HOST_ADD: Verb = Verb::new("host-add");
pub const HOST_TOKEN: Verb = Verb::new("host-token");
pub const HOST_REVOKE: Verb = Verb::new("host-revoke");
pub const ENROLL: Verb = Verb::new("enroll");
pub const REPO_ADD: Verb = Verb::new("repo-add");
pub const REPO_ATTACH: Verb = Verb::new("repo-attach");
pub const REPO_MAINTENANCE: Verb = Verb::new("repo-maintenance");
pub const REPO_TEST: Verb = Verb::new("repo-test");
pub const SCHEDULE_PUT: Verb = Verb::new("schedule-put");
pub const SCHEDULE_DELETE: Verb = Verb::new("schedule-delete");
pub const JOB_CREATE: Verb = Verb::new("job-create");
pub const JOB_CANCEL: Verb = Verb::new("job-cancel");
pub const LS: Verb = Verb::new("ls");
/// The control plane's public xkey: secrets sent to it are sealed to it.
pub const PUBKEY: Verb = Verb::new("pubkey");

/// Every verb, for the service router.
pub const ALL_VERBS: [Verb; 14] = [
    PUBKEY,
    HOST_ADD,
    HOST_TOKEN,
    HOST_REVOKE,
    ENROLL,
    REPO_ADD,
    REPO_ATTACH,
    REPO_MAINTENANCE,
    REPO_TEST,
    SCHEDULE_PUT,
    SCHEDULE_DELETE,
    JOB_CREATE,
    JOB_CANCEL,
    LS,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostAdd {
    pub name: String,
}

/// A fresh enrollment token and the command to run on the endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostEnrollment {
    pub host_id: String,
    pub token: String,
    pub expires_at: i64,
    /// The exact command line for the endpoint.
    pub command: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRef {
    pub host_id: String,
}

/// Secrets for a repository credential. Debug redacts everything.
#[derive(Clone, Serialize, Deserialize)]
pub struct RepoSecretsInput {
    /// `RESTIC_REPOSITORY` (may embed REST credentials).
    pub url: String,
    pub password: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for RepoSecretsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoSecretsInput")
            .field("url", &rm_bus::seal::redact_url(&self.url))
            .field("password", &"<redacted>")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PubKey {
    pub xkey: String,
}

/// Secrets on their way to the control plane: sealed to its xkey by an
/// ephemeral sender key, so the bus never carries them in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecrets {
    pub sender_xkey: String,
    pub sealed: rm_bus::msg::Sealed,
}

impl SealedSecrets {
    /// Seals `input` to the control plane's public xkey.
    pub fn seal(
        input: &RepoSecretsInput,
        controlplane_xkey: &str,
    ) -> Result<Self, rm_bus::seal::SealError> {
        let sender = nkeys::XKey::new();
        Ok(Self {
            sender_xkey: sender.public_key(),
            sealed: rm_bus::seal::seal(input, &sender, controlplane_xkey)?,
        })
    }

    pub fn open(
        &self,
        recipient: &nkeys::XKey,
    ) -> Result<RepoSecretsInput, rm_bus::seal::SealError> {
        rm_bus::seal::open(&self.sealed, recipient, &self.sender_xkey)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoAdd {
    pub name: String,
    /// Full-access credentials (used by the maintenance host).
    pub secrets: SealedSecrets,
    /// Run `restic init` on this host (a new repository) ...
    pub init_on_host: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoAdded {
    pub repo_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessInput {
    AppendOnly,
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoAttach {
    pub repo_id: String,
    pub host_id: String,
    pub access: AccessInput,
    /// This host's own credential; `None` = the repository's full secrets
    /// (only allowed with `full` access).
    pub secrets: Option<SealedSecrets>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoMaintenance {
    pub repo_id: String,
    pub host_id: Option<String>,
}

/// Test a host's connection to a repository (verify: reachable, right
/// password, a repository).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoTest {
    pub repo_id: String,
    pub host_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoTestResult {
    pub ok: bool,
    pub restic_repo_id: Option<String>,
    /// A clear reason on failure ("wrong password", "unreachable", ...).
    pub error: Option<String>,
    pub error_kind: Option<rm_bus::msg::ErrorKind>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulePut {
    /// `None` creates; `Some` edits.
    pub schedule_id: Option<String>,
    pub host_id: String,
    pub repo_id: String,
    pub cron: String,
    pub timezone: String,
    pub params: JobParams,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub jitter_secs: u64,
    pub timeout_secs: Option<u64>,
    pub grace_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleSaved {
    pub schedule_id: String,
    /// The config version of the host that runs it.
    pub config_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleRef {
    pub schedule_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCreate {
    /// Whose job it is (its snapshots, its `--host`).
    pub host_id: String,
    pub repo_id: String,
    pub params: JobParams,
    pub timeout_secs: Option<u64>,
    /// Restore onto another host: that host gets read credentials sealed
    /// for this one job.
    pub target_host_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCreated {
    pub job_id: String,
    /// Where restic will run (the maintenance host for forget/prune on an
    /// append-only credential).
    pub exec_host_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    pub job_id: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LsRequest {
    pub host_id: String,
    pub repo_id: String,
    pub snapshot: String,
    pub dir: String,
}

pub type LsReply = QueryReply;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {}
