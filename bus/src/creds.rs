//! The one credential model every bus connection uses: NATS decentralized
//! auth (operator → account → user JWTs, ed25519 nkeys).
//!
//! - [`jwt`]: encode, sign, decode and verify `ed25519-nkey` JWTs.
//! - [`claims`]: the claim types nats-server reads (operator, account, user).
//! - [`authority`]: the control plane's keys, persisted in its data dir;
//!   mints user JWTs and the account JWT (with revocations).
//! - [`roles`]: least-privilege permissions for every role and each agent.
//! - [`push`]: pushing the account JWT (revocations) to the bus.
//! - [`server_config`]: the nats-server configuration that trusts them.

pub mod authority;
pub mod claims;
pub mod jwt;
pub mod push;
pub mod roles;
pub mod server_config;

pub use authority::{Authority, UserCreds};
pub use claims::{Permission, Permissions, ResponsePermission};
pub use roles::Role;
