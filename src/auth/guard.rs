//! Request guards. They compose: [`PresentedToken`] reads a credential (cookie or bearer),
//! [`CurrentSession`] resolves it through the pool in one query, [`AdminUser`] requires the
//! admin role on top. No credential is 401, a bad one 401 (and a stale cookie is cleared), a
//! database that cannot answer 503 with the cookie left alone. Guards that read a credential
//! for an unsafe method also apply the cross-site check.

use std::ops::Deref;
use std::sync::Arc;

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::auth::cookies;
use crate::auth::csrf;
use crate::auth::token::{SessionToken, TokenHash};
use crate::clock;
use crate::db::models::session::ClientInfo;
use crate::db::models::{Session, User};
use crate::App;

fn app<'r>(req: &'r Request<'_>) -> &'r App {
    req.rocket()
        .state::<App>()
        .expect("App is managed by lib::build")
}

fn guard_result<T>(req: &Request<'_>, result: Result<T, ApiError>) -> Outcome<T, ()> {
    match result {
        Ok(value) => Outcome::Success(value),
        Err(error) => Outcome::Error((error.remember(req), ())),
    }
}

/// Longest user agent kept with a session; the rest is noise or abuse.
const MAX_USER_AGENT: usize = 256;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientInfo {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let user_agent = req.headers().get_one("User-Agent").map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT)
                .collect::<String>()
        });
        Outcome::Success(ClientInfo {
            ip: req.client_ip().map(|ip| ip.to_string()),
            user_agent: user_agent.filter(|ua| !ua.is_empty()),
        })
    }
}

/// How the client presented its token; decides cookie handling and the CSRF exemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
}

/// `Authorization: Bearer <value>`, if present (any scheme other than Bearer is an error).
fn bearer_value<'a>(req: &'a Request<'_>) -> Option<Result<&'a str, ApiError>> {
    let value = req.headers().get_one("Authorization")?;
    let value = value.trim();
    Some(match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => Ok(value[7..].trim()),
        _ => Err(ApiError::unauthenticated()),
    })
}

/// The credential this request carries: the `Authorization` header wins over the cookie.
fn credential(req: &Request<'_>, app: &App) -> Result<Option<(SessionToken, Via)>, ApiError> {
    if let Some(value) = bearer_value(req) {
        let token = SessionToken::parse(value?).ok_or_else(ApiError::unauthenticated)?;
        return Ok(Some((token, Via::Bearer)));
    }
    match cookies::session_cookie(req.cookies(), &app.settings) {
        Some(value) => match SessionToken::parse(&value) {
            Some(token) => Ok(Some((token, Via::Cookie))),
            None => Err(ApiError::unauthenticated().clearing_cookie()),
        },
        None => Ok(None),
    }
}

/// A well-formed token the client sent, not yet looked up (login revokes it; logout deletes
/// it). Malformed or absent is `None`.
pub struct PresentedToken(pub Option<(SessionToken, Via)>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PresentedToken {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let app = app(req);
        let result = csrf::check(req, &app.settings)
            .map(|()| PresentedToken(credential(req, app).unwrap_or(None)));
        guard_result(req, result)
    }
}

/// The signed-in session and its user, resolved once per request; every guard that asks gets
/// the same shared value.
#[derive(Clone)]
pub struct CurrentSession(Arc<SignedIn>);

pub struct SignedIn {
    pub session: Session,
    pub user: User,
    pub hash: TokenHash,
    pub via: Via,
}

impl Deref for CurrentSession {
    type Target = SignedIn;

    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

async fn authenticate(req: &Request<'_>, app: &App) -> Result<CurrentSession, ApiError> {
    let Some((token, via)) = credential(req, app)? else {
        return Err(ApiError::unauthenticated());
    };
    if via == Via::Cookie {
        csrf::check(req, &app.settings)?;
    }
    let hash = token.hash();
    let policy = app.policy;
    let now = clock::now();
    let found = app.lookup.resolve(hash, now).await?;
    match found {
        Some((mut session, user)) => {
            // Rolling expiry, at most once per touch interval. The write may wait on row locks,
            // so it runs in the background on the blocking pool and the request does not wait
            // for it; if too many are already in flight it is skipped (the session's next
            // request tries again). The answer shows the new times, as the write will.
            if session.due_for_touch(&policy, now) {
                let stored = session.clone();
                let started = app.db.run_detached("session touch", move |conn| {
                    let mut stored = stored;
                    stored.touch(conn, &policy, now).map(drop)
                });
                if started {
                    session.last_seen_at = now;
                    session.expires_at = policy.expires_at(session.created_at, now);
                    if via == Via::Cookie {
                        cookies::set_session(req.cookies(), &app.settings, &token, &session, now);
                    }
                }
            }
            Ok(CurrentSession(Arc::new(SignedIn {
                session,
                user,
                hash,
                via,
            })))
        }
        None if via == Via::Cookie => Err(ApiError::unauthenticated().clearing_cookie()),
        None => Err(ApiError::unauthenticated()),
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CurrentSession {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        // Resolved once per request, however many guards ask.
        let result = req
            .local_cache_async(async { authenticate(req, app(req)).await })
            .await
            .clone();
        guard_result(req, result)
    }
}

/// A signed-in admin.
pub struct AdminUser(pub CurrentSession);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AdminUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match CurrentSession::from_request(req).await {
            Outcome::Success(current) if current.user.is_admin() => {
                Outcome::Success(AdminUser(current))
            }
            Outcome::Success(_) => Outcome::Error((ApiError::forbidden().remember(req), ())),
            Outcome::Error(e) => Outcome::Error(e),
            Outcome::Forward(f) => Outcome::Forward(f),
        }
    }
}

/// Who may run a cleanup over HTTP: the scheduler holding `CRON_SECRET`, or an admin.
pub enum CleanupCaller {
    CronSecret,
    Admin(Box<CurrentSession>),
}

/// Compares digests so that neither the content nor the length leaks through timing.
fn secret_matches(given: &str, secret: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let secret = Sha256::digest(secret.as_bytes());
    given.ct_eq(&secret).into()
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CleanupCaller {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        if let (Some(secret), Some(Ok(given))) = (&app(req).settings.cron_secret, bearer_value(req))
        {
            if secret_matches(given, secret) {
                return Outcome::Success(CleanupCaller::CronSecret);
            }
        }
        match AdminUser::from_request(req).await {
            Outcome::Success(AdminUser(current)) => {
                Outcome::Success(CleanupCaller::Admin(Box::new(current)))
            }
            Outcome::Error(e) => Outcome::Error(e),
            Outcome::Forward(_) => Outcome::Error((Status::Unauthorized, ())),
        }
    }
}
