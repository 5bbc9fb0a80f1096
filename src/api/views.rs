//! What the API shows of users and sessions: never a password hash, a token or its hash.

use serde::Serialize;

use crate::clock::Rfc3339;
use crate::db::models::{SecurityEvent, Session, User};
use crate::domain::{EventKind, Role, SessionId, UserId};

/// Views borrow from the rows they show and write timestamps straight into the JSON.
#[derive(Serialize)]
pub struct UserView<'a> {
    pub id: &'a UserId,
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub created_at: Rfc3339,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    /// False for an account made by a provider sign-in that has not set a password.
    pub has_password: bool,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> UserView<'a> {
        UserView {
            id: &user.id,
            email: &user.email,
            name: &user.name,
            role: user.role,
            created_at: Rfc3339(user.created_at),
            email_verified: user.email_verified_at.is_some(),
            mfa_enabled: user.mfa_enabled(),
            has_password: user.has_password(),
        }
    }
}

#[derive(Serialize)]
pub struct SessionView<'a> {
    pub id: &'a SessionId,
    pub created_at: Rfc3339,
    pub last_seen_at: Rfc3339,
    pub expires_at: Rfc3339,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub current: bool,
}

impl<'a> SessionView<'a> {
    pub fn new(session: &'a Session, current_id: Option<&SessionId>) -> SessionView<'a> {
        SessionView {
            id: &session.id,
            created_at: Rfc3339(session.created_at),
            last_seen_at: Rfc3339(session.last_seen_at),
            expires_at: Rfc3339(session.expires_at),
            ip: session.ip.as_deref(),
            user_agent: session.user_agent.as_deref(),
            current: current_id == Some(&session.id),
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
    pub kind: EventKind,
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

/// `{sessions: [...]}`.
#[derive(Serialize)]
pub struct SessionList<'a> {
    pub sessions: Vec<SessionView<'a>>,
}

impl<'a> SessionList<'a> {
    pub fn new(sessions: &'a [Session], current_id: Option<&SessionId>) -> SessionList<'a> {
        SessionList {
            sessions: sessions
                .iter()
                .map(|s| SessionView::new(s, current_id))
                .collect(),
        }
    }
}

/// `{revoked: n}`: how many sessions a bulk revocation ended.
#[derive(Serialize)]
pub struct Revoked {
    pub revoked: usize,
}

/// `{events: [...]}`.
#[derive(Serialize)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// `{session, token?}`: a refreshed session, with its new token for bearer clients.
#[derive(Serialize)]
pub struct Refreshed<'a> {
    pub session: SessionView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `{token}`: a bearer client's new token after a password change.
#[derive(Serialize)]
pub struct NewToken {
    pub token: String,
}

/// `GET /api/admin/session-stats`.
#[derive(Serialize)]
pub struct SessionStats {
    pub total: i64,
    pub active: i64,
    pub expired: i64,
    pub users_with_active_sessions: i64,
    pub backend: crate::config::Backend,
    pub idle_timeout_secs: i64,
    pub absolute_timeout_secs: i64,
    pub last_cleanup: Option<LastCleanup>,
}

#[derive(Serialize)]
pub struct LastCleanup {
    pub at: Rfc3339,
    pub deleted: i64,
    pub duration_ms: i64,
}

/// `{deleted_count}`.
#[derive(Serialize)]
pub struct CleanupDone {
    pub deleted_count: i64,
}

/// `GET /api/health`.
#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub database: DatabaseHealth,
    pub version: &'static str,
}

#[derive(Serialize)]
pub struct DatabaseHealth {
    pub status: &'static str,
    pub backend: crate::config::Backend,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}
