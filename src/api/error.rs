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
use crate::signin::Refused;
use crate::validation::Invalid;

/// Every error code of the API, each with the one status it is answered with. Where the
/// contract gives one code two statuses (`invalid_credentials` is 401 when signing in and 403
/// when confirming a change; `invalid_token` is 400 for a mailed link and 401 for a provider's
/// sign-in that is over; `mfa_required` 401 and 403 likewise), those are two variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    /// Signing in: a wrong address, password or second-factor code.
    InvalidCredentials,
    /// Confirming a change while signed in: a wrong password or code.
    WrongConfirmation,
    /// Signing in: the password was right; the account asks for its second factor.
    MfaRequired,
    /// Confirming a change: the account has a second factor and no code came.
    ConfirmationCodeRequired,
    Forbidden,
    CsrfRejected,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    LastSignInMethod,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    TooManyAttempts,
    /// A mailed link that is unknown, used or expired.
    InvalidLink,
    /// A provider's sign-in waiting for its second factor that is over.
    SignInOver,
    EmailUnverified,
    ReauthenticationRequired,
    HeaderFieldsTooLarge,
    ServiceUnavailable,
    Internal,
}

impl ErrorCode {
    /// The code in the body's `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidCredentials | ErrorCode::WrongConfirmation => "invalid_credentials",
            ErrorCode::MfaRequired | ErrorCode::ConfirmationCodeRequired => "mfa_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CsrfRejected => "csrf_rejected",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::LastSignInMethod => "last_sign_in_method",
            ErrorCode::MfaAlreadyEnabled => "mfa_already_enabled",
            ErrorCode::MfaNotEnabled => "mfa_not_enabled",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::InvalidLink | ErrorCode::SignInOver => "invalid_token",
            ErrorCode::EmailUnverified => "email_unverified",
            ErrorCode::ReauthenticationRequired => "reauthentication_required",
            ErrorCode::HeaderFieldsTooLarge => "request_header_fields_too_large",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The status it is answered with.
    pub fn status(self) -> Status {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidLink => Status::BadRequest,
            ErrorCode::Unauthenticated
            | ErrorCode::InvalidCredentials
            | ErrorCode::MfaRequired
            | ErrorCode::SignInOver => Status::Unauthorized,
            ErrorCode::WrongConfirmation
            | ErrorCode::ConfirmationCodeRequired
            | ErrorCode::Forbidden
            | ErrorCode::CsrfRejected
            | ErrorCode::EmailUnverified
            | ErrorCode::ReauthenticationRequired => Status::Forbidden,
            ErrorCode::NotFound => Status::NotFound,
            ErrorCode::MethodNotAllowed => Status::MethodNotAllowed,
            ErrorCode::EmailTaken
            | ErrorCode::LastSignInMethod
            | ErrorCode::MfaAlreadyEnabled
            | ErrorCode::MfaNotEnabled => Status::Conflict,
            ErrorCode::PayloadTooLarge => Status::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType => Status::UnsupportedMediaType,
            ErrorCode::ValidationFailed => Status::UnprocessableEntity,
            ErrorCode::TooManyAttempts => Status::TooManyRequests,
            ErrorCode::HeaderFieldsTooLarge => Status::RequestHeaderFieldsTooLarge,
            ErrorCode::ServiceUnavailable => Status::ServiceUnavailable,
            ErrorCode::Internal => Status::InternalServerError,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub fields: Option<BTreeMap<String, String>>,
    pub retry_after: Option<i64>,
    /// Clear the session cookie with this answer (a stale or malformed cookie).
    pub clear_cookie: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            fields: None,
            retry_after: None,
            clear_cookie: false,
        }
    }

    /// The status this error is answered with (its code's).
    pub fn status(&self) -> Status {
        self.code.status()
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthenticated() -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, "You need to sign in.")
    }

    /// Signing in with a wrong address or password.
    pub fn invalid_credentials() -> ApiError {
        ApiError::new(
            ErrorCode::InvalidCredentials,
            "The email or password is incorrect.",
        )
    }

    /// A wrong password to confirm a change while signed in.
    pub fn wrong_password() -> ApiError {
        ApiError::new(ErrorCode::WrongConfirmation, "The password is incorrect.")
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(ErrorCode::Forbidden, "You are not allowed to do this.")
    }

    pub fn csrf_rejected() -> ApiError {
        ApiError::new(
            ErrorCode::CsrfRejected,
            "Cross-site requests are not allowed.",
        )
    }

    pub fn not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "There is nothing here.")
    }

    pub fn email_taken() -> ApiError {
        ApiError::new(
            ErrorCode::EmailTaken,
            "An account with this email already exists.",
        )
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "The request body is larger than 16 KiB.",
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "The request body must be application/json.",
        )
    }

    pub fn validation(fields: BTreeMap<String, String>) -> ApiError {
        ApiError {
            fields: Some(fields),
            ..ApiError::new(ErrorCode::ValidationFailed, "Some fields are not valid.")
        }
    }

    pub fn too_many_attempts(retry_after_secs: i64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs.max(1)),
            ..ApiError::new(
                ErrorCode::TooManyAttempts,
                "Too many attempts. Try again later.",
            )
        }
    }

    /// A mailed link that is unknown, used or expired.
    pub fn invalid_token() -> ApiError {
        ApiError::new(
            ErrorCode::InvalidLink,
            "This link is invalid, used or expired. Ask for a new one.",
        )
    }

    /// A correct password for an address that is not verified yet.
    pub fn email_unverified() -> ApiError {
        ApiError::new(
            ErrorCode::EmailUnverified,
            "Confirm your email address first: open the link in the mail we sent you.",
        )
    }

    /// A way to sign in (a provider, a second factor) asked to be added to an account whose
    /// address nobody has proved yet (`auth::ownership`).
    pub fn verify_before_adding() -> ApiError {
        ApiError::new(
            ErrorCode::EmailUnverified,
            "Confirm your email address before adding a way to sign in: open the link in the mail we sent you.",
        )
    }

    /// The password was right, and the account asks for its second factor (`code`).
    pub fn mfa_required() -> ApiError {
        ApiError::new(ErrorCode::MfaRequired, MFA_CODE_WANTED)
    }

    /// Confirming a change of an account with a second factor, without a code from it.
    pub fn confirmation_code_required() -> ApiError {
        ApiError::new(ErrorCode::ConfirmationCodeRequired, MFA_CODE_WANTED)
    }

    /// A second-factor code that is wrong, replayed or used up, at sign-in: the code of a
    /// wrong password (`invalid_credentials`), with words about the code.
    pub fn wrong_code() -> ApiError {
        ApiError::new(ErrorCode::InvalidCredentials, WRONG_CODE)
    }

    /// The same, confirming a change while signed in.
    pub fn wrong_confirmation_code() -> ApiError {
        ApiError::new(ErrorCode::WrongConfirmation, WRONG_CODE)
    }

    /// A provider's sign-in waiting for its second factor is over.
    pub fn sign_in_over() -> ApiError {
        ApiError::new(
            ErrorCode::SignInOver,
            "This sign-in is over. Sign in with your provider again.",
        )
    }

    /// An account without a password (it signs in with an OpenID provider) confirms a change
    /// by a recent sign-in instead: its session is older than that.
    pub fn reauthentication_required() -> ApiError {
        ApiError::new(
            ErrorCode::ReauthenticationRequired,
            "This account has no password. Sign out, sign in again with your provider, \
             and retry within 10 minutes.",
        )
    }

    /// Unlinking the provider that is the account's last way to sign in.
    pub fn last_sign_in_method() -> ApiError {
        ApiError::new(
            ErrorCode::LastSignInMethod,
            "This is your only way to sign in. Set a password or link another provider first.",
        )
    }

    /// Enrollment asked for while two-factor sign-in is already on.
    pub fn mfa_already_enabled() -> ApiError {
        ApiError::new(
            ErrorCode::MfaAlreadyEnabled,
            "Two-factor sign-in is already on. Turn it off first to set up a new authenticator.",
        )
    }

    /// Confirming with no enrollment started, or turning off what is not on.
    pub fn mfa_not_enabled(message: &str) -> ApiError {
        ApiError::new(ErrorCode::MfaNotEnabled, message)
    }

    /// A mail endpoint with no `smtp_url` configured.
    pub fn mail_off() -> ApiError {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Email is not configured on this server.",
        )
    }

    /// The password-hashing queue is full.
    pub fn overloaded() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::ServiceUnavailable,
                "Too many sign-ins at once. Try again in a moment.",
            )
        }
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "The service is temporarily unavailable. Try again shortly.",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "Something went wrong on our side.")
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
                ErrorCode::ValidationFailed,
                "The request could not be processed.",
            ),
            503 => ApiError::unavailable(),
            405 => ApiError::method_not_allowed("This method is not allowed here."),
            431 => ApiError::new(
                ErrorCode::HeaderFieldsTooLarge,
                "The request headers are too large.",
            ),
            code if code < 500 => ApiError::bad_request("The request is malformed."),
            _ => ApiError::internal(),
        }
    }

    pub fn method_not_allowed(message: &str) -> ApiError {
        ApiError::new(ErrorCode::MethodNotAllowed, message)
    }

    /// Hands this error to Rocket from a guard: remembered for the catcher, which renders it
    /// (Rocket passes catchers only the status). Returns the status for the guard's outcome.
    pub fn remember(self, req: &Request<'_>) -> Status {
        let status = self.status();
        req.local_cache(|| GuardError(Some(self)));
        status
    }
}

