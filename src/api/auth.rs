//! `/api/auth/*`: register, login, token, logout, me, refresh, password, account.

use chrono::NaiveDateTime;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;
use rocket::http::{CookieJar, Header, Status};
use rocket::response::content::RawJson;
use rocket::serde::json::Json;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};

use crate::api::confirm::{confirm_password, Confirmation};
use crate::api::error::{ApiError, ApiResult};
use crate::api::json::{render, JsonBody};
use crate::api::validation::{
    check_fields, email_problem, may_be_stored, name_problem, normalize_email, password_problem,
    MAX_PASSWORD_BYTES,
};
use crate::api::views::{NewToken, Refreshed, SessionView, UserView};
use crate::auth::guard::{PresentedToken, Via};
use crate::auth::{mfa, ownership, throttle, Authenticator, CurrentSession};
use crate::clock;
use crate::config::Settings;
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::MailKind;
use crate::db::models::{EventKind, NewUser, Role, Session, SessionPolicy, User};
use crate::db::{Db, DbConnection, DbError};
use crate::domain::UserId;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::token::{SessionToken, TokenHash};

pub fn routes() -> Vec<Route> {
    rocket::routes![
        register,
        login,
        token,
        logout,
        me,
        refresh,
        change_password,
        delete_account
    ]
}

#[derive(Serialize)]
pub struct AuthBody<'a> {
    user: UserView<'a>,
    session: SessionView<'a>,
}

impl<'a> AuthBody<'a> {
    pub fn new(user: &'a User, session: &'a Session) -> AuthBody<'a> {
        AuthBody {
            user: user.into(),
            session: SessionView::current(session),
        }
    }
}

/// 204 that also tells the browser to drop its cookies for this site.
#[derive(rocket::Responder)]
#[response(status = 204)]
pub struct SignedOut {
    body: (),
    clear_site_data: Header<'static>,
}

impl SignedOut {
    pub fn new() -> SignedOut {
        SignedOut {
            body: (),
            clear_site_data: Header::new("Clear-Site-Data", "\"cookies\""),
        }
    }
}

impl Default for SignedOut {
    fn default() -> Self {
        SignedOut::new()
    }
}

/// A new session for a user who has just shown who they are (a password, a provider), as
/// every sign-in makes it: the session the browser's cookie named revoked first (fixation
/// defence), event `login`, and `recovery_code_used` when the second factor was one. Returns
/// the session, its token, and whether a session was revoked. In the caller's transaction.
pub(crate) fn open_session(
    conn: &mut DbConnection,
    policy: &SessionPolicy,
    user_id: &UserId,
    client: &ClientInfo,
    replace: Option<&TokenHash>,
    accepted: Option<mfa::Accepted>,
    now: NaiveDateTime,
) -> diesel::QueryResult<(Session, SessionToken, bool)> {
    let revoked = match replace {
        Some(hash) => Session::revoke_by_token(conn, hash)?.is_some(),
        None => false,
    };
    let (session, token) = Session::create(conn, policy, user_id, client, now)?;
    record(
        conn,
        user_id,
        EventKind::Login,
        Some(&session.id),
        client,
        now,
    )?;
    if accepted == Some(mfa::Accepted::RecoveryCode) {
        let used = EventKind::RecoveryCodeUsed;
        record(conn, user_id, used, Some(&session.id), client, now)?;
    }
    Ok((session, token, revoked))
}

