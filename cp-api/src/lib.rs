//! The control plane's services on `rm.svc.controlplane.<verb>`: request
//! and reply bodies, wrapped in `SvcRequest` / `SvcReply` envelopes. The
//! web service (the only role allowed to speak for an operator) sends them.
//! Its own crate so the web role links these types without the control
//! plane's implementation; `rm_controlplane::api` re-exports it.

use std::collections::BTreeMap;

/// The key type of sealed replies (`HostAdd::new` makes one).
pub use nkeys::XKey;
use rm_bus::msg::{JobParams, QueryReply};
use rm_bus::subject::Verb;
use serde::{Deserialize, Serialize};

pub const HOST_ADD: Verb = Verb::new("host-add");
pub const HOST_TOKEN: Verb = Verb::new("host-token");
pub const HOST_REVOKE: Verb = Verb::new("host-revoke");
/// Replace a host's tags ([`HostTags`] → [`HostTagsSaved`]).
pub const HOST_TAGS: Verb = Verb::new("host-tags");
pub const ENROLL: Verb = Verb::new("enroll");
pub const REPO_ADD: Verb = Verb::new("repo-add");
pub const REPO_ATTACH: Verb = Verb::new("repo-attach");
pub const REPO_MAINTENANCE: Verb = Verb::new("repo-maintenance");
pub const REPO_TEST: Verb = Verb::new("repo-test");
/// Rename a repository and/or change its URL or password ([`RepoUpdate`]
/// → [`RepoUpdated`]).
pub const REPO_UPDATE: Verb = Verb::new("repo-update");
/// Remove a host's credential for a repository ([`RepoDetach`] → [`Done`]).
pub const REPO_DETACH: Verb = Verb::new("repo-detach");
/// Delete a repository's record, never its data ([`RepoDelete`] → [`Done`]).
pub const REPO_DELETE: Verb = Verb::new("repo-delete");
/// Refresh a repository's state now ([`RepoRefresh`] → [`RepoRefreshed`]).
pub const REPO_REFRESH: Verb = Verb::new("repo-refresh");
pub const SCHEDULE_PUT: Verb = Verb::new("schedule-put");
pub const SCHEDULE_DELETE: Verb = Verb::new("schedule-delete");
pub const JOB_CREATE: Verb = Verb::new("job-create");
pub const JOB_CANCEL: Verb = Verb::new("job-cancel");
pub const LS: Verb = Verb::new("ls");
/// The control plane's public xkey: secrets sent to it are sealed to it.
pub const PUBKEY: Verb = Verb::new("pubkey");
/// The control plane's counters ([`Metrics`]).
pub const METRICS: Verb = Verb::new("metrics");

/// Every verb, for the service router.
pub const ALL_VERBS: [Verb; 20] = [
    PUBKEY,
    METRICS,
    HOST_ADD,
    HOST_TOKEN,
    HOST_REVOKE,
    HOST_TAGS,
    ENROLL,
    REPO_ADD,
    REPO_ATTACH,
    REPO_MAINTENANCE,
    REPO_TEST,
    REPO_UPDATE,
    REPO_DETACH,
    REPO_DELETE,
    REPO_REFRESH,
    SCHEDULE_PUT,
    SCHEDULE_DELETE,
    JOB_CREATE,
    JOB_CANCEL,
    LS,
];

