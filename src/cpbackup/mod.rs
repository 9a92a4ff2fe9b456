//! Protecting the control plane itself: a consistent online copy of the
//! installation (the SQLite database and every piece of key material
//! `serve` needs to come back as the same installation), its restore onto
//! an empty data directory on another machine, the recovery kit, and the
//! daily backup of that copy through the local agent.
//!
//! - [`manifest`]: what a copy holds (version, schema version, SHA-256
//!   per file) and the checks on paths and hashes;
//! - [`snapshot`]: writes a copy into a staging directory while roles run;
//! - [`restore`]: verifies a copy and writes it into an empty data dir;
//! - [`schedule`]: `serve`'s daily backup of the copy through the local
//!   agent, and the warning until a recovery kit was exported;
//! - [`cmd`]: the commands (`controlplane-backup`, `controlplane-restore`,
//!   `recovery-kit`).

pub mod cmd;
pub mod manifest;
pub mod restore;
pub mod schedule;
pub mod snapshot;
