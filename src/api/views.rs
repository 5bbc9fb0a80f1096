//! What the API shows of users and sessions: never a password hash, a token or its hash.

use serde::Serialize;

use crate::clock::Rfc3339;
use crate::db::models::{SecurityEvent, Session, User};

/// Views borrow from the rows they show and write timestamps straight into the JSON.
#[derive(Serialize)]
pub struct UserView<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub created_at: Rfc3339,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> UserView<'a> {
        UserView {
            id: &user.id,
            email: &user.email,
            name: &user.name,
            role: &user.role,
            created_at: Rfc3339(user.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct SessionView<'a> {
    pub id: &'a str,
    pub created_at: Rfc3339,
    pub last_seen_at: Rfc3339,
    pub expires_at: Rfc3339,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub current: bool,
}

impl<'a> SessionView<'a> {
    pub fn new(session: &'a Session, current_id: Option<&str>) -> SessionView<'a> {
        SessionView {
            id: &session.id,
            created_at: Rfc3339(session.created_at),
            last_seen_at: Rfc3339(session.last_seen_at),
            expires_at: Rfc3339(session.expires_at),
            ip: session.ip.as_deref(),
            user_agent: session.user_agent.as_deref(),
            current: current_id == Some(session.id.as_str()),
        }
    }

    pub fn current(session: &'a Session) -> SessionView<'a> {
        SessionView::new(session, Some(&session.id))
    }
}

#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: Rfc3339,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl From<SecurityEvent> for EventView {
    fn from(event: SecurityEvent) -> EventView {
        EventView {
            id: event.id,
            kind: event.kind,
            at: Rfc3339(event.at),
            session_id: event.session_id,
            ip: event.ip,
            user_agent: event.user_agent,
        }
    }
}