/// What the control plane survived and shed since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Errors each background loop logged and continued after.
    #[serde(default)]
    pub loop_errors: BTreeMap<String, u64>,
    /// Well-formed heartbeats received.
    #[serde(default)]
    pub heartbeats_received: u64,
    /// Heartbeats dropped. Always 0 since heartbeats are kept in memory
    /// and flushed (kept for readers of the older field).
    #[serde(default)]
    pub heartbeats_dropped: u64,
    /// Host rows heartbeat flushes wrote (last-seen).
    #[serde(default)]
    pub heartbeat_rows_written: u64,
    /// ... of which with changed vitals.
    #[serde(default)]
    pub vitals_written: u64,
    /// Lost checks started (a hello did not list an active job).
    #[serde(default)]
    pub lost_checks: u64,
    /// Dispatch passes over a host's queued jobs that ended.
    #[serde(default)]
    pub dispatch_passes: u64,
    /// Offline sweeps that looked at the fleet (once settled).
    #[serde(default)]
    pub offline_sweeps: u64,
    /// Offline sweeper ticks that did not look: the control plane's bus
    /// connection was not up for the whole offline window yet (at start,
    /// after a reconnect), so missed heartbeats may be its own.
    #[serde(default)]
    pub offline_sweeps_unsettled: u64,
    /// Offline sweeps that found a mass silence (at least 50 hosts and a
    /// twentieth of those online silent at once: more likely the bus or
    /// the control plane behind than the hosts gone) and marked only the
    /// hosts silent for four offline windows.
    #[serde(default)]
    pub offline_sweeps_mass: u64,
    /// How long the latest offline sweep took (ms), reads and write ...
    #[serde(default)]
    pub offline_sweep_last_ms: u64,
    /// ... and the longest one since start.
    #[serde(default)]
    pub offline_sweep_max_ms: u64,
    /// How much longer than the offline window the latest offline sweep
    /// waited because heartbeat delivery ran behind (late beats, or none
    /// heard from a fleet that beats often; at most one more window) ...
    #[serde(default)]
    pub offline_sweep_behind_ms: u64,
    /// ... and the most since start.
    #[serde(default)]
    pub offline_sweep_behind_max_ms: u64,
    /// Hosts offline sweeps kept back, silent for the window but behind
    /// a bus node quiet at the time (each sweep counts its own) ...
    #[serde(default)]
    pub offline_sweep_held_by_node: u64,
    /// ... the latest sweep's ...
    #[serde(default)]
    pub offline_sweep_held_by_node_last: u64,
    /// ... and the longest such wait past the window since start (ms).
    #[serde(default)]
    pub offline_sweep_node_wait_max_ms: u64,
    /// Hosts offline sweeps kept back as not heard since the control plane
    /// connected, within four offline windows of that (each sweep counts
    /// its own).
    #[serde(default)]
    pub offline_sweep_held_since_start: u64,
    /// Times the control plane's bus connection came back after a loss.
    #[serde(default)]
    pub bus_reconnects: u64,
    /// Job results (`started`, `done`, parts, claims) committed and
    /// acknowledged ...
    #[serde(default)]
    pub ingest_results: u64,
    /// ... in this many transactions (a batch each) ...
    #[serde(default)]
    pub ingest_commits: u64,
    /// ... of which ended after a part (the rest of their results went
    /// first into the next one) ...
    #[serde(default)]
    pub ingest_commits_cut: u64,
    /// ... (of those, for an operator's write queued in the writer's first
    /// lane ...
    #[serde(default)]
    pub ingest_cut_operator: u64,
    /// ... for another role of the process waiting for the shared write
    /// connection ...
    #[serde(default)]
    pub ingest_cut_role: u64,
    /// ... and for the parts' time budget, 2 s) ...
    #[serde(default)]
    pub ingest_cut_time: u64,
    /// ... and the time the results' statements took inside those
    /// transactions (ms; not the writer's begin and commit) ...
    #[serde(default)]
    pub ingest_apply_ms: u64,
    /// ... of which re-sends recognised as duplicates.
    #[serde(default)]
    pub ingest_duplicates: u64,
    /// Results applied one at a time because their batch failed together.
    #[serde(default)]
    pub ingest_results_alone: u64,
    /// Transactions the writer task committed ...
    #[serde(default)]
    pub write_batches: u64,
    /// ... holding this many writes.
    #[serde(default)]
    pub writes_committed: u64,
    /// Writer batches that did not commit (busy or read-only database).
    #[serde(default)]
    pub write_batches_failed: u64,
    /// Writer transactions of operators' writes (its first lane, ahead of
    /// pending results); counted in `write_batches` too.
    #[serde(default)]
    pub write_batches_first: u64,
    /// Operators' writes queued in the writer task's first lane right now.
    #[serde(default)]
    pub writes_waiting_first: u64,
    /// Milliseconds the writer task spent beginning its transactions
    /// (waiting for another process's write lock), ...
    #[serde(default)]
    pub write_begin_ms: u64,
    /// ... applying their writes ...
    #[serde(default)]
    pub write_apply_ms: u64,
    /// ... and committing them (syncing to disk, checkpointing the WAL).
    #[serde(default)]
    pub write_commit_ms: u64,
    /// Transactions committed on the control plane's write connection,
    /// through the writer task or not (each a sync to disk when it wrote).
    #[serde(default)]
    pub db_commits: u64,
    /// Commits on that connection between the writer task's own
    /// transactions, counted by the task while it holds the connection:
    /// another role sharing it in one process (`serve`), or a write that
    /// bypassed the writer.
    #[serde(default)]
    pub db_commits_outside_writer: u64,
    /// Hellos waiting for a handler now (at most one per host).
    #[serde(default)]
    pub hellos_waiting: u64,
    /// Hellos received since start.
    #[serde(default)]
    pub hellos_queued_total: u64,
    /// Hellos replaced by a later hello of the same host before a handler
    /// took them (the agent had asked again).
    #[serde(default)]
    pub hellos_superseded: u64,
    /// Hellos dropped unanswered after waiting longer than their agent
    /// waits for the answer (a storm the handlers did not keep up with).
    #[serde(default)]
    pub hellos_expired: u64,
    /// Of `hellos_expired`, those dropped at the queue's cap for a newer
    /// arrival rather than for their age.
    #[serde(default)]
    pub hellos_displaced: u64,
    /// Hellos the handlers took newest first, being behind (the oldest
    /// waiting hello had waited past the control plane's threshold).
    #[serde(default)]
    pub hellos_newest_first: u64,
    /// Job results (`started`, `done`, parts, claims) waiting for the
    /// writer now (at most one per subject and idempotency key).
    #[serde(default)]
    pub results_waiting: u64,
    /// Results received since start.
    #[serde(default)]
    pub results_queued_total: u64,
    /// Results replaced by a later copy (the agent's retry) before the
    /// writer took them.
    #[serde(default)]
    pub results_superseded: u64,
    /// Results dropped unanswered after waiting `--result-max-wait-ms`
    /// (60 s), or at the queue's cap (the agent sends them again).
    #[serde(default)]
    pub results_expired: u64,
    /// Of `results_expired`, those dropped at the queue's cap
    /// (`--result-queue`) for a newer arrival rather than for their age.
    #[serde(default)]
    pub results_displaced: u64,
    /// Results the writer took newest first, being behind.
    #[serde(default)]
    pub results_newest_first: u64,
    /// Re-sends of results committed lately, acknowledged as duplicates
    /// from memory (not queued, not written).
    #[serde(default)]
    pub results_acked_from_memory: u64,
    /// Agent requests whose reply subject was not the agent's own inbox.
    #[serde(default)]
    pub replies_refused: u64,
    /// Service requests answered with an earlier attempt's reply (same
    /// idempotency key) instead of running again.
    #[serde(default)]
    pub svc_replayed: u64,
    /// Messages the control plane's bus client dropped because the
    /// subscription's buffer was full (heartbeats, in practice), as far as
    /// its connection events tell: a lower bound.
    #[serde(default)]
    pub slow_consumer_events: u64,
    /// Heartbeats by ingest lag (received minus the agent's send time, ms):
    /// count per bucket of [`HEARTBEAT_LAG_BOUNDS_MS`], the last bucket
    /// holding the rest (benchmarks read percentiles from it).
    #[serde(default)]
    pub heartbeat_lag_ms: Vec<u64>,
}

