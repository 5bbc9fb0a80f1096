//! Why a request is not authenticated, as the guards report it. The API renders it in the
//! contract's JSON shape (`api::error`); a host application can take `Result<CurrentSession,
//! AuthError>` and decide for itself.

use std::fmt;

use rocket::http::Status;

use crate::db::DbError;

/// The reason a latchkey guard did not let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credential, or one that is malformed, unknown, revoked or expired (401). With
    /// `stale_cookie`, the request's session cookie named no live session and latchkey clears
    /// it in the response.
    Unauthenticated { stale_cookie: bool },
    /// Signed in, but the route needs the admin role (403).
    Forbidden,
    /// An unsafe request authenticated by cookie (or sent to latchkey's API) came from
    /// another site (403 `csrf_rejected`).
    CrossSite,
    /// An unsafe method reached through a `_method` form field, which latchkey does not honour:
    /// a plain HTML form from anywhere could otherwise reach DELETE routes (405).
    MethodOverride,
    /// The database could not answer within `pool_timeout_ms` (503). Never reported as 401.
    Unavailable,
    /// This client has used up its tries of a secret for now (429 with `Retry-After`).
    Throttled { retry_after: i64 },
    /// The database failed in some other way; the cause is logged (500).
    Internal,
}

impl AuthError {
    /// The HTTP status this reason stands for.
    pub fn status(self) -> Status {
        match self {
            AuthError::Unauthenticated { .. } => Status::Unauthorized,
            AuthError::Forbidden | AuthError::CrossSite => Status::Forbidden,
            AuthError::MethodOverride => Status::MethodNotAllowed,
            AuthError::Unavailable => Status::ServiceUnavailable,
            AuthError::Throttled { .. } => Status::TooManyRequests,
            AuthError::Internal => Status::InternalServerError,
        }
    }

    pub(crate) fn unauthenticated() -> AuthError {
        AuthError::Unauthenticated {
            stale_cookie: false,
        }
    }

    pub(crate) fn stale_cookie() -> AuthError {
        AuthError::Unauthenticated { stale_cookie: true }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Unauthenticated { .. } => "not signed in",
            AuthError::Forbidden => "not allowed",
            AuthError::CrossSite => "cross-site request refused",
            AuthError::MethodOverride => "method override refused",
            AuthError::Unavailable => "database unavailable",
            AuthError::Throttled { .. } => "too many tries",
            AuthError::Internal => "internal error",
        })
    }
}

impl std::error::Error for AuthError {}

impl From<DbError> for AuthError {
    fn from(e: DbError) -> AuthError {
        match e {
            DbError::Unavailable => AuthError::Unavailable,
            other => {
                tracing::error!(error = %other, "session lookup failed");
                AuthError::Internal
            }
        }
    }
}
