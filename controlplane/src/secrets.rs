//! Secrets at rest for the control plane: the shared master key
//! ([`rm_store::secrets`]) and the associated data that binds each
//! ciphertext to its row.

pub use rm_store::secrets::{MASTER_KEY_ENV, MasterKey};

/// Associated data for a repository's own secrets.
pub fn repo_aad(repo_id: &str) -> String {
    format!("repo:{repo_id}")
}

/// Associated data for a host's credential for a repository.
pub fn cred_aad(host_id: &str, repo_id: &str) -> String {
    format!("cred:{host_id}:{repo_id}")
}
