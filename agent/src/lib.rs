//! `restic-manager-agent`: the only part of restic-manager that runs restic
//! and sees backup data. It keeps backing up on schedule while the control
//! plane is away and never loses a result.
//!
//! - [`state`]: the state directory (identity, keys, cached config).
//! - [`enroll`]: pinned HTTPS enrollment with locally generated keys.
//! - [`session`]: the bus connection: hello, heartbeats, commands.
//! - [`exec`]: accepting and running jobs through `rm_restic`.
//! - [`journal`]: accepted and running jobs, persisted.
//! - [`outbox`]: `started` / `done` messages until acknowledged.
//! - [`schedule`]: the local cron scheduler.
//! - [`service`]: systemd unit (Linux) and Windows service install.
//! - [`status`]: what `restic-manager-agent status` prints.
//! - `winservice` (Windows only): the Service Control Manager entry point.

pub mod enroll;
pub mod exec;
pub mod journal;
pub mod layers;
pub mod outbox;
pub mod schedule;
pub mod service;
pub mod session;
pub mod state;
pub mod status;
pub mod vitals;
#[cfg(windows)]
pub mod winservice;

use std::path::PathBuf;
use std::time::Duration;

use rm_bus::clock::SharedClock;
use rm_bus::reqack::RetryPolicy;

pub use session::run;

/// This agent's version, reported in hello and heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every interval the agent uses; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Heartbeat period unless the config says otherwise.
    pub heartbeat: Duration,
    /// How often the scheduler looks for due runs.
    pub scheduler_tick: Duration,
    /// Least spacing of two progress messages of one job.
    pub progress_interval: Duration,
    /// How often buffered log lines are sent.
    pub log_flush: Duration,
    /// Sending results: per attempt and per pass; passes repeat with
    /// backoff until acknowledged.
    pub results: RetryPolicy,
    /// Saying hello.
    pub hello: RetryPolicy,
    /// Longest pause between reconnect attempts.
    pub reconnect_max: Duration,
    /// How often the agent pings its bus node (it hears little else, so
    /// this is the period of every agent's PING and the node's PONG); a
    /// connection that died silently is dropped and remade after about
    /// three of these.
    pub ping_interval: Duration,
    /// How long a stop waits for running jobs to be cancelled and recorded.
    pub shutdown_grace: Duration,
    /// How long a scheduled prune/check/forget waits before asking the
    /// control plane for its repository again (busy, or no answer).
    pub claim_retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            scheduler_tick: Duration::from_secs(5),
            progress_interval: Duration::from_millis(500),
            log_flush: Duration::from_millis(250),
            results: RetryPolicy {
                attempt_timeout: Duration::from_secs(10),
                deadline: Some(Duration::from_secs(30)),
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(60),
                jitter: 0.5,
            },
            hello: RetryPolicy {
                attempt_timeout: Duration::from_secs(10),
                deadline: Some(Duration::from_secs(60)),
                initial_backoff: Duration::from_millis(250),
                max_backoff: Duration::from_secs(30),
                jitter: 0.5,
            },
            reconnect_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(20),
            claim_retry: Duration::from_secs(60),
        }
    }
}

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    /// The restic binary (`restic` = looked up on PATH).
    pub restic_bin: PathBuf,
    /// This machine's name (restic's default snapshot host).
    pub hostname: String,
    /// Bus URLs instead of the ones enrollment gave.
    pub bus_urls: Option<Vec<String>>,
    /// Most outbox entries before new work is refused.
    pub outbox_max: usize,
    pub timings: Timings,
    pub clock: SharedClock,
    /// restic runs below this process's priorities ([`rm_restic::Restic::yielding`]):
    /// for an agent inside `serve`; a standalone agent's unit sets its priorities.
    pub restic_yields: bool,
}

impl Settings {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            restic_bin: PathBuf::from("restic"),
            hostname: vitals::hostname(),
            bus_urls: None,
            outbox_max: 10_000,
            timings: Timings::default(),
            clock: rm_bus::clock::system(),
            restic_yields: false,
        }
    }
}
