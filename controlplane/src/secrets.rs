//! Secrets at rest for the control plane: the shared master key and the
//! associated data that binds each ciphertext to its row, both in
//! [`rm_store::secrets`] (the recovery kit, which the web role makes too,
//! opens them there).

pub use rm_store::secrets::{MASTER_KEY_ENV, MasterKey, cred_aad, repo_aad};