/// The session a browser's cookie names, which a new sign-in replaces (session fixation
/// defence). Only a cookie can be fixed on a victim; bearer clients manage their own tokens.
pub(crate) fn replaced_cookie_session(presented: PresentedToken) -> Option<TokenHash> {
    match presented.0 {
        Some((token, Via::Cookie)) => Some(token.hash()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RegisterBody {
    email: String,
    name: String,
    password: String,
}

/// The answer to a registration: the account and its session, or (with
/// `require_verified_email`) the account alone, which signs in once its address is confirmed.
#[derive(Serialize)]
struct Registered<'a> {
    user: UserView<'a>,
    session: Option<SessionView<'a>>,
}

/// Takes a registration out of the client's budget (`ip_max_registrations` per
/// `ip_failure_window`, an IPv6 client by its /64): 429 when it is spent. Every attempt that
/// gets this far counts, a taken address (409) too, so that one client can neither try
/// addresses at full speed nor fill the hashing queue.
async fn take_registration(db: &Db, settings: &Settings, client: &ClientInfo) -> ApiResult<()> {
    let Some(ip) = &client.ip else {
        return Ok(());
    };
    let budgets = vec![(
        throttle::ip_key("register-ip", ip),
        settings.ip_max_registrations,
    )];
    let (window, now) = (settings.ip_failure_window, clock::now());
    let refused = db
        .run(move |conn| throttle::take_budget(conn, &budgets, window, now))
        .await?;
    match refused {
        Some(seconds) => Err(ApiError::too_many_attempts(seconds)),
        None => Ok(()),
    }
}

#[rocket::post("/register", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn register(
    db: &State<Db>,
    auth: &State<Authenticator>,
    settings: &State<Settings>,
    mailer: &State<Mailer>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
    body: JsonBody<RegisterBody>,
) -> ApiResult<(Status, RawJson<String>)> {
    let replace = replaced_cookie_session(presented);
    let RegisterBody {
        email,
        name,
        password,
    } = body.0;
    let email = normalize_email(&email);
    let name = name.trim().to_string();
    check_fields(&[
        ("email", email_problem(&email)),
        ("name", name_problem(&name)),
        ("password", password_problem(&password)),
    ])?;
    // The hashing queue first (a request shed with 503 has not used up a registration).
    let slot = auth.hash_slot()?;
    take_registration(db, settings, &client).await?;
    let lookup = email.clone();
    if db
        .run(move |c| User::find_by_email(c, &lookup))
        .await?
        .is_some()
    {
        return Err(ApiError::email_taken());
    }
    // With `require_verified_email` nobody signs in before the address is confirmed, the
    // registrant included: the account is made, and its session waits for the mail's link.
    let signs_in = !settings.require_verified_email;
    let password_hash = slot.hash(password).await;
    drop(slot);
    let policy = auth.policy;
    let now = clock::now();
    let preparer = mailer.inner().clone();
    let created = db
        .run(move |conn| {
            conn.transaction(|conn| {
                let id = UserId::generate();
                let user = User::insert(
                    conn,
                    &NewUser {
                        id: &id,
                        email: &email,
                        name: &name,
                        password_hash: Some(&password_hash),
                        role: Role::User,
                        created_at: now,
                        updated_at: now,
                        email_verified_at: None,
                    },
                )?;
                if let Some(hash) = &replace {
                    Session::revoke_by_token(conn, hash)?;
                }
                let opened = if signs_in {
                    Some(Session::create(conn, &policy, &user.id, &client, now)?)
                } else {
                    None
                };
                let session_id = opened.as_ref().map(|(session, _)| &session.id);
                let kind = EventKind::Registered;
                record(conn, &user.id, kind, session_id, &client, now)?;
                let letter = preparer.prepare(conn, &user, MailKind::VerifyEmail, now)?;
                Ok((user, opened, letter))
            })
        })
        .await;
    let (user, opened) = match created {
        Err(DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {
            return Err(ApiError::email_taken())
        }
        other => {
            let (user, opened, letter) = other?;
            // Mail goes after the commit, and after the answer: the outbox sends it.
            if let Some(letter) = letter {
                mailer.send(letter);
            }
            (user, opened)
        }
    };
    if let Some((session, token)) = &opened {
        metrics.sessions_created.inc();
        auth.cookie.set(jar, token, session, now);
    }
    let body = Registered {
        user: (&user).into(),
        session: opened
            .as_ref()
            .map(|(session, _)| SessionView::current(session)),
    };
    Ok((Status::Created, render(&body)?))
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
    /// The second factor: a TOTP code or a recovery code, for accounts that have one.
    #[serde(default)]
    code: Option<String>,
}

/// What signing in touches: the pool, the session policy, the throttle settings, the counters.
type SignInServices<'a> = (&'a Db, &'a Authenticator, &'a Settings, &'a Metrics);

/// Why the sign-in transaction stopped without a session.
enum SignInAbort {
    /// The account went, its password changed, or its second factor was turned on, while its
    /// password was checked.
    Changed,
    /// The second factor's code was wrong, replayed or used up.
    WrongCode,
    Db(DieselError),
}

impl From<DieselError> for SignInAbort {
    fn from(e: DieselError) -> SignInAbort {
        SignInAbort::Db(e)
    }
}

/// A failed sign-in: the attempt already counts as a failure. Its event is written after the
/// answer, so that a known account's failure takes no longer than an unknown one's, through
/// the bounded background writes (`Db::run_detached`): a flood of failures cannot queue up
/// writes without limit (past the bound an event is dropped, with a warning).
fn failed_sign_in(
    db: &Db,
    metrics: &Metrics,
    user: Option<User>,
    client: ClientInfo,
    now: NaiveDateTime,
) -> ApiError {
    if let Some(user) = user {
        let started = db.run_detached("failed sign-in event", move |conn| {
            record(conn, &user.id, EventKind::LoginFailed, None, &client, now)
        });
        if !started {
            tracing::warn!("too many background writes: a failed sign-in was not recorded");
        }
    }
    metrics.login("failure");
    ApiError::invalid_credentials(Status::Unauthorized)
}

/// Checks credentials under the login throttle and opens a new session. `replace` is a
/// session the client already had (fixation defence: it is revoked).
async fn sign_in(
    (db, auth, settings, metrics): SignInServices<'_>,
    client: ClientInfo,
    body: LoginBody,
    replace: Option<TokenHash>,
) -> ApiResult<(User, Session, SessionToken)> {
    let LoginBody {
        email,
        password,
        code,
    } = body;
    let email = normalize_email(&email);
    check_fields(&[
        (
            "email",
            email.is_empty().then_some("Enter your email address."),
        ),
        (
            "password",
            password.is_empty().then_some("Enter your password."),
        ),
        (
            "password",
            (password.len() > MAX_PASSWORD_BYTES).then_some("Password must be at most 1024 bytes."),
        ),
    ])?;
    // Before the throttle: a request shed here has not used up an attempt.
    let slot = auth.hash_slot()?;
    let keys = throttle::LoginKeys::new(&email, client.ip.as_deref());
    let throttle_settings = settings.clone();
    let now = clock::now();
    // A string that cannot be a stored address is not looked up (and cannot reach SQL).
    let lookup = may_be_stored(&email).then(|| email.clone());
    // The attempt is taken out of the budgets before its password is checked, whether or not
    // the account exists: both paths write the same and cost the same.
    let (refused, user, keys) = db
        .run(move |conn| {
            let refused = throttle::take_attempt(conn, &throttle_settings, &keys, now)?;
            let user = match (&refused, lookup) {
                (None, Some(email)) => User::find_by_email(conn, &email)?,
                _ => None,
            };
            Ok((refused, user, keys))
        })
        .await?;
    if let Some(seconds) = refused {
        metrics.login("throttled");
        return Err(ApiError::too_many_attempts(seconds));
    }
    let verified = slot
        .verify(
            password,
            user.as_ref().and_then(|u| u.password_hash.clone()),
        )
        .await;
    drop(slot);
    let policy = auth.policy;
    let now = clock::now();
    let user = match user {
        Some(user) if verified => user,
        user => return Err(failed_sign_in(db, metrics, user, client, now)),
    };
    if settings.require_verified_email && user.email_verified_at.is_none() {
        // The password was right (a wrong one is 401 first): the failure streak ends as for a
        // sign-in, but no session is made until the address is verified.
        let ended = db
            .run(move |conn| throttle::record_success(conn, &keys, now))
            .await;
        if let Err(error) = ended {
            tracing::warn!(%error, "could not end a failure streak");
        }
        metrics.login("unverified");
        return Err(ApiError::email_unverified());
    }
    // The second factor. Asking for it keeps the attempt counted as a failure: a right
    // password alone never ends the streak, so the codes cannot be guessed between resets.
    let code = code.filter(|c| !c.trim().is_empty());
    if user.mfa_enabled() && code.is_none() {
        metrics.login("mfa_required");
        return Err(ApiError::mfa_required());
    }
    let second_factor = auth.second_factor.clone();
    let checked = (user.password_hash.clone(), user.mfa_enabled_at);
    let signed_in = db
        .run(move |conn| {
            let outcome = conn.transaction(|conn| {
                // Writes first: on SQLite this takes the write lock for the whole transaction.
                throttle::record_success(conn, &keys, now)?;
                // The account as it is now, locked until this commits. A deletion, a password
                // change or a second factor turned on that committed since the password was
                // checked fails this sign-in; one that comes later waits for it and then
                // removes the new session with the rest.
                if User::lock_credentials(conn, &user.id)?.as_ref() != Some(&checked) {
                    return Err(SignInAbort::Changed);
                }
                let accepted = match (&checked.1, &code) {
                    (Some(_), Some(code)) => {
                        match second_factor.check_code(conn, &user.id, code, now)? {
                            Some(accepted) => Some(accepted),
                            None => return Err(SignInAbort::WrongCode),
                        }
                    }
                    _ => None,
                };
                let (session, token, revoked) = open_session(
                    conn,
                    &policy,
                    &user.id,
                    &client,
                    replace.as_ref(),
                    accepted,
                    now,
                )?;
                Ok((session, token, revoked))
            });
            Ok(match outcome {
                Ok((session, token, revoked)) => Ok((user, session, token, revoked)),
                Err(SignInAbort::Db(e)) => return Err(e),
                Err(abort) => Err((abort, user, client)),
            })
        })
        .await;
    let (user, session, token, revoked) = match signed_in {
        Ok(Ok(signed_in)) => signed_in,
        Ok(Err((SignInAbort::WrongCode, user, client))) => {
            drop(failed_sign_in(db, metrics, Some(user), client, now));
            return Err(ApiError::wrong_code(Status::Unauthorized));
        }
        // The account went, or its credentials changed, while this sign-in was checked.
        Ok(Err(_))
        | Err(DbError::Query(DieselError::DatabaseError(
            DatabaseErrorKind::ForeignKeyViolation,
            _,
        ))) => {
            metrics.login("failure");
            return Err(ApiError::invalid_credentials(Status::Unauthorized));
        }
        Err(e) => return Err(e.into()),
    };
    metrics.login("success");
    metrics.sessions_created.inc();
    if revoked {
        metrics.sessions_revoked.inc();
    }
    Ok((user, session, token))
}

#[rocket::post("/login", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn login(
    db: &State<Db>,
    auth: &State<Authenticator>,
    settings: &State<Settings>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
    body: JsonBody<LoginBody>,
) -> ApiResult<RawJson<String>> {
    let replace = replaced_cookie_session(presented);
    let services = (db.inner(), auth.inner(), settings.inner(), metrics.inner());
    let (user, session, token) = sign_in(services, client, body.0, replace).await?;
    auth.cookie.set(jar, &token, &session, clock::now());
    render(&AuthBody::new(&user, &session))
}

#[derive(Serialize)]
struct TokenBody<'a> {
    token: String,
    user: UserView<'a>,
    session: SessionView<'a>,
}

