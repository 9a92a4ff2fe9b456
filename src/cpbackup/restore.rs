//! Restoring a control-plane copy onto a new machine: only into an empty
//! (or missing) data directory, only after every file matched the
//! manifest's hash and the schema is one this build can run (an older one
//! is migrated when the server starts), and never half-way: a failed
//! restore removes what it wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::manifest::{self, DB_FILE, Manifest};
use super::snapshot::{create_private_dir, restrict_file, sync_dir, sync_file};

/// What was restored.
#[derive(Debug)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub manifest: Manifest,
}

/// Verifies the copy in `from` and writes it into `data_dir`.
pub async fn restore(from: &Path, data_dir: &Path) -> Result<Restored> {
    let m = Manifest::read(from)?;
    let supported = rm_store::schema_version();
    if m.schema_version > supported {
        bail!(
            "the copy's database has schema version {}, newer than this build supports ({supported}); restore it with restic-manager {} or later",
            m.schema_version,
            m.version
        );
    }
    ensure_empty(data_dir)?;
    m.verify(from)?;
    create_private_dir(data_dir)?;
    if let Err(e) = write_files(&m, from, data_dir).await {
        clear(data_dir);
        return Err(e);
    }
    Ok(Restored {
        data_dir: data_dir.to_path_buf(),
        manifest: m,
    })
}

/// The target must be missing or an empty directory: a restore never
/// mixes with, or replaces, an installation.
fn ensure_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if let Some(first) = entries.next() {
                let first = first.map(|e| e.file_name().to_string_lossy().into_owned());
                bail!(
                    "--data-dir {} is not empty (it holds {}...): restore only into an empty or new directory; nothing was written",
                    dir.display(),
                    first.unwrap_or_default()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("--data-dir {} is a file, not a directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("reading --data-dir {}", dir.display())),
    }
}

async fn write_files(m: &Manifest, from: &Path, to: &Path) -> Result<()> {
    for e in &m.files {
        let rel = manifest::relative(&e.path)?;
        let dest = to.join(&rel);
        if let Some(p) = dest.parent() {
            create_private_dir(p)?;
        }
        std::fs::copy(from.join(&rel), &dest)
            .with_context(|| format!("writing {}", dest.display()))?;
        restrict_file(&dest)?;
        sync_file(&dest)?;
    }
    // What landed on disk is what the manifest promised.
    m.verify(to)?;
    sync_dir(to);
    rm_store::file_integrity_check(&to.join(DB_FILE))
        .await
        .context("checking the restored database")?;
    Ok(())
}

/// Removes what a failed restore wrote (the directory was empty).
fn clear(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}
