//! The PostgreSQL backend: a registry shared by several `regserve server` replicas, and
//! followed by `serve` daemons that hear its changes through `LISTEN/NOTIFY`.
//!
//! The stores above are synchronous; this backend runs `tokio-postgres` on a small runtime of
//! its own (two worker threads) and blocks the caller's thread on each statement, so the same
//! store code runs on both databases. Connections come from a `deadpool-postgres` pool (with
//! its prepared-statement cache). Write transactions run at READ COMMITTED and lock the rows
//! they build on (`Tx::for_update`); reads run at REPEATABLE READ, READ ONLY (one snapshot).
//! Serialization failures, deadlocks and connections lost before the commit are retried by
//! [`super::Database`].
//!
//! Connection URIs are libpq's: `postgresql://user:password@host:port/db?sslmode=…`. Without
//! a password in the URI, `PGPASSWORD` and then the password file (`PGPASSFILE`, else
//! `~/.pgpass`) are read, as libpq does. `sslmode`: `disable`; `prefer` (the default) and
//! `require` encrypt without checking the server's certificate, as libpq does without a root
//! certificate; `verify-ca` and `verify-full` check it against `sslrootcert` (or the system's
//! roots) and the host name.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, IsolationLevel};

use super::{Error, PoolOptions, Row, RowInner, StoreError, ToValue, Tx, TxInner, Value};

/// Schema migrations, the twins of `migrations/sqlite/` (same tables, columns and indexes).
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_tracking.sql"),
    include_str!("../../migrations/postgres/0003_metric_datasets.sql"),
    include_str!("../../migrations/postgres/0004_server_settings.sql"),
    include_str!("../../migrations/postgres/0005_webhooks.sql"),
];

/// The advisory lock that replicas starting together take turns on while migrating.
const MIGRATION_LOCK: i64 = 0x7265_6773_6572_7665; // "regserve"

/// Prepared statements kept per connection (SQLite's cache keeps 128).
const STATEMENT_CACHE_MAX: usize = 256;

/// How long a statement waits for a pooled connection, and a new connection for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgDb {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    use_tls: bool,
    redacted: String,
}

/// The URI with its password hidden, for logs and messages.
pub fn redact(url: &str) -> String {
    crate::uri::redact_url(url)
}

