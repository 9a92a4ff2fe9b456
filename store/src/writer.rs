//! One writer task per role. Tasks of a role do not open their own write
//! transactions on busy paths: they queue a write ([`Writer::run`],
//! [`Writer::submit`]) and the writer task applies everything queued at that
//! moment in ONE transaction on the store's one write connection, each write
//! inside its own savepoint (a write that fails is rolled back alone and its
//! caller gets its error at once). Callers hear `Ok` only after the commit,
//! so a reply or an event sent on `Ok` describes committed state. A batch
//! that cannot begin or commit (database busy, read-only, full) answers
//! every write in it with [`StoreError::NotCommitted`]; the task goes on
//! with the next batch: it ends only when every [`Writer`] handle is gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Acquire, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError};

/// The future a queued write returns; it borrows the batch's connection.
pub type WriteFuture<'c, R, E> =
    Pin<Box<dyn Future<Output = std::result::Result<R, E>> + Send + 'c>>;

/// Counters of the writer task (read by metrics and tests).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Writes committed.
    pub writes: AtomicU64,
    /// Writes that failed alone (rolled back to their savepoint).
    pub failed_writes: AtomicU64,
    /// Batches that did not begin or commit.
    pub failed_batches: AtomicU64,
}

impl WriterStats {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// A handle to a role's writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Box<dyn Queued>>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.stats)
            .finish()
    }
}

/// A write waiting for its batch's commit.
pub struct Pending<R, E> {
    rx: oneshot::Receiver<std::result::Result<R, E>>,
}

impl<R, E: From<StoreError>> Pending<R, E> {
    /// Its outcome, after the batch committed (or failed).
    pub async fn outcome(self) -> std::result::Result<R, E> {
        self.rx.await.unwrap_or_else(|_| {
            Err(StoreError::NotCommitted("the writer task stopped".into()).into())
        })
    }
}

impl Writer {
    /// Starts the writer task on `store`'s write connection: at most
    /// `max_batch` writes per transaction, at most `queue` waiting.
    pub fn spawn(store: Store, max_batch: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(serve(store, rx, max_batch.max(1), stats.clone()));
        Self { queue: tx, stats }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues `f` (waiting while the queue is full) and returns at once;
    /// await [`Pending::outcome`] for the result after commit. Writes
    /// submitted back to back share a transaction.
    pub async fn submit<R, E, F>(&self, f: F) -> Pending<R, E>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn Queued> = Box::new(Job { f, tx });
        if let Err(mpsc::error::SendError(job)) = self.queue.send(job).await {
            job.fail(&StoreError::NotCommitted("the writer task stopped".into()));
        }
        Pending { rx }
    }

    /// Runs `f` in the writer's next transaction; its result after commit.
    pub async fn run<R, E, F>(&self, f: F) -> std::result::Result<R, E>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(f).await.outcome().await
    }
}

type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A queued write, type-erased.
trait Queued: Send {
    /// Applies it; `Some` holds its answer until the commit, `None` means
    /// it failed (and has answered already).
    fn apply<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
    ) -> BoxFut<'c, Option<Box<dyn Answer>>>;
    /// Answers without running (the batch never began).
    fn fail(self: Box<Self>, e: &StoreError);
}

trait Answer: Send {
    fn answer(self: Box<Self>, commit: std::result::Result<(), &StoreError>);
}

struct Job<F, R, E> {
    f: F,
    tx: oneshot::Sender<std::result::Result<R, E>>,
}

struct Ready<R, E> {
    value: R,
    tx: oneshot::Sender<std::result::Result<R, E>>,
}

fn again(e: &StoreError) -> StoreError {
    StoreError::NotCommitted(e.to_string())
}

impl<F, R, E> Queued for Job<F, R, E>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, R, E> + Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn apply<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
    ) -> BoxFut<'c, Option<Box<dyn Answer>>> {
        Box::pin(async move {
            let Job { f, tx } = *self;
            match (f)(conn).await {
                Ok(value) => Some(Box::new(Ready { value, tx }) as Box<dyn Answer>),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            }
        })
    }

    fn fail(self: Box<Self>, e: &StoreError) {
        let _ = self.tx.send(Err(again(e).into()));
    }
}

impl<R: Send, E: From<StoreError> + Send> Answer for Ready<R, E> {
    fn answer(self: Box<Self>, commit: std::result::Result<(), &StoreError>) {
        let out = match commit {
            Ok(()) => Ok(self.value),
            Err(e) => Err(again(e).into()),
        };
        let _ = self.tx.send(out);
    }
}

async fn serve(
    store: Store,
    mut rx: mpsc::Receiver<Box<dyn Queued>>,
    max_batch: usize,
    stats: Arc<WriterStats>,
) {
    let mut batch: Vec<Box<dyn Queued>> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let size = batch.len();
        match apply_batch(&store, &mut batch, &stats).await {
            Ok(answers) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .writes
                    .fetch_add(answers.len() as u64, Ordering::Relaxed);
                for a in answers {
                    a.answer(Ok(()));
                }
            }
            Err((e, answers)) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, writes = size, "write batch not committed; its writers are told");
                for a in answers {
                    a.answer(Err(&e));
                }
                for q in batch.drain(..) {
                    q.fail(&e);
                }
            }
        }
        batch.clear();
    }
}

type Failed = (StoreError, Vec<Box<dyn Answer>>);

/// One transaction over the batch. On failure returns the error and the
/// answers of the writes applied so far; writes not yet applied stay in
/// `batch`.
async fn apply_batch(
    store: &Store,
    batch: &mut Vec<Box<dyn Queued>>,
    stats: &WriterStats,
) -> std::result::Result<Vec<Box<dyn Answer>>, Failed> {
    let mut tx = match store.write().await {
        Ok(tx) => tx,
        Err(e) => return Err((e, Vec::new())),
    };
    let mut answers = Vec::with_capacity(batch.len());
    let items = std::mem::take(batch);
    let mut items = items.into_iter();
    while let Some(q) = items.next() {
        let mut sp = match tx.begin().await {
            Ok(sp) => sp,
            Err(e) => {
                batch.push(q);
                batch.extend(items);
                return Err((e.into(), answers));
            }
        };
        match q.apply(&mut sp).await {
            Some(a) => {
                if let Err(e) = sp.commit().await {
                    a.answer(Err(&StoreError::from(e)));
                    continue;
                }
                answers.push(a);
            }
            None => {
                stats.failed_writes.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = sp.rollback().await {
                    batch.extend(items);
                    return Err((e.into(), answers));
                }
            }
        }
    }
    match tx.commit().await {
        Ok(()) => Ok(answers),
        Err(e) => Err((e.into(), answers)),
    }
}
