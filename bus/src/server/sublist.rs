//! Subjects and the subscription index of one account.
//!
//! Subjects are `.`-separated tokens; in a subscription `*` matches exactly
//! one token and `>` (last token only) matches one or more. The index is a
//! token trie: a publish walks it once, visiting the literal child, the `*`
//! child and the `>` subscribers of every level, so matching costs
//! O(tokens × wildcard fan-out), not O(subscriptions).

use std::collections::HashMap;
use std::sync::Arc;

use super::client::Subscription;

/// Longest subject (and queue name) we accept, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;

fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && !t
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

/// A subscription subject: non-empty tokens, `*` only as a whole token,
/// `>` only as the whole last token.
pub fn valid_subject(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_SUBJECT_LEN {
        return false;
    }
    let mut tokens = s.split('.').peekable();
    while let Some(t) = tokens.next() {
        if !token_ok(t) {
            return false;
        }
        if t == ">" && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// A publish subject: a valid subject without wildcard tokens.
pub fn valid_literal_subject(s: &str) -> bool {
    valid_subject(s) && s.split('.').all(|t| t != "*" && t != ">")
}

/// A queue group name: one or more tokens, no whitespace.
pub fn valid_queue(q: &str) -> bool {
    !q.is_empty() && q.len() <= MAX_SUBJECT_LEN && token_ok(q)
}

/// Does the (possibly wildcard) `pattern` match the literal `subject`?
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is every subject `sub` can match also matched by `pattern`? (`sub` may
/// itself hold wildcards; used for subscribe permissions.)
pub fn is_subset(sub: &str, pattern: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = sub.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Do `a` and `b` (both possibly wildcards) match at least one common subject?
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What a publish matched: plain subscribers, and one list per queue group
/// (the router picks one member of each).
#[derive(Default)]
pub struct Matches {
    pub plain: Vec<Arc<Subscription>>,
    pub queues: Vec<Vec<Arc<Subscription>>>,
}

impl Matches {
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

#[derive(Default)]
struct Level {
    plain: Vec<Arc<Subscription>>,
    queues: Vec<(Box<str>, Vec<Arc<Subscription>>)>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }

    fn insert(&mut self, sub: Arc<Subscription>) {
        match &sub.queue {
            None => self.plain.push(sub),
            Some(q) => match self.queues.iter_mut().find(|(name, _)| **name == **q) {
                Some((_, members)) => members.push(sub),
                None => self.queues.push((q.clone(), vec![sub])),
            },
        }
    }

    fn remove(&mut self, sub: &Subscription) -> bool {
        let same = |s: &Arc<Subscription>| std::ptr::eq(Arc::as_ptr(s), sub);
        match &sub.queue {
            None => match self.plain.iter().position(same) {
                Some(i) => {
                    self.plain.swap_remove(i);
                    true
                }
                None => false,
            },
            Some(q) => {
                let Some(gi) = self.queues.iter().position(|(name, _)| **name == **q) else {
                    return false;
                };
                let members = &mut self.queues[gi].1;
                let Some(i) = members.iter().position(same) else {
                    return false;
                };
                members.swap_remove(i);
                if members.is_empty() {
                    self.queues.swap_remove(gi);
                }
                true
            }
        }
    }

    fn collect(&self, out: &mut Matches) {
        out.plain.extend(self.plain.iter().cloned());
        for (_, members) in &self.queues {
            out.queues.push(members.clone());
        }
    }
}

#[derive(Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Subscriptions ending at this node.
    here: Level,
    /// Subscriptions whose next (last) token is `>`.
    rest: Level,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }
}

/// The subscription index of one account.
#[derive(Default)]
pub struct Sublist {
    root: Node,
}

impl Sublist {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subscription; its subject must be [`valid_subject`].
    pub fn insert(&mut self, sub: Arc<Subscription>) {
        let subject = sub.subject.clone();
        let mut node = &mut self.root;
        let mut tokens = subject.split('.').peekable();
        while let Some(t) = tokens.next() {
            if t == ">" {
                node.rest.insert(sub);
                return;
            }
            node = if t == "*" {
                node.star.get_or_insert_with(Box::default)
            } else {
                node.literal.entry(t.into()).or_default()
            };
            if tokens.peek().is_none() {
                node.here.insert(sub);
                return;
            }
        }
    }

    /// Removes a subscription (by identity); prunes emptied branches.
    pub fn remove(&mut self, sub: &Subscription) -> bool {
        let tokens: Vec<&str> = sub.subject.split('.').collect();
        remove_at(&mut self.root, &tokens, sub)
    }

    /// Every subscription matching the literal `subject`.
    pub fn matches(&self, subject: &str) -> Matches {
        let mut out = Matches::default();
        let tokens: Vec<&str> = subject.split('.').collect();
        match_at(&self.root, &tokens, &mut out);
        out
    }
}

fn remove_at(node: &mut Node, tokens: &[&str], sub: &Subscription) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return false;
    };
    if *first == ">" {
        return node.rest.remove(sub);
    }
    let removed;
    if *first == "*" {
        let Some(child) = node.star.as_deref_mut() else {
            return false;
        };
        removed = if rest.is_empty() {
            child.here.remove(sub)
        } else {
            remove_at(child, rest, sub)
        };
        if child.is_empty() {
            node.star = None;
        }
    } else {
        let Some(child) = node.literal.get_mut(*first) else {
            return false;
        };
        removed = if rest.is_empty() {
            child.here.remove(sub)
        } else {
            remove_at(child, rest, sub)
        };
        if child.is_empty() {
            node.literal.remove(*first);
        }
    }
    removed
}

fn match_at(node: &Node, tokens: &[&str], out: &mut Matches) {
    let Some((first, rest)) = tokens.split_first() else {
        return;
    };
    node.rest.collect(out);
    if let Some(child) = node.literal.get(*first) {
        if rest.is_empty() {
            child.here.collect(out);
        } else {
            match_at(child, rest, out);
        }
    }
    if let Some(child) = node.star.as_deref() {
        if rest.is_empty() {
            child.here.collect(out);
        } else {
            match_at(child, rest, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_validity() {
        for ok in ["a", "a.b", "a.*", "*.b", "a.>", ">", "a.*.>", "_INBOX.x.y"] {
            assert!(valid_subject(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a b", "a\tb", "a.\r"] {
            assert!(!valid_subject(bad), "{bad:?}");
        }
        assert!(valid_literal_subject("a.b"));
        assert!(!valid_literal_subject("a.*"));
        assert!(!valid_literal_subject("a.>"));
        assert!(valid_subject("a*.b>")); // only whole tokens are wildcards
    }

    #[test]
    fn pattern_matching() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "a"));
        assert!(matches("*.b.*", "x.b.y"));
        assert!(!matches("a.b", "a.c"));
        assert!(is_subset("a.b", "a.*"));
        assert!(is_subset("a.*", "a.*"));
        assert!(is_subset("a.*", "a.>"));
        assert!(!is_subset("a.>", "a.*"));
        assert!(!is_subset("a.*", "a.b"));
        assert!(is_subset("a.b.>", "a.>"));
        assert!(overlaps("a.*", "*.b"));
        assert!(!overlaps("a.*", "b.*"));
        assert!(overlaps("a.>", "a.b.c"));
    }
}
