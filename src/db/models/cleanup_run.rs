//! `cleanup_runs`: one row per cleanup, so `session-stats` can show the last one.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::cleanup_runs;
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