impl PgDb {
    pub(super) fn open(url: &str, pool: &PoolOptions) -> Result<PgDb, Error> {
        let redacted = redact(url);
        let (config, tls, use_tls) = connection_config(url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("regserve-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the PostgreSQL client runtime: {e}")))?;
        let manager = if use_tls {
            Manager::from_config(config.clone(), tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast })
        } else {
            Manager::from_config(
                config.clone(),
                tokio_postgres::NoTls,
                ManagerConfig { recycling_method: RecyclingMethod::Fast },
            )
        };
        let pool = Pool::builder(manager)
            .max_size(pool.max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the PostgreSQL pool for {redacted}: {e}")))?;
        let db = PgDb { rt: Some(rt), pool, config, tls, use_tls, redacted };
        db.migrate()?;
        Ok(db)
    }

    /// The URI, password hidden.
    pub fn redacted_uri(&self) -> &str {
        &self.redacted
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the PostgreSQL runtime lives as long as the database")
    }

    /// Run `f` on this backend's runtime and wait for it, from any thread: a plain thread, a
    /// blocking-pool thread, or (moving off the executor first) an async worker thread.
    fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.rt().block_on(f)),
            // On a single-threaded runtime's thread (a `#[tokio::test]`) nothing may block it in
            // place: wait from a thread of its own.
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.rt().block_on(f)).join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            Err(_) => self.rt().block_on(f),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, Error> {
        self.pool.get().await.map_err(|e| {
            let detail = match e {
                deadpool_postgres::PoolError::Backend(e) => pg_error(e).to_string(),
                other => other.to_string(),
            };
            Error::Unavailable(format!("cannot reach the PostgreSQL registry at {}: {detail}", self.redacted))
        })
    }

    fn migrate(&self) -> Result<(), Error> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
            let alembic = tx
                .query_opt("SELECT 1 FROM information_schema.tables WHERE table_name = 'alembic_version' AND table_schema = current_schema()", &[])
                .await
                .map_err(pg_error)?;
            if alembic.is_some() {
                return Err(Error::Config(format!(
                    "{} holds MLflow's own schema (it has an alembic_version table); give regserve a database of its own",
                    self.redacted
                )));
            }
            tx.batch_execute("CREATE TABLE IF NOT EXISTS regserve_schema (version BIGINT NOT NULL)")
                .await
                .map_err(pg_error)?;
            let applied: i64 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM regserve_schema", &[])
                .await
                .map_err(pg_error)?
                .get(0);
            if applied as usize > MIGRATIONS.len() {
                return Err(Error::Config(format!(
                    "the registry database has schema version {applied}, newer than this regserve knows ({}); upgrade regserve",
                    MIGRATIONS.len()
                )));
            }
            if applied as usize == MIGRATIONS.len() {
                return Ok(());
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                tx.batch_execute(sql).await.map_err(|e| {
                    let e = pg_error(e);
                    Error::Config(format!("schema migration {} failed on {}: {e}", i + 1, self.redacted))
                })?;
            }
            tx.execute("DELETE FROM regserve_schema", &[]).await.map_err(pg_error)?;
            tx.execute("INSERT INTO regserve_schema (version) VALUES ($1)", &[&(MIGRATIONS.len() as i64)])
                .await
                .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            tracing::info!(from = applied, to = MIGRATIONS.len(), database = %self.redacted, "migrated the PostgreSQL registry schema");
            Ok(())
        })
    }

    pub(super) fn transaction<T, E: StoreError>(
        &self,
        writing: bool,
        f: &mut impl FnMut(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut client = self.block_on(self.client())?;
        let isolation = if writing { IsolationLevel::ReadCommitted } else { IsolationLevel::RepeatableRead };
        let tx = self
            .block_on(client.build_transaction().isolation_level(isolation).read_only(!writing).start())
            .map_err(pg_error)?;
        let tx = Tx { inner: TxInner::Postgres(PgTx { tx, db: self }), writing };
        let out = f(&tx)?;
        if let TxInner::Postgres(PgTx { tx, .. }) = tx.inner {
            self.block_on(tx.commit()).map_err(|e| match pg_error(e) {
                // The COMMIT may or may not have been applied: never run the transaction again.
                Error::Postgres { code, message, connection_lost: true } => Error::Postgres {
                    code,
                    message: format!("the connection to PostgreSQL was lost during COMMIT (the change may or may not be applied): {message}"),
                    connection_lost: false,
                },
                other => other,
            })?;
        }
        Ok(out)
    }

    /// Follow `channel`: every notification's payload, [`Notice::Connected`] each time the
    /// listening connection is (re-)established — notifications sent while it was down are
    /// lost, so the listener re-checks everything then — and [`Notice::Lost`] when it fails.
    /// Reconnects with backoff (1 s to 30 s) until the receiver is dropped.
    pub fn listen(&self, channel: &str) -> tokio::sync::mpsc::UnboundedReceiver<Notice> {
        let (send, recv) = tokio::sync::mpsc::unbounded_channel();
        let (config, tls, use_tls) = (self.config.clone(), self.tls.clone(), self.use_tls);
        let redacted = self.redacted.clone();
        let listen_sql = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
        self.rt().spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let outcome = if use_tls {
                    match config.connect(tls.clone()).await {
                        Ok((client, conn)) => follow(client, conn, &listen_sql, &send).await,
                        Err(e) => Err(pg_error(e)),
                    }
                } else {
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((client, conn)) => follow(client, conn, &listen_sql, &send).await,
                        Err(e) => Err(pg_error(e)),
                    }
                };
                if send.is_closed() {
                    return;
                }
                match outcome {
                    Ok(()) => backoff = Duration::from_secs(1),
                    Err(e) => {
                        tracing::warn!(database = %redacted, error = %e, retry_in = ?backoff, "listening for registry changes failed; polling covers the gap");
                        // The followers look now: a database that is down shows in their health
                        // at once, not at the next poll.
                        if send.send(Notice::Lost(e.to_string())).is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = send.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        recv
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Dropping a runtime blocks on its tasks, which a thread of another runtime must not do.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// What a `LISTEN` connection hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The connection is (again) listening: anything may have changed meanwhile.
    Connected,
    /// One notification's payload.
    Payload(String),
    /// The listening connection failed (the reason); it is being re-established.
    Lost(String),
}

async fn follow<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    listen_sql: &str,
    send: &tokio::sync::mpsc::UnboundedSender<Notice>,
) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The connection must be polled for the LISTEN to complete and for notifications to arrive.
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    if forwarding(client.batch_execute(listen_sql), &mut messages, send).await?.is_none()
        || send.send(Notice::Connected).is_err()
    {
        return Ok(());
    }
    // Keepalive: a query every 15 s notices a silently dead connection.
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    tick.tick().await;
    loop {
        let ping = async {
            tick.tick().await;
            client.simple_query("SELECT 1").await
        };
        if forwarding(ping, &mut messages, send).await?.is_none() {
            return Ok(());
        }
    }
}

