//! Sign in with OpenID Connect providers (SPEC §8): the list of providers, the start (302 to
//! the provider), the callback (validate, then sign in, create or link the account), the
//! second-factor code after a provider sign-in for accounts that have one, and the user's
//! linked identities.
//!
//! Every failure of the start and the callback is a 302 to the page (`login_url`, else `/`)
//! with `?oidc_error=<code>`; nothing is written unless the whole sign-in succeeds. The rules
//! where the contract is silent are in the README ("Sign in with OpenID Connect").

use chrono::NaiveDateTime;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;
use rocket::http::{CookieJar, Status};
use rocket::response::content::RawJson;
use rocket::response::Redirect;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::api::auth::{open_session, replaced_cookie_session};
use crate::api::confirm::take_code_check;
use crate::api::error::{ApiError, ApiResult};
use crate::api::json::{render, JsonBody};
use crate::api::validation::{email_problem, name_problem, normalize_email, MAX_NAME_CHARS};
use crate::api::views::{SessionView, UserView};
use crate::auth::cookies::FLOW_COOKIE_SECONDS;
use crate::auth::guard::PresentedToken;
use crate::auth::oidc::{OidcFailure, OidcProviders, VerifiedIdentity};
use crate::auth::{ownership, throttle, AuthError, Authenticator, CurrentSession};
use crate::clock::{self, Rfc3339};
use crate::config::Settings;
use crate::db::models::event::record;
use crate::db::models::identity::NewOidcLogin;
use crate::db::models::session::ClientInfo;
use crate::db::models::{
    EventKind, Identity, NewUser, OidcLogin, Role, Session, SessionPolicy, User,
};
use crate::db::{Db, DbConnection, DbError};
use crate::domain::{SessionId, UserId};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::token::{SessionToken, TokenHash};

/// To mount under `/api/auth`.
pub fn routes() -> Vec<Route> {
    rocket::routes![providers, start, callback, code, identities, unlink]
}

/// Why a provider sign-in went back to the page: the `oidc_error` code the page explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No provider has that id.
    UnknownProvider,
    /// The provider could not be reached, or answered with something unusable.
    ProviderUnavailable,
    /// The person said no at the provider (or it sent an error back).
    Denied,
    /// The callback's `state` is not the one this browser started with.
    StateMismatch,
    /// The sign-in is over: too old, or its callback was used already.
    Expired,
    /// The provider refused the code or its ID token failed validation.
    TokenRejected,
    /// The provider gave no email address, and there is no account linked to this identity.
    NoEmail,
    /// An account has this address, and linking needs both sides to have verified it.
    LinkRequired,
    /// The address is not verified and this server requires verified addresses.
    EmailUnverified,
    /// Linking: the account's own address is not proved yet, and mail could prove it
    /// (`auth::ownership`).
    VerifyFirst,
    /// Linking: this provider account is linked to another user already.
    IdentityTaken,
    /// Linking needs a signed-in session (and it must still be there at the callback).
    SignInRequired,
    /// Something changed at the same moment (another sign-in made the account); try again.
    Conflict,
    /// This client started too many provider sign-ins lately.
    Throttled,
    /// The database could not answer.
    Database,
}

impl Failure {
    fn code(self) -> &'static str {
        match self {
            Failure::UnknownProvider => "unknown_provider",
            Failure::ProviderUnavailable => "provider_unavailable",
            Failure::Denied => "denied",
            Failure::StateMismatch => "state_mismatch",
            Failure::Expired => "expired",
            Failure::TokenRejected => "token_rejected",
            Failure::NoEmail => "no_email",
            Failure::LinkRequired => "link_required",
            Failure::EmailUnverified => "email_unverified",
            Failure::VerifyFirst => "verify_first",
            Failure::IdentityTaken => "identity_taken",
            Failure::SignInRequired => "signin_required",
            Failure::Conflict => "conflict",
            Failure::Throttled => "too_many_attempts",
            Failure::Database => "unavailable",
        }
    }
}

