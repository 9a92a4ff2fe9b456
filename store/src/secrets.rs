//! Secrets at rest: a master key kept outside the database encrypts
//! repository passwords, backend environments and channel secrets with
//! XChaCha20-Poly1305. The row's identity is the associated data, so a
//! ciphertext copied into another row does not decrypt.
//!
//! Shared by every role that stores secrets (the control plane for
//! repositories, the alerts role for notification channels); they find the
//! same key in the same data directory.
//!
//! The key comes from `RM_MASTER_KEY` (base64 of 32 bytes) or from
//! `<data dir>/master.key` (created 0600 at first start).

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use data_encoding::BASE64;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Env variable that overrides the key file.
pub const MASTER_KEY_ENV: &str = "RM_MASTER_KEY";
/// The key file's name in the data directory.
pub const KEY_FILE: &str = "master.key";
const NONCE_LEN: usize = 24;

/// The master key.
#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            bail!("master key must be 32 bytes, got {}", bytes.len());
        }
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).context("master key")?;
        Ok(Self { cipher })
    }

    /// `RM_MASTER_KEY` if set, else `<dir>/master.key`, created at first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        Self::load_with(dir, std::env::var(MASTER_KEY_ENV).ok().as_deref())
    }

    /// [`Self::load_or_create`] with the environment's value passed in.
    fn load_with(dir: &Path, env: Option<&str>) -> Result<Self> {
        if let Some(text) = env {
            let bytes = BASE64
                .decode(text.trim().as_bytes())
                .with_context(|| format!("{MASTER_KEY_ENV} is not base64"))?;
            return Self::from_bytes(&bytes);
        }
        let path = dir.join(KEY_FILE);
        std::fs::create_dir_all(dir)?;
        // Created exactly once even when the control plane and the alerts
        // role start together: both keep the key that is on disk.
        let text = rm_bus::private_file::read_or_create_private(&path, || {
            let key = XChaCha20Poly1305::generate_key(&mut OsRng);
            tracing::info!(path = %path.display(), "creating master key; back it up: without it stored secrets cannot be read");
            Ok(format!("{}\n", BASE64.encode(&key)).into_bytes())
        })?;
        let bytes = BASE64
            .decode(text.trim().as_bytes())
            .with_context(|| format!("{} is not base64", path.display()))?;
        Self::from_bytes(&bytes)
    }

    /// The key as written in its file (base64): `RM_MASTER_KEY` if set,
    /// else `<dir>/master.key`; `None` when neither exists (never creates
    /// one: a process without the key cannot hand it out).
    pub fn text(dir: &Path) -> Result<Option<String>> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            Self::from_bytes(
                &BASE64
                    .decode(text.trim().as_bytes())
                    .with_context(|| format!("{MASTER_KEY_ENV} is not base64"))?,
            )?;
            return Ok(Some(text.trim().to_owned()));
        }
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Encrypts `plain` bound to `aad` (e.g. `repo:<id>`): nonce ‖ ciphertext.
    pub fn encrypt(&self, plain: &[u8], aad: &str) -> Result<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn decrypt(&self, blob: &[u8], aad: &str) -> Result<Vec<u8>> {
        if blob.len() < NONCE_LEN {
            bail!("stored secret is truncated");
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map_err(|_| anyhow::anyhow!("stored secret does not decrypt (wrong master key, or the row was tampered with)"))
    }

    pub fn encrypt_json<T: Serialize>(&self, value: &T, aad: &str) -> Result<Vec<u8>> {
        self.encrypt(&serde_json::to_vec(value)?, aad)
    }

    pub fn decrypt_json<T: DeserializeOwned>(&self, blob: &[u8], aad: &str) -> Result<T> {
        Ok(serde_json::from_slice(&self.decrypt(blob, aad)?)?)
    }
}

/// Associated data for a repository's own secrets (binds each ciphertext
/// to its row; the control plane seals with it, the recovery kit opens).
pub fn repo_aad(repo_id: &str) -> String {
    format!("repo:{repo_id}")
}

/// Associated data for a host's credential for a repository.
pub fn cred_aad(host_id: &str, repo_id: &str) -> String {
    format!("cred:{host_id}:{repo_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_bound_to_its_row() {
        let k = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let blob = k.encrypt(b"hunter2", "repo:r1").unwrap();
        assert!(!blob.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.decrypt(&blob, "repo:r1").unwrap(), b"hunter2");
        assert!(k.decrypt(&blob, "repo:r2").is_err(), "moved to another row");
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.decrypt(&blob, "repo:r1").is_err(), "wrong key");
        assert!(k.decrypt(&blob[..10], "repo:r1").is_err());
    }

    #[test]
    fn the_environment_key_wins_and_creates_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = BASE64.encode(&[9u8; 32]);
        let a = MasterKey::load_with(dir.path(), Some(&env)).unwrap();
        assert!(!dir.path().join(KEY_FILE).exists());
        let blob = a.encrypt(b"x", "t").unwrap();
        let same = MasterKey::from_bytes(&[9u8; 32]).unwrap();
        assert_eq!(same.decrypt(&blob, "t").unwrap(), b"x");
        let err = MasterKey::load_with(dir.path(), Some("not base64!")).unwrap_err();
        assert!(err.to_string().contains(MASTER_KEY_ENV), "{err}");
        let short = BASE64.encode(&[1u8; 16]);
        assert!(MasterKey::load_with(dir.path(), Some(&short)).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(dir.path()).unwrap();
        let b = MasterKey::load_or_create(dir.path()).unwrap();
        let blob = a.encrypt(b"x", "t").unwrap();
        assert_eq!(b.decrypt(&blob, "t").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(format!("{a:?}"), "MasterKey(<redacted>)");
    }
}