const MFA_CODE_WANTED: &str =
    "Enter the 6-digit code from your authenticator app, or a recovery code.";
const WRONG_CODE: &str = "That code is not right, or it was already used. Try the newest code.";

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

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        let fields = e.0.into_iter();
        ApiError::validation(
            fields
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

/// The one place the sign-in service's reason becomes the contract's JSON.
impl From<Refused> for ApiError {
    fn from(e: Refused) -> ApiError {
        match e {
            Refused::Invalid(fields) => fields.into(),
            Refused::Overloaded => ApiError::overloaded(),
            Refused::Throttled(seconds) => ApiError::too_many_attempts(seconds),
            Refused::InvalidCredentials => ApiError::invalid_credentials(),
            Refused::WrongCode => ApiError::wrong_code(),
            Refused::MfaRequired => ApiError::mfa_required(),
            Refused::EmailUnverified => ApiError::email_unverified(),
            Refused::EmailTaken => ApiError::email_taken(),
            Refused::WrongPassword => ApiError::wrong_password(),
            Refused::CodeRequired => ApiError::confirmation_code_required(),
            Refused::WrongConfirmationCode => ApiError::wrong_confirmation_code(),
            Refused::ReauthenticationRequired => ApiError::reauthentication_required(),
            Refused::SignInOver => ApiError::sign_in_over(),
            Refused::Db(e) => e.into(),
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
            AuthError::MethodOverride => ApiError::method_not_allowed(
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
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
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
            .status(self.status())
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
        if error.status() == status {
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
