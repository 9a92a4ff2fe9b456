//! The writer task: queued writes share one transaction, a failing write
//! is rolled back alone, callers hear of success only after commit, and a
//! database that is locked for a while fails batches without ending the
//! task, which recovers by itself; commits made beside the task are
//! counted.

use std::time::Duration;

use rm_store::writer::{Waiter, WriteFuture, Writer, WriterStats};
use rm_store::{Store, StoreError, hosts};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("rm.db")).await.unwrap();
    (s, dir)
}

fn add_host(
    id: &'static str,
) -> impl for<'c> FnOnce(&'c mut rm_store::Conn) -> WriteFuture<'c, (), StoreError> + Send + 'static
{
    move |c| Box::pin(async move { hosts::insert(c, id, id, "test", 1).await })
}

async fn host_names(s: &Store) -> Vec<String> {
    let mut c = s.read().await.unwrap();
    let mut names: Vec<String> = hosts::names(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn writes_queued_together_share_one_commit_and_a_failing_one_is_rolled_back_alone() {
    let (s, _d) = store().await;
    let w = Writer::spawn(s.clone(), 64, 64);
    // Hold the write connection so all three queue behind it.
    let hold = s.write().await.unwrap();
    let a = w.submit(add_host("a")).await;
    let dup = w.submit(add_host("a")).await; // unique name: fails
    let b = w.submit(add_host("b")).await;
    drop(hold);
    a.outcome().await.unwrap();
    let err = dup.outcome().await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    b.outcome().await.unwrap();
    assert_eq!(host_names(&s).await, vec!["a", "b"]);
    assert_eq!(WriterStats::get(&w.stats().batches), 1, "one transaction");
    assert_eq!(WriterStats::get(&w.stats().writes), 2);
    assert_eq!(WriterStats::get(&w.stats().failed_writes), 1);
}

#[tokio::test]
async fn a_database_locked_by_another_process_fails_batches_and_the_writer_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rm.db");
    let s = Store::open(&path).await.unwrap();
    let other = Store::open(&path).await.unwrap();
    let w = Writer::spawn(s.clone(), 64, 64);
    // Another process holds the write lock longer than the busy timeout
    // would allow a test to wait: simulate with an exclusive transaction
    // and a short timeout on our side.
    let mut lock = other.pool().begin_with("BEGIN EXCLUSIVE").await.unwrap();
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(&mut *lock)
        .await
        .unwrap();
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(s.pool())
        .await
        .unwrap();
    let err = w.run(add_host("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotCommitted(_)), "{err}");
    assert_eq!(WriterStats::get(&w.stats().failed_batches), 1);
    lock.rollback().await.unwrap();
    // The same writer goes on: the next write commits.
    w.run(add_host("y")).await.unwrap();
    assert_eq!(host_names(&s).await, vec!["y"]);
    let _ = Duration::ZERO;
}

/// A write that records `label` in `order` when the writer applies it.
fn record(
    order: &std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    label: &'static str,
) -> impl for<'c> FnOnce(&'c mut rm_store::Conn) -> WriteFuture<'c, (), StoreError> + Send + 'static
{
    let order = order.clone();
    move |c| {
        Box::pin(async move {
            order.lock().unwrap().push(label);
            hosts::insert(c, label, label, "test", 1).await
        })
    }
}

/// A write that tells `started` once the writer is inside it, then waits
/// for `gate`: the writer is busy with it until the test opens the gate.
fn held(
    order: &std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    started: tokio::sync::oneshot::Sender<()>,
    gate: tokio::sync::oneshot::Receiver<()>,
) -> impl for<'c> FnOnce(&'c mut rm_store::Conn) -> WriteFuture<'c, (), StoreError> + Send + 'static
{
    let write = record(order, "being written");
    move |c| {
        Box::pin(async move {
            let _ = started.send(());
            let _ = gate.await;
            write(c).await
        })
    }
}

#[tokio::test]
async fn an_operators_write_goes_ahead_of_a_pending_batch_of_results_in_its_own_commit() {
    let (s, _d) = store().await;
    let w = Writer::spawn(s.clone(), 64, 64);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (started, inside) = tokio::sync::oneshot::channel();
    let (open, gate) = tokio::sync::oneshot::channel();
    // The writer is busy with one batch ...
    let busy = w.submit(held(&order, started, gate)).await;
    inside.await.unwrap();
    // ... while results queue behind it, then an operator's click.
    let results = w.submit(record(&order, "results")).await;
    let click = w.submit_first(record(&order, "operator")).await;
    open.send(()).unwrap();
    click.outcome().await.unwrap();
    busy.outcome().await.unwrap();
    results.outcome().await.unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        vec!["being written", "operator", "results"],
        "the operator's write waited for the pending results"
    );
    assert_eq!(WriterStats::get(&w.stats().batches), 3, "three commits");
    assert_eq!(WriterStats::get(&w.stats().first_batches), 1);
}

