//! Files only their owner may read (keys, seeds, credentials): created
//! exactly once even when several processes start together, or replaced
//! atomically, always 0600 and fsynced.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Reads a private file (a key), creating it with `make`'s bytes if it does
/// not exist yet, exactly once even when several processes start together:
/// each writer prepares its own temp file and links it into place with a
/// create-new link, so the file appears complete or not at all, the first
/// writer wins, and everyone returns what is on disk, never a key of its own
/// that lost the race.
pub fn read_or_create_private(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let created = create_private_once(path, &make()?)?;
    if created {
        tracing::debug!(path = %path.display(), "created private file");
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Creates `path` with `bytes` (0600) unless it already exists; true if
/// this call created it. Never replaces an existing file.
pub fn create_private_once(path: &Path, bytes: &[u8]) -> Result<bool> {
    let tmp = write_temp_private(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    // The temp name is ours alone; losing it is harmless.
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Writes a file readable by its owner only, atomically (temp + rename).
/// Concurrent writers each use their own temp file; the last rename wins.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp_private(path, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    sync_parent(path);
    Ok(())
}

/// Writes `bytes` (0600, fsynced) to a temp file next to `path` whose name
/// no other writer uses: `.<name>.<pid>.<n>.tmp`.
fn write_temp_private(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    Ok(tmp)
}

/// Makes a new directory entry durable (best effort; not on Windows).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}
