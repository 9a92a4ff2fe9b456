//! Versioned message types for every subject.
//!
//! Every payload is a JSON object with a `v` field ([`PROTOCOL_VERSION`]).
//! Unknown fields are ignored and every field that a later version may drop
//! is optional, so an old agent keeps working against a newer control plane
//! and the reverse. Enums carry an `Unknown` catch-all where a newer peer may
//! send a value this build does not know.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{HostId, JobId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

fn v1() -> u32 {
    PROTOCOL_VERSION
}

/// Decoding a bus payload failed.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what} message: {source}")]
pub struct DecodeError {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Parses a payload, naming the message type in the error.
pub fn decode<T: DeserializeOwned>(what: &'static str, payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|source| DecodeError { what, source })
}

/// Serializes a message. Our types serialize infallibly (no maps with
/// non-string keys), so this returns bytes directly.
pub fn encode<T: Serialize>(msg: &T) -> bytes::Bytes {
    match serde_json::to_vec(msg) {
        Ok(v) => v.into(),
        // Unreachable for the types in this module: plain structs, strings,
        // numbers and serde_json::Value.
        Err(e) => panic!("message failed to serialize: {e}"),
    }
}

// ---------------------------------------------------------------- jobs

/// The restic operations a job can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Forget,
    Prune,
    Check,
    Unlock,
    Snapshots,
    Stats,
    Diff,
    Restore,
    /// The repository's locks (health); a system job.
    Locks,
    /// What a forget policy would remove, without removing anything
    /// (`restic forget --dry-run`).
    ForgetPreview,
    #[serde(other)]
    Unknown,
}

/// `keep-*` retention options for forget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// restic duration such as `1y6m`.
    pub keep_within: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    RestoreSize,
    RawData,
    #[serde(other)]
    Unknown,
}

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum RestoreTarget {
    Original,
    Path { path: String },
}

/// What a job does: one variant per kind, with that kind's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobParams {
    Backup {
        paths: Vec<String>,
        #[serde(default)]
        excludes: Vec<String>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        one_file_system: bool,
        host_name: Option<String>,
    },
    Forget {
        retention: Retention,
        /// restic `--host`: whose snapshots this forget may touch.
        host_name: String,
        #[serde(default)]
        prune: bool,
    },
    Prune {},
    Check {
        read_data_subset: Option<String>,
    },
    Unlock {
        #[serde(default)]
        remove_all: bool,
    },
    Snapshots {
        host_name: Option<String>,
    },
    Stats {
        mode: StatsMode,
        snapshot: Option<String>,
    },
    Diff {
        from: String,
        to: String,
    },
    Restore {
        snapshot: String,
        #[serde(default)]
        include: Vec<String>,
        target: RestoreTarget,
    },
    /// List the repository's locks (`restic list locks` and `cat lock`):
    /// the summary is an array of `{id, time, exclusive, hostname,
    /// username, pid, stale}`.
    Locks {},
    /// What [`JobParams::Forget`] with this policy would remove, and why
    /// each kept snapshot is kept: `restic forget --dry-run --no-lock`
    /// with the same `--host` scope. Changes nothing. Its own kind (not a
    /// flag on forget) so an agent that does not know it refuses it
    /// instead of forgetting for real. The summary is a [`RetentionPlan`].
    ForgetPreview {
        retention: Retention,
        /// restic `--host`, as for forget.
        host_name: String,
    },
    /// A kind this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl JobParams {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Backup { .. } => JobKind::Backup,
            Self::Forget { .. } => JobKind::Forget,
            Self::Prune {} => JobKind::Prune,
            Self::Check { .. } => JobKind::Check,
            Self::Unlock { .. } => JobKind::Unlock,
            Self::Snapshots { .. } => JobKind::Snapshots,
            Self::Stats { .. } => JobKind::Stats,
            Self::Diff { .. } => JobKind::Diff,
            Self::Restore { .. } => JobKind::Restore,
            Self::Locks {} => JobKind::Locks,
            Self::ForgetPreview { .. } => JobKind::ForgetPreview,
            Self::Unknown => JobKind::Unknown,
        }
    }
}

