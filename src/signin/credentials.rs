//! The one place a change of how an account signs in (its password, its second factor, its
//! linked providers, a reset by mail) ends the account's sessions and records why.

use chrono::NaiveDateTime;
use diesel::QueryResult;

use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, Session};
use crate::db::DbConnection;
use crate::domain::{SessionId, UserId};

/// A credential change of one account: which event it is, and the one session that survives
/// it (the session that made the change, or none).
pub struct CredentialChange<'a> {
    user_id: &'a UserId,
    keep: Option<&'a SessionId>,
    event: EventKind,
}

impl<'a> CredentialChange<'a> {
    /// A change made from the signed-in session `keep`: every other session ends.
    pub fn keeping(user_id: &'a UserId, keep: &'a SessionId, event: EventKind) -> Self {
        CredentialChange {
            user_id,
            keep: Some(keep),
            event,
        }
    }

    /// A change made without a session of the account (a mailed link, an admin): every
    /// session ends.
    pub fn everywhere(user_id: &'a UserId, event: EventKind) -> Self {
        CredentialChange {
            user_id,
            keep: None,
            event,
        }
    }

    /// Revokes the sessions this change ends and records its event; returns how many ended.
    /// In the transaction that made the change, so that neither commits without the other.
    pub fn revoke_sessions(
        &self,
        conn: &mut DbConnection,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        let revoked = Session::revoke_all(conn, self.user_id, self.keep)?;
        record(conn, self.user_id, self.event, self.keep, client, now)?;
        Ok(revoked)
    }
}
