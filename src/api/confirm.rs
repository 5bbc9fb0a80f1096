//! Confirming who is at the keyboard of a signed-in session before a sensitive change (a new
//! password, deleting the account, setting up a second factor): the current password counted
//! as a sign-in attempt, and a second factor's code under the account's hourly budget.

use chrono::Duration;
use diesel::Connection;
use rocket::http::Status;

use crate::api::error::{ApiError, ApiResult};
use crate::api::validation::MAX_PASSWORD_BYTES;
use crate::auth::password::HashSlot;
use crate::auth::{mfa, throttle, Authenticator, CurrentSession};
use crate::clock;
use crate::config::Settings;
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::EventKind;
use crate::db::Db;
use crate::domain::UserId;

/// Codes an account may try in an hour when confirming or turning off its second factor: a
/// stolen session must not be able to guess its way to turning the factor off.
const CODE_CHECKS_PER_HOUR: i32 = 10;

/// Codes are short; anything longer is not one and is not looked at.
const MAX_CODE_LEN: usize = 64;

/// How recent a session of an account without a password must be to stand in for the
/// password: such an account has just shown the provider who it is.
pub(crate) const FRESH_SIGN_IN: chrono::Duration = chrono::Duration::minutes(10);

/// What a signed-in user gives to confirm a sensitive change (a new password, deleting the
/// account, setting up a second factor): the current password, and for an account that has a
/// second factor, a code from it too.
pub(crate) struct Confirmation {
    pub password: Option<String>,
    pub code: Option<String>,
}

/// Checks a [`Confirmation`] of the signed-in user, in a place of the hashing queue that the
/// caller keeps for any hashing that follows.
///
/// A password account's confirmation is a sign-in attempt for its address: it is taken out of
/// the login budgets first (429 while the address is backed off or the client's IP has used
/// its failures), a wrong password counts as a failed sign-in (403 `invalid_credentials`), and
/// only a complete confirmation ends the streak. So a stolen session guesses the password no
/// faster than the sign-in form allows. An account with a second factor must also give a code
/// (403 `mfa_required` without one; wrong codes count against the account's hourly code
/// budget): the password alone is not enough to delete it or change how it signs in.
///
/// An account without a password (it signs in with a provider) has no password to give: its
/// session must instead be at most [`FRESH_SIGN_IN`] old (403 `reauthentication_required`),
/// and with a second factor it gives a code too (the session may be the one that turned the
/// factor on, which never passed it).
pub(crate) async fn confirm_password(
    (db, auth, settings): (&Db, &Authenticator, &Settings),
    client: &ClientInfo,
    current: &CurrentSession,
    confirmation: Confirmation,
) -> ApiResult<HashSlot> {
    let slot = auth.hash_slot()?;
    let Some(hash) = &current.user.password_hash else {
        if clock::now() - current.session.created_at > FRESH_SIGN_IN {
            return Err(ApiError::reauthentication_required());
        }
        check_second_factor(db, auth, client, current, confirmation.code).await?;
        return Ok(slot);
    };
    let keys = throttle::LoginKeys::new(&current.user.email, client.ip.as_deref());
    let (budget, now) = (settings.clone(), clock::now());
    let (refused, keys) = db
        .run(move |conn| Ok((throttle::take_attempt(conn, &budget, &keys, now)?, keys)))
        .await?;
    if let Some(seconds) = refused {
        return Err(ApiError::too_many_attempts(seconds));
    }
    let password = confirmation.password.unwrap_or_default();
    if password.is_empty()
        || password.len() > MAX_PASSWORD_BYTES
        || !slot.verify(password, Some(hash.clone())).await
    {
        return Err(ApiError::invalid_credentials(Status::Forbidden));
    }
    check_second_factor(db, auth, client, current, confirmation.code).await?;
    let now = clock::now();
    let ended = db
        .run(move |conn| throttle::record_success(conn, &keys, now))
        .await;
    if let Err(error) = ended {
        tracing::warn!(%error, "could not end a failure streak");
    }
    Ok(slot)
}

/// For an account with a second factor, a code from it (403 `mfa_required` without one, 403
/// `invalid_credentials` when wrong, counted against the account's hourly code budget).
async fn check_second_factor(
    db: &Db,
    auth: &Authenticator,
    client: &ClientInfo,
    current: &CurrentSession,
    code: Option<String>,
) -> ApiResult<()> {
    if !current.user.mfa_enabled() {
        return Ok(());
    }
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        return Err(ApiError {
            status: Status::Forbidden,
            ..ApiError::mfa_required()
        });
    };
    let code = code.trim().to_string();
    take_code_check(db, &current.user.id, &code).await?;
    let (second_factor, user_id) = (auth.second_factor.clone(), current.user.id.clone());
    let session_id = current.session.id.clone();
    let client = client.clone();
    let now = clock::now();
    let accepted = db
        .run(move |conn| {
            conn.transaction(|conn| {
                let accepted = second_factor.check_code(conn, &user_id, &code, now)?;
                if accepted == Some(mfa::Accepted::RecoveryCode) {
                    let used = EventKind::RecoveryCodeUsed;
                    record(conn, &user_id, used, Some(&session_id), &client, now)?;
                }
                Ok(accepted)
            })
        })
        .await?;
    if accepted.is_none() {
        return Err(ApiError::wrong_code(Status::Forbidden));
    }
    Ok(())
}

/// Takes one code check out of the account's hourly budget (429 when it is spent); a code
/// too long to be one is refused after that, without a look.
pub(crate) async fn take_code_check(db: &Db, user_id: &UserId, code: &str) -> ApiResult<()> {
    let budgets = vec![(format!("mfa-user:{user_id}"), CODE_CHECKS_PER_HOUR)];
    let now = clock::now();
    let refused = db
        .run(move |conn| throttle::take_budget(conn, &budgets, Duration::hours(1), now))
        .await?;
    match refused {
        Some(seconds) => Err(ApiError::too_many_attempts(seconds)),
        None if code.len() > MAX_CODE_LEN => Err(ApiError::wrong_code(Status::Forbidden)),
        None => Ok(()),
    }
}
