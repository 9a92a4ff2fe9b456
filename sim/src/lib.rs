//! `restic-manager-sim`: many simulated agents in one process, for the
//! capacity benchmark (`bench/capacity`) and a fast protocol test.
//!
//! Every simulated agent is what a real one is on the wire: its own NATS
//! connection, its own nkey and enrolled JWT with the per-host
//! permissions, hello on connect, heartbeats with vitals, dispatched jobs
//! accepted and answered with progress, log lines and results through the
//! agent crate's own durable [`rm_agent::outbox::Outbox`] and its ack path.
//! Only restic is missing: a job "runs" for a configured time.
//!
//! - [`ident`]: enrolled identities, kept in a JSON-lines file.
//! - [`ops`]: the operator side: service calls, enrollment through the
//!   control plane's verbs, host adds.
//! - [`bulk`]: bench-only enrollment straight into a stopped control
//!   plane's database, with the installation's authority.
//! - [`agent`]: one simulated agent.
//! - [`fleet`]: ramp-up, counters, kills and the result burst.
//! - [`observe`]: heartbeat lag and offline events seen on the bus.

pub mod agent;
pub mod bulk;
pub mod fleet;
pub mod ident;
pub mod observe;
pub mod ops;

/// Milliseconds since the Unix epoch (the clock heartbeats carry).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Percentiles of a sample (nearest rank); `None` when empty.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
