//! A consistent copy of a running installation in a staging directory.
//!
//! The database is copied with SQLite's `VACUUM INTO` (one read
//! transaction: roles keep writing, the copy is one committed state; the
//! live WAL file is never copied). Beside it goes every other file of the
//! data directory — the master key, the credential authority's seeds and
//! account state (`bus/`), the bus resolver's account JWTs, the web
//! certificate and key (`web/`), the roles' xkeys, the local agent's
//! identity and keys (`agent/*`, not its job journal, outbox or cache) —
//! except the database's own files, the demo (`demo/`: sample data and a
//! demo repository, not the control plane) and temporary files. New key
//! files a later version adds are therefore copied without a change here.
//!
//! The copy is written next to the staging directory and swapped into
//! place at the end, so the staging directory always holds one complete
//! copy (or none). Files are 0600, directories 0700.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::manifest::{self, DB_FILE, Entry, FORMAT, FORMAT_VERSION, Manifest};

/// What to copy and where.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// The database (default `<data_dir>/restic-manager.db`).
    pub db: Option<PathBuf>,
    /// The staging directory: replaced by the new copy.
    pub out: PathBuf,
}

/// What a copy holds.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    pub manifest: Manifest,
}

impl Summary {
    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|e| e.bytes).sum()
    }
}

/// The default staging directory of a data directory.
pub fn default_out(data_dir: &Path) -> PathBuf {
    data_dir.join("controlplane-backup")
}

/// Writes a copy of the installation into `opts.out`.
pub async fn snapshot(opts: &Options) -> Result<Summary> {
    let data_dir = std::fs::canonicalize(&opts.data_dir)
        .with_context(|| format!("data directory {}", opts.data_dir.display()))?;
    let db = opts.db.clone().unwrap_or_else(|| data_dir.join(DB_FILE));
    if !db.is_file() {
        bail!(
            "no database at {} (is {} the installation's data directory?)",
            db.display(),
            data_dir.display()
        );
    }
    let out = absolute(&opts.out)?;
    let parent = out
        .parent()
        .with_context(|| format!("{} has no parent directory", out.display()))?
        .to_path_buf();
    let name = out
        .file_name()
        .with_context(|| format!("{} has no file name", out.display()))?
        .to_string_lossy()
        .into_owned();
    create_private_dir(&parent)?;
    let partial = parent.join(format!(".{name}.partial"));
    let old = parent.join(format!(".{name}.old"));
    remove_if_exists(&partial)?;
    create_private_dir(&partial)?;
    let result = write_copy(&data_dir, &db, &partial, &[&out, &partial, &old]).await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    // Swap the complete copy into place.
    if out.exists() {
        let is_copy = out.join(manifest::FILE).is_file()
            || std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_none());
        if !is_copy {
            let _ = std::fs::remove_dir_all(&partial);
            bail!(
                "{} exists and is not a control-plane backup; refusing to replace it",
                out.display()
            );
        }
        remove_if_exists(&old)?;
        std::fs::rename(&out, &old)
            .with_context(|| format!("moving the previous copy {} aside", out.display()))?;
    }
    std::fs::rename(&partial, &out)
        .with_context(|| format!("moving the copy to {}", out.display()))?;
    remove_if_exists(&old)?;
    sync_dir(&parent);
    Ok(Summary { out, manifest })
}

async fn write_copy(data_dir: &Path, db: &Path, dest: &Path, skip: &[&Path]) -> Result<Manifest> {
    let now = jiff::Timestamp::now();
    let store = rm_store::Store::open(db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let copied = store.vacuum_into(&dest.join(DB_FILE)).await;
    store.close().await;
    copied.with_context(|| format!("copying {} (VACUUM INTO)", db.display()))?;
    restrict_file(&dest.join(DB_FILE))?;
    let schema_version = rm_store::file_schema_version(&dest.join(DB_FILE))
        .await
        .context("reading the copy's schema version")?;

    let mut files = Vec::new();
    collect(data_dir, data_dir, db, skip, &mut files)?;
    for rel in &files {
        let to = dest.join(rel);
        if let Some(p) = to.parent() {
            create_private_dir(p)?;
        }
        match std::fs::copy(data_dir.join(rel), &to) {
            Ok(_) => restrict_file(&to)?,
            // a temporary file that went away meanwhile
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("copying {}", rel.display())),
        }
    }
    // A master key given in the environment is part of the installation too.
    let key_file = dest.join(rm_store::secrets::KEY_FILE);
    if !key_file.exists()
        && let Ok(text) = std::env::var(rm_store::secrets::MASTER_KEY_ENV)
    {
        rm_bus_server::creds::authority::write_private(
            &key_file,
            format!("{}\n", text.trim()).as_bytes(),
        )?;
    }
    if !key_file.exists() {
        bail!(
            "no master key in {} and {} is not set: a copy without it cannot decrypt any secret",
            data_dir.display(),
            rm_store::secrets::MASTER_KEY_ENV
        );
    }

    let mut entries = Vec::new();
    let mut all = Vec::new();
    collect(dest, dest, Path::new(""), &[], &mut all)?;
    for rel in all {
        let path = dest.join(&rel);
        let (bytes, sha256) = manifest::hash_file(&path)?;
        sync_file(&path)?;
        entries.push(Entry {
            path: rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            bytes,
            sha256,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let m = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
        schema_version,
        created_at: now.to_string(),
        created_at_ms: now.as_millisecond(),
        files: entries,
    };
    let json = serde_json::to_vec_pretty(&m)?;
    rm_bus_server::creds::authority::write_private(&dest.join(manifest::FILE), &json)?;
    Ok(m)
}

/// Relative paths of the regular files below `dir` that belong in a copy.
fn collect(
    root: &Path,
    dir: &Path,
    db: &Path,
    skip: &[&Path],
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        if skip.iter().any(|s| *s == path) {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if kind.is_dir() {
            if left_out_dir(&rel) {
                continue;
            }
            collect(root, &path, db, skip, out)?;
        } else if kind.is_file() {
            let db_file = db.file_name().map(|n| n.to_string_lossy().into_owned());
            let of_db = db_file.as_ref().is_some_and(|d| {
                path.parent() == db.parent()
                    && [
                        d.clone(),
                        format!("{d}-wal"),
                        format!("{d}-shm"),
                        format!("{d}-journal"),
                    ]
                    .contains(&name)
            });
            let temporary = name.starts_with('.') && name.ends_with(".tmp");
            let is_manifest = dir == root && name == manifest::FILE;
            if !of_db && !temporary && !is_manifest {
                out.push(rel);
            }
        }
        // sockets, pipes and symbolic links are not key material
    }
    Ok(())
}

/// Directories of the data directory that are not the control plane: the
/// demo, and the local agent's journal, outbox, scratch and cache.
fn left_out_dir(rel: &Path) -> bool {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [top] => top == "demo",
        [top, _] => top == "agent",
        _ => false,
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// Creates `dir` (and parents) and makes it 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// Makes a file 0600.
pub(crate) fn restrict_file(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

pub(crate) fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

pub(crate) fn sync_dir(dir: &Path) {
    // best effort: not every file system syncs directories
    let _ = std::fs::File::open(dir).and_then(|f| f.sync_all());
}