impl From<DbError> for Failure {
    fn from(error: DbError) -> Failure {
        match error {
            // Another sign-in made the account, or the account was deleted, at the same moment.
            DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => Failure::Conflict,
            error => {
                tracing::warn!(%error, "database error in a provider sign-in");
                Failure::Database
            }
        }
    }
}

/// The page, with the failure's code for it to explain.
fn to_page(settings: &Settings, failure: Failure) -> Redirect {
    page_with(settings, &format!("oidc_error={}", failure.code()))
}

/// The page (`login_url`, else `/`) with `query` added to its own.
fn page_with(settings: &Settings, query: &str) -> Redirect {
    let page = settings.login_url.as_deref().unwrap_or("/");
    let join = if page.contains('?') { '&' } else { '?' };
    Redirect::found(format!("{page}{join}{query}"))
}

/// `return_to` kept to a path on this origin; anything else is `/`.
fn same_origin_path(return_to: Option<&str>) -> String {
    match return_to {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 2048
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Serialize)]
struct ProviderView<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct ProvidersBody<'a> {
    providers: Vec<ProviderView<'a>>,
}

#[rocket::get("/oidc/providers")]
fn providers(oidc: &State<OidcProviders>) -> ApiResult<RawJson<String>> {
    render(&ProvidersBody {
        providers: oidc
            .all()
            .map(|p| ProviderView {
                id: &p.id,
                name: &p.name,
            })
            .collect(),
    })
}

/// How long a sign-in may take between the start and the callback.
fn flow_lifetime() -> chrono::Duration {
    chrono::Duration::seconds(FLOW_COOKIE_SECONDS)
}

#[rocket::get("/oidc/<id>/start?<return_to>&<link>")]
#[allow(clippy::too_many_arguments)]
async fn start(
    id: &str,
    return_to: Option<&str>,
    link: Option<&str>,
    db: &State<Db>,
    auth: &State<Authenticator>,
    oidc: &State<OidcProviders>,
    settings: &State<Settings>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    current: Result<CurrentSession, AuthError>,
) -> Redirect {
    let mail_on = mailer.enabled();
    if let Err(failure) = take_start(db, settings, &client).await {
        return to_page(settings, failure);
    }
    match begin(id, (return_to, link), db, oidc, mail_on, current).await {
        Ok((url, state)) => {
            auth.cookie.set_flow(jar, &state);
            Redirect::found(url)
        }
        Err(failure) => to_page(settings, failure),
    }
}

/// Provider sign-ins one client may start per `ip_failure_window` (an IPv6 client by its
/// /64): each start writes a row and asks the provider, so neither may be had without limit.
const STARTS_PER_IP: i32 = 30;

async fn take_start(db: &Db, settings: &Settings, client: &ClientInfo) -> Result<(), Failure> {
    let Some(ip) = &client.ip else {
        return Ok(());
    };
    let budgets = vec![(throttle::ip_key("oidc-start", ip), STARTS_PER_IP)];
    let (window, now) = (settings.ip_failure_window, clock::now());
    match db
        .run(move |conn| throttle::take_budget(conn, &budgets, window, now))
        .await?
    {
        Some(_) => Err(Failure::Throttled),
        None => Ok(()),
    }
}

