//! Request guards. They compose: a credential is read (cookie or bearer), [`CurrentSession`]
//! resolves it through the shared lookup, [`AdminUser`] requires the admin role on top. No or
//! a bad credential is 401 (and a stale cookie is cleared), a database that cannot answer 503
//! with the cookie left alone. A guard that authenticates an unsafe request by cookie applies
//! the cross-site check, whatever the path.
//!
//! Every guard reads one managed [`Authenticator`], which [`crate::Latchkey`] puts in place at
//! ignite; a route that uses a guard in an application without it fails at launch (a Rocket
//! sentinel), not at its first request.

use std::ops::Deref;
use std::sync::Arc;

use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::cookies::SessionCookie;
use crate::auth::csrf::CrossSiteCheck;
use crate::auth::lookup::SessionLookup;
use crate::auth::throttle;
use crate::auth::AuthError;
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::EventKind;
use crate::db::models::{Session, SessionPolicy, User};
use crate::db::Db;
use crate::token::{Token, TokenHash};

/// How long after a session's last use a token that its refresh replaced may still arrive
/// without ending it (a request sent just before the refresh).
const REUSE_GRACE: chrono::Duration = chrono::Duration::seconds(10);

/// Everything the guards need, managed once by the fairing.
pub struct Authenticator {
    pub(crate) lookup: SessionLookup,
    pub(crate) db: Db,
    pub(crate) policy: SessionPolicy,
    /// The session cookie (name, attributes).
    pub cookie: SessionCookie,
    /// The cross-site check with the configured `allowed_origins`.
    pub cross_site: CrossSiteCheck,
    cron_secret: Option<String>,
    /// Reuse checks of replaced tokens under way (see [`Authenticator::end_if_reused`]): a
    /// bound of their own, so that a flood of unknown tokens neither queues up nor takes the
    /// places that session touches use.
    reuse_checks: Arc<tokio::sync::Semaphore>,
}

/// Reuse checks that may be under way at once; beyond it, a check is skipped.
const REUSE_CHECKS: usize = 1;

impl Authenticator {
    pub(crate) fn new(
        lookup: SessionLookup,
        db: Db,
        settings: &crate::config::Settings,
    ) -> Authenticator {
        Authenticator {
            lookup,
            db,
            policy: SessionPolicy::from_settings(settings),
            cookie: SessionCookie::from_settings(settings),
            cross_site: CrossSiteCheck::from_settings(settings),
            cron_secret: settings.cron_secret.clone(),
            reuse_checks: Arc::new(tokio::sync::Semaphore::new(REUSE_CHECKS)),
        }
    }

    /// The managed authenticator, or `Internal` (a sentinel normally stops such a launch).
    pub(crate) fn of<'r>(req: &'r Request<'_>) -> Result<&'r Authenticator, AuthError> {
        req.rocket().state::<Authenticator>().ok_or_else(|| {
            tracing::error!("latchkey's state is missing: attach `Latchkey::fairing()`");
            AuthError::Internal
        })
    }

    /// The credential this request carries: the `Authorization` header wins over the cookie.
    /// `Ok(None)` when there is none.
    fn credential(&self, req: &Request<'_>) -> Result<Option<(Token, Via)>, AuthError> {
        if let Some(value) = bearer_value(req) {
            let token = Token::parse(value?).ok_or_else(AuthError::unauthenticated)?;
            return Ok(Some((token, Via::Bearer)));
        }
        match self.cookie.read(req.cookies()) {
            Some(value) => match Token::parse(&value) {
                Some(token) => Ok(Some((token, Via::Cookie))),
                None => Err(AuthError::stale_cookie()),
            },
            None => Ok(None),
        }
    }

    async fn authenticate(&self, req: &Request<'_>) -> Result<CurrentSession, AuthError> {
        self.resolve(req, false).await
    }