#[rocket::post("/token", data = "<body>")]
async fn token(
    db: &State<Db>,
    auth: &State<Authenticator>,
    settings: &State<Settings>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    body: JsonBody<LoginBody>,
) -> ApiResult<RawJson<String>> {
    let services = (db.inner(), auth.inner(), settings.inner(), metrics.inner());
    let (user, session, token) = sign_in(services, client, body.0, None).await?;
    render(&TokenBody {
        token: token.expose(),
        user: (&user).into(),
        session: SessionView::current(&session),
    })
}

/// Idempotent: with no session (or an unknown one) it still answers 204 and clears the cookie.
#[rocket::post("/logout")]
async fn logout(
    db: &State<Db>,
    auth: &State<Authenticator>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
) -> ApiResult<SignedOut> {
    if let Some((token, _)) = presented.0 {
        let hash = token.hash();
        let now = clock::now();
        let revoked = db
            .run(move |conn| {
                let revoked = Session::revoke_by_token(conn, &hash)?;
                if let Some(session) = &revoked {
                    record(
                        conn,
                        &session.user_id,
                        EventKind::Logout,
                        Some(&session.id),
                        &client,
                        now,
                    )?;
                }
                Ok(revoked.is_some())
            })
            .await?;
        if revoked {
            metrics.sessions_revoked.inc();
        }
    }
    auth.cookie.clear(jar);
    Ok(SignedOut::new())
}