async fn begin(
    id: &str,
    (return_to, link): (Option<&str>, Option<&str>),
    db: &Db,
    oidc: &OidcProviders,
    mail_on: bool,
    current: Result<CurrentSession, AuthError>,
) -> Result<(String, String), Failure> {
    let provider = oidc.get(id).ok_or(Failure::UnknownProvider)?;
    let link_session = match link {
        Some("1" | "true") => match current {
            Ok(current) if !ownership::may_add_sign_in_method(&current.user, mail_on) => {
                return Err(Failure::VerifyFirst)
            }
            Ok(current) => Some(current.session.id.clone()),
            Err(_) => return Err(Failure::SignInRequired),
        },
        _ => None,
    };
    let state = SessionToken::generate();
    let handed = state.expose();
    let authorization = oidc
        .call(provider.clone(), move |p| p.authorize(handed))
        .await
        .map_err(|failure| {
            tracing::warn!(provider = %provider.settings.id, %failure, "provider sign-in could not start");
            Failure::ProviderUnavailable
        })?;
    let return_to = same_origin_path(return_to);
    let provider_id = provider.settings.id.clone();
    let hash = state.hash();
    let now = clock::now();
    let (nonce, verifier) = (
        authorization.nonce.clone(),
        authorization.pkce_verifier.clone(),
    );
    db.run(move |conn| {
        OidcLogin::insert(
            conn,
            &NewOidcLogin {
                state: &hash,
                provider: &provider_id,
                nonce: &nonce,
                pkce_verifier: &verifier,
                return_to: &return_to,
                link_session_id: link_session.as_ref(),
                mfa_user_id: None,
            },
            now,
            flow_lifetime(),
        )
    })
    .await?;
    Ok((authorization.url, state.expose()))
}

/// The flow cookie's sign-in, if the callback's `state` is present and matches it: its hash,
/// which keys the `oidc_logins` row. A callback without `state` is refused: the cookie alone
/// would let a page that can send this browser to the callback finish a sign-in it started.
fn bound_state(cookie: Option<String>, state: Option<&str>) -> Result<TokenHash, Failure> {
    let (Some(cookie), Some(state)) = (cookie, state) else {
        return Err(Failure::StateMismatch);
    };
    if !bool::from(cookie.as_bytes().ct_eq(state.as_bytes())) {
        return Err(Failure::StateMismatch);
    }
    flow_of(Some(cookie))
}

/// The sign-in the flow cookie names (the code step, which has no `state` of its own).
fn flow_of(cookie: Option<String>) -> Result<TokenHash, Failure> {
    cookie
        .as_deref()
        .and_then(SessionToken::parse)
        .map(|token| token.hash())
        .ok_or(Failure::StateMismatch)
}

/// What the callback did.
enum Signed {
    /// A session: the cookie to set, and where to go.
    In(Session, SessionToken),
    /// The account asks for its second factor: the page asks for the code, with this flow.
    NeedsCode(SessionToken),
    /// A provider linked to the signed-in user.
    Linked,
}

/// The managed state a provider sign-in uses.
#[derive(Clone, Copy)]
struct Services<'r> {
    db: &'r Db,
    auth: &'r Authenticator,
    oidc: &'r OidcProviders,
    settings: &'r Settings,
    /// Whether mail is on (`auth::ownership`'s first rule).
    mail_on: bool,
}

#[rocket::get("/oidc/<id>/callback?<code>&<state>&<error>")]
#[allow(clippy::too_many_arguments)]
async fn callback(
    id: &str,
    code: Option<&str>,
    state: Option<&str>,
    error: Option<&str>,
    db: &State<Db>,
    auth: &State<Authenticator>,
    oidc: &State<OidcProviders>,
    settings: &State<Settings>,
    metrics: &State<Metrics>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
) -> Redirect {
    let services = Services {
        db,
        auth,
        oidc,
        settings,
        mail_on: mailer.enabled(),
    };
    let cookie = auth.cookie.read_flow(jar);
    auth.cookie.clear_flow(jar);
    let replace = replaced_cookie_session(presented);
    let outcome = complete(id, (code, state, error), services, cookie, client, replace).await;
    match outcome {
        Ok((Signed::In(session, token), return_to)) => {
            metrics.login("success");
            metrics.sessions_created.inc();
            auth.cookie.set(jar, &token, &session, clock::now());
            Redirect::found(return_to)
        }
        Ok((Signed::NeedsCode(flow), _)) => {
            metrics.login("mfa_required");
            auth.cookie.set_flow(jar, &flow.expose());
            page_with(settings, "oidc=code")
        }
        Ok((Signed::Linked, return_to)) => Redirect::found(return_to),
        Err(failure) => {
            if failure != Failure::Denied {
                metrics.login("failure");
            }
            to_page(settings, failure)
        }
    }
}