/// The summary of a [`JobParams::ForgetPreview`] job: every snapshot in
/// the policy's scope, newest first, with what the policy does to it. The
/// same shape whatever restic version produced it (0.14's keep reasons
/// carry no snapshot id; the runner matches them by time and tree).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPlan {
    pub snapshots: Vec<PlannedSnapshot>,
}

/// One snapshot of a [`RetentionPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSnapshot {
    /// restic's full id.
    pub id: String,
    pub short_id: String,
    /// RFC 3339, as restic printed it.
    pub time: String,
    /// The same time in Unix milliseconds, when it parsed.
    #[serde(default)]
    pub time_ms: Option<i64>,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kept by the policy (else removed).
    pub keep: bool,
    /// Why it is kept, in restic's words (`last snapshot`, `daily
    /// snapshot`, `within 7d`, ...); empty for a removed one.
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl RetentionPlan {
    pub fn kept(&self) -> usize {
        self.snapshots.iter().filter(|s| s.keep).count()
    }

    pub fn removed(&self) -> usize {
        self.snapshots.len() - self.kept()
    }
}

/// A secret sealed with nkeys xkey to one recipient: base64 of the box.
/// The bus never carries repository or channel secrets in the clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

/// How the agent reaches a repository for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoAccess {
    pub repo_id: String,
    /// `{password, env}` sealed to the agent's xkey by the control plane.
    pub secrets: Sealed,
    /// The credential is append-only: forget and prune must be refused.
    #[serde(default)]
    pub append_only: bool,
}

/// A job as dispatched to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: JobId,
    pub params: JobParams,
    pub repo: RepoAccess,
    /// Hard limit for the restic run, seconds.
    pub timeout_secs: u64,
}

/// Where a job came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum JobOrigin {
    Dispatch,
    Schedule {
        schedule_id: String,
    },
    #[serde(other)]
    Unknown,
}

/// Final state of a job as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    /// Finished but incomplete (restic exit 3: some files unreadable).
    Warning,
    Failed,
    Cancelled,
    #[serde(other)]
    Unknown,
}

/// Why a job failed, classified from exit code and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    WrongPassword,
    RepoMissing,
    Locked,
    Partial,
    Network,
    AppendOnly,
    Timeout,
    Cancelled,
    InvalidRequest,
    Fatal,
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------- agent → control plane

/// `rm.agent.<host>.hello` request, sent on every (re)connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    #[serde(default = "v1")]
    pub v: u32,
    pub agent_version: String,
    pub restic_version: Option<String>,
    pub os: String,
    pub arch: String,
    pub hostname: String,
    /// Config version the agent has applied (0 = none yet).
    #[serde(default)]
    pub config_version: u64,
    /// Jobs accepted (persisted) but not started.
    #[serde(default)]
    pub accepted_jobs: Vec<JobId>,
    /// Jobs running now.
    #[serde(default)]
    pub running_jobs: Vec<JobId>,
    /// The agent process and how many jobs it had accepted when this hello
    /// was composed: a job whose [`Ack::accepted`] mark has this boot and
    /// a higher seq was accepted after, so its absence from the lists
    /// above says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_seq: Option<AcceptMark>,
}

/// Reply to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    #[serde(default = "v1")]
    pub v: u32,
    /// The host's config when it is newer than the agent's.
    pub config: Option<AgentConfig>,
    pub server_time_ms: i64,
}

/// Everything an agent needs to run on its own: pushed on change, cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub version: u64,
    pub heartbeat_secs: Option<u64>,
    #[serde(default)]
    pub schedules: Vec<ScheduleSpec>,
}

/// A schedule the agent runs locally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub schedule_id: String,
    pub cron: String,
    /// IANA time zone name.
    pub timezone: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Random delay added to each run, seconds.
    #[serde(default)]
    pub jitter_secs: u64,
    pub params: JobParams,
    pub repo: RepoAccess,
    pub timeout_secs: u64,
}

fn yes() -> bool {
    true
}

/// Free space of one file system the agent watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskFree {
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: Option<u64>,
}

/// The next time a schedule will run, as the agent computed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextRun {
    pub schedule_id: String,
    pub at_ms: i64,
}

