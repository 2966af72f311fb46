//! The ledger's writes on SQLite: one thread with its own connection, committing in groups.
//!
//! Reservations, settlements and progress marks are most of what a busy server writes, each a
//! transaction of a few short statements. Through sqlx every statement is a round trip to a
//! worker thread, and the write lock is held across those round trips, so at a few hundred
//! requests a second the lock, not SQLite, sets the pace. Here one thread owns a rusqlite
//! connection and runs jobs in groups:
//! 1. it takes every job queued (up to [`MAX_GROUP`]) and this process's writer turn (the lock
//!    sqlx writers queue on), then `BEGIN IMMEDIATE` (which serialises other processes);
//! 2. each job runs inside its own savepoint: a refused or failed job undoes only itself;
//! 3. one `COMMIT`, and only then is every job answered, so no caller acts on a write that
//!    could still roll back. If the commit fails, every job in the group gets its error.
//!
//! The thread ends once [`LedgerWriter::stop`] is called or the writer is dropped, after the
//! jobs already queued.

use std::path::Path;
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{oneshot, Mutex};

use crate::error::{Result, StoreError};

/// The most jobs one transaction takes, so that the first in a group is not kept waiting long.
const MAX_GROUP: usize = 64;

/// One queued job: runs in the group's transaction, answers after the commit.
trait Job: Send {
    /// Runs the job's statements; whether it succeeded (if not, its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: `Ok` once the group committed, or why the group failed.
    fn answer(self: Box<Self>, group: std::result::Result<(), &str>);
}

struct Pending<T, F> {
    op: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let outcome = op(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, group: std::result::Result<(), &str>) {
        let failed = |why: &str| Err(StoreError::Sqlite(why.to_owned()));
        let answer = match (self.outcome, group) {
            // A refusal (or the job's own error) stands whatever the group did.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(why)) | (None, Err(why)) => failed(why),
            (None, Ok(())) => failed("the job was not run"),
        };
        // The caller may have gone away (its request was cancelled): nothing to tell.
        let _ = self.reply.send(answer);
    }
}

/// A handle to the writer thread. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(super) struct LedgerWriter {
    /// `None` once stopped.
    jobs: RwLock<Option<mpsc::Sender<Box<dyn Job>>>>,
}

impl LedgerWriter {
    /// Opens its own connection to the (already migrated) database at `path` and starts the
    /// thread. `turn` is the lock this process's other writers take before `BEGIN IMMEDIATE`.
    pub(super) fn start(path: &Path, busy_timeout: Duration, turn: Arc<Mutex<()>>) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        // Per-connection settings, the same as the pool's (see `SqliteStore::open`).
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-ledger".into())
            .spawn(move || serve(&conn, &queue, &turn))
            .map_err(|e| StoreError::Sqlite(format!("cannot start the ledger writer: {e}")))?;
        Ok(Self {
            jobs: RwLock::new(Some(jobs)),
        })
    }

    /// Takes no more jobs; the thread finishes the queued ones and closes its connection.
    pub(super) fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.write() {
            jobs.take();
        }
    }

    /// Runs `op` in the next group's transaction; its result once the group has committed.
    pub(super) async fn run<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            op: Some(op),
            outcome: None,
            reply,
        });
        let stopped = || StoreError::Sqlite("the store is closed".into());
        {
            let jobs = self.jobs.read().map_err(|_| stopped())?;
            jobs.as_ref()
                .ok_or_else(stopped)?
                .send(job)
                .map_err(|_| stopped())?;
        }
        answer.await.map_err(|_| stopped())?
    }
}

fn serve(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>, turn: &Mutex<()>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcome = {
            let _turn = turn.blocking_lock();
            run_group(conn, &mut group)
        };
        let failure = outcome.err().map(|e| {
            tracing::error!(error = %e, jobs = group.len(), "ledger group commit failed");
            e.to_string()
        });
        for job in group {
            job.answer(failure.as_deref().map_or(Ok(()), Err));
        }
    }
}

fn run_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    let result = (|| {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        for job in group.iter_mut() {
            conn.prepare_cached("SAVEPOINT job")?.execute([])?;
            if !job.run(conn) {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            }
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
        conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    })();
    if result.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "could not roll back a failed ledger group");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(conn: &Connection, name: &str) -> Result<()> {
        conn.execute("INSERT INTO t (name) VALUES (?1)", [name])?;
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_job_undoes_only_itself_and_the_group_commits_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (name TEXT)"))
            .expect("schema");
        let turn = Arc::new(Mutex::new(()));
        let writer = Arc::new(
            LedgerWriter::start(&path, Duration::from_secs(5), turn.clone()).expect("start"),
        );

        // Hold the turn so the thread waits with one job while three more queue behind it:
        // those three then run as one group.
        let held = turn.clone().lock_owned().await;
        let first = tokio::spawn({
            let w = writer.clone();
            async move { w.run(|c| insert(c, "first")).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let spawn = |name: &'static str, fail: bool| {
            let w = writer.clone();
            tokio::spawn(async move {
                w.run(move |c| {
                    insert(c, name)?;
                    let count: i64 = c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
                    if fail {
                        return Err(StoreError::Conflict(format!("{name} refused")));
                    }
                    Ok(count)
                })
                .await
            })
        };
        let (a, b, c) = (spawn("a", false), spawn("b", true), spawn("c", false));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);

        first.await.expect("task").expect("first");
        assert_eq!(a.await.expect("task").expect("a"), 2);
        assert!(matches!(b.await.expect("task"), Err(StoreError::Conflict(m)) if m == "b refused"));
        // `b`'s row was rolled back before `c` ran, in the same transaction as `a`'s.
        assert_eq!(c.await.expect("task").expect("c"), 3);
        let names: Vec<String> = {
            let conn = Connection::open(&path).expect("open");
            let mut stmt = conn
                .prepare("SELECT name FROM t ORDER BY rowid")
                .expect("prepare");
            let rows = stmt.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<rusqlite::Result<_>>().expect("rows")
        };
        assert_eq!(names, ["first", "a", "c"]);

        writer.stop();
        assert!(matches!(
            writer.run(|c| insert(c, "late")).await,
            Err(StoreError::Sqlite(m)) if m == "the store is closed"
        ));
    }
}