    /// For forward auth: the session of the request a reverse proxy asks about, with the
    /// cross-site check applied to that original request (see
    /// [`CrossSiteCheck::check_forwarded`]). Costs what any authenticated request costs: one
    /// shared lookup, and a touch only when one is due.
    pub async fn authenticate_forwarded(
        &self,
        req: &Request<'_>,
    ) -> Result<CurrentSession, AuthError> {
        self.resolve(req, true).await
    }

    /// A token that is no session's may be one a refresh replaced: then it was copied, and
    /// the session it was rotated into ends (in the background, at most [`REUSE_CHECKS`] at
    /// once; the answer is 401 either way). A token used again within [`REUSE_GRACE`] of its
    /// session's last use is taken for a request that was under way when the refresh
    /// happened.
    fn end_if_reused(&self, req: &Request<'_>, hash: TokenHash, now: chrono::NaiveDateTime) {
        let Ok(permit) = self.reuse_checks.clone().try_acquire_owned() else {
            return;
        };
        let client = client_of(req);
        let db = self.db.clone();
        rocket::tokio::spawn(async move {
            let _permit = permit;
            let checked = db
                .run(move |conn| {
                    let Some(session) = Session::revoke_reused(conn, &hash, now - REUSE_GRACE)?
                    else {
                        return Ok(None);
                    };
                    let revoked = EventKind::SessionRevoked;
                    let (user, id) = (&session.user_id, &session.id);
                    record(conn, user, revoked, Some(id), &client, now)?;
                    Ok(Some(session.id))
                })
                .await;
            match checked {
                Ok(Some(session)) => {
                    tracing::warn!(%session, "a replaced token was used again: session ended")
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "token reuse check failed"),
            }
        });
    }