/// `rm.agent.<host>.heartbeat`: vitals, at most once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default = "v1")]
    pub v: u32,
    pub ts_ms: i64,
    pub agent_version: String,
    pub restic_version: Option<String>,
    pub os: String,
    pub arch: String,
    pub uptime_secs: u64,
    #[serde(default)]
    pub config_version: u64,
    #[serde(default)]
    pub disks: Vec<DiskFree>,
    #[serde(default)]
    pub running_jobs: Vec<JobId>,
    #[serde(default)]
    pub next_runs: Vec<NextRun>,
    /// The bus node the agent is connected to (its `server_name`), so the
    /// control plane can tell a node gone quiet from its hosts gone
    /// (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_node: Option<String>,
}

/// `rm.agent.<host>.goodbye`: clean shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodbye {
    #[serde(default = "v1")]
    pub v: u32,
    pub ts_ms: i64,
    pub reason: Option<String>,
}

/// `rm.agent.<host>.job.<job>.progress`: throttled, at most once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default = "v1")]
    pub v: u32,
    pub ts_ms: i64,
    pub elapsed_ms: u64,
    pub percent_done: Option<f64>,
    pub bytes_done: Option<u64>,
    pub total_bytes: Option<u64>,
    pub files_done: Option<u64>,
    pub total_files: Option<u64>,
    pub seconds_remaining: Option<u64>,
    #[serde(default)]
    pub current_files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    Agent,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub ts_ms: i64,
    pub stream: Stream,
    pub text: String,
}

/// `rm.agent.<host>.job.<job>.log`: batched lines, at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    #[serde(default = "v1")]
    pub v: u32,
    /// Sequence number of the first line, so gaps are visible.
    pub seq: u64,
    pub lines: Vec<LogLine>,
}

/// `rm.agent.<host>.job.<job>.started`: request/ack, at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStarted {
    #[serde(default = "v1")]
    pub v: u32,
    pub job_id: JobId,
    pub kind: JobKind,
    pub origin: JobOrigin,
    pub started_ms: i64,
    /// Parameters of a locally scheduled run (the control plane has no
    /// record of it yet). Dispatched jobs omit them.
    pub params: Option<JobParams>,
    pub repo_id: Option<String>,
}

/// `rm.agent.<host>.job.<job>.done`: request/ack, at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDone {
    #[serde(default = "v1")]
    pub v: u32,
    pub job_id: JobId,
    pub outcome: JobOutcome,
    pub exit_code: Option<i32>,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    /// The parsed restic result (backup summary, snapshots list, stats...).
    pub summary: Option<serde_json::Value>,
    /// Last lines of stderr.
    #[serde(default)]
    pub stderr_tail: Vec<String>,
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
    pub restic_version: Option<String>,
    /// Set instead of `summary` when the summary was too large for one
    /// message: it travelled as [`JobPart`]s before this `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_parts: Option<PartsRef>,
}

/// Where a chunked summary is: `total` parts whose texts, concatenated in
/// index order, are `bytes` bytes of JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsRef {
    pub total: u32,
    pub bytes: u64,
}

/// `rm.agent.<host>.job.<job>.part`: request/ack, at least once. One chunk
/// of a job's result (today: the `done` summary) that does not fit in one
/// message. Parts go out in order before the `done` that names their
/// total; the receiver stores each by `(job, index)` and reassembles when
/// the `done` arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPart {
    #[serde(default = "v1")]
    pub v: u32,
    pub job_id: JobId,
    /// What the parts make up: `summary` (of the `done`).
    pub of: String,
    /// 0-based.
    pub index: u32,
    pub total: u32,
    /// This part's slice of the JSON text.
    pub data: String,
}

/// `rm.agent.<host>.job.<job>.claim`: request/ack. Before a scheduled
/// prune, check or forget starts, the agent asks the control plane for
/// the repository. `Ack::ok` grants it (the control plane now counts the
/// job as active there); a refusal with `retry` means the repository is
/// busy (ask again later); a refusal without `retry` means never (the
/// schedule is unknown): the run is reported as failed with that reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobClaim {
    #[serde(default = "v1")]
    pub v: u32,
    pub job_id: JobId,
    pub origin: JobOrigin,
    pub params: JobParams,
    pub repo_id: String,
}