async fn complete(
    id: &str,
    (code, state, error): (Option<&str>, Option<&str>, Option<&str>),
    services: Services<'_>,
    cookie: Option<String>,
    client: ClientInfo,
    replace: Option<TokenHash>,
) -> Result<(Signed, String), Failure> {
    let provider = services.oidc.get(id).ok_or(Failure::UnknownProvider)?;
    let hash = bound_state(cookie, state)?;
    let now = clock::now();
    // The row goes whatever happens next: a callback is used once.
    let login = services
        .db
        .run(move |c| OidcLogin::take(c, &hash, now))
        .await?;
    if error.is_some() {
        return Err(Failure::Denied);
    }
    let login = login.ok_or(Failure::Expired)?;
    if login.provider != provider.settings.id || login.mfa_user_id.is_some() {
        return Err(Failure::StateMismatch);
    }
    let code = code.ok_or(Failure::Denied)?.to_string();
    let (verifier, nonce) = (login.pkce_verifier.clone(), login.nonce.clone());
    let identity = services
        .oidc
        .call(provider.clone(), move |p| {
            p.finish(&code, &verifier, &nonce)
        })
        .await
        .map_err(|failure| {
            tracing::warn!(provider = %provider.settings.id, %failure, "provider sign-in failed");
            match failure {
                OidcFailure::Unavailable(_) => Failure::ProviderUnavailable,
                OidcFailure::Rejected(_) => Failure::TokenRejected,
            }
        })?;
    let rules = SignInRules {
        provider: provider.settings.id.clone(),
        require_verified: services.settings.require_verified_email,
        return_to: login.return_to.clone(),
        policy: services.auth.policy,
    };
    let signed = match login.link_session_id {
        Some(session_id) => {
            let session_id = SessionId::from(session_id);
            let mail_on = services.mail_on;
            services
                .db
                .run(move |conn| {
                    let linking = (rules.provider.as_str(), &identity, mail_on);
                    link(conn, &session_id, linking, &client, now)
                })
                .await??
        }
        None => {
            services
                .db
                .run(move |conn| sign_in(conn, &rules, &identity, &client, replace, now))
                .await??
        }
    };
    Ok((signed, login.return_to))
}

/// Links the provider account to the user of the session that started the link.
/// `mail_on`: whether the account must have proved its address first (`auth::ownership`).
fn link(
    conn: &mut DbConnection,
    session_id: &SessionId,
    (provider, identity, mail_on): (&str, &VerifiedIdentity, bool),
    client: &ClientInfo,
    now: NaiveDateTime,
) -> diesel::QueryResult<Result<Signed, Failure>> {
    conn.transaction(|conn| {
        let Some(user_id) = Session::live_user(conn, session_id, now)? else {
            return Ok(Err(Failure::SignInRequired));
        };
        // Held until this commits: a reset that takes the account over waits, then removes
        // this link with the rest.
        User::touch(conn, &user_id, now)?;
        let Some(user) = User::find_by_id(conn, &user_id)? else {
            return Ok(Err(Failure::SignInRequired));
        };
        if !ownership::may_add_sign_in_method(&user, mail_on) {
            return Ok(Err(Failure::VerifyFirst));
        }
        match Identity::find(conn, &identity.issuer, &identity.subject)? {
            Some(known) if known.user_id == user_id => return Ok(Ok(Signed::Linked)),
            Some(_) => return Ok(Err(Failure::IdentityTaken)),
            None => {}
        }
        Identity::link(
            conn,
            &user_id,
            provider,
            &identity.issuer,
            &identity.subject,
            now,
        )?;
        record(
            conn,
            &user_id,
            EventKind::IdentityLinked,
            Some(session_id),
            client,
            now,
        )?;
        Ok(Ok(Signed::Linked))
    })
}

/// What a provider sign-in goes by.
struct SignInRules {
    /// The configured id the identity is linked through.
    provider: String,
    /// `require_verified_email`.
    require_verified: bool,
    return_to: String,
    policy: SessionPolicy,
}

