//! The cleanup, shared by the worker and `POST /api/admin/cleanup-sessions`: expired sessions
//! go in short batches (each one statement on the `expires_at` index), then stale login
//! counters and old security events; the run is recorded for `session-stats`. On PostgreSQL
//! the whole run holds an advisory lock, so concurrent workers take turns instead of racing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use diesel::sql_types::Bool;
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use crate::auth::throttle;
use crate::clock;
use crate::config::Settings;
use crate::db::models::throttle::Throttle;
use crate::db::models::{new_id, CleanupRun, SecurityEvent, Session};
use crate::db::{Db, DbConnection, DbError, CLEANUP_LOCK_KEY};

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

/// PostgreSQL only: the named place where cleanup differs by backend.
fn try_lock(conn: &mut DbConnection) -> QueryResult<bool> {
    match conn {
        DbConnection::Postgres(pg) => Ok(diesel::sql_query(format!(
            "SELECT pg_try_advisory_lock({CLEANUP_LOCK_KEY}) AS taken"
        ))
        .get_result::<LockTaken>(pg)?
        .taken),
        DbConnection::Sqlite(_) => Ok(true),
    }
}

fn unlock(conn: &mut DbConnection) -> QueryResult<()> {
    if let DbConnection::Postgres(pg) = conn {
        diesel::sql_query(format!("SELECT pg_advisory_unlock({CLEANUP_LOCK_KEY})")).execute(pg)?;
    }
    Ok(())
}

fn clean(
    conn: &mut DbConnection,
    settings: &Settings,
    stop: &AtomicBool,
) -> QueryResult<CleanupReport> {
    let started_at = clock::now();
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
    report.duration_ms = timer.elapsed().as_millis() as i64;
    CleanupRun {
        id: new_id(),
        started_at,
        finished_at: clock::now(),
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
pub fn run_on(
    conn: &mut DbConnection,
    settings: &Settings,
    stop: &AtomicBool,
) -> QueryResult<CleanupOutcome> {
    if !try_lock(conn)? {
        return Ok(CleanupOutcome::Skipped);
    }
    let result = clean(conn, settings, stop);
    // Release even after an error; if the connection itself is gone, so is the lock.
    let released = unlock(conn);
    let report = result?;
    released?;
    Ok(CleanupOutcome::Ran(report))
}

/// One cleanup with a pooled connection, on the calling (blocking) thread.
pub fn run_blocking(
    db: &Db,
    settings: &Settings,
    stop: &AtomicBool,
) -> Result<CleanupOutcome, DbError> {
    db.run_blocking(|conn| run_on(conn, settings, stop))
}

/// The same from async code (the admin endpoint, the worker's schedule), through the pool's
/// usual path off the async workers. `stop` ends it after the batch in hand.
pub async fn run(
    db: &Db,
    settings: &Settings,
    stop: Arc<AtomicBool>,
) -> Result<CleanupOutcome, DbError> {
    let settings = settings.clone();
    db.run(move |conn| run_on(conn, &settings, &stop)).await
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
            tracing::info!("cleanup skipped: another process holds the cleanup lock")
        }
        Err(e) => tracing::warn!(error = %e, "cleanup failed; will retry at the next tick"),
    }
}