/// The reply to every request/ack message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default = "v1")]
    pub v: u32,
    pub ok: bool,
    /// Already recorded earlier (an idempotent replay).
    #[serde(default)]
    pub duplicate: bool,
    pub error: Option<String>,
    /// The agent's answer to a dispatch it took now: when, in its own
    /// order of accepts, it took the job (see [`Hello::accept_seq`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<AcceptMark>,
    /// A refusal that may pass (the agent is shutting down, its outbox is
    /// full, its disk would not take the job): the sender tries again
    /// later instead of failing what it sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
}

/// Where an accept falls in one agent process's order of accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptMark {
    /// Random per agent process start.
    pub boot: String,
    /// 1 for the process's first accepted job, then counting up.
    pub seq: u64,
}

impl Ack {
    pub fn ok() -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: true,
            duplicate: false,
            error: None,
            accepted: None,
            retry: false,
        }
    }

    pub fn duplicate() -> Self {
        Self {
            duplicate: true,
            ..Self::ok()
        }
    }

    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: false,
            duplicate: false,
            error: Some(error.into()),
            accepted: None,
            retry: false,
        }
    }

    /// A refusal that may pass: try again later.
    pub fn refused_for_now(error: impl Into<String>) -> Self {
        Self {
            retry: true,
            ..Self::refused(error)
        }
    }
}

// ---------------------------------------------------------------- control plane → agent

/// `rm.cmd.<host>` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    #[serde(default = "v1")]
    pub v: u32,
    #[serde(flatten)]
    pub body: CommandBody,
}

impl Command {
    pub fn new(body: CommandBody) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            body,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum CommandBody {
    /// Run a job; the agent persists it before acknowledging.
    Dispatch { job: JobSpec },
    /// Cancel a job in any state.
    Cancel { job_id: JobId },
    /// The host's config changed; the reply's [`Ack`] confirms the version
    /// applied (the agent may also pick it up from the hello reply).
    ConfigChanged { config: AgentConfig },
    /// One chunk of a config too large for one [`CommandBody::ConfigChanged`]:
    /// the JSON of the [`AgentConfig`] split into `total` texts sent in
    /// order. The agent applies the config once it holds every part of
    /// `version`, and answers the last part as it would `ConfigChanged`.
    ConfigPart {
        version: u64,
        index: u32,
        total: u32,
        data: String,
    },
    /// List one directory level of a snapshot (restore browser).
    Ls {
        repo: RepoAccess,
        snapshot: String,
        dir: String,
    },
    /// List snapshots now, without recording a job.
    Snapshots {
        repo: RepoAccess,
        host_name: Option<String>,
    },
    /// `restic init` a new repository (repository setup, not a stored job).
    RepoInit { repo: RepoAccess },
    /// Verify an existing repository is reachable and the password opens it
    /// (`restic cat config`); the reply carries restic's repository id.
    RepoVerify { repo: RepoAccess },
    /// A command this build does not know.
    #[serde(other)]
    Unknown,
}

/// One entry of an `ls` query reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsEntry {
    pub name: String,
    /// `file`, `dir`, `symlink`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    pub size: Option<u64>,
    pub mtime: Option<String>,
}

/// Reply to a query command (`Ls`, `Snapshots`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryReply {
    #[serde(default = "v1")]
    pub v: u32,
    pub ok: bool,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    #[serde(default)]
    pub entries: Vec<LsEntry>,
    pub snapshots: Option<serde_json::Value>,
    /// restic's repository id (`RepoInit`, `RepoVerify`).
    pub restic_repo_id: Option<String>,
}

// ---------------------------------------------------------------- enrollment

/// `POST /api/v1/enroll` body (agent → web), forwarded to the control plane
/// as `rm.svc.controlplane.enroll`, sealed to the control plane's xkey (the
/// token never crosses the bus in the clear). Only public keys leave the
/// endpoint. `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    #[serde(default = "v1")]
    pub v: u32,
    /// The one-time enrollment token from the operator's command line.
    pub token: String,
    /// The agent's user public nkey (`U...`), generated on the endpoint.
    pub nkey: String,
    /// The agent's public xkey (`X...`), for secrets sealed to it.
    pub xkey: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("v", &self.v)
            .field("token", &"<redacted>")
            .field("nkey", &self.nkey)
            .field("xkey", &self.xkey)
            .field("hostname", &self.hostname)
            .field("os", &self.os)
            .field("arch", &self.arch)
            .field("agent_version", &self.agent_version)
            .finish()
    }
}

