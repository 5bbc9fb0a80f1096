//! One file per table: the row types and the queries on that table. Functions return
//! `QueryResult` and use `Option` where "absent" is a normal answer.

pub mod cleanup_run;
pub mod event;
pub mod identity;
pub mod mail_token;
pub mod second_factor;
pub mod session;
pub mod throttle;
pub mod user;

pub use cleanup_run::{CleanupLease, CleanupRun};
pub use event::{EventKind, NewEvent, SecurityEvent};
pub use identity::{Identity, OidcLogin};
pub use mail_token::{MailKind, MailToken};
pub use second_factor::{RecoveryCode, TotpFactor};
pub use session::{Session, SessionPolicy};
pub use user::{NewUser, Role, User};

/// A random UUID (v4) as the text both backends store (rows whose ids are not shown anywhere:
/// events, cleanup runs; users and sessions have `domain::UserId` and `domain::SessionId`).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
