//! The one place that knows the backend: URL scheme → connection, the r2d2 pool and its
//! per-connection setup, the embedded migrations, and running Diesel calls with a bounded wait
//! that becomes 503. Elsewhere only upserts and the migrations' lock look at the backend, and they
//! say so.
//!
//! # Running a query
//!
//! Every call waits at most `pool_timeout_ms` in all (for its turn, then for a connection) and
//! otherwise fails with [`DbError::Unavailable`]. There are two ways in, for anyone:
//!
//! - [`Db::run`] (and [`Db::transaction`]) from async code: the closure runs on the blocking
//!   thread pool, never on an async worker. Routes, the worker's schedule and host
//!   applications use this.
//! - [`Db::run_blocking`] from code that is already on a blocking thread (the worker's
//!   `--once`, tests).
//!
//! And two inside latchkey, each for one caller:
//!
//! - [`Db::lookup_lane`]: the session lookup's thread (`auth::lookup`) and its own connection.
//!   With a pool of two or more, one connection is kept for it: the others share the rest, so
//!   writes filling the pool never make authenticated reads wait.
//! - `Db::run_detached`, for writes nobody waits for (the rolling expiry touch, a failed
//!   sign-in's event): started in the background through `run`, or dropped when too many are
//!   already in flight.
//!
//! Callers take a permit from a FIFO semaphore first, so each finds a free connection at once
//! (r2d2's own queue is unfair under load: a few requests starve for hundreds of ms).

pub mod models;
pub mod schema;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::R2D2Connection;
use diesel::result::{DatabaseErrorKind, Error as DieselError, QueryResult};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use rocket::tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::Clock;
use crate::config::{Backend, DatabaseTarget, Settings};

/// One connection type for both backends; which variant is decided by [`establish`] alone.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl DbConnection {
    pub fn backend(&self) -> Backend {
        match self {
            DbConnection::Postgres(_) => Backend::Postgres,
            DbConnection::Sqlite(_) => Backend::Sqlite,
        }
    }
}

// PostgreSQL's catalog of schemas, to see whether `database_schema` exists.
diesel::table! {
    pg_namespace (nspname) {
        nspname -> Text,
    }
}

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The PostgreSQL advisory lock key of migrations ("latchk" + 1), so that processes booting
/// together take turns.
pub const MIGRATION_LOCK_KEY: i64 = 0x6c61_7463_686b_0001;

/// Opens one connection for the backend the URL names. There is no fallback: a PostgreSQL URL
/// that cannot be reached is an error with libpq's own message, never an SQLite file.
pub fn establish(target: &DatabaseTarget) -> Result<DbConnection, String> {
    match target {
        DatabaseTarget::Postgres {
            url,
            schema,
            statement_cache,
        } => {
            let describe = |e: String| e.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut conn = PgConnection::establish(&with_connect_timeout(url))
                .map_err(|e| describe(e.to_string()))?;
            if !statement_cache {
                // Behind a transaction pooler, consecutive statements may reach different
                // server connections: no named prepared statements, each statement parsed
                // and run in one round trip instead.
                conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
            }
            // The planner's default cost of an index lookup (random_page_cost = 4) is for
            // spinning disks; latchkey's tables are small, hot and cached. With it, the
            // prepared batch lookup (`token_hash = ANY($1)` joined to users) scans all of
            // `users` instead of looking each one up by key (bench/RESULTS.md has the plans).
            // This connection's setting only; the server's stays as it is.
            conn.batch_execute("SET random_page_cost = 1.1")
                .map_err(|e| describe(e.to_string()))?;
            if let Some(schema) = schema {
                // Created when missing (checked first: CREATE needs a privilege that reading
                // does not, and this runs for every new pooled connection).
                let exists = diesel::select(diesel::dsl::exists(
                    pg_namespace::table.filter(pg_namespace::nspname.eq(schema)),
                ))
                .get_result::<bool>(&mut conn)
                .map_err(|e| describe(e.to_string()))?;
                if !exists {
                    if let Err(e) =
                        conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    {
                        return Err(format!(
                            "cannot create schema `{schema}`: {}",
                            describe(e.to_string())
                        ));
                    }
                }
                // Only this schema: latchkey's unqualified table names (its migrations table
                // too) resolve there and never to an application's own `users`.
                conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
                    .map_err(|e| describe(e.to_string()))?;
            }
            Ok(DbConnection::Postgres(conn))
        }
        DatabaseTarget::Sqlite(path) => {
            create_private(path)?;
            let path = path
                .to_str()
                .ok_or_else(|| "SQLite path is not valid UTF-8".to_string())?;
            let mut conn = SqliteConnection::establish(path).map_err(|e| e.to_string())?;
            // busy_timeout first: it makes writers wait for each other, across processes too,
            // instead of failing at once. WAL lets readers run beside the writer.
            conn.batch_execute("PRAGMA busy_timeout = 5000;")
                .map_err(|e| e.to_string())?;
            switch_to_wal(&mut conn)?;
            conn.batch_execute("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
                .map_err(|e| e.to_string())?;
            Ok(DbConnection::Sqlite(conn))
        }
    }
}

/// A new SQLite file is created readable by its owner alone (SQLite would follow the umask,
/// usually world-readable); its `-wal` and `-shm` files take the same mode from it.
fn create_private(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot create the SQLite file {}: {e}",
            path.display()
        )),
    }
}