#[rocket::get("/me")]
fn me(current: CurrentSession) -> ApiResult<RawJson<String>> {
    render(&AuthBody::new(&current.user, &current.session))
}

/// Hands the client its session's new token: as the cookie, or in the body for bearer clients.
fn deliver_token(
    auth: &Authenticator,
    jar: &CookieJar<'_>,
    current: &CurrentSession,
    token: &SessionToken,
    session: &Session,
) -> Option<String> {
    match current.via {
        Via::Cookie => {
            auth.cookie.set(jar, token, session, clock::now());
            None
        }
        Via::Bearer => Some(token.expose()),
    }
}

fn lost_race(current: &CurrentSession) -> ApiError {
    // Another request rotated or revoked this token first: it is no longer valid.
    match current.via {
        Via::Cookie => ApiError::unauthenticated().clearing_cookie(),
        Via::Bearer => ApiError::unauthenticated(),
    }
}

#[rocket::post("/refresh")]
async fn refresh(
    db: &State<Db>,
    auth: &State<Authenticator>,
    jar: &CookieJar<'_>,
    current: CurrentSession,
) -> ApiResult<RawJson<String>> {
    let policy = auth.policy;
    let (id, old) = (current.session.id.clone(), current.hash);
    let now = clock::now();
    let Some((session, token)) = db
        .run(move |conn| Session::rotate(conn, &policy, &id, &old, now))
        .await?
    else {
        return Err(lost_race(&current));
    };
    let token = deliver_token(auth, jar, &current, &token, &session);
    render(&Refreshed {
        session: SessionView::current(&session),
        token,
    })
}

