//! One file per table: the row types and the queries on that table. Functions return
//! `QueryResult` and use `Option` where "absent" is a normal answer.

pub mod cleanup_run;
pub mod event;
pub mod session;
pub mod throttle;
pub mod user;

pub use cleanup_run::CleanupRun;
pub use event::{EventKind, NewEvent, SecurityEvent};
pub use session::{Session, SessionPolicy};
pub use user::{NewUser, Role, User};

/// A random UUID (v4) as the text both backends store.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The canonical form of an id from a URL, or `None` if it cannot be one of ours (such input
/// never reaches SQL; PostgreSQL would refuse a NUL byte with an error, not "not found").
pub fn parse_id(text: &str) -> Option<String> {
    uuid::Uuid::parse_str(text).ok().map(|id| id.to_string())
}