/// Upper bounds (inclusive, ms) of [`Metrics::heartbeat_lag_ms`]'s buckets.
pub const HEARTBEAT_LAG_BOUNDS_MS: [i64; 14] = [
    0, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2500, 5000, 10_000,
];

impl Metrics {
    /// Errors counted for one loop.
    pub fn errors_of(&self, what: &str) -> u64 {
        self.loop_errors.get(what).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostAdd {
    pub name: String,
    /// The asker's public xkey: the enrollment token comes back sealed to
    /// it (see [`SealedEnrollment`]), never in clear on the bus.
    pub reply_xkey: String,
}

impl HostAdd {
    /// A request for `name` with a fresh key; keep the key to open the
    /// reply.
    pub fn new(name: impl Into<String>) -> (Self, nkeys::XKey) {
        let key = nkeys::XKey::new();
        let req = Self {
            name: name.into(),
            reply_xkey: key.public_key(),
        };
        (req, key)
    }
}

/// A new enrollment token for a host that has not enrolled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostTokenRequest {
    pub host_id: String,
    /// As [`HostAdd::reply_xkey`].
    pub reply_xkey: String,
}

impl HostTokenRequest {
    pub fn new(host_id: impl Into<String>) -> (Self, nkeys::XKey) {
        let key = nkeys::XKey::new();
        let req = Self {
            host_id: host_id.into(),
            reply_xkey: key.public_key(),
        };
        (req, key)
    }
}

/// The reply to host-add and host-token: the token and the command that
/// carries it, sealed by the control plane to the asker's `reply_xkey`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedEnrollment {
    pub host_id: String,
    pub expires_at: i64,
    /// The control plane's public xkey (the sealer).
    pub sealer_xkey: String,
    /// `{token, command}`.
    pub sealed: rm_bus::msg::Sealed,
}

