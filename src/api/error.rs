//! The API's one error type, rendered in the contract's JSON shape by one `Responder`, and the
//! catchers that give Rocket's own errors (and our guards' failures) the same shape.

use std::collections::BTreeMap;
use std::io::Cursor;

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::Catcher;
use serde_json::json;

use crate::auth::{guard, AuthError, Authenticator};
use crate::db::DbError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: Status,
    pub code: &'static str,
    pub message: String,
    pub fields: Option<BTreeMap<String, String>>,
    pub retry_after: Option<i64>,
    /// Clear the session cookie with this answer (a stale or malformed cookie).
    pub clear_cookie: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: None,
            retry_after: None,
            clear_cookie: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::BadRequest, "bad_request", message)
    }

    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            Status::Unauthorized,
            "unauthenticated",
            "You need to sign in.",
        )
    }

    /// Login with a wrong email or password (401), or a wrong password to confirm a change
    /// while signed in (403).
    pub fn invalid_credentials(status: Status) -> ApiError {
        let message = if status == Status::Unauthorized {
            "The email or password is incorrect."
        } else {
            "The password is incorrect."
        };
        ApiError::new(status, "invalid_credentials", message)
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            Status::Forbidden,
            "forbidden",
            "You are not allowed to do this.",
        )
    }

    pub fn csrf_rejected() -> ApiError {
        ApiError::new(
            Status::Forbidden,
            "csrf_rejected",
            "Cross-site requests are not allowed.",
        )
    }

    pub fn not_found() -> ApiError {
        ApiError::new(Status::NotFound, "not_found", "There is nothing here.")
    }

    pub fn email_taken() -> ApiError {
        ApiError::new(
            Status::Conflict,
            "email_taken",
            "An account with this email already exists.",
        )
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            Status::PayloadTooLarge,
            "payload_too_large",
            "The request body is larger than 16 KiB.",
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            Status::UnsupportedMediaType,
            "unsupported_media_type",
            "The request body must be application/json.",
        )
    }

    pub fn validation(fields: BTreeMap<String, String>) -> ApiError {
        ApiError {
            fields: Some(fields),
            ..ApiError::new(
                Status::UnprocessableEntity,
                "validation_failed",
                "Some fields are not valid.",
            )
        }
    }

    pub fn too_many_attempts(retry_after_secs: i64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs.max(1)),
            ..ApiError::new(
                Status::TooManyRequests,
                "too_many_attempts",
                "Too many attempts. Try again later.",
            )
        }
    }

    /// A mailed link that is unknown, used or expired.
    pub fn invalid_token() -> ApiError {
        ApiError::new(
            Status::BadRequest,
            "invalid_token",
            "This link is invalid, used or expired. Ask for a new one.",
        )
    }

    /// A correct password for an address that is not verified yet.
    pub fn email_unverified() -> ApiError {
        ApiError::new(
            Status::Forbidden,
            "email_unverified",
            "Confirm your email address first: open the link in the mail we sent you.",
        )
    }

    /// A way to sign in (a provider, a second factor) asked to be added to an account whose
    /// address nobody has proved yet (`auth::ownership`).
    pub fn verify_before_adding() -> ApiError {
        ApiError::new(
            Status::Forbidden,
            "email_unverified",
            "Confirm your email address before adding a way to sign in: open the link in the mail we sent you.",
        )
    }

    /// The password was right, and the account asks for its second factor (`code`).
    pub fn mfa_required() -> ApiError {
        ApiError::new(
            Status::Unauthorized,
            "mfa_required",
            "Enter the 6-digit code from your authenticator app, or a recovery code.",
        )
    }

    /// A second-factor code that is wrong, replayed or used up: 401 at sign-in, 403 to confirm
    /// a change while signed in. Same code as a wrong password (`invalid_credentials`), with
    /// words about the code.
    pub fn wrong_code(status: Status) -> ApiError {
        ApiError::new(
            status,
            "invalid_credentials",
            "That code is not right, or it was already used. Try the newest code.",
        )
    }

    /// An account without a password (it signs in with an OpenID provider) confirms a change
    /// by a recent sign-in instead: its session is older than that.
    pub fn reauthentication_required() -> ApiError {
        ApiError::new(
            Status::Forbidden,
            "reauthentication_required",
            "This account has no password. Sign out, sign in again with your provider, \
             and retry within 10 minutes.",
        )
    }

    /// Unlinking the provider that is the account's last way to sign in.
    pub fn last_sign_in_method() -> ApiError {
        ApiError::new(
            Status::Conflict,
            "last_sign_in_method",
            "This is your only way to sign in. Set a password or link another provider first.",
        )
    }

    /// Enrollment asked for while two-factor sign-in is already on.
    pub fn mfa_already_enabled() -> ApiError {
        ApiError::new(
            Status::Conflict,
            "mfa_already_enabled",
            "Two-factor sign-in is already on. Turn it off first to set up a new authenticator.",
        )
    }

    /// Confirming with no enrollment started, or turning off what is not on.
    pub fn mfa_not_enabled(message: &str) -> ApiError {
        ApiError::new(Status::Conflict, "mfa_not_enabled", message)
    }

    /// A mail endpoint with no `smtp_url` configured.
    pub fn mail_off() -> ApiError {
        ApiError {
            message: "Email is not configured on this server.".into(),
            ..ApiError::unavailable()
        }
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            Status::ServiceUnavailable,
            "service_unavailable",
            "The service is temporarily unavailable. Try again shortly.",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            Status::InternalServerError,
            "internal",
            "Something went wrong on our side.",
        )
    }

    pub fn clearing_cookie(mut self) -> ApiError {
        self.clear_cookie = true;
        self
    }

    /// The error Rocket reports for `status` when nothing more specific is known.
    pub fn for_status(status: Status) -> ApiError {
        match status.code {
            400 => ApiError::bad_request("The request is malformed."),
            401 => ApiError::unauthenticated(),
            403 => ApiError::forbidden(),
            404 => ApiError::not_found(),
            413 => ApiError::payload_too_large(),
            415 => ApiError::unsupported_media_type(),
            422 => ApiError::new(
                status,
                "validation_failed",
                "The request could not be processed.",
            ),
            503 => ApiError::unavailable(),
            405 => ApiError::new(
                status,
                "method_not_allowed",
                "This method is not allowed here.",
            ),
            431 => ApiError::new(
                status,
                "request_header_fields_too_large",
                "The request headers are too large.",
            ),
            code if code < 500 => ApiError::bad_request("The request is malformed."),
            _ => ApiError::internal(),
        }
    }

    /// Hands this error to Rocket from a guard: remembered for the catcher, which renders it
    /// (Rocket passes catchers only the status). Returns the status for the guard's outcome.
    pub fn remember(self, req: &Request<'_>) -> Status {
        let status = self.status;
        req.local_cache(|| GuardError(Some(self)));
        status
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::Unavailable => ApiError::unavailable(),
            DbError::Query(diesel::result::Error::NotFound) => ApiError::not_found(),
            // Every foreign key of latchkey's tables names a user: a write that meets one
            // lost a race with the account's deletion (an event, a mail link, a throttle, a
            // second factor, a provider flow of a user deleted a moment before). The account
            // and its sessions are gone, so the caller is no longer signed in.
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => {
                tracing::debug!("a write met an account deleted at the same moment");
                ApiError::unauthenticated().clearing_cookie()
            }
            other => {
                tracing::error!(error = %other, "database call failed");
                ApiError::internal()
            }
        }
    }
}

