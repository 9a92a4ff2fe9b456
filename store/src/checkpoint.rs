//! WAL checkpoints off the write path: a connection of its own copies
//! committed frames from the WAL into the database file a few times a
//! second, so the write connection's commits do not.
//!
//! SQLite's default has the connection that commits run the checkpoint
//! once the WAL holds 1,000 pages. A batch of results dirties more than
//! that, so every batch's commit also wrote its pages a second time into
//! the database file and synced it, on the writer, before the batch's
//! acknowledgements could go out: about 90 ms of each 256-result batch in
//! the capacity bench. A `PASSIVE` checkpoint from another connection
//! takes no write lock and waits for nobody; it copies what it can. The
//! write connection keeps an automatic checkpoint at a much larger WAL
//! ([`WRITER_AUTOCHECKPOINT_PAGES`]) as a safety net, should this task
//! fall behind or stop.

use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// The write connection's own automatic checkpoint, in pages (64 MiB of
/// WAL at 4 KiB pages): reached only when [`spawn`]'s task falls behind.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16 * 1024;

/// How often the task checkpoints.
const EVERY: Duration = Duration::from_millis(250);

/// Starts the checkpoint task on a connection of its own (read-write, as
/// checkpointing writes the database file). It ends when the returned
/// pool is closed ([`stop`]).
pub(crate) fn spawn(opts: SqliteConnectOptions) -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(opts);
    let p = pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = p.close_event() => return,
            }
            // (busy, frames in the WAL, frames copied)
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&p)
                .await
            {
                Ok((_, wal, copied)) => {
                    tracing::trace!(wal_frames = wal, copied, "checkpoint");
                }
                Err(_) if p.is_closed() => return,
                // the next tick tries again; the writer's own automatic
                // checkpoint is the safety net
                Err(e) => tracing::debug!(error = %e, "checkpoint failed"),
            }
        }
    });
    pool
}

/// Ends the checkpoint task without waiting for it: a checkpoint cut
/// short is harmless (the WAL keeps every committed frame, and the next
/// checkpoint or open copies them), and a role's shutdown must not wait
/// on a copy that a loaded disk makes slow.
pub(crate) fn stop(pool: &SqlitePool) {
    // marks the pool closed at once; the future only waits for its
    // connection to close
    drop(pool.close());
}
