//! The cleanup, shared by the worker and `POST /api/admin/cleanup-sessions`: expired sessions
//! go in short batches (each one statement on the `expires_at` index), then stale login
//! counters and old security events; the run is recorded for `session-stats`. One cleanup
//! runs at a time, on both backends: a run holds the `cleanup_lease` row, renewed with each
//! batch, and no connection between its steps (see `run_with`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDateTime;

use diesel::QueryResult;

use crate::auth::throttle;
use crate::config::Settings;
use crate::db::models::throttle::Throttle;
use crate::db::models::{
    new_id, CleanupLease, CleanupRun, MailToken, OidcLogin, SecurityEvent, Session,
};
use crate::db::{Db, DbConnection, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupOutcome {
    Ran(CleanupReport),
    /// Another cleanup holds the lease, or one already ran for this tick; nothing was done.
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

/// How long a cleanup's hold on the lease lasts without a renewal. Each batch renews it, so
/// it only runs out when its holder has stopped (crashed, or lost the database); then the
/// next cleanup may take over after this long.
const LEASE: chrono::Duration = chrono::Duration::minutes(2);

/// How a cleanup reaches the database: one short step at a time, each on a connection taken
/// for that step only (no connection or lock is held between steps).
trait Steps {
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut DbConnection) -> QueryResult<T>,
    ) -> Result<T, DbError>;
}

/// Every step on one connection the caller holds (the `--once` command, which uses no pool).
impl Steps for &mut DbConnection {
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut DbConnection) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        f(self).map_err(DbError::from)
    }
}

/// Each step on a pooled connection, given back after it.
struct Pooled<'a>(&'a Db);

impl Steps for Pooled<'_> {
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut DbConnection) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        self.0.run_blocking(f)
    }
}

/// One cleanup: takes the lease (or skips: another cleanup holds it, or one already ran for
/// this `tick`), deletes expired sessions in batches (renewing the lease with each), then the
/// rest, records the run and gives the lease back. `stop` ends it after the batch in hand.
///
/// `tick` is the scheduled time a worker runs for: when a run has already started at or after
/// it (another worker on the same schedule got there first), this one is skipped, so each tick
/// has exactly one cleaner however many workers there are. It is checked once the lease is
/// held, and a run is recorded before the lease is given back, so two workers on one tick never
/// both clean.
fn run_with(
    steps: &mut impl Steps,
    settings: &Settings,
    stop: &AtomicBool,
    tick: Option<NaiveDateTime>,
) -> Result<CleanupOutcome, DbError> {
    let holder = new_id();
    let now = settings.clock.now();
    let taken = steps.step(|conn| {
        if !CleanupLease::take(conn, &holder, now, now + LEASE)? {
            return Ok(false);
        }
        let done = match tick {
            Some(tick) => CleanupRun::latest(conn)?.is_some_and(|run| run.started_at >= tick),
            None => false,
        };
        if done {
            CleanupLease::release(conn, &holder)?;
        }
        Ok(!done)
    })?;
    if !taken {
        return Ok(CleanupOutcome::Skipped);
    }
    let report = clean(steps, settings, stop, &holder);
    if let Err(error) = steps.step(|conn| CleanupLease::release(conn, &holder)) {
        // It runs out by itself after LEASE.
        tracing::warn!(%error, "cleanup: could not give the lease back");
    }
    report.map(CleanupOutcome::Ran)
}

fn clean(
    steps: &mut impl Steps,
    settings: &Settings,
    stop: &AtomicBool,
    holder: &str,
) -> Result<CleanupReport, DbError> {
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
        let until = settings.clock.now() + LEASE;
        let batch = settings.cleanup_batch_size;
        let deleted = steps.step(|conn| {
            if !CleanupLease::renew(conn, holder, until)? {
                return Ok(None);
            }
            Session::delete_expired_batch(conn, started_at, batch).map(Some)
        })?;
        let Some(deleted) = deleted else {
            // The lease ran out and another cleanup took it over: it goes on from here.
            report.interrupted = true;
            break;
        };
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
    let throttle_cutoff = started_at - throttle::retention(settings);
    let retention_cutoff = started_at - settings.event_retention;
    let (throttles, events) = steps.step(|conn| {
        let throttles = Throttle::delete_stale(conn, throttle_cutoff)? as i64;
        let events = SecurityEvent::delete_older_than(conn, retention_cutoff)? as i64;
        CleanupRun::delete_older_than(conn, retention_cutoff)?;
        MailToken::delete_expired(conn, started_at)?;
        OidcLogin::delete_expired(conn, started_at)?;
        Ok((throttles, events))
    })?;
    report.throttles_deleted = throttles;
    report.events_deleted = events;
    report.duration_ms = timer.elapsed().as_millis() as i64;
    let run = CleanupRun {
        id: new_id(),
        started_at,
        finished_at: settings.clock.now(),
        sessions_deleted: report.sessions_deleted,
        events_deleted: report.events_deleted,
        throttles_deleted: report.throttles_deleted,
        duration_ms: report.duration_ms,
    };
    steps.step(|conn| run.insert(conn))?;
    Ok(report)
}

/// One cleanup on a connection the caller holds (the worker's `--once` uses a single
/// connection and no pool).
pub fn run_on(
    conn: &mut DbConnection,
    settings: &Settings,
    stop: &AtomicBool,
    tick: Option<NaiveDateTime>,
) -> Result<CleanupOutcome, DbError> {
    run_with(&mut &mut *conn, settings, stop, tick)
}

/// One cleanup on the calling (blocking) thread, each step on a pooled connection.
pub fn run_blocking(
    db: &Db,
    settings: &Settings,
    stop: &AtomicBool,
) -> Result<CleanupOutcome, DbError> {
    run_with(&mut Pooled(db), settings, stop, None)
}

/// The same from async code (the admin endpoint, the worker's schedule): on a blocking thread,
/// each step on a pooled connection taken for that step only.
pub async fn run(
    db: &Db,
    settings: &Settings,
    stop: Arc<AtomicBool>,
    tick: Option<NaiveDateTime>,
) -> Result<CleanupOutcome, DbError> {
    let (db, settings) = (db.clone(), settings.clone());
    let task = move || run_with(&mut Pooled(&db), &settings, &stop, tick);
    match rocket::tokio::task::spawn_blocking(task).await {
        Ok(outcome) => outcome,
        Err(join) => {
            tracing::error!(error = %join, "the cleanup task panicked");
            Err(DbError::Panicked)
        }
    }
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
