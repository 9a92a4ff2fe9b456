//! Secrets in transit: sealed with nkeys xkeys (curve25519 nacl box) from
//! a sender to one recipient, so no bus — embedded or someone else's
//! cluster — carries repository passwords or channel secrets in the clear.
//!
//! The sealed bytes travel base64-encoded as [`Sealed`]. The cleartext types
//! redact themselves in `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use data_encoding::BASE64;
use nkeys::XKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::msg::Sealed;

/// Sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("invalid xkey: {0}")]
    Key(String),
    #[error("sealed payload is not base64")]
    Base64,
    #[error(
        "sealed payload does not open with this key pair (wrong recipient or sender, or tampered)"
    )]
    Open,
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error("opened payload is not the expected JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// Seals `value` (as JSON) from `sender` to the recipient's public xkey.
pub fn seal<T: Serialize>(
    value: &T,
    sender: &XKey,
    recipient_pub: &str,
) -> Result<Sealed, SealError> {
    let recipient =
        XKey::from_public_key(recipient_pub).map_err(|e| SealError::Key(e.to_string()))?;
    let clear = serde_json::to_vec(value).map_err(SealError::Json)?;
    let boxed = sender
        .seal(&clear, &recipient)
        .map_err(|e| SealError::Seal(e.to_string()))?;
    Ok(Sealed(BASE64.encode(&boxed)))
}

/// Opens a [`Sealed`] value sent by `sender_pub` to `recipient`.
pub fn open<T: DeserializeOwned>(
    sealed: &Sealed,
    recipient: &XKey,
    sender_pub: &str,
) -> Result<T, SealError> {
    let sender = XKey::from_public_key(sender_pub).map_err(|e| SealError::Key(e.to_string()))?;
    let boxed = BASE64
        .decode(sealed.0.as_bytes())
        .map_err(|_| SealError::Base64)?;
    let clear = recipient
        .open(&boxed, &sender)
        .map_err(|_| SealError::Open)?;
    serde_json::from_slice(&clear).map_err(SealError::Json)
}

/// Loads an xkey seed file, creating it (0600) with a fresh key if missing.
pub fn load_or_create_xkey(path: &std::path::Path) -> anyhow::Result<XKey> {
    // Created exactly once even when roles start together: every caller
    // ends up with the seed that is on disk.
    let seed = crate::private_file::read_or_create_private(path, || {
        let seed = XKey::new()
            .seed()
            .map_err(|e| anyhow::anyhow!("new xkey: {e}"))?;
        Ok(format!("{seed}\n").into_bytes())
    })?;
    let key = XKey::from_seed(seed.trim())
        .map_err(|e| anyhow::anyhow!("{} holds no xkey seed: {e}", path.display()))?;
    // A public key parses as an XKey too, but cannot open anything.
    key.seed()
        .map_err(|_| anyhow::anyhow!("{} holds a public key, not a seed", path.display()))?;
    Ok(key)
}

/// What an agent needs to open a repository: the password and the backend
/// environment (`AWS_ACCESS_KEY_ID`, `RESTIC_REST_USERNAME`, ...).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSecrets {
    /// `RESTIC_REPOSITORY` value (may embed credentials, so it is secret).
    pub repository: String,
    pub password: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Repository secrets as sealed to an agent: the secrets, and — when they
/// are good for one job only (a restore onto another host) — that job's
/// binding. Sealed together, so a captured sealed secret cannot be reused
/// in a forged command: the agent compares the binding with the job it is
/// asked to run. Plain [`RepoSecrets`] JSON opens as this with no binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    #[serde(flatten)]
    pub secrets: RepoSecrets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<JobBinding>,
}

/// The one job a sealed secret is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBinding {
    pub job_id: String,
    /// [`params_digest`] of the job's parameters.
    pub params_sha256: String,
    /// Only read-only kinds (restore) may use it.
    pub read_only: bool,
}

/// SHA-256 (hex) of `params` as JSON: what a [`JobBinding`] pins.
pub fn params_digest(params: &crate::msg::JobParams) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(params).unwrap_or_default();
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&json))
}

