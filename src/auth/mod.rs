//! Authentication: password hashing, the session cookie, request guards, the shared session
//! lookup, the cross-site check, login throttling, the second factor and OpenID providers. Knows the database
//! layer (`db`) and nothing above it; its one error type is [`AuthError`].

pub mod cookies;
pub mod csrf;
mod error;
pub mod guard;
pub mod lookup;
pub mod mfa;
pub mod oidc;
pub mod ownership;
pub mod password;
pub mod throttle;

pub use error::AuthError;
pub use guard::{AdminUser, Authenticator, CurrentSession, SignedIn, Via};