/// 204 for a cookie client (the new token travels as the cookie), 200 `{token}` for bearer.
#[derive(rocket::Responder)]
enum PasswordChanged {
    Continued(Status),
    Token(Json<NewToken>),
}

#[derive(Deserialize)]
struct PasswordBody {
    /// Absent for an account that has no password yet (see `api::confirm`).
    #[serde(default)]
    current_password: Option<String>,
    /// For an account with a second factor: a code from it (see `api::confirm`).
    #[serde(default)]
    code: Option<String>,
    new_password: String,
}

#[rocket::post("/password", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn change_password(
    db: &State<Db>,
    auth: &State<Authenticator>,
    settings: &State<Settings>,
    mailer: &State<Mailer>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    current: CurrentSession,
    body: JsonBody<PasswordBody>,
) -> ApiResult<PasswordChanged> {
    let PasswordBody {
        current_password,
        code,
        new_password,
    } = body.0;
    check_fields(&[("new_password", password_problem(&new_password))])?;
    // A first password is a new way in: not for an account whose address nobody has proved.
    if !current.user.has_password()
        && !ownership::may_add_sign_in_method(&current.user, mailer.enabled())
    {
        return Err(ApiError::verify_before_adding());
    }
    let confirmation = Confirmation {
        password: current_password,
        code,
    };
    let services = (db.inner(), auth.inner(), settings.inner());
    let slot = confirm_password(services, &client, &current, confirmation).await?;
    let new_hash = slot.hash(new_password).await;
    drop(slot);
    let policy = auth.policy;
    let (user_id, session_id, old) = (
        current.user.id.clone(),
        current.session.id.clone(),
        current.hash,
    );
    let now = clock::now();
    let changed = db
        .run(move |conn| {
            let changed = conn.transaction(|conn| {
                // The account's row first: a sign-in that checked the old password either
                // committed before this (and its session is revoked below) or waits for it and
                // then fails (it compares the hash it checked under the same lock).
                User::set_password_hash(conn, &user_id, &new_hash, now)?;
                let Some((session, token)) =
                    Session::rotate(conn, &policy, &session_id, &old, now)?
                else {
                    // This session was revoked or rotated meanwhile: change nothing.
                    return Err(DieselError::RollbackTransaction);
                };
                let revoked = Session::revoke_all(conn, &user_id, Some(&session_id))?;
                record(
                    conn,
                    &user_id,
                    EventKind::PasswordChanged,
                    Some(&session_id),
                    &client,
                    now,
                )?;
                Ok((session, token, revoked))
            });
            match changed {
                Err(DieselError::RollbackTransaction) => Ok(None),
                other => other.map(Some),
            }
        })
        .await?;
    let Some((session, token, revoked)) = changed else {
        return Err(lost_race(&current));
    };
    metrics.sessions_revoked.inc_by(revoked as u64);
    Ok(match deliver_token(auth, jar, &current, &token, &session) {
        Some(token) => PasswordChanged::Token(Json(NewToken { token })),
        None => PasswordChanged::Continued(Status::NoContent),
    })
}