impl JobBinding {
    /// `Err` with the reason unless this binding is for `job_id` with
    /// exactly `params`.
    pub fn check(&self, job_id: &str, params: &crate::msg::JobParams) -> Result<(), String> {
        if self.job_id != job_id {
            return Err(format!(
                "the repository secret was issued for job {}, not {job_id}",
                self.job_id
            ));
        }
        if self.params_sha256 != params_digest(params) {
            return Err(
                "the job's parameters differ from those the repository secret was issued for"
                    .into(),
            );
        }
        if self.read_only && params.kind() != crate::msg::JobKind::Restore {
            return Err("the repository secret is good for reading (a restore) only".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RepoSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoSecrets")
            .field("repository", &"<redacted>")
            .field("password", &"<redacted>")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> RepoSecrets {
        RepoSecrets {
            repository: "rest:http://u:pw@127.0.0.1:8000/h1".into(),
            password: "hunter2-correct-horse".into(),
            env: BTreeMap::from([("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t".into())]),
        }
    }

    #[test]
    fn round_trip_between_two_parties() {
        let cp = XKey::new();
        let agent = XKey::new();
        let sealed = seal(&secrets(), &cp, &agent.public_key()).unwrap();
        assert!(!sealed.0.contains("hunter2"));
        let opened: RepoSecrets = open(&sealed, &agent, &cp.public_key()).unwrap();
        assert_eq!(opened, secrets());
    }

    #[test]
    fn only_the_recipient_opens_it() {
        let cp = XKey::new();
        let agent = XKey::new();
        let other = XKey::new();
        let sealed = seal(&secrets(), &cp, &agent.public_key()).unwrap();
        assert!(matches!(
            open::<RepoSecrets>(&sealed, &other, &cp.public_key()),
            Err(SealError::Open)
        ));
        // a forger who is not the claimed sender cannot produce a valid box
        let forged = seal(&secrets(), &other, &agent.public_key()).unwrap();
        assert!(matches!(
            open::<RepoSecrets>(&forged, &agent, &cp.public_key()),
            Err(SealError::Open)
        ));
        // tampering
        let mut bytes = BASE64.decode(sealed.0.as_bytes()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = Sealed(BASE64.encode(&bytes));
        assert!(matches!(
            open::<RepoSecrets>(&tampered, &agent, &cp.public_key()),
            Err(SealError::Open)
        ));
        assert!(matches!(
            open::<RepoSecrets>(&Sealed("!!".into()), &agent, &cp.public_key()),
            Err(SealError::Base64)
        ));
    }

    #[test]
    fn debug_redacts() {
        let dbg = format!("{:?}", secrets());
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("s3cr3t") && !dbg.contains("u:pw"),
            "{dbg}"
        );
        assert!(dbg.contains("AWS_SECRET_ACCESS_KEY"));
    }
}

/// A repository URL with any `user:password@` removed, for display and logs.
pub fn redact_url(url: &str) -> String {
    // rest:http://user:pass@host:port/path, s3:https://..., sftp:user@host:/path
    let Some(at) = url.find('@') else {
        return url.to_owned();
    };
    let scheme_end = url.find("://").map(|i| i + 3);
    match scheme_end {
        Some(start) if start <= at => format!("{}***@{}", &url[..start], &url[at + 1..]),
        _ => {
            // sftp:user@host:/path — keep the backend prefix
            let start = url.find(':').map_or(0, |i| i + 1).min(at);
            format!("{}***@{}", &url[..start], &url[at + 1..])
        }
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn strips_credentials() {
        assert_eq!(
            redact_url("rest:http://u:pw@127.0.0.1:8000/h1"),
            "rest:http://***@127.0.0.1:8000/h1"
        );
        assert_eq!(
            redact_url("sftp:backup@nas:/srv/restic"),
            "sftp:***@nas:/srv/restic"
        );
        assert_eq!(redact_url("/srv/restic-repo"), "/srv/restic-repo");
        assert_eq!(
            redact_url("s3:https://s3.amazonaws.com/bucket"),
            "s3:https://s3.amazonaws.com/bucket"
        );
    }
}
