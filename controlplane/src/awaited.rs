//! Requests from agents waiting for a handler, answered only while their
//! senders still wait.
//!
//! Ingest reads hellos and job results (`started`, `done`, parts, claims)
//! off the bus as they arrive and queues them here, at most one per key:
//! the hello of a host, a result's subject and idempotency key. A request
//! with the key of one already waiting replaces it (its agent asked again
//! and stopped listening for the answer to the earlier ask) and counts as
//! just arrived. A request that waited longer than the queue's `max_wait`
//! ([`crate::Timings::hello_max_wait`], [`crate::Timings::result_max_wait`])
//! is dropped unanswered, and its agent asks again (a result stays in its
//! outbox until it is acknowledged). For hellos that is below the agent's
//! patience: a hello answered after its agent gave up is work done for
//! nothing while fresh hellos wait. For results it is past it (60 s
//! against the agent's 10 s a try): a result written late is the write
//! its agent's next try needs, and that try is answered from memory.
//!
//! Handlers take the oldest first while they keep up. Once the oldest has
//! waited longer than the queue's `newest_first` they are behind, and they
//! take the newest instead (adaptive LIFO): in a storm they cannot keep up
//! with, every request they answer is one its agent still waits for,
//! instead of one that waited most of its agent's patience in line and is
//! answered just before or after the agent gives up and asks again. The
//! oldest are left for last (hellos expire); their agents ask again and,
//! arriving newest, are served. When the line is short again the order
//! is first come, first served. A batch ([`AwaitedQueue::take_up_to`]) is the oldest or
//! the newest requests, in the order they arrived either way.
//!
//! Without the queue a storm outran its handlers and fed on itself:
//! - hellos: agents repeated them every ten seconds, every repeat queued
//!   behind the stale ones, and the handlers answered requests whose
//!   agents had stopped waiting (a third of 50,000 simulated agents got no
//!   answer in a minute, docs/benchmarks.md);
//! - results: a 100,000-agent burst was stored in full and never
//!   acknowledged, every ack minutes late, behind retries in the
//!   subscription, and refused by the bus for lateness (a responder may
//!   answer within two minutes; docs/benchmarks.md, stop 39).
//!
//! The queue holds at most `cap` requests; at the cap the oldest is
//! dropped for the newcomer (it was the nearest to expiring).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lock;

/// A request taken for handling.
#[derive(Debug)]
pub(crate) struct Taken {
    pub key: String,
    pub msg: Message,
    /// How long it waited in the queue.
    pub waited: Duration,
    /// Taken newest first: the oldest waiting request had waited longer
    /// than the queue's `newest_first` then.
    pub newest_first: bool,
}

/// What [`AwaitedQueue::push`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued behind the requests of other keys.
    Queued,
    /// Replaced a request of the same key that had not been handled yet.
    Superseded,
    /// Queued, and the oldest request dropped: the queue was at its cap.
    Displaced,
}

#[derive(Default)]
struct State {
    /// Arrivals in order: a key and the number of its arrival. An entry
    /// whose number is not its key's waiting one was superseded and is
    /// skipped.
    order: VecDeque<(String, u64)>,
    /// Each waiting key's latest request, when it arrived and its number.
    waiting: HashMap<String, (Message, Instant, u64)>,
    /// Arrivals numbered so far.
    arrivals: u64,
}

impl State {
    /// Whether `entry` is its key's waiting request.
    fn live(&self, (key, n): &(String, u64)) -> bool {
        self.waiting.get(key).is_some_and(|w| w.2 == *n)
    }

    /// Drops superseded entries at the front and requests that waited
    /// longer than `max_wait`; how many requests it dropped.
    fn expire(&mut self, now: Instant, max_wait: Duration) -> usize {
        let mut expired = 0;
        while let Some(front) = self.order.front() {
            if !self.live(front) {
                self.order.pop_front();
                continue;
            }
            let at = self.waiting.get(&front.0).map(|w| w.1);
            if at.is_some_and(|at| now.duration_since(at) > max_wait) {
                self.drop_front();
                expired += 1;
                continue;
            }
            break;
        }
        expired
    }

    /// Drops the oldest waiting request (superseded entries on the way
    /// are skipped); whether there was one.
    fn drop_front(&mut self) -> bool {
        while let Some(entry) = self.order.pop_front() {
            if self.live(&entry) {
                self.waiting.remove(&entry.0);
                return true;
            }
        }
        false
    }

