//! The bus contract every restic-manager process speaks.
//!
//! - [`ids`]: subject-safe identifiers (host ids, job ids, role names).
//! - [`subject`]: the one place subject strings are built.
//! - [`msg`]: versioned message types for every subject.
//! - [`reqack`]: request/ack with timeout, retries, backoff, jitter and an
//!   idempotency key — the building block of every at-least-once path.
//! - [`creds`]: the operator → account → user credential model (NATS JWTs).
//! - [`connect`]: connecting an async-nats client with those credentials.
//! - [`seal`]: secrets sealed to one recipient's xkey for transit.
//! - [`notify`]: the alerts → notifier delivery contract and webhook envelope.
//! - [`size`]: message size against the server's advertised `max_payload`.
//! - [`clock`]: injectable time.
//! - [`shutdown`]: stopping a process on SIGTERM / Ctrl-C.
//! - [`server`]: the embedded core-NATS server (the default bus).
//! - [`pki`]: the installation's private CA, issued certificates and their
//!   renewal, and client-side trust.

pub mod clock;
pub mod connect;
pub mod creds;
pub mod ids;
pub mod msg;
pub mod notify;
pub mod pki;
pub mod reqack;
pub mod seal;
pub mod server;
pub mod shutdown;
pub mod size;
pub mod subject;

pub use ids::{HostId, IdError, JobId};
