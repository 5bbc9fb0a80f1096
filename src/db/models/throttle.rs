//! `login_throttles`: failed-login counters keyed by `email:<sha256>` or `ip:<address>`, in
//! the database so that every instance counts the same failures.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

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

    /// Counts one failure. A counter whose window started before `window_cutoff` starts over.
    /// Every step is a single atomic statement, so concurrent failures from several
    /// instances are all counted (no read-modify-write).
    pub fn record_failure(
        conn: &mut DbConnection,
        key: &str,
        now: NaiveDateTime,
        window_cutoff: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            login_throttles::table
                .find(key)
                .filter(login_throttles::window_start.lt(window_cutoff)),
        )
        .set((
            login_throttles::failures.eq(0),
            login_throttles::window_start.eq(now),
        ))
        .execute(conn)?;
        for _ in 0..2 {
            let counted = diesel::update(login_throttles::table.find(key))
                .set((
                    login_throttles::failures.eq(login_throttles::failures + 1),
                    login_throttles::last_failure_at.eq(now),
                ))
                .execute(conn)?;
            if counted == 1 {
                return Ok(());
            }
            let inserted = diesel::insert_into(login_throttles::table)
                .values((
                    login_throttles::key.eq(key),
                    login_throttles::failures.eq(1),
                    login_throttles::window_start.eq(now),
                    login_throttles::last_failure_at.eq(now),
                ))
                .execute(conn);
            match inserted {
                // Another instance inserted the first failure meanwhile: count on top of it.
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => continue,
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }

    pub fn clear(conn: &mut DbConnection, key: &str) -> QueryResult<usize> {
        diesel::delete(login_throttles::table.find(key)).execute(conn)
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
