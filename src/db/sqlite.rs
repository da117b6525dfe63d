//! The SQLite backend: the embedded default. One file (WAL mode, `synchronous = FULL`), one
//! connection per process behind a mutex, schema migrations from `migrations/sqlite/`
//! recorded in `PRAGMA user_version`, every write one `BEGIN IMMEDIATE` transaction (so two
//! processes writing at once serialize on SQLite's lock, waiting up to the busy timeout
//! instead of failing).

use std::path::{Path, PathBuf};
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

pub(super) struct SqliteDb {
    conn: Mutex<Connection>,
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
        let db = Self::init(conn, Some(path.to_path_buf()));
        drop(lock);
        db
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
        Ok(SqliteDb { conn: Mutex::new(conn), path })
    }

    pub(super) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolled back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn transaction<T, E: StoreError>(
        &self,
        writing: bool,
        f: &mut impl FnMut(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn();
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