#[tokio::test]
async fn shutdown_applies_and_answers_every_queued_write_then_refuses_new_ones() {
    let (s, _d) = store().await;
    let w = Writer::spawn(s.clone(), 64, 64);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (started, inside) = tokio::sync::oneshot::channel();
    let (open, gate) = tokio::sync::oneshot::channel();
    let busy = w.submit(held(&order, started, gate)).await;
    inside.await.unwrap();
    let queued = [
        w.submit(record(&order, "a")).await,
        w.submit_first(record(&order, "b")).await,
        w.submit(record(&order, "c")).await,
    ];
    // Stop asked while all of that waits (the task is inside `busy`).
    w.stop();
    open.send(()).unwrap();
    w.shutdown().await;
    busy.outcome().await.unwrap();
    for p in queued {
        p.outcome().await.unwrap();
    }
    assert_eq!(
        host_names(&s).await,
        vec!["a", "b", "being written", "c"],
        "every write queued before the shutdown is on record"
    );
    let late = w.run(add_host("late")).await.unwrap_err();
    assert!(matches!(late, StoreError::NotCommitted(_)), "{late}");
    let late = w.run_first(add_host("late")).await.unwrap_err();
    assert!(matches!(late, StoreError::NotCommitted(_)), "{late}");
}

#[tokio::test]
async fn a_commit_made_beside_the_writer_is_counted_as_outside_and_its_own_are_not() {
    let (s, _d) = store().await;
    let w = Writer::spawn(s.clone(), 64, 64);
    w.run(add_host("a")).await.unwrap();
    w.run(add_host("b")).await.unwrap();
    assert_eq!(WriterStats::get(&w.stats().commits_outside), 0);
    // A write that bypasses the writer, on the same connection.
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "c", "c", "test", 1).await.unwrap();
    tx.commit().await.unwrap();
    // Counted when the writer next holds the connection.
    assert_eq!(WriterStats::get(&w.stats().commits_outside), 0);
    w.run(add_host("d")).await.unwrap();
    assert_eq!(WriterStats::get(&w.stats().commits_outside), 1);
    w.run(add_host("e")).await.unwrap();
    assert_eq!(WriterStats::get(&w.stats().commits_outside), 1);
    assert_eq!(WriterStats::get(&w.stats().batches), 4);
    assert_eq!(host_names(&s).await, vec!["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn an_operators_queued_write_and_another_roles_waiting_transaction_both_count_as_someone_waiting_told_apart()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rm.db");
    // two roles of one process sharing the write connection, as in `serve`
    let cp = Store::open_shared(&path).await.unwrap();
    let alerts = Store::open_shared(&path).await.unwrap();
    let w = Writer::spawn(cp.clone(), 64, 64);
    assert_eq!(w.waiting(), None, "nobody waits yet");

    // The other role waits for the connection the first one holds.
    let hold = cp.write().await.unwrap();
    let other = tokio::spawn(async move {
        let tx = alerts.write().await.unwrap();
        tx.commit().await.unwrap();
        alerts
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cp.writes_waiting() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other role never waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        w.waiting(),
        Some(Waiter::OtherRole),
        "another role's transaction waits"
    );

    // An operator's write queued in the first lane behind the held one
    // (read before this test's task yields: the writer task has not run).
    let click = w.submit_first(add_host("click")).await;
    assert_eq!(w.first_queued(), 1);
    assert_eq!(
        w.waiting(),
        Some(Waiter::FirstLane),
        "the operator's write is named before the other role, which still waits"
    );
    drop(hold);
    let alerts = other.await.unwrap();
    click.outcome().await.unwrap();
    assert_eq!(cp.writes_waiting(), 0);
    assert_eq!(w.first_queued(), 0);
    assert_eq!(w.waiting(), None);
    w.shutdown().await;
    alerts.close_shared().await;
    cp.close_shared().await;
}