    async fn resolve(
        &self,
        req: &Request<'_>,
        forwarded: bool,
    ) -> Result<CurrentSession, AuthError> {
        let Some((token, via)) = self.credential(req)? else {
            return Err(AuthError::unauthenticated());
        };
        if via == Via::Cookie {
            if forwarded {
                self.cross_site.check_forwarded(req)?;
            } else {
                self.cross_site.check(req)?;
            }
        }
        let hash = token.hash();
        let now = self.db.now();
        let Some((mut session, user)) = self.lookup.resolve(hash, now).await? else {
            self.end_if_reused(req, hash, now);
            return Err(match via {
                Via::Cookie => AuthError::stale_cookie(),
                Via::Bearer => AuthError::unauthenticated(),
            });
        };
        // Rolling expiry, at most once per touch interval. The write may wait on row locks, so
        // it runs in the background and the request does not wait for it; if too many are
        // already in flight it is skipped (the session's next request tries again). The answer
        // shows the new times, as the write will.
        let policy = self.policy;
        if session.due_for_touch(&policy, now) {
            let stored = session.clone();
            let started = self.db.run_detached("session touch", move |conn| {
                let mut stored = stored;
                stored.touch(conn, &policy, now).map(drop)
            });
            if started {
                session.last_seen_at = now;
                session.expires_at = policy.expires_at(session.created_at, now);
                if via == Via::Cookie {
                    self.cookie.set(req.cookies(), &token, &session, now);
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
}

/// A guard failure, remembered for the rest of the request: latchkey's catchers render it,
/// and the response fairing clears a stale cookie even when the host's own catcher answers.
struct Failure(Option<AuthError>);

fn fail<T>(req: &Request<'_>, error: AuthError) -> Outcome<T, AuthError> {
    req.local_cache(|| Failure(Some(error)));
    Outcome::Error((error.status(), error))
}

/// The reason a latchkey guard refused this request, if one did.
pub fn failure(req: &Request<'_>) -> Option<AuthError> {
    req.local_cache(|| Failure(None)).0
}

/// The session resolved for this request, once, whichever guards ask.
struct Resolution(Option<Result<CurrentSession, AuthError>>);

/// Whether a guard resolved a session for this request (its answer carries session data).
pub fn resolved(req: &Request<'_>) -> bool {
    matches!(req.local_cache(|| Resolution(None)).0, Some(Ok(_)))
}

fn abort_without_state(rocket: &Rocket<Ignite>, guard: &str) -> bool {
    if rocket.state::<Authenticator>().is_some() {
        return false;
    }
    tracing::error!(
        "a route uses latchkey's `{guard}` guard, but `Latchkey::fairing()` is not attached"
    );
    eprintln!("latchkey: a route uses `{guard}`, but `Latchkey::fairing()` is not attached");
    true
}

/// Who sent the request: its client address (as Rocket's `ip_header` rule gives it) and
/// user agent.
fn client_of(req: &Request<'_>) -> ClientInfo {
    ClientInfo::new(
        req.client_ip().map(|ip| ip.to_string()),
        req.headers().get_one("User-Agent"),
    )
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientInfo {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        Outcome::Success(client_of(req))
    }
}

/// How the client presented its token; decides cookie handling and the CSRF exemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
}

/// `Authorization: Bearer <value>`, if present (any scheme other than Bearer is an error).
fn bearer_value<'a>(req: &'a Request<'_>) -> Option<Result<&'a str, AuthError>> {
    let value = req.headers().get_one("Authorization")?;
    let value = value.trim();
    Some(match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => Ok(value[7..].trim()),
        _ => Err(AuthError::unauthenticated()),
    })
}

/// For latchkey's own sign-in and sign-out routes: the cross-site check (always, credential
/// or not), then the well-formed token the client sent, not yet looked up (login revokes it;
/// logout deletes it). Malformed or absent is `None`.
pub struct PresentedToken(pub Option<(Token, Via)>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PresentedToken {
    type Error = AuthError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, AuthError> {
        let checked = Authenticator::of(req).and_then(|auth| {
            auth.cross_site.check(req)?;
            Ok(PresentedToken(auth.credential(req).unwrap_or(None)))
        });
        match checked {
            Ok(presented) => Outcome::Success(presented),
            Err(error) => fail(req, error),
        }
    }
}

impl PresentedToken {
    /// The session a browser's cookie names, which a new sign-in replaces (session fixation
    /// defence). Only a cookie can be fixed on a victim; bearer clients manage their own
    /// tokens.
    pub fn cookie_session(self) -> Option<TokenHash> {
        match self.0 {
            Some((token, Via::Cookie)) => Some(token.hash()),
            _ => None,
        }
    }
}

impl Sentinel for PresentedToken {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        abort_without_state(rocket, "PresentedToken")
    }
}

/// The signed-in session and its user: a request guard for any route.
///
/// Resolved once per request through latchkey's shared lookup: 401 with no or a bad
/// credential, 503 when the database cannot answer (never 401), and the session extended as
/// usual. `Option<CurrentSession>` and `Result<CurrentSession, AuthError>` let a route decide
/// for itself. An unsafe request (POST, PUT, PATCH, DELETE) authenticated by cookie must pass
/// the cross-site check first.
#[derive(Clone)]
pub struct CurrentSession(Arc<SignedIn>);

/// What [`CurrentSession`] dereferences to.
pub struct SignedIn {
    /// The account.
    pub user: User,
    /// The session this request authenticated with.
    pub session: Session,
    /// Whether it came as the cookie or a bearer token.
    pub via: Via,
    pub(crate) hash: TokenHash,
}

impl Deref for CurrentSession {
    type Target = SignedIn;

    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CurrentSession {
    type Error = AuthError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, AuthError> {
        let resolution = req
            .local_cache_async(async {
                let result = match Authenticator::of(req) {
                    Ok(auth) => auth.authenticate(req).await,
                    Err(e) => Err(e),
                };
                Resolution(Some(result))
            })
            .await;
        match &resolution.0 {
            Some(Ok(current)) => Outcome::Success(current.clone()),
            Some(Err(error)) => fail(req, *error),
            None => fail(req, AuthError::Internal),
        }
    }
}

impl Sentinel for CurrentSession {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        abort_without_state(rocket, "CurrentSession")
    }
}

/// A signed-in admin (role `admin`): 403 `forbidden` for anyone else who is signed in.
pub struct AdminUser(pub CurrentSession);

impl Deref for AdminUser {
    type Target = SignedIn;

    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AdminUser {
    type Error = AuthError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, AuthError> {
        match CurrentSession::from_request(req).await {
            Outcome::Success(current) if current.user.is_admin() => {
                Outcome::Success(AdminUser(current))
            }
            Outcome::Success(_) => fail(req, AuthError::Forbidden),
            Outcome::Error(e) => Outcome::Error(e),
            Outcome::Forward(f) => Outcome::Forward(f),
        }
    }
}

impl Sentinel for AdminUser {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        abort_without_state(rocket, "AdminUser")
    }
}

/// Wrong bearer values (neither `CRON_SECRET` nor an admin's session) one client may send to
/// the cleanup endpoint per [`CRON_WINDOW`] before it is refused without a comparison.
const CRON_WRONG_TRIES: i32 = 10;
const CRON_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// Who may run a cleanup over HTTP: the scheduler holding `CRON_SECRET`, or an admin.
pub enum CleanupCaller {
    CronSecret,
    Admin(Box<AdminUser>),
}

/// Compares digests so that neither the content nor the length leaks through timing.
fn secret_matches(given: &str, secret: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let secret = Sha256::digest(secret.as_bytes());
    given.ct_eq(&secret).into()
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CleanupCaller {
    type Error = AuthError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, AuthError> {
        let auth = match Authenticator::of(req) {
            Ok(auth) => auth,
            Err(e) => return fail(req, e),
        };
        let mut wrong_tries = None;
        if let (Some(secret), Some(Ok(given))) = (&auth.cron_secret, bearer_value(req)) {
            // A client whose wrong tries are spent is refused before its value is compared:
            // a weak secret cannot be guessed at request speed. Only wrong tries count (a
            // scheduler calling with the secret, or an admin's bearer token, uses nothing).
            let key = req
                .client_ip()
                .map(|ip| throttle::ThrottleKey::ip(throttle::Budget::CronIp, &ip.to_string()));
            if let Some(key) = key.clone() {
                let now = auth.db.now();
                let spent = auth
                    .db
                    .run(move |conn| {
                        throttle::spent(conn, &key, CRON_WRONG_TRIES, CRON_WINDOW, now)
                    })
                    .await;
                match spent {
                    Ok(None) => {}
                    Ok(Some(retry_after)) => {
                        return fail(req, AuthError::Throttled { retry_after })
                    }
                    Err(e) => return fail(req, e.into()),
                }
            }
            if secret_matches(given, secret) {
                return Outcome::Success(CleanupCaller::CronSecret);
            }
            wrong_tries = key;
        }
        let outcome = match AdminUser::from_request(req).await {
            Outcome::Success(admin) => {
                return Outcome::Success(CleanupCaller::Admin(Box::new(admin)))
            }
            Outcome::Error(e) => Outcome::Error(e),
            Outcome::Forward(_) => fail(req, AuthError::unauthenticated()),
        };
        if let Some(key) = wrong_tries {
            let budgets = vec![(key, CRON_WRONG_TRIES)];
            let now = auth.db.now();
            let counted = auth
                .db
                .run(move |conn| throttle::take_budget(conn, &budgets, CRON_WINDOW, now))
                .await;
            if let Err(error) = counted {
                tracing::warn!(%error, "could not count a wrong CRON_SECRET");
            }
        }
        outcome
    }
}

impl Sentinel for CleanupCaller {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        abort_without_state(rocket, "CleanupCaller")
    }
}
