//! The `restic-manager` binary end to end (one test binary for the root
//! package): each module starts the real binary.

mod accounts;
mod alerts;
mod browser;
mod deploy;
mod first_start;
mod notifier;
mod serve;
mod standalone;
mod walkthrough;