/// The switch to WAL can fail with "database is locked" at once, without waiting for
/// busy_timeout, when several connections open the same new file at the same moment (seen with
/// the server and the worker starting together, and in a test with four). WAL is a property of
/// the file, so retrying until one of them has switched it is enough.
fn switch_to_wal(conn: &mut SqliteConnection) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match conn.batch_execute("PRAGMA journal_mode = WAL;") {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("locked") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The first connection of a process: [`establish`], creating a PostgreSQL database that does
/// not exist yet when the role may. The error says what failed ("cannot connect: …").
pub fn connect_at_boot(target: &DatabaseTarget) -> Result<DbConnection, String> {
    match establish(target) {
        Ok(conn) => Ok(conn),
        Err(e) => match missing_database(target, &e) {
            Some((name, maintenance)) => {
                create_database(&name, &maintenance)?;
                establish(target).map_err(|e| format!("cannot connect: {e}"))
            }
            None => Err(format!("cannot connect: {e}")),
        },
    }
}

/// When connecting failed because the PostgreSQL database itself does not exist: its name,
/// and the same URL naming the `postgres` maintenance database instead.
fn missing_database(target: &DatabaseTarget, error: &str) -> Option<(String, String)> {
    let DatabaseTarget::Postgres { url, .. } = target else {
        return None;
    };
    let authority = url.find("://")? + 3;
    let path = authority + url[authority..].find('/')?;
    let end = url[path..].find('?').map_or(url.len(), |i| path + i);
    let name = &url[path + 1..end];
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain || !error.contains(&format!("database \"{name}\" does not exist")) {
        return None;
    }
    let maintenance = format!("{}/postgres{}", &url[..path], &url[end..]);
    Some((name.to_string(), maintenance))
}

/// Creates the database the URL names, when the role may; otherwise says what to do.
fn create_database(name: &str, maintenance_url: &str) -> Result<(), String> {
    let refused = |why: String| {
        format!(
            "database `{name}` does not exist, and it could not be created ({why}): create it \
             (`createdb {name}`) or give the role CREATEDB"
        )
    };
    let mut conn = PgConnection::establish(&with_connect_timeout(maintenance_url))
        .map_err(|e| refused(e.to_string().trim().replace('\n', " ")))?;
    match conn.batch_execute(&format!("CREATE DATABASE \"{name}\"")) {
        Ok(()) => {
            tracing::info!(database = name, "created the database, which did not exist");
            Ok(())
        }
        // Another process booting at the same moment created it first.
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(refused(e.to_string().trim().replace('\n', " "))),
    }
}

/// libpq waits for the OS (minutes) on an unreachable host unless told otherwise.
fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&connect_timeout=3")
    } else {
        format!("{url}?connect_timeout=3")
    }
}