/// The user this provider account signs in as, by the rules of SPEC §8, and a session for
/// them (or, for an account with a second factor, a flow waiting for the code). One
/// transaction: a failure leaves nothing behind.
fn sign_in(
    conn: &mut DbConnection,
    rules: &SignInRules,
    identity: &VerifiedIdentity,
    client: &ClientInfo,
    replace: Option<TokenHash>,
    now: NaiveDateTime,
) -> diesel::QueryResult<Result<Signed, Failure>> {
    conn.transaction(|conn| {
        let user = match Identity::find(conn, &identity.issuer, &identity.subject)? {
            Some(known) => match User::find_by_id(conn, &known.user_id)? {
                Some(user) => user,
                None => return Ok(Err(Failure::Conflict)),
            },
            None => match account_for(conn, rules, identity, client, now)? {
                Ok(user) => user,
                Err(failure) => return Ok(Err(failure)),
            },
        };
        if rules.require_verified && user.email_verified_at.is_none() {
            return Ok(Err(Failure::EmailUnverified));
        }
        if user.mfa_enabled() {
            let flow = SessionToken::generate();
            OidcLogin::insert(
                conn,
                &NewOidcLogin {
                    state: &flow.hash(),
                    provider: &rules.provider,
                    nonce: "",
                    pkce_verifier: "",
                    return_to: &rules.return_to,
                    link_session_id: None,
                    mfa_user_id: Some(&user.id),
                },
                now,
                flow_lifetime(),
            )?;
            return Ok(Ok(Signed::NeedsCode(flow)));
        }
        let (session, token, _) = open_session(
            conn,
            &rules.policy,
            &user.id,
            client,
            replace.as_ref(),
            None,
            now,
        )?;
        Ok(Ok(Signed::In(session, token)))
    })
}

/// With no account linked to the provider account: the account with its address if both
/// sides have verified it (then linked), a new account if none has it, else a failure.
fn account_for(
    conn: &mut DbConnection,
    rules: &SignInRules,
    identity: &VerifiedIdentity,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> diesel::QueryResult<Result<User, Failure>> {
    // The address as registration would take it, or none: a provider's claim is no better
    // than a typed one (display-name forms, trailing dots, invisible characters).
    let Some(email) = identity
        .email
        .as_deref()
        .map(normalize_email)
        .filter(|e| email_problem(e).is_none())
    else {
        return Ok(Err(Failure::NoEmail));
    };
    let user = match User::find_by_email(conn, &email)? {
        Some(user) if identity.email_verified && user.email_verified_at.is_some() => user,
        Some(_) => return Ok(Err(Failure::LinkRequired)),
        None => {
            if rules.require_verified && !identity.email_verified {
                return Ok(Err(Failure::EmailUnverified));
            }
            let id = UserId::generate();
            let name = display_name(identity.name.as_deref(), &email);
            let user = User::insert(
                conn,
                &NewUser {
                    id: &id,
                    email: &email,
                    name: &name,
                    password_hash: None,
                    role: Role::User,
                    created_at: now,
                    updated_at: now,
                    email_verified_at: identity.email_verified.then_some(now),
                },
            )?;
            record(conn, &user.id, EventKind::Registered, None, client, now)?;
            user
        }
    };
    Identity::link(
        conn,
        &user.id,
        &rules.provider,
        &identity.issuer,
        &identity.subject,
        now,
    )?;
    record(conn, &user.id, EventKind::IdentityLinked, None, client, now)?;
    Ok(Ok(user))
}

/// The provider's name for the person if registration would take it (cut to the longest a
/// name may be); else the address's local part (which a valid address makes a valid name).
fn display_name(claimed: Option<&str>, email: &str) -> String {
    let name: String = claimed
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim();
    if name_problem(name).is_none() {
        name.to_string()
    } else {
        email.split('@').next().unwrap_or(email).to_string()
    }
}

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

/// What the code step answers: as a login, and where the sign-in was going.
#[derive(Serialize)]
struct CodeAccepted<'a> {
    user: UserView<'a>,
    session: SessionView<'a>,
    return_to: &'a str,
}

