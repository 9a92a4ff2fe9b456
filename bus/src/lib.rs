//! The bus as the server roles run it; agents never link this crate. The
//! contract every process speaks (subjects, messages, client credentials,
//! connecting) is `rm-bus` (`proto/`).
//!
//! - [`server`]: the embedded core-NATS server (the default bus).
//! - [`creds`]: the credential authority that mints operator, account and
//!   user JWTs, pushing the account JWT (revocations) to the bus, and the
//!   nats-server configuration that trusts them.
//! - [`pki`]: the installation's private CA, issued certificates and their
//!   renewal, and operator-certificate expiry warnings.

pub mod creds;
pub mod pki;
pub mod server;
