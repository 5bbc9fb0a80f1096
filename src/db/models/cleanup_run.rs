//! `cleanup_runs`: one row per cleanup, so `session-stats` can show the last one; and
//! `cleanup_lease`, which lets one cleanup run at a time.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamp};

use crate::db::schema::{cleanup_lease, cleanup_runs};
use crate::db::DbConnection;

#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = cleanup_runs)]
pub struct CleanupRun {
    pub id: String,
    pub started_at: NaiveDateTime,
    pub finished_at: NaiveDateTime,
    pub sessions_deleted: i64,
    pub events_deleted: i64,
    pub throttles_deleted: i64,
    pub duration_ms: i64,
}

impl CleanupRun {
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(cleanup_runs::table)
            .values(self)
            .execute(conn)?;
        Ok(())
    }

    pub fn latest(conn: &mut DbConnection) -> QueryResult<Option<CleanupRun>> {
        cleanup_runs::table
            .order(cleanup_runs::started_at.desc())
            .select(CleanupRun::as_select())
            .first(conn)
            .optional()
    }

    pub fn delete_older_than(conn: &mut DbConnection, cutoff: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(cleanup_runs::table.filter(cleanup_runs::started_at.lt(cutoff)))
            .execute(conn)
    }
}

/// The single-cleaner lease (`cleanup_lease`, at most one row).
pub struct CleanupLease;

impl CleanupLease {
    /// Takes the lease for `holder` until `until`, if nobody holds it or its holder's time ran
    /// out by `now`. Backend-specific only in its placeholders (an upsert with a condition,
    /// which Diesel's DSL does not span both backends with).
    pub fn take(
        conn: &mut DbConnection,
        holder: &str,
        now: NaiveDateTime,
        until: NaiveDateTime,
    ) -> QueryResult<bool> {
        const UPSERT: &str = "INSERT INTO cleanup_lease (id, holder, expires_at) VALUES";
        const TAKE_OVER: &str = "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, \
                                 expires_at = excluded.expires_at WHERE cleanup_lease.expires_at";
        let taken = match conn {
            DbConnection::Postgres(pg) => {
                diesel::sql_query(format!("{UPSERT} (1, $1, $2) {TAKE_OVER} <= $3"))
                    .bind::<Text, _>(holder)
                    .bind::<Timestamp, _>(until)
                    .bind::<Timestamp, _>(now)
                    .execute(pg)?
            }
            DbConnection::Sqlite(sqlite) => {
                diesel::sql_query(format!("{UPSERT} (1, ?, ?) {TAKE_OVER} <= ?"))
                    .bind::<Text, _>(holder)
                    .bind::<Timestamp, _>(until)
                    .bind::<Timestamp, _>(now)
                    .execute(sqlite)?
            }
        };
        Ok(taken == 1)
    }

    /// Extends `holder`'s lease to `until`; false when it is no longer `holder`'s.
    pub fn renew(conn: &mut DbConnection, holder: &str, until: NaiveDateTime) -> QueryResult<bool> {
        let mine = cleanup_lease::table.filter(cleanup_lease::holder.eq(holder));
        let renewed = diesel::update(mine)
            .set(cleanup_lease::expires_at.eq(until))
            .execute(conn)?;
        Ok(renewed == 1)
    }

    /// Gives `holder`'s lease back.
    pub fn release(conn: &mut DbConnection, holder: &str) -> QueryResult<()> {
        diesel::delete(cleanup_lease::table.filter(cleanup_lease::holder.eq(holder)))
            .execute(conn)
            .map(drop)
    }
}