#[derive(Serialize, Deserialize)]
struct EnrollmentSecret {
    token: String,
    command: String,
}

impl SealedEnrollment {
    /// Seals `e` from `sealer` to `reply_xkey`.
    pub fn seal(
        e: &HostEnrollment,
        sealer: &nkeys::XKey,
        reply_xkey: &str,
    ) -> Result<Self, rm_bus::seal::SealError> {
        let secret = EnrollmentSecret {
            token: e.token.clone(),
            command: e.command.clone(),
        };
        Ok(Self {
            host_id: e.host_id.clone(),
            expires_at: e.expires_at,
            sealer_xkey: sealer.public_key(),
            sealed: rm_bus::seal::seal(&secret, sealer, reply_xkey)?,
        })
    }

    /// Opens the reply with the key the request was made with.
    pub fn open(&self, key: &nkeys::XKey) -> Result<HostEnrollment, rm_bus::seal::SealError> {
        let s: EnrollmentSecret = rm_bus::seal::open(&self.sealed, key, &self.sealer_xkey)?;
        Ok(HostEnrollment {
            host_id: self.host_id.clone(),
            token: s.token,
            expires_at: self.expires_at,
            command: s.command,
        })
    }
}

/// A fresh enrollment token and the command to run on the endpoint.
/// `Debug` redacts both (the command carries the token).
#[derive(Clone, Serialize, Deserialize)]
pub struct HostEnrollment {
    pub host_id: String,
    pub token: String,
    pub expires_at: i64,
    /// The exact command line for the endpoint.
    pub command: String,
}

impl std::fmt::Debug for HostEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEnrollment")
            .field("host_id", &self.host_id)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("command", &"<redacted>")
            .finish()
    }
}

/// The `enroll` service's body: the agent's [`EnrollRequest`] (token and
/// public keys) sealed by the web role to the control plane's xkey with an
/// ephemeral sender key, so the token never crosses the bus in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedEnroll {
    pub sender_xkey: String,
    pub sealed: rm_bus::msg::Sealed,
}

impl SealedEnroll {
    /// Seals `req` to the control plane's public xkey.
    pub fn seal(
        req: &rm_bus::msg::EnrollRequest,
        controlplane_xkey: &str,
    ) -> Result<Self, rm_bus::seal::SealError> {
        let sender = nkeys::XKey::new();
        Ok(Self {
            sender_xkey: sender.public_key(),
            sealed: rm_bus::seal::seal(req, &sender, controlplane_xkey)?,
        })
    }

