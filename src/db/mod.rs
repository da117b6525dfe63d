//! The database under the registry and the tracking store: one small API — transactions,
//! statements with bound [`Value`]s, rows — over two backends.
//!
//! - [`sqlite`]: the embedded default; one file in the data dir, WAL, one connection per
//!   process, every write one `BEGIN IMMEDIATE` transaction (processes serialize on SQLite's
//!   lock).
//! - [`postgres`]: a database server shared by several `regserve server` replicas and the
//!   `serve` daemons that follow them; a connection pool, retries of serialization failures
//!   and dropped connections, and `LISTEN/NOTIFY` for registry changes.
//!
//! The stores above write their SQL once, in the dialect both databases accept (`?N`
//! placeholders, `INSERT … ON CONFLICT … DO UPDATE`, `RETURNING`); the PostgreSQL backend
//! renumbers placeholders. Where the dialects differ (SQLite's `GLOB`), [`Tx::dialect`] says
//! which one runs. Schemas live in `migrations/sqlite/` and `migrations/postgres/`, twins
//! checked against each other by `tests/python/test_postgres_schema.py`.

pub mod postgres;
pub mod sqlite;
mod value;

use std::path::PathBuf;

pub use value::{FromValue, ToValue, Value};

/// Bind parameters for [`Tx`]'s statements: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::db::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::db::ToValue),+] as &[&dyn $crate::db::ToValue]
    };
}
pub use crate::params;

/// A list of values as bind parameters (for statements built at run time).
pub fn params_from(values: &[Value]) -> Vec<&dyn ToValue> {
    values.iter().map(|v| v as &dyn ToValue).collect()
}

/// What went wrong in the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An error PostgreSQL reported (`code` is its SQLSTATE), or the connection failed.
    #[error("{message}")]
    Postgres { code: Option<String>, message: String, connection_lost: bool },
    /// The database could not be reached (connect refused, pool exhausted for too long).
    #[error("{0}")]
    Unavailable(String),
    /// A statement that must return a row returned none.
    #[error("query returned no rows")]
    NoRows,
    /// A column did not hold the type the code reads it as.
    #[error("column type mismatch: {0}")]
    Conversion(String),
    /// The database's schema is newer than this regserve, or its URI is not usable.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Worth running the transaction again: a serialization failure or deadlock victim, a
    /// busy SQLite, or a connection that dropped before the commit was sent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres { code, connection_lost, .. } => {
                *connection_lost || matches!(code.as_deref(), Some("40001" | "40P01"))
            }
            Error::Unavailable(_) => true,
            _ => false,
        }
    }

    /// A UNIQUE or PRIMARY KEY constraint refused the row.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres { code, .. } => code.as_deref() == Some("23505"),
            _ => false,
        }
    }
}

/// Errors of the stores above, which carry a database [`Error`] inside: lets [`Database`]
/// see through them to retry what is worth retrying.
pub trait StoreError: From<Error> {
    fn db_error(&self) -> Option<&Error>;
}

impl StoreError for Error {
    fn db_error(&self) -> Option<&Error> {
        Some(self)
    }
}

/// Which SQL the connection speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Where the database is: `--backend-store-uri` / `--registry-uri` parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUri {
    /// An SQLite file (created with its folder when missing).
    Sqlite(PathBuf),
    /// A private in-memory SQLite database, for tests.
    Memory,
    /// A PostgreSQL connection URI (`postgresql://user:pass@host:port/db?sslmode=…`).
    Postgres(String),
}

impl DatabaseUri {
    /// Is this a database URI we take: `postgresql://`, `postgres://`, MLflow's
    /// `postgresql+psycopg2://` (the driver part is SQLAlchemy's and ignored) — or
    /// `sqlite:///path`.
    pub fn parse(uri: &str) -> Option<DatabaseUri> {
        let scheme_end = uri.find("://")?;
        let scheme = uri[..scheme_end].to_ascii_lowercase();
        let base = scheme.split('+').next().unwrap_or_default();
        match base {
            "postgresql" | "postgres" => Some(DatabaseUri::Postgres(format!("postgresql{}", &uri[scheme_end..]))),
            "sqlite" => {
                let path = &uri[scheme_end + 3..];
                (!path.is_empty() && path != ":memory:").then(|| DatabaseUri::Sqlite(PathBuf::from(path)))
            }
            _ => None,
        }
    }

    /// The URI for logs and messages: no password.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUri::Sqlite(p) => format!("sqlite:///{}", p.display()).replace("////", "///"),
            DatabaseUri::Memory => "sqlite://:memory:".into(),
            DatabaseUri::Postgres(u) => postgres::redact(u),
        }
    }
}

/// How a PostgreSQL pool is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    pub max_connections: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { max_connections: 10 }
    }
}

/// An open database. Cheap to share behind an `Arc`; every method blocks (async callers run
/// it on the blocking pool).
pub struct Database {
    backend: Backend,
}

enum Backend {
    Sqlite(Box<sqlite::SqliteDb>),
    Postgres(Box<postgres::PgDb>),
}

/// How many times a transaction that failed with a retryable error is run again.
const RETRIES: u32 = 6;

