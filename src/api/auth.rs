//! `/api/auth/*`: register, login, token, logout, me, refresh, password, account.

use rocket::http::{CookieJar, Header, Status};
use rocket::response::content::RawJson;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};

use crate::api::error::{ApiError, ApiResult};
use crate::api::json::{render, JsonBody};
use crate::api::views::{NewToken, Refreshed, SessionView, UserView};
use crate::auth::guard::{PresentedToken, Via};
use crate::auth::{ownership, Authenticator, CurrentSession};
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, Session, User};
use crate::db::{refuse, Db};
use crate::mail::Mailer;
use crate::signin::{Confirmation, CredentialChange, PasswordSignIn, Registration, SignIn};
use crate::token::Token;
use crate::validation::{check_fields, password_problem};

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

#[rocket::post("/register", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn register(
    auth: &State<Authenticator>,
    sign_in: &State<SignIn>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
    body: JsonBody<RegisterBody>,
) -> ApiResult<(Status, RawJson<String>)> {
    let RegisterBody {
        email,
        name,
        password,
    } = body.0;
    let given = Registration {
        email,
        name,
        password,
    };
    let replace = presented.cookie_session();
    let (user, opened) = sign_in.register(client, given, replace, mailer).await?;
    if let Some((session, token)) = &opened {
        // A new session: its cookie lives as long as the session from its first moment.
        auth.cookie.set(jar, token, session, session.created_at);
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

impl From<LoginBody> for PasswordSignIn {
    fn from(body: LoginBody) -> PasswordSignIn {
        PasswordSignIn {
            email: body.email,
            password: body.password,
            code: body.code,
        }
    }
}

#[rocket::post("/login", data = "<body>")]
async fn login(
    auth: &State<Authenticator>,
    sign_in: &State<SignIn>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
    body: JsonBody<LoginBody>,
) -> ApiResult<RawJson<String>> {
    let replace = presented.cookie_session();
    let opened = sign_in
        .with_password(client, body.0.into(), replace)
        .await?;
    let created = opened.session.created_at;
    auth.cookie
        .set(jar, &opened.token, &opened.session, created);
    render(&AuthBody::new(&opened.user, &opened.session))
}

#[derive(Serialize)]
struct TokenBody<'a> {
    token: String,
    user: UserView<'a>,
    session: SessionView<'a>,
}

#[rocket::post("/token", data = "<body>")]
async fn token(
    sign_in: &State<SignIn>,
    client: ClientInfo,
    body: JsonBody<LoginBody>,
) -> ApiResult<RawJson<String>> {
    let opened = sign_in.with_password(client, body.0.into(), None).await?;
    render(&TokenBody {
        token: opened.token.expose(),
        user: (&opened.user).into(),
        session: SessionView::current(&opened.session),
    })
}

/// Idempotent: with no session (or an unknown one) it still answers 204 and clears the cookie.
#[rocket::post("/logout")]
async fn logout(
    db: &State<Db>,
    auth: &State<Authenticator>,
    sign_in: &State<SignIn>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    presented: PresentedToken,
) -> ApiResult<SignedOut> {
    if let Some((token, _)) = presented.0 {
        let hash = token.hash();
        let now = db.now();
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
        sign_in.count_revoked(revoked as usize);
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
    via: Via,
    token: &Token,
    session: &Session,
) -> Option<String> {
    match via {
        Via::Cookie => {
            // A rotated session: its cookie lives from the rotation on.
            auth.cookie.set(jar, token, session, session.last_seen_at);
            None
        }
        Via::Bearer => Some(token.expose()),
    }
}

fn lost_race(via: Via) -> ApiError {
    // Another request rotated or revoked this token first: it is no longer valid.
    match via {
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
    let now = db.now();
    let Some((session, token)) = db
        .run(move |conn| Session::rotate(conn, &policy, &id, &old, now))
        .await?
    else {
        return Err(lost_race(current.via));
    };
    let token = deliver_token(auth, jar, current.via, &token, &session);
    render(&Refreshed {
        session: SessionView::current(&session),
        token,
    })
}

/// 204 for a cookie client (the new token travels as the cookie), 200 `{token}` for bearer.
#[derive(rocket::Responder)]
enum PasswordChanged {
    Continued(Status),
    Token(RawJson<String>),
}

#[derive(Deserialize)]
struct PasswordBody {
    /// Absent for an account that has no password yet (see `signin::confirm`).
    #[serde(default)]
    current_password: Option<String>,
    /// For an account with a second factor: a code from it (see `signin::confirm`).
    #[serde(default)]
    code: Option<String>,
    new_password: String,
}

#[rocket::post("/password", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn change_password(
    db: &State<Db>,
    auth: &State<Authenticator>,
    sign_in: &State<SignIn>,
    mailer: &State<Mailer>,
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
    let slot = sign_in.confirm(&client, &current, confirmation).await?;
    let new_hash = slot.hash(new_password).await;
    drop(slot);
    let policy = auth.policy;
    let (user_id, session_id, old) = (
        current.user.id.clone(),
        current.session.id.clone(),
        current.hash,
    );
    let (via, now) = (current.via, db.now());
    let (session, token, revoked) = db
        .transaction(move |conn| {
            // The account's row first: a sign-in that checked the old password either
            // committed before this (and its session is revoked below) or waits for it and
            // then fails (it compares the hash it checked under the same lock).
            User::set_password_hash(conn, &user_id, &new_hash, now)?;
            let Some((session, token)) = Session::rotate(conn, &policy, &session_id, &old, now)?
            else {
                // This session was revoked or rotated meanwhile: change nothing.
                return refuse(lost_race(via));
            };
            let change =
                CredentialChange::keeping(&user_id, &session_id, EventKind::PasswordChanged);
            let revoked = change.revoke_sessions(conn, &client, now)?;
            Ok((session, token, revoked))
        })
        .await??;
    sign_in.count_revoked(revoked);
    Ok(
        match deliver_token(auth, jar, current.via, &token, &session) {
            Some(token) => PasswordChanged::Token(render(&NewToken { token })?),
            None => PasswordChanged::Continued(Status::NoContent),
        },
    )
}

#[derive(Deserialize)]
struct DeleteAccountBody {
    #[serde(default)]
    password: Option<String>,
    /// For an account with a second factor: a code from it (see `signin::confirm`).
    #[serde(default)]
    code: Option<String>,
}

#[rocket::delete("/account", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn delete_account(
    db: &State<Db>,
    auth: &State<Authenticator>,
    sign_in: &State<SignIn>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    current: CurrentSession,
    body: JsonBody<DeleteAccountBody>,
) -> ApiResult<Status> {
    let DeleteAccountBody { password, code } = body.0;
    let confirmation = Confirmation { password, code };
    drop(sign_in.confirm(&client, &current, confirmation).await?);
    let (user_id, session_id) = (current.user.id.clone(), current.session.id.clone());
    let now = db.now();
    db.transaction(move |conn| {
        // The account's row first: two deletions (or a deletion and any other write of this
        // account) take turns, and the second finds nothing to delete.
        if User::touch(conn, &user_id, now)? == 0 {
            return refuse(ApiError::unauthenticated().clearing_cookie());
        }
        // Recorded before the deletion; the event keeps its row (user_id set to NULL) until
        // retention.
        let kind = EventKind::AccountDeleted;
        record(conn, &user_id, kind, Some(&session_id), &client, now)?;
        User::delete(conn, &user_id)?;
        Ok(())
    })
    .await??;
    if current.via == Via::Cookie {
        auth.cookie.clear(jar);
    }
    Ok(Status::NoContent)
}
