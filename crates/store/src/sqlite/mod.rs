//! The SQLite store: one file in WAL mode. Writers serialise on `BEGIN IMMEDIATE`, which also
//! serialises processes sharing the file. Within a process they first queue on an async lock,
//! so that a waiting writer sleeps on a future that wakes when the lock is free rather than in
//! SQLite's busy handler, which polls with sleeps of 1 ms and more while the lock sits idle.
//!
//! Two drivers share the file: sqlx's pool for reads and the less frequent writes, and the
//! ledger writer's own rusqlite connection (`writer`) for the ledger's writes, which it commits
//! in groups. Both take the same in-process lock before they write.

mod exec;
mod ledger;
mod ledger_writes;
mod limits;
mod rows;
mod writer;

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Result, StoreError};
use crate::Store;
use writer::LedgerWriter;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for the database lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Checkpoints the WAL without blocking writers or readers (`PASSIVE`) until the pool closes.
async fn checkpoint_every(pool: SqlitePool, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "SQLite WAL checkpoint failed; will retry");
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// This process's turn to write (see the module docs).
    writer: Arc<Mutex<()>>,
    ledger: Arc<LedgerWriter>,
    /// The directory of a `sqlite::memory:` database, removed with the last handle.
    _scratch: Option<Arc<tempfile::TempDir>>,
}

/// A write transaction and this process's writer turn, held until it is committed or dropped
/// (a dropped transaction rolls back). Derefs to the connection, like `&mut *transaction`.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(super) async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// Writes a consistent copy of the SQLite database at `url` (`sqlite://PATH`) to `dest`
/// (`VACUUM INTO`), while other connections go on reading and writing it: the copy is the
/// database as of one transaction. `dest` must not exist. Blocking.
pub fn snapshot(url: &str, dest: &std::path::Path) -> Result<()> {
    let options = SqliteConnectOptions::from_str(url)?;
    let source = options.get_filename();
    if !source.exists() {
        return Err(StoreError::Sqlite(format!(
            "there is no database at {}",
            source.display()
        )));
    }
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let dest = dest
        .to_str()
        .ok_or_else(|| StoreError::Sqlite(format!("{} is not UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}

impl SqliteStore {
    /// Opens `sqlite://PATH`, creating the file if missing, and migrates it. `sqlite::memory:`
    /// gives a private database that lives as long as the store: a file in a scratch
    /// directory, because the ledger writer needs a second connection to the same database.
    pub async fn open(url: &str) -> Result<Self> {
        let scratch = if url.contains(":memory:") {
            let dir = tempfile::Builder::new()
                .prefix("flywheel-sqlite-")
                .tempdir()
                .map_err(StoreError::Scratch)?;
            Some(Arc::new(dir))
        } else {
            None
        };
        let options = match &scratch {
            Some(dir) => SqliteConnectOptions::new().filename(dir.path().join("flywheel.db")),
            None => SqliteConnectOptions::from_str(url)?,
        };
        // Checkpoints (copying the WAL back into the file, with an fsync) run on a timer
        // (`checkpoint_every`), not inside whichever request's commit crosses the WAL's size
        // threshold: in a commit they cost that request 10 ms and more.
        let options = options
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("wal_autocheckpoint", "0")
            // Deleted rows are overwritten with zeros, not left in free space: a deleted
            // response or a removed tenant's data is gone from the file (see `scrub_files`).
            .pragma("secure_delete", "ON");
        // A local file's connection does not go stale: no ping before each use.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        tokio::spawn(checkpoint_every(pool.clone(), CHECKPOINT_INTERVAL));
        let writer = Arc::new(Mutex::new(()));
        let ledger = LedgerWriter::start(options.get_filename(), BUSY_TIMEOUT, writer.clone())?;
        Ok(Self {
            pool,
            writer,
            ledger: Arc::new(ledger),
            _scratch: scratch,
        })
    }

    /// A write transaction holding the database's write lock from its first statement, so a
    /// read-then-write cannot interleave with another writer.
    async fn write(&self) -> Result<WriteTx> {
        let turn = self.writer.clone().lock_owned().await;
        Ok(WriteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _turn: turn,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        self.ledger.run(|_| Ok(())).await
    }

    async fn close(&self) {
        self.ledger.stop();
        self.pool.close().await;
    }
}
