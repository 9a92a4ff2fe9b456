//! Agents' hellos waiting to be handled.
//!
//! Every hello is read off the bus as it arrives and queued here, at most
//! one per host: a hello from a host that already has one waiting
//! replaces it (an agent that repeats its hello has stopped listening for
//! the answer to the earlier one) and keeps its place in line. Handlers
//! take the oldest first. A hello that waited longer than
//! [`crate::Timings::hello_max_wait`] is dropped unanswered: its agent has
//! given up on that request, and answering it would spend the control
//! plane on a reply nobody reads while fresh hellos wait.
//!
//! Without this, a reconnect storm that outran the handlers fed on itself:
//! agents repeated their hellos every ten seconds, every repeat queued
//! behind the stale ones, and the handlers answered requests whose agents
//! had stopped waiting (a third of 50,000 simulated agents got no answer
//! in a minute, docs/benchmarks.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lock;

/// A hello taken for handling.
#[derive(Debug)]
pub(crate) struct Taken {
    pub host: String,
    pub msg: Message,
    /// How long it waited in the queue.
    pub waited: Duration,
}

/// What [`HelloQueue::push`] did with a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued behind the hellos of other hosts.
    Queued,
    /// Replaced a hello of the same host that had not been handled yet.
    Superseded,
}

#[derive(Default)]
struct State {
    /// Hosts in the order their waiting hello arrived.
    order: VecDeque<String>,
    /// Each waiting host's latest hello and when it arrived.
    waiting: HashMap<String, (Message, Instant)>,
}

/// The queue; cheap to share behind an `Arc`.
#[derive(Default)]
pub(crate) struct HelloQueue {
    state: Mutex<State>,
    ready: Notify,
}

impl HelloQueue {
    /// Queues `msg` from `host`, or puts it in place of the host's waiting
    /// hello.
    pub fn push(&self, host: String, msg: Message) -> Pushed {
        let pushed = {
            let mut s = lock(&self.state);
            let now = Instant::now();
            if let Some(w) = s.waiting.get_mut(&host) {
                *w = (msg, now);
                Pushed::Superseded
            } else {
                s.waiting.insert(host.clone(), (msg, now));
                s.order.push_back(host);
                Pushed::Queued
            }
        };
        if pushed == Pushed::Queued {
            self.ready.notify_one();
        }
        pushed
    }

    /// Hellos waiting now.
    pub fn len(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    /// The oldest waiting hello, waiting for one when there is none.
    pub async fn take(&self) -> Taken {
        loop {
            if let Some(t) = self.try_take() {
                return t;
            }
            self.ready.notified().await;
        }
    }

    fn try_take(&self) -> Option<Taken> {
        let mut s = lock(&self.state);
        while let Some(host) = s.order.pop_front() {
            if let Some((msg, at)) = s.waiting.remove(&host) {
                let more = !s.order.is_empty();
                drop(s);
                if more {
                    // another handler may be asleep with work left
                    self.ready.notify_one();
                }
                return Some(Taken {
                    host,
                    msg,
                    waited: at.elapsed(),
                });
            }
        }
        None
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

    #[tokio::test]
    async fn a_hosts_repeated_hello_replaces_the_waiting_one_and_keeps_its_place() {
        let q = HelloQueue::default();
        assert_eq!(q.push("a".into(), hello("a", "i1")), Pushed::Queued);
        assert_eq!(q.push("b".into(), hello("b", "i2")), Pushed::Queued);
        assert_eq!(q.push("a".into(), hello("a", "i3")), Pushed::Superseded);
        assert_eq!(q.len(), 2);
        let first = q.take().await;
        assert_eq!(first.host, "a");
        assert_eq!(first.msg.reply.as_deref(), Some("i3"), "the latest hello");
        let second = q.take().await;
        assert_eq!(
            (second.host.as_str(), second.msg.reply.as_deref()),
            ("b", Some("i2"))
        );
        assert_eq!(q.len(), 0);
        // taken: the host's next hello queues again
        assert_eq!(q.push("a".into(), hello("a", "i4")), Pushed::Queued);
    }

    #[tokio::test]
    async fn a_waiting_handler_is_woken_by_a_hello_and_sees_how_long_it_waited() {
        let q = std::sync::Arc::new(HelloQueue::default());
        let handlers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.take().await })
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
            hosts.push(t.host);
        }
        hosts.sort();
        assert_eq!(hosts, ["x", "y", "z"]);
    }
}
