//! The SQLite backend: the embedded default. One file (WAL mode, `synchronous = FULL`), one
//! writing connection per process behind a mutex, schema migrations from `migrations/sqlite/`
//! recorded in `PRAGMA user_version`, every write one `BEGIN IMMEDIATE` transaction (so two
//! processes writing at once serialize on SQLite's lock, waiting up to the busy timeout
//! instead of failing). Read transactions run on a few connections of their own (two per
//! core), so reads neither wait for each other nor for a write's commit: each sees the
//! snapshot of the last commit before it began (WAL), never a write in progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::{Error, Row, RowInner, StoreError, ToValue, Tx, TxInner, Value};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_tracking.sql"),
    include_str!("../../migrations/sqlite/0003_metric_datasets.sql"),
    include_str!("../../migrations/sqlite/0004_server_settings.sql"),
    include_str!("../../migrations/sqlite/0005_webhooks.sql"),
];

/// How many schema versions this build knows (the PostgreSQL list has as many).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Read connections per database file: two per core, at least 4 and at most 8 (reads run on
/// the blocking pool, several at once).
const MIN_READERS: usize = 4;
const MAX_READERS: usize = 8;

pub(super) struct SqliteDb {
    /// Writes, and reads too when there are no `readers` (an in-memory database, which a
    /// second connection would not see).
    conn: Mutex<Connection>,
    /// Read-only (`PRAGMA query_only`) connections to the same file, for read transactions.
    readers: Vec<Mutex<Connection>>,
    /// Where the next read starts looking for a free reader.
    next_reader: AtomicUsize,
    path: Option<PathBuf>,
}

impl SqliteDb {
    pub(super) fn open(path: &Path) -> Result<SqliteDb, Error> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        // Opening switches a fresh database to WAL and runs the migrations, and SQLite answers
        // "database is locked" at once (without waiting on busy_timeout) to a second process
        // doing the same at that moment: replicas started together take turns on a lock file
        // beside the database (flock; released when the file closes, also when a process dies).
        let lock_path = path.with_extension("db-migrate.lock");
        // A folder this process cannot write to gets no lock (SQLite will say what it can do).
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).ok();
        if let Some(file) = &lock {
            file.lock().map_err(|e| Error::Config(format!("cannot lock {}: {e}", lock_path.display())))?;
        }
        let conn = Connection::open(path)?;
        let mut db = Self::init(conn, Some(path.to_path_buf()))?;
        drop(lock);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for _ in 0..(2 * cores).clamp(MIN_READERS, MAX_READERS) {
            let reader = Connection::open(path)?;
            reader.busy_handler(Some(reader_busy))?;
            reader.set_prepared_statement_cache_capacity(128);
            reader.execute_batch("PRAGMA query_only = ON;")?;
            db.readers.push(Mutex::new(reader));
        }
        Ok(db)
    }

    pub(super) fn open_in_memory() -> Result<SqliteDb, Error> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteDb, Error> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(128);
        if path.is_some() {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(mode, "SQLite did not switch to WAL mode");
            }
        }
        // FULL: a write acknowledged to a client survives a power loss too (in WAL mode NORMAL can
        // roll back the last commits, and with them acknowledged version numbers). Registry
        // writes are rare; scoring never writes.
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if applied as usize > MIGRATIONS.len() {
            return Err(Error::Config(format!(
                "the registry database has schema version {applied}, newer than this regserve knows ({}); upgrade regserve",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        tx.commit()?;
        Ok(SqliteDb { conn: Mutex::new(conn), readers: Vec::new(), next_reader: AtomicUsize::new(0), path })
    }

    pub(super) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolled back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for a read transaction: the first free reader, else the next one in turn
    /// (waiting for it), else — without readers — the writing connection.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.conn();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn transaction<T, E: StoreError>(
        &self,
        writing: bool,
        f: &mut impl FnMut(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = if writing { self.conn() } else { self.reader() };
        let behavior = if writing { TransactionBehavior::Immediate } else { TransactionBehavior::Deferred };
        let tx = conn.transaction_with_behavior(behavior).map_err(Error::from)?;
        let tx = Tx { inner: TxInner::Sqlite(tx), writing };
        let out = f(&tx)?;
        if let TxInner::Sqlite(tx) = tx.inner {
            if writing {
                tx.commit().map_err(Error::from)?;
            }
        }
        Ok(out)
    }
}

/// A reader's busy handler: as the writer's 10 s busy timeout.
fn reader_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_millis(if attempt < 10 { 1 } else { 10 }));
    attempt < 1_000
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

pub(super) fn execute(tx: &rusqlite::Transaction<'_>, sql: &str, params: &[&dyn ToValue]) -> Result<usize, Error> {
    let values = bind(params);
    let mut stmt = tx.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?)
}

pub(super) fn for_each(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: &[&dyn ToValue],
    mut f: impl FnMut(&Row<'_>) -> Result<bool, Error>,
) -> Result<(), Error> {
    let values = bind(params);
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
    while let Some(r) = rows.next()? {
        if !f(&Row { inner: RowInner::Sqlite(r) })? {
            break;
        }
    }
    Ok(())
}

pub(super) fn column(row: &rusqlite::Row<'_>, idx: usize) -> Result<Value, Error> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec()).map_err(|_| Error::Conversion(format!("column {idx} is not UTF-8")))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Database, DatabaseUri, PoolOptions};
    use super::*;
    use crate::params;

    fn file_db(dir: &tempfile::TempDir) -> Database {
        let db = Database::open(&DatabaseUri::Sqlite(dir.path().join("r.db")), &PoolOptions::default()).unwrap();
        db.write(|tx| {
            tx.execute_batch("CREATE TABLE n (x INTEGER PRIMARY KEY); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) INSERT INTO n SELECT x FROM c;")
        })
        .unwrap();
        db
    }

    fn count(db: &Database, below: i64) -> Result<i64, Error> {
        db.read(|tx| tx.query_row("SELECT COUNT(*) FROM n WHERE x < ?1", params![below], |r| r.get(0)))
    }

    #[test]
    fn readers_see_every_commit_and_never_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir);
        let SqliteBackend(sqlite) = backend(&db);
        assert!(sqlite.readers.len() >= 2);
        std::thread::scope(|s| {
            let (started_tx, started) = std::sync::mpsc::channel();
            let (go_on_tx, go_on) = std::sync::mpsc::channel::<()>();
            let db = &db;
            let writer = s.spawn(move || {
                db.write(|tx| {
                    tx.execute("INSERT INTO n VALUES (-1)", params![])?;
                    started_tx.send(()).unwrap();
                    go_on.recv().unwrap();
                    tx.execute("INSERT INTO n VALUES (-2)", params![])
                })
                .unwrap();
            });
            started.recv().unwrap();
            // Mid-write: the readers answer at once, from the last commit.
            assert_eq!(count(db, 0).unwrap(), 0);
            go_on_tx.send(()).unwrap();
            writer.join().unwrap();
        });
        assert_eq!(count(&db, 0).unwrap(), 2);
    }

    struct SqliteBackend<'a>(&'a SqliteDb);

    fn backend(db: &Database) -> SqliteBackend<'_> {
        match &db.backend {
            super::super::Backend::Sqlite(s) => SqliteBackend(s),
            super::super::Backend::Postgres(_) => unreachable!("a file database is SQLite"),
        }
    }
}
