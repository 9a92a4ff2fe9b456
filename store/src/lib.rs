//! restic-manager's SQLite store: the schema (embedded migrations applied
//! at open) and typed queries, one module per table family.
//!
//! One writer per table (see ARCHITECTURE.md): the control plane writes
//! hosts, repositories, schedules, jobs and repository state; the alerts
//! role writes alerts, channels and the delivery outbox; the web role writes
//! users, sessions and tokens; every role appends to the audit log. Writes
//! that span statements use [`Store::write`] (`BEGIN IMMEDIATE`), so two
//! processes on one file never deadlock upgrading a read lock.
//!
//! Each [`Store`] holds one write connection (a pool of one: writers of a
//! role queue in the process instead of busy-waiting on SQLite's lock) and
//! a separate pool of read-only connections for [`Store::read`]. A role's
//! [`writer::Writer`] task batches queued writes into one transaction.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

#[macro_use]
mod columns;
pub mod alerts;
pub mod api_tokens;
pub mod audit;
pub mod channels;
pub mod cpbackup;
pub mod delivery;
pub mod enroll;
pub mod fleet;
pub mod health;
pub mod hosts;
pub mod jobs;
pub mod listing;
mod migrate;
pub mod mutes;
/// Every table with the column list its queries read (for tests).
#[doc(hidden)]
pub use columns::ALL as COLUMN_LISTS;
pub use migrate::count as migration_count;
pub use migrate::latest_version as schema_version;
pub mod parts;
pub mod recovery;
pub mod refresh;
pub mod rejected;
pub mod repos;
pub mod results;
pub mod retention;
pub mod schedules;
pub mod secrets;
pub mod seed;
pub mod sessions;
pub mod snapshots;
pub mod stats;
pub mod tags;
pub mod throttle;
pub mod users;
pub mod vacuum;
pub mod worker_state;
pub mod writer;

pub use sqlx::SqliteConnection as Conn;

/// A write transaction (`BEGIN IMMEDIATE`).
pub type Tx = Transaction<'static, Sqlite>;

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The batch this write was part of did not commit (the database was
    /// busy, read-only, full ...): nothing of it was written.
    #[error("not committed: {0}")]
    NotCommitted(String),
}

impl StoreError {
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }

    /// True for a UNIQUE / PRIMARY KEY violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Turns `Option<T>` from a lookup into a typed NotFound.
