//! Progress throttling (at most one event per interval, never two closer
//! than that) and our own measurement for commands without JSON progress:
//! the bytes and files under a restore target, walked in the background.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rm_bus::msg::Progress;

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Decides when a Progress may go out.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
        }
    }
    /// Whether an event may be sent now; if so, records it as sent.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        match self.last {
            Some(l) if now.duration_since(l) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Most directory entries one walk visits (keeps a walk cheap).
const MAX_WALK_ENTRIES: u64 = 200_000;

/// Total size and number of regular files under `root` (not following
/// symlinks; bounded).
pub(crate) fn tree_size(root: &Path) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut files = 0u64;
    let mut seen = 0u64;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return (bytes, files);
            }
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file()
                && let Ok(md) = entry.metadata()
            {
                bytes = bytes.saturating_add(md.len());
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// Measures a restore target periodically in a blocking task; readings
/// are relative to what was there before the restore started.
pub(crate) struct TargetMeter {
    root: PathBuf,
    base: (u64, u64),
    bytes: Arc<AtomicU64>,
    files: Arc<AtomicU64>,
    busy: Arc<AtomicBool>,
    last_walk: Option<Instant>,
    every: Duration,
}

impl TargetMeter {
    /// Measures the baseline (blocking task).
    pub(crate) async fn start(root: PathBuf, every: Duration) -> Self {
        let r = root.clone();
        let base = tokio::task::spawn_blocking(move || tree_size(&r))
            .await
            .unwrap_or((0, 0));
        TargetMeter {
            root,
            base,
            bytes: Arc::new(AtomicU64::new(base.0)),
            files: Arc::new(AtomicU64::new(base.1)),
            busy: Arc::new(AtomicBool::new(false)),
            last_walk: None,
            every,
        }
    }

    /// Starts a background walk if none runs and the last is old enough.
    pub(crate) fn poll(&mut self) {
        let now = Instant::now();
        if self
            .last_walk
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            return;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_walk = Some(now);
        let (root, bytes, files, busy) = (
            self.root.clone(),
            self.bytes.clone(),
            self.files.clone(),
            self.busy.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let (b, f) = tree_size(&root);
            bytes.store(b, Ordering::Release);
            files.store(f, Ordering::Release);
            busy.store(false, Ordering::Release);
        });
    }

    /// Bytes and files added since the start (last reading).
    pub(crate) fn reading(&self) -> (u64, u64) {
        (
            self.bytes
                .load(Ordering::Acquire)
                .saturating_sub(self.base.0),
            self.files
                .load(Ordering::Acquire)
                .saturating_sub(self.base.1),
        )
    }

    /// A fresh final measurement.
    pub(crate) async fn finish(&self) -> (u64, u64) {
        let r = self.root.clone();
        let (b, f) = tokio::task::spawn_blocking(move || tree_size(&r))
            .await
            .unwrap_or((0, 0));
        (b.saturating_sub(self.base.0), f.saturating_sub(self.base.1))
    }
}

/// A Progress with only the elapsed time (and timestamp) set.
pub(crate) fn elapsed_only(elapsed: Duration) -> Progress {
    Progress {
        v: 1,
        ts_ms: now_ms(),
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        ..Progress::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_spacing() {
        let mut t = Throttle::new(Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(t.admit(t0));
        assert!(!t.admit(t0 + Duration::from_millis(100)));
        assert!(!t.admit(t0 + Duration::from_millis(499)));
        assert!(t.admit(t0 + Duration::from_millis(500)));
        assert!(!t.admit(t0 + Duration::from_millis(900)));
    }

    #[test]
    fn tree_size_counts_regular_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/x"), vec![0u8; 100]).unwrap();
        std::fs::write(d.path().join("a/b/y"), vec![0u8; 23]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        assert_eq!(tree_size(d.path()), (123, 2));
        assert_eq!(tree_size(&d.path().join("missing")), (0, 0));
    }
}
