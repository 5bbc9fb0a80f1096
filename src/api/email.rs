//! The mail flows (SPEC §7): password reset (request, confirm) and address verification
//! (confirm, resend). Without `smtp_url` every one of them is 503; registration works without
//! mail.

use chrono::Duration;
use diesel::Connection;
use rocket::http::Status;
use rocket::response::content::RawJson;
use rocket::{Route, State};
use serde::Deserialize;

use crate::api::error::{ApiError, ApiResult};
use crate::api::json::JsonBody;
use crate::auth::throttle::{self, Budget, ThrottleKey};
use crate::auth::{ownership, CurrentSession};
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, MailKind, MailToken, User};
use crate::db::{refuse, Db};
use crate::mail::Mailer;
use crate::signin::{CredentialChange, SignIn};
use crate::token::Token;
use crate::validation::{check_fields, normalize_email, password_problem};

/// `POST /password-reset`, `/password-reset/confirm`, `/verify-email`, `/verify-email/resend`,
/// to mount under `/api/auth`.
pub fn routes() -> Vec<Route> {
    rocket::routes![
        request_reset,
        confirm_reset,
        verify_email,
        resend_verification
    ]
}

/// Reset requests per address, and per client IP, in an hour; resends per account.
const RESETS_PER_EMAIL: i32 = 5;
const RESETS_PER_IP: i32 = 20;
const RESENDS_PER_ACCOUNT: i32 = 5;

fn accepted() -> (Status, RawJson<&'static str>) {
    (Status::Accepted, RawJson("{}"))
}

fn enabled(mailer: &Mailer) -> ApiResult<()> {
    if mailer.enabled() {
        Ok(())
    } else {
        Err(ApiError::mail_off())
    }
}

/// A token as the link carries it; anything else is a link that cannot be ours.
fn parse_token(text: &str) -> ApiResult<Token> {
    Token::parse(text.trim()).ok_or_else(ApiError::invalid_token)
}

#[derive(Deserialize)]
struct ResetRequest {
    email: String,
}

/// 202 whether or not the account exists, in the same time: after the throttle, everything
/// that depends on the account (the lookup, the token, the mail) happens after the answer.
#[rocket::post("/password-reset", data = "<body>")]
async fn request_reset(
    db: &State<Db>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    body: JsonBody<ResetRequest>,
) -> ApiResult<(Status, RawJson<&'static str>)> {
    enabled(mailer)?;
    let email = normalize_email(&body.0.email);
    check_fields(&[(
        "email",
        email.is_empty().then_some("Enter your email address."),
    )])?;
    let mut budgets = vec![(
        ThrottleKey::email(Budget::ResetEmail, &email),
        RESETS_PER_EMAIL,
    )];
    if let Some(ip) = &client.ip {
        budgets.push((ThrottleKey::ip(Budget::ResetIp, ip), RESETS_PER_IP));
    }
    let now = db.now();
    let refused = db
        .run(move |conn| throttle::take_budget(conn, &budgets, Duration::hours(1), now))
        .await?;
    if let Some(seconds) = refused {
        return Err(ApiError::too_many_attempts(seconds));
    }
    // After the answer, through the bounded background writes (`Db::run_detached`): the
    // lookup, the link and the letter for the outbox. Past the bound the request is dropped
    // with a warning (the throttle above already bounds each client; the person asks again).
    let mailer = mailer.inner().clone();
    let started = db.run_detached("password reset", move |conn| {
        if let Some(user) = User::find_by_email(conn, &email)? {
            if let Some(letter) = mailer.prepare(conn, &user, MailKind::PasswordReset, now)? {
                mailer.send(letter);
            }
        }
        mailer.reset_handled();
        Ok(())
    });
    if !started {
        tracing::warn!("too many background writes: a password reset request was dropped");
    }
    Ok(accepted())
}

#[derive(Deserialize)]
struct ResetConfirm {
    token: String,
    new_password: String,
}

