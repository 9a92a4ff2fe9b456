//! The agent's state directory: its identity (host id, bus URLs, the
//! control plane's public xkey), its keys and JWT (0600), the cached config,
//! and the sub-directories the journal, outbox and restic use.
//!
//! ```text
//! <state>/identity.json   host id, bus URLs, control plane xkey, server URL
//! <state>/nkey.seed       user nkey seed (0600, never leaves the endpoint)
//! <state>/xkey.seed       xkey seed for sealed secrets (0600)
//! <state>/agent.jwt       user JWT minted at enrollment (0600)
//! <state>/bus-ca.pem      the CA tls:// bus servers must be issued by
//!                         (from enrollment; absent for agents enrolled
//!                         before the installation had a CA)
//! <state>/config.json     last config applied (schedules run from it offline)
//! <state>/schedules.json  last slot fired per schedule
//! <state>/lock-check.json repositories whose next job removes stale locks
//! <state>/jobs/           accepted and running jobs (see `journal`)
//! <state>/outbox/         started/done messages not yet acknowledged
//! <state>/scratch/        0700: password files for one restic run
//! <state>/cache/          restic's cache
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nkeys::{KeyPair, XKey};
use rm_bus::HostId;
use rm_bus::creds::UserCreds;
use serde::{Deserialize, Serialize};

/// The bus CA file in the state directory.
pub const BUS_CA: &str = "bus-ca.pem";

/// The default state directory of this platform.
pub fn default_dir() -> PathBuf {
    #[cfg(windows)]
    {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("restic-manager-agent")
    }
    #[cfg(not(windows))]
    {
        PathBuf::from("/var/lib/restic-manager-agent")
    }
}

/// Who this agent is, as enrollment told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub host_id: HostId,
    pub bus_urls: Vec<String>,
    pub controlplane_xkey: String,
    pub server_url: String,
    pub enrolled_at_ms: i64,
}

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed, mode 0700) a state directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [
            root.clone(),
            root.join("jobs"),
            root.join("outbox"),
            root.join("scratch"),
            root.join("cache"),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            restrict_dir(&dir)?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.root.join("outbox")
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// Removes what a crash left in `scratch/` (password files of restic
    /// runs that never finished). Called once at start, before any run.
    pub fn clear_scratch(&self) -> Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(self.scratch_dir())? {
            let path = e?.path();
            if path.is_file() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn is_enrolled(&self) -> bool {
        self.path("identity.json").exists()
    }

    /// The identity written at enrollment.
    pub fn identity(&self) -> Result<Identity> {
        let path = self.path("identity.json");
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "{} is missing: enroll this agent first (restic-manager-agent enroll)",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// The user credentials (JWT + nkey seed) for the bus.
    pub fn creds(&self) -> Result<UserCreds> {
        let jwt = read_trimmed(&self.path("agent.jwt"))?;
        let seed = read_trimmed(&self.path("nkey.seed"))?;
        KeyPair::from_seed(&seed).context("nkey.seed holds no valid user seed")?;
        Ok(UserCreds::new(jwt, seed))
    }

    /// The xkey that opens secrets sealed to this agent.
    pub fn xkey(&self) -> Result<XKey> {
        let seed = read_trimmed(&self.path("xkey.seed"))?;
        XKey::from_seed(&seed).map_err(|e| anyhow::anyhow!("xkey.seed holds no xkey seed: {e}"))
    }

    /// Fresh key pairs for enrollment, written (0600) before anything is
    /// sent, so only their public halves ever leave the endpoint.
    pub fn new_keys(&self) -> Result<(KeyPair, XKey)> {
        let nkey = KeyPair::new_user();
        let xkey = XKey::new();
        let nseed = nkey.seed().context("new nkey")?;
        let xseed = xkey.seed().map_err(|e| anyhow::anyhow!("new xkey: {e}"))?;
        write_durable(&self.path("nkey.seed.new"), nseed.as_bytes(), true)?;
        write_durable(&self.path("xkey.seed.new"), xseed.as_bytes(), true)?;
        Ok((nkey, xkey))
    }

    /// Makes the keys from [`Self::new_keys`] current and records the
    /// enrollment reply. Re-enrolling replaces the previous identity.
    pub fn commit_enrollment(&self, identity: &Identity, jwt: &str) -> Result<()> {
        write_durable(&self.path("agent.jwt"), jwt.as_bytes(), true)?;
        for k in ["nkey.seed", "xkey.seed"] {
            let from = self.path(&format!("{k}.new"));
            std::fs::rename(&from, self.path(k))
                .with_context(|| format!("installing {}", from.display()))?;
        }
        let json = serde_json::to_vec_pretty(identity)?;
        write_durable(&self.path("identity.json"), &json, true)?;
        // A new identity starts with no config from the old one.
        let _ = std::fs::remove_file(self.path("config.json"));
        Ok(())
    }

    /// Reads a JSON file of this directory; `None` when it does not exist.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("{} is corrupt", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes a JSON file of this directory durably (0600: it may hold
    /// sealed secrets).
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let json = serde_json::to_vec(value)?;
        write_durable(&self.path(name), &json, true)
    }
}

fn read_trimmed(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().to_owned())
}

