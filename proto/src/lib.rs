//! The bus contract every restic-manager process speaks — agents included.
//! Only what a client of the bus needs lives here; the embedded server, the
//! credential authority and the CA that issues certificates are the server
//! roles' crate, `rm-bus-server` (`bus/`).
//!
//! - [`ids`]: subject-safe identifiers (host ids, job ids, role names).
//! - [`subject`]: the one place subject strings are built.
//! - [`msg`]: versioned message types for every subject.
//! - [`reqack`]: request/ack with timeout, retries, backoff, jitter and an
//!   idempotency key — the building block of every at-least-once path.
//! - [`creds`]: the credential model a client holds: its `.creds` file, the
//!   permission claims, and each role's least-privilege permissions.
//! - [`connect`]: connecting an async-nats client with those credentials.
//! - [`pki`]: client-side trust: only the installation's CA, or one pinned
//!   fingerprint.
//! - [`seal`]: secrets sealed to one recipient's xkey for transit.
//! - `notify` (feature `notify`, off for agents): the alerts → notifier
//!   delivery contract and webhook envelope.
//! - [`size`]: message size against the server's advertised `max_payload`.
//! - [`private_file`]: owner-only key files, created once, written atomically.
//! - [`clock`]: injectable time.
//! - [`shutdown`]: stopping a process on SIGTERM / Ctrl-C.

pub mod clock;
pub mod connect;
pub mod creds;
pub mod ids;
pub mod msg;
#[cfg(feature = "notify")]
pub mod notify;
pub mod pki;
pub mod private_file;
pub mod reqack;
pub mod seal;
pub mod shutdown;
pub mod size;
pub mod subject;

pub use ids::{HostId, IdError, JobId};
