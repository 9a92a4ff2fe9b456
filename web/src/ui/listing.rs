//! Directory listings of snapshots for the restore wizard: a bounded
//! in-process cache keyed by (repository, snapshot, directory) — snapshots
//! are immutable, so a listed directory never changes — and the paging of
//! large directories. Only full or short hex snapshot ids are cached (never
//! a name such as `latest`, whose meaning moves).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rm_bus::msg::LsEntry;

/// Entries shown on one page of a directory.
pub const PAGE_SIZE: usize = 200;

/// Listings kept; the oldest is dropped first.
pub const CAPACITY: usize = 256;

/// Which directory of which snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub repo_id: String,
    pub snapshot: String,
    pub dir: String,
}

impl Key {
    /// Whether this listing may be cached: the snapshot is named by an id
    /// (at least 8 hex digits), not by a moving name.
    pub fn cacheable(&self) -> bool {
        self.snapshot.len() >= 8 && self.snapshot.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Arc<Vec<LsEntry>>>,
    order: VecDeque<Key>,
}

/// The bounded cache (first in, first out).
pub struct Listings {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl Default for Listings {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl Listings {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every
        // change is one insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Vec<LsEntry>>> {
        self.lock().map.get(key).cloned()
    }

    /// Keeps a listing (sorted: directories first, then by name); returns
    /// it. A key that may not be cached is returned without keeping it.
    pub fn put(&self, key: Key, mut entries: Vec<LsEntry>) -> Arc<Vec<LsEntry>> {
        sort(&mut entries);
        let entries = Arc::new(entries);
        if !key.cacheable() {
            return entries;
        }
        let mut inner = self.lock();
        if inner.map.insert(key.clone(), entries.clone()).is_none() {
            inner.order.push_back(key);
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.map.remove(&old);
                }
            }
        }
        entries
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Directories first, then by name.
pub fn sort(entries: &mut [LsEntry]) {
    entries.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
}

/// Page `page` (1-based, clamped to the last) of `len` entries: the range
/// and the number of pages (at least 1).
pub fn page_range(len: usize, page: usize) -> (std::ops::Range<usize>, usize, usize) {
    let pages = len.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PAGE_SIZE;
    (start..(start + PAGE_SIZE).min(len), page, pages)
}

/// The parent of an absolute directory (`/` for `/` itself).
pub fn parent(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => trimmed[..i].into(),
    }
}

/// A directory path as the agent expects it: absolute, no trailing slash
/// (except `/`), no empty or `.` segments. `None` for a path with `..`.
pub fn normalize(dir: &str) -> Option<String> {
    let mut out = String::new();
    for seg in dir.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `(label, path)` for each ancestor of `dir`, from `/` down to `dir`.
pub fn crumbs(dir: &str) -> Vec<(String, String)> {
    let mut out = vec![("/".to_owned(), "/".to_owned())];
    let mut path = String::new();
    for seg in dir.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(seg);
        out.push((seg.to_owned(), path.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: &str) -> LsEntry {
        LsEntry {
            name: name.into(),
            kind: kind.into(),
            path: format!("/d/{name}"),
            size: None,
            mtime: None,
        }
    }

    fn key(snapshot: &str, dir: &str) -> Key {
        Key {
            repo_id: "r1".into(),
            snapshot: snapshot.into(),
            dir: dir.into(),
        }
    }

    #[test]
    fn a_listed_directory_is_answered_from_the_cache_sorted_directories_first() {
        let cache = Listings::default();
        let k = key("0123abcd", "/d");
        assert!(cache.get(&k).is_none());
        cache.put(
            k.clone(),
            vec![entry("b", "file"), entry("z", "dir"), entry("a", "file")],
        );
        let got = cache.get(&k).expect("cached");
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["z", "a", "b"]);
        assert!(cache.get(&key("0123abcd", "/other")).is_none());
    }

    #[test]
    fn a_moving_snapshot_name_is_never_cached() {
        let cache = Listings::default();
        cache.put(key("latest", "/"), vec![entry("a", "file")]);
        cache.put(key("abc", "/"), vec![entry("a", "file")]);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_oldest_listing_first() {
        let cache = Listings::with_capacity(2);
        for dir in ["/a", "/b", "/c"] {
            cache.put(key("0123abcd", dir), vec![]);
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("0123abcd", "/a")).is_none());
        assert!(cache.get(&key("0123abcd", "/c")).is_some());
    }

    #[test]
    fn large_directories_are_paged_and_a_page_past_the_end_shows_the_last() {
        assert_eq!(page_range(0, 1), (0..0, 1, 1));
        assert_eq!(page_range(450, 1), (0..200, 1, 3));
        assert_eq!(page_range(450, 3), (400..450, 3, 3));
        assert_eq!(page_range(450, 9), (400..450, 3, 3));
        assert_eq!(page_range(450, 0), (0..200, 1, 3));
    }

    #[test]
    fn paths_are_normalized_and_dot_dot_is_refused() {
        assert_eq!(normalize("").as_deref(), Some("/"));
        assert_eq!(normalize("/a//b/./c/").as_deref(), Some("/a/b/c"));
        assert_eq!(normalize("a/b").as_deref(), Some("/a/b"));
        assert_eq!(normalize("/a/../etc"), None);
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
        let c = crumbs("/a/b");
        assert_eq!(c[2], ("b".to_owned(), "/a/b".to_owned()));
    }
}