pub trait FoundExt<T> {
    fn found(self, what: &'static str, id: &str) -> Result<T>;
}

impl<T> FoundExt<T> for Option<T> {
    fn found(self, what: &'static str, id: &str) -> Result<T> {
        self.ok_or_else(|| StoreError::not_found(what, id))
    }
}

/// The shared SQLite store: one write connection, a read-only pool.
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Transactions committed on the write connection (an SQLite commit
    /// hook counts them, whoever began them).
    commits: Arc<AtomicU64>,
    /// Transactions waiting to begin on the write connection
    /// ([`Store::write`]), whichever role of the process asked.
    waiting: Arc<AtomicUsize>,
    /// The file, when the write connection is shared ([`Store::open_shared`]).
    shared: Option<std::path::PathBuf>,
}

/// Counts a transaction waiting to begin for as long as it lives (also
/// when its future is dropped while waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Read-only connections per store.
const READERS: u32 = 4;

/// The write connection's page cache, in KiB (SQLite's `cache_size`; a
/// negative pragma value is KiB). SQLite's default, 2 MiB, is less than
/// one batch of results dirties once the tables outgrow it (256 finishes
/// touch a page of each of the jobs table's indexes per job): the cache
/// can then spill dirty pages into the WAL in the middle of the
/// transaction and read them back (not measured on its own here). Pages
/// are allocated as used, so a small database never takes this much.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// Each read connection's page cache, in KiB (see [`WRITER_CACHE_KIB`]).
const READER_CACHE_KIB: u32 = 8 * 1024;

/// Write connections shared by the roles of one process, per database
/// file ([`Store::open_shared`]).
static SHARED_WRITERS: std::sync::Mutex<Vec<SharedWriter>> = std::sync::Mutex::new(Vec::new());

struct SharedWriter {
    path: std::path::PathBuf,
    writer: SqlitePool,
    commits: Arc<AtomicU64>,
    waiting: Arc<AtomicUsize>,
    holders: usize,
}

fn shared_writers() -> std::sync::MutexGuard<'static, Vec<SharedWriter>> {
    SHARED_WRITERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if missing) the database at `path`: WAL,
    /// `synchronous=FULL` (a commit is on disk when it returns: results are
    /// acknowledged after commit and then deleted on the agent, so a commit
    /// must survive power loss; commits are batched, so this is cheap), busy
    /// timeout, foreign keys on; applies pending migrations.
    ///
    /// Safe to race: roles starting together on an empty data dir all open
    /// the new file at once, and switching a fresh file to WAL can answer
    /// "database is locked" without waiting on the busy timeout, so a busy
    /// first open is retried (with a little jitter) until [`OPEN_PATIENCE`].
    pub async fn open(path: &Path) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
        let mut attempt: u32 = 0;
        loop {
            match Self::open_once(path).await {
                Err(StoreError::Db(e)) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "database busy while opening; retrying");
                    tokio::time::sleep(open_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<Self> {
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"));
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                let counter = counter.clone();
                Box::pin(async move {
                    conn.lock_handle().await?.set_commit_hook(move || {
                        counter.fetch_add(1, Ordering::Relaxed);
                        true // let the commit go on
                    });
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        if let Err(e) = migrate::apply(&writer).await {
            writer.close().await;
            return Err(e);
        }
        // The file exists and is in WAL mode now; readers never write.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_lazy_with(
                base.read_only(true)
                    .pragma("cache_size", format!("-{READER_CACHE_KIB}")),
            );
        Ok(Self {
            writer,
            reader,
            commits,
            waiting: Arc::default(),
            shared: None,
        })
    }

    /// [`Store::open`], sharing one write connection among the roles of
    /// this process that open the same file this way (`serve` runs the
    /// control plane, alerts and web roles together). Each role keeps its
    /// own read connections and its own writer task; their transactions
    /// queue for the one connection in the process instead of contending
    /// for SQLite's file lock, whose busy handler sleeps (1 to 100 ms per
    /// try) while the other role's transaction runs. Closed by
    /// [`Store::close_shared`] when its last holder closes it.
    pub async fn open_shared(path: &Path) -> Result<Self> {
        let mut store = Self::open(path).await?;
        let key = std::fs::canonicalize(path).map_err(|e| StoreError::Corrupt {
            what: "database path",
            detail: format!("{}: {e}", path.display()),
        })?;
        store.shared = Some(key.clone());
        let own = {
            let mut shared = shared_writers();
            match shared.iter_mut().find(|w| w.path == key) {
                Some(w) => {
                    w.holders += 1;
                    store.commits = w.commits.clone();
                    store.waiting = w.waiting.clone();
                    Some(std::mem::replace(&mut store.writer, w.writer.clone()))
                }
                None => {
                    shared.push(SharedWriter {
                        path: key,
                        writer: store.writer.clone(),
                        commits: store.commits.clone(),
                        waiting: store.waiting.clone(),
                        holders: 1,
                    });
                    None
                }
            }
        };
        if let Some(own) = own {
            own.close().await;
        }
        Ok(store)
    }

    /// Closes a store from [`Store::open_shared`]: its read connections,
    /// and the write connection once no other role holds it.
    pub async fn close_shared(&self) {
        self.reader.close().await;
        let last = {
            let mut shared = shared_writers();
            let found = shared
                .iter()
                .position(|w| Some(&w.path) == self.shared.as_ref());
            match found {
                Some(i) if shared[i].holders > 1 => {
                    shared[i].holders -= 1;
                    false
                }
                Some(i) => {
                    shared.remove(i);
                    true
                }
                None => true,
            }
        };
        if last {
            self.writer.close().await;
        }
    }

    /// Transactions committed on this store's write connection so far
    /// (each one a sync to disk when it wrote something): every write of
    /// the role, through its writer task or not.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The write pool (one connection). Reads belong on [`Store::read`].
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Starts a write transaction that takes the write lock up front, on
    /// the store's one write connection.
    pub async fn write(&self) -> Result<Tx> {
        let _waiting = Waiting::on(&self.waiting);
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Transactions waiting to begin on the write connection right now
    /// ([`Store::write`]), in every role sharing it: a long write that runs
    /// in parts ends early when someone waits.
    pub fn writes_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A read-only connection (writes through it fail).
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        Ok(self.reader.acquire().await?)
    }

    /// The database's schema version when another process (a newer
    /// build) migrated it past this build's, else `None`. Queries name
    /// their columns, so they keep working meanwhile; a role stops with a
    /// clear error when it sees this rather than run on a schema it does
    /// not know.
    pub async fn newer_schema(&self) -> Result<Option<i64>> {
        let mut c = self.read().await?;
        let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *c)
            .await?;
        Ok((v > schema_version()).then_some(v))
    }

    /// Ends (with the reason, a [`StoreError::Conflict`]) once another
    /// process migrated the database past this build's schema, looking
    /// every `every`; a failed look is logged and retried. A role selects
    /// on it beside its loops, so it stops with a clear error instead of
    /// running on a schema it does not know.
    pub async fn schema_overtaken(&self, every: Duration) -> StoreError {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.newer_schema().await {
                Ok(Some(v)) => {
                    return StoreError::Conflict(format!(
                        "the database was migrated to schema version {v} by a newer restic-manager; this build knows up to {}: upgrade this role",
                        schema_version()
                    ));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "schema version not checked; retrying"),
            }
        }
    }

    /// Writes a consistent copy of the live database to `dest` (which must
    /// not exist) with SQLite's `VACUUM INTO`: one read transaction on a
    /// read-only connection, so the copy is one committed state, running
    /// roles keep writing meanwhile, and no WAL file is copied half-way.
    pub async fn vacuum_into(&self, dest: &Path) -> Result<()> {
        let target = dest.to_str().ok_or_else(|| {
            StoreError::Conflict(format!("{} is not a UTF-8 path", dest.display()))
        })?;
        let mut c = self.read().await?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// The schema version of the database file at `path`, read without
/// migrating it (0 for a file with no migrations recorded).
pub async fn file_schema_version(path: &Path) -> Result<i64> {
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .read_only(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let v = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&pool)
        .await;
    pool.close().await;
    Ok(v?)
}

/// `PRAGMA integrity_check` of the database file at `path`: `Ok` when
/// SQLite answers "ok", else what it found.
pub async fn file_integrity_check(path: &Path) -> Result<()> {
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .read_only(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let rows: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&pool)
        .await;
    pool.close().await;
    let rows = rows?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            what: "database",
            detail: rows.join("; "),
        })
    }
}

/// How long [`Store::open`] keeps retrying a busy first open.
pub const OPEN_PATIENCE: Duration = Duration::from_secs(30);

/// 5..=55 ms, growing with the attempt, jittered so racing openers spread.
fn open_backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let base = 5 + 10 * u64::from(attempt.min(4));
    Duration::from_millis(base + u64::from(nanos % 16))
}

/// True for SQLITE_BUSY / SQLITE_LOCKED (and their extended codes).
pub fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Serializes a value for a JSON column.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Our column types are plain data; serialization cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// Parses a JSON column, naming it in the error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// Read-only escape hatch for tests and diagnostics: one text column of
/// every row a fixed query returns.
pub mod raw {
    use sqlx::SqliteConnection;

    pub async fn fetch_strings(
        conn: &mut SqliteConnection,
        sql: &'static str,
    ) -> crate::Result<Vec<String>> {
        Ok(sqlx::query_scalar(sql).fetch_all(conn).await?)
    }
}
