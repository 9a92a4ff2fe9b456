//! The checkpoint thread: committed pages reach the database file through
//! it rather than through the commit, and it stops when asked.

use std::path::Path;
use std::time::Duration;

use super::store;

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Commits about 3,000 pages (12 MiB) in one transaction.
async fn commit_many_pages(s: &rm_store::Store) {
    let mut tx = s.write().await.unwrap();
    let value = "x".repeat(4000);
    for i in 0..3000 {
        sqlx::query("INSERT INTO worker_state (name, value, updated_at) VALUES (?, ?, 0)")
            .bind(format!("bulk-{i}"))
            .bind(&value)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn autocheckpoint(s: &rm_store::Store) -> i64 {
    let mut tx = s.write().await.unwrap();
    let n: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    n
}

/// Copies the WAL into the file and empties it, on a connection of the
/// test's own: the file's size is then the baseline.
async fn truncate_wal(db: &Path) {
    use sqlx::{ConnectOptions, Connection};
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    let _: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

/// Without the thread the commit itself copies a batch past SQLite's
/// 1,000-page threshold into the file (and syncs it): the control for the
/// test below.
#[tokio::test]
async fn without_the_checkpoint_thread_the_commit_copies_its_pages_into_the_file() {
    let (s, dir) = store().await;
    let db = dir.path().join("rm.db");
    truncate_wal(&db).await;
    let before = file_size(&db);
    commit_many_pages(&s).await;
    assert!(
        file_size(&db) > before + 10 * 1024 * 1024,
        "{} -> {}",
        before,
        file_size(&db)
    );
    s.close().await;
}

/// With the thread running, a commit of 3,000 pages leaves the file as it
/// was (the pages are in the WAL, synced); the thread copies them in
/// within moments. The write connection's own automatic checkpoint is the
/// safety net at 64 MiB meanwhile, and SQLite's default again once the
/// thread has stopped.
#[tokio::test]
async fn committed_pages_reach_the_file_through_the_checkpoint_thread_not_the_commit() {
    let (s, dir) = store().await;
    let db = dir.path().join("rm.db");
    truncate_wal(&db).await;
    let before = file_size(&db);
    // a long period: nothing is copied before the commit below is done
    let cp = s.checkpoint_every(Duration::from_secs(3)).await.unwrap();
    assert_eq!(
        autocheckpoint(&s).await,
        i64::from(rm_store::checkpoint::WRITER_AUTOCHECKPOINT_PAGES)
    );
    commit_many_pages(&s).await;
    assert_eq!(file_size(&db), before, "the commit copied its pages");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while file_size(&db) <= before + 10 * 1024 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the thread did not copy the pages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.stop().await;
    assert_eq!(autocheckpoint(&s).await, 1000);
    // the store still works and closes
    let mut c = s.read().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM worker_state WHERE name LIKE 'bulk-%'")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(n, 3000);
    drop(c);
    s.close().await;
}
