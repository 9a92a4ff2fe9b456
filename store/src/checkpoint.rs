//! WAL checkpoints off the write path: a thread of its own, with a
//! connection and a small runtime of its own, copies committed frames from
//! the WAL into the database file a few times a second, so the write
//! connection's commits do not.
//!
//! SQLite's default has the connection that commits run a checkpoint once
//! the WAL holds 1,000 pages. A batch of job results on a store with
//! history dirties more than that, so every batch's commit also wrote its
//! pages a second time, into the database file, and synced it, before the
//! batch's acknowledgements could go out: about half of each commit in the
//! capacity bench. A `PASSIVE` checkpoint from another connection takes no
//! write lock, never waits (SQLite does not call the busy handler for
//! it), and copies what it can. While the task runs, the write connection
//! checkpoints by itself only past [`WRITER_AUTOCHECKPOINT_PAGES`], a
//! safety net should the task fall behind.
//!
//! Nothing on the role's runtime waits for the thread: [`Checkpointer::stop`]
//! asks it to end and waits a bounded moment for it. A checkpoint cut short
//! by the process ending is harmless: the WAL keeps every committed frame,
//! and the next checkpoint or open copies them.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{oneshot, watch};

use crate::{Result, Store, StoreError};

/// The write connection's own automatic checkpoint while the task runs,
/// in pages (64 MiB of WAL at 4 KiB pages).
pub const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16 * 1024;

/// SQLite's default automatic checkpoint, in pages (restored when the
/// task stops).
const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 1000;

/// How often the task checkpoints.
pub const EVERY: Duration = Duration::from_millis(250);

/// How long [`Checkpointer::stop`] waits for the thread.
const STOP_PATIENCE: Duration = Duration::from_secs(2);

/// The running checkpoint thread of a store. Dropping it asks the thread
/// to end without waiting.
#[derive(Debug)]
pub struct Checkpointer {
    stop: watch::Sender<bool>,
    done: Option<oneshot::Receiver<()>>,
    store: Store,
}

impl Store {
    /// Starts checkpointing this store's database every [`EVERY`] on a
    /// thread of its own, and raises the write connection's own automatic
    /// checkpoint to [`WRITER_AUTOCHECKPOINT_PAGES`].
    pub async fn checkpoint_in_background(&self) -> Result<Checkpointer> {
        self.checkpoint_every(EVERY).await
    }

    /// [`Store::checkpoint_in_background`] with another period (tests).
    pub async fn checkpoint_every(&self, every: Duration) -> Result<Checkpointer> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&self.path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(1));
        set_autocheckpoint(self, WRITER_AUTOCHECKPOINT_PAGES).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        let path = self.path.clone();
        let spawned = std::thread::Builder::new()
            .name("rm-checkpoint".into())
            .spawn(move || {
                run(opts, every, stop_rx, &path);
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            set_autocheckpoint(self, SQLITE_AUTOCHECKPOINT_PAGES).await?;
            return Err(StoreError::NotCommitted(format!(
                "the checkpoint thread did not start: {e}"
            )));
        }
        Ok(Checkpointer {
            stop,
            done: Some(done),
            store: self.clone(),
        })
    }
}

async fn set_autocheckpoint(store: &Store, pages: u32) -> Result<()> {
    // (an integer of ours: PRAGMA takes no bound parameter)
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA wal_autocheckpoint = {pages}"
    )))
    .execute(&store.writer)
    .await?;
    Ok(())
}

/// The thread's body: its own single-threaded runtime and connection.
fn run(opts: SqliteConnectOptions, every: Duration, mut stop: watch::Receiver<bool>, path: &Path) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint thread; the write connection checkpoints past its safety net only");
            return;
        }
    };
    rt.block_on(async move {
        let mut conn = match opts.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(db = %path.display(), error = %e, "the checkpoint connection did not open");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep(every) => {}
            }
            // (busy, frames in the WAL, frames copied)
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut conn)
                .await
            {
                Ok((_, wal, copied)) => tracing::trace!(wal_frames = wal, copied, "checkpoint"),
                // the next round tries again; the writer's own automatic
                // checkpoint is the safety net
                Err(e) => tracing::debug!(error = %e, "checkpoint failed"),
            }
        }
        let _ = conn.close().await;
    });
}

impl Checkpointer {
    /// Ends the thread: waits for it at most a moment (a checkpoint in
    /// progress on a slow disk is left to finish on its own) and gives the
    /// write connection back SQLite's default automatic checkpoint.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(done) = self.done.take()
            && tokio::time::timeout(STOP_PATIENCE, done).await.is_err()
        {
            tracing::warn!("the checkpoint thread did not end in time; going on without it");
        }
        if let Err(e) = set_autocheckpoint(&self.store, SQLITE_AUTOCHECKPOINT_PAGES).await {
            tracing::debug!(error = %e, "the write connection's automatic checkpoint was not restored");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