/// Applies pending migrations; returns how many ran. On PostgreSQL an advisory lock makes two
/// processes booting together take turns; on SQLite an immediate transaction does the same.
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, String> {
    let describe = |e: Box<dyn std::error::Error + Send + Sync>| format!("migration failed: {e}");
    match conn {
        // One transaction for all of them, holding a transaction-scoped lock: it means the
        // same directly and through a transaction pooler (a session lock would be taken on
        // one server connection and released on another), and a process that dies lets go.
        DbConnection::Postgres(pg) => pg
            .transaction(|c| {
                diesel::sql_query(format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                ))
                .execute(c)?;
                c.run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| DieselError::QueryBuilderError(e.to_string().into()))
            })
            .map_err(|e| describe(e.to_string().into())),
        // Foreign keys off while they run (a table rebuild would otherwise cascade the old
        // table's deletion to its children), checked before the commit, and on again after.
        DbConnection::Sqlite(sqlite) => {
            let set_foreign_keys = |c: &mut SqliteConnection, on: bool| {
                c.batch_execute(if on {
                    "PRAGMA foreign_keys = ON;"
                } else {
                    "PRAGMA foreign_keys = OFF;"
                })
                .map_err(|e| format!("migration failed: {e}"))
            };
            set_foreign_keys(sqlite, false)?;
            let ran = sqlite
                .immediate_transaction(|c| {
                    let ran = c.run_pending_migrations(SQLITE_MIGRATIONS)?.len();
                    let broken: i64 =
                        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                            "(SELECT count(*) FROM pragma_foreign_key_check)",
                        ))
                        .get_result(c)?;
                    if broken > 0 {
                        return Err(format!("{broken} rows break a foreign key").into());
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ran)
                })
                .map_err(describe);
            set_foreign_keys(sqlite, true)?;
            ran
        }
    }
}

/// A pooled connection, remembering when a query showed the server has gone away so that r2d2
/// discards it instead of handing it out again, and when it was last used.
pub struct PooledConnection {
    conn: DbConnection,
    broken: bool,
    last_used: Instant,
}

/// A connection idle for longer than this is pinged before use. Busy connections are not (a
/// ping per request would double the round trips of every authenticated request); idle ones
/// are the ones a database restart leaves dead, and a ping keeps that from failing a request.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ConnectError(String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

struct Manager {
    target: DatabaseTarget,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PooledConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<PooledConnection, ConnectError> {
        establish(&self.target)
            .map(|conn| PooledConnection {
                conn,
                broken: false,
                last_used: Instant::now(),
            })
            .map_err(ConnectError)
    }

    fn is_valid(&self, conn: &mut PooledConnection) -> Result<(), ConnectError> {
        conn.conn.ping().map_err(|e| ConnectError(e.to_string()))
    }

    fn has_broken(&self, conn: &mut PooledConnection) -> bool {
        conn.broken || conn.conn.is_broken()
    }
}

#[derive(Debug)]
struct LogPoolErrors;

impl r2d2::HandleError<ConnectError> for LogPoolErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(error = %error, "database connection failed");
    }
}

/// Why a database call did not produce a result.
#[derive(Debug)]
pub enum DbError {
    /// The database cannot be reached, or no pooled connection was free in time: 503.
    Unavailable,
    /// The query itself failed (a constraint, `NotFound`, a bug).
    Query(DieselError),
    /// A query run once for several callers (the session lookup's batch) failed; each caller
    /// gets the same error.
    Shared(Arc<DieselError>),
    /// The task running the call panicked (a bug; logged where it happened), so the call has
    /// no answer.
    Panicked,
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        if is_unavailable(&e) {
            DbError::Unavailable
        } else {
            DbError::Query(e)
        }
    }
}

impl DbError {
    /// This failure as one that several callers of a shared query can each be given.
    pub fn into_shared(self) -> DbError {
        match self {
            DbError::Query(e) => DbError::Shared(Arc::new(e)),
            other => other,
        }
    }

    /// Another copy of a failure made shareable by [`DbError::into_shared`].
    pub fn to_shared(&self) -> DbError {
        match self {
            DbError::Unavailable => DbError::Unavailable,
            DbError::Query(_) | DbError::Panicked => DbError::Panicked,
            DbError::Shared(e) => DbError::Shared(e.clone()),
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable => f.write_str("database unavailable"),
            DbError::Query(e) => write!(f, "query failed: {e}"),
            DbError::Shared(e) => write!(f, "a shared query failed: {e}"),
            DbError::Panicked => f.write_str("the database task panicked"),
        }
    }
}

