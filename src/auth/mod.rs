//! Authentication: tokens, password hashing, the session cookie, request guards, the
//! cross-site check and login throttling.

pub mod cookies;
pub mod csrf;
pub mod guard;
pub mod lookup;
pub mod password;
pub mod throttle;
pub mod token;
