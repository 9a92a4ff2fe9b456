//! Control-plane integration tests: the real control plane on a real bus
//! (the one `RM_TEST_BUS` names), driven by the web role's service requests
//! and by simulated agents that are real NATS clients speaking the real
//! protocol types.

mod bench;
mod credentials;
mod deadlines;
mod enrollment;
mod exclusivity;
mod hardening;
mod ingest;
mod jobs;
mod lifecycle;
mod liveness;
mod refresh;
mod repo_admin;
mod repos;
mod support;
mod writer;
