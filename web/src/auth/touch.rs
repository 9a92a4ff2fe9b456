//! Last-use marks of sessions and API tokens, written off the request
//! path.
//!
//! A request whose session or token is due a new mark queues it here and
//! goes on; one task of the web role writes what is queued, coalesced, in
//! one transaction. Before, each such request took SQLite's write lock
//! itself: while another role's writes held it (the control plane of a
//! large fleet commits all the time), a crowd arriving together (200 SSE
//! clients on one token) queued behind one another for a minute.
//!
//! A mark is queued at most once per [`EVERY_MS`] per session or token,
//! however many requests arrive together. A write that fails is logged
//! and not retried (the next mark comes an interval later); marks queued
//! when the process stops are lost. Either way a session's idle clock is
//! at most one interval behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rm_store::{Store, api_tokens, sessions};
use tokio::sync::Notify;

/// The least time between two marks of one session or token.
pub const EVERY_MS: i64 = 60_000;

/// How long the writer waits after a wake for more marks to share its
/// transaction.
const COALESCE: Duration = Duration::from_millis(100);

/// Remembered queue times before the stale ones are dropped.
const PRUNE_AT: usize = 4096;

/// What a mark is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    /// A session, by the hash of its id.
    Session,
    /// An API token, by its id.
    Token,
}

/// The queue and its writer task (started on first use).
#[derive(Default)]
pub struct Touches {
    inner: Arc<Inner>,
    started: OnceLock<()>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    pending: HashMap<(Mark, String), i64>,
    queued_at: HashMap<(Mark, String), i64>,
    /// A transaction of marks taken from `pending` is under way.
    writing: bool,
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Touches {
    /// Queues `id`'s mark at `now`, unless it was queued less than
    /// [`EVERY_MS`] ago. Never waits for the database.
    pub fn queue(&self, store: &Store, mark: Mark, id: &str, now: i64) {
        {
            let mut q = lock(&self.inner.state);
            let key = (mark, id.to_owned());
            if q.queued_at.get(&key).is_some_and(|t| now - t < EVERY_MS) {
                return;
            }
            if q.queued_at.len() >= PRUNE_AT {
                q.queued_at.retain(|_, t| now - *t < EVERY_MS);
            }
            q.queued_at.insert(key.clone(), now);
            q.pending.insert(key, now);
        }
        self.started.get_or_init(|| {
            tokio::spawn(write_loop(self.inner.clone(), store.clone()));
        });
        self.inner.wake.notify_one();
    }

    /// Waits until every queued mark is written (or its write failed).
    pub async fn idle(&self) {
        loop {
            {
                let q = lock(&self.inner.state);
                if q.pending.is_empty() && !q.writing {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Writes queued marks, a transaction per wake, for as long as the
/// process runs.
async fn write_loop(inner: Arc<Inner>, store: Store) {
    loop {
        inner.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let pending = {
            let mut q = lock(&inner.state);
            q.writing = !q.pending.is_empty();
            std::mem::take(&mut q.pending)
        };
        if pending.is_empty() {
            continue;
        }
        match write(&store, &pending).await {
            Ok(()) => tracing::debug!(marks = pending.len(), "last-use marks written"),
            Err(e) => {
                tracing::warn!(marks = pending.len(), error = %e, "last-use marks not written")
            }
        }
        lock(&inner.state).writing = false;
    }
}

async fn write(store: &Store, pending: &HashMap<(Mark, String), i64>) -> rm_store::Result<()> {
    let mut tx = store.write().await?;
    for ((mark, id), at) in pending {
        match mark {
            Mark::Session => sessions::touch(&mut tx, id, *at).await?,
            Mark::Token => api_tokens::touch(&mut tx, id, *at).await?,
        }
    }
    tx.commit().await?;
    Ok(())
}