    /// Whether the oldest waiting request waited longer than `threshold`
    /// (superseded entries at the front are already gone: `expire` ran).
    fn behind(&self, now: Instant, threshold: Duration) -> bool {
        self.order
            .front()
            .and_then(|(key, _)| self.waiting.get(key))
            .is_some_and(|w| now.duration_since(w.1) > threshold)
    }

    /// Takes the waiting request at the back (newest) or the front (oldest).
    fn take(&mut self, newest: bool, now: Instant) -> Option<Taken> {
        loop {
            let entry = if newest {
                self.order.pop_back()
            } else {
                self.order.pop_front()
            }?;
            if !self.live(&entry) {
                continue;
            }
            let (msg, at, _) = self.waiting.remove(&entry.0)?;
            return Some(Taken {
                key: entry.0,
                msg,
                waited: now.duration_since(at),
                newest_first: newest,
            });
        }
    }
}

/// The queue; cheap to share behind an `Arc`.
pub(crate) struct AwaitedQueue {
    state: Mutex<State>,
    ready: Notify,
    /// A request waiting longer than this is dropped.
    max_wait: Duration,
    /// Once the oldest waiting request waited longer than this, the
    /// newest is taken first.
    newest_first: Duration,
    /// Most requests waiting.
    cap: usize,
}

