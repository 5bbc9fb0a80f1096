//! Two-factor sign-in (SPEC §9): enrolling a TOTP authenticator, confirming it (which turns it
//! on, hands out the recovery codes and signs out the user's other sessions), and turning it
//! off with a code. Sign-in's side is in `signin`; the admin's removal in
//! `api::admin`.
//!
//! Each of these first writes the user's row, so that on both backends it holds the row until
//! it commits: an enrollment, a confirmation, a removal and a sign-in of one account take
//! turns (see `db::models::second_factor`).

use rocket::http::Status;
use rocket::response::content::RawJson;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};

use crate::api::error::{ApiError, ApiResult};
use crate::api::json::{render, JsonBody};
use crate::auth::mfa::{new_recovery_codes, Accepted};
use crate::auth::{ownership, CurrentSession};
use crate::db::models::event::record;
use crate::db::models::second_factor::{self, RecoveryCode, TotpFactor};
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, User};
use crate::db::{refuse, Db};
use crate::domain::UserId;
use crate::mail::Mailer;
use crate::signin::{Confirmation, CredentialChange, Refused, SignIn};

/// `POST /mfa/totp`, `POST /mfa/totp/confirm`, `DELETE /mfa/totp`, to mount under `/api/auth`.
pub fn routes() -> Vec<Route> {
    rocket::routes![begin, confirm, turn_off]
}

#[derive(Deserialize)]
struct PasswordBody {
    /// Absent for an account without a password (see `signin::confirm`).
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

#[derive(Serialize)]
struct Enrolled {
    /// Base32, for typing into an authenticator app.
    secret: String,
    otpauth_uri: String,
    /// The `otpauth_uri` as a QR code (an SVG document), for scanning.
    qr_svg: String,
}

#[derive(Serialize)]
struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

/// `answer` for an account whose row did not change as asked, unless the account went a
/// moment ago (taking this session with it): then the caller is no longer signed in.
fn unless_gone(
    conn: &mut crate::db::DbConnection,
    user_id: &UserId,
    answer: ApiError,
) -> diesel::QueryResult<ApiError> {
    Ok(match User::find_by_id(conn, user_id)? {
        Some(_) => answer,
        None => ApiError::unauthenticated().clearing_cookie(),
    })
}

fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
        // An otpauth URI is far below a QR code's capacity; the page shows the secret anyway.
        Err(_) => String::new(),
    }
}

/// Starts an enrollment: a new secret, not required at sign-in until a code confirms it. A
/// second call replaces an unconfirmed one.
#[rocket::post("/mfa/totp", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn begin(
    db: &State<Db>,
    sign_in: &State<SignIn>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    current: CurrentSession,
    body: JsonBody<PasswordBody>,
) -> ApiResult<RawJson<String>> {
    if current.user.mfa_enabled() {
        return Err(ApiError::mfa_already_enabled());
    }
    if !ownership::may_add_sign_in_method(&current.user, mailer.enabled()) {
        return Err(ApiError::verify_before_adding());
    }
    let confirmation = Confirmation {
        password: body.0.password,
        code: None,
    };
    drop(sign_in.confirm(&client, &current, confirmation).await?);
    let enrollment = sign_in
        .second_factor()
        .enroll(&current.user.id, &current.user.email);
    let (user_id, sealed) = (current.user.id.clone(), enrollment.sealed);
    let now = db.now();
    db.transaction(move |conn| {
        if !second_factor::claim_for_enrollment(conn, &user_id, now)? {
            // On already, or the account went a moment ago (with this session).
            let on = ApiError::mfa_already_enabled();
            return refuse(unless_gone(conn, &user_id, on)?);
        }
        TotpFactor::begin(conn, &user_id, &sealed, now)?;
        Ok(())
    })
    .await??;
    render(&Enrolled {
        qr_svg: qr_svg(&enrollment.otpauth_uri),
        secret: enrollment.secret_base32,
        otpauth_uri: enrollment.otpauth_uri,
    })
}

