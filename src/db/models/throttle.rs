//! `login_throttles`: failed-login counters keyed by `email:<sha256>` or `ip:<address>`, in
//! the database so that every instance counts the same failures.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Text, Timestamp};

use crate::db::schema::login_throttles;
use crate::db::DbConnection;

#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = login_throttles)]
pub struct Throttle {
    pub key: String,
    pub failures: i32,
    pub window_start: NaiveDateTime,
    pub last_failure_at: NaiveDateTime,
}

impl Throttle {
    pub fn find(conn: &mut DbConnection, key: &str) -> QueryResult<Option<Throttle>> {
        login_throttles::table
            .find(key)
            .select(Throttle::as_select())
            .first(conn)
            .optional()
    }

    /// Takes one attempt out of `key`'s budget before the attempt is checked, unless `refuse`
    /// says the counter (with its window already restarted if it began before
    /// `window_cutoff`) is out of budget: then nothing is counted and `Err(seconds)` says how
    /// long to wait. Must run inside the caller's transaction, which holds the row's lock from
    /// here to its commit: concurrent attempts for one key, on any instance, take turns, so a
    /// budget of n lets exactly n through.
    pub fn take(
        conn: &mut DbConnection,
        key: &str,
        now: NaiveDateTime,
        window_cutoff: NaiveDateTime,
        refuse: impl Fn(&Throttle) -> Option<i64>,
    ) -> QueryResult<Result<(), i64>> {
        // The row must exist to be locked. On SQLite this write also takes the database's write
        // lock for the transaction (the only lock SQLite has), so the reads below cannot go
        // stale; on PostgreSQL the row lock comes from `FOR UPDATE`. Backend-specific: the
        // placeholders differ and Diesel's upsert DSL does not span both backends.
        const ENSURE: &str =
            "INSERT INTO login_throttles (key, failures, window_start, last_failure_at)";
        let mut tries = 0;
        let mut row = loop {
            let found = match conn {
                DbConnection::Postgres(pg) => {
                    diesel::sql_query(format!(
                        "{ENSURE} VALUES ($1, 0, $2, $2) ON CONFLICT (key) DO NOTHING"
                    ))
                    .bind::<Text, _>(key)
                    .bind::<Timestamp, _>(now)
                    .execute(pg)?;
                    login_throttles::table
                        .find(key)
                        .for_update()
                        .select(Throttle::as_select())
                        .first(pg)
                        .optional()?
                }
                DbConnection::Sqlite(sqlite) => {
                    diesel::sql_query(format!(
                        "{ENSURE} VALUES (?, 0, ?, ?) ON CONFLICT (key) DO NOTHING"
                    ))
                    .bind::<Text, _>(key)
                    .bind::<Timestamp, _>(now)
                    .bind::<Timestamp, _>(now)
                    .execute(sqlite)?;
                    login_throttles::table
                        .find(key)
                        .select(Throttle::as_select())
                        .first(sqlite)
                        .optional()?
                }
            };
            // PostgreSQL: the cleanup may delete a stale row between the two statements.
            match found {
                Some(row) => break row,
                None if tries < 3 => tries += 1,
                None => return Err(DieselError::NotFound),
            }
        };
        if row.window_start < window_cutoff {
            row.failures = 0;
            row.window_start = now;
        }
        if let Some(wait) = refuse(&row) {
            return Ok(Err(wait));
        }
        diesel::update(login_throttles::table.find(key))
            .set((
                login_throttles::failures.eq(row.failures + 1),
                login_throttles::window_start.eq(row.window_start),
                login_throttles::last_failure_at.eq(now),
            ))
            .execute(conn)?;
        Ok(Ok(()))
    }

    /// Gives back one attempt taken by [`Throttle::take`] (it succeeded).
    pub fn give_back(conn: &mut DbConnection, key: &str) -> QueryResult<usize> {
        diesel::update(
            login_throttles::table
                .find(key)
                .filter(login_throttles::failures.gt(0)),
        )
        .set(login_throttles::failures.eq(login_throttles::failures - 1))
        .execute(conn)
    }

    /// Ends a streak. The row stays (with nothing counted) rather than going: a concurrent
    /// [`Throttle::take`] may be between making sure it exists and locking it.
    pub fn clear(conn: &mut DbConnection, key: &str, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::update(login_throttles::table.find(key))
            .set((
                login_throttles::failures.eq(0),
                login_throttles::window_start.eq(now),
            ))
            .execute(conn)
    }

    /// Removes counters whose window started before `cutoff` and that failed no more since.
    pub fn delete_stale(conn: &mut DbConnection, cutoff: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(
            login_throttles::table
                .filter(login_throttles::window_start.lt(cutoff))
                .filter(login_throttles::last_failure_at.lt(cutoff)),
        )
        .execute(conn)
    }
}