impl AwaitedQueue {
    pub fn new(max_wait: Duration, newest_first: Duration, cap: usize) -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            max_wait,
            newest_first,
            cap: cap.max(1),
        }
    }

    /// Queues `msg` under `key`, or puts it in place of the key's waiting
    /// request (as just arrived).
    pub fn push(&self, key: String, msg: Message) -> Pushed {
        let pushed = {
            let mut s = lock(&self.state);
            s.arrivals += 1;
            let n = s.arrivals;
            let mut pushed = match s.waiting.insert(key.clone(), (msg, Instant::now(), n)) {
                Some(_) => Pushed::Superseded,
                None => Pushed::Queued,
            };
            s.order.push_back((key, n));
            if s.waiting.len() > self.cap && s.drop_front() {
                pushed = Pushed::Displaced;
            }
            pushed
        };
        self.ready.notify_one();
        pushed
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    /// The next request to handle (see the module's doc), waiting for one
    /// when there is none. Requests it drops as stale on the way are
    /// counted with `expired` (called without the queue's lock held).
    pub async fn take(&self, mut expired: impl FnMut(usize)) -> Taken {
        loop {
            let (taken, n) = self.try_take_up_to(1);
            if n > 0 {
                expired(n);
            }
            if let Some(t) = taken.into_iter().next() {
                return t;
            }
            self.ready.notified().await;
        }
    }

    /// Up to `max` requests (at least one, waiting for it), the oldest or
    /// the newest waiting (see the module's doc), in the order they
    /// arrived. Requests dropped as stale are counted with `expired`.
    pub async fn take_up_to(&self, max: usize, mut expired: impl FnMut(usize)) -> Vec<Taken> {
        loop {
            let (taken, n) = self.try_take_up_to(max);
            if n > 0 {
                expired(n);
            }
            if !taken.is_empty() {
                return taken;
            }
            self.ready.notified().await;
        }
    }

    /// What [`Self::take_up_to`] takes, without waiting (possibly nothing),
    /// and how many stale requests it dropped.
    pub fn try_take_up_to(&self, max: usize) -> (Vec<Taken>, usize) {
        let mut s = lock(&self.state);
        let now = Instant::now();
        let expired = s.expire(now, self.max_wait);
        let behind = s.behind(now, self.newest_first);
        let mut taken = Vec::new();
        while taken.len() < max.max(1) {
            match s.take(behind, now) {
                Some(t) => taken.push(t),
                None => break,
            }
        }
        if behind {
            // taken from the back: back in the order they arrived
            taken.reverse();
        }
        let more = !s.waiting.is_empty();
        drop(s);
        if !taken.is_empty() && more {
            // another handler may be asleep with work left
            self.ready.notify_one();
        }
        (taken, expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(host: &str, inbox: &str) -> Message {
        Message {
            subject: format!("rm.agent.{host}.hello").into(),
            reply: Some(inbox.to_owned().into()),
            payload: bytes::Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        }
    }

    fn queue() -> AwaitedQueue {
        AwaitedQueue::new(Duration::from_secs(8), Duration::from_secs(1), 100)
    }

    /// The next hello's host and reply inbox, and whether it was taken
    /// newest first; expired hellos are added to `expired`.
    async fn next(q: &AwaitedQueue, expired: &mut usize) -> (String, String, bool) {
        let t = q.take(|n| *expired += n).await;
        let inbox = t.msg.reply.as_deref().unwrap_or_default().to_owned();
        (t.key, inbox, t.newest_first)
    }

    fn row(host: &str, inbox: &str, newest_first: bool) -> (String, String, bool) {
        (host.to_owned(), inbox.to_owned(), newest_first)
    }

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hosts_repeated_hello_replaces_the_waiting_one_and_counts_as_just_arrived() {
        let q = queue();
        let mut expired = 0;
        assert_eq!(q.push("a".into(), hello("a", "i1")), Pushed::Queued);
        assert_eq!(q.push("b".into(), hello("b", "i2")), Pushed::Queued);
        advance_ms(300).await;
        assert_eq!(q.push("a".into(), hello("a", "i3")), Pushed::Superseded);
        assert_eq!(q.len(), 2);
        // the repeat is behind b now, and only the latest is answered
        assert_eq!(next(&q, &mut expired).await, row("b", "i2", false));
        let t = q.take(|n| expired += n).await;
        assert_eq!(
            (t.key.as_str(), t.msg.reply.as_deref(), t.waited),
            ("a", Some("i3"), Duration::ZERO),
            "the latest hello, waiting since it arrived"
        );
        assert_eq!((q.len(), expired), (0, 0));
        // taken: the host's next hello queues again
        assert_eq!(q.push("a".into(), hello("a", "i4")), Pushed::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_handlers_keep_up_the_oldest_hello_is_taken_first() {
        let q = queue();
        let mut expired = 0;
        for h in ["x", "y", "z"] {
            q.push(h.into(), hello(h, h));
            advance_ms(300).await;
        }
        // x has waited 900 ms: under the 1 s after which handlers are behind
        for h in ["x", "y", "z"] {
            assert_eq!(next(&q, &mut expired).await, row(h, h, false));
        }
        assert_eq!(expired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_oldest_hello_waited_too_long_the_newest_are_taken_first_until_the_line_is_short()
     {
        let q = queue();
        let mut expired = 0;
        q.push("a".into(), hello("a", "a"));
        advance_ms(500).await;
        q.push("b".into(), hello("b", "b"));
        advance_ms(1500).await;
        q.push("c".into(), hello("c", "c"));
        q.push("d".into(), hello("d", "d"));
        // a waited 2 s: behind, so the newest first, a itself last
        for h in ["d", "c", "b", "a"] {
            assert_eq!(next(&q, &mut expired).await, row(h, h, true));
        }
        // caught up: first come, first served again
        q.push("e".into(), hello("e", "e"));
        q.push("f".into(), hello("f", "f"));
        assert_eq!(next(&q, &mut expired).await, row("e", "e", false));
        assert_eq!(next(&q, &mut expired).await, row("f", "f", false));
        assert_eq!(expired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn hellos_that_waited_longer_than_their_agents_wait_are_dropped_counted_and_never_taken()
    {
        let q = queue();
        let mut expired = 0;
        q.push("old1".into(), hello("old1", "o1"));
        q.push("old2".into(), hello("old2", "o2"));
        advance_ms(5_000).await;
        q.push("mid".into(), hello("mid", "m"));
        advance_ms(4_000).await;
        q.push("new".into(), hello("new", "n"));
        // old1 and old2 waited 9 s (over 8): dropped; mid's 4 s is behind
        assert_eq!(next(&q, &mut expired).await, row("new", "n", true));
        assert_eq!((expired, q.len()), (2, 1));
        assert_eq!(next(&q, &mut expired).await, row("mid", "m", true));
        assert_eq!(q.len(), 0);
        // dropped: a repeat from old1 is a new arrival, answered
        q.push("old1".into(), hello("old1", "o1b"));
        assert_eq!(next(&q, &mut expired).await, row("old1", "o1b", false));
        assert_eq!(expired, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_waiting_on_an_empty_queue_reports_hellos_that_expired_there() {
        let q = std::sync::Arc::new(queue());
        q.push("gone".into(), hello("gone", "g"));
        advance_ms(9_000).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handler = {
            let q = q.clone();
            tokio::spawn(async move { q.take(move |n| tx.send(n).unwrap_or(())).await })
        };
        assert_eq!(
            rx.recv().await,
            Some(1),
            "reported before any hello is taken"
        );
        assert!(!handler.is_finished());
        q.push("fresh".into(), hello("fresh", "f"));
        let t = handler.await.unwrap();
        assert_eq!((t.key.as_str(), t.newest_first), ("fresh", false));
    }

    /// The keys of a batch, and whether it was taken newest first.
    fn keys(batch: &[Taken]) -> (Vec<&str>, bool) {
        let newest = batch.iter().all(|t| t.newest_first);
        (batch.iter().map(|t| t.key.as_str()).collect(), newest)
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_the_oldest_while_the_writer_keeps_up_and_the_newest_once_behind_each_in_arrival_order()
     {
        let q = queue();
        let mut expired = 0;
        for k in ["a", "b", "c", "d", "e"] {
            q.push(k.into(), hello(k, k));
            advance_ms(100).await;
        }
        // a waited 500 ms: keeping up, so the oldest three
        let b = q.take_up_to(3, |n| expired += n).await;
        assert_eq!(keys(&b), (vec!["a", "b", "c"], false));
        for k in ["f", "g", "h", "i"] {
            q.push(k.into(), hello(k, k));
        }
        advance_ms(1_500).await;
        q.push("j".into(), hello("j", "j"));
        // d waited 1.7 s: behind, so the newest three, oldest of them first
        let b = q.take_up_to(3, |n| expired += n).await;
        assert_eq!(keys(&b), (vec!["h", "i", "j"], true));
        let b = q.take_up_to(10, |n| expired += n).await;
        assert_eq!(keys(&b), (vec!["d", "e", "f", "g"], true));
        assert_eq!((q.len(), expired), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_leaves_out_requests_that_waited_longer_than_their_senders_wait() {
        let q = queue();
        let mut expired = 0;
        q.push("stale".into(), hello("stale", "s"));
        advance_ms(8_500).await;
        q.push("fresh1".into(), hello("fresh1", "f1"));
        q.push("fresh2".into(), hello("fresh2", "f2"));
        let b = q.take_up_to(10, |n| expired += n).await;
        assert_eq!(keys(&b), (vec!["fresh1", "fresh2"], false));
        assert_eq!(expired, 1);
        let (none, n) = q.try_take_up_to(10);
        assert!(none.is_empty());
        assert_eq!((n, q.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn at_its_cap_the_queue_drops_its_oldest_request_for_the_newcomer() {
        let q = AwaitedQueue::new(Duration::from_secs(8), Duration::from_secs(1), 3);
        for k in ["a", "b", "c"] {
            assert_eq!(q.push(k.into(), hello(k, k)), Pushed::Queued);
        }
        // a repeat of b takes no more room
        assert_eq!(q.push("b".into(), hello("b", "b2")), Pushed::Superseded);
        assert_eq!(q.push("d".into(), hello("d", "d")), Pushed::Displaced);
        assert_eq!(q.len(), 3);
        let b = q.take_up_to(10, |_| {}).await;
        assert_eq!(keys(&b), (vec!["c", "b", "d"], false));
        assert_eq!(b[1].msg.reply.as_deref(), Some("b2"));
    }

    #[tokio::test]
    async fn a_waiting_handler_is_woken_by_a_hello_and_sees_how_long_it_waited() {
        let q = std::sync::Arc::new(queue());
        let handlers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.take(|_| {}).await })
            })
            .collect();
        tokio::task::yield_now().await;
        for h in ["x", "y", "z"] {
            q.push(h.into(), hello(h, "i"));
        }
        let mut hosts = Vec::new();
        for h in handlers {
            let t = tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .expect("every handler gets a hello")
                .unwrap();
            assert!(t.waited < Duration::from_secs(5));
            hosts.push(t.key);
        }
        hosts.sort();
        assert_eq!(hosts, ["x", "y", "z"]);
    }
}