/// Why the code step stopped without a session.
enum CodeAbort {
    /// No such sign-in waiting (expired, used, or never there).
    Gone,
    Wrong,
    Db(DieselError),
}

impl From<DieselError> for CodeAbort {
    fn from(e: DieselError) -> CodeAbort {
        CodeAbort::Db(e)
    }
}

/// `POST /oidc/code {code}`: the second factor after a provider sign-in, for an account that
/// has one. The flow cookie names the waiting sign-in; codes are checked against the
/// account's hourly budget, as when turning the factor off.
#[rocket::post("/oidc/code", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn code(
    db: &State<Db>,
    auth: &State<Authenticator>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
    body: JsonBody<CodeBody>,
) -> ApiResult<RawJson<String>> {
    let gone = || {
        ApiError::new(
            Status::Unauthorized,
            "invalid_token",
            "This sign-in is over. Sign in with your provider again.",
        )
    };
    let hash = flow_of(auth.cookie.read_flow(jar)).map_err(|_| gone())?;
    let now = clock::now();
    let waiting = db
        .run(move |conn| OidcLogin::find_waiting(conn, &hash, now))
        .await?;
    let Some(user_id) = waiting else {
        auth.cookie.clear_flow(jar);
        return Err(gone());
    };
    let code = body.0.code.trim().to_string();
    take_code_check(db, &user_id, &code).await?;
    let replace = replaced_cookie_session(presented);
    let (policy, second_factor) = (auth.policy, auth.second_factor.clone());
    let opened = db
        .run(move |conn| {
            let outcome = conn.transaction(|conn| {
                // The account's row first (a write: on SQLite the write lock from here on), as
                // a deletion of the account takes it, so the two take turns instead of
                // deadlocking; then the waiting sign-in, then the code. A wrong code rolls
                // back and the sign-in keeps waiting.
                if User::touch(conn, &user_id, now)? == 0 {
                    return Err(CodeAbort::Gone);
                }
                let Some(login) = OidcLogin::take(conn, &hash, now)? else {
                    return Err(CodeAbort::Gone);
                };
                if login.mfa_user_id.as_deref() != Some(user_id.as_str()) {
                    return Err(CodeAbort::Gone);
                }
                let Some(accepted) = second_factor.check_code(conn, &user_id, &code, now)? else {
                    return Err(CodeAbort::Wrong);
                };
                let Some(user) = User::find_by_id(conn, &user_id)? else {
                    return Err(CodeAbort::Gone);
                };
                let (session, token, _) = open_session(
                    conn,
                    &policy,
                    &user.id,
                    &client,
                    replace.as_ref(),
                    Some(accepted),
                    now,
                )?;
                Ok((user, session, token, login.return_to))
            });
            match outcome {
                Ok(opened) => Ok(Ok(opened)),
                Err(CodeAbort::Db(e)) => Err(e),
                Err(abort) => Ok(Err(abort)),
            }
        })
        .await?;
    match opened {
        Ok((user, session, token, return_to)) => {
            metrics.login("success");
            metrics.sessions_created.inc();
            auth.cookie.clear_flow(jar);
            auth.cookie.set(jar, &token, &session, now);
            render(&CodeAccepted {
                user: (&user).into(),
                session: SessionView::current(&session),
                return_to: &return_to,
            })
        }
        Err(CodeAbort::Wrong) => {
            metrics.login("failure");
            Err(ApiError::wrong_code(Status::Unauthorized))
        }
        Err(_) => {
            auth.cookie.clear_flow(jar);
            Err(gone())
        }
    }
}

#[derive(Serialize)]
struct IdentityView<'a> {
    id: &'a str,
    provider: &'a str,
    created_at: Rfc3339,
}

#[derive(Serialize)]
struct IdentitiesBody<'a> {
    identities: Vec<IdentityView<'a>>,
}

