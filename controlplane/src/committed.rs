//! Job results committed lately, by their queue key (subject and
//! idempotency key): a re-send of one is acknowledged as a duplicate from
//! memory, without waiting in the results queue or taking a turn of the
//! writer. In a 100,000-agent burst two of every three results the writer
//! applied were such re-sends (their first ack had come too late), each a
//! read in a transaction to find out what memory knows (docs/benchmarks.md,
//! stop 40). Bounded: the oldest keys are forgotten first, and a forgotten
//! or never-seen key (after a restart) goes to the store as before, which
//! answers the same.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::lock;

/// The last `cap` keys committed.
pub(crate) struct Committed {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl Committed {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers `key` as committed, forgetting the oldest beyond the cap.
    pub fn insert(&self, key: String) {
        if self.cap == 0 {
            return;
        }
        let mut g = lock(&self.inner);
        if !g.keys.insert(key.clone()) {
            return;
        }
        g.order.push_back(key);
        while g.order.len() > self.cap {
            if let Some(old) = g.order.pop_front() {
                g.keys.remove(&old);
            }
        }
    }

    /// Was `key` committed lately?
    pub fn contains(&self, key: &str) -> bool {
        lock(&self.inner).keys.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_keys_are_forgotten_beyond_the_cap() {
        let c = Committed::new(2);
        c.insert("a".into());
        c.insert("b".into());
        c.insert("a".into()); // already known: not a second entry
        assert!(c.contains("a") && c.contains("b"));
        c.insert("c".into());
        assert!(!c.contains("a"), "the oldest goes first");
        assert!(c.contains("b") && c.contains("c"));
        assert!(!c.contains("d"));
    }

    #[test]
    fn a_cap_of_zero_remembers_nothing() {
        let c = Committed::new(0);
        c.insert("a".into());
        assert!(!c.contains("a"));
    }
}
