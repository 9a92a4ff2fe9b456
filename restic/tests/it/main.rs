//! Integration tests for the restic runner, against real restic binaries:
//! Debian's 0.14.0 (`RM_RESTIC`, default `restic` on PATH) and 0.18.0
//! (`RM_RESTIC_018`, fetched by scripts/test), plus a few fake "restic"
//! scripts for process-tree and environment checks.

mod append_only;
mod errors;
mod fake;
mod jobs;
mod kill;
mod preview;
mod queries;
mod support;
