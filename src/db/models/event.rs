//! `security_events`: what happened to an account, shown to its owner and pruned after
//! `event_retention`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::new_id;
use crate::db::models::session::ClientInfo;
use crate::db::schema::security_events;
use crate::db::DbConnection;
pub use crate::domain::EventKind;
use crate::domain::{SessionId, UserId};

#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = security_events)]
pub struct SecurityEvent {
    pub id: String,
    pub user_id: Option<String>,
    #[diesel(deserialize_as = String)]
    pub kind: EventKind,
    pub at: NaiveDateTime,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An event about to be recorded.
pub struct NewEvent<'a> {
    pub user_id: &'a UserId,
    pub kind: EventKind,
    pub session_id: Option<&'a SessionId>,
    pub client: &'a ClientInfo,
}

#[derive(Insertable)]
#[diesel(table_name = security_events)]
struct EventRow<'a> {
    id: &'a str,
    user_id: Option<&'a str>,
    kind: &'a str,
    at: NaiveDateTime,
    session_id: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

/// Records `kind` for the user: the one way every part of latchkey writes an event, in the
/// caller's transaction or on its own.
pub fn record(
    conn: &mut DbConnection,
    user_id: &UserId,
    kind: EventKind,
    session_id: Option<&SessionId>,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let event = NewEvent {
        user_id,
        kind,
        session_id,
        client,
    };
    SecurityEvent::record(conn, event, now)
}

impl SecurityEvent {
    pub fn record(
        conn: &mut DbConnection,
        event: NewEvent<'_>,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::insert_into(security_events::table)
            .values(EventRow {
                id: &new_id(),
                user_id: Some(event.user_id.as_str()),
                kind: event.kind.as_str(),
                at: now,
                session_id: event.session_id.map(SessionId::as_str),
                ip: event.client.ip.as_deref(),
                user_agent: event.client.user_agent.as_deref(),
            })
            .execute(conn)?;
        Ok(())
    }

    /// The user's events, newest first.
    pub fn list_for_user(
        conn: &mut DbConnection,
        user_id: &UserId,
        limit: i64,
    ) -> QueryResult<Vec<SecurityEvent>> {
        security_events::table
            .filter(security_events::user_id.eq(user_id.as_str()))
            .order((security_events::at.desc(), security_events::id.desc()))
            .limit(limit)
            .select(SecurityEvent::as_select())
            .load(conn)
    }

    pub fn delete_older_than(conn: &mut DbConnection, cutoff: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(security_events::table.filter(security_events::at.lt(cutoff))).execute(conn)
    }
}