/// The one place a guard's reason becomes the contract's JSON.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unauthenticated { stale_cookie } => ApiError {
                clear_cookie: stale_cookie,
                ..ApiError::unauthenticated()
            },
            AuthError::Forbidden => ApiError::forbidden(),
            AuthError::CrossSite => ApiError::csrf_rejected(),
            AuthError::Throttled { retry_after } => ApiError::too_many_attempts(retry_after),
            AuthError::Overloaded => ApiError {
                message: "Too many sign-ins at once. Try again in a moment.".into(),
                retry_after: Some(1),
                ..ApiError::unavailable()
            },
            AuthError::MethodOverride => ApiError::new(
                Status::MethodNotAllowed,
                "method_not_allowed",
                "Method overrides (`_method`) are not accepted; send the method itself.",
            ),
            AuthError::Unavailable => ApiError::unavailable(),
            AuthError::Internal => ApiError::internal(),
        }
    }
}

/// A host route returning `Result<_, DbError>` answers 503 when the pool or the database could
/// not answer in time, 404 for `NotFound`, else 500 (logged), in the contract's shape.
impl<'r> Responder<'r, 'static> for DbError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        ApiError::from(self).respond_to(req)
    }
}

/// A host route returning `Result<_, AuthError>` answers in the contract's shape too.
impl<'r> Responder<'r, 'static> for AuthError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        ApiError::from(self).respond_to(req)
    }
}

/// A guard's failure, kept for the catcher of the same request.
struct GuardError(Option<ApiError>);

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(fields) = &self.fields {
            error["fields"] = json!(fields);
        }
        let body = json!({ "error": error }).to_string();
        if self.clear_cookie {
            if let Some(auth) = req.rocket().state::<Authenticator>() {
                auth.cookie.clear(req.cookies());
            }
        }
        let mut response = Response::build();
        response
            .status(self.status)
            .header(ContentType::JSON)
            .header(Header::new("Cache-Control", "no-store"))
            .sized_body(body.len(), Cursor::new(body));
        if let Some(seconds) = self.retry_after {
            response.header(Header::new("Retry-After", seconds.to_string()));
        }
        Ok(response.finalize())
    }
}

/// Renders what a guard reported (a body guard's `ApiError`, or an auth guard's reason) when
/// its status is the one being caught, else the generic error for the status.
#[rocket::catch(default)]
fn any_error(status: Status, req: &Request<'_>) -> ApiError {
    if let GuardError(Some(error)) = req.local_cache(|| GuardError(None)) {
        if error.status == status {
            return error.clone();
        }
    }
    match guard::failure(req) {
        Some(reason) if reason.status() == status => reason.into(),
        _ => ApiError::for_status(status),
    }
}

pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![any_error]
}
