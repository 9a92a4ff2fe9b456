//! Rewriting the database file in key order (SQLite's `VACUUM`), for
//! `restic-manager db-vacuum`.
//!
//! A store that grows a day at a time allocates each index's new pages
//! wherever the file ends, so the leaves of one index end up scattered
//! among every other table's. A burst of job results touches a leaf of
//! each per-host index for every host, and the checkpoint writes those
//! pages back where they are: scattered, they go to the disk as many
//! small writes. Rewritten in key order, each index's leaves lie
//! together again (docs/benchmarks.md, stop 61: on a 19,000-host store
//! the writer took a fifth less time a burst of results 30–32 bursts
//! after the rewrite; the first burst after it took longer, as the packed
//! leaves it touched split).
//!
//! `VACUUM` holds the write lock until it ends (37 s for a 3.4 GiB
//! store on a 2-core machine) and needs free disk for a second copy of
//! the file: run it with the services stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use crate::Result;

/// What [`vacuum`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vacuumed {
    /// The file's size before, in bytes (pages × page size) ...
    pub bytes_before: u64,
    /// ... of which free pages ...
    pub free_bytes_before: u64,
    /// ... and its size after.
    pub bytes_after: u64,
    /// How long the rewrite took.
    pub took: Duration,
}

/// Rewrites the database at `path` (which must exist: nothing is
/// created) in key order, then truncates its write-ahead log. Waits up
/// to `busy` for another connection's write to end; a store still busy
/// then is left as it was (SQLite's "database is locked").
pub async fn vacuum(path: &Path, busy: Duration) -> Result<Vacuumed> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy)
        // the rewrite is meant to be slow: no "slow statement" warning
        .disable_statement_logging()
        .connect()
        .await?;
    let (bytes_before, free_bytes_before) = size(&mut conn).await?;
    let started = Instant::now();
    sqlx::query("VACUUM").execute(&mut conn).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    let took = started.elapsed();
    let (bytes_after, _) = size(&mut conn).await?;
    conn.close().await?;
    Ok(Vacuumed {
        bytes_before,
        free_bytes_before,
        bytes_after,
        took,
    })
}

/// The file's size and its free pages' size, in bytes.
async fn size(conn: &mut sqlx::SqliteConnection) -> Result<(u64, u64)> {
    let page: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut *conn)
        .await?;
    let bytes = |n: i64| u64::try_from(n.saturating_mul(page)).unwrap_or(0);
    Ok((bytes(pages), bytes(free)))
}