    pub fn open(
        &self,
        recipient: &nkeys::XKey,
    ) -> Result<rm_bus::msg::EnrollRequest, rm_bus::seal::SealError> {
        rm_bus::seal::open(&self.sealed, recipient, &self.sender_xkey)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRef {
    pub host_id: String,
}

/// A host's new tags (all of them: the list replaces the old one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostTags {
    pub host_id: String,
    pub tags: Vec<String>,
}

/// The tags as stored (trimmed, deduplicated, sorted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostTagsSaved {
    pub tags: Vec<String>,
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
    /// ... or check on this host that an existing repository opens with
    /// these credentials (reachable, right password, a repository) before
    /// anything is saved.
    #[serde(default)]
    pub verify_on_host: Option<String>,
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

/// Refresh a repository's snapshot list, sizes and locks now (the
/// `snapshots`, both `stats` and `locks` jobs), on its maintenance host if
/// online, else on any attached online host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoRefresh {
    pub repo_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRefreshed {
    /// The host that runs the refresh.
    pub host_id: String,
    /// The jobs queued; empty when a refresh was already waiting.
    pub job_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoTestResult {
    pub ok: bool,
    pub restic_repo_id: Option<String>,
    /// A clear reason on failure ("wrong password", "unreachable", ...).
    pub error: Option<String>,
    pub error_kind: Option<rm_bus::msg::ErrorKind>,
}

/// New values for some of a repository's full-access secrets; `None`
/// keeps the stored one. Debug redacts everything.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RepoSecretsPatch {
    pub url: Option<String>,
    pub password: Option<String>,
    /// Replaces the whole extra environment when given.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for RepoSecretsPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoSecretsPatch")
            .field("url", &self.url.as_deref().map(rm_bus::seal::redact_url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "env",
                &self.env.as_ref().map(|e| e.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// A [`RepoSecretsPatch`] sealed to the control plane's xkey (as
/// [`SealedSecrets`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecretsPatch {
    pub sender_xkey: String,
    pub sealed: rm_bus::msg::Sealed,
}

impl SealedSecretsPatch {
    pub fn seal(
        patch: &RepoSecretsPatch,
        controlplane_xkey: &str,
    ) -> Result<Self, rm_bus::seal::SealError> {
        let sender = nkeys::XKey::new();
        Ok(Self {
            sender_xkey: sender.public_key(),
            sealed: rm_bus::seal::seal(patch, &sender, controlplane_xkey)?,
        })
    }

    pub fn open(
        &self,
        recipient: &nkeys::XKey,
    ) -> Result<RepoSecretsPatch, rm_bus::seal::SealError> {
        rm_bus::seal::open(&self.sealed, recipient, &self.sender_xkey)
    }
}

/// Rename a repository and/or change its URL, password or environment.
/// New secrets are verified first (`restic cat config` through a host);
/// nothing is saved when that fails. Hosts whose credential carried the
/// old URL, password or environment get the new one (config pushed);
/// hosts with their own (an append-only REST user's URL) keep theirs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoUpdate {
    pub repo_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub secrets: Option<SealedSecretsPatch>,
    /// The host that verifies new secrets; default: the maintenance host,
    /// else an attached host with full access, else any attached host.
    #[serde(default)]
    pub verify_on_host: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoUpdated {
    /// The host the new secrets were verified on.
    #[serde(default)]
    pub verified_on: Option<String>,
    /// Hosts whose credential followed the change (their configs pushed).
    #[serde(default)]
    pub hosts_updated: Vec<String>,
    /// Hosts that keep credentials of their own (the URL or password
    /// differed from the repository's): re-attach them if they moved too.
    #[serde(default)]
    pub hosts_kept: Vec<String>,
}

/// Detach a host: its credential is removed and its agent's config
/// pushed without it. Refused while the host has schedules on the
/// repository unless `delete_schedules`; refused for the maintenance host
/// unless `new_maintenance_host` names another or `no_maintenance_host`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoDetach {
    pub repo_id: String,
    pub host_id: String,
    #[serde(default)]
    pub delete_schedules: bool,
    #[serde(default)]
    pub new_maintenance_host: Option<String>,
    #[serde(default)]
    pub no_maintenance_host: bool,
}

/// Delete a repository's record (credentials, schedules, cached snapshots
/// and health go with it; jobs stay, without their repository). The data
/// in the repository is never touched. Refused while hosts are attached
/// unless `detach_hosts`, and while jobs on it have not ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoDelete {
    pub repo_id: String,
    #[serde(default)]
    pub detach_hosts: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rm_bus::msg::{ErrorKind, Sealed};
    use serde::de::DeserializeOwned;

    /// Serializes, adds a field a newer peer might send, parses back and
    /// checks nothing was lost.
    fn tolerant<T: Serialize + DeserializeOwned>(v: T) {
        let before = serde_json::to_value(&v).unwrap();
        let mut json = before.clone();
        json.as_object_mut()
            .expect("bodies are JSON objects")
            .insert(
                "field_from_a_newer_peer".into(),
                serde_json::json!({"x": 1}),
            );
        let back: T = serde_json::from_value(json).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), before);
    }

    fn sealed() -> SealedSecrets {
        SealedSecrets {
            sender_xkey: "XA".into(),
            sealed: Sealed("c2VhbGVk".into()),
        }
    }