/// Confirms the enrollment with a code from the app: the second factor is on, the recovery
/// codes are shown (this once), and every other session of the user is revoked.
#[rocket::post("/mfa/totp/confirm", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn confirm(
    db: &State<Db>,
    sign_in: &State<SignIn>,
    mailer: &State<Mailer>,
    client: ClientInfo,
    current: CurrentSession,
    body: JsonBody<CodeBody>,
) -> ApiResult<RawJson<String>> {
    if current.user.mfa_enabled() {
        return Err(ApiError::mfa_already_enabled());
    }
    if !ownership::may_add_sign_in_method(&current.user, mailer.enabled()) {
        return Err(ApiError::verify_before_adding());
    }
    let code = body.0.code;
    let wrong = || Refused::WrongConfirmationCode;
    sign_in
        .take_code_check(&current.user.id, &code, wrong)
        .await?;
    let second_factor = sign_in.second_factor().clone();
    let (user_id, session_id) = (current.user.id.clone(), current.session.id.clone());
    let now = db.now();
    let (recovery_codes, revoked) = db
        .transaction(move |conn| {
            if !second_factor::enable(conn, &user_id, now)? {
                let on = ApiError::mfa_already_enabled();
                return refuse(unless_gone(conn, &user_id, on)?);
            }
            if TotpFactor::find(conn, &user_id)?.is_none() {
                return refuse(ApiError::mfa_not_enabled(
                    "Start setting up two-factor sign-in first.",
                ));
            }
            if !second_factor.check_totp(conn, &user_id, &code, now)? {
                return refuse(ApiError::wrong_confirmation_code());
            }
            let (codes, hashes) = new_recovery_codes(&user_id);
            RecoveryCode::replace_all(conn, &user_id, &hashes)?;
            let change = CredentialChange::keeping(&user_id, &session_id, EventKind::MfaEnabled);
            let revoked = change.revoke_sessions(conn, &client, now)?;
            Ok((codes, revoked))
        })
        .await??;
    sign_in.count_revoked(revoked);
    render(&RecoveryCodes { recovery_codes })
}

/// Turns the second factor off with a code (TOTP or recovery). The user's other sessions are
/// revoked, as for any change of how the account signs in.
#[rocket::delete("/mfa/totp", data = "<body>")]
async fn turn_off(
    db: &State<Db>,
    sign_in: &State<SignIn>,
    client: ClientInfo,
    current: CurrentSession,
    body: JsonBody<CodeBody>,
) -> ApiResult<Status> {
    if !current.user.mfa_enabled() {
        return Err(ApiError::mfa_not_enabled("Two-factor sign-in is not on."));
    }
    let code = body.0.code;
    let wrong = || Refused::WrongConfirmationCode;
    sign_in
        .take_code_check(&current.user.id, &code, wrong)
        .await?;
    let second_factor = sign_in.second_factor().clone();
    let (user_id, session_id) = (current.user.id.clone(), current.session.id.clone());
    let now = db.now();
    let revoked = db
        .transaction(move |conn| {
            if !second_factor::disable(conn, &user_id, now)? {
                let off = ApiError::mfa_not_enabled("Two-factor sign-in is not on.");
                return refuse(unless_gone(conn, &user_id, off)?);
            }
            let Some(accepted) = second_factor.check_code(conn, &user_id, &code, now)? else {
                return refuse(ApiError::wrong_confirmation_code());
            };
            second_factor::forget(conn, &user_id)?;
            if accepted == Accepted::RecoveryCode {
                record(
                    conn,
                    &user_id,
                    EventKind::RecoveryCodeUsed,
                    Some(&session_id),
                    &client,
                    now,
                )?;
            }
            let change = CredentialChange::keeping(&user_id, &session_id, EventKind::MfaDisabled);
            Ok(change.revoke_sessions(conn, &client, now)?)
        })
        .await??;
    sign_in.count_revoked(revoked);
    Ok(Status::NoContent)
}