/// Drive `work` on the listening connection while forwarding the notifications that arrive
/// meanwhile; `None` once nobody listens any more.
async fn forwarding<W, T, M>(
    work: W,
    messages: &mut M,
    send: &tokio::sync::mpsc::UnboundedSender<Notice>,
) -> Result<Option<T>, Error>
where
    W: Future<Output = Result<T, tokio_postgres::Error>>,
    M: futures_util::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin,
{
    use futures_util::StreamExt;
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done.map(Some).map_err(pg_error),
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if send.send(Notice::Payload(n.payload().to_owned())).is_err() {
                        return Ok(None);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(pg_error(e)),
                None => return Err(Error::Unavailable("the listening connection closed".into())),
            },
            _ = send.closed() => return Ok(None),
        }
    }
}

/// One transaction on a pooled connection.
pub(super) struct PgTx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    db: &'a PgDb,
}

impl PgTx<'_> {
    pub(super) fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize, Error> {
        let sql = placeholders(sql);
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        self.db.block_on(async {
            let stmt = self.prepare(&sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let n = self.tx.execute(&stmt, &refs).await.map_err(pg_error)?;
            Ok(n as usize)
        })
    }

    pub(super) fn for_each(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row<'_>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let sql = placeholders(sql);
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        let rows = self.db.block_on(async {
            let stmt = self.prepare(&sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            self.tx.query(&stmt, &refs).await.map_err(pg_error)
        })?;
        for r in &rows {
            if !f(&Row { inner: RowInner::Postgres(r) })? {
                break;
            }
        }
        Ok(())
    }

    /// The prepared statement for `sql`, from the connection's cache. Search statements are
    /// built from the client's filter, so the cache is emptied when it reaches
    /// [`STATEMENT_CACHE_MAX`] instead of growing with every distinct filter (each cached
    /// statement also holds memory in the server's backend).
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, Error> {
        if self.tx.statement_cache.size() >= STATEMENT_CACHE_MAX {
            self.tx.statement_cache.clear();
        }
        self.tx.prepare_cached(sql).await.map_err(pg_error)
    }

    pub(super) fn execute_batch(&self, sql: &str) -> Result<(), Error> {
        self.db.block_on(self.tx.batch_execute(sql)).map_err(pg_error)
    }

    pub(super) fn notify(&self, channel: &str, payload: &str) -> Result<(), Error> {
        self.for_each("SELECT pg_notify(?1, ?2)", crate::params![channel, payload], |_| Ok(true))
    }
}

/// SQLite's `?N` and `?` placeholders as PostgreSQL's `$N` (a bare `?` takes the number after
/// the largest so far, as SQLite numbers it); quoted strings and identifiers are left alone.
pub(crate) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut largest = 0usize;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut n = 0usize;
                let mut digits = false;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    digits = true;
                    chars.next();
                }
                let n = if digits { n } else { largest + 1 };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// A PostgreSQL error in this module's terms (SQLSTATE kept; connection loss flagged).
