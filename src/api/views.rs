//! What the API shows of users and sessions: never a password hash, a token or its hash.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::db::models::{SecurityEvent, Session, User};

#[derive(Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> UserView {
        UserView {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            role: user.role.clone(),
            created_at: rfc3339(user.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub current: bool,
}

impl SessionView {
    pub fn new(session: &Session, current_id: Option<&str>) -> SessionView {
        SessionView {
            id: session.id.clone(),
            created_at: rfc3339(session.created_at),
            last_seen_at: rfc3339(session.last_seen_at),
            expires_at: rfc3339(session.expires_at),
            ip: session.ip.clone(),
            user_agent: session.user_agent.clone(),
            current: current_id == Some(session.id.as_str()),
        }
    }

    pub fn current(session: &Session) -> SessionView {
        SessionView::new(session, Some(&session.id))
    }
}

#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl From<SecurityEvent> for EventView {
    fn from(event: SecurityEvent) -> EventView {
        EventView {
            id: event.id,
            kind: event.kind,
            at: rfc3339(event.at),
            session_id: event.session_id,
            ip: event.ip,
            user_agent: event.user_agent,
        }
    }
}
