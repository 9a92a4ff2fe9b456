//! The installation's private PKI: a long-lived certificate authority
//! created at first start (`<data-dir>/ca/`), short-lived bus and web
//! certificates issued from it and renewed in place, and the client side
//! that trusts only that authority.
//!
//! - [`ca`]: the authority's files, its fingerprint, issuing leaves.
//! - [`expiry`]: when an operator-provided certificate expires, and the
//!   start-up warning when that is near.
//! - [`reload`]: a rustls certificate resolver whose certificate is swapped
//!   for new handshakes, and the renewal task.
//! - [`verify`]: client configurations that trust exactly one CA (or one
//!   pinned fingerprint) and say why a server is refused.

pub mod ca;
pub mod expiry;
pub mod reload;
pub mod verify;

pub use ca::{Ca, Leaf, fingerprint_of};
pub use reload::{Reloading, Renewal};

/// The rustls this crate builds configurations with.
pub use tokio_rustls::rustls;
