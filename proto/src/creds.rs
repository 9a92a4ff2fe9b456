//! The client side of the one credential model every bus connection uses:
//! NATS decentralized auth (operator → account → user JWTs, ed25519 nkeys).
//! Minting and verifying JWTs is the authority's, in `rm-bus-server`.
//!
//! - [`user`]: a user's JWT and seed, and the `.creds` file holding them.
//! - [`claims`]: the claim types nats-server reads (operator, account, user).
//! - [`roles`]: least-privilege permissions for every role and each agent.

pub mod claims;
pub mod roles;
pub mod user;

pub use claims::{Permission, Permissions, ResponsePermission};
pub use roles::Role;
pub use user::UserCreds;