/// Errors that say "the server is gone or too busy", as opposed to "this query is wrong".
fn is_unavailable(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => true,
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            // SQLite: busy_timeout ran out. PostgreSQL: the server is shutting down or
            // the connection dropped between statements.
            message.contains("database is locked")
                || message.contains("terminating connection")
                || message.contains("server closed the connection")
                || message.contains("no connection to the server")
        }
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

/// How a transaction stops with an answer for its caller instead of a result: `Refused`
/// rolls it back as an error would, and reaches the caller as `Ok(Err(answer))` (see
/// [`transaction`]); a database error stays one.
pub enum Abort<E> {
    Refused(E),
    Db(DieselError),
}

impl<E> From<DieselError> for Abort<E> {
    fn from(e: DieselError) -> Abort<E> {
        Abort::Db(e)
    }
}

/// Stops the transaction, rolling it back, with `answer` for the caller.
pub fn refuse<T, E>(answer: E) -> Result<T, Abort<E>> {
    Err(Abort::Refused(answer))
}

/// Runs `f` in a transaction on `conn`: committed when it returns `Ok`, rolled back when it
/// stops with [`refuse`] (the answer comes back as `Ok(Err(answer))`) or fails.
pub fn transaction<T, E, F>(conn: &mut DbConnection, f: F) -> QueryResult<Result<T, E>>
where
    F: FnOnce(&mut DbConnection) -> Result<T, Abort<E>>,
{
    match conn.transaction(f) {
        Ok(value) => Ok(Ok(value)),
        Err(Abort::Refused(answer)) => Ok(Err(answer)),
        Err(Abort::Db(e)) => Err(e),
    }
}

type Pool = r2d2::Pool<Manager>;

/// The handle every part of the service holds: a pool plus the backend it talks to. See the
/// module documentation for the ways to run a query on it.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    backend: Backend,
    /// Turns for everyone but the lookup lane: `pool_size` minus the lane's connection.
    shared: Arc<Semaphore>,
    /// Whether the lane's connection is kept out of `shared` (a pool of two or more) and is
    /// still to be handed out (see [`Db::lookup_lane`]).
    lane: Arc<AtomicBool>,
    /// Background writes in flight (see [`Db::run_detached`]).
    detached_slots: Arc<Semaphore>,
    wait: Duration,
    clock: Clock,
}

/// The session lookup's way to the database: one thread's connection, kept out of everyone
/// else's share when the pool has two or more (see [`Db::lookup_lane`]).
pub struct LaneConnection {
    db: Db,
    reserved: bool,
}

impl LaneConnection {
    /// Runs `f` on a pooled connection on this (blocking) thread, waiting at most
    /// `pool_timeout_ms`.
    pub fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<T>,
    {
        if self.reserved {
            self.db.with_connection(f, Instant::now() + self.db.wait)
        } else {
            self.db.run_blocking(f)
        }
    }
}

impl Db {
    /// Connects once (so an unreachable database or bad path stops the boot with its own
    /// message), applies migrations on that connection, then builds the pool around it.
    pub fn connect_and_migrate(settings: &Settings) -> Result<(Db, usize), String> {
        let mut conn = connect_at_boot(&settings.database)?;
        let applied = run_migrations(&mut conn)?;
        Ok((Db::pool_only(settings), applied))
    }

