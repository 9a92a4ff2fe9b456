//! The server side of the credential model (NATS decentralized auth:
//! operator → account → user JWTs, ed25519 nkeys). The client side (the
//! `.creds` file, claims, role permissions) is `rm_bus::creds`, re-exported
//! here so server code finds both in one place.
//!
//! - [`jwt`]: encode, sign, decode and verify `ed25519-nkey` JWTs.
//! - [`authority`]: the control plane's keys, persisted in its data dir;
//!   mints user JWTs and the account JWT (with revocations).
//! - [`push`]: pushing the account JWT (revocations) to the bus.
//! - [`server_config`]: the nats-server configuration that trusts them.

pub mod authority;
pub mod jwt;
pub mod push;
pub mod server_config;

pub use authority::{Authority, UserSpec};
pub use rm_bus::creds::{
    Permission, Permissions, ResponsePermission, Role, UserCreds, claims, roles, user,
};