#[rocket::get("/identities")]
async fn identities(db: &State<Db>, current: CurrentSession) -> ApiResult<RawJson<String>> {
    let user_id = current.user.id.clone();
    let linked = db
        .run(move |conn| Identity::of_user(conn, &user_id))
        .await?;
    render(&IdentitiesBody {
        identities: linked
            .iter()
            .map(|i| IdentityView {
                id: &i.id,
                provider: &i.provider,
                created_at: Rfc3339(i.created_at),
            })
            .collect(),
    })
}

/// Unlinks one of the user's providers, unless it is their last way to sign in (409); the
/// user's other sessions are signed out with it, as for a password change.
#[rocket::delete("/identities/<id>")]
async fn unlink(
    db: &State<Db>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    current: CurrentSession,
    id: &str,
) -> ApiResult<Status> {
    let (user_id, session_id, id) = (
        current.user.id.clone(),
        current.session.id.clone(),
        id.to_string(),
    );
    let now = clock::now();
    let unlinked = db
        .run(move |conn| {
            conn.transaction(|conn| {
                // The account's row first and locked: two unlinks at once take turns, so
                // they cannot together remove the last way in.
                User::touch(conn, &user_id, now)?;
                let Some((password_hash, _)) = User::lock_credentials(conn, &user_id)? else {
                    return Ok(Err(ApiError::unauthenticated()));
                };
                let linked = Identity::of_user(conn, &user_id)?;
                if !linked.iter().any(|i| i.id == id) {
                    return Ok(Err(ApiError::not_found()));
                }
                if password_hash.is_none() && linked.len() == 1 {
                    return Ok(Err(ApiError::last_sign_in_method()));
                }
                Identity::unlink(conn, &user_id, &id)?;
                let revoked = Session::revoke_all(conn, &user_id, Some(&session_id))?;
                record(
                    conn,
                    &user_id,
                    EventKind::IdentityUnlinked,
                    Some(&session_id),
                    &client,
                    now,
                )?;
                Ok(Ok(revoked))
            })
        })
        .await??;
    metrics.sessions_revoked.inc_by(unlinked as u64);
    Ok(Status::NoContent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_follow_registration_rules() {
        assert_eq!(display_name(Some(" Ann Lee "), "ann@x.example"), "Ann Lee");
        assert_eq!(
            display_name(Some("Ann\u{202E}gpj.exe"), "ann@x.example"),
            "ann"
        );
        assert_eq!(display_name(Some("A\u{200B}dmin"), "ann@x.example"), "ann");
        assert_eq!(display_name(None, "ann@x.example"), "ann");
        assert_eq!(
            display_name(Some(&"n".repeat(300)), "a@x.example").len(),
            100
        );
    }

    #[test]
    fn return_to_stays_on_this_origin() {
        for (given, kept) in [
            (Some("/dashboard?tab=1"), "/dashboard?tab=1"),
            (Some("/"), "/"),
            (None, "/"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example/"), "/"),
            (Some("/a\nb"), "/"),
            (Some("dashboard"), "/"),
        ] {
            assert_eq!(same_origin_path(given), kept, "{given:?}");
        }
    }

    #[test]
    fn state_must_match_the_cookie() {
        let state = SessionToken::generate().expose();
        assert!(bound_state(Some(state.clone()), Some(&state)).is_ok());
        assert_eq!(
            bound_state(Some(state.clone()), None).err(),
            Some(Failure::StateMismatch),
            "a callback without state"
        );
        assert!(flow_of(Some(state.clone())).is_ok());
        let other = SessionToken::generate().expose();
        assert_eq!(
            bound_state(Some(state.clone()), Some(&other)).err(),
            Some(Failure::StateMismatch)
        );
        assert_eq!(
            bound_state(None, Some(&state)).err(),
            Some(Failure::StateMismatch)
        );
        assert_eq!(
            bound_state(Some("short".into()), Some("short")).err(),
            Some(Failure::StateMismatch)
        );
    }
}