    #[test]
    fn every_body_round_trips_and_ignores_unknown_fields() {
        tolerant(HostAdd::new("web-1").0);
        tolerant(HostEnrollment {
            host_id: "h1".into(),
            token: "t".into(),
            expires_at: 5,
            command: "restic-manager-agent enroll".into(),
        });
        tolerant(HostRef {
            host_id: "h1".into(),
        });
        tolerant(RepoSecretsInput {
            url: "rest:http://u:p@h/r".into(),
            password: "pw".into(),
            env: BTreeMap::from([("AWS_ACCESS_KEY_ID".into(), "k".into())]),
        });
        tolerant(PubKey { xkey: "XA".into() });
        tolerant(sealed());
        tolerant(RepoAdd {
            name: "main".into(),
            secrets: sealed(),
            init_on_host: Some("h1".into()),
            verify_on_host: None,
        });
        tolerant(RepoAdded {
            repo_id: "r1".into(),
        });
        tolerant(RepoAttach {
            repo_id: "r1".into(),
            host_id: "h1".into(),
            access: AccessInput::AppendOnly,
            secrets: Some(sealed()),
        });
        tolerant(RepoMaintenance {
            repo_id: "r1".into(),
            host_id: None,
        });
        tolerant(RepoTest {
            repo_id: "r1".into(),
            host_id: "h1".into(),
        });
        tolerant(RepoRefresh {
            repo_id: "r1".into(),
        });
        tolerant(RepoRefreshed {
            host_id: "h1".into(),
            job_ids: vec!["j1".into()],
        });
        tolerant(RepoTestResult {
            ok: false,
            restic_repo_id: None,
            error: Some("wrong password".into()),
            error_kind: Some(ErrorKind::WrongPassword),
        });
        tolerant(SchedulePut {
            schedule_id: None,
            host_id: "h1".into(),
            repo_id: "r1".into(),
            cron: "0 3 * * *".into(),
            timezone: "Europe/Berlin".into(),
            params: JobParams::Prune {},
            enabled: true,
            jitter_secs: 60,
            timeout_secs: Some(3600),
            grace_secs: None,
        });
        tolerant(ScheduleSaved {
            schedule_id: "s1".into(),
            config_version: 3,
        });
        tolerant(ScheduleRef {
            schedule_id: "s1".into(),
        });
        tolerant(JobCreate {
            host_id: "h1".into(),
            repo_id: "r1".into(),
            params: JobParams::Locks {},
            timeout_secs: None,
            target_host_id: Some("h2".into()),
        });
        tolerant(JobCreated {
            job_id: "j1".into(),
            exec_host_id: "h2".into(),
        });
        tolerant(JobRef {
            job_id: "j1".into(),
        });
        tolerant(JobState {
            job_id: "j1".into(),
            status: "queued".into(),
        });
        tolerant(LsRequest {
            host_id: "h1".into(),
            repo_id: "r1".into(),
            snapshot: "latest".into(),
            dir: "/data".into(),
        });
        tolerant(Done {});
        tolerant(RepoSecretsPatch {
            url: None,
            password: Some("pw".into()),
            env: None,
        });
        tolerant(RepoUpdate {
            repo_id: "r1".into(),
            name: Some("offsite".into()),
            secrets: Some(SealedSecretsPatch {
                sender_xkey: "XA".into(),
                sealed: Sealed("c2VhbGVk".into()),
            }),
            verify_on_host: None,
        });
        tolerant(RepoUpdated {
            verified_on: Some("h1".into()),
            hosts_updated: vec!["h1".into()],
            hosts_kept: vec!["h2".into()],
        });
        tolerant(RepoDetach {
            repo_id: "r1".into(),
            host_id: "h1".into(),
            delete_schedules: true,
            new_maintenance_host: Some("h2".into()),
            no_maintenance_host: false,
        });
        tolerant(RepoDelete {
            repo_id: "r1".into(),
            detach_hosts: true,
        });
    }

    #[test]
    fn secrets_input_debug_is_redacted() {
        let s = RepoSecretsInput {
            url: "rest:http://user:hunter2@h/r".into(),
            password: "correct-horse".into(),
            env: BTreeMap::from([("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t".into())]),
        };
        let d = format!("{s:?}");
        for secret in ["hunter2", "correct-horse", "s3cr3t"] {
            assert!(!d.contains(secret), "{d}");
        }
    }
}