fn pg_error(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_owned();
        // 08xxx: connection exception; 57P01-03: the server is shutting down or starting.
        let connection_lost = code.starts_with("08") || matches!(code.as_str(), "57P01" | "57P02" | "57P03");
        let mut message = db.message().to_owned();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        return Error::Postgres { code: Some(code), message, connection_lost };
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let message = match std::error::Error::source(&e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    Error::Postgres { code: None, message, connection_lost: e.is_closed() || io }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text = |s: &str, out: &mut BytesMut| s.to_sql(&Type::TEXT, out);
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => text(&i.to_string(), out),
                _ => Err(format!("cannot bind an integer as {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 if f.fract() == 0.0 => (*f as i64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => text(&f.to_string(), out),
                _ => Err(format!("cannot bind a real as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                Type::FLOAT8 => s.parse::<f64>()?.to_sql(ty, out),
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => text(s, out),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => text(std::str::from_utf8(b)?, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `idx` of a PostgreSQL row as a [`Value`].
pub(super) fn column(row: &tokio_postgres::Row, idx: usize) -> Result<Value, Error> {
    let ty = row
        .columns()
        .get(idx)
        .map(|c| c.type_().clone())
        .ok_or_else(|| Error::Conversion(format!("no column {idx}")))?;
    fn get<'a, T: FromSql<'a>>(row: &'a tokio_postgres::Row, idx: usize) -> Result<Option<T>, Error> {
        row.try_get::<_, Option<T>>(idx).map_err(|e| Error::Conversion(format!("column {idx}: {e}")))
    }
    Ok(match ty {
        Type::INT8 => get::<i64>(row, idx)?.map_or(Value::Null, Value::Integer),
        Type::INT4 => get::<i32>(row, idx)?.map_or(Value::Null, |i| Value::Integer(i.into())),
        Type::INT2 => get::<i16>(row, idx)?.map_or(Value::Null, |i| Value::Integer(i.into())),
        Type::OID => get::<u32>(row, idx)?.map_or(Value::Null, |i| Value::Integer(i.into())),
        Type::BOOL => get::<bool>(row, idx)?.map_or(Value::Null, |b| Value::Integer(b.into())),
        Type::FLOAT8 => get::<f64>(row, idx)?.map_or(Value::Null, Value::Real),
        Type::FLOAT4 => get::<f32>(row, idx)?.map_or(Value::Null, |f| Value::Real(f.into())),
        Type::BYTEA => get::<Vec<u8>>(row, idx)?.map_or(Value::Null, Value::Blob),
        Type::NUMERIC => get::<Numeric>(row, idx)?.map_or(Value::Null, |n| n.0),
        Type::VOID => Value::Null,
        _ => get::<String>(row, idx)?.map_or(Value::Null, Value::Text),
    })
}

/// A NUMERIC (what `SUM` and `AVG` of integers give) as an integer when it has no fraction.
struct Numeric(Value);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // Binary NUMERIC: ndigits, weight, sign, dscale (i16/u16 each), then base-10000 digits.
        let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short NUMERIC".into())
        };
        let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)? as i16, word(2)?, word(3)?);
        if sign == 0xC000 {
            return Ok(Numeric(Value::Real(f64::NAN)));
        }
        let mut value = 0f64;
        let mut exact: Option<i64> = Some(0);
        for i in 0..ndigits {
            let digit = word(4 + i)?;
            let power = weight as i32 - i as i32;
            value += f64::from(digit) * 10000f64.powi(power);
            exact = match (exact, power) {
                (Some(e), p) if p >= 0 => {
                    10000i64.checked_pow(p as u32).and_then(|m| e.checked_add(i64::from(digit).checked_mul(m)?))
                }
                (e, _) if digit == 0 => e,
                _ => None,
            };
        }
        let negative = sign == 0x4000;
        Ok(Numeric(match exact {
            Some(e) if dscale == 0 => Value::Integer(if negative { -e } else { e }),
            _ => Value::Real(if negative { -value } else { value }),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A new, empty database on the server `server_url` names (its user may `CREATE DATABASE`),
/// as a URI: each test gets a database of its own.
pub fn fresh_database(server_url: &str) -> Result<String, Error> {
    let (config, _, _) = connection_config(server_url)?;
    let name = format!("regserve_test_{}", uuid::Uuid::new_v4().simple());
    let create = format!("CREATE DATABASE {name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            rt.block_on(async {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(pg_error)?;
                let driver = tokio::spawn(conn);
                client.batch_execute(&create).await.map_err(pg_error)?;
                drop(client);
                let _ = driver.await;
                Ok::<_, Error>(())
            })
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    let mut url = url::Url::parse(server_url).map_err(|e| Error::Config(e.to_string()))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Parse the URI into a driver configuration: libpq's password sources and the TLS modes.
fn connection_config(
    url: &str,
) -> Result<(tokio_postgres::Config, tokio_postgres_rustls::MakeRustlsConnect, bool), Error> {
    let redacted = redact(url);
    let bad = |why: String| Error::Config(format!("invalid PostgreSQL URI {redacted}: {why}"));
    let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    // tokio-postgres knows sslmode disable/prefer/require; libpq's verify-* and sslrootcert are
    // ours to apply.
    let mut verify = false;
    let mut root_cert: Option<String> = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| match (k.as_ref(), v.as_ref()) {
            ("sslmode", "verify-ca" | "verify-full") => {
                verify = true;
                Some(("sslmode".into(), "require".into()))
            }
            ("sslrootcert", path) => {
                root_cert = Some(path.to_owned());
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config: tokio_postgres::Config =
        parsed.as_str().parse().map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
    if config.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        if let Ok(db) = std::env::var("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_password().is_none() {
        if let Some(password) =
            std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()).or_else(|| pgpass_lookup(&config))
        {
            config.password(password);
        }
    }
    config.application_name("regserve");
    let use_tls = config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable;
    let tls = tls_connector(verify, root_cert.as_deref()).map_err(bad)?;
    Ok((config, tls, use_tls))
}

/// The password for this connection from the password file, as libpq reads it:
/// `host:port:database:user:password` lines, `*` matching anything, `\` escaping.
fn pgpass_lookup(config: &tokio_postgres::Config) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config.get_user().unwrap_or_default().to_owned();
    let db = config.get_dbname().map(str::to_owned).unwrap_or_else(|| user.clone());
    pgpass_find(&text, [&host, &port, &db, &user])
}

fn pgpass_find(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() == 5 && fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields.pop().unwrap_or_default());
        }
    }
    None
}

fn tls_connector(verify: bool, root_cert: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match root_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: rustls::pki_types::CertificateDer<'static> =
                        cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                    roots.add(cert).map_err(|e| format!("sslrootcert {path}: {e}"))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))).with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sslmode=prefer|require`: encrypted, the certificate not checked (libpq's meaning of these
/// modes without a root certificate). Signatures are still checked, so the session is with
/// the holder of the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_quotes() {
        assert_eq!(placeholders("SELECT a FROM t WHERE a = ?1 AND b = ?2"), "SELECT a FROM t WHERE a = $1 AND b = $2");
        assert_eq!(placeholders("a = ? AND b IN (?, ?) LIMIT ?"), "a = $1 AND b IN ($2, $3) LIMIT $4");
        assert_eq!(placeholders("x = ?3 OR y = ?"), "x = $3 OR y = $4");
        assert_eq!(
            placeholders("v LIKE ? ESCAPE '\\' AND w = '?' AND \"q?\" = ?"),
            "v LIKE $1 ESCAPE '\\' AND w = '?' AND \"q?\" = $2"
        );
        assert_eq!(placeholders("s = 'it''s ?' AND t = ?"), "s = 'it''s ?' AND t = $1");
    }

    #[test]
    fn pgpass_lines_match_as_libpq_reads_them() {
        let file = "# comment\nother:5432:*:u:nope\n127.0.0.1:5433:db:u:secret\\:1\n*:*:*:u:fallback\n";
        assert_eq!(pgpass_find(file, ["127.0.0.1", "5433", "db", "u"]).as_deref(), Some("secret:1"));
        assert_eq!(pgpass_find(file, ["127.0.0.1", "5432", "db", "u"]).as_deref(), Some("fallback"));
        assert_eq!(pgpass_find(file, ["h", "1", "d", "someone"]), None);
    }

    #[test]
    fn uris_keep_their_password_out_of_errors() {
        let shown = redact("postgresql://u:hunter2@h:5/db?sslmode=require&password=hunter3");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        let e = connection_config("postgresql://u:hunter2@127.0.0.1:5432/db?sslmode=bogus").err().unwrap().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("127.0.0.1"), "{e}");
        let (c, _, tls) =
            connection_config("postgresql://u:pw@127.0.0.1:5/db?sslmode=verify-full&sslrootcert=/nonexistent")
                .map(|_| unreachable!())
                .unwrap_or_else(|e: Error| {
                    assert!(e.to_string().contains("sslrootcert /nonexistent"), "{e}");
                    connection_config("postgresql://u:pw@127.0.0.1:5/db?sslmode=disable").unwrap()
                });
        assert!(!tls);
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
    }

    /// With `REGSERVE_TEST_POSTGRES` (scripts/test sets it): a fresh database on that server.
    fn test_database() -> Option<(String, super::super::Database)> {
        let server = std::env::var("REGSERVE_TEST_POSTGRES").ok().filter(|u| !u.is_empty())?;
        let url = fresh_database(&server).unwrap();
        let db = super::super::Database::open(
            &super::super::DatabaseUri::Postgres(url.clone()),
            &PoolOptions { max_connections: 2 },
        )
        .unwrap();
        Some((url, db))
    }

    #[test]
    fn connections_killed_between_and_during_writes_cost_the_caller_nothing() {
        let Some((url, db)) = test_database() else { return };
        let count = |db: &super::super::Database| -> i64 {
            db.read(|tx| tx.query_row("SELECT COUNT(*) FROM server_settings", crate::params![], |r| r.get(0))).unwrap()
        };
        let write = |db: &super::super::Database, key: &str| {
            db.write(|tx| tx.execute("INSERT INTO server_settings (key, value) VALUES (?1, 'v')", crate::params![key]))
        };
        write(&db, "a").unwrap();
        assert_eq!(count(&db), 1);
        // Every connection of the pool ends (what a database restart or a proxy's idle cut does).
        let name = url.rsplit('/').next().unwrap().to_string();
        let admin = std::env::var("REGSERVE_TEST_POSTGRES").unwrap();
        let killer = super::super::Database::open(&super::super::DatabaseUri::Postgres(admin), &PoolOptions::default());
        // (The server URL's own database carries the migrations too; only used to kill here.)
        let killer = killer.unwrap();
        let killed: i64 = killer
            .read(|tx| {
                tx.query_row(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ?1 AND pid <> pg_backend_pid()",
                    crate::params![name],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert!(killed >= 1, "no connection to kill");
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The next write and read run on new connections, with no error for the caller.
        write(&db, "b").unwrap();
        assert_eq!(count(&db), 2);
        // Killed in the middle of a transaction: run again, once, on a new connection.
        let mut attempts = 0;
        db.write(|tx| {
            attempts += 1;
            if attempts == 1 {
                killer.read(|k| {
                    k.query_row(
                        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ?1 AND pid <> pg_backend_pid()",
                        crate::params![name],
                        |r| r.get::<i64>(0),
                    )
                })?;
            }
            tx.execute("INSERT INTO server_settings (key, value) VALUES ('c', 'v')", crate::params![])
        })
        .unwrap();
        assert_eq!(attempts, 2);
        assert_eq!(count(&db), 3);
    }

    #[test]
    fn the_statement_cache_stays_bounded_however_many_distinct_filters_arrive() {
        let Some((_, db)) = test_database() else { return };
        let store_like = |i: usize| {
            let sql = format!("SELECT COUNT(*) FROM server_settings WHERE key = ?1 OR key = '{i}'");
            db.read(|tx| tx.query_row(&sql, crate::params!["x"], |r| r.get::<i64>(0))).unwrap()
        };
        for i in 0..(STATEMENT_CACHE_MAX * 3) {
            assert_eq!(store_like(i), 0);
        }
        let size = db
            .read(|tx| match &tx.inner {
                TxInner::Postgres(p) => Ok::<_, Error>(p.tx.statement_cache.size()),
                TxInner::Sqlite(_) => unreachable!(),
            })
            .unwrap();
        assert!(size > 0 && size <= STATEMENT_CACHE_MAX, "{size} statements cached");
    }

    #[test]
    fn numeric_columns_decode() {
        // 12345678 = digits [1234, 5678], weight 1, positive, scale 0.
        let raw = [0u8, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(Numeric::from_sql(&Type::NUMERIC, &raw).unwrap().0, Value::Integer(12_345_678));
        // -1.5 = digits [1, 5000], weight 0, negative, scale 1.
        let raw = [0u8, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(Numeric::from_sql(&Type::NUMERIC, &raw).unwrap().0, Value::Real(-1.5));
    }
}
