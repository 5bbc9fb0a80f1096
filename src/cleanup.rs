//! The cleanup, shared by the worker and `POST /api/admin/cleanup-sessions`: expired sessions
//! go in short batches (each one statement on the `expires_at` index), then stale login
//! counters and old security events; the run is recorded for `session-stats`. On PostgreSQL
//! the whole run holds a transaction-scoped advisory lock (see [`run_on`]), so concurrent
//! workers take turns instead of racing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDateTime;

use diesel::sql_types::Bool;
use diesel::{Connection, QueryResult, QueryableByName, RunQueryDsl};

use crate::auth::throttle;
use crate::config::{Backend, Settings};
use crate::db::models::throttle::Throttle;
use crate::db::models::{new_id, CleanupRun, MailToken, OidcLogin, SecurityEvent, Session};
use crate::db::{self, Db, DbConnection, DbError, CLEANUP_LOCK_KEY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupOutcome {
    Ran(CleanupReport),
    /// Another process holds the cleanup lock; nothing was done.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub sessions_deleted: i64,
    pub events_deleted: i64,
    pub throttles_deleted: i64,
    pub statements: u32,
    /// The slowest single session-deleting statement (each runs in its own short transaction).
    pub longest_statement_ms: i64,
    pub duration_ms: i64,
    /// True when a stop was requested and the run ended after the batch in hand.
    pub interrupted: bool,
}

#[derive(QueryableByName)]
struct LockTaken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

/// PostgreSQL only (the named place where cleanup differs by backend): whether this
/// transaction got the single-cleaner lock. Transaction-scoped, so it means the same directly
/// and through a transaction pooler, and it goes when the transaction or connection does.
fn try_lock(holder: &mut DbConnection) -> QueryResult<bool> {
    Ok(diesel::sql_query(format!(
        "SELECT pg_try_advisory_xact_lock({CLEANUP_LOCK_KEY}) AS taken"
    ))
    .get_result::<LockTaken>(holder)?
    .taken)
}

fn clean(
    conn: &mut DbConnection,
    settings: &Settings,
    stop: &AtomicBool,
) -> QueryResult<CleanupReport> {
    let started_at = settings.clock.now();
    let timer = Instant::now();
    let mut report = CleanupReport {
        sessions_deleted: 0,
        events_deleted: 0,
        throttles_deleted: 0,
        statements: 0,
        longest_statement_ms: 0,
        duration_ms: 0,
        interrupted: false,
    };
    loop {
        let statement = Instant::now();
        let deleted = Session::delete_expired_batch(conn, started_at, settings.cleanup_batch_size)?;
        report.longest_statement_ms = report
            .longest_statement_ms
            .max(statement.elapsed().as_millis() as i64);
        report.statements += 1;
        report.sessions_deleted += deleted as i64;
        if (deleted as i64) < settings.cleanup_batch_size {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            report.interrupted = true;
            break;
        }
    }
    report.throttles_deleted =
        Throttle::delete_stale(conn, started_at - throttle::retention(settings))? as i64;
    let retention_cutoff = started_at - settings.event_retention;
    report.events_deleted = SecurityEvent::delete_older_than(conn, retention_cutoff)? as i64;
    CleanupRun::delete_older_than(conn, retention_cutoff)?;
    MailToken::delete_expired(conn, started_at)?;
    OidcLogin::delete_expired(conn, started_at)?;
    report.duration_ms = timer.elapsed().as_millis() as i64;
    CleanupRun {
        id: new_id(),
        started_at,
        finished_at: settings.clock.now(),
        sessions_deleted: report.sessions_deleted,
        events_deleted: report.events_deleted,
        throttles_deleted: report.throttles_deleted,
        duration_ms: report.duration_ms,
    }
    .insert(conn)?;
    Ok(report)
}

/// One cleanup on a connection the caller holds (the worker's `--once` uses a single
/// connection and no pool). `stop` ends it after the batch in hand.
///
/// On PostgreSQL the lock is held by a transaction on a second connection of its own, open
/// for the whole run, while the batches commit one by one on `conn`: each batch stays a short
/// transaction, and only one process cleans at a time, behind PgBouncer too.
///
/// `tick` is the scheduled time a worker runs for: when a run has already started at or after
/// it (another worker on the same schedule got there first), this one is skipped, so each tick
/// has exactly one cleaner however many workers there are.
pub fn run_on(
    conn: &mut DbConnection,
    settings: &Settings,
    stop: &AtomicBool,
    tick: Option<NaiveDateTime>,
) -> Result<CleanupOutcome, DbError> {
    let done_at_tick = |conn: &mut DbConnection| -> QueryResult<bool> {
        Ok(match tick {
            Some(tick) => CleanupRun::latest(conn)?.is_some_and(|run| run.started_at >= tick),
            None => false,
        })
    };
    if conn.backend() == Backend::Sqlite {
        // No lock on SQLite (one machine, usually one worker): two workers firing at the same
        // instant may both clean, and the second finds nothing left.
        if done_at_tick(conn)? {
            return Ok(CleanupOutcome::Skipped);
        }
        return Ok(CleanupOutcome::Ran(clean(conn, settings, stop)?));
    }
    let mut holder = db::establish(&settings.database).map_err(|e| {
        tracing::warn!(error = %e, "cleanup: cannot open the lock connection");
        DbError::Unavailable
    })?;
    let outcome = holder.transaction(|holder| {
        if !try_lock(holder)? || done_at_tick(conn)? {
            return Ok(CleanupOutcome::Skipped);
        }
        clean(conn, settings, stop).map(CleanupOutcome::Ran)
    })?;
    Ok(outcome)
}

/// One cleanup with a pooled connection, on the calling (blocking) thread.
pub fn run_blocking(
    db: &Db,
    settings: &Settings,
    stop: &AtomicBool,
) -> Result<CleanupOutcome, DbError> {
    db.run_blocking(|conn| Ok(run_on(conn, settings, stop, None)))?
}

/// The same from async code (the admin endpoint, the worker's schedule), through the pool's
/// usual path off the async workers. `stop` ends it after the batch in hand.
pub async fn run(
    db: &Db,
    settings: &Settings,
    stop: Arc<AtomicBool>,
    tick: Option<NaiveDateTime>,
) -> Result<CleanupOutcome, DbError> {
    let settings = settings.clone();
    db.run(move |conn| Ok(run_on(conn, &settings, &stop, tick)))
        .await?
}

/// The one line logged per run.
pub fn log_outcome(outcome: &Result<CleanupOutcome, DbError>) {
    match outcome {
        Ok(CleanupOutcome::Ran(r)) => tracing::info!(
            sessions_deleted = r.sessions_deleted,
            events_deleted = r.events_deleted,
            throttles_deleted = r.throttles_deleted,
            statements = r.statements,
            longest_statement_ms = r.longest_statement_ms,
            duration_ms = r.duration_ms,
            interrupted = r.interrupted,
            "cleanup finished"
        ),
        Ok(CleanupOutcome::Skipped) => {
            tracing::info!("cleanup skipped: another process is cleaning, or cleaned at this tick")
        }
        Err(e) => tracing::warn!(error = %e, "cleanup failed; will retry at the next tick"),
    }
}
