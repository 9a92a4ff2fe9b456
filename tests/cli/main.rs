//! The `restic-manager` binary end to end (one test binary for the root
//! package): each module starts the real binary.

mod accounts;
mod alerts;
mod anomaly;
mod browser;
mod browser_alerts;
mod browser_fleetscale;
mod browser_rejected;
mod browser_repoadmin;
mod browser_repositories;
mod browser_sched;
mod browser_settings;
mod cluster;
mod cpbackup;
mod deploy;
mod first_start;
mod notifier;
mod serve;
mod standalone;
mod tls;
mod walkthrough;
