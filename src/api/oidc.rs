//! Sign in with OpenID Connect providers (SPEC §8): the list of providers, the start (302 to
//! the provider), the callback (validate, then sign in, create or link the account), the
//! second-factor code after a provider sign-in for accounts that have one, and the user's
//! linked identities.
//!
//! Every failure of the start and the callback is a 302 to the page (`login_url`, else `/`)
//! with `?oidc_error=<code>`; nothing is written unless the whole sign-in succeeds. The rules
//! where the contract is silent are in docs/providers.md; the sign-in itself, once the
//! provider has vouched for an identity, is the sign-in service's (`signin::provider`).

use rocket::http::{CookieJar, Status};
use rocket::response::content::RawJson;
use rocket::response::Redirect;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::api::error::{ApiError, ApiResult};
use crate::api::json::{render, JsonBody};
use crate::api::views::{SessionView, UserView};
use crate::auth::guard::PresentedToken;
use crate::auth::oidc::{OidcFailure, OidcProviders};
use crate::auth::throttle::{self, Budget, ThrottleKey};
use crate::auth::{ownership, AuthError, Authenticator, CurrentSession};
use crate::clock::Rfc3339;
use crate::config::Settings;
use crate::db::models::identity::NewOidcLogin;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, Identity, OidcLogin, User};
use crate::db::{refuse, Db};
use crate::domain::SessionId;
use crate::mail::Mailer;
use crate::signin::provider::{flow_lifetime, Failure, ProviderSignIn, Signed};
use crate::signin::{CredentialChange, Refused, SignIn};
use crate::token::{Token, TokenHash};

/// To mount under `/api/auth`.
pub fn routes() -> Vec<Route> {
    rocket::routes![providers, start, callback, code, identities, unlink]
}

/// The callback route of provider `id`, below the API's base: what the provider is told to
/// send people back to (`/auth` is where `api::mount` puts these routes).
pub fn callback_path(id: &str) -> String {
    format!("/auth/oidc/{id}/callback")
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
    let budgets = vec![(ThrottleKey::ip(Budget::OidcStart, ip), STARTS_PER_IP)];
    let (window, now) = (settings.ip_failure_window, db.now());
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
    let state = Token::generate();
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
    let now = db.now();
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
        .and_then(Token::parse)
        .map(|token| token.hash())
        .ok_or(Failure::StateMismatch)
}

/// The managed state a provider sign-in uses.
#[derive(Clone, Copy)]
struct Services<'r> {
    db: &'r Db,
    sign_in: &'r SignIn,
    oidc: &'r OidcProviders,
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
    sign_in: &State<SignIn>,
    oidc: &State<OidcProviders>,
    settings: &State<Settings>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
) -> Redirect {
    let services = Services {
        db,
        sign_in,
        oidc,
        mail_on: mailer.enabled(),
    };
    let cookie = auth.cookie.read_flow(jar);
    auth.cookie.clear_flow(jar);
    let replace = presented.cookie_session();
    let outcome = complete(id, (code, state, error), services, cookie, client, replace).await;
    match outcome {
        Ok((Signed::In(session, token, _), return_to)) => {
            auth.cookie.set(jar, &token, &session, db.now());
            Redirect::found(return_to)
        }
        Ok((Signed::NeedsCode(flow), _)) => {
            auth.cookie.set_flow(jar, &flow.expose());
            page_with(settings, "oidc=code")
        }
        Ok((Signed::Linked, return_to)) => Redirect::found(return_to),
        Err(failure) => {
            sign_in.count_provider_failure(failure);
            to_page(settings, failure)
        }
    }
}

/// The callback's checks (the provider, the state, the waiting sign-in, the provider's
/// answer), then the sign-in service.
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
    let now = services.db.now();
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
    let given = ProviderSignIn {
        provider: provider.settings.id.clone(),
        identity,
        return_to: login.return_to.clone(),
        link_session: login.link_session_id.map(SessionId::from),
        mail_on: services.mail_on,
    };
    let signed = services
        .sign_in
        .with_provider(given, client, replace, now)
        .await?;
    Ok((signed, login.return_to))
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

/// `POST /oidc/code {code}`: the second factor after a provider sign-in, for an account that
/// has one. The flow cookie names the waiting sign-in.
#[rocket::post("/oidc/code", data = "<body>")]
async fn code(
    db: &State<Db>,
    auth: &State<Authenticator>,
    sign_in: &State<SignIn>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
    body: JsonBody<CodeBody>,
) -> ApiResult<RawJson<String>> {
    let hash = flow_of(auth.cookie.read_flow(jar)).map_err(|_| Refused::SignInOver)?;
    let now = db.now();
    let waiting = db
        .run(move |conn| OidcLogin::find_waiting(conn, &hash, now))
        .await?;
    let Some(user_id) = waiting else {
        auth.cookie.clear_flow(jar);
        return Err(Refused::SignInOver.into());
    };
    let replace = presented.cookie_session();
    let code = body.0.code;
    let done = sign_in
        .with_code_after_provider(hash, user_id, code, client, replace, now)
        .await;
    match done {
        Ok((opened, return_to)) => {
            auth.cookie.clear_flow(jar);
            auth.cookie.set(jar, &opened.token, &opened.session, now);
            render(&CodeAccepted {
                user: (&opened.user).into(),
                session: SessionView::current(&opened.session),
                return_to: &return_to,
            })
        }
        Err(refused) => {
            if matches!(refused, Refused::SignInOver) {
                auth.cookie.clear_flow(jar);
            }
            Err(refused.into())
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
    sign_in: &State<SignIn>,
    client: ClientInfo,
    current: CurrentSession,
    id: &str,
) -> ApiResult<Status> {
    let (user_id, session_id, id) = (
        current.user.id.clone(),
        current.session.id.clone(),
        id.to_string(),
    );
    let now = db.now();
    let unlinked = db
        .transaction(move |conn| {
            // The account's row first and locked: two unlinks at once take turns, so they
            // cannot together remove the last way in.
            User::touch(conn, &user_id, now)?;
            let Some((password_hash, _)) = User::lock_credentials(conn, &user_id)? else {
                return refuse(ApiError::unauthenticated());
            };
            let linked = Identity::of_user(conn, &user_id)?;
            if !linked.iter().any(|i| i.id == id) {
                return refuse(ApiError::not_found());
            }
            if password_hash.is_none() && linked.len() == 1 {
                return refuse(ApiError::last_sign_in_method());
            }
            Identity::unlink(conn, &user_id, &id)?;
            let change =
                CredentialChange::keeping(&user_id, &session_id, EventKind::IdentityUnlinked);
            Ok(change.revoke_sessions(conn, &client, now)?)
        })
        .await??;
    sign_in.count_revoked(unlinked);
    Ok(Status::NoContent)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let state = Token::generate().expose();
        assert!(bound_state(Some(state.clone()), Some(&state)).is_ok());
        assert_eq!(
            bound_state(Some(state.clone()), None).err(),
            Some(Failure::StateMismatch),
            "a callback without state"
        );
        assert!(flow_of(Some(state.clone())).is_ok());
        let other = Token::generate().expose();
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
