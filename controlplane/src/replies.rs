//! Service replies kept by idempotency key, so a retried request is
//! answered, not run twice.
//!
//! Core NATS loses a reply when the asker's attempt timed out before it
//! came (a busy control plane) or the connection dropped. An asker that
//! retries with the same `Rm-Idempotency-Key` header then used to run the
//! verb a second time: a second `host-add` of the same name answered
//! `conflict` although the first had succeeded. Now the second attempt is
//! answered with the first one's reply: at once if it ended, as soon as it
//! ends if it is still running.
//!
//! Replies are kept for [`KEEP_FOR`], at most [`KEEP_BYTES`] in all, only
//! up to [`KEEP_ONE_MAX`] each, and never `internal`/`unavailable`
//! failures (nothing was changed; a retry should run again). Keys are
//! scoped by subject and payload: the same key sent to another verb, or
//! with another body (an asker reusing its key), runs.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lock;

/// How long an answered request's reply is kept: longer than any asker
/// retries (the simulator's and web's deadlines are 60 s at most).
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(600);
/// The most reply bytes kept in all; the oldest go first.
pub(crate) const KEEP_BYTES: usize = 32 << 20;
/// A larger reply is not kept (listings: a rerun changes nothing).
pub(crate) const KEEP_ONE_MAX: usize = 64 << 10;

/// What to do with a request that carries an idempotency key.
pub(crate) enum Claim {
    /// The first with this key: run it, then [`Replies::finish`].
    Run(Ticket),
    /// Answered before: send this again.
    Replay(Bytes),
    /// Running now: the reply comes on this.
    Wait(watch::Receiver<Option<Bytes>>),
}

/// The right to run a request and record its reply.
pub(crate) struct Ticket {
    key: String,
    tx: watch::Sender<Option<Bytes>>,
}

enum Slot {
    Running(watch::Receiver<Option<Bytes>>),
    Done { reply: Bytes, at: Instant },
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Answered keys, oldest first, with when (to tell a re-run's entry).
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

/// The kept replies of one role's service router.
#[derive(Default)]
pub(crate) struct Replies {
    inner: Mutex<Inner>,
}

fn scoped(subject: &str, key: &str, payload: &[u8]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    payload.hash(&mut h);
    format!("{subject}\n{key}\n{:016x}", h.finish())
}

impl Replies {
    /// Claims `key` for `payload` on `subject` at `now`.
    pub fn claim(&self, subject: &str, key: &str, payload: &[u8], now: Instant) -> Claim {
        let key = scoped(subject, key, payload);
        let mut g = lock(&self.inner);
        g.expire(now);
        match g.slots.get(&key) {
            Some(Slot::Done { reply, .. }) => return Claim::Replay(reply.clone()),
            // A runner that ended without finishing (it panicked) leaves
            // a closed channel: run again.
            Some(Slot::Running(rx)) if rx.has_changed().is_ok() => return Claim::Wait(rx.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        g.slots.insert(key.clone(), Slot::Running(rx));
        Claim::Run(Ticket { key, tx })
    }

    /// Records the reply of a run: sent to the attempts waiting, and kept
    /// for later ones if `keep` and small enough.
    pub fn finish(&self, ticket: Ticket, reply: Bytes, keep: bool, now: Instant) {
        let Ticket { key, tx } = ticket;
        tx.send_replace(Some(reply.clone()));
        let mut g = lock(&self.inner);
        if keep && reply.len() <= KEEP_ONE_MAX {
            g.bytes += reply.len();
            g.order.push_back((now, key.clone()));
            g.slots.insert(key, Slot::Done { reply, at: now });
        } else {
            g.slots.remove(&key);
        }
        g.expire(now);
    }

    /// Replies kept now.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        lock(&self.inner).order.len()
    }
}

impl Inner {
    /// Drops replies older than [`KEEP_FOR`], then the oldest while over
    /// [`KEEP_BYTES`].
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            let old = now.saturating_duration_since(*at) > KEEP_FOR;
            if !old && self.bytes <= KEEP_BYTES {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            if let Some(Slot::Done { reply, at: kept }) = self.slots.get(&key)
                && *kept == at
            {
                self.bytes = self.bytes.saturating_sub(reply.len());
                self.slots.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: Claim) -> Ticket {
        match c {
            Claim::Run(t) => t,
            _ => panic!("expected to run"),
        }
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_reply_whether_it_comes_while_running_or_after_and_other_requests_run()
     {
        let r = Replies::default();
        let t0 = Instant::now();
        let ticket = run(r.claim("s", "k", b"p", t0));
        let Claim::Wait(mut rx) = r.claim("s", "k", b"p", t0) else {
            panic!("a retry while running waits");
        };
        r.finish(ticket, Bytes::from_static(b"ok"), true, t0);
        let got = rx.wait_for(|v| v.is_some()).await.expect("sent").clone();
        assert_eq!(got.as_deref(), Some(&b"ok"[..]));
        let Claim::Replay(b) = r.claim("s", "k", b"p", t0) else {
            panic!("a retry after the reply replays it");
        };
        assert_eq!(&b[..], b"ok");
        // another subject, another key or another body runs
        run(r.claim("other", "k", b"p", t0));
        run(r.claim("s", "k2", b"p", t0));
        run(r.claim("s", "k", b"q", t0));
    }

    #[tokio::test]
    async fn failures_not_kept_and_a_runner_that_vanished_run_again() {
        let r = Replies::default();
        let t0 = Instant::now();
        let ticket = run(r.claim("s", "k", b"p", t0));
        r.finish(ticket, Bytes::from_static(b"internal"), false, t0);
        let ticket = run(r.claim("s", "k", b"p", t0));
        drop(ticket);
        run(r.claim("s", "k", b"p", t0));
        assert_eq!(r.kept(), 0);
    }

    #[tokio::test]
    async fn replies_expire_after_keep_for_and_large_ones_are_not_kept() {
        let r = Replies::default();
        let t0 = Instant::now();
        let ticket = run(r.claim("s", "k", b"p", t0));
        r.finish(ticket, Bytes::from_static(b"ok"), true, t0);
        let big = run(r.claim("s", "big", b"p", t0));
        r.finish(big, Bytes::from(vec![0u8; KEEP_ONE_MAX + 1]), true, t0);
        assert_eq!(r.kept(), 1, "the large reply is not kept");
        run(r.claim("s", "big", b"p", t0));
        assert!(matches!(
            r.claim("s", "k", b"p", t0 + KEEP_FOR),
            Claim::Replay(_)
        ));
        run(r.claim("s", "k", b"p", t0 + KEEP_FOR + Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn the_oldest_replies_go_first_beyond_keep_bytes() {
        let r = Replies::default();
        let t0 = Instant::now();
        let n = KEEP_BYTES / KEEP_ONE_MAX + 1;
        for i in 0..n {
            let t = run(r.claim("s", &i.to_string(), b"p", t0));
            r.finish(t, Bytes::from(vec![0u8; KEEP_ONE_MAX]), true, t0);
        }
        assert_eq!(r.kept(), n - 1);
        run(r.claim("s", "0", b"p", t0));
        assert!(matches!(r.claim("s", "1", b"p", t0), Claim::Replay(_)));
    }
}
