//! The manifest of a control-plane copy (`manifest.json`): the format, the
//! version that wrote it, the database's schema version, when it was made,
//! and the size and SHA-256 of every file, so a restore can prove it holds
//! exactly what was written.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a copy.
pub const FILE: &str = "manifest.json";
/// The database's name inside a copy (and in a data directory).
pub const DB_FILE: &str = "restic-manager.db";
/// What `format` says.
pub const FORMAT: &str = "restic-manager-controlplane-backup";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The restic-manager version that wrote the copy.
    pub version: String,
    /// The database's schema version (its last applied migration).
    pub schema_version: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_at_ms: i64,
    /// Every file of the copy but the manifest, sorted by path.
    pub files: Vec<Entry>,
}

/// One file of a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl Manifest {
    /// Reads and checks the format of `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{} is not a control-plane backup: reading {FILE}",
                dir.display()
            )
        })?;
        let m: Self = serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not a control-plane backup manifest", path.display())
        })?;
        if m.format != FORMAT {
            bail!(
                "{}: format {:?} is not {FORMAT:?}",
                path.display(),
                m.format
            );
        }
        if m.format_version > FORMAT_VERSION {
            bail!(
                "{}: format version {} is newer than this build reads ({FORMAT_VERSION}); install restic-manager {} or later",
                path.display(),
                m.format_version,
                m.version
            );
        }
        if !m.files.iter().any(|e| e.path == DB_FILE) {
            bail!("{}: the copy lists no {DB_FILE}", path.display());
        }
        for e in &m.files {
            relative(&e.path)?;
        }
        Ok(m)
    }

    /// Checks every listed file of the copy in `dir` against its size and
    /// hash; the error names every file that differs or is missing.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        let mut bad = Vec::new();
        for e in &self.files {
            let path = dir.join(relative(&e.path)?);
            match hash_file(&path) {
                Ok((bytes, sha)) if bytes == e.bytes && sha == e.sha256 => {}
                Ok((bytes, _)) => bad.push(format!(
                    "{} (SHA-256 or size differs: {bytes} bytes, manifest says {})",
                    e.path, e.bytes
                )),
                Err(err) => bad.push(format!("{} ({err:#})", e.path)),
            }
        }
        if !bad.is_empty() {
            bail!(
                "the copy in {} does not match its manifest: {}",
                dir.display(),
                bad.join("; ")
            );
        }
        Ok(())
    }
}

/// Size and SHA-256 (hex) of a file, read in chunks.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, data_encoding::HEXLOWER.encode(&hasher.finalize())))
}

/// A manifest path as a relative path with only normal components: a copy
/// never writes outside the directory it is restored into.
pub fn relative(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("manifest path {path:?} is not a plain relative path");
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "bus/../../x", "./x"] {
            assert!(relative(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            relative("bus/operator.nk").unwrap(),
            PathBuf::from("bus/operator.nk")
        );
    }
}