impl Database {
    /// Open (creating when needed) and bring the schema up to date, under a lock that lets
    /// several processes starting together take turns.
    pub fn open(uri: &DatabaseUri, pool: &PoolOptions) -> Result<Database, Error> {
        let backend = match uri {
            DatabaseUri::Sqlite(path) => Backend::Sqlite(Box::new(sqlite::SqliteDb::open(path)?)),
            DatabaseUri::Memory => Backend::Sqlite(Box::new(sqlite::SqliteDb::open_in_memory()?)),
            DatabaseUri::Postgres(url) => Backend::Postgres(Box::new(postgres::PgDb::open(url, pool)?)),
        };
        Ok(Database { backend })
    }

    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite file, when that is the backend.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.backend {
            Backend::Sqlite(db) => db.path(),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL backend, for what only it has (LISTEN).
    pub fn postgres(&self) -> Option<&postgres::PgDb> {
        match &self.backend {
            Backend::Postgres(db) => Some(db),
            Backend::Sqlite(_) => None,
        }
    }

    /// Run `f` in one write transaction; commit on Ok, roll back on Err. On PostgreSQL a
    /// serialization failure, deadlock or dropped connection runs `f` again (up to a few
    /// times, with backoff), so `f` must only touch the database.
    pub fn write<T, E: StoreError>(&self, mut f: impl FnMut(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        self.retrying(|| match &self.backend {
            Backend::Sqlite(db) => db.transaction(true, &mut f),
            Backend::Postgres(db) => db.transaction(true, &mut f),
        })
    }

    /// Run `f` in one read transaction (one consistent snapshot).
    pub fn read<T, E: StoreError>(&self, mut f: impl FnMut(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        self.retrying(|| match &self.backend {
            Backend::Sqlite(db) => db.transaction(false, &mut f),
            Backend::Postgres(db) => db.transaction(false, &mut f),
        })
    }

    fn retrying<T, E: StoreError>(&self, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let mut tries = 0;
        loop {
            match attempt() {
                Err(e) if tries < RETRIES && e.db_error().is_some_and(Error::is_retryable) => {
                    tries += 1;
                    let backoff = std::time::Duration::from_millis(5u64 << tries.min(7));
                    let jitter = std::time::Duration::from_micros(u64::from(uuid::Uuid::new_v4().as_fields().1) % 5000);
                    tracing::debug!(error = %e.db_error().map(ToString::to_string).unwrap_or_default(), tries, "retrying a database transaction");
                    std::thread::sleep(backoff + jitter);
                }
                other => return other,
            }
        }
    }
}

/// One open transaction: statements run inside it, in the caller's thread.
pub struct Tx<'a> {
    inner: TxInner<'a>,
    writing: bool,
}

enum TxInner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::PgTx<'a>),
}

impl Tx<'_> {
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// ` FOR UPDATE` in a PostgreSQL write transaction (lock the rows read, so concurrent
    /// writers of one model take turns as they do on SQLite's database lock); empty otherwise.
    pub fn for_update(&self) -> &'static str {
        if self.writing && self.dialect() == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// Run a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize, Error> {
        match &self.inner {
            TxInner::Sqlite(tx) => sqlite::execute(tx, sql, params),
            TxInner::Postgres(tx) => tx.execute(sql, params),
        }
    }

    /// Run several statements separated by `;`, without parameters (fixtures, migrations).
    pub fn execute_batch(&self, sql: &str) -> Result<(), Error> {
        match &self.inner {
            TxInner::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            TxInner::Postgres(tx) => tx.execute_batch(sql),
        }
    }

    /// Every row of a query, mapped.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        self.for_each(sql, params, |r| {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visit rows in order until `f` answers false (the rest are not read on SQLite).
    pub fn for_each(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnMut(&Row<'_>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        match &self.inner {
            TxInner::Sqlite(tx) => sqlite::for_each(tx, sql, params, f),
            TxInner::Postgres(tx) => tx.for_each(sql, params, f),
        }
    }

    /// The first row of a query, mapped; [`Error::NoRows`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.query_opt(sql, params, f)?.ok_or(Error::NoRows)
    }

    /// The first row of a query, mapped, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let mut f = Some(f);
        let mut out = None;
        self.for_each(sql, params, |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Does the query return a row?
    pub fn exists(&self, sql: &str, params: &[&dyn ToValue]) -> Result<bool, Error> {
        Ok(self.query_opt(sql, params, |_| Ok(()))?.is_some())
    }

    /// Tell the processes listening on PostgreSQL's `channel` (delivered at commit, once per
    /// distinct payload). Nothing on SQLite, whose followers poll.
    pub fn notify(&self, channel: &str, payload: &str) -> Result<(), Error> {
        match &self.inner {
            TxInner::Sqlite(_) => Ok(()),
            TxInner::Postgres(tx) => tx.notify(channel, payload),
        }
    }
}

/// One row of a result.
pub struct Row<'a> {
    inner: RowInner<'a>,
}

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (from 0) as a [`Value`].
    pub fn value(&self, idx: usize) -> Result<Value, Error> {
        match &self.inner {
            RowInner::Sqlite(r) => sqlite::column(r, idx),
            RowInner::Postgres(r) => postgres::column(r, idx),
        }
    }

    /// Column `idx` (from 0), converted.
    pub fn get<T: FromValue>(&self, idx: usize) -> Result<T, Error> {
        T::from_value(self.value(idx)?).map_err(|e| match e {
            Error::Conversion(m) => Error::Conversion(format!("column {idx}: {m}")),
            other => other,
        })
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        match &self.inner {
            RowInner::Sqlite(r) => r.as_ref().column_count(),
            RowInner::Postgres(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