    /// A pool that connects lazily (used after the boot check, and by the worker, which must
    /// survive a database that is down at start).
    pub fn pool_only(settings: &Settings) -> Db {
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(settings.pool_size.min(2)))
            .connection_timeout(settings.pool_timeout)
            .test_on_check_out(false)
            .idle_timeout(Some(Duration::from_secs(600)))
            .error_handler(Box::new(LogPoolErrors))
            .build_unchecked(Manager {
                target: settings.database.clone(),
            });
        let pool_size = settings.pool_size as usize;
        // A pool of one has no connection to keep back: the lane shares it.
        let keep_for_lane = pool_size > 1;
        Db {
            pool,
            backend: settings.backend(),
            shared: Arc::new(Semaphore::new(pool_size - usize::from(keep_for_lane))),
            lane: Arc::new(AtomicBool::new(keep_for_lane)),
            detached_slots: Arc::new(Semaphore::new((pool_size / 2).max(1))),
            wait: settings.pool_timeout,
            clock: settings.clock.clone(),
        }
    }

    /// The session lookup's connection: the one kept back from everyone else, to the first
    /// caller; any later caller (or a pool of one) shares the pool like [`Db::run_blocking`].
    pub fn lookup_lane(&self) -> LaneConnection {
        LaneConnection {
            db: self.clone(),
            reserved: self.lane.swap(false, Ordering::AcqRel),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Now, by the configured clock (`Settings::clock`): the time every query of latchkey's
    /// is bound to.
    pub fn now(&self) -> chrono::NaiveDateTime {
        self.clock.now()
    }

    /// How long a caller waits for a connection (`pool_timeout_ms`) before it is a 503.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// (in use, idle) connections right now, for the metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (
            state.connections - state.idle_connections,
            state.idle_connections,
        )
    }

    /// Runs `f` with a pooled connection on the blocking thread pool, waiting at most
    /// `pool_timeout_ms` for it; running out of time is [`DbError::Unavailable`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = Instant::now() + self.wait;
        let permit = self.turn(&self.shared).await?;
        self.on_blocking_pool(permit, f, deadline).await
    }

    /// [`transaction`] through [`Db::run`]: `Ok(Err(answer))` when `f` refused.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<Result<T, E>, DbError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, Abort<E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.run(move |conn| transaction(conn, f)).await
    }

    /// [`Db::run`] for code already on a blocking thread: the same share of the pool and the
    /// same bounded wait, on this thread.
    pub fn run_blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<T>,
    {
        let deadline = Instant::now() + self.wait;
        let _turn = match rocket::tokio::runtime::Handle::try_current() {
            // A blocking thread of a runtime (a cleanup's steps): in the same first-come queue
            // as `run`, so that a caller taking turns in a loop cannot starve the others.
            Ok(runtime) => runtime.block_on(self.turn(&self.shared))?,
            // No runtime (a tool, a test's thread): the turn is polled.
            Err(_) => loop {
                match self.shared.clone().try_acquire_owned() {
                    Ok(permit) => break permit,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => return Err(DbError::Unavailable),
                }
            },
        };
        self.with_connection(f, deadline)
    }

    /// Starts `f` in the background through [`Db::run`] and returns true, if fewer than
    /// `pool_size / 2` (at least one) such writes are in flight; otherwise drops it and
    /// returns false, so a burst of them cannot queue up in front of requests that need the
    /// pool. Failures are logged.
    #[doc(hidden)]
    pub fn run_detached<F>(&self, what: &'static str, f: F) -> bool
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<()> + Send + 'static,
    {
        let Ok(slot) = self.detached_slots.clone().try_acquire_owned() else {
            return false;
        };
        let db = self.clone();
        rocket::tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = db.run(f).await {
                tracing::warn!(%error, what, "background write failed");
            }
        });
        true
    }

    /// A permit from `queue`, waiting at most `pool_timeout_ms`.
    async fn turn(&self, queue: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, DbError> {
        match rocket::tokio::time::timeout(self.wait, queue.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(DbError::Unavailable),
        }
    }

    /// Runs `f` on the blocking thread pool, giving `held` back when it is done.
    async fn on_blocking_pool<T, F>(
        &self,
        held: OwnedSemaphorePermit,
        f: F,
        deadline: Instant,
    ) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        let task = move || {
            let _held = held;
            db.with_connection(f, deadline)
        };
        match rocket::tokio::task::spawn_blocking(task).await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "the database task panicked");
                Err(DbError::Panicked)
            }
        }
    }

    /// Takes a connection before `deadline` (pinging one that has been idle, and discarding
    /// it when dead) and runs `f` on it, on this thread.
    fn with_connection<T, F>(&self, f: F, deadline: Instant) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<T>,
    {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pooled = self
                .pool
                .get_timeout(left)
                .map_err(|_| DbError::Unavailable)?;
            if pooled.last_used.elapsed() > PING_AFTER_IDLE && pooled.conn.ping().is_err() {
                // Dead while idle (a database restart): discard it and take another.
                pooled.broken = true;
                continue;
            }
            return Self::use_connection(pooled, f);
        }
    }

    fn use_connection<T, F>(mut pooled: r2d2::PooledConnection<Manager>, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> QueryResult<T>,
    {
        let result = f(&mut pooled.conn);
        pooled.last_used = Instant::now();
        if let Err(e) = &result {
            if is_unavailable(e) {
                pooled.broken = true;
            }
        }
        result.map_err(DbError::from)
    }
}