#[derive(Deserialize)]
struct DeleteAccountBody {
    #[serde(default)]
    password: Option<String>,
    /// For an account with a second factor: a code from it (see `api::confirm`).
    #[serde(default)]
    code: Option<String>,
}

#[rocket::delete("/account", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn delete_account(
    db: &State<Db>,
    auth: &State<Authenticator>,
    settings: &State<Settings>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    current: CurrentSession,
    body: JsonBody<DeleteAccountBody>,
) -> ApiResult<Status> {
    let DeleteAccountBody { password, code } = body.0;
    let services = (db.inner(), auth.inner(), settings.inner());
    let confirmation = Confirmation { password, code };
    drop(confirm_password(services, &client, &current, confirmation).await?);
    let (user_id, session_id) = (current.user.id.clone(), current.session.id.clone());
    let now = clock::now();
    let deleted = db
        .run(move |conn| {
            conn.transaction(|conn| {
                // The account's row first: two deletions (or a deletion and any other write
                // of this account) take turns, and the second finds nothing to delete.
                if User::touch(conn, &user_id, now)? == 0 {
                    return Ok(false);
                }
                // Recorded before the deletion; the event keeps its row (user_id set to NULL)
                // until retention.
                record(
                    conn,
                    &user_id,
                    EventKind::AccountDeleted,
                    Some(&session_id),
                    &client,
                    now,
                )?;
                User::delete(conn, &user_id).map(|n| n > 0)
            })
        })
        .await?;
    if !deleted {
        return Err(ApiError::unauthenticated().clearing_cookie());
    }
    if current.via == Via::Cookie {
        auth.cookie.clear(jar);
    }
    Ok(Status::NoContent)
}
