//! The web service: accounts, sessions, CSRF, the route table's
//! authorization matrix (in-process), and real HTTPS with HTTP/2 and the
//! enrollment endpoint against the real control plane on a real bus.

mod api;
mod audit_address;
mod downloads;
mod enroll;
mod events;
mod fleet;
mod harness;
mod http2;
mod matrix;
mod mutes;
mod repo_admin;
mod role;
mod schemathesis;
mod sessions;
mod settings;
mod svc;