/// Writes `bytes` to `path` so that after a crash the file holds either the
/// old or the new content, never a mix: temp file, fsync, rename, fsync of
/// the directory. `private` makes it 0600.
pub fn write_durable(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or unlink in `dir` durable (a no-op where directories
/// cannot be opened, such as Windows).
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn restrict_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_keys_are_private_and_replace_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path().join("s")).unwrap();
        assert!(!st.is_enrolled());
        assert!(st.identity().unwrap_err().to_string().contains("enroll"));
        let (nkey, xkey) = st.new_keys().unwrap();
        let id = Identity {
            host_id: HostId::parse("h1").unwrap(),
            bus_urls: vec!["nats://127.0.0.1:4222".into()],
            controlplane_xkey: XKey::new().public_key(),
            server_url: "https://x".into(),
            enrolled_at_ms: 5,
        };
        st.commit_enrollment(&id, "jwt-1").unwrap();
        assert_eq!(st.identity().unwrap(), id);
        assert_eq!(st.creds().unwrap().jwt, "jwt-1");
        assert_eq!(st.creds().unwrap().seed(), nkey.seed().unwrap());
        assert_eq!(st.xkey().unwrap().public_key(), xkey.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["nkey.seed", "xkey.seed", "agent.jwt", "identity.json"] {
                let mode = std::fs::metadata(st.path(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
            let mode = std::fs::metadata(st.root()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let (nkey2, _) = st.new_keys().unwrap();
        st.commit_enrollment(&id, "jwt-2").unwrap();
        assert_eq!(st.creds().unwrap().seed(), nkey2.seed().unwrap());
    }

    #[test]
    fn scratch_is_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path()).unwrap();
        std::fs::write(st.scratch_dir().join("pw-1"), b"secret").unwrap();
        std::fs::write(st.scratch_dir().join("pw-2"), b"secret").unwrap();
        assert_eq!(st.clear_scratch().unwrap(), 2);
        assert_eq!(std::fs::read_dir(st.scratch_dir()).unwrap().count(), 0);
        assert_eq!(st.clear_scratch().unwrap(), 0);
    }

    #[test]
    fn json_round_trip_and_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path()).unwrap();
        assert_eq!(st.read_json::<Vec<u32>>("x.json").unwrap(), None);
        st.write_json("x.json", &vec![1u32, 2]).unwrap();
        assert_eq!(
            st.read_json::<Vec<u32>>("x.json").unwrap(),
            Some(vec![1, 2])
        );
        std::fs::write(st.path("x.json"), b"{not json").unwrap();
        assert!(st.read_json::<Vec<u32>>("x.json").is_err());
    }
}
