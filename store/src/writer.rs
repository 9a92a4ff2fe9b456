//! One writer task per role. Tasks of a role do not open their own write
//! transactions on busy paths: they queue a write ([`Writer::run`],
//! [`Writer::submit`]) and the writer task applies everything queued at that
//! moment in ONE transaction on the store's one write connection, each write
//! inside its own savepoint (a write that fails is rolled back alone and its
//! caller gets its error at once). Callers hear `Ok` only after the commit,
//! so a reply or an event sent on `Ok` describes committed state. A batch
//! that cannot begin or commit (database busy, read-only, full) answers
//! every write in it with [`StoreError::NotCommitted`]; the task goes on
//! with the next batch.
//!
//! Two lanes: writes an operator waits for ([`Writer::run_first`]) go ahead
//! of whatever waits in the ordinary lane (a backlog of job results), in a
//! transaction of their own, so a click never waits for a pending batch of
//! results (only for the one being written when it came).
//!
//! [`Writer::shutdown`] drains: no write is taken any more (a late one is
//! answered `NotCommitted`), every write already queued is applied and its
//! caller answered, then the task ends. It also ends when every handle is
//! gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Acquire, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

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
    /// Transactions of the first lane (operators' writes) committed.
    pub first_batches: AtomicU64,
    /// Microseconds spent beginning transactions (waiting for the file's
    /// write lock when another process holds it) ...
    pub begin_us: AtomicU64,
    /// ... applying writes ...
    pub apply_us: AtomicU64,
    /// ... and committing (the sync to disk, and a checkpoint when the
    /// WAL has grown past SQLite's threshold).
    pub commit_us: AtomicU64,
    /// Commits on the store's write connection between this task's own
    /// transactions, counted when the task next holds the connection:
    /// another role sharing the connection in one process, or a write
    /// that bypassed the writer. Read by the task itself while it holds
    /// the connection, so no commit under way can skew it (comparing
    /// [`crate::Store::commits`] with `batches` from outside can).
    pub commits_outside: AtomicU64,
}

impl WriterStats {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// A handle to a role's writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    /// The first lane: writes someone is waiting for (operators).
    first: mpsc::Sender<Box<dyn Queued>>,
    queue: mpsc::Sender<Box<dyn Queued>>,
    stats: Arc<WriterStats>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    /// The store the task writes to (asked whether others wait for its
    /// connection).
    store: Store,
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

/// Who waits for the write connection ([`Writer::waiting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// A write queued in the writer's first lane (an operator's).
    FirstLane,
    /// Another role of the process, waiting to begin a transaction on the
    /// shared connection.
    OtherRole,
}

impl Writer {
    /// Starts the writer task on `store`'s write connection: at most
    /// `max_batch` writes per transaction, at most `queue` waiting (in
    /// each lane).
    pub fn spawn(store: Store, max_batch: usize, queue: usize) -> Self {
        let (first, first_rx) = mpsc::channel(queue.max(1));
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(WriterStats::default());
        let lanes = Lanes {
            first: first_rx,
            rest: rx,
        };
        let task = tokio::spawn(serve(
            store.clone(),
            lanes,
            stop_rx,
            max_batch.max(1),
            stats.clone(),
        ));
        Self {
            first,
            queue: tx,
            stats,
            stop: Arc::new(stop),
            task: Arc::new(std::sync::Mutex::new(Some(task))),
            store,
        }
    }

    /// Asks the task to stop taking writes and drain (see
    /// [`Writer::shutdown`], which also waits for it).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops taking writes, applies every write already queued (each
    /// caller is answered), and returns once the task has ended. Writes
    /// queued later are answered [`StoreError::NotCommitted`]. A second
    /// call returns at once.
    pub async fn shutdown(&self) {
        self.stop();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the writer task ended abnormally");
        }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Who is waiting for the connection right now, if anyone: a write
    /// queued in the first lane (an operator's), named first, or another
    /// role's transaction waiting to begin on the shared connection. A
    /// long write that runs in parts asks between them and commits early,
    /// so it holds them up for one part, not for all of it. Writes queued
    /// in the ordinary lane do not count: they wait for whatever batch is
    /// in progress, as always.
    pub fn waiting(&self) -> Option<Waiter> {
        if self.first_queued() > 0 {
            Some(Waiter::FirstLane)
        } else if self.store.writes_waiting() > 0 {
            Some(Waiter::OtherRole)
        } else {
            None
        }
    }

    /// Writes queued in the first lane right now.
    pub fn first_queued(&self) -> usize {
        self.first
            .max_capacity()
            .saturating_sub(self.first.capacity())
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
        enqueue(&self.queue, f).await
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

    /// [`Writer::submit`] in the first lane: ahead of every write waiting
    /// in the ordinary lane, in a transaction of first-lane writes only.
    pub async fn submit_first<R, E, F>(&self, f: F) -> Pending<R, E>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        enqueue(&self.first, f).await
    }

