//! View models: what a page shows and what its JSON twin returns, loaded
//! once from the store. Templates render these; the API serialises them.
//! None of them carries a secret (sealed credentials stay in the store).

pub mod alert;
pub mod fleet;
pub mod host;
pub mod job;
pub mod rejected;
pub mod repo;