/// Sets the password from a reset link: every session of the account is revoked, every other
/// mailed link voided, the failed-login streak ended, and the address counts as verified (the
/// link reached it). On an account whose address was not verified, every other way in goes too
/// (`auth::ownership`).
#[rocket::post("/password-reset/confirm", data = "<body>")]
async fn confirm_reset(
    db: &State<Db>,
    sign_in: &State<SignIn>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    body: JsonBody<ResetConfirm>,
) -> ApiResult<Status> {
    enabled(mailer)?;
    let ResetConfirm {
        token,
        new_password,
    } = body.0;
    let token = parse_token(&token)?;
    check_fields(&[("new_password", password_problem(&new_password))])?;
    // A link that cannot work costs one indexed read, never a password hash (which would let
    // random tokens fill the hashing queue). `take` below is what accepts it.
    let hash = token.hash();
    let checked = db.now();
    let Some(owner) = db
        .run(move |conn| MailToken::owner(conn, MailKind::PasswordReset, &hash, checked))
        .await?
    else {
        return Err(ApiError::invalid_token());
    };
    let slot = sign_in.hash_slot()?;
    let new_hash = slot.hash(new_password).await;
    drop(slot);
    let now = db.now();
    let revoked = db
        .transaction(move |conn| {
            // The account's row before the link's: a deletion of the account takes them in
            // this order too (its row, then the cascade), so the two take turns instead of
            // deadlocking.
            if User::touch(conn, &owner, now)? == 0 {
                return refuse(ApiError::invalid_token());
            }
            let taken = MailToken::take(conn, MailKind::PasswordReset, &token.hash(), now)?;
            if taken.as_ref() != Some(&owner) {
                return refuse(ApiError::invalid_token());
            }
            let Some(user) = User::find_by_id(conn, &owner)? else {
                return refuse(ApiError::invalid_token());
            };
            User::set_password_hash(conn, &user.id, &new_hash, now)?;
            // The link reached the mailbox. If nobody had proved it before, whatever else
            // could sign in to this account was set up by someone who may not own it.
            if user.email_verified_at.is_none() {
                let removed = ownership::hand_over(conn, &user.id, now)?;
                if removed.identities > 0 {
                    let kind = EventKind::IdentityUnlinked;
                    record(conn, &user.id, kind, None, &client, now)?;
                }
                if removed.second_factor {
                    record(conn, &user.id, EventKind::MfaDisabled, None, &client, now)?;
                }
            }
            User::mark_email_verified(conn, &user.id, now)?;
            throttle::forget_failures(conn, &user.email, now)?;
            let change = CredentialChange::everywhere(&user.id, EventKind::PasswordReset);
            Ok(change.revoke_sessions(conn, &client, now)?)
        })
        .await??;
    sign_in.count_revoked(revoked);
    Ok(Status::NoContent)
}

#[derive(Deserialize)]
struct VerifyEmail {
    token: String,
}

#[rocket::post("/verify-email", data = "<body>")]
async fn verify_email(
    db: &State<Db>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    body: JsonBody<VerifyEmail>,
) -> ApiResult<Status> {
    enabled(mailer)?;
    let token = parse_token(&body.0.token)?;
    let now = db.now();
    let verified = db
        .run(move |conn| {
            let hash = token.hash();
            let Some(user_id) = MailToken::owner(conn, MailKind::VerifyEmail, &hash, now)? else {
                return Ok(false);
            };
            conn.transaction(|conn| {
                // The account's row first, as a deletion takes it (see `confirm_reset`).
                if User::touch(conn, &user_id, now)? == 0 {
                    return Ok(false);
                }
                if MailToken::take(conn, MailKind::VerifyEmail, &hash, now)?.as_ref()
                    != Some(&user_id)
                {
                    return Ok(false);
                }
                if User::mark_email_verified(conn, &user_id, now)? > 0 {
                    record(conn, &user_id, EventKind::EmailVerified, None, &client, now)?;
                }
                Ok(true)
            })
        })
        .await?;
    if verified {
        Ok(Status::NoContent)
    } else {
        Err(ApiError::invalid_token())
    }
}

/// A new verification mail for the signed-in account (202; nothing is sent when the address
/// is verified already).
#[rocket::post("/verify-email/resend")]
async fn resend_verification(
    db: &State<Db>,
    mailer: &State<Mailer>,
    current: CurrentSession,
) -> ApiResult<(Status, RawJson<&'static str>)> {
    enabled(mailer)?;
    if current.user.email_verified_at.is_some() {
        return Ok(accepted());
    }
    let user = current.user.clone();
    let budgets = vec![(
        ThrottleKey::user(Budget::Resend, &user.id),
        RESENDS_PER_ACCOUNT,
    )];
    let now = db.now();
    let preparer = mailer.inner().clone();
    let prepared = db
        .run(move |conn| {
            let refused = throttle::take_budget(conn, &budgets, Duration::hours(1), now)?;
            if let Some(seconds) = refused {
                return Ok(Err(seconds));
            }
            Ok(Ok(preparer.prepare(
                conn,
                &user,
                MailKind::VerifyEmail,
                now,
            )?))
        })
        .await?;
    match prepared {
        Err(seconds) => Err(ApiError::too_many_attempts(seconds)),
        Ok(letter) => {
            if let Some(letter) = letter {
                mailer.send(letter);
            }
            Ok(accepted())
        }
    }
}