    /// [`Writer::run`] in the first lane (a write an operator waits for).
    pub async fn run_first<R, E, F>(&self, f: F) -> std::result::Result<R, E>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit_first(f).await.outcome().await
    }
}

async fn enqueue<R, E, F>(lane: &mpsc::Sender<Box<dyn Queued>>, f: F) -> Pending<R, E>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, R, E> + Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Box<dyn Queued> = Box::new(Job { f, tx });
    if let Err(mpsc::error::SendError(job)) = lane.send(job).await {
        job.fail(&StoreError::NotCommitted("the writer task stopped".into()));
    }
    Pending { rx }
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

struct Lanes {
    first: mpsc::Receiver<Box<dyn Queued>>,
    rest: mpsc::Receiver<Box<dyn Queued>>,
}

async fn serve(
    store: Store,
    mut lanes: Lanes,
    mut stop: watch::Receiver<bool>,
    max_batch: usize,
    stats: Arc<WriterStats>,
) {
    let mut batch: Vec<Box<dyn Queued>> = Vec::with_capacity(max_batch);
    let mut ahead: Vec<Box<dyn Queued>> = Vec::new();
    // The connection's commit count after this task's last transaction.
    let mut seen = store.commits();
    loop {
        // The first lane first, whatever waits in the other (`recv_many`
        // is cancel-safe: the branch not taken received nothing).
        let first = tokio::select! {
            biased;
            // stop asked (or every handle gone): drain below
            _ = stop.wait_for(|s| *s) => None,
            n = lanes.first.recv_many(&mut ahead, max_batch) => (n > 0).then_some(true),
            n = lanes.rest.recv_many(&mut batch, max_batch) => (n > 0).then_some(false),
        };
        match first {
            Some(true) => commit(&store, &mut ahead, &stats, true, &mut seen).await,
            Some(false) => commit(&store, &mut batch, &stats, false, &mut seen).await,
            None => break,
        }
    }
    // Drain: nothing new is taken; what is queued is applied and answered.
    lanes.first.close();
    lanes.rest.close();
    loop {
        let mut first = true;
        if lanes.first.recv_many(&mut batch, max_batch).await == 0 {
            first = false;
            if lanes.rest.recv_many(&mut batch, max_batch).await == 0 {
                break;
            }
        }
        commit(&store, &mut batch, &stats, first, &mut seen).await;
    }
    tracing::debug!("writer task drained and stopped");
}

/// Applies `batch` in one transaction and answers its writers.
async fn commit(
    store: &Store,
    batch: &mut Vec<Box<dyn Queued>>,
    stats: &WriterStats,
    first: bool,
    seen: &mut u64,
) {
    let size = batch.len();
    match apply_batch(store, batch, stats, seen).await {
        Ok(answers) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            if first {
                stats.first_batches.fetch_add(1, Ordering::Relaxed);
            }
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

type Failed = (StoreError, Vec<Box<dyn Answer>>);

/// One transaction over the batch. On failure returns the error and the
/// answers of the writes applied so far; writes not yet applied stay in
/// `batch`. `seen` is the connection's commit count after the task's last
/// transaction; commits since then were someone else's.
async fn apply_batch(
    store: &Store,
    batch: &mut Vec<Box<dyn Queued>>,
    stats: &WriterStats,
    seen: &mut u64,
) -> std::result::Result<Vec<Box<dyn Answer>>, Failed> {
    let t = std::time::Instant::now();
    let begun = store.write().await;
    add_elapsed(&stats.begin_us, t);
    let mut tx = match begun {
        Ok(tx) => tx,
        Err(e) => return Err((e, Vec::new())),
    };
    // The connection is this task's until the commit: nobody else's
    // commit can land between here and ours.
    let before = store.commits();
    stats
        .commits_outside
        .fetch_add(before.saturating_sub(*seen), Ordering::Relaxed);
    *seen = before;
    let t = std::time::Instant::now();
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
    add_elapsed(&stats.apply_us, t);
    let t = std::time::Instant::now();
    let committed = tx.commit().await;
    add_elapsed(&stats.commit_us, t);
    match committed {
        Ok(()) => {
            // exactly one commit of ours (savepoints fire no commit hook);
            // reading the count here could take in a commit made since the
            // connection went back to the pool
            *seen = before + 1;
            Ok(answers)
        }
        Err(e) => {
            // the hook may have fired before the commit failed
            *seen = store.commits();
            Err((e.into(), answers))
        }
    }
}

/// Adds the time since `t` to `counter`, in microseconds.
fn add_elapsed(counter: &AtomicU64, t: std::time::Instant) {
    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
    counter.fetch_add(us, Ordering::Relaxed);
}