/// Reply to [`EnrollRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollReply {
    #[serde(default = "v1")]
    pub v: u32,
    pub host_id: HostId,
    /// The agent's user JWT (permissions confined to its host).
    pub jwt: String,
    /// Bus URLs to connect to, in order of preference.
    pub bus_urls: Vec<String>,
    /// The control plane's public xkey: the sender of sealed secrets.
    pub controlplane_xkey: String,
    /// The CA (PEM) the agent verifies `tls://` bus servers against:
    /// the installation's CA unless the operator gave another. Absent
    /// from servers older than the private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_ca_pem: Option<String>,
}

// ---------------------------------------------------------------- services and events

/// Who asked for a change: carried by every `rm.svc.*` request from the web.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// User name, API token name, or `system`.
    pub name: String,
    pub via: ActorVia,
    /// The operator's client address as the web role saw it (honouring
    /// its trusted proxies), for the owning role's audit entry. Absent
    /// for system actions and from older senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorVia {
    Session,
    ApiToken,
    System,
    #[serde(other)]
    Unknown,
}

/// `rm.svc.<role>.<verb>` request envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcRequest<T> {
    #[serde(default = "v1")]
    pub v: u32,
    pub actor: Actor,
    pub body: T,
}

/// An error a service reports back: a machine code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvcError {
    /// `not_found`, `invalid`, `conflict`, `forbidden`, `internal`, ...
    pub code: String,
    pub message: String,
}

/// Header on a service reply: the answering role's own time for the
/// request, in whole microseconds, from taking it off its subscription to
/// its answer being ready (the wait for a handler's turn and the handler).
/// Optional: a replayed answer and the roles that do not time themselves
/// send none. The asker's wait minus this is the bus and the asker's own
/// process (the web role's `server-timing` shows both).
pub const SVC_TOOK_HEADER: &str = "Rm-Took-Us";

/// The header bytes [`SVC_TOOK_HEADER`] can add to a reply, at most
/// (for size checks before it is known).
pub fn svc_took_header_max() -> usize {
    crate::size::header_len([(SVC_TOOK_HEADER, "18446744073709551615")])
}

/// [`SVC_TOOK_HEADER`]'s time in a received reply's headers, when they
/// hold a valid one.
pub fn svc_took(headers: Option<&async_nats::HeaderMap>) -> Option<std::time::Duration> {
    let v = headers?.get(SVC_TOOK_HEADER)?;
    v.as_str()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_micros)
}

/// The headers carrying `took` as [`SVC_TOOK_HEADER`].
pub fn svc_took_headers(took: std::time::Duration) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    h.insert(SVC_TOOK_HEADER, us.to_string().as_str());
    h
}

/// `rm.svc.<role>.<verb>` reply envelope: exactly one of `ok` / `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcReply<T> {
    #[serde(default = "v1")]
    pub v: u32,
    pub ok: Option<T>,
    pub error: Option<SvcError>,
}

impl<T> SvcReply<T> {
    /// The reply carrying a result.
    pub fn ok(v: T) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: Some(v),
            error: None,
        }
    }

    /// The reply carrying a refusal: a machine code and a sentence.
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: None,
            error: Some(SvcError {
                code: code.into(),
                message: message.into(),
            }),
        }
    }
}

/// `rm.evt.<thing>.<what>` payload. Events only wake consumers, who then
/// read the committed state; the ids say where to look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMsg {
    #[serde(default = "v1")]
    pub v: u32,
    pub ts_ms: i64,
    pub host: Option<HostId>,
    pub job: Option<JobId>,
    /// Other object id (alert, schedule, repository, channel).
    pub id: Option<String>,
    /// A job event's repository, when the job runs against one: what lets
    /// a repository's page take only its own jobs' events (absent in
    /// events from before it existed, and in events about no job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

#[cfg(test)]
mod tests;
